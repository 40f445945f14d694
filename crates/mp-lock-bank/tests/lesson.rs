//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_mp-lock-bank");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "ok check: balance with the lock: 200 (expected 200)",
        "ok check: the two processes never held the lock at the same time",
        "without a lock",
    ]);
}

#[test]
fn with_the_lock_the_balance_is_200_in_every_run() {
    for _ in 0..5 {
        let r = run(
            BIN,
            &[
                "--lock",
                "on",
                "--ops",
                "50",
                "--sleep-us",
                "100",
                "--work-us",
                "50",
            ],
            LIMIT,
        );
        r.assert_success();
        r.expect_lines(&[
            "final balance 200 (expected 200)",
            "ok check: updates lost with the lock: 0 (expected 0)",
        ]);
    }
}

#[test]
fn a_killed_holder_is_reported_and_nothing_hangs() {
    let r = run(
        BIN,
        &["--lock", "on", "--ops", "5"],
        Duration::from_secs(30),
    );
    r.assert_success();
    assert_eq!(r.lines("exitcode -9 (killed by SIGKILL)").len(), 2, "{r}");
    r.expect_lines(&[
        "the next locker is told: the previous owner died holding the lock (EOWNERDEAD)",
        "ok check: balance after the repair: 200 (expected 200)",
        "ok check: the timed attempt timed out instead of hanging",
        "(ETIMEDOUT)",
    ]);
}

#[test]
fn the_bench_counts_exactly() {
    let r = run(BIN, &["--bench", "--bench-increments", "20000"], LIMIT);
    r.assert_success().assert_all_checks_held();
    assert_eq!(r.lines("ns per increment").len(), 3, "{r}");
    r.expect_line("locked / fetch_add, same run");
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--ops", "0"], "0 is not in 1..=100000");
    expect_error(
        BIN,
        &["--sleep-us", "1000000"],
        "1000000 is not in 0..=100000",
    );
    expect_error(BIN, &["--lock", "maybe"], "invalid value 'maybe'");
}
