//! `svoi smoke` and `svoi health` against real `svoi serve` processes on loopback: a healthy
//! server passes every item (and the smoke record lands in the database); a closed device
//! port, a closed API port, a stopped PostgreSQL and an ERROR line in the log each fail the
//! items they should and set exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use serde_json::Value;
use util::{BIN, free_addr, serve_api, sigterm};

/// The IMEI `svoi smoke` identifies its synthetic device with.
const SMOKE_IMEI: &str = "000000000000000";

/// Every item of `svoi smoke`, in order.
const SMOKE_ITEMS: [&str; 9] = [
    "config",
    "api.health",
    "api.ready",
    "device.session",
    "api.readback",
    "database",
    "disk",
    "memory",
    "log",
];

/// A running `svoi serve` with its log in `log` (through `SVOI_LOG_FILE`).
struct Server {
    child: Child,
    dev: SocketAddr,
    api: SocketAddr,
    db: String,
    log: PathBuf,
}

impl Server {
    /// `svoi serve` in `dir` on database `db`, logging to `dir/svoi.log`.
    fn start(dir: &Path, db: &str, env: &[(&str, &str)]) -> Server {
        let (dev, api) = (free_addr(), free_addr());
        let log = dir.join("svoi.log");
        let log_text = log.to_str().unwrap().to_owned();
        let mut env = env.to_vec();
        env.push(("SVOI_LOG_FILE", &log_text));
        let child = serve_api(dir, Some(db), dev, api, &dir.join("stderr.log"), &env);
        Server {
            child,
            dev,
            api,
            db: db.to_owned(),
            log,
        }
    }

    /// The flags that point a command at this server.
    fn flags(&self) -> Vec<String> {
        vec![
            "--api".into(),
            format!("http://{}", self.api),
            "--device".into(),
            self.dev.to_string(),
            "--db".into(),
            self.db.clone(),
            "--log-file".into(),
            self.log.to_str().unwrap().into(),
        ]
    }

    fn stop(mut self) {
        let status = sigterm(&mut self.child);
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    /// A test that fails midway must not leave its server running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `svoi ARGS` in `dir` without inherited `SVOI_*` variables, with thresholds no test
/// machine fails (the thresholds themselves are unit-tested), plus `env`.
fn svoi(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SVOI_ALERTS_DISK_FREE_RATIO", "0.001")
        .env("SVOI_ALERTS_MEMORY_RATIO", "0.999")
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

/// `svoi smoke|health --json FLAGS...`: the exit code and the document.
fn run_json(dir: &Path, command: &str, flags: &[String], env: &[(&str, &str)]) -> (i32, Value) {
    let mut args = vec![command.to_owned(), "--json".to_owned()];
    args.extend_from_slice(flags);
    let out = svoi(dir, &args, env);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{command} printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// `(name, status, detail)` of every item.
fn items(doc: &Value) -> Vec<(String, String, String)> {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The status and detail of item `name`.
fn item(doc: &Value, name: &str) -> (String, String) {
    items(doc)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, s, d)| (s, d))
        .unwrap_or_else(|| panic!("no item {name}: {doc}"))
}

/// Asserts the items are `names` in order, each with status `pass` unless `expect` says
/// otherwise.
fn assert_items(doc: &Value, names: &[&str], expect: &[(&str, &str)]) {
    let got = items(doc);
    let got_names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(got_names, names, "{doc:#}");
    for (name, status, detail) in &got {
        let want = expect
            .iter()
            .find(|(n, _)| n == name)
            .map_or("pass", |(_, s)| *s);
        assert_eq!(status, want, "{name}: {detail}\n{doc:#}");
        assert!(!detail.is_empty() && !detail.contains('\n'), "{name}");
    }
    let failed = expect.iter().any(|(_, s)| *s == "fail");
    assert_eq!(doc["ok"], !failed, "{doc:#}");
}

/// Records of the smoke IMEI in an SQLite database file.
fn smoke_records(db_file: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db_file).unwrap();
    conn.query_row(
        "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device WHERE d.imei = ?1",
        [SMOKE_IMEI],
        |r| r.get(0),
    )
    .unwrap()
}

/// A fresh temp dir with an SQLite URL in it.
fn sqlite_dir() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svoi.db");
    let url = format!("sqlite:{}", file.display());
    (dir, file, url)
}

/// An address nothing listens on.
fn closed_addr() -> SocketAddr {
    free_addr()
}

#[test]
fn healthy_server_passes_every_item_and_the_record_is_stored() {
    let (dir, file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let flags = server.flags();

    // No token: a temporary one is created and revoked.
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(&doc, &SMOKE_ITEMS, &[]);
    assert_eq!(code, 0);
    let (_, readback) = item(&doc, "api.readback");
    assert!(readback.contains("temporary token smoke-"), "{readback}");
    assert!(readback.contains("revoked"), "{readback}");
    let (_, log) = item(&doc, "log");
    assert!(log.contains("no ERROR line"), "{log}");
    let (_, database) = item(&doc, "database");
    assert!(database.starts_with("sqlite schema version "), "{database}");
    assert!(
        database.ends_with(&format!("(current) at {db}")),
        "{database}"
    );
    assert_eq!(smoke_records(&file), 1);
    let conn = rusqlite::Connection::open(&file).unwrap();
    let (smoke_tokens, active): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE revoked_at_us IS NULL)
             FROM api_tokens WHERE name LIKE 'smoke-%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (smoke_tokens, active),
        (1, 0),
        "the temporary token is revoked"
    );

    // A token from `svoi token create`, by flag and by environment.
    let out = svoi(
        dir.path(),
        &["token", "create", "--name", "ops", "--db", db.as_str()].map(String::from),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.lines().last().unwrap().trim().to_owned();
    let mut with_flag = flags.clone();
    with_flag.extend(["--token".to_owned(), token.clone()]);
    let (code, doc) = run_json(dir.path(), "smoke", &with_flag, &[]);
    assert_items(&doc, &SMOKE_ITEMS, &[]);
    assert_eq!(code, 0);
    assert!(!item(&doc, "api.readback").1.contains("temporary"), "{doc}");
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[("SVOI_TOKEN", &token)]);
    assert_items(&doc, &SMOKE_ITEMS, &[]);
    assert_eq!(code, 0);
    assert_eq!(smoke_records(&file), 3, "one new record per run");

    // The checklist form.
    let mut args = vec!["smoke".to_owned()];
    args.extend(flags);
    let out = svoi(dir.path(), &args, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for (line, name) in lines.iter().zip(SMOKE_ITEMS) {
        assert!(line.starts_with(&format!("PASS  {name:<16}")), "{text}");
    }
    assert_eq!(lines[9], "smoke: 9 passed, 0 failed, 0 skipped");
    server.stop();
}

#[test]
fn closed_device_port_fails_the_session_and_skips_the_readback() {
    let (dir, file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let mut flags = server.flags();
    flags[3] = closed_addr().to_string();
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(
        &doc,
        &SMOKE_ITEMS,
        &[("device.session", "fail"), ("api.readback", "skip")],
    );
    assert_eq!(code, 1);
    assert!(
        item(&doc, "device.session").1.contains("connect to"),
        "{doc}"
    );
    assert_eq!(
        item(&doc, "api.readback").1,
        "skipped: device.session failed"
    );
    assert_eq!(smoke_records(&file), 0);
    server.stop();
}

#[test]
fn closed_api_port_fails_health_and_ready() {
    let (dir, _file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let mut flags = server.flags();
    flags[1] = format!("http://{}", closed_addr());
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(
        &doc,
        &SMOKE_ITEMS,
        &[
            ("api.health", "fail"),
            ("api.ready", "fail"),
            ("api.readback", "skip"),
        ],
    );
    assert_eq!(code, 1);
    assert!(item(&doc, "api.health").1.starts_with("no answer"), "{doc}");
    assert_eq!(item(&doc, "api.readback").1, "skipped: api.health failed");
    server.stop();
}

#[test]
fn health_passes_on_a_healthy_server_and_fails_without_the_api() {
    let (dir, _file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let api = format!("http://{}", server.api);
    let health = ["api.health", "api.ready", "database", "disk"];
    let flags = ["--api".to_owned(), api, "--db".to_owned(), db.clone()];
    let (code, doc) = run_json(dir.path(), "health", &flags, &[]);
    assert_items(&doc, &health, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        item(&doc, "database").1,
        "/ready database ok, svoi_database_up 1"
    );

    let mut args = vec!["health".to_owned()];
    args.extend(flags);
    let out = svoi(dir.path(), &args, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("health: 4 passed, 0 failed, 0 skipped")
    );

    let closed = ["--api".to_owned(), format!("http://{}", closed_addr())];
    let (code, doc) = run_json(dir.path(), "health", &closed, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_items(
        &doc,
        &health,
        &[
            ("api.health", "fail"),
            ("api.ready", "fail"),
            ("database", "skip"),
        ],
    );
    let out = svoi(
        dir.path(),
        &["health".to_owned(), closed[0].clone(), closed[1].clone()],
        &[],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("health: 1 passed, 2 failed (api.health, api.ready), 1 skipped")
    );
    server.stop();
}

#[test]
fn an_error_line_in_the_log_fails_the_log_item() {
    let (dir, _file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let flags = server.flags();
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_eq!(code, 0, "{doc:#}");

    let line = format!(
        "{} ERROR svoi_ingest::writer: smoke test drill: commit failed\n",
        jiff::Timestamp::now()
    );
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&server.log)
        .unwrap();
    std::io::Write::write_all(&mut log, line.as_bytes()).unwrap();
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(&doc, &SMOKE_ITEMS, &[("log", "fail")]);
    assert_eq!(code, 1);
    let (_, detail) = item(&doc, "log");
    assert!(
        detail.starts_with("1 ERROR line(s) in the last 15 min"),
        "{detail}"
    );
    assert!(
        detail.contains("smoke test drill: commit failed"),
        "{detail}"
    );

    // Without a log file the item is skipped, which does not fail the run.
    let without: Vec<String> = flags[..6].to_vec();
    let (code, doc) = run_json(dir.path(), "smoke", &without, &[]);
    assert_items(&doc, &SMOKE_ITEMS, &[("log", "skip")]);
    assert_eq!(item(&doc, "log").1, "log.file not set");
    assert_eq!(code, 0);
    server.stop();
}

#[test]
fn without_token_or_database_the_readback_fails_and_nothing_is_created() {
    let (dir, _file, db) = sqlite_dir();
    let server = Server::start(dir.path(), &db, &[]);
    let mut flags = server.flags();
    let elsewhere = dir.path().join("elsewhere/svoi.db");
    flags[5] = format!("sqlite:{}", elsewhere.display());
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(
        &doc,
        &SMOKE_ITEMS,
        &[("api.readback", "fail"), ("database", "fail")],
    );
    assert_eq!(code, 1);
    assert!(
        item(&doc, "api.readback")
            .1
            .starts_with("no token: pass --token or set SVOI_TOKEN"),
        "{doc:#}"
    );
    assert!(!elsewhere.exists(), "smoke created a database");
    assert!(
        !elsewhere.parent().unwrap().exists(),
        "smoke created a directory"
    );
    server.stop();
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["smoke", "--device", "not-an-address"],
        vec!["smoke", "--api", "ftp://127.0.0.1:1"],
        vec!["health", "--api", "127.0.0.1:8080"],
        vec!["smoke", "--no-such-flag"],
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let out = svoi(dir.path(), &args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// PostgreSQL of the test's own: smoke passes; with PostgreSQL stopped, `database` fails and
/// `/ready` fails naming the database; then PostgreSQL comes back and the server stops.
#[test]
fn stopped_postgres_fails_database_and_ready() {
    let cluster = svoi_testpg::Cluster::start();
    let pg = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        pg.url(),
        &[("SVOI_POSTGRES_CONNECT_TIMEOUT", "1s")],
    );
    let flags = server.flags();
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    assert_items(&doc, &SMOKE_ITEMS, &[]);
    assert_eq!(code, 0);
    assert!(
        item(&doc, "database").1.starts_with("postgresql "),
        "{doc:#}"
    );
    let stored = pg.psql(&format!(
        "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device WHERE d.imei = '{SMOKE_IMEI}'"
    ));
    assert_eq!(stored, "1");

    cluster.stop();
    let (code, doc) = run_json(dir.path(), "smoke", &flags, &[]);
    cluster.start_again();
    assert_eq!(code, 1, "{doc:#}");
    let (ready, ready_detail) = item(&doc, "api.ready");
    assert_eq!(ready, "fail", "{doc:#}");
    assert!(ready_detail.contains("database error"), "{ready_detail}");
    assert_eq!(item(&doc, "database").0, "fail", "{doc:#}");
    assert_eq!(item(&doc, "api.health").0, "pass", "{doc:#}");
    assert_eq!(item(&doc, "config").0, "pass", "{doc:#}");
    assert_eq!(doc["ok"], false);
    server.stop();
}
