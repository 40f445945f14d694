//! Runs the lesson binary and checks what it claims, and that killing it leaves
//! no child and no fork server behind.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testkit::{expect_error, run};

const BIN: &str = env!("CARGO_BIN_EXE_start-methods");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_default_run_holds_every_claim() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_fits(80)
        .assert_expected_output(include_str!("../src/main.rs"));
    r.expect_lines(&[
        // fork: a copy of now; spawn: the program's start; forkserver: the server's.
        "ok check: GLOBAL (fork/spawn/server): 2, 0, 1 (expected 2, 0, 1)",
        "ok check: open file (fork/spawn/server): yes, no, no (expected yes, no, no)",
        "ok check: every child runs one thread",
        // Only spawned children run main's top again.
        "main's top ran again in: spawn 3 of 3, fork 0 of 3, forkserver 0 of 3",
        // Fork beside a held lock: refused by the kit; a raw fork's child is stuck.
        "ok check: the kit refused to fork beside a thread",
        "raw fork: the child's copy of the lock stays held: exitcode 3",
        "ok check: took the lock (spawn, forkserver): yes, yes (expected yes, yes)",
        "ok check: 15 of 15 children ran the function and exited 0",
        "ok check: no child process left behind (zombie or running): none",
        "ok check: no file descriptor leaked: none",
    ]);
}

#[test]
fn no_rust_debug_noise() {
    let r = run(BIN, &["--children", "2", "--starts", "2"], LIMIT);
    r.assert_success().assert_all_checks_held().assert_fits(80);
    for line in r.stdout.lines() {
        for noise in ["Some(", "None", "Ok(", "Err(", "Exit {", "Outcome"] {
            assert!(!line.contains(noise), "Debug noise {noise:?}: {line:?}");
        }
    }
    r.expect_line("main's top ran again in: spawn 2 of 2, fork 0 of 2, forkserver 0 of 2");
    r.expect_line("ok check: 6 of 6 children ran the function and exited 0");
}

#[test]
fn bad_flags_are_clear_errors() {
    expect_error(BIN, &["--children", "0"], "--children");
    expect_error(BIN, &["--starts", "100"], "--starts");
}

/// A process as /proc shows it: parent and start time (to tell a reused PID).
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    Some((
        f[0].chars().next()?,
        f[1].parse().ok()?,
        f[19].parse().ok()?,
    ))
}

/// Every live descendant of `root`, with its start time.
fn descendants(root: i32) -> HashMap<i32, u64> {
    let all: Vec<(i32, char, i32, u64)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat(pid).map(|(st, ppid, start)| (pid, st, ppid, start)))
        .collect();
    let mut found = HashMap::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, state, ppid, start) in &all {
            if ppid == parent && state != 'Z' && found.insert(pid, start).is_none() {
                frontier.push(pid);
            }
        }
    }
    found
}

#[test]
fn killing_the_parent_leaves_no_child_and_no_fork_server() {
    for (signal, wait_ms) in [
        (libc::SIGTERM, 0),
        (libc::SIGTERM, 300),
        (libc::SIGTERM, 700),
        (libc::SIGKILL, 300),
    ] {
        let mut lesson = Command::new(BIN)
            .arg("--ascii")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the lesson");
        let pid = lesson.id() as i32;
        // Wait until it runs the fork server and at least one more child.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = HashMap::new();
        while seen.len() < 2 && Instant::now() < deadline {
            seen = descendants(pid);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            seen.len() >= 2,
            "the lesson never had two processes below it"
        );
        std::thread::sleep(Duration::from_millis(wait_ms));
        seen.extend(descendants(pid));
        // SAFETY: kill(2) with the PID of our own unreaped child.
        unsafe { libc::kill(pid, signal) };
        let _ = lesson.wait();
        // Each descendant must be gone (or a zombie its new parent has yet to reap).
        let deadline = Instant::now() + Duration::from_secs(5);
        let alive = |(&p, &start): (&i32, &u64)| matches!(stat(p), Some((state, _, s)) if s == start && state != 'Z');
        loop {
            let left: Vec<i32> = seen.iter().filter(|e| alive(*e)).map(|(p, _)| *p).collect();
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "signal {signal} after {wait_ms} ms: left behind: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
