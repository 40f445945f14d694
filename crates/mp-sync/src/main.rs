//! # mp-sync: how do processes wait for each other?
//!
//! **Question.** How do processes wait for a signal, take turns in a section that
//! admits two, meet at a barrier, or wait until shared state is ready; and what
//! happens to the others when one of them dies in the middle?
//!
//! **Python twin** (`docs/python/10_mp_sync.py`): `multiprocessing.Event`,
//! `Semaphore(2)`, `Barrier(3)`, `Condition` and `Lock`. Here each one lives in a
//! `MAP_SHARED` memfd made before the fork (`src/lib.rs`): `Event`, `Barrier` and
//! `Condition` sleep on a futex without `FUTEX_PRIVATE_FLAG`; `Semaphore` and
//! `Lock` are POSIX semaphores (`sem_init(pshared = 1)`), as CPython's `SemLock`
//! is. Every wait has a timeout, so the demos of a hang end.
//!
//! **Run.** `cargo run -p mp-sync` (`--help`: `--waiters 4 --workers 5 --slots 2
//! --parties 3 --phases 3 --hold-ms 20 --patience-ms 500 --ascii`).
//!
//! **Expected output** (PIDs and times vary, so times are `...`; the chart's bars
//! are left out, and with them rows p2 to p4 and phase 2):
//! ```text
//! [1] Event: 4 processes wait; one set() wakes all
//!   ✓ check: waiters asleep in the kernel (state S) before set(): 4 (expected 4)
//!   ✓ check: woken by set()'s one FUTEX_WAKE: 4 (expected 4)
//!     they ran again ... later
//!   ✓ check: waiters that passed before set(): 0 (expected 0)
//!   ✓ check: all 4 passed, every one after the set()
//! [2] Semaphore(2): 5 processes, 2 inside at most
//!   Semaphore(2) ...
//!     p1  pid 998 tid 998 ...
//!     p5  pid 1002 tid 1002 ...
//!     █ running   ░ waiting (sleep, I/O, join, lock)   ▓ holding the lock
//!     each row: waiting for a slot, then inside the section
//!   ✓ check: never more than 2 inside (most at once: 2)
//!   ✓ check: processes that got in: 5 (expected 5)
//! [3] Barrier(3): 3 phases; none leaves early
//!     phase 1: last arrived at ..., first left at ...
//!     phase 3: last arrived at ..., first left at ...
//!   ✓ check: departures before the last arrival: 0 (expected 0)
//! [4] a party dies before it reaches the barrier
//!     party 1 (pid 1009) was killed on its way: exitcode -9 (killed by SIGKILL)
//!   ✓ check: parties waiting at the barrier when it died: 2 (expected 2)
//!     party 2: BrokenBarrierError: its own wait timed out (after ...)
//!     party 3: BrokenBarrierError: broken by another (after ...)
//!   ⚠ broken on purpose: the barrier is broken: the dead party will never arrive
//!   ✓ check: waits that timed out and broke it: 1 (expected 1)
//!   ✓ check: waiters told by the break: 1 (expected 1)
//!   ✓ check: barrier.broken is now true
//! [5] Condition: wait_for(items >= 3) while a producer adds items
//!     the consumer returned at items 3, after 4 looks
//!   ✓ check: its predicate held when it returned (items 3 >= 3)
//!     wait_for(items >= 100, timeout=0.5): False
//!   ✓ check: it gave up after ..., not never
//! [6] Lock() is a semaphore of one: a child acquires, the parent releases
//!     child pid 1039 acquired it, then ended: exitcode 0
//!   ✓ check: the lock is still taken (acquire(False) fails)
//!     parent: lock.release(), though it never acquired it
//!   ✓ check: the release worked: the lock is free again
//!     release() once more: ValueError: semaphore or lock released too many times
//!   ✓ check: a release past the bound is refused
//! [7] the holder dies: Lock() vs the course's robust mutex
//!     the holder ended with exitcode -9 (killed by SIGKILL)
//!     Lock(): acquire(timeout=0.5) -> False after ...
//!   ⚠ broken on purpose: nobody will release it: acquire() would wait forever
//!   ✓ check: the timed acquire gave up instead of hanging
//!     robust mutex, next lock: the owner died (EOWNERDEAD)
//!   ✓ check: the robust mutex told the next locker its owner died
//! ```
//!
//! **Notice.** Nobody polls: every waiter sleeps in the kernel until another
//! process wakes it. A barrier cannot tell a slow party from a dead one; only a
//! timeout can, and then every waiter is told (`BrokenBarrierError`). `Lock()` is a
//! semaphore: any process may release it, and nobody learns that its holder died;
//! the robust mutex is released only by its owner, and reports a dead one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use common::lock::{LockError, Robustness, SharedLock};
use common::output::CommonArgs;
use common::shm::RawValue;
use common::timeline::fmt_duration;
use common::{Lesson, fork};
use mp_sync::rounds::{BOUND, Outcome, barrier_round, dead_party_round};
use mp_sync::rounds::{CondRound, condition_round, event_round, kill_holder, semaphore_round};
use mp_sync::{Condition, Semaphore};

#[derive(Parser, Debug)]
#[command(about = "Event, Semaphore, Barrier, Condition and Lock between processes")]
struct Args {
    /// Processes waiting for the Event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    waiters: u32,
    /// Processes taking turns in the Semaphore's section.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// How many the Semaphore lets in at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    slots: u32,
    /// Processes meeting at the Barrier.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    parties: u32,
    /// Phases the Barrier separates.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    phases: u32,
    /// Time each worker spends inside the Semaphore's section, in ms.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=500))]
    hold_ms: u64,
    /// How long the demos of a hang wait before they call it one, in ms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=5000))]
    patience_ms: u64,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> Result<ExitCode> {
    let patience = Duration::from_millis(args.patience_ms);
    let mut lesson = Lesson::start(
        "mp-sync",
        "how do processes wait for each other, and for a dead one?",
        "multiprocessing.Event, Semaphore, Barrier, Condition, Lock",
        &args.common,
    );
    event_releases_all(&mut lesson, args.waiters)?;
    semaphore_admits_few(&mut lesson, args)?;
    barrier_phases(&mut lesson, args.parties, args.phases)?;
    barrier_party_dies(&mut lesson, args.parties, patience)?;
    condition_waits_for(&mut lesson, patience)?;
    lock_released_by_another(&mut lesson)?;
    holder_dies(&mut lesson, patience)?;
    Ok(lesson.finish())
}
// ANCHOR_END: run

/// Step 1: `n` processes wait for one Event; one `set()` releases them all.
fn event_releases_all(lesson: &mut Lesson, n: u32) -> Result<()> {
    lesson.step(&format!("Event: {n} processes wait; one set() wakes all"));
    let r = event_round(n as usize)?;
    let asleep = "waiters asleep in the kernel (state S) before set()";
    lesson.check_eq(asleep, r.asleep, n as usize);
    lesson.check_eq("woken by set()'s one FUTEX_WAKE", r.woken, n as usize);
    let (first, last) = (r.after_set.iter().min(), r.after_set.iter().max());
    let (first, last) = (ns(first.copied()), ns(last.copied()));
    lesson.say(format!("they ran again {first} to {last} later"));
    lesson.check_eq("waiters that passed before set()", r.early, 0);
    let all = r.after_set.iter().all(|&t| t >= 0);
    lesson.check(format!("all {n} passed, every one after the set()"), all);
    Ok(())
}

/// Step 2: `workers` processes, a Semaphore(`slots`): never more than `slots` in.
fn semaphore_admits_few(lesson: &mut Lesson, args: &Args) -> Result<()> {
    let (n, slots) = (args.workers, args.slots);
    lesson.step(&format!(
        "Semaphore({slots}): {n} processes, {slots} inside at most"
    ));
    let r = semaphore_round(n, slots, Duration::from_millis(args.hold_ms))?;
    lesson.timeline(&r.timeline, &format!("Semaphore({slots})"));
    lesson.say("each row: waiting for a slot, then inside the section");
    let claim = format!("never more than {slots} inside (most at once: {})", r.most);
    lesson.check(claim, r.most <= slots as i64);
    lesson.check_eq("processes that got in", r.entered, n as i64);
    Ok(())
}

/// Step 3: `parties` processes, `phases` phases: nobody leaves a phase early.
fn barrier_phases(lesson: &mut Lesson, parties: u32, phases: u32) -> Result<()> {
    lesson.step(&format!(
        "Barrier({parties}): {phases} phases; none leaves early"
    ));
    let phases = barrier_round(parties, phases)?;
    for (i, p) in phases.iter().enumerate() {
        let (last_in, first_out) = (ns(Some(p.last_in)), ns(Some(p.first_out)));
        let line = format!("last arrived at {last_in}, first left at {first_out}");
        lesson.say(format!("phase {}: {line}", i + 1));
    }
    let early: usize = phases.iter().map(|p| p.early).sum();
    lesson.check_eq("departures before the last arrival", early, 0);
    Ok(())
}

/// Step 4: a party dies on its way while the others wait: they time out, and are
/// told.
fn barrier_party_dies(lesson: &mut Lesson, parties: u32, patience: Duration) -> Result<()> {
    lesson.step("a party dies before it reaches the barrier");
    let r = dead_party_round(parties, patience)?;
    lesson.say(format!(
        "party 1 (pid {}) was killed on its way: {}",
        r.pid, r.exit
    ));
    let waiting = "parties waiting at the barrier when it died";
    lesson.check_eq(waiting, r.waiting, parties - 1);
    for (i, (how, after)) in r.others.iter().enumerate() {
        let after = fmt_duration(*after);
        lesson.say(format!("party {}: {how} (after {after})", i + 2));
    }
    lesson.broken("the barrier is broken: the dead party will never arrive");
    let count = |o| r.others.iter().filter(|(x, _)| *x == o).count();
    let (timed_out, told) = (count(Outcome::TimedOut), count(Outcome::Told));
    lesson.check_eq("waits that timed out and broke it", timed_out, 1);
    lesson.check_eq("waiters told by the break", told, parties as usize - 2);
    lesson.check("barrier.broken is now true", r.broken);
    Ok(())
}

/// Step 5: wait_for(a predicate on shared state) while another process changes it.
fn condition_waits_for(lesson: &mut Lesson, patience: Duration) -> Result<()> {
    lesson.step("Condition: wait_for(items >= 3) while a producer adds items");
    let (cond, items) = (Condition::new()?, RawValue::<i64>::new(0)?);
    let CondRound { seen, looks } = condition_round(&cond, &items)?;
    lesson.say(format!(
        "the consumer returned at items {seen}, after {looks} looks"
    ));
    let claim = format!("its predicate held when it returned (items {seen} >= 3)");
    lesson.check(claim, seen >= 3);
    // Parent: a predicate nobody will make true.
    let mut guard = cond.acquire(BOUND)?;
    let t = Instant::now();
    let ok = guard.wait_for(patience, BOUND, || items.get() >= 100)?;
    let waited = t.elapsed();
    let (timeout, ok_py) = (patience.as_secs_f64(), python_bool(ok));
    lesson.say(format!(
        "wait_for(items >= 100, timeout={timeout}): {ok_py}"
    ));
    let claim = format!("it gave up after {}, not never", fmt_duration(waited));
    lesson.check(claim, !ok && waited >= patience);
    Ok(())
}

/// Step 6: Python's Lock is a semaphore of one: another process may release it.
fn lock_released_by_another(lesson: &mut Lesson) -> Result<()> {
    lesson.step("Lock() is a semaphore of one: a child acquires, the parent releases");
    let lock = Semaphore::lock()?;
    let mut child = fork(|| -> Result<()> {
        // Child: lock.acquire(), and exit without releasing.
        match lock.acquire(BOUND)? {
            true => Ok(()),
            false => bail!("the lock was not free"),
        }
    })?;
    // Parent: the child is gone; its lock is still taken. Release it from here.
    let exit = child.join_within(BOUND)?;
    let pid = child.pid();
    lesson.say(format!("child pid {pid} acquired it, then ended: {exit}"));
    let taken = !lock.try_acquire();
    lesson.check("the lock is still taken (acquire(False) fails)", taken);
    let released = lock.release();
    lesson.say("parent: lock.release(), though it never acquired it");
    let free = released.is_ok() && lock.try_acquire();
    lesson.check("the release worked: the lock is free again", free);
    lock.release()?;
    let again = lock.release();
    if let Err(e) = again {
        lesson.say(format!("release() once more: {e}"));
    }
    lesson.check("a release past the bound is refused", again.is_err());
    Ok(())
}

/// Step 7: the holder dies. Lock() stays taken; the robust mutex says so.
fn holder_dies(lesson: &mut Lesson, patience: Duration) -> Result<()> {
    lesson.step("the holder dies: Lock() vs the course's robust mutex");
    let (lock, robust) = (Semaphore::lock()?, SharedLock::new(Robustness::Robust)?);
    let exit = kill_holder(&lock, &robust)?;
    lesson.say(format!("the holder ended with {exit}"));
    let t = Instant::now();
    let got = lock.acquire(patience)?;
    let (waited, timeout) = (fmt_duration(t.elapsed()), patience.as_secs_f64());
    let got_py = python_bool(got);
    lesson.say(format!(
        "Lock(): acquire(timeout={timeout}) -> {got_py} after {waited}"
    ));
    lesson.broken("nobody will release it: acquire() would wait forever");
    lesson.check("the timed acquire gave up instead of hanging", !got);
    let told = match robust.try_lock_for(BOUND) {
        Err(LockError::OwnerDied(mut guard)) => guard.mark_consistent().is_ok(),
        Ok(_) => false,
        Err(e) => bail!("robust mutex: {e}"),
    };
    let says = if told {
        "the owner died (EOWNERDEAD)"
    } else {
        "no sign"
    };
    lesson.say(format!("robust mutex, next lock: {says}"));
    lesson.check("the robust mutex told the next locker its owner died", told);
    Ok(())
}

/// A time in ns (from the rounds' shared clock) for people.
fn ns(t: Option<i64>) -> String {
    fmt_duration(Duration::from_nanos(t.unwrap_or(0).max(0) as u64))
}

fn python_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}
