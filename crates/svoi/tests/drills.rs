//! Incident drills (issue #6): each of the five seed incidents — no frames, queue spike,
//! decode errors spike, slow database, API 5xx — is reproduced against a real `svoi serve`,
//! and `svoi alerts check` must fire the right alert with its runbook while it lasts and
//! clear it after the recovery. Thresholds are lowered through the `SVOI_ALERTS_*` variables
//! of the check (the server runs its defaults), so each drill takes seconds, not minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use svoi_proto::encode;
use util::{BIN, free_addr, serve_api, sigterm};

/// A server under drill.
struct Drill {
    dir: tempfile::TempDir,
    dev: SocketAddr,
    api: SocketAddr,
    server: Child,
}

impl Drill {
    fn start(db: Option<&str>, env: &[(&str, &str)]) -> Drill {
        let dir = tempfile::tempdir().unwrap();
        let dev = free_addr();
        let api = free_addr();
        let db = db.map_or_else(
            || format!("sqlite:{}", dir.path().join("svoi.db").display()),
            str::to_string,
        );
        let server = serve_api(
            dir.path(),
            Some(&db),
            dev,
            api,
            &dir.path().join("serve.log"),
            env,
        );
        Drill {
            dir,
            dev,
            api,
            server,
        }
    }

    fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("svoi.db")
    }

    /// `svoi alerts check --json` with these thresholds: exit code and the report.
    fn check(&self, thresholds: &[(&str, &str)]) -> Report {
        let out = alerts_command(self.api, thresholds, true).output().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "alerts check printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Report {
            code: out.status.code(),
            doc,
        }
    }

    /// The text report of `svoi alerts check`.
    fn check_text(&self, thresholds: &[(&str, &str)]) -> (Option<i32>, String) {
        let out = alerts_command(self.api, thresholds, false)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Checks until `name` fires (at most `limit`), then asserts it fires with `runbook`.
    fn wait_firing(
        &self,
        thresholds: &[(&str, &str)],
        name: &str,
        runbook: &str,
        limit: Duration,
    ) -> Report {
        let r = until(limit, || self.check(thresholds), |r| r.firing(name));
        r.assert_fires(name, runbook);
        r
    }

    /// Checks until `name` is clear on real traffic (at most `limit`), then asserts it is.
    fn wait_clear(&self, thresholds: &[(&str, &str)], name: &str, limit: Duration) -> Report {
        let r = until(
            limit,
            || self.check(thresholds),
            |r| r.clear_on_traffic(name),
        );
        assert!(
            r.clear_on_traffic(name),
            "{name} clear on real traffic: {}",
            r.doc
        );
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn stop(mut self) {
        let status = sigterm(&mut self.server);
        assert!(status.success(), "server exit: {status}\n{}", self.log());
    }
}

impl Drop for Drill {
    /// A drill that fails midway must not leave its server running.
    fn drop(&mut self) {
        if matches!(self.server.try_wait(), Ok(None)) {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }
}

fn alerts_command(api: SocketAddr, thresholds: &[(&str, &str)], json: bool) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["alerts", "check", "--api", &format!("http://{api}")])
        .args(["--window", "1s"]);
    if json {
        cmd.arg("--json");
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    // The host's own disk, CPU and memory are not under drill (a shared CI machine may well
    // be short of disk): those alerts are kept out of the way.
    cmd.envs([
        ("SVOI_ALERTS_DISK_FREE_RATIO", "0"),
        ("SVOI_ALERTS_CPU_RATIO", "1"),
        ("SVOI_ALERTS_MEMORY_RATIO", "1"),
    ]);
    cmd.envs(thresholds.iter().copied());
    cmd
}

struct Report {
    code: Option<i32>,
    doc: serde_json::Value,
}

impl Report {
    fn alert(&self, name: &str) -> &serde_json::Value {
        self.doc["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no alert {name} in {}", self.doc))
    }

    fn firing(&self, name: &str) -> bool {
        self.alert(name)["state"] == "firing"
    }

    /// Asserts `name` fires with `runbook`, and the exit code says so.
    fn assert_fires(&self, name: &str, runbook: &str) {
        assert!(self.firing(name), "{name} should fire: {}", self.doc);
        eprintln!("drill: {name} firing: {}", self.alert(name)["detail"]);
        assert_eq!(self.code, Some(1), "exit code with {name} firing");
        assert_eq!(
            self.alert(name)["runbook"],
            format!("svoi runbook show {runbook}"),
            "{name}'s runbook"
        );
        assert_eq!(
            self.alert(name)["runbook_url"],
            format!("ops/runbooks/{runbook}.md")
        );
    }

    /// `name` is clear on figures measured in the window (not for want of traffic: "no
    /// commits in the window", "no API requests in the window").
    fn clear_on_traffic(&self, name: &str) -> bool {
        let a = self.alert(name);
        eprintln!("drill: {name} {}: {}", a["state"], a["detail"]);
        a["state"] == "ok" && !a["detail"].as_str().unwrap_or("").starts_with("no ")
    }

    fn assert_clear(&self, name: &str) {
        assert_eq!(
            self.alert(name)["state"],
            "ok",
            "{name} should be clear: {}",
            self.doc
        );
    }
}

/// Retries `check` until `done` accepts the report or `limit` passes; returns the last one.
fn until(
    limit: Duration,
    mut check: impl FnMut() -> Report,
    done: impl Fn(&Report) -> bool,
) -> Report {
    let deadline = Instant::now() + limit;
    loop {
        let r = check();
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A device session: handshake, then whatever the drill sends.
fn device(addr: SocketAddr, imei: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&encode::handshake(1, 0, imei).unwrap())
        .unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    assert!(n > 0, "the server answers the handshake");
    s
}

/// A thread that repeats `work` until stopped.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(mut work: impl FnMut() + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                work();
            }
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `svoi sim` against the drill's device port, in the background.
fn sim(addr: SocketAddr, extra: &[&str]) -> Child {
    util::sim(addr, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A fleet of `devices` sending `rate` records/s each for `duration`, in the background.
fn steady_fleet(addr: SocketAddr, devices: u32, rate: u32, duration: &str) -> Child {
    let (devices, rate) = (devices.to_string(), rate.to_string());
    sim(
        addr,
        &[
            "--devices",
            &devices,
            "--rate",
            &rate,
            "--duration",
            duration,
            "--records",
            "100000",
            "--reply-timeout",
            "30s",
        ],
    )
}

fn lock_database(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[test]
fn drill_no_frames() {
    let d = Drill::start(None, &[]);
    let limits = [("SVOI_ALERTS_NO_FRAMES_AFTER", "2s")];
    // Healthy and idle: nobody connected, nothing expected.
    d.check(&limits).assert_clear("NoFrames");

    // The incident: a device is connected but sends nothing.
    let mut dev = device(d.dev, "861230043907626");
    std::thread::sleep(Duration::from_millis(2500));
    let r = d.check(&limits);
    r.assert_fires("NoFrames", "01-no-frames");
    let (code, text) = d.check_text(&limits);
    assert_eq!(code, Some(1));
    assert!(text.contains("FIRING"), "{text}");
    assert!(
        text.contains("runbook: svoi runbook show 01-no-frames"),
        "{text}"
    );

    // Recovery: the device talks again (keep-alives count as messages).
    let keepalive = encode::keepalive(1, 0).unwrap();
    let mut writer = dev.try_clone().unwrap();
    let talk = Background::spawn(move || {
        let _ = writer.write_all(&keepalive);
        std::thread::sleep(Duration::from_millis(200));
    });
    let r = d.check(&limits);
    r.assert_clear("NoFrames");
    assert_eq!(r.code, Some(0), "nothing fires after recovery: {}", r.doc);
    talk.stop();
    let _ = dev.flush();
    d.stop();
}

#[test]
fn drill_queue_spike() {
    // The writer waits for the lock instead of failing while the drill holds it.
    let d = Drill::start(None, &[("SVOI_SQLITE_BUSY_TIMEOUT", "30s")]);
    let limits = [("SVOI_ALERTS_QUEUE_DEPTH", "5")];
    d.check(&limits).assert_clear("QueueDepthHigh");

    // The incident: the database stops taking writes while 30 devices send.
    let lock = lock_database(&d.db_path());
    let mut fleet = sim(
        d.dev,
        &[
            "--devices",
            "30",
            "--records",
            "20",
            "--batch",
            "5",
            "--reply-timeout",
            "60s",
        ],
    );
    d.wait_firing(
        &limits,
        "QueueDepthHigh",
        "02-queue-spike",
        Duration::from_secs(20),
    );

    // Recovery: the lock goes, the queue drains, the fleet finishes.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let status = util::wait_for(&mut fleet, Duration::from_secs(60));
    assert!(status.success(), "the fleet finishes after the recovery");
    d.check(&limits).assert_clear("QueueDepthHigh");
    d.stop();
}

#[test]
fn drill_decode_errors_spike() {
    let d = Drill::start(None, &[]);
    let limits = [("SVOI_ALERTS_DECODE_ERROR_RATIO", "0.05")];
    d.check(&limits).assert_clear("DecodeErrorRateHigh");

    // The incident: a device sends frames whose checksums are wrong.
    let mut bad = device(d.dev, "861230043907627");
    let mut corrupt = encode::keepalive(1, 0).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut writer = bad.try_clone().unwrap();
    let garbage = Background::spawn(move || {
        let _ = writer.write_all(&corrupt);
        std::thread::sleep(Duration::from_millis(50));
    });
    d.wait_firing(
        &limits,
        "DecodeErrorRateHigh",
        "03-decode-errors-spike",
        Duration::from_secs(10),
    );
    garbage.stop();
    let _ = bad.flush();
    drop(bad);

    // Recovery: the faulty device is gone, good devices keep sending.
    let mut fleet = steady_fleet(d.dev, 4, 50, "20s");
    let r = d.wait_clear(&limits, "DecodeErrorRateHigh", Duration::from_secs(10));
    let detail = r.alert("DecodeErrorRateHigh")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.starts_with("0 of "),
        "good messages counted: {detail}"
    );
    let _ = fleet.kill();
    let _ = fleet.wait();
    d.stop();
}

#[test]
fn drill_slow_database() {
    let d = Drill::start(None, &[("SVOI_SQLITE_BUSY_TIMEOUT", "30s")]);
    let limits = [("SVOI_ALERTS_COMMIT_P99", "250ms")];
    let mut fleet = steady_fleet(d.dev, 4, 40, "40s");
    d.wait_clear(&limits, "DatabaseCommitSlow", Duration::from_secs(10));

    // The incident: another writer holds the database for 600 ms at a time.
    let path = d.db_path();
    let hog = Background::spawn(move || {
        let lock = lock_database(&path);
        std::thread::sleep(Duration::from_millis(600));
        lock.execute_batch("ROLLBACK").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    });
    d.wait_firing(
        &limits,
        "DatabaseCommitSlow",
        "04-db-slow",
        Duration::from_secs(15),
    );

    // Recovery: the other writer stops; commits are fast again.
    hog.stop();
    d.wait_clear(&limits, "DatabaseCommitSlow", Duration::from_secs(15));
    let _ = fleet.kill();
    let _ = fleet.wait();
    d.stop();
}

#[test]
fn drill_api_5xx() {
    // The API's errors come from its database: PostgreSQL, stopped under the drill.
    let cluster = svoi_testpg::Cluster::start();
    let db = cluster.database();
    let d = Drill::start(Some(db.url()), &[("SVOI_POSTGRES_CONNECT_TIMEOUT", "1s")]);
    let token = util::create_token(db.url(), "drill");
    let limits = [("SVOI_ALERTS_API_5XX_RATIO", "0.05")];
    let url = format!("http://{}/api/v1/devices", d.api);
    let agent = util::client();
    let traffic = Background::spawn(move || {
        let _ = util::get(&agent, &url, Some(&token));
        std::thread::sleep(Duration::from_millis(50));
    });
    d.wait_clear(&limits, "ApiErrorRateHigh", Duration::from_secs(10));

    // The incident: the database goes away, API requests fail.
    cluster.stop();
    let r = d.wait_firing(
        &limits,
        "ApiErrorRateHigh",
        "05-api-5xx-spike",
        Duration::from_secs(15),
    );
    assert!(!r.firing("ServerDown"), "the process itself still answers");

    // Recovery: the database is back; the pool reconnects by itself.
    cluster.start_again();
    d.wait_clear(&limits, "ApiErrorRateHigh", Duration::from_secs(20));
    traffic.stop();
    d.stop();
    drop(db);
}

#[test]
fn a_stopped_server_is_server_down() {
    let d = Drill::start(None, &[]);
    let api = d.api;
    d.stop();
    let out = alerts_command(api, &[], true).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["firing"], serde_json::json!(["ServerDown"]));
}

/// Every `svoi_*` metric the alert rules and the Grafana dashboard query is one the server
/// exports (after some traffic, a decode error and a refused token), so no panel or rule waits
/// on a misspelt name. The backup metrics arrive with `svoi backup` (issue #7).
#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let d = Drill::start(None, &[]);
    let out = util::sim(d.dev, &["--devices", "2", "--records", "20"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut bad = device(d.dev, "861230043907628");
    let mut corrupt = encode::keepalive(1, 0).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    bad.write_all(&corrupt).unwrap();
    let agent = util::client();
    let (status, _) = util::get(
        &agent,
        &format!("http://{}/api/v1/devices", d.api),
        Some("svoi_not_a_token"),
    );
    assert_eq!(status, 401);
    // A failed backup (its directory is a file), then a verified one: the server reads their
    // outcomes back from the maintenance log.
    let db = format!("sqlite:{}", d.db_path().display());
    std::fs::write(d.dir.path().join("not-a-dir"), "").unwrap();
    for (args, ok) in [
        (
            &["--backup-dir", "not-a-dir", "backup", "create"][..],
            false,
        ),
        (&["backup", "create"], true),
        (&["backup", "verify", "latest"], true),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_svoi"))
            .current_dir(d.dir.path())
            .args(["--db", &db])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), ok, "{args:?}: {out:?}");
    }
    // The server polls the maintenance log every 2 s.
    std::thread::sleep(Duration::from_millis(2_500));
    let (status, metrics) = util::get(&agent, &format!("http://{}/metrics", d.api), None);
    assert_eq!(status, 200);
    let exported: std::collections::HashSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut used = std::collections::BTreeSet::new();
    for file in [
        "ops/alerts/prometheus-rules.yml",
        "deploy/grafana/dashboards/svoi.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("svoi_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert((file, name));
        }
    }
    let missing: Vec<_> = used
        .iter()
        .filter(|(_, name)| !exported.contains(name.as_str()))
        .collect();
    assert!(used.len() > 20, "only {} metric names found", used.len());
    assert!(missing.is_empty(), "not exported: {missing:?}");
    drop(bad);
    d.stop();
}
