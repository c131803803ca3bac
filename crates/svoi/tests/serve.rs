//! `svoi serve` as a separate process under `svoi sim` load: the README's first command on the
//! embedded default, graceful SIGTERM, and the crash test — SIGKILL at a random moment under
//! load, restart, and every record the simulator saw acknowledged is in the database exactly
//! once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

mod util;

use util::{BIN, free_addr, serve, serve_with, sigterm, sim, sim_report, wait_for};

#[test]
fn readme_serve_on_the_embedded_default_takes_a_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let log = dir.path().join("serve.log");
    let mut server = serve(dir.path(), None, addr, &log);
    let out = sim(addr, &["--devices", "100", "--records", "1000"])
        .output()
        .unwrap();
    let report = sim_report(&out);
    assert!(out.status.success(), "sim failed: {report}");
    assert_eq!(report["records_acked"], 100_000, "{report}");
    let status = sigterm(&mut server);
    assert!(
        status.success(),
        "serve exited with {status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    // The default database, created with no setup.
    let db = dir.path().join("data/svoi.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM v_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100_000);
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_record() {
    crash_under_load(&[]);
}

/// `synchronous=normal` survives a process crash too (README's durability table); only power
/// loss separates it from `full`, which a process kill cannot show.
#[test]
fn kill_9_with_synchronous_normal_loses_nothing_either() {
    crash_under_load(&[("SVOI_SQLITE_SYNCHRONOUS", "normal")]);
}

fn crash_under_load(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("crash.db").display());
    let addr = free_addr();
    let log = dir.path().join("serve.log");
    let acked = dir.path().join("acked.log");
    let (devices, records) = (40u64, 2_500u64);
    let mut server = serve_with(dir.path(), Some(&db), addr, &log, env);
    let mut fleet = sim(
        addr,
        &[
            "--devices",
            &devices.to_string(),
            "--records",
            &records.to_string(),
            "--batch",
            "50",
            "--reconnect-for",
            "30s",
            "--acked-log",
            acked.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Kill once some records are acknowledged, at a random moment after that.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_to_string(&acked).map_or(0, |s| s.lines().count());
        if n >= 1_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no acknowledgements: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pause = rand::rng().random_range(0..300);
    std::thread::sleep(Duration::from_millis(pause));
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let at_kill = std::fs::read_to_string(&acked).map_or(0, |s| s.lines().count());
    // Restart on the same database; the fleet reconnects and resends what was not answered.
    let mut server = serve_with(dir.path(), Some(&db), addr, &log, env);
    let status = wait_for(&mut fleet, Duration::from_secs(120));
    let out = fleet.wait_with_output().unwrap();
    let report = sim_report(&out);
    assert!(status.success(), "sim: {report}");
    assert!(
        report["reconnects"].as_u64().unwrap() > 0,
        "the kill hit no session: {report}"
    );
    assert!(sigterm(&mut server).success());

    let conn = rusqlite::Connection::open(dir.path().join("crash.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT imei, record_index, CAST(strftime('%s', event_time) AS INTEGER) FROM v_records",
        )
        .unwrap();
    let stored: Vec<(String, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let unique: HashSet<&(String, i64, i64)> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a record is stored twice");
    let acked_lines = std::fs::read_to_string(&acked).unwrap();
    let mut missing = Vec::new();
    let mut count = 0;
    for line in acked_lines.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let key = (
            parts[0].to_string(),
            parts[1].parse::<i64>().unwrap(),
            parts[2].parse::<i64>().unwrap(),
        );
        count += 1;
        if !unique.contains(&key) {
            missing.push(line.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        at_kill < count,
        "killed at {at_kill} of {count} acknowledgements"
    );
    assert_eq!(
        stored.len() as u64,
        devices * records,
        "every record stored once in the end"
    );
}

fn reprocess(db: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["reprocess", "--db", db, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reprocess_rebuilds_rows_from_the_raw_archive_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("re.db");
    let db = format!("sqlite:{}", path.display());
    let addr = free_addr();
    let log = dir.path().join("serve.log");
    let mut server = serve(dir.path(), Some(&db), addr, &log);
    let out = sim(
        addr,
        &["--devices", "5", "--records", "200", "--alarm-every", "50"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(sigterm(&mut server).success());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let frames = count("SELECT count(*) FROM raw_frames");
    let records = count("SELECT count(*) FROM records");
    assert_eq!(records, 1_000);

    // Today's decoder finds what the server stored.
    let r = reprocess(&db, &["--since", "0"]);
    assert_eq!(r["frames"], frames, "{r}");
    assert_eq!(r["records_unchanged"], records, "{r}");
    for k in [
        "records_added",
        "records_changed",
        "records_removed",
        "status_changed",
    ] {
        assert_eq!(r[k], 0, "{k}: {r}");
    }

    // Rows lost or damaged (as a decoder bug would leave them) come back from the raw frames.
    conn.execute_batch(
        "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT 10);
         UPDATE records SET fields = '{}' WHERE id IN (SELECT id FROM records ORDER BY id DESC LIMIT 5);",
    )
    .unwrap();
    let r = reprocess(&db, &["--since", "0"]);
    assert_eq!(r["records_added"], 10, "{r}");
    assert_eq!(r["records_changed"], 5, "{r}");
    assert_eq!(count("SELECT count(*) FROM v_records"), records);
    let r = reprocess(&db, &["--since", "0"]);
    assert_eq!(r["records_added"], 0, "{r}");
    assert_eq!(r["records_changed"], 0, "{r}");
    assert_eq!(r["records_unchanged"], records, "{r}");

    // The window and the device filter narrow it.
    let r = reprocess(&db, &["--since", "2000-01-01", "--until", "2000-01-02"]);
    assert_eq!(r["frames"], 0, "{r}");
    let r = reprocess(&db, &["--since", "0", "--imei", "860000000000000"]);
    assert!(
        r["frames"].as_i64().unwrap() > 0 && r["frames"].as_i64().unwrap() < frames,
        "{r}"
    );
}

#[test]
fn serve_refuses_a_bad_config_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("svoi.toml");
    std::fs::write(
        &cfg,
        "db = \"sqlite:x.db\"\n\n[ingest]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("ingest.listen"),
        "{err}"
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "started despite the bad config"
    );
}
