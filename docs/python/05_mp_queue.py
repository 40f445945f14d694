"""Twin of crates/mp-queue: multiprocessing.Queue vs queue.Queue, a queue.Queue
that does not cross a fork, the empty() loop, sentinels, a write end left open,
the join-before-drain deadlock (caught with a timeout), several producers.

Run: python3 05_mp_queue.py            (the lesson, a few seconds)
     python3 05_mp_queue.py --bench    (messages per second and round trips,
                                        the same rows as `cargo bench -p mp-queue`)
     python3 05_mp_queue.py --bench --quick
"""
import multiprocessing as mp
import os
import queue
import sys
import threading
import time

ctx = mp.get_context("fork")
NUMBERS = [2, 3, 8]
SQUARES = [n * n for n in NUMBERS]


def put_squares(q, go=None, sentinel=False):
    if go is not None:
        go.wait(10)  # "some work" before the first put
    for n in NUMBERS:
        q.put((os.getpid(), n * n))
    if sentinel:
        q.put(None)


def put_big(q, size):
    q.put("X" * size)


def producer(q, name):
    for seq in range(5):
        q.put(f"{name}{seq}")
        time.sleep(0.002)


def lesson():
    print("[1] a child process puts squares on a queue; the parent gets them")
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q,))
    p.start()
    got = [q.get(timeout=10) for _ in NUMBERS]  # drain first...
    p.join(10)  # ...then join
    print(f"    process queue: got {[v for _, v in got]} from pid {got[0][0]}")
    assert [v for _, v in got] == SQUARES and p.exitcode == 0
    tq = queue.Queue()
    t = threading.Thread(target=put_squares, args=(tq,))
    t.start()
    t.join()
    print(f"    thread queue:  got {[tq.get()[1] for _ in NUMBERS]}")

    print("[2] a queue.Queue made before fork does not cross processes")
    tq = queue.Queue()
    p = ctx.Process(target=put_squares, args=(tq,))
    p.start()
    p.join(10)
    try:
        tq.get(timeout=0.5)
        print("    the parent got a value (unexpected)")
    except queue.Empty:
        print("    parent: nothing arrived in 500 ms: the child filled its own copy")

    print("[3] empty() is not the end of the stream")
    go = ctx.Event()
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q, go))
    p.start()
    early = []
    while not q.empty():
        early.append(q.get())
    go.set()
    print(f"    while not q.empty(): got {early}   (the child had not sent yet)")
    rest = [q.get(timeout=10)[1] for _ in NUMBERS]
    p.join(10)
    go = ctx.Event()
    go.set()
    q = ctx.Queue()
    p = ctx.Process(target=put_squares, args=(q, go, True))
    p.start()
    until_none = []
    while (item := q.get(timeout=10)) is not None:
        until_none.append(item[1])
    p.join(10)
    print(f"    until the None sentinel:    got {until_none}")
    assert rest == SQUARES and until_none == SQUARES
    # A Pipe ends (EOFError) only when every write end is closed, in every process.
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=lambda: [w.send(s) for s in SQUARES])
    p.start()
    got = [r.recv() for _ in SQUARES]
    p.join(10)
    # The parent still holds `w`: no EOF comes.
    ended = r.poll(0.5)
    print(f"    the parent kept a write end: got {len(got)} values; the child "
          f"ended with exitcode {p.exitcode}")
    print(f"    then {'an end' if ended else 'nothing'} in 500 ms: "
          "recv() would wait forever")
    w.close()
    r.close()

    print("[4] join before drain: the child puts 1000000 bytes")
    q = ctx.Queue()
    p = ctx.Process(target=put_big, args=(q, 1_000_000))
    p.start()
    p.join(timeout=2)
    if p.is_alive():
        print("    join first: after 2 s the child was still alive: a deadlock")
        p.terminate()
        p.join()
        print(f"    terminated: exitcode {p.exitcode}")
    q = ctx.Queue()
    p = ctx.Process(target=put_big, args=(q, 1_000_000))
    p.start()
    size = len(q.get(timeout=10))
    p.join(10)
    print(f"    drain first: got {size} bytes, then joined: exitcode {p.exitcode}")

    print("[5] 3 producers, 5 items each, one queue")
    q = ctx.Queue()
    ps = [ctx.Process(target=producer, args=(q, name)) for name in "ABC"]
    for p in ps:
        p.start()
    arrival = [q.get(timeout=10) for _ in range(15)]
    for p in ps:
        p.join(10)
    print("    arrival:", " ".join(arrival))


# --- --bench: the same rows as `cargo bench -p mp-queue` ---------------------

def stream_queue(n, batch):
    """A child puts n messages of `batch` ints on an mp.Queue; items per second."""
    q = ctx.Queue()

    def send():
        for i in range(n):
            q.put(list(range(i * batch, (i + 1) * batch)))

    p = ctx.Process(target=send)
    t0 = time.perf_counter()
    p.start()
    for i in range(n):
        assert q.get(timeout=30)[0] == i * batch
    rate = n * batch / (time.perf_counter() - t0)
    p.join(10)
    return rate


def stream_pipe(n, batch):
    """The same through a one-way Pipe (no feeder thread, no lock)."""
    r, w = ctx.Pipe(duplex=False)

    def send():
        for i in range(n):
            w.send(list(range(i * batch, (i + 1) * batch)))

    p = ctx.Process(target=send)
    t0 = time.perf_counter()
    p.start()
    w.close()  # the child holds the only write end
    for i in range(n):
        assert r.recv()[0] == i * batch
    rate = n * batch / (time.perf_counter() - t0)
    p.join(10)
    r.close()
    return rate


def stream_threads(n, batch):
    q = queue.Queue()

    def send():
        for i in range(n):
            q.put(list(range(i * batch, (i + 1) * batch)))

    t = threading.Thread(target=send)
    t0 = time.perf_counter()
    t.start()
    for i in range(n):
        assert q.get()[0] == i * batch
    rate = n * batch / (time.perf_counter() - t0)
    t.join()
    return rate


def echo_queue(inq, outq):
    while (v := inq.get(timeout=30)) is not None:
        outq.put(v)


def rtt_queue(trips):
    inq, outq = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo_queue, args=(inq, outq))
    p.start()
    t0 = time.perf_counter()
    for i in range(trips):
        inq.put(i)
        assert outq.get(timeout=30) == i
    d = (time.perf_counter() - t0) / trips
    inq.put(None)
    p.join(10)
    return d


def rtt_pipe(trips):
    parent, child = ctx.Pipe()

    def echo():
        while (v := child.recv()) is not None:
            child.send(v)

    p = ctx.Process(target=echo)
    p.start()
    t0 = time.perf_counter()
    for i in range(trips):
        parent.send(i)
        assert parent.recv() == i
    d = (time.perf_counter() - t0) / trips
    parent.send(None)
    p.join(10)
    return d


def rtt_threads(trips):
    inq, outq = queue.Queue(), queue.Queue()
    t = threading.Thread(target=echo_queue, args=(inq, outq))
    t.start()
    t0 = time.perf_counter()
    for i in range(trips):
        inq.put(i)
        assert outq.get() == i
    d = (time.perf_counter() - t0) / trips
    inq.put(None)
    t.join()
    return d


def bench(quick):
    small, items, trips = (5_000, 200_000, 500) if quick else (200_000, 10_000_000, 20_000)
    batches = items // 1000
    print(f"{small} small messages, {items} items in batches of 1000, "
          f"{trips} round trips")
    rows = [
        ("processes, mp.Queue, 1 item a message",
         stream_queue(small, 1), rtt_queue(trips)),
        ("processes, Pipe, 1 item a message",
         stream_pipe(small, 1), rtt_pipe(trips)),
        ("threads, queue.Queue, 1 item a message",
         stream_threads(small, 1), rtt_threads(trips)),
        ("processes, mp.Queue, batches of 1000", stream_queue(batches, 1000), None),
        ("processes, Pipe, batches of 1000", stream_pipe(batches, 1000), None),
        ("threads, queue.Queue, batches of 1000",
         stream_threads(batches, 1000), None),
    ]
    print(f"{'':<42} {'items/s':>14} {'round trip':>11}")
    for name, rate, rtt in rows:
        rt = f"{rtt * 1e6:.1f} us" if rtt is not None else ""
        print(f"{name:<42} {rate:>14.0f} {rt:>11}".rstrip())


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench("--quick" in sys.argv)
    else:
        lesson()
