//! # pool-map: what does a process pool do, and what does it cost?
//!
//! **Question.** How do `Pool.map`, `apply`, `apply_async`, `map_async` and `imap`
//! hand work to worker processes, what happens when a task or a worker fails, what
//! does a task cost, and how does a pool start workers in a program with threads?
//!
//! **Python twin** (`docs/python/11_pool_map.py`): the same steps on
//! `multiprocessing.Pool`, ending with the tutorial's workload,
//! `sum(x*x for x in range(1000))` for each of `range(10000)`, serial versus `Pool`.
//! In Rust: `pool_map::Pool` (this crate's `src/pool*`): forked workers, tasks as
//! function pointers plus postcard bytes over `ipc-channel`; the last step uses
//! `get_context("forkserver").Pool(2)`'s counterpart, `Context::forkserver()`.
//!
//! **Run.** `cargo run -p pool-map`, with `--release` for real timings (`--help`:
//! `--processes N` (default: the CPU count, as `Pool()`), `--items 10000`,
//! `--tasks 20000`, `--ascii`). The benchmark: `cargo bench -p pool-map`.
//!
//! **Expected output** (PIDs, which worker runs which task, and times vary):
//! ```text
//! [1] Pool(processes=3).map(square, [1, 2, 3, 4, 5])
//!     workers: pid 901, pid 902, pid 903; chunksize 1 = ceil(5 / (4 x 3))
//!     item 1 -> pid 901, item 2 -> pid 902, ...
//!   ok check: map: [1, 4, 9, 16, 25] (expected [1, 4, 9, 16, 25])
//! [2] apply and apply_async
//!     apply_async(slow_square, (20,)): ready() -> False
//!     get(timeout=5) -> 400; ready() -> True; successful() -> True
//!     get(timeout=0.02) on a 300 ms task -> no result ...
//! [3] map_async and imap: chunks of items, and who ran them
//!       task [1, 2, 3] -> pid 902 -> [1, 4, 9]
//!       task [10] -> pid 903 -> [100]
//!     imap(..., chunksize=2):  1 4 9 16 25 36 49 64 81 100
//! [4] a task that panics fails alone
//!     imap(unlucky, 10..=15, chunksize=1): 10 11 12 error 14 15
//!     the error: the task panicked in worker pid 903: 13 is unlucky ...
//! [5] a worker killed in the middle of a task is reported and replaced
//!     get() -> worker pid 902 died (exitcode -9 (killed by SIGKILL)) ...
//!     workers now: pid 901, pid 904, pid 903 (1 replaced)
//! [6] close() and join()
//!     join() waited for slow_square(6) -> 36
//! [7] what it costs: the tutorial's workload, 10000 items
//!     serial                  25.4 ms
//!     Pool(processes=2)       13.6 ms   1.87x (ideal 2.00x on 2 CPUs)
//!     2 threads               13.2 ms   1.92x
//!     a task at chunksize 1: 0.44 us (20000 tasks); at 2500: 0.05 us
//! [8] a pool in a program that already runs threads (rayon)
//!     rayon's pool is up: this process runs 3 threads
//!     Pool::new(2) -> cannot start the pool: refusing to fork: this process runs 3
//!     Context::forkserver().pool(2): pid 911, pid 912
//!   ok check: the workers are children of the server, pid 905
//!     workers now: pid 913, pid 912; map(sum_of_squares, range(100))
//! ```
//!
//! **Notice.** A pool forks its workers once and copies arguments and results
//! through the kernel; `chunksize` decides how many items travel as one task. A
//! task that panics fails alone; a killed worker fails only the task it held and is
//! replaced: the pool never hangs (Python's can, gh-66587). Without a GIL, threads
//! speed up CPU work as much as processes do, and copy nothing. Beside threads, a
//! fork server (forked early) forks the workers: Python's default since 3.14.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use common::Lesson;
use common::output::{CommonArgs, List, cpu_count};
use common::process::thread_count;
use common::procfs::parent_of;
use pool_map::{
    Context, Pool, PoolError, compare, default_chunksize, get_within, joined, kill_mid_task, pids,
    py_bool, rayon_pool, serial, shown, slow_square, speedup_caveat, square, square_where,
    sum_of_squares, task_cost, unlucky,
};

#[derive(Parser, Debug)]
#[command(about = "A process pool: map, apply, apply_async, imap, failures, and its cost")]
struct Args {
    /// Worker processes in the cost step (default: the CPU count, as `Pool()`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    processes: Option<u64>,
    /// Items of the tutorial's workload in the cost step (`range(10000)`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    items: u64,
    /// Trivial tasks timed at chunksize 1 in the cost step.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tasks: u64,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let mut lesson = Lesson::start(
        "pool-map",
        "what does a process pool do, and what does it cost?",
        "multiprocessing.Pool: map, apply, apply_async, imap, chunksize",
        &args.common,
    );
    // Forked now, while the program has one thread: the last step needs it.
    let forkserver = Context::forkserver()?;
    let pool = Pool::new(3)?;
    map_who_did_what(&mut lesson, &pool)?;
    apply_and_apply_async(&mut lesson, &pool)?;
    chunks_and_imap(&mut lesson, &pool)?;
    a_task_panics(&mut lesson, &pool)?;
    a_worker_is_killed(&mut lesson, &pool)?;
    close_and_join(&mut lesson, pool)?;
    let processes = args.processes.map_or(cpu_count(), |p| p as usize);
    what_it_costs(&mut lesson, processes, args.items, args.tasks)?;
    a_pool_beside_threads(&mut lesson, &forkserver)?;
    forkserver.stop()?;
    Ok(lesson.finish())
}
// ANCHOR_END: run

fn map_who_did_what(lesson: &mut Lesson, pool: &Pool) -> anyhow::Result<()> {
    lesson.step("Pool(processes=3).map(square, [1, 2, 3, 4, 5])");
    let out = pool.map(square_where, vec![1, 2, 3, 4, 5])?;
    let workers = pool.worker_pids();
    let (pids, c) = (pids(&workers), default_chunksize(5, 3));
    lesson.say(format!(
        "workers: {pids}; chunksize {c} = ceil(5 / (4 x 3))"
    ));
    let who = out
        .iter()
        .zip(1..)
        .map(|((_, p), i)| format!("item {i} -> pid {p}"));
    lesson.say(joined(who, ", "));
    let values: Vec<u64> = out.iter().map(|r| r.0).collect();
    lesson.check_eq("map", List(&values), List(&[1, 4, 9, 16, 25]));
    let inside = out.iter().all(|(_, pid)| workers.contains(&(*pid as i32)));
    lesson.check("each item was computed in one of the workers", inside);
    Ok(())
}

fn apply_and_apply_async(lesson: &mut Lesson, pool: &Pool) -> anyhow::Result<()> {
    lesson.step("apply and apply_async");
    lesson.check_eq("apply(square, (10,))", pool.apply(square, 10)?, 100);
    let res = pool.apply_async(slow_square, 20)?;
    let ready = py_bool(res.ready());
    lesson.say(format!(
        "apply_async(slow_square, (20,)): ready() -> {ready}"
    ));
    // get(timeout=5), with 5 s of the lesson's running time (Ctrl-Z: get_within).
    let got = get_within(&res, Duration::from_secs(5))?;
    let (ready, ok) = (py_bool(res.ready()), res.successful().map_or("?", py_bool));
    let line = format!("get(timeout=5) -> {got}; ready() -> {ready}; successful() -> {ok}");
    lesson.say(line);
    lesson.check_eq("apply_async(...).get(timeout=5)", got, 400);
    let early = pool.apply_async(slow_square, 3)?;
    let early = early.get(Some(Duration::from_millis(20)));
    let line = format!("get(timeout=0.02) on a 300 ms task -> {}", shown(&early));
    lesson.say(line);
    let timed_out = matches!(early, Err(PoolError::Timeout(_)));
    lesson.check("a short get() timeout says so, not a hang", timed_out);
    Ok(())
}

fn chunks_and_imap(lesson: &mut Lesson, pool: &Pool) -> anyhow::Result<()> {
    lesson.step("map_async and imap: chunks of items, and who ran them");
    let out = pool.map_async(square_where, 1..=10, Some(3))?.get(None)?;
    lesson.say("map_async(square, 1..=10, chunksize=3).get(), task by task:");
    // One task is one chunk: its items travel together and run in one worker.
    let items: Vec<u64> = (1..=10).collect();
    let mut whole = true;
    for (task, chunk) in items.chunks(3).zip(out.chunks(3)) {
        let (task, pid) = (List(task), chunk[0].1);
        let values = List(&chunk.iter().map(|r| r.0).collect::<Vec<_>>()).to_string();
        lesson.say(format!("  task {task} -> pid {pid} -> {values}"));
        whole &= chunk.iter().all(|r| r.1 == pid);
    }
    lesson.check("each task of 3 items ran whole in one worker", whole);
    let squares: Vec<u64> = items.iter().map(|x| x * x).collect();
    let ordered: Vec<u64> = pool.imap(square, 1..=10, 2)?.collect::<Result<_, _>>()?;
    lesson.say(format!(
        "imap(..., chunksize=2):  {}",
        joined(&ordered, " ")
    ));
    let any = pool.imap_unordered(square, 1..=10, 1)?;
    let mut any: Vec<u64> = any.collect::<Result<_, _>>()?;
    lesson.say(format!("imap_unordered(..., 1): {}", joined(&any, " ")));
    any.sort_unstable();
    let held = out.iter().map(|r| r.0).eq(squares.iter().copied()) && ordered == squares;
    let claim = "map_async and imap in order; imap_unordered in any order";
    lesson.check(claim, held && any == squares);
    Ok(())
}

fn a_task_panics(lesson: &mut Lesson, pool: &Pool) -> anyhow::Result<()> {
    lesson.step("a task that panics fails alone");
    let outcomes: Vec<Result<u64, PoolError>> = pool.imap(unlucky, 10..=15, 1)?.collect();
    let each = outcomes
        .iter()
        .map(|o| o.as_ref().map_or("error".into(), u64::to_string));
    let each = joined(each, " ");
    lesson.say(format!("imap(unlucky, 10..=15, chunksize=1): {each}"));
    let errors: Vec<&PoolError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    for e in &errors {
        lesson.say(format!("the error: {e}"));
    }
    let alone = errors.len() == 1 && outcomes[3].is_err();
    let said = errors
        .iter()
        .all(|e| e.to_string().contains("13 is unlucky"));
    let claim = "only the task for 13 failed, with its message; 5 gave results";
    lesson.check(claim, alone && said);
    let first = pool.map_chunked(unlucky, 10..=15, 1).err();
    let first = first.context("map(unlucky, 10..=15) did not fail")?;
    lesson.say(format!(
        "map(unlucky, 10..=15) raises the first error: {first}"
    ));
    let seven = pool.apply(square, 7)?;
    lesson.check_eq("the pool goes on: apply(square, (7,))", seven, 49);
    Ok(())
}

fn a_worker_is_killed(lesson: &mut Lesson, pool: &Pool) -> anyhow::Result<()> {
    lesson.step("a worker killed in the middle of a task is reported and replaced");
    // Every worker gets a 300 ms task; the one running slow_square(0) is SIGKILLed.
    let k = kill_mid_task(pool)?;
    let victim = k.victim;
    lesson.say(format!("killed pid {victim} while it ran slow_square(0)"));
    lesson.say(format!("get() -> {}", shown(&k.first)));
    lesson.say(format!("the other tasks: {}", joined(&k.others, " ")));
    let secs = k.wall.as_secs_f64();
    let claim = format!("its task failed with 'worker died' in {secs:.2} s; the others gave 1, 4");
    lesson.check(claim, k.as_python_would_wish(3));
    let now = pids(&pool.worker_pids());
    lesson.say(format!("workers now: {now} ({} replaced)", pool.replaced()));
    let again = pool.map(square, vec![1, 2, 3])?;
    lesson.check_eq("map after the replacement", List(&again), List(&[1, 4, 9]));
    Ok(())
}

fn close_and_join(lesson: &mut Lesson, pool: Pool) -> anyhow::Result<()> {
    lesson.step("close() and join()");
    let queued = pool.apply_async(slow_square, 6)?;
    pool.close();
    let refused = pool.apply(square, 1);
    lesson.say(format!("after close(): apply -> {}", shown(&refused)));
    let closed = refused == Err(PoolError::Closed);
    lesson.check("a closed pool refuses new tasks", closed);
    pool.join()?;
    let got = queued.get(Some(Duration::ZERO))?;
    lesson.say(format!("join() waited for slow_square(6) -> {got}"));
    lesson.check_eq("the task queued before close() ran", got, 36);
    let zero = Pool::new(0).err() == Some(PoolError::NoProcesses);
    lesson.check("Pool(processes=0) is refused", zero);
    Ok(())
}

fn a_pool_beside_threads(lesson: &mut Lesson, ctx: &Context) -> anyhow::Result<()> {
    lesson.step("a pool in a program that already runs threads (rayon)");
    let rayon = rayon_pool(2)?;
    let threads = rayon.install(thread_count)?;
    let line = format!("rayon's pool is up: this process runs {threads} threads");
    lesson.say(line);
    let fork = Pool::new(2).map_or_else(|e| e.to_string(), |_| "a pool".into());
    lesson.say(format!("Pool::new(2) -> {fork}"));
    lesson.check("fork refuses while threads run", fork.contains("refusing"));
    let pool = ctx.pool(2)?;
    let (server, workers) = (ctx.server_pid().unwrap_or(0), pool.worker_pids());
    lesson.say(format!("Context::forkserver().pool(2): {}", pids(&workers)));
    let theirs = workers.iter().all(|&w| parent_of(w) == Some(server));
    let claim = format!("the workers are children of the server, pid {server}");
    lesson.check(claim, theirs);
    let k = kill_mid_task(&pool)?;
    let (victim, first) = (k.victim, shown(&k.first));
    lesson.say(format!("killed pid {victim}: get() -> {first}"));
    let input: Vec<u64> = (0..100).collect();
    let again = pool.map(sum_of_squares, input.iter().copied())?;
    let now = pids(&pool.worker_pids());
    let line = format!("workers now: {now}; map(sum_of_squares, range(100))");
    lesson.say(line);
    let held = k.as_python_would_wish(2) && again == serial(sum_of_squares, &input);
    let claim = "under forkserver: the task failed alone, a worker was replaced, map is right";
    lesson.check(claim, held && pool.replaced() == 1);
    Ok(())
}

/// How many rounds each timing of the cost step gets (the best is kept).
const ROUNDS: usize = 3;

fn what_it_costs(lesson: &mut Lesson, n: usize, items: u64, tasks: u64) -> anyhow::Result<()> {
    let title = format!("what it costs: the tutorial's workload, {items} items");
    lesson.step(&title);
    let pool = Pool::new(n)?;
    let input: Vec<u64> = (0..items).collect();
    let work = compare(&pool, sum_of_squares, &input, ROUNDS)?;
    let task = task_cost(&pool, tasks as usize, ROUNDS)?;
    pool.close();
    pool.join()?;
    let (cpus, ms) = (cpu_count(), |t: Duration| t.as_secs_f64() * 1e3);
    lesson.say(format!("{:<20} {:>7.1} ms", "serial", ms(work.serial.wall)));
    let ideal = format!(" (ideal {}.00x on {cpus} CPUs)", n.min(cpus));
    let mut caveats = Vec::new();
    let threads = format!("{n} thread{}", if n == 1 { "" } else { "s" });
    let pool_row = (format!("Pool(processes={n})"), work.pool, ideal.as_str());
    for (way, t, note) in [pool_row, (threads, work.threads, "")] {
        let x = work.serial.wall.as_secs_f64() / t.as_secs_f64();
        lesson.say(format!("{way:<20} {:>7.1} ms   {x:.2}x{note}", ms(t)));
        caveats.extend(speedup_caveat(x, n, cpus, work.busy));
    }
    caveats.dedup(); // "busy" is said once
    for why in caveats {
        lesson.say(format!("  {why}"));
    }
    let us = |t: Duration| t.as_secs_f64() * 1e6;
    let (one, many, chunk) = (us(task.one), us(task.chunked), task.chunksize);
    let line =
        format!("a task at chunksize 1: {one:.2} us ({tasks} tasks); at {chunk}: {many:.2} us");
    lesson.say(line);
    lesson.say("Python's Pool at chunksize 1: about 30 us per task (11_pool_map.py)");
    let agree = work.agree && task.agree;
    lesson.check("the pool and the threads gave the serial results", agree);
    Ok(())
}
