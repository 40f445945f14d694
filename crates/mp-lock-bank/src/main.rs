//! # mp-lock-bank: why does the balance drift, and what does a lock fix?
//!
//! **Question.** One process deposits 1 a hundred times, another withdraws 1 a
//! hundred times, from a shared balance of 200. Why is the result not 200 without a
//! lock, and what happens when a process dies holding the lock?
//!
//! **Python twin** (`docs/python/09_mp_lock_bank.py`): `multiprocessing.Value('i',
//! 200)`, two `Process`es running `transact` (+1 and -1), with and without
//! `multiprocessing.Lock()`. In Rust the balance is a `common::shm::Value<i64>` in a
//! `MAP_SHARED` memfd, and the lock is a robust `PTHREAD_PROCESS_SHARED` mutex living
//! next to it (`get_lock()`).
//!
//! **Run.** `cargo run -p mp-lock-bank` (`--help`: `--ops 100 --sleep-us 1000
//! --work-us 500 --lock both|on|off --ascii`). What the lock costs: `cargo bench -p
//! mp-lock-bank`.
//!
//! **Expected output** (PIDs, times, the unlocked balance and the lost count vary
//! from run to run, down to 0 on a busy machine; the charts' bars are left out):
//! ```text
//! [1] without a lock: deposit 100 x 1 and withdraw 100 x 1, at once
//!     final balance 189 (expected 200), 37 updates lost
//!   ⚠ broken on purpose: 37 updates lost
//!     (a process wrote back a balance the other had changed since it read it)
//!   no lock (the start)           0                                       8.5 ms
//!     deposit   pid 19525 tid 19525 ...
//!     withdraw  pid 19526 tid 19526 ...
//!     both in ...
//!     █ running   ░ waiting (sleep, I/O, join, lock)   ▓ holding the lock
//!     both processes in the window at once: ...
//! [2] with the lock held across read, compute, write
//!     final balance 200 (expected 200)
//!   with the lock (the start)     0                                       8.5 ms
//!     deposit   pid 19537 tid 19537 ...
//!     withdraw  pid 19538 tid 19538 ...
//!     both in
//!     the wait right before each hold: waiting while the other holds the lock
//!   ✓ check: balance with the lock: 200 (expected 200)
//!   ✓ check: updates lost with the lock: 0 (expected 0)
//!   ✓ check: never both in the window (both in: 0 ns)
//! [3] the holder dies: a child takes the lock, starts a transfer, is killed
//!     the holder ended with exitcode -9 (killed by SIGKILL)
//!   ✓ check: the holder's exit code (SIGKILL): -9 (expected -9)
//!     next locker: the previous owner died holding the lock (EOWNERDEAD)
//!     balance 150 left half-way; journal says 200: rolled back
//!   ✓ check: the next locker learned that the owner died
//!   ✓ check: after mark_consistent the lock works again
//!   ✓ check: balance after the repair: 200 (expected 200)
//! [4] the same death with a lock that is not robust
//!     the holder ended with exitcode -9 (killed by SIGKILL)
//!     try_lock_for(1 s): timed out waiting for the lock (ETIMEDOUT)
//!   ⚠ broken on purpose: nobody will ever unlock it
//!     (a plain lock() would wait here forever, as Python's acquire() would)
//!   ✓ check: the timed attempt gave up after 1.000 s instead of hanging
//! ```
//!
//! **Notice.** Without the lock, both processes are in the read-compute-write window
//! at the same time (the `both in` row) and one write erases the other. With it,
//! `both in` stays empty: a process that wants the lock waits (`░`) until the other
//! is done (`▓`). A killed holder never unlocks; a robust mutex tells the next
//! locker (EOWNERDEAD), which Python's `Lock` cannot: it would wait forever.

use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use common::lock::{LockError, Robustness, SharedLock};
use common::output::CommonArgs;
use common::shm::{Gate, RawValue, Value};
use common::timeline::{Kind, Timeline, fmt_duration};
use common::{Lesson, fork};
use mp_lock_bank::{Bank, join_all, kill_holder, lock_failed, mark_overlaps, spin};

#[derive(Parser, Debug)]
#[command(about = "A shared bank balance: the race without a lock, 200 with one")]
struct Args {
    /// Deposits of 1 (and withdrawals of 1) each process makes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    ops: u64,
    /// Sleep between operations, in microseconds (the tutorial's time.sleep(0.001)).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    sleep_us: u64,
    /// Time between reading the balance and writing it back, in microseconds:
    /// the race window (computing the new balance, logging, ...).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    work_us: u64,
    /// Which runs to do: without the lock, with it, or both.
    #[arg(long, value_enum, default_value_t = LockMode::Both)]
    lock: LockMode,
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

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let bank = Bank::new(args.ops, args.sleep_us, args.work_us)?;
    let mut lesson = Lesson::start(
        "mp-lock-bank",
        "why is a shared balance not 200 without a lock?",
        "multiprocessing.Value('i', 200), two Processes, Lock()",
        &args.common,
    );
    if args.lock != LockMode::On {
        race_without_lock(&mut lesson, &bank)?;
    }
    if args.lock != LockMode::Off {
        race_with_lock(&mut lesson, &bank)?;
    }
    let balance = Value::<i64>::new(START)?;
    holder_dies(&mut lesson, &balance)?;
    holder_dies_unnoticed(&mut lesson, &balance)?;
    Ok(lesson.finish())
}
// ANCHOR_END: run

/// Step 1: two processes, one balance, no lock.
fn race_without_lock(lesson: &mut Lesson, bank: &Bank) -> anyhow::Result<()> {
    lesson.step(&format!(
        "without a lock: deposit {0} x 1 and withdraw {0} x 1, at once",
        bank.ops
    ));
    let r = bank_run(bank, false)?;
    lesson.say(format!(
        "final balance {} (expected {START}), {} updates lost",
        r.balance, r.lost
    ));
    // Reported in every run: the window is there even when no update fell in it.
    lesson.broken(format!("{} updates lost", r.lost));
    lesson.say("(a process wrote back a balance the other had changed since it read it)");
    if r.lost == 0 {
        lesson.say("none this time: run again, or widen the window (--work-us)");
    }
    lesson.timeline_until(&r.timeline, "no lock (the start)", Some(r.chart_end));
    lesson.say(format!(
        "both processes in the window at once: {} in all",
        fmt_duration(r.both_in)
    ));
    Ok(())
}

/// Step 2: the same, with the lock held across read, compute, write.
fn race_with_lock(lesson: &mut Lesson, bank: &Bank) -> anyhow::Result<()> {
    lesson.step("with the lock held across read, compute, write");
    let r = bank_run(bank, true)?;
    lesson.say(format!("final balance {} (expected {START})", r.balance));
    lesson.timeline_until(&r.timeline, "with the lock (the start)", Some(r.chart_end));
    lesson.say("the wait right before each hold: waiting while the other holds the lock");
    lesson.check_eq("balance with the lock", r.balance, START);
    lesson.check_eq("updates lost with the lock", r.lost, 0);
    lesson.check(
        format!(
            "never both in the window (both in: {})",
            fmt_duration(r.both_in)
        ),
        r.both_in.is_zero(),
    );
    Ok(())
}

/// What one run of the bank produced.
struct BankRun {
    balance: i64,
    lost: i64,
    timeline: Timeline,
    /// How long both processes were between reading and writing at once.
    both_in: Duration,
    /// Where the chart ends: a few operations after the start.
    chart_end: u64,
}

/// Fork a depositor and a withdrawer over one shared balance, start them together,
/// join them (within the bank's patience), and mark when both were in the window.
fn bank_run(bank: &Bank, locked: bool) -> anyhow::Result<BankRun> {
    let balance = Value::<i64>::new(START)?;
    let lost = Value::<i64>::new(0)?;
    let go = Gate::new()?;
    // Per operation and process: a sleep, a lock wait, a window; and the overlaps.
    let mut timeline = Timeline::new(8 * bank.ops as usize + 16)?;
    let (deposit, withdraw) = (timeline.lane("deposit"), timeline.lane("withdraw"));
    let both = timeline.lane("both in");
    let mut workers = Vec::new();
    for (delta, lane) in [(1, deposit), (-1, withdraw)] {
        let (balance, lost, go, tl) = (&balance, &lost, &go, &timeline);
        let worker = fork(move || -> anyhow::Result<()> {
            // Child: deposit (or withdraw) 1, `ops` times.
            if !go.wait(Duration::from_secs(10)) {
                bail!("never told to start");
            }
            for _ in 0..bank.ops {
                tl.sleep(lane, bank.sleep); // time.sleep(0.001): I/O between operations
                let asked = tl.now();
                let _guard = match locked {
                    true => Some(balance.get_lock().lock().map_err(|e| lock_failed(&e))?),
                    false => None,
                };
                let kind = if locked {
                    tl.record(lane, Kind::Wait, asked, tl.now()); // waiting for the lock
                    Kind::Hold
                } else {
                    Kind::Run
                };
                tl.span(lane, kind, || {
                    let read = balance.get();
                    spin(bank.work); // the window: compute the new balance, log, ...
                    // `balance.value = read + delta`, as a swap that also returns what
                    // it overwrote: if that is not what we read, an update is gone.
                    if balance.cell().swap(read + delta, SeqCst) != read {
                        lost.cell().fetch_add(1, SeqCst);
                    }
                });
            }
            Ok(())
        });
        workers.push(worker.context("forking a bank worker")?);
    }
    // Parent: start both at once; wait for them, but not forever.
    let start = timeline.now(); // the chart's zoom counts from here, not the fork
    go.open();
    join_all(&mut workers, bank.patience(), "the bank workers")?;
    // Drawn by the parent: when both were between reading and writing at once.
    let both_in = mark_overlaps(&timeline, deposit, withdraw, both);
    let chart_end = bank.chart_end(&timeline, start, [deposit, withdraw], both);
    Ok(BankRun {
        balance: balance.get(),
        lost: lost.get(),
        timeline,
        both_in,
        chart_end,
    })
}

/// Step 3: a child dies holding the robust lock; the next locker is told.
fn holder_dies(lesson: &mut Lesson, balance: &Value<i64>) -> anyhow::Result<()> {
    lesson.step("the holder dies: a child takes the lock, starts a transfer, is killed");
    let journal = RawValue::<i64>::new(0)?;
    let lock = balance.get_lock();
    let exit = kill_holder(lock, balance, &journal)?;
    lesson.say(format!("the holder ended with {exit}"));
    lesson.check_eq("the holder's exit code (SIGKILL)", exit.code, -9);
    let told = match lock.try_lock_for(Duration::from_secs(2)) {
        Err(LockError::OwnerDied(mut guard)) => {
            lesson.say("next locker: the previous owner died holding the lock (EOWNERDEAD)");
            // Repair: the journal holds the balance from before the unfinished transfer.
            let (seen, before) = (balance.get(), journal.get());
            balance.set(before);
            guard.mark_consistent()?;
            lesson.say(format!(
                "balance {seen} left half-way; journal says {before}: rolled back"
            ));
            true
        }
        Ok(_) => false,
        Err(e) => {
            lesson.say(format!("next locker: {e}"));
            false
        }
    };
    lesson.check("the next locker learned that the owner died", told);
    let usable = lock.try_lock_for(Duration::from_secs(2)).is_ok();
    lesson.check("after mark_consistent the lock works again", usable);
    lesson.check_eq("balance after the repair", balance.get(), START);
    Ok(())
}

/// Step 4: the same death with a lock that is not robust: nobody is told.
fn holder_dies_unnoticed(lesson: &mut Lesson, balance: &Value<i64>) -> anyhow::Result<()> {
    lesson.step("the same death with a lock that is not robust");
    let plain = SharedLock::new(Robustness::Stalled)?;
    let journal = RawValue::<i64>::new(0)?;
    let exit = kill_holder(&plain, balance, &journal)?;
    lesson.say(format!("the holder ended with {exit}"));
    let t = Instant::now();
    let attempt = plain.try_lock_for(Duration::from_secs(1));
    let waited = fmt_duration(t.elapsed());
    if let Err(e) = &attempt {
        lesson.say(format!("try_lock_for(1 s): {e}"));
    }
    lesson.broken("nobody will ever unlock it");
    lesson.say("(a plain lock() would wait here forever, as Python's acquire() would)");
    lesson.check(
        format!("the timed attempt gave up after {waited} instead of hanging"),
        matches!(attempt, Err(LockError::TimedOut)),
    );
    Ok(())
}
