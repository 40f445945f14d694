//! # thread-race: what does Rust stop, and what does it let through?
//!
//! **Question.** Two threads update one counter, or one account. Which races does
//! Rust refuse to compile, which ones does it still let you write, and what fixes
//! them?
//!
//! **Python twin** (`docs/python/08_thread_race.py`): a global `counter += 1` from
//! two `threading.Thread`s, with and without `threading.Lock`; the withdraw race on
//! an account of 100. Python accepts the unsynchronised counter; safe Rust does not
//! (see the four `compile_fail` examples in `src/lib.rs`).
//!
//! **Run.** `cargo run -p thread-race` (`--help`: `--threads 2 --increments 1000000
//! --ascii`).
//!
//! **Expected output** (the load-then-store total and the lost count vary from run
//! to run, down to 0 now and then; the other numbers do not):
//! ```text
//! [1] what safe Rust refuses to compile (Python runs all of these)
//!     E0133: a `static mut` counter written without `unsafe`
//!     E0373: thread::spawn borrowing a local counter it could outlive
//!     E0499: two scoped threads each holding `&mut counter`
//!     E0277: an `Rc<Cell<i64>>` counter sent to another thread (not Send)
//! [2] the counter that should reach 2 but reaches 1
//!     two threads read 0, then both write 1: counter = 1
//!   ⚠ broken on purpose: two increments, one result
//!   ✓ check: counter after both read before either wrote: 1 (expected 1)
//! [3] 2 threads x 1000000 increments, three ways
//!     load, then store: 1063218 (expected 2000000)
//!   ⚠ broken on purpose: lost 936782 updates
//!   ✓ check: fetch_add: 2000000 (expected 2000000)
//!   ✓ check: Mutex: 2000000 (expected 2000000)
//! [4] check-then-act: an account of 100, two withdrawals of 80
//!     check, let go, act:   balance -60, paid 2, refused 0
//!   ⚠ broken on purpose: the account is overdrawn
//!   ✓ check: balance when both checks pass first: -60 (expected -60)
//!     one lock across both: balance 20, paid 1, refused 1
//!   ✓ check: one lock across check and act: paid 1, refused 1, balance 20
//! ```
//!
//! **Notice.** Rust forbids *data races* (unsynchronised access to plain memory:
//! undefined behaviour) at compile time. It cannot forbid *race conditions*: a
//! read and a write that are each atomic but not atomic together. The fix is the
//! same as in Python: make the whole read-modify-write, or the whole check-and-act,
//! one critical section.

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use common::Lesson;
use common::output::CommonArgs;
use thread_race::{
    Withdrawals, both_read_then_both_write, fetch_add, load_then_store, mutex,
    withdraw_twice_locked, withdraw_twice_racy,
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

/// More increments than this in all would keep the room waiting for minutes.
const MOST_INCREMENTS: u64 = 100_000_000;

fn main() -> ExitCode {
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_args(args)?;
    let mut lesson = Lesson::start(
        "thread-race",
        "which races does Rust refuse, and which does it let through?",
        "counter += 1 in threading.Thread, threading.Lock",
        &args.common,
    );
    refused_programs(&mut lesson);
    two_increments_one_result(&mut lesson)?;
    let counts = count_three_ways(&mut lesson, &plan)?;
    check_counts(&mut lesson, &plan, &counts);
    let accounts = withdraw_twice(&mut lesson)?;
    check_withdrawals(&mut lesson, &accounts);
    Ok(lesson.finish())
}
// ANCHOR_END: run

/// The counting race's size, checked before anything runs.
struct Plan {
    threads: usize,
    increments: u64,
    /// What every correct count reaches: threads x increments.
    target: i64,
}

impl Plan {
    fn from_args(args: &Args) -> anyhow::Result<Plan> {
        let total = args.threads * args.increments; // at most 64 x 10^8: no overflow
        if total > MOST_INCREMENTS {
            bail!("--threads x --increments is {total}; at most {MOST_INCREMENTS}, please");
        }
        Ok(Plan {
            threads: args.threads as usize,
            increments: args.increments,
            target: total as i64,
        })
    }
}

/// Step 1: the four programs safe Rust refuses (the compile_fail doctests).
fn refused_programs(lesson: &mut Lesson) {
    lesson.step("what safe Rust refuses to compile (Python runs all of these)");
    lesson.say("E0133: a `static mut` counter written without `unsafe`");
    lesson.say("E0373: thread::spawn borrowing a local counter it could outlive");
    lesson.say("E0499: two scoped threads each holding `&mut counter`");
    lesson.say("E0277: an `Rc<Cell<i64>>` counter sent to another thread (not Send)");
    lesson.say("each is a compile_fail doctest in crates/thread-race/src/lib.rs, and");
    lesson.say("`cargo test -p thread-race` checks that it still fails, with that code.");
}

/// Step 2: both threads read before either writes (they meet in between).
fn two_increments_one_result(lesson: &mut Lesson) -> anyhow::Result<()> {
    lesson.step("the counter that should reach 2 but reaches 1");
    let counter = both_read_then_both_write()?;
    lesson.say(format!(
        "two threads read 0, then both write 1: counter = {counter}"
    ));
    lesson.broken("two increments, one result");
    lesson.say("(each thread stored what it read plus one, over the other's store)");
    lesson.check_eq("counter after both read before either wrote", counter, 1);
    Ok(())
}

/// The totals of step 3.
struct Counts {
    load_then_store: i64,
    fetch_add: i64,
    mutex: i64,
}

/// Step 3: the same increments, racy and right.
fn count_three_ways(lesson: &mut Lesson, plan: &Plan) -> anyhow::Result<Counts> {
    lesson.step(&format!(
        "{} threads x {} increments, three ways",
        plan.threads, plan.increments
    ));
    let (threads, n) = (plan.threads, plan.increments);
    Ok(Counts {
        load_then_store: load_then_store(threads, n)?,
        fetch_add: fetch_add(threads, n)?,
        mutex: mutex(threads, n)?,
    })
}

fn check_counts(lesson: &mut Lesson, plan: &Plan, counts: &Counts) {
    let (racy, target) = (counts.load_then_store, plan.target);
    lesson.say(format!("load, then store: {racy} (expected {target})"));
    // Reported in every run: the window is there even when no update fell in it.
    lesson.broken(format!("lost {} updates", target - racy));
    lesson.say("(each load and each store is atomic; the pair of them is not)");
    if racy == target {
        lesson.say("none this time: a small window; try more --increments");
    }
    lesson.check_eq("fetch_add", counts.fetch_add, target);
    lesson.check_eq("Mutex", counts.mutex, target);
}

/// The two accounts of step 4.
struct Accounts {
    racy: Withdrawals,
    locked: Withdrawals,
}

/// Step 4: check-then-act, with the lock let go in between, and held across.
fn withdraw_twice(lesson: &mut Lesson) -> anyhow::Result<Accounts> {
    lesson.step("check-then-act: an account of 100, two withdrawals of 80");
    Ok(Accounts {
        racy: withdraw_twice_racy(100, 80)?,
        locked: withdraw_twice_locked(100, 80)?,
    })
}

fn check_withdrawals(lesson: &mut Lesson, accounts: &Accounts) {
    let Accounts { racy, locked } = accounts;
    lesson.say(format!("check, let go, act:   {}", show(racy)));
    lesson.broken("the account is overdrawn");
    lesson.say("(both threads saw 100 >= 80 before either took the money)");
    lesson.check_eq("balance when both checks pass first", racy.balance, -60);
    lesson.say(format!("one lock across both: {}", show(locked)));
    lesson.check(
        format!(
            "one lock across check and act: paid {}, refused {}, balance {}",
            locked.paid, locked.refused, locked.balance
        ),
        (locked.paid, locked.refused, locked.balance) == (1, 1, 20),
    );
}

fn show(w: &Withdrawals) -> String {
    format!(
        "balance {}, paid {}, refused {}",
        w.balance, w.paid, w.refused
    )
}
