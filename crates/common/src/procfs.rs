//! What `/proc` says about this process: how many threads it runs, which children
//! it still has (live or zombie), which file descriptors it holds open. The kit
//! uses these to refuse a fork beside a running thread and to check that a lesson
//! left nothing behind (proc(5): `/proc/[pid]/task`, `/proc/[pid]/stat`,
//! `/proc/[pid]/fd`).
//!
//! Every function here fails closed: when /proc cannot be read (not mounted, or the
//! procfs of another PID namespace) it returns [`ProcessError::NoProc`], never a
//! reassuring "1 thread" or an empty list.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::process::ProcessError;

/// How many threads this process runs now: the entries of `/proc/self/task`,
/// a directory with "one subdirectory for each thread in the process" (proc(5),
/// `/proc/[pid]/task`).
///
/// [`crate::fork`] asks the kernel with `unshare(CLONE_THREAD)` first and
/// counts here only where a seccomp filter forbids that (and for its refusal's
/// message), so this is the cheap way: one `open` and a `getdents64` into a
/// buffer on the stack, no allocation (about 5 us, where reading `Threads:` from
/// `/proc/self/status` costs about 18 us: the kernel formats some fifty lines for
/// it).
pub fn thread_count() -> Result<usize, ProcessError> {
    let path = "/proc/self/task";
    let no_proc = |error| ProcessError::NoProc {
        path,
        why: "count this process's threads before a fork",
        error,
    };
    // SAFETY: open takes a NUL-terminated path and flags; it returns a new fd
    // or -1.
    let fd = unsafe {
        libc::open(
            c"/proc/self/task".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(no_proc(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns: ours to close (on drop).
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut threads = 0;
    // u64s: the kernel writes 8-byte aligned `linux_dirent64` records.
    let mut buf = [0u64; 128];
    loop {
        // SAFETY: getdents64 writes at most `len` bytes of records into `buf`,
        // which is valid and that long.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                std::mem::size_of_val(&buf),
            )
        };
        if n < 0 {
            return Err(no_proc(io::Error::last_os_error()));
        }
        if n == 0 {
            break;
        }
        // SAFETY: `buf` holds `n` initialised bytes; u8 has no invalid values.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        threads += thread_entries(bytes);
    }
    if threads == 0 {
        // We run, so at least one thread: this is not our /proc.
        return Err(no_proc(io::Error::other("no thread listed")));
    }
    Ok(threads)
}

/// The entries of a `getdents64` buffer whose names are thread IDs (not `.` or
/// `..`). A record: d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1), the
/// NUL-terminated name.
fn thread_entries(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while bytes.len() >= 20 {
        let reclen = u16::from_ne_bytes([bytes[16], bytes[17]]) as usize;
        if reclen < 20 || reclen > bytes.len() {
            break; // malformed: count what we could read
        }
        if bytes[19].is_ascii_digit() {
            count += 1;
        }
        bytes = &bytes[reclen..];
    }
    count
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
