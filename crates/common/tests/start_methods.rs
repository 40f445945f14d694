//! The three start methods of the kit (fork, spawn, forkserver) return results and
//! Python's exit codes: 0, the code the child chose, 1 for a panic, -9 for
//! SIGKILL. A spawned child is a fresh copy of THIS binary, so its `main` calls the
//! spawn entry hook first; then it runs the cases on one thread
//! (`harness = false`: libtest's threads would make fork refuse).

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::forkserver::{self, ForkServer};
use common::process::{Joined, children_left, exit_now, open_fds};
use common::spawn::{self, Func, Registry, StartError};

fn square(n: i64) -> i64 {
    n * n
}

fn chosen_code(code: i32) {
    exit_now(code);
}

fn panics(msg: String) {
    // An expected panic: the test reads its message from the exit, so the default
    // hook need not print it (a green run prints no panic text).
    std::panic::set_hook(Box::new(|_| {}));
    panic!("{msg}");
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A big result: the parent must read it while the child writes (no deadlock).
fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

/// What a spawned child sees of its own start: whether stdin is /dev/null (as
/// in Python's children) and its parent-death signal.
fn own_start(_: ()) -> (bool, i32) {
    // SAFETY: all-zero `stat`s are valid values for fstat/stat to overwrite.
    let (mut stdin, mut null): (libc::stat, libc::stat) = unsafe { std::mem::zeroed() };
    // SAFETY: fstat and stat write one `stat` each into valid memory.
    let is_null = unsafe {
        libc::fstat(0, &mut stdin) == 0
            && libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
            && (stdin.st_dev, stdin.st_ino, stdin.st_rdev)
                == (null.st_dev, null.st_ino, null.st_rdev)
    };
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int into valid memory.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    (is_null, sig)
}

/// Leaves a file behind: proof that the function ran.
fn touch(path: String) {
    std::fs::write(path, b"ran").expect("write the marker");
}

/// For `start_with`: 0 if the value came whole.
fn is_68(value: i64) -> i32 {
    i32::from(value != 68)
}

static SQUARE: Func<i64, i64> = Func::new("square", square);
static TOUCH: Func<String, ()> = Func::new("touch", touch);
static OWN_START: Func<(), (bool, i32)> = Func::new("own_start", own_start);
static CHOSEN: Func<i32, ()> = Func::new("chosen_code", chosen_code);
static PANICS: Func<String, ()> = Func::new("panics", panics);
static SLEEPS: Func<u64, ()> = Func::new("sleeps", sleeps);
static BIG: Func<usize, Vec<u8>> = Func::new("big", big);
/// Deliberately not in the registry.
static MISSING: Func<i64, i64> = Func::new("missing", square);

static TARGETS: Registry = &[&SQUARE, &CHOSEN, &PANICS, &SLEEPS, &BIG, &OWN_START, &TOUCH];

const PATIENCE: Duration = Duration::from_secs(20);

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("spawn: a returned value, exit code 0", || {
        returns(Method::Spawn)
    }),
    ("spawn: the code the child chose", || chosen(Method::Spawn)),
    ("spawn: a panic gives 1 and its message", || {
        panic_one(Method::Spawn)
    }),
    ("spawn: SIGKILL gives -9", || sigkill(Method::Spawn)),
    ("spawn: the watchdog kills a stuck child", || {
        watchdog(Method::Spawn)
    }),
    ("spawn: a big result arrives whole", || {
        big_result(Method::Spawn)
    }),
    ("spawn: an unregistered function is a clear error", || {
        unregistered(Method::Spawn)
    }),
    ("forkserver: a returned value, exit code 0", || {
        returns(Method::Server)
    }),
    ("forkserver: the code the child chose", || {
        chosen(Method::Server)
    }),
    ("forkserver: a panic gives 1 and its message", || {
        panic_one(Method::Server)
    }),
    ("forkserver: SIGKILL gives -9", || sigkill(Method::Server)),
    ("forkserver: the watchdog kills a stuck child", || {
        watchdog(Method::Server)
    }),
    ("forkserver: a big result arrives whole", || {
        big_result(Method::Server)
    }),
    (
        "forkserver: an unregistered function is a clear error",
        || unregistered(Method::Server),
    ),
    (
        "forkserver: children start from any thread; the server's are not ours",
        from_threads,
    ),
    (
        "forkserver: stopping the server kills its running children",
        stop_kills_children,
    ),
    (
        "forkserver: stop just after a SIGSTOP kills the server within 1 s",
        stop_right_after_sigstop,
    ),
    (
        "forkserver: start is refused once threads run",
        refused_with_threads,
    ),
    ("fork: exit codes 0, 5, 1 and -9, side by side", fork_codes),
    (
        "spawn: the child has its parent-death signal, and /dev/null on stdin",
        spawned_own_start,
    ),
    (
        "spawn: a marker command line not from its parent is refused, stdin untouched",
        marker_by_hand,
    ),
    (
        "forkserver start_with: a channel end crosses; exit codes 0, 5, 1 and -9",
        start_with_codes,
    ),
    (
        "forkserver start_with: a 3 MB value; a stopped server is refused at once",
        start_with_faults,
    ),
    (
        "a patience past any clock waits, never panics (spawn, forkserver)",
        huge_patience,
    ),
    (
        "a forkserver start that failed never runs its function later",
        failed_start_never_runs,
    ),
    (
        "Ctrl-Z for 5.5 s, then fg: spawn and forkserver starts go on",
        stopped_job_goes_on,
    ),
];

fn main() {
    spawn::child_entry(TARGETS); // first: a spawned child runs its function here
    if std::env::var("START_METHODS_SCENARIO").as_deref() == Ok("starts-for-8-s") {
        starts_for_8_s();
        return;
    }
    common::testkit::run_cases(CASES);
}

/// A job (this binary, in a process group of its own) that starts children by
/// spawn and forkserver for 8 s is stopped as a whole, as Ctrl-Z stops it, for
/// 5.5 s (longer than a start may take, START_TIMEOUT), then continued. The time
/// it spent stopped is nobody's fault: no start may fail for it.
fn stopped_job_goes_on() {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let pid = std::process::Command::new(exe)
        .env("START_METHODS_SCENARIO", "starts-for-8-s")
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
        .id() as i32;
    // Joined, or killed when dropped, whatever happens below.
    let mut job = common::process::Child::from_spawned(pid);
    let group = Pid::from_raw(-pid);
    std::thread::sleep(Duration::from_secs(1));
    kill(group, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(5500));
    kill(group, Signal::SIGCONT).unwrap();
    let exit = job.join_within(Duration::from_secs(30)).unwrap();
    assert_eq!(exit.code, 0, "the job ended with {exit}");
}

fn starts_for_8_s() {
    let server = forkserver::start().expect("start the fork server");
    let begun = std::time::Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let mut failure = |e: StartError| {
        failed += 1;
        eprintln!("a start failed: {e}");
    };
    while begun.elapsed() < Duration::from_secs(8) {
        for method in [Method::Spawn, Method::Server] {
            let started = match method {
                Method::Spawn => spawn::start(&SQUARE, &3),
                Method::Server => server.start(&SQUARE, &3),
            };
            match started.and_then(|mut s| s.join_within(Duration::from_secs(30))) {
                Ok(outcome) if outcome.value == Some(9) => ok += 1,
                Ok(outcome) => panic!("a child ended with {}", outcome.exit),
                Err(e) => failure(e),
            }
        }
        // And a child that takes its value on a channel, after the start.
        let joined = server
            .start_with(is_68, 68)
            .and_then(|mut s| s.join_timeout(Duration::from_secs(30)));
        match joined {
            Ok(Some(exit)) if exit.success() => ok += 1,
            Ok(end) => panic!("a start_with child: {end:?}"),
            Err(e) => failure(e),
        }
    }
    server.stop().expect("stop the fork server");
    eprintln!("{ok} children ran, {failed} starts failed");
    assert!(
        ok > 100 && failed == 0,
        "{ok} children ran, {failed} failed"
    );
}

#[derive(Clone, Copy)]
enum Method {
    Spawn,
    Server,
}

/// Run `f` with a way to start children by `method`, then check that nothing is
/// left: no child process, no fd.
fn with_method(method: Method, f: impl FnOnce(&dyn Fn(Req) -> Started)) {
    let fds = open_fds();
    {
        let server = match method {
            Method::Server => Some(forkserver::start().expect("start the fork server")),
            Method::Spawn => None,
        };
        f(&|req| start(server.as_ref(), req));
        if let Some(server) = server {
            let exit = server.stop().expect("stop the fork server");
            assert_eq!(exit.code, 0, "the server ended with {exit}");
        }
    }
    assert_eq!(children_left(), vec![], "children left");
    assert_eq!(open_fds(), fds, "fds leaked");
}

/// One request, its result type erased for the table above.
enum Req {
    Square(i64),
    Chosen(i32),
    Panics(String),
    Sleeps(u64),
    Big(usize),
    Missing,
}

enum Started {
    Unit(spawn::Started<()>),
    Int(spawn::Started<i64>),
    Bytes(spawn::Started<Vec<u8>>),
    Error(StartError),
}

fn start(server: Option<&ForkServer>, req: Req) -> Started {
    macro_rules! go {
        ($func:expr, $arg:expr, $variant:ident) => {
            match server {
                Some(s) => s.start($func, $arg),
                None => spawn::start($func, $arg),
            }
            .map_or_else(Started::Error, Started::$variant)
        };
    }
    match req {
        Req::Square(n) => go!(&SQUARE, &n, Int),
        Req::Chosen(c) => go!(&CHOSEN, &c, Unit),
        Req::Panics(m) => go!(&PANICS, &m, Unit),
        Req::Sleeps(ms) => go!(&SLEEPS, &ms, Unit),
        Req::Big(n) => go!(&BIG, &n, Bytes),
        Req::Missing => go!(&MISSING, &1, Int),
    }
}

fn unit(s: Started) -> spawn::Started<()> {
    match s {
        Started::Unit(s) => s,
        Started::Error(e) => panic!("start failed: {e}"),
        _ => panic!("wrong type"),
    }
}

/// The server is stopped, so the start gives up after START_TIMEOUT. Once the
/// server goes on, it forks a child for that old request; the argument is all
/// there, but the program has closed its end: the child must not run.
fn failed_start_never_runs() {
    let marker = std::env::temp_dir().join(format!("start-methods-{}-ran", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let server = forkserver::start().expect("start the fork server");
    let pid = Pid::from_raw(server.pid());
    kill(pid, Signal::SIGSTOP).unwrap();
    let path = marker.to_string_lossy().into_owned();
    let started = server.start(&TOUCH, &path);
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(started.is_err(), "a stopped server answered");
    std::thread::sleep(Duration::from_millis(500));
    let ran = marker.exists();
    let _ = std::fs::remove_file(&marker);
    assert!(!ran, "the function ran after its start had failed");
    server.stop().expect("stop the fork server");
}

fn huge_patience() {
    for method in [Method::Spawn, Method::Server] {
        with_method(method, |start| {
            let Started::Int(mut child) = start(Req::Square(6)) else {
                panic!("start failed")
            };
            let out = child.join_within(Duration::MAX).expect("join");
            assert_eq!((out.exit.code, out.value), (0, Some(36)));
        });
    }
}

fn returns(method: Method) {
    with_method(method, |start| {
        let Started::Int(mut child) = start(Req::Square(7)) else {
            panic!("start failed")
        };
        let out = child.join_within(PATIENCE).expect("join");
        assert_eq!((out.exit.code, out.value), (0, Some(49)));
        assert!(child.pid() > 0 && !out.killed);
    });
}

fn chosen(method: Method) {
    with_method(method, |start| {
        let mut child = unit(start(Req::Chosen(5)));
        let out = child.join_within(PATIENCE).expect("join");
        assert_eq!((out.exit.code, out.value), (5, None));
    });
}

fn panic_one(method: Method) {
    with_method(method, |start| {
        let mut child = unit(start(Req::Panics("boom".into())));
        let out = child.join_within(PATIENCE).expect("join");
        assert_eq!(out.exit.code, 1);
        assert_eq!(out.exit.panic.as_deref(), Some("boom"));
        assert_eq!(out.value, None);
    });
}

fn sigkill(method: Method) {
    with_method(method, |start| {
        let mut child = unit(start(Req::Sleeps(30_000)));
        child.kill();
        let out = child.join_within(PATIENCE).expect("join");
        assert_eq!(out.exit.code, -9);
        assert_eq!(out.exit.to_string(), "exitcode -9 (killed by SIGKILL)");
    });
}

fn watchdog(method: Method) {
    with_method(method, |start| {
        let mut child = unit(start(Req::Sleeps(30_000)));
        let out = child
            .join_or_kill(Duration::from_millis(200))
            .expect("join");
        assert!(out.killed);
        assert_eq!(out.exit.code, -9);
        let mut child = unit(start(Req::Sleeps(30_000)));
        let err = child.join_within(Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not end within"), "{err}");
    });
}

fn big_result(method: Method) {
    with_method(method, |start| {
        let Started::Bytes(mut child) = start(Req::Big(3_000_000)) else {
            panic!("start failed")
        };
        let out = child.join_within(PATIENCE).expect("join");
        assert_eq!(out.exit.code, 0);
        assert_eq!(out.value.map(|v| v.len()), Some(3_000_000));
    });
}

fn unregistered(method: Method) {
    with_method(method, |start| {
        let Started::Error(e) = start(Req::Missing) else {
            panic!("a function missing from the registry started")
        };
        assert!(e.to_string().contains("not in the registry"), "{e}");
    });
}

fn from_threads() {
    let server = forkserver::start().expect("start");
    let results: Vec<(i32, Option<i64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3i64)
            .map(|n| {
                let server = &server;
                s.spawn(move || {
                    let mut c = server.start(&SQUARE, &n).expect("start");
                    let out = c.join_within(PATIENCE).expect("join");
                    (out.exit.code, out.value)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(results, vec![(0, Some(1)), (0, Some(4)), (0, Some(9))]);
    // While it runs, the server is our only child: its children are its own.
    let mut c = server.start(&SLEEPS, &30_000).expect("start");
    let ours: Vec<i32> = children_left().iter().map(|&(pid, _)| pid).collect();
    assert_eq!(ours, vec![server.pid()]);
    c.kill();
    assert_eq!(c.join_within(PATIENCE).expect("join").exit.code, -9);
    server.stop().expect("stop");
}

fn stop_kills_children() {
    let server = forkserver::start().expect("start");
    let mut c = server.start(&SLEEPS, &30_000).expect("start");
    let pid = c.pid();
    server.stop().expect("stop");
    // The server killed and reaped its child before it exited, and said so.
    assert!(
        common::procfs::state_of(pid).is_none(),
        "pid {pid} still there"
    );
    c.kill(); // the pidfd names the dead child: a no-op, not another process
    let out = c.join_within(PATIENCE).expect("join");
    assert_eq!(out.exit.code, -9);
}

/// A SIGSTOP takes effect a moment after kill(2) returns, so a single look at
/// the server's state, made at once, still sees it running; stop must not then
/// wait out its whole bound for a server that will read nothing.
fn stop_right_after_sigstop() {
    for _ in 0..20 {
        let server = forkserver::start().expect("start");
        let pid = server.pid();
        let t = std::time::Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("stop");
        let exit = server.stop().expect("stop");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        assert!(exit.code == -9 || exit.code == 0, "exit code {}", exit.code);
        assert!(
            common::procfs::state_of(pid).is_none(),
            "pid {pid} still there"
        );
    }
}

fn refused_with_threads() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let err = forkserver::start().unwrap_err();
    drop(tx);
    t.join().expect("thread");
    assert!(err.to_string().contains("refusing to fork"), "{err}");
}

fn fork_codes() {
    let codes: Vec<i32> = [0, 5, 1, -9]
        .into_iter()
        .map(|want| {
            let mut child = common::fork(move || match want {
                0 | 5 => want,
                1 => {
                    std::panic::set_hook(Box::new(|_| {})); // expected: kept quiet
                    panic!("boom")
                }
                _ => {
                    std::thread::sleep(Duration::from_secs(30));
                    0
                }
            })
            .expect("fork");
            if want == -9 {
                child.kill().expect("kill");
            }
            child.join_within(PATIENCE).expect("join").code
        })
        .collect();
    assert_eq!(codes, vec![0, 5, 1, -9]);
}

/// A `start_with` child: answers on the channel end it was handed, then ends
/// with the code it was asked for (`-1`: panic, `-2`: wait to be killed).
fn answer(req: (ipc_channel::ipc::IpcSender<i64>, i64, i32)) -> i32 {
    let (reply, n, code) = req;
    reply.send(n * n).expect("reply");
    match code {
        -1 => {
            std::panic::set_hook(Box::new(|_| {})); // expected: kept quiet
            panic!("asked to panic")
        }
        -2 => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        code => code,
    }
}

fn start_with_codes() {
    let server = forkserver::start().expect("start");
    let mut codes = Vec::new();
    for (n, code) in [(3, 0), (4, 5), (5, -1), (6, -2)] {
        let (tx, rx) = ipc_channel::ipc::channel::<i64>().expect("channel");
        let mut child = server
            .start_with(answer, (tx, n, code))
            .expect("start_with");
        assert_eq!(rx.recv().expect("answer"), n * n);
        if code == -2 {
            child.kill();
        }
        match child.join_or_kill(PATIENCE).expect("join") {
            Joined::Finished(exit) => codes.push(exit.code),
            Joined::Killed(_) => panic!("pid {} did not end", child.pid()),
        }
    }
    assert_eq!(codes, vec![0, 5, 1, -9]);
    // A function outside the executable's code is refused before anything starts.
    let heap = Box::new([0u8; 16]);
    // SAFETY: a fn pointer need only be non-null to exist; this one is never called.
    let f: fn(i64) -> i32 = unsafe { std::mem::transmute(heap.as_ptr()) };
    let err = server.start_with(f, 1).unwrap_err().to_string();
    assert!(err.contains("not in the executable"), "{err}");
    server.stop().expect("stop");
}

fn spawned_own_start() {
    let fds = open_fds();
    let mut child = spawn::start(&OWN_START, &()).expect("start");
    let out = child.join_within(PATIENCE).expect("join");
    assert_eq!(out.exit.code, 0);
    assert_eq!(out.value, Some((true, libc::SIGKILL)));
    drop(child); // its socket
    assert_eq!(children_left(), vec![]);
    assert_eq!(open_fds(), fds, "fds leaked");
}

/// Run this binary with the spawn marker and `parent`, stdin from /dev/null:
/// its exit code and stderr.
fn by_hand(parent: u32) -> (Option<i32>, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([spawn::MARKER, "square", &parent.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn marker_by_hand() {
    // Another parent's pid: the child is not the one a parent waits for.
    let (code, err) = by_hand(1);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the parent, pid 1, is gone"), "{err}");
    // Our pid, but stdin is /dev/null, not a socket: refused, not taken.
    let (code, err) = by_hand(std::process::id());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stdin is not the parent's socket"), "{err}");
}

/// The length of what it was handed.
fn length(bytes: Vec<u8>) -> i32 {
    (bytes.len() >> 20) as i32
}

fn start_with_faults() {
    let server = forkserver::start().expect("start");
    // A value bigger than a socket buffer crosses while the child reads it.
    let mut child = server.start_with(length, vec![7u8; 3 << 20]).expect("big");
    let exit = child.join_timeout(PATIENCE).expect("join").expect("ended");
    assert_eq!(exit.code, 3);
    // A stopped server is refused at once, and nothing runs when it wakes.
    kill(Pid::from_raw(server.pid()), Signal::SIGSTOP).expect("stop");
    while common::procfs::state_of(server.pid()) != Some('T') {
        std::thread::sleep(Duration::from_millis(1)); // the signal is on its way
    }
    let t = std::time::Instant::now();
    let err = server.start_with(length, vec![]).unwrap_err().to_string();
    assert!(err.contains("stopped"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    kill(Pid::from_raw(server.pid()), Signal::SIGCONT).expect("cont");
    server.stop().expect("stop");
}
