//! # pool-map: what does a process pool do, and what does it cost?
//!
//! **Question.** How do `Pool.map`, `apply`, `apply_async` and `map_async` hand work
//! to worker processes, what happens when a task or a worker fails, and how much
//! faster than serial is it, beside threads and rayon?
//!
//! **Python twin** (`docs/python/07_pool_map.py`): `Pool(processes=3).map(square,
//! [1, 2, 3, 4, 5])`, `apply`, `apply_async(...).get(timeout)`, `map_async`, `imap`,
//! and the seeds' benchmark `sum(x*x for x in range(1000))` over `range(10000)`,
//! serial versus `Pool`. In Rust: `pool_map::Pool` (this crate's `src/pool.rs`):
//! forked workers, tasks as function pointers plus postcard bytes over `ipc-channel`.
//!
//! **Run.** `cargo run -p pool-map`, or with `--release` for real timings (`--help`:
//! `--processes N --items 10000 --overhead-tasks 20000 --rounds 3 --ascii`; `--bench`
//! for the 100x workload and the targets, best of 10 rounds, about two minutes).
//!
//! **Expected output** (PIDs vary; times and speedups depend on the machine):
//! ```text
//! [1] Pool(processes=3).map(square, [1, 2, 3, 4, 5])
//!     [1, 4, 9, 16, 25]   item 1 -> pid 901, item 2 -> pid 902, item 3 -> pid 903, ...
//! [3] a task that panics, a worker that is killed
//!     map over 10..=15 failed: the task panicked in worker pid 902: 13 is unlucky at ...
//!     killed worker pid 901 mid-task: worker pid 901 died (exitcode -9 ...) while it held this task
//! [4] the seeds' benchmark: sum of x*x for x in 0..1000, for 10000 items, on 2 CPUs
//!     best of 3, speedup over serial, 2 CPUs (the most any way can get is 2.00x):
//!     serial                        25.4 ms   1.00x
//!     pool (2), chunksize 1250      13.6 ms   1.87x
//!     pool (2), chunksize 125       13.5 ms   1.88x
//!     2 threads                     13.2 ms   1.92x
//!     rayon                         13.2 ms   1.92x
//! [5] the cost of a task: 20000 trivial items
//!     chunksize 1             0.44 us per task
//! ```
//!
//! **Notice.** Without a GIL, threads and rayon speed up CPU work as much as
//! processes do, and start for far less. A pool pays to copy arguments and results
//! through the kernel; chunking pays it per chunk instead of per item, but coarse
//! chunks balance badly when one core runs slower. A killed worker fails its task
//! and is replaced: the pool never hangs (Python's does).

use common::output::List;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use common::Lesson;
use common::output::{CommonArgs, cpu_count};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pool_map::{
    Pool, PoolError, default_chunksize, identity, scoped_threads, serial, slow_square, square,
    square_where, sum_of_squares, sum_of_squares_100x, time_work, unlucky,
};
use rayon::prelude::*;

#[derive(Parser, Debug)]
#[command(about = "A process pool: map, apply, apply_async, failures, and its cost")]
struct Args {
    /// Worker processes for the benchmark pool (default: the CPU count).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    processes: Option<u64>,
    /// Items in the seeds' benchmark (`range(10000)`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    items: u64,
    /// Trivial tasks for the per-task cost.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    overhead_tasks: u64,
    /// The benchmark at 100x the seeds' size, with the issue's targets.
    #[arg(long)]
    bench: bool,
    /// Rounds of each timing, best kept (default: 3, or 10 with --bench).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let cpus = cpu_count();
    let processes = args.processes.map_or(cpus, |p| p as usize);
    let items = if args.bench {
        args.items * 100
    } else {
        args.items
    };
    let mut lesson = Lesson::start(
        "pool-map",
        "what does a process pool do, and what does it cost?",
        "multiprocessing.Pool: map, apply, apply_async, map_async, imap, chunksize",
        &args.common,
    );

    lesson.step("Pool(processes=3).map(square, [1, 2, 3, 4, 5])");
    {
        let pool = Pool::new(3)?;
        let out = pool.map(square_where, vec![1, 2, 3, 4, 5])?;
        let values: Vec<u64> = out.iter().map(|r| r.0).collect();
        let who: Vec<String> = out
            .iter()
            .zip(1..)
            .map(|((_, pid), i)| format!("item {i} -> pid {pid}"))
            .collect();
        lesson.say(format!("{values:?}   {}", who.join(", ")));
        lesson.say(format!(
            "workers {:?}; chunksize {} (Python's rule: ceil(5 / (4 x 3)))",
            pool.worker_pids(),
            default_chunksize(5, 3)
        ));
        lesson.check_eq(
            "pool.map(square, [1, 2, 3, 4, 5])",
            List(&values),
            List(&[1, 4, 9, 16, 25]),
        );
        let workers = pool.worker_pids();
        lesson.check(
            "every item was computed in one of the pool's worker processes",
            out.iter().all(|(_, pid)| workers.contains(&(*pid as i32))),
        );

        lesson.step("apply, apply_async, map_async, imap, imap_unordered");
        lesson.check_eq("pool.apply(square, (10,))", pool.apply(square, 10)?, 100);
        let res = pool.apply_async(slow_square, 20)?;
        lesson.say(format!(
            "apply_async(slow_square, (20,)): ready() right away? {}",
            res.ready()
        ));
        let got = res.get(Some(Duration::from_secs(5)))?;
        lesson.say(format!(
            "get(timeout=5) -> {got}; ready() now? {}; successful()? {:?}",
            res.ready(),
            res.successful()
        ));
        lesson.check_eq("apply_async(...).get(timeout=5)", got, 400);
        let early = pool
            .apply_async(slow_square, 3)?
            .get(Some(Duration::from_millis(20)));
        lesson.say(format!("get(timeout=0.02) on a 300 ms task -> {early:?}"));
        lesson.check(
            "a get() with a short timeout says Timeout, not a hang",
            matches!(early, Err(PoolError::Timeout(_))),
        );
        let all = pool.map_async(square, 1..=10, Some(3))?.get(None)?;
        lesson.check_eq(
            "map_async(square, 1..=10, chunksize=3).get()",
            List(&all),
            List(&(1..=10u64).map(|x| x * x).collect::<Vec<_>>()),
        );
        let ordered: Vec<u64> = pool.imap(square, 1..=10, 2)?.collect::<Result<_, _>>()?;
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 1..=10, 1)?
            .collect::<Result<_, _>>()?;
        lesson.say(format!("imap: {ordered:?}"));
        lesson.say(format!("imap_unordered: {unordered:?}"));
        unordered.sort_unstable();
        lesson.check(
            "imap_unordered gives the same results as imap, in any order",
            unordered == ordered,
        );

        lesson.step("a task that panics, a worker that is killed");
        match pool.map_chunked(unlucky, 10..=15, 1) {
            Err(e) => {
                lesson.say(format!("map over 10..=15 failed: {e}"));
                lesson.check(
                    "the panicking task failed with its message",
                    e.to_string().contains("13 is unlucky"),
                );
            }
            Ok(v) => {
                lesson.check(
                    format!("the panicking task failed, but map returned {v:?}"),
                    false,
                );
            }
        }
        lesson.check_eq(
            "the pool goes on: apply(square, (7,))",
            pool.apply(square, 7)?,
            49,
        );
        // Give every worker a 300 ms task, then kill the one running the first task,
        // from outside, the way a reviewer (or the OOM killer) would.
        let handles = (0..3)
            .map(|x| pool.apply_async(slow_square, x))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(&victim) = handles[0].worker_pids().first() else {
            bail!("the first task is not running in any worker");
        };
        std::thread::sleep(Duration::from_millis(50));
        kill(Pid::from_raw(victim), Signal::SIGKILL).context("killing a worker")?;
        let t = Instant::now();
        let outcomes: Vec<_> = handles
            .iter()
            .map(|h| h.get(Some(Duration::from_secs(10))))
            .collect();
        let died: Vec<&PoolError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        for e in &died {
            lesson.say(format!("killed worker pid {victim} mid-task: {e}"));
        }
        lesson.check(
            format!(
                "the killed worker's task failed with 'worker died' within {:.2?}",
                t.elapsed()
            ),
            died.len() == 1
                && matches!(died[0], PoolError::WorkerDied { pid, .. } if *pid == victim),
        );
        lesson.say(format!(
            "workers now {:?} ({} replaced)",
            pool.worker_pids(),
            pool.replaced()
        ));
        lesson.check_eq(
            "after the replacement, map still works",
            List(&pool.map(square, vec![1, 2, 3])?),
            List(&[1, 4, 9]),
        );
        pool.close();
        let closed = pool.apply(square, 1);
        lesson.say(format!(
            "after close(): apply -> {}",
            closed
                .as_ref()
                .map_or_else(|e| e.to_string(), |v| v.to_string())
        ));
        lesson.check(
            "a closed pool refuses new tasks",
            closed == Err(PoolError::Closed),
        );
        pool.join()?;
        lesson.check(
            "Pool::new(0) is refused",
            Pool::new(0).err() == Some(PoolError::NoProcesses),
        );
    }

    lesson.step(&format!(
        "the seeds' benchmark: sum of x*x for x in 0..1000, for {items} items, on {cpus} CPUs"
    ));
    let input: Vec<u64> = (0..items).collect();
    let pool = Pool::new(processes)?;
    pool.map(sum_of_squares, input.iter().copied().take(1000))?; // warm up the workers
    // Rayon's threads stay alive once started. The pool's workers already exist, so
    // that is fine; only forking a replacement would be refused from now on.
    let rounds = args.rounds.unwrap_or(if args.bench { 10 } else { 3 }) as usize;
    let wide = compare(&mut lesson, &pool, sum_of_squares, &input, rounds)?;
    let mut deep = wide;
    if args.bench {
        lesson.say(format!(
            "the other way to scale the seeds 100x: 100x the work per item, {} items",
            args.items
        ));
        let few: Vec<u64> = (0..args.items).collect();
        deep = compare(&mut lesson, &pool, sum_of_squares_100x, &few, rounds)?;
        core_speeds(&mut lesson, &pool, rounds)?;
    }

    lesson.step(&format!(
        "the cost of a task: {} trivial items",
        args.overhead_tasks
    ));
    let trivial: Vec<u64> = (0..args.overhead_tasks).collect();
    let chunk = default_chunksize(trivial.len(), processes).max(1);
    let (mut t_one, mut t_default, mut same) = (Duration::MAX, Duration::MAX, true);
    for _ in 0..rounds {
        let (t, one) = timed(|| pool.map_chunked(identity, trivial.iter().copied(), 1));
        t_one = t_one.min(t);
        let (t, default) = timed(|| pool.map(identity, trivial.iter().copied()));
        t_default = t_default.min(t);
        same &= one? == trivial && default? == trivial;
    }
    let per = |t: Duration| t.as_secs_f64() * 1e6 / trivial.len() as f64;
    lesson.say(format!(
        "chunksize 1          {:>7.2} us per task",
        per(t_one)
    ));
    lesson.say(format!(
        "chunksize {chunk:<10} {:>7.2} us per item",
        per(t_default)
    ));
    lesson.check("both chunkings gave the same results as the input", same);
    lesson.say("(Python's Pool: 44 us per task with chunksize 1; DESIGN.md's anchor)");
    pool.close();
    pool.join()?;
    drop(pool); // its channels close with it

    if args.bench {
        // A speedup is serial's best time over the way's.
        let x = |t: [Duration; 5], way: usize| t[SERIAL].as_secs_f64() / t[way].as_secs_f64();
        let vs_rayon = wide[POOL].as_secs_f64() / wide[RAYON].as_secs_f64();
        lesson.say(format!(
            "targets: pool >= 1.9x serial: {:.2}x (100x items; {:.2}x with finer chunks), \
             {:.2}x (100x work) [2 threads in the same run: {:.2}x, {:.2}x]; within 10% of \
             rayon: pool/rayon {vs_rayon:.3}; <= 2 us per task at chunksize 1: {:.2} us",
            x(wide, POOL),
            x(wide, POOL_FINE),
            x(deep, POOL),
            x(wide, THREADS),
            x(deep, THREADS),
            per(t_one)
        ));
        if cfg!(debug_assertions) {
            lesson.say("unoptimised build: run `cargo run --release -p pool-map -- --bench` for real figures");
        }
    }
    Ok(lesson.finish())
}

/// The ways `compare` times, in its table's order.
const SERIAL: usize = 0;
const POOL: usize = 1;
const POOL_FINE: usize = 2;
const THREADS: usize = 3;
const RAYON: usize = 4;

/// Serial, the pool (Python's default chunksize, and chunks 10 times smaller),
/// scoped threads and rayon on the same work. Each way runs `rounds` times,
/// interleaved, and keeps its best time: the ratios come from one run, and a noisy
/// neighbour hurts every way alike. Prints the table, checks that all agree, returns
/// the best times (index them with `SERIAL`, `POOL`, ...).
fn compare(
    lesson: &mut Lesson,
    pool: &Pool,
    f: fn(u64) -> u64,
    input: &[u64],
    rounds: usize,
) -> anyhow::Result<[Duration; 5]> {
    let cpus = cpu_count();
    let expect = serial(f, input);
    // Python's rule makes 4 chunks per worker. When one core runs slower than the
    // other (a busy neighbour on a shared host), a worker may idle for most of a
    // chunk at the end; 40 chunks per worker bound that wait to a tenth as much.
    let python = default_chunksize(input.len(), pool.processes()).max(1);
    let fine = python.div_ceil(10);
    let mut best = [Duration::MAX; 5];
    let mut agree = [true; 5];
    for _ in 0..rounds {
        let ways: [&dyn Fn() -> Result<Vec<u64>, PoolError>; 5] = [
            &|| Ok(serial(f, input)),
            &|| pool.map(f, input.iter().copied()),
            &|| pool.map_chunked(f, input.iter().copied(), fine),
            &|| Ok(scoped_threads(f, input, cpus)),
            &|| Ok(input.par_iter().map(|&x| f(x)).collect::<Vec<u64>>()),
        ];
        for (i, way) in ways.iter().enumerate() {
            let (t, out) = timed(way);
            // A failed run has no time worth comparing: stop with its error (a
            // worker killed from another terminal ends up here).
            let out = out.context("the pool's run of the benchmark failed")?;
            best[i] = best[i].min(t);
            agree[i] &= out == expect;
        }
    }
    let row = |name: &str, t: Duration| {
        format!(
            "{name:<28} {:>9.1} ms   {:.2}x",
            t.as_secs_f64() * 1e3,
            best[0].as_secs_f64() / t.as_secs_f64()
        )
    };
    lesson.say(format!(
        "best of {rounds}, speedup over serial, {cpus} CPUs (the most any way can get is {cpus}.00x):"
    ));
    let workers = pool.processes();
    lesson.say(row("serial", best[SERIAL]));
    lesson.say(row(
        &format!("pool ({workers}), chunksize {python}"),
        best[POOL],
    ));
    lesson.say(row(
        &format!("pool ({workers}), chunksize {fine}"),
        best[POOL_FINE],
    ));
    lesson.say(row(&format!("{cpus} threads"), best[THREADS]));
    lesson.say(row("rayon", best[RAYON]));
    lesson.check_eq(
        "computed the serial results (pool, finer pool, threads, rayon)",
        List(&agree[1..]),
        List(&[true; 4]),
    );
    Ok(best)
}

/// Are the cores equally fast? Every worker times the same work at the same moment
/// (one task each), and the parent times it alone. On a shared host they often are
/// not, and then a split into equal shares waits for the slowest worker.
fn core_speeds(lesson: &mut Lesson, pool: &Pool, rounds: usize) -> anyhow::Result<()> {
    const ITEMS: u64 = 20_000;
    let workers = pool.processes();
    let mut alone = u64::MAX;
    let mut best: std::collections::BTreeMap<u32, u64> = Default::default();
    for _ in 0..rounds {
        for (pid, us) in pool.map_chunked(time_work, vec![ITEMS; workers], 1)? {
            let b = best.entry(pid).or_insert(u64::MAX);
            *b = (*b).min(us);
        }
        alone = alone.min(time_work(ITEMS).1);
    }
    let ms = |us: u64| us as f64 / 1e3;
    let each: Vec<String> = best
        .iter()
        .map(|(pid, &us)| format!("pid {pid} {:.1} ms", ms(us)))
        .collect();
    let slowest = best.values().copied().max().unwrap_or(alone).max(1);
    lesson.say(format!(
        "the same work ({ITEMS} items) on each worker at once, best of {rounds}: {}; \
         the parent alone: {:.1} ms",
        each.join(", "),
        ms(alone)
    ));
    lesson.say(format!(
        "so equal shares (threads, the pool's chunks) can reach at most {:.2}x over \
         serial here; work stealing (rayon) can beat that only when the cores differ",
        workers as f64 * alone as f64 / slowest as f64
    ));
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}
