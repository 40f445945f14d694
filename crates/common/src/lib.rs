//! The course kit: the machinery two or more lessons need, small enough to read in
//! a few minutes per file.
//!
//! - [`process`]: fork a child that runs a closure, join it, Python-style exit codes.
//! - [`spawn`]: start a child as a fresh copy of the program (Python's "spawn"),
//!   which runs a registered function; [`spawn::child_entry`] goes first in `main`.
//! - [`forkserver`]: start children from a server forked early (Python's
//!   "forkserver"), with the same registry of functions.
//! - [`procfs`]: what /proc says: threads, children left, open fds (fails closed).
//! - [`shm`]: memory that is really shared with forked children (`memfd` +
//!   `MAP_SHARED`), with typed [`shm::Value`] and [`shm::Array`] like
//!   `multiprocessing.Value` and `multiprocessing.Array`.
//! - [`ipc`]: make ipc-channel ready early, so a low fd limit is a clear error.
//! - [`lock`]: a robust, process-shared mutex that lives in shared memory.
//! - [`timeline`]: spans recorded by threads and forked children, drawn as a chart.
//! - [`output`]: the banner, steps and check lines every lesson prints.
//! - [`bench`](mod@bench): for the `cargo bench` targets: `--quick`, progress, best-of.
//! - [`testkit`]: for integration tests: run a lesson binary under a timeout.
//!
//! Linux only: the course is about Linux's `fork`, `memfd_create`, robust pthread
//! mutexes and `/proc`.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "this course demonstrates Linux primitives (fork, memfd_create, robust process-shared \
     mutexes, /proc); build and run it on Linux"
);

pub mod bench;
pub mod forkserver;
pub mod ipc;
pub mod lock;
pub mod output;
pub mod process;
pub mod procfs;
mod report;
pub mod shm;
pub mod spawn;
pub mod testkit;
pub mod timeline;

pub use output::Lesson;
pub use process::{Exit, ProcessError, fork};
