//! # proc-global-var-pitfall: why doesn't the parent see what the child wrote?
//!
//! **Question.** A child process appends to a global list. Why is the parent's list
//! still empty after `join()`, when a thread's appends are visible?
//!
//! **Python twin** (`docs/python/02_proc_global_var_pitfall.py`): a module-level
//! `result = []` filled by `square_list` in a `multiprocessing.Process`; the child
//! prints `[4, 9, 64]`, the parent prints `[]`. Python's docs ("Global variables"):
//! "if code run in a child process tries to access a global variable, then the value
//! it sees (if any) may not be the same as the value in the parent process". In
//! Rust the global is a `static Mutex<Vec<i64>>`; the process is a real `fork(2)`.
//!
//! **Run.** `cargo run -p proc-global-var-pitfall` (`--help`: `--numbers 2,3,8`,
//! 1 to 32 numbers; `--ascii`).
//!
//! **Expected output** (PIDs, the thread's id and the address vary):
//! ```text
//! [1] a child process appends to the global RESULT
//!     parent pid 4241: RESULT = [] before the fork (at 0x5581c0a3e0b8)
//!     child  pid 4242: RESULT = [4, 9, 64] (at 0x5581c0a3e0b8)
//!     parent pid 4241: RESULT = [] after join() (at 0x5581c0a3e0b8)
//!   ✓ check: the child saw [4, 9, 64] at the parent's address (exitcode 0)
//!   ✓ check: the parent's RESULT after join(): [] (expected [])
//!     same address, different contents: after fork, each process has its own
//!     copy of every page (copy-on-write). The child's appends went to its copy.
//!
//! [2] a thread appends to the same global
//!     thread tid 4243 (pid 4241) ran square_list
//!     parent pid 4241: RESULT = [4, 9, 64] after join()
//!   ✓ check: RESULT after the thread's join(): [4, 9, 64] (expected [4, 9, 64])
//!     a thread shares the process's memory: there is one RESULT; it changed.
//!
//! [3] so how does a child process hand results back?
//!     - through memory that is really shared: shared-value-array (Value, Array)
//!     - through messages: mp-queue (multiprocessing.Queue)
//!     - through its exit code, as this child did: 8 bits, enough for yes or no
//!
//!   ✓ check: no child process left behind (zombie or running): none
//!   ✓ check: no file descriptor leaked: none
//!
//! all 5 claims held (0.00 s)
//! ```
//!
//! **Notice.** The same virtual address holds `[4, 9, 64]` in the child and `[]` in
//! the parent: after `fork` each process has its own copy of every page
//! (copy-on-write); the addresses are the same because the copy is exact. A thread
//! shares the process's memory, so its appends are simply there.

use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use common::output::{CommonArgs, List, check_numbers, print_wrapped};
use common::{Exit, Lesson, fork};

/// The global list, like Python's module-level `result = []`.
static RESULT: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[derive(Parser, Debug)]
#[command(about = "A global list filled by a child process vs by a thread")]
struct Args {
    /// The numbers to square into the global list (1 to 32 of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8",
        allow_negative_numbers = true
    )]
    numbers: Vec<i64>,
    #[command(flatten)]
    common: CommonArgs,
}

/// How long the parent waits for the child (which needs a millisecond) before it
/// calls it stuck, kills it and says so.
const PATIENCE: Duration = Duration::from_secs(10);

/// What step 1 saw from the parent's side: RESULT after the child's join(), and the
/// child's verdict (its exit code: the only word it sends back).
struct ForkRun {
    after: Vec<i64>,
    exit: Exit,
}

/// What step 2 saw: which thread appended, and RESULT afterwards.
struct ThreadRun {
    tid: i32,
    after: Vec<i64>,
}

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let numbers = &args.numbers;
    check_numbers(numbers, 32, 2).map_err(anyhow::Error::msg)?;
    let expected: Vec<i64> = numbers.iter().map(|n| n * n).collect();
    let mut lesson = Lesson::start(
        "proc-global-var-pitfall",
        "does the parent see a child's appends to a global?",
        "result = [] filled by multiprocessing.Process(target=square_list)",
        &args.common,
    );

    lesson.step("a child process appends to the global RESULT");
    let forked = append_in_child(&lesson, numbers, &expected)?;
    check_child(&mut lesson, &forked, &expected);

    lesson.step("a thread appends to the same global");
    let threaded = append_in_thread(numbers)?;
    check_thread(&mut lesson, &threaded, &expected);

    lesson.step("so how does a child process hand results back?");
    ways_back(&lesson);

    Ok(lesson.finish())
}
// ANCHOR_END: run

/// `square_list` from the Python twin: append each square to the global.
fn square_list(numbers: &[i64]) {
    result().extend(numbers.iter().map(|n| n * n));
}

/// The global, locked. Nothing panics while holding it, so it is never poisoned;
/// if it were, the list inside would still be the one to show.
fn result() -> MutexGuard<'static, Vec<i64>> {
    RESULT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where RESULT lives in this process's address space.
fn address() -> usize {
    &RESULT as *const _ as usize
}

/// Step 1: fork; the child appends to its copy of RESULT and reports on it.
fn append_in_child(lesson: &Lesson, numbers: &[i64], expected: &[i64]) -> anyhow::Result<ForkRun> {
    let addr = address();
    let me = std::process::id();
    let before = List(&result()).to_string();
    lesson.say(format!(
        "parent pid {me}: RESULT = {before} before the fork (at {addr:#x})"
    ));
    let mut child = fork(|| {
        // Child: appends to *its* RESULT, the copy it got at fork time.
        square_list(numbers);
        let seen = result().clone();
        let pid = std::process::id();
        let line = format!(
            "    child  pid {pid}: RESULT = {} (at {:#x})",
            List(&seen),
            address()
        );
        print_wrapped(&line, "      ");
        // Exit code 0 means "I saw the squares, at the very address the parent had".
        match (seen == expected, address() == addr) {
            (true, true) => 0,
            (false, _) => 3,
            (true, false) => 4,
        }
    })
    .context("forking the child")?;
    // Parent: wait for the child, but not forever (a stopped child would hang us).
    let exit = child.join_within(PATIENCE)?;
    let after = result().clone();
    let after_list = List(&after);
    lesson.say(format!(
        "parent pid {me}: RESULT = {after_list} after join() (at {:#x})",
        address()
    ));
    Ok(ForkRun { after, exit })
}

fn check_child(lesson: &mut Lesson, forked: &ForkRun, expected: &[i64]) {
    lesson.check(
        format!(
            "the child saw {} at the parent's address ({})",
            List(expected),
            forked.exit
        ),
        forked.exit.success(),
    );
    lesson.check_eq(
        "the parent's RESULT after join()",
        List(&forked.after),
        List(&[]),
    );
    lesson.say("same address, different contents: after fork, each process has its own");
    lesson.say("copy of every page (copy-on-write). The child's appends went to its copy.");
}

/// Step 2: a thread runs the same `square_list` in this process.
fn append_in_thread(numbers: &[i64]) -> anyhow::Result<ThreadRun> {
    // Builder, not thread::spawn: a thread the system refuses (ulimit -u, ulimit -v)
    // is an io::Error to report, not a panic.
    let tid = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("square_list".into())
            .spawn_scoped(s, || {
                square_list(numbers);
                nix::unistd::gettid().as_raw()
            })
            .map_err(|e| anyhow!("cannot start a thread: {e}"))?;
        handle
            .join()
            .map_err(|_| anyhow!("the square_list thread panicked"))
    })?;
    Ok(ThreadRun {
        tid,
        after: result().clone(),
    })
}

fn check_thread(lesson: &mut Lesson, threaded: &ThreadRun, expected: &[i64]) {
    let me = std::process::id();
    lesson.say(format!(
        "thread tid {} (pid {me}) ran square_list",
        threaded.tid
    ));
    lesson.say(format!(
        "parent pid {me}: RESULT = {} after join()",
        List(&threaded.after)
    ));
    lesson.check_eq(
        "RESULT after the thread's join()",
        List(&threaded.after),
        List(expected),
    );
    lesson.say("a thread shares the process's memory: there is one RESULT; it changed.");
}

/// Step 3: where the course goes next.
fn ways_back(lesson: &Lesson) {
    lesson.say("- through memory that is really shared: shared-value-array (Value, Array)");
    lesson.say("- through messages: mp-queue (multiprocessing.Queue)");
    lesson.say("- through its exit code, as this child did: 8 bits, enough for yes or no");
}
