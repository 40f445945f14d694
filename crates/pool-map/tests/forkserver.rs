//! The forkserver start method (`Context::forkserver`): a pool made after other
//! threads have started maps, replaces killed and stopped workers, refuses what
//! its workers could not run, and leaves nothing behind. Each case runs in a
//! forked child of its own, which makes the server first and then starts threads,
//! as a program would; the threads end with that child.

use std::time::{Duration, Instant};

use common::process::{Joined, thread_count};
use common::procfs::parent_of;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pool_map::{Context, Pool, PoolError, STOP_PATIENCE, rayon_pool, slow_square, square};

const CASES: &[(&str, fn())] = &[
    (
        "made after rayon started: maps right, replaces a killed worker",
        || isolated(after_rayon_started),
    ),
    (
        "a worker stopped while it holds a task is killed and replaced",
        || isolated(stopped_worker),
    ),
    (
        "a function outside the executable is refused when submitted",
        || isolated(outside_the_executable),
    ),
    (
        "a killed fork server: the pool says so, never hangs",
        || isolated(killed_server),
    ),
    (
        "dropping the pool and the context leaves no worker and no server",
        || isolated(nothing_left),
    ),
    (
        "stop() is prompt while a forked copy of the program holds the server's socket",
        || isolated(stop_beside_a_fork_pool),
    ),
    (
        "a stopped server: a dead worker is noticed within the caller's timeout",
        || isolated(stopped_server),
    ),
];

fn main() {
    common::testkit::run_cases(CASES);
}

/// Run `body` in a forked child (killed, with its server and workers, if it takes
/// more than 60 s): the threads it starts end with it.
fn isolated(body: fn()) {
    let mut child = common::fork(body).expect("fork");
    match child.join_or_kill(Duration::from_secs(60)).expect("join") {
        Joined::Finished(exit) => assert!(exit.success(), "{exit}"),
        Joined::Killed(_) => panic!("did not finish within 60 s"),
    }
}

/// Ended: no such process, or a zombie that whoever reaps orphans will reap.
fn gone(pid: i32) -> bool {
    matches!(common::procfs::state_of(pid), None | Some('Z' | 'X'))
}

fn after_rayon_started() {
    let ctx = Context::forkserver().unwrap();
    let server = ctx.server_pid().unwrap();
    let rayon = rayon_pool(2).unwrap();
    assert!(rayon.install(thread_count).unwrap() >= 3);
    // The fork start method is refused now, clearly.
    let err = Pool::new(2).unwrap_err().to_string();
    assert!(err.contains("refusing to fork"), "{err}");
    let pool = ctx.pool(2).unwrap();
    for pid in pool.worker_pids() {
        assert_eq!(parent_of(pid), Some(server), "worker {pid}");
    }
    let items: Vec<u64> = (0..1000).collect();
    let want: Vec<u64> = items.iter().map(|&x| square(x)).collect();
    assert_eq!(pool.map(square, items.iter().copied()).unwrap(), want);
    // Kill the worker holding a task: the task fails, a new worker is forked by
    // the server (this process runs threads), and the pool maps right again.
    let res = pool.apply_async(slow_square, 3).unwrap();
    let victim = res.worker_pids()[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    match res.get(Some(Duration::from_secs(10))) {
        Err(PoolError::WorkerDied { pid, exit }) => {
            assert_eq!(pid, victim);
            assert!(exit.contains("-9"), "{exit}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(pool.replaced(), 1);
    let now = pool.worker_pids();
    assert!(!now.contains(&victim));
    assert!(now.iter().all(|&pid| parent_of(pid) == Some(server)));
    assert_eq!(pool.map(square, items).unwrap(), want);
    // Results come back from threads' work too: rayon keeps running beside it.
    assert_eq!(rayon.install(|| 2 + 2), 4);
}

fn stopped_worker() {
    let ctx = Context::forkserver().unwrap();
    let _rayon = rayon_pool(2).unwrap();
    let pool = ctx.pool(1).unwrap();
    let res = pool.apply_async(slow_square, 4).unwrap();
    let victim = res.worker_pids()[0];
    kill(Pid::from_raw(victim), Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    let got = res.get(Some(STOP_PATIENCE * 3));
    assert!(
        matches!(got, Err(PoolError::WorkerStopped { pid, .. }) if pid == victim),
        "{got:?}"
    );
    assert!(t.elapsed() < STOP_PATIENCE + Duration::from_secs(2));
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}

fn outside_the_executable() {
    let ctx = Context::forkserver().unwrap();
    let pool = ctx.pool(1).unwrap();
    let heap = Box::new([0u8; 16]);
    // SAFETY: a fn pointer must only be non-null to exist; this one points into
    // the heap and is never called: the pool refuses it before sending anything.
    let f: fn(u64) -> u64 = unsafe { std::mem::transmute(heap.as_ptr()) };
    match pool.apply_async(f, 1) {
        Err(PoolError::CannotName { method, .. }) => assert_eq!(method, "forkserver"),
        other => panic!("expected CannotName, got {:?}", other.err()),
    }
    let err = pool.map(f, vec![1, 2]).unwrap_err().to_string();
    assert!(err.contains("not in the executable"), "{err}");
    // Nothing reached the worker: the pool goes on.
    assert_eq!(pool.apply(square, 6).unwrap(), 36);
    assert_eq!(pool.replaced(), 0);
}

fn killed_server() {
    let ctx = Context::forkserver().unwrap();
    let _rayon = rayon_pool(2).unwrap();
    let pool = ctx.pool(2).unwrap();
    let workers = pool.worker_pids();
    let res = pool.apply_async(slow_square, 7).unwrap();
    kill(Pid::from_raw(ctx.server_pid().unwrap()), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    // The workers die with their parent (PR_SET_PDEATHSIG); nobody can start new ones.
    let got = res.get(Some(Duration::from_secs(30)));
    assert!(got.is_err(), "{got:?}");
    let next = pool.apply(square, 2).unwrap_err().to_string();
    assert!(
        next.contains("could not be replaced: the fork server"),
        "{next}"
    );
    let died = got.unwrap_err().to_string();
    assert!(
        died.contains("exit code unknown: the fork server"),
        "{died}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        workers.iter().all(|&w| gone(w)),
        "a worker outlived its server"
    );
}

fn nothing_left() {
    let ctx = Context::forkserver().unwrap();
    let server = ctx.server_pid().unwrap();
    let _rayon = rayon_pool(2).unwrap();
    let pool = ctx.pool(2).unwrap();
    assert_eq!(pool.map(square, vec![1, 2, 3]).unwrap(), vec![1, 4, 9]);
    let workers = pool.worker_pids();
    drop(pool);
    ctx.stop().unwrap();
    assert!(gone(server), "the server is still there");
    assert!(workers.iter().all(|&w| gone(w)), "a worker is still there");
    assert_eq!(common::process::children_left(), vec![]);
}

fn stop_beside_a_fork_pool() {
    let ctx = Context::forkserver().unwrap();
    // A fork pool's workers are copies of this program: they hold the server's
    // control socket too, so the server would never see its end of file.
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, vec![1, 2]).unwrap(), vec![1, 4]);
    let server = ctx.server_pid().unwrap();
    let t = Instant::now();
    ctx.stop().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(gone(server));
}

fn stopped_server() {
    let ctx = Context::forkserver().unwrap();
    let server = ctx.server_pid().unwrap();
    let pool = ctx.pool(2).unwrap();
    let slow = pool.apply_async(slow_square, 3).unwrap();
    let other = pool.apply_async(slow_square, 4).unwrap();
    kill(Pid::from_raw(server), Signal::SIGSTOP).unwrap();
    while common::procfs::state_of(server) != Some('T') {
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(Pid::from_raw(slow.worker_pids()[0]), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    let got = slow.get(Some(Duration::from_secs(1)));
    assert!(got.is_err(), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The dead worker's task fails; its replacement is refused: the pool says so.
    let err = got.unwrap_err().to_string();
    assert!(err.contains("died"), "{err}");
    let next = pool.apply(square, 2).unwrap_err().to_string();
    assert!(next.contains("stopped"), "{next}");
    let _ = other.get(Some(Duration::from_secs(1)));
    kill(Pid::from_raw(server), Signal::SIGCONT).unwrap();
}
