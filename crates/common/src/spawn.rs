//! Start a child by *spawn*: a fresh process image of this same program, which runs
//! one function and ends. `multiprocessing.get_context("spawn")` on Linux.
//!
//! Python's spawn starts a new interpreter with `--multiprocessing-fork` on its
//! command line (`Lib/multiprocessing/spawn.py`); the child imports the main
//! module again, unpickles the target and its arguments from a pipe, runs it and
//! exits. Here: `/proc/self/exe` (this very binary, even if the file on disk was
//! replaced since) is started through `std::process::Command` with
//! `--multiprocessing-fork <name> <parent pid>` and one end of a socket pair as its
//! stdin; it re-enters `main`, whose first line is [`child_entry`], the Rust
//! counterpart of `if __name__ == "__main__":`. That hook sees the marker, sets
//! its parent-death signal, checks that its parent is the one named, moves the
//! socket off fd 0 and puts /dev/null there (Python's children read stdin from
//! /dev/null too), says "started" on the socket, runs the function registered
//! under `<name>` with the argument it reads from the socket (serde + postcard),
//! writes the result back and ends with `_exit`. In the parent, `child_entry` just
//! records the registry and returns. Everything above the hook in `main` runs
//! again in every child.
//!
//! **How the function crosses the exec.** Python pickles a function by reference,
//! as its module and name. Here it is a name too: a [`Func`] pairs a name with a
//! `fn`, and the child finds the name in the registry its own `main` passed to
//! `child_entry`. An address would not do: the executable is position-independent
//! and ASLR loads it at another base in every process. An offset from a known
//! symbol would work for the same binary (the procspawn crate does that), but a
//! wrong offset is a jump into anything, while a name missing from the registry is
//! a clear error.
//!
//! **Exit codes** are those of [`crate::process`]: 0 when the function returns, the
//! code it chose (it calls [`crate::process::exit_now`], like Python's
//! `sys.exit(n)`), 1 for a panic (its message comes back in [`Exit::panic`]), `-N`
//! for death by signal N.
//!
//! **Parent death.** The child sets PR_SET_PDEATHSIG(2const) to SIGKILL first
//! thing in [`child_entry`], then checks `getppid` against the parent's pid on its
//! command line (a parent that died before the prctl is not there to see), and
//! writes a start byte on the socket; [`start`] returns only once that byte has
//! come, so a spawned child never outlives the program, with the same one window
//! as [`crate::fork`]'s (a child stopped before its prctl while the parent is
//! killed; a child that does not start within [`START_TIMEOUT`] is killed and
//! `start` fails). The "parent" there is the *thread* that spawned it: spawn from
//! the main thread, or from one that lives as long as the child.
//!
//! **What a start costs.** Nothing runs in the child between fork and exec, so
//! std starts it with posix_spawn(3), which glibc implements with a vfork-like
//! clone (`CLONE_VM | CLONE_VFORK`): no copy of the parent's page tables, however
//! big the parent (a `pre_exec` hook would force fork + exec). The socket crosses
//! as the child's stdin, which posix_spawn sets with a dup2. What remains is the
//! exec of a dynamically linked Rust binary (loading libc, and libgcc_s.so.1 for
//! the unwinder, std's start-up), and one round trip for the start byte. An empty
//! `fn main() {}` exec'd and joined costs about 1.4x `Command::new("/bin/true")`
//! on a 2-CPU virtual machine, most of the difference being libgcc_s.so.1, whose
//! constructor probes the CPU with `cpuid` (a trap to the hypervisor). The
//! start-methods lesson links the unwinder statically instead (its `build.rs`):
//! there a spawn + join costs about 1.4x `/bin/true` (`cargo bench -p
//! start-methods`), against 1.5x with libgcc_s.so.1.
//!
//! ```no_run
//! use common::spawn::{Func, Registry, child_entry, start};
//! fn square(n: i64) -> i64 { n * n }
//! static SQUARE: Func<i64, i64> = Func::new("square", square);
//! static TARGETS: Registry = &[&SQUARE];
//!
//! fn main() {
//!     child_entry(TARGETS); // first: a spawned child never returns from it
//!     let mut child = start(&SQUARE, &7).unwrap();
//!     let outcome = child.join_within(std::time::Duration::from_secs(10)).unwrap();
//!     assert_eq!((outcome.exit.code, outcome.value), (0, Some(49)));
//! }
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::forkserver::ServerChild;
use crate::process::{
    Child, Deadline, Exit, KILL_GRACE, ProcessError, START_TIMEOUT, exit_now,
    keep_children_joinable, panic_message,
};

/// The argv marker of a spawned child, the flag Python's spawn uses too.
pub const MARKER: &str = "--multiprocessing-fork";

/// A function a child may run, known by the same name in every process of the
/// program. Declare it as a `static` and list it in the program's [`Registry`].
pub struct Func<A, R> {
    name: &'static str,
    f: fn(A) -> R,
}

impl<A, R> Func<A, R> {
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Func<A, R> {
        Func { name, f }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function itself, to call in this process (or in a forked child).
    pub fn func(&self) -> fn(A) -> R {
        self.f
    }
}

impl<A, R> fmt::Debug for Func<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Func({})", self.name)
    }
}

/// A [`Func`] with its types erased, as the registry holds it.
pub trait Target: Sync {
    fn name(&self) -> &'static str;
    /// Decode the argument, run the function, encode what it returned.
    fn call(&self, arg: &[u8]) -> Result<Vec<u8>, postcard::Error>;
}

impl<A: DeserializeOwned, R: Serialize> Target for Func<A, R> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn call(&self, arg: &[u8]) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(&(self.f)(postcard::from_bytes(arg)?))
    }
}

/// Every function a child of this program may run, by name.
pub type Registry = &'static [&'static dyn Target];

pub(crate) static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// What can go wrong when starting or joining a spawned or forkserver child.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(
        "cannot start {0}: the program must call common::spawn::child_entry(..) first in \
         main, with every function a child may run"
    )]
    NoEntry(&'static str),
    #[error("cannot start {0}: it is not in the registry given to child_entry")]
    NotRegistered(&'static str),
    #[error(
        "cannot start a forkserver child with the function at {0:#x}: it is not in the \
         executable's code, which is all the server is sure to share (a library loaded later?)"
    )]
    NotInExecutable(usize),
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: io::Error,
    },
    /// The kernel refused a new process (fork or spawn), with the likely cause.
    #[error("{what}: {error}{hint}", hint = crate::process::fork_hint_io(error))]
    NoProcess {
        what: &'static str,
        error: io::Error,
    },
    #[error("the fork server failed: {0}")]
    Server(&'static str),
    #[error("cannot decode what {name} returned: {error}")]
    Decode {
        name: &'static str,
        error: postcard::Error,
    },
}

/// What a child writes back on its socket before it ends.
#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The function's return value, encoded.
    Returned(Vec<u8>),
    /// It panicked (or its argument could not be decoded): the message.
    Raised(String),
}

/// The hook that goes FIRST in `main`: in a spawned child it runs the requested
/// function and ends the process (it never returns); in the parent it records the
/// registry and returns at once.
pub fn child_entry(registry: Registry) {
    let _ = REGISTRY.set(registry);
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(MARKER)) {
        return; // the parent: go on with main
    }
    // Child: a fresh image of the program; only the lines above the hook have run.
    let (name, parent) = (args.next(), args.next());
    let code = match child_request(registry, name.as_deref(), parent.as_deref()) {
        Ok((target, data)) => run_target(target, data),
        Err(why) => {
            eprintln!("error: spawned child {}: {why}", std::process::id());
            1
        }
    };
    let _ = io::stdout().flush();
    exit_now(code)
}

/// Child: protect ourselves with the parent-death signal, take the socket the
/// parent handed over as our stdin, and say we are started; which function to run.
fn child_request(
    registry: Registry,
    name: Option<&OsStr>,
    parent: Option<&OsStr>,
) -> Result<(&'static dyn Target, OwnedFd), String> {
    // First the parent-death signal (execve kept none: the parent set none).
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let parent: i32 = parent
        .and_then(OsStr::to_str)
        .and_then(|s| s.parse().ok())
        .ok_or("no parent pid")?;
    if nix::unistd::getppid().as_raw() != parent {
        // The parent died before the prctl (or this command line was typed by
        // hand): nobody waits for us, and stdin is not ours to take.
        return Err(format!("the parent, pid {parent}, is gone"));
    }
    let name = name.and_then(OsStr::to_str).ok_or("no function name")?;
    let target = find(registry, name).ok_or(format!("no function named {name}"))?;
    let data = take_stdin_socket()?;
    // Tell the parent we are protected now (`start` waits for this byte).
    nix::unistd::write(&data, &[STARTED]).map_err(|e| format!("the parent's socket: {e}"))?;
    Ok((target, data))
}

/// Child: the parent's socket arrives as fd 0. Move it to a descriptor of its own
/// (close-on-exec: our own children must not inherit it) and put /dev/null on
/// stdin, as Python does for its children. A standard stream is never left
/// closed, and anything on stdin but a socket is refused, untouched.
fn take_stdin_socket() -> Result<OwnedFd, String> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into valid memory; fd 0 may be closed (EBADF).
    let is_socket =
        unsafe { libc::fstat(0, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    if !is_socket {
        return Err("stdin is not the parent's socket".to_string());
    }
    // SAFETY: fd 0 is open (fstat said so); F_DUPFD_CLOEXEC makes a new fd, >= 3.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(format!(
            "cannot keep the socket: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd that nothing else owns: ours to own and close.
    let data = unsafe { OwnedFd::from_raw_fd(fd) };
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: dup2 onto fd 0 atomically replaces our copy of the socket there.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(format!("stdin: {}", io::Error::last_os_error()));
    }
    Ok(data)
}

/// What a spawned child writes on its socket once its parent-death signal is set.
const STARTED: u8 = b'+';

pub(crate) fn find(registry: Registry, name: &str) -> Option<&'static dyn Target> {
    registry.iter().copied().find(|t| t.name() == name)
}

/// Check, in the parent, that `name` will be found in the child.
pub(crate) fn registered(name: &'static str) -> Result<(), StartError> {
    let registry = REGISTRY.get().ok_or(StartError::NoEntry(name))?;
    find(registry, name)
        .map(drop)
        .ok_or(StartError::NotRegistered(name))
}

/// Child (spawn and forkserver alike): read the argument until the parent shuts
/// its side, run the function, write the [`Reply`]; the exit code to end with.
pub(crate) fn run_target(target: &dyn Target, data: OwnedFd) -> i32 {
    let mut sock = std::os::unix::net::UnixStream::from(data);
    // No timeout: a parent stopped with Ctrl-Z goes on after `fg`, one that
    // gives up kills us or closes the socket, and one that dies closes it.
    let mut arg = Vec::new();
    let read = sock.read_to_end(&mut arg);
    if read.is_ok() && parent_gave_up(&sock) {
        return 1; // nobody waits for this start: run nothing
    }
    let (reply, code) = match read {
        Err(e) => (Reply::Raised(format!("reading the argument: {e}")), 1),
        Ok(_) => match panic::catch_unwind(AssertUnwindSafe(|| target.call(&arg))) {
            Ok(Ok(bytes)) => (Reply::Returned(bytes), 0),
            Ok(Err(e)) => (Reply::Raised(format!("bad argument or result: {e}")), 1),
            Err(payload) => (Reply::Raised(panic_message(&*payload)), 1),
        },
    };
    if let Ok(bytes) = postcard::to_stdvec(&reply) {
        let _ = sock.write_all(&bytes); // the parent may be gone: nothing to do then
    }
    code
}

/// Whether the parent has closed its end of the socket altogether (POLLHUP), not
/// only its sending side (`shutdown(SHUT_WR)` after the argument, which gives end
/// of file too): then it gave up on this start (it returned an error, say after a
/// fork server that was stopped for longer than [`START_TIMEOUT`] forked us
/// late), and the function must not run.
fn parent_gave_up(sock: &std::os::unix::net::UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0: it only reports the socket's state.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLHUP != 0
}

/// Spawn a fresh copy of this program that runs `func(arg)`, and return once it
/// runs with its parent-death signal set and has the argument.
pub fn start<A: Serialize, R: DeserializeOwned>(
    func: &'static Func<A, R>,
    arg: &A,
) -> Result<Started<R>, StartError> {
    registered(func.name)?;
    keep_children_joinable()?;
    let (mine, theirs) = pair(SockType::Stream)?;
    let parent = std::process::id();
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0); // so `ps` shows the program's name, not `exe`
    }
    cmd.args([OsStr::new(MARKER), OsStr::new(func.name)])
        .arg(parent.to_string())
        // The child's end of the socket becomes its fd 0 (dup2 clears the
        // close-on-exec flag there, and only there). Nothing else is asked of the
        // child before exec, so std starts it with posix_spawn(3) (a vfork: no
        // copy of our page tables) instead of fork + exec.
        .stdin(Stdio::from(theirs));
    // spawn() returns once the exec has happened (or failed).
    let no_process = |error| StartError::NoProcess {
        what: "cannot spawn",
        error,
    };
    let pid = cmd.spawn().map_err(no_process)?.id() as i32;
    let waiter = Waiter::Own(Child::from_spawned(pid));
    let mut started = Started::new(func.name, pid, waiter, mine);
    started.send(arg)?;
    started.await_start()?;
    Ok(started)
}

/// A socket pair whose ends close on exec.
pub(crate) fn pair(ty: SockType) -> Result<(OwnedFd, OwnedFd), StartError> {
    socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|errno| ProcessError::Sys {
            call: "socketpair",
            errno,
        })
        .map_err(StartError::from)
}

/// How a child ended, and what its function returned (`None` when it did not
/// return: it chose an exit code, panicked, or was killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<R> {
    pub exit: Exit,
    pub value: Option<R>,
    /// The watchdog ([`Started::join_or_kill`]) killed it.
    pub killed: bool,
}

/// Who can tell how the child ended: this process (its parent, for spawn) or the
/// fork server (the parent of a forkserver child).
#[derive(Debug)]
pub(crate) enum Waiter {
    Own(Child),
    Server(ServerChild),
}

/// A child started by [`start`] or [`crate::forkserver::ForkServer::start`]. Join
/// it to learn its [`Outcome`]. Drop kills a child that was not joined.
#[derive(Debug)]
pub struct Started<R> {
    pid: i32,
    name: &'static str,
    waiter: Waiter,
    /// Our end of the socket to the child: the argument goes out, the reply in.
    data: OwnedFd,
    reply: Vec<u8>,
    reply_done: bool,
    exit: Option<Exit>,
    result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Started<R> {
    pub(crate) fn new(name: &'static str, pid: i32, waiter: Waiter, data: OwnedFd) -> Started<R> {
        Started {
            pid,
            name,
            waiter,
            data,
            reply: Vec::new(),
            reply_done: false,
            exit: None,
            result: PhantomData,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Send the argument and close our sending side (the child reads to the end),
    /// within [`START_TIMEOUT`]: a stopped child is killed rather than waited for.
    pub(crate) fn send<A: Serialize>(&mut self, arg: &A) -> Result<(), StartError> {
        let bytes = encode(self.name, arg)?;
        self.send_rest(&bytes, 0)
    }

    /// [`Started::send`] of an argument already encoded, of which the first
    /// `sent` bytes are in the socket already.
    pub(crate) fn send_rest(&mut self, bytes: &[u8], mut sent: usize) -> Result<(), StartError> {
        nix::fcntl::fcntl(
            &self.data,
            nix::fcntl::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|errno| ProcessError::Sys {
            call: "fcntl",
            errno,
        })?;
        let mut deadline = Deadline::after(START_TIMEOUT);
        while sent < bytes.len() {
            match nix::sys::socket::send(
                self.data.as_raw_fd(),
                &bytes[sent..],
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if poll_until(&[self.data.as_fd()], libc::POLLOUT, &mut deadline).is_none() {
                        self.kill();
                        return Err(ProcessError::NotStarted { pid: self.pid }.into());
                    }
                }
                // The child is gone already: join will tell how it ended.
                Err(_) => break,
            }
        }
        let _ =
            nix::sys::socket::shutdown(self.data.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        Ok(())
    }

    /// Spawn only: wait (at most [`START_TIMEOUT`]) for the child's word that its
    /// parent-death signal is set; kill it if the word does not come. End of file
    /// instead means the child ended first (join tells how).
    fn await_start(&mut self) -> Result<(), StartError> {
        let mut deadline = Deadline::after(START_TIMEOUT);
        loop {
            let mut byte = [0u8; 1];
            match nix::unistd::read(&self.data, &mut byte) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if poll_until(&[self.data.as_fd()], libc::POLLIN, &mut deadline).is_none() {
                        self.kill();
                        return Err(ProcessError::NotStarted { pid: self.pid }.into());
                    }
                }
                Err(_) => return Ok(()), // reset by a dying child: join tells how
            }
        }
    }

    /// `Process.join()` with a bound: the outcome of a child that ends within
    /// `patience`; one that does not (stuck, or stopped) is killed, reaped, and
    /// reported as [`ProcessError::Stuck`].
    pub fn join_within(&mut self, patience: Duration) -> Result<Outcome<R>, StartError> {
        let outcome = self.join_or_kill(patience)?;
        if outcome.killed {
            let pid = self.pid;
            return Err(ProcessError::Stuck { pid, patience }.into());
        }
        Ok(outcome)
    }

    /// The watchdog: join within `timeout`, or kill the child with SIGKILL, wait
    /// for its end (at most [`KILL_GRACE`]) and say so in [`Outcome::killed`].
    pub fn join_or_kill(&mut self, timeout: Duration) -> Result<Outcome<R>, StartError> {
        // A timeout past any clock (Duration::MAX) waits as long as it takes;
        // time this program spends stopped is left out (see `Deadline`).
        let killed = !self.wait_until(&mut Deadline::after(timeout))?;
        if killed {
            self.kill();
            if !self.wait_until(&mut Deadline::after(KILL_GRACE))? {
                return Err(ProcessError::Unkillable { pid: self.pid }.into());
            }
        }
        let mut exit = self.exit.clone().expect("ended");
        let reply = postcard::from_bytes::<Reply>(&self.reply).ok();
        let value = match reply {
            Some(Reply::Returned(bytes)) => Some(postcard::from_bytes(&bytes).map_err(
                |error| StartError::Decode {
                    name: self.name,
                    error,
                },
            )?),
            Some(Reply::Raised(msg)) => {
                exit.panic = Some(msg);
                None
            }
            None => None, // it ended without replying (exit code, or killed)
        };
        Ok(Outcome {
            exit,
            value,
            killed,
        })
    }

    /// `Process.kill()`: SIGKILL, through the pidfd (no-op once it has ended).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
    }

    /// `Process.terminate()`: SIGTERM.
    pub fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    fn signal(&mut self, sig: Signal) {
        match &mut self.waiter {
            Waiter::Own(child) => {
                let _ = match sig {
                    Signal::SIGKILL => child.kill(),
                    _ => child.terminate(),
                };
            }
            Waiter::Server(child) => child.signal(sig),
        }
    }

    /// Read the reply to its end and learn the exit, until `deadline`; true once
    /// both are done.
    fn wait_until(&mut self, deadline: &mut Deadline) -> Result<bool, StartError> {
        // The reply first: a child blocked writing a big reply ends only once we
        // read it (joining first would deadlock, as with Python's queues).
        while !self.reply_done {
            let mut buf = [0u8; 8192];
            match nix::unistd::read(&self.data, &mut buf) {
                Ok(0) => self.reply_done = true,
                Ok(n) => self.reply.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if poll_until(&[self.data.as_fd()], libc::POLLIN, deadline).is_none() {
                        return Ok(false);
                    }
                }
                Err(_) => self.reply_done = true, // reset by a dying child: no reply
            }
        }
        // Then the exit, in slices, so that a stop of this program is seen.
        while self.exit.is_none() {
            let slice = deadline.slice();
            self.exit = match &mut self.waiter {
                Waiter::Own(child) => child.join_timeout(slice)?,
                Waiter::Server(child) => child.exit_within(slice)?,
            };
            if self.exit.is_none() && deadline.passed() {
                break;
            }
        }
        Ok(self.exit.is_some())
    }
}

impl<R> Drop for Started<R> {
    fn drop(&mut self) {
        // Own children are killed and reaped by Child's Drop; the server reaps its own.
        if let Waiter::Server(child) = &mut self.waiter {
            if self.exit.is_none() {
                child.signal(Signal::SIGKILL);
            }
        }
    }
}

/// An argument as it crosses: postcard bytes.
pub(crate) fn encode<A: Serialize>(name: &'static str, arg: &A) -> Result<Vec<u8>, StartError> {
    postcard::to_stdvec(arg).map_err(|error| StartError::Decode { name, error })
}

/// Send what fits into the socket's buffer now, without waiting: how much.
pub(crate) fn send_what_fits(data: &OwnedFd, bytes: &[u8]) -> usize {
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    nix::sys::socket::send(data.as_raw_fd(), bytes, flags).unwrap_or(0)
}

/// poll(2) on `fds` for `events` until `deadline`: the index of a ready fd, or
/// `None` once the deadline has passed. The wait goes in slices of at most
/// [`POLL_SLICE`](crate::process::POLL_SLICE), so that a stop of this process is seen
/// ([`Deadline`]).
pub(crate) fn poll_until(
    fds: &[BorrowedFd<'_>],
    events: i16,
    deadline: &mut Deadline,
) -> Option<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    loop {
        let slice = deadline.slice();
        if slice.is_zero() {
            return None;
        }
        let ms = slice.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n > 0 {
            // Looked at now: the caller's own steps until its next wait count
            // from here.
            deadline.left();
            return pfds.iter().position(|p| p.revents != 0);
        }
    }
}
