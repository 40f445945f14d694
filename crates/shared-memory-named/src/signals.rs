//! SIGTERM and SIGINT, handled so that the lesson still unlinks its names.
//!
//! A handler may call only async-signal-safe functions (signal-safety(7)), and
//! `shm_unlink` is not on that list. So the handler does the one thing that is
//! safe: it stores the signal number in an atomic. Every wait of the lesson is a
//! loop of short sleeps that looks at that flag ([`check`]) and turns it into an
//! error; the error unwinds the steps, their [`crate::Segment`] guards unlink
//! the names, and `main` then dies of the same signal, as a killed program should.
//! The handler is installed without `SA_RESTART`, so a blocking call returns early.
//!
//! SIGKILL runs nothing in the lesson: then only the resource tracker, another
//! process, can unlink what was left ([`crate::helpers`]).

use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::time::Duration;

use anyhow::bail;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// The error every wait returns once SIGTERM or SIGINT has arrived: `main` looks
/// for it in the error it prints, to know whether the signal was named there.
#[derive(Debug)]
pub struct Interrupted(pub Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store: async-signal-safe.
    CAUGHT.store(sig, SeqCst);
}

/// Catch SIGTERM and SIGINT from now on (the lesson's parent process only).
pub fn install() -> anyhow::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// In a forked child: the default actions again (a signal for the child ends it).
pub fn default_in_child() {
    set_all(SigHandler::SigDfl);
    // The parent's flag, copied by fork, is not this child's signal.
    CAUGHT.store(0, SeqCst);
}

/// For the resource tracker: ignore both (its work starts when the lesson ends).
pub fn ignore_term_and_int() {
    set_all(SigHandler::SigIgn);
}

fn set_all(handler: SigHandler) {
    let act = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: installs SIG_DFL or SIG_IGN, no handler code at all.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

/// The signal caught, if any.
pub fn caught() -> Option<Signal> {
    Signal::try_from(CAUGHT.load(SeqCst)).ok()
}

/// An error once SIGTERM or SIGINT has arrived: every wait calls this.
pub fn check() -> anyhow::Result<()> {
    match caught() {
        // Not yet cleaned up here: the error unwinds the steps, which unlink
        // their names; `main` then says what /dev/shm holds ([`end_after_cleanup`]).
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// One millisecond of a bounded wait, then [`check`].
pub fn sleep_a_little() -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(1));
    check()
}

/// Wait (at most 5 s) until `done()`; a peer that never gets there (stopped?)
/// makes it an error, and so does SIGTERM or SIGINT.
pub fn wait_until(done: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    // Time the lesson spends stopped (Ctrl-Z) is left out: see `Deadline`.
    let mut deadline = common::process::Deadline::after(Duration::from_secs(5));
    while !done() {
        if deadline.passed() {
            bail!("waited 5 s for {what} (stopped?)");
        }
        sleep_a_little()?;
    }
    Ok(())
}

/// How `main` ends: the error of `run`, if any, printed the way every lesson
/// prints one; then [`end_after_cleanup`].
pub fn end(result: anyhow::Result<std::process::ExitCode>, prefix: &str) -> std::process::ExitCode {
    let (code, outcome) = match result {
        Ok(code) => (code, Outcome::Finished),
        Err(e) => {
            let named = e.chain().any(|c| c.is::<Interrupted>());
            let outcome = if named {
                Outcome::SaidInterrupted
            } else {
                Outcome::OtherError
            };
            (common::output::fail(&format!("{e:#}")), outcome)
        }
    };
    end_after_cleanup(prefix, outcome);
    code
}

/// After the lesson has cleaned up, if a signal stopped it: say so on stderr,
/// then die of that signal (default action), so whoever started it sees what
/// happened. The flag is read once, so that a signal arriving in here is either
/// both reported and re-raised or left to end the process on its own.
/// `outcome`: how `run` ended, and whether its error named the signal.
pub fn end_after_cleanup(prefix: &str, outcome: Outcome) {
    let Some(sig) = caught() else { return };
    report(sig, prefix, outcome);
    default_in_child();
    let _ = nix::sys::signal::raise(sig);
}

/// How the lesson's `run` ended, as [`end_after_cleanup`] needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It finished every step.
    Finished,
    /// An error that says "interrupted by ..." was printed.
    SaidInterrupted,
    /// Another error was printed (a child that the same Ctrl-C killed, say).
    OtherError,
}

/// Whether any `/dev/shm` entry named `prefix*` is left. The step guards unlink
/// the names they own and the resource tracker those of killed creators; this
/// looks at the result, whoever did the work. A signal that no printed error
/// named gets its own `error:` line first, so that every caught signal has one.
fn report(sig: Signal, prefix: &str, outcome: Outcome) {
    match outcome {
        Outcome::SaidInterrupted => {}
        Outcome::Finished => {
            common::output::fail(&format!(
                "interrupted by {sig} after the lesson's last wait"
            ));
        }
        Outcome::OtherError => {
            common::output::fail(&format!("interrupted by {sig}"));
        }
    }
    let line = match crate::named::dev_shm_names(prefix) {
        Ok(left) if left.is_empty() => {
            format!("after {sig}: no /dev/shm entry named {prefix}* is left")
        }
        Ok(left) => format!("after {sig}: still in /dev/shm: {}", left.join(" ")),
        Err(e) => format!("after {sig}: cannot list /dev/shm: {e:#}"),
    };
    eprintln!("{}", common::output::wrap(&line, 80, "  ").join("\n"));
}
