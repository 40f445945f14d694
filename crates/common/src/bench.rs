//! For the `cargo bench` targets beside the lessons (`harness = false`): the flags
//! they share, a progress line while they run, and best-of timing. Benchmarks report
//! ratios measured in one run; nothing here asserts a time.
//!
//! `cargo bench -p pool-map` runs a lesson's benchmarks at full size;
//! `cargo bench -p pool-map -- --quick` runs them small (a smoke test, as CI does).

use std::io::Write;
use std::time::{Duration, Instant};

/// What every benchmark binary accepts. Cargo passes `--bench` to a bench target;
/// `--quick` shrinks every size; anything else is refused with a message.
#[derive(Debug, Clone, Copy)]
pub struct BenchArgs {
    /// Small sizes and few rounds: a smoke run, not a measurement.
    pub quick: bool,
}

impl BenchArgs {
    /// Read the command line (exits 2 with a message on an unknown flag).
    pub fn parse() -> BenchArgs {
        let mut quick = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                other => {
                    eprintln!("error: unknown argument {other} (this benchmark takes --quick)");
                    std::process::exit(2);
                }
            }
        }
        BenchArgs { quick }
    }

    /// `full`, or `small` under `--quick`.
    pub fn size<T>(&self, full: T, small: T) -> T {
        if self.quick { small } else { full }
    }
}

/// Every benchmark's `main`: read the flags, run, and turn an error into a clear
/// message and exit code 2 (after clearing the progress line).
pub fn main<E: std::fmt::Display>(run: fn(BenchArgs) -> Result<(), E>) -> std::process::ExitCode {
    match run(BenchArgs::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            progress_done();
            crate::output::fail(&e)
        }
    }
}

/// Say on stderr what is being measured now, on one line that the next call
/// overwrites (a terminal shows one moving line; a log shows each).
pub fn progress(what: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K  measuring: {what} ...");
    let _ = err.flush();
}

/// Clear the progress line.
pub fn progress_done() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

/// The fastest of `rounds` runs of `f` (at least one), and the value of that run.
pub fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let v = f();
        let d = t.elapsed();
        if best.as_ref().is_none_or(|(b, _)| d < *b) {
            best = Some((d, v));
        }
    }
    best.expect("at least one round")
}

/// The fastest of `rounds` runs (at least one), or the first error. Each run
/// times itself, so that what it sets up (forking, joining) stays outside.
pub fn fastest<E>(
    rounds: usize,
    mut run: impl FnMut() -> Result<Duration, E>,
) -> Result<Duration, E> {
    let mut best = run()?;
    for _ in 1..rounds {
        best = best.min(run()?);
    }
    Ok(best)
}

/// Things per second: `n` in `d`.
pub fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// One line naming the machine: CPUs, model, kernel (for docs/benchmarks.md).
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} CPUs ({model}), Linux {}",
        crate::output::cpu_count(),
        kernel.trim()
    )
}
