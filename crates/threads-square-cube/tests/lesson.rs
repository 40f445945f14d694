//! Runs the lesson binary and checks what it claims. Times are printed by the
//! lesson and never asserted here: a busy machine must not fail these tests.

use std::time::Duration;

use common::testkit::{Run, expect_error, numbers, run, run_without_threads};

const BIN: &str = env!("CARGO_BIN_EXE_threads-square-cube");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn default_run_holds_every_claim_and_shows_the_header_output() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"));
    // Results: serial and threads print them; each child prints its own.
    assert_eq!(r.lines("square: [4, 9, 64, 81]").len(), 2, "{r}");
    assert_eq!(r.lines("cube:   [8, 27, 512, 729]").len(), 2, "{r}");
    r.expect_lines(&["(square): [4, 9, 64, 81]", "(cube): [8, 27, 512, 729]"]);
    // Ideal times next to the measured ones.
    r.expect_line("ideal 1.600 s");
    assert_eq!(r.lines("ideal 0.800 s").len(), 2, "{r}");
    r.expect_lines(&["thread  start + join:", "process start + join:"]);
    r.assert_fits(80);
}

#[test]
fn threads_share_the_pid_and_processes_do_not() {
    let r = run(BIN, &["--delay-ms", "10"], LIMIT);
    r.assert_success().assert_all_checks_held();
    let lesson_pid = numbers(r.expect_line("CPUs available"))[0];
    // "square  pid P tid T" lines, printed for the two threads.
    let square = numbers(r.expect_line("    square  pid"));
    let cube = numbers(r.expect_line("    cube    pid"));
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
    let args = [
        "--numbers",
        "1,-2,5",
        "--delay-ms",
        "10",
        "--mode",
        "processes",
    ];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "(square): [1, 4, 25]",
        "(cube): [1, -8, 125]",
        "[1] two processes",
    ]);
    assert!(r.line("[2]").is_none(), "{r}");
}

#[test]
fn the_most_numbers_and_the_largest_cubes_fit_the_lines() {
    let many: Vec<String> = (2_097_120i64..2_097_152).map(|n| n.to_string()).collect();
    let args = ["--numbers", &many.join(","), "--delay-ms", "10"];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    // 2097151 cubed is the largest cube of the list; it fits an i64.
    assert!(r.stdout.contains("9223358842721533951] (32 items)"), "{r}");
    r.assert_fits(80);
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--delay-ms", "0"], "must be 10 to 2000 ms, got 0");
    expect_error(BIN, &["--delay-ms", "99999"], "must be 10 to 2000 ms");
    expect_error(BIN, &["--delay-ms", "x"], "invalid value 'x'");
    expect_error(
        BIN,
        &["--numbers", "3000000000"],
        "the cube of 3000000000 does not fit",
    );
    expect_error(BIN, &["--numbers", "2097153"], "does not fit in an i64");
    let too_many = vec!["1"; 33].join(",");
    expect_error(BIN, &["--numbers", &too_many], "takes 1 to 32 numbers");
    expect_error(BIN, &["--mode", "fibers"], "invalid value 'fibers'");
}

/// A thread the system refuses is a clear error, not a panic: an address-space
/// limit (`ulimit -v`, 1 GB) below the stack every new thread asks for (2 GB
/// through RUST_MIN_STACK, which std reads for each thread). Forking still works
/// under the limit: the process step runs, and its children are joined.
#[test]
fn a_thread_that_cannot_start_is_a_clear_error() {
    let r = under_a_thread_limit("serial,threads");
    r.expect_line("ok check: serial took at least the sum of the waits");
    let r = under_a_thread_limit("processes,cost");
    r.expect_line("ok check: the processes waited at the same time");
}

fn under_a_thread_limit(mode: &str) -> Run {
    let args = ["--delay-ms", "10", "--mode", mode];
    let r = run_without_threads(BIN, &args, LIMIT);
    r.assert_clear_error("error: cannot start a thread: Resource temporarily unavailable");
    r
}

/// `--svg DIR` writes each timeline as a picture; a DIR that cannot be written is
/// a clear error (exit 2) after the claims are reported, not a panic.
#[test]
fn svg_pictures_are_written_or_their_failure_is_clear() {
    let dir = std::env::temp_dir().join(format!("tsc-svg-{}", std::process::id()));
    let r = run(BIN, &["--svg", dir.to_str().unwrap()], LIMIT);
    r.assert_success().assert_all_checks_held();
    let written = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(written >= 3, "{written} pictures\n{r}");
    // /proc takes no new directory: every picture fails, the claims still print.
    let r = run(BIN, &["--svg", "/proc/no-such-dir"], LIMIT);
    r.assert_clear_error("error: cannot write");
    r.expect_lines(&["claims held", "but an SVG could not be written"]);
}
