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
//! **Channels, and functions by address.** [`ForkServer::start_with`] is the other
//! way in, for a child that needs ipc-channel ends rather than one argument (the
//! pool's workers, `pool_map::Context::forkserver`): the value is sent on a fresh
//! ipc-channel whose receiving end travels to the server in an ipc-channel message
//! (ipc-channel passes channel ends as file descriptors, with SCM_RIGHTS); the
//! server forks, and only the child takes the value out. The function is named by
//! its address: the server is a fork of this program, so the executable's code
//! sits at the same addresses in both, for good (an executable is never
//! unmapped). An address outside that code (a library loaded later with `dlopen`)
//! is refused before anything is sent ([`ForkServer::can_run`]).
//!
//! **Parent death.** The server dies with the program and every child with the
//! server (the kit's fork sets PR_SET_PDEATHSIG for both); when the program drops
//! its [`ForkServer`], the server sees the socket close, kills and reaps any child
//! still running, and exits.

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender, OpaqueIpcReceiver};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, SockType};
use nix::sys::socket::{recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::process::Deadline;
use crate::process::{Child, Exit, Joined, KILL_GRACE, START_TIMEOUT, pidfd_send_signal};
use crate::spawn::{Func, REGISTRY, StartError, Started, Waiter};
use crate::spawn::{encode, find, pair, poll_until, registered, run_target, send_what_fits};

/// The running fork server. Drop stops it (and kills its children still running).
#[derive(Debug)]
pub struct ForkServer {
    /// Our end of the request socket (SOCK_SEQPACKET: one message a request).
    control: Option<OwnedFd>,
    /// Where [`ForkServer::start_with`] sends a child's channel, numbered; the
    /// lock keeps each channel and its request together, in order.
    handoff: Mutex<(u64, IpcSender<Handoff>)>,
    /// The executable's code, where the server's children can run a function.
    code: Vec<(usize, usize)>,
    /// The process that started the server: the only one that may use it.
    owner: i32,
    server: Child,
}

/// The receiving end of the channel a [`ForkServer::start_with`] child takes its
/// value from, numbered like the request it goes with.
type Handoff = (u64, OpaqueIpcReceiver);

/// Fork the server. Call it early in `main`, before any thread starts: it is a
/// fork, refused in a multithreaded process.
pub fn start() -> Result<ForkServer, StartError> {
    let (mine, theirs) = pair(SockType::SeqPacket)?;
    let ours = mine.as_raw_fd();
    let io = |what| move |error| StartError::Io { what, error };
    let (handoff_tx, handoff_rx) = ipc::channel().map_err(io("cannot make a channel"))?;
    let code = executable_code().map_err(io("cannot read /proc/self/maps"))?;
    let server_code = code.clone();
    // Both processes hold the sending end after the fork; the server drops its copy.
    let sender = RefCell::new(Some(handoff_tx));
    let sender_ref = &sender;
    let server = crate::fork(move || {
        // Server: our copies of the program's ends are not ours to hold.
        // SAFETY: `ours` is open in this copy of the fd table, and the OwnedFd for it
        // is never used or dropped here (the server ends in `_exit`).
        unsafe { libc::close(ours) };
        drop(sender_ref.borrow_mut().take());
        serve(theirs, handoff_rx, &server_code)
    })?;
    let handoff_tx = sender.into_inner().expect("taken only in the server");
    Ok(ForkServer {
        control: Some(mine),
        handoff: Mutex::new((0, handoff_tx)),
        code,
        owner: nix::unistd::getpid().as_raw(),
        server,
    })
}

/// The address ranges of the executable's code (not a library's), from
/// /proc/self/maps (proc_pid_maps(5)): every mapping with `x` of the file (the
/// same device and inode) that holds this very function.
fn executable_code() -> std::io::Result<Vec<(usize, usize)>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let here = executable_code as fn() -> std::io::Result<Vec<(usize, usize)>> as usize;
    // (start, end, perms, device, inode) of each mapping.
    let entries: Vec<(usize, usize, &str, &str, &str)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let (_offset, dev, inode) = (fields.next()?, fields.next()?, fields.next()?);
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end, perms, dev, inode))
        })
        .collect();
    let file = entries
        .iter()
        .find(|&&(start, end, ..)| start <= here && here < end)
        .map(|&(.., dev, inode)| (dev, inode))
        .ok_or_else(|| std::io::Error::other("this code is in no mapping"))?;
    Ok(entries
        .iter()
        .filter(|&&(_, _, perms, dev, inode)| perms.contains('x') && (dev, inode) == file)
        .map(|&(start, end, ..)| (start, end))
        .collect())
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
        let (data, data_child) = pair(SockType::Stream)?;
        let (status, status_server) = pair(SockType::SeqPacket)?;
        let fds = [data_child.as_raw_fd(), status_server.as_raw_fd()];
        let bytes = encode(func.name(), arg)?;
        let mut deadline = Deadline::after(START_TIMEOUT);
        self.send_request(func.name().as_bytes(), &fds, &mut deadline)?;
        // The server holds its own copies now (SCM_RIGHTS duplicates them).
        drop((data_child, status_server));
        // The argument goes into the socket while the server forks: the child
        // finds it there (what does not fit follows once it runs).
        let early = send_what_fits(&data, &bytes);
        if early == bytes.len() {
            // All of it: the child reads to the end without waiting for us.
            let _ = nix::sys::socket::shutdown(data.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        }
        let (pid, pidfd) = self.answer(&status, &mut deadline)?;
        let waiter = Waiter::Server(ServerChild { pidfd, status });
        let mut started = Started::new(func.name(), pid, waiter, data);
        started.send_rest(&bytes, early)?;
        Ok(started)
    }

    /// Whether the server's children can run the function at `addr`: true for code
    /// of the executable, which sits at the same address in the server (a fork of
    /// this program) for good; false for anything else, such as a library loaded
    /// with `dlopen` after the server was forked.
    pub fn can_run(&self, addr: usize) -> bool {
        self.code
            .iter()
            .any(|&(start, end)| start <= addr && addr < end)
    }

    /// Ask the server for a child that runs `f(value)`, where `value` may carry
    /// ipc-channel ends (module docs). Works from any thread. `f` must be a
    /// function of the executable ([`ForkServer::can_run`]), else
    /// [`StartError::NotInExecutable`] and nothing is started.
    pub fn start_with<T: Serialize + DeserializeOwned + Send>(
        &self,
        f: fn(T) -> i32,
        value: T,
    ) -> Result<Served, StartError> {
        let (f, trampoline) = (f as usize, trampoline::<T> as Trampoline as usize);
        if !self.can_run(f) || !self.can_run(trampoline) {
            return Err(StartError::NotInExecutable(f));
        }
        // A forked copy of this program shares the server's sockets but not our
        // count of requests: its requests could be paired with our values.
        if nix::unistd::getpid().as_raw() != self.owner {
            return Err(StartError::Server(
                "it belongs to the process that started it",
            ));
        }
        if self.server_stays_stopped() {
            return Err(StartError::Server("it is stopped (SIGSTOP)"));
        }
        let io = |what| move |error| StartError::Io { what, error };
        let (tx, rx) = ipc::channel::<T>().map_err(io("cannot make a channel"))?;
        let (status, status_server) = pair(SockType::SeqPacket)?;
        let mut deadline = Deadline::after(START_TIMEOUT);
        {
            let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
            handoff.0 += 1;
            let seq = handoff.0;
            // An error here means the server's end is closed: it is gone.
            let handed = handoff.1.send((seq, rx.to_opaque()));
            handed.map_err(|_| StartError::Server("it is gone"))?;
            let mut request = vec![0u8];
            for n in [seq as usize, trampoline, f] {
                request.extend_from_slice(&(n as u64).to_le_bytes());
            }
            self.send_request(&request, &[status_server.as_raw_fd()], &mut deadline)?;
        }
        drop(status_server); // the server holds its own copy now
        let (pid, pidfd) = self.answer(&status, &mut deadline)?;
        let mut served = Served {
            pid,
            child: ServerChild { pidfd, status },
            exit: None,
        };
        // Only now the value: a child that was never started must not run `f` late
        // (without a value it ends at once), and a value too big for one message
        // is read by the child while we send it. A child that does not read it
        // within the deadline (stopped) is killed, which ends the send.
        let sent = std::thread::scope(|s| {
            let sender = std::thread::Builder::new()
                .name("start_with".into())
                .spawn_scoped(s, move || tx.send(value).is_ok())
                .map_err(io("cannot start a thread to send the value"))?;
            let mut deadline = Instant::now() + START_TIMEOUT;
            let mut last = Instant::now();
            let mut gave_up = false;
            while !sender.is_finished() {
                std::thread::sleep(Duration::from_micros(50));
                // Time this process spent stopped (Ctrl-Z) is not the child's.
                let gap = last.elapsed();
                if gap > Duration::from_millis(100) {
                    deadline += gap;
                }
                last = Instant::now();
                if last >= deadline && !sender.is_finished() {
                    served.kill(); // which ends the send
                    gave_up = true;
                    break;
                }
            }
            // A child killed above is an error, even if the send then completed.
            Ok::<bool, StartError>(sender.join().unwrap_or(false) && !gave_up)
        })?;
        if !sent {
            served.kill();
            return Err(StartError::Server(
                "its child did not take its value (stopped?)",
            ));
        }
        Ok(served)
    }

    /// Send one request with its fds, within `deadline`.
    fn send_request(
        &self,
        bytes: &[u8],
        fds: &[RawFd],
        deadline: &mut Deadline,
    ) -> Result<(), StartError> {
        let control = self.control.as_ref().expect("open until dropped");
        loop {
            let iov = [IoSlice::new(bytes)];
            let rights = [ControlMessage::ScmRights(fds)];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(control.as_raw_fd(), &iov, &rights, flags, None) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if poll_until(&[control.as_fd()], libc::POLLOUT, deadline).is_none() {
                        return Err(StartError::Server("it takes no requests (stopped?)"));
                    }
                }
                Err(_) => return Err(StartError::Server("it is gone")),
            }
        }
    }

    /// The server's answer to a request: the child's PID and a pidfd for it.
    fn answer(
        &self,
        status: &OwnedFd,
        deadline: &mut Deadline,
    ) -> Result<(i32, OwnedFd), StartError> {
        if poll_until(&[status.as_fd()], libc::POLLIN, deadline).is_none() {
            return Err(StartError::Server("no answer within 5 s (stopped?)"));
        }
        match recv_code(status)? {
            (Some(pid), Some(pidfd)) if pid > 0 => Ok((pid, pidfd)),
            (Some(errno), _) if errno < 0 => Err(StartError::NoProcess {
                what: "the fork server could not fork a child",
                error: std::io::Error::from_raw_os_error(-errno),
            }),
            _ => Err(StartError::Server("it could not fork a child")),
        }
    }

    /// Whether the server is stopped, and still is 50 ms later. A job stopped
    /// with Ctrl-Z and continued with `fg` gets one SIGCONT for all its
    /// processes, and this one may look at the server a moment before the
    /// server's has taken effect.
    /// Only a job-control stop counts ('T'): a tracer's stop ('t', under
    /// strace or gdb) ends by itself.
    fn server_stays_stopped(&self) -> bool {
        let stopped = || crate::procfs::state_of(self.server.pid()) == Some('T');
        if !stopped() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
        stopped()
    }

    /// Stop the server: close the request socket; it kills any child still
    /// running, and exits; join it. A server that is stopped (SIGSTOP) is
    /// killed, within about 100 ms; one that runs but does not exit within 5 s
    /// is killed too, and that is an error.
    pub fn stop(mut self) -> Result<Exit, StartError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Exit, StartError> {
        // An empty message says stop: the server would also stop at end of file,
        // but a forked copy of this program may hold the socket open.
        if let Some(control) = self.control.take() {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            let _ = nix::sys::socket::send(control.as_raw_fd(), &[], flags);
        }
        // Wait for its exit in short slices. A server that is stopped reads no
        // socket: waiting for it would be in vain, so it is killed. A SIGSTOP
        // sent a moment ago may not have taken effect at the first look, hence a
        // look after every slice.
        let mut deadline = Deadline::after(START_TIMEOUT);
        loop {
            let slice = deadline.slice();
            if let Some(exit) = self.server.join_timeout(slice)? {
                return Ok(exit);
            }
            if self.server_stays_stopped() {
                self.server.kill()?;
                return Ok(self.server.join_within(KILL_GRACE)?);
            }
            if slice.is_zero() {
                // Running, but not stopping: the bound is kept all the same.
                return match self.server.join_or_kill(Duration::ZERO)? {
                    Joined::Finished(exit) => Ok(exit), // it exited just now
                    Joined::Killed(_) => Err(StartError::Server(
                        "it did not exit within 5 s of being told to stop; it was killed",
                    )),
                };
            }
        }
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
    /// child has ended (its pidfd is readable), the server gets [`REPORT_GRACE`]
    /// to say so: a server that is stopped is an error, not a hang.
    pub(crate) fn exit_within(&mut self, timeout: Duration) -> Result<Option<Exit>, StartError> {
        let deadline = Instant::now().checked_add(timeout);
        // Sleep on the report alone (one wake-up when it comes), in slices, and
        // between slices look whether the child has ended without one.
        while !readable_now(self.status.as_fd()) {
            let now = Instant::now();
            let ended = readable_now(self.pidfd.as_fd());
            if !ended && deadline.is_some_and(|d| now >= d) {
                return Ok(None); // still running
            }
            let slice = now + REPORT_GRACE;
            let mut until = Deadline::at(match deadline {
                Some(d) if !ended => d.min(slice),
                _ => slice,
            });
            let got = poll_until(&[self.status.as_fd()], libc::POLLIN, &mut until);
            if got.is_none() && ended {
                // It ended a slice ago: a running server reaps and reports in
                // microseconds; this one does not (stopped?).
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

/// A child that [`ForkServer::start_with`] started: the `Process` calls, with
/// the exit code that the server (its parent) reports. Drop kills it if it was
/// not joined.
#[derive(Debug)]
pub struct Served {
    pid: i32,
    child: ServerChild,
    exit: Option<Exit>,
}

impl Served {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its exit, if it has ended and the server has said so within `timeout`.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>, StartError> {
        if self.exit.is_none() {
            self.exit = self.child.exit_within(timeout)?;
        }
        Ok(self.exit.clone())
    }

    /// `Process.is_alive()`: false once it has ended (and the server said so).
    pub fn is_alive(&mut self) -> Result<bool, StartError> {
        Ok(self.join_timeout(Duration::ZERO)?.is_none())
    }

    /// Stopped (SIGSTOP, Ctrl-Z), as /proc says. Read only while its pidfd says it
    /// runs, so the PID is still its own.
    pub fn is_stopped(&self) -> bool {
        self.exit.is_none()
            && !readable_now(self.child.pidfd.as_fd())
            && matches!(crate::procfs::state_of(self.pid), Some('T' | 't'))
    }

    /// `Process.kill()`: SIGKILL through the pidfd (nothing once it has ended).
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            self.child.signal(Signal::SIGKILL);
        }
    }

    /// The watchdog: its exit within `timeout`, or SIGKILL and its exit within
    /// [`KILL_GRACE`]; an error if the server does not report it even then.
    /// Time this program spends stopped is left out of `timeout` ([`Deadline`]).
    pub fn join_or_kill(&mut self, timeout: Duration) -> Result<Joined, StartError> {
        let mut deadline = Deadline::after(timeout);
        loop {
            if let Some(exit) = self.join_timeout(deadline.slice())? {
                return Ok(Joined::Finished(exit));
            }
            if deadline.passed() {
                break;
            }
        }
        self.kill();
        match self.join_timeout(KILL_GRACE)? {
            Some(exit) => Ok(Joined::Killed(exit)),
            None => Err(crate::process::ProcessError::Unkillable { pid: self.pid }.into()),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill(); // the server reaps it and reports to a closed socket
    }
}

/// Child of [`ForkServer::start_with`]: take the value out of the channel and
/// run `f` (an `fn(T) -> i32` of this very monomorphisation: they travel as a
/// pair). The value was sent before the request, so it is there already.
type Trampoline = fn(usize, OpaqueIpcReceiver) -> i32;

fn trampoline<T: DeserializeOwned + Serialize>(f: usize, rx: OpaqueIpcReceiver) -> i32 {
    // SAFETY: an `fn(T) -> i32` address from `start_with`, sent paired with this
    // `T`, in the executable's code (`can_run`, checked by program and server),
    // mapped here at the same address: server and child are forks of the program.
    let f = unsafe { std::mem::transmute::<*const (), fn(T) -> i32>(f as *const ()) };
    // No timeout: the program sends the value at once, or kills us if it cannot;
    // a program stopped with Ctrl-Z goes on after `fg`; one that dies closes its
    // end, and `recv` fails.
    let value = rx.to::<T>().recv();
    // (`rx` is closed now: the child keeps only what the value carries.)
    match value {
        Ok(value) => f(value),
        Err(_) => 1, // nothing came: the program gave up on us, or is gone
    }
}

/// Poll `fd` for input without waiting.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// How long the program waits for the server to report a child it knows has
/// ended.
const REPORT_GRACE: Duration = Duration::from_millis(200);

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
fn serve(control: OwnedFd, handoffs: IpcReceiver<Handoff>, code: &[(usize, usize)]) -> i32 {
    let registry = REGISTRY.get().copied().unwrap_or(&[]);
    // In a `RefCell` so that each child, forked from here, can drop its copy.
    let handoffs = RefCell::new(Some(handoffs));
    let runnable = |addr: usize| code.iter().any(|&(start, end)| start <= addr && addr < end);
    // Each child, with the socket to report its end on.
    let mut served: Vec<(Child, OwnedFd)> = Vec::new();
    loop {
        {
            // Sleep until a request, or a child's end (its pidfd turns readable).
            let mut fds = vec![control.as_fd()];
            fds.extend(served.iter().filter_map(|(child, _)| child.pidfd()));
            poll_until(
                &fds,
                libc::POLLIN,
                &mut Deadline::after(Duration::from_secs(1)),
            );
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
                let close = server_fds(&control, &status, &served);
                let child = crate::fork(move || {
                    // Child: close our copies of the server's sockets, then run.
                    close_all(close);
                    run_target(target, data)
                });
                answer_fork(child, status, &mut served);
            }
            Request::With {
                seq,
                trampoline,
                f,
                status,
            } => {
                let rx = next_handoff(&handoffs, seq);
                let (Some(rx), true) = (rx, runnable(f) && runnable(trampoline)) else {
                    send_code(&status, 0, None); // 0: could not fork
                    continue;
                };
                let close = server_fds(&control, &status, &served);
                let handoffs = &handoffs;
                let child = crate::fork(move || {
                    // Child: close our copies of the server's sockets and channel.
                    close_all(close);
                    drop(handoffs.borrow_mut().take());
                    // SAFETY: `trampoline` is the address of a `Trampoline` taken by
                    // `start_with` (sent with `f` as a pair), and lies in the
                    // executable's code (checked above), mapped here as in the program.
                    let run = unsafe {
                        std::mem::transmute::<*const (), Trampoline>(trampoline as *const ())
                    };
                    run(f, rx)
                });
                answer_fork(child, status, &mut served);
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

/// What a child of the server must not keep: the server's sockets.
fn server_fds(control: &OwnedFd, status: &OwnedFd, served: &[(Child, OwnedFd)]) -> Vec<RawFd> {
    let mut close: Vec<RawFd> = vec![control.as_raw_fd(), status.as_raw_fd()];
    close.extend(served.iter().map(|(_, s)| s.as_raw_fd()));
    close.extend(
        served
            .iter()
            .filter_map(|(c, _)| c.pidfd().map(|fd| fd.as_raw_fd())),
    );
    close
}

/// Child of the server: close the server's fds.
fn close_all(fds: Vec<RawFd>) {
    for fd in fds {
        // SAFETY: these are open in this copy of the fd table; their OwnedFds are
        // never used or dropped here (the child ends in _exit).
        unsafe { libc::close(fd) };
    }
}

/// Tell the program the new child's PID and a pidfd for it (0: could not fork).
fn answer_fork(
    child: Result<Child, crate::process::ProcessError>,
    status: OwnedFd,
    served: &mut Vec<(Child, OwnedFd)>,
) {
    match child {
        Ok(child) => {
            let pidfd = child.pidfd().map(|fd| fd.as_raw_fd());
            send_code(&status, child.pid(), pidfd);
            served.push((child, status));
        }
        // Why, as a negative errno (0 when it was not the fork itself).
        Err(crate::process::ProcessError::Fork(errno)) => send_code(&status, -(errno as i32), None),
        Err(_) => send_code(&status, 0, None),
    }
}

/// The channel handed over with request `seq`; older ones (their requests never
/// came: the program gave up on them) are dropped.
fn next_handoff(
    handoffs: &RefCell<Option<IpcReceiver<Handoff>>>,
    seq: u64,
) -> Option<OpaqueIpcReceiver> {
    let handoffs = handoffs.borrow();
    let rx = handoffs.as_ref()?;
    loop {
        match rx.try_recv_timeout(START_TIMEOUT) {
            Ok((n, channel)) if n == seq => return Some(channel),
            Ok((n, _)) if n < seq => continue,
            _ => return None,
        }
    }
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
    /// From `start_with`: a 0 byte, then the request's number, the trampoline's
    /// address and the function's, each a little-endian u64.
    With {
        seq: u64,
        trampoline: usize,
        f: usize,
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
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[1 + 8 * i..9 + 8 * i]);
        u64::from_le_bytes(w)
    };
    match (bytes, fds.next(), fds.next()) {
        (0, None, _) => Request::Closed, // end of file: the program is done
        (25, Some(status), None) if buf[0] == 0 => Request::With {
            seq: word(0),
            trampoline: word(1) as usize,
            f: word(2) as usize,
            status,
        },
        (n, Some(data), Some(status)) => Request::Run {
            name: String::from_utf8_lossy(&buf[..n]).into_owned(),
            data,
            status,
        },
        _ => Request::Nothing, // malformed: ignore it
    }
}
