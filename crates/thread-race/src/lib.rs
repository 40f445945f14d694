//! The races of `thread-race`, as functions the lesson and its tests both call.
//!
//! # What Rust refuses to compile
//!
//! Python runs an unsynchronised shared counter without a word:
//!
//! ```python
//! counter = 0
//! def increment():
//!     global counter
//!     counter += 1          # read, add, write: three steps
//! ```
//!
//! Safe Rust does not compile the same program. Each block below is a
//! `compile_fail` doctest that names the error it must fail with; `cargo test -p
//! thread-race --doc` checks that each still fails, and for that reason.
//!
//! **1. A mutable global needs `unsafe` (E0133).** `static mut` can be written from
//! any thread with no synchronisation, so every use of it is an unsafe operation:
//!
//! ```compile_fail,E0133
//! static mut COUNTER: i64 = 0;
//! fn increment() {
//!     COUNTER += 1; // error[E0133]: use of mutable static is unsafe
//! }
//! ```
//!
//! **2. A thread may not borrow a local it could outlive (E0373).** `thread::spawn`
//! needs `'static` data: the closure borrows `counter`, which dies with `main`.
//!
//! ```compile_fail,E0373
//! fn main() {
//!     let mut counter = 0;
//!     let t = std::thread::spawn(|| counter += 1); // error[E0373]: may outlive `counter`
//!     t.join().unwrap();
//! }
//! ```
//!
//! **3. Two threads may not both hold `&mut` to the counter (E0499).** Scoped
//! threads may borrow locals, but the borrow checker still allows only one mutable
//! borrow at a time, across threads as within one:
//!
//! ```compile_fail,E0499
//! fn main() {
//!     let mut counter = 0;
//!     std::thread::scope(|s| {
//!         s.spawn(|| counter += 1);
//!         s.spawn(|| counter += 1); // error[E0499]: second mutable borrow
//!     });
//! }
//! ```
//!
//! **4. Unsynchronised shared ownership cannot cross threads (E0277).** `Rc<Cell<_>>`
//! lets many owners mutate with no lock, so it is neither `Send` nor `Sync`:
//!
//! ```compile_fail,E0277
//! use std::{cell::Cell, rc::Rc};
//! fn main() {
//!     let counter = Rc::new(Cell::new(0));
//!     let c = Rc::clone(&counter);
//!     std::thread::spawn(move || c.set(c.get() + 1)); // error[E0277]: `Rc<Cell<i32>>` cannot be sent
//! }
//! ```
//!
//! What compiles, and is right: an atomic read-modify-write (`fetch_add`), or a
//! `Mutex` held across the whole update. What compiles and is **still wrong**:
//! an atomic `load` then a separate `store` ([`load_then_store`]), and a check
//! done under one lock and the act under another ([`withdraw_twice_racy`]). Rust
//! rules out *data races* (undefined behaviour); it does not rule out *race
//! conditions* (wrong logic about order).

use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};
use std::thread;

/// The counter that should reach 2 but reaches 1: two threads each read it, both
/// wait at a barrier (so both have read before either writes), then each writes
/// what it read plus one. Deterministic: always 1.
pub fn both_read_then_both_write() -> i64 {
    let counter = AtomicI64::new(0);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let seen = counter.load(SeqCst);
                barrier.wait();
                counter.store(seen + 1, SeqCst);
            });
        }
    });
    counter.load(SeqCst)
}

/// Start `threads` threads together and have each run `op` `n` times.
fn hammer(threads: usize, n: u64, op: impl Fn() + Sync) {
    let start = Barrier::new(threads);
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..n {
                    op();
                }
            });
        }
    });
}

/// `threads` threads each add 1, `n` times, with an atomic `load` and a separate
/// atomic `store`: no undefined behaviour, and still lost updates. Returns the total.
pub fn load_then_store(threads: usize, n: u64) -> i64 {
    let counter = AtomicI64::new(0);
    hammer(threads, n, || {
        let v = counter.load(SeqCst);
        counter.store(v + 1, SeqCst);
    });
    counter.load(SeqCst)
}

/// The same with one indivisible `fetch_add`: no update lost.
pub fn fetch_add(threads: usize, n: u64) -> i64 {
    let counter = AtomicI64::new(0);
    hammer(threads, n, || {
        counter.fetch_add(1, SeqCst);
    });
    counter.load(SeqCst)
}

/// The same with a `Mutex<i64>`: the critical section is the whole `+= 1`.
pub fn mutex(threads: usize, n: u64) -> i64 {
    let counter = Mutex::new(0i64);
    hammer(threads, n, || *counter.lock().expect("counter lock") += 1);
    counter.into_inner().expect("counter lock")
}

/// How two withdrawals from one account ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawals {
    pub balance: i64,
    /// Withdrawals that passed the balance check and took the money.
    pub paid: usize,
    /// Withdrawals refused for lack of funds.
    pub refused: usize,
}

/// Check-then-act, wrong: an account of `balance`, two threads each withdraw
/// `amount`. Each checks the balance under the lock, lets go, and takes the money
/// under the lock again: both can pass the check. The barrier makes sure they do.
pub fn withdraw_twice_racy(balance: i64, amount: i64) -> Withdrawals {
    two_withdrawals(balance, |account, both_checked| {
        let ok = *account.lock().expect("account") >= amount; // check...
        both_checked.wait();
        if ok {
            *account.lock().expect("account") -= amount; // ...then act
        }
        ok
    })
}

/// Check-then-act, right: one guard held across the check and the update.
pub fn withdraw_twice_locked(balance: i64, amount: i64) -> Withdrawals {
    two_withdrawals(balance, |account, start| {
        start.wait();
        let mut b = account.lock().expect("account");
        let ok = *b >= amount;
        if ok {
            *b -= amount;
        }
        ok
    })
}

/// Two threads run `withdraw` on one account (with a two-party barrier to use as
/// they see fit); each says whether it took the money.
fn two_withdrawals(
    balance: i64,
    withdraw: impl Fn(&Mutex<i64>, &Barrier) -> bool + Sync,
) -> Withdrawals {
    let account = Mutex::new(balance);
    let barrier = Barrier::new(2);
    let results: Vec<bool> = thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| withdraw(&account, &barrier)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("withdrawal thread"))
            .collect()
    });
    tally(account.into_inner().expect("account"), &results)
}

fn tally(balance: i64, results: &[bool]) -> Withdrawals {
    let paid = results.iter().filter(|&&ok| ok).count();
    Withdrawals {
        balance,
        paid,
        refused: results.len() - paid,
    }
}
