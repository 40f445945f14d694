//! # shared-value-array: how can a child hand numbers back through memory?
//!
//! **Question.** After `fork`, memory is copied. How do `multiprocessing.Value` and
//! `Array` let a child write numbers the parent can read, and what goes wrong?
//!
//! **Python twin** (`docs/python/03_shared_value_array.py`): `Array('i', 3)` and
//! `Value('d', 0.0)` passed to a `Process` that writes the squares of `[2, 3, 8]`
//! and 5.67; then `counter.value += 1` from two processes, with and without
//! `counter.get_lock()`. In Rust: `common::shm::{Array, Value}` on a `memfd` mapped
//! `MAP_SHARED`, each element an atomic, each with a robust process-shared lock.
//!
//! **Run.** `cargo run -p shared-value-array` (`--help`: `--numbers 2,3,8
//! --value 5.67 --array-len N --increments 100000 --ascii`).
//!
//! **Expected output** (addresses vary; the lost count varies from run to run):
//! ```text
//! [1] a child writes into Array('i', 3) and Value('d') in shared memory
//!     parent reads: array [4, 9, 64], value 5.67
//!     7f2a1c5e4000-7f2a1c5e5000 rw-s 00000000 00:01 2051 /memfd:course-shm (deleted)
//! [2] the trap: the same writes into memmap2's map_anon, which is private
//!     parent reads: array [0, 0, 0]
//!     7f2a1c5e3000-7f2a1c5e4000 rw-p 00000000 00:00 0
//! [3] counter.value += 1 from two processes, 100000 times each
//!     without the lock: 131072 (expected 200000): lost 68928 updates
//!     with get_lock() held across the += : 200000 (expected 200000)
//! ```
//!
//! **Notice.** `rw-s` versus `rw-p` in `/proc/self/maps`: *s*hared versus *p*rivate
//! (copy-on-write). The shared region is at the same address in both processes and
//! also the same memory; the private one only the same address. Each `get` and
//! `set` is indivisible, but `set(get() + 1)` is two steps, and another process can
//! write in between.

use common::output::List;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::output::{CommonArgs, check_numbers};
use common::shm::{Array, Gate, Value, maps_line};
use common::{Lesson, fork};
use memmap2::MmapMut;

#[derive(Parser, Debug)]
#[command(about = "multiprocessing.Value and Array in real shared memory")]
struct Args {
    /// The numbers whose squares the child writes into the Array.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,3,8",
        allow_negative_numbers = true
    )]
    numbers: Vec<i32>,
    /// The float the child writes into the Value('d').
    #[arg(long, default_value_t = 5.67, allow_negative_numbers = true)]
    value: f64,
    /// Length of the Array('i', N) (default: as many as --numbers).
    #[arg(long)]
    array_len: Option<usize>,
    /// How many times each of the two processes does `counter += 1`.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    increments: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The longest array the lesson copies into a Vec and prints.
const MAX_SHOWN: usize = 1 << 20;

fn main() -> std::process::ExitCode {
    common::output::main(run)
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let numbers = &args.numbers;
    let len = args.array_len.unwrap_or(numbers.len());
    check_numbers(numbers, 1000, 2).map_err(anyhow::Error::msg)?;
    if len < numbers.len() {
        bail!(
            "--array-len {len} cannot hold the {} squares of --numbers",
            numbers.len()
        );
    }
    let squares: Vec<i32> = numbers.iter().map(|n| n * n).collect();

    let mut lesson = Lesson::start(
        "shared-value-array",
        "how does a child write numbers the parent can read?",
        "multiprocessing.Value('d'), Array('i', n), get_lock()",
        &args.common,
    );

    lesson.step(&format!(
        "a child writes into Array('i', {len}) and Value('d') in shared memory"
    ));
    // Made before the fork, so the child inherits the very same MAP_SHARED mapping.
    let array = Array::<i32>::new(len)?;
    if len > MAX_SHOWN {
        // It fits in memory, but this lesson copies and prints it; keep it readable.
        bail!(
            "--array-len {len}: Array('i', {len}) fits, but this lesson shows at most {MAX_SHOWN}"
        );
    }
    let mut expected = squares.clone();
    expected.resize(len, 0); // only now: the Array proved that `len` fits in memory
    let value = Value::<f64>::new(0.0)?;
    let mut child = fork(|| {
        // Child: writes go to the shared pages, which the parent maps too.
        for (i, &sq) in squares.iter().enumerate() {
            array.set(i, sq);
        }
        value.set(args.value);
    })
    .context("forking the writer")?;
    let exit = child.join()?;
    lesson.say(format!("child pid {} ended with {exit}", child.pid()));
    lesson.say(format!(
        "parent reads: array {:?}, value {}",
        array.to_vec(),
        value.get()
    ));
    let shared_map = array.region().maps_line().unwrap_or_default();
    lesson.say(&shared_map);
    lesson.check_eq(
        "Array read by the parent",
        List(&array.to_vec()),
        List(&expected),
    );
    lesson.check_eq("Value read by the parent", value.get(), args.value);
    lesson.check(
        format!("the mapping is shared (rw-s): {shared_map}"),
        shared_map.contains(" rw-s "),
    );

    lesson.step("the trap: the same writes into memmap2's map_anon, which is private");
    // MmapMut::map_anon is MAP_PRIVATE | MAP_ANONYMOUS (memmap2 >= 0.2): after fork,
    // a write copies the page for the writer. Old `memmap` code shared it; this does not.
    let mut private = MmapMut::map_anon(len * 4).context("map_anon")?;
    let mut child = fork(|| {
        // Child: a private copy-on-write mapping; this is our own copy, so a plain
        // `&mut` is fine here, and invisible to the parent.
        for (i, sq) in squares.iter().enumerate() {
            private[i * 4..i * 4 + 4].copy_from_slice(&sq.to_ne_bytes());
        }
    })
    .context("forking the writer")?;
    child.join()?;
    let seen: Vec<i32> = private
        .chunks_exact(4)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let private_map = maps_line(private.as_ptr()).unwrap_or_default();
    lesson.say(format!("parent reads: array {seen:?}"));
    lesson.say(&private_map);
    lesson.check_eq(
        "map_anon region read by the parent",
        List(&seen),
        List(&vec![0; len]),
    );
    lesson.check(
        format!("the mapping is private (rw-p): {private_map}"),
        private_map.contains(" rw-p "),
    );

    lesson.step(&format!(
        "counter.value += 1 from two processes, {} times each",
        args.increments
    ));
    let target = 2 * args.increments as i64;
    let without = race(args.increments, false)?;
    lesson.say(format!("without the lock: {without} (expected {target})"));
    if without == target {
        lesson.say(
            "no update was lost this time: the race is real but needs both sides in the window",
        );
    } else {
        lesson.broken(format!(
            "lost {} updates: v.set(v.get() + 1) is a read, then a write",
            target - without
        ));
    }
    let with = race(args.increments, true)?;
    lesson.say(format!(
        "with get_lock() held across the += : {with} (expected {target})"
    ));
    lesson.check_eq(
        "counter with the lock held across get and set",
        with,
        target,
    );

    Ok(lesson.finish())
}

/// Two processes each add 1 to a shared `Value('q')` `n` times: `v.set(v.get() + 1)`,
/// with or without holding `v.get_lock()` across it. Returns the final value.
fn race(n: u64, locked: bool) -> anyhow::Result<i64> {
    let counter = Value::<i64>::new(0)?;
    let go = Gate::new()?;
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(fork(|| {
            // Child: start together with the other one, so the two really overlap.
            if !go.wait(Duration::from_secs(10)) {
                return 2;
            }
            for _ in 0..n {
                if locked {
                    let Ok(_guard) = counter.get_lock().lock() else {
                        return 3;
                    };
                    counter.set(counter.get() + 1);
                } else {
                    counter.set(counter.get() + 1);
                }
            }
            0
        })?);
    }
    go.open();
    for c in &mut children {
        let exit = c.join()?;
        if !exit.success() {
            bail!("an incrementing child failed: {exit}");
        }
    }
    Ok(counter.get())
}
