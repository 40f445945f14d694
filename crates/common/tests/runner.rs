//! The workshop runner touches only what it started, and names what happened.
//! (These tests run scripts/run_all.sh, which builds the course in release mode
//! first: quick when it is built already, as in CI.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bindir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("release")
}

/// Another run's lesson (here: a `sleep` started from the course's binary folder,
/// which is what the old runner's `pkill -f "^$bindir/"` matched) survives a run.
#[test]
fn run_all_leaves_processes_it_did_not_start_alone() {
    // Build first, so that the binary folder exists.
    let built = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "proc-global-var-pitfall",
            "--quiet",
        ])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(built.success());
    let stranger = bindir().join("zz-not-a-lesson");
    std::fs::copy("/bin/sleep", &stranger).unwrap();
    let mut other = Command::new(&stranger).arg("60").spawn().unwrap();
    let out = Command::new("bash")
        .arg(root().join("scripts/run_all.sh"))
        .args(["--only", "proc-global-var-pitfall", "--", "--ascii"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let alive = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_file(&stranger);
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run_all failed:\n{text}\n{errors}");
    assert!(alive, "run_all killed a process it did not start");
}

/// A lesson killed from outside is reported as killed, not as a timeout.
#[test]
fn run_all_names_a_kill_a_kill() {
    let run = Command::new("bash")
        .arg(root().join("scripts/run_all.sh"))
        .args(["--only", "mp-queue", "--", "--ascii"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Find the lesson: the process running the mp-queue binary whose run id
    // carries this runner's PID.
    let marker = format!("COURSE_RUN_ID=run_all-{}-", run.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    let lesson = loop {
        assert!(Instant::now() < deadline, "the lesson never started");
        // A runner that ended already (a failed build, say) will start nothing.
        let ended = std::fs::read_to_string(format!("/proc/{}/stat", run.id()))
            .map_or(true, |stat| stat.contains(") Z "));
        assert!(!ended, "run_all ended before the lesson started");
        let found = std::fs::read_dir("/proc").unwrap().find_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let ours = env
                .split(|&b| b == 0)
                .any(|v| v.starts_with(marker.as_bytes()));
            (ours && exe.ends_with("mp-queue")).then_some(pid)
        });
        if let Some(pid) = found {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = Command::new("kill")
        .args(["-KILL", &lesson.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a killed lesson must fail the run");
    assert!(text.contains("KILLED by SIGKILL"), "summary:\n{text}");
    assert!(!text.contains("TIMED OUT"), "summary:\n{text}");
}
