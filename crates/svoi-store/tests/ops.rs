//! What operations keep in the database, on both backends: the append-only maintenance log,
//! maintenance windows (one open at a time), hourly statistics, daily figures, the ops state
//! the server exports, row counts, retention (exactly what is older than the cutoffs goes),
//! database maintenance, and the restore epoch that makes a running writer forget its ids.

// The test bodies are plain functions run by `backends!`, outside `#[test]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use svoi_store::{
    HourlyStats, LogResult, NewLogEntry, NewWindow, Reader, RetentionPlan, StoreError,
    StoreOptions, Synchronous,
};
use svoi_testpg::backends;

backends!(
    the_log_appends_in_order_and_refuses_changes,
    one_window_is_open_at_a_time,
    hourly_stats_are_replaced_per_hour_and_instance,
    ops_state_reports_the_newest_backup_and_verification_ends,
    table_counts_cover_every_table,
    daily_figures_count_per_utc_day,
    retention_removes_exactly_what_is_older_than_the_cutoffs,
    retention_without_cutoffs_removes_nothing,
    a_restore_epoch_bump_makes_the_writer_resolve_ids_again,
    optimize_runs_every_step_and_finds_a_sound_database_sound,
    db_stats_size_every_table_and_index,
);

/// Runs `sql` through a connection of the test's own; `Err` with the database's message.
fn try_exec(db: &Db, sql: &str) -> Result<(), String> {
    match db {
        Db::Sqlite(dir) => rusqlite::Connection::open(dir.path().join(svoi_testpg::SQLITE_FILE))
            .and_then(|c| c.execute_batch(sql))
            .map_err(|e| e.to_string()),
        Db::Postgres(pg) => pg.try_psql(sql).map(drop).map_err(|e| e.to_string()),
    }
}

fn entry(at_us: i64, kind: &str, duration_ms: i64, result: LogResult) -> NewLogEntry {
    NewLogEntry {
        at_us,
        kind: kind.to_owned(),
        operator: "tester".to_owned(),
        duration_ms,
        result,
        summary: format!("{kind} {}", result.as_str()),
        details: r#"{"id":"x"}"#.to_owned(),
    }
}

fn the_log_appends_in_order_and_refuses_changes(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    assert!(store.log_entries().unwrap().is_empty());
    let a = entry(1_000, "backup", 1_500, LogResult::Ok);
    let b = entry(900, "verify", 20, LogResult::Failed);
    let id_a = store.append_log(&a).unwrap();
    let id_b = store.append_log(&b).unwrap();
    assert!(id_b > id_a);
    let log = store.log_entries().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].id, &log[0].entry), (id_a, &a));
    assert_eq!((log[1].id, &log[1].entry), (id_b, &b));

    for sql in [
        "UPDATE maintenance_log SET summary = 'changed'",
        "DELETE FROM maintenance_log",
    ] {
        let err = try_exec(&db, sql).expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.log_entries().unwrap(), log);
    if db.is_postgres() {
        let err = try_exec(&db, "TRUNCATE maintenance_log").expect_err("truncate");
        assert!(err.contains("append-only"), "{err}");
    }
    assert!(matches!(
        store.append_log(&entry(1, "", 0, LogResult::Ok)),
        Err(StoreError::Invalid(_))
    ));
}

fn window(started_at_us: i64, reason: &str) -> NewWindow {
    NewWindow {
        started_at_us,
        planned_end_us: started_at_us + 3_600_000_000,
        reason: reason.to_owned(),
        operator: "tester".to_owned(),
        backup_id: Some("20260101T000000Z-pre".to_owned()),
    }
}

fn one_window_is_open_at_a_time(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    assert_eq!(store.current_window().unwrap(), None);
    let first = store.open_window(&window(10, "kernel update")).unwrap();
    assert_eq!(first.window, window(10, "kernel update"));
    assert_eq!(store.current_window().unwrap(), Some(first.clone()));

    match store.open_window(&window(20, "second")) {
        Err(StoreError::Invalid(msg)) => {
            assert!(
                msg.contains(&format!("window {} is open", first.id)),
                "{msg}"
            );
            assert!(msg.contains("kernel update"), "{msg}");
        }
        other => panic!("second open window: {other:?}"),
    }
    // The database itself refuses a second open window, whoever writes it.
    assert!(
        try_exec(
            &db,
            "INSERT INTO maintenance_windows (started_at_us, planned_end_us, reason, operator)
             VALUES (1, 2, 'sneaky', 'x')"
        )
        .is_err()
    );

    store.set_window_silence(first.id, "silence-1").unwrap();
    assert!(matches!(
        store.set_window_silence(first.id + 100, "s"),
        Err(StoreError::Invalid(_))
    ));
    store.close_window(first.id, 99, "ok").unwrap();
    assert_eq!(store.current_window().unwrap(), None);
    // Closing twice is refused: it is no longer open.
    assert!(matches!(
        store.close_window(first.id, 100, "ok"),
        Err(StoreError::Invalid(_))
    ));

    let second = store.open_window(&window(200, "second")).unwrap();
    assert_ne!(second.id, first.id);
    let all = store.windows().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, first.id);
    assert_eq!(all[0].silence_id.as_deref(), Some("silence-1"));
    assert_eq!(all[0].ended_at_us, Some(99));
    assert_eq!(all[0].result.as_deref(), Some("ok"));
    assert_eq!(all[1], second);
}

fn hourly(hour_start: i64, instance: &str, frames: i64) -> HourlyStats {
    HourlyStats {
        hour_start,
        instance: instance.to_owned(),
        frames,
        records: frames * 10,
        duplicates: 3,
        decode_errors: 1,
        acks: frames,
        ack_p50_ms: Some(1.5),
        ack_p95_ms: Some(7.25),
        ack_p99_ms: None,
        devices_active: 4,
        connections_max: 5,
        db_bytes: Some(123_456_789),
        updated_at_us: hour_start * 1_000_000 + 1,
    }
}

fn hourly_stats_are_replaced_per_hour_and_instance(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let h = 1_700_002_800; // on the hour
    store.upsert_hourly_stats(&hourly(h, "a:5001", 10)).unwrap();
    store.upsert_hourly_stats(&hourly(h, "b:5001", 20)).unwrap();
    store
        .upsert_hourly_stats(&hourly(h + 3600, "a:5001", 30))
        .unwrap();
    // The same hour and instance again: replaced, not added.
    store.upsert_hourly_stats(&hourly(h, "a:5001", 11)).unwrap();
    assert_eq!(db.count("hourly_stats"), 3);
    assert_eq!(
        store.hourly_stats(h, h + 7200).unwrap(),
        vec![
            hourly(h, "a:5001", 11),
            hourly(h, "b:5001", 20),
            hourly(h + 3600, "a:5001", 30)
        ]
    );
    // Half-open range.
    assert_eq!(store.hourly_stats(h, h + 3600).unwrap().len(), 2);
    assert_eq!(store.hourly_stats(h + 1, h + 3601).unwrap().len(), 1);
    let reader = Reader::open(&db.store_url(), &StoreOptions::default(), 1).unwrap();
    assert_eq!(
        reader.hourly_stats(h, h + 7200).unwrap(),
        store.hourly_stats(h, h + 7200).unwrap()
    );
    assert!(matches!(
        store.upsert_hourly_stats(&hourly(h + 1, "a:5001", 1)),
        Err(StoreError::Invalid(_))
    ));
}

fn ops_state_reports_the_newest_backup_and_verification_ends(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let reader = Reader::open(&db.store_url(), &StoreOptions::default(), 1).unwrap();
    let empty = store.ops_state().unwrap();
    assert_eq!(empty, Default::default());
    assert_eq!(reader.ops_state().unwrap(), empty);

    // Backups: an ok one that started later but ended earlier than a long one.
    store
        .append_log(&entry(1_000_000, "backup", 5_000, LogResult::Ok))
        .unwrap(); // ends 6_000_000
    store
        .append_log(&entry(2_000_000, "backup", 1_000, LogResult::Ok))
        .unwrap(); // ends 3_000_000
    store
        .append_log(&entry(7_500_000, "backup", 500, LogResult::Failed))
        .unwrap(); // ends 8_000_000, after the last good one
    store
        .append_log(&entry(9_000_000, "restore", 1, LogResult::Failed))
        .unwrap();
    store
        .append_log(&entry(7_000_000, "verify", 2_000, LogResult::Ok))
        .unwrap(); // ends 9_000_000
    let w = store.open_window(&window(5, "maint")).unwrap();
    let state = store.ops_state().unwrap();
    assert_eq!(state.window, Some(w));
    assert_eq!(state.last_backup_ok_us, Some(6_000_000));
    assert_eq!(state.last_backup_failed_us, Some(8_000_000));
    assert_eq!(state.last_verify_us, Some(9_000_000));
    assert_eq!(state.last_verify_ok, Some(true));
    assert_eq!(reader.ops_state().unwrap(), state);

    // A newer failed verification wins.
    store
        .append_log(&entry(9_500_000, "verify", 10, LogResult::Failed))
        .unwrap();
    let state = reader.ops_state().unwrap();
    assert_eq!(state.last_verify_us, Some(9_510_000));
    assert_eq!(state.last_verify_ok, Some(false));
}

fn table_counts_cover_every_table(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&[frame(1, IMEI, archives(0..3))]).unwrap();
    store
        .append_log(&entry(1, "backup", 1, LogResult::Ok))
        .unwrap();
    let counts = store.table_counts().unwrap();
    let expected: Vec<(&str, i64)> = vec![
        ("alarm_events", 0),
        ("api_tokens", 0),
        ("current_states", 0),
        ("decode_errors", 0),
        ("devices", 1),
        ("ext_records", 0),
        ("hourly_stats", 0),
        ("layouts", 1),
        ("maintenance_log", 1),
        ("maintenance_windows", 0),
        ("raw_frames", 1),
        ("records", 3),
    ];
    let got: Vec<(&str, i64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, expected);
}

fn daily_figures_count_per_utc_day(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    // 2023-11-14T00:00:00Z and the next day.
    let day = 1_699_920_000;
    let at = |s: i64| s * 1_000_000;
    let mut f1 = frame(1, IMEI, archives(0..2));
    f1.received_at_us = at(day) - 1; // the day before, last microsecond
    let mut f2 = frame(2, IMEI, archives(2..5));
    f2.received_at_us = at(day);
    let mut f3 = frame(3, "999", archives(5..6));
    f3.received_at_us = at(day + 86_399);
    let mut f4 = frame(4, IMEI, Vec::new());
    f4.status = svoi_store::FrameStatus::Garbage;
    f4.received_at_us = at(day + 86_400);
    let _ = store.commit(&[f1, f2, f3, f4]).unwrap();

    let figures = store.daily_figures(day - 86_400, day + 2 * 86_400).unwrap();
    let got: Vec<(i64, i64, i64, i64, i64)> = figures
        .iter()
        .map(|d| {
            (
                d.day_start,
                d.frames,
                d.decode_errors,
                d.records,
                d.devices_active,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (day - 86_400, 1, 0, 2, 1),
            (day, 2, 0, 4, 2),
            (day + 86_400, 1, 1, 0, 1),
        ]
    );
    // The range is half-open on receive time.
    let only = store.daily_figures(day, day + 86_400).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].day_start, day);
}

/// 2023-10-15T00:00:00Z: the cutoff of the retention tests, in the middle of October.
const CUT: i64 = 1_697_328_000;
const CUT_US: i64 = CUT * 1_000_000;
/// Month starts of 2023 (Unix seconds): August to December.
const MONTHS_2023: [(u32, i64); 5] = [
    (8, 1_690_848_000),
    (9, 1_693_526_400),
    (10, 1_696_118_400),
    (11, 1_698_796_800),
    (12, 1_701_388_800),
];
/// 2019-05-05 and 2030-05-05: outside every monthly partition (the default ones on
/// PostgreSQL), before and after the cutoff.
const OLD: i64 = 1_557_014_400;
const FUTURE: i64 = 1_904_169_600;

/// One frame of the retention fixture: receive time, its archive record's event time, whether
/// it also carries a current state, an alarm and an additional record, and whether it is a
/// garbage frame (a decode error, no records).
struct Spec {
    received_us: i64,
    event_time: Option<i64>,
    extras: bool,
    garbage: bool,
}

fn spec(received_us: i64, event_time: Option<i64>, extras: bool) -> Spec {
    Spec {
        received_us,
        event_time,
        extras,
        garbage: false,
    }
}

fn fixture() -> Vec<Spec> {
    let aug5 = 1_691_193_600;
    let sep15 = 1_694_736_000;
    let nov3 = 1_698_969_600;
    vec![
        spec(OLD * 1_000_000, Some(OLD), false),
        spec(aug5 * 1_000_000, Some(aug5), true),
        spec(sep15 * 1_000_000, Some(MONTHS_2023[2].1 - 1), false),
        spec(CUT_US - 1_000_000, Some(CUT - 1), true),
        spec(CUT_US - 1, Some(CUT), true),
        spec(CUT_US, Some(CUT - 1), false),
        spec(CUT_US + 1, None, true),
        spec(CUT_US - 2, None, false),
        spec(nov3 * 1_000_000, Some(nov3), false),
        spec(FUTURE * 1_000_000, Some(FUTURE), true),
        Spec {
            received_us: CUT_US - 1,
            event_time: None,
            extras: false,
            garbage: true,
        },
        Spec {
            received_us: CUT_US,
            event_time: None,
            extras: false,
            garbage: true,
        },
    ]
}

fn fixture_frames(specs: &[Spec]) -> Vec<svoi_store::FrameRow> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let i = i as u32;
            let mut records = Vec::new();
            let mut f = if s.garbage {
                let mut f = frame(u64::from(i), IMEI, Vec::new());
                f.status = svoi_store::FrameStatus::Garbage;
                f.error = Some("bad bytes".to_owned());
                f
            } else {
                records.push(archive(record_at(Some(i), s.event_time)));
                if s.extras {
                    records.push(current(record_at(Some(500 + i), Some(CUT))));
                    records.push(alarm(i, record_at(Some(1_000 + i), Some(FUTURE))));
                }
                frame(u64::from(i), IMEI, records)
            };
            if s.extras {
                f.ext_records = vec![ext(record_at(Some(2_000 + i), Some(FUTURE)))];
            }
            f.received_at_us = s.received_us;
            f
        })
        .collect()
}

/// What the fixture's run at [`CUT`] removes, per table.
fn expected_removal(specs: &[Spec]) -> std::collections::BTreeMap<String, i64> {
    let old = |s: &&Spec| s.received_us < CUT_US;
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "raw_frames".to_owned(),
        specs.iter().filter(old).count() as i64,
    );
    let extras = specs.iter().filter(old).filter(|s| s.extras).count() as i64;
    m.insert("current_states".to_owned(), extras);
    m.insert("alarm_events".to_owned(), extras);
    m.insert("ext_records".to_owned(), extras);
    m.insert(
        "decode_errors".to_owned(),
        specs.iter().filter(old).filter(|s| s.garbage).count() as i64,
    );
    // Archive records by event time, or receive time without one; alarm records are in 2030.
    let records = specs
        .iter()
        .filter(|s| !s.garbage)
        .filter(|s| match s.event_time {
            Some(t) => t < CUT,
            None => s.received_us < CUT_US,
        })
        .count() as i64;
    m.insert("records".to_owned(), records);
    m
}

/// The monthly partitions of 2023 the fixture needs on PostgreSQL (older than the store
/// creates by itself): August to November for both tables; July and December stay in the
/// default partitions.
fn create_2023_partitions(db: &Db) {
    for pair in MONTHS_2023.windows(2) {
        let ((month, lo), (_, hi)) = (pair[0], pair[1]);
        db.exec(&format!(
            "SELECT svoi_ensure_partition('records', 'y2023m{month:02}', {lo}, {hi});
             SELECT svoi_ensure_partition('raw_frames', 'y2023m{month:02}', {}, {});",
            lo * 1_000_000,
            hi * 1_000_000
        ));
    }
}

fn retention_removes_exactly_what_is_older_than_the_cutoffs(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    if db.is_postgres() {
        create_2023_partitions(&db);
    }
    let specs = fixture();
    let _ = store.commit(&fixture_frames(&specs)).unwrap();
    let before = store.table_counts().unwrap();
    if db.is_postgres() {
        assert_eq!(db.count("raw_frames_default"), 2);
        assert_eq!(db.count("raw_frames_y2023m08"), 1);
        assert_eq!(db.count("records_y2023m09"), 1);
    }
    let plan = RetentionPlan {
        raw_frames_before_us: Some(CUT_US),
        records_before_s: Some(CUT),
    };
    let expected = expected_removal(&specs);
    assert_eq!(expected["raw_frames"], 7, "fixture");
    assert_eq!(expected["records"], 6, "fixture");

    // A dry run counts and changes nothing.
    let dry = store.retention(&plan, true).unwrap();
    assert_eq!(dry.deleted, expected);
    assert_eq!(store.table_counts().unwrap(), before);

    let report = store.retention(&plan, false).unwrap();
    assert_eq!(report, dry, "a dry run reports what the run removes");
    let after = store.table_counts().unwrap();
    for (table, n) in &before {
        let removed = expected.get(table).copied().unwrap_or(0);
        assert_eq!(after[table], n - removed, "{table}");
    }

    // Exactly the rows at or after the cutoffs are left.
    let frames: Vec<String> = db.rows("SELECT received_at_us FROM raw_frames ORDER BY 1");
    let mut kept: Vec<i64> = specs
        .iter()
        .map(|s| s.received_us)
        .filter(|&t| t >= CUT_US)
        .collect();
    kept.sort_unstable();
    let kept: Vec<String> = kept.iter().map(i64::to_string).collect();
    assert_eq!(frames, kept);
    let records: Vec<String> =
        db.rows("SELECT record_index FROM records WHERE record_index < 500 ORDER BY 1");
    assert_eq!(records, ["4", "6", "8", "9"].map(str::to_owned));
    // Records whose frame went keep their row, without the frame.
    assert_eq!(
        db.count("records WHERE frame IS NULL"),
        // Record 4 (frame at cut - 1 us) and the alarm records of the removed frames with
        // extras (1, 3, 4).
        4
    );
    assert_eq!(
        db.count("records WHERE frame IS NOT NULL AND frame NOT IN (SELECT id FROM raw_frames)"),
        0
    );
    for table in [
        "decode_errors",
        "current_states",
        "alarm_events",
        "ext_records",
    ] {
        assert_eq!(
            db.count(&format!(
                "{table} WHERE frame NOT IN (SELECT id FROM raw_frames)"
            )),
            0,
            "{table}"
        );
    }

    if db.is_postgres() {
        let mut dropped = report.dropped_partitions.clone();
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "raw_frames_y2023m08",
                "raw_frames_y2023m09",
                "records_y2023m08",
                "records_y2023m09"
            ]
            .map(str::to_owned)
        );
        for name in &dropped {
            assert_eq!(db.scalar(&format!("SELECT to_regclass('{name}')")), "NULL");
        }
        // The straddling and default partitions lost their older rows only.
        assert_eq!(db.count("raw_frames_default"), 1);
        assert_eq!(db.count("raw_frames_y2023m10"), 3);
        assert_eq!(db.count("records_y2023m10"), 1);
    } else {
        assert!(report.dropped_partitions.is_empty());
        assert!(db.rows("PRAGMA foreign_key_check").is_empty());
    }

    // Nothing is left to remove.
    let again = store.retention(&plan, false).unwrap();
    assert!(again.deleted.values().all(|&n| n == 0), "{again:?}");
    assert!(again.dropped_partitions.is_empty());
    // The store still commits into the months it dropped.
    let mut late = frame(99, IMEI, archives(3_000..3_001));
    late.received_at_us = 1_692_000_000_000_000; // August 2023
    let _ = store.commit(&[late]).unwrap();
    assert_eq!(db.count("raw_frames"), after["raw_frames"] + 1);
}

fn retention_without_cutoffs_removes_nothing(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&fixture_frames(&fixture())).unwrap();
    let before = store.table_counts().unwrap();
    for dry_run in [true, false] {
        let report = store.retention(&RetentionPlan::default(), dry_run).unwrap();
        assert_eq!(report, Default::default());
    }
    assert_eq!(store.table_counts().unwrap(), before);
}

fn a_restore_epoch_bump_makes_the_writer_resolve_ids_again(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&[frame(1, IMEI, archives(0..1))]).unwrap();
    assert_eq!(db.scalar("SELECT device FROM raw_frames"), "1");
    assert_eq!(db.scalar("SELECT layout FROM raw_frames"), "1");
    // A restore from another connection: other contents, where this store's cached ids name
    // other rows (device 1 is another IMEI now, layout 1 is gone), and the epoch moves.
    let mask = if db.is_postgres() {
        "'\\xfff00f0081'::bytea"
    } else {
        "x'fff00f0081'"
    };
    db.exec(&format!(
        "DELETE FROM records; DELETE FROM raw_frames; DELETE FROM layouts; DELETE FROM devices;
         INSERT INTO devices (id, imei, first_seen_us, last_seen_us) VALUES (1, 'other', 0, 0);
         INSERT INTO devices (id, imei, first_seen_us, last_seen_us) VALUES (7, '{IMEI}', 0, 0);
         INSERT INTO layouts (id, protocol_version, struct_version, data_size, mask)
             VALUES (5, 20, 20, 122, {mask});
         UPDATE svoi_state SET value = value + 1 WHERE name = 'restore_epoch';"
    ));
    let _ = store.commit(&[frame(2, IMEI, archives(1..2))]).unwrap();
    assert_eq!(
        db.rows("SELECT device, layout FROM raw_frames"),
        ["7|5".to_owned()]
    );
    assert_eq!(db.rows("SELECT device FROM records"), ["7".to_owned()]);
}

fn optimize_runs_every_step_and_finds_a_sound_database_sound(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&fixture_frames(&fixture())).unwrap();
    let report = store.optimize().unwrap();
    assert!(report.integrity_ok, "{report:?}");
    let steps: Vec<&str> = report.steps.iter().map(|(s, _)| s.as_str()).collect();
    if db.is_postgres() {
        assert_eq!(steps.len(), 12, "{steps:?}");
        assert!(steps.contains(&"VACUUM ANALYZE raw_frames"), "{steps:?}");
        // The session's statement timeout is back.
        let _ = store.commit(&[frame(50, IMEI, archives(50..51))]).unwrap();
    } else {
        assert_eq!(
            steps,
            [
                "optimize",
                "integrity_check",
                "incremental_vacuum",
                "wal_checkpoint"
            ]
        );
        assert_eq!(report.steps[1].1, "ok");
        assert!(report.steps[3].1.starts_with("truncated"), "{report:?}");
        // A new database vacuums incrementally: what retention deleted goes back to the
        // filesystem.
        for i in 0..40u32 {
            let first = 1_000 + i * 100;
            let _ = store
                .commit(&[frame(
                    100 + u64::from(i),
                    IMEI,
                    archives(first..first + 100),
                )])
                .unwrap();
        }
        let plan = RetentionPlan {
            raw_frames_before_us: Some(i64::MAX),
            records_before_s: Some(i64::MAX),
        };
        let removed = store.retention(&plan, false).unwrap();
        assert!(removed.deleted["records"] >= 4_000, "{removed:?}");
        let report = store.optimize().unwrap();
        let freed: i64 = report.steps[2]
            .1
            .strip_prefix("freed ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{report:?}"));
        assert!(freed > 10, "{report:?}");
    }
}

#[test]
fn optimize_reports_a_failed_integrity_check() {
    let db = Db::sqlite();
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&fixture_frames(&fixture())).unwrap();
    drop(store);
    // An index that no longer matches its table: what a torn write can leave behind.
    db.exec(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX records_frame ON records(fields)'
         WHERE name = 'records_frame';
         PRAGMA writable_schema = OFF;",
    );
    let mut store = db.open(Synchronous::Normal);
    let report = store.optimize().unwrap();
    assert!(!report.integrity_ok, "{report:?}");
    let (step, outcome) = &report.steps[1];
    assert_eq!(step, "integrity_check");
    assert!(outcome.starts_with("failed: "), "{outcome}");
    assert!(outcome.contains("records_frame"), "{outcome}");
}

fn db_stats_size_every_table_and_index(db: Db) {
    let mut store = db.open(Synchronous::Normal);
    let _ = store.commit(&fixture_frames(&fixture())).unwrap();
    let stats = store.db_stats().unwrap();
    assert!(stats.database_bytes > 0);
    let mut names: Vec<&str> = stats.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    let mut all = store
        .table_counts()
        .unwrap()
        .into_keys()
        .collect::<Vec<_>>();
    all.sort();
    assert_eq!(names, all);
    let records = stats.tables.iter().find(|t| t.name == "records").unwrap();
    assert_eq!(records.rows, store.table_counts().unwrap()["records"]);
    assert!(records.table_bytes.unwrap() > 0, "{records:?}");
    assert!(records.index_bytes.unwrap() > 0, "{records:?}");
    // Largest first.
    let size = |t: &svoi_store::TableSize| t.table_bytes.unwrap() + t.index_bytes.unwrap();
    assert!(stats.tables.windows(2).all(|w| size(&w[0]) >= size(&w[1])));
    let frame_index = stats
        .indexes
        .iter()
        .find(|i| i.name == "records_frame")
        .unwrap_or_else(|| panic!("{:?}", stats.indexes));
    assert_eq!(frame_index.table, "records");
    assert!(frame_index.bytes.unwrap() > 0);
    let slow = stats.slow_queries.unwrap_err();
    if db.is_postgres() {
        assert!(stats.server_version.starts_with("PostgreSQL "));
        assert!(frame_index.scans.is_some());
        assert!(slow.contains("not installed"), "{slow}");
        // Partitions are summed into their parent, not listed.
        assert!(stats.indexes.iter().all(|i| !i.table.contains("_y")));
    } else {
        assert!(stats.server_version.starts_with("sqlite 3."));
        assert_eq!(frame_index.scans, None);
    }
}

/// A partition a backup (`pg_dump`) is reading cannot be dropped without stalling every insert
/// behind the drop's lock: retention gives up on dropping it after a short wait and deletes
/// its rows instead, and removes exactly the same rows.
#[test]
fn postgres_retention_deletes_the_rows_of_a_partition_it_cannot_lock() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Normal);
    create_2023_partitions(&db);
    let specs = fixture();
    let _ = store.commit(&fixture_frames(&specs)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reader, connection) = rt
        .block_on(tokio_postgres::connect(&db.url(), tokio_postgres::NoTls))
        .unwrap();
    let driver = rt.spawn(connection);
    let lock = "BEGIN; LOCK TABLE raw_frames_y2023m08 IN ACCESS SHARE MODE";
    rt.block_on(reader.batch_execute(lock)).unwrap();
    let started = std::time::Instant::now();
    let plan = RetentionPlan {
        raw_frames_before_us: Some(CUT_US),
        records_before_s: Some(CUT),
    };
    // The lock is held by the server for the open transaction, whether or not this thread
    // drives the connection meanwhile.
    let report = store.retention(&plan, false).unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    rt.block_on(reader.batch_execute("COMMIT")).unwrap();
    drop(reader);
    let _ = rt.block_on(driver);

    assert_eq!(report.deleted, expected_removal(&specs));
    let mut dropped = report.dropped_partitions.clone();
    dropped.sort();
    assert_eq!(
        dropped,
        [
            "raw_frames_y2023m09",
            "records_y2023m08",
            "records_y2023m09"
        ]
        .map(str::to_owned)
    );
    assert_eq!(db.count("raw_frames_y2023m08"), 0);
    assert_eq!(
        db.count("raw_frames WHERE received_at_us < 1697328000000000"),
        0
    );
}
