//! # mpi-map: what does Pool.map become when it outgrows one machine?
//!
//! **Question.** How does the pool's `map` run on MPI (scatter, a local map, an
//! ordered gather), what does it cost beside serial and the course's pool, and what
//! happens when a rank dies?
//!
//! **Python twin** (`docs/python/13_mpi_map.py`, run under `mpirun`): the same
//! scatter, map and gather with `mpi4py`'s `comm.scatter` and `comm.gather`. In
//! Rust: rsmpi (the `mpi` crate) over Open MPI; the MPI program is
//! `src/bin/mpi-map-rank.rs`, which this lesson starts with `mpirun`. It runs
//! serial and the course's pool itself, in this process, before and after.
//!
//! **Run.** `scripts/mpi.sh` installs Open MPI, builds and runs it; or, in `mpi/`,
//! `cargo run -p mpi-map --release` (`--help`: `--ranks 2`, `--items 10000`,
//! `--hostfile FILE` to run step 2 on your hosts, `--ascii`). It is not part of the
//! root workspace: `cargo build --workspace` there never needs MPI.
//!
//! **Expected output** (PIDs, host names and times vary; the CPU count decides
//! the ranks of step 2):
//! ```text
//! [1] Pool.map on 2 ranks: scatter, map, gather
//!     mpirun -n 2 ... --bind-to none mpi-map-rank --items 10000
//!     rank 0 of 2: pid 901 on vm, 5000 items from 0, mapped in 3.1 ms
//!     rank 1 of 2: pid 902 on vm, 5000 items from 5000, mapped in 2.5 ms
//!     rank 0 gathered the items [0, 1, 2, 3, 4, 5, ..., 9999] (10000 items)
//!     checksum of the 10000 gathered results: 0x2adacd79095e70c5
//!   ok check: 2 ranks, each a process of its own, one share each, in order
//!   ok check: the list rank 0 gathered equals the serial map, in order
//! [2] N hosts with a hostfile, simulated: 4 ranks on 2 CPUs
//!     hostfile: localhost slots=4
//!     rank 3 of 4: pid 916 on vm, 2500 items from 7500, mapped in 1.2 ms
//!   ok check: 4 ranks, each a process of its own, one share each, in order
//! [3] what it costs: the tutorial's workload, 10000 items
//!     serial                     6.4 ms
//!     Pool(processes=2)          3.5 ms   1.83x
//!     MPI, 2 ranks               3.3 ms   1.94x (scatter, map, gather)
//!     mpirun, start to end     579.9 ms   (MPI's start and end: once per job)
//!   ok check: the pool and MPI gave the serial results
//! [4] a rank dies in the middle of its share: mpirun aborts the whole job
//!     rank 1 raises SIGKILL halfway through its map
//!     mpirun noticed that process rank 1 with PID ...
//!   ok check: the job ended (exit code 137) within 10 s, after 1.4 s
//!   ok check: rank 0 never got its gather: no result at all
//!   ok check: no rank and no daemon of the job left: none
//! [5] the course's pool when a worker dies: the task fails, the pool goes on
//!     get() -> worker pid 905 died (exitcode -9 (killed by SIGKILL)) ...
//!   ok check: that task failed with 'worker died'; the other gave 1
//!   ok check: map after the replacement: [1, 4, 9] (expected [1, 4, 9])
//! ```
//!
//! **Notice.** MPI's map has the pool's shape but not its contract: the ranks are
//! started once per job by `mpirun` (on any host a hostfile names), the data moves
//! in one message per rank, and a rank that dies takes the whole job with it,
//! where the course's pool fails one task and replaces the worker.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::Lesson;
use common::output::{CommonArgs, List, cpu_count};
use mpi_map::{Finished, Launch, Report, Work, checksum, ended, run_mpirun, serial_pairs};
use pool_map::{Pool, compare, kill_mid_task, shown, speedup_caveat, square};

#[derive(Parser, Debug)]
#[command(about = "Pool.map on MPI: scatter, map, gather; beside serial and the course's pool")]
struct Args {
    /// Ranks of steps 1, 3 and 4 (on this machine).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    ranks: u64,
    /// Items of the tutorial's workload (`range(10000)`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    items: u64,
    /// Run step 2 on the hosts of this hostfile (`node1 slots=2` per line), one
    /// rank per slot, instead of simulating one.
    #[arg(long)]
    hostfile: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

/// How long one `mpirun` may take before the lesson stops it.
const LIMIT: Duration = Duration::from_secs(60);

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let mut lesson = Lesson::start(
        "mpi-map",
        "what does Pool.map become when it outgrows one machine?",
        "mpi4py: comm.scatter, a local map, comm.gather (mpirun -n 2)",
        &args.common,
    );
    let ranks = args.ranks as usize;
    let local = Launch {
        ranks,
        hostfile: None,
    };
    // A hostfile of yours is read now, so that a wrong one is an error before any job.
    let yours = args.hostfile.as_ref().map(read_hostfile).transpose()?;
    let first = scatter_map_gather(&mut lesson, &local, args.items)?;
    with_a_hostfile(&mut lesson, args.hostfile.as_ref().zip(yours), args.items)?;
    what_it_costs(&mut lesson, ranks, args.items, &first)?;
    a_rank_dies(&mut lesson, &local, args.items)?;
    a_worker_dies(&mut lesson)?;
    Ok(lesson.finish())
}

/// What one MPI run of the map gave.
struct MpiRun {
    report: Report,
    finished: Finished,
}

fn scatter_map_gather(lesson: &mut Lesson, launch: &Launch, items: u64) -> anyhow::Result<MpiRun> {
    let n = launch.ranks;
    lesson.step(&format!("Pool.map on {n} ranks: scatter, map, gather"));
    map_on_mpi(lesson, launch, items)
}

/// The text of a hostfile, which must name at least one slot.
fn read_hostfile(file: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the hostfile {}", file.display()))?;
    if slots(&text) == 0 {
        bail!("the hostfile {} names no host", file.display());
    }
    Ok(text)
}

fn with_a_hostfile(
    lesson: &mut Lesson,
    given: Option<(&PathBuf, String)>,
    items: u64,
) -> anyhow::Result<()> {
    let cpus = cpu_count();
    let yours = given.is_some();
    let (file, _guard, text) = match given {
        Some((file, text)) => (file.clone(), None, text),
        None => {
            // One line per machine, `slots` ranks on each; here one machine with
            // twice as many slots as cores, as a stand-in for two hosts. In memory
            // (a memfd that mpirun opens by its /proc path): a killed lesson
            // leaves no file behind.
            let memfd =
                mpi_map::memory_file("hostfile", &format!("localhost slots={}\n", 2 * cpus))?;
            let file = PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                memfd.as_raw_fd()
            ));
            let text = read_hostfile(&file)?;
            (file, Some(memfd), text)
        }
    };
    let ranks = slots(&text);
    let title = match yours {
        true => format!("N hosts with a hostfile: {ranks} ranks"),
        false => format!("N hosts with a hostfile, simulated: {ranks} ranks on {cpus} CPUs"),
    };
    lesson.step(&title);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lesson.say(format!("hostfile: {line}"));
    }
    let launch = Launch {
        ranks,
        hostfile: Some(file),
    };
    map_on_mpi(lesson, &launch, items)?;
    Ok(())
}

/// Run the MPI program on `launch`, show what rank 0 printed, check it.
fn map_on_mpi(lesson: &mut Lesson, launch: &Launch, items: u64) -> anyhow::Result<MpiRun> {
    let args = vec!["--items".to_string(), items.to_string()];
    let (program, shown) = rank_program()?;
    lesson.say(format!(
        "mpirun {}",
        launch.mpirun_args(&shown, &args).join(" ")
    ));
    let finished = run_mpirun(&launch.mpirun_args(&program, &args), LIMIT)?;
    for line in finished.stdout.lines() {
        lesson.say(line);
    }
    let Some(report) = Report::parse(&finished.stdout).filter(|_| finished.status.success()) else {
        let said = finished.stderr.trim_end();
        let said = if said.is_empty() {
            "(mpirun said nothing)"
        } else {
            said
        };
        bail!("the MPI run failed ({}):\n{said}", ended(finished.status));
    };
    let n = launch.ranks;
    // A process is a (host, PID) pair: two hosts may give two ranks one PID.
    let mut pids: Vec<(&str, u32)> = report
        .ranks
        .iter()
        .map(|r| (r.host.as_str(), r.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let expected = mpi_map::shares(items as usize, n);
    let in_order = report.ranks.iter().enumerate().all(|(i, r)| r.rank == i)
        && report.ranks.iter().map(|r| r.share).eq(expected);
    let claim = format!("{n} ranks, each a process of its own, one share each, in order");
    lesson.check(
        claim,
        report.ranks.len() == n && pids.len() == n && in_order,
    );
    let serial = checksum(&serial_pairs(Work::Tutorial.function(), items));
    let held = report.checksum == serial && report.gathered == items as usize;
    let claim = "the list rank 0 gathered equals the serial map, in order";
    lesson.check(claim, held && report.rounds_agree);
    Ok(MpiRun { report, finished })
}

fn what_it_costs(lesson: &mut Lesson, n: usize, items: u64, mpi: &MpiRun) -> anyhow::Result<()> {
    lesson.step(&format!(
        "what it costs: the tutorial's workload, {items} items"
    ));
    let pool = Pool::new(n)?;
    let input: Vec<u64> = (0..items).collect();
    let work = compare(&pool, Work::Tutorial.function(), &input, mpi_map::ROUNDS)?;
    pool.close();
    pool.join()?;
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    let x = |t: Duration| work.serial.wall.as_secs_f64() / t.as_secs_f64();
    let (pool_t, mpi_t) = (work.pool, mpi.report.best);
    lesson.say(format!("{:<22} {:>7.1} ms", "serial", ms(work.serial.wall)));
    let pool_row = format!("Pool(processes={n})");
    lesson.say(format!(
        "{pool_row:<22} {:>7.1} ms   {:.2}x",
        ms(pool_t),
        x(pool_t)
    ));
    let mpi_row = format!("MPI, {n} ranks");
    let (t, s) = (ms(mpi_t), x(mpi_t));
    lesson.say(format!(
        "{mpi_row:<22} {t:>7.1} ms   {s:.2}x (scatter, map, gather)"
    ));
    let whole = ms(mpi.finished.wall);
    let row = "mpirun, start to end";
    lesson.say(format!(
        "{row:<22} {whole:>7.1} ms   (MPI's start and end: once per job)"
    ));
    let mut caveats: Vec<String> = [x(pool_t), x(mpi_t)]
        .into_iter()
        .filter_map(|s| speedup_caveat(s, n, cpu_count(), work.busy))
        .collect();
    caveats.dedup();
    for why in caveats {
        lesson.say(format!("  {why}"));
    }
    lesson.say("(best of 3 each; serial and the pool in this process, MPI in the job)");
    let agree = work.agree && mpi.report.rounds_agree;
    lesson.check("the pool and MPI gave the serial results", agree);
    Ok(())
}

fn a_rank_dies(lesson: &mut Lesson, launch: &Launch, items: u64) -> anyhow::Result<()> {
    lesson.step("a rank dies in the middle of its share: mpirun aborts the whole job");
    // The last rank that has items to map.
    let shares = mpi_map::shares(items as usize, launch.ranks);
    let victim = shares.iter().rposition(|s| s.count > 0).unwrap_or(0);
    let args = [
        "--items",
        &items.to_string(),
        "--kill-rank",
        &victim.to_string(),
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (program, _) = rank_program()?;
    lesson.say(format!(
        "rank {victim} raises SIGKILL halfway through its map"
    ));
    let done = run_mpirun(&launch.mpirun_args(&program, &args), LIMIT)?;
    let said = done.stderr.lines().find(|l| l.contains("exited on signal"));
    lesson.say(said.map_or("(mpirun said nothing about it)", str::trim));
    let (how, secs) = (ended(done.status), done.wall.as_secs_f64());
    let claim = format!("the job ended ({how}) within 10 s, after {secs:.1} s");
    let quick = done.wall < Duration::from_secs(10);
    lesson.check(claim, !done.status.success() && quick && said.is_some());
    let gathered = Report::parse(&done.stdout).is_some();
    lesson.check("rank 0 never got its gather: no result at all", !gathered);
    let left = List(&done.left);
    let claim = format!("no rank and no daemon of the job left: {}", none_or(left));
    lesson.check(claim, done.left.is_empty());
    Ok(())
}

fn a_worker_dies(lesson: &mut Lesson) -> anyhow::Result<()> {
    lesson.step("the course's pool when a worker dies: the task fails, the pool goes on");
    let pool = Pool::new(2)?;
    // Both workers get a 300 ms task; the one running slow_square(0) is SIGKILLed.
    let k = kill_mid_task(&pool)?;
    let victim = k.victim;
    lesson.say(format!(
        "killed worker pid {victim} while it ran slow_square(0)"
    ));
    lesson.say(format!("get() -> {}", shown(&k.first)));
    let claim = "that task failed with 'worker died'; the other gave 1";
    lesson.check(claim, k.as_python_would_wish(2));
    lesson.say(format!("workers replaced: {}", pool.replaced()));
    let again = pool.map(square, vec![1, 2, 3])?;
    lesson.check_eq("map after the replacement", List(&again), List(&[1, 4, 9]));
    pool.close();
    pool.join()?;
    Ok(())
}

/// The MPI program beside this binary, and the name to show for it.
fn rank_program() -> anyhow::Result<(String, String)> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let program = me.with_file_name("mpi-map-rank");
    if !program.is_file() {
        bail!(
            "{} is missing: build both programs (cargo build --release, in mpi/)",
            program.display()
        );
    }
    Ok((program.display().to_string(), "mpi-map-rank".into()))
}

/// The ranks a hostfile offers: the sum of its `slots=N` (1 for a line without).
fn slots(hostfile: &str) -> usize {
    let lines = hostfile
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim());
    let slots = lines.filter(|l| !l.is_empty()).map(|l| {
        let n = l.split_whitespace().find_map(|w| w.strip_prefix("slots="));
        n.and_then(|n| n.parse().ok()).unwrap_or(1)
    });
    slots.sum::<usize>()
}

/// `none`, or the list.
fn none_or(list: List<'_, i32>) -> String {
    if list.0.is_empty() {
        "none".into()
    } else {
        list.to_string()
    }
}
