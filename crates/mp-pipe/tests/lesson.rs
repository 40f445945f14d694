//! Runs the lesson binary and checks what it claims, and how it fails.

use std::time::Duration;

use common::testkit::{expect_error, run, run_limited, run_unicode};

const BIN: &str = env!("CARGO_BIN_EXE_mp-pipe");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"))
        .assert_fits(80);
    // Both ways over a socket pair, with poll; one way over a pipe.
    r.expect_lines(&[
        "ok check: the parent got back: [4, 9, 64] (expected [4, 9, 64])",
        "ok check: each reply came from the child, which ended at EOF",
        "ok check: poll(0.1) said False before the first send",
        "ok check: both ends are sockets (fstat)",
        "ok check: received until EOF: [4, 9, 64] (expected [4, 9, 64])",
        "ok check: the read end refuses to send",
        "ok check: both ends are one pipe (fstat)",
    ]);
    // EOF: the parent's copy of w, then the child's, each caught by the watchdog.
    r.expect_lines(&[
        "no EOF after 1 s: the parent still holds the write end",
        "ok check: no EOF while the parent held w; EOF once it closed it",
        "kept w: child pid ",
        "closed w: child pid ",
        "ok check: kept w: no EOF (exitcode 3); closed w: EOF (exitcode 0)",
    ]);
    // No feeder thread; the bytes on the wire are a length and postcard.
    r.expect_lines(&[
        "after 3 sends: 1 thread here; 15 bytes in the socket",
        "send(2) wrote 00 00 00 01 04: length, then postcard",
        "ok check: send() ran in this thread",
    ]);
    // Two readers, two writers.
    r.expect_lines(&[
        "ok check: each message went, whole, to exactly one reader",
        "4096-byte frames: A 64 and B 64 whole",
        "ok check: every 4096-byte frame arrived whole (pipe(7): PIPE_BUF)",
        "65540-byte frames: ",
    ]);
    r.expect_lines(&[
        "ok check: no child process left behind",
        "ok check: no file descriptor leaked: none",
    ]);
}

#[test]
fn no_rust_debug_noise_and_every_line_fits_80_columns() {
    for r in [run(BIN, &[], LIMIT), run_unicode(BIN, &[], LIMIT)] {
        r.assert_success().assert_fits(80).assert_no_debug_noise();
        // This lesson's own error variants, never shown by their Debug names.
        for noise in ["WrongWay", "Corrupt("] {
            assert!(!r.stdout.contains(noise), "Debug noise {noise:?}\n{r}");
        }
    }
}

#[test]
fn long_numbers_still_fit_80_columns() {
    // The children's own lines too (fork_eof_reader prints in the child).
    let many: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    let many = format!("--numbers={}", many.join(","));
    let big = "--numbers=-3037000499,3037000499,-3037000498";
    for flag in [many.as_str(), big] {
        let r = run(BIN, &[flag], LIMIT);
        r.assert_success().assert_all_checks_held().assert_fits(80);
        let r = run_unicode(BIN, &[flag], LIMIT);
        r.assert_success().assert_fits(80);
    }
}

#[test]
fn two_readers_share_any_number_of_messages_exactly_once() {
    let r = run(BIN, &["--messages", "40", "--numbers", "1,-5,7,11"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "two processes read one end: 40 messages",
        "ok check: the parent got back: [1, 25, 49, 121]",
        "after 4 sends: 1 thread here",
    ]);
    // The two readers' lists together hold 0..40 once each (the lists are
    // abbreviated when long, so count them from the "(N items)" suffix too).
    let total: usize = r
        .lines("reader ")
        .iter()
        .map(|l| {
            l.split_once(" items)")
                .and_then(|(head, _)| head.rsplit('(').next()?.parse().ok())
                .unwrap_or_else(|| l.matches(',').count() + usize::from(!l.contains("[]")))
        })
        .sum();
    assert_eq!(total, 40, "{r}");
}

#[test]
fn a_low_open_file_limit_is_a_clear_error_or_a_full_run() {
    for n in 5..=12 {
        let r = run_limited(BIN, &format!("ulimit -n {n}"), &[], LIMIT);
        match r.code {
            Some(0) => {
                r.assert_all_checks_held();
            }
            Some(2) => assert!(r.stderr.starts_with("error: "), "ulimit -n {n}: {r}"),
            _ => panic!("ulimit -n {n}: neither success nor a clear error\n{r}"),
        }
        assert!(!r.stderr.contains("panicked"), "ulimit -n {n}: {r}");
    }
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--messages", "0"], "0 is not in 1..=1000");
    expect_error(BIN, &["--numbers", "5000000000"], "does not fit in an i64");
    expect_error(BIN, &["--bench"], "unexpected argument '--bench'");
}
