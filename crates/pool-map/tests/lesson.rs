//! Runs the lesson binary and checks what it claims (the pool's own behaviour is
//! tested in tests/pool.rs, which forks from a single thread; the benchmark is
//! smoke-run by `cargo bench -p pool-map -- --quick`).

use std::time::Duration;

use common::testkit::{expect_error, numbers, run, run_without_threads};

const BIN: &str = env!("CARGO_BIN_EXE_pool-map");
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_lesson_holds_every_claim_and_prints_its_expected_output() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"));
    // Every "item i -> pid P" names one of the three workers (the line may wrap).
    let workers = numbers(r.expect_line("workers: pid"));
    let workers = &workers[..3]; // then "chunksize 1 = ceil(5 / (4 x 3))"
    let step = &r.stdout[r.stdout.find("[1]").unwrap()..r.stdout.find("[2]").unwrap()];
    let step = step.split_whitespace().collect::<Vec<_>>().join(" ");
    let pids: Vec<i64> = step
        .split("-> pid ")
        .skip(1)
        .map(|s| numbers(s)[0])
        .collect();
    assert_eq!(pids.len(), 5, "{r}");
    assert!(pids.iter().all(|p| workers.contains(p)), "{r}");
    // Four tasks of at most 3 items, each run by one of the pool's workers.
    assert_eq!(r.lines("      task [").len(), 4, "{r}");
    r.expect_lines(&["the task panicked in worker pid", "13 is unlucky"]);
    r.expect_lines(&["died (exitcode -9 (killed by SIGKILL))", "(1 replaced)"]);
    r.expect_lines(&["Pool(processes=", " thread", "us (20000 tasks)"]);
    // A lesson shows no Rust Debug formatting.
    for noise in ["Some(", "None", "Err(", "Ok(", "[true", "Timeout("] {
        assert!(!r.stdout.contains(noise), "{noise}: {r}");
    }
}

#[test]
fn every_line_fits_80_columns() {
    let r = run(BIN, &["--items", "500", "--tasks", "500"], LIMIT);
    r.assert_success().assert_fits(80);
}

/// A thread the system refuses (the cost step starts threads and a rayon pool)
/// is a clear error, not a panic; the pool's workers are processes and run.
#[test]
fn a_thread_that_cannot_start_is_a_clear_error() {
    let r = run_without_threads(BIN, &["--items", "500", "--tasks", "500"], LIMIT);
    r.assert_clear_error("error: cannot start a thread: Resource temporarily unavailable");
    r.expect_line("ok check: map after the replacement");
}

#[test]
fn one_process_pool() {
    let r = run(
        BIN,
        &["--processes", "1", "--items", "500", "--tasks", "500"],
        LIMIT,
    );
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&["Pool(processes=1)", "1 thread ", "(ideal 1.00x on"]);
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--processes", "0"], "0 is not in 1..=64");
    expect_error(BIN, &["--items", "0"], "0 is not in 1..=1000000");
    expect_error(
        BIN,
        &["--tasks", "2000000"],
        "2000000 is not in 1..=1000000",
    );
    // The benchmark moved to `cargo bench -p pool-map`.
    expect_error(BIN, &["--bench"], "unexpected argument '--bench'");
    expect_error(BIN, &["--rounds", "3"], "unexpected argument '--rounds'");
}

/// Ctrl-Z of the whole job for 6 s, then fg: every claim still holds.
#[test]
fn ctrl_z_for_6_s_then_fg_every_claim_holds() {
    common::testkit::assert_ctrl_z_changes_nothing(BIN);
}
