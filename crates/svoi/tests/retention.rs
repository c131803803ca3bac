//! `svoi retention run` and `svoi db optimize|stats` driven like an operator drives them, on
//! SQLite: exactly the data older than the configured ages goes (a dry run removes nothing and
//! says the same), the log file is rotated and old rotated logs are deleted, and each run that
//! changes something leaves one maintenance log entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;
use svoi_store::{
    DbUrl, DecodedRecord, FrameRow, FrameStatus, RecordKind, RecordRow, Store, StoreOptions,
};

const DAY_US: i64 = 86_400_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Fixture {
    fn db(&self) -> PathBuf {
        self.dir.path().join("svoi.db")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("svoi.log")
    }

    fn svoi(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_svoi"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SVOI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SVOI_OPERATOR", "tester")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        rusqlite::Connection::open(self.db())
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn record(index: u32, event_time: i64) -> DecodedRecord {
    DecodedRecord {
        kind: RecordKind::Archive,
        row: RecordRow {
            record_index: Some(index),
            event_code: None,
            event_time: Some(event_time),
            fix_time: None,
            valid: Some(true),
            satellites: None,
            latitude: Some(55.0),
            longitude: Some(37.0),
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

fn frame(seq: u64, received_at_us: i64, records: Vec<DecodedRecord>) -> FrameRow {
    FrameRow {
        seq,
        conn_id: 1,
        imei: Some(Arc::from("352093081234567")),
        received_at_us,
        kind: Arc::from("~A"),
        status: FrameStatus::Ok,
        error_reason: None,
        error: None,
        bytes: vec![0x7e, 0x41],
        layout: None,
        device: None,
        records,
        ext_records: Vec::new(),
    }
}

/// A database with frames 100, 40 and 1 days old (each with one record of the same age, plus
/// one record 70 days old in the newest frame), a log file with content, and rotated logs 10
/// and 2 days old; retention keeps frames 30 days, records 60 days and logs 7 days.
fn fixture(ages: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("svoi.toml");
    let db = dir.path().join("svoi.db");
    let log = dir.path().join("svoi.log");
    std::fs::write(
        &config,
        format!(
            "db = \"sqlite:{}\"\n[log]\nfile = \"{}\"\n[retention]\n{ages}",
            db.display(),
            log.display()
        ),
    )
    .unwrap();
    let now = jiff::Timestamp::now().as_microsecond();
    let mut store = Store::open(&DbUrl::Sqlite(db), &StoreOptions::default()).unwrap();
    let at = |days: i64| now - days * DAY_US;
    let s = |us: i64| us / 1_000_000;
    let _ = store
        .commit(&[
            frame(1, at(100), vec![record(1, s(at(100)))]),
            frame(2, at(40), vec![record(2, s(at(40)))]),
            frame(3, at(1), vec![record(3, s(at(1))), record(4, s(at(70)))]),
        ])
        .unwrap();
    drop(store);
    std::fs::write(&log, "line one\nline two\n").unwrap();
    for (name, days) in [
        ("svoi.log.20200101T000000Z.gz", 10),
        ("svoi.log.20200102T000000Z.gz", 2),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"old").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
            .unwrap();
    }
    Fixture { dir, config }
}

const AGES: &str = "raw_frames = \"30days\"\nrecords = \"60days\"\nlogs = \"7days\"\n";

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("svoi.log"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_dry_run_reports_what_a_run_removes_and_the_run_removes_exactly_that() {
    let f = fixture(AGES);
    let files_before = names(f.dir.path());

    let dry: Json = serde_json::from_str(&stdout(&f.svoi(&[
        "retention",
        "run",
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    // Frames: the 100 and 40 days old ones; records: the 100 and 70 days old ones.
    assert_eq!(dry["deleted"]["raw_frames"], 2);
    assert_eq!(dry["deleted"]["records"], 2);
    assert_eq!(dry["logs"]["deleted"].as_array().unwrap().len(), 1);
    assert!(dry["logs"]["rotated"].is_string());
    // Nothing changed.
    assert_eq!(f.count("SELECT count(*) FROM raw_frames"), 3);
    assert_eq!(f.count("SELECT count(*) FROM records"), 4);
    assert_eq!(names(f.dir.path()), files_before);
    assert_eq!(
        std::fs::read_to_string(f.log()).unwrap(),
        "line one\nline two\n"
    );
    assert_eq!(f.count("SELECT count(*) FROM maintenance_log"), 0);

    let text = stdout(&f.svoi(&["retention", "run"]));
    assert!(text.contains("raw_frames       removed 2 rows"), "{text}");
    assert!(text.contains("records          removed 2 rows"), "{text}");
    assert!(text.contains("raw frames: older than 30days"), "{text}");
    assert_eq!(f.count("SELECT count(*) FROM raw_frames"), 1);
    let kept: String = rusqlite::Connection::open(f.db())
        .unwrap()
        .query_row(
            "SELECT group_concat(record_index) FROM (SELECT record_index FROM records ORDER BY 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, "2,3");
    // The 40 days old frame went, its record (40 days, within 60) stays without it.
    assert_eq!(
        f.count("SELECT count(*) FROM records WHERE record_index = 2 AND frame IS NULL"),
        1
    );

    // The log was rotated: a gzip of what it held, and the file itself is empty.
    assert_eq!(std::fs::read_to_string(f.log()).unwrap(), "");
    let rotated = PathBuf::from(dry["logs"]["rotated"].as_str().unwrap());
    let rotated_now: Vec<String> = names(f.dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".gz") && !n.starts_with("svoi.log.2020"))
        .collect();
    assert_eq!(rotated_now.len(), 1, "{:?}", names(f.dir.path()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(f.dir.path().join(&rotated_now[0])).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "line one\nline two\n");
    assert!(
        rotated
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("svoi.log.2")
    );
    // The rotated log 10 days old is gone, the one 2 days old stays.
    let files = names(f.dir.path());
    assert!(!files.contains(&"svoi.log.20200101T000000Z.gz".to_owned()));
    assert!(files.contains(&"svoi.log.20200102T000000Z.gz".to_owned()));

    // One maintenance log entry for the run, with what it removed.
    let conn = rusqlite::Connection::open(f.db()).unwrap();
    let (kind, result, operator, details): (String, String, String, String) = conn
        .query_row(
            "SELECT kind, result, operator, details FROM maintenance_log",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), result.as_str()), ("retention", "ok"));
    assert_eq!(operator, "tester");
    let details: Json = serde_json::from_str(&details).unwrap();
    assert_eq!(details["deleted"]["raw_frames"], 2);

    // Again: nothing more to remove, and an empty log is not rotated.
    let again: Json =
        serde_json::from_str(&stdout(&f.svoi(&["retention", "run", "--json"]))).unwrap();
    assert_eq!(again["deleted"]["raw_frames"], 0);
    assert_eq!(again["deleted"]["records"], 0);
    assert!(again["logs"]["rotated"].is_null());
}

#[test]
fn without_ages_data_is_kept_forever() {
    let f = fixture("");
    let text = stdout(&f.svoi(&["retention", "run"]));
    assert!(
        text.contains("raw frames: kept forever (retention.raw_frames is not set)"),
        "{text}"
    );
    assert!(
        text.contains("records: kept forever (retention.records is not set)"),
        "{text}"
    );
    assert_eq!(f.count("SELECT count(*) FROM raw_frames"), 3);
    assert_eq!(f.count("SELECT count(*) FROM records"), 4);
    // The default log age is 30 days: neither rotated log is that old.
    assert_eq!(
        names(f.dir.path())
            .iter()
            .filter(|n| n.starts_with("svoi.log.2020"))
            .count(),
        2
    );
}

#[test]
fn db_optimize_logs_an_entry_and_db_stats_lists_the_tables() {
    let f = fixture(AGES);
    let text = stdout(&f.svoi(&["db", "optimize"]));
    assert!(text.contains("integrity_check"), "{text}");
    assert!(text.contains("wal_checkpoint"), "{text}");
    assert_eq!(
        f.count("SELECT count(*) FROM maintenance_log WHERE kind = 'optimize' AND result = 'ok'"),
        1
    );

    let stats: Json = serde_json::from_str(&stdout(&f.svoi(&["db", "stats", "--json"]))).unwrap();
    let records = stats["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "records")
        .unwrap();
    assert_eq!(records["rows"], 4);
    assert!(stats["slow_queries"].is_null());
    let text = stdout(&f.svoi(&["db", "stats"]));
    assert!(text.starts_with("database: sqlite 3."), "{text}");
    assert!(text.contains("records_frame"), "{text}");
}

#[test]
fn db_optimize_exits_1_when_the_integrity_check_fails() {
    let f = fixture(AGES);
    rusqlite::Connection::open(f.db())
        .unwrap()
        .execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = 'CREATE INDEX records_frame ON records(fields)'
             WHERE name = 'records_frame';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    let out = f.svoi(&["db", "optimize"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failed: "), "{text}");
    assert_eq!(
        f.count(
            "SELECT count(*) FROM maintenance_log WHERE kind = 'optimize' AND result = 'failed'"
        ),
        1
    );
}
