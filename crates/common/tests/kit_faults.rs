//! The kit under faults: leaked lock guards, absurd sizes and timeouts, no /proc,
//! a child stopped before it is protected, SIGCHLD ignored, a recycled PID.
//! Forks, so it runs without libtest's threads (`harness = false`); a case that
//! needs a fresh process (a signal disposition, a namespace, its own death) re-runs
//! this binary with `KIT_FAULTS_SCENARIO` set.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fork;
use common::lock::{Robustness, SharedLock, ShmMutex};
use common::process::{Child, children_left, exit_now, open_fds};
use common::shm::{Array, Gate, Region, ShmError, Value};
use common::timeline::Timeline;

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    (
        "leaked guard: dropping the Value, Array or Lock keeps its mapping",
        leaked_guard_then_drop,
    ),
    (
        "leaked guard on a live thread: the thread locks again safely",
        leaked_guard_on_a_thread,
    ),
    (
        "leaked guard, then fork: each side drops its copy safely",
        leaked_guard_then_fork,
    ),
    ("huge sizes are a clear error, never a wrap", huge_sizes),
    ("huge timeouts wait, never panic", huge_timeouts),
    (
        "without /proc: fork asks the kernel, the leak checks cannot pass",
        without_proc,
    ),
    (
        "unshare(2) blocked: fork counts /proc; without /proc it refuses",
        unshare_blocked,
    ),
    (
        "a child stopped before its parent-death signal is not left behind",
        stopped_before_pdeathsig,
    ),
    (
        "a parent stopped while its child starts: the stop is not held against the child",
        parent_stopped_during_start,
    ),
    (
        "children reaped behind the kit's back: a clear error, no slot kept",
        reaped_elsewhere,
    ),
    (
        "children in a PID namespace the parent is not in still run",
        child_in_new_pid_namespace,
    ),
    (
        "a parent killed after fork takes its children with it",
        parent_killed_after_fork,
    ),
    (
        "with SIGCHLD ignored, join still gives the exit code",
        sigchld_ignored,
    ),
    (
        "kill and drop signal through the pidfd, never a recycled PID",
        recycled_pid_is_not_signalled,
    ),
    (
        "join_or_kill and drop of a stopped child keep their bound",
        stopped_child_is_bounded,
    ),
    (
        "a child killed by a real-time signal gives -N, not a lost exit",
        realtime_signal_exit,
    ),
];

fn main() {
    match std::env::var("KIT_FAULTS_SCENARIO").as_deref() {
        Ok("no-proc") => no_proc_scenario(),
        Ok("unshare-blocked") => unshare_blocked_scenario(),
        Ok("parent-stopped") => parent_stopped_scenario(),
        Ok("reaped-elsewhere") => reaped_elsewhere_scenario(),
        Ok("new-pid-namespace") => new_pid_namespace_scenario(),
        Ok("stop-before-pdeathsig") => stop_before_pdeathsig_scenario(),
        Ok("die-after-fork") => die_after_fork_scenario(),
        Ok("sigchld-ignored") => sigchld_ignored_scenario(),
        Ok("pid-reuse") => pid_reuse_scenario(),
        Ok(other) => panic!("unknown scenario {other}"),
        Err(_) => common::testkit::run_cases(CASES),
    }
}

/// Run `f` in a forked child; its exit code (or -signal).
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    fork(f).expect("fork").join().expect("join").code
}

/// Try to put an inaccessible page where a dropped region was. If the region was
/// unmapped, this succeeds, and any later write to it (glibc's robust list) faults.
fn occupy(addr: *const u8) {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it maps a new
    // PROT_NONE page only if the address range is free, else fails (EEXIST).
    unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        );
    }
}

fn still_mapped(addr: *const u8) -> bool {
    common::shm::maps_line(addr).is_some_and(|l| l.contains("rw-s"))
}

/// Lock and unlock a fresh Value: glibc links it into this thread's robust list,
/// next to any mutex still on it.
fn lock_another() {
    let other = Value::<i64>::new(0).unwrap();
    drop(other.get_lock().lock().unwrap());
}

fn leaked_guard_then_drop() {
    let code = in_child(|| {
        let v = Value::<i64>::new(1).unwrap();
        let addr = v.as_ptr();
        std::mem::forget(v.get_lock().lock().unwrap());
        drop(v);
        occupy(addr);
        lock_another();
        if !still_mapped(addr) {
            return 10;
        }
        let a = Array::<i32>::new(3).unwrap();
        let addr = a.region().as_ptr() as *const u8;
        std::mem::forget(a.get_lock().lock().unwrap());
        drop(a);
        occupy(addr);
        lock_another();
        if !still_mapped(addr) {
            return 11;
        }
        let l = SharedLock::new(Robustness::Robust).unwrap();
        let addr = &*l as *const ShmMutex as *const u8;
        std::mem::forget(l.lock().unwrap());
        drop(l);
        occupy(addr);
        lock_another();
        if !still_mapped(addr) {
            return 12;
        }
        // Nothing held: the mapping goes away as usual.
        let v = Value::<i64>::new(1).unwrap();
        let addr = v.as_ptr();
        drop(v.get_lock().lock().unwrap());
        drop(v);
        if still_mapped(addr) {
            return 13;
        }
        0
    });
    assert_eq!(code, 0, "exit 10..12: unmapped while held; -11: SIGSEGV");
}

fn leaked_guard_on_a_thread() {
    let code = in_child(|| {
        let v = Arc::new(Value::<i64>::new(1).unwrap());
        let addr = v.as_ptr();
        let (locked_tx, locked_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let theirs = Arc::clone(&v);
        let t = std::thread::spawn(move || {
            std::mem::forget(theirs.get_lock().lock().unwrap());
            drop(theirs);
            locked_tx.send(()).unwrap();
            let _ = go_rx.recv_timeout(Duration::from_secs(5));
            lock_another(); // on this thread's robust list, beside the leaked one
        });
        locked_rx.recv().unwrap();
        drop(v); // the last handle, on another thread than the holder
        occupy(addr);
        go_tx.send(()).unwrap();
        t.join().unwrap();
        if still_mapped(addr) { 0 } else { 10 }
    });
    assert_eq!(code, 0, "exit 10: unmapped while held; -11: SIGSEGV");
}

fn leaked_guard_then_fork() {
    let code = in_child(|| {
        let v = Value::<i64>::new(1).unwrap();
        let addr = v.as_ptr();
        std::mem::forget(v.get_lock().lock().unwrap());
        // Child: glibc gives it an empty robust list, so its copy may be unmapped.
        let grandchild = fork(move || {
            drop(v);
            occupy(addr);
            lock_another();
            if still_mapped(addr) { 20 } else { 0 }
        });
        // Parent: the closure (and its `v`) was dropped here, with the lock held.
        occupy(addr);
        lock_another();
        let g = grandchild.unwrap().join().unwrap().code;
        match (still_mapped(addr), g) {
            (true, 0) => 0,
            (false, _) => 10,
            (_, g) => g,
        }
    });
    assert_eq!(code, 0, "10: unmapped while held; 20: grandchild kept it");
}

fn huge_sizes() {
    let code = in_child(|| {
        let sizes = [usize::MAX / 40 + 1, usize::MAX / 2, usize::MAX];
        for (i, &n) in sizes.iter().enumerate() {
            let i = i as i32;
            if !matches!(Timeline::new(n), Err(ShmError::TooLarge { .. })) {
                return 10 + i;
            }
            if !matches!(Region::new(n, "r"), Err(ShmError::TooLarge { .. })) {
                return 20 + i;
            }
            if !matches!(Array::<i64>::new(n), Err(ShmError::TooLarge { .. })) {
                return 30 + i;
            }
        }
        0
    });
    assert_eq!(
        code, 0,
        "10+: Timeline, 20+: Region, 30+: Array; -11: SIGSEGV"
    );
    let err = Timeline::new(usize::MAX / 40 + 1).unwrap_err().to_string();
    assert!(err.contains("cannot allocate timeline"), "{err}");
}

fn huge_timeouts() {
    let mut child = fork(|| 4).unwrap();
    let exit = child.join_timeout(Duration::MAX).unwrap().unwrap();
    assert_eq!(exit.code, 4);
    let mut child = fork(|| 5).unwrap();
    assert_eq!(
        child.join_or_kill(Duration::MAX).unwrap(),
        common::process::Joined::Finished(exit_with(5))
    );
    let gate = Gate::new().unwrap();
    gate.open();
    assert!(gate.wait(Duration::MAX));
    let lock = SharedLock::new(Robustness::Robust).unwrap();
    assert!(lock.try_lock_for(Duration::MAX).is_ok());
}

fn exit_with(code: i32) -> common::Exit {
    common::Exit { code, panic: None }
}

// ---- scenarios in a fresh process -------------------------------------------

/// What a scenario run printed and how it ended.
struct Outcome {
    code: Option<i32>,
    out: String,
}

/// Run this binary as `scenario`, through `wrapper` (e.g. `unshare ...`) if given;
/// output goes to a file, so a process left behind holding it cannot hang us.
fn scenario(name: &str, wrapper: &[&str], ignore_sigchld: bool) -> Option<Outcome> {
    let exe = std::env::current_exe().unwrap();
    let path = std::env::temp_dir().join(format!("kit-faults-{}-{name}", std::process::id()));
    let file = fs::File::create(&path).unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.env("KIT_FAULTS_SCENARIO", name)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    if ignore_sigchld {
        // SAFETY: signal() is async-signal-safe; it runs in the child before exec,
        // and SIG_IGN survives exec: the scenario starts with SIGCHLD ignored.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::remove_file(&path);
    assert!(status.is_some(), "scenario {name} hung\n{out}");
    Some(Outcome {
        code: status.unwrap().code(),
        out,
    })
}

/// Run inside a new user, mount (and PID) namespace, where we may hide /proc or
/// choose the next PID without being root. None if namespaces are not available.
fn in_namespaces(name: &str, flags: &str) -> Option<Outcome> {
    let probe = Command::new("unshare")
        .args([flags, "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("  (skipped: `unshare {flags}` is not available here)");
        return None;
    }
    scenario(name, &["unshare", flags], false)
}

fn without_proc() {
    let Some(run) = in_namespaces("no-proc", "-Urm") else {
        return;
    };
    assert_eq!(run.code, Some(0), "{}", run.out);
    for line in [
        // unshare(CLONE_THREAD) says the process is alone: no need for /proc.
        "fork: ran, exitcode 0",
        "fork, beside a thread: refused: refusing to fork: this process runs 2 threads",
        // With unshare blocked, only /proc could say: fork refuses, never guesses.
        "fork, unshare blocked: refused: cannot read /proc",
        "children_left: panicked",
        "open_fds: panicked",
        "list_children: cannot read /proc",
        "list_open_fds: cannot read /proc",
        "- no child process left behind (zombie or running): cannot tell (cannot read",
        "- no file descriptor leaked: cannot tell (cannot read /proc",
        "lesson finish failed: true",
    ] {
        assert!(run.out.contains(line), "no {line:?} in\n{}", run.out);
    }
}

fn no_proc_scenario() {
    // Hide /proc under an empty tmpfs (we are root in our own user namespace).
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "none", "/proc"])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "cannot hide /proc");
    try_fork("fork");
    try_fork_beside_a_thread();
    block_unshare();
    try_fork("fork, unshare blocked");
    quiet_panics();
    for (name, f) in [
        ("children_left", (|| drop(children_left())) as fn()),
        ("open_fds", || drop(open_fds())),
    ] {
        match std::panic::catch_unwind(f) {
            Ok(()) => println!("{name}: returned"),
            Err(_) => println!("{name}: panicked"),
        }
    }
    match common::process::list_children() {
        Ok(v) => println!("list_children: {} children", v.len()),
        Err(e) => println!("list_children: {e}"),
    }
    match common::process::list_open_fds() {
        Ok(v) => println!("list_open_fds: {} fds", v.len()),
        Err(e) => println!("list_open_fds: {e}"),
    }
    // A lesson's closing checks fail: they could not look.
    let args = common::output::CommonArgs {
        ascii: true,
        svg: None,
    };
    let lesson = common::Lesson::start("no-proc", "?", "-", &args);
    let failed = lesson.finish() == std::process::ExitCode::FAILURE;
    println!("lesson finish failed: {failed}");
}

fn unshare_blocked() {
    let run = scenario("unshare-blocked", &[], false).expect("the scenario runs");
    assert_eq!(run.code, Some(0), "{}", run.out);
    for line in [
        "fork: ran, exitcode 0",
        "fork, beside a thread: refused: refusing to fork: this process runs 2 threads",
    ] {
        assert!(run.out.contains(line), "no {line:?} in\n{}", run.out);
    }
}

fn unshare_blocked_scenario() {
    block_unshare();
    try_fork("fork");
    try_fork_beside_a_thread();
}

/// Fork a child that ends with 0, and say what happened.
fn try_fork(what: &str) {
    try_fork_code(what, 0);
}

/// [`try_fork`] while another thread is parked (the fork must be refused).
fn try_fork_beside_a_thread() {
    let (stop, parked) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || parked.recv());
    try_fork("fork, beside a thread");
    drop(stop);
    let _ = thread.join();
}

/// Make unshare(2) fail with EPERM from now on, as a container runtime's seccomp
/// profile does: a classic BPF filter on the system call number.
fn block_unshare() {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
        libc::sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_unshare as u32,
        },
        stmt(
            BPF_RET | BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with plain flags; PR_SET_SECCOMP reads the filter program,
    // which outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
            0,
            "cannot install a seccomp filter"
        );
        assert_eq!(libc::unshare(libc::CLONE_THREAD), -1, "unshare not blocked");
    }
}

/// Silence the default panic message: the panics that follow are expected.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// The pid in a line `... pid N ...` of a scenario's output.
fn pid_in(out: &str, tag: &str) -> i32 {
    let line = out
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no line {tag:?} in\n{out}"));
    let after = &line[line.find("pid ").expect("a pid") + 4..];
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether `pid` still exists (running, stopped or zombie), and its state.
fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Wait up to 2 s for `pid` to be dead (gone, or a zombie left for init to reap);
/// if it is not, kill it (cleanup) and say what state it was in.
fn gone_or_kill(pid: i32) -> Result<(), char> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(state) = state_of(pid).filter(|&s| s != 'Z') {
        if Instant::now() > deadline {
            // SAFETY: kill takes a pid and a signal; cleanup of our own leftover.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(state);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn stopped_before_pdeathsig() {
    let run = scenario("stop-before-pdeathsig", &[], false).unwrap();
    let pid = pid_in(&run.out, "child");
    assert_eq!(
        gone_or_kill(pid),
        Ok(()),
        "child pid {pid} outlived its parent\n{}",
        run.out
    );
    assert!(run.out.contains("fork: refused"), "{}", run.out);
}

fn parent_stopped_during_start() {
    let run = scenario("parent-stopped", &[], false).expect("the scenario runs");
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(run.out.contains("fork: ran, exitcode 3"), "{}", run.out);
}

extern "C" fn stop_parent() {
    // In the child inside fork(), before its start word: stop the parent (as
    // Ctrl-Z stops the whole job), and let it go on 5.5 s later, past
    // START_TIMEOUT. Only async-signal-safe calls here.
    // SAFETY: fork, kill, nanosleep and _exit are async-signal-safe system
    // calls on valid arguments.
    unsafe {
        let parent = libc::getppid();
        libc::kill(parent, libc::SIGSTOP);
        let pause = libc::timespec {
            tv_sec: 5,
            tv_nsec: 500_000_000,
        };
        libc::nanosleep(&pause, std::ptr::null_mut());
        libc::kill(parent, libc::SIGCONT);
    }
}

fn parent_stopped_scenario() {
    // SAFETY: registers a plain function as a fork handler; it runs in children.
    unsafe { libc::pthread_atfork(None, None, Some(stop_parent)) };
    try_fork_code("fork", 3);
}

fn try_fork_code(what: &str, code: i32) {
    match fork(move || code) {
        Ok(mut c) => println!("{what}: ran, {}", c.join().unwrap()),
        Err(e) => println!("{what}: refused: {e}"),
    }
}

fn reaped_elsewhere() {
    let run = scenario("reaped-elsewhere", &[], false).expect("the scenario runs");
    assert_eq!(run.code, Some(0), "{}", run.out);
    for line in [
        "join: child pid ",
        "is no longer this process's child to wait for: someone else reaped it",
        "mappings after 100 children: no more than before",
        "after the handler is gone: ran, exitcode 0",
    ] {
        assert!(run.out.contains(line), "no {line:?} in\n{}", run.out);
    }
}

fn child_in_new_pid_namespace() {
    let Some(run) = in_namespaces("new-pid-namespace", "-Ur") else {
        return;
    };
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(run.out.contains("fork: ran, exitcode 7"), "{}", run.out);
}

fn new_pid_namespace_scenario() {
    // From now on our children start in a new PID namespace (we stay outside):
    // there getppid() returns 0, since the parent has no PID in it
    // (pid_namespaces(7)). That is not a dead parent.
    // SAFETY: unshare takes a flag word; it changes where our next child goes.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    assert_eq!(unshared, 0, "unshare(CLONE_NEWPID)");
    try_fork_code("fork", 7);
}

extern "C" fn reap_all(_: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe.
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

fn reaped_elsewhere_scenario() {
    let maps = || {
        fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    };
    fork(|| 0).unwrap().join().unwrap(); // the kit's pages are mapped now
    let before = maps();
    // A SIGCHLD handler that reaps every child, as some C servers install.
    // SAFETY: installs a handler that makes only async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = reap_all as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
    }
    for i in 0..100 {
        let mut c = fork(|| 0).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        match c.join() {
            Ok(exit) => println!("join: {exit} (the handler missed it)"),
            Err(e) if i == 0 => println!("join: {e}"),
            Err(_) => {}
        }
    }
    if maps() <= before {
        println!("mappings after 100 children: no more than before");
    }
    // SAFETY: puts back the default action.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    try_fork("after the handler is gone");
}

extern "C" fn say_pid_then_stop() {
    // Runs in the child inside fork(), before the kit sets PR_SET_PDEATHSIG: the
    // window a SIGSTOP could hit. Only async-signal-safe calls here.
    let mut buf = *b"child pid 0000000000\n";
    // SAFETY: getpid, write, close and raise are async-signal-safe system calls on
    // valid arguments.
    unsafe {
        let mut n = libc::getpid() as u32;
        for i in (10..20).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        libc::write(1, buf.as_ptr().cast(), buf.len());
        libc::close(1);
        libc::close(2);
        libc::raise(libc::SIGSTOP);
    }
}

fn stop_before_pdeathsig_scenario() {
    // SAFETY: registers a child-side fork handler that uses only async-signal-safe
    // calls; this process forks once, below.
    unsafe { libc::pthread_atfork(None, None, Some(say_pid_then_stop)) };
    match fork(|| 0) {
        Ok(child) => {
            println!("fork: returned pid {}", child.pid());
            // Die without running the Child's Drop, as a killed lesson would.
            // SAFETY: raise takes a signal number.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        Err(e) => println!("fork: refused: {e}"),
    }
}

fn parent_killed_after_fork() {
    let run = scenario("die-after-fork", &[], false).unwrap();
    assert_eq!(run.code, None, "killed by a signal\n{}", run.out);
    let pid = pid_in(&run.out, "child");
    assert_eq!(
        gone_or_kill(pid),
        Ok(()),
        "child pid {pid} outlived its parent"
    );
}

fn die_after_fork_scenario() {
    let child = fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    println!("child pid {}", child.pid());
    // SAFETY: raise takes a signal number.
    unsafe { libc::raise(libc::SIGKILL) };
}

fn sigchld_ignored() {
    let run = scenario("sigchld-ignored", &[], true).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(run.out.contains("exitcode 3"), "{}", run.out);
}

fn sigchld_ignored_scenario() {
    match fork(|| 3).and_then(|mut c| c.join()) {
        Ok(exit) => println!("{exit}"),
        Err(e) => {
            println!("error: {e}");
            exit_now(2)
        }
    }
}

fn recycled_pid_is_not_signalled() {
    let Some(run) = in_namespaces("pid-reuse", "-Urmpf") else {
        return;
    };
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(run.out.contains("bystander alive"), "{}", run.out);
}

fn pid_reuse_scenario() {
    // We are PID 1 of a new PID namespace with our own /proc: we may choose the
    // next PID (ns_last_pid), so we can hand a dead child's PID to a bystander.
    let status = Command::new("mount")
        .args(["-t", "proc", "proc", "/proc"])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "cannot mount /proc");
    // The child outlives the change below: the kernel reaps only children that
    // end while SIGCHLD is ignored, not a zombie that was already there.
    let mut child = fork(|| std::thread::sleep(Duration::from_millis(100))).unwrap();
    let pid = child.pid();
    // From now on the kernel reaps our children itself: the PID is freed behind the
    // handle's back, as when a lesson is started with SIGCHLD ignored.
    // SAFETY: signal() with SIG_IGN; single-threaded.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while state_of(pid).is_some() {
        assert!(Instant::now() < deadline, "child {pid} not reaped");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The PID number is freed a moment after /proc stops listing it: ask again
    // until the bystander gets it (a wrong one is killed; the kernel reaps it).
    let mut bystander = 0;
    for _ in 0..200 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        // SAFETY: single-threaded; the bystander only calls pause and _exit, both
        // async-signal-safe.
        bystander = unsafe { libc::fork() };
        if bystander == 0 {
            // SAFETY: as above.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        if bystander == pid {
            break;
        }
        // SAFETY: kill takes a pid and a signal; this bystander is ours.
        unsafe { libc::kill(bystander, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(bystander, pid, "the bystander did not get the PID");
    let _ = child.kill();
    drop(child);
    std::thread::sleep(Duration::from_millis(100));
    match state_of(pid) {
        Some(s) if s != 'Z' => println!("bystander alive ({s})"),
        _ => println!("bystander killed"),
    }
    // SAFETY: kill takes a pid and a signal; the bystander is ours.
    unsafe { libc::kill(bystander, libc::SIGKILL) };
}

fn stopped_child_is_bounded() {
    // A child that stops itself: join_or_kill must still return within its bound.
    let mut child = fork(|| {
        // SAFETY: raise takes a signal number.
        unsafe { libc::raise(libc::SIGSTOP) };
        0
    })
    .unwrap();
    let t = Instant::now();
    let joined = child.join_or_kill(Duration::from_millis(200)).unwrap();
    assert!(
        matches!(joined, common::process::Joined::Killed(ref e) if e.code == -9),
        "{joined:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Dropping a stopped child: killed and reaped, promptly.
    let stopped: Child = fork(|| {
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGSTOP) };
        0
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(stopped);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(children_left().is_empty());
}

fn realtime_signal_exit() {
    let sig = libc::SIGRTMIN();
    let mut child = fork(move || {
        // SAFETY: raise takes a signal number; SIGRTMIN's default action ends us.
        unsafe { libc::raise(sig) };
        0
    })
    .unwrap();
    let exit = child.join().expect("the exit code, not an error");
    assert_eq!(exit.code, -sig);
    assert_eq!(exit.to_string(), format!("exitcode {}", -sig));
}
