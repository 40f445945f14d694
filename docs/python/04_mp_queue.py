"""Twin of crates/mp-queue: multiprocessing.Queue vs queue.Queue, the empty() loop,
sentinels, and the join-before-drain deadlock (caught with a timeout).
Run: python3 04_mp_queue.py
"""
import multiprocessing as mp
import os
import queue
import threading
import time

ctx = mp.get_context("fork")
NUMBERS = [2, 3, 8]


def put_squares(q, delay=0.0, sentinel=False):
    time.sleep(delay)
    for n in NUMBERS:
        q.put((os.getpid(), n * n))
    if sentinel:
        q.put(None)


def put_big(q, size):
    q.put(b"X" * size)


def producer(q, name):
    for seq in range(5):
        q.put(f"{name}{seq}")
        time.sleep(0.002)


if __name__ == "__main__":
    print("[1] a child process puts squares on a queue; the parent gets them")
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q,))
    p.start()
    got = [q.get() for _ in NUMBERS]
    p.join()
    print(f"    process queue: got {[v for _, v in got]} from pid {got[0][0]}")
    tq = queue.Queue()
    t = threading.Thread(target=put_squares, args=(tq,))
    t.start(); t.join()
    print(f"    thread queue:  got {[tq.get()[1] for _ in NUMBERS]}")

    print("[3] empty() is not the end of the stream")
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q, 0.05))
    p.start()
    early = []
    while not q.empty():
        early.append(q.get())
    print(f"    while not q.empty(): got {early}")
    rest = [q.get(timeout=10)[1] for _ in NUMBERS]
    p.join()
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q, 0.05, True))
    p.start()
    until_none = []
    while (item := q.get(timeout=10)) is not None:
        until_none.append(item[1])
    p.join()
    print(f"    until the None sentinel: got {until_none}")

    print("[4] join before drain: the child puts 1000000 bytes")
    q = ctx.Queue()
    p = ctx.Process(target=put_big, args=(q, 1_000_000))
    p.start()
    p.join(timeout=2)
    if p.is_alive():
        print("    join first: still alive after 2 s: would deadlock (terminating it)")
        p.terminate(); p.join()
    q = ctx.Queue()
    p = ctx.Process(target=put_big, args=(q, 1_000_000))
    p.start()
    print(f"    drain first: got {len(q.get(timeout=10))} bytes", end="")
    p.join()
    print(f", then joined: exitcode {p.exitcode}")

    print("[5] 3 producers, 5 items each, one queue")
    q = ctx.Queue()
    ps = [ctx.Process(target=producer, args=(q, name)) for name in "ABC"]
    for p in ps:
        p.start()
    arrival = [q.get(timeout=10) for _ in range(15)]
    for p in ps:
        p.join()
    print("    arrival:", " ".join(arrival))

    # A small version of the benchmark: messages per second, child to parent.
    n = 50_000
    q = ctx.Queue()
    p = ctx.Process(target=lambda: [q.put(i) for i in range(n)])
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    rate = n / (time.perf_counter() - t0)
    p.join()
    print(f"[bench] multiprocessing.Queue, 1 item a message: {rate:.0f} items per second")
