//! `--bench`: how fast each queue is, measured in one run so the ratios are fair.
//! Small messages (one `u64` each) child to parent over ipc-channel, and thread to
//! thread over crossbeam-channel; the same items batched 1000 to a message; and
//! the ping-pong round trip of each. Issue 4's targets on 2 cores: at least 400,000
//! small messages per second between processes (DESIGN.md's anchors: Python's
//! `multiprocessing.Queue` 82,000, ipc-channel 565,000, a raw pipe 1.6 million) and
//! at least 10 million items per second batched.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{Lesson, fork};
use ipc_channel::ipc;

const BATCH: usize = 1000;

pub fn run(lesson: &mut Lesson, scale: f64) -> anyhow::Result<()> {
    let small = ((200_000.0 * scale) as u64).max(1000);
    let items = ((10_000_000.0 * scale) as u64).max(BATCH as u64) / BATCH as u64 * BATCH as u64;
    let trips = ((20_000.0 * scale) as u64).max(100);
    lesson.step(&format!(
        "benchmark: {small} small messages, {items} items in batches of {BATCH}, {trips} round trips"
    ));

    let ipc_small = rate(small, ipc_stream(small, 1)?);
    let cb_small = rate(small, crossbeam_stream(small, 1));
    let ipc_batched = rate(items, ipc_stream(items / BATCH as u64, BATCH)?);
    let cb_batched = rate(items, crossbeam_stream(items / BATCH as u64, BATCH));
    let ipc_rtt = ipc_ping_pong(trips)?;
    let cb_rtt = crossbeam_ping_pong(trips);

    lesson.say(format!(
        "{:<44} {:>16} {:>14}",
        "", "items per second", "round trip"
    ));
    for (name, r, rtt) in [
        (
            "processes, ipc-channel, 1 item a message",
            ipc_small,
            Some(ipc_rtt),
        ),
        (
            "threads, crossbeam, 1 item a message",
            cb_small,
            Some(cb_rtt),
        ),
        ("processes, ipc-channel, batches of 1000", ipc_batched, None),
        ("threads, crossbeam, batches of 1000", cb_batched, None),
    ] {
        let rtt = rtt.map_or(String::new(), |d| {
            format!("{:.2} us", d.as_secs_f64() * 1e6)
        });
        lesson.say(format!("{name:<44} {r:>16.0} {rtt:>14}"));
    }
    lesson.say(format!(
        "same run: threads/processes {:.1}x for single items; batching speeds processes up {:.0}x",
        cb_small / ipc_small,
        ipc_batched / ipc_small
    ));
    lesson.say(
        "targets: processes >= 400000 msg/s (Python mp.Queue 82000), batched >= 10000000 items/s",
    );
    if cfg!(debug_assertions) {
        lesson.say(
            "unoptimised build: run `cargo run --release -p mp-queue -- --bench` for real figures",
        );
    }
    lesson.check("every message of every run arrived, in order", true);
    Ok(())
}

fn rate(items: u64, d: Duration) -> f64 {
    items as f64 / d.as_secs_f64()
}

/// A child sends `messages` messages of `batch` items to the parent; the parent
/// checks every item arrived in order. Returns the time until the last one arrived.
fn ipc_stream(messages: u64, batch: usize) -> anyhow::Result<Duration> {
    let (tx, rx) = ipc::channel::<Vec<u64>>()?;
    let t = Instant::now();
    let mut child = fork(move || -> anyhow::Result<()> {
        let mut next = 0u64;
        for _ in 0..messages {
            let msg: Vec<u64> = (next..next + batch as u64).collect();
            next += batch as u64;
            tx.send(msg)?;
        }
        Ok(())
    })
    .context("forking the sender")?;
    let mut expect = 0u64;
    for _ in 0..messages {
        let msg = rx
            .try_recv_timeout(Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("recv: {e}"))?;
        if msg.first() != Some(&expect) || msg.len() != batch {
            bail!("message out of order or short");
        }
        expect += batch as u64;
    }
    let d = t.elapsed();
    let exit = child.join()?;
    if !exit.success() {
        bail!("the sender failed: {exit}");
    }
    Ok(d)
}

fn crossbeam_stream(messages: u64, batch: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<u64>>();
    let t = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut next = 0u64;
        for _ in 0..messages {
            let msg: Vec<u64> = (next..next + batch as u64).collect();
            next += batch as u64;
            let _ = tx.send(msg);
        }
    });
    let mut expect = 0u64;
    for msg in rx.iter() {
        assert_eq!(
            msg.first(),
            Some(&expect),
            "crossbeam delivered out of order"
        );
        expect += batch as u64;
    }
    let d = t.elapsed();
    sender.join().expect("sender thread");
    assert_eq!(expect, messages * batch as u64, "crossbeam lost messages");
    d
}

/// Parent sends a number, the child sends it back, `trips` times.
fn ipc_ping_pong(trips: u64) -> anyhow::Result<Duration> {
    let (to_child, from_parent) = ipc::channel::<u64>()?;
    let (to_parent, from_child) = ipc::channel::<u64>()?;
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: echo until the parent's sender is gone.
        while let Ok(v) = from_parent.recv() {
            to_parent.send(v)?;
        }
        Ok(())
    })
    .context("forking the echo")?;
    let t = Instant::now();
    for i in 0..trips {
        to_child.send(i)?;
        let back = from_child
            .recv()
            .map_err(|e| anyhow::anyhow!("recv: {e}"))?;
        if back != i {
            bail!("echo returned {back}, sent {i}");
        }
    }
    let d = t.elapsed() / trips as u32;
    drop(to_child);
    child.join_or_kill(Duration::from_secs(5))?;
    Ok(d)
}

fn crossbeam_ping_pong(trips: u64) -> Duration {
    let (to_echo, echo_in) = crossbeam_channel::bounded::<u64>(1);
    let (echo_out, back) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        for v in echo_in {
            let _ = echo_out.send(v);
        }
    });
    let t = Instant::now();
    for i in 0..trips {
        to_echo.send(i).expect("echo thread alive");
        assert_eq!(back.recv().expect("echo reply"), i);
    }
    let d = t.elapsed() / trips as u32;
    drop(to_echo);
    echo.join().expect("echo thread");
    d
}
