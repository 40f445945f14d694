//! What a Pipe costs between two processes, measured in one run so that the
//! ratios are fair: the round trip (the parent sends a `u64`, a forked child
//! sends it back) and messages per second (the child sends `u64`s, the parent
//! receives them), on `Pipe()` (socket pair) and `Pipe(duplex=False)` (pipe2),
//! each message framed (4-byte length) and encoded (postcard); beside the floor:
//! bare 8-byte `write`/`read` calls on a pipe, no framing, no encoding.
//!
//! Every side uses non-blocking fds and waits in `poll(2)` with a deadline, the
//! lesson's discipline, so a stopped peer is an error and not a hang; the floor
//! waits the same way, so the ratios measure framing and encoding.
//!
//! `cargo bench -p mp-pipe` (full size), `cargo bench -p mp-pipe -- --quick`
//! (a smoke run). The Python twin measures the same with
//! `python3 docs/python/06_mp_pipe.py --bench`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::bench::{BenchArgs, fastest, machine, progress, progress_done, rate};
use common::fork;
use mp_pipe::{ConnError, pipe};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// No wait in this benchmark is unbounded: a stopped or stuck peer is an error.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> std::process::ExitCode {
    common::bench::main(run)
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    let messages = args.size(500_000u64, 5_000);
    let trips = args.size(50_000u64, 500);
    let rounds = args.size(3, 1);
    println!("mp-pipe: Pipe between two processes, beside a bare pipe");
    println!("{}", machine());
    println!("{messages} messages one way, {trips} round trips; best of {rounds}");
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }

    progress("Pipe(), socketpair: messages one way");
    let duplex = rate(messages, fastest(rounds, || conn_stream(true, messages))?);
    progress("Pipe(duplex=False), pipe2: messages one way");
    let oneway = rate(messages, fastest(rounds, || conn_stream(false, messages))?);
    progress("raw pipe, 8-byte write/read: messages one way");
    let raw = rate(messages, fastest(rounds, || raw_stream(messages))?);
    progress("Pipe(), socketpair: round trips");
    let duplex_rtt = fastest(rounds, || conn_ping_pong(trips))? / trips as u32;
    progress("raw pipes, 8-byte write/read: round trips");
    let raw_rtt = fastest(rounds, || raw_ping_pong(trips))? / trips as u32;
    progress_done();

    println!();
    println!("{:<40} {:>12} {:>11}", "", "messages/s", "round trip");
    let us = |d: Duration| format!("{:.1} us", d.as_secs_f64() * 1e6);
    let rows = [
        (
            "Pipe(), socketpair, framed + postcard",
            duplex,
            us(duplex_rtt),
        ),
        ("Pipe(duplex=False), pipe2, same", oneway, String::new()),
        ("raw pipe, 8-byte write/read", raw, us(raw_rtt)),
    ];
    for (name, per_second, rtt) in rows {
        let line = format!("{name:<40} {per_second:>12.0} {rtt:>11}");
        println!("{}", line.trim_end());
    }
    println!();
    println!(
        "same run: raw pipe / Pipe() {:.1}x messages/s, Pipe() / raw {:.1}x round trip",
        raw / duplex,
        duplex_rtt.as_secs_f64() / raw_rtt.as_secs_f64()
    );
    println!(
        "Pipe(duplex=False) / Pipe(): {:.2}x messages/s",
        oneway / duplex
    );
    println!("every message of every run arrived, in order");
    Ok(())
}

/// The child sends `n` numbers on a [`Conn`]; the parent receives them in order.
fn conn_stream(duplex: bool, n: u64) -> anyhow::Result<Duration> {
    let (r, w) = pipe(duplex)?;
    let theirs = &r;
    let mut child = fork(move || -> Result<(), ConnError> {
        // Child: sends on w (moved here); closes its copy of the parent's end.
        theirs.close();
        (0..n).try_for_each(|i| w.send(&i, PATIENCE))
    })?;
    let t = Instant::now();
    let mut next = 0u64;
    while let Some(v) = r.recv::<u64>(PATIENCE)? {
        if v != next {
            bail!("message {next} arrived as {v}");
        }
        next += 1;
    }
    let took = t.elapsed();
    child.join_within(PATIENCE)?;
    if next != n {
        bail!("{next} of {n} messages arrived");
    }
    Ok(took)
}

/// `trips` round trips: the parent sends a number, the child sends it back.
fn conn_ping_pong(trips: u64) -> anyhow::Result<Duration> {
    let (mine, theirs) = pipe(true)?;
    let parents = &mine;
    let mut child = fork(move || -> Result<(), ConnError> {
        // Child: echo until the parent closes its end.
        parents.close();
        while let Some(v) = theirs.recv::<u64>(PATIENCE)? {
            theirs.send(&v, PATIENCE)?;
        }
        Ok(())
    })?;
    let echo = |i: u64| -> anyhow::Result<()> {
        mine.send(&i, PATIENCE)?;
        match mine.recv::<u64>(PATIENCE)? {
            Some(v) if v == i => Ok(()),
            other => bail!(
                "sent {i}, got back {}",
                other.map_or("EOF".into(), |v| v.to_string())
            ),
        }
    };
    echo(u64::MAX)?; // the child is up and answering
    let t = Instant::now();
    (0..trips).try_for_each(echo)?;
    let took = t.elapsed();
    mine.close();
    child.join_within(PATIENCE)?;
    Ok(took)
}

/// The floor: the child writes `n` 8-byte messages, one `write` each; the parent
/// reads 8 bytes a `read`.
fn raw_stream(n: u64) -> anyhow::Result<Duration> {
    let (r, w) = raw_pipe()?;
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: writes on w (moved here); r is the parent's, unused here.
        (0..n).try_for_each(|i| write8(w.as_fd(), i))
    })?;
    let t = Instant::now();
    for i in 0..n {
        let v = read8(r.as_fd())?;
        if v != i {
            bail!("message {i} arrived as {v}");
        }
    }
    let took = t.elapsed();
    child.join_within(PATIENCE)?;
    Ok(took)
}

/// The floor of a round trip: two pipes, 8 bytes each way.
fn raw_ping_pong(trips: u64) -> anyhow::Result<Duration> {
    let (to_child_r, to_child_w) = raw_pipe()?;
    let (to_parent_r, to_parent_w) = raw_pipe()?;
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: echo `trips + 1` messages (one to say it is up).
        for _ in 0..=trips {
            let v = read8(to_child_r.as_fd())?;
            write8(to_parent_w.as_fd(), v)?;
        }
        Ok(())
    })?;
    let echo = |i: u64| -> anyhow::Result<()> {
        write8(to_child_w.as_fd(), i)?;
        let v = read8(to_parent_r.as_fd())?;
        if v != i {
            bail!("sent {i}, got back {v}");
        }
        Ok(())
    };
    echo(u64::MAX)?;
    let t = Instant::now();
    (0..trips).try_for_each(echo)?;
    let took = t.elapsed();
    child.join_within(PATIENCE)?;
    Ok(took)
}

fn raw_pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("pipe2")
}

fn write8(fd: BorrowedFd<'_>, v: u64) -> anyhow::Result<()> {
    let bytes = v.to_ne_bytes();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match nix::unistd::write(fd, &bytes) {
            // 8 <= PIPE_BUF: a write is all or nothing (pipe(7)).
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLOUT, deadline)?,
            Err(Errno::EINTR) => {}
            Err(e) => bail!("write: {e}"),
        }
    }
}

fn read8(fd: BorrowedFd<'_>) -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    let mut got = 0;
    let deadline = Instant::now() + PATIENCE;
    while got < 8 {
        match nix::unistd::read(fd, &mut bytes[got..]) {
            Ok(0) => bail!("the writer is gone"),
            Ok(n) => got += n,
            Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLIN, deadline)?,
            Err(Errno::EINTR) => {}
            Err(e) => bail!("read: {e}"),
        }
    }
    Ok(u64::from_ne_bytes(bytes))
}

fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: Instant) -> anyhow::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!(
            "the peer did nothing for {} s (stopped or stuck)",
            PATIENCE.as_secs()
        );
    }
    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, events)];
    match nix::poll::poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => bail!("poll: {e}"),
    }
}
