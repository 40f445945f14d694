//! The lesson's other programs: the lesson's own binary, started again with
//! `exec` (not forked) and a hidden first argument, as Python's `spawn` start
//! method and its resource tracker start a fresh interpreter.
//!
//! - `--attach NAME`: another program that opens the segment by its name only
//!   (Python: `SharedMemory(name=...)` in another script).
//! - `--track`: a resource tracker, like Python's `resource_tracker`: the lesson
//!   writes every name it is about to create on the tracker's stdin; when that
//!   pipe ends (the lesson exited, however it died, even of SIGKILL), the tracker
//!   unlinks those names that still exist, and says so.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::process::Deadline;

use crate::named::{Item, Segment, ShareableList, in_dev_shm, unlink};
use crate::signals;

/// How long a helper may take to do what the lesson waits for.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// If this process was started as one of the helpers, run it and give its exit
/// code. `main` calls this first, before anything else.
pub fn helper_main() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--attach") if args.len() == 2 => Some(report(attach_main(&args[1]))),
        Some("--track") if args.len() == 1 => Some(track_main()),
        _ => None,
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => common::output::fail(&format!("{e:#}")),
    }
}

/// A helper process: the lesson binary, exec'ed again. Dropping it kills and
/// reaps it, so no helper outlives an early return.
#[derive(Debug)]
pub struct Helper {
    child: Child,
    status: Option<ExitStatus>,
}

impl Helper {
    /// Start `current_exe args...`. With `dies_with_parent`, the helper gets
    /// SIGKILL when the lesson dies (PR_SET_PDEATHSIG, kept across execve).
    pub fn start(args: &[&str], dies_with_parent: bool, stdin: Stdio) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the lesson's own binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(stdin);
        if dies_with_parent {
            let parent = nix::unistd::getpid();
            // SAFETY: runs in the forked child before exec; prctl, getppid and _exit
            // are async-signal-safe and touch no memory the parent owns.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    if libc::getppid() != parent.as_raw() {
                        libc::_exit(1); // the lesson died before the prctl
                    }
                    Ok(())
                })
            };
        }
        let child = cmd
            .spawn()
            .context("cannot start the lesson's binary again")?;
        Ok(Helper {
            child,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status once it has ended (reaped), without waiting.
    pub fn ended(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waitpid failed")?;
        }
        Ok(self.status)
    }

    /// Wait at most `patience` for it to end; past that, kill and reap it and say
    /// so (it was stopped, or stuck).
    pub fn join_within(&mut self, patience: Duration) -> anyhow::Result<i32> {
        self.join_bounded(patience, true)
    }

    /// [`Helper::join_within`], but a SIGTERM or SIGINT caught meanwhile does
    /// not end the wait: for the cleanup that follows one.
    pub fn join_within_regardless(&mut self, patience: Duration) -> anyhow::Result<i32> {
        self.join_bounded(patience, false)
    }

    fn join_bounded(&mut self, patience: Duration, interruptible: bool) -> anyhow::Result<i32> {
        // Time the lesson spends stopped (Ctrl-Z) is left out: see `Deadline`.
        let mut deadline = Deadline::after(patience);
        loop {
            if let Some(status) = self.ended()? {
                return Ok(exitcode(status));
            }
            if deadline.passed() {
                self.kill_and_reap();
                let pid = self.pid();
                bail!(
                    "pid {pid} did not end within {} s (stopped?); it was killed",
                    patience.as_secs()
                );
            }
            if interruptible {
                signals::sleep_a_little()?;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Wait (at most [`PATIENCE`]) until `done()`, while this helper runs: an
    /// error if it ends first, or is still not done (stopped?) at the bound.
    pub fn wait_for(&mut self, done: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
        let mut deadline = Deadline::after(PATIENCE);
        while !done() {
            if let Some(status) = self.ended()? {
                let code = exitcode(status);
                bail!(
                    "pid {} ended (exitcode {code}) before it {what}",
                    self.pid()
                );
            }
            if deadline.passed() {
                bail!("pid {} had not {what} after 5 s (stopped?)", self.pid());
            }
            signals::sleep_a_little()?;
        }
        Ok(())
    }

    fn kill_and_reap(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    fn stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Python's `exitcode`: the code, or -N for death by signal N.
pub fn exitcode(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

/// `--attach NAME`, another program: open the segment by name, say what it holds,
/// wait (bounded) until the creator has unlinked the name, see that the name is
/// gone while the memory is not, and answer: `sl[2] = sl[0] ** 2`.
fn attach_main(name: &str) -> anyhow::Result<()> {
    let me = std::process::id();
    let seg = Segment::attach(name)?;
    let sl = ShareableList::open(&seg)?;
    let read = sl.to_vec();
    sl.header()
        .attached
        .store(me as i64, std::sync::atomic::Ordering::SeqCst);
    let mut deadline = Deadline::after(PATIENCE);
    while sl
        .header()
        .unlinked
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        if deadline.passed() {
            bail!("the creator did not unlink {name} within 5 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let gone = in_dev_shm(name).is_none();
    let answer = match read.first() {
        Some(Item::Int(n)) => Item::Int(n.saturating_mul(*n)),
        Some(Item::Float(x)) => Item::Float(x * x),
        None => bail!("{name} holds an empty list"),
    };
    if sl.len() > 2 {
        sl.set(2, answer);
    }
    let read = common::output::List(&read);
    println!("    pid {me}, another program: opened it by name, read {read}");
    println!("    pid {me}: the name is gone, the memory is not: sl[2] = {answer}");
    let h = sl.header();
    h.saw_name_gone
        .store(i64::from(gone), std::sync::atomic::Ordering::SeqCst);
    h.done.store(1, std::sync::atomic::Ordering::SeqCst);
    seg.close(); // munmap and close: this program never unlinks
    Ok(())
}

/// The lesson's side of its resource tracker.
#[derive(Debug)]
pub struct Tracker {
    helper: Helper,
    pipe: Option<ChildStdin>,
}

impl Tracker {
    /// Start the tracker (it outlives the lesson on purpose: it has no
    /// parent-death signal; it ends when its stdin ends).
    pub fn start() -> anyhow::Result<Tracker> {
        let mut helper = Helper::start(&["--track"], false, Stdio::piped())?;
        let pipe = helper.stdin();
        Ok(Tracker { helper, pipe })
    }

    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// `resource_tracker.register(name, "shared_memory")`: call it *before*
    /// creating the name, so that no moment exists where the name is unwatched.
    pub fn watch(&mut self, name: &str) -> anyhow::Result<()> {
        let pipe = self.pipe.as_mut().context("the tracker is closed")?;
        // One short line: a pipe write under PIPE_BUF bytes is atomic.
        writeln!(pipe, "{name}").context("the resource tracker is gone")
    }

    /// Close the pipe, as the lesson's exit would, and join the tracker. A
    /// tracker that ended by itself tells how many watched names it found left
    /// (and unlinked) in its exit code; one that died of a signal tells nothing,
    /// and that is an error.
    pub fn finish(mut self) -> anyhow::Result<TrackerEnd> {
        self.pipe = None; // Drop then has nothing left to do
        let pid = self.pid();
        let exitcode = self
            .helper
            .join_within(PATIENCE)
            .with_context(|| format!("the resource tracker (pid {pid})"))?;
        let Ok(names) = u32::try_from(exitcode) else {
            // -N: death by signal N, `exitcode -9 (killed by SIGKILL)`.
            let exit = common::Exit {
                code: exitcode,
                panic: None,
            };
            bail!("the resource tracker was killed: pid {pid} ended with {exit}");
        };
        if names > MAX_COUNTED {
            bail!("the resource tracker (pid {pid}) failed: exitcode {exitcode}");
        }
        Ok(TrackerEnd { exitcode, names })
    }
}

/// The tracker's exit code counts the names it unlinked, up to this many; a
/// higher code is not a count (101: a Rust panic).
const MAX_COUNTED: u32 = 100;

/// How the resource tracker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerEnd {
    /// Python's `exitcode` of the tracker process.
    pub exitcode: i32,
    /// How many watched names it found still in `/dev/shm` and unlinked.
    pub names: u32,
}

impl Drop for Tracker {
    /// On an early return (an error, SIGTERM): close the pipe and let the
    /// tracker do its work, within [`PATIENCE`]; the helper's own Drop then kills
    /// it if it is stopped.
    fn drop(&mut self) {
        if self.pipe.take().is_some() {
            let _ = self.helper.join_within_regardless(PATIENCE);
        }
    }
}

/// `--track`: read names until the pipe ends; then unlink those that still exist.
fn track_main() -> ExitCode {
    // Like Python's resource_tracker: a Ctrl-C or SIGTERM meant for the lesson
    // must not take the tracker with it; its job starts when the lesson has gone.
    signals::ignore_term_and_int();
    let parent = nix::unistd::getppid();
    let mut names: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    let mut stdin = std::io::stdin().lock();
    // Bounded even if the lesson is stopped for good: after 10 minutes, clean up.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut chunk = [0u8; 512];
    while Instant::now() < deadline && nix::unistd::getppid() == parent {
        if !readable(0, Duration::from_millis(200)) {
            continue;
        }
        match stdin.read(&mut chunk) {
            Ok(0) | Err(_) => break, // end of the pipe: the lesson is gone
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        take_lines(&mut buf, &mut names);
    }
    // The loop may have ended on the parent's death with names still in the pipe
    // (written just before the lesson died): read what is there, without waiting
    // (a forked child of the lesson may still hold the write end open), bounded.
    for _ in 0..1024 {
        if !readable(0, Duration::ZERO) {
            break; // nothing more to read now (EAGAIN)
        }
        match stdin.read(&mut chunk) {
            Ok(0) | Err(_) => break, // end of the pipe
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        take_lines(&mut buf, &mut names);
    }
    let leaked: Vec<&String> = names.iter().filter(|n| unlink(n).is_ok()).collect();
    if !leaked.is_empty() {
        eprintln!(
            "resource tracker: unlinked {} leaked shared memory segment(s): {}",
            leaked.len(),
            leaked
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    ExitCode::from(leaked.len().min(MAX_COUNTED as usize) as u8)
}

/// Move every complete line of `buf` (one name each) to `names`.
fn take_lines(buf: &mut Vec<u8>, names: &mut Vec<String>) {
    while let Some(at) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=at).collect();
        names.push(String::from_utf8_lossy(&line[..at]).into_owned());
    }
}

fn readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and the count says one.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) > 0 }
}
