//! What starting a worker costs, one at a time, start + join: a thread versus a
//! forked process, each beside its floor. Every row is measured in the same run,
//! rounds interleaved, so the ratios are fair.
//!
//! - thread, bare: `std::thread::Builder::new().spawn(..)` + `join()`;
//! - thread, as the lesson: a named scoped thread (`threads_square_cube::start`);
//! - process, bare: `libc::fork()`, the child `_exit(0)`s, `waitpid` reaps it;
//! - process, the kit: `common::fork(..)` + `join()` (it also checks the thread
//!   count, flushes stdout, opens a pipe for a panic message and a pidfd, and sets
//!   the parent-death signal).
//!
//! `cargo bench -p threads-square-cube` (full size), `-- --quick` (a smoke run).
//! The Python twin measures `Thread` and `Process` (fork) start + join with
//! `python3 docs/python/01_threads_square_cube.py --bench`.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use common::bench::{BenchArgs, machine, progress, progress_done};
use threads_square_cube::{join, start};

/// One way to start a worker that does nothing, and join it.
struct Row {
    name: &'static str,
    start_join: fn() -> anyhow::Result<()>,
    /// The best batch, per start.
    best: Duration,
}

fn main() -> std::process::ExitCode {
    common::bench::main(run)
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (starts, rounds) = (args.size(2000u32, 50), args.size(5, 2));
    let mut rows = [
        row("thread   std spawn + join (bare)", bare_thread),
        row("thread   named, scoped (the lesson)", lesson_thread),
        row("process  fork + waitpid (bare)", bare_fork),
        row("process  common::fork + join", kit_fork),
    ];
    println!("threads-square-cube: start + join, one worker at a time");
    println!("{}", machine());
    println!("best of {rounds} rounds of {starts} starts per row, rows interleaved");
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }
    for round in 1..=rounds {
        for r in &mut rows {
            let name = r.name.split_whitespace().collect::<Vec<_>>().join(" ");
            progress(&format!("round {round}/{rounds}: {name}"));
            let t = Instant::now();
            (0..starts).try_for_each(|_| (r.start_join)())?;
            r.best = r.best.min(t.elapsed() / starts);
        }
    }
    progress_done();
    let floor = rows[0].best.as_secs_f64();
    println!("\n{:<38} {:>12} {:>14}", "", "per start", "vs bare thread");
    for r in &rows {
        let us = r.best.as_secs_f64() * 1e6;
        let ratio = r.best.as_secs_f64() / floor;
        println!("{:<38} {us:>9.1} us {ratio:>13.1}x", r.name);
    }
    let (lesson_thread, kit) = (rows[1].best.as_secs_f64(), rows[3].best.as_secs_f64());
    println!(
        "\nthe lesson's process costs {:.1}x its thread to start and join",
        kit / lesson_thread
    );
    Ok(())
}

fn row(name: &'static str, start_join: fn() -> anyhow::Result<()>) -> Row {
    Row {
        name,
        start_join,
        best: Duration::MAX,
    }
}

fn bare_thread() -> anyhow::Result<()> {
    let h = thread::Builder::new().spawn(|| std::hint::black_box(0))?;
    h.join().map_err(|_| anyhow!("the thread panicked"))?;
    Ok(())
}

fn lesson_thread() -> anyhow::Result<()> {
    thread::scope(|s| join(start(s, "square", || std::hint::black_box(0))?))?;
    Ok(())
}

fn bare_fork() -> anyhow::Result<()> {
    // Every thread this benchmark started was joined first (pthread_join returns
    // once the thread has left user space): no lock is held by a missing thread.
    // SAFETY: the child only calls `_exit`, async-signal-safe, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork failed: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // Child: nothing to do.
        // SAFETY: `_exit` ends the process at once; nothing of the parent's runs.
        unsafe { libc::_exit(0) };
    }
    // Parent: reap it.
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int into `status`, which outlives the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("waitpid failed: {err}");
        }
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("a forked child did not exit 0 (status {status})");
    }
    Ok(())
}

fn kit_fork() -> anyhow::Result<()> {
    let exit = common::fork(|| ())?.join()?;
    if !exit.success() {
        bail!("a forked child ended with {exit}");
    }
    Ok(())
}
