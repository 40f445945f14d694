"""Twin of crates/proc-global-var-pitfall: a child process appends to a global list;
the parent never sees it. A thread does. Run: python3 02_proc_global_var_pitfall.py
"""
import multiprocessing as mp
import os
import threading

result = []  # the global


def square_list(numbers):
    for n in numbers:
        result.append(n * n)
    # id() is CPython's address of the list object: the same in parent and child.
    who = "thread" if mp.current_process().name == "MainProcess" else "child "
    print(f"    {who} pid {os.getpid()}: result = {result}   (id {id(result):#x})", flush=True)


if __name__ == "__main__":
    numbers = [2, 3, 8]
    print("[1] a child process appends to the global result")
    p = mp.get_context("fork").Process(target=square_list, args=(numbers,))
    p.start()
    p.join()
    print(f"    parent pid {os.getpid()}: result = {result}   (id {id(result):#x})")
    assert p.exitcode == 0 and result == []

    print("[2] a thread appends to the same global")
    t = threading.Thread(target=square_list, args=(numbers,))
    t.start()
    t.join()
    print(f"    parent pid {os.getpid()}: result = {result}")
    assert result == [4, 9, 64]
