//! Memory that is really shared between a parent and its forked children:
//! `multiprocessing.Value` and `multiprocessing.Array`, on `memfd_create` + `MAP_SHARED`.
//!
//! After `fork`, ordinary memory is copy-on-write: a child's writes land in its own
//! copy. So does `memmap2::MmapMut::map_anon`, which is `MAP_PRIVATE` since memmap2
//! 0.2.0 (memmap2-rs PR #5). A [`Region`] is a `memfd` mapped with `MAP_SHARED`
//! (`memmap2::MmapMut::map_mut`): every process that has it mapped sees the same
//! physical pages. Make it **before** the fork; the child inherits the mapping.
//!
//! Another process may write the region at any moment, so Rust must never hold a
//! `&mut` (or a plain `&T`) into it: access goes through atomics or behind a
//! process-shared [`ShmMutex`]. No pointers are stored in it; they would mean
//! nothing in another process (Python's docs say the same of sharedctypes).
//!
//! A region that holds one of the kit's robust locks ([`Value`], [`Array`],
//! [`crate::lock::SharedLock`]) is not unmapped while a thread of this process holds
//! that lock, even through a leaked guard: the mapping is leaked instead, because
//! the thread's robust list still points into it ([`crate::lock`] explains why).
//! Sizes are computed with checked arithmetic: a size that cannot fit is
//! [`ShmError::TooLarge`], never a wrapped-around small mapping.

use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, size_of};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::SeqCst};

use memmap2::{MmapMut, MmapOptions};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::lock::{Robustness, ShmMutex};

/// Why a shared region could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The size does not fit this machine (or does not fit in a number at all).
    #[error("cannot allocate {what}: {reason}")]
    TooLarge { what: String, reason: String },
    /// The kernel refused (memfd_create, ftruncate or mmap).
    #[error("{call} failed for {what}: {error}")]
    Os {
        call: &'static str,
        what: String,
        // Not a `#[source]`: the message says it already, and `{:#}` would print
        // it a second time.
        error: std::io::Error,
    },
    #[error("initialising the lock in shared memory failed: {0}")]
    Lock(String),
}

/// A block of `MAP_SHARED` memory backed by a `memfd`. Zero-filled when made.
pub struct Region {
    // Unmapped in Drop, unless a leaked guard forbids it. We never take a slice of
    // it: see the module docs.
    map: ManuallyDrop<MmapMut>,
    ptr: *mut u8,
    len: usize,
    /// Whether a [`ShmMutex`] the kit initialised sits at offset 0.
    has_lock: bool,
}

// SAFETY: the region is plain shared memory that any thread may touch; every access
// to its contents goes through atomics or a process-shared mutex.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({:p}, {} bytes, MAP_SHARED)", self.ptr, self.len)
    }
}

impl Region {
    /// Map `len` bytes (at least one) of shared memory. `what` names the request in
    /// error messages (`Array('i', 3)`).
    pub fn new(len: usize, what: &str) -> Result<Region, ShmError> {
        let len = len.max(1);
        check_fits(len as u128, what)?;
        let os = |call, error| ShmError::Os {
            call,
            what: what.to_string(),
            error,
        };
        // memfd: anonymous, nothing left behind in /dev/shm, not bound by its size
        // limit. CLOEXEC for exec; the fd is closed as soon as the mapping exists, so
        // forked children do not inherit it either.
        let fd = memfd_create(c"course-shm", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| os("memfd_create", e.into()))?;
        let file = File::from(fd);
        file.set_len(len as u64).map_err(|e| os("ftruncate", e))?;
        // SAFETY: the file is a fresh memfd of exactly `len` bytes that only this
        // process can reach, so it cannot shrink under the mapping (no SIGBUS). The
        // mapping is shared with the children we fork; we never form references to
        // its bytes, only atomics and the pthread mutex (module docs).
        let mut map =
            unsafe { MmapOptions::new().len(len).map_mut(&file) }.map_err(|e| os("mmap", e))?;
        let ptr = map.as_mut_ptr();
        Ok(Region {
            map: ManuallyDrop::new(map),
            ptr,
            len,
            has_lock: false,
        })
    }

    /// A region of `len` bytes that starts with a [`ShmMutex`], initialised.
    pub(crate) fn with_lock(
        len: usize,
        what: &str,
        robustness: Robustness,
    ) -> Result<Region, ShmError> {
        let mut region = Region::new(len.max(size_of::<ShmMutex>()), what)?;
        // SAFETY: a fresh page-aligned region, large enough for the mutex and not yet
        // shared; the mutex never moves (the mapping does not), and Drop keeps the
        // mapping while this process holds it (`has_lock`).
        unsafe { ShmMutex::init_in_place(region.ptr.cast(), robustness) }
            .map_err(|e| ShmError::Lock(e.to_string()))?;
        region.has_lock = true;
        Ok(region)
    }

    /// The mutex at offset 0 of a region made by [`Region::with_lock`].
    pub(crate) fn lock(&self) -> &ShmMutex {
        assert!(self.has_lock, "this region holds no lock");
        // SAFETY: offset 0 holds a mutex initialised in `with_lock`, used only through
        // pthread calls; it lives as long as the mapping, which outlives `&self`.
        unsafe { &*self.ptr.cast::<ShmMutex>() }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// This mapping's line in `/proc/self/maps` (`rw-s` = shared).
    pub fn maps_line(&self) -> Option<String> {
        maps_line(self.ptr)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.has_lock && self.lock().held_in_this_process() {
            // A guard was leaked (mem::forget) and a thread's robust list still links
            // to this mutex: unmapping would let glibc or the kernel write into
            // whatever is mapped here next. Keep it mapped, for good.
            return;
        }
        // SAFETY: the map is dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.map) }
    }
}

/// `header + count * item` bytes, or [`ShmError::TooLarge`]. Computed in u128,
/// where it cannot overflow, so a huge count is refused, never wrapped around.
pub(crate) fn bytes_for(
    header: usize,
    count: usize,
    item: usize,
    what: &str,
) -> Result<usize, ShmError> {
    let bytes = count as u128 * item as u128 + header as u128;
    check_fits(bytes, what)?;
    Ok(bytes as usize) // at most isize::MAX: checked just above
}

/// The line of `/proc/self/maps` that contains `addr`: its flags say `rw-s` for a
/// shared mapping and `rw-p` for a private (copy-on-write) one.
pub fn maps_line(addr: *const u8) -> Option<String> {
    let addr = addr as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            let mut ends = range.split('-').map(|h| usize::from_str_radix(h, 16));
            matches!((ends.next(), ends.next()), (Some(Ok(lo)), Some(Ok(hi))) if lo <= addr && addr < hi)
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Refuse sizes larger than the machine's memory, with a message that says so,
/// instead of mapping lazily and dying of SIGBUS or the OOM killer later.
fn check_fits(bytes: u128, what: &str) -> Result<(), ShmError> {
    let total = mem_total_bytes();
    if bytes > isize::MAX as u128 || bytes > total as u128 {
        return Err(ShmError::TooLarge {
            what: what.to_string(),
            reason: format!(
                "{bytes} bytes is more than this machine's memory ({:.1} GiB)",
                total as f64 / (1u64 << 30) as f64
            ),
        });
    }
    Ok(())
}

fn mem_total_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb = m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
            kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// A type that can live in a [`Value`] or [`Array`], with its Python typecode.
/// Each element is stored as an atomic cell, so one load or store is indivisible
/// even while another process writes; a read-modify-write such as `+=` is not.
pub trait Element: Copy + PartialEq + fmt::Debug + Default + Send + Sync + 'static {
    /// The atomic that holds one element in shared memory (all-zero bits = zero).
    type Cell: Send + Sync;
    /// The `array`/`ctypes` typecode Python uses for it.
    const TYPECODE: char;
    fn load(cell: &Self::Cell) -> Self;
    fn store(cell: &Self::Cell, value: Self);
}

impl Element for i32 {
    type Cell = AtomicI32;
    const TYPECODE: char = 'i';
    fn load(cell: &AtomicI32) -> i32 {
        cell.load(SeqCst)
    }
    fn store(cell: &AtomicI32, value: i32) {
        cell.store(value, SeqCst)
    }
}

impl Element for i64 {
    type Cell = AtomicI64;
    const TYPECODE: char = 'q';
    fn load(cell: &AtomicI64) -> i64 {
        cell.load(SeqCst)
    }
    fn store(cell: &AtomicI64, value: i64) {
        cell.store(value, SeqCst)
    }
}

impl Element for f64 {
    // No AtomicF64 in std: the bits travel in an AtomicU64.
    type Cell = AtomicU64;
    const TYPECODE: char = 'd';
    fn load(cell: &AtomicU64) -> f64 {
        f64::from_bits(cell.load(SeqCst))
    }
    fn store(cell: &AtomicU64, value: f64) {
        cell.store(value.to_bits(), SeqCst)
    }
}

/// The layout of a [`Value`] in its region: its lock, then the cell.
#[repr(C)]
struct ValueSlot<C> {
    lock: ShmMutex,
    cell: C,
}

/// `multiprocessing.Value(typecode, v)`: one element in shared memory, with its own
/// lock (`get_lock()`), like Python's synchronized wrapper. Python's lock is an
/// `RLock`; ours is a robust [`ShmMutex`] (see [`crate::lock`]).
///
/// `get` and `set` are each indivisible. `v.set(v.get() + 1)` is not: hold
/// `get_lock()` across it, exactly as Python's docs tell you to.
pub struct Value<T: Element> {
    region: Region,
    _t: PhantomData<T>,
}

impl<T: Element> Value<T> {
    pub fn new(value: T) -> Result<Self, ShmError> {
        let what = format!("Value('{}')", T::TYPECODE);
        // The slot is repr(C) with the lock first: the region's lock at offset 0.
        let region = Region::with_lock(size_of::<ValueSlot<T::Cell>>(), &what, Robustness::Robust)?;
        let v = Value {
            region,
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    fn slot(&self) -> &ValueSlot<T::Cell> {
        // SAFETY: the region holds an initialised ValueSlot (see `new`); a shared
        // reference is sound because both fields are only changed through their own
        // interior mutability (atomics, the pthread mutex).
        unsafe { &*self.region.as_ptr().cast::<ValueSlot<T::Cell>>() }
    }

    /// `v.value` (read).
    pub fn get(&self) -> T {
        T::load(&self.slot().cell)
    }

    /// `v.value = x`.
    pub fn set(&self, value: T) {
        T::store(&self.slot().cell, value)
    }

    /// `v.get_lock()`: the lock that guards this value's read-modify-writes.
    pub fn get_lock(&self) -> &ShmMutex {
        &self.slot().lock
    }

    /// The atomic cell itself, for single-instruction updates (`fetch_add`).
    pub fn cell(&self) -> &T::Cell {
        &self.slot().cell
    }

    /// Where the value lives (the same address in parent and child after fork).
    pub fn as_ptr(&self) -> *const u8 {
        self.region.as_ptr()
    }

    pub fn region(&self) -> &Region {
        &self.region
    }
}

impl<T: Element> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value('{}', {:?})", T::TYPECODE, self.get())
    }
}

/// `multiprocessing.RawValue(typecode, v)`: a shared element with no lock.
pub struct RawValue<T: Element> {
    region: Region,
    _t: PhantomData<T>,
}

impl<T: Element> RawValue<T> {
    pub fn new(value: T) -> Result<Self, ShmError> {
        let what = format!("RawValue('{}')", T::TYPECODE);
        let v = RawValue {
            region: Region::new(size_of::<T::Cell>(), &what)?,
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    pub fn cell(&self) -> &T::Cell {
        // SAFETY: the region is page-aligned, at least one cell long, zero-filled
        // (a valid atomic) and only changed through the atomic.
        unsafe { &*self.region.as_ptr().cast::<T::Cell>() }
    }

    pub fn get(&self) -> T {
        T::load(self.cell())
    }

    pub fn set(&self, value: T) {
        T::store(self.cell(), value)
    }
}

impl<T: Element> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue('{}', {:?})", T::TYPECODE, self.get())
    }
}

/// `multiprocessing.Array(typecode, n)`: `n` zeroed elements in shared memory, with
/// a lock (`get_lock()`). Elements are atomic cells; see [`Element`].
pub struct Array<T: Element> {
    region: Region,
    len: usize,
    _t: PhantomData<T>,
}

/// Cells start after the lock, which is 64-byte aligned and sized.
const ARRAY_CELLS_OFFSET: usize = size_of::<ShmMutex>();

impl<T: Element> Array<T> {
    /// `Array(typecode, len)`, all zeros. A size that cannot fit gets a clear error.
    pub fn new(len: usize) -> Result<Self, ShmError> {
        let what = format!("Array('{}', {len})", T::TYPECODE);
        let bytes = bytes_for(ARRAY_CELLS_OFFSET, len, size_of::<T::Cell>(), &what)?;
        let region = Region::with_lock(bytes, &what, Robustness::Robust)?;
        Ok(Array {
            region,
            len,
            _t: PhantomData,
        })
    }

    /// `Array(typecode, values)`.
    pub fn from_slice(values: &[T]) -> Result<Self, ShmError> {
        let a = Self::new(values.len())?;
        for (cell, &v) in a.cells().iter().zip(values) {
            T::store(cell, v);
        }
        Ok(a)
    }

    /// The elements as atomic cells: index them, `load`/`store` them.
    pub fn cells(&self) -> &[T::Cell] {
        // SAFETY: the region holds `len` zero-initialised cells from offset 64 (64 is
        // a multiple of every cell's alignment); they change only through atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.region
                    .as_ptr()
                    .add(ARRAY_CELLS_OFFSET)
                    .cast::<T::Cell>(),
                self.len,
            )
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `a[i]`, or `None` past the end (Python raises IndexError).
    pub fn get(&self, i: usize) -> Option<T> {
        self.cells().get(i).map(T::load)
    }

    /// `a[i] = v`; false (and nothing written) past the end.
    pub fn set(&self, i: usize, value: T) -> bool {
        self.cells().get(i).map(|c| T::store(c, value)).is_some()
    }

    /// `a[:]`: a snapshot copy (each element read atomically, not the whole array).
    pub fn to_vec(&self) -> Vec<T> {
        self.cells().iter().map(T::load).collect()
    }

    /// `a.get_lock()`.
    pub fn get_lock(&self) -> &ShmMutex {
        self.region.lock()
    }

    pub fn region(&self) -> &Region {
        &self.region
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array('{}', {:?})", T::TYPECODE, self.to_vec())
    }
}

/// A one-shot flag in shared memory: workers `wait()` until someone `open()`s it.
/// Used to start forked children at the same instant (so a race has both sides
/// running) and for a child to say "I got this far" to its parent.
#[derive(Debug)]
pub struct Gate {
    flag: RawValue<i32>,
}

impl Gate {
    pub fn new() -> Result<Gate, ShmError> {
        Ok(Gate {
            flag: RawValue::new(0)?,
        })
    }

    pub fn open(&self) {
        self.flag.set(1);
    }

    pub fn is_open(&self) -> bool {
        self.flag.get() == 1
    }

    /// Wait until the gate opens (yielding the CPU while waiting); false if
    /// `timeout` passes first.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        // Time this process spends stopped (Ctrl-Z of the whole job) is left
        // out; a timeout past any clock (Duration::MAX) is a century.
        let mut deadline = crate::process::Deadline::after(timeout);
        while !self.is_open() {
            if deadline.passed() {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }
}
