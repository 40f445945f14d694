//! # mp-lock-bank: why does the balance drift, and what does a lock fix?
//!
//! **Question.** One process deposits 1 a hundred times, another withdraws 1 a
//! hundred times, from a shared balance of 200. Why is the result not 200 without a
//! lock, and what happens when a process dies holding the lock?
//!
//! **Python twin** (`docs/python/06_mp_lock_bank.py`): `multiprocessing.Value('i',
//! 200)`, two `Process`es running `deposit` and `withdraw`, with and without
//! `multiprocessing.Lock()`. In Rust the balance is a `common::shm::Value<i64>` in a
//! `MAP_SHARED` memfd, and the lock is a robust `PTHREAD_PROCESS_SHARED` mutex living
//! next to it (`get_lock()`).
//!
//! **Run.** `cargo run -p mp-lock-bank` (`--help`: `--ops 100 --sleep-us 1000
//! --work-us 500 --lock both|on|off --ascii`; `--bench` for the lock benchmark).
//!
//! **Expected output** (the unlocked balance and lost count vary from run to run):
//! ```text
//! [1] without a lock: deposit 100 x 1 and withdraw 100 x 1, at the same time
//!     final balance 231 (expected 200): lost 37 updates
//! [2] with the lock held across read, compute, write
//!     final balance 200 (expected 200)
//! [3] the holder dies: a child takes the lock, starts a transfer, and is killed
//!     the next locker is told: the previous owner died holding the lock (EOWNERDEAD)
//!     balance 150 left half-way; journal says 200: rolled back to 200
//! [4] the same death with a lock that is not robust
//!     a timed attempt gave up after 1 s: timed out waiting for the lock (ETIMEDOUT)
//! ```
//! with a timeline of who was in the critical section when.
//!
//! **Notice.** Without the lock, both processes are in the read-compute-write window
//! at the same time (overlapping spans) and one write erases the other. With it, the
//! `▓` spans never overlap. A killed holder never unlocks; a robust mutex lets the
//! next locker know, which Python's `Lock` does not (it would wait forever).

mod bench;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use common::lock::{LockError, Robustness, SharedLock, ShmMutex};
use common::output::CommonArgs;
use common::shm::{Gate, RawValue, Value};
use common::timeline::{Kind, Lane, Timeline, fmt_duration};
use common::{Lesson, fork};

#[derive(Parser, Debug)]
#[command(about = "A shared bank balance: the race without a lock, 200 with one")]
struct Args {
    /// Deposits of 1 (and withdrawals of 1) each process makes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    ops: u64,
    /// Sleep between operations, in microseconds (the seeds' short sleep).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    sleep_us: u64,
    /// Time between reading the balance and writing it back, in microseconds:
    /// the race window (computing the new balance, logging, ...).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    work_us: u64,
    /// Which runs to do: without the lock, with it, or both.
    #[arg(long, value_enum, default_value_t = LockMode::Both)]
    lock: LockMode,
    /// Measure the lock instead: ns per increment, two processes, locked vs atomic.
    #[arg(long)]
    bench: bool,
    /// Increments per process for --bench.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    bench_increments: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LockMode {
    Off,
    On,
    Both,
}

const START: i64 = 200;

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let mut lesson = Lesson::start(
        "mp-lock-bank",
        "deposit and withdraw on a shared balance: why is it not 200 without a lock?",
        "multiprocessing.Value('i', 200), Process(target=deposit/withdraw), Lock()",
        &args.common,
    );
    if args.bench {
        bench::run(&mut lesson, args.bench_increments)?;
        return Ok(lesson.finish());
    }
    let ops = args.ops;

    if args.lock != LockMode::On {
        lesson.step(&format!(
            "without a lock: deposit {ops} x 1 and withdraw {ops} x 1, at the same time"
        ));
        let r = bank_run(args, false)?;
        lesson.say(format!(
            "final balance {} (expected {START}): lost {} updates",
            r.balance, r.lost
        ));
        if r.lost > 0 || r.balance != START {
            lesson.broken(format!(
                "{} times a process wrote back a balance another process had changed since it read it",
                r.lost
            ));
        } else {
            lesson.say("nothing was lost this time; run again, or widen the window with --work-us");
        }
        lesson.timeline_until(&r.timeline, "no lock (first 10 ops)", Some(r.first_ops_ns));
        lesson.say(format!(
            "time both processes spent in the window together: {}",
            fmt_duration(r.timeline.overlap_of(r.lanes[0], r.lanes[1], Kind::Run))
        ));
    }

    if args.lock != LockMode::Off {
        lesson.step("with the lock held across read, compute, write");
        let r = bank_run(args, true)?;
        lesson.say(format!("final balance {} (expected {START})", r.balance));
        lesson.timeline_until(
            &r.timeline,
            "with the lock (first 10 ops)",
            Some(r.first_ops_ns),
        );
        lesson.check_eq("balance with the lock", r.balance, START);
        lesson.check_eq("updates lost with the lock", r.lost, 0);
        let both = r.timeline.overlap_of(r.lanes[0], r.lanes[1], Kind::Hold);
        lesson.check(
            format!(
                "the two processes never held the lock at the same time (overlap {})",
                fmt_duration(both)
            ),
            both.is_zero(),
        );
    }

    lesson.step("the holder dies: a child takes the lock, starts a transfer, and is killed");
    let balance = Value::<i64>::new(START)?;
    let journal = RawValue::<i64>::new(0)?;
    let exit = kill_holder(balance.get_lock(), &balance, &journal)?;
    lesson.say(format!("the holder ended with {exit}"));
    lesson.check_eq("the holder's exit code (killed by SIGKILL)", exit.code, -9);
    let attempt = balance.get_lock().try_lock_for(Duration::from_secs(2));
    if let Err(e) = &attempt {
        lesson.say(format!("the next locker is told: {e}"));
    }
    match attempt {
        Err(LockError::OwnerDied(mut guard)) => {
            // Repair: the journal holds the balance from before the unfinished transfer.
            let (seen, before) = (balance.get(), journal.get());
            balance.set(before);
            guard.mark_consistent()?;
            lesson.say(format!(
                "balance {seen} left half-way; journal says {before}: rolled back to {}",
                balance.get()
            ));
            lesson.check(
                "the next locker learned that the owner died (EOWNERDEAD)",
                true,
            );
        }
        Ok(_) => {
            lesson.check(
                "the next locker learned that the owner died (EOWNERDEAD)",
                false,
            );
        }
        Err(e) => {
            lesson.check(
                format!("the next locker learned that the owner died, not: {e}"),
                false,
            );
        }
    }
    let usable = balance
        .get_lock()
        .try_lock_for(Duration::from_secs(2))
        .is_ok();
    lesson.check("after mark_consistent the lock works again", usable);
    lesson.check_eq("balance after the repair", balance.get(), START);

    lesson.step("the same death with a lock that is not robust");
    let plain = SharedLock::new(Robustness::Stalled)?;
    let exit = kill_holder(&plain, &balance, &journal)?;
    lesson.say(format!("the holder ended with {exit}"));
    let t = Instant::now();
    let attempt = plain.try_lock_for(Duration::from_secs(1));
    let waited = t.elapsed();
    let timed_out = matches!(attempt, Err(LockError::TimedOut));
    if let Err(e) = &attempt {
        lesson.say(format!("a timed attempt gave up after {waited:.1?}: {e}"));
    }
    lesson.broken(
        "nobody will ever unlock it: a plain lock() here would wait forever (Python's Lock too)",
    );
    lesson.check("the timed attempt timed out instead of hanging", timed_out);

    Ok(lesson.finish())
}

/// What one run of the bank produced.
struct BankRun {
    balance: i64,
    lost: i64,
    timeline: Timeline,
    lanes: [Lane; 2],
    /// When the first 10 operations of both processes were over: the chart's zoom.
    first_ops_ns: u64,
}

/// Fork a depositor and a withdrawer over one shared balance, start them together,
/// join them, and count the updates that were overwritten.
fn bank_run(args: &Args, locked: bool) -> anyhow::Result<BankRun> {
    let balance = Value::<i64>::new(START)?;
    let lost = Value::<i64>::new(0)?;
    let go = Gate::new()?;
    let mut timeline = Timeline::new(4 * args.ops as usize + 16)?;
    let lanes = [timeline.lane("deposit"), timeline.lane("withdraw")];
    let (sleep, work) = (
        Duration::from_micros(args.sleep_us),
        Duration::from_micros(args.work_us),
    );
    let tl = &timeline;

    let mut children = Vec::new();
    for (delta, lane) in [(1, lanes[0]), (-1, lanes[1])] {
        let (balance, lost, go) = (&balance, &lost, &go);
        children.push(
            fork(move || -> anyhow::Result<()> {
                // Child: deposit (or withdraw) 1, `ops` times.
                if !go.wait(Duration::from_secs(10)) {
                    bail!("never told to start");
                }
                for _ in 0..args.ops {
                    tl.sleep(lane, sleep);
                    let _guard = if locked {
                        Some(
                            balance
                                .get_lock()
                                .lock()
                                .map_err(|e| anyhow::anyhow!("lock: {e}"))?,
                        )
                    } else {
                        None
                    };
                    let kind = if locked { Kind::Hold } else { Kind::Run };
                    tl.span(lane, kind, || {
                        let read = balance.get();
                        spin(work); // the window: compute the new balance, log, ...
                        // swap() writes like `balance.value = read + delta` and also
                        // tells us what it overwrote: if that is not what we read,
                        // another process's update is gone.
                        if balance.cell().swap(read + delta, SeqCst) != read {
                            lost.cell().fetch_add(1, SeqCst);
                        }
                    });
                }
                Ok(())
            })
            .context("forking a bank worker")?,
        );
    }
    go.open();
    for c in &mut children {
        let exit = c.join()?;
        if !exit.success() {
            bail!("a bank worker failed: {exit}");
        }
    }
    let first_ops_ns = (sleep + work).as_nanos() as u64 * 10 + 2_000_000;
    Ok(BankRun {
        balance: balance.get(),
        lost: lost.get(),
        timeline,
        lanes,
        first_ops_ns,
    })
}

/// A child takes `lock`, records the balance in the journal, takes 50 out (half a
/// transfer), tells the parent, and waits to be killed. The parent kills it with
/// SIGKILL and reaps it; the lock is never unlocked.
fn kill_holder(
    lock: &ShmMutex,
    balance: &Value<i64>,
    journal: &RawValue<i64>,
) -> anyhow::Result<common::Exit> {
    let holding = Gate::new()?;
    let mut child = fork(|| -> anyhow::Result<()> {
        // Child: take the lock and never let go.
        let _guard = lock.lock().map_err(|e| anyhow::anyhow!("lock: {e}"))?;
        journal.set(balance.get());
        balance.set(balance.get() - 50);
        holding.open();
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    })?;
    // Parent: wait (bounded) until the child holds the lock, then kill it.
    if !holding.wait(Duration::from_secs(5)) {
        child.kill()?;
        bail!("the child never took the lock: {}", child.join()?);
    }
    child.kill()?;
    Ok(child.join()?)
}

/// Burn CPU for `d` (a sleep would hand the core to the other process).
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}
