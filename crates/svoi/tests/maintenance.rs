//! `svoi maintenance` against real `svoi serve` processes (SQLite; the rollback on PostgreSQL
//! too), with a local HTTP receiver standing in for the Slack webhook and for Alertmanager: a
//! window whose post-check fails is rolled back (the data is the pre-maintenance backup's
//! again, the receiver got the messages, the silence was created and expired, the log shows
//! it); a passing window closes without a restore even when the webhook fails; an unhealthy
//! system opens no window and takes no backup; `maintenance run daily` fails when the server
//! is down and passes when it is healthy with a fresh backup; the weekly, monthly and
//! quarterly checklists run (a corrupted backup fails the monthly restore test); the example
//! systemd timers and cron lines call every procedure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::maintenance::Receiver;
use util::{BIN, free_addr, serve_api, sigterm};

/// The IMEI of `svoi smoke`'s synthetic device.
const SMOKE_IMEI: &str = "000000000000000";

/// First IMEI of the fleet that sends before the window opens.
const BEFORE_BASE: u64 = 861_000_000_000_000;

/// First IMEI of the fleet that sends during the window (its data must go with a rollback).
const DURING_BASE: u64 = 862_000_000_000_000;

/// What the silence receiver answers `POST /api/v2/silences` with.
const SILENCE_ID: &str = "test-silence-1";

/// A site: a SQLite database, a backup directory, a server, the receivers.
struct Site {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: String,
    db_path: PathBuf,
    /// The PostgreSQL database when the site runs on one (dropped with the site).
    pg: Option<svoi_testpg::TestDb>,
    backups: PathBuf,
    dev: SocketAddr,
    api: SocketAddr,
    env: Vec<(String, String)>,
    server: Option<Child>,
    /// A read token for `/api/v1/status`, created before any backup.
    token: Option<String>,
}

impl Site {
    /// A site whose notifications go to `webhook` and silences to `alertmanager` (URLs).
    fn new(webhook: Option<String>, alertmanager: Option<String>) -> Site {
        Site::on(None, webhook, alertmanager)
    }

    /// [`Site::new`] on a PostgreSQL database when `pg` is given.
    fn on(
        pg: Option<svoi_testpg::TestDb>,
        webhook: Option<String>,
        alertmanager: Option<String>,
    ) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let db_path = path.join("svoi.db");
        let db = match &pg {
            Some(pg) => pg.url().to_owned(),
            None => format!("sqlite:{}", db_path.display()),
        };
        let mut env: Vec<(String, String)> = vec![
            // Host figures of a busy CI machine must not decide these tests.
            ("SVOI_ALERTS_CPU_RATIO".into(), "1".into()),
            ("SVOI_ALERTS_MEMORY_RATIO".into(), "1".into()),
            ("SVOI_ALERTS_DISK_FREE_RATIO".into(), "0".into()),
            ("SVOI_OPERATOR".into(), "tester".into()),
        ];
        if let Some(w) = webhook {
            env.push(("SVOI_MAINTENANCE_WEBHOOK_URL".into(), w));
        }
        if let Some(a) = alertmanager {
            env.push(("SVOI_MAINTENANCE_ALERTMANAGER_URL".into(), a));
        }
        Site {
            _dir: dir,
            backups: path.join("backups"),
            dir: path,
            db,
            db_path,
            pg,
            dev: free_addr(),
            api: free_addr(),
            env,
            server: None,
            token: None,
        }
    }

    /// Starts `svoi serve` (its log goes to `serve.log`, which the commands do not read: the
    /// smoke test's log item is skipped, so an ERROR the breakage causes does not fail the
    /// check after the rollback).
    fn serve(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let child = serve_api(
            &self.dir,
            Some(&self.db),
            self.dev,
            self.api,
            &self.dir.join("serve.log"),
            &env,
        );
        self.server = Some(child);
        self.wait_ready();
        if self.token.is_none() {
            self.token = Some(util::create_token(&self.db, "maintenance-test"));
        }
    }

    fn wait_ready(&self) {
        let agent = util::client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while util::get(&agent, &format!("http://{}/ready", self.api), None).0 != 200 {
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let status = sigterm(&mut child);
            assert!(status.success(), "serve exited with {status}");
        }
    }

    /// `svoi --db DB --backup-dir DIR <args>` with the site's environment and no other
    /// `SVOI_*` variable.
    fn svoi(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.dir)
            .args(["--db", &self.db, "--backup-dir"])
            .arg(&self.backups)
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("SVOI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.output().unwrap()
    }

    fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `maintenance start` pointed at this server.
    fn start(&self, reason: &str) -> Output {
        let api = self.api_url();
        self.svoi(&[
            "maintenance",
            "start",
            "--reason",
            reason,
            "--duration",
            "30m",
            "--api",
            &api,
        ])
    }

    /// `maintenance end` pointed at this server.
    fn end(&self) -> Output {
        let api = self.api_url();
        let dev = self.dev.to_string();
        let mut args = vec!["maintenance", "end", "--api", &api, "--device", &dev];
        if let Some(t) = &self.token {
            args.extend(["--token", t]);
        }
        self.svoi(&args)
    }

    /// `svoi sim`: `devices` devices from IMEI `base` get `records` records each acknowledged.
    fn sim(&self, base: u64, devices: usize, records: u64) {
        let out = util::sim(
            self.dev,
            &[
                "--devices",
                &devices.to_string(),
                "--records",
                &records.to_string(),
                "--batch",
                "5",
                "--imei-base",
                &base.to_string(),
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "sim: {}", text(&out.stderr));
    }

    /// The maintenance log, one JSON object per entry.
    fn log(&self) -> Vec<Value> {
        let out = self.svoi(&["maintenance", "log", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `SELECT count(*)` of the database (read while the server runs).
    fn count(&self, sql: &str) -> i64 {
        if let Some(pg) = &self.pg {
            return pg.psql(sql).trim().parse().unwrap();
        }
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Records of the devices whose IMEI starts like `base`'s first 3 digits.
    fn records_of(&self, base: u64) -> i64 {
        let prefix = &base.to_string()[..3];
        self.count(&format!(
            "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device \
             WHERE d.imei LIKE '{prefix}%'"
        ))
    }

    /// GET a path of the API as JSON.
    fn get_json(&self, path: &str) -> Value {
        let (status, body) = util::get(
            &util::client(),
            &format!("{}{path}", self.api_url()),
            self.token.as_deref(),
        );
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `svoi_maintenance_mode` from `/metrics`.
    fn maintenance_gauge(&self) -> Option<f64> {
        let (_, body) = util::get(
            &util::client(),
            &format!("{}/metrics", self.api_url()),
            None,
        );
        body.lines()
            .find(|l| l.starts_with("svoi_maintenance_mode"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    }

    /// Waits (the server polls the database every ~2 s) until `/ready`, `/api/v1/status` and
    /// the gauge all show `on`.
    fn wait_maintenance(&self, on: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = self.get_json("/ready");
            let status = self.get_json("/api/v1/status");
            let gauge = self.maintenance_gauge();
            let want = if on { 1.0 } else { 0.0 };
            if ready["maintenance"] == on && status["maintenance"] == on && gauge == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "maintenance {on} not shown: /ready {ready}, status {status}, gauge {gauge:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The text messages the webhook receiver got.
fn messages(r: &Receiver) -> Vec<String> {
    r.requests()
        .iter()
        .filter(|q| q.path == "/hook")
        .map(|q| q.json()["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The one backup in the backup directory: its manifest.
fn only_manifest(backups: &Path) -> Value {
    let dirs: Vec<PathBuf> = std::fs::read_dir(backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    serde_json::from_slice(&std::fs::read(dirs[0].join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_failing_post_check_rolls_back_notifies_and_is_logged() {
    rolls_back(false);
}

#[test]
fn a_failing_post_check_rolls_back_on_postgres_too() {
    rolls_back(true);
}

/// The rollback case on SQLite or PostgreSQL.
fn rolls_back(postgres: bool) {
    let r = Receiver::start(&format!(r#"{{"silenceID":"{SILENCE_ID}"}}"#));
    let pg = postgres.then(svoi_testpg::database);
    let mut site = Site::on(pg, Some(format!("{}/hook", r.url())), Some(r.url()));
    site.serve();
    site.sim(BEFORE_BASE, 3, 20);
    let before = site.records_of(BEFORE_BASE);
    assert_eq!(before, 60);

    let out = site.start("upgrade to 1.2");
    assert!(
        out.status.success(),
        "start: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("maintenance window #1 open: upgrade to 1.2"),
        "{stdout}"
    );

    // The pre-maintenance backup holds the data so far.
    let manifest = only_manifest(&site.backups);
    assert_eq!(manifest["kind"], "pre-maintenance");
    let backup_id = manifest["id"].as_str().unwrap().to_owned();
    assert!(backup_id.ends_with("-pre-maintenance"), "{backup_id}");
    assert_eq!(manifest["row_counts"]["records"], before);

    // The silence: SVOI's warnings only, until the planned end, by the operator.
    let silences: Vec<_> = r
        .requests()
        .into_iter()
        .filter(|q| q.path == "/api/v2/silences")
        .collect();
    assert_eq!(silences.len(), 1);
    assert_eq!(silences[0].method, "POST");
    let body = silences[0].json();
    assert_eq!(
        body["matchers"][0],
        serde_json::json!({"name": "severity", "value": "warning", "isRegex": false, "isEqual": true})
    );
    assert_eq!(body["createdBy"], "tester");
    assert!(body["comment"].as_str().unwrap().contains("upgrade to 1.2"));
    let starts: jiff::Timestamp = body["startsAt"].as_str().unwrap().parse().unwrap();
    let ends: jiff::Timestamp = body["endsAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(ends.duration_since(starts).as_secs(), 30 * 60);
    let sent = messages(&r);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("started by tester: upgrade to 1.2"),
        "{sent:?}"
    );
    assert!(sent[0].contains(&backup_id), "{sent:?}");

    site.wait_maintenance(true);
    let status = site.get_json("/api/v1/status");
    assert_eq!(status["maintenance_reason"], "upgrade to 1.2");
    let st = site.svoi(&["maintenance", "status", "--json"]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["open"], true);
    assert_eq!(st["silence_id"], SILENCE_ID);
    assert_eq!(st["backup_id"], backup_id.as_str());

    // The "upgrade": new data that the rollback must remove, then a breakage the smoke test
    // catches and a restore repairs: the server cannot check the post-check's token without
    // the tokens table.
    site.sim(DURING_BASE, 2, 15);
    assert_eq!(site.records_of(DURING_BASE), 30);
    match &site.pg {
        Some(pg) => {
            pg.psql("DROP TABLE api_tokens");
        }
        None => {
            let conn = rusqlite::Connection::open(&site.db_path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("DROP TABLE api_tokens").unwrap();
        }
    }

    let out = site.end();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "end: {stdout}\n{stderr}");
    assert!(stdout.contains("FAIL  api.readback"), "{stdout}");
    assert!(
        stdout.contains("maintenance window #1 closed: rolled_back"),
        "{stdout}\n{stderr}"
    );

    // The data is the backup's again (plus the second post-check's one smoke record).
    assert_eq!(site.records_of(BEFORE_BASE), before);
    assert_eq!(site.records_of(DURING_BASE), 0);
    assert_eq!(
        site.count(&format!(
            "SELECT count(*) FROM devices WHERE imei LIKE '{}%'",
            &DURING_BASE.to_string()[..3]
        )),
        0
    );
    let records = site.count("SELECT count(*) FROM records");
    let smoke = site.count(&format!(
        "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device WHERE d.imei = '{SMOKE_IMEI}'"
    ));
    assert_eq!(smoke, 1, "only the second post-check's record survives");
    assert_eq!(records, before + smoke);

    // Notifications: rolling back, the rollback's result, the end.
    let sent = messages(&r);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent[1].contains("post-check failed"), "{sent:?}");
    assert!(
        sent[1].contains(&format!("rolling back to backup {backup_id}")),
        "{sent:?}"
    );
    assert!(sent[2].contains("rolled back"), "{sent:?}");
    assert!(sent[3].contains("ended after"), "{sent:?}");
    assert!(sent[3].contains("rolled_back"), "{sent:?}");
    // The silence expired.
    let last = r
        .requests()
        .into_iter()
        .rfind(|q| q.path != "/hook")
        .unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/api/v2/silence/test-silence-1")
    );

    // The log (carried over through the restore): backup, window start, restore, window end.
    let log = site.log();
    let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let window_entries: Vec<&Value> = log.iter().filter(|e| e["kind"] == "window").collect();
    assert_eq!(window_entries.len(), 2, "{kinds:?}");
    assert_eq!(window_entries[0]["result"], "ok");
    assert_eq!(window_entries[0]["details"]["action"], "start");
    let ended = window_entries[1];
    assert_eq!(ended["result"], "failed");
    assert_eq!(ended["details"]["result"], "rolled_back");
    assert_eq!(
        ended["details"]["rollback"]["backup_id"],
        backup_id.as_str()
    );
    assert_eq!(ended["details"]["silence"]["ok"], true);
    assert_eq!(ended["details"]["closed"], true);
    assert!(ended["summary"].as_str().unwrap().contains("rolled_back"));
    let restores: Vec<&Value> = log.iter().filter(|e| e["kind"] == "restore").collect();
    assert_eq!(restores.len(), 1, "{kinds:?}");
    assert_eq!(restores[0]["result"], "ok");
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(pos("restore") > pos("window"), "{kinds:?}");

    site.wait_maintenance(false);
    let st = site.svoi(&["maintenance", "status"]);
    assert_eq!(text(&st.stdout), "no maintenance window open\n");
    site.stop();
}

#[test]
fn a_passing_window_closes_without_restore_and_a_failing_webhook_is_only_a_warning() {
    let hook = Receiver::start("no");
    hook.set_status(500);
    let am = Receiver::start(&format!(r#"{{"silenceID":"{SILENCE_ID}"}}"#));
    let mut site = Site::new(Some(format!("{}/hook", hook.url())), Some(am.url()));
    site.serve();
    site.sim(BEFORE_BASE, 2, 10);

    let out = site.start("kernel update");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("warning: notification not delivered"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("notification  FAILED"));
    assert_eq!(hook.requests().len(), 1, "the webhook was tried");
    site.wait_maintenance(true);

    // A second start is refused while the window is open, and changes nothing.
    let again = site.start("another");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already open"),
        "{}",
        text(&again.stderr)
    );

    let out = site.end();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("closed: ok"), "{stdout}");
    assert_eq!(site.records_of(BEFORE_BASE), 20);
    assert_eq!(
        hook.requests().len(),
        2,
        "start and end notifications were tried"
    );
    let am_calls: Vec<(String, String)> = am
        .requests()
        .into_iter()
        .map(|q| (q.method, q.path))
        .collect();
    assert_eq!(
        am_calls,
        [
            ("POST".to_string(), "/api/v2/silences".to_string()),
            (
                "DELETE".to_string(),
                format!("/api/v2/silence/{SILENCE_ID}")
            ),
        ]
    );

    let log = site.log();
    assert!(log.iter().all(|e| e["kind"] != "restore"), "{log:?}");
    let windows: Vec<&Value> = log.iter().filter(|e| e["kind"] == "window").collect();
    let results: Vec<&str> = windows
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    // Start (warning: the webhook failed), the refused second start, the end (warning).
    assert_eq!(results, ["warning", "failed", "warning"], "{windows:?}");
    assert_eq!(windows[2]["details"]["result"], "ok");
    assert_eq!(
        windows[2]["details"]["notifications"]["sent"][0]["ok"],
        false
    );
    site.wait_maintenance(false);
    site.stop();
}

#[test]
fn an_unhealthy_system_opens_no_window_and_takes_no_backup() {
    let r = Receiver::start("ok");
    let site = Site::new(Some(format!("{}/hook", r.url())), Some(r.url()));
    // No server runs: the pre-check fails.
    let out = site.start("upgrade");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pre-check failed"), "{stderr}");
    assert!(text(&out.stdout).contains("FAIL  api.health"));
    assert!(
        !site.backups.exists() || std::fs::read_dir(&site.backups).unwrap().next().is_none(),
        "no backup"
    );
    assert!(r.requests().is_empty(), "no notification, no silence");
    let st = site.svoi(&["maintenance", "status", "--json"]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["open"], false);
    let log = site.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["kind"], "window");
    assert_eq!(log[0]["result"], "failed");
    assert_eq!(log[0]["details"]["step"], "pre-check");

    // Ending with no window open is an error for a person too.
    let end = site.end();
    assert_eq!(end.status.code(), Some(1));
    assert!(text(&end.stderr).contains("no maintenance window is open"));
}

#[test]
fn the_daily_procedure_fails_when_the_server_is_down_and_passes_when_healthy() {
    let mut site = Site::new(None, None);
    let api = site.api_url();

    let down = site.svoi(&["maintenance", "run", "daily", "--api", &api]);
    let stdout = text(&down.stdout);
    assert_eq!(
        down.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&down.stderr)
    );
    assert!(stdout.contains("FAIL  health"), "{stdout}");
    assert!(stdout.contains("FAIL  alerts"), "{stdout}");
    assert!(stdout.contains("ServerDown"), "{stdout}");
    assert!(stdout.contains("FAIL  backup"), "{stdout}");

    site.serve();
    site.sim(BEFORE_BASE, 1, 5);
    let backup = site.svoi(&["backup", "create"]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let id = text(&backup.stdout).lines().last().unwrap().to_owned();

    let ok = site.svoi(&["maintenance", "run", "daily", "--api", &api, "--json"]);
    let doc: Value = serde_json::from_slice(&ok.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&ok.stdout), text(&ok.stderr)));
    assert_eq!(ok.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "health", "disk", "memory", "cpu", "log", "alerts", "backup", "window"
        ]
    );
    let backup_item = &doc["checks"][6];
    assert!(
        backup_item["detail"].as_str().unwrap().contains(&id),
        "{backup_item}"
    );

    // Both runs are in the log.
    let runs: Vec<Value> = site
        .log()
        .into_iter()
        .filter(|e| e["kind"] == "scheduled")
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["result"], "failed");
    assert_eq!(runs[1]["result"], "ok");
    assert_eq!(runs[1]["details"]["schedule"], "daily");
    assert_eq!(runs[1]["details"]["items"].as_array().unwrap().len(), 8);
    site.stop();
}

#[test]
fn weekly_monthly_and_quarterly_procedures_run_their_checklists() {
    let mut site = Site::new(None, None);
    let log_file = site.dir.join("svoi.log");
    site.env
        .push(("SVOI_LOG_FILE".into(), log_file.to_str().unwrap().into()));
    site.serve();
    let api = site.api_url();
    site.sim(BEFORE_BASE, 2, 10);
    let backup = site.svoi(&["backup", "create"]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let id = text(&backup.stdout).lines().last().unwrap().to_owned();
    let names = |doc: &Value| -> Vec<String> {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let run = |schedule: &str| -> (Option<i32>, Value) {
        let out = site.svoi(&["maintenance", "run", schedule, "--api", &api, "--json"]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{schedule}: {e}: {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (out.status.code(), doc)
    };

    let (code, weekly) = run("weekly");
    assert_eq!(code, Some(0), "{weekly:#}");
    assert_eq!(
        names(&weekly),
        ["logs", "backups.prune", "optimize", "indexes"]
    );
    assert!(
        weekly["sections"]["database statistics"]
            .as_str()
            .unwrap()
            .contains("records")
    );
    let rotated: Vec<String> = std::fs::read_dir(&site.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("svoi.log.") && n.ends_with(".gz"))
        .collect();
    assert_eq!(rotated.len(), 1, "the server's log was rotated");

    let (code, monthly) = run("monthly");
    assert_eq!(code, Some(0), "{monthly:#}");
    assert_eq!(
        names(&monthly),
        ["restore-test", "performance", "ack.history", "slow-queries"]
    );
    let restore = monthly["checks"][0]["detail"].as_str().unwrap();
    assert!(
        restore.contains(&format!("backup {id} restored")),
        "{restore}"
    );
    assert_eq!(
        monthly["checks"][3]["status"], "skip",
        "SQLite has no statistics"
    );

    let (code, quarterly) = run("quarterly");
    assert_eq!(code, Some(0), "{quarterly:#}");
    assert_eq!(names(&quarterly), ["records", "database", "disk.forecast"]);

    // A corrupted backup fails the monthly restore test.
    let data = site.backups.join(&id).join("svoi.sqlite.gz");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (code, broken) = run("monthly");
    assert_eq!(code, Some(1), "{broken:#}");
    assert_eq!(broken["checks"][0]["status"], "fail");

    let log = site.log();
    let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["optimize", "verify", "scheduled"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let scheduled: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e["kind"] == "scheduled")
        .map(|e| {
            (
                e["details"]["schedule"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scheduled,
        [
            ("weekly", "ok"),
            ("monthly", "ok"),
            ("quarterly", "ok"),
            ("monthly", "failed")
        ]
    );
    site.stop();
}

/// A file of the repository.
fn repo_file(rel: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_example_schedules_run_every_procedure_and_the_nightly_backup() {
    let template = repo_file("deploy/systemd/svoi-maintenance@.service");
    assert!(
        template.contains(
            "\nExecStart=/usr/local/bin/svoi --config /etc/svoi/svoi.toml maintenance run %i\n"
        ),
        "{template}"
    );
    assert!(template.contains("\nUser=svoi\n"));
    let cron = repo_file("deploy/cron/svoi");
    for schedule in ["daily", "weekly", "monthly", "quarterly"] {
        let timer = repo_file(&format!("deploy/systemd/svoi-maintenance-{schedule}.timer"));
        assert!(
            timer.contains(&format!("\nUnit=svoi-maintenance@{schedule}.service\n")),
            "{timer}"
        );
        assert!(timer.contains("\nOnCalendar="), "{timer}");
        assert!(timer.contains("\nWantedBy=timers.target"), "{timer}");
        let line = cron
            .lines()
            .find(|l| l.contains(&format!("maintenance run {schedule} ")))
            .unwrap_or_else(|| panic!("no cron line for {schedule}"));
        assert_eq!(line.split_whitespace().nth(5), Some("svoi"), "{line}");
    }
    let backup = repo_file("deploy/systemd/svoi-backup.service");
    let exec: Vec<&str> = backup
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [
            "ExecStart=/usr/local/bin/svoi --config /etc/svoi/svoi.toml backup create",
            "ExecStart=/usr/local/bin/svoi --config /etc/svoi/svoi.toml backup verify latest",
        ]
    );
    assert!(repo_file("deploy/systemd/svoi-backup.timer").contains("\nUnit=svoi-backup.service\n"));
    let nightly = cron.lines().find(|l| l.contains("backup create")).unwrap();
    assert!(nightly.contains("&& out=$(svoi --config /etc/svoi/svoi.toml backup verify latest"));
}

#[test]
fn no_rollback_closes_a_failed_window_and_keeps_the_data() {
    let mut site = Site::new(None, None);
    site.serve();
    site.sim(BEFORE_BASE, 1, 10);
    let out = site.start("schema change");
    assert!(out.status.success(), "{}", text(&out.stderr));
    site.sim(DURING_BASE, 1, 10);
    {
        let conn = rusqlite::Connection::open(&site.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("DROP TABLE api_tokens").unwrap();
    }
    let api = site.api_url();
    let dev = site.dev.to_string();
    let token = site.token.clone().unwrap();
    let out = site.svoi(&[
        "maintenance",
        "end",
        "--api",
        &api,
        "--device",
        &dev,
        "--token",
        &token,
        "--no-rollback",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("closed: failed"), "{stdout}");
    assert_eq!(site.records_of(DURING_BASE), 10, "nothing was restored");
    let log = site.log();
    assert!(log.iter().all(|e| e["kind"] != "restore"), "{log:?}");
    let ended = log.iter().rfind(|e| e["kind"] == "window").unwrap();
    assert_eq!(ended["result"], "failed");
    assert_eq!(ended["details"]["result"], "failed");
    assert_eq!(ended["details"]["rollback"], Value::Null);
    let st = site.svoi(&["maintenance", "status"]);
    assert_eq!(text(&st.stdout), "no maintenance window open\n");
    site.stop();
}
