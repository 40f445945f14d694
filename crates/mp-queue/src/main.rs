//! # mp-queue: how do processes pass values, and how does a queue go wrong?
//!
//! **Question.** A child process computes squares. How does it hand them to the
//! parent through a queue, how is that different from a queue between threads, and
//! what are the classic ways to get it wrong?
//!
//! **Python twin** (`docs/python/05_mp_queue.py`): `multiprocessing.Queue` filled by
//! a `Process`, beside `queue.Queue` between threads; `while not q.empty()`; the
//! docs' "joining processes that use queues" deadlock. Here the process queue is an
//! `ipc_channel::ipc::channel` (a Unix socket pair, values serialised), made before
//! the fork; the thread queue is a `crossbeam_channel` (values moved).
//!
//! **Run.** `cargo run -p mp-queue` (`--help`: `--numbers 2,3,8 --big-bytes 1000000
//! --producers 3 --ascii`). Throughput and round trips: `cargo bench -p mp-queue`.
//!
//! **Expected output** (PIDs vary; so does how the producers interleave):
//! ```text
//! [1] a child process puts squares on a queue; the parent gets them
//!     process queue (ipc-channel): got [4, 9, 64] from pid 7676
//!     thread queue (crossbeam):    got [4, 9, 64] from tid 7677
//! [2] a crossbeam channel made before fork does not cross processes
//!     child pid 7678: sent 3 values; my copy of the channel holds 3
//!     parent: nothing arrived in 500 ms; its channel holds 0
//! [3] empty() is not the end of the stream
//!     while not q.empty(): got []   (the child had not sent yet)
//!     until every sender is gone: got [4, 9, 64]
//!     until the None sentinel:    got [4, 9, 64]
//!     the parent kept a sender: got 3 values; the child ended with exitcode 0
//!     then nothing for 500 ms: recv() would wait forever
//! [4] join before drain: the child sends 1000000 bytes
//!     join first: after 2 s the child was still blocked in send: a deadlock
//!     the watchdog killed it: exitcode -9 (killed by SIGKILL)
//!     drain first: got 1000000 bytes from pid 8729, then joined: exitcode 0
//! [5] 3 producers, 5 items each, one queue
//!     arrival: ...
//! ```
//!
//! **Notice.** The process queue carries *copies* through the kernel; the thread
//! queue moves values within one address space. A receiver learns that the stream
//! ended only when every sender, in every process, is gone. A child blocked in
//! `send` never exits, so joining it before reading waits forever.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use common::output::{CommonArgs, List, check_numbers};
use common::process::Joined;
use common::shm::Gate;
use common::{Lesson, fork};
use ipc_channel::{TryRecvError, ipc};
use mp_queue::{Arrival, fork_big_sender, fork_slow_sender, spawn_thread};
use mp_queue::{recv_all, recv_big, recv_or_end};

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
/// The bound on every wait that should succeed: past it, a peer is stuck or stopped.
const BOUND: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    common::output::main(|args| run(args).map_err(mp_queue::explain))
}

// ANCHOR: run
fn run(args: &Args) -> Result<std::process::ExitCode> {
    check_numbers(&args.numbers, 1000, 2).map_err(anyhow::Error::msg)?;
    // ipc-channel measures its socket buffer once, lazily; make that happen now,
    // so a low open-file limit is a clear error here and not a panic mid-send.
    common::ipc::ready()?;
    let squares: Vec<i64> = args.numbers.iter().map(|n| n * n).collect();
    let mut lesson = Lesson::start(
        "mp-queue",
        "how do processes pass values through a queue? how does it go wrong?",
        "multiprocessing.Queue vs queue.Queue, q.empty(), join before get",
        &args.common,
    );
    process_vs_thread_queue(&mut lesson, &args.numbers, &squares)?;
    crossbeam_across_fork(&mut lesson, &squares)?;
    end_of_stream(&mut lesson, &squares)?;
    join_before_drain(&mut lesson, args.big_bytes as usize)?;
    several_producers(&mut lesson, args.producers as u8)?;
    Ok(lesson.finish())
}
// ANCHOR_END: run

fn process_vs_thread_queue(lesson: &mut Lesson, numbers: &[i64], squares: &[i64]) -> Result<()> {
    lesson.step("a child process puts squares on a queue; the parent gets them");
    // The channel exists before the fork, so both processes hold both ends.
    let (tx, rx) = ipc::channel::<(u32, i64)>().context("opening a channel")?;
    // `move`: the sender goes to the child. In the parent, fork() drops the closure
    // and with it the parent's copy of the sender, so only the child holds one.
    let mut child = fork(move || -> anyhow::Result<()> {
        // Child: q.put(n * n) for each number, with its PID.
        for &n in numbers {
            tx.send((std::process::id(), n * n))?;
        }
        Ok(())
    })?;
    // Parent: q.get() until the child's sender, the only one, is gone.
    let (mut pids, got): (Vec<u32>, Vec<i64>) = recv_all(&rx, BOUND)?.into_iter().unzip();
    let exit = child.join_within(BOUND)?;
    pids.dedup();
    let from_child = pids == [child.pid() as u32] && exit.success();
    let from = pids.first().copied().unwrap_or_default();
    let got = List(&got);
    let line = format!("process queue (ipc-channel): got {got} from pid {from}");
    lesson.say(line);
    lesson.check_eq("the parent got", got, List(squares));
    let claim = format!("they came from the child (pid {from}), which ended with {exit}");
    lesson.check(claim, from_child);
    // The same with a thread: no fork, no serialising; the value itself moves.
    let (ttx, trx) = crossbeam_channel::unbounded::<(i32, i64)>();
    let thread_numbers = numbers.to_vec();
    let producer = spawn_thread("producer", move || {
        let tid = nix::unistd::gettid().as_raw();
        for n in thread_numbers {
            let _ = ttx.send((tid, n * n));
        }
    })?;
    // The iterator ends when the only sender (moved into the thread) is dropped.
    let (tids, got): (Vec<i32>, Vec<i64>) = trx.iter().unzip();
    let joined = producer.join();
    let (got, tid) = (List(&got), tids[0]);
    let line = format!("thread queue (crossbeam):    got {got} from tid {tid}");
    lesson.say(line);
    lesson.check_eq("the main thread got", got, List(squares));
    joined.map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    Ok(())
}

fn crossbeam_across_fork(lesson: &mut Lesson, squares: &[i64]) -> Result<()> {
    lesson.step("a crossbeam channel made before fork does not cross processes");
    let (ctx, crx) = crossbeam_channel::unbounded::<i64>();
    let keep = ctx.clone(); // the parent keeps a sender, as real code would
    let sent = squares.to_vec();
    let mut child = fork(move || {
        // Child: sends into *its copy* of the channel, in its own memory.
        for &sq in &sent {
            let _ = ctx.send(sq);
        }
        let (me, n, held) = (std::process::id(), sent.len(), ctx.len());
        println!("    child pid {me}: sent {n} values; my copy of the channel holds {held}");
    })?;
    // Parent: waits for a value that lives in another address space.
    let arrived = crx.recv_timeout(PATIENCE);
    child.join_within(BOUND)?;
    drop(keep);
    let (ms, held) = (PATIENCE.as_millis(), crx.len());
    let line = format!("parent: nothing arrived in {ms} ms; its channel holds {held}");
    lesson.say(line);
    lesson.broken("fork copies a crossbeam channel; it does not connect it");
    lesson.check(
        "nothing crossed: the parent's recv timed out",
        arrived.is_err(),
    );
    Ok(())
}

fn end_of_stream(lesson: &mut Lesson, squares: &[i64]) -> Result<()> {
    lesson.step("empty() is not the end of the stream");
    // The child does "some work" (waits for `go`) before its first put, so the
    // queue starts empty; the gate makes that certain rather than likely.
    let go = Gate::new()?;
    let slow_child = |tx, sentinel| fork_slow_sender(&go, squares, tx, sentinel);
    // (a) `while not q.empty(): q.get()`, while the child is still working.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let mut child = slow_child(tx, false)?;
    let mut early = Vec::new();
    while let Ok(Some(v)) = rx.try_recv() {
        early.push(v);
    }
    go.open(); // the child's work is done: it starts putting now
    let early = List(&early);
    let line = format!("while not q.empty(): got {early}   (the child had not sent yet)");
    lesson.say(line);
    lesson.broken("empty() means 'nothing right now', not 'the end'");
    lesson.check_eq("the empty()-loop got", early, List(&[]));
    // (b) Receive until every sender is gone.
    let all: Vec<i64> = recv_all(&rx, BOUND)?.into_iter().flatten().collect();
    child.join_within(BOUND)?;
    let all = List(&all);
    lesson.say(format!("until every sender is gone: got {all}"));
    lesson.check_eq("received until the senders closed", all, List(squares));
    // (c) Receive until a sentinel.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let mut child = slow_child(tx, true)?;
    let mut until_none = Vec::new();
    while let Some(Some(v)) = recv_or_end(&rx, BOUND)? {
        until_none.push(v);
    }
    child.join_within(BOUND)?;
    let until_none = List(&until_none);
    lesson.say(format!("until the None sentinel:    got {until_none}"));
    lesson.check_eq("received until the sentinel", until_none, List(squares));
    // (d) Without a sentinel, a sender left open anywhere means recv never ends.
    let (tx, rx) = ipc::channel::<Option<i64>>()?;
    let kept = tx.clone(); // the mistake: the parent keeps a sender it never uses
    let mut child = slow_child(tx, false)?;
    let mut n = 0;
    while n < squares.len() && recv_or_end(&rx, BOUND)?.is_some() {
        n += 1;
    }
    let exit = child.join_within(BOUND)?; // the child sent everything, and is gone...
    // ...yet the stream does not end: the parent's own sender keeps it open.
    let ended = !matches!(rx.try_recv_timeout(PATIENCE), Err(TryRecvError::Empty));
    drop(kept);
    let ms = PATIENCE.as_millis();
    let line = format!("the parent kept a sender: got {n} values; the child ended");
    lesson.say(format!("{line} with {exit}"));
    let line = format!("then nothing for {ms} ms: recv() would wait forever");
    lesson.say(line);
    let claim = "with a sender left open, the end of the stream never came";
    lesson.check(claim, !ended && n == squares.len());
    Ok(())
}

fn join_before_drain(lesson: &mut Lesson, big: usize) -> Result<()> {
    lesson.step(&format!("join before drain: the child sends {big} bytes"));
    // Wrong order: p.join() before q.get(), under a 2 s watchdog. The child puts
    // 'X' * big, in pieces (see `send_big`), and blocks in send whenever the socket
    // buffer is full, until someone reads.
    let (mut child, rx) = fork_big_sender(big)?;
    let joined = child.join_or_kill(Duration::from_secs(2))?;
    drop(rx);
    let deadlocked = matches!(joined, Joined::Killed(_));
    if let Joined::Killed(exit) = &joined {
        lesson.say("join first: after 2 s the child was still blocked in send: a deadlock");
        lesson.say(format!("the watchdog killed it: {exit}"));
        lesson.broken("parent and child each wait for the other");
    } else {
        lesson.say("join first: the child ended: it all fit in the socket buffer");
    }
    // Right order: q.get(), then p.join(); both bounded, even if the child stops.
    let (mut child, rx) = fork_big_sender(big)?;
    let pid = child.pid();
    let line = format!("drain first: child pid {pid} sends; the parent receives");
    lesson.say(line);
    // A child that stops sending is an error; dropping its handle kills and reaps it.
    let stalled = || format!("drain first: child pid {pid} stalled and was killed");
    let got = recv_big(&rx, BOUND).with_context(stalled)?;
    let exit = child.join_within(BOUND)?;
    let line = format!("drain first: got {got} bytes from pid {pid}, then joined");
    lesson.say(format!("{line}: {exit}"));
    let claim = format!("drain first: all {big} bytes arrived, then exitcode 0");
    lesson.check(claim, got == big && exit.success());
    if big >= 1_000_000 {
        let claim = "joining first was caught as a deadlock (the child was killed)";
        lesson.check(claim, deadlocked);
    }
    Ok(())
}

fn several_producers(lesson: &mut Lesson, producers: u8) -> Result<()> {
    lesson.step(&format!("{producers} producers, 5 items each, one queue"));
    let (tx, rx) = ipc::channel::<(u8, u32)>()?;
    let mut children = Vec::new();
    for p in 0..producers {
        let tx = tx.clone(); // one sender per producer (IpcSender is Clone)
        children.push(fork(move || -> anyhow::Result<()> {
            // Child: five items, a little apart, so that producers interleave.
            for seq in 0..5 {
                tx.send((p, seq))?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })?);
    }
    drop(tx); // the parent's own sender: without this, the stream never ends
    let arrival = recv_all(&rx, BOUND)?;
    for c in &mut children {
        c.join_within(BOUND)?;
    }
    let arrival = Arrival::of(&arrival, producers, 5);
    lesson.say(format!("arrival: {}", arrival.names.join(" ")));
    lesson.check("every item arrived exactly once", arrival.exactly_once);
    let claim = "each producer's items arrived in the order it sent them";
    lesson.check(claim, arrival.in_order);
    let switches = arrival.switches;
    lesson.say(format!(
        "the producers' items interleave: {switches} switches"
    ));
    Ok(())
}
