"""Twin of crates/cpu-vs-io: a CPU-bound and an I/O-bound workload, serial, on
threads and on processes. Under CPython's GIL, CPU-bound threads gain nothing.
"CPU busy" is CPU time / wall time (resource.getrusage): how many cores a run got.
Run: python3 12_cpu_vs_io.py
"""
import multiprocessing as mp
import os
import resource
import threading
import time

ctx = mp.get_context("fork")
TASKS = 4
STEPS = 2_000_000   # one CPU-bound task: about 0.1-0.3 s of CPython
IO_S = 0.2


def compute(steps=STEPS):
    total = 0
    for x in range(steps):
        total += (x % 1000) * (x % 1000)
    return total


def wait(s=IO_S):
    time.sleep(s)


def cpu_seconds(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run(target, how):
    """Wall time and CPU time of TASKS tasks: serially, on threads, in processes."""
    who = resource.RUSAGE_CHILDREN if how == "processes" else resource.RUSAGE_SELF
    cpu, t = cpu_seconds(who), time.perf_counter()
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
    return time.perf_counter() - t, cpu_seconds(who) - cpu


if __name__ == "__main__":
    cpus = os.cpu_count()
    print(f"{cpus} CPUs, {TASKS} tasks of each kind")
    for name, target, ideal in (("CPU-bound", compute, min(TASKS, cpus)),
                                ("I/O-bound", wait, TASKS)):
        print(f"[{name}]")
        serial = None
        for how in ("serial", "threads", "processes"):
            wall, cpu = run(target, how)
            serial = serial or wall
            best = 1 if how == "serial" else ideal
            print(f"    {how:<10} {wall:.3f} s  {serial / wall:.2f}x (ideal {best:.2f}x)"
                  f"  CPU busy {cpu / wall:.2f} cores")
