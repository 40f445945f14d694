//! # mp-queue: how do processes pass values, and how does a queue go wrong?
//!
//! **Question.** A child process computes squares. How does it hand them to the
//! parent through a queue, how is that different from a queue between threads, and
//! what are the classic ways to get it wrong?
//!
//! **Python twin** (`docs/python/04_mp_queue.py`): `multiprocessing.Queue` filled by a
//! `Process` (`q.put`, `q.get`), beside `queue.Queue` between threads; the seeds'
//! `while not q.empty()` loop; the docs' "joining processes that use queues"
//! deadlock. In Rust the process queue is an `ipc_channel::ipc::channel` (a Unix
//! socket pair, values serialised with postcard), made before the fork; the thread
//! queue is a `crossbeam_channel` (values moved, nothing serialised).
//!
//! **Run.** `cargo run -p mp-queue` (`--help`: `--numbers 2,3,8 --big-bytes 1000000
//! --producers 3 --ascii`).
//!
//! **Expected output** (PIDs vary; the interleaving of producers varies):
//! ```text
//! [1] a child process puts squares on a queue; the parent gets them
//!     process queue (ipc-channel): got [4, 9, 64] from pid 5121
//!     thread queue (crossbeam):    got [4, 9, 64] from tid 5122
//! [2] a crossbeam channel made before fork does not cross processes
//!     nothing arrived in 500 ms; the child's copy of the channel holds 3 messages
//! [3] empty() is not the end of the stream
//!     while not q.empty(): got []   (the child had not sent yet)
//!     until every sender is gone: got [4, 9, 64]
//!     until the None sentinel:    got [4, 9, 64]
//!     the parent kept a sender: got 3 values; the child ended (exitcode 0); then nothing in 500ms: recv() would wait forever
//! [4] join before drain: the child sends 1000000 bytes
//!     join first: the child was still blocked in send after 2 s: would deadlock
//!     drain first: got 1000000 bytes, then joined: exitcode 0
//! [5] 3 producers, 5 items each, one queue
//!     arrival: A0 B0 C0 A1 B1 C1 ...
//! ```
//!
//! **Notice.** The process queue carries *copies* (serialised bytes through the
//! kernel); the thread queue moves values within one address space. A receiver
//! learns that the stream ended only when every sender, in every process, is gone.
//! A child blocked in `send` never exits, so joining it before reading waits forever.

use common::output::List;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::output::{CommonArgs, check_numbers};
use common::process::Joined;
use common::shm::Gate;
use common::{Lesson, fork};
use ipc_channel::ipc::{self, IpcReceiver};
use ipc_channel::{IpcError, TryRecvError};

#[derive(Parser, Debug)]
#[command(about = "multiprocessing.Queue vs queue.Queue, and the queue pitfalls")]
struct Args {
    /// The numbers the child squares.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8",
        allow_negative_numbers = true
    )]
    numbers: Vec<i64>,
    /// Size of the large result in the join-before-drain demo.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=64_000_000))]
    big_bytes: u64,
    /// Producers in the several-producers demo.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=26))]
    producers: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// How long the demos wait before they call something a hang.
const PATIENCE: Duration = Duration::from_millis(500);

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let numbers = &args.numbers;
    check_numbers(numbers, 1000, 2).map_err(anyhow::Error::msg)?;
    let squares: Vec<i64> = numbers.iter().map(|n| n * n).collect();
    let mut lesson = Lesson::start(
        "mp-queue",
        "how do processes pass values through a queue, and how does it go wrong?",
        "multiprocessing.Queue (put/get) vs queue.Queue, q.empty(), join before get",
        &args.common,
    );
    process_vs_thread_queue(&mut lesson, numbers, &squares)?;
    crossbeam_across_fork(&mut lesson, &squares)?;
    end_of_stream(&mut lesson, &squares)?;
    join_before_drain(&mut lesson, args.big_bytes)?;
    several_producers(&mut lesson, args.producers)?;

    Ok(lesson.finish())
}

fn process_vs_thread_queue(
    lesson: &mut Lesson,
    numbers: &[i64],
    squares: &[i64],
) -> anyhow::Result<()> {
    lesson.step("a child process puts squares on a queue; the parent gets them");
    // The channel exists before the fork, so both processes hold both ends.
    let (tx, rx) = ipc::channel::<(u32, i64)>()?;
    // `move`: the sender goes to the child. In the parent, fork() drops the closure
    // and with it the parent's copy of the sender, so only the child holds one.
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: q.put(n * n) for each number.
        for &n in numbers {
            tx.send((std::process::id(), n * n))?;
        }
        Ok(())
    })
    .context("forking the producer")?;
    let (got, from) = drain(&rx)?;
    let exit = child.join()?;
    lesson.say(format!(
        "process queue (ipc-channel): got {got:?} from pid {from:?}"
    ));
    lesson.check_eq(
        "values the parent got from the child",
        List(got.as_slice()),
        List(squares),
    );
    lesson.check(
        format!(
            "they came from the child (pid {}), which then ended with {exit}",
            child.pid()
        ),
        from == [child.pid() as u32] && exit.success(),
    );

    let (ttx, trx) = crossbeam_channel::unbounded::<(i32, i64)>();
    let thread_numbers = numbers.to_vec();
    let producer = std::thread::spawn(move || {
        let tid = nix::unistd::gettid().as_raw();
        for &n in &thread_numbers {
            let _ = ttx.send((tid, n * n));
        }
    });
    // The iterator ends when the only sender (moved into the thread) is dropped.
    let (tids, tgot): (Vec<i32>, Vec<i64>) = trx.iter().unzip();
    producer.join().expect("producer thread");
    lesson.say(format!(
        "thread queue (crossbeam):    got {tgot:?} from tid {}",
        tids[0]
    ));
    lesson.check_eq(
        "values the main thread got from the thread",
        List(tgot.as_slice()),
        List(squares),
    );
    Ok(())
}

fn crossbeam_across_fork(lesson: &mut Lesson, squares: &[i64]) -> anyhow::Result<()> {
    lesson.step("a crossbeam channel made before fork does not cross processes");
    let (ctx, crx) = crossbeam_channel::unbounded::<i64>();
    let keep = ctx.clone(); // the parent keeps a sender, as real code would
    let sent = squares.to_vec();
    let mut child = fork(move || {
        // Child: sends into *its copy* of the channel, in its own memory.
        for &sq in &sent {
            let _ = ctx.send(sq);
        }
        println!(
            "    child pid {}: sent {} values; my copy of the channel holds {}",
            std::process::id(),
            sent.len(),
            ctx.len()
        );
    })?;
    let arrived = crx.recv_timeout(PATIENCE);
    child.join()?;
    drop(keep);
    lesson.say(format!(
        "parent: nothing arrived in {PATIENCE:?}; the parent's channel holds {}",
        crx.len()
    ));
    lesson.broken(
        "a crossbeam channel is memory in one process: fork copies it, it does not connect it",
    );
    lesson.check(
        "nothing crossed: the parent's recv timed out",
        arrived.is_err(),
    );
    Ok(())
}

fn end_of_stream(lesson: &mut Lesson, squares: &[i64]) -> anyhow::Result<()> {
    lesson.step("empty() is not the end of the stream");
    // The child does "some work" (waits for `go`) before its first put, so the
    // queue starts empty; the gate makes that certain rather than likely.
    let go = Gate::new()?;
    let slow_child = |tx: ipc::IpcSender<Option<i64>>, sentinel: bool| {
        let (squares, go) = (squares.to_vec(), &go);
        fork(move || -> anyhow::Result<()> {
            // Child: q.put() each square once told to go, then maybe the sentinel.
            if !go.wait(Duration::from_secs(10)) {
                bail!("never told to go");
            }
            for sq in squares {
                tx.send(Some(sq))?;
            }
            if sentinel {
                tx.send(None)?; // Python: q.put(None)
            }
            Ok(())
        })
    };
    // (a) The seeds' loop: `while not q.empty(): q.get()`.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let mut child = slow_child(tx, false)?;
    let mut early = Vec::new();
    while let Ok(Some(v)) = rx.try_recv() {
        early.push(v);
    }
    go.open(); // the child's work is done: it starts putting now
    lesson.say(format!(
        "while not q.empty(): got {early:?}   (the child had not sent yet)"
    ));
    lesson.broken("empty() only says 'nothing right now'; the loop ended before the data came");
    lesson.check_eq(
        "what the empty()-loop got while the child was still working",
        List(early.as_slice()),
        List(&[]),
    );
    // (b) Receive until every sender is gone.
    let mut all = Vec::new();
    while let Some(v) = recv_or_end(&rx, Duration::from_secs(10))? {
        all.extend(v);
    }
    child.join()?;
    lesson.say(format!("until every sender is gone: got {all:?}"));
    lesson.check_eq(
        "values received until the senders closed",
        List(all.as_slice()),
        List(squares),
    );
    // (c) Receive until a sentinel.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let mut child = slow_child(tx, true)?;
    let mut until_none = Vec::new();
    while let Some(Some(v)) = recv_or_end(&rx, Duration::from_secs(10))? {
        until_none.push(v);
    }
    child.join()?;
    lesson.say(format!("until the None sentinel:    got {until_none:?}"));
    lesson.check_eq(
        "values received until the sentinel",
        List(until_none.as_slice()),
        List(squares),
    );
    // (d) Without a sentinel, a sender left open anywhere means recv never ends.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let kept = tx.clone(); // the mistake: the parent keeps a sender it never uses
    let mut child = slow_child(tx, false)?;
    let mut n = 0;
    while n < squares.len() && recv_or_end(&rx, Duration::from_secs(10))?.is_some() {
        n += 1;
    }
    let exit = child.join()?; // the child has sent everything and is gone...
    // ...yet the stream does not end: the parent's own sender keeps it open.
    let ended = !matches!(rx.try_recv_timeout(PATIENCE), Err(TryRecvError::Empty));
    drop(kept);
    lesson.say(format!(
        "the parent kept a sender: got {n} values; the child ended ({exit}); \
         then nothing in {PATIENCE:?}: recv() would wait forever"
    ));
    lesson.check(
        "with a sender left open, the end of the stream never came",
        !ended && n == squares.len(),
    );
    Ok(())
}

fn join_before_drain(lesson: &mut Lesson, big_bytes: u64) -> anyhow::Result<()> {
    lesson.step(&format!(
        "join before drain: the child sends {big_bytes} bytes"
    ));
    let big = big_bytes as usize;
    let big_child = || -> anyhow::Result<(common::process::Child, IpcReceiver<Vec<u8>>)> {
        let (tx, rx) = ipc::channel::<Vec<u8>>()?;
        let child = fork(move || -> anyhow::Result<()> {
            // Child: one large result; send blocks while the socket buffer is full.
            tx.send(vec![b'X'; big])?;
            Ok(())
        })?;
        Ok((child, rx))
    };
    // Wrong order: p.join() before q.get(), under a watchdog.
    let (mut child, rx) = big_child()?;
    let joined = child.join_or_kill(Duration::from_secs(2))?;
    drop(rx);
    match &joined {
        Joined::Killed(exit) => lesson.say(format!(
            "join first: the child was still blocked in send after 2 s: would deadlock (killed: {exit})"
        )),
        Joined::Finished(exit) => lesson.say(format!("join first: the child finished ({exit}): the result fit in the socket buffer")),
    }
    if matches!(joined, Joined::Killed(_)) {
        lesson.broken(
            "the parent waits for the child to exit, the child waits for the parent to read",
        );
    }
    // Right order: q.get(), then p.join().
    let (mut child, rx) = big_child()?;
    let got = rx
        .try_recv_timeout(Duration::from_secs(10))
        .map(|v| v.len());
    let exit = child.join_or_kill(Duration::from_secs(10))?;
    lesson.say(format!(
        "drain first: got {:?} bytes, then joined: {exit:?}",
        got.as_ref().ok()
    ));
    lesson.check(
        format!("draining first: {big} bytes arrived and the child ended with exitcode 0"),
        matches!(got, Ok(n) if n == big)
            && exit
                == Joined::Finished(common::Exit {
                    code: 0,
                    panic: None,
                }),
    );
    if big >= 1_000_000 {
        lesson.check(
            "joining first was caught as a deadlock (the child was killed)",
            matches!(joined, Joined::Killed(_)),
        );
    }
    Ok(())
}

fn several_producers(lesson: &mut Lesson, producers: u64) -> anyhow::Result<()> {
    lesson.step(&format!("{producers} producers, 5 items each, one queue"));
    let (tx, rx) = ipc::channel::<(u8, u32)>()?;
    let mut children = Vec::new();
    for p in 0..producers as u8 {
        let tx = tx.clone(); // one sender per producer (IpcSender is Clone)
        children.push(fork(move || -> anyhow::Result<()> {
            for seq in 0..5 {
                tx.send((p, seq))?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })?);
    }
    drop(tx); // the parent's own sender: without this, the stream never ends
    let mut arrival = Vec::new();
    while let Some(item) = recv_or_end(&rx, Duration::from_secs(10))? {
        arrival.push(item);
    }
    for c in &mut children {
        c.join()?;
    }
    let names: Vec<String> = arrival
        .iter()
        .map(|(p, s)| format!("{}{s}", (b'A' + p) as char))
        .collect();
    lesson.say(format!("arrival: {}", names.join(" ")));
    let mut sorted = arrival.clone();
    sorted.sort();
    let expected: Vec<(u8, u32)> = (0..producers as u8)
        .flat_map(|p| (0..5).map(move |s| (p, s)))
        .collect();
    lesson.check("every item arrived exactly once", sorted == expected);
    let in_order = (0..producers as u8).all(|p| {
        let seqs: Vec<u32> = arrival.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
        seqs.windows(2).all(|w| w[0] < w[1])
    });
    lesson.check(
        "each producer's items arrived in the order it sent them",
        in_order,
    );
    let switches = arrival.windows(2).filter(|w| w[0].0 != w[1].0).count();
    lesson.say(format!(
        "across producers the items interleave: {switches} switches between producers"
    ));
    Ok(())
}

/// Receive everything until every sender is gone; the values and the distinct PIDs
/// that sent them.
fn drain(rx: &IpcReceiver<(u32, i64)>) -> anyhow::Result<(Vec<i64>, Vec<u32>)> {
    let (mut values, mut pids) = (Vec::new(), Vec::new());
    while let Some((pid, v)) = recv_or_end(rx, Duration::from_secs(10))? {
        values.push(v);
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    Ok((values, pids))
}

/// One value, or `None` when every sender is gone; an error if nothing came for
/// `patience` (a hang, caught).
fn recv_or_end<T>(rx: &IpcReceiver<T>, patience: Duration) -> anyhow::Result<Option<T>>
where
    T: for<'de> serde::Deserialize<'de> + serde::Serialize,
{
    match rx.try_recv_timeout(patience) {
        Ok(v) => Ok(Some(v)),
        Err(TryRecvError::IpcError(IpcError::Disconnected)) => Ok(None),
        Err(TryRecvError::Empty) => {
            bail!("nothing arrived for {patience:?}: a sender is still open somewhere")
        }
        Err(TryRecvError::IpcError(e)) => bail!("receive failed: {e}"),
    }
}
