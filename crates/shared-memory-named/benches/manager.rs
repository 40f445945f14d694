//! What one access costs through a `Manager` (a request to the server process and
//! its reply) beside one access to a shared-memory `Value` (an atomic load or
//! store in a `MAP_SHARED` page), measured in one run so that the ratio is fair.
//! Both are measured from the parent process; the manager's server is a forked
//! child, as `multiprocessing.Manager()` starts one.
//!
//! `cargo bench -p shared-memory-named` (full size), `cargo bench -p
//! shared-memory-named -- --quick` (a smoke run). The Python twin measures the
//! same with `python3 docs/python/07_shared_memory_named.py --bench`.

use std::time::{Duration, Instant};

use anyhow::bail;
use common::bench::{BenchArgs, fastest, machine, progress, progress_done};
use common::shm::Value;
use shared_memory_named::manager::Manager;

const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> std::process::ExitCode {
    common::bench::main(run)
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    common::ipc::ready()?;
    let trips = args.size(20_000u64, 500);
    let accesses = args.size(20_000_000u64, 200_000);
    let rounds = args.size(5, 1);
    println!("shared-memory-named: a Manager access vs a shared-memory Value access");
    println!("{}", machine());
    println!("{trips} manager gets and sets, {accesses} Value gets and sets; best of {rounds}");
    if cfg!(debug_assertions) {
        println!("(unoptimised build: use `cargo bench`, not a debug binary)");
    }
    let mut manager = Manager::start(1)?;
    let d = manager.proxy(0, PATIENCE)?;
    d.set("x", 0)?;
    let value = Value::new(0i64)?;

    progress("Manager: d['x'] = i");
    let m_set = per(trips, fastest(rounds, || time(trips, |i| d.set("x", i)))?);
    progress("Manager: d['x']");
    let m_get = per(
        trips,
        fastest(rounds, || time(trips, |_| d.get("x").map(drop)))?,
    );
    progress("Value: v.value = i");
    let v_set = per(
        accesses,
        fastest(rounds, || {
            time(accesses, |i| {
                value.set(std::hint::black_box(i));
                Ok(())
            })
        })?,
    );
    progress("Value: v.value");
    let v_get = per(
        accesses,
        fastest(rounds, || {
            time(accesses, |_| {
                std::hint::black_box(value.get());
                Ok(())
            })
        })?,
    );
    progress_done();
    if d.get("x")? != Some(trips as i64 - 1) || value.get() != accesses as i64 - 1 {
        bail!("a write was lost");
    }
    drop(d);
    manager.shutdown(PATIENCE)?;

    println!();
    println!("{:<34} {:>12} {:>12}", "", "set", "get");
    let ns = |d: f64| format!("{d:.1} ns");
    println!(
        "{:<34} {:>12} {:>12}",
        "Manager().dict(), from a client",
        ns(m_set),
        ns(m_get)
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "shared-memory Value (atomic)",
        ns(v_set),
        ns(v_get)
    );
    println!();
    println!(
        "same run: a Manager access costs {:.0}x a Value access (set), {:.0}x (get)",
        m_set / v_set.max(0.01),
        m_get / v_get.max(0.01)
    );
    Ok(())
}

/// `n` calls of `f(i)`: the time they took, or the first error.
fn time(n: u64, mut f: impl FnMut(i64) -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for i in 0..n as i64 {
        f(i)?;
    }
    Ok(t.elapsed())
}

/// Nanoseconds per access.
fn per(n: u64, d: Duration) -> f64 {
    d.as_secs_f64() * 1e9 / n.max(1) as f64
}
