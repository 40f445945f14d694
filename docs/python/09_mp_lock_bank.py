"""Twin of crates/mp-lock-bank: deposit and withdraw on a shared balance of 200,
without and with multiprocessing.Lock, and a holder that dies.

Run: python3 09_mp_lock_bank.py
     python3 09_mp_lock_bank.py --bench [--increments N]
         what the lock costs: ns per locked increment, 2 processes (the Rust
         figure comes from `cargo bench -p mp-lock-bank`)
"""
import argparse
import multiprocessing as mp
import os
import time

ctx = mp.get_context("fork")


# ANCHOR: transact
def transact(balance, lock, delta, ops=100):
    for _ in range(ops):
        time.sleep(0.001)
        if lock:
            lock.acquire()
        read = balance.value
        t = time.perf_counter()
        while time.perf_counter() - t < 0.0005:  # the window: compute, log, ...
            pass
        balance.value = read + delta
        if lock:
            lock.release()
# ANCHOR_END: transact


def bank(lock):
    balance = ctx.Value("i", 200, lock=False)  # the lesson's lock is explicit
    ps = [ctx.Process(target=transact, args=(balance, lock, d)) for d in (1, -1)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return balance.value


def die_holding(lock):
    lock.acquire()
    os._exit(0)  # gone, and nobody will ever release it


def count(counter, lock, go, n):
    go.wait()
    for _ in range(n):
        with lock:
            counter.value += 1  # += on a Value is not atomic: the lock makes it so


def timed_count(procs, n):
    """procs processes each add 1 to one shared counter n times under one
    multiprocessing.Lock; the wall time from the start signal to the last join."""
    counter = ctx.Value("q", 0, lock=False)
    lock, go = ctx.Lock(), ctx.Event()
    ps = [ctx.Process(target=count, args=(counter, lock, go, n)) for _ in range(procs)]
    for p in ps:
        p.start()
    t = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    wall = time.perf_counter() - t
    assert counter.value == procs * n, f"counted {counter.value} of {procs * n}"
    return wall * 1e9 / (procs * n)


def bench(n):
    print(f"mp.Lock + Value, {n} increments per process")
    for procs in (2, 1):
        ns = timed_count(procs, n)
        noun = "processes" if procs > 1 else "process"
        print(f"locked, {procs} {noun}: {ns:.1f} ns per increment")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true", help="measure the lock instead")
    ap.add_argument("--increments", type=int, default=200_000,
                    help="increments per process for --bench")
    args = ap.parse_args()
    if args.bench:
        if not 1 <= args.increments <= 10_000_000:
            ap.error("--increments must be in 1..10000000")
        bench(args.increments)
        raise SystemExit(0)
    print(f"[1] without a lock: final balance {bank(None)} (expected 200)")
    print(f"[2] with the lock:  final balance {bank(ctx.Lock())} (expected 200)")
    lock = ctx.Lock()
    p = ctx.Process(target=die_holding, args=(lock,))
    p.start()
    p.join()
    got = lock.acquire(timeout=1)
    print(f"[4] holder died: acquire(timeout=1) -> {got}: a plain acquire() would wait forever")
