//! Repository hygiene that reviews forget: the README's test command is what CI runs, every
//! Rust file says what it owns, and `make help` documents every target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// The commands of the README's first code block, comments stripped.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("README.md opens with a code block");
    block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn readme_opens_with_serve_and_test_commands_and_ci_runs_the_test_command() {
    let commands = readme_commands();
    assert_eq!(
        commands.len(),
        2,
        "two commands: serve and test: {commands:?}"
    );
    assert!(commands[0].ends_with("serve"), "{commands:?}");
    let ci = read(".ci/run");
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("");
    assert_eq!(
        last.trim(),
        commands[1],
        ".ci/run must end with the README's test command"
    );
    let make = read("Makefile");
    assert!(
        make.contains(&format!("\t{}\n", commands[1])),
        "make test runs it too"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    if root().join("fuzz").is_dir() {
        rust_files(&root().join("fuzz"), &mut files);
    }
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            !fs::read_to_string(f)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(missing.is_empty(), "files without a //! doc: {missing:?}");
}

#[test]
fn make_help_documents_every_target() {
    let make = read("Makefile");
    // The .PHONY list, continued over lines ending in a backslash.
    let joined = make.replace("\\\n", " ");
    let phony: Vec<&str> = joined
        .lines()
        .find_map(|l| l.strip_prefix(".PHONY:"))
        .expect(".PHONY line")
        .split_whitespace()
        .collect();
    for target in &phony {
        assert!(
            make.lines()
                .any(|l| l.starts_with(&format!("{target}:")) && l.contains("## ")),
            "target {target} has no ## help text"
        );
    }
    let defined = make
        .lines()
        .filter(|l| l.contains(":") && l.contains("## ") && !l.starts_with('\t'))
        .count();
    assert_eq!(defined, phony.len(), "every documented target is .PHONY");
}

#[test]
fn make_has_every_operations_target() {
    let make = read("Makefile");
    for target in [
        "build",
        "start",
        "stop",
        "restart",
        "status",
        "logs",
        "test",
        "test-client",
        "test-api",
        "smoke-test",
        "health-check",
        "monitor",
        "metrics",
        "alerts",
        "runbook-no-frames",
        "runbook-queue-spike",
        "runbook-decode-errors",
        "runbook-db-slow",
        "runbook-api-5xx",
        "emergency-restart",
        "emergency-logs",
        "emergency-status",
        "daily-ops",
        "security-check",
        "perf-check",
        "maintenance",
        "backup",
        "restore",
        "db-migrate",
        "weekly-ops",
        "monthly-ops",
        "quarterly-ops",
        "maintenance-end",
        "maintenance-status",
        "maintenance-log",
        "backup-list",
        "backup-prune",
        "retention",
        "db-optimize",
        "db-stats",
        "report",
    ] {
        assert!(
            make.lines()
                .any(|l| l.starts_with(&format!("{target}:")) && l.contains("## ")),
            "make {target} is missing or has no help text"
        );
    }
}

/// The recipe lines of `target` (the tab-indented lines after `target:`).
fn recipe(make: &str, target: &str) -> Vec<String> {
    make.lines()
        .skip_while(|l| !l.starts_with(&format!("{target}:")))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn operations_targets_call_the_svoi_commands() {
    let make = read("Makefile");
    for (target, command) in [
        ("daily-ops", "$(OPS) maintenance run daily"),
        ("weekly-ops", "$(OPS) maintenance run weekly"),
        ("monthly-ops", "$(OPS) maintenance run monthly"),
        ("quarterly-ops", "$(OPS) maintenance run quarterly"),
        ("maintenance", "$(OPS) maintenance start --reason"),
        ("maintenance-end", "$(OPS) maintenance end"),
        ("backup", "$(OPS) backup create"),
        ("backup", "$(OPS) backup verify latest"),
        ("restore", "$(OPS) backup restore"),
        ("retention", "$(OPS) retention run"),
        ("report", "$(OPS) report"),
    ] {
        let lines = recipe(&make, target);
        assert!(
            lines.iter().any(|l| l.contains(command)),
            "make {target} does not run `{command}`: {lines:?}"
        );
    }
}
