//! # threads-square-cube: what do threads and processes each buy you?
//!
//! **Question.** Squaring and cubing a list, with a wait per item: how long does it
//! take serially, on two threads, and in two processes, and who runs where?
//!
//! **Python twin** (`docs/python/01_threads_square_cube.py`): `threading.Thread`
//! and `multiprocessing.Process` with `target=`, `start()`, `join()`,
//! `os.getpid()`. In Rust a thread is `std::thread::scope`/`spawn`; a process is a
//! real `fork(2)` through `common::fork`, which flushes output first and ends the
//! child with `_exit`, as CPython's `popen_fork` does.
//!
//! **Run.** `cargo run -p threads-square-cube` (`--help` for the knobs:
//! `--numbers 2,3,8,9 --delay-ms 200 --mode serial,threads,processes --ascii`;
//! `--bench` measures what starting a thread and a process costs).
//!
//! **Expected output** (PIDs, TIDs and the last digits of times vary):
//! ```text
//! [1] serial: one thread does squares, then cubes
//!     square: [4, 9, 64, 81]
//!     cube:   [8, 27, 512, 729]
//!     wall 1.602 s, ideal 1.600 s (+2.1 ms)
//! [2] two threads: square and cube at the same time, in one process
//!     square  pid 812 tid 813
//!     cube    pid 812 tid 814
//!     wall 0.801 s, ideal 0.800 s (+1.0 ms)
//! [3] two processes: square and cube in two forked children
//!     child pid 815 (square): [4, 9, 64, 81]
//!     child pid 816 (cube): [8, 27, 512, 729]
//!     wall 0.802 s, ideal 0.800 s (+2.0 ms)
//! ```
//! with a timeline after each step, and check lines.
//!
//! **Notice.** Threads share the parent's PID and differ in TID; processes get PIDs
//! of their own. Both halve the time because the work is *waiting* (a sleep stands
//! in for I/O). A child prints its own results: the parent cannot read them, the
//! child's memory is a copy (next lesson). It reports success through its exit code.

use common::output::List;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use common::output::{CommonArgs, check_numbers};
use common::timeline::{Kind, Lane, Timeline, fmt_duration};
use common::{Lesson, fork};

#[derive(Parser, Debug)]
#[command(about = "Square and cube a list: serial vs two threads vs two processes")]
struct Args {
    /// The numbers to square and cube.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8,9",
        allow_negative_numbers = true
    )]
    numbers: Vec<i64>,
    /// The wait per item, in milliseconds (a stand-in for I/O).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=2000))]
    delay_ms: u64,
    /// Which runs to do.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "serial,threads,processes"
    )]
    mode: Vec<Mode>,
    /// Measure instead what starting and joining costs: a thread vs a forked process.
    #[arg(long)]
    bench: bool,
    /// Starts per kind for --bench.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    bench_starts: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serial,
    Threads,
    Processes,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Square,
    Cube,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Square => "square",
            Op::Cube => "cube",
        }
    }

    fn apply(self, n: i64) -> i64 {
        match self {
            Op::Square => n * n,
            Op::Cube => n * n * n,
        }
    }
}

/// The worker, the same in all three runs: for each number, wait, then compute.
/// Every wait and every computation is recorded on the timeline, from whichever
/// thread or process runs it.
fn work(op: Op, numbers: &[i64], delay: Duration, tl: &Timeline, lane: Lane) -> Vec<i64> {
    numbers
        .iter()
        .map(|&n| {
            tl.sleep(lane, delay);
            tl.span(lane, Kind::Run, || op.apply(n))
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let numbers = &args.numbers;
    check_numbers(numbers, 32, 3).map_err(anyhow::Error::msg)?;
    let delay = Duration::from_millis(args.delay_ms);
    let expected: Vec<Vec<i64>> = [Op::Square, Op::Cube]
        .iter()
        .map(|&op| numbers.iter().map(|&n| op.apply(n)).collect())
        .collect();
    let one_list = delay * numbers.len() as u32;

    let mut lesson = Lesson::start(
        "threads-square-cube",
        "serial vs two threads vs two processes, with a wait per item",
        "threading.Thread / multiprocessing.Process, start(), join(), os.getpid()",
        &args.common,
    );
    if args.bench {
        start_cost(&mut lesson, args.bench_starts)?;
        return Ok(lesson.finish());
    }
    lesson.say(format!(
        "numbers {numbers:?}, {} ms wait per item",
        args.delay_ms
    ));

    if args.mode.contains(&Mode::Serial) {
        lesson.step("serial: one thread does squares, then cubes");
        let mut tl = Timeline::new(256)?;
        let main_lane = tl.lane("main");
        let t = Instant::now();
        let squares = work(Op::Square, numbers, delay, &tl, main_lane);
        let cubes = work(Op::Cube, numbers, delay, &tl, main_lane);
        let wall = t.elapsed();
        lesson.say(format!("square: {squares:?}"));
        lesson.say(format!("cube:   {cubes:?}"));
        lesson.say(wall_line(wall, one_list * 2));
        lesson.timeline(&tl, "serial");
        lesson.check_eq("squares", List(&squares), List(&expected[0]));
        lesson.check_eq("cubes", List(&cubes), List(&expected[1]));
        lesson.check(
            format!(
                "serial took at least the sum of the waits ({})",
                fmt_duration(one_list * 2)
            ),
            wall >= one_list * 2,
        );
    }

    if args.mode.contains(&Mode::Threads) {
        lesson.step("two threads: square and cube at the same time, in one process");
        let mut tl = Timeline::new(256)?;
        let lanes = [tl.lane("square"), tl.lane("cube")];
        let main_lane = tl.lane("main");
        let t = Instant::now();
        // threading.Thread(target=...).start() twice, then join() both. A scoped
        // thread may borrow `numbers` and `tl`: the scope joins before they go away.
        let results: Vec<Vec<i64>> = thread::scope(|s| {
            let handles: Vec<_> = [Op::Square, Op::Cube]
                .into_iter()
                .zip(lanes)
                .map(|(op, lane)| {
                    let tl = &tl;
                    s.spawn(move || work(op, numbers, delay, tl, lane))
                })
                .collect();
            tl.span(main_lane, Kind::Wait, || {
                handles
                    .into_iter()
                    .map(|h| h.join().expect("worker thread panicked"))
                    .collect()
            })
        });
        let wall = t.elapsed();
        for (op, lane) in [Op::Square, Op::Cube].into_iter().zip(lanes) {
            let (pid, tid) = who(&tl, lane);
            lesson.say(format!("{:<7} pid {pid} tid {tid}", op.name()));
        }
        lesson.say(format!("square: {:?}", results[0]));
        lesson.say(format!("cube:   {:?}", results[1]));
        lesson.say(wall_line(wall, one_list));
        lesson.timeline(&tl, "two threads");
        lesson.check(
            "results returned by the threads: the squares and the cubes",
            results == expected,
        );
        let (pids, tids) = ids(&tl, &lanes);
        let me = std::process::id() as i32;
        lesson.check(
            format!("threads share the parent's PID: {pids:?} (expected [{me}, {me}])"),
            pids == [me, me],
        );
        lesson.check(
            format!("each thread has its own TID: {tids:?}"),
            tids[0] != tids[1] && !tids.contains(&me),
        );
        lesson.check(
            format!(
                "the threads ran at the same time (overlap {})",
                fmt_duration(tl.overlap(lanes[0], lanes[1]))
            ),
            tl.overlap(lanes[0], lanes[1]) > one_list / 2,
        );
    }

    if args.mode.contains(&Mode::Processes) {
        lesson.step("two processes: square and cube in two forked children");
        let mut tl = Timeline::new(256)?;
        let lanes = [tl.lane("square"), tl.lane("cube")];
        let main_lane = tl.lane("main");
        let t = Instant::now();
        // multiprocessing.Process(target=...).start() twice, then join() both.
        let mut children = Vec::new();
        for (op, lane) in [Op::Square, Op::Cube].into_iter().zip(lanes) {
            let (expected, tl) = (&expected, &tl);
            children.push(
                fork(move || {
                    // Child: a copy of the parent's memory. It prints its own results
                    // (nobody else can see them) and says through its exit code
                    // whether they were right.
                    let result = work(op, numbers, delay, tl, lane);
                    println!(
                        "    child pid {} ({}): {result:?}",
                        std::process::id(),
                        op.name()
                    );
                    if result == expected[op as usize] {
                        0
                    } else {
                        1
                    }
                })
                .context("forking a worker")?,
            );
        }
        // Parent: wait for both, recording the wait.
        let exits = tl.span(main_lane, Kind::Wait, || {
            children
                .iter_mut()
                .map(|c| c.join())
                .collect::<Result<Vec<_>, _>>()
        })?;
        let wall = t.elapsed();
        lesson.say(wall_line(wall, one_list));
        lesson.timeline(&tl, "two processes");
        let codes: Vec<i32> = exits.iter().map(|e| e.code).collect();
        lesson.check_eq(
            "exit codes of the children (0 = results right)",
            List(&codes),
            List(&[0, 0]),
        );
        let (pids, _) = ids(&tl, &lanes);
        let forked: Vec<i32> = children.iter().map(|c| c.pid()).collect();
        let me = std::process::id() as i32;
        lesson.check(
            format!("each process has its own PID: {pids:?}, parent {me}"),
            forked == pids && pids[0] != pids[1] && !pids.contains(&me),
        );
        lesson.check(
            format!(
                "the processes ran at the same time (overlap {})",
                fmt_duration(tl.overlap(lanes[0], lanes[1]))
            ),
            tl.overlap(lanes[0], lanes[1]) > one_list / 2,
        );
    }

    Ok(lesson.finish())
}

/// `--bench`: start and join `n` workers that do nothing, one at a time: what a
/// thread costs, what a forked process costs (DESIGN.md's anchors on a 2-core
/// machine: Rust thread 49 us, fork + waitpid 0.22 ms, Python's `Process` 2.0 ms).
fn start_cost(lesson: &mut Lesson, n: u64) -> anyhow::Result<()> {
    lesson.step(&format!(
        "benchmark: start and join {n} threads, then {n} processes"
    ));
    let t = Instant::now();
    for _ in 0..n {
        thread::spawn(|| std::hint::black_box(0))
            .join()
            .expect("empty thread");
    }
    let per_thread = t.elapsed() / n as u32;
    let t = Instant::now();
    let mut failed = 0;
    for _ in 0..n {
        if !fork(|| 0).context("forking")?.join()?.success() {
            failed += 1;
        }
    }
    let per_process = t.elapsed() / n as u32;
    lesson.say(format!(
        "thread  spawn + join   {:>8.1} us",
        per_thread.as_secs_f64() * 1e6
    ));
    lesson.say(format!(
        "process fork + join    {:>8.1} us",
        per_process.as_secs_f64() * 1e6
    ));
    lesson.say(format!(
        "same run: a process costs {:.1}x a thread to start and join",
        per_process.as_secs_f64() / per_thread.as_secs_f64()
    ));
    lesson.check_eq("processes that did not exit 0", failed, 0);
    Ok(())
}

/// PID and TID that recorded a lane's spans (the worker's own word for who it is).
fn who(tl: &Timeline, lane: Lane) -> (i32, i32) {
    tl.lane_spans(lane)
        .first()
        .map_or((0, 0), |s| (s.pid, s.tid))
}

fn ids(tl: &Timeline, lanes: &[Lane; 2]) -> ([i32; 2], [i32; 2]) {
    let (a, b) = (who(tl, lanes[0]), who(tl, lanes[1]));
    ([a.0, b.0], [a.1, b.1])
}

fn wall_line(wall: Duration, ideal: Duration) -> String {
    let diff = wall.as_secs_f64() - ideal.as_secs_f64();
    format!(
        "wall {:.3} s, ideal {:.3} s ({:+.1} ms)",
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        diff * 1e3
    )
}
