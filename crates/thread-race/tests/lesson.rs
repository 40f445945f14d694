//! Runs the lesson binary, and the race functions directly (threads only: no fork).

use std::time::Duration;

use common::testkit::{expect_error, run};
use thread_race::*;

const BIN: &str = env!("CARGO_BIN_EXE_thread-race");

#[test]
fn the_lesson_holds_every_claim() {
    let r = run(BIN, &["--increments", "200000"], Duration::from_secs(60));
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "both write 1: counter = 1",
        "balance -60, paid 2, refused 0",
        "balance 20, paid 1, refused 1",
    ]);
    for code in ["E0133", "E0373", "E0499", "E0277"] {
        assert!(r.line(code).is_some(), "{code} not listed\n{r}");
    }
}

#[test]
fn the_counter_that_should_reach_two_reaches_one() {
    for _ in 0..20 {
        assert_eq!(both_read_then_both_write(), 1);
    }
}

#[test]
fn fetch_add_and_mutex_lose_nothing() {
    for threads in [2, 4] {
        assert_eq!(fetch_add(threads, 50_000), threads as i64 * 50_000);
        assert_eq!(mutex(threads, 50_000), threads as i64 * 50_000);
    }
}

#[test]
fn load_then_store_never_gains() {
    // It may lose updates or, rarely, none; it can never count more than were made.
    assert!(load_then_store(2, 100_000) <= 200_000);
}

#[test]
fn check_then_act() {
    assert_eq!(
        withdraw_twice_racy(100, 80),
        Withdrawals {
            balance: -60,
            paid: 2,
            refused: 0
        }
    );
    for _ in 0..20 {
        assert_eq!(
            withdraw_twice_locked(100, 80),
            Withdrawals {
                balance: 20,
                paid: 1,
                refused: 1
            }
        );
    }
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--threads", "1"], "1 is not in 2..=64");
}
