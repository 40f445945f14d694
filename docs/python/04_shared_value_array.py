"""Twin of crates/shared-value-array: a child writes into Array('i') and Value('d');
the same writes into a private mapping are lost; += on a shared Value loses updates
unless get_lock() is held. Run: python3 04_shared_value_array.py
"""
import ctypes
import mmap
import multiprocessing as mp
import struct

ctx = mp.get_context("fork")


def write_squares(numbers, arr, val):
    for i, n in enumerate(numbers):
        arr[i] = n * n
    val.value = 5.67


def write_private(numbers, mm):
    for i, n in enumerate(numbers):
        mm[i * 4:i * 4 + 4] = struct.pack("i", n * n)


def maps_line(addr):
    """The /proc/self/maps line of the mapping holding addr: range, flags, name."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(h, 16) for h in fields[0].split("-"))
            if lo <= addr < hi:
                return " ".join(fields[:2] + fields[5:])
    return ""


# ANCHOR: add
def add(counter, n, locked):
    for _ in range(n):
        if locked:
            with counter.get_lock():
                counter.value += 1
        else:
            counter.value += 1  # each get and set takes the lock; the pair does not
# ANCHOR_END: add


def race(n, locked):
    counter = ctx.Value("q", 0)
    ps = [ctx.Process(target=add, args=(counter, n, locked)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return counter.value


if __name__ == "__main__":
    numbers = [2, 3, 8]
    print("[1] a child writes into Array('i', 3) and Value('d') in shared memory")
    # ANCHOR: write_read
    arr, val = ctx.Array("i", 3), ctx.Value("d", 0.0)
    p = ctx.Process(target=write_squares, args=(numbers, arr, val))
    p.start(); p.join()
    print(f"    parent reads: array {arr[:]}, value {val.value}")
    # ANCHOR_END: write_read
    shared = maps_line(ctypes.addressof(arr.get_obj()))
    print(f"    /proc/self/maps: {shared}")
    assert arr[:] == [4, 9, 64] and val.value == 5.67 and " rw-s" in shared

    print("[2] the trap: the same writes into a private anonymous mapping")
    mm = mmap.mmap(-1, 12, flags=mmap.MAP_PRIVATE)  # fileno -1: anonymous
    p = ctx.Process(target=write_private, args=(numbers, mm))
    p.start(); p.join()
    print(f"    parent reads: array {list(struct.unpack('3i', mm[:12]))}")
    private = maps_line(ctypes.addressof(ctypes.c_char.from_buffer(mm)))
    print(f"    /proc/self/maps: {private}")
    assert mm[:12] == bytes(12) and " rw-p" in private

    n = 20_000
    print(f"[3] counter.value += 1 from two processes, {n} times each")
    without = race(n, False)
    print(f"    without the lock: {without} (expected {2 * n}): lost {2 * n - without}")
    with_lock = race(n, True)
    print(f"    with get_lock() held across the += : {with_lock} (expected {2 * n})")
    assert with_lock == 2 * n
