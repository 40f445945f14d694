"""Twin of crates/mp-lock-bank: deposit and withdraw on a shared balance of 200,
without and with multiprocessing.Lock, and a holder that dies.
Run: python3 06_mp_lock_bank.py
"""
import multiprocessing as mp
import os
import time

ctx = mp.get_context("fork")


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


if __name__ == "__main__":
    print(f"[1] without a lock: final balance {bank(None)} (expected 200)")
    print(f"[2] with the lock:  final balance {bank(ctx.Lock())} (expected 200)")
    lock = ctx.Lock()
    p = ctx.Process(target=die_holding, args=(lock,))
    p.start(); p.join()
    got = lock.acquire(timeout=1)
    print(f"[4] holder died: acquire(timeout=1) -> {got}: a plain acquire() would wait forever")
