//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_shared-value-array");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn parent_reads_the_shared_region_and_zeros_from_the_private_one() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("parent reads: array [4, 9, 64], value 5.67");
    r.expect_lines(&[
        "parent reads: array [0, 0, 0]",
        "ok check: the mapping is shared (rw-s)",
        "ok check: the mapping is private (rw-p)",
    ]);
}

#[test]
fn with_the_lock_no_update_is_lost_in_any_run() {
    for _ in 0..5 {
        let r = run(BIN, &["--increments", "20000"], LIMIT);
        r.assert_success();
        assert!(
            r.line(
                "ok check: counter with the lock held across get and set: 40000 (expected 40000)"
            )
            .is_some(),
            "{r}"
        );
    }
}

#[test]
fn other_values_and_a_longer_array() {
    let r = run(
        BIN,
        &["--numbers", "5,-6", "--value", "-1.5", "--array-len", "4"],
        LIMIT,
    );
    r.assert_success().assert_all_checks_held();
    r.expect_line("parent reads: array [25, 36, 0, 0], value -1.5");
}

#[test]
fn impossible_sizes_and_bad_flags_get_clear_errors() {
    expect_error(
        BIN,
        &["--array-len", "99999999999999"],
        "cannot allocate Array('i', 99999999999999)",
    );
    expect_error(
        BIN,
        &["--array-len", "99999999999999"],
        "more than this machine's memory",
    );
    expect_error(BIN, &["--array-len", "2"], "cannot hold the 3 squares");
    expect_error(BIN, &["--increments", "0"], "0 is not in 1..=10000000");
    expect_error(
        BIN,
        &["--numbers", "70000"],
        "the square of 70000 does not fit in an i32",
    );
}
