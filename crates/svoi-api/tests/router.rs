//! The API through its router (`tower::ServiceExt::oneshot` on `app(state)`), over a real
//! database filled through `Store::commit` and a fake live view: every route, every
//! authentication outcome, every parameter error code, paging through several pages of each
//! list, the CSV and GeoJSON shapes, the offline Swagger UI, and the request metrics. Every
//! test runs on SQLite and on PostgreSQL, as `sqlite::name` and `postgres::name` (see
//! [`tokio_backends!`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use svoi_api::{ApiState, Live, LiveStatus, MetricsRender};
use svoi_store::{
    DbUrl, DecodedRecord, DeviceUpdate, FrameRow, FrameStatus, LayoutKey, Reader, RecordKind,
    RecordRow, Store, StoreOptions, Synchronous, TokenScope,
};
use svoi_testpg::{Backend, Db, tokio_backends};
use tower::ServiceExt;

const T0: i64 = 1_700_000_000;
/// 25 archive records, negotiated layout, online.
const IMEI_A: &str = "352093081234567";
/// 25 alarm records (so 25 alarm events).
const IMEI_B: &str = "352093081234568";
/// 25 frames that failed to decode.
const IMEI_C: &str = "352093081234569";
/// Devices with only a handshake: with A, B and C, 25 devices.
const EXTRA_DEVICES: usize = 22;

fn extra_imei(i: usize) -> String {
    format!("86{i:013}")
}

/// The live view the tests steer.
#[derive(Default)]
struct FakeLive {
    listener_down: AtomicBool,
    writer_down: AtomicBool,
    online: Mutex<HashSet<String>>,
}

impl Live for FakeLive {
    fn status(&self) -> LiveStatus {
        LiveStatus {
            listener_up: !self.listener_down.load(Ordering::Relaxed),
            writer_alive: !self.writer_down.load(Ordering::Relaxed),
            connections_open: 3,
            frames_received: 1000,
            decode_errors: 10,
            queue_depth: 2,
            last_frame_unix_ms: Some(1_700_000_000_123),
        }
    }

    fn is_online(&self, imei: &str) -> bool {
        self.online.lock().unwrap().contains(imei)
    }
}

tokio_backends!(
    async: [
        health_answers_without_a_token,
        ready_reports_each_check_and_503_when_one_fails,
        metrics_returns_the_render_closure_text,
        the_metrics_app_serves_only_metrics,
        docs_serve_swagger_ui_from_local_assets,
        openapi_json_requires_a_token_and_documents_every_route,
        every_bad_credential_gets_the_same_401,
        read_and_admin_tokens_are_accepted_and_revocation_is_immediate,
        devices_page_through_every_device_once_in_imei_order,
        device_detail_shows_the_layout_and_404s_unknown_devices,
        records_page_through_every_record_once_in_time_order,
        record_windows_are_half_open_in_rfc3339_or_unix_seconds,
        records_as_csv_have_core_columns_then_the_page_fields,
        records_as_geojson_are_a_track_then_points,
        records_and_events_of_unknown_devices_are_404,
        events_page_through_every_alarm_once,
        raw_frames_page_through_all_or_one_device,
        decode_errors_page_through_every_failure_once,
        status_summarises_live_figures_and_the_database,
        bad_parameters_get_their_own_codes,
        unknown_routes_and_methods_are_json_errors,
        serve_answers_on_a_socket_until_cancelled,
    ],
    sync: [requests_are_counted_by_route_template_never_by_raw_path],
);

/// A database with the fixture data, tokens of each kind, and the state over it. Fields drop
/// in order: the store and the reader before the database.
struct Fixture {
    store: Store,
    live: Arc<FakeLive>,
    state: ApiState,
    read: String,
    admin: String,
    revoked: String,
    _db: Db,
}

impl Fixture {
    fn app(&self) -> Router {
        svoi_api::app(self.state.clone())
    }
}

/// The `i`th archive record of device A: pairs of records share an event time (so paging
/// must break ties by id); record 3 has no coordinates, record 4 no valid fix; record 7 has a
/// field no other record has.
fn record_a(i: u32) -> RecordRow {
    let f = f64::from(i);
    let extra = if i == 7 { r#","rare_field":1"# } else { "" };
    RecordRow {
        record_index: Some(i),
        event_code: Some(0x1234),
        event_time: Some(T0 + i64::from(i / 2)),
        fix_time: Some(T0 + i64::from(i / 2) - 1),
        valid: Some(i != 4),
        satellites: Some(9),
        latitude: (i != 3).then_some(55.75 + f * 1e-4),
        longitude: (i != 3).then_some(37.61 + f * 1e-4),
        altitude_m: Some(156.0),
        speed_kmh: Some(42.5),
        course: Some(270),
        odometer_km: Some(12_345.6),
        power_mv: Some(12_600),
        battery_mv: Some(4_100),
        gsm_level: Some(21),
        fields_json: format!(
            r#"{{"status":3,"temps":[1.5,-2],"label":"a,b","lls_1":null,"seq":{i}{extra}}}"#
        ),
    }
}

fn layout() -> Arc<LayoutKey> {
    Arc::new(LayoutKey {
        protocol_version: 20,
        struct_version: 20,
        data_size: 122,
        mask: vec![0xff, 0xf0],
    })
}

fn frame(seq: u64, imei: Option<&str>, kind: &str) -> FrameRow {
    FrameRow {
        seq,
        conn_id: 7,
        imei: imei.map(Arc::from),
        received_at_us: T0 * 1_000_000 + i64::try_from(seq).unwrap() * 1000,
        kind: Arc::from(kind),
        status: FrameStatus::Ok,
        error_reason: None,
        error: None,
        bytes: vec![0x7e, 0x41, seq.to_le_bytes()[0]],
        layout: None,
        device: None,
        records: Vec::new(),
        ext_records: Vec::new(),
    }
}

fn fill(store: &mut Store) {
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut frames = Vec::new();

    let mut hello = frame(next(), Some(IMEI_A), "*>FLEX");
    hello.device = Some(DeviceUpdate {
        device_id: 77,
        layout: Some(layout()),
        fields: Some(vec![1, 2, 3, 8, 9]),
    });
    frames.push(hello);
    for chunk in 0..5u32 {
        let mut f = frame(next(), Some(IMEI_A), "~A");
        f.layout = Some(layout());
        f.records = (chunk * 5..chunk * 5 + 5)
            .map(|i| DecodedRecord {
                kind: RecordKind::Archive,
                row: record_a(i),
            })
            .collect();
        frames.push(f);
    }
    for i in 0..25u32 {
        let mut f = frame(next(), Some(IMEI_B), "~T");
        let mut row = record_a(i);
        row.record_index = Some(100 + i);
        row.event_time = Some(T0 + 100 + i64::from(i));
        f.records = vec![DecodedRecord {
            kind: RecordKind::Alarm { event_index: i },
            row,
        }];
        frames.push(f);
    }
    for _ in 0..25 {
        let mut f = frame(next(), Some(IMEI_C), "~A");
        f.status = FrameStatus::Error;
        f.error_reason = Some("crc");
        f.error = Some("crc mismatch".to_owned());
        frames.push(f);
    }
    let mut garbage = frame(next(), None, "garbage");
    garbage.status = FrameStatus::Garbage;
    garbage.error_reason = Some("sync_lost");
    frames.push(garbage);
    for i in 0..EXTRA_DEVICES {
        let imei = extra_imei(i);
        let mut f = frame(next(), Some(&imei), "*>S");
        f.device = Some(DeviceUpdate {
            device_id: u32::try_from(i).unwrap(),
            layout: None,
            fields: None,
        });
        frames.push(f);
    }
    let receipt = store.commit(&frames).unwrap();
    assert_eq!(receipt.stats().records, 50);
}

fn fixture(backend: Backend) -> Fixture {
    fixture_with_metrics(backend, Arc::new(|| "svoi_up 1\n".to_owned()))
}

fn fixture_with_metrics(backend: Backend, metrics: MetricsRender) -> Fixture {
    let db = Db::new(backend);
    let url: DbUrl = db.url().parse().unwrap();
    let opts = StoreOptions {
        synchronous: Synchronous::Off,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&url, &opts).unwrap();
    fill(&mut store);
    let mut token = |name: &str, scope| {
        let (text, row) = svoi_api::token::generate(name, scope);
        store.create_token(&row).unwrap();
        text
    };
    let read = token("reader", TokenScope::Read);
    let admin = token("admin", TokenScope::Admin);
    let revoked = token("old", TokenScope::Admin);
    assert!(store.revoke_token("old").unwrap());
    let reader = Reader::open(&url, &opts, 2).unwrap();
    let live = Arc::new(FakeLive::default());
    live.online.lock().unwrap().insert(IMEI_A.to_owned());
    let state = ApiState::new(reader, live.clone(), metrics);
    Fixture {
        store,
        live,
        state,
        read,
        admin,
        revoked,
        _db: db,
    }
}

/// A response, collected.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn send(app: &Router, method: Method, uri: &str, auth: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    send(app, Method::GET, uri, auth.as_deref()).await
}

/// Asserts an error response: the status, JSON content type, and exactly
/// `{"error":{"code":code,"message":<non-empty lowercase string>}}`.
fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type(), "application/json");
    let body = r.json();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{body}");
    let err = obj["error"].as_object().unwrap();
    assert_eq!(err.len(), 2, "{body}");
    assert_eq!(err["code"], code, "{body}");
    let message = err["message"].as_str().unwrap();
    assert!(!message.is_empty());
    assert!(
        !message.starts_with(|c: char| c.is_uppercase()),
        "message starts uppercase: {message}"
    );
}

/// Follows `next` from `first` to the end; returns every page's items.
async fn all_pages(app: &Router, token: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut uri = first.to_owned();
    loop {
        let r = get(app, &uri, Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        let page = r.json();
        pages.push(page["items"].as_array().unwrap().clone());
        match &page["next"] {
            Value::Null => return pages,
            Value::String(c) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                uri = format!("{first}{sep}cursor={c}");
            }
            other => panic!("next is {other}"),
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

/// Pages of `limit` 7 over 25 items: 7, 7, 7, 4, the last with `next` null.
fn assert_four_pages(pages: &[Vec<Value>]) {
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [7, 7, 7, 4]);
}

// ---------------------------------------------------------------------------------------------
// Unauthenticated routes.
// ---------------------------------------------------------------------------------------------

async fn health_answers_without_a_token(backend: Backend) {
    let fx = fixture(backend);
    let r = get(&fx.app(), "/health", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ok"}));
}

async fn ready_reports_each_check_and_503_when_one_fails(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let r = get(&app, "/ready", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({
            "ready": true,
            "checks": {"database": "ok", "device_listener": "ok", "writer": "ok"},
            "maintenance": false
        })
    );

    fx.live.listener_down.store(true, Ordering::Relaxed);
    let r = get(&app, "/ready", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "ready": false,
            "checks": {"database": "ok", "device_listener": "down", "writer": "ok"},
            "maintenance": false
        })
    );

    fx.live.listener_down.store(false, Ordering::Relaxed);
    fx.live.writer_down.store(true, Ordering::Relaxed);
    let r = get(&app, "/ready", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["checks"]["writer"], "down");
}

async fn metrics_returns_the_render_closure_text(backend: Backend) {
    let fx = fixture_with_metrics(backend, Arc::new(|| "svoi_test_total 42\n".to_owned()));
    for app in [fx.app(), svoi_api::metrics_app(fx.state.clone())] {
        let r = get(&app, "/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type(), "text/plain; version=0.0.4");
        assert_eq!(r.text(), "svoi_test_total 42\n");
    }
}

async fn the_metrics_app_serves_only_metrics(backend: Backend) {
    let fx = fixture(backend);
    let app = svoi_api::metrics_app(fx.state.clone());
    for path in ["/health", "/api/v1/devices", "/docs/"] {
        let r = get(&app, path, Some(&fx.read)).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
}

async fn docs_serve_swagger_ui_from_local_assets(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let r = get(&app, "/docs", None).await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(r.headers[header::LOCATION], "/docs/");

    let r = get(&app, "/docs/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("text/html"),
        "{}",
        r.content_type()
    );
    let html = r.text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = &part[..part.find('"').unwrap()];
            assets.push(url.to_owned());
        }
    }
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{assets:?}"
    );
    for asset in &assets {
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        let r = get(&app, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.body.is_empty(), "{path}");
    }
    // The initializer points the UI at the public copy of the document.
    let init = get(&app, "/docs/swagger-initializer.js", None).await;
    assert_eq!(init.status, StatusCode::OK);
    let init = init.text();
    assert!(init.contains(r#""url": "/docs/openapi.json""#), "{init}");
    // No validator badge fetched from validator.swagger.io.
    assert!(init.contains(r#""validatorUrl": "none""#), "{init}");

    let spec = get(&app, "/docs/openapi.json", None).await;
    assert_eq!(spec.status, StatusCode::OK);
    assert_eq!(spec.json()["info"]["title"], "SVOI API");

    let missing = get(&app, "/docs/no-such-file.js", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------------------------
// OpenAPI.
// ---------------------------------------------------------------------------------------------

async fn openapi_json_requires_a_token_and_documents_every_route(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let r = get(&app, "/api/v1/openapi.json", None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");

    let r = get(&app, "/api/v1/openapi.json", Some(&fx.read)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/json");
    let doc = r.json();
    assert_eq!(doc, serde_json::to_value(svoi_api::openapi()).unwrap());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["title"], "SVOI API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/devices",
        "/api/v1/devices/{imei}",
        "/api/v1/devices/{imei}/records",
        "/api/v1/devices/{imei}/events",
        "/api/v1/raw-frames",
        "/api/v1/decode-errors",
        "/api/v1/status",
        "/api/v1/openapi.json",
    ]
    .into();
    assert_eq!(paths, want);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        let op = &item["get"];
        let security = &op["security"];
        if path.starts_with("/api/v1/") {
            assert_eq!(security, &json!([{"bearer": []}]), "{path}");
            assert!(op["responses"]["401"].is_object(), "{path}");
            assert!(op["responses"]["500"].is_object(), "{path}");
        } else {
            assert!(security.is_null(), "{path}");
        }
    }
    let records = &doc["paths"]["/api/v1/devices/{imei}/records"]["get"]["responses"];
    let content = records["200"]["content"].as_object().unwrap();
    let types: BTreeSet<&str> = content.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        ["application/geo+json", "application/json", "text/csv"].into()
    );
    for code in ["400", "404"] {
        assert!(records[code].is_object(), "{code}");
    }
    assert!(doc["paths"]["/ready"]["get"]["responses"]["503"].is_object());
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 10, "{refs:?}");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "unresolvable {r}");
    }
    let item = &doc["components"]["schemas"]["RecordItem"];
    assert_eq!(item["additionalProperties"], true);
    assert_eq!(item["properties"]["latitude"]["type"], "number");
    assert_eq!(item["properties"]["event_time"]["type"], "integer");
}

/// Every `$ref` value in `v`.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication.
// ---------------------------------------------------------------------------------------------

async fn every_bad_credential_gets_the_same_401(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let (id_part, secret) = fx.read.rsplit_once('_').unwrap();
    let other_secret: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let unknown_id = format!("svoi_000000000000_{secret}");
    let wrong_secret = format!("{id_part}_{other_secret}");
    let cases: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some(format!("Basic {}", fx.read)),
        Some("Bearer not-a-token".to_owned()),
        Some(format!("Bearer {}", fx.read.to_uppercase())),
        Some(format!("Bearer {}x", fx.read)),
        Some(format!("Bearer {unknown_id}")),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("Bearer {}", fx.revoked)),
    ];
    let mut bodies = HashSet::new();
    for auth in &cases {
        let r = send(&app, Method::GET, "/api/v1/devices", auth.as_deref()).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer", "{auth:?}");
        bodies.insert(r.body.clone());
    }
    assert_eq!(bodies.len(), 1, "the 401 bodies differ: {bodies:?}");
}

async fn read_and_admin_tokens_are_accepted_and_revocation_is_immediate(backend: Backend) {
    let mut fx = fixture(backend);
    let app = fx.app();
    for token in [&fx.read, &fx.admin] {
        let r = get(&app, "/api/v1/devices", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = send(
            &app,
            Method::GET,
            "/api/v1/status",
            Some(&format!("bearer  {token}")),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "scheme is case-insensitive");
    }
    // A token made after the router was built works at once; revoking it stops it at once.
    let (text, row) = svoi_api::token::generate("late", TokenScope::Read);
    fx.store.create_token(&row).unwrap();
    assert_eq!(
        get(&app, "/api/v1/devices", Some(&text)).await.status,
        StatusCode::OK
    );
    assert!(fx.store.revoke_token("late").unwrap());
    let r = get(&app, "/api/v1/devices", Some(&text)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// Devices.
// ---------------------------------------------------------------------------------------------

async fn devices_page_through_every_device_once_in_imei_order(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let pages = all_pages(&app, &fx.read, "/api/v1/devices?limit=7").await;
    assert_four_pages(&pages);
    let imeis: Vec<String> = pages
        .iter()
        .flatten()
        .map(|d| d["imei"].as_str().unwrap().to_owned())
        .collect();
    let mut want: Vec<String> = [IMEI_A, IMEI_B, IMEI_C].map(str::to_owned).to_vec();
    want.extend((0..EXTRA_DEVICES).map(extra_imei));
    want.sort();
    assert_eq!(imeis, want);

    let all = get(&app, "/api/v1/devices", Some(&fx.read)).await.json();
    assert_eq!(all["next"], Value::Null);
    let a = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["imei"] == IMEI_A)
        .unwrap();
    assert_eq!(a["device_id"], 77);
    assert_eq!(a["online"], true);
    assert_eq!(a["first_seen"], "2023-11-14T22:13:20.001000Z");
    assert_eq!(a["last_seen"], "2023-11-14T22:13:20.006000Z");
    // The newest valid fix: record 24, the only one at the newest time.
    let pos = &a["last_position"];
    assert_eq!(pos["event_time"], T0 + 12);
    assert!(pos["latitude"].as_f64().unwrap() > 55.75);
    assert_eq!(pos["speed_kmh"], 42.5);
    let extra = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["imei"] == extra_imei(0))
        .unwrap();
    assert_eq!(extra["online"], false);
    assert_eq!(extra["last_position"], Value::Null);
}

async fn device_detail_shows_the_layout_and_404s_unknown_devices(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let r = get(&app, &format!("/api/v1/devices/{IMEI_A}"), Some(&fx.read)).await;
    assert_eq!(r.status, StatusCode::OK);
    let d = r.json();
    assert_eq!(d["imei"], IMEI_A);
    assert_eq!(d["online"], true);
    assert_eq!(d["protocol_version"], 20);
    assert_eq!(d["struct_version"], 20);
    assert_eq!(d["data_size"], 122);
    assert_eq!(d["mask_hex"], "fff0");
    assert_eq!(d["fields"], json!([1, 2, 3, 8, 9]));
    assert_eq!(d["negotiated_at"], "2023-11-14T22:13:20.001000Z");
    assert_eq!(d["records"], 25);

    let r = get(
        &app,
        &format!("/api/v1/devices/{}", extra_imei(1)),
        Some(&fx.read),
    )
    .await;
    let d = r.json();
    assert_eq!(d["protocol_version"], Value::Null);
    assert_eq!(d["mask_hex"], Value::Null);
    assert_eq!(d["fields"], json!([]));
    assert_eq!(d["negotiated_at"], Value::Null);
    assert_eq!(d["records"], 0);

    let r = get(&app, "/api/v1/devices/111", Some(&fx.read)).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------------------------

async fn records_page_through_every_record_once_in_time_order(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let first = format!("/api/v1/devices/{IMEI_A}/records?limit=7");
    let pages = all_pages(&app, &fx.read, &first).await;
    assert_four_pages(&pages);
    let indexes: Vec<u64> = pages
        .iter()
        .flatten()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..25).collect::<Vec<u64>>());

    let items: Vec<&Value> = pages.iter().flatten().collect();
    let r0 = items[0].as_object().unwrap();
    let keys: Vec<&str> = r0.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "index",
            "event_code",
            "event_time",
            "gsm_level",
            "valid",
            "satellites",
            "fix_time",
            "latitude",
            "longitude",
            "altitude_m",
            "speed_kmh",
            "course",
            "odometer_km",
            "power_mv",
            "battery_mv",
            "source",
            "received_at",
            "status",
            "temps",
            "label",
            "lls_1",
            "seq",
        ]
    );
    assert_eq!(r0["event_time"], T0);
    assert_eq!(r0["fix_time"], T0 - 1);
    assert_eq!(r0["valid"], true);
    assert_eq!(r0["latitude"], 55.75);
    assert_eq!(r0["source"], "archive");
    assert_eq!(r0["received_at"], "2023-11-14T22:13:20.002000Z");
    assert_eq!(r0["temps"], json!([1.5, -2]));
    assert_eq!(r0["lls_1"], Value::Null);
    // Absent core values are absent keys, not nulls.
    assert!(!items[3].as_object().unwrap().contains_key("latitude"));
    assert_eq!(items[4]["valid"], false);
    assert_eq!(items[7]["rare_field"], 1);

    // The default page holds them all; an unknown query parameter is ignored.
    let r = get(
        &app,
        &format!("/api/v1/devices/{IMEI_A}/records?colour=red"),
        Some(&fx.read),
    )
    .await;
    let page = r.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 25);
    assert_eq!(page["next"], Value::Null);
}

async fn record_windows_are_half_open_in_rfc3339_or_unix_seconds(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let count = |q: String| {
        let app = app.clone();
        let token = fx.read.clone();
        async move {
            let r = get(
                &app,
                &format!("/api/v1/devices/{IMEI_A}/records?{q}"),
                Some(&token),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text());
            r.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["index"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        }
    };
    // Event times T0 + i/2: [T0+2, T0+4) holds records 4..8.
    assert_eq!(
        count(format!("from={}&to={}", T0 + 2, T0 + 4)).await,
        [4, 5, 6, 7]
    );
    assert_eq!(
        count(format!("from=2023-11-14T22:13:22Z&to={}", T0 + 4)).await,
        [4, 5, 6, 7]
    );
    assert_eq!(
        count("from=2023-11-15T01:13:22%2B03:00&to=2023-11-14T22:13:24Z".to_owned()).await,
        [4, 5, 6, 7]
    );
    // A fraction rounds up on both ends.
    assert_eq!(
        count("from=2023-11-14T22:13:21.5Z&to=2023-11-14T22:13:23.5Z".to_owned()).await,
        [4, 5, 6, 7]
    );
    assert_eq!(count(format!("from={T0}&to={T0}")).await, Vec::<u64>::new());
    assert_eq!(count("to=2023-11-14".to_owned()).await, Vec::<u64>::new());
    assert_eq!(count("from=2023-11-14".to_owned()).await.len(), 25);
    assert_eq!(count("from=-5".to_owned()).await.len(), 25);
}

async fn records_as_csv_have_core_columns_then_the_page_fields(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let first = format!("/api/v1/devices/{IMEI_A}/records?format=csv&limit=10");
    let r = get(&app, &first, Some(&fx.read)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/csv; charset=utf-8");
    let cursor = r.headers["x-next-cursor"].to_str().unwrap().to_owned();
    let text = r.text();
    assert!(text.ends_with("\r\n"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(
        lines[0],
        "index,event_code,event_time,gsm_level,valid,satellites,fix_time,latitude,longitude,\
         altitude_m,speed_kmh,course,odometer_km,power_mv,battery_mv,source,received_at,\
         status,temps,label,lls_1,seq,rare_field"
    );
    assert_eq!(
        lines[1],
        format!(
            "0,4660,{T0},21,true,9,{},55.75,37.61,156.0,42.5,270,12345.6,12600,4100,archive,\
             2023-11-14T22:13:20.002000Z,3,\"[1.5,-2]\",\"a,b\",,0,",
            T0 - 1
        )
    );
    // Record 3 has no coordinates: empty cells.
    assert!(lines[4].starts_with(&format!("3,4660,{},21,true,9,{},,,156.0", T0 + 1, T0)));
    assert!(lines[8].ends_with(",7,1"), "{}", lines[8]);

    // The cursor header leads on; the last page has none.
    let mut uri = format!("{first}&cursor={cursor}");
    let mut rows = 10;
    loop {
        let r = get(&app, &uri, Some(&fx.read)).await;
        assert_eq!(r.status, StatusCode::OK);
        rows += r.text().lines().count() - 1;
        match r.headers.get("x-next-cursor") {
            Some(c) => uri = format!("{first}&cursor={}", c.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(rows, 25);
}

async fn records_as_geojson_are_a_track_then_points(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let uri = format!("/api/v1/devices/{IMEI_A}/records?format=geojson&limit=6");
    let r = get(&app, &uri, Some(&fx.read)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/geo+json");
    let fc = r.json();
    assert_eq!(fc["type"], "FeatureCollection");
    assert!(fc["next"].is_string());
    let features = fc["features"].as_array().unwrap();
    // Records 0..6: 3 has no coordinates, 4 no valid fix.
    let track = &features[0];
    assert_eq!(track["type"], "Feature");
    assert_eq!(track["geometry"]["type"], "LineString");
    let line = track["geometry"]["coordinates"].as_array().unwrap();
    assert_eq!(line.len(), 4);
    assert_eq!(line[0], json!([37.61, 55.75]));
    let points = &features[1..];
    assert_eq!(points.len(), 5);
    let indexes: Vec<u64> = points
        .iter()
        .map(|p| {
            assert_eq!(p["type"], "Feature");
            assert_eq!(p["geometry"]["type"], "Point");
            let c = p["geometry"]["coordinates"].as_array().unwrap();
            assert_eq!(c[0], p["properties"]["longitude"]);
            assert_eq!(c[1], p["properties"]["latitude"]);
            p["properties"]["index"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(indexes, [0, 1, 2, 4, 5]);
    assert_eq!(points[0]["properties"]["source"], "archive");
    assert_eq!(points[0]["properties"]["label"], "a,b");

    // One valid fix on a page: no LineString.
    let uri = format!(
        "/api/v1/devices/{IMEI_A}/records?format=geojson&from={}&to={}",
        T0 + 1,
        T0 + 2
    );
    let fc = get(&app, &uri, Some(&fx.read)).await.json();
    let features = fc["features"].as_array().unwrap();
    assert_eq!(features.len(), 1);
    assert_eq!(features[0]["geometry"]["type"], "Point");
    assert_eq!(fc["next"], Value::Null);
}

async fn records_and_events_of_unknown_devices_are_404(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    for tail in ["records", "records?format=csv", "events"] {
        let r = get(&app, &format!("/api/v1/devices/111/{tail}"), Some(&fx.read)).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // A known device with nothing in range is an empty page, not a 404.
    let r = get(
        &app,
        &format!("/api/v1/devices/{}/records", extra_imei(0)),
        Some(&fx.read),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"items": [], "next": null}));
}

// ---------------------------------------------------------------------------------------------
// Events, raw frames, decode errors, status.
// ---------------------------------------------------------------------------------------------

async fn events_page_through_every_alarm_once(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let first = format!("/api/v1/devices/{IMEI_B}/events?limit=7");
    let pages = all_pages(&app, &fx.read, &first).await;
    assert_four_pages(&pages);
    let items: Vec<&Value> = pages.iter().flatten().collect();
    let indexes: Vec<u64> = items
        .iter()
        .map(|e| e["event_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..25).collect::<Vec<u64>>());
    let e = items[0].as_object().unwrap();
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "event_index",
            "record_index",
            "event_time",
            "event_code",
            "latitude",
            "longitude",
            "received_at"
        ]
        .into()
    );
    assert_eq!(e["record_index"], 100);
    assert_eq!(e["event_time"], T0 + 100);
    assert_eq!(e["event_code"], 0x1234);

    // Alarm records are records too, with source "alarm".
    let r = get(
        &app,
        &format!("/api/v1/devices/{IMEI_B}/records?limit=1"),
        Some(&fx.read),
    )
    .await;
    assert_eq!(r.json()["items"][0]["source"], "alarm");
    // Device A has no alarms.
    let r = get(
        &app,
        &format!("/api/v1/devices/{IMEI_A}/events"),
        Some(&fx.read),
    )
    .await;
    assert_eq!(r.json(), json!({"items": [], "next": null}));
}

async fn raw_frames_page_through_all_or_one_device(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let pages = all_pages(
        &app,
        &fx.read,
        &format!("/api/v1/raw-frames?imei={IMEI_C}&limit=7"),
    )
    .await;
    assert_four_pages(&pages);
    let ids: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let f = &pages[0][0];
    assert_eq!(f["imei"], IMEI_C);
    assert_eq!(f["conn_id"], 7);
    assert_eq!(f["kind"], "~A");
    assert_eq!(f["status"], "error");
    assert_eq!(f["error_reason"], "crc");
    assert_eq!(f["error"], "crc mismatch");
    assert!(f["hex"].as_str().unwrap().starts_with("7e41"));
    assert!(f["received_at"].as_str().unwrap().ends_with('Z'));

    let pages = all_pages(&app, &fx.read, "/api/v1/raw-frames?limit=1000").await;
    let all: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(all.len(), 6 + 25 + 25 + 1 + EXTRA_DEVICES);
    let garbage = all.iter().find(|f| f["status"] == "garbage").unwrap();
    assert_eq!(garbage["imei"], Value::Null);
    assert_eq!(all[0]["kind"], "*>FLEX");
    assert_eq!(all[0]["error"], Value::Null);

    // Receive times are microseconds: the first two frames are 1 ms apart.
    let q = "/api/v1/raw-frames?from=2023-11-14T22:13:20.001Z&to=2023-11-14T22:13:20.002001Z";
    let r = get(&app, q, Some(&fx.read)).await.json();
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    // An unknown device is an empty page.
    let r = get(&app, "/api/v1/raw-frames?imei=111", Some(&fx.read)).await;
    assert_eq!(r.json(), json!({"items": [], "next": null}));
}

async fn decode_errors_page_through_every_failure_once(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let pages = all_pages(
        &app,
        &fx.read,
        &format!("/api/v1/decode-errors?imei={IMEI_C}&limit=7"),
    )
    .await;
    assert_four_pages(&pages);
    let frames: HashSet<i64> = pages
        .iter()
        .flatten()
        .map(|e| e["frame_id"].as_i64().unwrap())
        .collect();
    assert_eq!(frames.len(), 25);
    let e = pages[0][0].as_object().unwrap();
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "frame_id",
            "imei",
            "received_at",
            "kind",
            "reason",
            "error"
        ]
        .into()
    );
    assert_eq!(e["imei"], IMEI_C);
    assert_eq!(e["kind"], "~A");
    assert_eq!(e["reason"], "crc");

    let r = get(&app, "/api/v1/decode-errors?limit=1000", Some(&fx.read))
        .await
        .json();
    let all = r["items"].as_array().unwrap();
    assert_eq!(all.len(), 26);
    assert!(
        all.iter()
            .any(|e| e["reason"] == "sync_lost" && e["imei"].is_null())
    );
}

async fn status_summarises_live_figures_and_the_database(backend: Backend) {
    let fx = fixture(backend);
    let r = get(&fx.app(), "/api/v1/status", Some(&fx.read)).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = r.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_seconds"].is_u64());
    assert_eq!(s["connected_devices"], 3);
    assert_eq!(s["queue_depth"], 2);
    assert_eq!(s["last_frame_time"], "2023-11-14T22:13:20.123000Z");
    assert!(s["frames_per_second"].as_f64().unwrap() >= 0.0);
    let rate = s["decode_error_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate), "{rate}");
    assert!(s["database_size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["writer_alive"], true);
    assert_eq!(s["maintenance"], false);
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

async fn bad_parameters_get_their_own_codes(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let records = format!("/api/v1/devices/{IMEI_A}/records");
    let cases: Vec<(String, &str)> = vec![
        (format!("{records}?from=yesterday"), "invalid_time"),
        (format!("{records}?to=2023-02-29"), "invalid_time"),
        ("/api/v1/raw-frames?from=".to_owned(), "invalid_time"),
        (
            format!("{records}?from={}&to={T0}", T0 + 1),
            "invalid_range",
        ),
        (
            "/api/v1/decode-errors?from=2024-01-02&to=2024-01-01".to_owned(),
            "invalid_range",
        ),
        (format!("{records}?limit=0"), "invalid_limit"),
        (format!("{records}?limit=10001"), "invalid_limit"),
        ("/api/v1/devices?limit=1001".to_owned(), "invalid_limit"),
        (
            format!("/api/v1/devices/{IMEI_B}/events?limit=abc"),
            "invalid_limit",
        ),
        (format!("{records}?cursor=zzz"), "invalid_cursor"),
        ("/api/v1/raw-frames?cursor=1_".to_owned(), "invalid_cursor"),
        ("/api/v1/devices?cursor=abc".to_owned(), "invalid_cursor"),
        (
            "/api/v1/devices/12345678901234567890123".to_owned(),
            "invalid_imei",
        ),
        ("/api/v1/devices/abc/records".to_owned(), "invalid_imei"),
        ("/api/v1/devices/12%2034/events".to_owned(), "invalid_imei"),
        ("/api/v1/decode-errors?imei=x1".to_owned(), "invalid_imei"),
        (format!("{records}?format=xml"), "invalid_format"),
        (format!("{records}?limit=1&limit=2"), "bad_request"),
        ("/api/v1/devices/%FF%FE".to_owned(), "bad_request"),
    ];
    for (uri, code) in cases {
        let r = get(&app, &uri, Some(&fx.read)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert!(r.json()["error"]["message"].is_string(), "{uri}");
    }
}

async fn unknown_routes_and_methods_are_json_errors(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    for path in ["/", "/nope", "/health/x", "/docsx"] {
        let r = get(&app, path, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // Under /api/v1 even a 404 needs a token.
    for path in ["/api/v1", "/api/v1/nope", "/api/v1/devices/1/nope"] {
        let r = get(&app, path, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let r = get(&app, path, Some(&fx.read)).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    let r = send(&app, Method::POST, "/health", None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.headers.contains_key(header::ALLOW));
    let auth = format!("Bearer {}", fx.read);
    let r = send(&app, Method::DELETE, "/api/v1/devices", Some(&auth)).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

// ---------------------------------------------------------------------------------------------
// Request metrics.
// ---------------------------------------------------------------------------------------------

fn requests_are_counted_by_route_template_never_by_raw_path(backend: Backend) {
    let fx = fixture(backend);
    let app = fx.app();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let device = format!("/api/v1/devices/{IMEI_A}");
            assert_eq!(
                get(&app, &device, Some(&fx.read)).await.status,
                StatusCode::OK
            );
            let records = format!("/api/v1/devices/{IMEI_A}/records?limit=2");
            assert_eq!(
                get(&app, &records, Some(&fx.read)).await.status,
                StatusCode::OK
            );
            let scan = format!("/wp-admin/{IMEI_B}");
            assert_eq!(get(&app, &scan, None).await.status, StatusCode::NOT_FOUND);
            let hidden = format!("/api/v1/x/{IMEI_B}");
            assert_eq!(
                get(&app, &hidden, Some(&fx.read)).await.status,
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                get(&app, "/api/v1/devices", None).await.status,
                StatusCode::UNAUTHORIZED
            );
            let (id_part, secret) = fx.read.rsplit_once('_').unwrap();
            let unknown = format!("svoi_000000000000_{secret}");
            let mismatch = format!("{id_part}_{}", "0".repeat(64));
            for token in ["svoi_nope", &unknown, &mismatch, &fx.revoked] {
                let r = get(&app, "/api/v1/status", Some(token)).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            }
        });
    });
    let text = handle.render();
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"svoi_http_requests_total{route="/api/v1/devices/{imei}",method="GET",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(has(
        r#"svoi_http_requests_total{route="/api/v1/devices/{imei}/records",method="GET",status="200"} 1"#
    ));
    assert!(
        has(r#"svoi_http_requests_total{route="unmatched",method="GET",status="404"} 2"#),
        "{text}"
    );
    assert!(has(
        r#"svoi_http_requests_total{route="/api/v1/devices",method="GET",status="401"} 1"#
    ));
    assert!(has(
        r#"svoi_http_requests_total{route="/api/v1/status",method="GET",status="401"} 4"#
    ));
    assert!(has(r#"svoi_http_request_duration_seconds"#));
    for reason in ["missing", "malformed", "unknown", "mismatch", "revoked"] {
        let line = format!(r#"svoi_api_auth_failures_total{{reason="{reason}"}} 1"#);
        assert!(has(&line), "{line}\n{text}");
    }
    for imei in [IMEI_A, IMEI_B] {
        assert!(!text.contains(imei), "an IMEI in a label:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Serving.
// ---------------------------------------------------------------------------------------------

async fn serve_answers_on_a_socket_until_cancelled(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fx = fixture(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(svoi_api::serve(listener, fx.app(), stop.clone()));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: svoi\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    stop.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("serve stops after cancellation")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
