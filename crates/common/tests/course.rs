//! The course holds together: every lesson in the course order (the workspace member
//! list) has a crate with a `//!` header, a note in docs/, a Python twin, a row in
//! the README table and a place in the index, and `scripts/run_all.sh` runs exactly
//! these lessons in this order.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lessons in course order, from Cargo.toml's member list.
fn lessons() -> Vec<String> {
    let cargo = read("Cargo.toml");
    let start = cargo.find("members = [").expect("members list");
    let end = start + cargo[start..].find(']').expect("end of members");
    cargo[start..end]
        .split('"')
        .filter_map(|s| s.strip_prefix("crates/"))
        .filter(|&n| n != "common")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_order_has_every_lesson_crate_and_no_other() {
    let mut on_disk: Vec<String> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "common")
        .collect();
    on_disk.sort();
    let mut listed = lessons();
    listed.sort();
    assert_eq!(listed, on_disk);
}

#[test]
fn every_lesson_has_a_header_with_the_five_parts() {
    for name in lessons() {
        let main = read(&format!("crates/{name}/src/main.rs"));
        assert!(
            main.starts_with(&format!("//! # {name}: ")),
            "{name}: header title"
        );
        for part in [
            "**Question.**",
            "**Python twin**",
            "**Run.**",
            "**Expected output**",
            "**Notice.**",
        ] {
            assert!(main.contains(part), "{name}: header lacks {part}");
        }
        assert!(
            main.contains(&format!("cargo run -p {name}")),
            "{name}: header lacks the run line"
        );
        assert!(
            fs::read_dir(root().join(format!("crates/{name}/tests"))).is_ok_and(|d| d.count() > 0),
            "{name}: no integration test"
        );
    }
}

#[test]
fn every_lesson_has_a_note_a_twin_and_an_index_entry() {
    let index = read("docs/README.md");
    for (i, name) in lessons().iter().enumerate() {
        let note = format!("{:02}-{name}.md", i + 1);
        let twin = format!("python/{:02}_{}.py", i + 1, name.replace('-', "_"));
        let text = read(&format!("docs/{note}"));
        assert!(
            text.contains(&twin),
            "docs/{note} does not point to its twin {twin}"
        );
        assert!(
            root().join("docs").join(&twin).is_file(),
            "missing docs/{twin}"
        );
        assert!(
            index.contains(&format!("({note})")),
            "docs/README.md does not link {note}"
        );
    }
}

#[test]
fn the_readme_table_lists_the_lessons_in_order() {
    let readme = read("README.md");
    let table = &readme[readme.find("## The lessons").expect("a lessons section")..];
    let rows: Vec<usize> = lessons()
        .iter()
        .map(|name| {
            table
                .find(&format!("`cargo run -p {name}`"))
                .unwrap_or_else(|| panic!("README.md has no row for {name}"))
        })
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "README rows out of course order"
    );
    assert!(readme.contains("scripts/run_all.sh") && readme.contains("cargo test --workspace"));
}

#[test]
fn run_all_runs_the_lessons_in_course_order() {
    let out = Command::new("bash")
        .arg(root().join("scripts/run_all.sh"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, lessons());
}
