//! Batch insert throughput in records/s with `synchronous = FULL` on a temporary file:
//! [`Store::commit`] of frames (raw frame archive, dedup, receipt) against the
//! [`Store::insert_records_direct`] baseline of the same rows straight into `records`.
//! Each iteration writes fresh keys, so both measure inserts, not duplicate skips.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use svoi_store::{
    DbUrl, DecodedRecord, FrameRow, FrameStatus, LayoutKey, RecordKind, RecordRow, Store,
    StoreOptions, Synchronous,
};

const IMEI: &str = "352093081234567";
const T0: i64 = 1_700_000_000;

/// A record with realistic core values and a ~200-byte `fields` object.
fn record(index: u32) -> RecordRow {
    let i = f64::from(index % 1000);
    RecordRow {
        record_index: Some(index),
        event_code: Some(0x1234),
        event_time: Some(T0 + i64::from(index)),
        fix_time: Some(T0 + i64::from(index) - 1),
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
            r#"{{"status":3,"digital_inputs":5,"digital_outputs":0,"analog_in_1_mv":{},"analog_in_2_mv":0,"can_fuel_l":48.5,"can_rpm":1450,"can_engine_hours":1234.5,"temperature_1_c":-12.5,"lls_1":812,"hdop":0.9}}"#,
            11_000 + index % 1000
        ),
    }
}

/// `frames` frames of `per_frame` archive records with indexes from `first`.
fn frames(first: u32, frames: u32, per_frame: u32) -> Vec<FrameRow> {
    let imei: Arc<str> = Arc::from(IMEI);
    let kind: Arc<str> = Arc::from("~A");
    let layout = Arc::new(LayoutKey {
        protocol_version: 20,
        struct_version: 20,
        data_size: 122,
        mask: vec![0xff; 16],
    });
    (0..frames)
        .map(|f| {
            let base = first + f * per_frame;
            FrameRow {
                seq: u64::from(base),
                conn_id: 1,
                imei: Some(Arc::clone(&imei)),
                received_at_us: T0 * 1_000_000 + i64::from(base),
                kind: Arc::clone(&kind),
                status: FrameStatus::Ok,
                error_reason: None,
                error: None,
                // A ~A frame of this size carries about 80 bytes per record.
                bytes: vec![0x5a; 4 + 80 * per_frame as usize],
                layout: Some(Arc::clone(&layout)),
                device: None,
                records: (base..base + per_frame)
                    .map(|i| DecodedRecord {
                        kind: RecordKind::Archive,
                        row: record(i),
                    })
                    .collect(),
                ext_records: Vec::new(),
            }
        })
        .collect()
}

fn open(dir: &tempfile::TempDir) -> Store {
    let opts = StoreOptions {
        synchronous: Synchronous::Full,
        ..StoreOptions::default()
    };
    match Store::open(&DbUrl::Sqlite(dir.path().join("bench.db")), &opts) {
        Ok(store) => store,
        Err(e) => panic!("cannot open the bench database: {e}"),
    }
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert");
    for (n_frames, per_frame) in [(100u32, 50u32), (20, 10)] {
        let records = u64::from(n_frames * per_frame);
        group.throughput(Throughput::Elements(records));

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut store = open(&dir);
        let mut next = 0u32;
        group.bench_function(format!("commit/{n_frames}x{per_frame}"), |b| {
            b.iter_batched(
                || {
                    let batch = frames(next, n_frames, per_frame);
                    next += n_frames * per_frame;
                    batch
                },
                |batch| match store.commit(&batch) {
                    Ok(receipt) => assert_eq!(receipt.stats().records, records),
                    Err(e) => panic!("commit failed: {e}"),
                },
                BatchSize::LargeInput,
            );
        });

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut store = open(&dir);
        let mut next = 0u32;
        group.bench_function(format!("direct/{n_frames}x{per_frame}"), |b| {
            b.iter_batched(
                || {
                    let rows: Vec<RecordRow> =
                        (next..next + n_frames * per_frame).map(record).collect();
                    next += n_frames * per_frame;
                    rows
                },
                |rows| match store.insert_records_direct(IMEI, &rows) {
                    Ok(inserted) => assert_eq!(inserted, records),
                    Err(e) => panic!("direct insert failed: {e}"),
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, insert);
criterion_main!(benches);
