//! The lesson's programs link gcc's static unwinder instead of loading
//! libgcc_s.so.1 (`build.rs`). Panics must unwind as before: in this process,
//! in a forked child, and in a spawned one (a fresh exec of this binary, which
//! is linked the same way). Forks, so it runs without libtest's threads.

use std::time::Duration;

// Linked like the lesson: the unwinder comes with this package's library (its
// build.rs), which is linked only if named.
extern crate start_methods;

use common::spawn::{self, Func, Registry};

fn boom(_: ()) {
    std::panic::set_hook(Box::new(|_| {}));
    panic!("boom in a spawned child")
}

static BOOM: Func<(), ()> = Func::new("boom", boom);
static TARGETS: Registry = &[&BOOM];

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("a panic here is caught", caught_here),
    ("a forked child's panic message comes back", forked),
    ("a spawned child's panic message comes back", spawned),
    (
        "libgcc_s.so.1 is not loaded where build.rs linked the unwinder",
        no_libgcc_s,
    ),
];

fn main() {
    spawn::child_entry(TARGETS); // first: a spawned child runs `boom` here
    std::panic::set_hook(Box::new(|_| {})); // the panics below are expected
    common::testkit::run_cases(CASES);
}

fn caught_here() {
    let caught = std::panic::catch_unwind(|| panic!("boom here"));
    assert!(caught.is_err());
}

fn forked() {
    let exit = common::fork(|| -> () { panic!("boom in a forked child") })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(exit.panic.as_deref(), Some("boom in a forked child"));
}

fn spawned() {
    let outcome = spawn::start(&BOOM, &())
        .unwrap()
        .join_within(Duration::from_secs(30))
        .unwrap();
    assert_eq!(outcome.exit.code, 1);
    assert_eq!(
        outcome.exit.panic.as_deref(),
        Some("boom in a spawned child")
    );
}

/// Where `cc` finds libgcc_eh.a, build.rs links it (a native build, as this
/// test is): then the unwinder is ours and libgcc_s.so.1 is not mapped.
fn no_libgcc_s() {
    let found = std::process::Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|path| std::path::Path::new(path).is_absolute());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let loaded = maps.contains("libgcc_s.so");
    match found {
        Some(path) => assert!(!loaded, "{path} exists, yet libgcc_s.so.1 is mapped"),
        None => println!("  (cc knows no libgcc_eh.a here: build.rs linked nothing)"),
    }
}
