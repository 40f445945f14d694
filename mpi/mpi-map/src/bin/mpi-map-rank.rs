//! The MPI program of the `mpi-map` lesson: `Pool.map` as scatter, a local map and
//! an ordered gather. `mpirun -n 2 mpi-map-rank` starts it twice; each copy is a
//! rank. Rank 0 holds the items, scatters one contiguous share to every rank
//! (itself included), every rank maps its share, and rank 0 gathers the results in
//! rank order, which is the items' order. Only rank 0 prints.
//!
//! By hand, on this machine or on your hosts:
//! `mpirun -n 2 target/release/mpi-map-rank`,
//! `mpirun --hostfile hosts -n 8 target/release/mpi-map-rank --items 100000`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mpi::datatype::{Partition, PartitionMut};
use mpi::traits::*;
use mpi_map::{ROUNDS, RankDid, Report, Share, Work, checksum, shares};

#[derive(Parser, Debug)]
#[command(about = "The MPI program of the mpi-map lesson (start it with mpirun)")]
struct Args {
    /// Items to map (`range(10000)`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    items: u64,
    /// The work per item: the tutorial's, or 100 times it.
    #[arg(long, value_enum, default_value_t = Work::Tutorial)]
    work: Work,
    /// This rank kills itself (SIGKILL) halfway through its share of the first map.
    #[arg(long)]
    kill_rank: Option<usize>,
}

/// Host names travel as fixed-size byte arrays (a gather wants equal counts).
const HOST: usize = 64;

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    // MPI_Init: from here on this process is one rank of the job.
    let universe = mpi::initialize().context("MPI is already initialised")?;
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let shares = shares(args.items as usize, size);
    let f = args.work.function();

    // The first map: what each rank did, and the list rank 0 gathered.
    let (gathered, local) = map(&world, &shares, f, args.kill_rank);
    let did = whom(&world, shares[rank], local);
    // The timed rounds: from a barrier (every rank ready) to the gather's end.
    let (mut best, mut agree) = (Duration::MAX, true);
    for _ in 0..ROUNDS {
        world.barrier();
        let t = Instant::now();
        let (again, _) = map(&world, &shares, f, None);
        best = best.min(t.elapsed());
        agree &= again == gathered;
    }
    if let (Some(list), Some(ranks)) = (gathered, did) {
        for r in &ranks {
            println!("{r}");
        }
        let items: Vec<u64> = list.iter().step_by(2).copied().collect();
        let values: Vec<u64> = list.iter().skip(1).step_by(2).copied().collect();
        println!("rank 0 gathered the items {}", common::output::List(&items));
        println!("  and their results {}", common::output::List(&values));
        let report = Report {
            ranks,
            gathered: list.len() / 2,
            checksum: checksum(&list),
            best,
            rounds_agree: agree,
        };
        for line in report.closing_lines() {
            println!("{line}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
    // `universe` drops here: MPI_Finalize.
}

/// Scatter the items from rank 0, map this rank's share, gather the results in
/// order on rank 0 (`Some` there, `None` elsewhere): `pool.map(f, items)`. Each
/// result travels with its item, `[x, f(x)]`, so that rank 0 can see the order
/// (the tutorial's `f` gives every item the same value). With the time this rank's
/// local map took.
fn map<C: Communicator>(
    world: &C,
    shares: &[Share],
    f: fn(u64) -> u64,
    kill: Option<usize>,
) -> (Option<Vec<u64>>, Duration) {
    let rank = world.rank() as usize;
    let root = world.process_at_rank(0);
    let counts: Vec<i32> = shares.iter().map(|s| s.count as i32).collect();
    let displs: Vec<i32> = shares.iter().map(|s| s.first as i32).collect();
    let mut mine = vec![0u64; shares[rank].count];
    if rank == 0 {
        // Rank 0: the data lives here, and leaves in one message per rank.
        let items: Vec<u64> = (0..shares.iter().map(|s| s.count as u64).sum()).collect();
        let parts = Partition::new(&items[..], &counts[..], &displs[..]);
        root.scatter_varcount_into_root(&parts, &mut mine[..]);
    } else {
        root.scatter_varcount_into(&mut mine[..]);
    }
    // Every rank: the local map, the part of the work that parallelises.
    let (half, t) = (mine.len() / 2, Instant::now());
    let mut out = Vec::with_capacity(2 * mine.len());
    for (i, &x) in mine.iter().enumerate() {
        if kill == Some(rank) && i == half {
            // A rank dies in the middle of its work, as if the OOM killer chose it.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        out.extend([x, f(x)]);
    }
    let took = t.elapsed();
    if rank == 0 {
        // Two numbers per item on the way back.
        let (counts, displs): (Vec<i32>, Vec<i32>) = shares
            .iter()
            .map(|s| (2 * s.count as i32, 2 * s.first as i32))
            .unzip();
        let mut all = vec![0u64; 2 * shares.iter().map(|s| s.count).sum::<usize>()];
        let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
        root.gather_varcount_into_root(&out[..], &mut parts);
        (Some(all), took)
    } else {
        root.gather_varcount_into(&out[..]);
        (None, took)
    }
}

/// Gather on rank 0 what every rank did: its PID, its host, its share, its time.
fn whom<C: Communicator>(world: &C, share: Share, took: Duration) -> Option<Vec<RankDid>> {
    let root = world.process_at_rank(0);
    let facts = [
        u64::from(std::process::id()),
        share.first as u64,
        share.count as u64,
        took.as_nanos() as u64,
    ];
    let mut host = [0u8; HOST];
    let name = mpi::environment::processor_name().unwrap_or_else(|_| "?".into());
    let n = name.len().min(HOST);
    host[..n].copy_from_slice(&name.as_bytes()[..n]);
    let size = world.size() as usize;
    if world.rank() != 0 {
        root.gather_into(&facts[..]);
        root.gather_into(&host[..]);
        return None;
    }
    let (mut all, mut hosts) = (vec![0u64; 4 * size], vec![0u8; HOST * size]);
    root.gather_into_root(&facts[..], &mut all[..]);
    root.gather_into_root(&host[..], &mut hosts[..]);
    let did = all.chunks(4).zip(hosts.chunks(HOST)).enumerate();
    let did = did.map(|(rank, (f, h))| RankDid {
        rank,
        ranks: size,
        pid: f[0] as u32,
        host: String::from_utf8_lossy(h)
            .trim_end_matches('\0')
            .to_string(),
        share: Share {
            first: f[1] as usize,
            count: f[2] as usize,
        },
        map_time: Duration::from_nanos(f[3]),
    });
    Some(did.collect())
}
