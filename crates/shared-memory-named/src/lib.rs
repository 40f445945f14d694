//! The mechanism of the shared-memory-named lesson, kept out of `main.rs` so that
//! the lesson reads as a story and the benchmark can use it:
//!
//! - [`named`]: a named segment (`shm_open` + `ftruncate` + `mmap(MAP_SHARED)`),
//!   `close` and `unlink`, and a `ShareableList` of atomics inside one.
//! - [`helpers`]: the lesson's binary started again with exec: the other program
//!   that attaches by name, and the resource tracker.
//! - [`signals`]: SIGTERM and SIGINT turned into a flag every wait looks at.
//! - [`manager`]: a `Manager().dict()`: a server process and its proxies.

pub mod helpers;
pub mod manager;
pub mod named;
pub mod signals;

pub use named::Segment;

/// Every name this lesson creates starts with this, then its PID.
pub const PREFIX: &str = "course-named-";

/// The name for `what`, unique to this run: `course-named-<pid>-<what>`.
pub fn name_for(what: &str) -> String {
    format!("{PREFIX}{}-{what}", std::process::id())
}
