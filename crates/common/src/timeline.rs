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
        let (spans, t_end) = self.chart_spans(until);
        let label_w = self.lanes.iter().map(|l| l.len()).max().unwrap_or(0);
        let ids = self.lane_ids(&spans);
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

impl Timeline {
    /// The spans a chart draws (cut at `until`, if given) and where its axis ends:
    /// one list for the terminal chart and the SVG, so both show the same spans.
    fn chart_spans(&self, until: Option<u64>) -> (Vec<Span>, u64) {
        let mut spans = self.spans();
        if let Some(until) = until {
            spans.retain(|s| s.start < until);
            spans.iter_mut().for_each(|s| s.end = s.end.min(until));
        }
        let t_end = spans.iter().map(|s| s.end).max().unwrap_or(0).max(1);
        (spans, t_end)
    }

    /// `pid P tid T` of each lane's first span (empty for a lane with none).
    fn lane_ids(&self, spans: &[Span]) -> Vec<String> {
        (0..self.lanes.len())
            .map(|i| match spans.iter().find(|s| s.lane.0 == i as u32) {
                Some(s) => format!("pid {} tid {}", s.pid, s.tid),
                None => String::new(),
            })
            .collect()
    }

    /// The chart as an SVG picture: one `<rect>` per span, at the same times as the
    /// terminal chart's, lane labels, a time axis, the legend, and `caption` (say
    /// which machine and when) beneath. Hand-written elements, no plotting library.
    pub fn to_svg(&self, title: &str, caption: &str) -> String {
        self.to_svg_until(title, None, caption)
    }

    /// [`Timeline::to_svg`] of the first `until` nanoseconds, as
    /// [`Timeline::render_until`] draws them.
    pub fn to_svg_until(&self, title: &str, until: Option<u64>, caption: &str) -> String {
        let (spans, t_end) = self.chart_spans(until);
        let ids = self.lane_ids(&spans);
        // Two columns of labels, as in the terminal: the lane's name, then its ids.
        let name_w = self
            .lanes
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let ids_w = ids.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let ids_x = svg::PAD + (name_w + 2) as f64 * svg::CHAR_W;
        let left = ids_x + ids_w as f64 * svg::CHAR_W + svg::PAD;
        let plot_w = (svg::WIDTH - left - svg::PAD).max(200.0);
        let width = left + plot_w + svg::PAD;
        let top = 48.0; // the title, then the axis labels
        let height = top + self.lanes.len() as f64 * svg::ROW + 56.0;
        let x_of = |ns: u64| left + ns as f64 / t_end as f64 * plot_w;

        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="monospace" font-size="12">"#
        );
        let _ = writeln!(
            out,
            r#"<rect width="100%" height="100%" fill="{}"/>"#,
            svg::BACKGROUND
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="18" font-weight="bold" font-size="14">{}</text>"#,
            svg::PAD,
            svg::escape(title)
        );
        // The time axis: a tick and a label at each round step, a faint line down.
        let step = svg::tick_step(t_end);
        let bottom = top + self.lanes.len() as f64 * svg::ROW;
        let mut t = 0;
        while t <= t_end {
            let x = x_of(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.2}" y1="{:.0}" x2="{x:.2}" y2="{bottom:.0}" stroke="#ddd"/><text x="{x:.2}" y="{:.0}" text-anchor="middle" fill="#555">{}</text>"##,
                top - 4.0,
                top - 8.0,
                if t == 0 { "0".to_string() } else { fmt_ns(t) }
            );
            t += step;
        }
        for (i, name) in self.lanes.iter().enumerate() {
            let y = top + i as f64 * svg::ROW;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{:.1}">{}</text><text x="{ids_x:.1}" y="{:.1}" fill="#555">{}</text>"##,
                svg::PAD,
                y + svg::ROW / 2.0 + 4.0,
                svg::escape(name),
                y + svg::ROW / 2.0 + 4.0,
                svg::escape(&ids[i])
            );
            for s in spans.iter().filter(|s| s.lane.0 == i as u32) {
                let (x0, x1) = (x_of(s.start), x_of(s.end));
                let what = svg::word(s.kind);
                let _ = writeln!(
                    out,
                    r#"<rect class="span {what}" x="{x0:.3}" y="{:.1}" width="{:.3}" height="{:.1}" fill="{}"><title>{}: {what} from {} to {}</title></rect>"#,
                    y + 4.0,
                    x1 - x0,
                    svg::ROW - 8.0,
                    svg::fill(s.kind),
                    svg::escape(&self.lanes[i]),
                    fmt_ns(s.start),
                    fmt_ns(s.end)
                );
            }
        }
        // The legend, then the caption beneath the chart.
        let mut x = left;
        for kind in [Kind::Run, Kind::Wait, Kind::Hold] {
            let text = match kind {
                Kind::Run => "running",
                Kind::Wait => "waiting (sleep, I/O, join, lock)",
                Kind::Hold => "holding the lock",
            };
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{text}</text>"#,
                bottom + 10.0,
                svg::fill(kind),
                x + 16.0,
                bottom + 20.0
            );
            x += 16.0 + text.len() as f64 * svg::CHAR_W + 24.0;
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" font-size="11" fill="#555">{}</text>"##,
            svg::PAD,
            bottom + 44.0,
            svg::escape(caption)
        );
        out.push_str("</svg>\n");
        out
    }
}

/// The few constants and helpers of the SVG chart.
mod svg {
    use super::Kind;

    pub const WIDTH: f64 = 960.0;
    pub const PAD: f64 = 12.0;
    /// Width of a character of 12 px monospace, near enough for layout.
    pub const CHAR_W: f64 = 7.3;
    pub const ROW: f64 = 26.0;
    pub const BACKGROUND: &str = "#ffffff";

    /// The terminal's glyphs as colours: █ dark, ░ light, ▓ warm.
    pub fn fill(kind: Kind) -> &'static str {
        match kind {
            Kind::Run => "#1f4e79",
            Kind::Wait => "#9cc3e6",
            Kind::Hold => "#d9822b",
        }
    }

    pub fn word(kind: Kind) -> &'static str {
        match kind {
            Kind::Run => "running",
            Kind::Wait => "waiting",
            Kind::Hold => "holding",
        }
    }

    /// Text made safe for SVG (XML) content and attribute values.
    pub fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c if c.is_control() => {}
                c => out.push(c),
            }
        }
        out
    }

    /// A round step (1, 2 or 5 times a power of ten ns) that puts 4 to 10 ticks
    /// on an axis of `t_end` ns.
    pub fn tick_step(t_end: u64) -> u64 {
        let mut unit = 1u64;
        loop {
            for m in [1, 2, 5] {
                let step = unit.saturating_mul(m);
                if t_end / step <= 10 {
                    return step;
                }
            }
            unit = unit.saturating_mul(10);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline with known spans: square waits 0-400 ms then runs 400-500 ms,
    /// cube waits 100-800 ms, and a lane with nothing.
    fn sample() -> (Timeline, [Lane; 3]) {
        let mut tl = Timeline::new(16).unwrap();
        let lanes = [tl.lane("square"), tl.lane("cube <&>"), tl.lane("idle")];
        let ms = 1_000_000;
        tl.record(lanes[0], Kind::Wait, 0, 400 * ms);
        tl.record(lanes[0], Kind::Run, 400 * ms, 500 * ms);
        tl.record(lanes[1], Kind::Wait, 100 * ms, 800 * ms);
        (tl, lanes)
    }

    /// `name="value"` of an element, as a number.
    fn attr(element: &str, name: &str) -> f64 {
        let at = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let rest = &element[at..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    }

    fn span_rects(svg: &str) -> Vec<&str> {
        svg.lines()
            .filter(|l| l.starts_with("<rect class=\"span "))
            .collect()
    }

    #[test]
    fn the_svg_draws_one_rect_per_span_at_the_terminal_charts_times() {
        let (tl, _) = sample();
        let mut spans = tl.spans();
        spans.sort_by_key(|s| (s.lane.0, s.start)); // the SVG draws lane by lane
        let svg = tl.to_svg("two <threads>", "a machine, 2026-01-01 UTC");
        let rects = span_rects(&svg);
        assert_eq!(rects.len(), spans.len());
        // x and width proportional to start and end, with one scale for all.
        let (x0, w0) = (attr(rects[0], "x"), attr(rects[0], "width"));
        let scale = w0 / (spans[0].end - spans[0].start) as f64;
        for (r, s) in rects.iter().zip(&spans) {
            let x = x0 + (s.start - spans[0].start) as f64 * scale;
            let w = (s.end - s.start) as f64 * scale;
            assert!((attr(r, "x") - x).abs() < 0.01, "{r}");
            assert!((attr(r, "width") - w).abs() < 0.01, "{r}");
            assert!(r.contains(&format!("class=\"span {}\"", svg::word(s.kind))));
        }
        // The terminal chart of the same timeline: each lane's bars start and end
        // in the columns where its rects start and end.
        let chart = tl.render("two threads", true, 80);
        let rows: Vec<&str> = chart.lines().skip(1).take(3).collect();
        let bar_at = rows[0].find("--").unwrap();
        let cols = 80 - bar_at; // the bars' width, as render computed it
        for (lane, row) in rows.iter().take(2).enumerate() {
            let mine: Vec<&Span> = spans.iter().filter(|s| s.lane.0 == lane as u32).collect();
            let first = mine.iter().map(|s| s.start).min().unwrap();
            let last = mine.iter().map(|s| s.end).max().unwrap();
            let t_end = spans.iter().map(|s| s.end).max().unwrap();
            let bars = &row[bar_at..];
            let lo = bars.find(['-', '#']).unwrap();
            let hi = bars.rfind(['-', '#']).unwrap() + 1;
            let col = |ns: u64| ns as f64 / t_end as f64 * cols as f64;
            assert!((lo as f64 - col(first)).abs() <= 1.0, "{row}");
            assert!((hi as f64 - col(last)).abs() <= 1.0, "{row}");
        }
        assert!(
            rows[2].trim_end().ends_with("idle"),
            "an empty lane: no bars"
        );
    }

    #[test]
    fn the_svg_cut_at_until_keeps_what_the_terminal_chart_keeps() {
        let (tl, _) = sample();
        let ms = 1_000_000;
        let svg = tl.to_svg_until("the start", Some(300 * ms), "c");
        let rects = span_rects(&svg);
        assert_eq!(rects.len(), 2, "the run at 400 ms starts after the cut");
        let x0 = attr(rects[0], "x");
        let full = attr(rects[0], "width"); // square waits 0-300 ms: the whole axis
        let cube = rects[1];
        assert!((attr(cube, "x") - (x0 + full / 3.0)).abs() < 0.01);
        assert!((attr(cube, "width") - full * 2.0 / 3.0).abs() < 0.01);
    }

    #[test]
    fn svg_text_is_escaped_and_the_picture_is_sized() {
        let (tl, _) = sample();
        let svg = tl.to_svg("a < b & \"c\"", "machine 'x' & <y>");
        assert!(svg.contains("a &lt; b &amp; &quot;c&quot;"));
        assert!(svg.contains("machine &apos;x&apos; &amp; &lt;y&gt;"));
        assert!(svg.contains("cube &lt;&amp;&gt;"));
        assert!(!svg.contains("<&>") && !svg.contains("< b"));
        assert_eq!(svg::escape("tab\there\n"), "tabhere");
        let first = svg.lines().next().unwrap();
        assert!(first.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let (w, h) = (attr(first, "width"), attr(first, "height"));
        assert!((900.0..=1000.0).contains(&w), "width {w}");
        // The title, the axis, three lanes, the legend and the caption.
        assert!((48.0 + 3.0 * svg::ROW..=48.0 + 3.0 * svg::ROW + 80.0).contains(&h));
        // Every rect lies inside the picture.
        for r in span_rects(&svg) {
            assert!(attr(r, "x") >= 0.0 && attr(r, "x") + attr(r, "width") <= w);
        }
        assert!(
            svg.contains(">machine &apos;x&apos;"),
            "the caption is drawn"
        );
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(svg::tick_step(800_000_000), 100_000_000);
        assert_eq!(svg::tick_step(1_600_000_000), 200_000_000);
        assert_eq!(svg::tick_step(45), 5);
        assert_eq!(svg::tick_step(1), 1);
        for t in [1, 7, 99, 12_345, 801_100_000, u64::MAX] {
            let n = t / svg::tick_step(t);
            assert!(n <= 10, "{t}: {n} ticks");
        }
    }
}
