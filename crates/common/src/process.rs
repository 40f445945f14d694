//! Fork a child that runs a closure, then join it: `multiprocessing.Process` on a
//! real `fork(2)`.
//!
//! The discipline is CPython's own (`Lib/multiprocessing/popen_fork.py`): flush
//! stdout and stderr before forking, run the target in the child, end the child with
//! `_exit` so nothing is flushed twice and no parent destructor runs there.
//! Exit codes follow `Process.exitcode`: 0 when the closure returns, the code it
//! chose, 1 for a panic (Python: an uncaught exception), `-N` for death by signal N.
//!
//! ```no_run
//! let mut child = common::fork(|| println!("hello from {}", std::process::id()))?;
//! let exit = child.join()?;
//! assert_eq!(exit.code, 0);
//! # Ok::<(), common::process::ProcessError>(())
//! ```
//!
//! Forking is refused when the process runs more than one thread: the child would
//! get a copy of every lock those threads held (the allocator's, stdout's, yours)
//! and nobody to release them (fork(2): after a fork in a multithreaded program the
//! child "can safely call only async-signal-safe functions").

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{self, ForkResult, Pid};

/// What can go wrong when forking, waiting or signalling.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `fork` was asked for while other threads run (see the module docs).
    #[error(
        "refusing to fork: this process runs {threads} threads; a forked child would inherit \
         locks held by threads that do not exist in it (fork before starting threads)"
    )]
    MultiThreaded { threads: usize },
    /// The kernel refused the fork (EAGAIN: process limit, ENOMEM: memory).
    #[error("fork failed: {0}")]
    Fork(Errno),
    /// A system call other than fork failed.
    #[error("{call} failed: {errno}")]
    Sys { call: &'static str, errno: Errno },
}

/// What a child process may return, mapped to its exit code like Python's `exitcode`.
pub trait ChildResult {
    /// The exit status the child ends with (the kernel keeps the low 8 bits).
    fn exit_code(self) -> i32;
}

impl ChildResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl ChildResult for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

impl<E: fmt::Display> ChildResult for Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error in child process {}: {e}", std::process::id());
                1
            }
        }
    }
}

/// How a child ended, Python-style: `code` is what `Process.exitcode` would say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// 0 for a normal return, N for a chosen code, 1 for a panic, -N for signal N.
    pub code: i32,
    /// The panic message, when the child's closure panicked.
    pub panic: Option<String>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The signal that killed the child, if one did.
    pub fn signal(&self) -> Option<Signal> {
        (self.code < 0)
            .then(|| Signal::try_from(-self.code).ok())
            .flatten()
    }

    fn from_status(status: WaitStatus) -> Option<Exit> {
        let code = match status {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, sig, _) => -(sig as i32),
            _ => return None, // stopped/continued: we never ask for those
        };
        Some(Exit { code, panic: None })
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exitcode {}", self.code)?;
        if let Some(sig) = self.signal() {
            write!(f, " (killed by {sig})")?;
        }
        if let Some(msg) = &self.panic {
            write!(f, " (panicked: {msg})")?;
        }
        Ok(())
    }
}

/// A forked child. Join it to learn its [`Exit`].
///
/// **Drop:** a child that was never joined is killed with SIGKILL and then reaped,
/// so no zombie and no orphan outlives its handle (a lesson that fails half way
/// leaves nothing behind). Join it first if it must finish its work.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    /// A pidfd (Linux 5.3+): becomes readable when the child exits; `join_timeout`
    /// sleeps on it instead of polling.
    pidfd: Option<OwnedFd>,
    /// Read end of a pipe on which the child writes its panic message.
    report: Option<OwnedFd>,
    exit: Option<Exit>,
}

/// Fork a child process that runs `f`, then ends with `_exit`.
///
/// Before the fork, stdout and stderr are flushed. In the child: the parent-death
/// signal is set to SIGKILL (if the parent dies, the child does not live on as an
/// orphan), `f` runs under `catch_unwind`, stdout and stderr are flushed, and the
/// child calls `_exit` with the code [`ChildResult`] gives: it never returns into the
/// parent's code and runs none of the parent's destructors.
///
/// Memory is copied, not shared: writes in the child are invisible to the parent
/// unless they go to a [`crate::shm`] region made before the fork.
///
/// In the parent, `f` is dropped when `fork` returns, with everything it owns: a
/// `move` closure hands its values to the child. That is how a lesson gives a
/// channel's sending end to the child and closes the parent's copy in one step.
pub fn fork<F, R>(f: F) -> Result<Child, ProcessError>
where
    F: FnOnce() -> R,
    R: ChildResult,
{
    let threads = wait_until_single_threaded();
    if threads > 1 {
        return Err(ProcessError::MultiThreaded { threads });
    }
    // Whatever sits in the buffers now would be copied into the child and written
    // twice: once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();

    let (report_r, report_w) =
        unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|errno| ProcessError::Sys {
            call: "pipe2",
            errno,
        })?;
    let parent = unistd::getpid();

    // SAFETY: the process is single-threaded (checked just above), so the child gets
    // a consistent copy of every lock and may call any function. The child never
    // returns from this arm: it ends in `_exit` below.
    match unsafe { unistd::fork() }.map_err(ProcessError::Fork)? {
        ForkResult::Child => {
            // Child: from here on, this is another process with a copy of the memory.
            drop(report_r);
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            if unistd::getppid() != parent {
                // The parent died before the prctl: nobody will ever join us.
                exit_now(1);
            }
            let code = match panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(result) => result.exit_code(),
                Err(payload) => {
                    let msg = panic_message(&*payload);
                    let mut w = fs::File::from(report_w);
                    let _ = w.write_all(&msg.as_bytes()[..msg.len().min(4000)]);
                    1
                }
            };
            // Only the child's own output can be buffered here: the parent's was
            // flushed before the fork.
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            exit_now(code)
        }
        ForkResult::Parent { child } => {
            // Parent: close the write end, so only the child holds it.
            drop(report_w);
            Ok(Child {
                pid: child,
                pidfd: pidfd_open(child),
                report: Some(report_r),
                exit: None,
            })
        }
    }
}

impl Child {
    /// The child's process ID.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// `Process.exitcode`: `None` while it runs (or has not been reaped yet).
    pub fn exitcode(&self) -> Option<i32> {
        self.exit.as_ref().map(|e| e.code)
    }

    /// Wait for the child to end and reap it (`Process.join()`).
    pub fn join(&mut self) -> Result<Exit, ProcessError> {
        loop {
            if let Some(exit) = &self.exit {
                return Ok(exit.clone());
            }
            match waitpid(self.pid, None) {
                Ok(status) => self.record(status),
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(ProcessError::Sys {
                        call: "waitpid",
                        errno,
                    });
                }
            }
        }
    }

    /// `Process.join(timeout)`: `Some(exit)` if the child ended in time, `None` if it
    /// is still running (it is left running: see [`Child::join_or_kill`]).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_reap()? {
                return Ok(self.exit.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => wait_readable(fd, left),
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
    }

    /// The watchdog: join within `timeout`, or kill the child with SIGKILL, reap it,
    /// and say so. This is how a lesson demonstrates a hang without hanging.
    pub fn join_or_kill(&mut self, timeout: Duration) -> Result<Joined, ProcessError> {
        if let Some(exit) = self.join_timeout(timeout)? {
            return Ok(Joined::Finished(exit));
        }
        self.kill()?;
        Ok(Joined::Killed(self.join()?))
    }

    /// `Process.is_alive()`. Like Python, a finished child is reaped by asking.
    pub fn is_alive(&mut self) -> Result<bool, ProcessError> {
        Ok(!self.try_reap()?)
    }

    /// `Process.terminate()`: send SIGTERM (no-op once the child is reaped).
    pub fn terminate(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGTERM)
    }

    /// `Process.kill()`: send SIGKILL (no-op once the child is reaped).
    pub fn kill(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&mut self, sig: Signal) -> Result<(), ProcessError> {
        // Until we reap it, the PID stays ours (a zombie keeps it), so this cannot hit
        // an unrelated process that recycled the number.
        if self.exit.is_some() {
            return Ok(());
        }
        match signal::kill(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ProcessError::Sys {
                call: "kill",
                errno,
            }),
        }
    }

    /// Reap without blocking; true once the child has ended.
    fn try_reap(&mut self) -> Result<bool, ProcessError> {
        if self.exit.is_some() {
            return Ok(true);
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Ok(false),
            Ok(status) => {
                self.record(status);
                Ok(self.exit.is_some())
            }
            Err(errno) => Err(ProcessError::Sys {
                call: "waitpid",
                errno,
            }),
        }
    }

    fn record(&mut self, status: WaitStatus) {
        let Some(mut exit) = Exit::from_status(status) else {
            return;
        };
        if let Some(fd) = self.report.take() {
            // Non-blocking read: the child wrote before it died, so whatever it said is
            // in the pipe now; a grandchild holding the write end cannot make us wait.
            let mut msg = String::new();
            let _ = fs::File::from(fd).read_to_string(&mut msg);
            if !msg.is_empty() {
                exit.panic = Some(msg);
            }
        }
        self.pidfd = None;
        self.exit = Some(exit);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
            let _ = self.join();
        }
    }
}

/// What [`Child::join_or_kill`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The child ended on its own within the timeout.
    Finished(Exit),
    /// The timeout passed: the child was killed with SIGKILL and reaped.
    Killed(Exit),
}

/// How many threads this process runs now (`Threads:` in `/proc/self/status`).
pub fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// A thread that was just joined may still be listed for a moment while the kernel
/// finishes its exit; give it up to 100 ms before calling the process multithreaded.
fn wait_until_single_threaded() -> usize {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        let n = thread_count();
        if n <= 1 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The children of this process that still exist, live or zombie: `(pid, state)`
/// from `/proc/*/stat`, where state `Z` is a zombie.
pub fn children_left() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may contain spaces and parens).
            let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = rest.next()?.chars().next()?;
            let ppid: i32 = rest.next()?.parse().ok()?;
            (ppid == me).then_some((pid, state))
        })
        .collect()
}

/// The file descriptors this process has open now (from `/proc/self/fd`).
pub fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The listing itself used one fd, closed by now: keep only those still open.
    fds.retain(|&fd| nix::fcntl::fcntl(probe_fd(fd), nix::fcntl::F_GETFD).is_ok());
    fds.sort_unstable();
    fds
}

fn probe_fd(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for an F_GETFD probe, which is harmless on a closed or
    // reused fd (it reports EBADF or the flags); nothing is read, written or closed.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // The pidfd is CLOEXEC by default, but fork copies it into later children too:
    // harmless, they never read it, and it closes when they `_exit`.
    // SAFETY: a non-negative return is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, and the count says one.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// `_exit(2)`: end this process now, without flushing stdio buffers, running
/// destructors or `atexit` handlers (those belong to the parent's copy).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an int and never returns; it is async-signal-safe.
    unsafe { libc::_exit(code) }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
