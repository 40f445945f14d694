//! Runs the lesson binary and checks what it claims. Speedups depend on the load of
//! the machine: they are printed and checked for presence, never for value here.

use std::time::Duration;

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_cpu-vs-io");
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_lesson_holds_every_claim() {
    let r = run(BIN, &["--cpu-ms", "20", "--io-ms", "100"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&["[2] CPU-bound: 4 tasks", "[3] I/O-bound: 4 tasks"]);
    assert_eq!(
        r.lines("4 threads ")
            .iter()
            .filter(|l| l.contains("ideal"))
            .count(),
        2,
        "{r}"
    );
    assert_eq!(
        r.lines("4 processes")
            .iter()
            .filter(|l| l.contains("ideal"))
            .count(),
        2,
        "{r}"
    );
    r.expect_line("ok check: the waiting threads overlapped");
}

#[test]
fn one_task() {
    let r = run(
        BIN,
        &["--tasks", "1", "--cpu-ms", "5", "--io-ms", "5"],
        LIMIT,
    );
    r.assert_success().assert_all_checks_held();
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--tasks", "0"], "0 is not in 1..=32");
    expect_error(BIN, &["--cpu-ms", "99999"], "99999 is not in 1..=5000");
}
