//! What every lesson prints, the same way: a banner, numbered steps, and check lines
//! that state a claim and whether it held. [`Lesson::finish`] adds the checks every
//! lesson owes (no child process left, no file descriptor leaked) and turns the
//! result into the exit code.

use std::fmt::Display;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Instant;

use crate::process::{list_children, list_open_fds};
use crate::timeline::Timeline;

/// Flags every lesson has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Draw with plain ASCII instead of Unicode blocks (also the default when the
    /// locale is not UTF-8).
    #[arg(long)]
    pub ascii: bool,
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

    /// Draw the first `until` nanoseconds of a timeline.
    pub fn timeline_until(&self, tl: &Timeline, title: &str, until: Option<u64>) {
        println!();
        for line in tl
            .render_until(title, self.ascii, until, width().saturating_sub(2))
            .lines()
        {
            println!("  {line}");
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
        if self.failed.is_empty() {
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
        }
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
