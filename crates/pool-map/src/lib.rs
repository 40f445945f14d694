//! The process pool of the `pool-map` lesson ([`Pool`], in `pool.rs`), and the
//! functions the lesson and its tests give it. A pool takes plain `fn` items (or
//! closures that capture nothing): see `pool.rs` for why a function pointer is
//! enough after `fork`.

mod pool;

pub use pool::{AsyncResult, Imap, Pool, PoolError, default_chunksize};

use std::hint::black_box;

/// The seeds' `square`.
pub fn square(x: u64) -> u64 {
    x * x
}

/// `square`, and the PID of the worker that computed it.
pub fn square_where(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// The seeds' benchmark function: the sum of `x * x` for `x` in `0..1000`.
///
/// Every step goes through `black_box`: without it LLVM replaces the loop with the
/// closed form `(n-1)n(2n-1)/6` (and then hoists it out of the map, since it does not
/// depend on the argument), and "serial" would take no time at all. The work must
/// be real for the comparison to mean anything.
pub fn sum_of_squares(n: u64) -> u64 {
    squares_below(n, 1000)
}

/// The same with 100 times the work per item: `x` in `0..100_000`.
pub fn sum_of_squares_100x(n: u64) -> u64 {
    squares_below(n, 100_000)
}

fn squares_below(n: u64, limit: u64) -> u64 {
    black_box(n);
    let mut sum = 0u64;
    for x in 0..limit {
        let x = black_box(x);
        sum = black_box(sum.wrapping_add(x * x));
    }
    sum
}

/// `sum_of_squares` for every item of `0..items`, timed where it runs: the
/// process's PID and the time in microseconds. Run on every worker at once, it
/// shows whether the cores are equally fast.
pub fn time_work(items: u64) -> (u32, u64) {
    let start = std::time::Instant::now();
    let sum = (0..items).fold(0u64, |sum, n| sum.wrapping_add(sum_of_squares(n)));
    black_box(sum);
    (std::process::id(), start.elapsed().as_micros() as u64)
}

/// Almost no work: what a task costs when the work is free.
pub fn identity(x: u64) -> u64 {
    x
}

/// Sleeps, then squares: a task long enough to kill its worker in the middle of.
pub fn slow_square(x: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(300));
    x * x
}

/// Panics on 13, like a task that raises an exception in Python.
pub fn unlucky(x: u64) -> u64 {
    assert!(x != 13, "13 is unlucky");
    x
}

/// The serial baseline: `[f(x) for x in items]`.
pub fn serial(f: fn(u64) -> u64, items: &[u64]) -> Vec<u64> {
    items.iter().map(|&x| f(x)).collect()
}

/// `threads` scoped threads, each mapping a contiguous share.
pub fn scoped_threads(f: fn(u64) -> u64, items: &[u64], threads: usize) -> Vec<u64> {
    let share = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(share)
            .map(|part| s.spawn(move || part.iter().map(|&x| f(x)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    })
}
