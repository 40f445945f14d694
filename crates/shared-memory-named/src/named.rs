//! A named shared-memory segment, the way `multiprocessing.shared_memory` makes
//! one on Linux: `shm_open` a name (a file in the tmpfs at `/dev/shm`), `ftruncate`
//! it to its size, `mmap` it `MAP_SHARED`. Any process that knows the name can
//! open it, related or not (shm_overview(7)).
//!
//! Two separate acts end it, as in Python: `close` unmaps it in one process (the
//! name stays, and so does the memory), `unlink` removes the name (the memory
//! lives on while some process has it mapped). Nothing removes the name when the
//! creator dies: that is the leak step 3 of the lesson shows.
//!
//! The memory may be written by another process at any moment, so Rust never holds
//! a `&mut` or a plain `&T` into it: the [`ShareableList`] layout is made of atomics.

use std::cell::Cell;
use std::ffi::c_void;
use std::fmt;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::stat::{Mode, fstat};

/// A mapped named segment. Dropping it unmaps it and closes its descriptor
/// (Python's `close()`); the segment that *created* the name also unlinks it then,
/// unless that was done already, so that an early return leaves nothing behind.
#[derive(Debug)]
pub struct Segment {
    name: String,
    ptr: NonNull<c_void>,
    len: usize,
    // Kept open while mapped, as Python's SharedMemory keeps `_fd`; closed in Drop.
    _fd: OwnedFd,
    unlink_on_drop: Cell<bool>,
}

impl Segment {
    // ANCHOR: create_attach
    /// `SharedMemory(name, create=True, size=len)`: a new name (never an existing
    /// one: `O_EXCL`), readable and writable by this user only.
    pub fn create(name: &str, len: usize) -> anyhow::Result<Segment> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let fd = shm_open(&*slash(name), flags, Mode::S_IRUSR | Mode::S_IWUSR)
            .with_context(|| format!("shm_open(/{name}, O_CREAT) failed"))?;
        // From here on the name exists: if the next calls fail, remove it again.
        let undo = |e: anyhow::Error| {
            let _ = shm_unlink(&*slash(name));
            e
        };
        nix::unistd::ftruncate(&fd, len as i64)
            .with_context(|| format!("ftruncate(/{name}, {len}) failed"))
            .map_err(undo)?;
        let seg = Segment::map(name, fd, len).map_err(undo)?;
        seg.unlink_on_drop.set(true);
        Ok(seg)
    }

    /// `SharedMemory(name)`: open an existing name and map all of it.
    pub fn attach(name: &str) -> anyhow::Result<Segment> {
        let fd = shm_open(&*slash(name), OFlag::O_RDWR, Mode::empty())
            .with_context(|| format!("shm_open(/{name}) failed"))?;
        let len = fstat(&fd).context("fstat failed")?.st_size as usize;
        Segment::map(name, fd, len)
    }
    // ANCHOR_END: create_attach

    fn map(name: &str, fd: OwnedFd, len: usize) -> anyhow::Result<Segment> {
        let Some(size) = NonZeroUsize::new(len) else {
            bail!("/dev/shm/{name} is empty: nothing to map");
        };
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // Its bytes are only ever touched through atomics (module docs). Were the
        // object shrunk, touching lost pages would raise SIGBUS; nobody here resizes.
        // SAFETY: a fresh mapping at an address the kernel picks, of an object at
        // least `len` bytes long (we sized it, or fstat said so).
        let ptr = unsafe { mmap(None, size, rw, MapFlags::MAP_SHARED, &fd, 0) }
            .with_context(|| format!("mmap(/{name}) failed"))?;
        Ok(Segment {
            name: name.to_string(),
            ptr,
            len,
            _fd: fd,
            unlink_on_drop: Cell::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `shm.unlink()`: remove the name. This mapping, and every other one, stays
    /// valid; the memory is freed when the last of them goes.
    pub fn unlink(&self) -> anyhow::Result<()> {
        self.unlink_on_drop.set(false);
        unlink(&self.name)
    }

    /// `shm.close()`: unmap here and close the descriptor, and leave the name (and
    /// with it the memory) in place, even for the segment that created it.
    pub fn close(self) {
        self.unlink_on_drop.set(false);
    }

    /// Make this process responsible for the name: unlinked when dropped.
    pub fn owning(self) -> Segment {
        self.unlink_on_drop.set(true);
        self
    }

    /// A reference to a `T` made of atomics at `offset`.
    ///
    /// # Safety
    /// `T` must consist of atomics (valid when all-zero, changed only through
    /// interior mutability), `offset` must be aligned for `T`, and `offset +
    /// size_of::<T>()` must not pass the end of the segment.
    unsafe fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + size_of::<T>() <= self.len);
        // SAFETY: in bounds and aligned (the caller's promise; the mapping is page
        // aligned); atomics may be shared with other processes that write them.
        unsafe { &*self.ptr.as_ptr().cast::<u8>().add(offset).cast::<T>() }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.unlink_on_drop.get() {
            let _ = unlink(&self.name);
        }
        // SAFETY: the mapping was made in `map` with this address and length and is
        // unmapped once, here; every reference into it borrows `self`, so none is
        // left. The descriptor closes right after, with `_fd`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

// SAFETY: the segment is shared memory reached only through atomics; the pointer
// is valid in this whole process, whichever thread holds the Segment.
unsafe impl Send for Segment {}

/// `shm_unlink(/name)`.
pub fn unlink(name: &str) -> anyhow::Result<()> {
    shm_unlink(&*slash(name)).with_context(|| format!("shm_unlink(/{name}) failed"))
}

/// POSIX wants the name of a shared-memory object to start with one slash;
/// glibc then makes it the file `/dev/shm/<name>` (shm_overview(7)).
fn slash(name: &str) -> String {
    format!("/{name}")
}

/// Whether `/dev/shm/<name>` exists now, and how many bytes it holds.
pub fn in_dev_shm(name: &str) -> Option<u64> {
    std::fs::metadata(format!("/dev/shm/{name}"))
        .ok()
        .map(|m| m.len())
}

/// The entries of `/dev/shm` whose names start with `prefix`, sorted. An error,
/// never an empty list, when `/dev/shm` cannot be read.
pub fn dev_shm_names(prefix: &str) -> anyhow::Result<Vec<String>> {
    let dir = std::fs::read_dir("/dev/shm").context("cannot list /dev/shm")?;
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// The memfd region that process `pid` maps, as its `/proc/PID/maps` line
/// names it (`/memfd:course-shm (deleted)`: a memfd never had a path).
pub fn memfd_mapping(pid: i32) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .find_map(|l| l.find("/memfd:course-shm").map(|at| l[at..].to_string()))
}

/// One slot of a [`ShareableList`]: Python's `ShareableList` holds int, float,
/// bool, str, bytes and None; this one ints and floats, each in 8 bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Item {
    Int(i64),
    Float(f64),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Int(i) => write!(f, "{i}"),
            // Python prints 2.0, not 2.
            Item::Float(x) if x.fract() == 0.0 && x.is_finite() => write!(f, "{x:.1}"),
            Item::Float(x) => write!(f, "{x}"),
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The header at offset 0: what identifies the layout, and the flags two
/// programs use to say where they are.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    magic: AtomicU64,
    count: AtomicU64,
    /// The PID of the program that attached (0: nobody yet).
    pub attached: AtomicI64,
    /// 1 once the creator has unlinked the name.
    pub unlinked: AtomicI64,
    /// 1 if the attacher found the name gone from /dev/shm while still mapped.
    pub saw_name_gone: AtomicI64,
    /// 1 once the attacher has written its answer.
    pub done: AtomicI64,
}

#[repr(C)]
struct Slot {
    kind: AtomicU64,
    bits: AtomicU64,
}

const MAGIC: u64 = u64::from_le_bytes(*b"rsShList");
const INT: u64 = b'q' as u64;
const FLOAT: u64 = b'd' as u64;

/// `ShareableList` in spirit: a header, then fixed typed slots, in a named
/// segment, every field an atomic. A slot is two atomics (its kind, its bits), so
/// a reader racing a writer could pair an old kind with new bits: the lesson lets
/// one process write at a time, taking turns through the header's flags.
#[derive(Debug)]
pub struct ShareableList<'a> {
    seg: &'a Segment,
    len: usize,
}

impl<'a> ShareableList<'a> {
    /// Lay out `items` in `seg` (made by [`Segment::create`], all zero).
    pub fn init(seg: &'a Segment, items: &[Item]) -> anyhow::Result<Self> {
        if Self::bytes(items.len()) > seg.len() {
            bail!("{} items do not fit in {} bytes", items.len(), seg.len());
        }
        let list = ShareableList {
            seg,
            len: items.len(),
        };
        for (i, &item) in items.iter().enumerate() {
            list.set(i, item);
        }
        list.header().count.store(items.len() as u64, SeqCst);
        // Last: a reader that sees the magic sees the count and the slots.
        list.header().magic.store(MAGIC, SeqCst);
        Ok(list)
    }

    /// `ShareableList(name=...)`: read the layout another process made.
    pub fn open(seg: &'a Segment) -> anyhow::Result<Self> {
        if seg.len() < size_of::<Header>() {
            bail!("/dev/shm/{} is too small for a list", seg.name());
        }
        // SAFETY: offset 0, the header fits (checked), and it is made of atomics.
        let header: &Header = unsafe { seg.at(0) };
        if header.magic.load(SeqCst) != MAGIC {
            bail!("/dev/shm/{} does not hold a list", seg.name());
        }
        let len = header.count.load(SeqCst) as usize;
        if Self::bytes(len) > seg.len() {
            bail!("/dev/shm/{} is too small for its {len} items", seg.name());
        }
        Ok(ShareableList { seg, len })
    }

    fn bytes(len: usize) -> usize {
        size_of::<Header>().saturating_add(len.saturating_mul(size_of::<Slot>()))
    }

    pub fn header(&self) -> &Header {
        // SAFETY: offset 0; `init` and `open` checked that the header fits.
        unsafe { self.seg.at(0) }
    }

    fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.len, "slot {i} of a list of {}", self.len);
        // SAFETY: slot `i` < len fits (checked in `init`/`open`); 16-byte slots
        // after a 48-byte header are 8-byte aligned; they are made of atomics.
        unsafe { self.seg.at(size_of::<Header>() + i * size_of::<Slot>()) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `sl[i]`.
    pub fn get(&self, i: usize) -> Item {
        let slot = self.slot(i);
        let bits = slot.bits.load(SeqCst);
        match slot.kind.load(SeqCst) {
            FLOAT => Item::Float(f64::from_bits(bits)),
            _ => Item::Int(bits as i64),
        }
    }

    /// `sl[i] = item`.
    pub fn set(&self, i: usize, item: Item) {
        let slot = self.slot(i);
        let (kind, bits) = match item {
            Item::Int(v) => (INT, v as u64),
            Item::Float(x) => (FLOAT, x.to_bits()),
        };
        slot.kind.store(kind, SeqCst);
        slot.bits.store(bits, SeqCst);
    }

    /// `list(sl)`.
    pub fn to_vec(&self) -> Vec<Item> {
        (0..self.len).map(|i| self.get(i)).collect()
    }
}
