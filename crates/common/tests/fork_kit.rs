//! Tests of the kit that fork. libtest runs tests on several threads, and the kit
//! (rightly) refuses to fork a multithreaded process, so this test binary has its
//! own `main` (`harness = false` in Cargo.toml) and runs each case in turn on the
//! main thread. It ends with the plain `N passed, N failed` line.

use std::process::Command;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::lock::{LockError, Robustness, SharedLock};
use common::process::{Joined, ProcessError, children_left, exit_now, open_fds};
use common::shm::{Array, ShmError, Value};
use common::timeline::{Kind, Timeline};
use common::{Exit, fork};

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("exit code: a closure that returns gives 0", returns_zero),
    ("exit code: the code the child chose", chosen_code),
    (
        "exit code: a panic gives 1 and its message",
        panic_gives_one,
    ),
    (
        "100 children alive at once: each panic message comes back to its own",
        many_panic_messages,
    ),
    (
        "a copy the closure forks by hand never writes into another child's slot",
        stray_copy_keeps_out,
    ),
    (
        "a traced child's ptrace stop is not its end",
        traced_stop_is_not_an_end,
    ),
    ("exit code: an Err result gives 1", err_gives_one),
    ("exit code: SIGKILL gives -9", sigkill_gives_minus_nine),
    (
        "terminate gives -15, is_alive reaps",
        terminate_and_is_alive,
    ),
    (
        "join timeout returns None, join_or_kill kills and reaps",
        join_timeout,
    ),
    (
        "fork is refused while another thread runs",
        refuses_with_threads,
    ),
    (
        "a dropped handle leaves no zombie",
        dropped_handle_is_reaped,
    ),
    (
        "unflushed print! text is written once, not twice",
        no_duplicate_output,
    ),
    (
        "Array and Value written by a child are read by the parent",
        shm_is_shared,
    ),
    ("an impossible Array size is a clear error", impossible_size),
    (
        "robust lock: a dead holder is reported, and the lock recovers",
        robust_lock,
    ),
    (
        "stalled lock: a timed attempt times out instead of hanging",
        stalled_lock,
    ),
    (
        "a child's timeline spans reach the parent",
        timeline_from_child,
    ),
    ("no fd leaked by fork and join", no_fd_leak),
];

fn main() {
    if std::env::var("FORK_KIT_SCENARIO").as_deref() == Ok("duplicate-output") {
        duplicate_output_scenario();
        return;
    }
    common::testkit::run_cases(CASES);
}

fn run(f: impl FnOnce() -> i32) -> Exit {
    fork(f).expect("fork").join().expect("join")
}

fn returns_zero() {
    let exit = fork(|| {}).unwrap().join().unwrap();
    assert_eq!(
        exit,
        Exit {
            code: 0,
            panic: None
        }
    );
    assert!(exit.success());
}

fn chosen_code() {
    assert_eq!(run(|| 3).code, 3);
    // `_exit` straight from deep inside the child: same thing.
    assert_eq!(run(|| exit_now(42)).code, 42);
}

fn panic_gives_one() {
    let exit = fork(|| -> () {
        // An expected panic: the test reads its message from the exit, so the
        // default hook need not print it (a green run prints no panic text).
        std::panic::set_hook(Box::new(|_| {}));
        panic!("the child gives up")
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(exit.code, 1);
    assert_eq!(exit.panic.as_deref(), Some("the child gives up"));
    assert!(exit.to_string().contains("panicked: the child gives up"));
    // An empty message is still a panic.
    let exit = fork(|| -> () {
        std::panic::set_hook(Box::new(|_| {}));
        panic!("")
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(exit.panic.as_deref(), Some(""));
    assert_eq!(exit.to_string(), "exitcode 1 (panicked)");
}

/// Child C forks a copy of itself by hand and returns; the parent joins C, and
/// C's slot goes to the next child, D, which panics. The copy then panics too:
/// its message must not land in D's slot, and D's own must come back.
fn stray_copy_keeps_out() {
    let copy_may_go = Value::<i64>::new(0).unwrap();
    let mut c = fork(|| -> () {
        // SAFETY: this child runs one thread; the copy runs only this closure's
        // code, then the kit's child code, and ends in `_exit` there.
        if unsafe { libc::fork() } == 0 {
            std::panic::set_hook(Box::new(|_| {}));
            let t = Instant::now();
            while copy_may_go.cell().load(SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("{}", "c".repeat(100));
        }
    })
    .unwrap();
    assert_eq!(c.join().unwrap().code, 0);
    let mut d = fork(|| -> () {
        std::panic::set_hook(Box::new(|_| {}));
        panic!("D's own")
    })
    .unwrap();
    // D has written its message (or soon will); now the copy panics too.
    copy_may_go.set(1);
    std::thread::sleep(Duration::from_millis(300));
    let exit = d.join().unwrap();
    assert_eq!(exit.panic.as_deref(), Some("D's own"), "{exit}");
}

/// A child that asks its parent to trace it and stops: waitid tells the tracer
/// of the stop, which must not be taken for the child's death.
fn traced_stop_is_not_an_end() {
    let mut child = fork(|| -> i32 {
        // SAFETY: PTRACE_TRACEME takes no pointers; raise stops this process.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
        }
        0
    })
    .unwrap();
    assert_eq!(
        child.join_timeout(Duration::from_millis(300)).unwrap(),
        None
    );
    assert!(child.is_stopped());
    assert!(child.is_alive().unwrap());
    child.kill().unwrap();
    assert_eq!(child.join().unwrap().code, -9);
}

/// More children than the kit's arena has slots (64): the rest get pages of
/// their own. Twice, so that the second round reuses the slots the first gave
/// back. A long message is cut at 4000 bytes.
fn many_panic_messages() {
    for round in 0..2 {
        let children: Vec<_> = (0..100)
            .map(|i| {
                fork(move || -> () {
                    std::panic::set_hook(Box::new(|_| {}));
                    if i == 99 {
                        panic!("{}", "x".repeat(5000));
                    }
                    panic!("round {round}, child {i}")
                })
                .unwrap()
            })
            .collect();
        for (i, mut child) in children.into_iter().enumerate() {
            let exit = child.join().unwrap();
            assert_eq!(exit.code, 1);
            let msg = exit.panic.unwrap();
            if i == 99 {
                assert_eq!(msg, "x".repeat(4000));
            } else {
                assert_eq!(msg, format!("round {round}, child {i}"));
            }
        }
    }
}

fn err_gives_one() {
    let exit = fork(|| Err::<(), _>("(expected: this case checks the exit code of an Err)"))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(exit.code, 1);
}

fn sigkill_gives_minus_nine() {
    let exit = run(|| {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
        0
    });
    assert_eq!(exit.code, -9);
    assert_eq!(exit.signal(), Some(nix::sys::signal::Signal::SIGKILL));
    assert!(exit.to_string().contains("killed by SIGKILL"));
}

fn terminate_and_is_alive() {
    let mut child = fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    assert!(child.is_alive().unwrap());
    assert_eq!(child.exitcode(), None);
    child.terminate().unwrap();
    assert_eq!(child.join().unwrap().code, -15);
    assert!(!child.is_alive().unwrap());
    assert_eq!(child.exitcode(), Some(-15));
    child.kill().unwrap(); // reaped already: a no-op, not a signal to a recycled PID
}

fn join_timeout() {
    let mut child = fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    assert_eq!(
        child.join_timeout(Duration::from_millis(100)).unwrap(),
        None
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    match child.join_or_kill(Duration::from_millis(100)).unwrap() {
        Joined::Killed(exit) => assert_eq!(exit.code, -9),
        other => panic!("expected a kill, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    let mut quick = fork(|| 7).unwrap();
    assert_eq!(
        quick.join_or_kill(Duration::from_secs(5)).unwrap(),
        Joined::Finished(Exit {
            code: 7,
            panic: None
        })
    );
}

fn refuses_with_threads() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv_timeout(Duration::from_secs(10));
    });
    match fork(|| {}) {
        Err(ProcessError::MultiThreaded { threads }) => assert_eq!(threads, 2),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(tx);
    t.join().unwrap();
    // Once the thread is gone, forking works again.
    assert_eq!(run(|| 0).code, 0);
}

fn dropped_handle_is_reaped() {
    let child = fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    let pid = child.pid();
    assert!(children_left().iter().any(|&(p, _)| p == pid));
    let t = Instant::now();
    drop(child);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(children_left().is_empty(), "{:?}", children_left());
    // A child that already exited, dropped unjoined: reaped too (no zombie).
    let child = fork(|| {}).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(child);
    assert!(children_left().is_empty());
}

fn duplicate_output_scenario() {
    // Runs in a re-executed copy of this binary, whose stdout is a pipe.
    print!("before fork ");
    let exit = fork(|| print!("child ")).unwrap().join().unwrap();
    println!("parent {}", exit.code);
}

fn no_duplicate_output() {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("FORK_KIT_SCENARIO", "duplicate-output")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("before fork").count(), 1, "{text:?}");
    assert_eq!(text.matches("child").count(), 1, "{text:?}");
    assert!(text.contains("parent 0"), "{text:?}");
}

fn shm_is_shared() {
    let arr = Array::<i32>::new(3).unwrap();
    let val = Value::<f64>::new(0.0).unwrap();
    let exit = run(|| {
        for (i, x) in [2, 3, 8].into_iter().enumerate() {
            arr.set(i, x * x);
        }
        val.set(5.67);
        0
    });
    assert_eq!(exit.code, 0);
    assert_eq!(arr.to_vec(), vec![4, 9, 64]);
    assert_eq!(val.get(), 5.67);
    assert!(arr.region().maps_line().unwrap().contains("rw-s"));
}

fn impossible_size() {
    match Array::<i64>::new(usize::MAX / 2) {
        Err(ShmError::TooLarge { what, reason }) => {
            assert!(what.contains("Array('q'"), "{what}");
            assert!(
                reason.contains("more than this machine's memory"),
                "{reason}"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

fn robust_lock() {
    let lock = SharedLock::new(Robustness::Robust).unwrap();
    let balance = Value::<i64>::new(200).unwrap();
    let exit = run(|| {
        let _guard = lock.lock().unwrap();
        balance.set(150); // half-way through a transfer...
        exit_now(0) // ...and gone, still holding the lock
    });
    assert_eq!(exit.code, 0);
    match lock.try_lock_for(Duration::from_secs(2)) {
        Err(LockError::OwnerDied(mut guard)) => {
            balance.set(200);
            guard.mark_consistent().unwrap();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let _g = lock
        .try_lock_for(Duration::from_secs(2))
        .expect("usable again");
    assert!(matches!(lock.try_lock(), Err(LockError::WouldDeadlock)));
}

fn stalled_lock() {
    let lock = SharedLock::new(Robustness::Stalled).unwrap();
    let exit = run(|| {
        std::mem::forget(lock.lock().unwrap());
        exit_now(0)
    });
    assert_eq!(exit.code, 0);
    let t = Instant::now();
    assert!(matches!(
        lock.try_lock_for(Duration::from_millis(200)),
        Err(LockError::TimedOut)
    ));
    assert!(t.elapsed() >= Duration::from_millis(190));
}

fn timeline_from_child() {
    let mut tl = Timeline::new(16).unwrap();
    let lane = tl.lane("child");
    let mut child = fork(|| tl.span(lane, Kind::Run, || std::hint::black_box(1 + 1))).unwrap();
    let pid = child.pid();
    child.join().unwrap();
    let spans = tl.lane_spans(lane);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].pid, pid);
    assert!(tl.render("t", true, 80).contains(&format!("pid {pid}")));
}

fn no_fd_leak() {
    let before = open_fds();
    let counter = Value::<i64>::new(0).unwrap();
    for _ in 0..10 {
        run(|| {
            counter.cell().fetch_add(1, SeqCst);
            0
        });
    }
    let _killed = fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    drop(_killed);
    assert_eq!(counter.get(), 10);
    assert_eq!(open_fds(), before);
}
