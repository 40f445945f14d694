//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{Run, expect_error, numbers, run};

const BIN: &str = env!("CARGO_BIN_EXE_proc-global-var-pitfall");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn child_sees_its_list_parent_sees_empty_thread_is_shared() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    let before = r.expect_line("before the fork");
    let child = r.expect_line("child  pid");
    assert!(child.contains("RESULT = [4, 9, 64]"), "{r}");
    let after = r.expect_line("RESULT = [] after join()");
    // The same virtual address, printed by the parent before and after, and by the child.
    let addr = |l: &str| {
        l.rsplit("at ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_string()
    };
    assert_eq!(addr(child), addr(after), "{r}");
    assert_eq!(addr(before), addr(after), "{r}");
    // Different processes.
    assert_ne!(numbers(child)[0], numbers(after)[0], "{r}");
    // The thread's appends are visible, and the thread ran in the parent's process.
    r.expect_line("RESULT = [4, 9, 64] after join()");
    let thread = r.expect_line("ran square_list");
    assert_eq!(numbers(thread)[1], numbers(after)[0], "{r}");
}

#[test]
fn the_header_shows_what_the_lesson_prints() {
    run(BIN, &[], LIMIT)
        .assert_success()
        .assert_expected_output(include_str!("../src/main.rs"));
}

#[test]
fn other_numbers() {
    let r = run(BIN, &["--numbers", "5,-6"], LIMIT);
    r.assert_success().assert_all_checks_held();
    assert!(r.expect_line("child  pid").contains("[25, 36]"), "{r}");
}

#[test]
fn the_most_numbers_and_the_largest_squares_fit_the_lines() {
    let many: Vec<String> = (3_000_000_000i64..3_000_000_032)
        .map(|n| n.to_string())
        .collect();
    let r = run(BIN, &["--numbers", &many.join(",")], LIMIT);
    r.assert_success().assert_all_checks_held();
    assert!(r.stdout.contains("9000000186000000961] (32 items)"), "{r}");
    r.assert_fits(80);
}

#[test]
fn bad_numbers_get_clear_errors() {
    expect_error(BIN, &["--numbers", "9999999999"], "does not fit in an i64");
    expect_error(BIN, &["--numbers", "x"], "invalid value 'x'");
    let too_many = vec!["1"; 33].join(",");
    expect_error(
        BIN,
        &["--numbers", &too_many],
        "takes 1 to 32 numbers, got 33",
    );
}

/// A thread the system refuses is a clear error, not a panic. A huge default stack
/// size (RUST_MIN_STACK, read by std for every thread) makes the stack's mmap fail.
#[test]
fn a_thread_that_cannot_start_is_a_clear_error() {
    let r = run(
        "env",
        &["RUST_MIN_STACK=140737488355328", "RUST_BACKTRACE=1", BIN],
        LIMIT,
    );
    assert_thread_error(&r);
    // Step 1 ran and its child was joined before the thread was asked for.
    r.expect_line("RESULT = [] after join()");
}

/// The same under an address-space limit (`ulimit -v`), the way a machine refuses
/// threads in practice. The right limit depends on the build, so try limits from
/// too small to start at all up to one that lets the lesson finish: none may
/// panic, and some must stop at the thread with the clear error.
#[test]
fn under_ulimit_v_the_thread_error_is_clear_and_nothing_panics() {
    let script = "ulimit -v \"$1\" || exit 99; shift; exec \"$@\"";
    let mut thread_errors = 0;
    for kib in (2_000..=200_000).step_by(250) {
        let kib = kib.to_string();
        let r = run("sh", &["-c", script, "sh", &kib, BIN], LIMIT);
        assert!(!r.stderr.contains("panicked"), "ulimit -v {kib}\n{r}");
        if r.stderr.contains("cannot start a thread") {
            assert_thread_error(&r);
            thread_errors += 1;
        }
        if r.code == Some(0) {
            break;
        }
    }
    assert!(thread_errors > 0, "no limit made the thread fail cleanly");
}

fn assert_thread_error(r: &Run) {
    r.assert_clear_error("error: cannot start a thread: ");
    assert!(!r.stderr.contains("backtrace"), "{r}");
}
