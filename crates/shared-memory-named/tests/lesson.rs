//! Runs the lesson binary and checks what it claims, that it fits 80 columns, and
//! that it leaves no `/dev/shm` entry behind: after a run, after SIGTERM at a
//! moment in the middle, and (thanks to its resource tracker) after SIGKILL.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testkit::{Run, expect_error, run, run_unicode};

const BIN: &str = env!("CARGO_BIN_EXE_shared-memory-named");
const LIMIT: Duration = Duration::from_secs(60);
const PREFIX: &str = "course-named-";

/// The `/dev/shm` entries a run with this PID created and left.
fn left_in_dev_shm(pid: u32) -> Vec<String> {
    let ours = format!("{PREFIX}{pid}-");
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&ours))
        .collect()
}

/// The lesson's PID, from its banner (`pid 812, 2 CPUs available`).
fn banner_pid(r: &Run) -> u32 {
    r.expect_line("CPUs available")
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .expect("a pid in the banner")
}

#[test]
fn the_default_run_holds_every_claim_and_leaves_nothing() {
    let r = run(BIN, &[], LIMIT);
    r.assert_success()
        .assert_all_checks_held()
        .assert_fits(80)
        .assert_expected_output(include_str!("../src/main.rs"));
    r.expect_lines(&[
        // another program, exec'ed, attached by the name alone and answered
        "ok check: sl, read here now: [7, 2.5, 49] (expected [7, 2.5, 49])",
        "another program: opened it by name, read [7, 2.5, 0]",
        "ok check: after unlink: no name in /dev/shm, the memory still shared",
        // close keeps the name, unlink removes it
        "ok check: after close the name stays: opened it again, sl[0] = 42",
        "ok check: after unlink the name is gone and the mapping still works",
        // the killed creator's leak, shown, then cleaned; memfd has no name
        "then got SIGKILL: exitcode -9 (killed by SIGKILL)",
        "ok check: the killed creator's name is still in /dev/shm",
        "ok check: after shm_unlink the entry is gone",
        "maps a memfd region: /memfd:course-shm (deleted)",
        "ok check: a memfd has no name in /dev/shm: nothing to leak",
        // the Manager: every access a request, each answered
        "ok check: d: {'client1': 50, 'client2': 50, 'client3': 50}",
        "ok check: the server answered 302 requests: one per access",
        "ok check: a Manager access costs over 10 Value accesses",
        // and nothing left
        "ok check: the resource tracker had nothing to clean up: exitcode 0",
        "ok check: no child process left behind (zombie or running): none",
        "ok check: no file descriptor leaked: none",
    ]);
    let pid = banner_pid(&r);
    r.expect_line(&format!("entries named {PREFIX}{pid}-*: []"));
    assert!(left_in_dev_shm(pid).is_empty(), "left in /dev/shm\n{r}");
}

#[test]
fn knobs_change_the_manager_step() {
    let r = run(BIN, &["--clients", "2", "--sets", "7"], LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_lines(&[
        "ok check: d: {'client1': 7, 'client2': 7} (as expected)",
        // 2 clients x 7 x (set + get), then items() and served()
        "ok check: the server answered 30 requests: one per access",
    ]);
}

#[test]
fn unicode_output_fits_80_columns_without_debug_noise() {
    let r = run_unicode(BIN, &[], LIMIT);
    r.assert_success().assert_fits(80).assert_no_debug_noise();
    for noise in ["Int(", "Float("] {
        assert!(!r.stdout.contains(noise), "Debug noise {noise:?}\n{r}");
    }
}

/// Start the lesson, send `signal` after `delay`, wait (bounded) for its end.
/// Its PID, exit code (or -signal), stdout and stderr.
fn run_and_signal(signal: i32, delay: Duration) -> (u32, i32, String, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(BIN)
        .arg("--ascii")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lesson");
    let pid = child.id();
    std::thread::sleep(delay);
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe { libc::kill(pid as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no end 30 s after signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let code = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0));
    (pid, code, out, err)
}

/// Delays spread over a run, different in every test run.
fn delays(n: u64) -> Vec<Duration> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (0..n)
        .map(|i| Duration::from_micros((seed.wrapping_mul(2654435761) + i * 37_000) % 250_000))
        .collect()
}

#[test]
fn sigterm_in_the_middle_leaves_no_dev_shm_entry() {
    for delay in delays(6) {
        let (pid, code, out, err) = run_and_signal(libc::SIGTERM, delay);
        // Ended by the signal (after cleaning up), or had finished before it came.
        assert!(
            code == -libc::SIGTERM || code == 0,
            "exit {code} after {delay:?}\n{out}\n{err}"
        );
        // A signal within the first microseconds kills the lesson before it
        // has installed its handler: it has made nothing and said nothing yet
        // (the /dev/shm check below still runs). Any later one is handled.
        let before_its_handler = code == -libc::SIGTERM && out.is_empty() && err.is_empty();
        // The error names where the signal came: "error: interrupted by
        // SIGTERM", "error: the resource tracker (pid N): interrupted by
        // SIGTERM" while the tracker was starting (wrapped at 80 columns), or
        // "error: interrupted by SIGTERM after the lesson's last wait" when it
        // came while the lesson made its final checks.
        let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
        let said = err.lines().any(|l| l.starts_with("error: "))
            && flat.contains("interrupted by SIGTERM");
        if code != 0 && !before_its_handler {
            assert!(said, "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        let left = left_in_dev_shm(pid);
        assert!(
            left.is_empty(),
            "SIGTERM after {delay:?} left {left:?}\n{out}\n{err}"
        );
    }
}

#[test]
fn sigkill_of_the_lesson_is_cleaned_up_by_its_tracker() {
    for delay in delays(4) {
        let (pid, code, out, err) = run_and_signal(libc::SIGKILL, delay);
        assert!(
            code == -libc::SIGKILL || code == 0,
            "exit {code}\n{out}\n{err}"
        );
        // The tracker starts its work when the lesson's pipe ends: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !left_in_dev_shm(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = left_in_dev_shm(pid);
        assert!(
            left.is_empty(),
            "SIGKILL after {delay:?} left {left:?}\n{out}\n{err}"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    expect_error(BIN, &["--clients", "0"], "error: invalid value '0'");
    expect_error(BIN, &["--sets", "0"], "error: invalid value '0'");
}

#[test]
fn attaching_a_name_that_does_not_exist_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--attach", "course-named-no-such-segment"])
        .output()
        .expect("run the attacher");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: shm_open(/course-named-no-such-segment) failed"),
        "{err}"
    );
    assert!(err.contains("ENOENT"), "{err}");
}

/// Started with SIGCHLD ignored (a parent's `signal(SIGCHLD, SIG_IGN)` is
/// inherited across exec): the lesson puts it back first, or the kernel would
/// reap its helpers before it could learn how they ended.
#[test]
fn an_inherited_sigchld_ignore_is_undone() {
    let script = "import signal, os, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); \
                  os.execv(sys.argv[1], [sys.argv[1], '--ascii'])";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, BIN]);
    let r = common::testkit::run_command(cmd, LIMIT);
    r.assert_success().assert_all_checks_held();
    r.expect_line("ok check: the resource tracker had nothing to clean up: exitcode 0");
    assert!(
        left_in_dev_shm(banner_pid(&r)).is_empty(),
        "left in /dev/shm\n{r}"
    );
}

/// The PID of `parent`'s child started as `--track`, once it exists (bounded).
fn tracker_of(parent: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The fields after the command's closing parenthesis: state, ppid, ...
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == Some(parent) && cmdline.ends_with(b"--track\0") {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn a_killed_tracker_is_a_clear_error_not_a_count() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(BIN)
        .arg("--ascii")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lesson");
    let pid = child.id();
    let tracker = tracker_of(pid).expect("the lesson's tracker");
    // SAFETY: kill(2) on a PID that is alive (the lesson has not reaped it: it
    // waits for it only at its end, long after this).
    unsafe { libc::kill(tracker as i32, libc::SIGKILL) };
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no end after its tracker died");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(
        status.code(),
        Some(2),
        "{:?}\n{out}\n{err}",
        status.signal()
    );
    assert!(err.starts_with("error: the resource tracker"), "{err}");
    assert!(!out.contains("found -9 names"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    let left = left_in_dev_shm(pid);
    assert!(left.is_empty(), "left {left:?}\n{out}\n{err}");
}
