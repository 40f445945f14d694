//! The mechanism of the mp-pipe lesson: [`Conn`], one end of Python's
//! `multiprocessing.Pipe()`, on a real socket pair or pipe, with every wait bounded.
//!
//! **What Python does.** `Pipe()` is `socket.socketpair()` (duplex) or `os.pipe()`
//! (`duplex=False`), wrapped in two `Connection` objects. `send(obj)` pickles the
//! object and `_send_bytes` writes a 4-byte big-endian length (`struct.pack("!i", n)`)
//! followed by the pickle; `recv()` reads the 4 bytes, then that many, and unpickles
//! (CPython `Lib/multiprocessing/connection.py`). `recv()` raises `EOFError` when the
//! stream ends: when every copy of the other end, in every process, is closed.
//!
//! **What this does.** The same framing (a 4-byte big-endian length, then the body);
//! the body is [postcard](https://docs.rs/postcard) (serde), not pickle. The fds are
//! non-blocking, so that every read and write waits in `poll(2)` with a deadline: a
//! peer that is stopped (SIGSTOP) or stuck gives [`ConnError::RecvTimeout`] or
//! [`ConnError::SendTimeout`], never a hang. Python's `recv()` and `send()` wait
//! forever.
//!
//! **Closing.** [`Conn::close`] takes `&self`, like Python's `conn.close()`: a forked
//! child closes *its inherited copy* of an end the parent keeps, through a borrow.
//! After `fork` each process has its own copy of the memory, so only the child's
//! copy of the `Conn` becomes closed. The fd itself is an `OwnedFd`: an end that is
//! dropped is closed, in the process that drops it.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use common::Exit;
use common::fork;
use common::output::{List, print_wrapped};
use common::process::{Child, Deadline};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::stat::{SFlag, fstat};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The length header: 4 bytes, big-endian, as CPython's `struct.pack("!i", n)`.
pub const HEADER: usize = 4;
/// The largest message this course accepts; a longer header means a corrupt stream.
pub const MAX_MESSAGE: usize = 64 << 20;
/// The largest message on a [`packet_pair`] (one record per message).
pub const MAX_PACKET: usize = 64 << 10;
/// pipe(7): writes of up to `PIPE_BUF` bytes (4096 on Linux) are atomic.
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Nothing (or not the whole message) arrived before the deadline.
    #[error(
        "nothing arrived within {0:.1} s (the peer is stopped or stuck, or holds its end open)"
    )]
    RecvTimeout(f64),
    /// The peer did not read for too long: the kernel buffer stayed full.
    #[error("the peer read nothing for {0:.1} s (stopped or stuck): the buffer stayed full")]
    SendTimeout(f64),
    /// Writing to an end whose every reader is gone (EPIPE).
    #[error("the other end is closed: nobody can read this (EPIPE)")]
    PeerClosed,
    /// The bytes do not make a message: a torn frame or a bad length.
    #[error("corrupt message: {0}")]
    Corrupt(String),
    /// `send` on a read end or `recv` on a write end of `Pipe(duplex=False)`.
    #[error("connection is {0}-only")]
    WrongWay(&'static str),
    /// This end was closed here already.
    #[error("this end is closed")]
    Closed,
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Sys { call: &'static str, errno: Errno },
}

/// What a [`Conn`] sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `socketpair(AF_UNIX, SOCK_STREAM)`: Python's `Pipe()` (duplex).
    Stream,
    /// `socketpair(AF_UNIX, SOCK_SEQPACKET)`: one record per message.
    Packet,
    /// `pipe2()`: Python's `Pipe(duplex=False)`.
    Pipe,
}

/// One end of a pipe: Python's `multiprocessing.connection.Connection`.
#[derive(Debug)]
pub struct Conn {
    /// `None` once closed here (see the module docs on `close(&self)`).
    fd: RefCell<Option<OwnedFd>>,
    kind: Kind,
    readable: bool,
    writable: bool,
}

// ANCHOR: pipe
/// `multiprocessing.Pipe(duplex)`: `(conn1, conn2)`. Duplex: both ends read and
/// write (a Unix stream socket pair). `duplex=False`: `conn1` only receives and
/// `conn2` only sends (a pipe). Both fds are close-on-exec and non-blocking.
pub fn pipe(duplex: bool) -> Result<(Conn, Conn), ConnError> {
    if duplex {
        let (a, b) = pair(SockType::Stream)?;
        Ok((
            Conn::new(a, Kind::Stream, true, true),
            Conn::new(b, Kind::Stream, true, true),
        ))
    } else {
        let (r, w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(sys("pipe2"))?;
        Ok((
            Conn::new(r, Kind::Pipe, true, false),
            Conn::new(w, Kind::Pipe, false, true),
        ))
    }
}
// ANCHOR_END: pipe

/// A duplex pair on `SOCK_SEQPACKET`: each message is one record, and one read
/// takes one whole record, so two readers of one end never split a message.
pub fn packet_pair() -> Result<(Conn, Conn), ConnError> {
    let (a, b) = pair(SockType::SeqPacket)?;
    Ok((
        Conn::new(a, Kind::Packet, true, true),
        Conn::new(b, Kind::Packet, true, true),
    ))
}

fn pair(ty: SockType) -> Result<(OwnedFd, OwnedFd), ConnError> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    socketpair(AddressFamily::Unix, ty, None, flags).map_err(sys("socketpair"))
}

fn sys(call: &'static str) -> impl Fn(Errno) -> ConnError {
    move |errno| ConnError::Sys { call, errno }
}

/// `frame(v)`: the bytes `send(v)` writes: the 4-byte length, then postcard.
pub fn frame<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, ConnError> {
    let body = postcard::to_stdvec(v).map_err(|e| ConnError::Corrupt(e.to_string()))?;
    Ok(frame_bytes(&body))
}

/// The length header and `body`, in one buffer (so that one write carries both).
pub fn frame_bytes(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(HEADER + body.len());
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(body);
    wire
}

/// Cut a byte stream into message bodies; an error if a length is bad or the
/// bytes end inside a message.
pub fn split_frames(mut bytes: &[u8]) -> Result<Vec<&[u8]>, ConnError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = header_len(bytes.get(..HEADER).ok_or_else(|| cut(bytes.len()))?)?;
        let body = bytes
            .get(HEADER..HEADER + len)
            .ok_or_else(|| cut(bytes.len()))?;
        out.push(body);
        bytes = &bytes[HEADER + len..];
    }
    Ok(out)
}

fn cut(n: usize) -> ConnError {
    ConnError::Corrupt(format!("the bytes end inside a message ({n} left)"))
}

fn header_len(h: &[u8]) -> Result<usize, ConnError> {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(ConnError::Corrupt(format!(
            "a length header of {len} bytes"
        )));
    }
    Ok(len)
}

/// Bytes as hex pairs: `00 00 00 01 04`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's spelling of a bool.
pub fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl Conn {
    fn new(fd: OwnedFd, kind: Kind, readable: bool, writable: bool) -> Conn {
        Conn {
            fd: RefCell::new(Some(fd)),
            kind,
            readable,
            writable,
        }
    }

    /// What this end sits on.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The fd number, while open.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.borrow().as_ref().map(|fd| fd.as_raw_fd())
    }

    /// What the kernel says this fd is (fstat(2)): `socket`, `pipe`, or `other`.
    pub fn file_type(&self) -> Result<&'static str, ConnError> {
        let st = self.with_fd(|fd| fstat(fd).map_err(sys("fstat")))?;
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        Ok(match fmt {
            SFlag::S_IFSOCK => "socket",
            SFlag::S_IFIFO => "pipe",
            _ => "other",
        })
    }

    /// `conn.close()`: close this process's copy of the end (idempotent).
    pub fn close(&self) {
        drop(self.fd.borrow_mut().take());
    }

    /// Another fd for the same end (dup), as a child that reads or writes it needs.
    pub fn try_clone(&self) -> Result<Conn, ConnError> {
        let fd = self.with_fd(|fd| fd.try_clone_to_owned().map_err(|e| io_err("dup", e)))?;
        Ok(Conn::new(fd, self.kind, self.readable, self.writable))
    }

    /// `conn.poll(timeout)`: whether something can be read now or within
    /// `timeout`: a message, or the end of the stream (then `recv` says so).
    pub fn poll(&self, timeout: Duration) -> Result<bool, ConnError> {
        if !self.readable {
            return Err(ConnError::WrongWay("write"));
        }
        let mut deadline = Deadline::after(timeout);
        self.with_fd(|fd| wait(fd, PollFlags::POLLIN, &mut deadline))
    }

    /// How many bytes the kernel holds for this end to read (ioctl FIONREAD).
    pub fn pending(&self) -> Result<usize, ConnError> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `n`, which outlives the call.
        let r =
            self.with_fd(|fd| Ok(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) }))?;
        Errno::result(r).map_err(sys("ioctl(FIONREAD)"))?;
        Ok(n as usize)
    }

    /// A plain `read(2)` of what is there now, up to `max` bytes, no framing: to
    /// look at the bytes on the wire.
    pub fn read_raw(&self, max: usize) -> Result<Vec<u8>, ConnError> {
        let mut buf = vec![0u8; max];
        let n = self.with_fd(|fd| nix::unistd::read(fd, &mut buf).map_err(sys("read")))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `conn.send(obj)`: postcard, framed, written within `patience`.
    pub fn send<T: Serialize + ?Sized>(&self, v: &T, patience: Duration) -> Result<(), ConnError> {
        let wire = frame(v)?;
        self.send_wire(&wire, patience)
    }

    /// `conn.send_bytes(body)`: the length header and `body`, in one write
    /// when they fit (see [`PIPE_BUF`] on what that buys with several writers).
    pub fn send_bytes(&self, body: &[u8], patience: Duration) -> Result<(), ConnError> {
        self.send_wire(&frame_bytes(body), patience)
    }

    fn send_wire(&self, wire: &[u8], patience: Duration) -> Result<(), ConnError> {
        if !self.writable {
            return Err(ConnError::WrongWay("read"));
        }
        if self.kind == Kind::Packet && wire.len() > HEADER + MAX_PACKET {
            return Err(ConnError::Corrupt(format!(
                "{} bytes is too long for one record",
                wire.len()
            )));
        }
        let mut deadline = Deadline::after(patience);
        self.with_fd(|fd| {
            let mut left = wire;
            while !left.is_empty() {
                match nix::unistd::write(fd, left) {
                    Ok(n) => left = &left[n..],
                    Err(Errno::EAGAIN) => {
                        if !wait(fd, PollFlags::POLLOUT, &mut deadline)? {
                            return Err(ConnError::SendTimeout(patience.as_secs_f64()));
                        }
                    }
                    Err(Errno::EINTR) => {}
                    Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ConnError::PeerClosed),
                    Err(errno) => {
                        return Err(ConnError::Sys {
                            call: "write",
                            errno,
                        });
                    }
                }
            }
            Ok(())
        })
    }

    /// `conn.recv()`: the next value, or `None` at the end of the stream (Python
    /// raises `EOFError`); [`ConnError::RecvTimeout`] if it does not arrive whole
    /// within `patience`.
    pub fn recv<T: DeserializeOwned>(&self, patience: Duration) -> Result<Option<T>, ConnError> {
        match self.recv_bytes(patience)? {
            None => Ok(None),
            Some(body) => postcard::from_bytes(&body).map(Some).map_err(|e| {
                ConnError::Corrupt(format!("cannot decode {} bytes: {e}", body.len()))
            }),
        }
    }

    /// `conn.recv_bytes()`: the next message body, or `None` at the end of the stream.
    pub fn recv_bytes(&self, patience: Duration) -> Result<Option<Vec<u8>>, ConnError> {
        if !self.readable {
            return Err(ConnError::WrongWay("write"));
        }
        let mut deadline = Deadline::after(patience);
        let timeout = || ConnError::RecvTimeout(patience.as_secs_f64());
        self.with_fd(|fd| {
            if self.kind == Kind::Packet {
                // One read, one whole record: nobody else can take half of it.
                let mut buf = vec![0u8; HEADER + MAX_PACKET];
                let n = read_some(fd, &mut buf, &mut deadline)?.ok_or_else(timeout)?;
                if n == 0 {
                    return Ok(None);
                }
                let len = header_len(buf.get(..HEADER).ok_or_else(|| cut(n))?)?;
                if HEADER + len != n {
                    return Err(ConnError::Corrupt(format!(
                        "a record of {n} bytes says {len}"
                    )));
                }
                buf.truncate(n);
                buf.drain(..HEADER);
                return Ok(Some(buf));
            }
            // A stream: the header, then the body (two reads, as CPython does).
            let mut header = [0u8; HEADER];
            match read_exact(fd, &mut header, &mut deadline)? {
                Filled::Eof(0) => return Ok(None),
                Filled::Eof(n) => return Err(cut(n)),
                Filled::Timeout => return Err(timeout()),
                Filled::Full => {}
            }
            let mut body = vec![0u8; header_len(&header)?];
            match read_exact(fd, &mut body, &mut deadline)? {
                Filled::Full => Ok(Some(body)),
                Filled::Eof(_) => Err(ConnError::Corrupt(
                    "the stream ended inside a message".into(),
                )),
                Filled::Timeout => Err(timeout()),
            }
        })
    }

    fn with_fd<R>(
        &self,
        f: impl FnOnce(BorrowedFd<'_>) -> Result<R, ConnError>,
    ) -> Result<R, ConnError> {
        let guard = self.fd.borrow();
        let fd = guard.as_ref().ok_or(ConnError::Closed)?;
        f(fd.as_fd())
    }
}

enum Filled {
    Full,
    /// The stream ended after this many bytes.
    Eof(usize),
    Timeout,
}

fn read_exact(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: &mut Deadline,
) -> Result<Filled, ConnError> {
    let mut got = 0;
    while got < buf.len() {
        match read_some(fd, &mut buf[got..], deadline)? {
            None => return Ok(Filled::Timeout),
            Some(0) => return Ok(Filled::Eof(got)),
            Some(n) => got += n,
        }
    }
    Ok(Filled::Full)
}

/// One read: `Some(n)` bytes (0 at the end of the stream), `None` at the deadline.
fn read_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: &mut Deadline,
) -> Result<Option<usize>, ConnError> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EAGAIN) => {
                if !wait(fd, PollFlags::POLLIN, deadline)? {
                    return Ok(None);
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Ok(Some(0)),
            Err(errno) => {
                return Err(ConnError::Sys {
                    call: "read",
                    errno,
                });
            }
        }
    }
}

/// poll(2) for `events` until `deadline`: true when ready (or hung up / in error,
/// which the next read or write reports), false at the deadline. It polls in
/// slices of at most 100 ms, so that time this process spends stopped (Ctrl-Z
/// of the whole job) is left out of the timeout (`common::process::Deadline`);
/// Python's `poll(timeout)` counts it, and its `send` and `recv` have no bound.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: &mut Deadline) -> Result<bool, ConnError> {
    loop {
        let left = deadline.slice();
        // Round up, so that a wait of 0.3 ms does not become a busy poll(0).
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) if deadline.passed() => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(errno) => {
                return Err(ConnError::Sys {
                    call: "poll",
                    errno,
                });
            }
        }
    }
}

fn io_err(call: &'static str, e: io::Error) -> ConnError {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    ConnError::Sys { call, errno }
}

/// What the readers or writers of one end ended up with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    /// Per process: the message numbers it received (readers), or how many whole
    /// frames of its own arrived (writers).
    pub each: Vec<Vec<u32>>,
}

impl Shares {
    /// Every number in `0..n` went to exactly one reader.
    pub fn exactly_once(&self, n: u32) -> bool {
        let mut all: Vec<u32> = self.each.iter().flatten().copied().collect();
        all.sort_unstable();
        all == (0..n).collect::<Vec<_>>()
    }
}

/// How a child that reads until EOF ended: exit code 0 at EOF, [`NO_EOF`] when its
/// watchdog found no end.
pub const NO_EOF: i32 = 3;

/// Child side of "read until EOF", with a watchdog: every value until the end, or,
/// after `expect` values, [`NO_EOF`] if no end arrives within `watchdog`.
pub fn read_until_eof(
    r: &Conn,
    expect: usize,
    watchdog: Duration,
    bound: Duration,
) -> Result<(Vec<i64>, bool), ConnError> {
    let mut got = Vec::new();
    while got.len() < expect {
        match r.recv::<i64>(bound)? {
            Some(v) => got.push(v),
            None => return Ok((got, true)),
        }
    }
    // Python's `r.poll(1)` before `r.recv()`: false means recv would wait on.
    if !r.poll(watchdog)? {
        return Ok((got, false));
    }
    Ok((got, r.recv::<i64>(bound)?.is_none()))
}

/// Fork the child of "read until EOF" on `r` (moved in). `close_w`: whether it
/// first closes its inherited copy of the parent's write end `w` (Python's
/// `w.close()` in the child). It prints what it got and ends with 0 at EOF, or
/// [`NO_EOF`] when no end came within `watchdog` after `expect` values.
pub fn fork_eof_reader(
    r: Conn,
    w: &Conn,
    close_w: bool,
    expect: usize,
    watchdog: Duration,
    bound: Duration,
) -> anyhow::Result<Child> {
    Ok(fork(move || -> i32 {
        // Child: reads on r. Its copy of w, unless closed, is a writer it waits for.
        if close_w {
            w.close();
        }
        let pid = std::process::id();
        let (got, eof) = match read_until_eof(&r, expect, watchdog, bound) {
            Ok(result) => result,
            Err(e) => {
                eprintln!("error: child pid {pid}: {e}");
                return 1;
            }
        };
        let (how, got) = (if close_w { "closed" } else { "kept" }, List(&got));
        // Wrapped like `Lesson::say`: long numbers make long lines.
        if eof {
            print_wrapped(
                &format!("    {how} w: child pid {pid} got {got}, then EOF"),
                "      ",
            );
            return 0;
        }
        let secs = watchdog.as_secs();
        print_wrapped(
            &format!("    {how} w: child pid {pid} got {got}, then no EOF"),
            "      ",
        );
        print_wrapped(
            &format!("      after {secs} s: it holds a write end itself"),
            "      ",
        );
        NO_EOF
    })?)
}

/// An error unless the child `who` ended with one of the `expected` exit codes: a
/// child killed by a signal (from outside) or ending some other way means the
/// lesson could not run, which is not a failed claim.
pub fn expect_exit(who: &str, exit: &Exit, expected: &[i32]) -> anyhow::Result<()> {
    if !expected.contains(&exit.code) {
        let codes: Vec<String> = expected.iter().map(i32::to_string).collect();
        anyhow::bail!(
            "{who} ended with {exit}, not exitcode {}: was it killed from outside?",
            codes.join(" or ")
        );
    }
    Ok(())
}

/// `join_within(patience)`, then [`expect_exit`]: how the child ended, if it is
/// one of the `expected` codes; an error otherwise.
pub fn join_expecting(
    child: &mut Child,
    who: &str,
    patience: Duration,
    expected: &[i32],
) -> anyhow::Result<Exit> {
    let exit = child.join_within(patience)?;
    expect_exit(who, &exit, expected)?;
    Ok(exit)
}

/// Fork a reader of `recv_end` (a dup of it goes to the child), which sends the
/// numbers it got back on its own pipe; the child and that pipe's read end.
pub fn fork_reader(
    send_end: &Conn,
    recv_end: &Conn,
    bound: Duration,
) -> anyhow::Result<(Child, Conn)> {
    let (report_r, report_w) = pipe(false)?;
    let mine = recv_end.try_clone()?;
    let theirs = &report_r;
    let child = fork(move || -> Result<(), ConnError> {
        // Child: close the sending end, or no reader ever sees EOF; and the
        // parent's end of the report pipe.
        send_end.close();
        theirs.close();
        let mut got = Vec::new();
        while let Some(n) = mine.recv::<u32>(bound)? {
            got.push(n);
            std::thread::sleep(Duration::from_millis(2)); // "work" on it
        }
        report_w.send(&got, bound)
    })?;
    Ok((child, report_r))
}

/// Two writers (A and B) on one pipe, each `frames` frames of `size` bytes
/// (header included), one `write` per frame as far as the pipe takes it; the
/// parent reads frames. Per writer, how many arrived whole; and the first torn
/// or corrupt frame, if any.
pub fn two_writers(
    size: usize,
    frames: usize,
    bound: Duration,
) -> anyhow::Result<(Vec<usize>, Option<String>)> {
    let tags = [b'A', b'B'];
    let (r, w) = pipe(false)?;
    let mut writers = Vec::new();
    for tag in tags {
        let mine = w.try_clone()?;
        let (r, w) = (&r, &w);
        writers.push(fork(move || -> Result<(), ConnError> {
            // Child: close the copies of the parent's ends; write on our own.
            r.close();
            w.close();
            let body = vec![tag; size - HEADER];
            for _ in 0..frames {
                match mine.send_bytes(&body, bound) {
                    Err(ConnError::PeerClosed) => return Ok(()), // the reader gave up
                    other => other?,
                }
            }
            Ok(())
        })?);
    }
    w.close(); // the writers hold the only write ends now
    let result = read_frames(&r, &tags, bound);
    r.close(); // a writer still writing gets EPIPE and stops
    for (w, tag) in writers.iter_mut().zip(tags) {
        join_expecting(w, &format!("writer {}", tag as char), bound, &[0])?;
    }
    Ok(result)
}

fn read_frames(r: &Conn, tags: &[u8], bound: Duration) -> (Vec<usize>, Option<String>) {
    let mut whole = vec![0; tags.len()];
    loop {
        let body = match r.recv_bytes(bound) {
            Ok(Some(body)) => body,
            Ok(None) => return (whole, None),
            Err(e) => return (whole, Some(e.to_string())),
        };
        match tags.iter().position(|&t| body.first() == Some(&t)) {
            Some(i) if body.iter().all(|&b| b == tags[i]) => whole[i] += 1,
            _ => {
                let n = whole.iter().sum::<usize>() + 1;
                let what = match tags.iter().filter(|t| body.contains(t)).count() {
                    0 | 1 => "another frame's header inside",
                    _ => "bytes of both writers",
                };
                return (whole, Some(format!("frame {n} is torn: {what}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn framing_is_a_big_endian_length_then_postcard() {
        // postcard writes an i64 as a zigzag varint: 2 -> 4, 64 -> 128 -> 80 01.
        assert_eq!(frame(&2i64).unwrap(), [0, 0, 0, 1, 4]);
        assert_eq!(frame(&64i64).unwrap(), [0, 0, 0, 2, 0x80, 0x01]);
        let wire = [frame(&2i64).unwrap(), frame(&64i64).unwrap()].concat();
        let bodies = split_frames(&wire).unwrap();
        assert_eq!(bodies, [&[4u8][..], &[0x80, 0x01][..]]);
        assert!(split_frames(&wire[..wire.len() - 1]).is_err());
        assert!(split_frames(&[0x41, 0x41, 0x41, 0x41]).is_err()); // 1 GB: corrupt
    }

    #[test]
    fn a_duplex_pipe_carries_values_both_ways_and_ends() {
        let (a, b) = pipe(true).unwrap();
        assert!(!b.poll(Duration::from_millis(10)).unwrap());
        a.send(&(7u32, -3i64), T).unwrap();
        b.send("back", T).unwrap();
        assert_eq!(b.recv::<(u32, i64)>(T).unwrap(), Some((7, -3)));
        assert_eq!(a.recv::<String>(T).unwrap().as_deref(), Some("back"));
        a.close();
        assert!(b.poll(T).unwrap(), "EOF counts as readable");
        assert_eq!(b.recv::<i64>(T).unwrap(), None);
        assert!(matches!(b.send(&1, T), Err(ConnError::PeerClosed)));
        assert!(matches!(a.send(&1, T), Err(ConnError::Closed)));
        assert_eq!(b.file_type().unwrap(), "socket");
    }

    #[test]
    fn a_timeout_past_any_clock_waits_never_panics() {
        // Python's poll(None) / recv() with no timeout: Duration::MAX here.
        let (a, b) = pipe(true).unwrap();
        a.send(&5i64, Duration::MAX).unwrap();
        assert!(b.poll(Duration::MAX).unwrap());
        assert_eq!(b.recv::<i64>(Duration::MAX).unwrap(), Some(5));
    }

    #[test]
    fn a_one_way_pipe_refuses_the_wrong_way_and_times_out() {
        let (r, w) = pipe(false).unwrap();
        assert_eq!(r.file_type().unwrap(), "pipe");
        assert!(matches!(r.send(&1, T), Err(ConnError::WrongWay("read"))));
        assert!(matches!(
            w.recv::<i64>(T),
            Err(ConnError::WrongWay("write"))
        ));
        let short = Duration::from_millis(20);
        assert!(matches!(
            r.recv::<i64>(short),
            Err(ConnError::RecvTimeout(_))
        ));
        // A writer that nobody reads fills the pipe, then times out.
        let big = vec![0u8; 1 << 20];
        assert!(matches!(
            w.send_bytes(&big, short),
            Err(ConnError::SendTimeout(_))
        ));
        // The last message arrives whole, then the end of the stream.
        let (r, w) = pipe(false).unwrap();
        w.send_bytes(b"abc", T).unwrap();
        drop(w);
        assert!(matches!(r.recv_bytes(T).unwrap(), Some(v) if v == b"abc"));
        assert_eq!(r.recv_bytes(T).unwrap(), None);
    }

    #[test]
    fn a_record_is_read_whole() {
        let (a, b) = packet_pair().unwrap();
        a.send(&[1u32, 2, 3], T).unwrap();
        a.send(&4u32, T).unwrap();
        assert_eq!(b.recv::<[u32; 3]>(T).unwrap(), Some([1, 2, 3]));
        assert_eq!(b.pending().unwrap(), HEADER + 1);
        assert_eq!(b.recv::<u32>(T).unwrap(), Some(4));
        drop(a);
        assert_eq!(b.recv::<u32>(T).unwrap(), None);
    }

    #[test]
    fn shares_tell_exactly_once() {
        let s = Shares {
            each: vec![vec![0, 2], vec![1, 3]],
        };
        assert!(s.exactly_once(4));
        assert!(
            !Shares {
                each: vec![vec![0, 1], vec![1, 2, 3]]
            }
            .exactly_once(4)
        );
    }
}
