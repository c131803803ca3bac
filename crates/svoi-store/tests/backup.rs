//! Backups and restores on both backends: snapshot or dump counts equal to the database's,
//! checks of a copy, restores that bring the data back exactly while carrying the operations
//! rows over and bumping the restore epoch; corruption found by the SQLite check; the server
//! lock and `server_using`.

// The test bodies are plain functions run by `backends!`, outside `#[test]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use svoi_store::backup::{
    self, BackupError, DATA_TABLES, PgTools, SERVE_APPLICATION_NAME, ServerLock, Snapshot,
};
use svoi_store::{
    DbUrl, HourlyStats, LogResult, NewLogEntry, NewWindow, Store, StoreOptions, Synchronous,
};
use svoi_testpg::backends;

backends!(a_backup_restores_exactly_and_carries_the_operations_rows_over);

fn log_entry(kind: &str, at_us: i64) -> NewLogEntry {
    NewLogEntry {
        at_us,
        kind: kind.to_string(),
        operator: "test".to_string(),
        duration_ms: 1,
        result: LogResult::Ok,
        summary: format!("{kind} entry"),
        details: "{}".to_string(),
    }
}

fn hourly(hour_start: i64, frames: i64) -> HourlyStats {
    HourlyStats {
        hour_start,
        instance: "host:5221".to_string(),
        frames,
        records: frames,
        duplicates: 0,
        decode_errors: 0,
        acks: frames,
        ack_p50_ms: Some(1.0),
        ack_p95_ms: None,
        ack_p99_ms: None,
        devices_active: 1,
        connections_max: 1,
        db_bytes: None,
        updated_at_us: 1,
    }
}

/// Takes a backup of `db` into `dir`: the SQLite copy or the PostgreSQL dump, and its file.
fn take(db: &Db, dir: &Path) -> (Snapshot, PathBuf) {
    let opts = StoreOptions::default();
    match db.store_url() {
        DbUrl::Sqlite(path) => {
            let dest = dir.join("copy.sqlite");
            (backup::snapshot_sqlite(&path, &opts, &dest).unwrap(), dest)
        }
        DbUrl::Postgres(pg) => {
            let dest = dir.join("dump.pgdump");
            let tools = PgTools::find(None).unwrap();
            (
                backup::dump_postgres(&pg, &opts, &tools, &dest).unwrap(),
                dest,
            )
        }
    }
}

/// Counts of every table, read with the test's own connection.
fn counts(db: &Db, tables: &[&str]) -> Vec<(String, i64)> {
    tables
        .iter()
        .map(|t| ((*t).to_string(), db.count(t)))
        .collect()
}

fn a_backup_restores_exactly_and_carries_the_operations_rows_over(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store
        .commit(&[
            frame(1, "111", archives(0..5)),
            frame(2, "222", archives(0..3)),
        ])
        .unwrap();
    let first_log = store.append_log(&log_entry("backup", 10)).unwrap();
    let before: Vec<(String, i64)> = counts(&db, DATA_TABLES);

    let scratch = tempfile::tempdir().unwrap();
    let (snapshot, file) = take(&db, scratch.path());
    assert_eq!(snapshot.schema_version, svoi_store::latest_schema_version());
    for (table, n) in &before {
        assert_eq!(snapshot.counts.get(table), Some(n), "{table}");
    }
    assert_eq!(snapshot.counts.get("records"), Some(&8));
    assert_eq!(snapshot.counts.get("maintenance_log"), Some(&1));
    assert_eq!(
        snapshot.data_rows(),
        before.iter().map(|(_, n)| n).sum::<i64>()
    );

    // The copy checks out on its own.
    let opts = StoreOptions::default();
    let tools = db.is_postgres().then(|| PgTools::find(None).unwrap());
    match db.store_url() {
        DbUrl::Sqlite(_) => {
            let check = backup::check_sqlite(&file).unwrap();
            assert!(check.ok(), "{check:?}");
            assert_eq!(check.snapshot, snapshot);
        }
        DbUrl::Postgres(pg) => {
            let check = backup::check_postgres(&pg, &opts, tools.as_ref().unwrap(), &file).unwrap();
            assert_eq!(check.snapshot, snapshot);
            let left = db.count(&format!(
                "pg_database WHERE datname = '{}'",
                check.scratch_database
            ));
            assert_eq!(left, 0, "the scratch database is dropped");
        }
    }

    // After the backup: more data (which the restore must take away) and operations rows
    // (which it must keep).
    let _ = store
        .commit(&[
            frame(3, "333", archives(0..4)),
            frame(4, "111", archives(5..9)),
        ])
        .unwrap();
    let second_log = store.append_log(&log_entry("window", 20)).unwrap();
    let window = store
        .open_window(&NewWindow {
            started_at_us: 20,
            planned_end_us: 30,
            reason: "upgrade".into(),
            operator: "test".into(),
            backup_id: Some("B1".into()),
        })
        .unwrap();
    store.upsert_hourly_stats(&hourly(3600, 7)).unwrap();
    assert!(db.count("records") > 8);

    let carried = match db.store_url() {
        DbUrl::Sqlite(path) => {
            // The file is the scratch copy the restore changes; keep the backup as it was.
            let copy = scratch.path().join("restore.sqlite");
            std::fs::copy(&file, &copy).unwrap();
            backup::restore_sqlite(&copy, &path, &opts).unwrap()
        }
        DbUrl::Postgres(pg) => {
            backup::restore_postgres(&pg, &opts, tools.as_ref().unwrap(), &file).unwrap()
        }
    };
    assert!(carried.live_existed);
    assert_eq!(
        carried.log_entries, 1,
        "only the entry written after the backup"
    );
    assert_eq!(carried.windows, 1);
    assert_eq!(carried.hourly_stats, 1);
    assert_eq!(carried.epoch, 1);

    assert_eq!(counts(&db, DATA_TABLES), before, "data as backed up");
    assert_eq!(
        db.rows("SELECT id FROM maintenance_log ORDER BY id"),
        [first_log.to_string(), second_log.to_string()]
    );
    assert_eq!(
        db.rows("SELECT id, reason, coalesce(backup_id, '') FROM maintenance_windows"),
        [format!("{}|upgrade|B1", window.id)]
    );
    assert_eq!(db.count("hourly_stats WHERE frames = 7"), 1);
    assert_eq!(
        db.scalar("SELECT value FROM svoi_state WHERE name = 'restore_epoch'"),
        "1"
    );

    // The log goes on after the carried ids (PostgreSQL: the identity sequence moved on).
    let mut fresh = db.open(Synchronous::Off);
    let next = fresh.append_log(&log_entry("restore", 30)).unwrap();
    assert!(next > second_log, "{next} after {second_log}");

    // A second restore bumps the epoch again.
    let carried = match db.store_url() {
        DbUrl::Sqlite(path) => {
            let copy = scratch.path().join("restore2.sqlite");
            std::fs::copy(&file, &copy).unwrap();
            backup::restore_sqlite(&copy, &path, &opts).unwrap()
        }
        DbUrl::Postgres(pg) => {
            backup::restore_postgres(&pg, &opts, tools.as_ref().unwrap(), &file).unwrap()
        }
    };
    assert_eq!(carried.epoch, 2);
    assert_eq!(db.count("maintenance_log"), 3);
}

#[test]
fn a_sqlite_restore_into_a_missing_database_creates_it_in_wal_mode() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let _ = store.commit(&[frame(1, "111", archives(0..3))]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy.sqlite");
    let db = dir.path().join(svoi_testpg::SQLITE_FILE);
    let snapshot = backup::snapshot_sqlite(&db, &StoreOptions::default(), &copy).unwrap();

    let target = scratch.path().join("new/dir/svoi.db");
    let carried = backup::restore_sqlite(&copy, &target, &StoreOptions::default()).unwrap();
    assert!(!carried.live_existed);
    assert_eq!(carried.epoch, 1);
    let conn = rusqlite::Connection::open(&target).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(count(&conn, "records"), snapshot.counts["records"]);
    let live = backup::live_snapshot(&DbUrl::Sqlite(target), &StoreOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(live.counts, snapshot.counts);
    assert!(
        backup::live_snapshot(
            &DbUrl::Sqlite(scratch.path().join("none.db")),
            &StoreOptions::default()
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn the_sqlite_check_finds_a_damaged_copy() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    for seq in 0..40 {
        let _ = store
            .commit(&[frame(
                seq,
                "111",
                archives(seq as u32 * 50..seq as u32 * 50 + 50),
            )])
            .unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy.sqlite");
    let db = dir.path().join(svoi_testpg::SQLITE_FILE);
    backup::snapshot_sqlite(&db, &StoreOptions::default(), &copy).unwrap();
    assert!(backup::check_sqlite(&copy).unwrap().ok());

    // Scribble over the middle of the file (b-tree pages of records).
    let mut bytes = std::fs::read(&copy).unwrap();
    let page = 16_384;
    let middle = (bytes.len() / page / 2) * page;
    for b in &mut bytes[middle + 8..middle + 4_000] {
        *b = 0xa5;
    }
    std::fs::write(&copy, &bytes).unwrap();
    match backup::check_sqlite(&copy) {
        Ok(check) => assert!(!check.ok(), "damage went unnoticed: {check:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn the_server_lock_is_exclusive_and_names_its_holder() {
    let (dir, _store) = temp_store(Synchronous::Off);
    let url = url(&dir);
    let opts = StoreOptions::default();
    assert_eq!(backup::server_using(&url, &opts).unwrap(), None);
    let lock = ServerLock::acquire(&url).unwrap();
    assert!(lock.path().unwrap().ends_with("svoi.db.serve.lock"));
    let pid = std::process::id();
    assert_eq!(
        backup::server_using(&url, &opts).unwrap(),
        Some(format!("svoi serve (pid {pid})"))
    );
    match ServerLock::acquire(&url) {
        Err(BackupError::InUse { holder, .. }) => {
            assert_eq!(holder, format!("svoi serve (pid {pid})"));
        }
        other => panic!("a second lock: {other:?}"),
    }
    drop(lock);
    assert_eq!(backup::server_using(&url, &opts).unwrap(), None);
    let _again = ServerLock::acquire(&url).unwrap();
}

#[test]
fn postgres_server_using_sees_serve_sessions_only() {
    let db = Db::postgres();
    let url = db.store_url();
    let plain = db.open(Synchronous::Off);
    let opts = StoreOptions::default();
    assert_eq!(backup::server_using(&url, &opts).unwrap(), None);
    let mut serve_opts = StoreOptions::default();
    serve_opts.postgres.application_name = Some(SERVE_APPLICATION_NAME.to_string());
    let serve = Store::open(&url, &serve_opts).unwrap();
    let who = backup::server_using(&url, &opts).unwrap().unwrap();
    assert!(who.starts_with("svoi serve (backend pid "), "{who}");
    drop(serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backup::server_using(&url, &opts).unwrap().is_some() {
        assert!(Instant::now() < deadline, "the session stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(plain);
    // The lock is nothing on PostgreSQL.
    assert!(ServerLock::acquire(&url).unwrap().path().is_none());
}

#[test]
fn missing_tools_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    match PgTools::find(Some(dir.path())) {
        Err(e @ BackupError::ToolsMissing(_)) => {
            assert!(e.to_string().contains("backup.pg_bin_dir"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
