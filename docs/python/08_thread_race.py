"""Twin of crates/thread-race: the counter that should reach 2 but reaches 1, lost
updates in threads, and the check-then-act withdrawal race.
Run: python3 08_thread_race.py
"""
import threading
import time

counter = 0


def increment_racy(barrier):
    global counter
    seen = counter
    barrier.wait()          # both have read before either writes
    counter = seen + 1


# ANCHOR: add_many
def add_many(n, lock=None):
    global counter
    for _ in range(n):
        if lock:
            with lock:
                counter += 1
        else:
            v = counter
            time.sleep(0)   # give up the GIL between read and write: widen the window
            counter = v + 1
# ANCHOR_END: add_many


def run_threads(target, *args):
    ts = [threading.Thread(target=target, args=args) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    print("[2] the counter that should reach 2 but reaches 1")
    run_threads(increment_racy, threading.Barrier(2))
    print(f"    two threads read 0, then both write 1: counter = {counter}")
    assert counter == 1

    n = 20_000
    print(f"[3] 2 threads x {n} increments")
    counter = 0
    run_threads(add_many, n)
    print(f"    read, then write: {counter} (expected {2 * n})")
    print(f"    broken on purpose: lost {2 * n - counter} updates")
    counter = 0
    run_threads(add_many, n, threading.Lock())
    print(f"    with a Lock:      {counter} (expected {2 * n})")
    assert counter == 2 * n

    print("[4] check-then-act: an account of 100, two withdrawals of 80")
    balance = 100
    checked = threading.Barrier(2)

    def withdraw(amount):
        global balance
        ok = balance >= amount
        checked.wait()
        if ok:
            balance -= amount

    run_threads(withdraw, 80)
    print(f"    check, let go, act:   balance {balance}")
    assert balance == -60
    balance = 100
    lock = threading.Lock()

    def withdraw_locked(amount):
        global balance
        with lock:
            if balance >= amount:
                balance -= amount

    run_threads(withdraw_locked, 80)
    print(f"    one lock across both: balance {balance}")
    assert balance == 20
