//! Integration tests of the store through its public API: opening and migrations, batch
//! commits and their receipts, deduplication, where each record kind goes, all-or-nothing
//! failure, durability, the `v_records` view, read queries and reprocessing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use svoi_store::{
    DbUrl, DeviceUpdate, FrameFilter, FrameStatus, RecordKey, ReprocessStats, Store, StoreError,
    StoreOptions, Synchronous, TableCounts, latest_schema_version,
};

// ---------------------------------------------------------------------------------------------
// Opening and migrations.
// ---------------------------------------------------------------------------------------------

#[test]
fn open_creates_the_directory_and_applies_migrations_and_reopening_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/svoi.db");
    let url: DbUrl = format!("sqlite:{}", path.display()).parse().unwrap();
    let store = Store::open(&url, &StoreOptions::default()).unwrap();
    assert!(path.exists());
    assert_eq!(store.path(), path);
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
    assert_eq!(store.counts().unwrap(), TableCounts::default());
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let applied: Vec<(u32, String)> = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(applied.len(), latest_schema_version() as usize);
    assert_eq!(applied[0].0, 1);
    assert_eq!(
        applied[0].1.len(),
        "2024-01-01T00:00:00Z".len(),
        "{applied:?}"
    );

    let store = Store::open(&url, &StoreOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
    let again: Vec<(u32, String)> = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(again, applied);
}

#[test]
fn open_refuses_a_newer_schema() {
    let (dir, store) = temp_store(Synchronous::Off);
    drop(store);
    raw(&dir)
        .execute(
            "INSERT INTO schema_migrations VALUES (?1, '2999-01-01T00:00:00Z')",
            [latest_schema_version() + 1],
        )
        .unwrap();
    match Store::open(&url(&dir), &StoreOptions::default()) {
        Err(e @ StoreError::SchemaTooNew { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("newer than this build"), "{msg}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn open_reports_a_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let url = DbUrl::Sqlite(dir.path().join("file/sub/svoi.db"));
    match Store::open(&url, &StoreOptions::default()) {
        Err(e @ StoreError::Io { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("cannot create database directory"),
                "{e}"
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn open_rejects_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svoi.db"), vec![b'x'; 4096]).unwrap();
    let err = Store::open(&url(&dir), &StoreOptions::default()).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Commit.
// ---------------------------------------------------------------------------------------------

#[test]
fn commit_stores_frames_and_records_and_the_receipt_covers_exactly_the_seqs() {
    let (_dir, mut store) = temp_store(Synchronous::Full);
    let frames = vec![
        frame(12, IMEI, archives(0..3)),
        frame(10, IMEI, archives(3..5)),
        frame(11, "352093089999999", archives(0..2)),
    ];
    let receipt = store.commit(&frames).unwrap();
    assert_eq!(receipt.batch(), 1);
    assert_eq!(receipt.seqs(), &[10, 11, 12]);
    for seq in [10, 11, 12] {
        assert!(receipt.covers(seq));
    }
    for seq in [0, 9, 13] {
        assert!(!receipt.covers(seq));
    }
    let stats = receipt.stats();
    assert_eq!(stats.frames, 3);
    assert_eq!(stats.records, 7);
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.decode_errors, 0);
    let counts = store.counts().unwrap();
    assert_eq!(
        counts,
        TableCounts {
            devices: 2,
            raw_frames: 3,
            records: 7,
            ..TableCounts::default()
        }
    );

    let second = store.commit(&[frame(13, IMEI, archives(5..6))]).unwrap();
    assert_eq!(second.batch(), 2);
    assert_eq!(second.seqs(), &[13]);
    assert!(!second.covers(10));
}

#[test]
fn commit_archives_the_frame_as_received() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut f = frame(1, IMEI, archives(0..1));
    f.bytes = vec![0, 1, 2, 0xff, 0x7e];
    f.conn_id = 42;
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    let (conn_id, at, kind, status, bytes, layout): (i64, i64, String, String, Vec<u8>, i64) =
        raw(&dir)
            .query_row(
                "SELECT conn_id, received_at_us, kind, status, bytes, layout FROM raw_frames",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
    assert_eq!(conn_id, 42);
    assert_eq!(at, f.received_at_us);
    assert_eq!(kind, "~A");
    assert_eq!(status, "ok");
    assert_eq!(bytes, f.bytes);
    let mask: Vec<u8> = raw(&dir)
        .query_row("SELECT mask FROM layouts WHERE id = ?1", [layout], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mask, layout_mask());
}

fn layout_mask() -> Vec<u8> {
    common::layout().mask.clone()
}

#[test]
fn resending_the_same_records_counts_duplicates_and_adds_no_rows() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let first = store.commit(&[frame(1, IMEI, archives(0..5))]).unwrap();
    assert_eq!((first.stats().records, first.stats().duplicates), (5, 0));
    let views = count(&raw(&dir), "v_records");
    assert_eq!(views, 5);

    let resend = store.commit(&[frame(2, IMEI, archives(0..6))]).unwrap();
    assert_eq!(resend.stats().records, 1);
    assert_eq!(resend.stats().duplicates, 5);
    assert!(resend.covers(2));

    let again = store.commit(&[frame(3, IMEI, archives(0..6))]).unwrap();
    assert_eq!((again.stats().records, again.stats().duplicates), (0, 6));
    let counts = store.counts().unwrap();
    assert_eq!(counts.records, 6);
    assert_eq!(counts.raw_frames, 3, "every received frame is archived");
    assert_eq!(count(&raw(&dir), "v_records"), 6);

    // The stored copy is the first one: it points at the frame that first carried it.
    let frame_of_0: i64 = raw(&dir)
        .query_row(
            "SELECT frame FROM records WHERE record_index = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let first_frame: i64 = raw(&dir)
        .query_row("SELECT min(id) FROM raw_frames", [], |r| r.get(0))
        .unwrap();
    assert_eq!(frame_of_0, first_frame);
}

#[test]
fn duplicates_within_one_batch_are_counted() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let receipt = store
        .commit(&[
            frame(1, IMEI, archives(0..3)),
            frame(2, IMEI, archives(2..4)),
        ])
        .unwrap();
    assert_eq!(receipt.stats().records, 4);
    assert_eq!(receipt.stats().duplicates, 1);
}

#[test]
fn the_same_key_on_another_device_is_not_a_duplicate() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let receipt = store
        .commit(&[
            frame(1, IMEI, archives(0..3)),
            frame(2, "352093080000001", archives(0..3)),
        ])
        .unwrap();
    assert_eq!(receipt.stats().records, 6);
    assert_eq!(store.counts().unwrap().records, 6);
}

#[test]
fn records_without_index_or_time_cannot_be_deduplicated_and_are_stored_each_time() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let rows = || {
        vec![
            archive(record_at(None, Some(T0))),
            archive(record_at(Some(1), None)),
        ]
    };
    let a = store.commit(&[frame(1, IMEI, rows())]).unwrap();
    let b = store.commit(&[frame(2, IMEI, rows())]).unwrap();
    assert_eq!(a.stats().records, 2);
    assert_eq!(b.stats().records, 2);
    assert_eq!(store.counts().unwrap().records, 4);
}

#[test]
fn a_record_without_a_fix_is_stored() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut row = record(1);
    row.valid = Some(false);
    row.latitude = None;
    row.longitude = Some(f64::NAN);
    row.fix_time = None;
    let receipt = store.commit(&[frame(1, IMEI, vec![archive(row)])]).unwrap();
    assert_eq!(receipt.stats().records, 1);
    let (valid, lat, lon): (i64, Option<f64>, Option<f64>) = raw(&dir)
        .query_row("SELECT valid, latitude, longitude FROM records", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((valid, lat, lon), (0, None, None));
}

#[test]
fn an_alarm_goes_to_records_and_alarm_events() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut f = frame(1, IMEI, vec![alarm(77, record(5))]);
    f.kind = Arc::from("~T");
    let receipt = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!(receipt.stats().records, 1);
    assert_eq!(receipt.stats().alarms, 1);
    let conn = raw(&dir);
    let source: String = conn
        .query_row("SELECT source FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(source, "alarm");
    let (event_index, record_index, event_time): (i64, i64, i64) = conn
        .query_row(
            "SELECT event_index, record_index, event_time FROM alarm_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((event_index, record_index, event_time), (77, 5, T0 + 5));

    f.seq = 2;
    let resend = store.commit(&[f]).unwrap();
    assert_eq!(resend.stats().duplicates, 1);
    assert_eq!(resend.stats().alarms, 0);
    let counts = store.counts().unwrap();
    assert_eq!((counts.records, counts.alarm_events), (1, 1));
}

#[test]
fn a_current_state_goes_to_current_states_only_and_is_never_deduplicated() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let mut f = frame(1, IMEI, vec![current(record(3))]);
    f.kind = Arc::from("~C");
    let a = store.commit(std::slice::from_ref(&f)).unwrap();
    let b = store.commit(&[f]).unwrap();
    assert_eq!((a.stats().current, b.stats().current), (1, 1));
    assert_eq!(a.stats().records + b.stats().records, 0);
    let counts = store.counts().unwrap();
    assert_eq!(counts.current_states, 2);
    assert_eq!(counts.records, 0);
    assert_eq!(counts.alarm_events, 0);
}

#[test]
fn ext_records_are_deduplicated_by_key() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let mut f = frame(1, IMEI, Vec::new());
    f.kind = Arc::from("~E");
    f.ext_records = vec![ext(record(1)), ext(record(2))];
    let a = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!((a.stats().ext_records, a.stats().duplicates), (2, 0));
    let b = store.commit(&[f]).unwrap();
    assert_eq!((b.stats().ext_records, b.stats().duplicates), (0, 2));
    assert_eq!(store.counts().unwrap().ext_records, 2);
}

#[test]
fn error_and_garbage_frames_get_decode_error_rows() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut bad = frame(1, IMEI, Vec::new());
    bad.status = FrameStatus::Error;
    bad.error_reason = Some("crc");
    bad.error = Some("bad flex crc8: expected 0x12, got 0x34".to_owned());
    let mut garbage = frame(2, IMEI, Vec::new());
    garbage.imei = None;
    garbage.kind = Arc::from("garbage");
    garbage.status = FrameStatus::Garbage;
    garbage.error_reason = Some("sync_lost");
    garbage.layout = None;
    let receipt = store.commit(&[bad, garbage]).unwrap();
    assert_eq!(receipt.stats().decode_errors, 2);
    let rows: Vec<(Option<i64>, String, Option<String>, String)> = raw(&dir)
        .prepare(
            "SELECT e.device, e.reason, e.error, f.status FROM decode_errors e
             JOIN raw_frames f ON f.id = e.frame ORDER BY e.id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].0.is_some());
    assert_eq!(rows[0].1, "crc");
    assert_eq!(
        rows[0].2.as_deref(),
        Some("bad flex crc8: expected 0x12, got 0x34")
    );
    assert_eq!(rows[0].3, "error");
    assert_eq!(rows[1].0, None);
    assert_eq!(rows[1].1, "sync_lost");
    assert_eq!(rows[1].3, "garbage");
}

#[test]
fn a_batch_with_an_invalid_frame_stores_nothing_and_returns_no_receipt() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let mut orphan = frame(2, IMEI, archives(10..12));
    orphan.imei = None;
    let result = store.commit(&[frame(1, IMEI, archives(0..3)), orphan]);
    match result {
        Err(e @ StoreError::Invalid(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("seq 2") && msg.contains("no imei"), "{msg}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(store.counts().unwrap(), TableCounts::default());
    // No receipt was issued, so the next commit is batch 1.
    let receipt = store.commit(&[frame(3, IMEI, archives(0..1))]).unwrap();
    assert_eq!(receipt.batch(), 1);
}

#[test]
fn an_invalid_batch_is_refused_before_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        &url(&dir),
        &StoreOptions {
            synchronous: Synchronous::Off,
            busy_timeout: Duration::from_millis(10),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // Another writer holds the lock: a batch that reached the database would fail busy.
    let other = raw(&dir);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut orphan = frame(1, IMEI, archives(0..1));
    orphan.imei = None;
    let err = store.commit(&[orphan]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let mut nameless = frame(2, IMEI, Vec::new());
    nameless.imei = None;
    nameless.device = Some(DeviceUpdate {
        device_id: 1,
        layout: None,
        fields: None,
    });
    let err = store.commit(&[nameless]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let mut wide = frame(3, IMEI, Vec::new());
    wide.conn_id = u64::MAX;
    let err = store.commit(&[wide]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_failure_in_the_middle_of_a_batch_rolls_everything_back() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let conn = raw(&dir);
    conn.execute_batch(
        "CREATE TRIGGER fail_on_seq_2 BEFORE INSERT ON records WHEN NEW.record_index = 11
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .unwrap();
    let mut update = frame(1, IMEI, archives(0..3));
    update.device = Some(DeviceUpdate {
        device_id: 99,
        layout: Some(common::layout()),
        fields: Some(vec![1, 2, 3]),
    });
    let batch = vec![update, frame(2, "352093080000002", archives(10..12))];
    let err = store.commit(&batch).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.counts().unwrap(), TableCounts::default());
    assert_eq!(count(&conn, "layouts"), 0);

    // Device and layout ids from the rolled-back transaction must not be reused.
    conn.execute_batch("DROP TRIGGER fail_on_seq_2").unwrap();
    let receipt = store.commit(&batch).unwrap();
    assert_eq!(receipt.stats().records, 5);
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM records r LEFT JOIN devices d ON d.id = r.device
             WHERE d.id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let fk_violations = conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |_| Ok(()))
        .unwrap()
        .count();
    assert_eq!(fk_violations, 0);
}

#[test]
fn a_locked_database_is_a_retryable_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        &url(&dir),
        &StoreOptions {
            synchronous: Synchronous::Off,
            busy_timeout: Duration::from_millis(20),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let other = raw(&dir);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.commit(&[frame(1, IMEI, archives(0..2))]).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
    let receipt = store.commit(&[frame(1, IMEI, archives(0..2))]).unwrap();
    assert_eq!(receipt.stats().records, 2);
}

#[test]
fn device_facts_are_stored() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut handshake = frame(1, IMEI, Vec::new());
    handshake.kind = Arc::from("*>S");
    handshake.layout = None;
    handshake.device = Some(DeviceUpdate {
        device_id: 4242,
        layout: None,
        fields: None,
    });
    let mut negotiation = frame(2, IMEI, Vec::new());
    negotiation.kind = Arc::from("*>FLEX");
    negotiation.device = Some(DeviceUpdate {
        device_id: 4242,
        layout: Some(common::layout()),
        fields: Some(vec![1, 2, 3, 8, 9]),
    });
    let data = frame(3, IMEI, archives(0..1));
    let negotiated_at = negotiation.received_at_us;
    let _ = store
        .commit(&[handshake.clone(), negotiation, data.clone()])
        .unwrap();
    type Row = (i64, i64, i64, i64, i64, i64, Vec<u8>, String, i64);
    let row: Row = raw(&dir)
        .query_row(
            "SELECT device_id, first_seen_us, last_seen_us, protocol_version, struct_version,
                    data_size, mask, fields, negotiated_at_us FROM devices",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, 4242);
    assert_eq!(row.1, handshake.received_at_us);
    assert_eq!(row.2, data.received_at_us);
    assert_eq!((row.3, row.4, row.5), (20, 20, 122));
    assert_eq!(row.6, layout_mask());
    assert_eq!(row.7, "[1,2,3,8,9]");
    assert_eq!(row.8, negotiated_at);

    // last_seen only moves forward.
    let mut late = frame(4, IMEI, Vec::new());
    late.received_at_us = 5;
    let _ = store.commit(&[late]).unwrap();
    let last_seen: i64 = raw(&dir)
        .query_row("SELECT last_seen_us FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(last_seen, data.received_at_us);
    assert_eq!(count(&raw(&dir), "layouts"), 1);
}

#[test]
fn committed_data_survives_dropping_the_store() {
    let (dir, mut store) = temp_store(Synchronous::Full);
    let _ = store
        .commit(&[
            frame(1, IMEI, archives(0..10)),
            frame(2, IMEI, archives(5..20)),
        ])
        .unwrap();
    drop(store);
    let conn = raw(&dir);
    assert_eq!(count(&conn, "records"), 20);
    assert_eq!(count(&conn, "raw_frames"), 2);
    assert_eq!(count(&conn, "v_records"), 20);
    drop(conn);
    let mut store = open(&dir, Synchronous::Full);
    assert_eq!(store.counts().unwrap().records, 20);
    let receipt = store.commit(&[frame(3, IMEI, archives(0..20))]).unwrap();
    assert_eq!(
        receipt.stats().duplicates,
        20,
        "dedup works across restarts"
    );
}

#[test]
fn insert_records_direct_inserts_and_skips_duplicates() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let rows: Vec<_> = (0..50).map(record).collect();
    assert_eq!(store.insert_records_direct(IMEI, &rows).unwrap(), 50);
    assert_eq!(store.insert_records_direct(IMEI, &rows).unwrap(), 0);
    assert_eq!(store.insert_records_direct(IMEI, &rows[..0]).unwrap(), 0);
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.records, counts.raw_frames, counts.devices),
        (50, 0, 1)
    );
    // The same table and key as commit.
    let receipt = store.commit(&[frame(1, IMEI, archives(45..55))]).unwrap();
    assert_eq!(
        (receipt.stats().records, receipt.stats().duplicates),
        (5, 5)
    );
    assert!(matches!(
        store.insert_records_direct("", &rows),
        Err(StoreError::Invalid(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// The v_records view.
// ---------------------------------------------------------------------------------------------

#[test]
fn v_records_has_the_documented_columns_and_rfc3339_times() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    let mut no_fix = record_at(Some(2), Some(86_400));
    no_fix.fix_time = None;
    let _ = store
        .commit(&[frame(1, IMEI, vec![archive(record(1)), archive(no_fix)])])
        .unwrap();
    let conn = raw(&dir);
    let mut stmt = conn
        .prepare("SELECT * FROM v_records ORDER BY record_index")
        .unwrap();
    let names: Vec<&str> = stmt.column_names();
    assert_eq!(
        names,
        [
            "imei",
            "record_index",
            "event_time",
            "fix_time",
            "latitude",
            "longitude",
            "speed_kmh"
        ]
    );
    type Row = (String, i64, String, Option<String>, f64, f64, f64);
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    // T0 + 1 = 1_700_000_001 s.
    assert_eq!(rows[0].0, IMEI);
    assert_eq!(rows[0].1, 1);
    assert_eq!(rows[0].2, "2023-11-14T22:13:21Z");
    assert_eq!(rows[0].3.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(rows[0].4, record(1).latitude.unwrap());
    assert_eq!(rows[0].6, 42.5);
    assert_eq!(rows[1].2, "1970-01-02T00:00:00Z");
    assert_eq!(rows[1].3, None);
    // Raw integer seconds stay in the table.
    let raw_time: i64 = conn
        .query_row(
            "SELECT event_time FROM records WHERE record_index = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(raw_time, T0 + 1);
}

// ---------------------------------------------------------------------------------------------
// Read queries.
// ---------------------------------------------------------------------------------------------

#[test]
fn record_keys_are_ordered_and_filtered_by_imei() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let other = "111111111111111";
    let _ = store
        .commit(&[
            frame(1, IMEI, vec![archive(record(5)), archive(record(2))]),
            frame(2, other, archives(7..8)),
        ])
        .unwrap();
    let key = |imei: &str, i: u32| RecordKey {
        imei: imei.to_owned(),
        record_index: Some(i),
        event_time: Some(T0 + i64::from(i)),
    };
    assert_eq!(
        store.record_keys(None).unwrap(),
        vec![key(other, 7), key(IMEI, 2), key(IMEI, 5)]
    );
    assert_eq!(
        store.record_keys(Some(IMEI)).unwrap(),
        vec![key(IMEI, 2), key(IMEI, 5)]
    );
    assert!(store.record_keys(Some("nobody")).unwrap().is_empty());
}

#[test]
fn frames_for_reprocess_filters_by_window_and_imei_and_pages_by_id() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let other = "111111111111111";
    let mut hello = frame(0, IMEI, Vec::new());
    hello.device = Some(DeviceUpdate {
        device_id: 31,
        layout: None,
        fields: None,
    });
    let mut frames = vec![hello];
    for seq in 1..=6 {
        let imei = if seq % 2 == 0 { other } else { IMEI };
        let mut f = frame(seq, imei, Vec::new());
        f.received_at_us = 1_000 * i64::try_from(seq).unwrap();
        frames.push(f);
    }
    let _ = store.commit(&frames).unwrap();
    let all = FrameFilter {
        since_us: 0,
        until_us: None,
        imei: None,
    };
    let got = store.frames_for_reprocess(&all, 0, 100).unwrap();
    assert_eq!(got.len(), 7);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    let first = &got[1];
    assert_eq!(first.conn_id, 7);
    assert_eq!(first.imei.as_deref(), Some(IMEI));
    assert_eq!(first.kind, "~A");
    assert_eq!(first.status, FrameStatus::Ok);
    assert_eq!(first.bytes, frames[1].bytes);
    assert_eq!(first.layout.as_ref(), Some(&*common::layout()));
    assert_eq!(first.device_id, Some(31));
    assert_eq!(got[2].device_id, None);

    // Window: [2000, 5000) holds seqs 2, 3, 4.
    let window = FrameFilter {
        since_us: 2_000,
        until_us: Some(5_000),
        imei: None,
    };
    let times: Vec<i64> = store
        .frames_for_reprocess(&window, 0, 100)
        .unwrap()
        .iter()
        .map(|f| f.received_at_us)
        .collect();
    assert_eq!(times, [2_000, 3_000, 4_000]);

    // Paging: two at a time, continuing after the last id.
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = store.frames_for_reprocess(&window, after, 2).unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        pages.push(page.len());
    }
    assert_eq!(pages, [2, 1]);

    let by_imei = FrameFilter {
        since_us: 1,
        until_us: None,
        imei: Some(other.to_owned()),
    };
    let times: Vec<i64> = store
        .frames_for_reprocess(&by_imei, 0, 100)
        .unwrap()
        .iter()
        .map(|f| f.received_at_us)
        .collect();
    assert_eq!(times, [2_000, 4_000, 6_000]);
}

// ---------------------------------------------------------------------------------------------
// Reprocess.
// ---------------------------------------------------------------------------------------------

/// The raw frame ids in insertion order.
fn frame_ids(store: &Store) -> Vec<i64> {
    let all = FrameFilter {
        since_us: i64::MIN,
        until_us: None,
        imei: None,
    };
    store
        .frames_for_reprocess(&all, 0, 1_000)
        .unwrap_or_else(|e| panic!("frames: {e}"))
        .iter()
        .map(|f| f.id)
        .collect()
}

#[test]
fn reprocess_diffs_records_by_key_and_is_idempotent() {
    let (dir, mut store) = temp_store(Synchronous::Off);
    // Frame A holds 0..4; frame B holds 10 and resent 3 (a duplicate, owned by A).
    let _ = store
        .commit(&[
            frame(1, IMEI, archives(0..4)),
            frame(2, IMEI, vec![archive(record(10)), archive(record(3))]),
        ])
        .unwrap();
    let ids = frame_ids(&store);
    let id_of_1: i64 = raw(&dir)
        .query_row("SELECT id FROM records WHERE record_index = 1", [], |r| {
            r.get(0)
        })
        .unwrap();

    // New decode of A: 0 unchanged, 1 changed, 2 gone, 3 unchanged, 4 new, 10 new but held by B.
    let mut changed = record(1);
    changed.speed_kmh = Some(99.0);
    changed.fields_json = r#"{"fixed":true}"#.to_owned();
    let new_a = frame(
        1,
        IMEI,
        vec![
            archive(record(0)),
            archive(changed),
            archive(record(3)),
            archive(record(4)),
            archive(record(10)),
        ],
    );
    let stats = store.reprocess(&[(ids[0], new_a.clone())]).unwrap();
    assert_eq!(
        stats,
        ReprocessStats {
            frames: 1,
            status_changed: 0,
            records_added: 1,
            records_changed: 1,
            records_removed: 1,
            records_unchanged: 2,
            duplicates: 1,
        }
    );
    let keys: Vec<Option<u32>> = store
        .record_keys(Some(IMEI))
        .unwrap()
        .into_iter()
        .map(|k| k.record_index)
        .collect();
    assert_eq!(keys, [Some(0), Some(1), Some(3), Some(4), Some(10)]);
    let (id, speed, fields): (i64, f64, String) = raw(&dir)
        .query_row(
            "SELECT id, speed_kmh, fields FROM records WHERE record_index = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(id, id_of_1, "a changed record keeps its id");
    assert_eq!(speed, 99.0);
    assert_eq!(fields, r#"{"fixed":true}"#);

    // The same decode again changes nothing.
    let again = store.reprocess(&[(ids[0], new_a)]).unwrap();
    assert_eq!(again.records_added, 0);
    assert_eq!(again.records_changed, 0);
    assert_eq!(again.records_removed, 0);
    assert_eq!(again.records_unchanged, 4);
    assert_eq!(again.duplicates, 1);

    // Reprocessing every frame with the original decoder twice: second pass is a no-op.
    let originals = [
        (ids[0], frame(1, IMEI, archives(0..4))),
        (
            ids[1],
            frame(2, IMEI, vec![archive(record(10)), archive(record(3))]),
        ),
    ];
    let first = store.reprocess(&originals).unwrap();
    assert_eq!(first.frames, 2);
    assert!(first.records_changed + first.records_added + first.records_removed > 0);
    let second = store.reprocess(&originals).unwrap();
    assert_eq!(
        (
            second.records_added,
            second.records_changed,
            second.records_removed
        ),
        (0, 0, 0)
    );
    assert_eq!(second.records_unchanged, 5);
    assert_eq!(store.counts().unwrap().records, 5);
}

#[test]
fn reprocess_turns_an_error_frame_into_records_and_back() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let mut bad = frame(1, IMEI, Vec::new());
    bad.status = FrameStatus::Error;
    bad.error_reason = Some("unknown_field");
    bad.error = Some("field 200 is not in the dictionary".to_owned());
    let _ = store.commit(&[bad.clone()]).unwrap();
    let id = frame_ids(&store)[0];
    assert_eq!(store.counts().unwrap().decode_errors, 1);

    let mut fixed = frame(1, IMEI, archives(0..3));
    fixed.ext_records = vec![ext(record(0))];
    let stats = store.reprocess(&[(id, fixed.clone())]).unwrap();
    assert_eq!(stats.status_changed, 1);
    assert_eq!(stats.records_added, 4);
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.decode_errors, counts.records, counts.ext_records),
        (0, 3, 1)
    );
    let stored = &store
        .frames_for_reprocess(&FrameFilter::default(), 0, 10)
        .unwrap()[0];
    assert_eq!(stored.status, FrameStatus::Ok);
    assert_eq!(stored.error, None);

    let again = store.reprocess(&[(id, fixed)]).unwrap();
    assert_eq!(again.status_changed, 0);
    assert_eq!(again.records_unchanged, 4);

    let back = store.reprocess(&[(id, bad)]).unwrap();
    assert_eq!(back.status_changed, 1);
    assert_eq!(back.records_removed, 4);
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.decode_errors, counts.records, counts.ext_records),
        (1, 0, 0)
    );
}

#[test]
fn reprocess_replaces_alarm_events_and_current_states() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let f = frame(1, IMEI, vec![alarm(5, record(1)), current(record(2))]);
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    let id = frame_ids(&store)[0];
    for _ in 0..2 {
        let stats = store.reprocess(&[(id, f.clone())]).unwrap();
        assert_eq!(stats.records_unchanged, 1);
        let counts = store.counts().unwrap();
        assert_eq!((counts.alarm_events, counts.current_states), (1, 1));
    }
    let stats = store
        .reprocess(&[(id, frame(1, IMEI, archives(1..2)))])
        .unwrap();
    assert_eq!(stats.records_changed, 1, "source alarm -> archive");
    let counts = store.counts().unwrap();
    assert_eq!((counts.alarm_events, counts.current_states), (0, 0));
}

#[test]
fn reprocess_of_an_unknown_frame_or_foreign_imei_changes_nothing() {
    let (_dir, mut store) = temp_store(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..2))]).unwrap();
    let id = frame_ids(&store)[0];
    let before = store.counts().unwrap();
    let err = store
        .reprocess(&[
            (id, frame(1, IMEI, Vec::new())),
            (id + 100, frame(1, IMEI, Vec::new())),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(store.counts().unwrap(), before, "first update rolled back");
    let err = store
        .reprocess(&[(id, frame(1, "999999999999999", Vec::new()))])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.counts().unwrap(), before);
}
