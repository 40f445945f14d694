//! The lesson's helpers (the lesson itself is in `main.rs`): a bounded join, and
//! results shown the way Python would: floats as `repr` prints them, compared bit
//! for bit, and `/proc/self/maps` lines trimmed to what the lesson is about.

use std::fmt;
use std::time::Duration;

use anyhow::bail;
use common::Exit;
use common::process::Child;

/// How long the parent waits for a child before it calls it stuck and kills it.
/// The slowest case, 2 x 10,000,000 locked increments, takes about 3 s unoptimised.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Join a child, but not forever: a stopped or stuck child is killed, reaped and
/// reported. A child that failed is an error too: what it wrote cannot be trusted.
pub fn join(child: &mut Child) -> anyhow::Result<Exit> {
    let exit = child.join_within(PATIENCE)?;
    if !exit.success() {
        bail!("child pid {} failed: {exit}", child.pid());
    }
    Ok(exit)
}

/// A float as Python's `repr` writes it.
///
/// ```
/// use shared_value_array::py_float;
/// assert_eq!(py_float(5.67), "5.67");
/// assert_eq!(py_float(2.0), "2.0");
/// assert_eq!(py_float(-0.0), "-0.0");
/// assert_eq!(py_float(1e300), "1e+300");
/// assert_eq!(py_float(1.5e-7), "1.5e-07");
/// assert_eq!(py_float(1e16), "1e+16");
/// assert_eq!(py_float(f64::NAN), "nan");
/// assert_eq!(py_float(f64::NEG_INFINITY), "-inf");
/// ```
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 || (1e-4..1e16).contains(&x.abs()) {
        // The shortest digits that read back as the same float; Python adds `.0`.
        let s = x.to_string();
        return if s.contains('.') { s } else { s + ".0" };
    }
    // Python switches to an exponent outside [1e-4, 1e16), with a sign and two digits.
    let s = format!("{x:e}");
    match s.split_once('e') {
        Some((m, e)) if e.starts_with('-') => format!("{m}e-{:0>2}", &e[1..]),
        Some((m, e)) => format!("{m}e+{e:0>2}"),
        None => s,
    }
}

/// An `f64` compared by its 64 bits and shown with [`py_float`]. `nan` is the one
/// float that is not `==` to itself (in Python too), yet a child that writes a nan
/// into shared memory hands its parent exactly those bits.
///
/// ```
/// use shared_value_array::Bits;
/// assert!(Bits(f64::NAN) == Bits(f64::NAN));
/// assert!(Bits(0.0) != Bits(-0.0));
/// assert_eq!(Bits(5.67).to_string(), "5.67");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Bits(pub f64);

impl PartialEq for Bits {
    fn eq(&self, other: &Bits) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&py_float(self.0))
    }
}

/// A `/proc/self/maps` line without its offset, device and inode columns: the
/// address range, the flags and the name.
///
/// ```
/// use shared_value_array::short_maps;
/// let line = "7f2a1c5e4000-7f2a1c5e5000 rw-s 00000000 00:01 2051 /memfd:course-shm (deleted)";
/// assert_eq!(short_maps(line), "7f2a1c5e4000-7f2a1c5e5000 rw-s /memfd:course-shm (deleted)");
/// assert_eq!(short_maps("7f2a1c5e3000-7f2a1c5e4000 rw-p 00000000 00:00 0"), "7f2a1c5e3000-7f2a1c5e4000 rw-p");
/// ```
pub fn short_maps(line: &str) -> String {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let kept = fields.iter().take(2).chain(fields.iter().skip(5));
    kept.copied().collect::<Vec<_>>().join(" ")
}

/// The short `/proc/self/maps` line of the mapping that holds `addr` (empty if
/// none does).
pub fn mapping_of(addr: *const u8) -> String {
    short_maps(&common::shm::maps_line(addr).unwrap_or_default())
}

/// The flags of a (short) maps line: `rw-s` for shared, `rw-p` for private.
///
/// ```
/// assert_eq!(shared_value_array::flags("7f2a1c5e3000-7f2a1c5e4000 rw-p"), "rw-p");
/// assert_eq!(shared_value_array::flags(""), "(no mapping)");
/// ```
pub fn flags(maps: &str) -> &str {
    maps.split_whitespace().nth(1).unwrap_or("(no mapping)")
}
