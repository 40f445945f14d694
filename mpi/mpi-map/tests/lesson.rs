//! Runs the lesson (which starts `mpirun` itself) and checks what it claims. These
//! tests need Open MPI: they live in the `mpi/` workspace, which only
//! `scripts/mpi.sh` builds.

use std::time::Duration;

use common::testkit::{expect_error, run, run_command, run_unicode};

const BIN: &str = env!("CARGO_BIN_EXE_mpi-map");
const RANK: &str = env!("CARGO_BIN_EXE_mpi-map-rank");
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_lesson_holds_every_claim_and_prints_its_expected_output() {
    let _one = common::testkit::one_at_a_time();
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"))
        .assert_fits(80)
        .assert_no_debug_noise();
    r.expect_lines(&[
        "rank 0 of 2: pid",
        "rank 1 of 2: pid",
        "exited on signal 9",
        "workers replaced: 1",
    ]);
}

#[test]
fn unicode_output_fits_80_columns() {
    let _one = common::testkit::one_at_a_time();
    let r = run_unicode(BIN, &["--items", "300", "--ranks", "3"], LIMIT);
    r.assert_success().assert_fits(80).assert_no_debug_noise();
    r.expect_lines(&["rank 2 of 3: pid", "100 items from 200"]);
}

#[test]
fn more_ranks_than_items_still_gathers_in_order() {
    let _one = common::testkit::one_at_a_time();
    let r = run(BIN, &["--items", "3", "--ranks", "5"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("rank 4 of 5: pid");
    r.expect_line("0 items from 3");
}

/// The MPI program on its own, as a learner would start it on a cluster.
#[test]
fn the_rank_program_runs_under_mpirun() {
    let _one = common::testkit::one_at_a_time();
    let launch = mpi_map::Launch {
        ranks: 2,
        hostfile: None,
    };
    let args = launch.mpirun_args(RANK, &["--items".into(), "100".into()]);
    let mut cmd = std::process::Command::new("mpirun");
    cmd.args(args);
    let r = run_command(cmd, LIMIT);
    r.assert_success();
    let report = mpi_map::Report::parse(&r.stdout).expect("rank 0's report");
    let serial = mpi_map::serial_pairs(mpi_map::Work::Tutorial.function(), 100);
    assert_eq!(report.checksum, mpi_map::checksum(&serial), "{r}");
    assert_eq!(report.ranks.len(), 2, "{r}");
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--ranks", "0"], "0 is not in 1..=64");
    expect_error(BIN, &["--items", "0"], "0 is not in 1..=1000000");
    let r = run(BIN, &["--hostfile", "/nonexistent/hosts"], LIMIT);
    r.assert_clear_error("error: cannot read the hostfile /nonexistent/hosts");
}
