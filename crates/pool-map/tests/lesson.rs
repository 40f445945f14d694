//! Runs the lesson binary and checks what it claims (the pool's own behaviour is
//! tested in tests/pool.rs, which forks from a single thread).

use std::time::Duration;

use common::testkit::{expect_error, numbers, run};

const BIN: &str = env!("CARGO_BIN_EXE_pool-map");
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_lesson_holds_every_claim() {
    let r = run(BIN, &["--items", "2000", "--overhead-tasks", "2000"], LIMIT);
    r.assert_success().assert_all_checks_held();
    let line = r.expect_line("[1, 4, 9, 16, 25]   item 1 -> pid");
    let workers = numbers(r.expect_line("workers ["));
    // Every "item i -> pid P" names one of the three workers.
    let pids: Vec<i64> = line
        .split("-> pid ")
        .skip(1)
        .map(|s| numbers(s)[0])
        .collect();
    assert_eq!(pids.len(), 5, "{r}");
    assert!(pids.iter().all(|p| workers[..3].contains(p)), "{r}");
    r.expect_lines(&["the task panicked in worker pid", "13 is unlucky"]);
    r.expect_lines(&[
        "died (exitcode -9 (killed by SIGKILL)) while it held this task",
        "(1 replaced)",
    ]);
    for way in ["serial", "pool (", "threads", "rayon"] {
        assert!(
            r.lines(way)
                .iter()
                .any(|l| l.contains("ms") && l.contains('x')),
            "{way}: {r}"
        );
    }
    r.expect_line("us per task");
}

/// `--bench` at a small size: every row, the core probe and the targets line appear
/// (the figures themselves are for the release build; see docs/07-pool-map.md).
#[test]
fn the_benchmark_reports_every_way_and_the_targets() {
    let args = [
        "--bench",
        "--processes",
        "2",
        "--items",
        "20",
        "--overhead-tasks",
        "200",
        "--rounds",
        "1",
    ];
    let r = run(BIN, &args, LIMIT);
    r.assert_success().assert_all_checks_held();
    // 2,000 items on 2 workers: Python's chunksize, then ten times finer; the same
    // for the 20 heavy items.
    for row in [
        "chunksize 250 ",
        "chunksize 25 ",
        "chunksize 3 ",
        "chunksize 1 ",
    ] {
        assert!(
            r.lines("pool (2), ").iter().any(|l| l.contains(row)),
            "{row}: {r}"
        );
    }
    r.expect_lines(&[
        "the same work (20000 items) on each worker at once",
        "the parent alone",
    ]);
    r.expect_line("can reach at most");
    r.expect_lines(&[
        "targets: pool >= 1.9x serial",
        "with finer chunks",
        "pool/rayon",
    ]);
}

#[test]
fn one_process_pool() {
    let r = run(
        BIN,
        &[
            "--processes",
            "1",
            "--items",
            "500",
            "--overhead-tasks",
            "500",
        ],
        LIMIT,
    );
    r.assert_success().assert_all_checks_held();
    r.expect_line("pool (1)");
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--processes", "0"], "0 is not in 1..=64");
    expect_error(BIN, &["--items", "0"], "0 is not in 1..=10000000");
    expect_error(BIN, &["--rounds", "0"], "0 is not in 1..=100");
}
