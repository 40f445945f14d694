//! Runs the lesson binary and checks what it claims, and how it fails.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testkit::{expect_error, run, run_limited, run_unicode};

const BIN: &str = env!("CARGO_BIN_EXE_mp-queue");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"));
    // The parent gets exactly 4, 9, 64, from the child; the thread queue too.
    r.expect_lines(&[
        "ok check: the parent got: [4, 9, 64] (expected [4, 9, 64])",
        "ok check: they came from the child (pid ",
        "ok check: the main thread got: [4, 9, 64] (expected [4, 9, 64])",
    ]);
    // crossbeam across fork: nothing arrived, while the child's copy held 3.
    r.expect_lines(&[
        "my copy of the channel holds 3",
        "ok check: nothing crossed: the parent's recv timed out",
    ]);
    // empty() vs the two right ways to end a stream, and the kept sender.
    r.expect_lines(&[
        "ok check: the empty()-loop got: [] (expected [])",
        "ok check: received until the senders closed: [4, 9, 64]",
        "ok check: received until the sentinel: [4, 9, 64]",
        "ok check: with a sender left open, the end of the stream never came",
    ]);
    // join before drain: detected, killed, and then the right order works.
    r.expect_lines(&[
        "the watchdog killed it: exitcode -9 (killed by SIGKILL)",
        "ok check: joining first was caught as a deadlock",
        "ok check: drain first: all 1000000 bytes arrived, then exitcode 0",
    ]);
}

#[test]
fn no_rust_debug_noise_and_every_line_fits_80_columns() {
    // `run` adds --ascii; the Unicode run goes through a UTF-8 locale.
    for r in [run(BIN, &[], LIMIT), run_unicode(BIN, &[], LIMIT)] {
        r.assert_success().assert_fits(80).assert_no_debug_noise();
    }
}

#[test]
fn several_producers_every_item_once_in_producer_order() {
    let r = run(BIN, &["--producers", "5"], LIMIT);
    r.assert_success();
    // The arrival line, with the lines it wraps onto (indented further).
    let lines: Vec<&str> = r.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("arrival:"))
        .expect("arrival line");
    let wrapped = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("      "));
    let items: Vec<&str> = std::iter::once(&lines[at])
        .chain(wrapped)
        .flat_map(|l| l.split_whitespace())
        .filter(|w| *w != "arrival:")
        .collect();
    assert_eq!(items.len(), 25, "{r}");
    for p in ['A', 'B', 'C', 'D', 'E'] {
        let seqs: Vec<u32> = items
            .iter()
            .filter(|i| i.starts_with(p))
            .map(|i| i[1..].parse().unwrap())
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "producer {p}: {r}");
    }
}

#[test]
fn the_deadlock_demo_is_bounded() {
    let t = Instant::now();
    let r = run(BIN, &["--big-bytes", "4000000"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("a deadlock");
    // One 2 s watchdog and a few 0.5 s waits: well under 20 s on a slow machine.
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// The "drain first" child is stopped (SIGSTOP) while it sends 64 MB: the
/// parent's receive gives up at its 10 s bound, says so, and kills the child.
#[test]
fn a_child_stopped_mid_transfer_is_a_clear_error_within_the_bound() {
    let mut lesson = Command::new(BIN)
        .args(["--big-bytes", "64000000", "--ascii"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lesson");
    let stdout = BufReader::new(lesson.stdout.take().expect("piped"));
    let mut pid = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.trim().strip_prefix("drain first: child pid ") {
            pid = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            break;
        }
    }
    let pid = pid.expect("the lesson names the drain-first child");
    std::thread::sleep(Duration::from_millis(30)); // let the transfer begin
    let stopped = Instant::now();
    signal(pid, "STOP");
    // The lesson must end by itself: its bound is 10 s; allow slack, then kill.
    let status = loop {
        if let Some(status) = lesson.try_wait().expect("try_wait") {
            break Some(status);
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            let _ = lesson.kill();
            signal(pid, "KILL");
            let _ = lesson.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = stopped.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut lesson.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.expect("the lesson hung on a stopped child");
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: drain first: child pid {pid} stalled and was killed"
        )) && stderr.contains("then nothing until the 10 s bound"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing left behind: the stopped child was killed and reaped.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} is still there"
    );
}

#[test]
fn a_low_open_file_limit_is_a_clear_error() {
    let r = run_limited(BIN, "ulimit -n 6", &[], LIMIT);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.starts_with("error: "), "{r}");
    assert!(r.stderr.contains("ulimit -n"), "{r}");
    assert!(!r.stderr.contains("panicked"), "{r}");
    // Every limit around it: either the whole lesson, or a clear error.
    for n in 5..=14 {
        let r = run_limited(BIN, &format!("ulimit -n {n}"), &[], LIMIT);
        match r.code {
            Some(0) => {
                r.assert_all_checks_held();
            }
            Some(2) => assert!(
                r.stderr.starts_with("error: ") && r.stderr.contains("ulimit -n"),
                "ulimit -n {n}: {r}"
            ),
            _ => panic!("ulimit -n {n}: neither success nor a clear error\n{r}"),
        }
        assert!(!r.stderr.contains("panicked"), "ulimit -n {n}: {r}");
    }
}

#[test]
fn a_thread_that_cannot_start_is_a_clear_error() {
    // A 100 MB thread stack cannot be mapped under a 60 MB address-space limit;
    // the lesson itself fits.
    let limits = "ulimit -v 60000; export RUST_MIN_STACK=100000000";
    let r = run_limited(BIN, limits, &[], LIMIT);
    r.assert_clear_error("error: cannot start a thread: Resource temporarily unavailable");
    // A plain `ulimit -v 60000` leaves room for everything: the lesson runs.
    run_limited(BIN, "ulimit -v 60000", &[], LIMIT).assert_success();
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--producers", "0"], "0 is not in 1..=26");
    expect_error(BIN, &["--big-bytes", "0"], "0 is not in 1..=64000000");
    expect_error(BIN, &["--numbers", "5000000000"], "does not fit in an i64");
    expect_error(BIN, &["--bench"], "unexpected argument '--bench'");
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}
