//! # threads-square-cube: what do threads and processes each buy you?
//!
//! **Question.** Squaring and cubing a list, with a wait per item: how long does it
//! take serially, on two threads, and in two processes, and who runs where?
//!
//! **Python twin** (`docs/python/01_threads_square_cube.py`): `threading.Thread`
//! and `multiprocessing.Process` with `target=`, `start()`, `join()`,
//! `os.getpid()`. In Rust a thread is `std::thread::scope` + `Builder::spawn_scoped`;
//! a process is a real `fork(2)` through `common::fork`, which flushes output first
//! and ends the child with `_exit`, as CPython's `popen_fork` does.
//!
//! **Run.** `cargo run -p threads-square-cube` (`--help` for the knobs:
//! `--numbers 2,3,8,9 --delay-ms 200 --mode serial,threads,processes,cost
//! --ascii`). The start costs, measured properly: `cargo bench -p
//! threads-square-cube` (`benches/start_cost.rs`).
//!
//! **Expected output** (PIDs, TIDs and times vary; the two children print in
//! either order; a timeline, not shown, follows each run):
//! ```text
//! [1] serial: one thread does squares, then cubes
//!     square: [4, 9, 64, 81]
//!     cube:   [8, 27, 512, 729]
//!     wall 1.602 s, ideal 1.600 s (+1.8 ms)
//!   ✓ check: serial took at least the sum of the waits (1.600 s)
//! [2] two threads: square and cube at the same time, in one process
//!     square  pid 24500 tid 24729
//!     cube    pid 24500 tid 24730
//!     wall 0.801 s, ideal 0.800 s (+1.1 ms)
//!   ✓ check: threads share the parent's PID: 24500 and 24500 (parent 24500)
//!   ✓ check: each thread has its own TID: 24729 and 24730
//!   ✓ check: the threads waited at the same time (overlap 800.5 ms)
//! [3] two processes: square and cube in two forked children
//!     child pid 24762 (square): [4, 9, 64, 81]
//!     child pid 24763 (cube): [8, 27, 512, 729]
//!     wall 0.802 s, ideal 0.800 s (+2.3 ms)
//!   ✓ check: children's exit codes (0: results right): [0, 0] (expected [0, 0])
//!   ✓ check: each process has its own PID: 24762 and 24763 (parent 24500)
//!   ✓ check: the processes waited at the same time (overlap 800.6 ms)
//! [4] what it costs: start and join 100 threads, then 100 processes
//!     thread  start + join:    185 us each
//!     process start + join:   1334 us each, 7.2x a thread
//! ```
//!
//! **Notice.** Threads share the parent's PID and differ in TID; processes get PIDs
//! of their own. Both halve the time because the work is *waiting* (a sleep stands
//! in for I/O). A child prints its own results: its memory is a copy the parent
//! cannot read (next lesson); its exit code says whether they were right. A
//! process costs several threads to start: still tiny beside 200 ms waits.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use common::output::{CommonArgs, List, check_numbers, print_wrapped};
use common::timeline::{Kind, Lane, Timeline, fmt_duration};
use common::{Lesson, fork};
use threads_square_cube::{Chart, Op, Pair, join, parse_delay, start, wall_line};

#[derive(Parser, Debug)]
#[command(about = "Square and cube a list: serial vs two threads vs two processes")]
struct Args {
    /// The numbers to square and cube (1 to 32 of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8,9",
        allow_negative_numbers = true
    )]
    numbers: Vec<i64>,
    /// The wait per item, in milliseconds (a stand-in for I/O), 10 to 2000.
    #[arg(long, default_value_t = 200, value_parser = parse_delay)]
    delay_ms: u64,
    /// Which steps to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "serial,threads,processes,cost"
    )]
    mode: Vec<Mode>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serial,
    Threads,
    Processes,
    Cost,
}

/// Starts and joins per kind in the "what it costs" step.
const STARTS: u32 = 100;
/// How long a child may take before it counts as stuck (stopped, say).
const PATIENCE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    check_numbers(&args.numbers, 32, 3).map_err(anyhow::Error::msg)?;
    let job = Job {
        numbers: &args.numbers,
        delay: Duration::from_millis(args.delay_ms),
        expected: Pair::of(&args.numbers),
    };
    let mut lesson = Lesson::start(
        "threads-square-cube",
        "serial vs two threads vs two processes",
        "threading.Thread, multiprocessing.Process, start(), join()",
        &args.common,
    );
    lesson.say(format!(
        "numbers {}, {} ms wait per item",
        List(job.numbers),
        args.delay_ms
    ));
    let wants = |mode| args.mode.contains(&mode);
    if wants(Mode::Serial) {
        serial(&mut lesson, &job)?;
    }
    if wants(Mode::Threads) {
        two_threads(&mut lesson, &job)?;
    }
    if wants(Mode::Processes) {
        two_processes(&mut lesson, &job)?;
    }
    if wants(Mode::Cost) {
        what_it_costs(&mut lesson)?;
    }
    Ok(lesson.finish())
}
// ANCHOR_END: run

/// What both workers do, and what they must produce.
struct Job<'a> {
    numbers: &'a [i64],
    delay: Duration,
    expected: Pair,
}

impl Job<'_> {
    /// The worker, the same in all three runs: for each number, wait, then compute.
    /// Every wait and computation goes on the timeline, from whoever runs it.
    fn work(&self, op: Op, tl: &Timeline, lane: Lane) -> Vec<i64> {
        let one = |&n: &i64| {
            tl.sleep(lane, self.delay);
            tl.span(lane, Kind::Run, || op.apply(n))
        };
        self.numbers.iter().map(one).collect()
    }

    /// The waits of one list: the ideal wall time of one worker.
    fn one_list(&self) -> Duration {
        self.delay * self.numbers.len() as u32
    }
}

fn serial(lesson: &mut Lesson, job: &Job) -> anyhow::Result<()> {
    lesson.step("serial: one thread does squares, then cubes");
    let mut tl = Timeline::new(256)?;
    let main = tl.lane("main");
    let t = Instant::now();
    let square = job.work(Op::Square, &tl, main);
    let cube = job.work(Op::Cube, &tl, main);
    let wall = t.elapsed();
    lesson.say(format!("square: {}", List(&square)));
    lesson.say(format!("cube:   {}", List(&cube)));
    lesson.say(wall_line(wall, job.one_list() * 2));
    lesson.timeline(&tl, "serial");
    lesson.check_eq("squares", List(&square), List(&job.expected.square));
    lesson.check_eq("cubes", List(&cube), List(&job.expected.cube));
    let waits = job.one_list() * 2;
    let claim = format!(
        "serial took at least the sum of the waits ({})",
        fmt_duration(waits)
    );
    lesson.check(claim, wall >= waits);
    Ok(())
}

fn two_threads(lesson: &mut Lesson, job: &Job) -> anyhow::Result<()> {
    lesson.step("two threads: square and cube at the same time, in one process");
    let c = Chart::new()?;
    let t = Instant::now();
    // threading.Thread(target=...).start() twice, then join() both. A scoped thread
    // may borrow `job` and the chart: the scope joins it before they go away.
    let got = thread::scope(|s| -> anyhow::Result<Pair> {
        let square = start(s, "square", || job.work(Op::Square, &c.tl, c.square))?;
        let cube = start(s, "cube", || job.work(Op::Cube, &c.tl, c.cube))?;
        c.tl.span(c.main, Kind::Wait, || {
            Ok(Pair {
                square: join(square)?,
                cube: join(cube)?,
            })
        })
    })?;
    let wall = t.elapsed();
    let ((sq_pid, sq_tid), (cu_pid, cu_tid)) = (c.who(Op::Square), c.who(Op::Cube));
    lesson.say(format!("square  pid {sq_pid} tid {sq_tid}"));
    lesson.say(format!("cube    pid {cu_pid} tid {cu_tid}"));
    lesson.say(format!("square: {}", List(&got.square)));
    lesson.say(format!("cube:   {}", List(&got.cube)));
    lesson.say(wall_line(wall, job.one_list()));
    lesson.timeline(&c.tl, "two threads");
    lesson.check(
        "results returned by the threads: the squares and the cubes",
        got == job.expected,
    );
    let me = std::process::id() as i32;
    lesson.check(
        format!("threads share the parent's PID: {sq_pid} and {cu_pid} (parent {me})"),
        sq_pid == me && cu_pid == me,
    );
    lesson.check(
        format!("each thread has its own TID: {sq_tid} and {cu_tid}"),
        sq_tid != cu_tid && sq_tid != me && cu_tid != me,
    );
    check_overlap(lesson, "threads", &c, job);
    Ok(())
}

fn two_processes(lesson: &mut Lesson, job: &Job) -> anyhow::Result<()> {
    lesson.step("two processes: square and cube in two forked children");
    let c = Chart::new()?;
    let t = Instant::now();
    // multiprocessing.Process(target=...).start() twice, then join() both.
    let mut children = Vec::new();
    for (op, expected) in [
        (Op::Square, &job.expected.square),
        (Op::Cube, &job.expected.cube),
    ] {
        let child = fork(|| {
            // Child: a copy of the parent's memory. It prints its own results
            // (nobody else can see them) and says with its exit code whether they
            // were right.
            let got = job.work(op, &c.tl, c.lane(op));
            let (pid, name) = (std::process::id(), op.name());
            print_wrapped(
                &format!("    child pid {pid} ({name}): {}", List(&got)),
                "      ",
            );
            i32::from(got != *expected)
        });
        children.push(child.context("forking a worker")?);
    }
    // Parent: wait for both, recording the wait; keep their exit codes. Bounded:
    // a child that is stopped or stuck is killed and reported, never waited on
    // forever.
    let codes = c.tl.span(c.main, Kind::Wait, || -> Result<Vec<i32>, _> {
        children
            .iter_mut()
            .map(|ch| ch.join_within(PATIENCE).map(|e| e.code))
            .collect()
    })?;
    lesson.say(wall_line(t.elapsed(), job.one_list()));
    lesson.timeline(&c.tl, "two processes");
    let what = "children's exit codes (0: results right)";
    lesson.check_eq(what, List(&codes), List(&[0, 0]));
    let ((sq_pid, _), (cu_pid, _)) = (c.who(Op::Square), c.who(Op::Cube));
    let forked: Vec<i32> = children.iter().map(|ch| ch.pid()).collect();
    let me = std::process::id() as i32;
    lesson.check(
        format!("each process has its own PID: {sq_pid} and {cu_pid} (parent {me})"),
        forked == [sq_pid, cu_pid] && sq_pid != cu_pid && sq_pid != me && cu_pid != me,
    );
    check_overlap(lesson, "processes", &c, job);
    Ok(())
}

/// Start and join `STARTS` workers that do nothing, one at a time. A few lines:
/// `benches/start_cost.rs` measures it properly, with the floors under each.
fn what_it_costs(lesson: &mut Lesson) -> anyhow::Result<()> {
    lesson.step(&format!(
        "what it costs: start and join {STARTS} threads, then {STARTS} processes"
    ));
    let t = Instant::now();
    for _ in 0..STARTS {
        thread::scope(|s| join(start(s, "empty", || ())?))?;
    }
    let thread = t.elapsed() / STARTS;
    let (t, mut failed) = (Instant::now(), 0);
    for _ in 0..STARTS {
        // Child: does nothing and exits 0. Parent: joins it at once.
        let exit = fork(|| ())
            .context("forking a worker")?
            .join_within(PATIENCE)?;
        failed += u32::from(!exit.success());
    }
    let process = t.elapsed() / STARTS;
    let ratio = process.as_secs_f64() / thread.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    lesson.say(format!("thread  start + join: {:>6.0} us each", us(thread)));
    lesson.say(format!(
        "process start + join: {:>6.0} us each, {ratio:.1}x a thread",
        us(process)
    ));
    lesson.check_eq("processes that did not exit 0", failed, 0);
    Ok(())
}

/// The two workers' waits overlapped for at least half of one list's waits.
fn check_overlap(lesson: &mut Lesson, who: &str, c: &Chart, job: &Job) {
    let overlap = c.overlap();
    lesson.check(
        format!(
            "the {who} waited at the same time (overlap {})",
            fmt_duration(overlap)
        ),
        overlap > job.one_list() / 2,
    );
}
