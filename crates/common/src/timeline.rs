//! Who ran when: spans recorded by threads **and by forked children**, drawn by the
//! parent as one chart.
//!
//! The spans live in a shared [`Region`], made before any fork, so a child's spans
//! reach the parent without any message: the timeline is itself a small lesson in
//! shared memory. Each record is claimed with one `fetch_add` and published with a
//! release store, so threads and processes can record at the same time.
//! Timestamps are `CLOCK_MONOTONIC` (what `Instant` uses), one clock for every
//! process on the machine.

use std::fmt::Write as _;
use std::mem::size_of;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::shm::{Region, ShmError, bytes_for};

/// What a span of time was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Waiting: sleeping, on I/O, in a join, for a lock.
    Wait = 0,
    /// Running on a CPU.
    Run = 1,
    /// Holding a lock (the critical section).
    Hold = 2,
}

impl Kind {
    fn glyph(self, ascii: bool) -> char {
        match (self, ascii) {
            (Kind::Wait, false) => '░',
            (Kind::Run, false) => '█',
            (Kind::Hold, false) => '▓',
            (Kind::Wait, true) => '-',
            (Kind::Run, true) => '#',
            (Kind::Hold, true) => '=',
        }
    }
}

/// A row of the chart: one worker (a thread or a process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane(u32);

/// One recorded span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lane: Lane,
    pub kind: Kind,
    pub pid: i32,
    pub tid: i32,
    /// Nanoseconds since the timeline was made.
    pub start: u64,
    pub end: u64,
}

#[repr(C)]
struct Record {
    ready: AtomicU32,
    lane: AtomicU32,
    kind: AtomicU32,
    pid: AtomicI32,
    tid: AtomicI32,
    start: AtomicU64,
    end: AtomicU64,
}

#[repr(C)]
struct Header {
    next: AtomicUsize,
}

/// A chart of spans shared by threads and forked children.
pub struct Timeline {
    region: Region,
    capacity: usize,
    epoch: Instant,
    lanes: Vec<String>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Timeline({} lanes, {} spans)",
            self.lanes.len(),
            self.recorded()
        )
    }
}

impl Timeline {
    /// Room for `capacity` spans; spans past that are counted, not kept. A capacity
    /// that does not fit in memory is [`ShmError::TooLarge`].
    pub fn new(capacity: usize) -> Result<Timeline, ShmError> {
        let bytes = bytes_for(
            size_of::<Header>(),
            capacity,
            size_of::<Record>(),
            "timeline",
        )?;
        Ok(Timeline {
            region: Region::new(bytes, "timeline")?,
            capacity,
            epoch: Instant::now(),
            lanes: Vec::new(),
        })
    }

    /// Add a row. Do it in the parent, before forking the worker that uses it.
    pub fn lane(&mut self, name: impl Into<String>) -> Lane {
        self.lanes.push(name.into());
        Lane(self.lanes.len() as u32 - 1)
    }

    /// Nanoseconds since the timeline was made (valid in children too: same clock).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn header(&self) -> &Header {
        // SAFETY: the region starts with a zero-initialised Header (a valid atomic),
        // changed only through atomics.
        unsafe { &*self.region.as_ptr().cast::<Header>() }
    }

    fn record_at(&self, i: usize) -> &Record {
        debug_assert!(i < self.capacity);
        // SAFETY: i < capacity, so the record lies inside the region (which is sized
        // for the header plus `capacity` records, 8-byte aligned); zero bits are
        // valid atomics, changed only through atomics.
        unsafe {
            &*self
                .region
                .as_ptr()
                .add(size_of::<Header>() + i * size_of::<Record>())
                .cast::<Record>()
        }
    }

    /// Record a span from `start` to `end` (values of [`Timeline::now`]).
    pub fn record(&self, lane: Lane, kind: Kind, start: u64, end: u64) {
        let i = self.header().next.fetch_add(1, Ordering::Relaxed);
        if i >= self.capacity {
            return; // counted in `dropped()`
        }
        let r = self.record_at(i);
        r.lane.store(lane.0, Ordering::Relaxed);
        r.kind.store(kind as u32, Ordering::Relaxed);
        r.pid.store(std::process::id() as i32, Ordering::Relaxed);
        r.tid
            .store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
        r.start.store(start, Ordering::Relaxed);
        r.end.store(end, Ordering::Relaxed);
        // Publish: a reader that sees ready == 1 sees every field above.
        r.ready.store(1, Ordering::Release);
    }

    /// Run `f`, recording it as a span of `kind` on `lane`.
    pub fn span<R>(&self, lane: Lane, kind: Kind, f: impl FnOnce() -> R) -> R {
        let start = self.now();
        let out = f();
        self.record(lane, kind, start, self.now());
        out
    }

    /// Sleep for `d`, recorded as waiting (the lessons' stand-in for I/O).
    pub fn sleep(&self, lane: Lane, d: Duration) {
        self.span(lane, Kind::Wait, || std::thread::sleep(d))
    }

    fn recorded(&self) -> usize {
        self.header()
            .next
            .load(Ordering::Relaxed)
            .min(self.capacity)
    }

    /// Spans that did not fit.
    pub fn dropped(&self) -> usize {
        self.header()
            .next
            .load(Ordering::Relaxed)
            .saturating_sub(self.capacity)
    }

    /// Every complete span recorded so far, by start time.
    pub fn spans(&self) -> Vec<Span> {
        let mut out: Vec<Span> = (0..self.recorded())
            .map(|i| self.record_at(i))
            .filter(|r| r.ready.load(Ordering::Acquire) == 1)
            .map(|r| Span {
                lane: Lane(r.lane.load(Ordering::Relaxed)),
                kind: match r.kind.load(Ordering::Relaxed) {
                    0 => Kind::Wait,
                    1 => Kind::Run,
                    _ => Kind::Hold,
                },
                pid: r.pid.load(Ordering::Relaxed),
                tid: r.tid.load(Ordering::Relaxed),
                start: r.start.load(Ordering::Relaxed),
                end: r.end.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|s| s.start);
        out
    }

    /// Spans of one lane.
    pub fn lane_spans(&self, lane: Lane) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.lane == lane)
            .collect()
    }

    /// The first and last instant of a lane's spans, if it has any.
    pub fn extent(&self, lane: Lane) -> Option<(u64, u64)> {
        let spans = self.lane_spans(lane);
        Some((
            spans.iter().map(|s| s.start).min()?,
            spans.iter().map(|s| s.end).max()?,
        ))
    }

    /// How long lanes `a` and `b` were both busy (any kind) at the same time.
    pub fn overlap(&self, a: Lane, b: Lane) -> Duration {
        self.overlap_where(a, b, |_| true)
    }

    /// How long lanes `a` and `b` were both in spans of `kind` at the same time
    /// (for [`Kind::Hold`]: both holding the lock, which a lock must make zero).
    pub fn overlap_of(&self, a: Lane, b: Lane, kind: Kind) -> Duration {
        self.overlap_where(a, b, |s| s.kind == kind)
    }

    fn overlap_where(&self, a: Lane, b: Lane, keep: impl Fn(&Span) -> bool) -> Duration {
        let spans = self.spans();
        let pick = |l: Lane| {
            spans
                .iter()
                .filter(|s| s.lane == l && keep(s))
                .collect::<Vec<_>>()
        };
        let (sa, sb) = (pick(a), pick(b));
        let ns: u64 = sa
            .iter()
            .flat_map(|x| sb.iter().map(move |y| (x, y)))
            .map(|(x, y)| x.end.min(y.end).saturating_sub(x.start.max(y.start)))
            .sum();
        Duration::from_nanos(ns)
    }

    /// The chart, at most `width` columns wide (labels, ids and bars). In ASCII:
    /// `#` running, `-` waiting, `=` holding a lock; otherwise █ ░ ▓.
    pub fn render(&self, title: &str, ascii: bool, width: usize) -> String {
        self.render_until(title, ascii, None, width)
    }

    /// The chart of the first `until` nanoseconds only (all of it for `None`): a
    /// zoom on the start when the whole run is too long to read. Every line fits in
    /// `width` columns as long as the labels leave 20 columns for the bars; the
    /// title gets a line of its own when it would run into the time axis.
    pub fn render_until(
        &self,
        title: &str,
        ascii: bool,
        until: Option<u64>,
        width: usize,
    ) -> String {
        let mut spans = self.spans();
        if let Some(until) = until {
            spans.retain(|s| s.start < until);
            spans.iter_mut().for_each(|s| s.end = s.end.min(until));
        }
        let t_end = spans.iter().map(|s| s.end).max().unwrap_or(0).max(1);
        let label_w = self.lanes.iter().map(|l| l.len()).max().unwrap_or(0);
        let ids: Vec<String> = (0..self.lanes.len())
            .map(|i| match spans.iter().find(|s| s.lane.0 == i as u32) {
                Some(s) => format!("pid {} tid {}", s.pid, s.tid),
                None => String::new(),
            })
            .collect();
        let ids_w = ids.iter().map(|s| s.len()).max().unwrap_or(0);
        let pad = label_w + ids_w + 5;
        // The bars get what the labels leave of the width, never fewer than 20, and
        // no more than any screen has (a huge `width` is not a huge allocation).
        let bars = width.saturating_sub(pad).clamp(20, 1000);

        let mut out = String::new();
        let end_label = fmt_ns(t_end);
        let axis = format!(
            "0{}{end_label}",
            " ".repeat(bars.saturating_sub(1 + end_label.chars().count()))
        );
        if title.chars().count() < pad {
            let _ = writeln!(out, "{title:<pad$}{axis}");
        } else {
            let _ = writeln!(out, "{title}");
            let _ = writeln!(out, "{:pad$}{axis}", "");
        }
        for (i, name) in self.lanes.iter().enumerate() {
            // Nanoseconds of each kind inside each column.
            let mut cover = vec![[0u64; 3]; bars];
            let col_ns = t_end as f64 / bars as f64;
            for s in spans.iter().filter(|s| s.lane.0 == i as u32) {
                for (c, cell) in cover.iter_mut().enumerate() {
                    let (lo, hi) = ((c as f64 * col_ns) as u64, ((c + 1) as f64 * col_ns) as u64);
                    cell[s.kind as usize] += s.end.min(hi).saturating_sub(s.start.max(lo));
                }
            }
            // A column shows the strongest kind (lock > running > waiting) that fills
            // a quarter of it; a 1 us computation between two 200 ms waits does not
            // get painted as a column of computing. Sparse columns show what is there.
            let cells: Vec<Option<Kind>> = cover
                .iter()
                .map(|k| {
                    let kinds = [Kind::Wait, Kind::Run, Kind::Hold];
                    let strong = kinds
                        .into_iter()
                        .rev()
                        .find(|&x| k[x as usize] as f64 >= col_ns / 4.0);
                    let most = kinds
                        .into_iter()
                        .filter(|&x| k[x as usize] > 0)
                        .max_by_key(|&x| k[x as usize]);
                    strong.or(most)
                })
                .collect();
            let row: String = cells
                .iter()
                .map(|c| c.map_or(' ', |k| k.glyph(ascii)))
                .collect();
            let line = format!("  {name:<label_w$}  {:<ids_w$} {row}", ids[i]);
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let (r, w, h) = (
            Kind::Run.glyph(ascii),
            Kind::Wait.glyph(ascii),
            Kind::Hold.glyph(ascii),
        );
        let _ = write!(
            out,
            "  {r} running   {w} waiting (sleep, I/O, join, lock)   {h} holding the lock"
        );
        if self.dropped() > 0 {
            let _ = write!(
                out,
                "\n  ({} spans did not fit and are not shown)",
                self.dropped()
            );
        }
        out
    }
}

/// A duration in ns as a short human string.
pub fn fmt_ns(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    fmt_duration(d)
}

/// `0.802 s`, `41.3 ms`, `812 us`, `95 ns`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1} us", s * 1e6)
    } else {
        format!("{} ns", d.as_nanos())
    }
}
