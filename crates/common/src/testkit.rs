//! For integration tests: run a lesson binary under a timeout and look at what it
//! printed. Tests never fork in the test harness; they run the binaries that do.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a lesson run produced.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `bin` with `args` (and `--ascii`, so output is the same in any locale);
/// kill it and fail the test if it takes longer than `timeout`.
pub fn run(bin: &str, args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--ascii");
    run_command(cmd, timeout)
}

/// Run `bin` with `args` as a learner in a UTF-8 terminal would see it: no
/// `--ascii`, `LC_ALL=C.UTF-8` (Unicode marks and bars).
pub fn run_unicode(bin: &str, args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("LC_ALL", "C.UTF-8");
    run_command(cmd, timeout)
}

/// Run `bin` with `args` (and `--ascii`) under a shell's limits, for example
/// `"ulimit -n 7"` or `"ulimit -v 60000; export RUST_MIN_STACK=100000000"`.
pub fn run_limited(bin: &str, limits: &str, args: &[&str], timeout: Duration) -> Run {
    let script = format!("{limits}; exec \"$0\" \"$@\"");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, bin]).args(args).arg("--ascii");
    run_command(cmd, timeout)
}

/// Run `bin` with `args` (and `--ascii`) as a job a learner stops with Ctrl-Z
/// after `after`, and continues with `fg` after `stopped`: its own process group,
/// stopped and continued as a whole (SIGSTOP, then SIGCONT, to the group).
pub fn run_stopped_as_a_job(
    bin: &str,
    args: &[&str],
    after: Duration,
    stopped: Duration,
    timeout: Duration,
) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--ascii").process_group(0);
    run_with(cmd, timeout, move |pid| {
        let group = nix::unistd::Pid::from_raw(-(pid as i32));
        std::thread::sleep(after);
        // ESRCH: the job has ended already; nothing to stop.
        if nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGSTOP).is_ok() {
            std::thread::sleep(stopped);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGCONT);
        }
    })
}

/// Ctrl-Z stops the whole job, and fg continues it: 6 s stopped, longer than
/// a lesson's usual bound on a peer (5 s), is not a peer's fault. Run `bin` so,
/// with the stop at two moments of the run; every claim must still hold.
pub fn assert_ctrl_z_changes_nothing(bin: &str) {
    for after in [150, 400] {
        let after = Duration::from_millis(after);
        let six = Duration::from_secs(6);
        let r = run_stopped_as_a_job(bin, &[], after, six, Duration::from_secs(90));
        r.assert_success().assert_all_checks_held();
    }
}

/// Run `cmd`; kill it and fail the test if it takes longer than `timeout`.
pub fn run_command(cmd: Command, timeout: Duration) -> Run {
    run_with(cmd, timeout, |_| {})
}

/// [`run_command`], with `meanwhile` run on a thread of its own, given the pid.
fn run_with(
    mut cmd: Command,
    timeout: Duration,
    meanwhile: impl FnOnce(u32) + Send + 'static,
) -> Run {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let meanwhile = std::thread::spawn(move || meanwhile(pid));
    // Read both pipes on threads, so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = crate::process::deadline_in(timeout);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = meanwhile.join();
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{what} did not finish within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Run `bin` with bad `args`: it must exit 2 (the lesson could not run) and say
/// `message` on stderr, within a few seconds and without a panic.
pub fn expect_error(bin: &str, args: &[&str], message: &str) {
    let r = run(bin, args, Duration::from_secs(30));
    assert_eq!(
        r.code,
        Some(2),
        "{args:?} should fail with exit code 2\n{r}"
    );
    assert!(
        r.error_text().contains(message),
        "{args:?} should say {message:?}\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{args:?} panicked\n{r}");
}

/// Hold this while a test runs a lesson whose claims depend on timing (races,
/// charts, wake-ups), so that the test harness's threads do not run several such
/// lessons at once and load the machine for each other.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run `bin` where no thread can start: under an address-space limit (`ulimit -v`,
/// 1 GB) below the stack every new thread asks for (2 GB through
/// `RUST_MIN_STACK`, which std reads for each thread it spawns). The process
/// itself, and the children it forks, run normally.
pub fn run_without_threads(bin: &str, args: &[&str], timeout: Duration) -> Run {
    let script = "ulimit -v 1000000 || exit 99; exec env RUST_MIN_STACK=2000000000 \"$@\"";
    let mut all = vec!["-c", script, "sh", bin];
    all.extend_from_slice(args);
    run("sh", &all, timeout)
}

/// The `main` of a test binary that forks (`harness = false`): libtest would run the
/// cases on several threads, and the kit refuses to fork a multithreaded process.
/// Runs each case in turn on this one thread (those whose name contains the first
/// argument, if any), fails a case that panics or leaves a child process behind,
/// prints `N passed, N failed`, and exits 1 if any failed.
pub fn run_cases(cases: &[(&str, fn())]) {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let t = Instant::now();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).is_ok();
        let left = crate::process::children_left();
        if ok && left.is_empty() {
            passed += 1;
            println!("test {name} ... ok ({} ms)", t.elapsed().as_millis());
        } else {
            failed += 1;
            println!("test {name} ... FAILED (children left behind: {left:?})");
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

impl Run {
    /// Fail the test, showing the output, unless the lesson exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "lesson failed\n{self}");
        self
    }

    /// The first stdout line that contains `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.stdout.lines().find(|l| l.contains(needle))
    }

    /// Every stdout line that contains `needle`.
    pub fn lines(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The first line containing `needle`, or fail the test showing the output.
    pub fn expect_line(&self, needle: &str) -> &str {
        self.line(needle)
            .unwrap_or_else(|| panic!("no line contains {needle:?}\n{self}"))
    }

    /// Fail the test, showing the output, unless some stdout line contains each of
    /// `needles`.
    pub fn expect_lines(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            self.expect_line(needle);
        }
        self
    }

    /// Fail the test unless every line of the header's "Expected output" block
    /// (`main_rs` is the lesson's `src/main.rs`, `include_str!`-ed) appears in what
    /// the lesson printed, in any order, matched loosely (see [`matches_loosely`]).
    /// So a header cannot promise a line the lesson no longer prints.
    pub fn assert_expected_output(&self, main_rs: &str) -> &Self {
        let missing: Vec<String> = expected_block(main_rs)
            .into_iter()
            .filter(|want| !self.stdout.lines().any(|l| matches_loosely(want, l)))
            .collect();
        assert!(
            missing.is_empty(),
            "the header's Expected output promises lines the lesson did not print:\n{}\n{self}",
            missing.join("\n")
        );
        self
    }

    /// Fail the test unless every stdout line fits `columns` (counted in
    /// characters, not bytes).
    pub fn assert_fits(&self, columns: usize) -> &Self {
        let wide: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.chars().count() > columns)
            .collect();
        assert!(
            wide.is_empty(),
            "lines wider than {columns} columns:\n{}\n{self}",
            wide.join("\n")
        );
        self
    }

    /// Fail the test if any stdout line shows Rust's `Debug` formatting.
    pub fn assert_no_debug_noise(&self) -> &Self {
        let noise = [
            "Some(",
            "None)",
            "Ok(",
            "Err(",
            "Exit {",
            "Finished(",
            "Killed(",
            "[true",
            "[false",
        ];
        for line in self.stdout.lines() {
            for n in noise {
                assert!(!line.contains(n), "Debug noise {n:?} in {line:?}\n{self}");
            }
        }
        self
    }

    /// stderr with the lesson's wrapped error lines joined again (`output::fail`
    /// wraps at 80 columns, continuing with two spaces), so that a test can look
    /// for a phrase wherever the line broke.
    pub fn error_text(&self) -> String {
        self.stderr.replace("\n  ", " ")
    }

    /// Fail the test unless the lesson stopped with a clear error: exit code 2,
    /// stderr starting with `error` (for example `error: cannot start a thread`),
    /// and no panic.
    pub fn assert_clear_error(&self, error: &str) -> &Self {
        assert_eq!(self.code, Some(2), "expected exit code 2\n{self}");
        assert!(
            self.error_text().starts_with(error),
            "expected {error:?}\n{self}"
        );
        assert!(!self.stderr.contains("panicked"), "a panic\n{self}");
        self
    }

    /// Every check line passed, and there was at least one.
    pub fn assert_all_checks_held(&self) -> &Self {
        let failed = self.lines("FAIL check:");
        assert!(failed.is_empty(), "failed checks: {failed:#?}\n{self}");
        assert!(
            !self.lines("ok check:").is_empty(),
            "no check lines\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The lines of the "Expected output" block of a lesson's `//!` header: the first
/// fenced block after `**Expected output**`, without the `//! ` prefix and blank
/// lines.
pub fn expected_block(main_rs: &str) -> Vec<String> {
    let doc: Vec<&str> = main_rs
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| l.contains("**Expected output**"))
        .expect("the header has an **Expected output** part");
    let mut lines = doc[start..].iter().skip_while(|l| !l.starts_with("```"));
    lines
        .next()
        .expect("the Expected output part has a fenced block");
    lines
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.to_string())
        .collect()
}

/// A line reduced to what must not vary between runs: every number (a PID, a time,
/// `0x7f..` addresses, `1,000`) becomes `#`, runs of spaces become one, the Unicode
/// marks and bars become their `--ascii` forms, and the ends are trimmed.
pub fn loose(line: &str) -> String {
    let ascii = line
        .replace('✓', "ok")
        .replace('✗', "FAIL")
        .replace('⚠', "!!")
        .replace('═', "=")
        .replace('█', "#")
        .replace('░', "-")
        .replace('▓', "=");
    let mut out = String::new();
    let mut chars = ascii.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            // 0x7f3a.., 1,000,000, 0.802: one number.
            while let Some(&n) = chars.peek() {
                let more = n.is_ascii_hexdigit() || n == 'x';
                let sep = (n == '.' || n == ',') && {
                    let mut ahead = chars.clone();
                    ahead.next();
                    ahead.peek().is_some_and(|d| d.is_ascii_digit())
                };
                if more || sep {
                    chars.next();
                } else {
                    break;
                }
            }
            out.push('#');
        } else if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Whether `line` matches the expected line `want` loosely (see [`loose`]); `...`
/// in `want` stands for any text.
pub fn matches_loosely(want: &str, line: &str) -> bool {
    let (want, line) = (loose(want), loose(line));
    let parts: Vec<&str> = want.split("...").map(str::trim).collect();
    if parts.len() == 1 {
        return want == line;
    }
    let mut rest = line.as_str();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        let found = if i == 0 {
            rest.starts_with(part).then_some(0)
        } else {
            rest.find(part)
        };
        match found {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    parts.last().is_some_and(|p| p.is_empty()) || rest.trim().is_empty()
}

/// The numbers in a line, in order (`"pid 12 tid 13"` gives `[12, 13]`).
pub fn numbers(line: &str) -> Vec<i64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_spaces_and_marks_match_loosely() {
        assert!(matches_loosely(
            "  ✓ check: balance 200 (expected 200)",
            "ok check: balance 201 (expected 200)"
        ));
        assert!(matches_loosely("pid 5121 tid 5121", "pid 99 tid 99"));
        assert!(matches_loosely(
            "wall 0.802 s ...",
            "wall 1.3 s, ideal 0.8 s"
        ));
        assert!(matches_loosely("at 0x7f3a1000", "at 0x55d2e0"));
        assert!(!matches_loosely("exitcode 0", "Finished(Exit { code: 0 })"));
        assert!(!matches_loosely("from pid 5121", "from pid [21553]"));
    }

    #[test]
    fn the_block_is_read_from_the_header() {
        let src = "//! # x: y\n//! **Expected output** (PIDs vary):\n//!\n//! ```text\n//! a 1\n//!\n//! b\n//! ```\n//! **Notice.**\nfn main() {}\n";
        assert_eq!(expected_block(src), vec!["a 1", "b"]);
    }
}
