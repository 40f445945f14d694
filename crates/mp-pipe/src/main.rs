//! # mp-pipe: how do two processes talk through a Pipe, and when does it end?
//!
//! **Question.** `multiprocessing.Pipe()` gives two ends. How does a parent and a
//! forked child talk through them, both ways? When does `recv()` learn that the
//! other side is done, and what goes wrong when two processes use one end?
//!
//! **Python twin** (`docs/python/06_mp_pipe.py`): `Pipe()`, `Pipe(duplex=False)`,
//! `conn.send/recv/poll(timeout)`, `EOFError`, `conn.close()` after the fork. Here
//! an end is a [`mp_pipe::Conn`] on a real `socketpair(AF_UNIX, SOCK_STREAM)` or
//! `pipe2()`; messages are a 4-byte length and postcard (Python: pickle).
//!
//! **Run.** `cargo run -p mp-pipe` (`--help`: `--numbers 2,3,8 --messages 12
//! --ascii`). Round trips and messages per second: `cargo bench -p mp-pipe`.
//!
//! **Expected output** (PIDs and fd numbers vary; so does who gets which message
//! in step 6, and whether, and where, a big frame is torn in step 7):
//! ```text
//! [1] Pipe(): the parent sends numbers, a child sends back squares
//!     socketpair(AF_UNIX, SOCK_STREAM): fd 3 (socket), fd 4 (socket)
//!     poll(0.1) before the first send: False
//!     got [4, 9, 64] from pid 2963; the child: exitcode 0
//! [2] Pipe(duplex=False): one way only, on a real pipe
//!     r, w = pipe2(): fd 3 reads (pipe), fd 4 writes (pipe)
//!     r.send(1): connection is read-only
//!     r.recv() until EOFError: [4, 9, 64]; the child: exitcode 0
//! [3] EOFError needs every copy of the write end closed: the parent's
//!     the child wrote [4, 9, 64] and ended (exitcode 0)
//!     no EOF after 1 s: the parent still holds the write end
//!     after w.close() in the parent: recv() raises EOFError at once
//! [4] EOFError needs every copy closed: the child's copy of w too
//!     kept w: child pid 2966 got [4, 9, 64], then no EOF
//!       after 1 s: it holds a write end itself
//!     closed w: child pid 2967 got [4, 9, 64], then EOF
//! [5] no feeder thread, no lock: send() writes in the caller
//!     after 3 sends: 1 thread here; 15 bytes in the socket
//!     send(2) wrote 00 00 00 01 04: length, then postcard
//!     (Python's Queue.put hands objects to a feeder thread; a Pipe does not)
//! [6] two processes read one end: 12 messages
//!     reader A (pid 2968): ...
//!     reader B (pid 2969): ...
//! [7] two processes write one pipe, about 256 KiB each
//!     4096-byte frames: A 64 and B 64 whole: writes <= PIPE_BUF are atomic
//!     65540-byte frames: A 1 and B 0 whole...
//! ```
//!
//! **Notice.** `recv()` ends only when every copy of the other end, in every
//! process, is closed: fork copies every fd, so each process closes the ends it
//! does not use. A Pipe has no feeder thread and no lock: `send` writes in the
//! caller, and two processes on one end race for (or tear) its messages.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use common::output::{CommonArgs, List, check_numbers};
use common::{Lesson, fork};
use mp_pipe::{Conn, ConnError, HEADER, NO_EOF, PIPE_BUF, Shares};
use mp_pipe::{fork_eof_reader, fork_reader, hex, join_expecting, packet_pair, pipe, py_bool};
use mp_pipe::{read_until_eof, split_frames, two_writers};

#[derive(Parser, Debug)]
#[command(about = "multiprocessing.Pipe: both ways, poll, EOF, two processes on one end")]
struct Args {
    /// The numbers the parent sends; the child squares them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8",
        allow_negative_numbers = true
    )]
    numbers: Vec<i64>,
    /// Messages the two readers of one end share.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    messages: u32,
    #[command(flatten)]
    common: CommonArgs,
}

/// The watchdog: how long the lesson waits before it calls a missing EOF a hang.
const WATCHDOG: Duration = Duration::from_secs(1);
/// The bound on every wait that should succeed: past it, a peer is stuck or stopped.
const BOUND: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> Result<std::process::ExitCode> {
    check_numbers(&args.numbers, 100, 2).map_err(anyhow::Error::msg)?;
    let squares: Vec<i64> = args.numbers.iter().map(|n| n * n).collect();
    let mut lesson = Lesson::start(
        "mp-pipe",
        "how do two processes talk through a Pipe? when does it end?",
        "multiprocessing.Pipe(), send/recv/poll, EOFError, close()",
        &args.common,
    );
    both_ways(&mut lesson, &args.numbers, &squares)?;
    one_way(&mut lesson, &squares)?;
    parent_keeps_the_write_end(&mut lesson, &squares)?;
    child_keeps_the_write_end(&mut lesson, &squares)?;
    no_feeder_no_lock(&mut lesson, &args.numbers)?;
    two_readers_one_end(&mut lesson, args.messages)?;
    two_writers_one_pipe(&mut lesson)?;
    Ok(lesson.finish())
}

fn both_ways(lesson: &mut Lesson, numbers: &[i64], squares: &[i64]) -> Result<()> {
    lesson.step("Pipe(): the parent sends numbers, a child sends back squares");
    let (parent_end, child_end) = pipe(true)?;
    let (a, b) = (parent_end.file_type()?, child_end.file_type()?);
    let (pf, cf) = (fd(&parent_end), fd(&child_end));
    let line = format!("socketpair(AF_UNIX, SOCK_STREAM): fd {pf} ({a}), fd {cf} ({b})");
    lesson.say(line);
    let theirs = &parent_end;
    // `move`: child_end goes to the child; in the parent, fork() drops the closure
    // and with it the parent's copy of child_end.
    let mut child = fork(move || -> Result<(), ConnError> {
        // Child: fork copied the parent's end too; close that copy, keep ours.
        theirs.close();
        while let Some(n) = child_end.recv::<i64>(BOUND)? {
            child_end.send(&(std::process::id(), n * n), BOUND)?;
        }
        Ok(()) // EOFError: the parent closed its end
    })?;
    // Parent: nothing was sent yet, so nothing can come back yet.
    let early = parent_end.poll(Duration::from_millis(100))?;
    let said = py_bool(early);
    lesson.say(format!("poll(0.1) before the first send: {said}"));
    let (mut got, mut pids) = (Vec::new(), Vec::new());
    for n in numbers {
        parent_end.send(n, BOUND)?;
        let replied = parent_end.poll(BOUND)?; // True: a reply is there (or EOF)
        ensure!(
            replied,
            "no reply within {} s: the child is stuck",
            BOUND.as_secs()
        );
        let reply = parent_end.recv::<(u32, i64)>(BOUND)?;
        let (pid, sq) = reply.context("the child hung up")?;
        got.push(sq);
        pids.push(pid as i32);
    }
    parent_end.close(); // the child's recv() now sees the end of the stream
    let exit = join_expecting(&mut child, "the child", BOUND, &[0])?;
    let line = format!("got {} from pid {}; the child: {exit}", List(&got), pids[0]);
    lesson.say(line);
    lesson.check_eq("the parent got back", List(&got), List(squares));
    let by_child = pids.iter().all(|&p| p == child.pid()) && exit.success();
    let claim = "each reply came from the child, which ended at EOF";
    lesson.check(claim, by_child);
    let claim = "poll(0.1) said False before the first send";
    lesson.check(claim, !early);
    let claim = "both ends are sockets (fstat)";
    lesson.check(claim, (a, b) == ("socket", "socket"));
    Ok(())
}

fn one_way(lesson: &mut Lesson, squares: &[i64]) -> Result<()> {
    lesson.step("Pipe(duplex=False): one way only, on a real pipe");
    let (r, w) = pipe(false)?;
    let (a, b) = (r.file_type()?, w.file_type()?);
    let (rf, wf) = (fd(&r), fd(&w));
    let line = format!("r, w = pipe2(): fd {rf} reads ({a}), fd {wf} writes ({b})");
    lesson.say(line);
    let refused = r.send(&1i64, BOUND);
    let why = refused
        .as_ref()
        .err()
        .map_or("sent".into(), ToString::to_string);
    lesson.say(format!("r.send(1): {why}"));
    let theirs = &r;
    let mut child = fork(move || -> Result<(), ConnError> {
        // Child: writes on w (moved here); closes its copy of the parent's r.
        theirs.close();
        squares.iter().try_for_each(|sq| w.send(sq, BOUND))
    })?;
    // Parent: w went with the closure, so the child holds the only write end.
    let mut got = Vec::new();
    while let Some(v) = r.recv::<i64>(BOUND)? {
        got.push(v);
    }
    let exit = join_expecting(&mut child, "the child", BOUND, &[0])?;
    let line = format!("r.recv() until EOFError: {}; the child: {exit}", List(&got));
    lesson.say(line);
    lesson.check_eq("received until EOF", List(&got), List(squares));
    let wrong_way = matches!(refused, Err(ConnError::WrongWay(_)));
    lesson.check("the read end refuses to send", wrong_way);
    lesson.check("both ends are one pipe (fstat)", (a, b) == ("pipe", "pipe"));
    Ok(())
}

fn parent_keeps_the_write_end(lesson: &mut Lesson, squares: &[i64]) -> Result<()> {
    lesson.step("EOFError needs every copy of the write end closed: the parent's");
    let (r, w) = pipe(false)?;
    let (theirs, kept) = (&r, &w);
    // The bug: the closure borrows w instead of taking it, so the parent keeps
    // its copy (Python: no `w.close()` after `p.start()`).
    let mut child = fork(move || -> Result<(), ConnError> {
        // Child: closes the read end it does not use; writes on its copy of w.
        theirs.close();
        squares.iter().try_for_each(|sq| kept.send(sq, BOUND))
    })?;
    // The child wrote everything and is gone.
    let exit = join_expecting(&mut child, "the child", BOUND, &[0])?;
    let (got, eof) = read_until_eof(&r, squares.len(), WATCHDOG, BOUND)?;
    lesson.say(format!("the child wrote {} and ended ({exit})", List(&got)));
    let secs = WATCHDOG.as_secs();
    let line = format!("no EOF after {secs} s: the parent still holds the write end");
    lesson.say(line);
    lesson.broken("recv() would wait forever: for the parent's own w");
    let before = !eof && got == squares;
    w.close(); // the fix (Python: `w.close()` in the parent)
    let after = r.recv::<i64>(BOUND)?;
    lesson.say("after w.close() in the parent: recv() raises EOFError at once");
    let claim = "no EOF while the parent held w; EOF once it closed it";
    lesson.check(claim, before && after.is_none());
    Ok(())
}

fn child_keeps_the_write_end(lesson: &mut Lesson, squares: &[i64]) -> Result<()> {
    lesson.step("EOFError needs every copy closed: the child's copy of w too");
    let mut exits = Vec::new();
    for (close_w, who) in [(false, "the kept-w child"), (true, "the closed-w child")] {
        let (r, w) = pipe(false)?;
        // Child (see fork_eof_reader): reads r until EOF; closes its w or not.
        let mut child = fork_eof_reader(r, &w, close_w, squares.len(), WATCHDOG, BOUND)?;
        // Parent: send, then close the parent's w: only the child's copy is left.
        squares.iter().try_for_each(|sq| w.send(sq, BOUND))?;
        w.close();
        // NO_EOF: it waited for itself (the point); 0: EOF (a failed claim if kept).
        let exit = join_expecting(&mut child, who, BOUND + WATCHDOG, &[0, NO_EOF])?;
        exits.push(exit);
    }
    lesson.broken("the child that kept w waited for itself");
    let (kept, closed) = (&exits[0], &exits[1]);
    let claim = format!("kept w: no EOF ({kept}); closed w: EOF ({closed})");
    lesson.check(claim, kept.code == NO_EOF && closed.success());
    Ok(())
}

fn no_feeder_no_lock(lesson: &mut Lesson, numbers: &[i64]) -> Result<()> {
    lesson.step("no feeder thread, no lock: send() writes in the caller");
    let (a, b) = pipe(true)?;
    for n in numbers {
        a.send(n, BOUND)?;
    }
    let threads = common::process::thread_count()?;
    let queued = b.pending()?; // FIONREAD: bytes in the kernel, not yet read
    let wire = b.read_raw(queued)?;
    let bodies = split_frames(&wire)?;
    let decoded: Vec<i64> = bodies
        .iter()
        .filter_map(|m| postcard::from_bytes(m).ok())
        .collect();
    let n = numbers.len();
    let line = format!("after {n} sends: {threads} thread here; {queued} bytes in the socket");
    lesson.say(line);
    let first = hex(&wire[..HEADER + bodies[0].len()]);
    let line = format!("send({}) wrote {first}: length, then postcard", numbers[0]);
    lesson.say(line);
    lesson.say("(Python's Queue.put hands objects to a feeder thread; a Pipe does not)");
    let claim = "send() ran in this thread; its bytes were in the kernel on return";
    lesson.check(claim, threads == 1 && decoded == numbers);
    Ok(())
}

fn two_readers_one_end(lesson: &mut Lesson, messages: u32) -> Result<()> {
    lesson.step(&format!("two processes read one end: {messages} messages"));
    // SOCK_SEQPACKET: one read takes one whole record, so readers race for whole
    // messages. (On a stream, a reader's two reads can be split by the other's.)
    let (send_end, recv_end) = packet_pair()?;
    let a = fork_reader(&send_end, &recv_end, BOUND)?;
    let b = fork_reader(&send_end, &recv_end, BOUND)?;
    drop(recv_end); // Parent: sends only
    for i in 0..messages {
        send_end.send(&i, BOUND)?;
    }
    send_end.close(); // both readers see EOF once the records are taken
    let mut shares = Shares::default();
    for ((mut child, report), name) in [a, b].into_iter().zip(["A", "B"]) {
        let got: Vec<u32> = report.recv(BOUND)?.context("a reader ended silently")?;
        let exit = join_expecting(&mut child, &format!("reader {name}"), BOUND, &[0])?;
        let (pid, got_list) = (child.pid(), List(&got));
        let line = format!("reader {name} (pid {pid}): {got_list} ({exit})");
        lesson.say(line);
        shares.each.push(got);
    }
    let claim = "each message went, whole, to exactly one reader";
    lesson.check(claim, shares.exactly_once(messages));
    Ok(())
}

fn two_writers_one_pipe(lesson: &mut Lesson) -> Result<()> {
    lesson.step("two processes write one pipe, about 256 KiB each");
    for size in [PIPE_BUF, 64 * 1024 + HEADER] {
        let frames = (256 * 1024usize).div_ceil(size); // 64 x 4096 B, 4 x 65540 B
        // Children (see two_writers): A and B, one write per frame.
        let (whole, torn) = two_writers(size, frames, BOUND)?;
        let (a, b) = (whole[0], whole[1]);
        let line = format!("{size}-byte frames: A {a} and B {b} whole");
        match (&torn, size <= PIPE_BUF) {
            (None, true) => lesson.say(format!("{line}: writes <= PIPE_BUF are atomic")),
            (None, false) => lesson.say(format!("{line}: none torn this time (luck)")),
            (Some(what), _) => lesson.say(format!("{line}; then {what}")),
        }
        if size <= PIPE_BUF {
            let claim = format!("every {size}-byte frame arrived whole (pipe(7): PIPE_BUF)");
            lesson.check(claim, torn.is_none() && whole == [frames, frames]);
        } else if torn.is_some() {
            lesson.broken("bigger writes interleave: the stream is corrupt");
        }
    }
    Ok(())
}

fn fd(c: &Conn) -> String {
    c.fd().map_or("closed".into(), |fd| fd.to_string())
}
