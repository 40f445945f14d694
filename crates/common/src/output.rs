//! What every lesson prints, the same way: a banner, numbered steps, and check lines
//! that state a claim and whether it held. [`Lesson::finish`] adds the checks every
//! lesson owes (no child process left, no file descriptor leaked) and turns the
//! result into the exit code.

use std::fmt::{Debug, Display};
use std::process::ExitCode;
use std::time::Instant;

use crate::process::{children_left, open_fds};
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
    fds_at_start: Vec<i32>,
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
        println!(
            "pid {}, {} CPUs available{}",
            std::process::id(),
            cpu_count(),
            if cfg!(debug_assertions) {
                " (unoptimised build: timings are slower than `--release`)"
            } else {
                ""
            }
        );
        println!("{rule}");
        Lesson {
            ascii,
            checks: 0,
            failed: Vec::new(),
            fds_at_start: open_fds(),
            started: Instant::now(),
            step: 0,
        }
    }

    /// Whether to draw in ASCII.
    pub fn ascii(&self) -> bool {
        self.ascii
    }

    /// A numbered step heading.
    pub fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n[{}] {title}", self.step);
    }

    /// A line of the story, indented under its step.
    pub fn say(&self, line: impl Display) {
        println!("    {line}");
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
        println!("  {mark} check: {claim}");
        if !held {
            self.failed.push(claim.to_string());
        }
        held
    }

    /// `what: actual (expected expected)`, held when they are equal.
    pub fn check_eq<T: PartialEq + Debug>(&mut self, what: &str, actual: T, expected: T) -> bool {
        let held = actual == expected;
        self.check(format!("{what}: {actual:?} (expected {expected:?})"), held)
    }

    /// A step that is broken on purpose reports what went wrong; it is not a failure.
    pub fn broken(&self, what: impl Display) {
        let mark = if self.ascii { "!!" } else { "⚠" };
        println!("  {mark} broken on purpose: {what}");
    }

    /// Draw a timeline.
    pub fn timeline(&self, tl: &Timeline, title: &str) {
        self.timeline_until(tl, title, None);
    }

    /// Draw the first `until` nanoseconds of a timeline.
    pub fn timeline_until(&self, tl: &Timeline, title: &str, until: Option<u64>) {
        println!();
        for line in tl.render_until(title, self.ascii, until).lines() {
            println!("  {line}");
        }
    }

    /// The closing checks (no child left, no fd leaked), the summary, the exit code.
    pub fn finish(mut self) -> ExitCode {
        println!();
        let left = children_left();
        self.check(
            format!("no child process left behind (zombie or running): {left:?} (expected [])"),
            left.is_empty(),
        );
        let leaked: Vec<i32> = open_fds()
            .into_iter()
            .filter(|fd| !self.fds_at_start.contains(fd))
            .collect();
        self.check(
            format!("no file descriptor leaked: {leaked:?} (expected [])"),
            leaked.is_empty(),
        );
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
                println!("  - {f}");
            }
            ExitCode::FAILURE
        }
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
    eprintln!("error: {err}");
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
