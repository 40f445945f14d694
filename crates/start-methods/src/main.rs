//! # start-methods: fork, spawn or forkserver: how does a child start?
//!
//! **Question.** Python starts a child process in one of three ways. What does
//! the child inherit under each, why must `main` begin with the entry hook, why is
//! fork beside a thread dangerous, and what does each cost?
//!
//! **Python twin** (`docs/python/03_start_methods.py`): the same steps under
//! `get_context("fork")`, `"spawn"` and `"forkserver"`. Here fork is the kit's
//! `common::fork`; spawn is `common::spawn` (this binary started again through
//! `/proc/self/exe`, re-entering `main`); forkserver is `common::forkserver` (a
//! server forked early that forks children on request). Both run functions
//! registered by name, the way Python pickles a function by module and name.
//!
//! **Run.** `cargo run -p start-methods` (`--help`: `--children 3 --starts 5
//! --ascii`). The full cost: `cargo bench -p start-methods`.
//!
//! **Expected output** (the fd number and the times vary; `...` marks wrapped
//! lines left out):
//! ```text
//! [1] the same child under each start method: what does it inherit?
//!     parent: GLOBAL = 2 (0 at program start, 1 when the server forked)
//!     parent: this program's file is open on fd 4
//!                        fork      spawn     forkserver
//!     GLOBAL             2         0         1
//!     the open file      yes       no        no
//!     threads            1         1         1
//!   ✓ check: GLOBAL (fork/spawn/server): 2, 0, 1 (expected 2, 0, 1)
//!   ✓ check: open file (fork/spawn/server): yes, no, no (expected yes, no, no)
//!   ✓ check: every child runs one thread
//!     forkserver sees 1: this kit's server is a fork of the program, taken early;
//!       Python's is a fresh interpreter importing the main module (0 in the twin).
//!
//! [2] why the entry hook comes first in main
//!     main's top ran again in: spawn 3 of 3, fork 0 of 3, forkserver 0 of 3
//!   ✓ check: re-ran main's top (fork/spawn/server): 0, 3, 0 (expected 0, 3, 0)
//!     forkserver 0: this kit's server is a fork, so main's top never ran again;
//!       Python's server imports the main module (yes in the twin).
//!     A spawned child runs main from the top: every line above the entry hook runs
//!     ...
//!
//! [3] a thread holds a lock while the main thread starts a child
//!     common::fork refuses: refusing to fork: this process runs 2 threads; a
//!     ...
//!     raw fork: the child's copy of the lock stays held: exitcode 3
//!     spawn: the child took its own lock: exitcode 0
//!     forkserver: the child took its own lock: exitcode 0
//!   ✓ check: the kit refused to fork beside a thread
//!   ✓ check: the forked child never got the lock (exitcode 3)
//!   ✓ check: took the lock (spawn, forkserver): yes, yes (expected yes, yes)
//!
//! [4] what a start + join costs (best of 5...)
//!     fork 0.25 ms   forkserver 0.37 ms   spawn 1.04 ms
//!     Python 3.11 here (the twin's --bench, mean of 50 starts each):
//!     fork 2.3 ms   forkserver 7.9 ms   spawn 58 ms
//!   ✓ check: 15 of 15 children ran the function and exited 0
//!
//!   ✓ check: no child process left behind (zombie or running): none
//!   ✓ check: no file descriptor leaked: none
//!
//! all 10 claims held (1.13 s)
//! ```
//!
//! **Notice.** Fork copies the parent as it is now: its globals, its open files,
//! and its locks as they are held at that instant, but only the thread that forked.
//! Spawn starts the program over: globals as at program start, and every line of
//! `main` above the entry hook runs again. Forkserver children start from the
//! server, a copy of the program taken early, before any thread ran.

use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use common::Exit;
use common::Lesson;
use common::forkserver::{self, ForkServer};
use common::output::CommonArgs;
use start_methods::{GLOBAL, INHERITED, LOCK, Method, NOTHING, OpenFile, Seen};
use start_methods::{children_beside_the_holder, run_in_child, three, yes};

#[derive(Parser, Debug)]
#[command(about = "Python's start methods side by side: fork, spawn, forkserver")]
struct Args {
    /// Children per method in the "main runs again" step.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    children: u64,
    /// Starts per method in the cost step (the best is shown).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    starts: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The bound on every wait that should succeed: past it, a child is stuck or stopped.
const BOUND: Duration = Duration::from_secs(10);
/// How long a child tries the lock before it gives up (exit code 3).
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // Everything above the entry hook runs again in every spawned child.
    start_methods::note_main_top();
    // `if __name__ == "__main__":` -- a spawned child runs its function here and
    // exits; the parent goes on.
    common::spawn::child_entry(start_methods::TARGETS);
    common::output::main(run)
}

// ANCHOR: run
fn run(args: &Args) -> Result<ExitCode> {
    GLOBAL.store(1, SeqCst);
    // Before any thread: the server is a fork of this process as it is now.
    let server = forkserver::start().context("starting the fork server")?;
    GLOBAL.store(2, SeqCst);
    let mut lesson = Lesson::start(
        "start-methods",
        "fork, spawn or forkserver: what does the child start from?",
        "get_context('fork' | 'spawn' | 'forkserver').Process(...)",
        &args.common,
    );
    what_each_inherits(&mut lesson, &server)?;
    main_runs_again(&mut lesson, &server, args.children as usize)?;
    fork_beside_a_held_lock(&mut lesson, &server)?;
    what_it_costs(&mut lesson, &server, args.starts as usize)?;
    server.stop()?;
    Ok(lesson.finish())
}
// ANCHOR_END: run

fn what_each_inherits(lesson: &mut Lesson, server: &ForkServer) -> Result<()> {
    lesson.step("the same child under each start method: what does it inherit?");
    // Rust opens files close-on-exec, as Python does (PEP 446): fork copies the
    // fd anyway; exec closes it.
    let file = std::fs::File::open(std::env::current_exe()?)?;
    let probe = OpenFile::of(&file)?;
    let global = GLOBAL.load(SeqCst);
    lesson.say(format!(
        "parent: GLOBAL = {global} (0 at program start, 1 when the server forked)"
    ));
    lesson.say(format!(
        "parent: this program's file is open on fd {}",
        probe.fd
    ));
    let mut seen: Vec<Seen> = Vec::new();
    for method in Method::ALL {
        let (exit, value) = run_in_child(method, server, &INHERITED, probe, BOUND)?;
        seen.push(value.ok_or_else(|| anyhow!("the {} child failed: {exit}", method.name()))?);
    }
    drop(file);
    let row = |label: &str, cell: &dyn Fn(&Seen) -> String| {
        let cells: String = seen.iter().map(|s| format!("{:<10}", cell(s))).collect();
        format!("{label:<19}{}", cells.trim_end())
    };
    lesson.say(row("", &|_| String::new()) + "fork      spawn     forkserver");
    lesson.say(row("GLOBAL", &|s| s.global.to_string()));
    lesson.say(row("the open file", &|s| yes(s.has_file).to_string()));
    lesson.say(row("threads", &|s| s.threads.to_string()));
    let globals = [seen[0].global, seen[1].global, seen[2].global];
    lesson.check_eq(
        "GLOBAL (fork/spawn/server)",
        three(globals),
        three([2, 0, 1]),
    );
    let files = [seen[0].has_file, seen[1].has_file, seen[2].has_file].map(yes);
    lesson.check_eq(
        "open file (fork/spawn/server)",
        three(files),
        three(["yes", "no", "no"]),
    );
    let one_thread = seen.iter().all(|s| s.threads == 1);
    lesson.check("every child runs one thread", one_thread);
    lesson.say(
        "forkserver sees 1: this kit's server is a fork of the program, taken \
         early; Python's is a fresh interpreter importing the main module (0 in the twin).",
    );
    Ok(())
}

fn main_runs_again(lesson: &mut Lesson, server: &ForkServer, n: usize) -> Result<()> {
    lesson.step("why the entry hook comes first in main");
    let probe = OpenFile {
        fd: -1,
        dev: 0,
        ino: 0,
    };
    let mut reran = [0usize; 3];
    for (i, method) in Method::ALL.into_iter().enumerate() {
        for _ in 0..n {
            let (exit, seen) = run_in_child(method, server, &INHERITED, probe, BOUND)?;
            let seen = seen.ok_or_else(|| anyhow!("a {} child failed: {exit}", method.name()))?;
            reran[i] += usize::from(seen.main_top_ran_here);
        }
    }
    lesson.say(format!(
        "main's top ran again in: spawn {} of {n}, fork {} of {n}, forkserver {} of {n}",
        reran[1], reran[0], reran[2]
    ));
    lesson.check_eq(
        "re-ran main's top (fork/spawn/server)",
        three(reran),
        three([0, n, 0]),
    );
    lesson.say(
        "forkserver 0: this kit's server is a fork, so main's top never ran again; \
         Python's server imports the main module (yes in the twin).",
    );
    lesson.say(
        "A spawned child runs main from the top: every line above the entry hook runs \
         again. Were the lesson itself above it, each child would start the lesson again, \
         and each of its children too. Python's spawn refuses that with a RuntimeError \
         (\"...before the current process has finished its bootstrapping phase\").",
    );
    Ok(())
}

fn fork_beside_a_held_lock(lesson: &mut Lesson, server: &ForkServer) -> Result<()> {
    lesson.step("a thread holds a lock while the main thread starts a child");
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::Builder::new()
        .name("holder".into())
        .spawn(move || {
            let guard = LOCK.lock();
            let _ = held_tx.send(());
            let _ = release_rx.recv_timeout(BOUND); // until released, not forever
            drop(guard);
        })
        .map_err(|e| anyhow!("cannot start a thread: {e}"))?;
    let seen = held_rx
        .recv_timeout(BOUND)
        .map_err(|_| anyhow!("the holder thread did not take the lock"))
        .and_then(|()| children_beside_the_holder(server, LOCK_PATIENCE, BOUND));
    let _ = release_tx.send(());
    holder
        .join()
        .map_err(|_| anyhow!("the holder thread panicked"))?;
    let seen = seen?;
    let refusal = seen.refused.as_deref().unwrap_or("it forked!");
    lesson.say(format!("common::fork refuses: {refusal}"));
    lesson.say(format!(
        "raw fork: the child's copy of the lock stays held: {}",
        seen.forked
    ));
    for (name, (exit, _)) in [("spawn", &seen.spawn), ("forkserver", &seen.forkserver)] {
        lesson.say(format!("{name}: the child took its own lock: {exit}"));
    }
    lesson.check(
        "the kit refused to fork beside a thread",
        seen.refused.is_some(),
    );
    lesson.check(
        format!("the forked child never got the lock ({})", seen.forked),
        seen.forked.code == 3,
    );
    let took = |(exit, got): &(Exit, Option<bool>)| yes(exit.success() && *got == Some(true));
    lesson.check_eq(
        "took the lock (spawn, forkserver)",
        format!("{}, {}", took(&seen.spawn), took(&seen.forkserver)),
        "yes, yes".to_string(),
    );
    lesson.say(
        "fork copies memory, the held lock included, but only the thread that called \
         fork: nobody in the child will ever unlock it. Spawn and forkserver children \
         start from a state in which no thread held it.",
    );
    Ok(())
}

fn what_it_costs(lesson: &mut Lesson, server: &ForkServer, starts: usize) -> Result<()> {
    let build = if cfg!(debug_assertions) {
        ", unoptimised build"
    } else {
        ""
    };
    lesson.step(&format!(
        "what a start + join costs (best of {starts}{build})"
    ));
    let mut cells = Vec::new();
    let (mut ran, mut all) = (0, 0);
    for method in [Method::Fork, Method::Forkserver, Method::Spawn] {
        let mut best = Duration::MAX;
        for _ in 0..starts {
            let t = Instant::now();
            let (exit, value) = run_in_child(method, server, &NOTHING, (), BOUND)?;
            best = best.min(t.elapsed());
            if exit.signal().is_some() {
                bail!("a {} child was killed: {exit}", method.name());
            }
            all += 1;
            ran += usize::from(exit.success() && value.is_some());
        }
        let ms = best.as_secs_f64() * 1e3;
        cells.push(format!("{} {ms:.2} ms", method.name()));
    }
    lesson.say(cells.join("   "));
    lesson.check(
        format!("{ran} of {all} children ran the function and exited 0"),
        ran == all,
    );
    lesson.say("Python 3.11 here (the twin's --bench, mean of 50 starts each):");
    lesson.say("fork 2.3 ms   forkserver 7.9 ms   spawn 58 ms");
    lesson.say("Ratios from one quiet run: cargo bench -p start-methods.");
    Ok(())
}
