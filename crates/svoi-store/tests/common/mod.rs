//! Helpers shared by the store's integration tests: temporary stores and frame builders.

#![allow(dead_code)]

use std::sync::Arc;

use svoi_store::{
    DbUrl, DecodedRecord, ExtRecordRow, FrameRow, FrameStatus, LayoutKey, RecordKind, RecordRow,
    Store, StoreOptions, Synchronous,
};
use tempfile::TempDir;

/// The fixture of the tests that run on both backends: a fresh database of either
/// (`Db::sqlite()`, `Db::postgres()`, or the one `svoi_testpg::backends!` hands a
/// `fn name(db: Db)`) and its inspection helpers (`scalar`, `rows`, `count`, `exec`, `hex`).
pub use svoi_testpg::Db;

/// The store side of a [`Db`]: its URL as the store takes it, and a store opened on it.
pub trait StoreDb {
    /// Its URL.
    fn store_url(&self) -> DbUrl;

    /// Opens (or reopens) the store (`synchronous` only matters to SQLite).
    fn open(&self, synchronous: Synchronous) -> Store;
}

impl StoreDb for Db {
    fn store_url(&self) -> DbUrl {
        self.url()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", self.url()))
    }

    fn open(&self, synchronous: Synchronous) -> Store {
        Store::open(
            &self.store_url(),
            &StoreOptions {
                synchronous,
                ..StoreOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", self.url()))
    }
}

/// A store in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_store(synchronous: Synchronous) -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = open(&dir, synchronous);
    (dir, store)
}

/// The URL of the database in `dir`.
pub fn url(dir: &TempDir) -> DbUrl {
    DbUrl::Sqlite(dir.path().join(svoi_testpg::SQLITE_FILE))
}

/// Opens (or reopens) the store in `dir`.
pub fn open(dir: &TempDir, synchronous: Synchronous) -> Store {
    Store::open(
        &url(dir),
        &StoreOptions {
            synchronous,
            ..StoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", url(dir)))
}

/// A plain SQLite connection to the store's database, for checking what is on disk.
pub fn raw(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join(svoi_testpg::SQLITE_FILE))
        .unwrap_or_else(|e| panic!("raw open: {e}"))
}

/// `SELECT count(*) FROM {table}` through `conn`.
pub fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

pub const IMEI: &str = "352093081234567";
pub const T0: i64 = 1_700_000_000;

/// A realistic record with key (`index`, `T0 + index`).
pub fn record(index: u32) -> RecordRow {
    record_at(Some(index), Some(T0 + i64::from(index)))
}

/// A realistic record with the given key.
pub fn record_at(index: Option<u32>, event_time: Option<i64>) -> RecordRow {
    let i = f64::from(index.unwrap_or(0));
    RecordRow {
        record_index: index,
        event_code: Some(0x1234),
        event_time,
        fix_time: event_time.map(|t| t - 1),
        valid: Some(true),
        satellites: Some(9),
        latitude: Some(55.751_244 + i * 1e-5),
        longitude: Some(37.618_423 + i * 1e-5),
        altitude_m: Some(156.0),
        speed_kmh: Some(42.5),
        course: Some(270),
        odometer_km: Some(12_345.6 + i * 0.01),
        power_mv: Some(12_600),
        battery_mv: Some(4_100),
        gsm_level: Some(21),
        fields_json: format!(
            r#"{{"status":3,"digital_inputs":5,"digital_outputs":0,"analog_in_1_mv":{},"can_fuel_l":48.5,"can_rpm":1450,"can_engine_hours":1234.5,"temperature_1_c":-12.5,"lls_1":812,"seq":{}}}"#,
            11_000 + index.unwrap_or(0),
            index.unwrap_or(0)
        ),
    }
}

/// An archive record.
pub fn archive(row: RecordRow) -> DecodedRecord {
    DecodedRecord {
        kind: RecordKind::Archive,
        row,
    }
}

/// An alarm record with `event_index`.
pub fn alarm(event_index: u32, row: RecordRow) -> DecodedRecord {
    DecodedRecord {
        kind: RecordKind::Alarm { event_index },
        row,
    }
}

/// A current-state record.
pub fn current(row: RecordRow) -> DecodedRecord {
    DecodedRecord {
        kind: RecordKind::Current,
        row,
    }
}

/// An additional record.
pub fn ext(row: RecordRow) -> ExtRecordRow {
    ExtRecordRow {
        event_index: None,
        struct_version: 2,
        row,
    }
}

/// The FLEX 2.0 layout the test frames use.
pub fn layout() -> Arc<LayoutKey> {
    Arc::new(LayoutKey {
        protocol_version: 20,
        struct_version: 20,
        data_size: 122,
        mask: vec![0xff, 0xf0, 0x0f, 0x00, 0x81],
    })
}

/// An ok `~A` frame from `imei` with `records`.
pub fn frame(seq: u64, imei: &str, records: Vec<DecodedRecord>) -> FrameRow {
    FrameRow {
        seq,
        conn_id: 7,
        imei: Some(Arc::from(imei)),
        received_at_us: T0 * 1_000_000 + seq as i64,
        kind: Arc::from("~A"),
        status: FrameStatus::Ok,
        error_reason: None,
        error: None,
        bytes: vec![0x7e, 0x41, seq.to_le_bytes()[0], 0x00],
        layout: Some(layout()),
        device: None,
        records,
        ext_records: Vec::new(),
    }
}

/// Archive records with indexes `range`.
pub fn archives(range: std::ops::Range<u32>) -> Vec<DecodedRecord> {
    range.map(|i| archive(record(i))).collect()
}
