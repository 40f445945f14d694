//! # thread-race: what does Rust stop, and what does it let through?
//!
//! **Question.** Two threads update one counter, or one account. Which races does
//! Rust refuse to compile, which ones does it still let you write, and what fixes
//! them?
//!
//! **Python twin** (`docs/python/05_thread_race.py`): a global `counter += 1` from
//! two `threading.Thread`s, with and without `threading.Lock`; the withdraw race on
//! an account of 100. Python accepts the unsynchronised counter; safe Rust does not
//! (see the four `compile_fail` examples in `src/lib.rs`).
//!
//! **Run.** `cargo run -p thread-race` (`--help`: `--threads 2 --increments 1000000
//! --ascii`).
//!
//! **Expected output** (the lost count varies from run to run):
//! ```text
//! [2] the counter that should reach 2 but reaches 1
//!     two threads read 0, both write 1: counter = 1
//! [3] 2 threads x 1000000 increments, three ways
//!     load, then store:  1063218 (expected 2000000): lost 936782
//!     fetch_add:         2000000 (expected 2000000)
//!     Mutex:             2000000 (expected 2000000)
//! [4] check-then-act: an account of 100, two withdrawals of 80
//!     check, let go, act:       balance -60, paid 2, refused 0
//!     one lock across both:     balance 20, paid 1, refused 1
//! ```
//!
//! **Notice.** Rust forbids *data races* (unsynchronised access to plain memory:
//! undefined behaviour) at compile time. It cannot forbid *race conditions*: a
//! read and a write that are each atomic but not atomic together. The fix is the
//! same as in Python: make the whole read-modify-write, or the whole check-and-act,
//! one critical section.

use anyhow::bail;
use clap::Parser;
use common::Lesson;
use common::output::CommonArgs;
use thread_race::{
    both_read_then_both_write, fetch_add, load_then_store, mutex, withdraw_twice_locked,
    withdraw_twice_racy,
};

#[derive(Parser, Debug)]
#[command(about = "Race conditions and critical sections in threads")]
struct Args {
    /// How many threads increment the counter.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(2..=64))]
    threads: u64,
    /// How many increments each thread does.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    increments: u64,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let (threads, n) = (args.threads as usize, args.increments);
    let Some(target) = (threads as u64)
        .checked_mul(n)
        .and_then(|t| i64::try_from(t).ok())
    else {
        bail!("--threads x --increments is too large");
    };
    let mut lesson = Lesson::start(
        "thread-race",
        "which races does Rust refuse, and which does it let through?",
        "counter += 1 in threading.Thread, threading.Lock",
        &args.common,
    );

    lesson.step("what safe Rust refuses to compile (Python runs all of these)");
    for (code, what) in [
        ("E0133", "a `static mut` counter written without `unsafe`"),
        (
            "E0373",
            "thread::spawn borrowing a local counter it could outlive",
        ),
        ("E0499", "two scoped threads each holding `&mut counter`"),
        (
            "E0277",
            "an `Rc<Cell<i64>>` counter sent to another thread (not Send)",
        ),
    ] {
        lesson.say(format!("{code}: {what}"));
    }
    lesson.say("the programs are compile_fail doctests in crates/thread-race/src/lib.rs;");
    lesson.say("`cargo test -p thread-race` checks that each still fails, with that code.");

    lesson.step("the counter that should reach 2 but reaches 1");
    let counter = both_read_then_both_write();
    lesson.say(format!(
        "two threads read 0, both write 1: counter = {counter}"
    ));
    lesson.broken("two increments, one result: each thread's store overwrote the other's");
    lesson.check_eq(
        "counter after both read before either wrote (a barrier forces it)",
        counter,
        1,
    );

    lesson.step(&format!("{threads} threads x {n} increments, three ways"));
    let racy = load_then_store(threads, n);
    lesson.say(format!("load, then store:  {racy} (expected {target})"));
    if racy < target {
        lesson.broken(format!(
            "lost {} updates: each load and each store is atomic, the pair is not",
            target - racy
        ));
    } else {
        lesson.say("no update was lost this time (the window is small; try more --increments)");
    }
    let atomic = fetch_add(threads, n);
    lesson.say(format!("fetch_add:         {atomic} (expected {target})"));
    lesson.check_eq("fetch_add total", atomic, target);
    let locked = mutex(threads, n);
    lesson.say(format!("Mutex:             {locked} (expected {target})"));
    lesson.check_eq("Mutex total", locked, target);

    lesson.step("check-then-act: an account of 100, two withdrawals of 80");
    let racy = withdraw_twice_racy(100, 80);
    lesson.say(format!(
        "check, let go, act:       balance {}, paid {}, refused {}",
        racy.balance, racy.paid, racy.refused
    ));
    lesson.broken(
        "both threads saw 100 >= 80 before either took the money: the account is overdrawn",
    );
    lesson.check_eq(
        "balance when both checks pass first (a barrier forces it)",
        racy.balance,
        -60,
    );
    let fixed = withdraw_twice_locked(100, 80);
    lesson.say(format!(
        "one lock across both:     balance {}, paid {}, refused {}",
        fixed.balance, fixed.paid, fixed.refused
    ));
    lesson.check(
        format!(
            "with one lock across check and update: balance {}, paid {}, refused {} \
             (expected 20, 1, 1)",
            fixed.balance, fixed.paid, fixed.refused
        ),
        (fixed.balance, fixed.paid, fixed.refused) == (20, 1, 1),
    );

    Ok(lesson.finish())
}
