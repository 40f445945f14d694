//! Link the unwinder into this crate's programs instead of loading
//! libgcc_s.so.1 at every start.
//!
//! A spawned child is a fresh exec of this program, so what the program costs to
//! start is part of every spawn. On GNU/Linux a Rust program loads libgcc_s.so.1
//! for one thing, the unwinder (`_Unwind_*`, which `panic!` unwinds with).
//! Loading it costs an `openat`, four `mmap`s and its relocations, and its
//! constructor probes the CPU with `cpuid` (`__cpu_indicator_init`): in a
//! virtual machine each `cpuid` traps to the hypervisor. On the 2-CPU machine of
//! docs/benchmarks.md an empty `fn main() {}` took 922 us to exec and join against
//! 653 us for `/bin/true` (1.41x), and 812 us (1.24x) with the unwinder linked in.
//!
//! So this script links gcc's static unwinder, `libgcc_eh.a`, whole into the
//! programs: they then define `_Unwind_*` themselves, and the linker, which Rust
//! runs with `--as-needed`, no longer records libgcc_s.so.1 as needed (`ldd`
//! shows it gone). That is what `gcc -static-libgcc` does for a C program (GCC
//! manual, "Link Options"). Panics unwind as before.
//!
//! Only where it applies: a native build (not a cross-compilation) for a
//! GNU/Linux target linked dynamically (a `+crt-static` build links libgcc_eh
//! already), and only when the C compiler that links Rust programs (`cc`, or the
//! linker cargo was told to use) knows where `libgcc_eh.a` is. Anywhere else
//! nothing changes, and the course builds as any Rust program.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name| env::var(name).unwrap_or_default();
    // The C compiler asked below is the host's: its libgcc_eh.a is for the host.
    let native = var("TARGET") == var("HOST");
    let dynamic_gnu_linux = native
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static");
    if !dynamic_gnu_linux {
        return;
    }
    let linker = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_string());
    // `cc -print-file-name=X` prints X's full path if the compiler would find
    // it, or X alone if not (GCC manual, "Developer Options").
    let Ok(out) = Command::new(linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = Path::new(&printed);
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return;
    }
    if let Some(dir) = path.parent() {
        // Look again if the archive goes (a compiler upgrade moves it).
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
}
