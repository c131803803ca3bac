//! `svoi serve` processes on PostgreSQL: two servers on one database with devices that move
//! between them, and a database that stops under load and comes back. In both, every record a
//! device was told is stored must be stored exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{client, free_addr, serve_api, sigterm, sim, sim_report, wait_for};

/// A stored or acknowledged record: IMEI, record index, event time.
type Key = (String, i64, i64);

/// Every record in the database, through `psql` (one `imei|index|time` line each).
fn stored(psql: impl Fn(&str) -> String) -> Vec<Key> {
    psql(
        "SELECT d.imei || '|' || r.record_index || '|' || r.event_time
         FROM records r JOIN devices d ON d.id = r.device",
    )
    .lines()
    .map(|line| {
        let p: Vec<&str> = line.split('|').collect();
        (
            p[0].to_owned(),
            p[1].parse().unwrap(),
            p[2].parse().unwrap(),
        )
    })
    .collect()
}

/// The keys in an `--acked-log` file.
fn acked(path: &Path) -> Vec<Key> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let p: Vec<&str> = line.split_whitespace().collect();
            (
                p[0].to_owned(),
                p[1].parse().unwrap(),
                p[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Asserts that nothing is stored twice and that every acknowledged key is stored; returns
/// the number of records stored per IMEI.
fn check_exactly_once(stored: &[Key], acked: &[Key]) -> HashMap<String, u64> {
    let unique: HashSet<&Key> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a record is stored twice");
    let missing: Vec<&Key> = acked.iter().filter(|k| !unique.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records are not stored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut per_device = HashMap::new();
    for (imei, _, _) in stored {
        *per_device.entry(imei.clone()).or_insert(0) += 1;
    }
    per_device
}

/// Runs `svoi sim` in the background with JSON on stdout.
fn fleet(addr: SocketAddr, args: &[&str]) -> Child {
    sim(addr, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a fleet and returns its report; panics unless it succeeded.
fn finished(mut fleet: Child, limit: Duration) -> serde_json::Value {
    let status = wait_for(&mut fleet, limit);
    let out = fleet.wait_with_output().unwrap();
    let report = sim_report(&out);
    assert!(status.success(), "sim failed: {report}");
    report
}

/// `GET url` without a token.
fn get(url: &str) -> (u16, String) {
    util::get(&client(), url, None)
}

/// Two servers on one database. One fleet (4 devices) stays on server 1 throughout. The
/// movers (4 devices) start on server 1 and are cut off partway; the same devices then
/// connect to server 2 and send their whole archive again (a fresh `svoi sim` remembers no
/// acknowledgement, so everything server 1 stored comes back), while a third fleet sends to
/// server 2 at the same time. In the end each device's records are stored exactly once, server
/// 2 counted the resent ones as duplicates, and both servers answer for every device through
/// the API with one token.
#[test]
fn two_servers_share_one_database_and_a_device_moves_between_them() {
    let db = svoi_testpg::database();
    let dir = tempfile::tempdir().unwrap();
    let (dev1, api1, dev2, api2) = (free_addr(), free_addr(), free_addr(), free_addr());
    let log = dir.path().join("serve.log");
    let mut s1 = serve_api(dir.path(), Some(db.url()), dev1, api1, &log, &[]);
    let mut s2 = serve_api(dir.path(), Some(db.url()), dev2, api2, &log, &[]);
    let acked_path = dir.path().join("acked.log");
    let acked_arg = acked_path.to_str().unwrap();
    let common = |base: &'static str, records: &'static str| {
        vec![
            "--devices",
            "4",
            "--records",
            records,
            "--batch",
            "25",
            "--imei-base",
            base,
            "--reconnect-for",
            "20s",
            "--acked-log",
            acked_arg,
        ]
    };

    // The movers on server 1, cut off after part of their records.
    let mut first = common("861000000000000", "3000");
    first.extend(["--rate", "1500", "--duration", "1s"]);
    let cut = fleet(dev1, &first);
    let stay = fleet(dev1, &common("862000000000000", "1500"));
    let status = wait_for(&mut { cut }, Duration::from_secs(60));
    assert!(!status.success(), "the movers were meant to be cut off");
    let moved_before = acked(&acked_path)
        .iter()
        .filter(|k| k.0.starts_with("861"))
        .count();
    assert!(
        moved_before > 0,
        "the movers got nothing acknowledged on server 1"
    );
    assert!(moved_before < 4 * 3000, "the movers finished on server 1");

    // The same devices on server 2, beside another fleet there.
    let moved = fleet(dev2, &common("861000000000000", "3000"));
    let other = fleet(dev2, &common("863000000000000", "1500"));
    for (f, name) in [(stay, "stay"), (moved, "moved"), (other, "other")] {
        let report = finished(f, Duration::from_secs(120));
        assert_eq!(report["reply_mismatches"], 0, "{name}: {report}");
    }

    let stored = stored(|sql| db.psql(sql));
    let per_device = check_exactly_once(&stored, &acked(&acked_path));
    assert_eq!(per_device.len(), 12, "{per_device:?}");
    for (imei, n) in &per_device {
        let want = if imei.starts_with("861") { 3000 } else { 1500 };
        assert_eq!(*n, want, "{imei}");
    }
    // Server 2 found server 1's rows already there: the movers' first part came back as
    // duplicates, not as new rows.
    let (_, metrics) = get(&format!("http://{api2}/metrics"));
    let dups: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("svoi_records_duplicate_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no duplicate counter: {metrics}"));
    assert!(dups >= moved_before as f64, "{dups} < {moved_before}");

    // One token, created once, works on both servers; both list every device.
    let token = util::create_token(db.url(), "ops");
    for api in [api1, api2] {
        let url = format!("http://{api}/api/v1/devices?limit=100");
        let (status, body) = util::get(&client(), &url, Some(&token));
        assert_eq!(status, 200, "{api}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["items"].as_array().map(Vec::len),
            Some(12),
            "{api}: {body}"
        );
    }
    assert!(sigterm(&mut s1).success());
    assert!(sigterm(&mut s2).success());
}

/// PostgreSQL stops (fast shutdown: every connection is cut) while a fleet is sending, and
/// starts again a few seconds later. Meanwhile the server acknowledges nothing, `/ready` is 503
/// and `svoi_database_up` is 0; afterwards it reconnects by itself, the devices' resends are
/// stored, and every acknowledged record is stored exactly once.
#[test]
fn postgres_stopping_under_load_loses_nothing_and_recovers_by_itself() {
    let cluster = svoi_testpg::Cluster::start();
    let db = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let (dev, api) = (free_addr(), free_addr());
    let log = dir.path().join("serve.log");
    let mut server = serve_api(
        dir.path(),
        Some(db.url()),
        dev,
        api,
        &log,
        &[("SVOI_POSTGRES_CONNECT_TIMEOUT", "1s")],
    );
    let acked_path = dir.path().join("acked.log");
    let (devices, records) = (8u64, 4_000u64);
    let f = fleet(
        dev,
        &[
            "--devices",
            &devices.to_string(),
            "--records",
            &records.to_string(),
            "--batch",
            "20",
            "--rate",
            "1000",
            "--reconnect-for",
            "60s",
            "--acked-log",
            acked_path.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked(&acked_path).len() < 2_000 {
        assert!(Instant::now() < deadline, "no acknowledgements");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = get(&format!("http://{api}/ready"));
    assert_eq!(status, 200, "ready before the stop");

    cluster.stop();
    let stopped_at = acked(&acked_path).len();
    // While the database is down: no acknowledgement (after those already in flight), not
    // ready, and the gauge says why.
    std::thread::sleep(Duration::from_millis(1500));
    let during = acked(&acked_path).len();
    let (ready, body) = get(&format!("http://{api}/ready"));
    let (_, metrics) = get(&format!("http://{api}/metrics"));
    std::thread::sleep(Duration::from_millis(1500));
    let still = acked(&acked_path).len();
    cluster.start_again();

    let report = finished(f, Duration::from_secs(120));
    assert_eq!(report["reply_mismatches"], 0, "{report}");
    assert!(report["reconnects"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(ready, 503, "ready while the database is down: {body}");
    assert!(body.contains("database"), "{body}");
    assert!(
        metrics.lines().any(|l| l == "svoi_database_up 0"),
        "svoi_database_up while down: {}",
        metrics
            .lines()
            .filter(|l| l.contains("database"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(during, still, "acknowledged while the database was down");
    assert!(stopped_at <= during);

    // Back to normal by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = get(&format!("http://{api}/ready"));
        let (_, metrics) = get(&format!("http://{api}/metrics"));
        if status == 200 && metrics.lines().any(|l| l == "svoi_database_up 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sigterm(&mut server).success());

    let stored = stored(|sql| db.psql(sql));
    let acked = acked(&acked_path);
    let per_device = check_exactly_once(&stored, &acked);
    assert_eq!(acked.len() as u64, devices * records);
    assert_eq!(per_device.len() as u64, devices);
    assert!(per_device.values().all(|&n| n == records), "{per_device:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("database unreachable"), "{log}");
    assert!(log.contains("database reachable again"), "{log}");
}

/// The runbooks' PostgreSQL queries (```sql postgres blocks; the SQLite ones run in the
/// binary's unit tests) run on a migrated database, as the on-call engineer would paste them.
/// (```sql pg_stat_statements blocks need that extension preloaded at server start: not run.)
#[test]
fn every_postgres_query_in_the_runbooks_runs_on_the_real_schema() {
    let db = svoi_testpg::database();
    let out = std::process::Command::new(util::BIN)
        .args(["--db", db.url(), "db", "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/runbooks");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut block: Option<String> = None;
        for line in text.lines() {
            let fence = line.trim_start().strip_prefix("```");
            match (&mut block, fence) {
                (None, Some(info)) if info.trim() == "sql postgres" => block = Some(String::new()),
                (Some(sql), Some(_)) => {
                    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                        if let Err(e) =
                            db.try_psql(&format!("BEGIN READ ONLY; {statement}; ROLLBACK"))
                        {
                            panic!("{}: {e}\n{statement}", path.display());
                        }
                        checked += 1;
                    }
                    block = None;
                }
                (Some(sql), None) => {
                    sql.push_str(line);
                    sql.push('\n');
                }
                _ => {}
            }
        }
    }
    assert!(checked >= 3, "only {checked} PostgreSQL queries found");
}
