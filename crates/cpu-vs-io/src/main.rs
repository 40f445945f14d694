//! # cpu-vs-io: threads for I/O, processes for CPU — still true without a GIL?
//!
//! **Question.** Python's rule of thumb is "threads for I/O-bound work, processes for
//! CPU-bound work", because of the GIL. What happens to each kind of work on
//! threads and on processes when there is no GIL?
//!
//! **Python twin** (`docs/python/08_cpu_vs_io.py`): the same two workloads, serial,
//! with `threading.Thread` and with `multiprocessing.Process`. In CPython 3.11 the
//! GIL lets only one thread run Python code at a time, so CPU-bound threads gain
//! nothing; sleeping (I/O) releases it. Rust threads have no such lock.
//!
//! **Run.** `cargo run -p cpu-vs-io`, or with `--release` for real timings (`--help`:
//! `--tasks 4 --cpu-ms 100
//! --io-ms 200 --ascii`).
//!
//! **Expected output** (2 CPUs; times vary):
//! ```text
//! [2] CPU-bound: 4 tasks of 100 ms of computing each
//!     serial       0.401 s   1.00x (ideal 1.00x)   CPU busy 1.00 cores
//!     4 threads    0.205 s   1.96x (ideal 2.00x)   CPU busy 1.96 cores
//!     4 processes  0.206 s   1.95x (ideal 2.00x)   CPU busy 1.95 cores
//! [3] I/O-bound: 4 tasks of 200 ms of waiting each
//!     serial       0.801 s   1.00x (ideal 1.00x)
//!     4 threads    0.200 s   4.00x (ideal 4.00x)
//!     4 processes  0.201 s   3.98x (ideal 4.00x)
//! ```
//!
//! **Notice.** Without a GIL, threads speed up CPU-bound work exactly as much as
//! processes do: up to the number of cores, no more. Waiting overlaps on any number
//! of workers, whatever the cores. In Rust the choice between threads and processes
//! is about isolation (a crash, memory, a separate program), not about speed.

use common::output::List;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use common::output::{CommonArgs, cpu_count};
use common::shm::Array;
use common::timeline::{Kind, Lane, Timeline};
use common::{Lesson, fork};
use nix::sys::resource::{UsageWho, getrusage};

#[derive(Parser, Debug)]
#[command(about = "CPU-bound and I/O-bound work, serial vs threads vs processes")]
struct Args {
    /// How many tasks of each kind.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    tasks: u64,
    /// Computing per CPU-bound task, in milliseconds of one core (calibrated at start).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5000))]
    cpu_ms: u64,
    /// Waiting per I/O-bound task, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=5000))]
    io_ms: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The CPU-bound work: `steps` additions of squares, each through `black_box` so
/// the compiler cannot fold the loop into a formula (the work must be real).
fn compute(steps: u64) -> i64 {
    let mut sum = 0u64;
    for x in 0..steps {
        let x = std::hint::black_box(x % 1000);
        sum = std::hint::black_box(sum.wrapping_add(x * x));
    }
    sum as i64
}

/// The I/O-bound work: waiting (a sleep stands in for a network or disk wait).
fn wait(ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms as i64
}

#[derive(Clone, Copy)]
enum Work {
    Cpu(u64),
    Io(u64),
}

impl Work {
    fn run(self, tl: &Timeline, lane: Lane) -> i64 {
        match self {
            Work::Cpu(steps) => tl.span(lane, Kind::Run, || compute(steps)),
            Work::Io(ms) => tl.span(lane, Kind::Wait, || wait(ms)),
        }
    }
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let (tasks, cpus) = (args.tasks as usize, cpu_count());
    let mut lesson = Lesson::start(
        "cpu-vs-io",
        "threads for I/O, processes for CPU: still true without a GIL?",
        "threading.Thread vs multiprocessing.Process on CPU-bound and I/O-bound work",
        &args.common,
    );

    lesson.step("calibrate: how many steps of the CPU-bound loop one core does per ms");
    let per_ms = calibrate();
    let steps = per_ms * args.cpu_ms;
    lesson.say(format!(
        "{per_ms} steps per ms; a CPU-bound task is {steps} steps (~{} ms)",
        args.cpu_ms
    ));

    for (title, work, ideal_parallel) in [
        (
            format!(
                "CPU-bound: {tasks} tasks of {} ms of computing each",
                args.cpu_ms
            ),
            Work::Cpu(steps),
            tasks.min(cpus) as f64,
        ),
        (
            format!(
                "I/O-bound: {tasks} tasks of {} ms of waiting each",
                args.io_ms
            ),
            Work::Io(args.io_ms),
            tasks as f64,
        ),
    ] {
        lesson.step(&title);
        let serial = measure(Mode::Serial, work, tasks)?;
        let threads = measure(Mode::Threads, work, tasks)?;
        let processes = measure(Mode::Processes, work, tasks)?;
        for (name, m, ideal) in [
            ("serial".to_string(), &serial, 1.0),
            (format!("{tasks} threads"), &threads, ideal_parallel),
            (format!("{tasks} processes"), &processes, ideal_parallel),
        ] {
            let speedup = serial.wall.as_secs_f64() / m.wall.as_secs_f64();
            let busy = m.cpu.as_secs_f64() / m.wall.as_secs_f64();
            lesson.say(format!(
                "{name:<12} {:>7.3} s   {speedup:.2}x (ideal {ideal:.2}x)   CPU busy {busy:.2} cores",
                m.wall.as_secs_f64()
            ));
        }
        lesson.timeline(&threads.timeline, &format!("{tasks} threads"));
        if matches!(work, Work::Cpu(_)) && tasks > cpus {
            lesson.say(format!(
                "{tasks} threads on {cpus} cores: each span lasts longer than its computing, \
                 because the threads take turns on the cores"
            ));
        }
        lesson.check_eq(
            "threads computed what serial computed",
            List(&threads.results),
            List(&serial.results),
        );
        lesson.check_eq(
            "processes computed what serial computed",
            List(&processes.results),
            List(&serial.results),
        );
        if let Work::Io(ms) = work {
            // Sleeping threads overlap whatever the load: every thread's wait spans
            // the others'. (CPU speedups depend on free cores: printed, not checked.)
            let overlap = threads.timeline.overlap(
                threads.lanes[0],
                *threads.lanes.last().unwrap_or(&threads.lanes[0]),
            );
            lesson.check(
                format!("the waiting threads overlapped ({overlap:.0?} of {ms} ms)"),
                tasks == 1 || overlap >= Duration::from_millis(ms) / 2,
            );
        }
    }
    lesson.say(
        "Python's threads, under the GIL, get ~1.0x on the CPU-bound run: see docs/08-cpu-vs-io.md",
    );
    Ok(lesson.finish())
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serial,
    Threads,
    Processes,
}

struct Measured {
    wall: Duration,
    /// CPU time used by the workers (threads: this process; processes: the children).
    cpu: Duration,
    results: Vec<i64>,
    timeline: Timeline,
    lanes: Vec<Lane>,
}

/// Run `tasks` copies of `work` serially, on one thread each, or in one forked
/// process each; measure wall time and CPU time.
fn measure(mode: Mode, work: Work, tasks: usize) -> anyhow::Result<Measured> {
    let mut timeline = Timeline::new(4 * tasks + 8)?;
    let lanes: Vec<Lane> = (0..tasks)
        .map(|i| timeline.lane(format!("task {i}")))
        .collect();
    let tl = &timeline;
    let (cpu0, wall0) = (cpu_time(mode), Instant::now());
    let results = match mode {
        Mode::Serial => lanes.iter().map(|&l| work.run(tl, l)).collect(),
        Mode::Threads => std::thread::scope(|s| {
            let hs: Vec<_> = lanes
                .iter()
                .map(|&l| s.spawn(move || work.run(tl, l)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("worker thread"))
                .collect()
        }),
        Mode::Processes => {
            // Each child writes its result into a shared Array (lesson 3).
            let out = Array::<i64>::new(tasks)?;
            let mut children = Vec::new();
            for (i, &lane) in lanes.iter().enumerate() {
                let out = &out;
                children.push(
                    fork(move || {
                        out.set(i, work.run(tl, lane));
                    })
                    .context("forking a worker")?,
                );
            }
            for c in &mut children {
                let exit = c.join()?;
                if !exit.success() {
                    bail!("a worker process failed: {exit}");
                }
            }
            out.to_vec()
        }
    };
    let wall = wall0.elapsed();
    let cpu = cpu_time(mode).saturating_sub(cpu0);
    Ok(Measured {
        wall,
        cpu,
        results,
        timeline,
        lanes,
    })
}

/// CPU time (user + system) of this process, or of its reaped children.
fn cpu_time(mode: Mode) -> Duration {
    let who = if mode == Mode::Processes {
        UsageWho::RUSAGE_CHILDREN
    } else {
        UsageWho::RUSAGE_SELF
    };
    let Ok(r) = getrusage(who) else {
        return Duration::ZERO;
    };
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(r.user_time()) + tv(r.system_time())
}

/// Steps of `compute` per millisecond on one core (best of a few short runs).
fn calibrate() -> u64 {
    let probe = 200_000;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(compute(probe));
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    (probe as f64 / (best.as_secs_f64() * 1e3)).max(1.0) as u64
}
