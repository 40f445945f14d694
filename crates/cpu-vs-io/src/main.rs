//! # cpu-vs-io: threads for I/O, processes for CPU — still true without a GIL?
//!
//! **Question.** Python's rule of thumb is "threads for I/O-bound work, processes for
//! CPU-bound work", because of the GIL. What happens to each kind of work on
//! threads and on processes when there is no GIL?
//!
//! **Python twin** (`docs/python/12_cpu_vs_io.py`): the same two workloads, serial,
//! with `threading.Thread` and with `multiprocessing.Process`. In CPython 3.11 the
//! GIL lets only one thread run Python code at a time, so CPU-bound threads gain
//! nothing; sleeping (I/O) releases it. Rust threads have no such lock.
//!
//! **Run.** `cargo run -p cpu-vs-io`, with `--release` for real timings (`--help`
//! for the knobs: `--tasks 4 --cpu-ms 100 --io-ms 200 --ascii`).
//!
//! **Expected output** (2 CPUs, release build; times vary; a timeline of the
//! threads follows each table, and a `note:` line explains a speedup far from
//! its ideal, or above it, e.g. on a busy machine):
//! ```text
//! [2] CPU-bound: 4 tasks of 100 ms of computing each
//!     serial        0.383 s  1.00x (ideal 1.00x)  CPU busy 0.99 cores
//!     4 threads     0.200 s  1.92x (ideal 2.00x)  CPU busy 1.86 cores
//!     4 processes   0.196 s  1.96x (ideal 2.00x)  CPU busy 1.74 cores
//!     4 threads on 2 cores take turns: each span lasts longer than its computing
//!   ✓ check: threads computed what serial computed: 4 x 29945071536750
//! [3] I/O-bound: 4 tasks of 200 ms of waiting each
//!     serial        0.802 s  1.00x (ideal 1.00x)  CPU busy 0.00 cores
//!     4 threads     0.204 s  3.93x (ideal 4.00x)  CPU busy 0.00 cores
//!     4 processes   0.202 s  3.97x (ideal 4.00x)  CPU busy 0.01 cores
//!   ✓ check: the waiting threads overlapped (196.6 ms of 200 ms)
//! ```
//!
//! **Notice.** Without a GIL, threads speed up CPU-bound work exactly as much as
//! processes do: up to the number of cores, no more. Waiting overlaps on any number
//! of workers, whatever the cores. "CPU busy" (CPU time / wall time) says how many
//! cores a run really got, so a busy machine is named, not mistaken for a lesson.
//! In Rust the choice between threads and processes is about isolation (a crash,
//! memory, a separate program), not about speed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use common::output::{CommonArgs, cpu_count};
use common::shm::Array;
use common::timeline::{Kind, Lane, Timeline, fmt_duration};
use common::{Lesson, fork};
use cpu_vs_io::{
    Bound, Sample, compute, cpu_time, reading, serial_was_starved, steps_per_ms, summary,
};

/// How long a worker process may take before it counts as stuck (stopped, say).
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(about = "CPU-bound and I/O-bound work, serial vs threads vs processes")]
struct Args {
    /// How many tasks of each kind.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    tasks: u64,
    /// Computing per CPU-bound task, in milliseconds of one core (calibrated at start).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5000))]
    cpu_ms: u64,
    /// Waiting per I/O-bound task, in milliseconds (at least 20: the waits must
    /// outlast starting the workers, or there is nothing to overlap).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(20..=5000))]
    io_ms: u64,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let tasks = args.tasks as usize;
    let mut lesson = Lesson::start(
        "cpu-vs-io",
        "threads for I/O, processes for CPU: still true without a GIL?",
        "threading.Thread vs multiprocessing.Process, CPU vs I/O",
        &args.common,
    );
    let steps = calibrate(&mut lesson, args.cpu_ms);
    let cpu = Work::Cpu(steps, args.cpu_ms);
    compare(&mut lesson, cpu, tasks, tasks.min(cpu_count()))?;
    compare(&mut lesson, Work::Io(args.io_ms), tasks, tasks)?;
    lesson.say("Python's threads, under the GIL, get ~1.0x on the CPU-bound run:");
    lesson.say("see the Python twin's figures in docs/12-cpu-vs-io.md");
    Ok(lesson.finish())
}
// ANCHOR_END: run

/// One task of either kind.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// `steps` of computing, about `ms` milliseconds of one core.
    Cpu(u64, u64),
    /// `ms` milliseconds of waiting (a sleep stands in for a network or disk wait).
    Io(u64),
}

impl Work {
    fn run(self, tl: &Timeline, lane: Lane) -> i64 {
        match self {
            Work::Cpu(steps, _) => tl.span(lane, Kind::Run, || compute(steps)),
            Work::Io(ms) => tl.span(lane, Kind::Wait, || {
                std::thread::sleep(Duration::from_millis(ms));
                ms as i64
            }),
        }
    }

    fn bound(self) -> Bound {
        match self {
            Work::Cpu(..) => Bound::Cpu,
            Work::Io(_) => Bound::Io,
        }
    }

    fn ms(self) -> u64 {
        match self {
            Work::Cpu(_, ms) | Work::Io(ms) => ms,
        }
    }
}

/// Step: calibrate, so that `--cpu-ms 100` means 100 ms of one core in a debug
/// and in a release build alike.
fn calibrate(lesson: &mut Lesson, cpu_ms: u64) -> u64 {
    lesson.step("calibrate: how many steps of the CPU-bound loop one core does per ms");
    let per_ms = steps_per_ms();
    let steps = per_ms.saturating_mul(cpu_ms);
    lesson.say(format!(
        "{per_ms} steps per ms; a task is {steps} steps (~{cpu_ms} ms)"
    ));
    steps
}

/// The three runs of one kind of work.
struct Runs {
    serial: Measured,
    threads: Measured,
    processes: Measured,
}

/// One run: its times, the tasks' results, and the timeline of its workers.
struct Measured {
    sample: Sample,
    results: Vec<i64>,
    timeline: Timeline,
    lanes: Vec<Lane>,
}

/// Step: `tasks` tasks serially, on a thread each, in a process each; the table of
/// speedups, what they mean on this machine, the timeline of the threads.
fn compare(lesson: &mut Lesson, work: Work, tasks: usize, ideal: usize) -> anyhow::Result<()> {
    let (what, ms) = match work {
        Work::Cpu(..) => ("CPU-bound", "of computing"),
        Work::Io(_) => ("I/O-bound", "of waiting"),
    };
    lesson.step(&format!(
        "{what}: {tasks} tasks of {} ms {ms} each",
        work.ms()
    ));
    let runs = Runs {
        serial: measure(Mode::Serial, work, tasks)?,
        threads: measure(Mode::Threads, work, tasks)?,
        processes: measure(Mode::Processes, work, tasks)?,
    };
    let serial = &runs.serial.sample;
    let ideal = ideal as f64;
    let rows = [
        ("serial".to_string(), serial, 1.0),
        (format!("{tasks} threads"), &runs.threads.sample, ideal),
        (format!("{tasks} processes"), &runs.processes.sample, ideal),
    ];
    for (name, m, ideal) in &rows {
        lesson.say(format!(
            "{name:<13} {:.3} s  {:.2}x (ideal {ideal:.2}x)  CPU busy {:.2} cores",
            m.wall.as_secs_f64(),
            m.speedup(serial),
            m.cores()
        ));
    }
    let serial_ideal = Duration::from_millis(work.ms()) * tasks as u32;
    let notes =
        serial_was_starved(work.bound(), serial)
            .into_iter()
            .chain(rows[1..].iter().filter_map(|(name, m, ideal)| {
                reading(work.bound(), name, serial, m, *ideal, serial_ideal)
            }));
    for note in notes {
        lesson.say(format!("note: {note}"));
    }
    lesson.timeline(&runs.threads.timeline, &format!("{tasks} threads"));
    if matches!(work, Work::Cpu(..)) && tasks > ideal as usize {
        lesson.say(format!(
            "{tasks} threads on {ideal} cores take turns: each span lasts longer \
             than its computing"
        ));
    }
    check_runs(lesson, &runs, work);
    Ok(())
}

/// The claims that hold on any machine, busy or not: the same results, and
/// waits that overlap. (Speedups depend on free cores: printed, not claimed.)
fn check_runs(lesson: &mut Lesson, runs: &Runs, work: Work) {
    let want = &runs.serial.results;
    for (who, m) in [("threads", &runs.threads), ("processes", &runs.processes)] {
        lesson.check(
            format!(
                "{who} computed what serial computed: {}",
                summary(&m.results)
            ),
            m.results == *want,
        );
    }
    if let (Work::Io(ms), 2..) = (work, want.len()) {
        // Each thread's wait against the next one's: started one after another,
        // they overlap by nearly the whole wait, however many there are.
        let t = &runs.threads;
        let pairs = t.lanes.windows(2).map(|w| t.timeline.overlap(w[0], w[1]));
        let overlap = pairs.min().unwrap_or_default();
        lesson.check(
            format!(
                "the waiting threads overlapped ({} of {ms} ms)",
                fmt_duration(overlap)
            ),
            overlap >= Duration::from_millis(ms) / 2,
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serial,
    Threads,
    Processes,
}

/// Run `tasks` copies of `work` serially, on one thread each, or in one forked
/// process each; measure wall time and CPU time.
fn measure(mode: Mode, work: Work, tasks: usize) -> anyhow::Result<Measured> {
    let mut timeline = Timeline::new(4 * tasks + 8)?;
    let lanes: Vec<Lane> = (0..tasks)
        .map(|i| timeline.lane(format!("task {i}")))
        .collect();
    let tl = &timeline;
    let (cpu0, wall0) = (cpu_time(mode == Mode::Processes), Instant::now());
    let results = match mode {
        Mode::Serial => lanes.iter().map(|&l| work.run(tl, l)).collect(),
        Mode::Threads => std::thread::scope(|s| -> anyhow::Result<Vec<i64>> {
            let mut handles = Vec::new();
            for (i, &lane) in lanes.iter().enumerate() {
                let builder = std::thread::Builder::new().name(format!("task {i}"));
                let h = builder.spawn_scoped(s, move || work.run(tl, lane));
                handles.push(h.context("cannot start a thread")?);
            }
            let joined = handles.into_iter().map(|h| h.join());
            joined
                .map(|r| r.map_err(|_| anyhow!("a worker thread panicked")))
                .collect()
        })?,
        Mode::Processes => {
            // Each child writes its result into a shared Array (`shared-value-array`).
            let out = Array::<i64>::new(tasks)?;
            let mut children = Vec::new();
            for (i, &lane) in lanes.iter().enumerate() {
                let out = &out;
                // Child: run one task, leave its result in shared memory.
                let child = fork(move || i32::from(!out.set(i, work.run(tl, lane))));
                children.push(child.context("forking a worker")?);
            }
            // Parent: join every child; a failed one stops the lesson.
            for c in &mut children {
                let exit = c.join_within(PATIENCE)?;
                if !exit.success() {
                    bail!("a worker process failed: {exit}");
                }
            }
            out.to_vec()
        }
    };
    let wall = wall0.elapsed();
    let cpu = cpu_time(mode == Mode::Processes).saturating_sub(cpu0);
    Ok(Measured {
        sample: Sample { wall, cpu },
        results,
        timeline,
        lanes,
    })
}
