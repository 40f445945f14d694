//! Runs the lesson binary and checks what it claims, how it bounds its waits, and
//! how it fails.

use std::time::Duration;

use common::testkit::{expect_error, one_at_a_time, run};

const BIN: &str = env!("CARGO_BIN_EXE_mp-sync");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim_and_shows_the_header_output() {
    let _serial = one_at_a_time();
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"))
        .assert_fits(80);
    r.expect_lines(&[
        "ok check: waiters asleep in the kernel (state S) before set(): 4 (expected 4)",
        "ok check: woken by set()'s one FUTEX_WAKE: 4 (expected 4)",
        "ok check: waiters that passed before set(): 0 (expected 0)",
        "ok check: all 4 passed, every one after the set()",
        "ok check: processes that got in: 5 (expected 5)",
        "ok check: departures before the last arrival: 0 (expected 0)",
        "ok check: parties waiting at the barrier when it died: 2 (expected 2)",
        "ok check: waits that timed out and broke it: 1 (expected 1)",
        "ok check: the robust mutex told the next locker its owner died",
        "release() once more: ValueError: semaphore or lock released too many times",
        "Lock(): acquire(timeout=0.5) -> False after",
    ]);
    // Each of the 5 semaphore workers waited (-) or held (=), and nobody ran
    // unguarded (#) in the chart.
    let rows: Vec<&str> = (1..=5)
        .map(|i| r.expect_line(&format!("    p{i}  pid")))
        .collect();
    assert!(rows.iter().all(|row| row.contains('=')), "{r}");
}

#[test]
fn never_more_inside_than_the_semaphore_admits() {
    let _serial = one_at_a_time();
    for (workers, slots) in [("8", "1"), ("8", "3"), ("3", "3")] {
        let args = ["--workers", workers, "--slots", slots, "--hold-ms", "5"];
        let r = run(BIN, &args, LIMIT);
        r.assert_success().assert_all_checks_held();
        let line = r.expect_line("ok check: never more than");
        assert!(
            line.contains(&format!("never more than {slots} inside")),
            "{r}"
        );
        r.expect_line(&format!(
            "processes that got in: {workers} (expected {workers})"
        ));
    }
}

#[test]
fn a_long_queue_for_one_slot_waits_as_long_as_it_takes() {
    let _serial = one_at_a_time();
    // 16 workers, one slot, 0.5 s each: the last waits 7.5 s for its turn, longer
    // than any fixed bound the others would use; the bounds grow with the flags.
    let args = ["--workers", "16", "--slots", "1", "--hold-ms", "500"];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "ok check: never more than 1 inside (most at once: 1)",
        "ok check: processes that got in: 16 (expected 16)",
    ]);
}

#[test]
fn one_set_releases_many_and_a_barrier_of_many_holds_its_phases() {
    let _serial = one_at_a_time();
    let args = ["--waiters", "16", "--parties", "8", "--phases", "5"];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "ok check: all 16 passed, every one after the set()",
        "phase 5: last arrived at",
        // With 8 parties and one dead: 7 were waiting, one wait times out, 6 are
        // told.
        "ok check: parties waiting at the barrier when it died: 7 (expected 7)",
        "ok check: woken by set()'s one FUTEX_WAKE: 16 (expected 16)",
        "ok check: waiters told by the break: 6 (expected 6)",
    ]);
    assert_eq!(
        r.lines("BrokenBarrierError: broken by another").len(),
        6,
        "{r}"
    );
}

#[test]
fn the_demos_of_a_hang_end_after_their_patience() {
    let _serial = one_at_a_time();
    let r = run(BIN, &["--patience-ms", "100"], Duration::from_secs(30));
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "party 2: BrokenBarrierError: its own wait timed out",
        "wait_for(items >= 100, timeout=0.1): False",
        "Lock(): acquire(timeout=0.1) -> False after",
    ]);
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--waiters", "0"], "0 is not in 1..=32");
    expect_error(BIN, &["--parties", "1"], "1 is not in 2..=16");
    expect_error(BIN, &["--patience-ms", "1"], "1 is not in 10..=5000");
}

/// Ctrl-Z of the whole job for 6 s, then fg: every claim still holds.
#[test]
fn ctrl_z_for_6_s_then_fg_every_claim_holds() {
    let _serial = one_at_a_time();
    common::testkit::assert_ctrl_z_changes_nothing(BIN);
}
