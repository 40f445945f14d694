//! On stable Rust, rustdoc checks that a `compile_fail` doctest fails, but not the
//! error code it names. This test does: it takes every `compile_fail,EXXXX` block
//! from `src/lib.rs`, compiles it with rustc, and checks it fails with that code.

use std::path::Path;
use std::process::Command;

fn refused_examples() -> Vec<(String, String)> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if let Some(code) = doc.strip_prefix("```compile_fail,") {
            current = Some((code.trim().to_string(), String::new()));
        } else if doc.starts_with("```") {
            if let Some(done) = current.take() {
                out.push(done);
            }
        } else if let Some((_, src)) = &mut current {
            src.push_str(doc);
            src.push('\n');
        }
    }
    out
}

#[test]
fn each_refused_example_fails_with_the_error_it_names() {
    let examples = refused_examples();
    assert_eq!(examples.len(), 4, "expected the four refused examples");
    let dir = std::env::temp_dir().join(format!("thread-race-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    for (i, (code, src)) in examples.iter().enumerate() {
        let file = dir.join(format!("example{i}.rs"));
        std::fs::write(&file, src).unwrap();
        let kind = if src.contains("fn main") {
            "bin"
        } else {
            "lib"
        };
        let out = Command::new(&rustc)
            .args([
                "--edition",
                "2024",
                "--crate-type",
                kind,
                "--emit=metadata",
                "--out-dir",
            ])
            .arg(&dir)
            .arg(&file)
            .output()
            .expect("run rustc");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "example {i} compiled:\n{src}");
        assert!(
            stderr.contains(&format!("error[{code}]")),
            "example {i} should fail with {code}:\n{src}\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
