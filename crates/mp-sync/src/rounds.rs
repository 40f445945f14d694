//! The processes behind the lesson's steps: each function forks its workers, lets them run against one primitive, joins them (bounded), and returns
//! what they recorded in shared memory, for `src/main.rs` to show and check.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use common::fork;
use common::lock::ShmMutex;
use common::process::{Child, Exit};
use common::procfs::state_of;
use common::shm::{Array, RawValue};
use common::timeline::{Kind, Timeline, fmt_duration};

use crate::{Barrier, BrokenBarrier, Condition, Deadline, Event, Semaphore, join_all, ns_since};

/// The bound on every wait that should succeed: past it, a peer is stuck or stopped.
pub const BOUND: Duration = Duration::from_secs(5);
/// The bound on joining one step's processes, all of them.
pub const JOIN: Duration = Duration::from_secs(12);

/// What [`event_round`] saw.
#[derive(Debug)]
pub struct EventRound {
    /// Waiters asleep in the kernel (state S in /proc) just before `set()`.
    pub asleep: usize,
    /// How many the one FUTEX_WAKE of `set()` woke: only waiters asleep in the
    /// futex count (one that sees the flag first does not sleep at all).
    pub woken: usize,
    /// Waiters that got past `wait` before `set()` (must be none).
    pub early: usize,
    /// For each waiter, ns from `set()` until it ran again (negative: before it).
    pub after_set: Vec<i64>,
}

/// `n` processes call `event.wait(timeout)`; the parent sets the event once, after
/// it has seen every one of them asleep (or [`BOUND`] has passed).
pub fn event_round(n: usize) -> Result<EventRound> {
    let (event, ready) = (Event::new()?, Semaphore::new(0)?);
    let woke_at = Array::<i64>::new(n)?;
    let epoch = Instant::now();
    let mut waiters = Vec::new();
    for i in 0..n {
        let (event, ready, woke_at) = (&event, &ready, &woke_at);
        waiters.push(fork(move || -> Result<()> {
            // Child: say "about to wait", then event.wait(timeout). Its timeout is
            // longer than the parent's look at /proc, so it is still asleep then.
            ready.release()?;
            if !event.wait(2 * BOUND) {
                bail!("the event was not set within {}", fmt_duration(2 * BOUND));
            }
            woke_at.set(i, ns_since(epoch));
            Ok(())
        })?);
    }
    // Parent: once all are about to wait, watch /proc until every one is asleep
    // (state S: the only place a waiter can sleep now is the futex); then set.
    for _ in 0..n {
        if !ready.acquire(BOUND)? {
            bail!("the waiters did not start within {}", fmt_duration(BOUND));
        }
    }
    let asleep = all_asleep(&waiters)?;
    let early = woke_at.to_vec().iter().filter(|&&t| t != 0).count();
    let set_at = ns_since(epoch);
    let woken = event.set();
    join_all(&mut waiters, JOIN, "the event waiters")?;
    let after_set = woke_at.to_vec().iter().map(|&t| t - set_at).collect();
    Ok(EventRound {
        asleep,
        woken,
        early,
        after_set,
    })
}

/// How many of `children` are asleep (state S), once all are or [`BOUND`] has
/// passed. An error, never a count of 0, when /proc cannot tell.
fn all_asleep(children: &[Child]) -> Result<usize> {
    let deadline = Deadline::after(BOUND);
    loop {
        let mut asleep = 0;
        for c in children {
            match state_of(c.pid()) {
                Some('S') => asleep += 1,
                Some(_) => {}
                None => bail!("cannot read the state of pid {} in /proc", c.pid()),
            }
        }
        if asleep == children.len() || deadline.left().is_none() {
            return Ok(asleep);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What [`semaphore_round`] saw.
#[derive(Debug)]
pub struct SemaphoreRound {
    /// Each worker's wait for a slot, then its time inside.
    pub timeline: Timeline,
    /// The most workers inside at once (counted by an atomic in shared memory).
    pub most: i64,
    /// Workers that got in.
    pub entered: i64,
}

/// `n` processes, started together, each do `with sem: work(hold)`. The last one
/// in waits for `ceil(n / slots)` turns of `hold` before it: its acquire bound,
/// and the bound on joining them all, grow with the flags.
pub fn semaphore_round(n: u32, slots: u32, hold: Duration) -> Result<SemaphoreRound> {
    let queue = hold.saturating_mul(n.div_ceil(slots.max(1)));
    let (bound, join) = (queue.saturating_add(BOUND), queue.saturating_add(JOIN));
    let (sem, go) = (Semaphore::new(slots)?, Event::new()?);
    let (inside, most) = (RawValue::<i64>::new(0)?, RawValue::<i64>::new(0)?);
    let entered = RawValue::<i64>::new(0)?;
    let mut timeline = Timeline::new(4 * n as usize + 8)?;
    let lanes: Vec<_> = (1..=n).map(|i| timeline.lane(format!("p{i}"))).collect();
    let mut workers = Vec::new();
    for lane in lanes {
        let (sem, go, tl) = (&sem, &go, &timeline);
        let (inside, most, entered) = (&inside, &most, &entered);
        workers.push(fork(move || -> Result<()> {
            // Child: with sem: (count who is inside; work)
            if !go.wait(BOUND) {
                bail!("never told to start");
            }
            let asked = tl.now();
            if !sem.acquire(bound)? {
                bail!("no turn within {}", fmt_duration(bound));
            }
            tl.record(lane, Kind::Wait, asked, tl.now());
            tl.span(lane, Kind::Hold, || {
                let now = inside.cell().fetch_add(1, SeqCst) + 1;
                most.cell().fetch_max(now, SeqCst);
                entered.cell().fetch_add(1, SeqCst);
                std::thread::sleep(hold); // the work the section guards
                inside.cell().fetch_sub(1, SeqCst);
            });
            Ok(sem.release()?)
        })?);
    }
    // Parent: start them together, wait for all.
    go.set();
    join_all(&mut workers, join, "the semaphore workers")?;
    Ok(SemaphoreRound {
        timeline,
        most: most.get(),
        entered: entered.get(),
    })
}

/// One phase of [`barrier_round`], in ns since the round began.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub last_in: i64,
    pub first_out: i64,
    /// Parties that left before the last one arrived (must be none).
    pub early: usize,
}

/// `parties` processes work a different time in each of `phases` phases, and
/// meet at the barrier at the end of each.
pub fn barrier_round(parties: u32, phases: u32) -> Result<Vec<Phase>> {
    let barrier = Barrier::new(parties)?;
    let cells = (parties * phases) as usize;
    let (arrived, left) = (Array::<i64>::new(cells)?, Array::<i64>::new(cells)?);
    let epoch = Instant::now();
    let mut members = Vec::new();
    for p in 0..parties {
        let (barrier, arrived, left) = (&barrier, &arrived, &left);
        members.push(fork(move || -> Result<()> {
            // Child: for each phase: work, arrive, barrier.wait(timeout).
            for phase in 0..phases {
                let work = (p + phase) % parties;
                std::thread::sleep(Duration::from_millis(10 * work as u64));
                let at = (phase * parties + p) as usize;
                arrived.set(at, ns_since(epoch));
                barrier.wait(BOUND)?;
                left.set(at, ns_since(epoch));
            }
            Ok(())
        })?);
    }
    join_all(&mut members, JOIN, "the barrier parties")?;
    let (arrived, left) = (arrived.to_vec(), left.to_vec());
    let per_phase = arrived
        .chunks(parties as usize)
        .zip(left.chunks(parties as usize));
    let phases = per_phase.map(|(a, l)| {
        let last_in = a.iter().copied().max().unwrap_or(0);
        Phase {
            last_in,
            first_out: l.iter().copied().min().unwrap_or(0),
            early: l.iter().filter(|&&t| t < last_in).count(),
        }
    });
    Ok(phases.collect())
}

/// How one surviving party's `barrier.wait` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Its own timeout ran out; it broke the barrier.
    TimedOut,
    /// It was woken by the break (BrokenBarrierError) before its own timeout.
    Told,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Passed => "passed",
            Outcome::TimedOut => "BrokenBarrierError: its own wait timed out",
            Outcome::Told => "BrokenBarrierError: broken by another",
        })
    }
}

/// What [`dead_party_round`] saw.
#[derive(Debug)]
pub struct DeadParty {
    pub pid: i32,
    pub exit: Exit,
    /// Parties already waiting at the barrier when party 1 was killed.
    pub waiting: u32,
    /// The other parties, in order: how each wait ended, and how long it took.
    pub others: Vec<(Outcome, Duration)>,
    pub broken: bool,
}

/// All parties start; party 1 works long before it would arrive, and is killed
/// once the others are waiting at the barrier. Party 2 waits `patience`; the
/// others wait [`BOUND`], far longer, and are released by party 2's timeout.
pub fn dead_party_round(parties: u32, patience: Duration) -> Result<DeadParty> {
    let barrier = Barrier::new(parties)?;
    let n = parties as usize;
    let (outcome, waited) = (Array::<i32>::new(n)?, Array::<i64>::new(n)?);
    let mut dead = fork(|| -> Result<()> {
        // Child: party 1: a long piece of work, then barrier.wait. It is killed
        // during the work.
        std::thread::sleep(Duration::from_secs(60));
        barrier.wait(BOUND)?;
        Ok(())
    })?;
    let mut others = Vec::new();
    for p in 1..n {
        let (barrier, outcome, waited) = (&barrier, &outcome, &waited);
        let timeout = if p == 1 { patience } else { BOUND };
        others.push(fork(move || {
            // Child: barrier.wait(timeout), and say how it ended.
            let t = Instant::now();
            let code = match barrier.wait(timeout) {
                Ok(_) => 1,
                Err(BrokenBarrier::TimedOut) => 2,
                Err(BrokenBarrier::Broken) => 3,
            };
            waited.set(p, ns_since(t));
            outcome.set(p, code);
        })?);
    }
    // Parent: once the others have arrived (the barrier counts them), kill party 1.
    let deadline = Deadline::after(BOUND);
    while barrier.n_waiting() < parties - 1 && deadline.left().is_some() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waiting = barrier.n_waiting();
    dead.kill()?;
    let exit = dead.join_within(BOUND)?;
    join_all(&mut others, JOIN, "the barrier parties")?;
    let (outcome, waited) = (outcome.to_vec(), waited.to_vec());
    let how = |code| match code {
        1 => Outcome::Passed,
        2 => Outcome::TimedOut,
        _ => Outcome::Told,
    };
    let others = (1..n)
        .map(|p| {
            (
                how(outcome[p]),
                Duration::from_nanos(waited[p].max(0) as u64),
            )
        })
        .collect();
    Ok(DeadParty {
        pid: dead.pid(),
        exit,
        waiting,
        others,
        broken: barrier.is_broken(),
    })
}

/// What [`condition_round`] saw.
#[derive(Debug, Clone, Copy)]
pub struct CondRound {
    /// `items` when the consumer's `wait_for` returned.
    pub seen: i64,
    /// How many times the consumer evaluated its predicate.
    pub looks: i64,
}

/// A consumer waits for `items >= 3` on `cond`; a producer adds five items, one
/// every 10 ms, each under the lock and followed by `notify_all()`.
pub fn condition_round(cond: &Condition, items: &RawValue<i64>) -> Result<CondRound> {
    let (seen, looks) = (RawValue::<i64>::new(0)?, RawValue::<i64>::new(0)?);
    let consumer = fork(|| -> Result<()> {
        // Child: with cond: cond.wait_for(lambda: items.value >= 3, timeout)
        let mut guard = cond.acquire(BOUND)?;
        let ok = guard.wait_for(BOUND, BOUND, || {
            looks.cell().fetch_add(1, SeqCst);
            items.get() >= 3
        })?;
        seen.set(items.get());
        if !ok {
            bail!("items did not reach 3 within {}", fmt_duration(BOUND));
        }
        Ok(())
    })?;
    let producer = fork(|| -> Result<()> {
        // Child: five times: with cond: items.value += 1; cond.notify_all()
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            let guard = cond.acquire(BOUND)?;
            items.set(items.get() + 1);
            guard.notify_all();
        }
        Ok(())
    })?;
    join_all(&mut [consumer, producer], JOIN, "the consumer and producer")?;
    Ok(CondRound {
        seen: seen.get(),
        looks: looks.get(),
    })
}

/// A child acquires `lock` (Python's `Lock()`) and locks `robust` (the course's
/// robust mutex), and is killed with SIGKILL while it holds both. Returns how it
/// ended.
pub fn kill_holder(lock: &Semaphore, robust: &ShmMutex) -> Result<Exit> {
    let holding = Semaphore::new(0)?;
    let mut child = fork(|| -> Result<()> {
        // Child: take both, say so, and wait to be killed.
        if !lock.acquire(BOUND)? {
            bail!("the lock was not free");
        }
        let _guard = robust.try_lock_for(BOUND).map_err(|e| anyhow!("{e}"))?;
        holding.release()?;
        std::thread::sleep(Duration::from_secs(60)); // the parent kills us first
        Ok(())
    })?;
    // Parent: once the child holds both, kill it.
    let held = holding.acquire(BOUND)?;
    child.kill()?;
    let exit = child.join_within(BOUND)?;
    if !held {
        bail!("the holder did not take the locks in time ({exit})");
    }
    Ok(exit)
}
