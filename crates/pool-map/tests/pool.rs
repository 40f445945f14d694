//! Tests of the pool itself. The pool forks, and the kit refuses to fork a
//! multithreaded process, so this test binary has its own `main` (`harness = false`)
//! and runs each case in turn on one thread. It ends with `N passed, N failed`.

use std::time::{Duration, Instant};

use common::process::children_left;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, setpgid};
use pool_map::{Pool, PoolError, default_chunksize, identity, slow_square, square, unlucky};
use serde_bytes::ByteBuf;

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("Python's default chunksize rule", chunksize_rule),
    (
        "map equals serial: empty, one item, fewer items than workers",
        small_maps,
    ),
    (
        "map equals serial: many items, several chunk sizes and worker counts",
        many_maps,
    ),
    (
        "imap keeps order; imap_unordered gives the same multiset",
        imaps,
    ),
    (
        "apply, apply_async with get/ready/wait/successful, map_async",
        applies,
    ),
    (
        "a panicking task fails with its message, and the pool goes on",
        panicking_task,
    ),
    (
        "a killed worker fails its task within a bounded time and is replaced",
        killed_worker,
    ),
    (
        "a worker that cannot be replaced breaks the pool, clearly",
        broken_pool,
    ),
    (
        "bad input: 0 processes, chunksize 0, use after close or terminate",
        bad_input,
    ),
    ("close then join lets queued tasks finish", close_join),
    (
        "thousands of pending tasks open no fd and no process per task",
        many_pending,
    ),
    (
        "after terminate or drop no worker process remains",
        no_workers_left,
    ),
    // Faults: each of these hung, panicked or lost a result before its fix. Each runs
    // in a child process under a deadline (`within`), so a hang fails the case.
    (
        "a worker stopped while it sends a 64 MB result: get(1 s) keeps its timeout",
        stopped_while_sending_big_result,
    ),
    (
        "a stopped worker handed a 1,000,000-item chunk: map_async returns at once",
        stopped_worker_big_task,
    ),
    (
        "a worker stopped while it holds a task is killed and replaced, no call hangs",
        stopped_worker_is_killed_and_replaced,
    ),
    (
        "a stopped worker is killed even if its owner looks only every 1.1 s",
        stopped_worker_seldom_looked_at,
    ),
    (
        "Ctrl-Z of the whole job for 6 s, the worker continued last: no kill",
        job_stopped_then_continued,
    ),
    (
        "imap of 8 big results, both workers killed while sending: 8 items, none lost",
        imap_reports_every_item,
    ),
    (
        "a result delivered before its worker was killed stays Ok: it is final",
        delivered_result_is_final,
    ),
    (
        "a worker killed while it sends a big result: get says so, the pool works on",
        killed_while_sending_says_so,
    ),
    (
        "an argument iterator that uses the pool, or drops a handle, works",
        reentrant_argument_iterator,
    ),
    (
        "a worker that died idle is replaced before it is handed a task",
        dead_idle_worker_replaced_before_use,
    ),
    (
        "join_timeout with a task that never ends: kills, reaps, says which failed",
        join_timeout_never_ending_task,
    ),
    (
        "under a low open-file limit the pool works or says why, never panics",
        low_fd_limit,
    ),
];

fn main() {
    // `--fd-limit=N`: this binary run again by `low_fd_limit`, in a fresh process.
    if let Some(n) = std::env::args().find_map(|a| a.strip_prefix("--fd-limit=")?.parse().ok()) {
        return pool_under_fd_limit(n);
    }
    common::testkit::run_cases(CASES);
}

fn serial(items: &[u64]) -> Vec<u64> {
    items.iter().map(|&x| square(x)).collect()
}

fn chunksize_rule() {
    // CPython: chunksize, extra = divmod(len, workers * 4); if extra: chunksize += 1
    assert_eq!(default_chunksize(0, 4), 0);
    assert_eq!(default_chunksize(5, 3), 1);
    assert_eq!(default_chunksize(10_000, 2), 1250);
    assert_eq!(default_chunksize(10_001, 2), 1251);
}

fn small_maps() {
    let pool = Pool::new(4).unwrap();
    assert_eq!(pool.map(square, vec![]).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.map(square, vec![7]).unwrap(), vec![49]);
    assert_eq!(pool.map(square, vec![1, 2]).unwrap(), vec![1, 4]);
}

fn many_maps() {
    let items: Vec<u64> = (0..1000).collect();
    for workers in [1, 2, 3, 5] {
        let pool = Pool::new(workers).unwrap();
        assert_eq!(pool.map(square, items.clone()).unwrap(), serial(&items));
        // Any iterable, as in Python: a borrowed slice, a range, and an iterator
        // that cannot tell its length (collected first, like `list(iterable)`).
        assert_eq!(
            pool.map(square, items.iter().copied()).unwrap(),
            serial(&items)
        );
        assert_eq!(pool.map(square, 0..1000u64).unwrap(), serial(&items));
        let odd: Vec<u64> = items.iter().copied().filter(|x| x % 2 == 1).collect();
        assert_eq!(
            pool.map(square, items.iter().copied().filter(|x| x % 2 == 1))
                .unwrap(),
            serial(&odd)
        );
        for chunk in [1, 2, 7, 100, 999, 1000, 5000] {
            assert_eq!(
                pool.map_chunked(square, items.clone(), chunk).unwrap(),
                serial(&items),
                "{workers} workers, chunksize {chunk}"
            );
        }
    }
}

fn imaps() {
    let pool = Pool::new(3).unwrap();
    let items: Vec<u64> = (0..200).collect();
    let ordered: Vec<u64> = pool
        .imap(square, items.clone(), 7)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, serial(&items));
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, items.clone(), 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, serial(&items));
    assert_eq!(pool.imap(square, vec![], 1).unwrap().count(), 0);
}

fn applies() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    let res = pool.apply_async(slow_square, 4).unwrap();
    assert!(!res.ready());
    assert_eq!(res.successful(), None);
    assert_eq!(
        res.get(Some(Duration::from_millis(10))),
        Err(PoolError::Timeout(Duration::from_millis(10)))
    );
    res.wait(Duration::from_secs(5));
    assert!(res.ready());
    assert_eq!(res.successful(), Some(true));
    assert_eq!(res.get(None).unwrap(), 16);
    assert_eq!(res.get(None).unwrap(), 16, "get may be called again");
    let all = pool.map_async(square, 1..=20, Some(3)).unwrap();
    assert_eq!(
        all.get(Some(Duration::from_secs(5))).unwrap(),
        serial(&(1..=20).collect::<Vec<_>>())
    );
    assert_eq!(
        all.get(None).unwrap(),
        serial(&(1..=20).collect::<Vec<_>>()),
        "a map's get may be called again (decoded again from the bytes)"
    );
}

fn panicking_task() {
    let pool = Pool::new(2).unwrap();
    let t = Instant::now();
    match pool.map_chunked(unlucky, 10..=15, 1) {
        Err(PoolError::TaskPanicked { message, .. }) => {
            assert!(message.contains("13 is unlucky"), "{message}")
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    let res = pool.apply_async(unlucky, 13).unwrap();
    assert!(matches!(
        res.get(Some(Duration::from_secs(5))),
        Err(PoolError::TaskPanicked { .. })
    ));
    assert_eq!(res.successful(), Some(false));
    assert_eq!(pool.map(identity, vec![1, 2, 3]).unwrap(), vec![1, 2, 3]);
    assert_eq!(pool.replaced(), 0, "a panic does not kill the worker");
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn killed_worker() {
    let pool = Pool::new(2).unwrap();
    let res = pool.apply_async(slow_square, 3).unwrap();
    let victim = res.worker_pids()[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let t = Instant::now();
    match res.get(None) {
        Err(PoolError::WorkerDied { pid, exit }) => {
            assert_eq!(pid, victim);
            assert!(exit.contains("-9"), "{exit}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "noticed in {:?}",
        t.elapsed()
    );
    assert_eq!(pool.replaced(), 1);
    assert!(!pool.worker_pids().contains(&victim));
    assert_eq!(pool.map(square, vec![2, 3]).unwrap(), vec![4, 9]);
    // A map whose chunk dies fails as a whole; the others are unaffected.
    let res = pool.map_async(slow_square, vec![1, 2], Some(1)).unwrap();
    let victim = res.worker_pids()[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(matches!(
        res.get(Some(Duration::from_secs(5))),
        Err(PoolError::WorkerDied { .. })
    ));
}

fn broken_pool() {
    let pool = Pool::new(2).unwrap();
    let res = pool.apply_async(slow_square, 3).unwrap();
    let queued: Vec<_> = (0..4)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    // Another thread now runs in this process, so no replacement can be forked.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv_timeout(Duration::from_secs(10));
    });
    kill(Pid::from_raw(res.worker_pids()[0]), Signal::SIGKILL).unwrap();
    assert!(matches!(
        res.get(Some(Duration::from_secs(5))),
        Err(PoolError::WorkerDied { .. })
    ));
    match pool.apply(square, 1) {
        Err(PoolError::Broken(why)) => assert!(why.contains("refusing to fork"), "{why}"),
        other => panic!("expected a broken pool, got {other:?}"),
    }
    for q in &queued {
        // Each queued task either ran on the surviving worker or failed clearly.
        let _ = q.get(Some(Duration::from_secs(5)));
    }
    drop(tx);
    t.join().unwrap();
}

fn bad_input() {
    assert_eq!(Pool::new(0).err(), Some(PoolError::NoProcesses));
    let pool = Pool::new(1).unwrap();
    assert_eq!(
        pool.map_chunked(square, vec![1], 0).err(),
        Some(PoolError::ZeroChunksize)
    );
    assert_eq!(pool.join().err(), Some(PoolError::StillRunning));
    pool.close();
    assert_eq!(pool.apply(square, 1).err(), Some(PoolError::Closed));
    pool.join().unwrap();
    let pool = Pool::new(1).unwrap();
    let pending = pool.apply_async(slow_square, 1).unwrap();
    pool.terminate();
    assert_eq!(
        pending.get(Some(Duration::from_secs(1))).err(),
        Some(PoolError::Terminated)
    );
    assert_eq!(pool.apply(square, 1).err(), Some(PoolError::Terminated));
}

fn close_join() {
    let pool = Pool::new(2).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|x| pool.apply_async(slow_square, x).unwrap())
        .collect();
    pool.close();
    pool.join().unwrap();
    for (x, h) in handles.iter().enumerate() {
        assert_eq!(h.get(Some(Duration::ZERO)).unwrap(), (x * x) as u64);
    }
}

fn many_pending() {
    let fds = common::process::open_fds().len();
    let pool = Pool::new(2).unwrap();
    let fds_with_pool = common::process::open_fds().len();
    let handles: Vec<_> = (0..5000u64)
        .map(|x| pool.apply_async(square, x).unwrap())
        .collect();
    assert_eq!(
        common::process::open_fds().len(),
        fds_with_pool,
        "fds grew with pending tasks"
    );
    assert_eq!(
        children_left().len(),
        2,
        "processes grew with pending tasks"
    );
    for (x, h) in handles.iter().enumerate() {
        assert_eq!(h.get(None).unwrap(), (x * x) as u64);
    }
    drop(handles);
    drop(pool);
    assert_eq!(common::process::open_fds().len(), fds);
}

fn no_workers_left() {
    let pool = Pool::new(3).unwrap();
    let _busy = pool.apply_async(slow_square, 1).unwrap();
    assert_eq!(children_left().len(), 3);
    pool.terminate();
    assert!(children_left().is_empty(), "{:?}", children_left());
    let pool = Pool::new(3).unwrap();
    let _busy = pool.apply_async(slow_square, 1).unwrap();
    drop(pool);
    assert!(children_left().is_empty(), "{:?}", children_left());
}

// ---- faults ----

/// Run `body` in a child process of its own process group, and fail unless it ends
/// well within `limit`. On time out the whole group is killed: the child and the
/// workers it forked (a stopped worker included).
fn within(limit: Duration, body: fn()) {
    let mut child = common::fork(|| {
        setpgid(Pid::from_raw(0), Pid::from_raw(0)).expect("setpgid");
        body()
    })
    .expect("fork");
    match child.join_timeout(limit).expect("join") {
        Some(exit) => assert!(exit.success(), "{exit}"),
        None => {
            let _ = killpg(Pid::from_raw(child.pid()), Signal::SIGKILL);
            let _ = child.join();
            panic!("did not finish within {limit:?}")
        }
    }
}

/// A result of `n` bytes.
fn bytes(n: u64) -> ByteBuf {
    ByteBuf::from(vec![7u8; n as usize])
}

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).expect("kill");
}

fn stopped_while_sending_big_result() {
    within(Duration::from_secs(20), || {
        let pool = Pool::new(1).unwrap();
        let res = pool.apply_async(bytes, 64 << 20).unwrap();
        // The worker computes, then sends until the socket is full: nobody reads.
        std::thread::sleep(Duration::from_millis(500));
        signal(pool.worker_pids()[0], Signal::SIGSTOP);
        let t = Instant::now();
        let got = res.get(Some(Duration::from_secs(1)));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(got.err(), Some(PoolError::Timeout(Duration::from_secs(1))));
        signal(pool.worker_pids()[0], Signal::SIGCONT);
        assert_eq!(
            res.get(Some(Duration::from_secs(10))).unwrap().len(),
            64 << 20
        );
    });
}

fn stopped_worker_big_task() {
    within(Duration::from_secs(20), || {
        let pool = Pool::new(1).unwrap();
        pool.apply(square, 1).unwrap(); // the worker is up
        signal(pool.worker_pids()[0], Signal::SIGSTOP);
        let t = Instant::now();
        let res = pool
            .map_async(identity, 0..1_000_000u64, Some(1_000_000))
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let early = res.get(Some(Duration::from_millis(300)));
        assert_eq!(
            early.err(),
            Some(PoolError::Timeout(Duration::from_millis(300)))
        );
        signal(pool.worker_pids()[0], Signal::SIGCONT);
        let all = res.get(Some(Duration::from_secs(10))).unwrap();
        assert!(all.iter().copied().eq(0..1_000_000u64));
    });
}

/// A worker stopped (SIGSTOP) while it holds a task freezes no call: after
/// `STOP_PATIENCE` the pool kills it, fails its task with `WorkerStopped`, and
/// replaces it. Python's pool would wait for it forever.
fn stopped_worker_is_killed_and_replaced() {
    within(Duration::from_secs(30), || {
        let pool = Pool::new(2).unwrap();
        pool.map(square, 0..4u64).unwrap(); // both workers are up
        let res = pool.apply_async(slow_square, 3).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = res.worker_pids()[0];
        signal(pid, Signal::SIGSTOP);
        let t = Instant::now();
        let got = res.get(None);
        let took = t.elapsed();
        assert_eq!(
            got.err(),
            Some(PoolError::WorkerStopped {
                pid,
                secs: pool_map::STOP_PATIENCE.as_secs()
            })
        );
        assert!(
            took < pool_map::STOP_PATIENCE + Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(pool.replaced(), 1);
        assert!(!pool.worker_pids().contains(&pid));
        assert_eq!(pool.map(square, vec![1, 2, 3]).unwrap(), vec![1, 4, 9]);
    });
}

/// The pool counts a look-to-look gap of more than a second as one second (a
/// gap may be a stop of the owner itself); an owner that looks seldom must still
/// see a stopped worker's task fail, after STOP_PATIENCE of looks.
fn stopped_worker_seldom_looked_at() {
    within(Duration::from_secs(30), || {
        let pool = Pool::new(1).unwrap();
        let res = pool.apply_async(slow_square, 3).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = res.worker_pids()[0];
        signal(pid, Signal::SIGSTOP);
        let t = Instant::now();
        while !res.ready() {
            assert!(t.elapsed() < Duration::from_secs(15), "never failed");
            std::thread::sleep(Duration::from_millis(1100));
        }
        let secs = pool_map::STOP_PATIENCE.as_secs();
        let got = res.get(Some(Duration::ZERO)).err();
        assert_eq!(got, Some(PoolError::WorkerStopped { pid, secs }));
    });
}

/// Ctrl-Z stops the whole job, and `fg` continues it; the pool's owner may then
/// run a moment before its worker does. A worker it saw stopped just before
/// the job stopped has not been stopped for the 6 s the job was: the pool must
/// not kill it for that. A second process plays the terminal: it stops the
/// worker, then the owner, and after 6 s continues the owner first.
fn job_stopped_then_continued() {
    within(Duration::from_secs(30), || {
        let pool = Pool::new(1).unwrap();
        let res = pool.apply_async(slow_square, 3).unwrap();
        let (worker, owner) = (pool.worker_pids()[0], std::process::id() as i32);
        let mut terminal = common::fork(move || {
            std::thread::sleep(Duration::from_millis(100));
            signal(worker, Signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(300)); // the owner sees it
            signal(owner, Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs(6));
            signal(owner, Signal::SIGCONT);
            std::thread::sleep(Duration::from_millis(50));
            signal(worker, Signal::SIGCONT);
        })
        .expect("fork the terminal");
        assert_eq!(res.get(Some(Duration::from_secs(20))), Ok(9));
        assert_eq!(pool.replaced(), 0);
        let exit = terminal.join_within(Duration::from_secs(20)).expect("join");
        assert!(exit.success(), "{exit}");
    });
}

fn imap_reports_every_item() {
    within(Duration::from_secs(30), || {
        let pool = Pool::new(2).unwrap();
        let results = pool.imap(bytes, vec![16u64 << 20; 8], 1).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        for pid in pool.worker_pids() {
            signal(pid, Signal::SIGKILL);
        }
        let all: Vec<_> = results.collect();
        assert_eq!(all.len(), 8, "every item gives a value or an error");
        for r in &all {
            match r {
                Ok(b) => assert_eq!(b.len(), 16 << 20),
                Err(e) => assert!(
                    matches!(
                        e,
                        PoolError::WorkerDied { .. } | PoolError::WorkerDiedSending { .. }
                    ),
                    "{e}"
                ),
            }
        }
        // A failed chunk of 3 items (13, 14, 15) gives 3 errors, in place.
        let got: Vec<_> = pool.imap(unlucky, 10..=15, 3).unwrap().collect();
        assert_eq!(got.len(), 6);
        assert!(got[..3].iter().all(Result::is_ok) && got[3..].iter().all(Result::is_err));
    });
}

fn slower(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(400));
    x
}

/// Wait until `pid` (a worker of ours) has died and is a zombie, not yet reaped.
fn wait_zombie(pid: i32) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if state.starts_with('Z') {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("pid {pid} did not die");
}

fn delivered_result_is_final() {
    within(Duration::from_secs(20), || {
        let pool = Pool::new(2).unwrap();
        let _other = pool.apply_async(slow_square, 2).unwrap();
        let mine = pool.apply_async(slower, 1).unwrap();
        let victim = mine.worker_pids()[0];
        // Both answers wait in the socket, the other worker's first; then the worker
        // that delivered `mine` dies before the parent read it.
        std::thread::sleep(Duration::from_millis(700));
        signal(victim, Signal::SIGKILL);
        wait_zombie(victim);
        let first = mine.get(Some(Duration::from_secs(2)));
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        assert_eq!(first, Ok(1), "the result was delivered");
        assert_eq!(
            mine.get(Some(Duration::from_secs(2))),
            first,
            "and it is final"
        );
        assert_eq!(mine.successful(), Some(true));
    });
}

fn killed_while_sending_says_so() {
    within(Duration::from_secs(40), || {
        let pool = Pool::new(1).unwrap();
        // The kill must land while the result crosses, which the test can only
        // aim at: `ready()` reads the pieces that have come, and when the worker
        // keeps up that can be all of them (the kill would come after the send);
        // on a slow machine the worker may still be computing at the kill (it
        // died before it sent anything: WorkerDied). Either way, try again, later.
        let mut kills = 0;
        for attempt in 1..=5 {
            let res = pool.apply_async(bytes, 64 << 20).unwrap();
            std::thread::sleep(Duration::from_millis(500 * attempt));
            let victim = pool.worker_pids()[0];
            if res.ready() {
                continue; // the whole 64 MB came before the kill
            }
            signal(victim, Signal::SIGKILL);
            kills += 1;
            match res.get(Some(Duration::from_secs(5))) {
                Err(e @ PoolError::WorkerDiedSending { pid, .. }) => {
                    assert_eq!(pid, victim);
                    let text = e.to_string();
                    assert!(text.contains("while it sent this task's result"), "{text}");
                    assert_eq!(pool.apply(square, 2), Ok(4), "the pool works on");
                    assert_eq!(pool.replaced(), kills);
                    return;
                }
                Err(PoolError::WorkerDied { pid, .. }) if pid == victim => continue,
                other => panic!("expected WorkerDiedSending, got {other:?}"),
            }
        }
        panic!("in 5 tries, no kill landed while the worker sent its result");
    });
}

fn reentrant_argument_iterator() {
    within(Duration::from_secs(20), || {
        let pool = Pool::new(2).unwrap();
        let inner = (0..3).map(|x| pool.apply(square, x).unwrap());
        assert_eq!(pool.map(square, inner).unwrap(), vec![0, 1, 16]);
        let mut held = Some(pool.apply_async(square, 5).unwrap());
        let dropping = (0..3u64).inspect(move |_| drop(held.take()));
        assert_eq!(pool.map(square, dropping).unwrap(), vec![0, 1, 4]);
        let closing = (0..3u64).inspect(|&x| {
            if x == 1 {
                pool.close();
            }
        });
        assert_eq!(pool.map(square, closing), Err(PoolError::Closed));
    });
}

fn dead_idle_worker_replaced_before_use() {
    within(Duration::from_secs(30), || {
        let pool = Pool::new(2).unwrap();
        let victim = pool.worker_pids()[0];
        signal(victim, Signal::SIGKILL);
        wait_zombie(victim);
        for k in 0..200 {
            let got = pool.map_chunked(square, 0..4u64, 1);
            assert_eq!(got, Ok(vec![0, 1, 4, 9]), "map {k}");
        }
        assert_eq!(pool.replaced(), 1);
    });
}

/// Lower this process's open-file limit to `n`, then start a pool and use it.
/// Exit 0 when it worked, 2 with `error: ...` when the pool said why it could not.
fn pool_under_fd_limit(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, n, hard).expect("setrlimit");
    let pool = match Pool::new(2) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    assert_eq!(
        pool.map(square, 0..100u64).unwrap(),
        serial(&(0..100).collect::<Vec<_>>())
    );
}

fn low_fd_limit() {
    // A fresh process for each limit: ipc-channel measures the socket buffer once per
    // process, and this one has done it long ago.
    let me = std::env::current_exe().expect("current_exe");
    let me = me.to_str().expect("a UTF-8 path");
    let mut refused = 0;
    for n in 6..=24 {
        let arg = format!("--fd-limit={n}");
        let run = common::testkit::run(me, &[&arg], Duration::from_secs(20));
        assert!(!run.stderr.contains("panicked"), "ulimit -n {n}: {run}");
        match run.code {
            Some(0) => {}
            Some(2) => {
                assert!(
                    run.stderr.contains("error: cannot start the pool: "),
                    "ulimit -n {n}: {run}"
                );
                refused += 1;
            }
            _ => panic!("ulimit -n {n}: {run}"),
        }
    }
    assert!(refused > 0, "some limit is too low for a pool");
}

/// A task that never ends.
fn forever(_: u64) -> u64 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn join_timeout_never_ending_task() {
    within(Duration::from_secs(20), || {
        let pool = Pool::new(2).unwrap();
        let stuck = pool.apply_async(forever, 0).unwrap();
        let quick = pool.apply_async(square, 3).unwrap();
        let queued = pool.map_async(forever, 0..4u64, Some(1)).unwrap();
        pool.close();
        let t = Instant::now();
        let joined = pool.join_timeout(Duration::from_millis(500));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        match joined {
            Err(PoolError::JoinTimedOut { unfinished, .. }) => assert_eq!(unfinished, 5),
            other => panic!("expected JoinTimedOut, got {other:?}"),
        }
        assert_eq!(quick.get(Some(Duration::ZERO)), Ok(9));
        let why = stuck.get(Some(Duration::ZERO)).unwrap_err();
        assert!(
            why.to_string().contains("join gave up after 500.0 ms"),
            "{why}"
        );
        assert!(matches!(
            queued.get(Some(Duration::ZERO)),
            Err(PoolError::JoinTimedOut { .. })
        ));
        assert!(children_left().is_empty(), "{:?}", children_left());
        assert_eq!(pool.join(), Ok(()), "joined already");
    });
}
