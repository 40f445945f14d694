"""Twin of crates/proc-global-var-pitfall: a child process appends to a global list;
the parent never sees it. A thread does. Run: python3 02_proc_global_var_pitfall.py
"""
import multiprocessing as mp
import os
import threading

# ANCHOR: global
result = []  # the global


def square_list(numbers):
    for n in numbers:
        result.append(n * n)
    if mp.current_process().name != "MainProcess":
        # id() is CPython's address of the list object: the same in parent and child.
        print(f"    child  pid {os.getpid()}: result = {result} (at {id(result):#x})",
              flush=True)
# ANCHOR_END: global


if __name__ == "__main__":
    numbers = [2, 3, 8]
    me = os.getpid()
    print("[1] a child process appends to the global result")
    print(f"    parent pid {me}: result = {result} before the fork (at {id(result):#x})")
    # "fork", as the Rust lesson does; Python 3.14 defaults to "forkserver" on Linux,
    # where the child imports this module afresh: its result starts empty too.
    p = mp.get_context("fork").Process(target=square_list, args=(numbers,))
    p.start()
    p.join()
    print(f"    parent pid {me}: result = {result} after join() (at {id(result):#x})")
    assert p.exitcode == 0 and result == []

    print("[2] a thread appends to the same global")
    t = threading.Thread(target=square_list, args=(numbers,), name="square_list")
    t.start()
    t.join()
    print(f"    thread {t.name} (native id {t.native_id}, pid {me}) ran square_list")
    print(f"    parent pid {me}: result = {result} after join()")
    assert result == [4, 9, 64]
