//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_shared-value-array");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn parent_reads_the_shared_region_and_zeros_from_the_private_one() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "parent reads: array [4, 9, 64], value 5.67",
        "parent reads: array [0, 0, 0]",
        "ok check: flags of the Array's mapping: rw-s (expected rw-s)",
        "ok check: flags of the map_anon mapping: rw-p (expected rw-p)",
    ]);
    // The shared mapping is the memfd, by name.
    assert!(r.expect_line("rw-s").contains("/memfd:course-shm"), "{r}");
    r.assert_fits(80);
}

#[test]
fn the_header_shows_what_the_lesson_prints() {
    run(BIN, &[], LIMIT)
        .assert_success()
        .assert_expected_output(include_str!("../src/main.rs"));
}

#[test]
fn with_the_lock_no_update_is_lost_in_any_run() {
    for _ in 0..5 {
        let r = run(BIN, &["--increments", "20000"], LIMIT);
        r.assert_success();
        r.expect_line("ok check: with get_lock() held across the +=: 40000 (expected 40000)");
    }
}

/// The unlocked race is reported in every run, also when nothing was lost.
#[test]
fn one_increment_each_still_reports_the_race() {
    let r = run(BIN, &["--increments", "1"], LIMIT);
    r.assert_success().assert_all_checks_held();
    let lost = r.expect_line("!! broken on purpose: lost");
    if lost.contains("lost 0 updates") {
        r.expect_line("none this time: the race needs both processes running at once");
    }
    r.assert_expected_output(include_str!("../src/main.rs"));
}

#[test]
fn other_values_and_a_longer_array() {
    let args = ["--numbers", "5,-6", "--value", "-1.5", "--array-len", "4"];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("parent reads: array [25, 36, 0, 0], value -1.5");
}

/// Every float arrives bit for bit, shown the way Python shows it: nan (which is
/// not == to itself), infinities, -0.0 (== to 0.0, but not the same bits), and
/// numbers Python writes with an exponent.
#[test]
fn special_floats_arrive_bit_for_bit() {
    for (arg, shown) in [
        ("nan", "nan"),
        ("-inf", "-inf"),
        ("inf", "inf"),
        ("-0.0", "-0.0"),
        ("1e300", "1e+300"),
        ("1e-300", "1e-300"),
        ("2", "2.0"),
    ] {
        let r = run(BIN, &["--value", arg, "--increments", "1"], LIMIT);
        r.assert_success().assert_all_checks_held();
        r.expect_line(&format!(
            "ok check: Value read by the parent: {shown} (expected {shown})"
        ));
    }
}

#[test]
fn the_largest_inputs_fit_the_lines() {
    let many: Vec<String> = (0..1000).map(|i| (46340 - i).to_string()).collect();
    let args = ["--numbers", &many.join(","), "--array-len", "1048576"];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("(1048576 items)");
    r.assert_fits(80);
}

#[test]
fn impossible_sizes_and_bad_flags_get_clear_errors() {
    let huge = ["--array-len", "99999999999999"];
    expect_error(BIN, &huge, "cannot allocate Array('i', 99999999999999)");
    expect_error(BIN, &huge, "more than this machine's memory");
    let max = ["--array-len", "18446744073709551615"];
    expect_error(BIN, &max, "more than this machine's memory");
    expect_error(BIN, &["--array-len", "1048577"], "at most 1048576");
    expect_error(BIN, &["--array-len", "2"], "cannot hold the 3 squares");
    expect_error(BIN, &["--increments", "0"], "0 is not in 1..=10000000");
    expect_error(BIN, &["--increments", "10000001"], "not in 1..=10000000");
    let square = "the square of 70000 does not fit in an i32";
    expect_error(BIN, &["--numbers", "70000"], square);
    let too_many = vec!["1"; 1001].join(",");
    expect_error(BIN, &["--numbers", &too_many], "takes 1 to 1000 numbers");
    expect_error(BIN, &["--numbers", "1,,2"], "invalid value ''");
    expect_error(BIN, &["--value", "x"], "invalid value 'x'");
}
