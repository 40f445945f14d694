//! The plumbing of the threads-square-cube lesson, out of the story's way: the two
//! operations, the timeline with a lane per worker, and starting a thread so that
//! a refusal is an error instead of a panic. `src/main.rs` tells the story.

use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::Duration;

use anyhow::{Context, anyhow};
use common::timeline::{Lane, Timeline};

/// What a worker computes for each number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Square,
    Cube,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Square => "square",
            Op::Cube => "cube",
        }
    }

    /// The caller checks first that the cube fits (`common::output::check_numbers`).
    pub fn apply(self, n: i64) -> i64 {
        match self {
            Op::Square => n * n,
            Op::Cube => n * n * n,
        }
    }

    pub fn all(self, numbers: &[i64]) -> Vec<i64> {
        numbers.iter().map(|&n| self.apply(n)).collect()
    }
}

/// The two results, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub square: Vec<i64>,
    pub cube: Vec<i64>,
}

impl Pair {
    pub fn of(numbers: &[i64]) -> Pair {
        Pair {
            square: Op::Square.all(numbers),
            cube: Op::Cube.all(numbers),
        }
    }
}

/// A timeline with a lane per worker, and one for `main`, which waits in join.
#[derive(Debug)]
pub struct Chart {
    pub tl: Timeline,
    pub square: Lane,
    pub cube: Lane,
    pub main: Lane,
}

impl Chart {
    pub fn new() -> anyhow::Result<Chart> {
        let mut tl = Timeline::new(256)?;
        let (square, cube, main) = (tl.lane("square"), tl.lane("cube"), tl.lane("main"));
        Ok(Chart {
            tl,
            square,
            cube,
            main,
        })
    }

    /// The lane of a worker.
    pub fn lane(&self, op: Op) -> Lane {
        match op {
            Op::Square => self.square,
            Op::Cube => self.cube,
        }
    }

    /// PID and TID that recorded a worker's spans: its own word for who it is.
    pub fn who(&self, op: Op) -> (i32, i32) {
        let spans = self.tl.lane_spans(self.lane(op));
        spans.first().map_or((0, 0), |s| (s.pid, s.tid))
    }

    /// How long the two workers were both busy (waiting or computing).
    pub fn overlap(&self) -> Duration {
        self.tl.overlap(self.square, self.cube)
    }
}

/// `threading.Thread(name=..., target=f).start()`. A thread the system refuses
/// (`ulimit -u`, `ulimit -v`) is an error here, where `thread::spawn` panics:
/// `cannot start a thread: Resource temporarily unavailable (os error 11)`.
pub fn start<'s, T: Send + 's>(
    s: &'s Scope<'s, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 's,
) -> anyhow::Result<ScopedJoinHandle<'s, T>> {
    let builder = thread::Builder::new().name(name.to_string());
    builder.spawn_scoped(s, f).context("cannot start a thread")
}

/// `Thread.join()`, with the thread's result; a panic in it becomes an error.
pub fn join<T>(h: ScopedJoinHandle<'_, T>) -> anyhow::Result<T> {
    h.join().map_err(|_| anyhow!("a worker thread panicked"))
}

/// `wall 0.801 s, ideal 0.800 s (+1.3 ms)`.
pub fn wall_line(wall: Duration, ideal: Duration) -> String {
    let diff = wall.as_secs_f64() - ideal.as_secs_f64();
    format!(
        "wall {:.3} s, ideal {:.3} s ({:+.1} ms)",
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        diff * 1e3
    )
}

/// `--delay-ms`: 10 to 2000. Starting a worker takes up to a millisecond; below 10
/// ms per item, whether the two workers "waited at the same time" would depend on
/// that rather than on the waits.
pub fn parse_delay(s: &str) -> Result<u64, String> {
    let ms: u64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(10..=2000).contains(&ms) {
        return Err(format!(
            "the wait per item must be 10 to 2000 ms, got {ms} (shorter waits \
             leave nothing to overlap: a worker takes up to 1 ms to start)"
        ));
    }
    Ok(ms)
}
