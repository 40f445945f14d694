"""start-methods: fork, spawn or forkserver: what does the child start from?

The Python twin of crates/start-methods. The same child runs under
get_context("fork"), get_context("spawn") and get_context("forkserver"), and
reports what it inherited: a global set in main, an open file, its threads,
whether the top of the main module ran again in it. Then: the main-module
guard, fork while another thread holds a lock, and what each start costs.

    python3 docs/python/03_start_methods.py           # the lesson (quick)
    python3 docs/python/03_start_methods.py --bench   # start + join, timed
"""

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

GLOBAL = 0                 # module level: what a fresh interpreter sees
MAIN_TOP = os.getpid()     # runs wherever this module is executed from the top
LOCK = threading.Lock()    # a thread of the parent will hold it
METHODS = ("fork", "spawn", "forkserver")


def inherited(fd, ino, q):
    """Child: report what this process got from its parent."""
    try:
        has_file = os.fstat(fd).st_ino == ino
    except OSError:
        has_file = False
    q.put((GLOBAL, MAIN_TOP == os.getpid(), has_file, threading.active_count()))


def take_lock():
    """Child: exit 0 if LOCK can be taken within 1 s, else 3."""
    sys.exit(0 if LOCK.acquire(timeout=1) else 3)


def nothing():
    pass


def run_child(ctx, target, args=()):
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(10)
    if p.exitcode is None:          # stuck or stopped: the watchdog
        p.kill()
        p.join()
    return p.exitcode


def step_inherits():
    print("[1] the same child under each start method: what does it inherit?")
    f = open(__file__)  # not inheritable across exec (PEP 446); fork copies it
    ino = os.fstat(f.fileno()).st_ino
    print(f"    parent: GLOBAL = {GLOBAL}; this file is open on fd {f.fileno()}")
    seen = {}
    # ANCHOR: each_method
    for m in METHODS:
        ctx = mp.get_context(m)
        q = ctx.SimpleQueue()
        code = run_child(ctx, inherited, (f.fileno(), ino, q))
        assert code == 0, (m, code)
        seen[m] = q.get()
    # ANCHOR_END: each_method
    f.close()
    print(f"    {'':19}{'fork':10}{'spawn':10}forkserver")
    rows = [("GLOBAL", lambda v: v[0]),
            ("the open file", lambda v: "yes" if v[2] else "no"),
            ("threads", lambda v: v[3])]
    for label, cell in rows:
        cells = "".join(f"{cell(seen[m])!s:10}" for m in METHODS)
        print(f"    {label:19}{cells.rstrip()}")
    # Python's forkserver is a fresh interpreter that imports the main module:
    # its children see the module-level value, like spawn's.
    assert [seen[m][0] for m in METHODS] == [2, 0, 0]
    assert [seen[m][2] for m in METHODS] == [True, False, False]
    assert all(seen[m][3] == 1 for m in METHODS)
    return seen


def step_main_guard(seen):
    print("[2] why `if __name__ == '__main__':` matters")
    ran = ", ".join(f"{m} {'yes' if seen[m][1] else 'no'}" for m in METHODS)
    print(f"    the module's top ran again in the child: {ran}")
    # Python's forkserver children import the main module again too (unlike the
    # Rust kit's, which are forks of a server that is a fork of the program).
    assert [seen[m][1] for m in METHODS] == [False, True, True]
    # Without the guard, the child re-runs the module and starts a child of its
    # own; Python refuses, in the child, with a RuntimeError. Bounded: a timeout.
    script = textwrap.dedent("""
        import multiprocessing as mp
        def f(): pass
        p = mp.get_context("spawn").Process(target=f)
        p.start()
        p.join()
    """)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "unguarded.py")
        with open(path, "w") as fh:
            fh.write(script)
        r = subprocess.run([sys.executable, path], capture_output=True,
                           text=True, timeout=60)
    said = "bootstrapping phase" in r.stderr
    print(f"    unguarded script: RuntimeError in the child: {said}")
    assert said, r.stderr


def step_held_lock():
    print("[3] a thread holds a lock while the main thread starts a child")
    held, release = threading.Event(), threading.Event()

    def holder():
        with LOCK:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder, name="holder")
    t.start()
    held.wait(10)
    codes = {m: run_child(mp.get_context(m), take_lock) for m in METHODS}
    release.set()
    t.join()
    for m in METHODS:
        print(f"    {m}: exitcode {codes[m]}")
    assert codes == {"fork": 3, "spawn": 0, "forkserver": 0}, codes


def step_cost(n):
    print(f"[4] what a start + join costs (mean of {n})")
    cells = []
    for m in METHODS:
        ctx = mp.get_context(m)
        run_child(ctx, nothing)  # warm-up: starts the forkserver
        t = time.perf_counter()
        for _ in range(n):
            assert run_child(ctx, nothing) == 0
        cells.append(f"{m} {(time.perf_counter() - t) / n * 1e3:.2f} ms")
    print("    " + "   ".join(cells))


def main():
    global GLOBAL
    GLOBAL = 2  # set in main: only a forked child sees it
    if "--bench" in sys.argv[1:]:
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        step_cost(50)
        return
    seen = step_inherits()
    step_main_guard(seen)
    step_held_lock()
    step_cost(3)
    print("all claims held")


if __name__ == "__main__":
    main()
