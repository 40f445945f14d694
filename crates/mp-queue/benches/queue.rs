//! How fast each queue of the mp-queue lesson is, measured in one run so that the
//! ratios are fair: small messages (one `u64` each) from a child process to its
//! parent over ipc-channel, and from a thread to the main thread over
//! crossbeam-channel; the same items batched 1000 to a message; and the ping-pong
//! round trip of each.
//!
//! `cargo bench -p mp-queue` (full size), `cargo bench -p mp-queue -- --quick`
//! (a smoke run). The Python twin measures the same with
//! `python3 docs/python/05_mp_queue.py --bench`.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use common::bench::{BenchArgs, fastest, machine, progress, progress_done, rate};
use common::fork;
use common::process::Joined;
use ipc_channel::ipc::{self, IpcSender};

const BATCH: usize = 1000;
/// No wait in this benchmark is unbounded: a stopped or stuck peer is an error.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> std::process::ExitCode {
    common::bench::main(run)
}

/// Items per second and (for single items) the round trip, one row per queue.
struct Row {
    name: &'static str,
    per_second: f64,
    round_trip: Option<Duration>,
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    common::ipc::ready()?;
    let small = args.size(200_000u64, 5_000);
    let items = args.size(10_000_000u64, 200_000);
    let trips = args.size(20_000u64, 500);
    let rounds = args.size(3, 1);
    println!("mp-queue: queues between processes and between threads");
    println!("{}", machine());
    println!(
        "{small} small messages, {items} items in batches of {BATCH}, \
         {trips} round trips; best of {rounds}"
    );
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }

    progress("processes, ipc-channel, 1 item a message");
    let ipc_small = rate(small, fastest(rounds, || ipc_stream(small, 1))?);
    progress("threads, crossbeam, 1 item a message");
    let cb_small = rate(small, fastest(rounds, || crossbeam_stream(small, 1))?);
    let batches = items / BATCH as u64;
    progress("processes, ipc-channel, batches of 1000");
    let ipc_batched = rate(items, fastest(rounds, || ipc_stream(batches, BATCH))?);
    progress("threads, crossbeam, batches of 1000");
    let cb_batched = rate(items, fastest(rounds, || crossbeam_stream(batches, BATCH))?);
    progress("processes, ipc-channel, round trips");
    let ipc_rtt = fastest(rounds, || ipc_ping_pong(trips))? / trips as u32;
    progress("threads, crossbeam, round trips");
    let cb_rtt = fastest(rounds, || crossbeam_ping_pong(trips))? / trips as u32;
    progress_done();

    let rows = [
        Row {
            name: "processes, ipc-channel, 1 item a message",
            per_second: ipc_small,
            round_trip: Some(ipc_rtt),
        },
        Row {
            name: "threads, crossbeam, 1 item a message",
            per_second: cb_small,
            round_trip: Some(cb_rtt),
        },
        Row {
            name: "processes, ipc-channel, batches of 1000",
            per_second: ipc_batched,
            round_trip: None,
        },
        Row {
            name: "threads, crossbeam, batches of 1000",
            per_second: cb_batched,
            round_trip: None,
        },
    ];
    println!();
    println!("{:<42} {:>14} {:>11}", "", "items/s", "round trip");
    for row in &rows {
        let rtt = row.round_trip.map_or(String::new(), |d| {
            format!("{:.1} us", d.as_secs_f64() * 1e6)
        });
        let line = format!("{:<42} {:>14.0} {rtt:>11}", row.name, row.per_second);
        println!("{}", line.trim_end());
    }
    println!();
    println!(
        "same run: threads/processes {:.1}x for single items, {:.1}x batched",
        cb_small / ipc_small,
        cb_batched / ipc_batched
    );
    println!(
        "batching 1000 to a message speeds processes up {:.0}x",
        ipc_batched / ipc_small
    );
    println!(
        "round trip: processes/threads {:.1}x",
        ipc_rtt.as_secs_f64() / cb_rtt.as_secs_f64()
    );
    println!("every message of every run arrived, in order");
    Ok(())
}

/// A child sends `messages` messages of `batch` items to the parent; the parent
/// checks that every item arrived in order. The time until the last one arrived.
fn ipc_stream(messages: u64, batch: usize) -> anyhow::Result<Duration> {
    let (tx, rx) = ipc::channel::<Vec<u64>>()?;
    let t = Instant::now();
    // `move`: the only sender goes to the child; the parent's copy is dropped.
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: send the numbers 0.. in messages of `batch`.
        let mut next = 0u64;
        for _ in 0..messages {
            let msg: Vec<u64> = (next..next + batch as u64).collect();
            next += batch as u64;
            tx.send(msg)?;
        }
        Ok(())
    })
    .context("forking the sender")?;
    // Parent: receive and check, each wait bounded.
    let mut expect = 0u64;
    for _ in 0..messages {
        let msg = rx
            .try_recv_timeout(PATIENCE)
            .map_err(|e| anyhow!("the sending child went quiet: {e}"))?;
        if msg.first() != Some(&expect) || msg.len() != batch {
            bail!("message out of order or short");
        }
        expect += batch as u64;
    }
    let d = t.elapsed();
    finished(&mut child, "sender")?;
    Ok(d)
}

fn crossbeam_stream(messages: u64, batch: usize) -> anyhow::Result<Duration> {
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<u64>>();
    let t = Instant::now();
    let sender = spawn("sender", move || {
        let mut next = 0u64;
        for _ in 0..messages {
            let msg: Vec<u64> = (next..next + batch as u64).collect();
            next += batch as u64;
            if tx.send(msg).is_err() {
                return;
            }
        }
    })?;
    let mut expect = 0u64;
    // Ends when the thread's sender, the only one, is dropped.
    for msg in rx.iter() {
        if msg.first() != Some(&expect) || msg.len() != batch {
            bail!("crossbeam delivered out of order");
        }
        expect += batch as u64;
    }
    let d = t.elapsed();
    sender
        .join()
        .map_err(|_| anyhow!("the sender thread panicked"))?;
    if expect != messages * batch as u64 {
        bail!("crossbeam lost messages");
    }
    Ok(d)
}

/// The parent sends a number, the child sends it back, `trips` times.
///
/// The child makes the channel it reads from and hands its sending end to the
/// parent: so the parent holds the only sender of the child's input, and when
/// the parent drops it, the child's receive ends and the child exits. (A channel
/// made before the fork would leave a copy of that sender in the child, and the
/// child would wait on itself forever.)
fn ipc_ping_pong(trips: u64) -> anyhow::Result<Duration> {
    let (to_parent, from_child) = ipc::channel::<u64>()?;
    let (hand_over, handed) = ipc::channel::<IpcSender<u64>>()?;
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: make the input channel, give away its sender, keep the receiver.
        let (to_child, from_parent) = ipc::channel::<u64>()?;
        hand_over.send(to_child)?;
        drop(hand_over);
        // Echo until the parent's sender, the only one, is gone.
        loop {
            match from_parent.try_recv_timeout(PATIENCE) {
                Ok(v) => to_parent.send(v)?,
                Err(ipc_channel::TryRecvError::IpcError(ipc_channel::IpcError::Disconnected)) => {
                    return Ok(());
                }
                Err(e) => bail!("echo: {e}"),
            }
        }
    })
    .context("forking the echo")?;
    // Parent: the child's input sender arrives first.
    let to_child = handed
        .try_recv_timeout(PATIENCE)
        .map_err(|e| anyhow!("the echo child sent no channel: {e}"))?;
    drop(handed);
    let t = Instant::now();
    for i in 0..trips {
        to_child.send(i)?;
        let back = from_child
            .try_recv_timeout(PATIENCE)
            .map_err(|e| anyhow!("the echo child went quiet: {e}"))?;
        if back != i {
            bail!("echo returned {back}, sent {i}");
        }
    }
    let d = t.elapsed();
    drop(to_child); // the child's input ends here, and so does the child
    finished(&mut child, "echo")?;
    Ok(d)
}

fn crossbeam_ping_pong(trips: u64) -> anyhow::Result<Duration> {
    let (to_echo, echo_in) = crossbeam_channel::bounded::<u64>(1);
    let (echo_out, back) = crossbeam_channel::bounded::<u64>(1);
    let echo = spawn("echo", move || {
        for v in echo_in {
            if echo_out.send(v).is_err() {
                return;
            }
        }
    })?;
    let t = Instant::now();
    for i in 0..trips {
        to_echo
            .send(i)
            .map_err(|_| anyhow!("the echo thread is gone"))?;
        if back.recv_timeout(PATIENCE)? != i {
            bail!("the echo thread returned another number");
        }
    }
    let d = t.elapsed();
    drop(to_echo);
    echo.join()
        .map_err(|_| anyhow!("the echo thread panicked"))?;
    Ok(d)
}

/// The child must end by itself, promptly and with exitcode 0.
fn finished(child: &mut common::process::Child, what: &str) -> anyhow::Result<()> {
    match child.join_or_kill(Duration::from_secs(5))? {
        Joined::Finished(exit) if exit.success() => Ok(()),
        Joined::Finished(exit) => bail!("the {what} child failed: {exit}"),
        Joined::Killed(_) => bail!("the {what} child did not end within 5 s; killed"),
    }
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| anyhow!("cannot start a thread: {e}"))
}
