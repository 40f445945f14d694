"""Twin of crates/shared-memory-named: shared memory by name between unrelated
programs (SharedMemory, ShareableList), close() versus unlink(), what a killed
creator leaves in /dev/shm, and a Manager().dict() beside a Value.

Run: python3 07_shared_memory_named.py            (the lesson, a few seconds)
     python3 07_shared_memory_named.py --bench    (a Manager access vs a Value
                                                   access, the rows of
                                                   `cargo bench -p shared-memory-named`)
     python3 07_shared_memory_named.py --bench --quick
"""
import mmap
import multiprocessing as mp
import os
import subprocess
import sys
import time
from multiprocessing import resource_tracker, shared_memory

ctx = mp.get_context("fork")
PREFIX = f"course-named-py-{os.getpid()}-"


def first3(sl):
    return [sl[i] for i in range(3)]  # ShareableList has no slices


def in_dev_shm(name):
    return os.path.exists(f"/dev/shm/{name}")


def wait_until(cond, what, patience=5.0):
    deadline = time.monotonic() + patience
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {patience} s for {what}")
        time.sleep(0.001)


def attach(name):
    """Another program: it gets the name, nothing else."""
    sl = shared_memory.ShareableList(name=name)
    # gh-82300: attaching registers the name with *this* program's resource
    # tracker, which would unlink it when this program exits. Not ours to unlink.
    resource_tracker.unregister(sl.shm._name, "shared_memory")
    read = first3(sl)
    sl[3] = os.getpid()  # "I have it open"
    wait_until(lambda: not in_dev_shm(name), "the creator to unlink")
    sl[2] = sl[0] ** 2
    print(f"    pid {os.getpid()}, another program: opened it by name, read {read}")
    print(f"    pid {os.getpid()}: the name is gone, the memory is not: sl[2] = {sl[2]}")
    sys.stdout.flush()
    sl.shm.close()  # close, never unlink: the creator did that


def create_and_wait(name, ready):
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    ready.set()
    time.sleep(30)  # the parent kills us long before
    shm.close()


def map_memfd_and_wait(ready):
    fd = os.memfd_create("course-shm")
    os.ftruncate(fd, 4096)
    m = mmap.mmap(fd, 4096)  # MAP_SHARED
    os.close(fd)
    ready.set()
    time.sleep(30)
    m.close()


def client(d, c, sets):
    key = f"client{c}"
    for i in range(1, sets + 1):
        d[key] = i  # a request to the server, and its reply
        assert d[key] == i  # another round trip


def cost(d, v, rounds):
    t = time.perf_counter()
    for i in range(rounds):
        d["x"] = i
        assert d["x"] == i
    manager = (time.perf_counter() - t) / (2 * rounds)
    t = time.perf_counter()
    for i in range(rounds):
        v.value = i
        assert v.value == i
    value = (time.perf_counter() - t) / (2 * rounds)
    return manager, value


def lesson():
    print("[1] a named segment: made here, opened by name by another program")
    name = PREFIX + "list"
    sl = shared_memory.ShareableList([7, 2.5, 0, 0], name=name)
    print(f"    created /dev/shm/{name}: sl = {first3(sl)}")
    other = subprocess.Popen([sys.executable, __file__, "--attach", name])
    try:
        wait_until(lambda: sl[3] != 0, "the other program to open it")
        sl.shm.unlink()  # at once: nobody needs the name any more
        print(f"    pid {other.pid} has it open; we unlink the name at once")
        assert other.wait(10) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert first3(sl) == [7, 2.5, 49] and sl[3] == other.pid
    print(f"    sl, read here now: {first3(sl)}")
    sl.shm.close()

    print("[2] close() versus unlink()")
    name = PREFIX + "close"
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    shm.buf[0] = 42
    shm.close()
    assert in_dev_shm(name)
    print(f"    close(): unmapped here; /dev/shm/{name} stays")
    again = shared_memory.SharedMemory(name=name)
    assert again.buf[0] == 42
    again.unlink()
    try:
        shared_memory.SharedMemory(name=name)
        raise AssertionError("the name should be gone")
    except FileNotFoundError:
        print("    unlink(): the name is gone (opening it now: FileNotFoundError)")
    again.buf[0] = 43
    print(f"    ...and our mapping still works: buf[0] = {again.buf[0]}")
    again.close()

    print("[3] a creator killed before it unlinks")
    name = PREFIX + "orphan"
    ready = ctx.Event()
    p = ctx.Process(target=create_and_wait, args=(name, ready))
    p.start()
    assert ready.wait(5)
    p.kill()
    p.join(10)
    print(f"    child pid {p.pid} created /dev/shm/{name}, exitcode {p.exitcode}")
    assert in_dev_shm(name)
    print(f"    /dev/shm/{name} is still there: SIGKILL runs no code")
    shared_memory.SharedMemory(name=name).unlink()
    assert not in_dev_shm(name)
    print("    unlinked it by name: gone")
    ready = ctx.Event()
    p = ctx.Process(target=map_memfd_and_wait, args=(ready,))
    p.start()
    assert ready.wait(5)
    with open(f"/proc/{p.pid}/maps") as f:
        line = next(l for l in f if "/memfd:course-shm" in l)
    p.kill()
    p.join(10)
    memfd = line[line.index("/memfd:"):].strip()
    print(f"    child pid {p.pid} mapped {memfd}: no name in /dev/shm")
    assert memfd.endswith("(deleted)")

    print("[4] a Manager: a server process owns the dict, 3 clients use it")
    with ctx.Manager() as m:
        d = m.dict()
        ps = [ctx.Process(target=client, args=(d, c, 50)) for c in (1, 2, 3)]
        for q in ps:
            q.start()
        for q in ps:
            q.join(10)
            assert q.exitcode == 0
        print(f"    d = {dict(sorted(d.items()))}")
        assert dict(d) == {"client1": 50, "client2": 50, "client3": 50}
        v = ctx.Value("q", 0)
        manager, value = cost(d, v, 2000)
        print(f"    a Manager access (d['x'] = i; d['x']): {manager * 1e6:.1f} us")
        print(f"    a Value access (v.value = i; v.value): {value * 1e9:.0f} ns")
        assert manager > 10 * value

    print("[5] on the way out: nothing left in /dev/shm")
    left = [n for n in os.listdir("/dev/shm") if n.startswith(PREFIX)]
    print(f"    /dev/shm entries named {PREFIX}*: {left}")
    assert left == []


def bench(quick):
    trips = 500 if quick else 20_000
    accesses = 20_000 if quick else 2_000_000
    with ctx.Manager() as m:
        d = m.dict()
        v = ctx.Value("q", 0)
        rows = []
        for what, n, op in [
            ("Manager().dict(): d['x'] = i", trips, lambda i: d.__setitem__("x", i)),
            ("Manager().dict(): d['x']", trips, lambda i: d["x"]),
            ("Value('q'): v.value = i", accesses, lambda i: setattr(v, "value", i)),
            ("Value('q'): v.value", accesses, lambda i: v.value),
        ]:
            t = time.perf_counter()
            for i in range(n):
                op(i)
            rows.append((what, (time.perf_counter() - t) / n * 1e9))
    print(f"{trips} manager accesses, {accesses} Value accesses (Python {sys.version.split()[0]})")
    for what, ns in rows:
        print(f"  {what:<34} {ns:>12.1f} ns")
    print(f"same run: a Manager access costs {rows[0][1] / rows[2][1]:.0f}x a Value "
          f"access (set), {rows[1][1] / rows[3][1]:.0f}x (get)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--attach":
        attach(sys.argv[2])
    elif "--bench" in sys.argv:
        bench("--quick" in sys.argv)
    else:
        lesson()
