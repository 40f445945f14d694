//! What the lock costs: two processes increment one shared counter, each `n` times,
//! under the course's lock (a robust, process-shared pthread mutex beside the
//! counter), and then with one atomic `fetch_add` and no lock; one process alone
//! under the lock for the uncontended cost. Reported as ns per increment, the
//! median of a few rounds (the fastest round of a contended count is the one in
//! which the processes happened not to overlap), with the share of the time both
//! were counting, and as ratios measured in this run. When `python3` is at hand, the
//! Python twin's `--bench` (`multiprocessing.Lock` + `Value`, two processes) runs
//! too, so its figure stands beside ours from the same machine.
//!
//! `cargo bench -p mp-lock-bank` (2,000,000 increments per process, median of 5);
//! `cargo bench -p mp-lock-bank -- --quick` (a smoke run).

use std::path::Path;
use std::process::{Command, Stdio};

use common::bench::{BenchArgs, machine, progress, progress_done};
use mp_lock_bank::{Way, count_increments};

/// One row of the table.
struct Row {
    name: &'static str,
    procs: usize,
    way: Way,
}

const ROWS: [Row; 3] = [
    Row {
        name: "course lock, 2 processes (contended)",
        procs: 2,
        way: Way::Locked,
    },
    Row {
        name: "fetch_add, 2 processes (contended)",
        procs: 2,
        way: Way::FetchAdd,
    },
    Row {
        name: "course lock, 1 process (uncontended)",
        procs: 1,
        way: Way::Locked,
    },
];

fn main() -> std::process::ExitCode {
    common::bench::main(bench)
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let n: u64 = args.size(2_000_000, 20_000);
    let rounds = args.size(5, 1);
    println!("mp-lock-bank: what the lock costs, in ns per increment of one counter");
    println!("{}", machine());
    println!("{n} increments per process, median of {rounds} rounds\n");
    println!("  {:<38} {:>8} {:>9}", "way", "ns/incr", "together");
    let mut ns = Vec::new();
    for row in &ROWS {
        let mut runs = Vec::new();
        for round in 1..=rounds {
            progress(&format!("{} (round {round} of {rounds})", row.name));
            let counted = count_increments(row.procs, n, row.way)?;
            let expected = (row.procs as u64 * n) as i64;
            anyhow::ensure!(
                counted.total == expected,
                "{}: counted {} of {expected} increments",
                row.name,
                counted.total
            );
            runs.push(counted);
        }
        progress_done();
        runs.sort_by(|a, b| a.ns_per_increment().total_cmp(&b.ns_per_increment()));
        let median = runs[runs.len() / 2];
        let (per, together) = (median.ns_per_increment(), median.together * 100.0);
        let together = match row.procs {
            1 => "-".to_string(),
            _ => format!("{together:.0}%"),
        };
        println!("  {:<38} {per:>8.1} {together:>9}", row.name);
        ns.push(per);
    }
    let python = python_twin(if args.quick { 2_000 } else { 200_000 });
    match &python {
        Ok(py) => println!("  {:<38} {py:>8.1}", "Python mp.Lock + Value, 2 processes"),
        Err(why) => println!("  (Python row skipped: {why})"),
    }
    println!(
        "\n  same run: lock / fetch_add = {:.1}x; uncontended / contended = {:.2}x",
        ns[0] / ns[1],
        ns[2] / ns[0]
    );
    if let Ok(py) = &python {
        println!(
            "  Python's locked increment / the course's = {:.1}x",
            py / ns[0]
        );
    }
    if args.quick {
        println!("  (--quick: a smoke run; the figures are not measurements)");
    }
    Ok(())
}

/// ns per locked increment from the Python twin's `--bench`, on this machine now.
fn python_twin(n: u64) -> Result<f64, String> {
    let twin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/python/09_mp_lock_bank.py");
    progress(&format!("the Python twin, {n} increments per process"));
    let out = Command::new("python3")
        .arg(&twin)
        .args(["--bench", "--increments", &n.to_string()])
        .stdin(Stdio::null())
        .output();
    progress_done();
    let out = out.map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("the twin failed: {}", out.status));
    }
    // The line: `locked, 2 processes: 736.2 ns per increment (...)`.
    text.lines()
        .find_map(|l| l.strip_prefix("locked, 2 processes:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no 'locked, 2 processes:' line from the twin".to_string())
}
