//! # proc-global-var-pitfall: why doesn't the parent see what the child wrote?
//!
//! **Question.** A child process appends to a global list. Why is the parent's list
//! still empty after `join()`, when a thread's appends are visible?
//!
//! **Python twin** (`docs/python/02_proc_global_var_pitfall.py`): a module-level
//! `result = []` filled by `square_list` in a `multiprocessing.Process`; the child
//! prints `[4, 9, 64]`, the parent prints `[]`. Python's docs: "if code run in a
//! child process tries to access a global variable, then the value it sees (if any)
//! may not be the same as the value in the parent process". In Rust the global is a
//! `static Mutex<Vec<i64>>`; the process is a real `fork(2)`.
//!
//! **Run.** `cargo run -p proc-global-var-pitfall` (`--numbers 2,3,8`, `--ascii`).
//!
//! **Expected output** (PIDs and addresses vary):
//! ```text
//! [1] a child process appends to the global RESULT
//!     child  pid 4242: RESULT = [4, 9, 64]   (RESULT at 0x5581c0a3e0b8)
//!     parent pid 4241: RESULT = []           (RESULT at 0x5581c0a3e0b8)
//! [2] a thread appends to the same global
//!     parent pid 4241: RESULT = [4, 9, 64]   (thread tid 4243 wrote it)
//! ```
//!
//! **Notice.** The same virtual address holds `[4, 9, 64]` in the child and `[]` in
//! the parent: after `fork` each process has its own copy of every page
//! (copy-on-write); the addresses are the same because the copy is exact. A thread
//! shares the process's memory, so its appends are simply there.

use common::output::List;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use common::output::{CommonArgs, check_numbers};
use common::{Lesson, fork};

/// The global list, like Python's module-level `result = []`.
static RESULT: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[derive(Parser, Debug)]
#[command(about = "A global list filled by a child process vs by a thread")]
struct Args {
    /// The numbers to square into the global list.
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

/// `square_list` from the Python seed: append each square to the global.
fn square_list(numbers: &[i64]) {
    let mut result = RESULT.lock().expect("RESULT lock");
    result.extend(numbers.iter().map(|n| n * n));
}

fn snapshot() -> Vec<i64> {
    RESULT.lock().expect("RESULT lock").clone()
}

fn address() -> usize {
    &RESULT as *const _ as usize
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let numbers = &args.numbers;
    check_numbers(numbers, 32, 2).map_err(anyhow::Error::msg)?;
    let expected: Vec<i64> = numbers.iter().map(|n| n * n).collect();
    let mut lesson = Lesson::start(
        "proc-global-var-pitfall",
        "a child process appends to a global list; does the parent see it?",
        "result = [] filled by multiprocessing.Process(target=square_list)",
        &args.common,
    );

    lesson.step("a child process appends to the global RESULT");
    let parent_addr = address();
    lesson.say(format!(
        "parent pid {}: RESULT = {:?} before the fork (RESULT at {parent_addr:#x})",
        std::process::id(),
        snapshot()
    ));
    let mut child = fork(|| {
        // Child: appends to *its* RESULT, the copy it got at fork time.
        square_list(numbers);
        let (seen, addr) = (snapshot(), address());
        println!(
            "    child  pid {}: RESULT = {seen:?}   (RESULT at {addr:#x})",
            std::process::id()
        );
        // The exit code is the child's only word to the parent: 0 means "I saw the
        // squares, at the very address the parent had".
        match (seen == expected, addr == parent_addr) {
            (true, true) => 0,
            (false, _) => 3,
            (true, false) => 4,
        }
    })
    .context("forking the child")?;
    let exit = child.join()?;
    let after = snapshot();
    lesson.say(format!(
        "parent pid {}: RESULT = {after:?}   (RESULT at {:#x})",
        std::process::id(),
        address()
    ));
    lesson.check(
        format!(
            "the child saw {expected:?} at the parent's address {parent_addr:#x} ({exit}, expected exitcode 0)"
        ),
        exit.code == 0,
    );
    lesson.check_eq("the parent's RESULT after join()", List(&after), List(&[]));
    lesson.say("same address, different contents: after fork, each process has its own copy");
    lesson.say("of every page (copy-on-write). The child's appends went to its copy.");

    lesson.step("a thread appends to the same global");
    let tid = std::thread::scope(|s| {
        s.spawn(|| {
            square_list(numbers);
            nix::unistd::gettid().as_raw()
        })
        .join()
        .expect("thread panicked")
    });
    let after = snapshot();
    lesson.say(format!(
        "parent pid {}: RESULT = {after:?}   (thread tid {tid} wrote it)",
        std::process::id()
    ));
    lesson.check_eq(
        "the parent's RESULT after the thread's join()",
        List(&after),
        List(&expected),
    );
    lesson.say("a thread shares the process's memory: there is one RESULT, and it changed.");

    lesson.step("so how does a child process hand results back?");
    lesson.say("- through memory that is really shared: shared-value-array (Value, Array)");
    lesson.say("- through messages: mp-queue (multiprocessing.Queue)");
    lesson.say("- through its exit code, as this child did: 8 bits, enough for yes or no");

    Ok(lesson.finish())
}
