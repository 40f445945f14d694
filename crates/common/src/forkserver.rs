//! Start children through a *fork server*: `multiprocessing.get_context("forkserver")`,
//! Python's default start method on Linux since 3.14 (gh-84559).
//!
//! [`start`] forks one helper process early, while the program is still
//! single-threaded (the kit's [`crate::fork`] refuses otherwise). Later, from any
//! thread, [`ForkServer::start`] asks that server, over a Unix socket pair, for a
//! child that runs a registered [`Func`]: the server forks itself, and the child
//! runs the function. So a child starts from the memory the program had when the
//! server was forked (not from the parent's memory now, as with fork, nor from the
//! program's initial state, as with spawn), and it never inherits a lock that
//! another thread of the parent holds: the server has no other thread.
//!
//! Python's server does the same (`Lib/multiprocessing/forkserver.py`): the
//! parent passes file descriptors to it with SCM_RIGHTS, the server forks, writes
//! the child's PID back, reaps the child and writes its exit code. Here each
//! request carries two sockets by SCM_RIGHTS (unix(7)): one the child talks to the
//! parent on (the argument out, the reply back, as for spawn), and one on which the
//! server reports the child's PID, a pidfd for it, and later its exit code.
//!
//! **The parent is not the parent.** A forkserver child is the server's child:
//! only the server can reap it (`waitpid` in the program fails with ECHILD), so the
//! exit code comes in the server's message. The pidfd, opened by the server while
//! the child was surely unreaped, lets the program signal exactly that process
//! (pidfd_send_signal(2)) and poll for its end.
//!
//! **Parent death.** The server dies with the program and every child with the
//! server (the kit's fork sets PR_SET_PDEATHSIG for both); when the program drops
//! its [`ForkServer`], the server sees the socket close, kills and reaps any child
//! still running, and exits.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, SockType};
use nix::sys::socket::{recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::process::{Child, Exit, KILL_GRACE, START_TIMEOUT, pidfd_send_signal};
use crate::spawn::{Func, REGISTRY, StartError, Started, Waiter};
use crate::spawn::{find, pair, poll_until, registered, run_target};

/// The running fork server. Drop stops it (and kills its children still running).
#[derive(Debug)]
pub struct ForkServer {
    /// Our end of the request socket (SOCK_SEQPACKET: one message a request).
    control: Option<OwnedFd>,
    server: Child,
}

/// Fork the server. Call it early in `main`, before any thread starts: it is a
/// fork, refused in a multithreaded process.
pub fn start() -> Result<ForkServer, StartError> {
    let (mine, theirs) = pair(SockType::SeqPacket)?;
    let ours = mine.as_raw_fd();
    let server = crate::fork(move || {
        // Server: our copy of the program's end is not ours to hold.
        // SAFETY: `ours` is open in this copy of the fd table, and the OwnedFd for it
        // is never used or dropped here (the server ends in `_exit`).
        unsafe { libc::close(ours) };
        serve(theirs)
    })?;
    Ok(ForkServer {
        control: Some(mine),
        server,
    })
}

impl ForkServer {
    /// The server's process ID.
    pub fn pid(&self) -> i32 {
        self.server.pid()
    }

    /// Ask the server for a child that runs `func(arg)`; return once it runs and
    /// has the argument. Works from any thread.
    pub fn start<A: Serialize, R: DeserializeOwned>(
        &self,
        func: &'static Func<A, R>,
        arg: &A,
    ) -> Result<Started<R>, StartError> {
        registered(func.name())?;
        let control = self.control.as_ref().expect("open until dropped");
        let (data, data_child) = pair(SockType::Stream)?;
        let (status, status_server) = pair(SockType::SeqPacket)?;
        let fds = [data_child.as_raw_fd(), status_server.as_raw_fd()];
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let iov = [IoSlice::new(func.name().as_bytes())];
            let rights = [ControlMessage::ScmRights(&fds)];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(control.as_raw_fd(), &iov, &rights, flags, None) {
                Ok(_) => break,
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if poll_until(&[control.as_fd()], libc::POLLOUT, deadline).is_none() {
                        return Err(StartError::Server("it takes no requests (stopped?)"));
                    }
                }
                Err(_) => return Err(StartError::Server("it is gone")),
            }
        }
        // The server holds its own copies now (SCM_RIGHTS duplicates them).
        drop((data_child, status_server));
        // Its answer: the child's PID and a pidfd for it.
        if poll_until(&[status.as_fd()], libc::POLLIN, deadline).is_none() {
            return Err(StartError::Server("no answer within 5 s (stopped?)"));
        }
        let (pid, pidfd) = recv_code(&status)?;
        let pidfd = match (pid, pidfd) {
            (Some(pid), Some(pidfd)) if pid > 0 => pidfd,
            _ => return Err(StartError::Server("it could not fork a child")),
        };
        let waiter = Waiter::Server(ServerChild { pidfd, status });
        let mut started = Started::new(func.name(), pid.unwrap_or(0), waiter, data);
        started.send(arg)?;
        Ok(started)
    }

    /// Stop the server: close the request socket; it kills any child still
    /// running, and exits; join it.
    pub fn stop(mut self) -> Result<Exit, StartError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Exit, StartError> {
        drop(self.control.take());
        if self.server.is_stopped() {
            // A stopped server reads no socket: waiting for it would be in vain.
            self.server.kill()?;
        }
        Ok(self.server.join_within(START_TIMEOUT + KILL_GRACE)?)
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        if self.control.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// A forkserver child, as the program sees it: a pidfd to signal and poll, and
/// the socket on which the server reports its exit code.
#[derive(Debug)]
pub(crate) struct ServerChild {
    pidfd: OwnedFd,
    status: OwnedFd,
}

impl ServerChild {
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = pidfd_send_signal(&self.pidfd, sig); // ESRCH: it has ended already
    }

    /// The exit code the server reports, if it comes within `timeout`. Once the
    /// child has ended (its pidfd is readable), the server gets [`KILL_GRACE`]
    /// more to say so: a server that is stopped is an error, not a hang.
    pub(crate) fn exit_within(&mut self, timeout: Duration) -> Result<Option<Exit>, StartError> {
        let deadline = Instant::now() + timeout;
        if poll_until(&[self.status.as_fd()], libc::POLLIN, deadline).is_none() {
            let ended = poll_until(&[self.pidfd.as_fd()], libc::POLLIN, Instant::now());
            if ended.is_none() {
                return Ok(None); // still running
            }
            let grace = Instant::now() + KILL_GRACE;
            if poll_until(&[self.status.as_fd()], libc::POLLIN, grace).is_none() {
                return Err(StartError::Server(
                    "it did not report a child's exit (stopped?)",
                ));
            }
        }
        match recv_code(&self.status)? {
            (Some(code), _) => Ok(Some(Exit { code, panic: None })),
            (None, _) => Err(StartError::Server(
                "it ended before reporting a child's exit",
            )),
        }
    }
}

/// One message of the server: an `i32` (a PID, or an exit code), maybe with an
/// fd. `(None, None)` at end of file (the server closed the socket).
fn recv_code(sock: &OwnedFd) -> Result<(Option<i32>, Option<OwnedFd>), StartError> {
    let mut buf = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let (bytes, fds) = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
        Ok(msg) => (msg.bytes, received_fds(&msg)),
        Err(_) => return Err(StartError::Server("its socket failed")),
    };
    let code = (bytes == 4).then(|| i32::from_le_bytes(buf));
    Ok((code, fds.into_iter().next()))
}

/// The fds a message carried, now ours.
fn received_fds<S>(msg: &nix::sys::socket::RecvMsg<'_, '_, S>) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(|fd| {
                // SAFETY: SCM_RIGHTS installed these fds in our table just now;
                // nothing else knows their numbers.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }));
        }
    }
    fds
}

/// Server: serve requests until the program closes its end, reporting each
/// child's exit as it is reaped.
fn serve(control: OwnedFd) -> i32 {
    let registry = REGISTRY.get().copied().unwrap_or(&[]);
    // Each child, with the socket to report its end on.
    let mut served: Vec<(Child, OwnedFd)> = Vec::new();
    loop {
        {
            // Sleep until a request, or a child's end (its pidfd turns readable).
            let mut fds = vec![control.as_fd()];
            fds.extend(served.iter().filter_map(|(child, _)| child.pidfd()));
            poll_until(&fds, libc::POLLIN, Instant::now() + Duration::from_secs(1));
        }
        served.retain_mut(|(child, status)| {
            let Ok(false) = child.is_alive() else {
                return true;
            };
            let code = child.exitcode().unwrap_or(1);
            send_code(status, code, None);
            false // reaped and reported: drop it, and its status socket
        });
        match recv_request(&control) {
            Request::Nothing => {}
            Request::Closed => break,
            Request::Run { name, data, status } => {
                let Some(target) = find(registry, &name) else {
                    continue; // the program checks names first: drop the sockets
                };
                // What the child must not keep: the server's sockets.
                let mut close: Vec<RawFd> = vec![control.as_raw_fd(), status.as_raw_fd()];
                close.extend(served.iter().map(|(_, s)| s.as_raw_fd()));
                let child = crate::fork(move || {
                    // Child: close our copies of the server's sockets, then run.
                    for fd in close {
                        // SAFETY: these are open in this copy of the fd table; their
                        // OwnedFds are never used or dropped here (we end in _exit).
                        unsafe { libc::close(fd) };
                    }
                    run_target(target, data)
                });
                match child {
                    Ok(child) => {
                        let pidfd = child.pidfd().map(|fd| fd.as_raw_fd());
                        send_code(&status, child.pid(), pidfd);
                        served.push((child, status));
                    }
                    Err(_) => send_code(&status, 0, None), // 0: could not fork
                }
            }
        }
    }
    // The program is done with us: kill every child still running, reap it, and
    // report it (if the program still listens).
    for (mut child, status) in served {
        let _ = child.kill();
        if let Ok(exit) = child.join_within(KILL_GRACE) {
            send_code(&status, exit.code, None);
        }
    }
    0
}

fn send_code(sock: &OwnedFd, code: i32, fd: Option<RawFd>) {
    let bytes = code.to_le_bytes();
    let iov = [IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &rights[..] };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let _ = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None);
}

enum Request {
    Nothing,
    Closed,
    Run {
        name: String,
        data: OwnedFd,
        status: OwnedFd,
    },
}

fn recv_request(control: &OwnedFd) -> Request {
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let (bytes, fds) = match recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut space), flags) {
        Ok(msg) => (msg.bytes, received_fds(&msg)),
        Err(Errno::EAGAIN | Errno::EINTR) => return Request::Nothing,
        Err(_) => return Request::Closed,
    };
    let mut fds = fds.into_iter();
    match (bytes, fds.next(), fds.next()) {
        (0, None, _) => Request::Closed, // end of file: the program is done
        (n, Some(data), Some(status)) => Request::Run {
            name: String::from_utf8_lossy(&buf[..n]).into_owned(),
            data,
            status,
        },
        _ => Request::Nothing, // malformed: ignore it
    }
}
