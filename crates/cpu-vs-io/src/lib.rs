//! How to read a speedup honestly, out of the cpu-vs-io story's way.
//!
//! A speedup is one wall time divided by another, and the machine's other programs
//! take part in both. The CPU time of a run (`getrusage`) says how many cores it
//! really got: `CPU time / wall time`. With it, [`reading`] tells a busy machine
//! from a slow program, and says why a speedup above the ideal is not magic.
//! Also here: the CPU-bound loop, its calibration, and the CPU time itself.

use std::time::{Duration, Instant};

use common::output::List;
use nix::sys::resource::{UsageWho, getrusage};

/// How far above the ideal a speedup may be and still be called noise (5%).
pub const NOISE: f64 = 0.05;

/// What a run of the tasks took: wall time, and CPU time (user + system) of the
/// workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub wall: Duration,
    pub cpu: Duration,
}

impl Sample {
    /// How many cores were busy on average: CPU time / wall time.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// How many times faster than `serial`.
    pub fn speedup(&self, serial: &Sample) -> f64 {
        serial.wall.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The kind of work: computing, or waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Cpu,
    Io,
}

/// The serial run of CPU-bound work should keep one core busy. Less means other
/// programs took the core from it: every speedup of this step is then suspect.
pub fn serial_was_starved(bound: Bound, serial: &Sample) -> Option<String> {
    (bound == Bound::Cpu && serial.cores() < 0.9).then(|| {
        format!(
            "the machine is busy: the serial run got {:.2} of a core, not 1 \
             (other programs ran), so every speedup here is measured against a \
             slow baseline",
            serial.cores()
        )
    })
}

/// A sentence about a parallel run's speedup when it is not simply close to
/// `ideal` (the cores for computing, the tasks for waiting), or `None` when it
/// is. `serial_ideal` is the serial run's wall time on a quiet machine (tasks x
/// wait, for waiting).
pub fn reading(
    bound: Bound,
    name: &str,
    serial: &Sample,
    run: &Sample,
    ideal: f64,
    serial_ideal: Duration,
) -> Option<String> {
    let speedup = run.speedup(serial);
    let head = format!("{name}: {speedup:.2}x");
    // CPU time of the same work, split versus serial: below 1, the cores ran faster.
    let cpu_ratio = run.cpu.as_secs_f64() / serial.cpu.as_secs_f64().max(1e-9);
    let cpu = bound == Bound::Cpu;
    let above = speedup / ideal - 1.0;
    Some(if above > NOISE {
        if cpu && serial.cores() < 0.9 {
            format!(
                "{head} is more than the ideal: the serial run got only {:.2} of a \
                 core, so it is the baseline that is slow",
                serial.cores()
            )
        } else if cpu && cpu_ratio < 0.95 {
            format!(
                "{head} is more than the ideal: the same work took {:.0}% less CPU \
                 time than serially, so the cores ran faster in this run (clocks \
                 change with load and heat; other programs share the caches)",
                100.0 * (1.0 - cpu_ratio)
            )
        } else if cpu {
            format!(
                "{head} is more than the ideal, and CPU time does not explain it: \
                 measure again (--release, a quiet machine)"
            )
        } else {
            format!(
                "{head} is more than the ideal: the serial waits overran by {:.1} \
                 ms in all (a busy machine wakes sleepers late)",
                serial.wall.saturating_sub(serial_ideal).as_secs_f64() * 1e3
            )
        }
    } else if (speedup * 100.0).round() > (ideal * 100.0).round() {
        format!(
            "{head} is {:.1}% above the ideal {ideal:.2}x: the noise of one run \
             ({ideal:.0} cores or waits cannot do more than {ideal:.0}x)",
            above * 100.0
        )
    } else if speedup >= ideal * 0.85 {
        return None;
    } else if cpu && run.cores() < ideal * 0.85 {
        format!(
            "{head}: it kept only {:.2} of {ideal:.0} cores busy; other programs \
             held the rest (a busy machine: a quiet one gives close to {ideal:.0}x)",
            run.cores()
        )
    } else if cpu && cpu_ratio > 1.1 {
        format!(
            "{head}: the same work took {:.0}% more CPU time than serially, so each \
             core ran slower with all of them busy (two CPUs that are hyperthreads \
             of one core, a lower clock under load, a neighbour on the host)",
            100.0 * (cpu_ratio - 1.0)
        )
    } else {
        format!(
            "{head}, well below {ideal:.2}x: starting and waking the workers costs \
             more than short tasks can hide (a busy machine, a debug build)"
        )
    })
}

/// The CPU-bound work: `steps` additions of squares, each through `black_box` so
/// the compiler cannot fold the loop into a formula (the work must be real).
pub fn compute(steps: u64) -> i64 {
    let mut sum = 0u64;
    for x in 0..steps {
        let x = std::hint::black_box(x % 1000);
        sum = std::hint::black_box(sum.wrapping_add(x * x));
    }
    sum as i64
}

/// Steps of [`compute`] per millisecond on one core (best of a few short runs).
pub fn steps_per_ms() -> u64 {
    let probe = 200_000;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(compute(probe));
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    (probe as f64 / (best.as_secs_f64() * 1e3)).max(1.0) as u64
}

/// `4 x 16646676450` when every task gave the same value, else the list.
pub fn summary(results: &[i64]) -> String {
    match results {
        [first, rest @ ..] if rest.iter().all(|r| r == first) => {
            format!("{} x {first}", results.len())
        }
        _ => List(results).to_string(),
    }
}

/// CPU time (user + system) of this process and its threads, or of its reaped
/// children (`getrusage(2)`: `RUSAGE_SELF`, `RUSAGE_CHILDREN`).
pub fn cpu_time(children: bool) -> Duration {
    let who = if children {
        UsageWho::RUSAGE_CHILDREN
    } else {
        UsageWho::RUSAGE_SELF
    };
    let Ok(r) = getrusage(who) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, t.tv_usec().max(0) as u32 * 1000)
    };
    tv(r.user_time()) + tv(r.system_time())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(wall_ms: u64, cpu_ms: u64) -> Sample {
        Sample {
            wall: Duration::from_millis(wall_ms),
            cpu: Duration::from_millis(cpu_ms),
        }
    }

    const NO_IDEAL: Duration = Duration::ZERO;

    #[test]
    fn close_to_the_ideal_needs_no_words() {
        let serial = s(400, 400);
        assert_eq!(
            reading(
                Bound::Cpu,
                "4 threads",
                &serial,
                &s(205, 400),
                2.0,
                NO_IDEAL
            ),
            None
        );
        assert_eq!(serial_was_starved(Bound::Cpu, &serial), None);
    }

    #[test]
    fn a_busy_machine_is_named_not_hidden() {
        // The parallel run got one core of two: 1.00x.
        let r = reading(
            Bound::Cpu,
            "4 threads",
            &s(477, 470),
            &s(477, 470),
            2.0,
            NO_IDEAL,
        );
        let r = r.expect("a reading");
        assert!(r.contains("kept only 0.99 of 2 cores busy"), "{r}");
        assert!(r.contains("busy machine"), "{r}");
        // The serial run got half a core.
        let r = serial_was_starved(Bound::Cpu, &s(800, 400)).expect("starved");
        assert!(r.contains("got 0.50 of a core"), "{r}");
    }

    #[test]
    fn a_speedup_above_the_ideal_is_explained() {
        // 2.09x on 2 cores, same CPU time: within noise? 4.5%: yes.
        let r = reading(
            Bound::Cpu,
            "4 threads",
            &s(418, 418),
            &s(200, 400),
            2.0,
            NO_IDEAL,
        );
        assert!(r.expect("a reading").contains("noise"));
        // 2.5x because the serial run was starved.
        let r = reading(
            Bound::Cpu,
            "4 threads",
            &s(500, 400),
            &s(200, 400),
            2.0,
            NO_IDEAL,
        );
        assert!(r.expect("a reading").contains("baseline that is slow"));
        // 2.3x with 15% less CPU time: the cores ran faster.
        let r = reading(
            Bound::Cpu,
            "4 threads",
            &s(460, 460),
            &s(200, 391),
            2.0,
            NO_IDEAL,
        );
        assert!(r.expect("a reading").contains("15% less CPU time"));
        // Waiting: the serial waits overran.
        let ideal = Duration::from_millis(800);
        let r = reading(Bound::Io, "4 threads", &s(900, 0), &s(200, 0), 4.0, ideal);
        assert!(r.expect("a reading").contains("overran by 100.0 ms"));
    }

    #[test]
    fn waiting_is_never_called_a_busy_cpu() {
        assert_eq!(serial_was_starved(Bound::Io, &s(800, 0)), None);
        let r = reading(
            Bound::Io,
            "4 threads",
            &s(800, 0),
            &s(400, 0),
            4.0,
            NO_IDEAL,
        );
        assert!(r.expect("a reading").contains("well below"));
    }

    #[test]
    fn cores_that_slow_down_when_all_are_busy_are_named() {
        // 1.52x with 1.84 cores busy: the work took 22% more CPU time.
        let r = reading(
            Bound::Cpu,
            "4 threads",
            &s(124, 124),
            &s(82, 151),
            2.0,
            NO_IDEAL,
        );
        assert!(r.expect("a reading").contains("22% more CPU time"));
    }
}
