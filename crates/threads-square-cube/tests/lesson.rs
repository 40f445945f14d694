//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{expect_error, numbers, run};

const BIN: &str = env!("CARGO_BIN_EXE_threads-square-cube");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    // Results: serial and threads print them; each child prints its own.
    assert_eq!(r.lines("square: [4, 9, 64, 81]").len(), 2, "{r}");
    assert_eq!(r.lines("cube:   [8, 27, 512, 729]").len(), 2, "{r}");
    r.expect_lines(&["(square): [4, 9, 64, 81]", "(cube): [8, 27, 512, 729]"]);
    // Ideal times next to the measured ones.
    r.expect_line("ideal 1.600 s");
    assert_eq!(r.lines("ideal 0.800 s").len(), 2, "{r}");
}

#[test]
fn threads_share_the_pid_and_processes_do_not() {
    let r = run(BIN, &["--delay-ms", "10"], LIMIT);
    r.assert_success();
    let lesson_pid = numbers(r.expect_line("CPUs available"))[0];
    // "square  pid P tid T" lines, printed for the two threads.
    let square = numbers(r.expect_line("square  pid"));
    let cube = numbers(r.expect_line("cube    pid"));
    assert_eq!((square[0], cube[0]), (lesson_pid, lesson_pid), "{r}");
    assert_ne!(square[1], cube[1], "{r}");
    // "child pid P (square): ..." lines, printed by the children themselves.
    let children: Vec<i64> = r.lines("child pid").iter().map(|l| numbers(l)[0]).collect();
    assert_eq!(children.len(), 2, "{r}");
    assert_ne!(children[0], children[1]);
    assert!(!children.contains(&lesson_pid));
}

#[test]
fn other_numbers_and_one_mode() {
    let r = run(
        BIN,
        &[
            "--numbers",
            "1,-2,5",
            "--delay-ms",
            "5",
            "--mode",
            "processes",
        ],
        LIMIT,
    );
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "(square): [1, 4, 25]",
        "(cube): [1, -8, 125]",
        "[1] two processes",
    ]);
}

#[test]
fn the_start_cost_bench_runs() {
    let r = run(BIN, &["--bench", "--bench-starts", "50"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&["thread  spawn + join", "process fork + join"]);
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--delay-ms", "99999"], "99999 is not in 0..=2000");
    expect_error(
        BIN,
        &["--numbers", "3000000000"],
        "the cube of 3000000000 does not fit",
    );
    expect_error(BIN, &["--mode", "fibers"], "invalid value 'fibers'");
}
