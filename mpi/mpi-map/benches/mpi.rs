//! Serial, the course's pool and MPI on the same machine and the same work: the
//! tutorial's workload (`sum(x*x for x in range(1000))` per item) scaled 100x in
//! the pool benchmark's two readings: 100x the items (1,000,000 items), and 100x
//! the work per item (`x` below 100,000, 10,000 items). Best of 10 interleaved
//! rounds: each round times serial and the pool here, then starts one `mpirun` job
//! whose rank 0 times its best of 3 maps (scatter, map, gather, after MPI's start),
//! so every ratio comes from one run. The whole job's time, start to end, is shown
//! beside it: what a job pays once, whatever it maps.
//!
//! In `mpi/`: `cargo bench` (about two minutes on 2 cores), or
//! `cargo bench -- --quick` (small: a smoke run). `scripts/mpi.sh --bench` builds
//! and runs it.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::bench::{BenchArgs, machine, progress, progress_done};
use common::output::cpu_count;
use mpi_map::{Launch, ROUNDS, Report, Work, checksum, ended, run_mpirun};
use pool_map::{
    Busy, Pool, conditions, cpu_pressure, default_chunksize, serial, speedup_caveat, timed,
};

const RANK: &str = env!("CARGO_BIN_EXE_mpi-map-rank");

fn main() -> std::process::ExitCode {
    common::bench::main(bench)
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let rounds = args.size(10, 2);
    let n = cpu_count();
    println!("mpi-map: serial, the course's pool and MPI (best of {rounds} rounds)");
    println!("{}", machine());
    if cfg!(debug_assertions) {
        println!("(an unoptimised build: `cargo bench` builds optimised)");
    }
    let pool = Pool::new(n)?;
    pool.map(Work::Tutorial.function(), 0..1000)?; // the workers are up and warm
    let readings = [
        (
            "100x the items",
            args.size(1_000_000, 20_000),
            Work::Tutorial,
        ),
        ("100x the work per item", args.size(10_000, 200), Work::Deep),
    ];
    for (name, items, work) in readings {
        let title = match work {
            Work::Tutorial => format!("{name}: {items} items, x below 1000 each"),
            Work::Deep => format!("{name}: {items} items, x below 100000 each"),
        };
        let m = measure(&pool, name, items, work, rounds)?;
        table(&title, &m, n);
    }
    pool.close();
    pool.join()?;
    Ok(())
}

/// Each way's best time over interleaved rounds.
struct Measured {
    ranks: usize,
    serial: Duration,
    pool: Duration,
    chunksize: usize,
    mpi: Duration,
    mpirun: Duration,
    busy: Busy,
}

fn measure(
    pool: &Pool,
    name: &str,
    items: u64,
    work: Work,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let f = work.function();
    let input: Vec<u64> = (0..items).collect();
    let ranks = pool.processes();
    let chunksize = default_chunksize(input.len(), ranks).max(1);
    let launch = Launch {
        ranks,
        hostfile: None,
    };
    let mpi_args = [
        "--items".into(),
        items.to_string(),
        "--work".into(),
        work.flag().into(),
    ];
    let mpirun_args = launch.mpirun_args(RANK, &mpi_args);
    let slowest = Duration::MAX;
    let mut m = Measured {
        ranks,
        serial: slowest,
        pool: slowest,
        chunksize,
        mpi: slowest,
        mpirun: slowest,
        busy: Busy {
            serial_share: 1.0,
            pressure: None,
        },
    };
    let mut expect = None;
    let (start, waited) = (Instant::now(), cpu_pressure());
    let mut serial_cpu = Duration::ZERO;
    for round in 1..=rounds {
        progress(&format!("{name}, round {round} of {rounds}: serial"));
        let (t, out) = timed(|| serial(f, &input));
        if t.wall < m.serial {
            (m.serial, serial_cpu) = (t.wall, t.cpu);
        }
        let expect = expect.get_or_insert_with(|| {
            let pairs: Vec<u64> = input.iter().zip(&out).flat_map(|(&x, &y)| [x, y]).collect();
            (out, checksum(&pairs))
        });
        progress(&format!("{name}, round {round} of {rounds}: pool"));
        let (t, out) = timed(|| pool.map_chunked(f, input.iter().copied(), chunksize));
        m.pool = m.pool.min(t.wall);
        ensure!(
            out.context("the pool's run failed")? == expect.0,
            "the pool's list differs"
        );
        progress(&format!(
            "{name}, round {round} of {rounds}: mpirun -n {ranks}"
        ));
        let done = run_mpirun(&mpirun_args, Duration::from_secs(300))?;
        let report = Report::parse(&done.stdout).filter(|_| done.status.success());
        let report = report.with_context(|| {
            format!(
                "the MPI run failed ({}):\n{}",
                ended(done.status),
                done.stderr
            )
        })?;
        ensure!(
            report.checksum == expect.1 && report.rounds_agree,
            "MPI's list differs"
        );
        ensure!(done.left.is_empty(), "the MPI job left processes behind");
        m.mpi = m.mpi.min(report.best);
        m.mpirun = m.mpirun.min(done.wall);
    }
    progress_done();
    if m.serial >= Duration::from_millis(5) {
        m.busy.serial_share = serial_cpu.as_secs_f64() / m.serial.as_secs_f64();
    }
    m.busy.pressure = cpu_pressure()
        .zip(waited)
        .map(|(end, begin)| end.saturating_sub(begin).as_secs_f64())
        .map(|w| w / start.elapsed().as_secs_f64().max(1e-9));
    Ok(m)
}

fn table(title: &str, m: &Measured, cpus: usize) {
    let secs = |t: Duration| t.as_secs_f64();
    let n = m.ranks;
    println!("\n{title}");
    println!("  {:<34} {:>10} {:>9}", "way", "best", "speedup");
    let rows = [
        ("serial".to_string(), m.serial),
        (format!("pool ({n}), chunksize {}", m.chunksize), m.pool),
        (format!("MPI, {n} ranks (best of {ROUNDS} per job)"), m.mpi),
    ];
    let mut caveats = Vec::new();
    for (way, t) in &rows {
        let x = secs(m.serial) / secs(*t);
        println!("  {way:<34} {:>7.1} ms {x:>8.2}x", secs(*t) * 1e3);
        if way != "serial" {
            caveats.extend(speedup_caveat(x, n, cpus, m.busy));
        }
    }
    let whole = secs(m.mpirun) * 1e3;
    println!("  {:<34} {whole:>7.1} ms", "mpirun, start to end (one job)");
    println!("  MPI / pool {:.3}", secs(m.mpi) / secs(m.pool));
    for line in conditions(m.busy, n, cpus, caveats) {
        println!("{line}");
    }
}
