//! What one child costs to start and join under each start method, measured in one
//! run so that the ratios are fair: a bare `fork` + `waitpid` (the floor), the
//! kit's `common::fork` + join, a forkserver child, a spawned child (a fresh
//! image of this binary, which runs a registered function), and
//! `Command::new("/bin/true")` (what any exec costs, the floor under spawn).
//! Every child does nothing: this is the price of the start itself.
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

fn run(args: BenchArgs) -> Result<()> {
    // Forked now, while this benchmark is single-threaded.
    let server = forkserver::start()?;
    let starts = args.size(200, 10);
    println!("start-methods: start + join of one child that does nothing");
    println!("{}", machine());
    println!("the mean of {starts} starts each (after one warm-up), one run");
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }
    let rows: [(&str, &dyn Fn() -> Result<()>); 5] = [
        ("bare fork + waitpid", &bare_fork),
        ("kit fork + join", &|| method(Method::Fork, &server)),
        ("forkserver", &|| method(Method::Forkserver, &server)),
        ("spawn (re-exec)", &|| method(Method::Spawn, &server)),
        ("Command /bin/true", &bin_true),
    ];
    let mut times = Vec::new();
    for (name, f) in rows {
        progress(name);
        f()?; // warm-up: page cache, the forkserver's first fork
        let t = Instant::now();
        for _ in 0..starts {
            f()?;
        }
        times.push((name, t.elapsed() / starts));
    }
    progress_done();
    server.stop()?;
    let floor = times[0].1.as_secs_f64();
    println!("\n| start + join | per child | x bare fork |");
    println!("|---|---|---|");
    for (name, t) in &times {
        let us = t.as_secs_f64() * 1e6;
        println!("| {name} | {us:.0} us | {:.1}x |", t.as_secs_f64() / floor);
    }
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
