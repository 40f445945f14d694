//! What one child costs to start and join under each start method, measured in one
//! run so that the ratios are fair. Every child does nothing: this is the price of
//! the start itself.
//!
//! - bare `fork` + `waitpid`: the floor (the child only calls `_exit`);
//! - the kit's `common::fork(|| ())` + `join()`: everything the kit does per start
//!   (the thread check, the start word and panic slot in shared memory, the
//!   pidfd, the parent-death handshake, waitid);
//! - the kit's fork with a value back on a pipe (`run_in_child`, what the lesson
//!   does: the same work as a forkserver or spawned child, which answer too);
//! - forkserver and spawn children running the registered `nothing`;
//! - `Command::new("/bin/true")`: what any fork + exec costs, the floor under spawn.
//!
//! The machine is often shared, so the rows take turns: each round runs a batch of
//! every row in order, and a row's figure is its best round (the mean of its batch
//! in the round that was least disturbed).
//!
//! `cargo bench -p start-methods` (full), `cargo bench -p start-methods -- --quick`
//! (a smoke run). The Python twin measures its three start methods with
//! `python3 docs/python/03_start_methods.py --bench`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::bench::{BenchArgs, machine, progress, progress_done};
use common::forkserver::{self, ForkServer};
use common::process::exit_now;
use start_methods::{Method, NOTHING, run_in_child};

const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> std::process::ExitCode {
    // First: a spawned child is a fresh copy of this binary; it runs here and exits.
    common::spawn::child_entry(start_methods::TARGETS);
    common::bench::main(run)
}

type Row<'a> = (&'static str, &'a dyn Fn() -> Result<()>);

fn run(args: BenchArgs) -> Result<()> {
    // Forked now, while this benchmark is single-threaded.
    let server = forkserver::start()?;
    let (starts, rounds) = (args.size(40, 5), args.size(7, 2));
    println!("start-methods: start + join of one child that does nothing");
    println!("{}", machine());
    println!("per row: the best of {rounds} rounds of {starts} starts (rows take turns)");
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }
    let rows: [Row; 6] = [
        ("bare fork + waitpid", &bare_fork),
        ("kit fork + join", &kit_fork),
        ("kit fork, value on a pipe", &|| {
            method(Method::Fork, &server)
        }),
        ("forkserver", &|| method(Method::Forkserver, &server)),
        ("spawn (re-exec)", &|| method(Method::Spawn, &server)),
        ("Command /bin/true", &bin_true),
    ];
    for (_, f) in &rows {
        f()?; // warm-up: page cache, the forkserver's first fork
    }
    let mut best = [Duration::MAX; 6];
    for round in 0..rounds {
        for ((name, f), best) in rows.iter().zip(&mut best) {
            progress(&format!("round {} of {rounds}: {name}", round + 1));
            let t = Instant::now();
            for _ in 0..starts {
                f()?;
            }
            *best = (*best).min(t.elapsed() / starts);
        }
    }
    progress_done();
    let names = rows.map(|(name, _)| name);
    server.stop()?;
    let us = |i: usize| best[i].as_secs_f64() * 1e6;
    println!("\n| start + join | per child | x bare fork |");
    println!("|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        println!("| {name} | {:.0} us | {:.2}x |", us(i), us(i) / us(0));
    }
    println!("\nratios (same run):");
    println!(
        "  kit fork + join / bare fork + waitpid:  {:.2}x",
        us(1) / us(0)
    );
    println!(
        "  spawn / Command /bin/true:              {:.2}x",
        us(4) / us(5)
    );
    println!(
        "  forkserver / kit fork, value on a pipe: {:.2}x",
        us(3) / us(2)
    );
    Ok(())
}

fn method(method: Method, server: &ForkServer) -> Result<()> {
    let (exit, _) = run_in_child(method, server, &NOTHING, (), PATIENCE)?;
    if !exit.success() {
        bail!("a {} child ended with {exit}", method.name());
    }
    Ok(())
}

/// The floor: fork, `_exit(0)` in the child, `waitpid` in the parent.
fn bare_fork() -> Result<()> {
    // SAFETY: this benchmark is single-threaded; the child only calls `_exit`.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => exit_now(0),
        nix::unistd::ForkResult::Parent { child } => {
            // The child calls nothing but _exit: this wait ends at once.
            nix::sys::wait::waitpid(child, None).context("waitpid")?;
            Ok(())
        }
    }
}

/// The kit's own start and join, nothing else: `join` includes looking for a
/// panic message in the child's slot (none).
fn kit_fork() -> Result<()> {
    let exit = common::fork(|| ())?.join()?;
    if !exit.success() {
        bail!("a kit fork child ended with {exit}");
    }
    Ok(())
}

fn bin_true() -> Result<()> {
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .status()
        .context("running /bin/true")?;
    if !status.success() {
        bail!("/bin/true failed: {status}");
    }
    Ok(())
}
