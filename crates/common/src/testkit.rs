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
    let mut child = Command::new(bin)
        .args(args)
        .arg("--ascii")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
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
    let deadline = Instant::now() + timeout;
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
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{bin} {args:?} did not finish within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
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
        r.stderr.contains(message),
        "{args:?} should say {message:?}\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{args:?} panicked\n{r}");
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

/// The numbers in a line, in order (`"pid 12 tid 13"` gives `[12, 13]`).
pub fn numbers(line: &str) -> Vec<i64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter_map(|w| w.parse().ok())
        .collect()
}
