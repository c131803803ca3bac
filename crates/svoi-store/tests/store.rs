//! Integration tests of the store through its public API: opening and migrations, batch
//! commits and their receipts, deduplication, where each record kind goes, all-or-nothing
//! failure, durability, the `v_records` view, read queries, reprocessing and tokens.
//!
//! Every test that is not about SQLite itself runs on both backends (`sqlite::name` and
//! `postgres::name`, see [`backends!`]); the SQLite-only ones (files, directories, locks) are
//! plain tests, and the PostgreSQL-only ones live in `tests/postgres.rs`.

// The test bodies are plain functions run by `backends!` or threads, outside `#[test]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use svoi_store::{
    DbUrl, DeviceUpdate, FrameFilter, FrameStatus, RecordKey, ReprocessStats, Store, StoreError,
    StoreOptions, Synchronous, TableCounts, latest_schema_version,
};
use svoi_testpg::backends;

backends!(
    open_applies_migrations_and_reopening_is_a_no_op,
    open_refuses_a_newer_schema,
    commit_stores_frames_and_records_and_the_receipt_covers_exactly_the_seqs,
    commit_archives_the_frame_as_received,
    resending_the_same_records_counts_duplicates_and_adds_no_rows,
    duplicates_within_one_batch_are_counted,
    the_same_key_on_another_device_is_not_a_duplicate,
    records_without_index_or_time_cannot_be_deduplicated_and_are_stored_each_time,
    a_record_without_a_fix_is_stored,
    an_alarm_goes_to_records_and_alarm_events,
    a_current_state_goes_to_current_states_only_and_is_never_deduplicated,
    ext_records_are_deduplicated_by_key,
    error_and_garbage_frames_get_decode_error_rows,
    a_batch_with_an_invalid_frame_stores_nothing_and_returns_no_receipt,
    a_failure_in_the_middle_of_a_batch_rolls_everything_back,
    device_facts_are_stored,
    committed_data_survives_dropping_the_store,
    insert_records_direct_inserts_into_the_deduplicated_table,
    v_records_has_the_documented_columns_and_rfc3339_times,
    record_keys_are_ordered_unknown_values_first_and_filtered_by_imei,
    frames_for_reprocess_filters_by_window_and_imei_and_pages_by_id,
    reprocess_diffs_records_by_key_and_is_idempotent,
    reprocess_matches_records_with_unknown_keys,
    reprocess_moves_a_record_to_another_month,
    reprocess_updates_changed_ext_records_in_place,
    reprocess_turns_an_error_frame_into_records_and_back,
    reprocess_replaces_alarm_events_and_current_states,
    reprocess_of_an_unknown_frame_or_foreign_imei_changes_nothing,
);

// ---------------------------------------------------------------------------------------------
// Opening and migrations.
// ---------------------------------------------------------------------------------------------

#[test]
fn open_creates_the_sqlite_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/svoi.db");
    let url: DbUrl = format!("sqlite:{}", path.display()).parse().unwrap();
    let mut store = Store::open(&url, &StoreOptions::default()).unwrap();
    assert!(path.exists());
    assert_eq!(store.path(), Some(path.as_path()));
    assert_eq!(store.url(), url);
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
}

const MIGRATIONS: &str =
    "SELECT version, CAST(applied_at AS text) FROM schema_migrations ORDER BY version";

fn open_applies_migrations_and_reopening_is_a_no_op(db: Db) {
    let mut store = db.open(Synchronous::Off);
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
    assert_eq!(store.counts().unwrap(), TableCounts::default());
    if db.is_postgres() {
        assert_eq!(store.path(), None);
    }
    drop(store);

    let applied = db.rows(MIGRATIONS);
    assert_eq!(
        applied.len(),
        latest_schema_version() as usize,
        "{applied:?}"
    );
    for (row, version) in applied.iter().zip(1..) {
        assert!(row.starts_with(&format!("{version}|20")), "{applied:?}");
    }

    let mut store = db.open(Synchronous::Off);
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
    assert_eq!(db.rows(MIGRATIONS), applied);
}

fn open_refuses_a_newer_schema(db: Db) {
    drop(db.open(Synchronous::Off));
    db.exec(&format!(
        "INSERT INTO schema_migrations (version, applied_at)
         VALUES ({}, '2999-01-01T00:00:00Z')",
        latest_schema_version() + 1
    ));
    match Store::open(&db.store_url(), &StoreOptions::default()) {
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

fn commit_stores_frames_and_records_and_the_receipt_covers_exactly_the_seqs(db: Db) {
    let mut store = db.open(Synchronous::Full);
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
    assert_eq!(db.count("records"), 7);

    let second = store.commit(&[frame(13, IMEI, archives(5..6))]).unwrap();
    assert_eq!(second.batch(), 2);
    assert_eq!(second.seqs(), &[13]);
    assert!(!second.covers(10));
}

fn commit_archives_the_frame_as_received(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut f = frame(1, IMEI, archives(0..1));
    f.bytes = vec![0, 1, 2, 0xff, 0x7e];
    f.conn_id = 42;
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    let rows = db.rows(&format!(
        "SELECT f.conn_id, f.received_at_us, f.kind, f.status, {}, l.protocol_version,
                l.struct_version, l.data_size, {}
         FROM raw_frames f JOIN layouts l ON l.id = f.layout",
        db.hex("f.bytes"),
        db.hex("l.mask")
    ));
    assert_eq!(
        rows,
        [format!(
            "42|{}|~A|ok|000102ff7e|20|20|122|fff00f0081",
            f.received_at_us
        )]
    );
}

fn resending_the_same_records_counts_duplicates_and_adds_no_rows(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let first = store.commit(&[frame(1, IMEI, archives(0..5))]).unwrap();
    assert_eq!((first.stats().records, first.stats().duplicates), (5, 0));
    assert_eq!(db.count("v_records"), 5);

    let resend = store.commit(&[frame(2, IMEI, archives(0..6))]).unwrap();
    assert_eq!(resend.stats().records, 1);
    assert_eq!(resend.stats().duplicates, 5);
    assert!(resend.covers(2));

    let again = store.commit(&[frame(3, IMEI, archives(0..6))]).unwrap();
    assert_eq!((again.stats().records, again.stats().duplicates), (0, 6));
    let counts = store.counts().unwrap();
    assert_eq!(counts.records, 6);
    assert_eq!(counts.raw_frames, 3, "every received frame is archived");
    assert_eq!(db.count("v_records"), 6);

    // The stored copy is the first one: it points at the frame that first carried it.
    assert_eq!(
        db.scalar("SELECT frame FROM records WHERE record_index = 0"),
        db.scalar("SELECT min(id) FROM raw_frames")
    );
}

fn duplicates_within_one_batch_are_counted(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let receipt = store
        .commit(&[
            frame(1, IMEI, archives(0..3)),
            frame(2, IMEI, archives(2..4)),
        ])
        .unwrap();
    assert_eq!(receipt.stats().records, 4);
    assert_eq!(receipt.stats().duplicates, 1);
    assert_eq!(db.count("records"), 4);
}

fn the_same_key_on_another_device_is_not_a_duplicate(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let receipt = store
        .commit(&[
            frame(1, IMEI, archives(0..3)),
            frame(2, "352093080000001", archives(0..3)),
        ])
        .unwrap();
    assert_eq!(receipt.stats().records, 6);
    assert_eq!(store.counts().unwrap().records, 6);
}

fn records_without_index_or_time_cannot_be_deduplicated_and_are_stored_each_time(db: Db) {
    let mut store = db.open(Synchronous::Off);
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

fn a_record_without_a_fix_is_stored(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut row = record(1);
    row.valid = Some(false);
    row.latitude = None;
    row.longitude = Some(f64::NAN);
    row.fix_time = None;
    let f = frame(1, IMEI, vec![archive(row)]);
    let receipt = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!(receipt.stats().records, 1);
    // A NaN is stored as no value, as SQLite stores it.
    assert_eq!(
        db.rows(
            "SELECT CASE WHEN valid THEN 'yes' ELSE 'no' END,
                    coalesce(CAST(latitude AS text), 'none'),
                    coalesce(CAST(longitude AS text), 'none'),
                    coalesce(CAST(fix_time AS text), 'none')
             FROM records"
        ),
        ["no|none|none|none"]
    );
    // Reprocessing the same decode finds it unchanged.
    let id = frame_ids(&mut store)[0];
    let stats = store.reprocess(&[(id, f)]).unwrap();
    assert_eq!((stats.records_unchanged, stats.records_changed), (1, 0));
}

fn an_alarm_goes_to_records_and_alarm_events(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut f = frame(1, IMEI, vec![alarm(77, record(5))]);
    f.kind = Arc::from("~T");
    let receipt = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!(receipt.stats().records, 1);
    assert_eq!(receipt.stats().alarms, 1);
    assert_eq!(db.scalar("SELECT source FROM records"), "alarm");
    assert_eq!(
        db.rows("SELECT event_index, record_index, event_time FROM alarm_events"),
        [format!("77|5|{}", T0 + 5)]
    );

    f.seq = 2;
    let resend = store.commit(&[f]).unwrap();
    assert_eq!(resend.stats().duplicates, 1);
    assert_eq!(resend.stats().alarms, 0);
    let counts = store.counts().unwrap();
    assert_eq!((counts.records, counts.alarm_events), (1, 1));
}

fn a_current_state_goes_to_current_states_only_and_is_never_deduplicated(db: Db) {
    let mut store = db.open(Synchronous::Off);
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

fn ext_records_are_deduplicated_by_key(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut f = frame(1, IMEI, Vec::new());
    f.kind = Arc::from("~E");
    f.ext_records = vec![ext(record(1)), ext(record(2))];
    let a = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!((a.stats().ext_records, a.stats().duplicates), (2, 0));
    let b = store.commit(&[f]).unwrap();
    assert_eq!((b.stats().ext_records, b.stats().duplicates), (0, 2));
    assert_eq!(store.counts().unwrap().ext_records, 2);
}

fn error_and_garbage_frames_get_decode_error_rows(db: Db) {
    let mut store = db.open(Synchronous::Off);
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
    assert_eq!(
        db.rows(
            "SELECT CASE WHEN e.device IS NULL THEN 'none' ELSE 'device' END, e.reason,
                    coalesce(e.error, 'none'), f.status
             FROM decode_errors e JOIN raw_frames f ON f.id = e.frame ORDER BY e.id"
        ),
        [
            "device|crc|bad flex crc8: expected 0x12, got 0x34|error",
            "none|sync_lost|none|garbage"
        ]
    );
}

fn a_batch_with_an_invalid_frame_stores_nothing_and_returns_no_receipt(db: Db) {
    let mut store = db.open(Synchronous::Off);
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

fn a_failure_in_the_middle_of_a_batch_rolls_everything_back(db: Db) {
    let mut store = db.open(Synchronous::Off);
    if db.is_postgres() {
        db.exec(
            "CREATE FUNCTION fail_on_11() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.record_index = 11 THEN RAISE EXCEPTION 'injected failure'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_on_seq_2 BEFORE INSERT ON records
                 FOR EACH ROW EXECUTE FUNCTION fail_on_11();",
        );
    } else {
        db.exec(
            "CREATE TRIGGER fail_on_seq_2 BEFORE INSERT ON records WHEN NEW.record_index = 11
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        );
    }
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
    assert_eq!(db.count("layouts"), 0);

    // Device and layout ids from the rolled-back transaction must not be reused.
    db.exec(if db.is_postgres() {
        "DROP TRIGGER fail_on_seq_2 ON records"
    } else {
        "DROP TRIGGER fail_on_seq_2"
    });
    let receipt = store.commit(&batch).unwrap();
    assert_eq!(receipt.stats().records, 5);
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM records r LEFT JOIN devices d ON d.id = r.device
             WHERE d.id IS NULL"
        ),
        "0"
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM raw_frames f LEFT JOIN layouts l ON l.id = f.layout
             WHERE l.id IS NULL"
        ),
        "0"
    );
    assert_eq!(
        db.rows("SELECT device_id, fields FROM devices WHERE imei = '352093081234567'"),
        ["99|[1,2,3]"]
    );
    if let Db::Sqlite(dir) = &db {
        let fk_violations = raw(dir)
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |_| Ok(()))
            .unwrap()
            .count();
        assert_eq!(fk_violations, 0);
    }
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

fn device_facts_are_stored(db: Db) {
    let mut store = db.open(Synchronous::Off);
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
    let devices = || {
        db.rows(&format!(
            "SELECT device_id, first_seen_us, last_seen_us, protocol_version, struct_version,
                    data_size, {}, fields, negotiated_at_us FROM devices",
            db.hex("mask")
        ))
    };
    let expected = [format!(
        "4242|{}|{}|20|20|122|fff00f0081|[1,2,3,8,9]|{negotiated_at}",
        handshake.received_at_us, data.received_at_us
    )];
    assert_eq!(devices(), expected);

    // last_seen only moves forward.
    let mut late = frame(4, IMEI, Vec::new());
    late.received_at_us = 5;
    let _ = store.commit(&[late]).unwrap();
    assert_eq!(devices(), expected);
    assert_eq!(db.count("layouts"), 1);
}

fn committed_data_survives_dropping_the_store(db: Db) {
    let mut store = db.open(Synchronous::Full);
    let _ = store
        .commit(&[
            frame(1, IMEI, archives(0..10)),
            frame(2, IMEI, archives(5..20)),
        ])
        .unwrap();
    drop(store);
    assert_eq!(db.count("records"), 20);
    assert_eq!(db.count("raw_frames"), 2);
    assert_eq!(db.count("v_records"), 20);
    let mut store = db.open(Synchronous::Full);
    assert_eq!(store.counts().unwrap().records, 20);
    let receipt = store.commit(&[frame(3, IMEI, archives(0..20))]).unwrap();
    assert_eq!(
        receipt.stats().duplicates,
        20,
        "dedup works across restarts"
    );
}

/// SQLite skips a duplicate key; PostgreSQL's `COPY` fails on one (documented), all or
/// nothing.
fn insert_records_direct_inserts_into_the_deduplicated_table(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let rows: Vec<_> = (0..50).map(record).collect();
    assert_eq!(store.insert_records_direct(IMEI, &rows).unwrap(), 50);
    match store.insert_records_direct(IMEI, &rows[45..]) {
        Ok(n) => {
            assert!(!db.is_postgres());
            assert_eq!(n, 0);
        }
        Err(e) => {
            assert!(db.is_postgres(), "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
    }
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
    let more: Vec<_> = (100..110).map(record).collect();
    assert_eq!(
        store
            .insert_records_direct_many(&[("352093080000003", &more), (IMEI, &more[..3])])
            .unwrap(),
        13
    );
    assert_eq!(store.counts().unwrap().devices, 2);
    assert!(matches!(
        store.insert_records_direct("", &rows),
        Err(StoreError::Invalid(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// The v_records view.
// ---------------------------------------------------------------------------------------------

/// Event times the view must render the same way on both backends, with their text.
const VIEW_TIMES: [(i64, &str); 7] = [
    (-1, "1969-12-31T23:59:59Z"),
    (0, "1970-01-01T00:00:00Z"),
    (86_400, "1970-01-02T00:00:00Z"),
    (951_782_400, "2000-02-29T00:00:00Z"),
    (T0 + 1, "2023-11-14T22:13:21Z"),
    (4_102_444_800, "2100-01-01T00:00:00Z"),
    (253_402_300_799, "9999-12-31T23:59:59Z"),
];

fn v_records_has_the_documented_columns_and_rfc3339_times(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut no_fix = record_at(Some(100), Some(86_400));
    no_fix.fix_time = None;
    let mut rows = vec![archive(record(1)), archive(no_fix)];
    for (i, &(t, _)) in (10..).zip(&VIEW_TIMES) {
        rows.push(archive(record_at(Some(i), Some(t))));
    }
    let _ = store.commit(&[frame(1, IMEI, rows)]).unwrap();
    let columns = db.rows(if db.is_postgres() {
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'v_records'
         ORDER BY ordinal_position"
    } else {
        "SELECT name FROM pragma_table_info('v_records') ORDER BY cid"
    });
    assert_eq!(
        columns,
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
    let view = db.rows(
        "SELECT imei, record_index, event_time, coalesce(fix_time, 'none'), latitude,
                longitude, speed_kmh
         FROM v_records ORDER BY record_index",
    );
    let r1 = record(1);
    assert_eq!(
        view[0],
        format!(
            "{IMEI}|1|2023-11-14T22:13:21Z|2023-11-14T22:13:20Z|{}|{}|42.5",
            r1.latitude.unwrap(),
            r1.longitude.unwrap()
        )
    );
    for (row, (i, &(t, text))) in view[1..].iter().zip((10..).zip(&VIEW_TIMES)) {
        let fix = VIEW_TIMES
            .iter()
            .find(|&&(u, _)| u == t - 1)
            .map(|&(_, text)| text.to_owned());
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[1], i.to_string(), "{row}");
        assert_eq!(fields[2], text, "{row}");
        if let Some(fix) = fix {
            assert_eq!(fields[3], fix, "{row}");
        } else {
            // Every fix time is one second before its event time.
            assert_eq!(fields[3].len(), "1970-01-01T00:00:00Z".len(), "{row}");
        }
    }
    let no_fix = view.last().unwrap();
    assert!(
        no_fix.starts_with(&format!("{IMEI}|100|1970-01-02T00:00:00Z|none|")),
        "{no_fix}"
    );
    // Raw integer seconds stay in the table.
    assert_eq!(
        db.scalar("SELECT event_time FROM records WHERE record_index = 1"),
        (T0 + 1).to_string()
    );
}

#[test]
fn v_records_renders_identical_text_on_both_backends() {
    let [sqlite, postgres] = [Db::sqlite(), Db::postgres()].map(|db| {
        let mut store = db.open(Synchronous::Off);
        let mut rows = Vec::new();
        for (i, &(t, _)) in (0..).zip(&VIEW_TIMES) {
            rows.push(archive(record_at(Some(i), Some(t))));
        }
        let mut no_fix = record_at(Some(99), Some(T0));
        no_fix.fix_time = None;
        rows.push(archive(no_fix));
        let _ = store.commit(&[frame(1, IMEI, rows)]).unwrap();
        db.rows(
            "SELECT imei, record_index, event_time, coalesce(fix_time, 'none'), latitude,
                    longitude, speed_kmh
             FROM v_records ORDER BY record_index",
        )
    });
    assert_eq!(sqlite.len(), VIEW_TIMES.len() + 1);
    assert_eq!(sqlite, postgres);
}

// ---------------------------------------------------------------------------------------------
// Read queries.
// ---------------------------------------------------------------------------------------------

fn record_keys_are_ordered_unknown_values_first_and_filtered_by_imei(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let other = "111111111111111";
    let _ = store
        .commit(&[
            frame(
                1,
                IMEI,
                vec![
                    archive(record(5)),
                    archive(record(2)),
                    archive(record_at(Some(2), None)),
                    archive(record_at(None, Some(T0 + 9))),
                    archive(record_at(None, None)),
                    archive(record_at(None, Some(T0 - 9))),
                ],
            ),
            frame(2, other, archives(7..8)),
        ])
        .unwrap();
    let key = |imei: &str, record_index: Option<u32>, event_time: Option<i64>| RecordKey {
        imei: imei.to_owned(),
        record_index,
        event_time,
    };
    let at = |i: u32| Some(T0 + i64::from(i));
    let mine = vec![
        key(IMEI, None, None),
        key(IMEI, None, Some(T0 - 9)),
        key(IMEI, None, Some(T0 + 9)),
        key(IMEI, Some(2), None),
        key(IMEI, Some(2), at(2)),
        key(IMEI, Some(5), at(5)),
    ];
    let mut all = vec![key(other, Some(7), at(7))];
    all.extend(mine.iter().cloned());
    assert_eq!(store.record_keys(None).unwrap(), all);
    assert_eq!(store.record_keys(Some(IMEI)).unwrap(), mine);
    assert!(store.record_keys(Some("nobody")).unwrap().is_empty());
}

fn frames_for_reprocess_filters_by_window_and_imei_and_pages_by_id(db: Db) {
    let mut store = db.open(Synchronous::Off);
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
    let mut bad = frame(7, IMEI, Vec::new());
    bad.imei = None;
    bad.layout = None;
    bad.status = FrameStatus::Garbage;
    bad.error = Some("lost sync".to_owned());
    frames.push(bad);
    let _ = store.commit(&frames).unwrap();
    let all = FrameFilter {
        since_us: 0,
        until_us: None,
        imei: None,
    };
    let got = store.frames_for_reprocess(&all, 0, 100).unwrap();
    assert_eq!(got.len(), 8);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    let first = &got[1];
    assert_eq!(first.conn_id, 7);
    assert_eq!(first.imei.as_deref(), Some(IMEI));
    assert_eq!(first.kind, "~A");
    assert_eq!(first.status, FrameStatus::Ok);
    assert_eq!(first.error, None);
    assert_eq!(first.bytes, frames[1].bytes);
    assert_eq!(first.layout.as_ref(), Some(&*common::layout()));
    assert_eq!(first.device_id, Some(31));
    assert_eq!(got[2].device_id, None);
    let garbage = &got[7];
    assert_eq!(garbage.imei, None);
    assert_eq!(garbage.layout, None);
    assert_eq!(garbage.status, FrameStatus::Garbage);
    assert_eq!(garbage.error.as_deref(), Some("lost sync"));

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
fn frame_ids(store: &mut Store) -> Vec<i64> {
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

fn reprocess_diffs_records_by_key_and_is_idempotent(db: Db) {
    let mut store = db.open(Synchronous::Off);
    // Frame A holds 0..4; frame B holds 10 and resent 3 (a duplicate, owned by A).
    let _ = store
        .commit(&[
            frame(1, IMEI, archives(0..4)),
            frame(2, IMEI, vec![archive(record(10)), archive(record(3))]),
        ])
        .unwrap();
    let ids = frame_ids(&mut store);
    let id_of_1 = db.scalar("SELECT id FROM records WHERE record_index = 1");

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
    assert_eq!(
        db.rows("SELECT id, speed_kmh, fields FROM records WHERE record_index = 1"),
        [format!(r#"{id_of_1}|99|{{"fixed":true}}"#)],
        "a changed record keeps its id"
    );

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

/// Rows without an index or an event time pair with the frame's own rows of the same key in
/// order, are updated in place and removed like any other.
fn reprocess_matches_records_with_unknown_keys(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let rows = || {
        vec![
            archive(record_at(Some(1), None)),
            archive(record_at(None, Some(T0))),
            archive(record_at(None, None)),
            archive(record_at(None, None)),
        ]
    };
    let _ = store.commit(&[frame(1, IMEI, rows())]).unwrap();
    let id = frame_ids(&mut store)[0];
    let ids_before = db.rows("SELECT id FROM records ORDER BY id");
    // The frame's rows are paired in id order, so of its two key-less rows the one with the
    // higher id is the one left unmatched below (the backends assign ids in different
    // orders within a batch).
    let keyless = db.rows(
        "SELECT id FROM records WHERE record_index IS NULL AND event_time IS NULL ORDER BY id",
    );
    let mut kept = ids_before.clone();
    kept.retain(|id| *id != keyless[1]);

    let same = store.reprocess(&[(id, frame(1, IMEI, rows()))]).unwrap();
    assert_eq!((same.records_unchanged, same.records_changed), (4, 0));

    let mut new_rows = rows();
    for r in &mut new_rows[..3] {
        r.row.speed_kmh = Some(7.0);
    }
    new_rows.pop();
    let changed = store.reprocess(&[(id, frame(1, IMEI, new_rows))]).unwrap();
    assert_eq!(
        (
            changed.records_changed,
            changed.records_removed,
            changed.records_unchanged
        ),
        (3, 1, 0)
    );
    assert_eq!(
        db.rows("SELECT id FROM records ORDER BY id"),
        kept,
        "changed rows keep their ids, the unmatched one goes"
    );
    assert_eq!(db.count("records WHERE speed_kmh = 7"), 3);

    let gone = store
        .reprocess(&[(id, frame(1, IMEI, Vec::new()))])
        .unwrap();
    assert_eq!(gone.records_removed, 3);
    assert_eq!(db.count("records"), 0);
}

/// A decoder fix that changes a record's time gives it a new key (PostgreSQL: in another
/// month's partition, created on demand); the old key is removed.
fn reprocess_moves_a_record_to_another_month(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let now = jiff::Timestamp::now().as_second();
    let then = now - 150 * 86_400;
    let _ = store
        .commit(&[frame(1, IMEI, vec![archive(record_at(Some(1), Some(now)))])])
        .unwrap();
    let id = frame_ids(&mut store)[0];
    let stats = store
        .reprocess(&[(
            id,
            frame(1, IMEI, vec![archive(record_at(Some(1), Some(then)))]),
        )])
        .unwrap();
    assert_eq!((stats.records_added, stats.records_removed), (1, 1));
    assert_eq!(
        store.record_keys(None).unwrap(),
        [RecordKey {
            imei: IMEI.to_owned(),
            record_index: Some(1),
            event_time: Some(then),
        }]
    );
    assert_eq!(db.scalar("SELECT frame FROM records"), id.to_string());
    // Committing the moved record again is a duplicate.
    let receipt = store
        .commit(&[frame(
            2,
            IMEI,
            vec![archive(record_at(Some(1), Some(then)))],
        )])
        .unwrap();
    assert_eq!(receipt.stats().duplicates, 1);
}

fn reprocess_updates_changed_ext_records_in_place(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut f = frame(1, IMEI, Vec::new());
    f.kind = Arc::from("~X");
    f.ext_records = vec![ext(record(1)), ext(record(2)), ext(record(3))];
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    let id = frame_ids(&mut store)[0];
    let id_of_2 = db.scalar("SELECT id FROM ext_records WHERE record_index = 2");

    f.ext_records[0].event_index = Some(8);
    f.ext_records[1].row.fields_json = r#"{"x":1}"#.to_owned();
    f.ext_records[2].struct_version = 3;
    f.ext_records.push(ext(record(4)));
    let stats = store.reprocess(&[(id, f.clone())]).unwrap();
    assert_eq!(
        (
            stats.records_changed,
            stats.records_added,
            stats.records_unchanged
        ),
        (3, 1, 0)
    );
    assert_eq!(
        db.rows(
            "SELECT record_index, coalesce(CAST(event_index AS text), 'none'), struct_version
             FROM ext_records ORDER BY record_index"
        ),
        ["1|8|2", "2|none|2", "3|none|3", "4|none|2"]
    );
    assert_eq!(
        db.scalar("SELECT id FROM ext_records WHERE fields = '{\"x\":1}'"),
        id_of_2
    );
    let again = store.reprocess(&[(id, f)]).unwrap();
    assert_eq!((again.records_unchanged, again.records_changed), (4, 0));
}

fn reprocess_turns_an_error_frame_into_records_and_back(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut bad = frame(1, IMEI, Vec::new());
    bad.status = FrameStatus::Error;
    bad.error_reason = Some("unknown_field");
    bad.error = Some("field 200 is not in the dictionary".to_owned());
    let _ = store.commit(&[bad.clone()]).unwrap();
    let id = frame_ids(&mut store)[0];
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
    assert_eq!(
        db.scalar("SELECT coalesce(error_reason, 'none') FROM raw_frames"),
        "none"
    );

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
    assert_eq!(
        db.rows("SELECT f.error_reason, e.reason, e.error FROM raw_frames f JOIN decode_errors e ON e.frame = f.id"),
        ["unknown_field|unknown_field|field 200 is not in the dictionary"]
    );
}

fn reprocess_replaces_alarm_events_and_current_states(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let f = frame(1, IMEI, vec![alarm(5, record(1)), current(record(2))]);
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    let id = frame_ids(&mut store)[0];
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
    assert_eq!(db.scalar("SELECT source FROM records"), "archive");
    let counts = store.counts().unwrap();
    assert_eq!((counts.alarm_events, counts.current_states), (0, 0));
}

fn reprocess_of_an_unknown_frame_or_foreign_imei_changes_nothing(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut garbage = frame(2, IMEI, Vec::new());
    garbage.imei = None;
    garbage.status = FrameStatus::Garbage;
    let _ = store
        .commit(&[frame(1, IMEI, archives(0..2)), garbage])
        .unwrap();
    let ids = frame_ids(&mut store);
    let id = ids[0];
    let before = store.counts().unwrap();
    let err = store
        .reprocess(&[
            (id, frame(1, IMEI, Vec::new())),
            (id + 100, frame(1, IMEI, Vec::new())),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.counts().unwrap(), before, "first update rolled back");
    let err = store
        .reprocess(&[(id, frame(1, "999999999999999", Vec::new()))])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.counts().unwrap(), before);
    let err = store
        .reprocess(&[(ids[1], frame(2, IMEI, archives(5..6)))])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("has no device")),
        "{err}"
    );
    assert_eq!(store.counts().unwrap(), before);
    // The store works on after the failed transactions.
    let stats = store
        .reprocess(&[(id, frame(1, IMEI, archives(0..3)))])
        .unwrap();
    assert_eq!(stats.records_added, 1);
}
