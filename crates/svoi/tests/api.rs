//! The HTTP API end to end: `svoi serve` as a process, `svoi token create` beside it, a
//! `svoi sim` fleet, and API reads that must return exactly the records the simulator saw
//! acknowledged, with their coordinates and times; then `/metrics`, `/ready`, and revocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{BIN, client, free_addr, serve_api, sigterm, sim};

/// GET `path` on the API at `api`; the status and the body text.
fn get(agent: &ureq::Agent, api: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    util::get(agent, &format!("http://{api}{path}"), token)
}

fn get_json(agent: &ureq::Agent, api: SocketAddr, path: &str, token: &str) -> Value {
    let (status, body) = get(agent, api, path, Some(token));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `svoi token ...` against the server's database; stdout, and the exit code.
fn token_cmd(dir: &Path, db: &str, args: &[&str]) -> (String, i32) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["--db", db, "token"])
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

/// One acknowledged record as the simulator logged it.
#[derive(Debug, Clone, PartialEq)]
struct Acked {
    event_time: i64,
    position: Option<(f64, f64)>,
}

fn parse_acked(text: &str) -> BTreeMap<String, BTreeMap<u32, Acked>> {
    let mut out: BTreeMap<String, BTreeMap<u32, Acked>> = BTreeMap::new();
    for line in text.lines() {
        let p: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(p.len(), 5, "acked log line {line:?}");
        let position = match (p[3], p[4]) {
            ("-", "-") => None,
            (lat, lon) => Some((lat.parse().unwrap(), lon.parse().unwrap())),
        };
        let previous = out.entry(p[0].to_string()).or_default().insert(
            p[1].parse().unwrap(),
            Acked {
                event_time: p[2].parse().unwrap(),
                position,
            },
        );
        assert!(previous.is_none(), "acknowledged twice: {line}");
    }
    out
}

/// Every record of `imei` through the paged JSON endpoint, following `next`.
fn all_records(
    agent: &ureq::Agent,
    api: SocketAddr,
    token: &str,
    imei: &str,
    query: &str,
) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/devices/{imei}/records?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(agent, api, &path, token);
        pages += 1;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match &page["next"] {
            Value::Null => break,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next is {other}"),
        }
        assert!(pages < 1000, "paging does not end");
    }
    (items, pages)
}

#[test]
fn api_returns_exactly_the_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, api) = (free_addr(), free_addr());
    let db = format!("sqlite:{}", dir.path().join("svoi.db").display());
    let log = dir.path().join("serve.log");
    let mut server = serve_api(dir.path(), Some(&db), addr, api, &log, &[]);
    let agent = client();

    // Health needs no token; the data routes do.
    let (status, body) = get(&agent, api, "/health", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&agent, api, "/api/v1/devices", None);
    assert_eq!(status, 401, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "unauthorized", "{body}");

    // A token made by another process while the server runs works at once.
    let (out, code) = token_cmd(dir.path(), &db, &["create", "--name", "e2e"]);
    assert_eq!(code, 0, "{out}");
    let token = out.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("svoi_"), "{out}");
    assert!(
        get_json(&agent, api, "/api/v1/devices", &token)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let acked_log = dir.path().join("acked.log");
    let out = sim(
        addr,
        &[
            "--devices",
            "4",
            "--records",
            "600",
            "--batch",
            "40",
            "--acked-log",
            acked_log.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked = parse_acked(&std::fs::read_to_string(&acked_log).unwrap());
    assert_eq!(acked.len(), 4);
    assert_eq!(acked.values().map(BTreeMap::len).sum::<usize>(), 2400);

    for (imei, expected) in &acked {
        // Every acknowledged record, once, in time order, over several pages.
        let (items, pages) = all_records(&agent, api, &token, imei, "limit=130");
        assert!(pages >= 5, "{pages} pages for {imei}");
        assert_eq!(items.len(), expected.len(), "{imei}");
        let mut seen = HashSet::new();
        let mut last_time = i64::MIN;
        let mut fixes = 0;
        for item in &items {
            let index = u32::try_from(item["index"].as_u64().unwrap()).unwrap();
            assert!(seen.insert(index), "{imei} record {index} returned twice");
            let want = expected
                .get(&index)
                .unwrap_or_else(|| panic!("{imei} record {index} was never acknowledged"));
            let time = item["event_time"].as_i64().unwrap();
            assert_eq!(time, want.event_time, "{imei} record {index}");
            assert!(time >= last_time, "records out of time order");
            last_time = time;
            match want.position {
                Some((lat, lon)) => {
                    fixes += 1;
                    assert_eq!(item["valid"], true, "{item}");
                    let got = (
                        item["latitude"].as_f64().unwrap(),
                        item["longitude"].as_f64().unwrap(),
                    );
                    assert!(
                        (got.0 - lat).abs() < 1e-6 && (got.1 - lon).abs() < 1e-6,
                        "{imei} record {index}: {got:?}, sent ({lat}, {lon})"
                    );
                }
                None => assert_eq!(item["valid"], false, "{item}"),
            }
        }
        assert!(
            fixes > 0 && fixes < items.len(),
            "{fixes} of {}",
            items.len()
        );

        // A time window, RFC 3339 on one side and Unix seconds on the other, is half-open.
        let t0 = expected.values().map(|a| a.event_time).min().unwrap();
        let from = t0 + 100;
        let to = t0 + 250;
        let from_text = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(from as u64),
        );
        let (window, _) = all_records(
            &agent,
            api,
            &token,
            imei,
            &format!("from={from_text}&to={to}&limit=1000"),
        );
        let want: usize = expected
            .values()
            .filter(|a| (from..to).contains(&a.event_time))
            .count();
        assert_eq!(window.len(), want, "{imei} window");
        assert!(want > 0);
    }

    // The device list: every simulated device, offline once the fleet has gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let devices = get_json(&agent, api, "/api/v1/devices", &token);
        let items = devices["items"].as_array().unwrap();
        let imeis: Vec<&str> = items.iter().map(|d| d["imei"].as_str().unwrap()).collect();
        assert_eq!(imeis, acked.keys().map(String::as_str).collect::<Vec<_>>());
        if items.iter().all(|d| d["online"] == false) {
            assert!(items.iter().all(|d| d["last_position"].is_object()));
            break;
        }
        assert!(Instant::now() < deadline, "devices still online: {devices}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Metrics need no token and count what was stored.
    let (status, metrics) = get(&agent, api, "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("svoi_records_stored_total ") && l.ends_with(" 2400")),
        "{metrics}"
    );
    assert!(metrics.contains("svoi_messages_received_total{type=\"~A\"}"));
    assert!(metrics.contains("svoi_commit_duration_seconds_bucket"));
    assert!(metrics.contains("svoi_ack_latency_seconds_count"));
    assert!(metrics.contains("svoi_http_requests_total{"));
    for imei in acked.keys() {
        assert!(!metrics.contains(imei.as_str()), "an IMEI in /metrics");
    }
    let (status, ready) = get(&agent, api, "/ready", None);
    assert_eq!(status, 200, "{ready}");
    let status_doc = get_json(&agent, api, "/api/v1/status", &token);
    assert_eq!(status_doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(status_doc["database_size_bytes"].as_u64().unwrap() > 0);

    // Revocation by another process takes effect on the next request.
    let (out, code) = token_cmd(dir.path(), &db, &["revoke", "e2e"]);
    assert_eq!(code, 0, "{out}");
    let (status, _) = get(&agent, api, "/api/v1/devices", Some(&token));
    assert_eq!(status, 401);
    let (out, code) = token_cmd(dir.path(), &db, &["list", "--json"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains(&token[token.len() - 16..]),
        "list shows the secret"
    );
    let listed: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(listed["name"], "e2e");
    assert!(listed["revoked_at"].is_string());

    assert!(sigterm(&mut server).success());
}

#[test]
fn token_commands_refuse_bad_input_and_never_show_a_secret_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("svoi.db").display());
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .args(["--db", &db, "token"])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
            out.status.code().unwrap_or(-1),
        )
    };
    let (out, _, code) = run(&["create", "--name", "ops", "--scope", "admin"]);
    assert_eq!(code, 0);
    let token = out.lines().last().unwrap().to_string();
    // The same name while the first is active: refused, nothing printed that looks like one.
    let (out, err, code) = run(&["create", "--name", "ops"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("exists"), "{err}");
    assert!(!out.contains("svoi_"), "{out}");
    let (_, err, code) = run(&["create", "--name", "has space"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid token name"), "{err}");
    let (_, _, code) = run(&["create", "--name", "x", "--scope", "root"]);
    assert_eq!(code, 2);
    let (out, _, code) = run(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("ops") && out.contains("admin"), "{out}");
    let secret = token.rsplit('_').next().unwrap();
    assert!(!out.contains(secret), "list shows the secret");
    let (_, err, code) = run(&["revoke", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no active token"), "{err}");
    assert_eq!(run(&["revoke", "ops"]).2, 0);
    assert_eq!(run(&["revoke", "ops"]).2, 1, "revoked twice");
    // The name is free again; the new token differs from the revoked one.
    let (out, _, code) = run(&["create", "--name", "ops"]);
    assert_eq!(code, 0);
    assert_ne!(out.lines().last().unwrap(), token);
    // Only hashes are stored.
    let conn = rusqlite::Connection::open(dir.path().join("svoi.db")).unwrap();
    let mut stmt = conn.prepare("SELECT * FROM api_tokens").unwrap();
    let columns = stmt.column_count();
    let rows: Vec<String> = stmt
        .query_map([], |row| {
            Ok((0..columns)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join(" "))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    let hex_secret = secret.to_string();
    assert!(rows.iter().all(|r| !r.contains(&hex_secret)), "{rows:?}");
}

#[test]
fn metrics_listener_serves_only_metrics_and_a_busy_api_port_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("svoi.db").display());
    let (addr, api, metrics) = (free_addr(), free_addr(), free_addr());
    let log = dir.path().join("serve.log");
    let metrics_env = metrics.to_string();
    let mut server = serve_api(
        dir.path(),
        Some(&db),
        addr,
        api,
        &log,
        &[("SVOI_API_METRICS_LISTEN", metrics_env.as_str())],
    );
    let agent = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(metrics).is_err() {
        assert!(Instant::now() < deadline, "no metrics listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = get(&agent, metrics, "/metrics", None);
    assert_eq!(status, 200);
    assert!(body.contains("svoi_build_info{version="), "{body}");
    let (status, body) = get(&agent, metrics, "/api/v1/devices", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );

    // A second server whose API port is taken refuses to start, naming the key (on a
    // database of its own: the first server's lock would refuse it before).
    let other = format!("sqlite:{}", dir.path().join("other.db").display());
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--db", &other])
        .args(["--listen", &free_addr().to_string()])
        .args(["--api-listen", &api.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.listen"), "{err}");
    assert!(sigterm(&mut server).success());
}
