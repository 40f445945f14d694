//! Runs the lesson binary and checks what it claims, what it draws, and how it
//! fails.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testkit::{Run, expect_error, one_at_a_time, run};

const BIN: &str = env!("CARGO_BIN_EXE_mp-lock-bank");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim_and_shows_the_header_output() {
    let _serial = one_at_a_time();
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_expected_output(include_str!("../src/main.rs"));
    r.expect_lines(&[
        "ok check: balance with the lock: 200 (expected 200)",
        "ok check: never both in the window (both in: 0 ns)",
        "without a lock",
    ]);
}

#[test]
fn with_the_lock_the_balance_is_200_in_every_run() {
    let _serial = one_at_a_time();
    for _ in 0..5 {
        let args = ["--lock", "on", "--ops", "50", "--sleep-us", "100"];
        let r = run(BIN, &[&args[..], &["--work-us", "50"]].concat(), LIMIT);
        r.assert_success();
        r.expect_lines(&[
            "final balance 200 (expected 200)",
            "ok check: updates lost with the lock: 0 (expected 0)",
        ]);
    }
}

/// The chart's rows for `lane`, bars only (after the pid and tid).
fn bars<'a>(r: &'a Run, lane: &str) -> Vec<&'a str> {
    r.lines(&format!("    {lane}"))
        .into_iter()
        .map(|l| l.rsplit_once("tid ").map_or("", |(_, rest)| rest))
        .map(|rest| rest.trim_start_matches(|c: char| c.is_ascii_digit()))
        .collect()
}

#[test]
fn the_charts_show_the_race_and_the_waiting() {
    let _serial = one_at_a_time();
    // No sleep and a 1 ms window: without the lock the windows overlap at once.
    let busy = ["--ops", "20", "--sleep-us", "0", "--work-us", "1000"];
    let off = run(BIN, &[&busy[..], &["--lock", "off"]].concat(), LIMIT);
    off.assert_success();
    let both = bars(&off, "both in");
    assert!(
        both.len() == 1 && both[0].contains('#'),
        "no overlap drawn\n{off}"
    );
    for lane in ["deposit", "withdraw"] {
        assert!(
            !bars(&off, lane)[0].contains('='),
            "{lane} held a lock\n{off}"
        );
    }
    // With it: the `both in` row is empty, a worker holds (=) and, while the
    // other holds, waits (-): there is no sleep here, so every `-` is a lock wait.
    let on = run(BIN, &[&busy[..], &["--lock", "on"]].concat(), LIMIT);
    on.assert_success();
    assert_eq!(on.expect_line("    both in").trim(), "both in", "\n{on}");
    // (A busy machine may keep one worker off the CPU for the whole chart.)
    let rows = [bars(&on, "deposit")[0], bars(&on, "withdraw")[0]];
    assert!(
        rows.iter().all(|r| !r.contains('#')),
        "running unlocked\n{on}"
    );
    assert!(rows.iter().any(|r| r.contains('=')), "no hold drawn\n{on}");
    assert!(
        rows.iter().any(|r| r.contains('-')),
        "no lock wait drawn\n{on}"
    );
}

#[test]
fn every_line_fits_80_columns() {
    let _serial = one_at_a_time();
    run(BIN, &["--ops", "20"], LIMIT).assert_fits(80);
}

#[test]
fn a_killed_holder_is_reported_and_nothing_hangs() {
    let _serial = one_at_a_time();
    let r = run(
        BIN,
        &["--lock", "on", "--ops", "5"],
        Duration::from_secs(30),
    );
    r.assert_success();
    assert_eq!(r.lines("exitcode -9 (killed by SIGKILL)").len(), 2, "{r}");
    r.expect_lines(&[
        "next locker: the previous owner died holding the lock (EOWNERDEAD)",
        "ok check: balance after the repair: 200 (expected 200)",
        "ok check: the timed attempt gave up after",
        "(ETIMEDOUT)",
    ]);
}

#[test]
fn bad_flags_get_clear_errors() {
    expect_error(BIN, &["--ops", "0"], "0 is not in 1..=100000");
    expect_error(
        BIN,
        &["--sleep-us", "1000000"],
        "1000000 is not in 0..=100000",
    );
    expect_error(BIN, &["--lock", "maybe"], "invalid value 'maybe'");
    expect_error(
        BIN,
        &[
            "--ops",
            "100000",
            "--sleep-us",
            "100000",
            "--work-us",
            "100000",
        ],
        "--ops x (--sleep-us + --work-us) is 20000.000 s; at most 60.000 s",
    );
}

/// The PIDs whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map_or("", |at| &stat[at + 1..]);
            after.split_whitespace().nth(1) == Some(&parent.to_string())
        })
        .collect()
}

#[test]
fn a_stopped_worker_is_killed_and_reported_after_a_bound() {
    let _serial = one_at_a_time();
    // 1000 ops of 1 ms: the parent waits at most 3 x 1 s + 5 s for the workers.
    let dir = std::env::temp_dir().join(format!("mp-lock-bank-stop-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut lesson = Command::new(BIN)
        .args(["--lock", "on", "--ops", "1000", "--sleep-us", "1000"])
        .args(["--work-us", "0", "--ascii"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let worker = loop {
        if let Some(&pid) = children_of(lesson.id()).first() {
            break pid;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no worker appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    let stopped = Command::new("kill")
        .args(["-STOP", &worker.to_string()])
        .status();
    assert!(stopped.unwrap().success());
    let status = loop {
        if let Some(status) = lesson.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > Duration::from_secs(40) {
            let _ = lesson.kill();
            let _ = Command::new("kill")
                .args(["-KILL", &worker.to_string()])
                .status();
            panic!("the lesson hung with a stopped worker");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&err).unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: the bank workers were not done within 8.000 s")
            && stderr.contains(&format!("pid {worker} stopped")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Killed and reaped by the lesson, not left stopped for init to find.
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists(),
        "{worker} lives"
    );
}

#[test]
fn a_fork_the_system_refuses_is_an_error_and_leaves_no_worker() {
    let _serial = one_at_a_time();
    // As root, run as `nobody` with room for two tasks: the lesson and one worker;
    // the second fork is refused. (Root itself ignores RLIMIT_NPROC.)
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let can = Command::new("setpriv")
        .args(nobody)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !root || !can {
        eprintln!("skipped: needs root and setpriv to run as uid 65534 with a low limit");
        return;
    }
    let args = [&nobody[..], &["prlimit", "--nproc=2", BIN, "--ops", "5"]].concat();
    let r = run("setpriv", &args, Duration::from_secs(30));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("error: forking a bank worker: fork failed"),
        "{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}

/// Ctrl-Z of the whole job for 6 s, then fg: every claim still holds.
#[test]
fn ctrl_z_for_6_s_then_fg_every_claim_holds() {
    let _serial = one_at_a_time();
    common::testkit::assert_ctrl_z_changes_nothing(BIN);
}
