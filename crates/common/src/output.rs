//! What every lesson prints, the same way: a banner, numbered steps, and check lines
//! that state a claim and whether it held. [`Lesson::finish`] adds the checks every
//! lesson owes (no child process left, no file descriptor leaked) and turns the
//! result into the exit code.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::process::{list_children, list_open_fds};
use crate::timeline::Timeline;

/// Flags every lesson has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Draw with plain ASCII instead of Unicode blocks (also the default when the
    /// locale is not UTF-8).
    #[arg(long)]
    pub ascii: bool,
    /// Also write each timeline as an SVG picture, DIR/LESSON-TITLE.svg (the
    /// lesson's name, then the chart's title in lower case, words joined by '-'),
    /// the machine and the date beneath it.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

/// One lesson's run: prints as it goes, counts the claims.
#[derive(Debug)]
pub struct Lesson {
    ascii: bool,
    checks: usize,
    failed: Vec<String>,
    fds_at_start: Result<Vec<i32>, String>,
    started: Instant,
    step: usize,
    name: String,
    svg: Option<PathBuf>,
    /// Whether an SVG could not be written (then the lesson ends with exit 2).
    svg_failed: Cell<bool>,
    /// The SVG files written so far: a second chart of the same title gets `-2`.
    svg_names: RefCell<Vec<String>>,
}

impl Lesson {
    /// Print the banner: the lesson, its question, and the Python it mirrors.
    pub fn start(name: &str, question: &str, python: &str, args: &CommonArgs) -> Lesson {
        let ascii = args.ascii || !locale_is_utf8();
        let rule = if ascii { "=" } else { "═" }.repeat(72);
        println!("{rule}");
        println!("{name}: {question}");
        println!("Python twin: {python}");
        println!("pid {}, {} CPUs available", std::process::id(), cpu_count());
        if cfg!(debug_assertions) {
            println!("(unoptimised build: timings are slower than with --release)");
        }
        println!("{rule}");
        Lesson {
            ascii,
            checks: 0,
            failed: Vec::new(),
            fds_at_start: list_open_fds().map_err(|e| e.to_string()),
            started: Instant::now(),
            step: 0,
            name: name.to_string(),
            svg: args.svg.clone(),
            svg_failed: Cell::new(false),
            svg_names: RefCell::new(Vec::new()),
        }
    }

    /// Whether to draw in ASCII.
    pub fn ascii(&self) -> bool {
        self.ascii
    }

    /// A numbered step heading. Under `scripts/run_all.sh --pause` (which sets
    /// `COURSE_PAUSE=1`), waits for Enter before every step but the first, so that
    /// no step scrolls away before the room has read it.
    pub fn step(&mut self, title: &str) {
        self.step += 1;
        if self.step > 1 {
            pause_for_enter(&format!("step {}", self.step));
        }
        print_wrapped(&format!("\n[{}] {title}", self.step), "    ");
    }

    /// A line of the story, indented under its step (wrapped to the terminal).
    pub fn say(&self, line: impl Display) {
        print_wrapped(&format!("    {line}"), "      ");
    }

    /// A claim and whether it held. A failed claim makes the lesson exit non-zero.
    pub fn check(&mut self, claim: impl Display, held: bool) -> bool {
        self.checks += 1;
        let mark = match (held, self.ascii) {
            (true, false) => "✓",
            (false, false) => "✗",
            (true, true) => "ok",
            (false, true) => "FAIL",
        };
        print_wrapped(&format!("  {mark} check: {claim}"), "      ");
        if !held {
            self.failed.push(claim.to_string());
        }
        held
    }

    /// `what: actual (expected expected)`, held when they are equal. A long value
    /// that held is printed once: `what: [1, 4, 9, ...] (as expected)`. Lists print
    /// the Python way through [`List`].
    pub fn check_eq<T: PartialEq + Display>(&mut self, what: &str, actual: T, expected: T) -> bool {
        let held = actual == expected;
        let (a, e) = (actual.to_string(), expected.to_string());
        let claim = if held && a.chars().count() > 24 {
            format!("{what}: {a} (as expected)")
        } else {
            format!("{what}: {a} (expected {e})")
        };
        self.check(claim, held)
    }

    /// A step that is broken on purpose reports what went wrong; it is not a failure.
    pub fn broken(&self, what: impl Display) {
        let mark = if self.ascii { "!!" } else { "⚠" };
        print_wrapped(&format!("  {mark} broken on purpose: {what}"), "      ");
    }

    /// Draw a timeline.
    pub fn timeline(&self, tl: &Timeline, title: &str) {
        self.timeline_until(tl, title, None);
    }

    /// Draw the first `until` nanoseconds of a timeline (and under `--svg DIR`,
    /// write the same spans as a picture).
    pub fn timeline_until(&self, tl: &Timeline, title: &str, until: Option<u64>) {
        println!();
        for line in tl
            .render_until(title, self.ascii, until, width().saturating_sub(2))
            .lines()
        {
            println!("  {line}");
        }
        if let Some(dir) = &self.svg {
            let stem = format!("{}-{}", self.name, slug(title));
            let mut names = self.svg_names.borrow_mut();
            let same = names.iter().filter(|n| **n == stem).count();
            let file = match same {
                0 => format!("{stem}.svg"),
                n => format!("{stem}-{}.svg", n + 1),
            };
            names.push(stem);
            let path = dir.join(file);
            let caption = format!(
                "{} ({}), {}, {} UTC",
                self.name,
                if cfg!(debug_assertions) {
                    "unoptimised build"
                } else {
                    "release build"
                },
                crate::bench::machine(),
                utc_date(SystemTime::now())
            );
            let svg = tl.to_svg_until(&format!("{}: {title}", self.name), until, &caption);
            match write_svg(dir, &path, &svg) {
                Ok(()) => eprintln!("wrote {}", path.display()),
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    self.svg_failed.set(true);
                }
            }
        }
    }

    /// The closing checks (no child left, no fd leaked), the summary, the exit code.
    pub fn finish(mut self) -> ExitCode {
        println!();
        // Without /proc these checks cannot look: then they fail, saying why.
        let left = list_children()
            .map(|l| l.iter().map(|&(pid, _)| pid).collect())
            .map_err(|e| e.to_string());
        self.check_none("no child process left behind (zombie or running)", left);
        let leaked = match (&self.fds_at_start, list_open_fds()) {
            (Ok(start), Ok(now)) => Ok(now.into_iter().filter(|fd| !start.contains(fd)).collect()),
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e.to_string()),
        };
        self.check_none("no file descriptor leaked", leaked);
        let secs = self.started.elapsed().as_secs_f64();
        let code = if self.failed.is_empty() {
            println!("\nall {} claims held ({secs:.2} s)", self.checks);
            ExitCode::SUCCESS
        } else {
            println!(
                "\n{} of {} claims did NOT hold ({secs:.2} s):",
                self.failed.len(),
                self.checks
            );
            for f in &self.failed {
                print_wrapped(&format!("  - {f}"), "    ");
            }
            ExitCode::FAILURE
        };
        if self.svg_failed.get() {
            // Asked for pictures and could not write one: the run did not do its job.
            println!("but an SVG could not be written (see the error above)");
            return ExitCode::from(2);
        }
        code
    }
}

impl Lesson {
    /// `what: none` held; a list, or a list that could not be made, did not.
    fn check_none(&mut self, what: &str, list: Result<Vec<i32>, String>) {
        let (shown, held) = match &list {
            Ok(v) => (none_or(v), v.is_empty()),
            Err(e) => (format!("cannot tell ({e})"), false),
        };
        self.check(format!("{what}: {shown}"), held);
    }
}

/// Every lesson's `main`: parse the flags (clap exits 2 with a message on bad ones),
/// run the story, and turn an error into a clear message and exit code 2.
pub fn main<A: clap::Parser, E: Display>(run: fn(&A) -> Result<ExitCode, E>) -> ExitCode {
    let args = A::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// Print an error the way every lesson does and give the exit code for it (2: the
/// lesson could not run, as opposed to 1: a claim did not hold).
pub fn fail(err: &dyn Display) -> ExitCode {
    // Wrapped like everything else (80 columns: stderr is often not a terminal).
    let text = wrap(&format!("error: {err}"), 80, "  ").join("\n");
    eprintln!("{text}");
    ExitCode::from(2)
}

/// Check a `--numbers` list: 1 to `max` numbers, and the square (`power` 2) or
/// cube (3) of each must fit in `T`, so that no lesson overflows (or panics) on
/// bad input.
pub fn check_numbers<T>(numbers: &[T], max: usize, power: u32) -> Result<(), String>
where
    T: Copy + Display + Into<i128> + TryFrom<i128>,
{
    if numbers.is_empty() || numbers.len() > max {
        return Err(format!(
            "--numbers takes 1 to {max} numbers, got {}",
            numbers.len()
        ));
    }
    let word = if power == 3 { "cube" } else { "square" };
    let ty = std::any::type_name::<T>();
    match numbers
        .iter()
        .find(|&&n| T::try_from(n.into().pow(power)).is_err())
    {
        Some(n) => Err(format!(
            "--numbers: the {word} of {n} does not fit in an {ty}"
        )),
        None => Ok(()),
    }
}

/// A list shown the way Python prints one: `[1, 4, 9]` (never Rust's `Debug`).
/// Lists longer than 8 show their first 6 items, `...`, and the last.
#[derive(Debug, Clone, PartialEq)]
pub struct List<'a, T>(pub &'a [T]);

impl<T: Display> Display for List<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items = self.0;
        let shown: Vec<String> = if items.len() > 8 {
            let mut v: Vec<String> = items[..6].iter().map(ToString::to_string).collect();
            v.push("...".into());
            v.push(items[items.len() - 1].to_string());
            v
        } else {
            items.iter().map(ToString::to_string).collect()
        };
        write!(f, "[{}]", shown.join(", "))?;
        if items.len() > 8 {
            write!(f, " ({} items)", items.len())?;
        }
        Ok(())
    }
}

/// `none` for an empty list, else the list and how many.
fn none_or(items: &[i32]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        format!("{} ({})", List(items), items.len())
    }
}

/// The terminal's width in columns when stdout is a terminal, else 80: every line a
/// lesson prints fits in it.
pub fn width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass; on a
    // non-terminal it fails and leaves it untouched.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col >= 40 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// Print `text`, wrapping each line at word boundaries to [`width`]; continuation
/// lines start with `indent`.
pub fn print_wrapped(text: &str, indent: &str) {
    for line in wrap(text, width(), indent) {
        println!("{line}");
    }
}

/// Wrap `text` to `width` columns (characters, not bytes) at spaces; continuation
/// lines start with `indent`. A single word longer than a line stays whole.
pub fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.chars().count() <= width {
            out.push(line.to_string());
            continue;
        }
        let lead: String = line.chars().take_while(|c| *c == ' ').collect();
        let mut cur = lead.clone();
        let mut empty = true;
        for word in line[lead.len()..].split(' ') {
            let need = cur.chars().count() + usize::from(!empty) + word.chars().count();
            if !empty && need > width {
                out.push(std::mem::take(&mut cur));
                cur = indent.to_string();
                empty = true;
            }
            if !empty {
                cur.push(' ');
            }
            cur.push_str(word);
            empty = false;
        }
        out.push(cur);
    }
    out
}

/// Under `scripts/run_all.sh --pause` (`COURSE_PAUSE=1`) with a terminal on stdin:
/// wait for Enter. Otherwise do nothing, so a lesson never reads stdin by default.
pub fn pause_for_enter(what: &str) {
    if std::env::var_os("COURSE_PAUSE").is_none_or(|v| v != "1") || !std::io::stdin().is_terminal()
    {
        return;
    }
    print!("\n  (press Enter for {what}) ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::stdin().lock().read_line(&mut String::new());
}

/// `no lock (the start)` -> `no-lock-the-start`: a title as a file name.
pub fn slug(title: &str) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        "chart".to_string()
    } else {
        words.join("-")
    }
}

fn write_svg(dir: &Path, path: &Path, svg: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(path, svg)
}

/// `YYYY-MM-DD` of a time, in UTC (days to civil date, proleptic Gregorian).
pub fn utc_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's days_from_civil, inverted: eras of 400 years from 0000-03-01.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Logical CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn locale_is_utf8() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn titles_become_file_names() {
        assert_eq!(slug("no lock (the start)"), "no-lock-the-start");
        assert_eq!(slug("Semaphore(2)"), "semaphore-2");
        assert_eq!(slug("../ /"), "chart");
    }

    #[test]
    fn utc_dates() {
        let at = |secs: u64| utc_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_709_164_800), "2024-02-29");
        assert_eq!(at(1_798_761_599), "2026-12-31");
        assert_eq!(at(1_798_761_600), "2027-01-01");
    }

    #[test]
    fn the_svg_flag_parses() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            common: CommonArgs,
        }
        let a = <Args as clap::Parser>::try_parse_from(["x", "--svg", "out", "--ascii"]).unwrap();
        assert_eq!(a.common.svg.as_deref(), Some(Path::new("out")));
        assert!(a.common.ascii);
        let a = <Args as clap::Parser>::try_parse_from(["x"]).unwrap();
        assert!(a.common.svg.is_none());
    }
}
