"""Twin of crates/pool-map: Pool.map and who ran what, apply, apply_async,
map_async with a chunksize, imap, a task that raises (it fails alone), a killed
worker (caught with a timeout: Python's Pool would wait forever, gh-66587),
close() and join(), what it costs: the tutorial's workload, serial vs Pool,
and a task at chunksize 1; and a forkserver pool beside a running thread.

Run: python3 11_pool_map.py
     python3 11_pool_map.py --bench [--rounds N] [--quick]
The --bench mode measures what `cargo bench -p pool-map` measures, on the same
work: the tutorial's workload scaled 100x (100x the items; 100x the work per
item), serial vs Pool.map at the default chunksize, and a task at chunksize 1.
At full size it takes several minutes; --quick runs it small.
"""
import argparse
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

ctx = mp.get_context("fork")


def square(x):
    return x * x


def square_where(x):
    return x * x, os.getpid()


def slow_square(x):
    time.sleep(0.3)
    return x * x


def unlucky(x):
    if x == 13:
        raise ValueError("13 is unlucky")
    return x


def f(n):
    """The tutorial's workload: sum(x*x for x in range(1000)), once per item."""
    total = 0
    for x in range(1000):
        total += x * x
    return total


def f_100x(n):
    """The same with 100 times the work per item."""
    total = 0
    for x in range(100_000):
        total += x * x
    return total


def identity(x):
    return x


def killed_worker_demo():
    pool = ctx.Pool(processes=1)  # one worker, so the one killed holds the task
    res = pool.apply_async(slow_square, (0,))
    time.sleep(0.05)
    os.kill(pool._pool[0].pid, signal.SIGKILL)
    try:
        print("    after the kill, get(timeout=2) ->", res.get(timeout=2), flush=True)
    except mp.TimeoutError:
        print("    after the kill, get(timeout=2) -> TimeoutError:", flush=True)
        print("      without a timeout, it would wait forever", flush=True)
    pool.terminate()


def killed_worker_guarded():
    """Python's pool can also hang in terminate() after a worker was killed: run the
    demo in its own process group, and kill the group if it is not done in 10 s."""
    sys.stdout.flush()  # flush before fork, or the child inherits the buffer too
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        killed_worker_demo()
        os._exit(0)
    try:
        os.setpgid(pid, pid)  # also here: whichever runs first, the group exists
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.05)
    print("    the pool hung after the kill; killed its process group", flush=True)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def timed_cpu(fn):
    """Wall time, the share of a core this thread got, and the result."""
    t, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    wall = time.perf_counter() - t
    return wall, (time.thread_time() - cpu) / wall, out


def lesson():
    print("[1] Pool(processes=3).map(square, [1, 2, 3, 4, 5])")
    # ANCHOR: map_apply
    with ctx.Pool(processes=3) as pool:
        out = pool.map(square_where, [1, 2, 3, 4, 5])
        print("    workers:", ", ".join(f"pid {p.pid}" for p in pool._pool))
        print("   ", ", ".join(f"item {i} -> pid {p}" for i, (_, p) in enumerate(out, 1)))
        print("    map ->", [v for v, _ in out])

        print("[2] apply and apply_async")
        print("    apply(square, (10,)) ->", pool.apply(square, (10,)))
        res = pool.apply_async(slow_square, (20,))
        print("    apply_async(slow_square, (20,)): ready() ->", res.ready())
        got = res.get(timeout=5)
        print(f"    get(timeout=5) -> {got}; ready() -> {res.ready()};"
              f" successful() -> {res.successful()}")
    # ANCHOR_END: map_apply
        try:
            pool.apply_async(slow_square, (3,)).get(timeout=0.02)
        except mp.TimeoutError:
            print("    get(timeout=0.02) on a 300 ms task -> TimeoutError")

        print("[3] map_async and imap: chunks of items, and who ran them")
        out = pool.map_async(square_where, range(1, 11), chunksize=3).get()
        items = list(range(1, 11))
        for at in range(0, 10, 3):
            chunk = out[at:at + 3]
            print(f"      task {items[at:at + 3]} -> pid {chunk[0][1]}"
                  f" -> {[v for v, _ in chunk]}")
        print("    imap(..., chunksize=2): ", *pool.imap(square, range(1, 11), chunksize=2))
        print("    imap_unordered(..., 1):", *pool.imap_unordered(square, range(1, 11)))

        print("[4] a task that raises fails alone")
        it, shown = pool.imap(unlucky, range(10, 16), chunksize=1), []
        for _ in range(6):
            try:
                shown.append(str(next(it)))
            except ValueError as e:
                shown.append("error")
                error = e
        print("    imap(unlucky, range(10, 16), chunksize=1):", " ".join(shown))
        print("    the error:", repr(error))
        try:
            pool.map(unlucky, range(10, 16), chunksize=1)
        except ValueError as e:
            print("    map(unlucky, range(10, 16)) raises the first error:", repr(e))

    print("[5] a worker killed in the middle of a task")
    killed_worker_guarded()

    print("[6] close() and join()")
    pool = ctx.Pool(processes=3)
    queued = pool.apply_async(slow_square, (6,))
    pool.close()
    try:
        pool.apply(square, (1,))
    except ValueError as e:
        print("    after close(): apply ->", repr(e))
    pool.join()
    print("    join() waited for slow_square(6) ->", queued.get(timeout=0))

    n = 10_000
    print(f"[7] what it costs: the tutorial's workload, {n} items")
    t_serial, serial = timed(lambda: [f(x) for x in range(n)])
    with ctx.Pool() as pool:
        pool.map(f, range(100))  # the workers are up
        t_pool, par = timed(pool.map, f, range(n))
        assert par == serial
        trivial = list(range(20_000))
        t_one, _ = timed(pool.map, identity, trivial, 1)
        print(f"    serial {t_serial * 1e3:.1f} ms, Pool({len(pool._pool)})"
              f" {t_pool * 1e3:.1f} ms: {t_serial / t_pool:.2f}x")
    print(f"    a task at chunksize 1: {t_one / len(trivial) * 1e6:.1f} us"
          f" ({len(trivial)} tasks)")

    print("[8] a pool in a program that already runs threads")
    pool_beside_a_thread()


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def pool_beside_a_thread():
    """fork with a thread running: Python 3.12+ warns (DeprecationWarning,
    gh-100228) and forks anyway; 3.14 made forkserver the default (gh-84559).
    A forkserver pool's workers are the server's children, not ours."""
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait)
    waiter.start()
    print(f"    a thread is up: this process runs {threading.active_count()} threads")
    server_ctx = mp.get_context("forkserver")
    with server_ctx.Pool(processes=2) as pool:
        out = pool.map(f, range(100))
        workers = [p.pid for p in pool._pool]
        parents = {parent_of(pid) for pid in workers}
        print("    get_context('forkserver').Pool(2):",
              ", ".join(f"pid {p}" for p in workers))
        # The workers are the server's children, not ours.
        assert len(parents) == 1 and os.getpid() not in parents, parents
        print(f"    their parent: pid {parents.pop()} (the server; we are pid {os.getpid()})")
    assert out == [f(x) for x in range(100)]
    stop.set()
    waiter.join()


def bench(rounds, quick):
    """Serial vs Pool.map (default chunksize) on the tutorial's workload scaled 100x
    both ways, and a task at chunksize 1; each the best of `rounds`."""
    def best(fn, *args):
        return min((timed(fn, *args) for _ in range(rounds)), key=lambda r: r[0])

    print(f"11_pool_map.py --bench: Python {sys.version.split()[0]},"
          f" {os.cpu_count()} CPUs, best of {rounds}")
    readings = [
        ("100x the items", f, 20_000 if quick else 1_000_000, "x below 1000 each"),
        ("100x the work per item", f_100x, 200 if quick else 10_000,
         "x below 100000 each"),
    ]
    with ctx.Pool() as pool:
        workers = len(pool._pool)
        pool.map(f, range(100))  # the workers are up
        for name, fn, n, what in readings:
            items = range(n)
            print(f"\n{name}: {n} items, {what}", flush=True)
            t_serial, share, serial = min(
                (timed_cpu(lambda: [fn(x) for x in items]) for _ in range(rounds)),
                key=lambda r: r[0])
            t_pool, par = best(pool.map, fn, items)
            assert par == serial
            chunk, extra = divmod(n, workers * 4)  # Pool._map_async's rule
            chunk += bool(extra)
            label = f"Pool({workers}).map, chunksize {chunk}"
            print(f"  {'serial':<32} {t_serial * 1e3:9.1f} ms {1:8.2f}x")
            print(f"  {label:<32} {t_pool * 1e3:9.1f} ms {t_serial / t_pool:8.2f}x")
            print(f"  serial got {share:.0%} of a core", flush=True)
        tasks = 2_000 if quick else 20_000
        t_one, out = best(pool.map, identity, range(tasks), 1)
        assert out == list(range(tasks))
        print(f"\nwhat a task costs: {tasks} trivial items (identity)")
        print(f"  chunksize 1    {t_one / tasks * 1e6:8.2f} us per task")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", action="store_true",
                    help="measure what cargo bench -p pool-map measures (minutes)")
    ap.add_argument("--rounds", type=int, default=1, help="with --bench: best of N")
    ap.add_argument("--quick", action="store_true", help="with --bench: small sizes")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.bench:
        bench(args.rounds, args.quick)
    else:
        lesson()
