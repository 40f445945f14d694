//! The parts of `mp-lock-bank` that the story (`src/main.rs`) and the benchmark
//! (`benches/lock.rs`) share: a bounded join for worker processes, the spin that
//! stands for work, the holder that dies, and the timed counting the benchmark does.
//!
//! The lock is `common::lock::ShmMutex`: a `PTHREAD_PROCESS_SHARED`, robust pthread
//! mutex that lives in the same shared mapping as the balance it guards
//! (`Value::get_lock()`, like `multiprocessing.Value(...).get_lock()`).

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use common::fork;
use common::lock::{LockError, ShmMutex};
use common::process::{Child, Deadline, Exit, children_left};
use common::shm::{Array, Gate, RawValue, Value};
use common::timeline::{Kind, Lane, Timeline, fmt_duration};

/// The longest bank run the flags may ask for (ops x (sleep + work)).
pub const LONGEST_RUN: Duration = Duration::from_secs(60);

/// One bank run's knobs: each worker sleeps, then reads, works, writes, `ops` times.
#[derive(Debug, Clone, Copy)]
pub struct Bank {
    pub ops: u64,
    /// The sleep between operations (the tutorial's `time.sleep(0.001)`).
    pub sleep: Duration,
    /// The race window: between reading the balance and writing it back.
    pub work: Duration,
}

impl Bank {
    /// The knobs from `--ops`, `--sleep-us`, `--work-us`; an error when a run would
    /// take longer than [`LONGEST_RUN`].
    pub fn new(ops: u64, sleep_us: u64, work_us: u64) -> anyhow::Result<Bank> {
        let per_op = sleep_us.saturating_add(work_us);
        let length = Duration::from_micros(ops.saturating_mul(per_op));
        if length > LONGEST_RUN {
            bail!(
                "--ops x (--sleep-us + --work-us) is {}; at most {} per run, please",
                fmt_duration(length),
                fmt_duration(LONGEST_RUN)
            );
        }
        Ok(Bank {
            ops,
            sleep: Duration::from_micros(sleep_us),
            work: Duration::from_micros(work_us),
        })
    }

    /// How long the parent waits for the workers: three times what the run should
    /// take, and 5 s more. A worker stopped (SIGSTOP) or stuck past that is killed.
    pub fn patience(&self) -> Duration {
        let length = Duration::from_nanos(
            (self.ops as u128 * (self.sleep + self.work).as_nanos()).min(u64::MAX as u128) as u64,
        );
        length.saturating_mul(3) + Duration::from_secs(5)
    }

    /// Where a run's chart ends (in the timeline's ns): some 5 operations after
    /// `start`, or later, up to 20, so that each worker's first turn in the window
    /// and the first overlap of the two (lane `both`), if any, are in the picture:
    /// a busy machine may start one worker late. A whole run is too long to read.
    pub fn chart_end(&self, tl: &Timeline, start: u64, workers: [Lane; 2], both: Lane) -> u64 {
        let first_busy = |lane| {
            let mut spans = tl.lane_spans(lane).into_iter();
            spans.find(|s| s.kind != Kind::Wait).map(|s| s.end)
        };
        let seen = [
            first_busy(workers[0]),
            first_busy(workers[1]),
            first_busy(both),
        ];
        let op = (self.sleep + self.work).as_nanos() as u64;
        let (short, long) = (start + 5 * op + 1_000_000, start + 20 * op + 1_000_000);
        seen.into_iter()
            .flatten()
            .max()
            .map_or(short, |end| (end + op).clamp(short, long))
    }
}

/// Record on lane `into` every stretch when lanes `a` and `b` were both in a span
/// that is not waiting, and return their sum. Each lane's spans follow one another
/// (one worker, one thing at a time), so one pass over the two sorted lists finds
/// every overlap.
pub fn mark_overlaps(tl: &Timeline, a: Lane, b: Lane, into: Lane) -> Duration {
    let busy = |lane| -> Vec<_> {
        let spans = tl.lane_spans(lane).into_iter();
        spans.filter(|s| s.kind != Kind::Wait).collect()
    };
    let (a, b) = (busy(a), busy(b));
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
        if start < end {
            tl.record(into, Kind::Run, start, end);
            total += end - start;
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    Duration::from_nanos(total)
}

/// How long a child waits for the parent's start signal.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// Burn CPU for `d`: the work between reading the balance and writing it back. A
/// sleep would let the other process run on this core and hide the race on a
/// machine with one core.
pub fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Join every worker within `limit`. A worker that fails, or workers still running
/// at the end of it (stopped by SIGSTOP, or waiting for a lock that a stopped worker
/// holds), are reported; then every worker is killed with SIGKILL and reaped, so
/// none outlives the error. `what` names them: "the bank workers".
pub fn join_all(workers: &mut [Child], limit: Duration, what: &str) -> anyhow::Result<()> {
    // Time the lesson spends stopped (Ctrl-Z, then fg) is not the workers' fault:
    // the bound leaves it out (it is looked at every 100 ms).
    let mut deadline = Deadline::after(limit);
    for i in 0..workers.len() {
        let exit = loop {
            let exit = workers[i].join_timeout(deadline.slice())?;
            if exit.is_some() || deadline.passed() {
                break exit;
            }
        };
        let problem = match exit {
            Some(exit) if exit.success() => continue,
            Some(exit) => format!("{what}: pid {} failed: {exit}", workers[i].pid()),
            None => {
                let late: Vec<String> = workers[i..]
                    .iter()
                    .map(|w| format!("pid {} {}", w.pid(), state_of(w.pid())))
                    .collect();
                format!(
                    "{what} were not done within {} ({}); killed",
                    fmt_duration(limit),
                    late.join(", ")
                )
            }
        };
        for w in workers.iter_mut() {
            // No wait: SIGKILL (which ends even a stopped process), then a bounded reap.
            w.join_or_kill(Duration::ZERO)?;
        }
        bail!(problem);
    }
    Ok(())
}

/// What /proc says a child of ours is doing, in words.
fn state_of(pid: i32) -> &'static str {
    match children_left().iter().find(|&&(p, _)| p == pid) {
        Some((_, 'T' | 't')) => "stopped",
        Some((_, 'S' | 'D')) => "waiting",
        Some((_, 'R')) => "running",
        _ => "done",
    }
}

/// A child takes `lock`, writes the balance into `journal`, takes 50 out (half a
/// transfer), tells the parent, and waits to be killed. The parent waits (at most
/// 5 s) until the child holds the lock, kills it with SIGKILL, and reaps it: the lock
/// is never unlocked. Returns how the child ended.
pub fn kill_holder(
    lock: &ShmMutex,
    balance: &Value<i64>,
    journal: &RawValue<i64>,
) -> anyhow::Result<Exit> {
    let holding = Gate::new()?;
    let mut child = fork(|| -> anyhow::Result<()> {
        // Child: take the lock, start a transfer, and never let go.
        let _guard = lock.lock().map_err(|e| anyhow!("lock: {e}"))?;
        journal.set(balance.get());
        balance.set(balance.get() - 50);
        holding.open();
        std::thread::sleep(Duration::from_secs(60)); // the parent kills us first
        Ok(())
    })
    .context("forking the lock holder")?;
    // Parent: once the child holds the lock, kill it.
    let held = holding.wait(Duration::from_secs(5));
    child.kill()?;
    let exit = child.join()?;
    if !held {
        bail!("the holder never took the lock within 5 s ({exit})");
    }
    Ok(exit)
}

/// How the benchmark's processes add 1 to the shared counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `with lock: counter.value += 1`: the course's process-shared lock.
    Locked,
    /// One atomic read-modify-write, no lock.
    FetchAdd,
}

/// What one timed count produced.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    /// From the start signal to the last join.
    pub wall: Duration,
    /// The counter at the end: `procs x n` when no increment was lost.
    pub total: i64,
    /// The share of `wall` during which every process was counting: near 1 when
    /// they really contended, low when a busy machine ran them one after another.
    pub together: f64,
}

impl Counted {
    /// Nanoseconds per increment, over all processes.
    pub fn ns_per_increment(&self) -> f64 {
        self.wall.as_nanos() as f64 / self.total.max(1) as f64
    }
}

/// `procs` processes each add 1 to one shared counter `n` times, `way`, starting
/// together. The join is bounded (a minute, plus 10 us per increment): a worker
/// stopped or stuck past that is killed and reported.
pub fn count_increments(procs: usize, n: u64, way: Way) -> anyhow::Result<Counted> {
    let counter = Value::<i64>::new(0)?;
    let go = Gate::new()?;
    // When each worker started and stopped counting, in ns since `epoch` (an
    // Instant is CLOCK_MONOTONIC: one clock for every process).
    let marks = Array::<i64>::new(2 * procs)?;
    let epoch = Instant::now();
    let mut workers = Vec::with_capacity(procs);
    for i in 0..procs {
        let (counter, go, marks) = (&counter, &go, &marks);
        let worker = fork(move || -> anyhow::Result<()> {
            // Child: wait for the start, then count.
            if !go.wait(START_PATIENCE) {
                bail!("never told to start");
            }
            marks.set(2 * i, epoch.elapsed().as_nanos() as i64);
            for _ in 0..n {
                match way {
                    Way::Locked => {
                        let _g = counter.get_lock().lock().map_err(|e| lock_failed(&e))?;
                        counter.set(counter.get() + 1);
                    }
                    Way::FetchAdd => {
                        counter.cell().fetch_add(1, SeqCst);
                    }
                }
            }
            marks.set(2 * i + 1, epoch.elapsed().as_nanos() as i64);
            Ok(())
        });
        workers.push(worker.context("forking a counting worker")?);
    }
    // Parent: start them together and time until the last one is joined.
    let limit = Duration::from_secs(60) + Duration::from_nanos(n.saturating_mul(10_000));
    let t = Instant::now();
    go.open();
    join_all(&mut workers, limit, "the counting workers")?;
    let wall = t.elapsed();
    let marks = marks.to_vec();
    let last_start = marks.iter().step_by(2).max().copied().unwrap_or(0);
    let first_end = marks.iter().skip(1).step_by(2).min().copied().unwrap_or(0);
    let all_in = Duration::from_nanos(first_end.saturating_sub(last_start).max(0) as u64);
    Ok(Counted {
        wall,
        total: counter.get(),
        together: all_in.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    })
}

/// Why a worker could not take the lock, in words (never `Debug`).
pub fn lock_failed(e: &LockError<'_>) -> anyhow::Error {
    match e {
        LockError::OwnerDied(_) => anyhow!("the other worker died holding the lock"),
        other => anyhow!("lock: {other}"),
    }
}
