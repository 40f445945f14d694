"""Twin of crates/threads-square-cube: square and cube a list with a wait per item,
serially, on two threads, and in two processes. Run: python3 01_threads_square_cube.py
"""
import multiprocessing as mp
import os
import threading
import time

NUMBERS = [2, 3, 8, 9]
DELAY = 0.2  # seconds per item: a stand-in for I/O


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
    ctx = mp.get_context("fork")  # the course forks; Python 3.14's default is forkserver
    ps = [ctx.Process(target=work, args=(name, NUMBERS)) for name in ("square", "cube")]
    t = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    wall = time.perf_counter() - t
    assert [p.exitcode for p in ps] == [0, 0]
    return wall


if __name__ == "__main__":
    print(f"pid {os.getpid()}, {os.cpu_count()} CPUs")
    ideal = DELAY * len(NUMBERS)
    print("[1] serial");        print(f"    wall {serial():.3f} s, ideal {2 * ideal:.3f} s")
    print("[2] two threads");   print(f"    wall {threads():.3f} s, ideal {ideal:.3f} s")
    print("[3] two processes"); print(f"    wall {processes():.3f} s, ideal {ideal:.3f} s")
