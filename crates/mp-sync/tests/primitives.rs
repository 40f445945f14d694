//! The primitives on their own, across real processes. This binary forks, so it
//! has its own `main` (`harness = false`) and runs each case on its one thread
//! (`common::testkit::run_cases`).

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::fork;
use common::shm::RawValue;
use mp_sync::{Barrier, BrokenBarrier, Condition, Event, Semaphore};

const BOUND: Duration = Duration::from_secs(5);

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("event: a wait times out, then one set wakes a child", event),
    (
        "event: a timeout too long for the clock is no panic",
        huge_timeouts,
    ),
    ("semaphore: a child's release wakes the parent", semaphore),
    ("semaphore: Lock() refuses a second release", lock_bound),
    (
        "barrier: 4 processes, 50 phases, nobody early",
        barrier_phases,
    ),
    (
        "barrier: a timeout breaks it for everyone after",
        barrier_breaks,
    ),
    (
        "barrier: the wrong number of parties is an error",
        barrier_parties,
    ),
    (
        "condition: a notify from a child wakes the parent",
        condition,
    ),
    (
        "condition: a notifier that keeps the lock 150 ms does not stretch wait_for(1 s)",
        condition_busy_notifier,
    ),
    (
        "semaphore: acquire(timeout=0) takes a free unit, every time",
        semaphore_zero,
    ),
];

fn main() {
    common::testkit::run_cases(CASES);
}

fn ok(child: &mut common::process::Child) {
    let exit = child.join_within(BOUND).expect("join");
    assert!(exit.success(), "{exit}");
}

fn event() {
    let e = Event::new().unwrap();
    let t = Instant::now();
    assert!(!e.wait(Duration::from_millis(30)));
    assert!(t.elapsed() >= Duration::from_millis(30));
    let mut child = fork(|| assert!(e.wait(BOUND))).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    e.set();
    ok(&mut child);
    assert!(e.is_set() && e.wait(Duration::ZERO));
    e.clear();
    assert!(!e.is_set());
}

fn huge_timeouts() {
    let (e, s) = (Event::new().unwrap(), Semaphore::new(1).unwrap());
    e.set();
    assert!(e.wait(Duration::MAX));
    assert!(s.acquire(Duration::MAX).unwrap());
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait(Duration::MAX), Ok(0));
}

fn semaphore() {
    let s = Semaphore::new(0).unwrap();
    assert!(!s.acquire(Duration::from_millis(20)).unwrap());
    let mut child = fork(|| {
        std::thread::sleep(Duration::from_millis(20));
        s.release().unwrap();
    })
    .unwrap();
    assert!(s.acquire(BOUND).unwrap());
    ok(&mut child);
    assert_eq!(s.value().unwrap(), 0);
}

fn lock_bound() {
    let l = Semaphore::lock().unwrap();
    assert!(l.release().is_err(), "a free Lock() released");
    assert!(l.try_acquire() && !l.try_acquire());
    assert!(l.release().is_ok() && l.release().is_err());
    let b = Semaphore::bounded(2).unwrap();
    assert!(b.try_acquire() && b.release().is_ok() && b.release().is_err());
}

fn barrier_phases() {
    const PARTIES: u32 = 4;
    const PHASES: i64 = 50;
    let b = Barrier::new(PARTIES).unwrap();
    // Every party adds 1 to `count` before each wait; after the wait of phase k,
    // everyone must see all PARTIES * (k + 1) additions.
    let count = RawValue::<i64>::new(0).unwrap();
    let mut kids: Vec<_> = (0..PARTIES)
        .map(|_| {
            fork(|| {
                for k in 0..PHASES {
                    count.cell().fetch_add(1, SeqCst);
                    b.wait(BOUND).unwrap();
                    assert!(count.get() >= PARTIES as i64 * (k + 1));
                    b.wait(BOUND).unwrap(); // nobody starts phase k + 1 early
                }
            })
            .unwrap()
        })
        .collect();
    kids.iter_mut().for_each(ok);
    assert_eq!(count.get(), PARTIES as i64 * PHASES);
    assert!(!b.is_broken() && b.n_waiting() == 0);
}

fn barrier_breaks() {
    let b = Barrier::new(3).unwrap();
    let mut child = fork(|| assert_eq!(b.wait(BOUND), Err(BrokenBarrier::Broken))).unwrap();
    assert_eq!(
        b.wait(Duration::from_millis(50)),
        Err(BrokenBarrier::TimedOut)
    );
    ok(&mut child);
    assert!(b.is_broken());
    assert_eq!(b.wait(BOUND), Err(BrokenBarrier::Broken)); // at once
    let a = Barrier::new(2).unwrap();
    a.abort();
    assert_eq!(a.wait(BOUND), Err(BrokenBarrier::Broken));
}

fn barrier_parties() {
    assert!(Barrier::new(0).is_err());
    assert!(Barrier::new(65_536).is_err());
    assert!(Barrier::new(65_535).is_ok());
}

fn condition() {
    let c = Condition::new().unwrap();
    let v = RawValue::<i64>::new(0).unwrap();
    let mut child = fork(|| {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(10));
            let g = c.acquire(BOUND).unwrap();
            v.set(v.get() + 1);
            g.notify_all();
        }
    })
    .unwrap();
    let mut g = c.acquire(BOUND).unwrap();
    assert!(g.wait_for(BOUND, BOUND, || v.get() == 3).unwrap());
    drop(g);
    ok(&mut child);
    let mut g = c.acquire(BOUND).unwrap();
    let t = Instant::now();
    assert!(
        !g.wait_for(Duration::from_millis(30), BOUND, || false)
            .unwrap()
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
}

/// Time spent taking the lock back is not time spent stopped: the wait must
/// end after about its timeout, however long the notifier keeps the lock.
fn condition_busy_notifier() {
    let c = Condition::new().unwrap();
    let stop = RawValue::<i64>::new(0).unwrap();
    let mut child = fork(|| {
        let t = Instant::now();
        while stop.get() == 0 && t.elapsed() < Duration::from_secs(20) {
            let g = c.acquire(BOUND).unwrap();
            g.notify_all();
            std::thread::sleep(Duration::from_millis(150));
            drop(g);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut g = c.acquire(BOUND).unwrap();
    let t = Instant::now();
    let held = g.wait_for(Duration::from_secs(1), BOUND, || false).unwrap();
    let took = t.elapsed();
    drop(g);
    stop.set(1);
    ok(&mut child);
    assert!(!held);
    assert!(took < Duration::from_secs(3), "wait_for(1 s) took {took:?}");
}

/// CPython's acquire(timeout=0) tries once; a free unit is taken.
fn semaphore_zero() {
    let sem = Semaphore::new(1).unwrap();
    for _ in 0..100 {
        assert!(sem.acquire(Duration::ZERO).unwrap());
        sem.release().unwrap();
    }
    assert!(sem.acquire(Duration::from_nanos(1)).unwrap());
}
