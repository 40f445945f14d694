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
    let text = String::from_utf8(out.stdout).unwrap();
    // " 1  threads-square-cube" then the question, indented, on the next line.
    let listed: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (n, name) = l.trim_start().split_once("  ")?;
            n.parse::<usize>().ok().map(|_| name.to_string())
        })
        .collect();
    assert_eq!(listed, lessons());
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "--list fits 80 columns"
    );
}

#[test]
fn every_lesson_test_checks_the_headers_expected_output() {
    for name in lessons() {
        let dir = root().join(format!("crates/{name}/tests"));
        let found = fs::read_dir(&dir).unwrap().any(|e| {
            let text = fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            text.contains("assert_expected_output(include_str!(\"../src/main.rs\"))")
        });
        assert!(
            found,
            "{name}: no test checks the header's Expected output against a real run"
        );
    }
}

#[test]
fn every_lesson_reads_as_a_story() {
    for (i, name) in lessons().iter().enumerate() {
        let main = read(&format!("crates/{name}/src/main.rs"));
        let lines = main.lines().count();
        assert!(lines <= 320, "{name}: src/main.rs has {lines} lines");
        // Benchmarks live in `cargo bench` targets, not in the lessons.
        for flag in ["\"bench\"", "bench_", "rounds"] {
            assert!(
                !main.contains(&format!("long = {flag}")) && !main.contains("fn bench"),
                "{name}: benchmark machinery in the lesson ({flag})"
            );
        }
        let note = read(&format!("docs/{:02}-{name}.md", i + 1));
        let n = note.lines().count();
        assert!(n <= 140, "docs/{:02}-{name}.md has {n} lines", i + 1);
        assert!(
            note.contains("benchmarks.md"),
            "docs/{:02}-{name}.md: no link to benchmarks.md",
            i + 1
        );
    }
}

#[test]
fn the_repository_cites_only_what_a_reader_can_find() {
    // Pieces, so that this file does not match itself.
    let exact = [["DESIGN", ".md"].concat(), ["PIT", "FALLS"].concat()];
    let any_case = [
        ["the ", "seeds"].concat(),
        ["seeds", "'"].concat(),
        ["seed", "'"].concat(),
    ];
    let files = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    let mut hits = Vec::new();
    for path in String::from_utf8(files.stdout).unwrap().lines() {
        let Ok(text) = fs::read_to_string(root().join(path)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let issue = lower.match_indices("issue ").any(|(at, _)| {
                lower[at + 6..]
                    .trim_start_matches('#')
                    .starts_with(|c: char| c.is_ascii_digit())
            });
            if issue
                || exact.iter().any(|b| line.contains(b.as_str()))
                || any_case.iter().any(|b| lower.contains(b.as_str()))
            {
                hits.push(format!("{path}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "cites what a reader cannot find:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_benchmarks_are_cargo_benches_with_their_figures_in_one_place() {
    let readme = read("README.md");
    assert!(
        readme.contains("cargo bench"),
        "README: how to run the benchmarks"
    );
    let figures = read("docs/benchmarks.md");
    for name in lessons() {
        let dir = root().join(format!("crates/{name}/benches"));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let cargo = read(&format!("crates/{name}/Cargo.toml"));
        for e in entries {
            let file = e.unwrap().file_name().into_string().unwrap();
            let bench = file.trim_end_matches(".rs");
            assert!(
                cargo.contains(&format!("name = \"{bench}\"")) && cargo.contains("harness = false"),
                "crates/{name}/Cargo.toml: [[bench]] {bench} with harness = false"
            );
            assert!(
                figures.contains(&format!("cargo bench -p {name}")),
                "docs/benchmarks.md has no section for cargo bench -p {name}"
            );
        }
    }
}

/// `{{#include path:anchor}}` and `{{#rustdoc_include ...}}` targets in a note.
fn includes(line: &str) -> Vec<&str> {
    line.match_indices("{{#")
        .filter_map(|(at, _)| {
            let rest = &line[at + 3..];
            let rest = rest
                .strip_prefix("include ")
                .or_else(|| rest.strip_prefix("rustdoc_include "))?;
            Some(rest[..rest.find("}}")?].trim())
        })
        .collect()
}

/// The book's chapters (docs/*.md): every file, sorted.
fn book_pages() -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".md"))
        .map(|n| {
            let text = read(&format!("docs/{n}"));
            (n, text)
        })
        .collect();
    pages.sort();
    pages
}

#[test]
fn no_rust_code_is_pasted_into_the_book() {
    // Code comes from the crates by anchor, so the prose cannot quote code that no
    // longer exists: a ```rust (or ```rs, ~~~rust) block holds include lines only.
    let mut pasted = Vec::new();
    let mut includes_seen = 0;
    for (name, text) in book_pages() {
        let mut block: Option<(usize, bool)> = None; // (first line, is rust)
        for (n, line) in text.lines().enumerate() {
            let fence = ["```", "~~~"]
                .iter()
                .any(|f| line.trim_start().starts_with(f));
            match (&mut block, fence) {
                (None, true) => {
                    let lang = line.trim_start().trim_start_matches(['`', '~']);
                    let lang = lang.split([',', ' ']).next();
                    let rust = matches!(lang, Some("rust" | "rs"));
                    block = Some((n + 1, rust));
                }
                (Some(_), true) => block = None,
                (Some((start, true)), false) if !line.trim().is_empty() => {
                    if includes(line).is_empty() || !line.trim().starts_with("{{#") {
                        pasted.push(format!("docs/{name}:{start}: {line}"));
                    } else {
                        includes_seen += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        pasted.is_empty(),
        "{} pasted Rust block line(s):\n{}",
        pasted.len(),
        pasted.join("\n")
    );
    assert!(
        includes_seen >= lessons().len(),
        "each lesson quotes its code"
    );
}

#[test]
fn every_include_in_the_book_finds_its_file_and_anchor() {
    // mdBook includes nothing, silently, for an anchor that is not there.
    for (name, text) in book_pages() {
        for target in text.lines().flat_map(includes) {
            let (path, anchor) = target.split_once(':').unwrap_or((target, ""));
            let src = fs::read_to_string(root().join("docs").join(path))
                .unwrap_or_else(|e| panic!("docs/{name}: {{{{#include {target}}}}}: {e}"));
            if anchor.is_empty() || anchor.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let has = |mark: &str| {
                src.lines().any(|l| {
                    l.split_once(mark)
                        .is_some_and(|(_, rest)| rest.trim() == anchor)
                })
            };
            assert!(
                has("ANCHOR:") && has("ANCHOR_END:"),
                "docs/{name}: {{{{#include {target}}}}}: no anchor '{anchor}' in {path}"
            );
        }
    }
}

#[test]
fn the_books_summary_lists_the_notes_in_course_order() {
    let summary = read("docs/SUMMARY.md");
    let at: Vec<usize> = lessons()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let note = format!("({:02}-{name}.md)", i + 1);
            summary
                .find(&note)
                .unwrap_or_else(|| panic!("docs/SUMMARY.md does not list {note}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "SUMMARY.md out of course order"
    );
    assert!(summary.contains("(README.md)") && summary.contains("(benchmarks.md)"));
    for (i, name) in lessons().iter().enumerate() {
        let note = read(&format!("docs/{:02}-{name}.md", i + 1));
        assert!(
            note.starts_with(&format!("# {}. {name} ", i + 1)),
            "docs/{:02}-{name}.md: its title is not '# {}. {name} ...'",
            i + 1,
            i + 1
        );
        assert!(
            note.contains("<summary>Speaker notes</summary>") && note.contains("Minutes: "),
            "docs/{:02}-{name}.md: no speaker notes with minutes",
            i + 1
        );
    }
}

/// The optional epilogue, `mpi-map` (Pool.map on MPI), lives in `mpi/`, a Cargo
/// workspace of its own that needs Open MPI: the root workspace never builds it,
/// yet it comes after the lessons with a note, a twin and an index entry.
#[test]
fn the_optional_mpi_epilogue_is_outside_the_workspace_with_a_note_and_a_twin() {
    let cargo = read("Cargo.toml");
    assert!(
        !cargo.contains("\"mpi/"),
        "the root workspace must not build mpi/"
    );
    assert!(read("mpi/Cargo.toml").contains("[workspace]"));
    let n = lessons().len() + 1;
    let note = format!("{n:02}-mpi-map.md");
    let twin = format!("python/{n:02}_mpi_map.py");
    let text = read(&format!("docs/{note}"));
    assert!(text.contains(&twin), "docs/{note} does not point to {twin}");
    assert!(
        text.contains("benchmarks.md"),
        "docs/{note}: no benchmarks.md"
    );
    assert!(
        root().join("docs").join(&twin).is_file(),
        "missing docs/{twin}"
    );
    assert!(read("docs/README.md").contains(&format!("({note})")));
    let main = read("mpi/mpi-map/src/main.rs");
    assert!(main.starts_with("//! # mpi-map: ") && main.contains("**Expected output**"));
    assert!(read("README.md").contains("scripts/mpi.sh"));
}
