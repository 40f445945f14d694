//! The lesson's bookkeeping around its processes: a bounded join for a group, and
//! shared clocks.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::process::{Child, ProcessError};
use common::timeline::fmt_duration;

use crate::futex::Deadline;

/// Join every child within `limit` in all. A child that fails makes this an
/// error; one still running at the end (stuck, or stopped by SIGSTOP) is killed,
/// reaped and reported. Children not joined yet when it returns early are killed
/// and reaped when their handles drop.
pub fn join_all(children: &mut [Child], limit: Duration, what: &str) -> anyhow::Result<()> {
    // Joined in slices, so that time this process spends stopped (Ctrl-Z of the
    // whole job) is left out of `limit` (see `Deadline`).
    let deadline = Deadline::after(limit);
    for child in children.iter_mut() {
        let exit = loop {
            let slice = deadline.slice().unwrap_or_default();
            let joined = child.join_timeout(slice);
            if let Some(exit) = joined.with_context(|| what.to_string())? {
                break exit;
            }
            if deadline.left().is_some() {
                continue;
            }
            match child.join_within(Duration::ZERO) {
                Err(ProcessError::Stuck { pid, .. }) => bail!(
                    "{what}: pid {pid} did not end within {} (stopped or stuck); it was killed",
                    fmt_duration(limit)
                ),
                other => break other.with_context(|| what.to_string())?,
            }
        };
        if !exit.success() {
            bail!("{what}: pid {} failed: {exit}", child.pid());
        }
    }
    Ok(())
}

/// Nanoseconds since `epoch`. An `Instant` reads CLOCK_MONOTONIC, one clock for
/// every process on the machine, so times taken in different children compare.
pub fn ns_since(epoch: Instant) -> i64 {
    epoch.elapsed().as_nanos().min(i64::MAX as u128) as i64
}
