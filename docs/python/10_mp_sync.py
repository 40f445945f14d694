"""Twin of crates/mp-sync: Event, Semaphore, Barrier, Condition and Lock shared
between processes, each claim asserted, each demo of a hang bounded by a timeout.

Run: python3 10_mp_sync.py
"""
import multiprocessing as mp
import os
import threading
import time

ctx = mp.get_context("fork")
BOUND = 5.0  # every wait that should succeed, succeeds within this
PATIENCE = 0.5  # how long a demo of a hang waits before calling it one


def start(target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def join_all(ps):
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0, f"pid {p.pid}: exitcode {p.exitcode}"


# [1] Event: N processes wait; one set() releases them all.
def event_waiter(event, ready, woke_at, i):
    ready.release()
    assert event.wait(BOUND), "the event was never set"
    woke_at[i] = time.monotonic()


def event_step(n=4):
    print(f"[1] Event: {n} processes wait; one set() wakes all")
    event, ready = ctx.Event(), ctx.Semaphore(0)
    woke_at = ctx.Array("d", n)
    ps = [start(event_waiter, event, ready, woke_at, i) for i in range(n)]
    for _ in range(n):
        assert ready.acquire(timeout=BOUND)
    time.sleep(0.05)
    early = sum(1 for t in woke_at if t != 0)
    set_at = time.monotonic()
    event.set()
    join_all(ps)
    after = [t - set_at for t in woke_at]
    print(f"    they ran again {min(after)*1e3:.2f} to {max(after)*1e3:.2f} ms later")
    assert early == 0 and all(a >= 0 for a in after)
    print(f"  ok: none passed before set(), all {n} after it")


# [2] Semaphore(2): 5 processes, at most 2 inside.
def sem_worker(sem, inside, most, entered, go):
    assert go.wait(BOUND)
    assert sem.acquire(timeout=BOUND), "no turn"
    try:
        with inside.get_lock():
            inside.value += 1
            most.value = max(most.value, inside.value)
            entered.value += 1
        time.sleep(0.02)
        with inside.get_lock():
            inside.value -= 1
    finally:
        sem.release()


def semaphore_step(n=5, slots=2):
    print(f"[2] Semaphore({slots}): {n} processes, {slots} inside at most")
    sem, go = ctx.Semaphore(slots), ctx.Event()
    inside, most, entered = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    ps = [start(sem_worker, sem, inside, most, entered, go) for _ in range(n)]
    go.set()
    join_all(ps)
    assert most.value <= slots and entered.value == n
    print(f"  ok: never more than {slots} inside (most at once: {most.value})")


# [3] Barrier(3): 3 phases; nobody leaves a phase before the last arrives.
def barrier_party(barrier, arrived, left, p, parties, phases):
    for phase in range(phases):
        time.sleep(0.01 * ((p + phase) % parties))
        arrived[phase * parties + p] = time.monotonic()
        barrier.wait(BOUND)
        left[phase * parties + p] = time.monotonic()


def barrier_step(parties=3, phases=3):
    print(f"[3] Barrier({parties}): {phases} phases; none leaves early")
    barrier = ctx.Barrier(parties)
    arrived, left = ctx.Array("d", parties * phases), ctx.Array("d", parties * phases)
    join_all([start(barrier_party, barrier, arrived, left, p, parties, phases)
              for p in range(parties)])
    for ph in range(phases):
        a, l = arrived[ph * parties:(ph + 1) * parties], left[ph * parties:(ph + 1) * parties]
        assert min(l) >= max(a), f"phase {ph + 1}: a party left early"
    print("  ok: no departure before the last arrival, in any phase")


# [4] A party dies on its way to the barrier while the others wait there: they
# time out and are told.
def slow_party(barrier):
    time.sleep(60)  # a long piece of work; it is killed during it
    barrier.wait(BOUND)


def barrier_waiter(barrier, timeout, outcome, i):
    try:
        barrier.wait(timeout)
        outcome[i] = 1
    except threading.BrokenBarrierError:
        outcome[i] = 2


def dead_party_step(parties=3):
    print("[4] a party dies before it reaches the barrier")
    barrier = ctx.Barrier(parties)
    outcome = ctx.Array("i", parties)
    t = time.monotonic()
    dead = start(slow_party, barrier)
    ps = [start(barrier_waiter, barrier, PATIENCE if i == 1 else BOUND, outcome, i)
          for i in range(1, parties)]
    # Kill party 1 once the others are waiting at the barrier.
    give_up = time.monotonic() + BOUND
    while barrier.n_waiting < parties - 1 and time.monotonic() < give_up:
        time.sleep(0.001)
    waiting = barrier.n_waiting
    dead.kill()
    dead.join(BOUND)
    print(f"    party 1 (pid {dead.pid}) was killed on its way: exitcode {dead.exitcode}")
    assert waiting == parties - 1, f"only {waiting} were waiting at the barrier"
    join_all(ps)
    waited = time.monotonic() - t
    assert all(o == 2 for o in outcome[1:]) and barrier.broken
    assert waited < BOUND, "the others were not released by the break"
    print(f"  ok: {waiting} were waiting when it died; every one got "
          f"BrokenBarrierError after {waited:.2f} s")


# [5] Condition: wait_for(items >= 3) while a producer adds items.
# ANCHOR: condition
def consumer(cond, items, seen):
    with cond:
        assert cond.wait_for(lambda: items.value >= 3, BOUND)
        seen.value = items.value


def producer(cond, items):
    for _ in range(5):
        time.sleep(0.01)
        with cond:
            items.value += 1
            cond.notify_all()
# ANCHOR_END: condition


def condition_step():
    print("[5] Condition: wait_for(items >= 3) while a producer adds items")
    cond = ctx.Condition()
    items, seen = ctx.Value("i", 0, lock=False), ctx.Value("i", 0, lock=False)
    join_all([start(consumer, cond, items, seen), start(producer, cond, items)])
    assert seen.value >= 3
    print(f"  ok: the consumer returned at items {seen.value}")
    with cond:
        t = time.monotonic()
        ok = cond.wait_for(lambda: items.value >= 100, PATIENCE)
    assert not ok and time.monotonic() - t >= PATIENCE * 0.99
    print(f"    wait_for(items >= 100, timeout={PATIENCE}): {ok}")


# [6] Lock is a semaphore of one: a child acquires, the parent releases.
def take(lock):
    assert lock.acquire(timeout=BOUND)


def lock_step():
    print("[6] Lock() is a semaphore of one: a child acquires, the parent releases")
    lock = ctx.Lock()
    join_all([start(take, lock)])
    assert not lock.acquire(False), "the lock should still be taken"
    lock.release()  # allowed: multiprocessing.Lock has no owner
    assert lock.acquire(False)
    lock.release()
    try:
        lock.release()
        raise AssertionError("a second release was accepted")
    except ValueError as e:
        print(f"    release() once more: ValueError: {e}")
    print("  ok: the parent released the child's lock; a release too many is refused")


# [7] The holder dies: Lock stays taken (Python has no robust lock).
def hold(lock, holding):
    assert lock.acquire(timeout=BOUND)
    holding.set()
    time.sleep(60)


def holder_dies_step():
    print("[7] the holder dies holding Lock()")
    lock, holding = ctx.Lock(), ctx.Event()
    p = start(hold, lock, holding)
    assert holding.wait(BOUND)
    p.kill()
    p.join()
    t = time.monotonic()
    got = lock.acquire(timeout=PATIENCE)
    print(f"    the holder ended with exitcode {p.exitcode}")
    print(f"    Lock(): acquire(timeout={PATIENCE}) -> {got} after {time.monotonic() - t:.3f} s")
    assert not got and p.exitcode == -9
    print("  !! broken on purpose: nobody will release it: acquire() would wait forever")


if __name__ == "__main__":
    t = time.monotonic()
    print(f"mp-sync twin, pid {os.getpid()}")
    event_step()
    semaphore_step()
    barrier_step()
    dead_party_step()
    condition_step()
    lock_step()
    holder_dies_step()
    assert not ctx.active_children(), "a child was left behind"
    print(f"all claims held ({time.monotonic() - t:.2f} s)")
