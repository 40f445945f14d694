//! # shared-memory-named: how do unrelated programs share memory by name?
//!
//! **Question.** How does another program, not a forked child, find shared
//! memory by its name; what do `close` and `unlink` each end; what stays in
//! `/dev/shm` when the creator is killed; and what does a `Manager` do instead?
//!
//! **Python twin** (`docs/python/07_shared_memory_named.py`):
//! `shared_memory.SharedMemory(create=True)` and `ShareableList`, attached with
//! `SharedMemory(name=...)` from another script; `close()` and `unlink()`;
//! `Manager().dict()` beside a `Value`.
//!
//! **Run.** `cargo run -p shared-memory-named` (`--help`: `--clients 3 --sets 50
//! --ascii`). Manager versus Value: `cargo bench -p shared-memory-named`.
//!
//! **Expected output** (PIDs and times vary):
//! ```text
//! [1] a named segment: made here, opened by name by another program
//!     created /dev/shm/course-named-4242-list (4096 bytes)
//!     sl = ShareableList([7, 2.5, 0]) in it
//!     started pid 4244: this binary again (exec, not fork), given the name
//!     pid 4244 has it open; we unlink the name at once
//!     pid 4244, another program: opened it by name, read [7, 2.5, 0]
//!     pid 4244: the name is gone, the memory is not: sl[2] = 49
//!   ok check: sl, read here now: [7, 2.5, 49] (expected [7, 2.5, 49])
//!   ok check: pid 4244 attached by name only, and ended with exitcode 0
//!   ok check: after unlink: no name in /dev/shm, the memory still shared
//! [2] close() versus unlink()
//!     close(): unmapped here; /dev/shm/course-named-4242-close stays
//!   ok check: after close the name stays: opened it again, sl[0] = 42
//!     unlink(): the name is gone (opening it now: ENOENT)
//!     ...and our mapping still works: sl[0] = 43
//!   ok check: after unlink the name is gone and the mapping still works
//! [3] a creator killed before it unlinks
//!     child pid 4245 created /dev/shm/course-named-4242-orphan
//!     then got SIGKILL: exitcode -9 (killed by SIGKILL)
//!     /dev/shm/course-named-4242-orphan is still there (4096 bytes)
//!   !! broken on purpose: SIGKILL runs no code: the name outlives its creator
//!   ok check: the killed creator's name is still in /dev/shm
//!     Python's resource tracker unlinks such names when the program ends
//!     shm_unlink(/course-named-4242-orphan): done
//!   ok check: after shm_unlink the entry is gone
//!     child pid 4246 maps a memfd region: /memfd:course-shm (deleted)
//!     then got SIGKILL: exitcode -9 (killed by SIGKILL)
//!   ok check: a memfd has no name in /dev/shm: nothing to leak
//! [4] a Manager: a server process owns the dict, 3 clients use it
//!     server pid 4247; each client does d[key] = i; d[key] for i in 1..=50
//!     d = {'client1': 50, 'client2': 50, 'client3': 50}
//!   ok check: d: {'client1': 50, 'client2': 50, 'client3': 50} (as expected)
//!   ok check: the server answered 302 requests: one per access
//!     a Manager access (d['x'] = i; d['x']): ...
//!     a shared Value access (v.value = i; v.value): ...
//!   ok check: a Manager access costs over 10 Value accesses (1100x)
//! [5] on the way out: nothing left in /dev/shm
//!     resource tracker pid 4243: its pipe from us closed; it found 0 names
//!   ok check: the resource tracker had nothing to clean up: exitcode 0
//!   ok check: /dev/shm entries named course-named-4242-*: []
//! ```
//!
//! **Notice.** The other program got nothing but a name: no fork, no inherited
//! mapping. Unlinking right after it opened the segment removes the name while the
//! memory lives on in both mappings; the last unmap frees it. A killed creator
//! leaves its name behind (SIGKILL runs no code), which is why Python runs a
//! resource tracker and why the course's own regions are memfds, which have no
//! name. Every Manager access is a round trip to its server: microseconds, where a
//! shared Value is nanoseconds.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use common::output::{CommonArgs, List};
use common::shm::{Gate, Region, Value};
use common::{Lesson, fork};
use shared_memory_named::helpers::{Helper, PATIENCE, Tracker};
use shared_memory_named::manager::{Manager, cost_per_access, python_dict};
use shared_memory_named::named::{Item, ShareableList, dev_shm_names, in_dev_shm};
use shared_memory_named::named::{memfd_mapping, unlink};
use shared_memory_named::{Segment, name_for, signals};

#[derive(Parser, Debug)]
#[command(about = "shared_memory by name, close vs unlink, leaks, and a Manager")]
struct Args {
    /// Client processes that use the Manager's dict.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    clients: u64,
    /// How many times each client sets and reads back its key.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    sets: i64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The bound on a wait for a forked child that should simply finish.
const BOUND: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // First of all: is this the lesson's other program (`--attach`, `--track`)?
    if let Some(code) = shared_memory_named::helpers::helper_main() {
        return code;
    }
    // The error, if any; then, if SIGTERM/SIGINT stopped it: what is left, and
    // death by that signal.
    signals::end(run(&Args::parse()), &name_for(""))
}

fn run(args: &Args) -> Result<ExitCode> {
    // First: an inherited SIGCHLD = SIG_IGN would reap our helpers unwaited.
    common::process::keep_children_joinable()?;
    signals::install()?;
    common::ipc::ready()?;
    let mut lesson = Lesson::start(
        "shared-memory-named",
        "how do unrelated programs share memory by name?",
        "SharedMemory(name=...), close() vs unlink(), Manager().dict()",
        &args.common,
    );
    // Started before any name exists, so that no name is ever unwatched.
    let mut tracker = Tracker::start()?;
    attach_by_name(&mut lesson, &mut tracker)?;
    close_versus_unlink(&mut lesson, &mut tracker)?;
    killed_creator(&mut lesson, &mut tracker)?;
    manager(&mut lesson, args.clients as usize, args.sets)?;
    nothing_left(&mut lesson, tracker)?;
    Ok(lesson.finish())
}

fn attach_by_name(lesson: &mut Lesson, tracker: &mut Tracker) -> Result<()> {
    let title = "a named segment: made here, opened by name by another program";
    begin(lesson, title)?;
    let name = name_for("list");
    tracker.watch(&name)?; // before it exists: see `Tracker::watch`
    // shm_open(O_CREAT | O_EXCL) + ftruncate + mmap(MAP_SHARED): see named.rs.
    let seg = Segment::create(&name, 4096)?;
    let sl = ShareableList::init(&seg, &[Item::Int(7), Item::Float(2.5), Item::Int(0)])?;
    let size = in_dev_shm(&name).unwrap_or(0);
    lesson.say(format!("created /dev/shm/{name} ({size} bytes)"));
    lesson.say(format!("sl = ShareableList({}) in it", List(&sl.to_vec())));
    // Another program: not forked (it inherits no mapping), given only the name.
    let mut other = Helper::start(&["--attach", &name], true, Stdio::null())?;
    let pid = other.pid();
    let line = "this binary again (exec, not fork), given the name";
    lesson.say(format!("started pid {pid}: {line}"));
    let h = sl.header();
    other.wait_for(|| h.attached.load(SeqCst) != 0, "opened it")?;
    // Unlink as early as possible: the other side has it open, so nobody needs
    // the name any more, and no crash from here on can leave it behind.
    seg.unlink()?;
    lesson.say(format!("pid {pid} has it open; we unlink the name at once"));
    h.unlinked.store(1, SeqCst);
    other.wait_for(|| h.done.load(SeqCst) == 1, "answered")?;
    let exit = other.join_within(PATIENCE)?;
    let got = sl.to_vec();
    let want = [Item::Int(7), Item::Float(2.5), Item::Int(49)];
    lesson.check_eq("sl, read here now", List(&got), List(&want));
    let by_name = h.attached.load(SeqCst) == i64::from(pid) && exit == 0;
    let claim = format!("pid {pid} attached by name only, and ended with exitcode {exit}");
    lesson.check(claim, by_name);
    let gone = in_dev_shm(&name).is_none() && h.saw_name_gone.load(SeqCst) == 1;
    let claim = "after unlink: no name in /dev/shm, the memory still shared";
    lesson.check(claim, gone);
    Ok(()) // `seg` drops here: munmap, the last mapping, frees the memory
}

fn close_versus_unlink(lesson: &mut Lesson, tracker: &mut Tracker) -> Result<()> {
    begin(lesson, "close() versus unlink()")?;
    let name = name_for("close");
    tracker.watch(&name)?;
    let seg = Segment::create(&name, 4096)?;
    ShareableList::init(&seg, &[Item::Int(42)])?;
    seg.close(); // munmap + close(fd): nothing else
    let stays = in_dev_shm(&name).is_some();
    lesson.say(format!("close(): unmapped here; /dev/shm/{name} stays"));
    // The name kept the memory alive: open it again, and own it from now on.
    let again = Segment::attach(&name)?.owning();
    let sl = ShareableList::open(&again)?;
    let kept = sl.get(0) == Item::Int(42);
    let claim = "after close the name stays: opened it again, sl[0] = 42";
    lesson.check(claim, stays && kept);
    again.unlink()?;
    let enoent = match Segment::attach(&name) {
        Err(e) => e.root_cause().downcast_ref() == Some(&nix::errno::Errno::ENOENT),
        Ok(_) => false,
    };
    lesson.say("unlink(): the name is gone (opening it now: ENOENT)");
    sl.set(0, Item::Int(43));
    let works = sl.get(0) == Item::Int(43);
    let now = sl.get(0);
    lesson.say(format!("...and our mapping still works: sl[0] = {now}"));
    let claim = "after unlink the name is gone and the mapping still works";
    lesson.check(claim, enoent && in_dev_shm(&name).is_none() && works);
    Ok(()) // the last close (Drop: munmap) frees the memory
}

fn killed_creator(lesson: &mut Lesson, tracker: &mut Tracker) -> Result<()> {
    begin(lesson, "a creator killed before it unlinks")?;
    let name = name_for("orphan");
    tracker.watch(&name)?; // the lesson's own safety net, should it die now
    let (created, never) = (Gate::new()?, Gate::new()?);
    let mut child = fork(|| -> Result<()> {
        // Child: create the name, then wait to be killed (bounded all the same).
        signals::default_in_child();
        let seg = Segment::create(&name, 4096)?;
        created.open();
        never.wait(Duration::from_secs(30));
        seg.close(); // not reached in the lesson: the parent kills us first
        Ok(())
    })?;
    signals::wait_until(|| created.is_open(), "the child to create the name")?;
    child.kill()?;
    let exit = child.join_within(BOUND)?;
    lesson.say(format!("child pid {} created /dev/shm/{name}", child.pid()));
    lesson.say(format!("then got SIGKILL: {exit}"));
    let left = in_dev_shm(&name);
    let size = left.map_or("gone".into(), |n| format!("{n} bytes"));
    lesson.say(format!("/dev/shm/{name} is still there ({size})"));
    lesson.broken("SIGKILL runs no code: the name outlives its creator");
    let claim = "the killed creator's name is still in /dev/shm";
    lesson.check(claim, left.is_some());
    lesson.say("Python's resource tracker unlinks such names when the program ends");
    unlink(&name)?;
    lesson.say(format!("shm_unlink(/{name}): done"));
    let gone = in_dev_shm(&name).is_none();
    lesson.check("after shm_unlink the entry is gone", gone);
    // The course's own regions: memfd_create, no name, freed with the last mapping.
    let (mapped, never) = (Gate::new()?, Gate::new()?);
    let mut child = fork(|| -> Result<()> {
        // Child: map a memfd region (common::shm::Region), then wait to be killed.
        signals::default_in_child();
        let _region = Region::new(4096, "a memfd region")?;
        mapped.open();
        never.wait(Duration::from_secs(30));
        Ok(())
    })?;
    signals::wait_until(|| mapped.is_open(), "the child to map its region")?;
    // Its /proc/PID/maps line names the memfd: "(deleted)", it has no path.
    let memfd = memfd_mapping(child.pid()).unwrap_or_else(|| "not found".into());
    child.kill()?;
    let exit = child.join_within(BOUND)?;
    let pid = child.pid();
    lesson.say(format!("child pid {pid} maps a memfd region: {memfd}"));
    lesson.say(format!("then got SIGKILL: {exit}"));
    let none = dev_shm_names("course-shm")?.is_empty() && dev_shm_names("memfd")?.is_empty();
    let claim = "a memfd has no name in /dev/shm: nothing to leak";
    lesson.check(claim, memfd.ends_with("(deleted)") && none);
    Ok(())
}

fn manager(lesson: &mut Lesson, clients: usize, sets: i64) -> Result<()> {
    let title = format!("a Manager: a server process owns the dict, {clients} clients use it");
    begin(lesson, &title)?;
    let mut manager = Manager::start(clients + 1)?;
    let mine = manager.proxy(0, PATIENCE)?;
    let mut children = Vec::new();
    for c in 1..=clients {
        let d = manager.proxy(c, PATIENCE)?;
        children.push(fork(move || -> Result<()> {
            // Child: every access through the proxy is a request and a reply.
            signals::default_in_child();
            let key = format!("client{c}");
            for i in 1..=sets {
                d.set(&key, i)?;
                if d.get(&key)? != Some(i) {
                    bail!("read back another value than it set");
                }
            }
            Ok(())
        })?);
    }
    let line = format!("each client does d[key] = i; d[key] for i in 1..={sets}");
    lesson.say(format!("server pid {}; {line}", manager.pid()));
    for child in &mut children {
        let exit = child.join_within(BOUND)?;
        if !exit.success() {
            bail!("client pid {} ended with {exit}", child.pid());
        }
    }
    let (items, served) = (mine.items()?, mine.served()?);
    let want: Vec<_> = (1..=clients)
        .map(|c| (format!("client{c}"), sets))
        .collect();
    lesson.say(format!("d = {}", python_dict(&items)));
    lesson.check_eq("d", python_dict(&items), python_dict(&want));
    let expected = clients as u64 * sets as u64 * 2 + 2; // + items() + served()
    let claim = format!("the server answered {served} requests: one per access");
    lesson.check(claim, served == expected);
    // What each access costs, measured here in a few thousand rounds.
    let value = Value::new(0i64)?;
    let cost = cost_per_access(&mine, &value, 2000)?;
    let (m, v, ratio) = (cost.manager_text(), cost.value_text(), cost.ratio());
    lesson.say(format!("a Manager access (d['x'] = i; d['x']): {m}"));
    lesson.say(format!("a shared Value access (v.value = i; v.value): {v}"));
    let claim = format!("a Manager access costs over 10 Value accesses ({ratio:.0}x)");
    lesson.check(claim, ratio > 10.0);
    manager.shutdown(BOUND)
}

fn nothing_left(lesson: &mut Lesson, tracker: Tracker) -> Result<()> {
    begin(lesson, "on the way out: nothing left in /dev/shm")?;
    let (pid, end) = (tracker.pid(), tracker.finish()?);
    let line = format!("its pipe from us closed; it found {} names", end.names);
    lesson.say(format!("resource tracker pid {pid}: {line}"));
    let (code, clean) = (end.exitcode, end.names == 0 && end.exitcode == 0);
    let claim = format!("the resource tracker had nothing to clean up: exitcode {code}");
    lesson.check(claim, clean);
    let ours = name_for("");
    let left = dev_shm_names(&ours)?;
    let claim = format!("/dev/shm entries named {ours}*: {}", List(&left));
    lesson.check(claim, left.is_empty());
    Ok(())
}

/// A step, unless SIGTERM or SIGINT came: then the lesson stops here.
fn begin(lesson: &mut Lesson, title: &str) -> Result<()> {
    signals::check()?;
    lesson.step(title);
    Ok(())
}
