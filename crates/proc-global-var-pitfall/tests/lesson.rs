//! Runs the lesson binary and checks what it claims.

use std::time::Duration;

use common::testkit::{expect_error, numbers, run};

const BIN: &str = env!("CARGO_BIN_EXE_proc-global-var-pitfall");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn child_sees_its_list_parent_sees_empty_thread_is_shared() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    let child = r.expect_line("child  pid");
    assert!(child.contains("RESULT = [4, 9, 64]"), "{r}");
    let parent = r.expect_line("parent pid").to_string();
    let after = r.lines("parent pid")[1];
    assert!(after.contains("RESULT = []"), "{r}");
    // The same virtual address, printed by the child and by the parent.
    let addr = |l: &str| {
        l.rsplit("at ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_string()
    };
    assert_eq!(addr(child), addr(after), "{r}");
    assert_eq!(addr(&parent), addr(after), "{r}");
    // Different processes.
    assert_ne!(numbers(child)[0], numbers(after)[0]);
    // The thread's appends are visible.
    r.expect_line("RESULT = [4, 9, 64]   (thread tid");
}

#[test]
fn other_numbers() {
    let r = run(BIN, &["--numbers", "5,6"], LIMIT);
    r.assert_success().assert_all_checks_held();
    assert!(r.expect_line("child  pid").contains("[25, 36]"), "{r}");
}

#[test]
fn bad_numbers_get_clear_errors() {
    expect_error(BIN, &["--numbers", "9999999999"], "does not fit in an i64");
    expect_error(BIN, &["--numbers", "x"], "invalid value 'x'");
}
