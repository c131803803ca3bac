//! `svoi config check` through the built binary, the way a deploy script runs it: config files
//! in a temporary directory, `SVOI_*` variables, global flags, exit codes and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

/// Runs `svoi` in `dir` with `args` and exactly the `SVOI_*` variables of `env` (inherited
/// ones are removed so the developer's environment cannot change the result).
fn svoi(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_svoi"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("svoi runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rendered line of `key` (`key = value  # source`).
fn line_of(out: &Output, key: &str) -> String {
    stdout(out)
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} line in:\n{}", stdout(out)))
        .to_string()
}

const GOOD: &str = "\
# production
db = \"sqlite:/var/lib/svoi/svoi.db\"

[ingest]
listen = \"127.0.0.1:6221\"
max_connections = 500

[sqlite]
synchronous = \"normal\"
";

#[test]
fn check_with_a_good_file_exits_0_and_shows_file_sources() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("svoi.toml"), GOOD).unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check", "--config", "svoi.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let db = line_of(&out, "db");
    assert!(
        db.starts_with("db = \"sqlite:/var/lib/svoi/svoi.db\""),
        "{db}"
    );
    assert!(db.ends_with("# file:svoi.toml:2"), "{db}");
    let listen = line_of(&out, "ingest.listen");
    assert!(
        listen.starts_with("ingest.listen = \"127.0.0.1:6221\""),
        "{listen}"
    );
    assert!(listen.ends_with("# file:svoi.toml:5"), "{listen}");
    assert!(line_of(&out, "ingest.max_connections").ends_with("# file:svoi.toml:6"));
    assert!(line_of(&out, "sqlite.synchronous").ends_with("# file:svoi.toml:9"));
    assert!(line_of(&out, "log.level").ends_with("# default"));
    assert_eq!(stdout(&out).lines().count(), 40, "one line per key");
    assert_eq!(stderr(&out), "", "no warnings");
}

#[test]
fn check_json_reports_values_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("svoi.toml"), GOOD).unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check", "--json"],
        &[("SVOI_CONFIG", "svoi.toml"), ("SVOI_LOG_LEVEL", "debug")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j: Json = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(j["valid"], true);
    assert_eq!(j["config"]["ingest.max_connections"], 500);
    assert_eq!(j["config"]["log.level"], "debug");
    assert_eq!(j["sources"]["ingest.max_connections"], "file:svoi.toml:6");
    assert_eq!(j["sources"]["log.level"], "env:SVOI_LOG_LEVEL");
    assert_eq!(j["sources"]["ingest.idle_timeout"], "default");
}

#[test]
fn unknown_key_exits_2_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "db = \"sqlite:a.db\"\n\n[ingest]\nmax_connections = 5\n\n\nlisen = \"0.0.0.0:1\"\n";
    fs::write(dir.path().join("svoi.toml"), text).unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check", "--config", "./svoi.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "", "nothing printed as if valid");
    let err = stderr(&out);
    assert!(
        err.starts_with("svoi: config ./svoi.toml line 7:1: unknown key \"ingest.lisen\""),
        "{err}"
    );

    let out = svoi(
        dir.path(),
        &["config", "check", "--json", "--config", "svoi.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let j: Json = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(j["valid"], false);
    assert!(j["error"].as_str().unwrap().contains("line 7:1"), "{j}");
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check"],
        &[("SVOI_CONFIG", "absent.toml")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("svoi: cannot read config file absent.toml (from SVOI_CONFIG)"),
        "{err}"
    );
}

#[test]
fn env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("svoi.toml"), GOOD).unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check", "--config", "svoi.toml"],
        &[("SVOI_INGEST_LISTEN", "10.0.0.1:7000")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let listen = line_of(&out, "ingest.listen");
    assert!(
        listen.starts_with("ingest.listen = \"10.0.0.1:7000\""),
        "{listen}"
    );
    assert!(listen.ends_with("# env:SVOI_INGEST_LISTEN"), "{listen}");
    assert!(line_of(&out, "db").ends_with("# file:svoi.toml:2"));
}

#[test]
fn env_bad_value_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check"],
        &[("SVOI_SQLITE_SYNCHRONOUS", "sometimes")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("svoi: environment variable SVOI_SQLITE_SYNCHRONOUS: "),
        "{err}"
    );
}

#[test]
fn db_flag_on_the_subcommand_wins_over_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = svoi(
        dir.path(),
        &[
            "config",
            "check",
            "--db",
            "sqlite:flag.db",
            "--log-format",
            "json",
        ],
        &[("SVOI_DB", "sqlite:env.db"), ("SVOI_LOG_FORMAT", "text")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let db = line_of(&out, "db");
    assert!(db.starts_with("db = \"sqlite:flag.db\""), "{db}");
    assert!(db.ends_with("# flag:--db"), "{db}");
    assert!(line_of(&out, "log.format").ends_with("# flag:--log-format"));
}

#[test]
fn global_flags_work_before_the_subcommand_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = svoi(
        dir.path(),
        &["--db", "postgres://svoi:pw@db/svoi", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let db = line_of(&out, "db");
    assert!(
        db.starts_with("db = \"postgres://svoi:***@db/svoi\""),
        "redacted: {db}"
    );
    assert!(!stdout(&out).contains("pw"), "{}", stdout(&out));
}

#[test]
fn unknown_svoi_variables_warn_but_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = svoi(
        dir.path(),
        &["config", "check"],
        &[("SVOI_INGEST_LISEN", "x"), ("SVOI_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "svoi: warning: unknown environment variable SVOI_INGEST_LISEN \
         (did you mean \"SVOI_INGEST_LISTEN\"?)\n"
    );
}

#[test]
fn the_shipped_systemd_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/svoi.toml"
    );
    let out = svoi(dir.path(), &["--config", shipped, "config", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(line_of(&out, "log.file").contains("/var/log/svoi/svoi.log"));
    assert!(line_of(&out, "db").contains("sqlite:/var/lib/svoi/svoi.db"));
}

#[test]
fn alert_thresholds_take_fractions_percentages_and_toml_floats() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svoi.toml");
    fs::write(
        &file,
        "[alerts]\ndecode_error_ratio = 0.2\napi_5xx_ratio = \"1%\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = svoi(dir.path(), &["--config", path, "config", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(line_of(&out, "alerts.decode_error_ratio").contains("0.2"));
    assert!(line_of(&out, "alerts.api_5xx_ratio").contains("0.01"));
    fs::write(&file, "[alerts]\n\ndisk_free_ratio = 1.5\n").unwrap();
    let out = svoi(dir.path(), &["--config", path, "config", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fraction from 0 to 1"),
        "{}",
        stderr(&out)
    );
}
