//! What `/proc` says about this process: how many threads it runs, which children
//! it still has (live or zombie), which file descriptors it holds open. The kit
//! uses these to refuse a fork beside a running thread and to check that a lesson
//! left nothing behind (proc(5): `/proc/[pid]/status`, `/proc/[pid]/stat`,
//! `/proc/[pid]/fd`).
//!
//! Every function here fails closed: when /proc cannot be read (not mounted, or the
//! procfs of another PID namespace) it returns [`ProcessError::NoProc`], never a
//! reassuring "1 thread" or an empty list.

use std::fs;
use std::io;

use crate::process::ProcessError;

/// How many threads this process runs now (`Threads:` in `/proc/self/status`).
pub fn thread_count() -> Result<usize, ProcessError> {
    let path = "/proc/self/status";
    let no_proc = |error| ProcessError::NoProc {
        path,
        why: "count this process's threads before a fork",
        error,
    };
    fs::read_to_string(path)
        .map_err(no_proc)?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| no_proc(io::Error::other("no Threads: line")))
}

/// The children of this process that still exist, live or zombie: `(pid, state)`
/// from `/proc/*/stat`, where state `Z` is a zombie. An error, never an empty
/// list, when /proc cannot be read (not mounted, or not this PID namespace's).
pub fn list_children() -> Result<Vec<(i32, char)>, ProcessError> {
    let no_proc = |error| ProcessError::NoProc {
        path: "/proc",
        why: "list this process's children",
        error,
    };
    let me = std::process::id() as i32;
    let pids: Vec<i32> = fs::read_dir("/proc")
        .map_err(no_proc)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect();
    if !pids.contains(&me) {
        // An empty directory, or another namespace's procfs: we did not look.
        return Err(no_proc(io::Error::other(
            "this process is not listed there",
        )));
    }
    Ok(pids
        .into_iter()
        .filter_map(|pid| {
            let (state, ppid) = state_and_parent(pid)?;
            (ppid == me).then_some((pid, state))
        })
        .collect())
}

/// A process's state letter from `/proc/<pid>/stat` (proc(5): `R` running, `S`
/// sleeping, `T` stopped by a signal, `t` stopped by a tracer, `Z` zombie, ...),
/// or `None` when it is gone (or /proc cannot tell).
pub fn state_of(pid: i32) -> Option<char> {
    state_and_parent(pid).map(|(state, _)| state)
}

/// The parent's PID of process `pid` (`None` once it is gone).
pub fn parent_of(pid: i32) -> Option<i32> {
    state_and_parent(pid).map(|(_, ppid)| ppid)
}

fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces and parens).
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid: i32 = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The file descriptors this process has open now (from `/proc/self/fd`); an
/// error, never an empty list, when /proc cannot be read.
pub fn list_open_fds() -> Result<Vec<i32>, ProcessError> {
    let mut fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map_err(|error| ProcessError::NoProc {
            path: "/proc/self/fd",
            why: "list this process's open files",
            error,
        })?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing itself used one fd, closed by now: keep only those still open.
    fds.retain(|&fd| nix::fcntl::fcntl(probe_fd(fd), nix::fcntl::F_GETFD).is_ok());
    fds.sort_unstable();
    Ok(fds)
}

/// [`list_children`] for tests: panics (the test fails) if /proc cannot be read.
#[track_caller]
pub fn children_left() -> Vec<(i32, char)> {
    list_children().unwrap_or_else(|e| panic!("{e}"))
}

/// [`list_open_fds`] for tests: panics (the test fails) if /proc cannot be read.
#[track_caller]
pub fn open_fds() -> Vec<i32> {
    list_open_fds().unwrap_or_else(|e| panic!("{e}"))
}

fn probe_fd(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for an F_GETFD probe, which is harmless on a closed or
    // reused fd (it reports EBADF or the flags); nothing is read, written or closed.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
