"""Twin of crates/pool-map: Pool.map, apply, apply_async, map_async, imap, a failing
task, a killed worker (caught with a timeout: Python's Pool would wait forever), and
the seeds' benchmark, serial vs Pool. Run: python3 07_pool_map.py
"""
import multiprocessing as mp
import os
import signal
import sys
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
    total = 0
    for x in range(1000):
        total += x * x
    return total


def identity(x):
    return x


def killed_worker_demo():
    pool = ctx.Pool(processes=2)
    res = pool.apply_async(slow_square, (3,))
    time.sleep(0.05)
    os.kill(pool._pool[0].pid, signal.SIGKILL)  # gh-96062's way; it may or may not hold our task
    try:
        print("    after the kill, get(timeout=2) ->", res.get(timeout=2), flush=True)
    except mp.TimeoutError:
        print("    after the kill, get(timeout=2) -> TimeoutError: without a timeout, it would wait forever", flush=True)
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


if __name__ == "__main__":
    print("[1] Pool(processes=3).map(square, [1, 2, 3, 4, 5])")
    with ctx.Pool(processes=3) as pool:
        out = pool.map(square_where, [1, 2, 3, 4, 5])
        print("   ", [v for v, _ in out], ", ".join(f"item {i} -> pid {p}" for i, (_, p) in enumerate(out, 1)))

        print("[2] apply, apply_async, map_async, imap, imap_unordered")
        print("    apply(square, (10,)) ->", pool.apply(square, (10,)))
        res = pool.apply_async(slow_square, (20,))
        print("    apply_async: ready() right away?", res.ready(), "; get(timeout=5) ->", res.get(timeout=5))
        print("    map_async ->", pool.map_async(square, range(1, 11), chunksize=3).get())
        print("    imap_unordered ->", sorted(pool.imap_unordered(square, range(1, 11))))

        print("[3] a task that raises, a worker that is killed")
        try:
            pool.map(unlucky, range(10, 16), chunksize=1)
        except ValueError as e:
            print("    map raised:", e)
    killed_worker_guarded()

    n = 10_000
    print(f"[4] the seeds' benchmark: f over range({n}), {os.cpu_count()} CPUs")
    t = time.perf_counter(); serial = [f(x) for x in range(n)]; t_serial = time.perf_counter() - t
    with ctx.Pool() as pool:
        pool.map(f, range(100))  # warm
        t = time.perf_counter(); par = pool.map(f, range(n)); t_pool = time.perf_counter() - t
        assert par == serial
        trivial = list(range(20_000))
        t = time.perf_counter(); pool.map(identity, trivial, chunksize=1); t_one = time.perf_counter() - t
    print(f"    serial {t_serial * 1e3:.1f} ms, pool {t_pool * 1e3:.1f} ms: {t_serial / t_pool:.2f}x")
    print(f"[5] chunksize 1: {t_one / len(trivial) * 1e6:.1f} us per task")
