//! Runs the lesson binary, and the race functions directly (threads only: no fork).

use std::process::Command;
use std::time::{Duration, Instant};

use common::testkit::{Run, expect_error, run};
use thread_race::*;

const BIN: &str = env!("CARGO_BIN_EXE_thread-race");

#[test]
fn the_lesson_holds_every_claim() {
    let r = run(BIN, &["--increments", "200000"], Duration::from_secs(60));
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "then both write 1: counter = 1",
        "balance -60, paid 2, refused 0",
        "balance 20, paid 1, refused 1",
        "ok check: fetch_add: 400000 (expected 400000)",
        "ok check: Mutex: 400000 (expected 400000)",
    ]);
    for code in ["E0133", "E0373", "E0499", "E0277"] {
        assert!(r.line(code).is_some(), "{code} not listed\n{r}");
    }
}

#[test]
fn the_header_shows_what_the_lesson_prints() {
    let r = run(BIN, &[], Duration::from_secs(60));
    r.assert_success()
        .assert_expected_output(include_str!("../src/main.rs"));
}

#[test]
fn every_line_fits_80_columns() {
    let r = run(
        BIN,
        &["--threads", "64", "--increments", "1000"],
        Duration::from_secs(60),
    );
    r.assert_success().assert_fits(80);
}

#[test]
fn the_counter_that_should_reach_two_reaches_one() {
    for _ in 0..20 {
        assert_eq!(both_read_then_both_write().unwrap(), 1);
    }
}

#[test]
fn fetch_add_and_mutex_lose_nothing() {
    for threads in [2, 4] {
        assert_eq!(fetch_add(threads, 50_000).unwrap(), threads as i64 * 50_000);
        assert_eq!(mutex(threads, 50_000).unwrap(), threads as i64 * 50_000);
    }
}

#[test]
fn load_then_store_never_gains() {
    // It may lose updates or, rarely, none; it can never count more than were made.
    assert!(load_then_store(2, 100_000).unwrap() <= 200_000);
}

#[test]
fn check_then_act() {
    let racy = Withdrawals {
        balance: -60,
        paid: 2,
        refused: 0,
    };
    assert_eq!(withdraw_twice_racy(100, 80).unwrap(), racy);
    let locked = Withdrawals {
        balance: 20,
        paid: 1,
        refused: 1,
    };
    for _ in 0..20 {
        assert_eq!(withdraw_twice_locked(100, 80).unwrap(), locked);
    }
}

#[test]
fn a_called_off_rendezvous_lets_the_waiter_go_at_once() {
    let meeting = Rendezvous::new(2, Duration::from_secs(30));
    let t = Instant::now();
    let went_on = std::thread::scope(|s| {
        let waiter = s.spawn(|| meeting.wait());
        std::thread::sleep(Duration::from_millis(50));
        meeting.call_off();
        waiter.join().unwrap()
    });
    assert!(!went_on);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_rendezvous_waits_no_longer_than_its_patience() {
    let meeting = Rendezvous::new(2, Duration::from_millis(100));
    let t = Instant::now();
    assert!(!meeting.wait(), "nobody came, yet it went on");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Whoever comes late finds it called off, instead of going on alone.
    assert!(!meeting.wait());
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--threads", "1"], "1 is not in 2..=64");
    expect_error(BIN, &["--increments", "0"], "0 is not in 1..=100000000");
    expect_error(
        BIN,
        &["--threads", "64", "--increments", "100000000"],
        "--threads x --increments is 6400000000; at most 100000000",
    );
}

/// A lesson that could not start a thread: exit 2, a clear `error:`, no panic (the
/// runner's timeout has already made sure it did not hang).
fn assert_refused_cleanly(r: &Run, how: &str) {
    assert_eq!(r.code, Some(2), "{how}: exit code\n{r}");
    assert!(
        r.stderr.contains("error: cannot start a thread: "),
        "{how}: the error\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{how}: panicked\n{r}");
}

#[test]
fn a_thread_that_cannot_start_is_an_error_not_a_hang() {
    // `ulimit -v` caps the address space: somewhere above the size the binary needs
    // to load, a thread's stack no longer fits (sometimes the first thread starts and
    // the second does not: the first must not wait for it forever). Sweep upward
    // until the lesson runs; every run on the way fails cleanly and quickly.
    let (mut refused, mut ran) = (0, 0);
    for kb in (3000..=64_000).step_by(500) {
        let script = format!("ulimit -v {kb} && exec \"$0\" \"$@\"");
        let t = Instant::now();
        let r = run(
            "sh",
            &["-c", &script, BIN, "--increments", "1000"],
            Duration::from_secs(30),
        );
        if !r.stdout.contains("thread-race: ") || r.stderr.contains("memory allocation of") {
            // Too small to load the binary, or so small that the heap cannot grow:
            // Rust aborts on a failed allocation, which no program can report.
            continue;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "ulimit -v {kb}: slow"
        );
        if r.code == Some(0) {
            ran += 1;
            if ran == 3 {
                break;
            }
        } else {
            assert_refused_cleanly(&r, &format!("ulimit -v {kb}"));
            refused += 1;
        }
    }
    assert!(refused > 0, "no address-space limit refused a thread");
    assert!(ran > 0, "no address-space limit let the lesson run");
}

#[test]
fn a_thread_refused_by_the_process_limit_is_an_error_not_a_hang() {
    // RLIMIT_NPROC counts threads, and root ignores it: as root, run the lesson as
    // `nobody`, allowed two tasks (the main thread and one more: the second racer is
    // refused while the first waits for it). Otherwise, the limit applies to us.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut args: Vec<&str> = Vec::new();
    if root {
        let can = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !can {
            eprintln!("skipped: setpriv cannot switch to uid 65534 here");
            return;
        }
        args.extend([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "prlimit",
        ]);
    }
    args.extend(["--nproc=2", BIN, "--increments", "1000"]);
    let bin = if root { "setpriv" } else { "prlimit" };
    let r = run(bin, &args, Duration::from_secs(30));
    assert_refused_cleanly(&r, "prlimit --nproc=2");
}
