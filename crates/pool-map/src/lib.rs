//! The process pool of the `pool-map` lesson ([`Pool`], in the `pool` module), the
//! functions the lesson, its tests and its benchmark give it, and what they compare
//! it with: serial, scoped threads and rayon, timed with the CPU time they got. A
//! pool takes plain `fn` items (or closures that capture nothing): see the `pool`
//! module for why a function pointer is enough after `fork`.

mod pool;

pub use pool::{
    AsyncResult, Context, Imap, Pool, PoolError, STOP_PATIENCE, Wire, default_chunksize,
};

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// Python's `square`.
pub fn square(x: u64) -> u64 {
    x * x
}

/// `square`, and the PID of the worker that computed it.
pub fn square_where(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// The tutorial's workload: the sum of `x * x` for `x` in `0..1000`
/// (`sum(x*x for x in range(1000))`), once per item.
///
/// Every step goes through `black_box`: without it LLVM replaces the loop with the
/// closed form `(n-1)n(2n-1)/6` (and then hoists it out of the map, since it does not
/// depend on the argument), and "serial" would take no time at all. The work must
/// be real for the comparison to mean anything.
pub fn sum_of_squares(n: u64) -> u64 {
    squares_below(n, 1000)
}

/// The same with 100 times the work per item: `x` in `0..100_000`.
pub fn sum_of_squares_100x(n: u64) -> u64 {
    squares_below(n, 100_000)
}

fn squares_below(n: u64, limit: u64) -> u64 {
    black_box(n);
    let mut sum = 0u64;
    for x in 0..limit {
        let x = black_box(x);
        sum = black_box(sum.wrapping_add(x * x));
    }
    sum
}

/// `sum_of_squares` for every item of `0..items`, timed where it runs: the
/// process's PID and the time in microseconds. Run on every worker at once, it
/// shows whether the cores are equally fast.
pub fn time_work(items: u64) -> (u32, u64) {
    let start = Instant::now();
    let sum = (0..items).fold(0u64, |sum, n| sum.wrapping_add(sum_of_squares(n)));
    black_box(sum);
    (std::process::id(), start.elapsed().as_micros() as u64)
}

/// Almost no work: what a task costs when the work is free.
pub fn identity(x: u64) -> u64 {
    x
}

/// Sleeps, then squares: a task long enough to kill its worker in the middle of.
/// It sleeps 300 ms in slices of 10 ms: a sleep's clock runs on while the whole
/// job is stopped (Ctrl-Z), and one long sleep would then be over at `fg`, before
/// the lesson's kill; a stop now uses up one slice at most.
pub fn slow_square(x: u64) -> u64 {
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(10));
    }
    x * x
}

/// `res.get(timeout)` as the lesson's own bound on a task: the timeout leaves
/// out time this program spends stopped (Ctrl-Z, then `fg`), so a learner who
/// pauses the lesson gets no Timeout for it. It asks in slices of 100 ms
/// (`common::process::Deadline`). Python's `get(timeout)`, like [`AsyncResult::get`],
/// counts that time.
pub fn get_within<T>(res: &AsyncResult<T>, timeout: Duration) -> Result<T, PoolError> {
    let mut deadline = common::process::Deadline::after(timeout);
    loop {
        match res.get(Some(deadline.slice())) {
            Err(PoolError::Timeout(_)) if !deadline.passed() => continue,
            Err(PoolError::Timeout(_)) => return Err(PoolError::Timeout(timeout)),
            other => return other,
        }
    }
}

/// Panics on 13, like a task that raises an exception in Python.
pub fn unlucky(x: u64) -> u64 {
    assert!(x != 13, "13 is unlucky");
    x
}

/// The serial baseline: `[f(x) for x in items]`.
pub fn serial(f: fn(u64) -> u64, items: &[u64]) -> Vec<u64> {
    items.iter().map(|&x| f(x)).collect()
}

/// Threads that could not be started, or that panicked: an error to report, not a
/// panic of the caller.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    #[error("cannot start a thread: {0}")]
    Start(std::io::Error),
    #[error("cannot start rayon's threads: {0}")]
    Rayon(rayon::ThreadPoolBuildError),
    #[error("a thread panicked: {0}")]
    Panicked(String),
}

/// `threads` scoped threads, each mapping one contiguous share of `items`.
///
/// Every thread that started is joined before this returns, even when a later one
/// could not start (`ulimit -u`) or one panicked.
pub fn scoped_threads(
    f: fn(u64) -> u64,
    items: &[u64],
    threads: usize,
) -> Result<Vec<u64>, ThreadsError> {
    let share = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let mut started = Vec::new();
        let mut failed = None;
        for (i, part) in items.chunks(share).enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("share-{i}"))
                .spawn_scoped(s, move || part.iter().map(|&x| f(x)).collect::<Vec<_>>());
            match spawned {
                Ok(handle) => started.push(handle),
                Err(e) => {
                    failed = Some(ThreadsError::Start(e));
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for handle in started {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => {
                    failed.get_or_insert(ThreadsError::Panicked(common::process::panic_message(
                        panic.as_ref(),
                    )));
                }
            }
        }
        failed.map_or(Ok(out), Err)
    })
}

/// A rayon pool of `threads` threads of its own (not the global one, whose start
/// failure would be a panic).
pub fn rayon_pool(threads: usize) -> Result<rayon::ThreadPool, ThreadsError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rayon-{i}"))
        .build()
        .map_err(ThreadsError::Rayon)
}

/// `f` over `items` on `pool`, by rayon's work stealing.
pub fn rayon_map(pool: &rayon::ThreadPool, f: fn(u64) -> u64, items: &[u64]) -> Vec<u64> {
    pool.install(|| items.par_iter().map(|&x| f(x)).collect())
}

/// One timed run: the wall-clock time, and the CPU time the calling thread used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub wall: Duration,
    pub cpu: Duration,
}

impl Timing {
    /// The share of one core the calling thread got while it ran: near 1.0 when it
    /// computed the whole time, clearly less when other processes took the CPU.
    pub fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Run `f` and time it: wall clock, and this thread's CPU time
/// (`getrusage(RUSAGE_THREAD)`, user plus system).
pub fn timed<T>(f: impl FnOnce() -> T) -> (Timing, T) {
    let (cpu, start) = (thread_cpu_time(), Instant::now());
    let out = f();
    let wall = start.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu);
    (Timing { wall, cpu }, out)
}

/// The CPU time the calling thread has used so far (zero if the kernel will not say).
pub fn thread_cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    getrusage(UsageWho::RUSAGE_THREAD)
        .map_or(Duration::ZERO, |u| tv(u.user_time()) + tv(u.system_time()))
}

/// How long, so far, some task on this machine has waited for a CPU: the `some`
/// total of `/proc/pressure/cpu` (Linux's pressure stall information; `None` where
/// the kernel does not provide it).
pub fn cpu_pressure() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let total = some.split(' ').find_map(|w| w.strip_prefix("total="))?;
    Some(Duration::from_micros(total.parse().ok()?))
}

/// How busy the machine was while something was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Busy {
    /// The share of a core the serial run got ([`Timing::cpu_share`]).
    pub serial_share: f64,
    /// The share of the time some task waited for a CPU (see [`cpu_pressure`]).
    pub pressure: Option<f64>,
}

/// The lines under a benchmark's speedup table: the ideal on this machine, the
/// serial run's share of a core, CPU pressure, then each caveat once (wrapped at
/// 80 columns).
pub fn conditions(
    busy: Busy,
    workers: usize,
    cpus: usize,
    mut caveats: Vec<String>,
) -> Vec<String> {
    let pressure = busy
        .pressure
        .map_or("unknown".into(), |p| format!("{:.0}%", p * 100.0));
    let (ideal, share) = (workers.min(cpus), busy.serial_share * 100.0);
    let mut lines = vec![format!(
        "  ideal {ideal}.00x on {cpus} CPUs; serial got {share:.0}% of a core; CPU pressure {pressure}"
    )];
    caveats.sort();
    caveats.dedup();
    for why in caveats {
        lines.extend(common::output::wrap(
            &format!("  note: {why}"),
            80,
            "        ",
        ));
    }
    lines
}

/// Below this share of a core, the serial run was starved: the machine is busy.
pub const BUSY_SHARE: f64 = 0.9;
/// Above this share of the time with a task waiting for a CPU, the parallel runs
/// were competing with other work (the pool's own parent adds a few percent).
pub const BUSY_PRESSURE: f64 = 0.2;

/// Why a measured speedup over serial cannot be read as it stands, if it cannot.
///
/// `workers` ran in parallel on `cpus` CPUs, so the ideal is the smaller of the two.
/// A serial run that got clearly less than one core took longer than the work
/// needs, and inflates every speedup measured against it; parallel runs that
/// waited for CPUs were slowed by other work. A speedup above the ideal (beyond 2%
/// of timing noise) is not a gain: the parallel runs did the same work, so the
/// serial run was slowed by something.
pub fn speedup_caveat(speedup: f64, workers: usize, cpus: usize, busy: Busy) -> Option<String> {
    let ideal = workers.min(cpus).max(1) as f64;
    let pressed = busy
        .pressure
        .filter(|&p| p > BUSY_PRESSURE && workers <= cpus);
    let why = if busy.serial_share < BUSY_SHARE {
        Some(format!(
            "the serial run got {:.0}% of a core",
            busy.serial_share * 100.0
        ))
    } else {
        pressed.map(|p| format!("some task waited for a CPU {:.0}% of the time", p * 100.0))
    };
    if let Some(why) = why {
        return Some(format!(
            "the machine is busy ({why}): these times are slower than a quiet \
             machine's, and the speedups are not reliable"
        ));
    }
    if speedup > ideal * 1.02 {
        let limit = if ideal < cpus as f64 {
            format!("{workers} workers")
        } else {
            format!("{cpus} CPUs")
        };
        return Some(format!(
            "{speedup:.2}x is more than {limit} can give ({ideal:.2}x): the work was \
             the same, so the serial run was slowed (a neighbour between its \
             samples, the CPU's clock); read it as about {ideal:.2}x"
        ));
    }
    None
}

/// Each way's best time on the same work, from interleaved rounds (a noisy moment
/// hurts every way alike, and the ratios come from one run).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The pool's workers, and as many threads.
    pub workers: usize,
    /// `[f(x) for x in items]` on this thread, with the share of a core it got.
    pub serial: Timing,
    /// `pool.map(f, items)`: Python's default chunksize, `chunksize`.
    pub pool: Duration,
    pub chunksize: usize,
    /// The pool with chunks ten times finer, `fine_chunksize` (if asked for).
    pub pool_fine: Option<Duration>,
    pub fine_chunksize: usize,
    /// Scoped threads, as many as the pool has workers, one share each.
    pub threads: Duration,
    /// Rayon's work stealing (if a rayon pool was given).
    pub rayon: Option<Duration>,
    /// Every way gave the serial results, in every round.
    pub agree: bool,
    /// How busy the machine was meanwhile.
    pub busy: Busy,
}

/// Time serial, the pool at Python's chunksize and as many scoped threads on `f`
/// over `input`, best of `rounds` interleaved rounds (see [`compare_all`]).
pub fn compare(
    pool: &Pool,
    f: fn(u64) -> u64,
    input: &[u64],
    rounds: usize,
) -> anyhow::Result<Comparison> {
    compare_all(pool, None, false, f, input, rounds, &mut |_, _| {})
}

/// Time serial, the pool (and its finer chunks, if `fine`), scoped threads and
/// rayon (if given) on `f` over `input`, best of `rounds` interleaved rounds.
/// `progress` hears the round (from 1) and the name of each way before it runs. A failed pool run (a
/// worker killed from another terminal) or threads that cannot start end it with
/// their error: a failed run has no time worth comparing.
pub fn compare_all(
    pool: &Pool,
    rayon: Option<&rayon::ThreadPool>,
    fine: bool,
    f: fn(u64) -> u64,
    input: &[u64],
    rounds: usize,
    progress: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Comparison> {
    use anyhow::Context;
    let workers = pool.processes();
    let chunksize = default_chunksize(input.len(), workers).max(1);
    // Python's rule makes 4 chunks per worker: when one core runs slower, a worker
    // may idle for most of a chunk at the end. 40 per worker bound that to a tenth.
    let fine_chunksize = chunksize.div_ceil(10);
    let mut expect = Vec::new();
    let (slowest, none) = (Duration::MAX, Duration::ZERO);
    let mut c = Comparison {
        workers,
        serial: Timing {
            wall: slowest,
            cpu: none,
        },
        pool: slowest,
        chunksize,
        pool_fine: fine.then_some(slowest),
        fine_chunksize,
        threads: slowest,
        rayon: rayon.map(|_| slowest),
        agree: true,
        busy: Busy {
            serial_share: 1.0,
            pressure: None,
        },
    };
    let (start, waited) = (Instant::now(), cpu_pressure());
    for round in 1..=rounds.max(1) {
        progress(round, "serial");
        let (t, out) = timed(|| serial(f, input));
        if t.wall < c.serial.wall {
            c.serial = t;
        }
        if expect.is_empty() {
            expect = out; // the yardstick for every way
        }
        progress(round, &format!("pool, chunksize {chunksize}"));
        let (t, out) = timed(|| pool.map_chunked(f, input.iter().copied(), chunksize));
        c.pool = c.pool.min(t.wall);
        c.agree &= out.context("the pool's run failed")? == expect;
        if let Some(best) = &mut c.pool_fine {
            progress(round, &format!("pool, chunksize {fine_chunksize}"));
            let (t, out) = timed(|| pool.map_chunked(f, input.iter().copied(), fine_chunksize));
            *best = (*best).min(t.wall);
            c.agree &= out.context("the pool's run failed")? == expect;
        }
        progress(round, &format!("{workers} threads"));
        let (t, out) = timed(|| scoped_threads(f, input, workers));
        c.threads = c.threads.min(t.wall);
        c.agree &= out? == expect;
        if let (Some(best), Some(rayon)) = (&mut c.rayon, rayon) {
            progress(round, "rayon");
            let (t, out) = timed(|| rayon_map(rayon, f, input));
            *best = (*best).min(t.wall);
            c.agree &= out == expect;
        }
    }
    // A run of a few microseconds is too short for the kernel's CPU accounting to
    // judge: it counts as having had its core.
    if c.serial.wall >= Duration::from_millis(5) {
        c.busy.serial_share = c.serial.cpu_share();
    }
    c.busy.pressure = cpu_pressure()
        .zip(waited)
        .map(|(end, start_)| end.saturating_sub(start_).as_secs_f64())
        .map(|w| w / start.elapsed().as_secs_f64().max(1e-9));
    Ok(c)
}

/// What a task costs: `tasks` trivial items mapped at chunksize 1 (one task per
/// item) and at Python's default chunksize, best of `rounds` each.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCost {
    pub tasks: usize,
    /// Per task at chunksize 1.
    pub one: Duration,
    pub chunksize: usize,
    /// Per item at `chunksize`.
    pub chunked: Duration,
    /// Both gave back the input.
    pub agree: bool,
}

/// Measure [`TaskCost`] on `pool`.
pub fn task_cost(pool: &Pool, tasks: usize, rounds: usize) -> Result<TaskCost, PoolError> {
    let trivial: Vec<u64> = (0..tasks as u64).collect();
    let chunksize = default_chunksize(tasks, pool.processes()).max(1);
    let (mut one, mut chunked, mut agree) = (Duration::MAX, Duration::MAX, true);
    for _ in 0..rounds.max(1) {
        let (t, out) = timed(|| pool.map_chunked(identity, trivial.iter().copied(), 1));
        one = one.min(t.wall);
        agree &= out? == trivial;
        let (t, out) = timed(|| pool.map_chunked(identity, trivial.iter().copied(), chunksize));
        chunked = chunked.min(t.wall);
        agree &= out? == trivial;
    }
    let per = |t: Duration| t.div_f64(tasks.max(1) as f64);
    Ok(TaskCost {
        tasks,
        one: per(one),
        chunksize,
        chunked: per(chunked),
        agree,
    })
}

/// What became of the tasks when a worker was killed in the middle of one.
#[derive(Debug)]
pub struct KilledMidTask {
    pub victim: i32,
    /// The first task's outcome: the one the victim held.
    pub first: Result<u64, PoolError>,
    /// The other tasks' results.
    pub others: Vec<u64>,
    /// How long until every outcome was in.
    pub wall: Duration,
}

impl KilledMidTask {
    /// The victim's task failed with "worker died", naming it; the others ran.
    pub fn as_python_would_wish(&self, workers: u64) -> bool {
        let died =
            matches!(&self.first, Err(PoolError::WorkerDied { pid, .. }) if *pid == self.victim);
        died && self.others == (1..workers).map(|x| x * x).collect::<Vec<_>>()
    }
}

/// Give every worker a 300 ms `slow_square` (of 0, 1, 2, ...), then SIGKILL the
/// one running the first, from outside, the way the OOM killer (or you, with
/// `kill -9`) would, and wait (at most 10 s) for every outcome.
pub fn kill_mid_task(pool: &Pool) -> anyhow::Result<KilledMidTask> {
    let handles = (0..pool.processes() as u64).map(|x| pool.apply_async(slow_square, x));
    let handles = handles.collect::<Result<Vec<_>, _>>()?;
    let Some(&victim) = handles[0].worker_pids().first() else {
        anyhow::bail!("the first task is not running in any worker");
    };
    std::thread::sleep(Duration::from_millis(50));
    let pid = nix::unistd::Pid::from_raw(victim);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| anyhow::anyhow!("killing worker pid {victim}: {e}"))?;
    let wait = Duration::from_secs(10);
    let get = |h| get_within(h, wait);
    let (t, mut outcomes) = timed(|| handles.iter().map(get).collect::<Vec<_>>());
    let first = outcomes.remove(0);
    let others = outcomes.into_iter().filter_map(Result::ok).collect();
    Ok(KilledMidTask {
        victim,
        first,
        others,
        wall: t.wall,
    })
}

/// `items` shown one after the other, `sep` between (never Rust's `Debug`).
pub fn joined<T: std::fmt::Display>(items: impl IntoIterator<Item = T>, sep: &str) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    items.join(sep)
}

/// `pid 901, pid 902`.
pub fn pids(pids: &[i32]) -> String {
    joined(pids.iter().map(|p| format!("pid {p}")), ", ")
}

/// A result as the learner reads it: the value, or the error's message.
pub fn shown(r: &Result<u64, PoolError>) -> String {
    r.as_ref().map_or_else(ToString::to_string, u64::to_string)
}

/// Python's spelling of a bool.
pub fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_compute_the_serial_results_and_report_a_panic() {
        let items: Vec<u64> = (0..100).collect();
        let out = scoped_threads(square, &items, 3).expect("threads start");
        assert_eq!(out, serial(square, &items));
        let err = scoped_threads(unlucky, &items, 4).expect_err("13 panics");
        assert!(err.to_string().contains("13 is unlucky"), "{err}");
        let rayon = rayon_pool(2).expect("rayon starts");
        assert_eq!(rayon_map(&rayon, square, &items), out);
    }

    #[test]
    fn speedups_are_read_honestly() {
        let quiet = |serial_share| Busy {
            serial_share,
            pressure: Some(0.02),
        };
        assert_eq!(speedup_caveat(1.9, 2, 2, quiet(0.99)), None);
        assert_eq!(
            speedup_caveat(2.01, 2, 2, quiet(0.99)),
            None,
            "within noise"
        );
        let busy = speedup_caveat(1.9, 2, 2, quiet(0.6)).expect("busy");
        assert!(busy.contains("busy") && busy.contains("60%"), "{busy}");
        let pressed = Busy {
            serial_share: 1.0,
            pressure: Some(0.35),
        };
        let busy = speedup_caveat(1.2, 2, 2, pressed).expect("busy");
        assert!(busy.contains("waited for a CPU 35%"), "{busy}");
        let above = speedup_caveat(2.3, 2, 2, quiet(0.99)).expect("above the ideal");
        assert!(
            above.contains("2 CPUs") && above.contains("2.00x"),
            "{above}"
        );
        let workers = speedup_caveat(1.5, 1, 2, quiet(0.99)).expect("one worker");
        assert!(workers.contains("1 workers"), "{workers}");
    }

    #[test]
    fn a_busy_thread_gets_about_one_core() {
        let (t, _) = timed(|| serial(sum_of_squares, &(0..2000).collect::<Vec<_>>()));
        assert!(t.cpu <= t.wall + Duration::from_millis(20), "{t:?}");
    }
}
