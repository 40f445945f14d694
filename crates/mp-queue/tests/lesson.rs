//! Runs the lesson binary and checks what it claims.

use std::time::{Duration, Instant};

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_mp-queue");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success().assert_all_checks_held();
    // The parent gets exactly 4, 9, 64, from the child; the thread queue too.
    r.expect_lines(&[
        "process queue (ipc-channel): got [4, 9, 64] from pid [",
        "thread queue (crossbeam):    got [4, 9, 64]",
    ]);
    // crossbeam across fork: nothing arrived, while the child's copy held 3.
    r.expect_lines(&[
        "my copy of the channel holds 3",
        "ok check: nothing crossed: the parent's recv timed out",
    ]);
    // empty() vs the two right ways to end a stream.
    r.expect_lines(&[
        "while not q.empty(): got []",
        "until every sender is gone: got [4, 9, 64]",
        "until the None sentinel:    got [4, 9, 64]",
        "the parent kept a sender: got 3 values; the child ended (exitcode 0)",
        "ok check: what the empty()-loop got while the child was still working: [] (expected [])",
        "ok check: with a sender left open, the end of the stream never came",
    ]);
    // join before drain: detected, killed, and then the right order works.
    r.expect_lines(&[
        "would deadlock (killed: exitcode -9",
        "ok check: joining first was caught as a deadlock",
        "ok check: draining first: 1000000 bytes arrived",
    ]);
}

#[test]
fn several_producers_every_item_once_in_producer_order() {
    let r = run(BIN, &["--producers", "5"], LIMIT);
    r.assert_success();
    let arrival = r.expect_line("arrival:");
    let items: Vec<&str> = arrival.split_whitespace().skip(1).collect();
    assert_eq!(items.len(), 25, "{r}");
    for p in ['A', 'B', 'C', 'D', 'E'] {
        let seqs: Vec<u32> = items
            .iter()
            .filter(|i| i.starts_with(p))
            .map(|i| i[1..].parse().unwrap())
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "producer {p}: {r}");
    }
}

#[test]
fn the_deadlock_demo_is_bounded() {
    let t = Instant::now();
    let r = run(BIN, &["--big-bytes", "4000000"], LIMIT);
    r.assert_success();
    r.expect_line("would deadlock");
    // Two watchdogs of 2 s and 0.5 s waits: well under 20 s even on a slow machine.
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--producers", "0"], "0 is not in 1..=26");
    expect_error(BIN, &["--big-bytes", "0"], "0 is not in 1..=64000000");
    expect_error(BIN, &["--numbers", "5000000000"], "does not fit in an i64");
}
