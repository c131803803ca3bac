//! Read throughput of the API in records/s, through the whole router (`oneshot` on `app`,
//! token check, `spawn_blocking` store call, serialisation, body collected): one page of
//! 1000 records as JSON from the start and from the middle of a 20,000-record device, the
//! same first page as CSV and GeoJSON, and `/api/v1/status` as the cost of authentication
//! plus a small query. The database is a temporary SQLite file filled once through
//! [`Store::commit`]; records carry about 20 non-core fields, as a FLEX tracker sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use svoi_api::{ApiState, Live, LiveStatus};
use svoi_store::{
    DbUrl, DecodedRecord, FrameRow, FrameStatus, LayoutKey, Reader, RecordKind, RecordRow, Store,
    StoreOptions, Synchronous, TokenScope,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const IMEI: &str = "352093081234567";
const T0: i64 = 1_700_000_000;
/// Records stored for the device.
const RECORDS: u32 = 20_000;
/// Records per committed frame.
const PER_FRAME: u32 = 50;
/// Records per page in every records benchmark.
const PAGE: u64 = 1000;

/// An ingest side that is up and quiet.
struct QuietLive;

impl Live for QuietLive {
    fn status(&self) -> LiveStatus {
        LiveStatus {
            listener_up: true,
            writer_alive: true,
            connections_open: 1,
            frames_received: 400,
            decode_errors: 0,
            queue_depth: 0,
            last_frame_unix_ms: Some(1_700_000_000_000),
        }
    }

    fn is_online(&self, _imei: &str) -> bool {
        true
    }
}

/// A record with realistic core values and 20 non-core fields (~450 bytes of `fields`),
/// one second after the previous one.
fn record(index: u32) -> RecordRow {
    let i = f64::from(index % 1000);
    let n = index % 1000;
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
            concat!(
                r#"{{"status":3,"digital_inputs":5,"digital_outputs":0,"#,
                r#""analog_in_1_mv":{a1},"analog_in_2_mv":0,"analog_in_3_mv":{a3},"#,
                r#""can_fuel_l":48.5,"can_rpm":{rpm},"can_engine_hours":1234.5,"#,
                r#""can_coolant_c":87,"can_mileage_km":{mileage},"#,
                r#""temperature_1_c":-12.5,"temperature_2_c":4.25,"#,
                r#""lls_1":812,"lls_2":null,"hdop":0.9,"pdop":1.4,"#,
                r#""counter_1":{n},"accel":[12,-3,981],"driver_id":"A{n:04}"}}"#
            ),
            a1 = 11_000 + n,
            a3 = 3_300 + n % 7,
            rpm = 1_400 + n % 100,
            mileage = 98_765.4 + i * 0.01,
            n = n,
        ),
    }
}

/// Archive frames holding records `0..RECORDS`, `PER_FRAME` to a frame.
fn frames() -> Vec<FrameRow> {
    let imei: Arc<str> = Arc::from(IMEI);
    let kind: Arc<str> = Arc::from("~A");
    let layout = Arc::new(LayoutKey {
        protocol_version: 20,
        struct_version: 20,
        data_size: 122,
        mask: vec![0xff; 16],
    });
    (0..RECORDS / PER_FRAME)
        .map(|f| {
            let base = f * PER_FRAME;
            FrameRow {
                seq: u64::from(f) + 1,
                conn_id: 1,
                imei: Some(Arc::clone(&imei)),
                received_at_us: (T0 + i64::from(base)) * 1_000_000,
                kind: Arc::clone(&kind),
                status: FrameStatus::Ok,
                error_reason: None,
                error: None,
                bytes: vec![0x5a; 4 + 80 * PER_FRAME as usize],
                layout: Some(Arc::clone(&layout)),
                device: None,
                records: (base..base + PER_FRAME)
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

/// The filled database, a read token and the router over them.
struct Fixture {
    _dir: TempDir,
    app: Router,
    auth: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = DbUrl::Sqlite(dir.path().join("bench.db"));
    let opts = StoreOptions {
        synchronous: Synchronous::Off,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&url, &opts).unwrap();
    let receipt = store.commit(&frames()).unwrap();
    assert_eq!(receipt.stats().records, u64::from(RECORDS));
    let (token, row) = svoi_api::token::generate("bench", TokenScope::Read);
    store.create_token(&row).unwrap();
    drop(store);
    let reader = Reader::open(&url, &opts, 2).unwrap();
    let state = ApiState::new(reader, Arc::new(QuietLive), Arc::new(String::new));
    Fixture {
        _dir: dir,
        app: svoi_api::app(state),
        auth: format!("Bearer {token}"),
    }
}

/// GETs `uri` and collects the whole body; panics unless the answer is 200.
async fn get(app: &Router, auth: &str, uri: &str) -> (HeaderMap, Bytes) {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, auth)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    (parts.headers, body)
}

/// The records in a page: CSV lines after the header, GeoJSON points, or JSON items.
fn records_in(headers: &HeaderMap, body: &[u8]) -> u64 {
    let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
    let count = if content_type.starts_with("text/csv") {
        std::str::from_utf8(body).unwrap().lines().count() - 1
    } else {
        let page: serde_json::Value = serde_json::from_slice(body).unwrap();
        match page.get("features") {
            Some(features) => features
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["geometry"]["type"] == "Point")
                .count(),
            None => page["items"].as_array().unwrap().len(),
        }
    };
    u64::try_from(count).unwrap()
}

/// The `next` cursor after `pages` JSON pages of `PAGE` records.
fn cursor_after(rt: &Runtime, fx: &Fixture, pages: u32) -> String {
    let first = format!("/api/v1/devices/{IMEI}/records?limit={PAGE}");
    let mut uri = first.clone();
    let mut next = String::new();
    for _ in 0..pages {
        let (_, body) = rt.block_on(get(&fx.app, &fx.auth, &uri));
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        next = page["next"].as_str().unwrap().to_owned();
        uri = format!("{first}&cursor={next}");
    }
    next
}

fn read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = fixture();
    let deep = cursor_after(&rt, &fx, 10);

    let base = format!("/api/v1/devices/{IMEI}/records?limit={PAGE}");
    let cases = [
        ("records_json_1000", base.clone()),
        ("records_json_1000_deep", format!("{base}&cursor={deep}")),
        ("records_csv_1000", format!("{base}&format=csv")),
        ("records_geojson_1000", format!("{base}&format=geojson")),
    ];

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(PAGE));
    for (name, uri) in &cases {
        // Once outside the timing: the page is full and its size is on record.
        let (headers, body) = rt.block_on(get(&fx.app, &fx.auth, uri));
        assert_eq!(records_in(&headers, &body), PAGE, "{name}");
        eprintln!("{name}: {} bytes per page", body.len());
        group.bench_function(*name, |b| {
            b.iter(|| rt.block_on(get(&fx.app, &fx.auth, uri)).1.len());
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("auth_only", |b| {
        b.iter(|| {
            rt.block_on(get(&fx.app, &fx.auth, "/api/v1/status"))
                .1
                .len()
        });
    });
    group.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
