//! The server side of operations and `svoi report`, on both backends: the report of a
//! database filled directly (data, hourly statistics, maintenance log, a window, a backup
//! directory) in Markdown, HTML and JSON; `/ready`, `/api/v1/status` and the gauges following
//! a maintenance window and the maintenance log while `svoi serve` runs; the hourly statistics
//! row a server writes after traffic; the server lock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use svoi_store::{
    DbUrl, DecodedRecord, FrameRow, FrameStatus, HourlyStats, LayoutKey, LogResult, NewLogEntry,
    NewWindow, RecordKind, RecordRow, Store, StoreOptions,
};
use svoi_testpg::Db;
use util::{BIN, client, create_token, free_addr, get, serve_api, sigterm, sim, sim_report};

svoi_testpg::backends!(
    the_report_shows_what_the_database_holds,
    ready_status_and_gauges_follow_windows_and_the_log,
    the_server_writes_hourly_statistics_after_traffic,
);

const DAY: i64 = 86_400;

fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn store(db: &Db) -> Store {
    let url: DbUrl = db.url().parse().unwrap();
    Store::open(&url, &StoreOptions::default()).unwrap()
}

/// `svoi ARGS` with no `SVOI_*` variables of the caller's.
fn svoi(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn record(index: u32) -> DecodedRecord {
    DecodedRecord {
        kind: RecordKind::Archive,
        row: RecordRow {
            record_index: Some(index),
            event_code: Some(0x1234),
            event_time: Some(1_700_000_000 + i64::from(index)),
            fix_time: None,
            valid: Some(true),
            satellites: Some(9),
            latitude: Some(55.75),
            longitude: Some(37.61),
            altitude_m: None,
            speed_kmh: None,
            course: None,
            odometer_km: None,
            power_mv: None,
            battery_mv: None,
            gsm_level: None,
            fields_json: "{}".to_owned(),
        },
    }
}

/// A frame received at `at_s` from `imei` with records `first..first+n`; no IMEI and no
/// records makes a garbage frame (a decode error).
fn frame(seq: u64, at_s: i64, imei: Option<&str>, first: u32, n: u32) -> FrameRow {
    let garbage = imei.is_none();
    FrameRow {
        seq,
        conn_id: 1,
        imei: imei.map(Arc::from),
        received_at_us: at_s * 1_000_000,
        kind: Arc::from(if garbage { "garbage" } else { "~A" }),
        status: if garbage {
            FrameStatus::Garbage
        } else {
            FrameStatus::Ok
        },
        error_reason: garbage.then_some("sync_lost"),
        error: garbage.then(|| "lost sync".to_owned()),
        bytes: vec![0x7e, 0x41, seq.to_le_bytes()[0]],
        layout: (!garbage).then(|| {
            Arc::new(LayoutKey {
                protocol_version: 20,
                struct_version: 20,
                data_size: 122,
                mask: vec![0xff, 0xf0],
            })
        }),
        device: None,
        records: (first..first + n).map(record).collect(),
        ext_records: Vec::new(),
    }
}

fn hour_row(hour_start: i64, frames: i64, p99: f64, db_bytes: i64) -> HourlyStats {
    HourlyStats {
        hour_start,
        instance: "test:5221".to_owned(),
        frames,
        records: frames * 2,
        duplicates: 0,
        decode_errors: 0,
        acks: frames,
        ack_p50_ms: Some(p99 / 10.0),
        ack_p95_ms: Some(p99 / 2.0),
        ack_p99_ms: Some(p99),
        devices_active: 2,
        connections_max: 2,
        db_bytes: Some(db_bytes),
        updated_at_us: (hour_start + 3000) * 1_000_000,
    }
}

fn log(at_s: i64, kind: &str, result: LogResult, summary: &str) -> NewLogEntry {
    NewLogEntry {
        at_us: at_s * 1_000_000,
        kind: kind.to_owned(),
        operator: "tester".to_owned(),
        duration_ms: 1500,
        result,
        summary: summary.to_owned(),
        details: "{}".to_owned(),
    }
}

/// Checks that every element opened in `markup` is closed in order (self-closed elements
/// and HTML void elements count as closed); the names of the elements seen.
fn balanced(markup: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = markup;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>').expect("tag ends");
        let tag = &after[..close];
        rest = &after[close + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "</{name}> out of order");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        seen.push(name.clone());
        if !tag.ends_with('/') && name != "meta" {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "never closed: {stack:?}");
    seen
}

fn the_report_shows_what_the_database_holds(db: Db) {
    let now = now_s();
    let today = now - now.rem_euclid(DAY);
    let (d3, d2) = (today - 3 * DAY, today - 2 * DAY);
    let mut s = store(&db);
    let frames = vec![
        frame(1, d3 + 100, Some("352093081000001"), 0, 2),
        frame(2, d3 + 200, Some("352093081000001"), 2, 3),
        frame(3, d3 + 300, Some("352093081000002"), 5, 1),
        frame(4, d2 + 100, Some("352093081000002"), 6, 4),
        frame(5, d2 + 200, None, 0, 0),
        // Outside the weekly period: only the quarterly report counts it.
        frame(6, today - 20 * DAY, Some("352093081000003"), 10, 7),
    ];
    let _receipt = s.commit(&frames).unwrap();
    // Two hours on d3: 100 frames at p99 10 ms and 300 at 30 ms, weighted 25 ms; the
    // database 1 MiB then 2 MiB (the day's last size); d2: 3 MiB.
    for row in [
        hour_row(d3 + 3600, 100, 10.0, 1 << 20),
        hour_row(d3 + 7200, 300, 30.0, 2 << 20),
        hour_row(d2 + 3600, 50, 8.0, 3 << 20),
    ] {
        s.upsert_hourly_stats(&row).unwrap();
    }
    s.append_log(&log(d3 + 500, "backup", LogResult::Ok, "backup ok"))
        .unwrap();
    s.append_log(&log(
        d2 + 500,
        "backup",
        LogResult::Failed,
        "backup <failed>",
    ))
    .unwrap();
    s.append_log(&log(d2 + 600, "verify", LogResult::Ok, "verified"))
        .unwrap();
    s.append_log(&log(today - 30 * DAY, "prune", LogResult::Ok, "old"))
        .unwrap();
    s.open_window(&NewWindow {
        started_at_us: (now - 60) * 1_000_000,
        planned_end_us: (now + 3600) * 1_000_000,
        reason: "kernel <update> & reboot".to_owned(),
        operator: "tester".to_owned(),
        backup_id: Some("B1".to_owned()),
    })
    .unwrap();
    drop(s);
    let backups = tempfile::tempdir().unwrap();
    let id = "20260101T000000Z";
    std::fs::create_dir(backups.path().join(id)).unwrap();
    std::fs::write(
        backups.path().join(id).join("manifest.json"),
        format!(
            r#"{{"id":"{id}","kind":"manual","created_at":"2026-01-01T00:00:00Z","bytes":1234}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        backups.path().join(id).join("verify.json"),
        r#"{"ok":true,"finished_at":"2026-01-01T00:05:00Z"}"#,
    )
    .unwrap();
    let url = db.url();
    let dir = backups.path().to_str().unwrap();
    let report = |period: &str, format: &str| {
        let out = svoi(&[
            "--db",
            &url,
            "--backup-dir",
            dir,
            "report",
            period,
            "--format",
            format,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let doc: Value = serde_json::from_str(&report("weekly", "json")).unwrap();
    assert_eq!(doc["period"], "weekly");
    let daily = doc["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 7);
    let day = |start: i64| {
        daily
            .iter()
            .find(|d| d["day_start"] == start)
            .unwrap_or_else(|| panic!("no day {start} in {daily:?}"))
    };
    let (a, b) = (day(d3), day(d2));
    assert_eq!(
        (
            &a["frames"],
            &a["records"],
            &a["devices_active"],
            &a["decode_errors"]
        ),
        (
            &Value::from(3),
            &Value::from(6),
            &Value::from(2),
            &Value::from(0)
        ),
        "{a}"
    );
    assert_eq!(
        (
            &b["frames"],
            &b["records"],
            &b["devices_active"],
            &b["decode_errors"]
        ),
        (
            &Value::from(2),
            &Value::from(4),
            &Value::from(1),
            &Value::from(1)
        ),
        "{b}"
    );
    assert_eq!(b["decode_error_rate"], 0.5);
    assert_eq!(a["ack_p99_ms"], 25.0);
    assert_eq!(a["ack_p95_ms"], 12.5);
    assert_eq!(b["ack_p99_ms"], 8.0);
    assert_eq!(a["db_bytes"], 2 << 20);
    assert_eq!(b["db_bytes"], 3 << 20);
    assert_eq!(day(today)["records"], 0);
    assert_eq!(doc["totals"]["records"], 10);
    assert_eq!(doc["totals"]["frames"], 5);
    assert_eq!(doc["tasks"]["total"], 3);
    assert_eq!(doc["tasks"]["by_kind"]["backup"]["ok"], 1);
    assert_eq!(doc["tasks"]["by_kind"]["backup"]["failed"], 1);
    assert_eq!(doc["tasks"]["by_kind"]["verify"]["ok"], 1);
    assert_eq!(doc["tasks"]["problems"][0]["summary"], "backup <failed>");
    assert_eq!(doc["system"]["schema_version"], 3);
    assert_eq!(
        doc["system"]["maintenance_window"]["reason"],
        "kernel <update> & reboot"
    );
    assert_eq!(doc["backups"]["count"], 1);
    assert_eq!(doc["backups"]["newest"]["id"], id);
    assert_eq!(doc["backups"]["newest"]["verified"], true);
    // Size grew 1 MiB a day from d3's last row to d2's (2 MiB at d3+2h, 3 MiB at d2+1h).
    let growth = doc["capacity"]["db_growth_bytes_per_day"].as_f64().unwrap();
    let want = f64::from(1 << 20) / (23.0 / 24.0);
    assert!((growth - want).abs() < 1.0, "{growth} vs {want}");
    assert!(doc["capacity"]["days_until_full"].as_f64().unwrap() > 0.0);

    let quarterly: Value = serde_json::from_str(&report("quarterly", "json")).unwrap();
    assert_eq!(quarterly["daily"].as_array().unwrap().len(), 90);
    assert_eq!(quarterly["totals"]["records"], 17);
    assert_eq!(quarterly["tasks"]["total"], 4);

    let md = report("monthly", "md");
    for want in [
        "# SVOI monthly operations report",
        "## System status",
        "## Tasks done",
        "| backup | 1 | 0 | 1 |",
        "## Backup status",
        "## Capacity forecast",
        "kernel <update> & reboot",
    ] {
        assert!(md.contains(want), "{want:?} missing:\n{md}");
    }

    let html = report("weekly", "html");
    let names = balanced(&html);
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 4, "{html}");
    assert!(names.iter().any(|n| n == "rect"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    assert!(html.contains("kernel &lt;update&gt; &amp; reboot"));
    assert!(html.contains("backup &lt;failed&gt;"));

    // --output writes the file and prints nothing.
    let file = backups.path().join("report.html");
    let out = svoi(&[
        "--db",
        &url,
        "report",
        "weekly",
        "--format",
        "html",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(std::fs::read_to_string(&file).unwrap().contains("<svg"));
}

/// The value of the unlabelled series `name` on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls `check` every 100 ms for up to 10 s (the server reads the state every 2 s).
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Served {
    child: std::process::Child,
    api: String,
    device: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start(db: &Db) -> Served {
    start_on(db, free_addr())
}

fn start_on(db: &Db, device: SocketAddr) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let child = serve_api(
        dir.path(),
        Some(&db.url()),
        device,
        api,
        &dir.path().join("serve.log"),
        &[],
    );
    Served {
        child,
        api: format!("http://{api}"),
        device,
        _dir: dir,
    }
}

fn ready_status_and_gauges_follow_windows_and_the_log(db: Db) {
    let token = create_token(&db.url(), "reporter");
    let mut served = start(&db);
    let agent = client();
    let api = served.api.clone();
    let json = |path: &str| {
        let (code, body) = get(&agent, &format!("{api}{path}"), Some(&token));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let page = || get(&agent, &format!("{api}/metrics"), None).1;

    assert_eq!(json("/ready")["maintenance"], false);
    let status = json("/api/v1/status");
    assert_eq!(status["maintenance"], false);
    assert_eq!(status["maintenance_reason"], Value::Null);
    let first = page();
    assert_eq!(metric(&first, "svoi_maintenance_mode"), Some(0.0));
    assert!(
        !first.contains("svoi_backup_last_"),
        "no backup gauges before a backup entry:\n{first}"
    );

    let mut s = store(&db);
    let now = now_s();
    let window = s
        .open_window(&NewWindow {
            started_at_us: now * 1_000_000,
            planned_end_us: (now + 1800) * 1_000_000,
            reason: "disk swap".to_owned(),
            operator: "tester".to_owned(),
            backup_id: None,
        })
        .unwrap();
    let ready = eventually("/ready maintenance", || {
        let r = json("/ready");
        (r["maintenance"] == true).then_some(r)
    });
    assert_eq!(
        ready["ready"], true,
        "a window leaves readiness alone: {ready}"
    );
    let status = json("/api/v1/status");
    assert_eq!(status["maintenance"], true);
    assert_eq!(status["maintenance_reason"], "disk swap");
    let since: jiff::Timestamp = status["maintenance_since"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let until: jiff::Timestamp = status["maintenance_until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(since.as_second(), now);
    assert_eq!(until.as_second(), now + 1800);
    assert_eq!(metric(&page(), "svoi_maintenance_mode"), Some(1.0));

    // A successful backup ending at now+1.5 s, a failed one, a failed verification.
    s.append_log(&log(now, "backup", LogResult::Ok, "ok"))
        .unwrap();
    let ok_end = now as f64 + 1.5;
    let success = eventually("the success gauge", || {
        metric(&page(), "svoi_backup_last_success_timestamp_seconds")
    });
    assert_eq!(success, ok_end);
    let p = page();
    assert!(
        !p.contains("svoi_backup_last_failure_timestamp_seconds "),
        "{p}"
    );
    assert!(!p.contains("svoi_backup_last_verify_success "), "{p}");
    s.append_log(&log(now + 10, "backup", LogResult::Failed, "failed"))
        .unwrap();
    s.append_log(&log(now + 20, "verify", LogResult::Failed, "corrupt"))
        .unwrap();
    let verify = eventually("the verify gauges", || {
        metric(&page(), "svoi_backup_last_verify_success")
    });
    assert_eq!(verify, 0.0);
    let p = page();
    assert_eq!(
        metric(&p, "svoi_backup_last_failure_timestamp_seconds"),
        Some(now as f64 + 11.5)
    );
    assert_eq!(
        metric(&p, "svoi_backup_last_verify_timestamp_seconds"),
        Some(now as f64 + 21.5)
    );
    assert_eq!(
        metric(&p, "svoi_backup_last_success_timestamp_seconds"),
        Some(ok_end)
    );
    assert!(p.contains("# HELP svoi_backup_last_success_timestamp_seconds "));

    s.close_window(window.id, (now + 30) * 1_000_000, "ok")
        .unwrap();
    eventually("the window to close", || {
        (json("/ready")["maintenance"] == false).then_some(())
    });
    let status = json("/api/v1/status");
    assert_eq!(status["maintenance"], false);
    assert_eq!(status["maintenance_until"], Value::Null);
    assert_eq!(metric(&page(), "svoi_maintenance_mode"), Some(0.0));
    drop(s);

    // On SQLite the server holds the database: a second server is refused with exit 2.
    if !db.is_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .args(["--db", &db.url(), "serve", "--listen", "127.0.0.1:0"])
            .args(["--api-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let pid = served.child.id().to_string();
        assert!(err.contains(&pid), "names the holder {pid}: {err}");
    }
    assert!(sigterm(&mut served.child).success());
}

fn the_server_writes_hourly_statistics_after_traffic(db: Db) {
    let mut served = start(&db);
    // 2 s of traffic: the server samples the devices online every second.
    let out = sim(
        served.device,
        &[
            "--devices",
            "4",
            "--records",
            "50",
            "--rate",
            "25",
            "--batch",
            "5",
        ],
    )
    .output()
    .unwrap();
    let report = sim_report(&out);
    assert!(out.status.success(), "{report}");
    let acked = report["records_acked"].as_i64().unwrap();
    assert_eq!(acked, 200);
    assert!(sigterm(&mut served.child).success());

    let now = now_s();
    let mut s = store(&db);
    let rows = s.hourly_stats(now - 2 * 3600, now + 3600).unwrap();
    assert!(!rows.is_empty(), "no hourly row");
    let port = format!(":{}", served.device.port());
    assert!(rows.iter().all(|r| r.instance.ends_with(&port)), "{rows:?}");
    let sum = |f: fn(&HourlyStats) -> i64| rows.iter().map(f).sum::<i64>();
    assert_eq!(sum(|r| r.records), acked, "{rows:?}");
    let frames = db.count("raw_frames");
    assert_eq!(sum(|r| r.frames), frames, "{rows:?}");
    assert_eq!(sum(|r| r.decode_errors), 0);
    assert!(sum(|r| r.acks) > 0);
    let last = rows.last().unwrap();
    assert!(last.ack_p99_ms.is_some_and(|p| p > 0.0), "{last:?}");
    assert!(last.ack_p50_ms <= last.ack_p99_ms, "{last:?}");
    assert_eq!(last.connections_max, 4, "{last:?}");
    assert_eq!(last.devices_active, 4, "{last:?}");
    assert!(last.db_bytes.is_some_and(|b| b > 0), "{last:?}");

    // A restart within the hour (same instance: same host and device port) adds to the
    // row instead of replacing it.
    let hour = rows.last().unwrap().hour_start;
    let before = rows.last().unwrap().records;
    let mut again = start_on(&db, served.device);
    let out = sim(
        served.device,
        &[
            "--devices",
            "2",
            "--records",
            "10",
            "--imei-base",
            "352093089000000",
        ],
    )
    .output()
    .unwrap();
    let more = sim_report(&out)["records_acked"].as_i64().unwrap();
    assert_eq!(more, 20);
    assert!(sigterm(&mut again.child).success());
    let rows = s.hourly_stats(hour, hour + 3600).unwrap();
    let this_hour = rows.iter().find(|r| r.instance.ends_with(&port)).unwrap();
    // (When the hour ended in between, the new run's records went to the next hour.)
    if hour == now_s() - now_s().rem_euclid(3600) {
        assert_eq!(this_hour.records, before + more, "{rows:?}");
    }
}
