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
//! child "can safely call only async-signal-safe functions"). The kernel is asked
//! with `unshare(CLONE_THREAD)`, which fails with EINVAL in a multithreaded
//! process and does nothing in a single-threaded one. Where a seccomp filter
//! forbids unshare(2), the threads are counted in `/proc/self/task` (one entry per
//! thread); without a readable /proc as well, `fork` refuses
//! ([`ProcessError::NoProc`]) rather than guess, and so do [`list_children`] and
//! [`list_open_fds`], which the "nothing left behind" checks use.
//!
//! **Signals go through a pidfd.** The kit signals a child through its pidfd
//! (pidfd_send_signal(2)), which names that process and no other, even once its PID
//! is free and reused. A PID alone would do only while the child is unreaped.
//!
//! **What one start does, and what it costs.** Measured with `cargo bench -p
//! start-methods` (2 CPUs, Linux 6.18), the kit's fork + join of a child that does
//! nothing costs about 1.2x a bare `fork` + `waitpid` (about 155 us against 127
//! us, most of both being the kernel copying page tables and tearing the child
//! down). Per start, in order:
//!
//! 1. ask whether other threads run: one `unshare(CLONE_THREAD)` (0.2 us);
//! 2. SIGCHLD: one `rt_sigaction` query (a second call only if it was ignored);
//! 3. flush stdout (stderr has no buffer);
//! 4. take a slot of shared memory for the child's start word and panic message
//!    (no system call: one arena per process, mapped once), then `fork`;
//! 5. child: `prctl(PR_SET_PDEATHSIG)`, `getppid`, one store to the start word,
//!    `getpid`, then the closure, then flush stdout;
//! 6. parent: `pidfd_open`, then the handshake: it looks at the start word,
//!    yielding the CPU in between (`sched_yield`), for up to 200 us, and only
//!    then sleeps on it with futex(2) (a sleep costs a wake-up: tens of
//!    microseconds on an idle virtual CPU, more than the child needs);
//! 7. join: `waitid` on the pidfd, the panic message (if any) read from the
//!    slot, which goes back to the arena, and one `close`.
//!
//! Until 2026-11-29 the kit counted `/proc/self/task` (`open`, two
//! `getdents64`, `close`) and opened a pipe per child for the start word and the
//! message (`pipe2`, a `write`, `read`s, two `close`s, and a wake-up on a pipe
//! event): 1.39-1.45x a bare fork then, 1.20-1.29x now. What the child still adds
//! is mostly page faults: fork copies no page-table entries of file-backed
//! mappings (Linux mm/memory.c, vma_needs_copy), so each page of code the child
//! runs first costs it a fault, and so does its first store to a page it shares
//! copy-on-write. Its stdout flush alone (std's code, and the lock's page) is
//! about 0.07x: 1.15-1.17x without it. It stays: without it, text the closure
//! printed without a newline would be lost.
//!
//! **SIGCHLD must not be ignored.** With SIGCHLD set to `SIG_IGN` (or
//! `SA_NOCLDWAIT`), the kernel reaps children itself: there is no exit code to join
//! and `waitpid` fails with ECHILD (sigaction(2), waitpid(2) NOTES). That setting is
//! inherited across execve from whoever started the program, so `fork` puts SIGCHLD
//! back to its default action before forking.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{self, ForkResult, Pid};

pub use crate::procfs::{children_left, list_children, list_open_fds, open_fds, thread_count};
use crate::report::Report;

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
    #[error("fork failed: {0}{hint}", hint = fork_hint(*.0))]
    Fork(Errno),
    /// A system call other than fork failed.
    #[error("{call} failed: {errno}")]
    Sys { call: &'static str, errno: Errno },
    /// No page of shared memory for the child's start word and panic message.
    #[error(
        "cannot map a page of shared memory for the child to report through: {0} \
         (the address-space limit, ulimit -v, is too low?)"
    )]
    ReportPage(Errno),
    /// Someone else reaped the child (a SIGCHLD handler calling `waitpid(-1)`,
    /// say): how it ended is lost.
    #[error(
        "child pid {pid} is no longer this process's child to wait for: someone \
         else reaped it (a SIGCHLD handler calling waitpid(-1)?), or this is a \
         forked copy of its parent; how it ended is unknown here"
    )]
    ReapedElsewhere { pid: i32 },
    /// `/proc` could not be read, so the kit cannot check what it must.
    #[error("{}", no_proc_text(path, why, error))]
    NoProc {
        path: &'static str,
        why: &'static str,
        // Not a `#[source]`: the message already says it, once.
        error: io::Error,
    },
    /// The child did not say it had started within [`START_TIMEOUT`] (stopped
    /// before it could, most likely); it was killed and reaped.
    #[error(
        "child pid {pid} did not start within {} s (stopped?); it was killed",
        START_TIMEOUT.as_secs()
    )]
    NotStarted { pid: i32 },
    /// SIGKILL did not end the child within [`KILL_GRACE`] (it sleeps
    /// uninterruptibly, in the kernel); it is left to be reaped by init.
    #[error(
        "child pid {pid} did not die within {} s of SIGKILL",
        KILL_GRACE.as_secs()
    )]
    Unkillable { pid: i32 },
    /// [`Child::join_within`]: the child did not end in time (stuck, or stopped
    /// with SIGSTOP); it was killed and reaped.
    #[error(
        "child pid {pid} did not end within {} (stopped or stuck); it was killed",
        crate::timeline::fmt_duration(*patience)
    )]
    Stuck { pid: i32, patience: Duration },
}

/// [`fork_hint`] for an `io::Error` (spawn's, or the fork server's).
pub(crate) fn fork_hint_io(error: &std::io::Error) -> &'static str {
    error
        .raw_os_error()
        .map_or("", |e| fork_hint(Errno::from_raw(e)))
}

/// What a fork errno most likely means, for the error line (fork(2), ERRORS).
fn fork_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EAGAIN => " (the limit on processes reached: ulimit -u, or a cgroup's pids.max?)",
        Errno::ENOMEM => " (out of memory?)",
        _ => "",
    }
}

/// An unreadable /proc, in words that name the real cause: an fd limit is not a
/// missing procfs.
fn no_proc_text(path: &str, why: &str, error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => format!(
            "cannot open {path}: {error}; the open-file limit (ulimit -n) is too low \
             to {why}"
        ),
        _ => format!("cannot read {path}: {error}; the kit needs /proc (procfs) to {why}"),
    }
}

/// How long [`fork`] waits for the child to say it is protected by its
/// parent-death signal (a fresh child needs microseconds).
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`fork`] looks again and again (yielding the CPU in between) at the
/// child's start word before it sleeps on it with futex(2) for the rest of
/// [`START_TIMEOUT`].
const START_SPIN: Duration = Duration::from_micros(200);

/// How long the kit waits for a child it sent SIGKILL to die (normally
/// microseconds; longer only in uninterruptible sleep).
pub const KILL_GRACE: Duration = Duration::from_secs(5);

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
                // One write, so that lines from several children never interleave.
                let line = format!("error in child process {}: {e}\n", std::process::id());
                let _ = io::stderr().lock().write_all(line.as_bytes());
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
    /// The panic message, when the child's closure panicked (empty for
    /// `panic!("")`).
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
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exitcode {}", self.code)?;
        if let Some(sig) = self.signal() {
            write!(f, " (killed by {sig})")?;
        }
        match self.panic.as_deref() {
            Some("") => write!(f, " (panicked)")?,
            Some(msg) => write!(f, " (panicked: {msg})")?,
            None => {}
        }
        Ok(())
    }
}

/// A forked child. Join it to learn its [`Exit`].
///
/// **Drop:** a child that was never joined is killed with SIGKILL and then reaped,
/// so no zombie and no orphan outlives its handle (a lesson that fails half way
/// leaves nothing behind). Join it first if it must finish its work. Drop waits
/// at most [`KILL_GRACE`] for the killed child to die.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    /// A pidfd (Linux 5.3+), opened while the child was surely unreaped, so it
    /// names this child for good: signals and waits go through it, and it becomes
    /// readable when the child exits (`join_timeout` sleeps on it).
    pidfd: Option<OwnedFd>,
    /// The child's slot of shared memory (its start word and panic message),
    /// until it is reaped. `None` for [`Child::from_spawned`].
    report: Option<Report>,
    exit: Option<Exit>,
    /// waitid said it is not our child (ECHILD): never signal or wait again.
    lost: bool,
}

/// Fork a child process that runs `f`, then ends with `_exit`.
///
/// Before the fork, stdout and stderr are flushed (and SIGCHLD is put back to its
/// default action if it was ignored: module docs). In the child: the parent-death
/// signal is set to SIGKILL (if the parent dies, the child does not live on as an
/// orphan), `f` runs under `catch_unwind`, stdout and stderr are flushed, and the
/// child calls `_exit` with the code [`ChildResult`] gives: it never returns into the
/// parent's code and runs none of the parent's destructors.
///
/// **The parent-death signal, and its one window.** PR_SET_PDEATHSIG(2const) can
/// only be set by the child, after the fork. So `fork` does not return until the
/// child has set it and said so in shared memory (the first thing the child does): once
/// `fork` returns `Ok`, the child dies with its parent, however the parent ends.
/// The wait is short: the parent asks again and again for up to 200 us, yielding
/// the CPU, before it sleeps on the word (futex(2)). A child that does not say so within
/// [`START_TIMEOUT`] (stopped by SIGSTOP before it could) is killed and reaped,
/// and `fork` returns [`ProcessError::NotStarted`]. What remains: if the parent is
/// itself killed *during* that wait while the child is stopped before its prctl,
/// the child stays, stopped, as an orphan, until someone sends it SIGCONT (it then
/// sees its parent gone and exits) or SIGKILL. When the parent's death leaves the
/// child's process group orphaned (the usual case for a job an interactive shell
/// started), the kernel itself sends the group SIGHUP and SIGCONT, which ends the
/// child either way (exit(3), setpgid(2): "orphaned process group"). Nothing closes
/// the window further: no fork flag sets the signal, and a stopped child runs no
/// code.
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
    let threads = wait_until_single_threaded()?;
    if threads > 1 {
        return Err(ProcessError::MultiThreaded { threads });
    }
    keep_children_joinable()?;
    // Whatever sits in stdout's buffer now would be copied into the child and
    // written twice: once by each process. (Rust's stderr has no buffer: "This
    // handle is not buffered", `std::io::stderr`.)
    let _ = io::stdout().flush();

    let parent = unistd::getpid();
    // The child's slot of shared memory: its start word and panic message.
    let report = Report::new().map_err(ProcessError::ReportPage)?;

    // SAFETY: the process is single-threaded (checked just above), so the child gets
    // a consistent copy of every lock and may call any function. The child never
    // returns from this arm: it ends in `_exit` below.
    match unsafe { unistd::fork() }.map_err(ProcessError::Fork)? {
        ForkResult::Child => {
            // Child: from here on, this is another process with a copy of the memory.
            // First what the parent waits for, so that it waits as little as can be.
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let ppid = unistd::getppid();
            // 0: the parent is outside our PID namespace (it unshared
            // CLONE_NEWPID before forking us), where we cannot name it.
            if ppid != parent && ppid.as_raw() != 0 {
                // The parent died before the prctl: nobody will ever join us.
                exit_now(1);
            }
            // Tell the parent we are protected now: one store into shared memory
            // (and a futex wake if the parent went to sleep on it).
            report.say_started();
            // A copy that the closure forks by hand comes back here too; only
            // this process may write into the slot (report.rs, "Whose message").
            // (unistd::getpid, not std::process::id: libc's getpid sits beside
            // its fork, whose code this child has paged in already.)
            let me = unistd::getpid();
            let code = match panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(result) => result.exit_code(),
                Err(payload) => {
                    if unistd::getpid() == me {
                        report.write_message(&panic_message(&*payload));
                    }
                    1
                }
            };
            // Only the child's own output can be buffered here: the parent's was
            // flushed before the fork (and stderr has no buffer). The result is
            // forgotten, not dropped: nothing is freed before `_exit` anyway, and
            // its drop code would cost this child a page fault to load.
            std::mem::forget(io::stdout().flush());
            // `report` is not dropped: its slot is the parent's to give back.
            exit_now(code)
        }
        ForkResult::Parent { child } => {
            let mut child = Child {
                pid: child,
                pidfd: pidfd_open(child),
                report: Some(report),
                exit: None,
                lost: false,
            };
            child.await_start()?;
            Ok(child)
        }
    }
}

impl Child {
    /// The child's process ID.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Wrap a child this process started some other way (`std::process::Command`,
    /// or a raw `fork`): join, kill and drop then work as for [`fork`]'s children.
    /// `pid` must be a child of this process that nobody has reaped yet, so that
    /// the pidfd opened here names it and no other process. Such a child has no
    /// report slot: its [`Exit`] never carries a panic message.
    pub fn from_spawned(pid: i32) -> Child {
        let pid = Pid::from_raw(pid);
        Child {
            pid,
            pidfd: pidfd_open(pid),
            report: None,
            exit: None,
            lost: false,
        }
    }

    /// The child's pidfd while it is unreaped (none on kernels before 5.3): it
    /// becomes readable when the child ends, so a caller can poll it beside other
    /// fds.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// `Process.exitcode`: `None` while it runs (or has not been reaped yet).
    pub fn exitcode(&self) -> Option<i32> {
        self.exit.as_ref().map(|e| e.code)
    }

    /// Wait for the child to end and reap it (`Process.join()`).
    pub fn join(&mut self) -> Result<Exit, ProcessError> {
        while self.exit.is_none() {
            self.reap(true)?;
        }
        Ok(self.exit.clone().expect("reaped"))
    }

    /// `Process.join(timeout)`: `Some(exit)` if the child ended in time, `None` if it
    /// is still running (it is left running: see [`Child::join_or_kill`]).
    ///
    /// Like Python's, the timeout runs on the monotonic clock: time this program
    /// spends stopped (Ctrl-Z) counts. The kit's own bounds leave such time out:
    /// [`Child::join_or_kill`], [`Child::join_within`] and the start's
    /// [`START_TIMEOUT`] (and the same calls of spawn and forkserver children).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, ProcessError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.join().map(Some); // a timeout past any clock: no timeout
        };
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
    /// and say so. This is how a lesson demonstrates a hang without hanging. Returns
    /// within `timeout` plus at most [`KILL_GRACE`] (a stopped child dies of SIGKILL
    /// too; one that does not is [`ProcessError::Unkillable`]).
    ///
    /// The bound is the lesson's, on a peer: time this program spends stopped
    /// (Ctrl-Z of the whole job, then `fg`) is left out ([`Deadline`]).
    pub fn join_or_kill(&mut self, timeout: Duration) -> Result<Joined, ProcessError> {
        let mut deadline = Deadline::after(timeout);
        loop {
            if let Some(exit) = self.join_timeout(deadline.slice())? {
                return Ok(Joined::Finished(exit));
            }
            if deadline.passed() {
                return Ok(Joined::Killed(self.kill_and_reap()?));
            }
        }
    }

    /// Whether the child is stopped now (SIGSTOP, SIGTSTP, or a tracer): it runs
    /// nothing until someone sends it SIGCONT, so whoever waits for it waits
    /// forever. SIGKILL still ends it.
    pub fn is_stopped(&self) -> bool {
        self.exit.is_none()
            && !self.lost
            && matches!(crate::procfs::state_of(self.pid()), Some('T' | 't'))
    }

    /// `join`, bounded: the exit of a child that ends within `patience`, or, for
    /// one that does not (stuck, or stopped by SIGSTOP), kill it, reap it and
    /// return [`ProcessError::Stuck`]. What a lesson uses where the child should
    /// simply finish, so that no stopped peer can hold the lesson.
    pub fn join_within(&mut self, patience: Duration) -> Result<Exit, ProcessError> {
        match self.join_or_kill(patience)? {
            Joined::Finished(exit) => Ok(exit),
            Joined::Killed(_) => Err(ProcessError::Stuck {
                pid: self.pid(),
                patience,
            }),
        }
    }

    /// SIGKILL, then reap within [`KILL_GRACE`].
    fn kill_and_reap(&mut self) -> Result<Exit, ProcessError> {
        self.kill()?;
        self.join_timeout(KILL_GRACE)?
            .ok_or(ProcessError::Unkillable { pid: self.pid() })
    }

    /// Wait (at most [`START_TIMEOUT`]) for the child's word that its parent-death
    /// signal is set; kill and reap it if it does not come.
    fn await_start(&mut self) -> Result<(), ProcessError> {
        let Some(report) = &self.report else {
            return Ok(());
        };
        let start = Instant::now();
        let mut deadline = start + START_TIMEOUT;
        // When this loop last ran, and how long it meant to sleep since.
        let (mut last, mut slept) = (start, Duration::ZERO);
        loop {
            if report.started() {
                return Ok(());
            }
            let now = Instant::now();
            // A gap far longer than the sleep means this process was stopped
            // (Ctrl-Z, then fg, stops the child with it): that time is not the
            // child's to account for.
            let gap = (now - last).saturating_sub(slept);
            if gap > Duration::from_millis(100) {
                deadline += gap;
            }
            (last, slept) = (now, Duration::ZERO);
            if now - start < START_SPIN {
                // The word comes within microseconds: look again rather than
                // sleep, whose wake-up (another CPU, woken from idle) costs more
                // than the wait. sched_yield lets the child run first if it waits
                // for this CPU.
                // SAFETY: sched_yield takes no arguments.
                unsafe { libc::sched_yield() };
                continue;
            }
            if self.has_ended()? {
                // It ended before saying it (it saw its parent gone, or was
                // killed): `join` tells how.
                return Ok(());
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                self.kill_and_reap()?;
                return Err(ProcessError::NotStarted { pid: self.pid() });
            }
            // Woken by the child's word; every 10 ms, see whether it died.
            slept = left.min(Duration::from_millis(10));
            report.sleep_until_started(slept);
        }
    }

    /// Whether the child has ended, without reaping it (`WNOWAIT`).
    fn has_ended(&self) -> Result<bool, ProcessError> {
        // SAFETY: an all-zero siginfo_t is valid (si_pid 0 means "still running").
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waitid writes one siginfo_t into valid memory.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid.as_raw() as libc::id_t,
                &mut info,
                flags,
            )
        };
        match Errno::result(r) {
            // SAFETY: waitid filled in a SIGCHLD siginfo_t, or left it zeroed.
            Ok(_) => Ok(unsafe { info.si_pid() } != 0 && ended(&info)),
            Err(Errno::EINTR) => Ok(false),
            Err(errno) => Err(ProcessError::Sys {
                call: "waitid",
                errno,
            }),
        }
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
        if self.exit.is_some() || self.lost {
            return Ok(()); // reaped: its PID may name another process by now
        }
        let (call, result) = match &self.pidfd {
            // The pidfd names this process even if the kernel reaped it behind our
            // back and gave its PID to another (module docs): that gives ESRCH.
            Some(fd) => ("pidfd_send_signal", pidfd_send_signal(fd, sig)),
            // No pidfd (a kernel before 5.3): the PID, which stays ours until we
            // reap the child, as long as SIGCHLD is not ignored (`fork` sees to it).
            None => ("kill", signal::kill(self.pid, sig)),
        };
        match result {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ProcessError::Sys { call, errno }),
        }
    }

    /// Reap without blocking; true once the child has ended.
    fn try_reap(&mut self) -> Result<bool, ProcessError> {
        if self.exit.is_none() {
            self.reap(false)?;
        }
        Ok(self.exit.is_some())
    }

    /// waitid(2) for this child (blocking, or not): records its [`Exit`] once it
    /// has ended. Through the pidfd (`P_PIDFD`, Linux 5.4) when there is one, so
    /// even a PID the kernel reaped and reused cannot make us reap another child.
    fn reap(&mut self, block: bool) -> Result<(), ProcessError> {
        if self.lost {
            return Err(ProcessError::ReapedElsewhere { pid: self.pid() });
        }
        let (idtype, id) = match &self.pidfd {
            Some(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
            None => (libc::P_PID, self.pid.as_raw() as libc::id_t),
        };
        let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
        // SAFETY: an all-zero siginfo_t is valid (si_pid 0 means "still running").
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes one siginfo_t into valid memory.
        match Errno::result(unsafe { libc::waitid(idtype, id, &mut info, flags) }) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(()),
            // Linux 5.3 has pidfds but not P_PIDFD: use the PID from now on.
            Err(Errno::EINVAL) if idtype == libc::P_PIDFD => {
                self.pidfd = None;
                return Ok(());
            }
            // Not our child to wait for: reaped by someone else, or we are a
            // forked copy of its parent. Its slot goes back (dead or not, it
            // wrote nothing after its start word, or is not ours to account).
            Err(Errno::ECHILD) => {
                self.report = None;
                self.pidfd = None;
                self.lost = true;
                return Err(ProcessError::ReapedElsewhere { pid: self.pid() });
            }
            Err(errno) => {
                return Err(ProcessError::Sys {
                    call: "waitid",
                    errno,
                });
            }
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo_t, or left it zeroed.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 || !ended(&info) {
            return Ok(()); // WNOHANG, still running (or a ptrace stop)
        }
        // Python's exitcode: the status it chose, or -N for death by signal N.
        let code = if info.si_code == libc::CLD_EXITED {
            status
        } else {
            -status
        };
        // The child wrote its message before it died; once it is reaped nobody
        // writes to the slot, which goes back to the arena here. Lossy: the
        // message was cut at 4000 bytes, maybe inside a character.
        let panic = self.report.take().and_then(|r| r.message());
        let exit = Exit { code, panic };
        self.pidfd = None;
        self.exit = Some(exit);
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() && !self.lost {
            let _ = self.kill_and_reap();
        }
        if let Some(report) = self.report.take() {
            // Not reaped (it would not die): it may still write to its slot, which
            // must never go to another child.
            std::mem::forget(report);
        }
    }
}

/// Whether a `waitid` report is a death. A tracer (ptrace(2)) is also told of
/// its tracee's stops, even without `WSTOPPED` (Linux kernel/exit.c,
/// wait_task_stopped): such a child is alive.
fn ended(info: &libc::siginfo_t) -> bool {
    matches!(
        info.si_code,
        libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
    )
}

/// What [`Child::join_or_kill`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The child ended on its own within the timeout.
    Finished(Exit),
    /// The timeout passed: the child was killed with SIGKILL and reaped.
    Killed(Exit),
}

/// How many threads this process runs (1, or the count `/proc` gives). A thread
/// that was just joined may still be counted for a moment while the kernel
/// finishes its exit; give it up to 100 ms before calling the process
/// multithreaded.
fn wait_until_single_threaded() -> Result<usize, ProcessError> {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        let alone = match single_threaded() {
            Some(alone) => alone,
            None => thread_count()? <= 1,
        };
        if alone {
            return Ok(1);
        }
        if Instant::now() >= deadline {
            // For the message: how many /proc counts. If it counts one all the
            // same, unshare's EINVAL came from a seccomp filter, not the kernel's
            // check: the two read the same list of threads.
            return Ok(thread_count().unwrap_or(2));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether this process runs a single thread, asked of the kernel in one system
/// call: `unshare(CLONE_THREAD)` succeeds, and changes nothing, when the caller's
/// thread group holds no other thread, and fails with EINVAL when it does
/// (unshare(2), ERRORS: "CLONE_THREAD, CLONE_SIGHAND, or CLONE_VM was specified
/// in flags, and the caller is multithreaded"; Linux kernel/fork.c,
/// check_unshare_flags). About 0.2 us, where counting `/proc/self/task` costs 5 us
/// and more right after a fork. `None` where unshare(2) is not allowed (a
/// seccomp filter returning EPERM, as container runtimes' default profiles do):
/// the caller then counts `/proc/self/task`. A filter that *kills* on unshare(2)
/// (`SECCOMP_RET_KILL_PROCESS`, or systemd's `SystemCallFilter=` with a killing
/// default) ends the program at its first fork, with SIGSYS: nothing tells such a
/// filter apart before the call.
fn single_threaded() -> Option<bool> {
    // SAFETY: unshare(CLONE_THREAD) takes a flag word; in a single-threaded
    // process it has nothing to unshare and changes nothing.
    match Errno::result(unsafe { libc::unshare(libc::CLONE_THREAD) }) {
        Ok(_) => Some(true),
        Err(Errno::EINVAL) => Some(false),
        Err(_) => None,
    }
}

/// Put SIGCHLD back to a disposition under which children wait to be joined: not
/// `SIG_IGN`, no `SA_NOCLDWAIT` (module docs). A handler, if any, is kept. `fork`
/// calls it; a program that starts children another way (`std::process::Command`)
/// calls it first, or an inherited `SIG_IGN` reaps them before anyone can join.
pub fn keep_children_joinable() -> Result<(), ProcessError> {
    let sys = |errno| ProcessError::Sys {
        call: "sigaction",
        errno,
    };
    // SAFETY: a zeroed sigaction is a valid value to be overwritten; sigaction
    // with a null new action only reads the current one into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    Errno::result(unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) })
        .map_err(sys)?;
    if old.sa_sigaction != libc::SIG_IGN && old.sa_flags & libc::SA_NOCLDWAIT == 0 {
        return Ok(());
    }
    let mut new = old;
    if new.sa_sigaction == libc::SIG_IGN {
        new.sa_sigaction = libc::SIG_DFL;
    }
    new.sa_flags &= !libc::SA_NOCLDWAIT;
    // SAFETY: installs SIG_DFL or the handler that was already installed.
    Errno::result(unsafe { libc::sigaction(libc::SIGCHLD, &new, std::ptr::null_mut()) })
        .map_err(sys)?;
    Ok(())
}

pub(crate) fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // The pidfd is CLOEXEC by default, but fork copies it into later children too:
    // harmless, they never read it, and it closes when they `_exit`.
    // SAFETY: a non-negative return is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_send_signal(2): signal exactly the process the pidfd refers to.
pub(crate) fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> Result<(), Errno> {
    // SAFETY: the call takes an fd we own, a signal number, a null siginfo (the
    // kernel then fills in what kill(2) would) and flags 0; it touches no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
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

/// `now + timeout`, or a century from now for a timeout past any clock
/// (`Duration::MAX`, Python's `timeout=None`), where `Instant + Duration` would
/// panic with "overflow when adding duration to instant".
pub fn deadline_in(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A bound that does not count time this process spends stopped: Ctrl-Z stops
/// the whole job, the peer we wait for with it, and after `fg` the peer must not
/// be blamed for those minutes. What the kit and the lessons use for their own
/// bounds on a peer (a start's 5 s, "the workers are done within 10 s"), where
/// Python would wait forever; a caller's own timeout (`join_timeout`, Python's
/// `join(timeout)`) is plain monotonic time.
///
/// Wait in [`Deadline::slice`]s, so that it is looked at often. It remembers when
/// it was last looked at; a look that comes far later than the wait since then
/// explains (more than [`POLL_SLICE`] late: the process was stopped, or got no
/// CPU) moves the end on by that much.
///
/// Not `Copy`: a copy would not learn of the looks at the original, and would
/// take the time since then for a stop.
#[derive(Debug, Clone)]
pub struct Deadline {
    end: Instant,
    /// When it was last looked at, and how long the wait since then was meant
    /// to take.
    seen: Instant,
    slept: Duration,
}

impl Deadline {
    /// `timeout` from now (a century for a timeout past any clock).
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::at(deadline_in(timeout))
    }

    /// Ends at `end`, give or take the time this process spends stopped.
    pub fn at(end: Instant) -> Deadline {
        Deadline {
            end,
            seen: Instant::now(),
            slept: Duration::ZERO,
        }
    }

    /// What is left now, after moving the end past any gap since the last look.
    pub fn left(&mut self) -> Duration {
        let now = Instant::now();
        let late = (now - self.seen).saturating_sub(self.slept);
        if late > POLL_SLICE {
            self.end = self.end.checked_add(late).unwrap_or(self.end);
        }
        (self.seen, self.slept) = (now, Duration::ZERO);
        self.end.saturating_duration_since(now)
    }

    /// The next wait: what is left, but at most [`POLL_SLICE`] (zero once the
    /// end has passed). The caller waits that long, or less, then looks again.
    /// A look that comes far later than the slice (the process was stopped, or
    /// got no CPU) moves the end on by the overrun.
    pub fn slice(&mut self) -> Duration {
        let slice = self.left().min(POLL_SLICE);
        self.slept = slice;
        slice
    }

    /// Whether the end has passed (after moving it past any gap).
    pub fn passed(&mut self) -> bool {
        self.left().is_zero()
    }
}

/// The longest wait between two looks at a [`Deadline`].
pub const POLL_SLICE: Duration = Duration::from_millis(100);

/// `_exit(2)`: end this process now, without flushing stdio buffers, running
/// destructors or `atexit` handlers (those belong to the parent's copy).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an int and never returns; it is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_any_clock_is_a_century_away() {
        let far = deadline_in(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(99 * 365 * 24 * 3600));
        let near = deadline_in(Duration::from_millis(5));
        assert!(near <= Instant::now() + Duration::from_millis(5));
    }
}
