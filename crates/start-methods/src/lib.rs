//! The functions the start-methods lesson runs in its children, and the one call
//! that starts a child by any of the three methods. They live in the library so
//! that the lesson and its benchmark (`benches/start.rs`) register the same ones.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering::SeqCst};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use common::forkserver::ForkServer;
use common::process::{Child, exit_now};
use common::spawn::{self, Func, Registry};
use common::{Exit, ProcessError, fork};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A global, like a module-level variable in Python. 0 at program start; `main`
/// sets it to 1 before it starts the fork server and to 2 after.
pub static GLOBAL: AtomicI64 = AtomicI64::new(0);

/// The PID of the process in which the top of `main` (above the entry hook) ran.
pub static MAIN_TOP: AtomicI32 = AtomicI32::new(0);

/// The lock a thread of the parent holds while the parent starts children.
pub static LOCK: Mutex<()> = Mutex::new(());

/// The line above the entry hook in `main`: it runs in every process that runs
/// `main` from the top (the parent, and every spawned child).
pub fn note_main_top() {
    MAIN_TOP.store(std::process::id() as i32, SeqCst);
}

/// Which file the parent has open, so a child can tell whether it has it too.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct OpenFile {
    pub fd: i32,
    pub dev: u64,
    pub ino: u64,
}

impl OpenFile {
    pub fn of(file: &File) -> Result<OpenFile> {
        let meta = file.metadata()?;
        use std::os::unix::fs::MetadataExt;
        Ok(OpenFile {
            fd: file.as_raw_fd(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What a child saw of its parent's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub pid: i32,
    pub global: i64,
    /// Whether the top of `main` ran in this very process.
    pub main_top_ran_here: bool,
    pub has_file: bool,
    pub threads: usize,
}

/// Child: report what this process inherited.
pub fn inherited(file: OpenFile) -> Seen {
    let pid = std::process::id() as i32;
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into valid memory; on an fd that is not open
    // it fails with EBADF.
    let open = unsafe { libc::fstat(file.fd, &mut st) } == 0;
    Seen {
        pid,
        global: GLOBAL.load(SeqCst),
        main_top_ran_here: MAIN_TOP.load(SeqCst) == pid,
        has_file: open && st.st_dev == file.dev && st.st_ino == file.ino,
        threads: common::process::thread_count().unwrap_or(0),
    }
}

/// Child: try to take [`LOCK`] for `ms` milliseconds; whether it got it.
pub fn take_lock(ms: u64) -> bool {
    try_lock_for(Duration::from_millis(ms))
}

/// `try_lock` in a loop until a deadline: a bounded wait, and async-signal-safe
/// enough for a child forked beside other threads (an atomic compare-exchange,
/// clock_gettime and nanosleep; no allocation).
pub fn try_lock_for(patience: Duration) -> bool {
    // Time this process spends stopped (Ctrl-Z) is left out: see `Deadline`.
    let mut deadline = common::process::Deadline::after(patience);
    loop {
        if LOCK.try_lock().is_ok() {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Child: nothing at all (for measuring the start itself).
pub fn nothing(_: ()) {}

pub static INHERITED: Func<OpenFile, Seen> = Func::new("inherited", inherited);
pub static TAKE_LOCK: Func<u64, bool> = Func::new("take_lock", take_lock);
pub static NOTHING: Func<(), ()> = Func::new("nothing", nothing);

/// Every function a spawned or forkserver child of this program may run.
pub static TARGETS: Registry = &[&INHERITED, &TAKE_LOCK, &NOTHING];

/// Python's three start methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Fork,
    Spawn,
    Forkserver,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Fork, Method::Spawn, Method::Forkserver];

    pub fn name(self) -> &'static str {
        match self {
            Method::Fork => "fork",
            Method::Spawn => "spawn",
            Method::Forkserver => "forkserver",
        }
    }
}

/// Start `func(arg)` in a child by `method`, join it (within `patience`), and
/// return how it ended and what it returned.
pub fn run_in_child<A, R>(
    method: Method,
    server: &ForkServer,
    func: &'static Func<A, R>,
    arg: A,
    patience: Duration,
) -> Result<(Exit, Option<R>)>
where
    A: Serialize + Copy,
    R: Serialize + DeserializeOwned,
{
    let outcome = match method {
        Method::Fork => return fork_call(func, arg, patience),
        Method::Spawn => spawn::start(func, &arg)?.join_within(patience)?,
        Method::Forkserver => server.start(func, &arg)?.join_within(patience)?,
    };
    Ok((outcome.exit, outcome.value))
}

/// fork: the child calls the function on its copy of memory and writes the result
/// on a pipe (nothing to decode on its side: the argument is a copy already).
fn fork_call<A, R>(
    func: &'static Func<A, R>,
    arg: A,
    patience: Duration,
) -> Result<(Exit, Option<R>)>
where
    R: Serialize + DeserializeOwned,
{
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let f = func.func();
    // `move`: the write end goes to the child; fork drops the parent's copy.
    let mut child = fork(move || -> Result<()> {
        // Child: run, and hand the result back (small: it fits in the pipe).
        let bytes = postcard::to_stdvec(&f(arg))?;
        nix::unistd::write(&w, &bytes)?;
        Ok(())
    })
    .context("fork")?;
    let exit = child.join_within(patience)?;
    let mut bytes = Vec::new();
    File::from(r).read_to_end(&mut bytes)?;
    if !exit.success() {
        return Ok((exit, None));
    }
    let value = postcard::from_bytes(&bytes).context("decoding the child's result")?;
    Ok((exit, Some(value)))
}

/// A raw fork(2) beside a thread that holds [`LOCK`] (the kit refuses such a
/// fork): the child tries the lock for `patience` and exits 3 if it never gets
/// it; the parent waits at most `bound` for it.
pub fn raw_fork_that_takes_the_lock(patience: Duration, bound: Duration) -> Result<Exit> {
    let _ = std::io::stdout().flush(); // nothing buffered gets copied
    let parent = nix::unistd::getpid();
    // Another thread runs, so the child may call only async-signal-safe functions
    // (fork(2)): prctl, getppid, and `try_lock_for` (a compare-exchange, clock_gettime,
    // nanosleep; no allocation, no lock another thread could hold).
    // SAFETY: that is all the child does; it ends in `_exit`, never returning.
    match unsafe { nix::unistd::fork() }.map_err(|e| anyhow!("raw fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            // Child: one thread (ours), and a copy of LOCK, held by a thread that
            // does not exist here.
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; no memory.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            if nix::unistd::getppid() != parent {
                exit_now(1);
            }
            exit_now(if try_lock_for(patience) { 0 } else { 3 })
        }
        nix::unistd::ForkResult::Parent { child } => {
            // Parent: the watchdog bounds the wait even if the child is stopped.
            let mut child = Child::from_spawned(child.as_raw());
            Ok(child.join_within(bound)?)
        }
    }
}

/// An error unless the child `who` ended with one of the `expected` exit codes: a
/// child killed by a signal (from outside: `kill -9`, the OOM killer) or ending
/// some other way means the lesson could not run, which is not a failed claim.
pub fn expect_exit(who: &str, exit: &Exit, expected: &[i32]) -> Result<()> {
    if !expected.contains(&exit.code) {
        let codes: Vec<String> = expected.iter().map(i32::to_string).collect();
        bail!(
            "{who} ended with {exit}, not exitcode {}: was it killed from outside?",
            codes.join(" or ")
        );
    }
    Ok(())
}

/// What step 3 of the lesson saw.
#[derive(Debug)]
pub struct HeldLock {
    /// The kit's refusal (`None`: it forked).
    pub refused: Option<String>,
    pub forked: Exit,
    pub spawn: (Exit, Option<bool>),
    pub forkserver: (Exit, Option<bool>),
}

/// The children of step 3, started while a thread holds [`LOCK`]: `common::fork`
/// (refused), a raw fork, spawn and forkserver; each tries the lock for `patience`.
/// A child killed from outside (or ending with a code none of them chooses) is an
/// error.
pub fn children_beside_the_holder(
    server: &ForkServer,
    patience: Duration,
    bound: Duration,
) -> Result<HeldLock> {
    let refused = match fork(|| 0) {
        Err(e @ ProcessError::MultiThreaded { .. }) => Some(e.to_string()),
        Err(e) => return Err(anyhow!("common::fork beside the holder: {e}")),
        Ok(mut child) => {
            child.join_within(bound)?; // it forked after all: the claim fails
            None
        }
    };
    let forked = raw_fork_that_takes_the_lock(patience, bound)?;
    // 3: never got the lock (the point); 0: got it (a failed claim).
    expect_exit("the raw-forked child", &forked, &[0, 3])?;
    let ms = patience.as_millis() as u64;
    let spawn = run_in_child(Method::Spawn, server, &TAKE_LOCK, ms, bound)?;
    expect_exit("the spawned child", &spawn.0, &[0])?;
    let forkserver = run_in_child(Method::Forkserver, server, &TAKE_LOCK, ms, bound)?;
    expect_exit("the forkserver child", &forkserver.0, &[0])?;
    Ok(HeldLock {
        refused,
        forked,
        spawn,
        forkserver,
    })
}

/// "yes" or "no", the way the table and the checks show a bool.
pub fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Three values, one per method, as `a, b, c`.
pub fn three<T: std::fmt::Display>(v: [T; 3]) -> String {
    format!("{}, {}, {}", v[0], v[1], v[2])
}
