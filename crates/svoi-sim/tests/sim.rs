//! The simulator against a tiny in-test server over loopback TCP, built from the codec's
//! `Session`: every record acknowledged exactly once, resends after a dropped connection or a
//! silent server, wrong replies detected, the time limit honoured, profiles deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svoi_proto::flex::FlexBody;
use svoi_proto::{Body, Session, Step};
use svoi_sim::{Ack, SimConfig, SimReport, device_profile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How the fake server misbehaves.
#[derive(Debug, Default)]
struct Faults {
    /// Close the connection instead of answering the next `~A`.
    drop_archive_once: AtomicBool,
    /// Answer nothing to the next `~A` (and keep the connection open).
    silent_archive_once: AtomicBool,
    /// Flip a bit of the next `~A` reply.
    corrupt_archive_once: AtomicBool,
    /// Flip a bit of every handshake reply.
    corrupt_every_handshake: AtomicBool,
    /// Answer nothing at all after the negotiation.
    never_answer_data: AtomicBool,
}

/// What the fake server saw: (IMEI, index, event time) of every stored `~A`/`~T` record
/// (duplicates included), records without a fix, and `~C` count.
#[derive(Debug, Default)]
struct Seen {
    stored: Mutex<Vec<(String, u32, u32)>>,
    no_fix: AtomicU64,
    currents: AtomicU64,
}

struct FakeServer {
    addr: std::net::SocketAddr,
    faults: Arc<Faults>,
    seen: Arc<Seen>,
}

async fn fake_server() -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let seen = Arc::new(Seen::default());
    let (f, s) = (Arc::clone(&faults), Arc::clone(&seen));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(socket, Arc::clone(&f), Arc::clone(&s)));
        }
    });
    FakeServer { addr, faults, seen }
}

fn take(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::SeqCst)
}

async fn serve(mut socket: TcpStream, faults: Arc<Faults>, seen: Arc<Seen>) {
    let mut session = Session::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Step::Message(m) = session.decode(&buf) {
            assert!(
                m.error().is_none(),
                "the simulator sent a bad message: {m:?}"
            );
            buf.drain(..m.len);
            let imei = session
                .identity()
                .map(|i| i.imei.clone())
                .unwrap_or_default();
            let mut data = false;
            let mut archive = false;
            if let Body::Flex(f) = &m.body {
                data = true;
                archive = matches!(f.body, FlexBody::Archive { .. });
                if matches!(f.body, FlexBody::Current { .. }) {
                    seen.currents.fetch_add(1, Ordering::SeqCst);
                } else {
                    let mut stored = seen.stored.lock().unwrap();
                    for r in f.records() {
                        let c = r.core();
                        if c.nav_status.is_some_and(|s| s & 0b10 == 0) {
                            assert_eq!((c.latitude_raw, c.longitude_raw), (Some(0), Some(0)));
                            seen.no_fix.fetch_add(1, Ordering::SeqCst);
                        }
                        stored.push((imei.clone(), c.index.unwrap(), c.event_time.unwrap()));
                    }
                }
            }
            let Some(reply) = m.reply else { continue };
            let mut bytes = reply.to_bytes();
            if data && faults.never_answer_data.load(Ordering::SeqCst) {
                continue;
            }
            if archive && take(&faults.drop_archive_once) {
                return;
            }
            if archive && take(&faults.silent_archive_once) {
                continue;
            }
            let handshake = matches!(&m.body, Body::Ntcb(_)) && bytes.ends_with(b"*<S");
            if (archive && take(&faults.corrupt_archive_once))
                || (handshake && faults.corrupt_every_handshake.load(Ordering::SeqCst))
            {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
            }
            if socket.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

fn config(addr: std::net::SocketAddr) -> SimConfig {
    SimConfig {
        addr,
        reply_timeout: Duration::from_secs(2),
        reconnect_for: Duration::from_secs(3),
        seed: 7,
        ..SimConfig::default()
    }
}

/// Runs the simulation collecting every acknowledgement, within a hard test time limit.
async fn simulate(cfg: SimConfig) -> (SimReport, Vec<Ack>) {
    let (tx, mut rx) = mpsc::channel(16);
    let collector = tokio::spawn(async move {
        let mut acks = Vec::new();
        while let Some(a) = rx.recv().await {
            acks.push(a);
        }
        acks
    });
    let report = tokio::time::timeout(Duration::from_secs(30), svoi_sim::run(cfg, Some(tx)))
        .await
        .expect("the simulation ends in time")
        .expect("a valid config");
    (report, collector.await.unwrap())
}

/// Every (IMEI, index, event time) the fleet of `cfg` must get acknowledged.
fn expected_acks(cfg: &SimConfig) -> BTreeSet<(String, u32, u32)> {
    (0..cfg.devices)
        .flat_map(|d| {
            let p = device_profile(cfg, d);
            (0..cfg.records as u32).map(move |k| (p.imei.clone(), k, p.event_time(k)))
        })
        .collect()
}

fn ack_set(acks: &[Ack]) -> BTreeSet<(String, u32, u32)> {
    acks.iter()
        .map(|a| (a.imei.clone(), a.record_index, a.event_time))
        .collect()
}

fn stored_set(server: &FakeServer) -> BTreeSet<(String, u32, u32)> {
    server.seen.stored.lock().unwrap().iter().cloned().collect()
}

#[tokio::test]
async fn every_record_of_every_device_is_acknowledged_once() {
    let server = fake_server().await;
    let cfg = SimConfig {
        devices: 3,
        records: 120,
        batch: 50,
        alarm_every: Some(25),
        current_every: Some(40),
        ..config(server.addr)
    };
    let (report, acks) = simulate(cfg.clone()).await;
    assert!(report.success(), "{:?} {report:?}", report.problems());
    assert_eq!(report.devices_completed, 3);
    assert_eq!(report.records_acked, 360);
    assert_eq!(report.records_sent, 360);
    assert_eq!(report.records_resent, 0);
    assert_eq!(report.reply_mismatches, 0);
    assert_eq!(report.reconnects, 0);
    // Indices 25, 51, 77 and 103 are out-of-turn; a ~C follows records 40, 80 and 120.
    assert_eq!(report.alarms_acked, 3 * 4);
    assert_eq!(report.currents_acked, 3 * 3);
    assert_eq!(server.seen.currents.load(Ordering::SeqCst), 9);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.acked_per_sec > 0.0);
    let l = report.ack_latency_ms;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );

    assert_eq!(acks.len(), 360, "each record acknowledged once");
    let expected = expected_acks(&cfg);
    assert_eq!(ack_set(&acks), expected);
    assert_eq!(stored_set(&server), expected);
    assert_eq!(server.seen.stored.lock().unwrap().len(), 360);
    assert!(
        server.seen.no_fix.load(Ordering::SeqCst) > 0,
        "some records have no fix"
    );

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["records_acked"], 360);
    assert!(json["elapsed_s"].as_f64().unwrap() > 0.0);
    assert!(json["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_dropped_connection_makes_the_device_reconnect_and_resend() {
    let server = fake_server().await;
    server
        .faults
        .drop_archive_once
        .store(true, Ordering::SeqCst);
    let cfg = SimConfig {
        devices: 1,
        records: 100,
        batch: 10,
        ..config(server.addr)
    };
    let (report, acks) = simulate(cfg.clone()).await;
    assert!(report.success(), "{:?} {report:?}", report.problems());
    assert_eq!(report.records_acked, 100);
    assert_eq!(
        report.records_resent, 10,
        "the unacknowledged batch goes again"
    );
    assert_eq!(report.records_sent, 110);
    assert_eq!(report.reconnects, 1);
    assert_eq!(report.reply_mismatches, 0);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("closed"), "{:?}", report.errors);
    assert_eq!(acks.len(), 100);
    assert_eq!(ack_set(&acks), expected_acks(&cfg));
    // The server got the dropped batch twice; its set is still exactly the fleet's records.
    assert_eq!(server.seen.stored.lock().unwrap().len(), 110);
    assert_eq!(stored_set(&server), expected_acks(&cfg));
}

#[tokio::test]
async fn a_silent_server_times_out_and_the_batch_is_resent() {
    let server = fake_server().await;
    server
        .faults
        .silent_archive_once
        .store(true, Ordering::SeqCst);
    let cfg = SimConfig {
        devices: 2,
        records: 30,
        batch: 7,
        reply_timeout: Duration::from_millis(300),
        ..config(server.addr)
    };
    let (report, acks) = simulate(cfg.clone()).await;
    assert!(report.success(), "{:?} {report:?}", report.problems());
    assert_eq!(report.records_resent, 7);
    assert_eq!(report.reconnects, 1);
    assert!(
        report.errors[0].contains("no reply to ~A"),
        "{:?}",
        report.errors
    );
    assert_eq!(ack_set(&acks), expected_acks(&cfg));
    assert_eq!(acks.len(), 60);
}

#[tokio::test]
async fn a_wrong_reply_byte_is_counted_and_fails_the_run() {
    let server = fake_server().await;
    server
        .faults
        .corrupt_archive_once
        .store(true, Ordering::SeqCst);
    let cfg = SimConfig {
        devices: 1,
        records: 40,
        batch: 20,
        ..config(server.addr)
    };
    let (report, acks) = simulate(cfg.clone()).await;
    assert_eq!(report.reply_mismatches, 1);
    assert!(
        report.errors[0].contains("reply to ~A does not match"),
        "{:?}",
        report.errors
    );
    // The device does not trust a wrong answer: it resends and gets the records acknowledged.
    assert_eq!(report.devices_completed, 1);
    assert_eq!(report.records_resent, 20);
    assert_eq!(ack_set(&acks), expected_acks(&cfg));
    assert!(!report.success());
    let problems = report.problems();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].contains("1 replies did not match"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_device_gives_up_after_reconnect_for() {
    let server = fake_server().await;
    server
        .faults
        .corrupt_every_handshake
        .store(true, Ordering::SeqCst);
    let cfg = SimConfig {
        devices: 2,
        records: 10,
        reconnect_for: Duration::from_millis(600),
        ..config(server.addr)
    };
    let started = std::time::Instant::now();
    let (report, acks) = simulate(cfg).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.devices_completed, 0);
    assert!(report.reply_mismatches >= 4, "{report:?}");
    assert_eq!(report.records_acked, 0);
    assert!(acks.is_empty());
    assert!(!report.stopped_early);
    assert!(
        report.errors.iter().any(|e| e.contains("gave up")),
        "{:?}",
        report.errors
    );
    assert_eq!(report.problems().len(), 2, "{:?}", report.problems());
}

#[tokio::test]
async fn the_duration_limit_stops_every_device() {
    let server = fake_server().await;
    server
        .faults
        .never_answer_data
        .store(true, Ordering::SeqCst);
    let cfg = SimConfig {
        devices: 5,
        records: 10,
        duration: Some(Duration::from_millis(300)),
        reply_timeout: Duration::from_secs(20),
        ..config(server.addr)
    };
    let (report, _) = simulate(cfg).await;
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
    assert!(report.stopped_early);
    assert_eq!(report.devices_completed, 0);
    assert!(!report.success());
    assert!(report.problems()[0].contains("time limit"));
}

#[tokio::test]
async fn the_rate_is_a_ceiling() {
    let server = fake_server().await;
    let cfg = SimConfig {
        records: 21,
        batch: 5,
        rate: Some(100.0),
        ..config(server.addr)
    };
    let (report, acks) = simulate(cfg).await;
    assert!(report.success(), "{:?}", report.problems());
    assert_eq!(acks.len(), 21);
    // Record 20 exists only 200 ms after the start.
    assert!(report.elapsed >= Duration::from_millis(195), "{report:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    // Bind then drop a listener: nothing listens on the port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = SimConfig {
        reconnect_for: Duration::from_millis(300),
        ..config(addr)
    };
    let (report, _) = simulate(cfg).await;
    assert_eq!(report.devices_completed, 0);
    assert!(report.reconnects >= 1);
    assert!(
        report.errors.iter().any(|e| e.contains("connect to")),
        "{:?}",
        report.errors
    );
}

#[test]
fn profiles_are_deterministic_per_seed_and_differ_across_devices() {
    let cfg = SimConfig {
        seed: 42,
        ..SimConfig::default()
    };
    let profiles: Vec<_> = (0..12).map(|i| device_profile(&cfg, i)).collect();
    for (i, p) in profiles.iter().enumerate() {
        assert_eq!(*p, device_profile(&cfg, i), "same seed, same profile");
        assert_eq!(p.imei, format!("{:015}", 860_000_000_000_000u64 + i as u64));
        assert_eq!(p.device_id, 1 + i as u32);
        let v = [0x0A, 0x14, 0x1E][i % 3];
        assert_eq!((p.protocol_version, p.struct_version), (v, v));
        assert_eq!(p.data_size, [69, 122, 255][i % 3]);
        for f in svoi_sim::MANDATORY_FIELDS {
            assert!(p.fields.contains(&f), "device {i} lacks field {f}");
        }
        assert!(p.fields.windows(2).all(|w| w[0] < w[1]));
        assert!(p.fields.iter().all(|&f| f >= 1 && f <= p.data_size));
        assert!(p.fields.len() > svoi_sim::MANDATORY_FIELDS.len());
        assert_eq!(p.record_values(5), device_profile(&cfg, i).record_values(5));
        assert_ne!(p.record_values(5), p.record_values(6));
    }
    let sets: BTreeSet<&Vec<u8>> = profiles.iter().map(|p| &p.fields).collect();
    assert_eq!(
        sets.len(),
        profiles.len(),
        "every device has its own field set"
    );

    let other = SimConfig {
        seed: 43,
        ..SimConfig::default()
    };
    let differ = (0..12)
        .filter(|&i| device_profile(&other, i).fields != profiles[i].fields)
        .count();
    assert_eq!(differ, 12, "another seed, another fleet");
}

#[tokio::test]
async fn invalid_configs_are_refused() {
    for cfg in [
        SimConfig {
            batch: 0,
            ..SimConfig::default()
        },
        SimConfig {
            devices: 0,
            ..SimConfig::default()
        },
        SimConfig {
            flex_versions: vec![11],
            ..SimConfig::default()
        },
        SimConfig {
            rate: Some(0.0),
            ..SimConfig::default()
        },
        SimConfig {
            imei_base: 999_999_999_999_999,
            devices: 2,
            ..SimConfig::default()
        },
        SimConfig {
            records: u64::from(u32::MAX),
            ..SimConfig::default()
        },
    ] {
        let err = svoi_sim::run(cfg.clone(), None).await;
        assert!(
            matches!(err, Err(svoi_sim::SimError::Config(_))),
            "{cfg:?}: {err:?}"
        );
    }
}
