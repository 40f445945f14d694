//! What the `mpi-map` lesson, its MPI program (`src/bin/mpi-map-rank.rs`) and its
//! benchmark share: the work, how the items are cut into one share per rank, what
//! rank 0 prints and how the lesson reads it back, and how `mpirun` is started,
//! bounded in time, and checked for processes left behind.

use std::fmt;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Timed rounds of the map in one `mpirun` (after one untimed round): the best is kept.
pub const ROUNDS: usize = 3;

/// The work done per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Work {
    /// The tutorial's: `sum(x*x for x in range(1000))` per item.
    Tutorial,
    /// 100 times that: `x` below 100,000 per item (the pool benchmark's reading).
    Deep,
}

impl Work {
    /// The function each item goes through: the course pool's own, so that the
    /// work is the same whoever runs it.
    pub fn function(self) -> fn(u64) -> u64 {
        match self {
            Work::Tutorial => pool_map::sum_of_squares,
            Work::Deep => pool_map::sum_of_squares_100x,
        }
    }

    /// Its spelling on the rank program's command line.
    pub fn flag(self) -> &'static str {
        match self {
            Work::Tutorial => "tutorial",
            Work::Deep => "deep",
        }
    }
}

/// One rank's share of the items: `count` items from `first`. Contiguous and as
/// even as they can be (the first `items % ranks` ranks get one more), in rank
/// order, so that gathering the shares in rank order gives the list in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub first: usize,
    pub count: usize,
}

/// The shares of `items` items over `ranks` ranks.
pub fn shares(items: usize, ranks: usize) -> Vec<Share> {
    let ranks = ranks.max(1);
    let (each, extra) = (items / ranks, items % ranks);
    let mut first = 0;
    (0..ranks)
        .map(|r| {
            let count = each + usize::from(r < extra);
            let share = Share { first, count };
            first += count;
            share
        })
        .collect()
}

/// What a map of `f` over `0..items` gives, the way the MPI program gathers it:
/// each item followed by its result, `[0, f(0), 1, f(1), ...]`.
pub fn serial_pairs(f: fn(u64) -> u64, items: u64) -> Vec<u64> {
    (0..items).flat_map(|x| [x, f(x)]).collect()
}

/// An order-sensitive checksum of a list (FNV-1a over its little-endian bytes):
/// equal checksums mean the same values in the same order, without printing
/// 10,000 numbers.
pub fn checksum(values: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// What one rank did in the untimed round, as rank 0 gathered it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankDid {
    pub rank: usize,
    pub ranks: usize,
    pub pid: u32,
    pub host: String,
    pub share: Share,
    pub map_time: Duration,
}

impl fmt::Display for RankDid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.map_time.as_secs_f64() * 1e3;
        write!(
            f,
            "rank {} of {}: pid {} on {}, {} items from {}, mapped in {ms:.1} ms",
            self.rank, self.ranks, self.pid, self.host, self.share.count, self.share.first
        )
    }
}

/// What rank 0 prints at the end, and the lesson reads back from `mpirun`'s output.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub ranks: Vec<RankDid>,
    /// How many results rank 0 gathered, and their checksum.
    pub gathered: usize,
    pub checksum: u64,
    /// The best timed round: scatter, map and gather (MPI's start is not in it).
    pub best: Duration,
    /// Every timed round gathered the same list as the first round.
    pub rounds_agree: bool,
}

impl Report {
    /// The lines rank 0 prints after the per-rank lines and the gathered list.
    pub fn closing_lines(&self) -> [String; 2] {
        let same = if self.rounds_agree {
            "every round gathered the same list"
        } else {
            "a round gathered a DIFFERENT list"
        };
        [
            format!(
                "checksum of the {} gathered results: {:#018x}",
                self.gathered, self.checksum
            ),
            format!(
                "best of {ROUNDS} rounds (scatter, map, gather): {:.2} ms; {same}",
                self.best.as_secs_f64() * 1e3
            ),
        ]
    }

    /// Read a report back from the lines rank 0 printed (`None` if it is not all there,
    /// for example because the job was aborted before the gather).
    pub fn parse(text: &str) -> Option<Report> {
        let mut ranks = Vec::new();
        let (mut sum, mut best) = (None, None);
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("rank ") {
                ranks.extend(parse_rank(rest));
            } else if let Some(rest) = line.strip_prefix("checksum of the ") {
                let (n, hex) = rest.split_once(" gathered results: ")?;
                let hex = hex.trim().strip_prefix("0x")?;
                sum = Some((n.parse().ok()?, u64::from_str_radix(hex, 16).ok()?));
            } else if let Some(rest) = line.strip_prefix(&format!("best of {ROUNDS} rounds ")) {
                let (_, ms) = rest.split_once("): ")?;
                let (ms, agree) = ms.split_once(" ms; ")?;
                let ms: f64 = ms.parse().ok()?;
                best = Some((
                    Duration::from_secs_f64(ms / 1e3),
                    agree.starts_with("every"),
                ));
            }
        }
        let ((gathered, checksum), (best, rounds_agree)) = (sum?, best?);
        Some(Report {
            ranks,
            gathered,
            checksum,
            best,
            rounds_agree,
        })
    }
}

/// `0 of 2: pid 4242 on node1, 5000 items from 0, mapped in 11.9 ms`.
fn parse_rank(rest: &str) -> Option<RankDid> {
    let w: Vec<&str> = rest.split_whitespace().collect();
    let [
        rank,
        "of",
        ranks,
        "pid",
        pid,
        "on",
        host,
        count,
        "items",
        "from",
        first,
        "mapped",
        "in",
        ms,
        "ms",
    ] = w[..]
    else {
        return None;
    };
    Some(RankDid {
        rank: rank.parse().ok()?,
        ranks: ranks.strip_suffix(':')?.parse().ok()?,
        pid: pid.parse().ok()?,
        host: host.strip_suffix(',')?.to_string(),
        share: Share {
            first: first.strip_suffix(',')?.parse().ok()?,
            count: count.parse().ok()?,
        },
        map_time: Duration::from_secs_f64(ms.parse::<f64>().ok()? / 1e3),
    })
}

/// How to start the MPI program: how many ranks, on which hosts.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub ranks: usize,
    /// A hostfile (`node1 slots=2` per line); without one, every rank runs here.
    pub hostfile: Option<PathBuf>,
}

impl Launch {
    /// `mpirun`'s arguments to start `program args` on `self.ranks` ranks, with the
    /// flags this machine needs (each one says why).
    pub fn mpirun_args(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut a: Vec<String> = vec!["-n".into(), self.ranks.to_string()];
        // Open MPI refuses to run as root unless told (containers and CI run as root).
        if nix::unistd::geteuid().is_root() {
            a.push("--allow-run-as-root".into());
        }
        match &self.hostfile {
            Some(file) => a.extend(["--hostfile".into(), file.display().to_string()]),
            // One slot per core by default: more ranks than cores need this.
            None if self.ranks > common::output::cpu_count() => a.push("--oversubscribe".into()),
            None => {}
        }
        // Pinned ranks would compete with nothing here but would not compare like
        // with like: the course's pool does not pin its workers.
        a.extend(["--bind-to".into(), "none".into()]);
        a.push(program.into());
        a.extend(args.iter().cloned());
        a
    }
}

/// How an `mpirun` run ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// From start to the end of `mpirun` (MPI's start and end included).
    pub wall: Duration,
    pub stdout: String,
    pub stderr: String,
    /// Processes of this run (ranks, daemons) still there after `mpirun` ended:
    /// killed, and listed here.
    pub left: Vec<i32>,
}

/// The environment variable that marks every process of one `mpirun` run: mpirun
/// passes its environment to the ranks it starts on this machine.
pub const MARKER: &str = "MPI_MAP_RUN";

/// Run `mpirun args`, stdin closed, stdout and stderr kept, within `limit` (then
/// it is stopped, and that is an error). Every process the run started carries
/// `MPI_MAP_RUN=<a name of its own>`; any still there shortly after `mpirun` ended
/// is killed and reported in [`Finished::left`].
pub fn run_mpirun(args: &[String], limit: Duration) -> anyhow::Result<Finished> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mark = format!("mpi-map-{}-{nanos}", std::process::id());
    // Anonymous files (memfd), not pipes: nothing to drain while waiting, no name
    // to clean up, and this process stays single-threaded (the course's pool forks).
    let out = anon_file("mpirun-stdout")?;
    let err = anon_file("mpirun-stderr")?;
    let start = Instant::now();
    let parent = nix::unistd::getpid().as_raw();
    let mut cmd = Command::new("mpirun");
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are, and nothing here
    // allocates (an io::Error made from an errno does not).
    unsafe {
        cmd.pre_exec(move || {
            // If this process dies (even by SIGKILL), mpirun gets SIGTERM, on
            // which it stops its ranks: the job never outlives the lesson.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid().as_raw() != parent {
                return Err(nix::errno::Errno::ESRCH.into()); // the lesson is gone
            }
            Ok(())
        })
    };
    let mut child = cmd
        .args(args)
        .env(MARKER, &mark)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .spawn()
        .context("cannot start mpirun (is Open MPI installed? scripts/mpi.sh installs it)")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    let Some(status) = status else {
        // SIGTERM lets mpirun stop its ranks and remove its files; SIGCONT lets
        // a stopped mpirun act on it. Whatever is left is killed below.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = wait_for(&mut child, Duration::from_secs(5));
        let _ = child.kill();
        let _ = child.wait();
        let left = leftovers(&mark, Duration::ZERO);
        remove_session_dir(pid.as_raw());
        bail!(
            "mpirun did not finish within {} s (stopped; {} processes of it killed)",
            limit.as_secs(),
            left.len()
        );
    };
    let left = leftovers(&mark, Duration::from_secs(2));
    remove_session_dir(child.id() as i32);
    Ok(Finished {
        status,
        wall,
        stdout: read_all(out)?,
        stderr: read_all(err)?,
        left,
    })
}

/// Open MPI's session directory of the `mpirun` with this PID
/// (`$TMPDIR/ompi.<host>.<uid>/pid.<pid>`): its `mpirun` removes it when it ends,
/// unless it was killed (SIGKILL); then we do. Nothing if it is gone already.
fn remove_session_dir(mpirun: i32) {
    // The node's name without its domain, as Open MPI shortens it by default.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().split('.').next().unwrap_or_default();
    let uid = nix::unistd::getuid();
    let top = std::env::temp_dir().join(format!("ompi.{host}.{uid}"));
    let _ = std::fs::remove_dir_all(top.join(format!("pid.{mpirun}")));
}

/// Wait up to `patience` for `child` to end.
fn wait_for(child: &mut std::process::Child, patience: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < patience {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The processes that carry `MPI_MAP_RUN=mark`, given up to `grace` to end on
/// their own (a rank may still be exiting as mpirun returns); those still there
/// are killed.
fn leftovers(mark: &str, grace: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let found = marked(mark);
        if found.is_empty() || start.elapsed() >= grace {
            for &pid in &found {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every running process whose environment holds `MPI_MAP_RUN=mark` (a zombie has
/// no environment left to read: it is its parent's to reap).
fn marked(mark: &str) -> Vec<i32> {
    let want = format!("{MARKER}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
        })
        .collect()
}

/// A file in memory (memfd_create(2)) holding `text`: gone when its last fd closes.
pub fn memory_file(name: &str, text: &str) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    let mut file = anon_file(name)?;
    file.write_all(text.as_bytes())?;
    Ok(file)
}

fn anon_file(name: &str) -> anyhow::Result<std::fs::File> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    Ok(std::fs::File::from(fd))
}

fn read_all(mut f: std::fs::File) -> anyhow::Result<String> {
    f.rewind()?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// How `mpirun` ended, in words: `exit code 0`, `exit code 137`, `killed by SIGKILL`.
pub fn ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => nix::sys::signal::Signal::try_from(s)
            .map_or(format!("killed by signal {s}"), |s| {
                format!("killed by {s}")
            }),
        (None, None) => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_items_in_order() {
        let s = shares(10, 3);
        let counts: Vec<usize> = s.iter().map(|s| s.count).collect();
        assert_eq!(counts, [4, 3, 3]);
        assert_eq!(s[1].first, 4);
        assert_eq!(s[2].first, 7);
        assert_eq!(shares(1, 3)[2], Share { first: 1, count: 0 });
    }

    #[test]
    fn the_checksum_sees_order() {
        assert_ne!(checksum(&[1, 2]), checksum(&[2, 1]));
        assert_eq!(checksum(&[5, 6]), checksum(&[5, 6]));
    }

    #[test]
    fn a_report_reads_back() {
        let did = RankDid {
            rank: 1,
            ranks: 2,
            pid: 42,
            host: "node1".into(),
            share: Share {
                first: 5000,
                count: 5000,
            },
            map_time: Duration::from_micros(11_900),
        };
        let report = Report {
            ranks: vec![did.clone()],
            gathered: 10_000,
            checksum: 0xfeed,
            best: Duration::from_micros(12_630),
            rounds_agree: true,
        };
        let [a, b] = report.closing_lines();
        let text = format!("{did}\ngathered ...\n{a}\n{b}\n");
        let back = Report::parse(&text).expect("parses");
        assert_eq!(back.ranks[0].share, did.share);
        assert_eq!((back.gathered, back.checksum), (10_000, 0xfeed));
        assert!(back.rounds_agree);
        assert_eq!(back.best.as_micros(), 12_630);
        assert!(Report::parse("rank 0 of 2: ...").is_none());
    }
}
