//! What the pool costs beside serial, scoped threads and rayon, on the tutorial's
//! workload (`sum(x*x for x in range(1000))` per item) scaled 100x in both readings:
//! 100x the items (1,000,000 items), and 100x the work per item (`x` below 100,000,
//! 10,000 items). Each reading times serial, the pool at Python's default chunksize,
//! the pool with chunks ten times finer, as many scoped threads as workers, and
//! rayon, best of 10 interleaved rounds, so every ratio comes from one run. Then
//! what a task costs at chunksize 1, and whether the cores are equally fast (the
//! same work on every worker at once: the ceiling equal shares can reach here).
//!
//! `cargo bench -p pool-map` (about two and a half minutes on 2 cores);
//! `cargo bench -p pool-map -- --quick` (every measurement, small: a smoke run).
//! The sizes are fixed (no size flags), so no size can overflow or exhaust memory.
//! A failed pool run (a worker killed from another terminal) ends the benchmark
//! with its error and exit code 2. Python's figures for the same work:
//! `python3 docs/python/11_pool_map.py --bench`.

use std::collections::BTreeMap;
use std::time::Duration;

use common::bench::{BenchArgs, machine, progress, progress_done};
use common::output::cpu_count;
use pool_map::{
    Comparison, Pool, compare_all, conditions, rayon_pool, speedup_caveat, sum_of_squares,
    sum_of_squares_100x, task_cost, time_work,
};

fn main() -> std::process::ExitCode {
    common::bench::main(bench)
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let rounds = args.size(10, 2);
    let cpus = cpu_count();
    println!("pool-map: the pool beside serial, threads and rayon (best of {rounds} rounds)");
    println!("{}", machine());
    if cfg!(debug_assertions) {
        println!("(an unoptimised build: `cargo bench` builds optimised)");
    }
    // The pool first: once rayon's threads exist, a dead worker cannot be replaced
    // (the kit refuses to fork a multithreaded process), and the pool says so.
    let pool = Pool::new(cpus)?;
    pool.map(sum_of_squares, 0..1000)?; // the workers are up and warm
    let rayon = rayon_pool(cpus)?;

    let items: Vec<u64> = (0..args.size(1_000_000, 20_000)).collect();
    let title = format!("100x the items: {} items, x below 1000 each", items.len());
    let wide = compare_all(
        &pool,
        Some(&rayon),
        true,
        sum_of_squares,
        &items,
        rounds,
        &mut |r, way| progress(&format!("100x the items, round {r} of {rounds}: {way}")),
    )?;
    table(&title, &wide, cpus)?;

    let items: Vec<u64> = (0..args.size(10_000, 200)).collect();
    let title = format!(
        "100x the work per item: {} items, x below 100000 each",
        items.len()
    );
    let deep = compare_all(
        &pool,
        Some(&rayon),
        true,
        sum_of_squares_100x,
        &items,
        rounds,
        &mut |r, way| progress(&format!("100x the work, round {r} of {rounds}: {way}")),
    )?;
    table(&title, &deep, cpus)?;

    let tasks = args.size(20_000, 2_000);
    progress(&format!("{tasks} trivial tasks, chunksize 1 and Python's"));
    let cost = task_cost(&pool, tasks, rounds)?;
    progress_done();
    anyhow::ensure!(cost.agree, "the pool's trivial map lost or changed items");
    let us = |t: Duration| t.as_secs_f64() * 1e6;
    println!("\nwhat a task costs: {tasks} trivial items (identity), best of {rounds}");
    println!("  chunksize 1        {:>8.2} us per task", us(cost.one));
    let chunk = format!("chunksize {}", cost.chunksize);
    println!("  {chunk:<18} {:>8.2} us per item", us(cost.chunked));

    core_speeds(&pool, args.size(20_000, 2_000), rounds)?;
    pool.close();
    pool.join()?;
    Ok(())
}

/// One reading's table: each way's best time and its speedup over serial, then the
/// ratios that compare the pool with threads and rayon, and any caveat.
fn table(title: &str, c: &Comparison, cpus: usize) -> anyhow::Result<()> {
    progress_done();
    anyhow::ensure!(c.agree, "{title}: a way did not compute the serial results");
    let secs = |t: Duration| t.as_secs_f64();
    let n = c.workers;
    let (pool_fine, rayon) = (c.pool_fine.unwrap_or(c.pool), c.rayon.unwrap_or(c.threads));
    let rows = [
        ("serial".to_string(), c.serial.wall),
        (format!("pool ({n}), chunksize {}", c.chunksize), c.pool),
        (
            format!("pool ({n}), chunksize {}", c.fine_chunksize),
            pool_fine,
        ),
        (format!("{n} threads"), c.threads),
        (format!("rayon ({n} threads)"), rayon),
    ];
    println!("\n{title}");
    println!("  {:<32} {:>10} {:>9}", "way", "best", "speedup");
    let mut caveats = Vec::new();
    for (way, t) in &rows {
        let x = secs(c.serial.wall) / secs(*t);
        println!("  {way:<32} {:>7.1} ms {x:>8.2}x", secs(*t) * 1e3);
        if way != "serial" {
            caveats.extend(speedup_caveat(x, n, cpus, c.busy));
        }
    }
    println!(
        "  pool / threads {:.3}, pool / rayon {:.3}, finer pool / rayon {:.3}",
        secs(c.pool) / secs(c.threads),
        secs(c.pool) / secs(rayon),
        secs(pool_fine) / secs(rayon)
    );
    for line in conditions(c.busy, n, cpus, caveats) {
        println!("{line}");
    }
    Ok(())
}

/// Are the cores equally fast? Every worker times the same work at the same moment
/// (one task each), and the parent times it alone. On a shared host they often are
/// not, and then a split into equal shares waits for the slowest worker.
fn core_speeds(pool: &Pool, items: u64, rounds: usize) -> anyhow::Result<()> {
    let workers = pool.processes();
    let mut alone = u64::MAX;
    let mut best: BTreeMap<u32, u64> = BTreeMap::new();
    for round in 1..=rounds {
        progress(&format!("each core's speed, round {round} of {rounds}"));
        for (pid, us) in pool.map_chunked(time_work, vec![items; workers], 1)? {
            let b = best.entry(pid).or_insert(u64::MAX);
            *b = (*b).min(us);
        }
        alone = alone.min(time_work(items).1);
    }
    progress_done();
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "\nare the cores equally fast? {items} items on each worker at once, best of {rounds}"
    );
    for (pid, &us) in &best {
        println!("  {:<18} {:>8.1} ms", format!("worker pid {pid}"), ms(us));
    }
    println!("  {:<18} {:>8.1} ms", "the parent alone", ms(alone));
    let slowest = best.values().copied().max().unwrap_or(alone).max(1);
    let ceiling = workers as f64 * alone as f64 / slowest as f64;
    println!("  equal shares (threads, the pool's chunks) can reach at most {ceiling:.2}x");
    println!("  here; work stealing (rayon) can beat that only when the cores differ");
    Ok(())
}
