"""Twin of crates/cpu-vs-io: a CPU-bound and an I/O-bound workload, serial, on
threads and on processes. Under CPython's GIL, CPU-bound threads gain nothing.
Run: python3 08_cpu_vs_io.py
"""
import multiprocessing as mp
import os
import threading
import time

ctx = mp.get_context("fork")
TASKS = 4
STEPS = 2_000_000   # one CPU-bound task: about 0.1-0.2 s of CPython
IO_S = 0.2


def compute(steps=STEPS):
    total = 0
    for x in range(steps):
        total += (x % 1000) * (x % 1000)
    return total


def wait(s=IO_S):
    time.sleep(s)


def run(target, how):
    t = time.perf_counter()
    if how == "serial":
        for _ in range(TASKS):
            target()
    else:
        maker = threading.Thread if how == "threads" else ctx.Process
        ws = [maker(target=target) for _ in range(TASKS)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
    return time.perf_counter() - t


if __name__ == "__main__":
    print(f"{os.cpu_count()} CPUs, {TASKS} tasks of each kind")
    for name, target in (("CPU-bound", compute), ("I/O-bound", wait)):
        serial = run(target, "serial")
        print(f"[{name}]")
        for how in ("serial", "threads", "processes"):
            t = serial if how == "serial" else run(target, how)
            print(f"    {how:<10} {t:.3f} s   {serial / t:.2f}x")
