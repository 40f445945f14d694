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
    assert!(
        r.line("process queue (ipc-channel): got [4, 9, 64] from pid [")
            .is_some(),
        "{r}"
    );
    assert!(
        r.line("thread queue (crossbeam):    got [4, 9, 64]")
            .is_some(),
        "{r}"
    );
    // crossbeam across fork: nothing arrived, while the child's copy held 3.
    assert!(r.line("my copy of the channel holds 3").is_some(), "{r}");
    assert!(
        r.line("ok check: nothing crossed: the parent's recv timed out")
            .is_some(),
        "{r}"
    );
    // empty() vs the two right ways to end a stream.
    assert!(r.line("while not q.empty(): got []").is_some(), "{r}");
    assert!(
        r.line("until every sender is gone: got [4, 9, 64]")
            .is_some(),
        "{r}"
    );
    assert!(
        r.line("until the None sentinel:    got [4, 9, 64]")
            .is_some(),
        "{r}"
    );
    // join before drain: detected, killed, and then the right order works.
    assert!(
        r.line("would deadlock (killed: exitcode -9").is_some(),
        "{r}"
    );
    assert!(
        r.line("ok check: joining first was caught as a deadlock")
            .is_some(),
        "{r}"
    );
    assert!(
        r.line("ok check: draining first: 1000000 bytes arrived")
            .is_some(),
        "{r}"
    );
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
    assert!(r.line("would deadlock").is_some(), "{r}");
    // Two watchdogs of 2 s and 0.5 s waits: well under 20 s even on a slow machine.
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn the_bench_runs_and_counts() {
    let r = run(BIN, &["--bench", "--bench-scale", "0.01"], LIMIT);
    r.assert_success().assert_all_checks_held();
    assert_eq!(r.lines("items per second").len(), 1, "{r}");
    assert!(
        r.line("processes, ipc-channel, 1 item a message").is_some(),
        "{r}"
    );
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--producers", "0"], "0 is not in 1..=26");
    expect_error(BIN, &["--big-bytes", "0"], "0 is not in 1..=64000000");
    expect_error(
        BIN,
        &["--bench-scale", "0"],
        "--bench-scale must be in (0, 100]",
    );
    expect_error(BIN, &["--numbers", "5000000000"], "does not fit in an i64");
}
