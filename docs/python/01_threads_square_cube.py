"""Twin of crates/threads-square-cube: square and cube a list with a wait per item,
serially, on two threads, and in two processes; then what starting each costs.

Run: python3 01_threads_square_cube.py          (the lesson: a few seconds)
     python3 01_threads_square_cube.py --bench  (start + join costs, measured as
                                                 cargo bench -p threads-square-cube)
"""
import multiprocessing as mp
import os
import sys
import threading
import time

NUMBERS = [2, 3, 8, 9]
DELAY = 0.2  # seconds per item: a stand-in for I/O
ctx = mp.get_context("fork")  # the course forks; Python 3.14's default is forkserver


def work(name, numbers, out=None):
    result = []
    for n in numbers:
        time.sleep(DELAY)
        result.append(n * n if name == "square" else n * n * n)
    print(f"    {name:<7} pid {os.getpid()} tid {threading.get_native_id()}: {result}", flush=True)
    if out is not None:
        out[name] = result


def serial():
    t = time.perf_counter()
    work("square", NUMBERS)
    work("cube", NUMBERS)
    return time.perf_counter() - t


# ANCHOR: threads_processes
def threads():
    out = {}
    ts = [threading.Thread(target=work, args=(name, NUMBERS, out)) for name in ("square", "cube")]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    wall = time.perf_counter() - t
    assert out == {"square": [4, 9, 64, 81], "cube": [8, 27, 512, 729]}
    return wall


def processes():
    ps = [ctx.Process(target=work, args=(name, NUMBERS)) for name in ("square", "cube")]
    t = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    wall = time.perf_counter() - t
    assert [p.exitcode for p in ps] == [0, 0]
    return wall
# ANCHOR_END: threads_processes


def nothing():
    pass


def start_join(maker, n):
    """Seconds per start + join of a worker that does nothing, one at a time."""
    t = time.perf_counter()
    for _ in range(n):
        w = maker(target=nothing)
        w.start()
        w.join()
        assert getattr(w, "exitcode", 0) == 0
    return (time.perf_counter() - t) / n


def costs(n_threads, n_processes, rounds):
    """Best of `rounds`, rounds interleaved, as the Rust benchmark does."""
    best_t = best_p = float("inf")
    for r in range(rounds):
        print(f"\r\x1b[2K  measuring: round {r + 1}/{rounds} ...", end="", file=sys.stderr, flush=True)
        best_t = min(best_t, start_join(threading.Thread, n_threads))
        best_p = min(best_p, start_join(ctx.Process, n_processes))
    print("\r\x1b[2K", end="", file=sys.stderr, flush=True)
    return best_t, best_p


def bench():
    n_threads, n_processes, rounds = 3000, 300, 5
    print(f"start + join, one worker at a time: best of {rounds} rounds "
          f"({n_threads} threads, {n_processes} processes per round)")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    th, pr = costs(n_threads, n_processes, rounds)
    print(f"    thread   threading.Thread start + join      {th * 1e6:9.1f} us")
    print(f"    process  Process (fork) start + join        {pr * 1e6:9.1f} us")
    print(f"    a process costs {pr / th:.1f}x a thread to start and join")


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["--bench"]):
        sys.exit(f"error: unknown arguments {sys.argv[1:]} (this twin takes --bench)")
    if sys.argv[1:] == ["--bench"]:
        bench()
        sys.exit(0)
    print(f"pid {os.getpid()}, {os.cpu_count()} CPUs")
    ideal = DELAY * len(NUMBERS)
    print("[1] serial");        print(f"    wall {serial():.3f} s, ideal {2 * ideal:.3f} s")
    print("[2] two threads");   print(f"    wall {threads():.3f} s, ideal {ideal:.3f} s")
    print("[3] two processes"); print(f"    wall {processes():.3f} s, ideal {ideal:.3f} s")
    print("[4] what it costs: start and join 100 threads, then 100 processes")
    th, pr = start_join(threading.Thread, 100), start_join(ctx.Process, 100)
    print(f"    thread  start + join: {th * 1e6:6.0f} us each")
    print(f"    process start + join: {pr * 1e6:6.0f} us each, {pr / th:.1f}x a thread")
