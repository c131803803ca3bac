//! The ingest server over real loopback TCP against a real store, on SQLite and on PostgreSQL:
//! exact answers, no answer before the commit, no duplicates on resend, isolation of bad peers,
//! graceful shutdown, and (PostgreSQL) a lost database connection. A gate around the store
//! stalls or fails commits on demand. Every test runs on both backends as `sqlite::name` and
//! `postgres::name` (see [`tokio_backends!`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use svoi_ingest::{Committer, IngestConfig, Server};
use svoi_proto::dictionary::{Scalar, lookup};
use svoi_proto::encode::{self, RecordValues};
use svoi_proto::record::{RawValue, Value};
use svoi_proto::reply::NtcbReply;
use svoi_proto::{FieldMask, RecordLayout, Reply};
use svoi_store::{CommitReceipt, DbUrl, FrameRow, Store, StoreError, StoreOptions};
use svoi_testpg::{Backend, Db, tokio_backends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FIELDS: [u8; 9] = [1, 2, 3, 8, 9, 10, 11, 13, 45];
const DEVICE_ID: u32 = 7;

/// Holds commits until opened; can be told to fail them.
#[derive(Clone, Default)]
struct Gate {
    state: Arc<(Mutex<bool>, Condvar)>,
    fail: Arc<AtomicBool>,
    commits: Arc<AtomicUsize>,
}

impl Gate {
    fn closed() -> Gate {
        Gate::default()
    }
    fn open() -> Gate {
        let g = Gate::default();
        g.set(true);
        g
    }
    /// Blocks until the gate is open.
    fn wait(&self) {
        let (m, c) = &*self.state;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait(open).unwrap();
        }
    }

    fn set(&self, open: bool) {
        let (m, c) = &*self.state;
        *m.lock().unwrap() = open;
        c.notify_all();
    }
}

struct GatedStore {
    store: Store,
    gate: Gate,
}

impl Committer for GatedStore {
    fn commit(&mut self, frames: &[FrameRow]) -> Result<CommitReceipt, StoreError> {
        self.gate.wait();
        if self.gate.fail.load(Ordering::SeqCst) {
            // A batch the store refuses as a whole: a frame with records and no device.
            let mut bad = frames.to_vec();
            bad.push(FrameRow {
                imei: None,
                ..frames[0].clone()
            });
            if let Some(f) = bad.last_mut() {
                f.records = frames.iter().flat_map(|f| f.records.clone()).collect();
                if f.records.is_empty() {
                    f.records.push(svoi_store::DecodedRecord {
                        kind: svoi_store::RecordKind::Archive,
                        row: Default::default(),
                    });
                }
            }
            return self.store.commit(&bad);
        }
        self.gate.commits.fetch_add(1, Ordering::SeqCst);
        self.store.commit(frames)
    }
}

/// Opens the gate when dropped, so a failing test never leaves a commit blocked forever (the
/// runtime waits for blocking tasks when it shuts down).
struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Opens the store on `db` (migrating the fresh database).
fn open(db: &Db) -> Store {
    let url: DbUrl = db.url().parse().unwrap();
    Store::open(&url, &StoreOptions::default()).unwrap()
}

tokio_backends!(
    answers_are_byte_exact_and_records_are_stored,
    no_answer_before_the_commit_and_one_after,
    a_failed_commit_is_never_answered,
    resent_records_are_not_stored_twice,
    bad_peers_do_not_disturb_a_good_one,
    shutdown_lets_in_flight_commits_answer,
    full_queue_stops_reading_and_drops_nothing,
    connections_beyond_the_cap_are_refused,
    silent_connections_are_closed,
    one_frame_the_store_refuses_does_not_cost_the_others_their_answers,
    a_record_without_a_fix_is_stored_and_answered_like_any_other,
    online_devices_and_listener_state_follow_the_sessions,
);

/// Fields drop in order: the server (and its store) before the database.
struct Fixture {
    _guard: OpenOnDrop,
    server: Server<GatedStore>,
    gate: Gate,
    db: Db,
}

async fn start(backend: Backend, gate: Gate, tweak: impl FnOnce(&mut IngestConfig)) -> Fixture {
    let db = Db::new(backend);
    let store = open(&db);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = IngestConfig {
        listen: listener.local_addr().unwrap(),
        ..IngestConfig::default()
    };
    tweak(&mut config);
    let server = Server::start(
        listener,
        config,
        GatedStore {
            store,
            gate: gate.clone(),
        },
    )
    .unwrap();
    Fixture {
        _guard: OpenOnDrop(gate.clone()),
        server,
        gate,
        db,
    }
}

fn layout() -> Arc<RecordLayout> {
    Arc::new(RecordLayout::new(FieldMask::from_fields(FIELDS).unwrap()).unwrap())
}

/// Zero (of its wire type) for every field of the test layout.
fn zero_values() -> RecordValues {
    let mut values = RecordValues::new();
    for n in FIELDS {
        let def = lookup(n).unwrap();
        let zero = |s: Scalar| match s {
            Scalar::F32 => Value::F(0.0),
            _ => Value::U(0),
        };
        let v = if def.wire.len() == 1 {
            RawValue::Scalar(zero(def.wire[0]))
        } else {
            RawValue::List(def.wire.iter().map(|s| zero(*s)).collect())
        };
        values.insert(n, v);
    }
    values
}

/// Valid values for every field of the layout; index and time from `i`.
fn record(layout: &RecordLayout, i: u32) -> Vec<u8> {
    let mut values = zero_values();
    values.insert(1, RawValue::Scalar(Value::U(u64::from(i))));
    values.insert(3, RawValue::Scalar(Value::U(1_700_000_000 + u64::from(i))));
    values.insert(8, RawValue::Scalar(Value::U(0b0010_0011)));
    values.insert(10, RawValue::Scalar(Value::I(33_000_000 + i64::from(i))));
    values.insert(11, RawValue::Scalar(Value::I(22_000_000)));
    let mut out = Vec::new();
    encode::record(layout, &values, &mut out).unwrap();
    out
}

fn archive(from: u32, n: u32) -> Vec<u8> {
    let l = layout();
    let recs: Vec<Vec<u8>> = (from..from + n).map(|i| record(&l, i)).collect();
    encode::archive(&recs).unwrap()
}

fn handshake_reply() -> Vec<u8> {
    Reply::Ntcb {
        receiver_id: DEVICE_ID,
        sender_id: 0,
        body: NtcbReply::Handshake,
    }
    .to_bytes()
}

fn flex_reply() -> Vec<u8> {
    Reply::Ntcb {
        receiver_id: DEVICE_ID,
        sender_id: 0,
        body: NtcbReply::Flex {
            protocol_version: 0x0A,
            struct_version: 0x0A,
        },
    }
    .to_bytes()
}

async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
        .await
        .expect("reply in time")
        .expect("reply bytes");
    b
}

/// Connects, handshakes and negotiates, checking both answers byte for byte.
async fn device(addr: std::net::SocketAddr, imei: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&encode::handshake(DEVICE_ID, 0, imei).unwrap())
        .await
        .unwrap();
    let want = handshake_reply();
    assert_eq!(
        read_exact(&mut s, want.len()).await,
        want,
        "handshake answer"
    );
    let mask = FieldMask::from_fields(FIELDS).unwrap();
    s.write_all(&encode::flex_request(DEVICE_ID, 0, 0x0A, 0x0A, 69, &mask).unwrap())
        .await
        .unwrap();
    let want = flex_reply();
    assert_eq!(
        read_exact(&mut s, want.len()).await,
        want,
        "negotiation answer"
    );
    s
}

/// Nothing arrives on `s` within `d` (the peer may neither answer nor close).
async fn silent(s: &mut TcpStream, d: Duration) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(d, s.read(&mut b)).await.is_err()
}

async fn answers_are_byte_exact_and_records_are_stored(backend: Backend) {
    let f = start(backend, Gate::open(), |_| {}).await;
    let mut s = device(f.server.local_addr(), "860000000000001").await;
    s.write_all(&archive(0, 3)).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 3 }.to_bytes()
    );
    let alarm = encode::alarm(9, &record(&layout(), 3));
    s.write_all(&alarm).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 7).await,
        Reply::Alarm { event_index: 9 }.to_bytes()
    );
    s.write_all(&encode::current(&record(&layout(), 4)))
        .await
        .unwrap();
    assert_eq!(read_exact(&mut s, 3).await, vec![0x7E, 0x43, 0xB9]);
    drop(s);
    let (report, _) = f.server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(f.db.count("SELECT count(*) FROM v_records"), 4);
    assert_eq!(f.db.count("SELECT count(*) FROM alarm_events"), 1);
    assert_eq!(f.db.count("SELECT count(*) FROM current_states"), 1);
    // Handshake, negotiation, ~A, ~T, ~C: every message archived raw.
    assert_eq!(f.db.count("SELECT count(*) FROM raw_frames"), 5);
    assert_eq!(
        f.db.count(
            "SELECT count(*) FROM v_records WHERE imei = '860000000000001' AND record_index = 2 AND event_time = '2023-11-14T22:13:22Z'"
        ),
        1
    );
}

async fn no_answer_before_the_commit_and_one_after(backend: Backend) {
    let f = start(backend, Gate::closed(), |_| {}).await;
    // Handshake and negotiation say nothing about storage: they are answered while the
    // writer is stalled.
    let mut s = device(f.server.local_addr(), "860000000000002").await;
    s.write_all(&archive(0, 5)).await.unwrap();
    assert!(
        silent(&mut s, Duration::from_millis(300)).await,
        "answered before commit"
    );
    assert_eq!(f.gate.commits.load(Ordering::SeqCst), 0);
    f.gate.set(true);
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 5 }.to_bytes()
    );
    assert!(f.gate.commits.load(Ordering::SeqCst) >= 1);
    assert_eq!(f.db.count("SELECT count(*) FROM records"), 5);
}

async fn a_failed_commit_is_never_answered(backend: Backend) {
    let gate = Gate::open();
    gate.fail.store(true, Ordering::SeqCst);
    let f = start(backend, gate, |_| {}).await;
    let mut s = TcpStream::connect(f.server.local_addr()).await.unwrap();
    s.write_all(&encode::handshake(DEVICE_ID, 0, "860000000000003").unwrap())
        .await
        .unwrap();
    let want = handshake_reply();
    assert_eq!(read_exact(&mut s, want.len()).await, want);
    let mask = FieldMask::from_fields(FIELDS).unwrap();
    s.write_all(&encode::flex_request(DEVICE_ID, 0, 0x0A, 0x0A, 69, &mask).unwrap())
        .await
        .unwrap();
    let want = flex_reply();
    assert_eq!(read_exact(&mut s, want.len()).await, want);
    s.write_all(&archive(0, 2)).await.unwrap();
    // The session closes without answering: EOF, and no byte before it.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("session closed in time")
        .ok();
    assert!(rest.is_empty(), "answered a failed commit: {rest:02x?}");
    assert_eq!(f.db.count("SELECT count(*) FROM records"), 0);
    assert!(f.server.stats().snapshot().commit_failures >= 1);
}

async fn resent_records_are_not_stored_twice(backend: Backend) {
    let f = start(backend, Gate::open(), |_| {}).await;
    for _ in 0..2 {
        let mut s = device(f.server.local_addr(), "860000000000004").await;
        s.write_all(&archive(0, 10)).await.unwrap();
        assert_eq!(
            read_exact(&mut s, 4).await,
            Reply::Archive { count: 10 }.to_bytes()
        );
    }
    // And a batch overlapping the stored ones.
    let mut s = device(f.server.local_addr(), "860000000000004").await;
    s.write_all(&archive(5, 10)).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 10 }.to_bytes()
    );
    drop(s);
    let stats = f.server.stats();
    let (report, _) = f.server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(f.db.count("SELECT count(*) FROM v_records"), 15);
    let s = stats.snapshot();
    assert_eq!(s.duplicates, 15);
    assert_eq!(s.records_stored, 15);
}

async fn bad_peers_do_not_disturb_a_good_one(backend: Backend) {
    let f = start(backend, Gate::open(), |c| {
        c.max_message_bytes = 4096;
    })
    .await;
    let addr = f.server.local_addr();
    // Garbage before a handshake, then silence.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0x55; 10_000]).await.unwrap();
    // An oversized NTCB packet after a handshake: sync lost, that session closes.
    let mut big = device(addr, "860000000000005").await;
    let mut packet = svoi_proto::ntcb::encode_packet(0, DEVICE_ID, b"*>S:1").unwrap();
    packet[12..14].copy_from_slice(&60_000u16.to_le_bytes());
    big.write_all(&packet).await.unwrap();
    // A corrupted ~A (bad CRC) on an otherwise healthy session: archived, not answered, and
    // the session goes on.
    let mut crc = device(addr, "860000000000006").await;
    let mut bad = archive(0, 2);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    crc.write_all(&bad).await.unwrap();
    crc.write_all(&archive(0, 2)).await.unwrap();
    assert_eq!(
        read_exact(&mut crc, 4).await,
        Reply::Archive { count: 2 }.to_bytes()
    );
    // A device that trickles a record one byte at a time.
    let mut slow = device(addr, "860000000000007").await;
    let slow_frame = archive(0, 1);
    slow.write_all(&slow_frame[..1]).await.unwrap();
    // The good device is served while the others misbehave.
    let mut good = device(addr, "860000000000008").await;
    for k in 0..20 {
        good.write_all(&archive(k * 5, 5)).await.unwrap();
        assert_eq!(
            read_exact(&mut good, 4).await,
            Reply::Archive { count: 5 }.to_bytes()
        );
        if (k as usize) < slow_frame.len() - 1 {
            slow.write_all(&slow_frame[1 + k as usize..2 + k as usize])
                .await
                .unwrap();
        }
    }
    slow.write_all(&slow_frame[(slow_frame.len() - 1).min(21)..])
        .await
        .unwrap();
    assert_eq!(
        read_exact(&mut slow, 4).await,
        Reply::Archive { count: 1 }.to_bytes()
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut rest))
        .await
        .expect("oversized session closed")
        .ok();
    assert!(rest.is_empty());
    drop((garbage, big, crc, slow, good));
    let stats = f.server.stats();
    let (report, _) = f.server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(
        f.db.count("SELECT count(*) FROM v_records WHERE imei = '860000000000008'"),
        100
    );
    assert!(f.db.count("SELECT count(*) FROM decode_errors") >= 2);
    assert!(f.db.count("SELECT count(*) FROM raw_frames WHERE status = 'garbage'") >= 1);
    assert!(stats.snapshot().sync_losses >= 1);
}

async fn shutdown_lets_in_flight_commits_answer(backend: Backend) {
    let f = start(backend, Gate::closed(), |_| {}).await;
    let mut s = device(f.server.local_addr(), "860000000000009").await;
    s.write_all(&archive(0, 7)).await.unwrap();
    assert!(silent(&mut s, Duration::from_millis(100)).await);
    let gate = f.gate.clone();
    let addr = f.server.local_addr();
    let db = f.db;
    let shutdown = tokio::spawn(f.server.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The listener is closed once shutdown started...
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    // ...while the frame in flight is still committed and answered.
    gate.set(true);
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 7 }.to_bytes()
    );
    let (report, committer) = shutdown.await.unwrap();
    assert!(report.clean, "{report:?}");
    assert!(committer.is_some());
    assert_eq!(db.count("SELECT count(*) FROM records"), 7);
}

async fn full_queue_stops_reading_and_drops_nothing(backend: Backend) {
    let f = start(backend, Gate::closed(), |c| {
        c.queue_capacity = 4;
    })
    .await;
    let addr = f.server.local_addr();
    let mask = FieldMask::from_fields(FIELDS).unwrap();
    let mut devices = Vec::new();
    for i in 0..5 {
        // Each device sends handshake, negotiation and data at once, without waiting.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut bytes = encode::handshake(DEVICE_ID, 0, &format!("86000000000010{i}")).unwrap();
        bytes.extend(encode::flex_request(DEVICE_ID, 0, 0x0A, 0x0A, 69, &mask).unwrap());
        bytes.extend(archive(0, 4));
        s.write_all(&bytes).await.unwrap();
        devices.push(s);
        if i == 0 {
            // The writer takes the first device's frames and stalls on the closed gate; the
            // other devices' frames then have only the queue.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The writer holds one batch and stalls, the queue is full, the rest wait unread.
    let depth = f.server.stats().snapshot().queue_depth;
    assert!(depth >= 4, "queue depth {depth}");
    f.gate.set(true);
    let mut want = handshake_reply();
    want.extend(flex_reply());
    want.extend(Reply::Archive { count: 4 }.to_bytes());
    for s in &mut devices {
        assert_eq!(read_exact(s, want.len()).await, want);
    }
    assert_eq!(f.db.count("SELECT count(*) FROM records"), 20);
    assert_eq!(f.db.count("SELECT count(*) FROM raw_frames"), 15);
}

async fn connections_beyond_the_cap_are_refused(backend: Backend) {
    let f = start(backend, Gate::open(), |c| {
        c.max_connections = 2;
    })
    .await;
    let addr = f.server.local_addr();
    let _a = device(addr, "860000000000201").await;
    let _b = device(addr, "860000000000202").await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .expect("refused connection closed")
        .ok();
    assert!(rest.is_empty());
    let s = f.server.stats().snapshot();
    assert_eq!(s.connections_rejected, 1);
    assert_eq!(s.connections_open, 2);
    // A slot frees when a device leaves.
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = device(addr, "860000000000203").await;
    d.write_all(&archive(0, 1)).await.unwrap();
    assert_eq!(
        read_exact(&mut d, 4).await,
        Reply::Archive { count: 1 }.to_bytes()
    );
}

async fn silent_connections_are_closed(backend: Backend) {
    let f = start(backend, Gate::open(), |c| {
        c.handshake_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let addr = f.server.local_addr();
    // No handshake at all.
    let mut mute = TcpStream::connect(addr).await.unwrap();
    // Handshake, then silence.
    let mut idle = device(addr, "860000000000301").await;
    for s in [&mut mute, &mut idle] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed by the server")
            .ok();
        assert!(rest.is_empty());
    }
    // A device that keeps talking (keep-alives) stays connected past the idle timeout.
    let mut busy = device(addr, "860000000000302").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        busy.write_all(&[encode::PING]).await.unwrap();
    }
    busy.write_all(&archive(0, 1)).await.unwrap();
    assert_eq!(
        read_exact(&mut busy, 4).await,
        Reply::Archive { count: 1 }.to_bytes()
    );
}

/// Refuses (not transiently) every batch that holds a frame of the poison device.
struct PoisonStore {
    store: Store,
    gate: Gate,
}

const POISON: &str = "860000000000666";

impl Committer for PoisonStore {
    fn commit(&mut self, frames: &[FrameRow]) -> Result<CommitReceipt, StoreError> {
        self.gate.wait();
        self.gate.commits.fetch_add(1, Ordering::SeqCst);
        if frames.iter().any(|f| f.imei.as_deref() == Some(POISON)) {
            // The store's own refusal: a frame with records and no device.
            let mut bad = frames[0].clone();
            bad.imei = None;
            bad.records.push(svoi_store::DecodedRecord {
                kind: svoi_store::RecordKind::Archive,
                row: Default::default(),
            });
            return self.store.commit(&[bad]);
        }
        self.store.commit(frames)
    }
}

async fn one_frame_the_store_refuses_does_not_cost_the_others_their_answers(backend: Backend) {
    let db = Db::new(backend);
    let gate = Gate::open();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(
        listener,
        IngestConfig {
            listen: addr,
            // Long enough that the two data messages below always share a batch.
            batch_max_delay: Duration::from_millis(100),
            ..IngestConfig::default()
        },
        PoisonStore {
            store: open(&db),
            gate: gate.clone(),
        },
    )
    .unwrap();
    let _guard = OpenOnDrop(gate.clone());
    let mut good = device(addr, "860000000000665").await;
    // The poison device's handshake is refused by the store too, but its answer says nothing
    // about storage and goes out at once.
    let mut bad = device(addr, POISON).await;
    // Let the handshakes' and negotiations' frames be committed (or refused) first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Both data messages land in one batch while the writer is held.
    gate.set(false);
    let before = gate.commits.load(Ordering::SeqCst);
    good.write_all(&archive(0, 3)).await.unwrap();
    bad.write_all(&archive(0, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.set(true);
    assert_eq!(
        read_exact(&mut good, 4).await,
        Reply::Archive { count: 3 }.to_bytes()
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest))
        .await
        .expect("refused session closed")
        .ok();
    assert!(rest.is_empty(), "answered a refused frame: {rest:02x?}");
    // One refused batch, then each of its two frames alone.
    assert_eq!(gate.commits.load(Ordering::SeqCst) - before, 3);
    drop((good, bad));
    let (report, _) = server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(db.count("SELECT count(*) FROM v_records"), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM v_records WHERE imei = '860000000000665'"),
        3
    );
}

async fn a_record_without_a_fix_is_stored_and_answered_like_any_other(backend: Backend) {
    let f = start(backend, Gate::open(), |_| {}).await;
    let mut s = device(f.server.local_addr(), "860000000000401").await;
    let l = layout();
    let mut values = zero_values();
    // Receiver on, no valid fix, no satellites, zero coordinates and fix time.
    values.insert(1, RawValue::Scalar(Value::U(77)));
    values.insert(3, RawValue::Scalar(Value::U(1_700_000_077)));
    values.insert(8, RawValue::Scalar(Value::U(0b01)));
    let mut rec = Vec::new();
    encode::record(&l, &values, &mut rec).unwrap();
    s.write_all(&encode::archive(&[rec]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 1 }.to_bytes()
    );
    assert_eq!(
        f.db.count(
            "SELECT count(*) FROM records WHERE record_index = 77 AND valid = false AND satellites = 0"
        ),
        1
    );
}

async fn online_devices_and_listener_state_follow_the_sessions(backend: Backend) {
    let f = start(backend, Gate::open(), |_| {}).await;
    let stats = f.server.stats();
    // The accept loop marks the listener up once it runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !stats.listener_up.load(Ordering::Relaxed) {
        assert!(tokio::time::Instant::now() < deadline, "listener never up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!stats.is_online("860000000000031"));
    let a = device(f.server.local_addr(), "860000000000031").await;
    let b1 = device(f.server.local_addr(), "860000000000032").await;
    let b2 = device(f.server.local_addr(), "860000000000032").await;
    assert!(stats.is_online("860000000000031"));
    assert!(stats.is_online("860000000000032"));
    assert_eq!(stats.online_devices(), 2);
    // One of two sessions of the same device ends: it is still online.
    drop(b1);
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stats.is_online("860000000000031") {
        assert!(tokio::time::Instant::now() < deadline, "still online");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(stats.is_online("860000000000032"));
    assert_eq!(stats.online_devices(), 1);
    drop(b2);
    let (report, _) = f.server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(stats.online_devices(), 0);
    assert!(!stats.listener_up.load(Ordering::Relaxed));
}

/// The maintenance database of the test cluster, where a test database is switched off and on.
const ADMIN_DB: &str = "postgres";

/// Makes the test database refuse connections and cuts the ones it has (the store's), waiting
/// until they are gone: to the store, the database is unreachable.
fn cut_off(db: &svoi_testpg::TestDb) {
    svoi_testpg::shared().psql(
        ADMIN_DB,
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name()),
    );
    terminate_sessions(db);
}

/// Lets the test database accept connections again.
fn restore(db: &svoi_testpg::TestDb) {
    svoi_testpg::shared().psql(
        ADMIN_DB,
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name()),
    );
}

/// Terminates every session of the test database (the store's connection), waiting up to 5 s
/// for each to end, and checks there was one.
fn terminate_sessions(db: &svoi_testpg::TestDb) {
    let cut = svoi_testpg::shared().psql(
        ADMIN_DB,
        &format!(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name()
        ),
    );
    assert!(
        !cut.is_empty() && cut.lines().all(|l| l == "t"),
        "store connection not terminated: {cut:?}"
    );
}

/// A commit that fails because PostgreSQL is unreachable is not acknowledged; once the
/// database is back, the device's resend is stored exactly once; and a connection the server
/// drops between two commits is replaced by the writer without losing an acknowledgement.
#[tokio::test]
async fn a_lost_database_costs_acknowledgements_not_records() {
    let f = start(Backend::Postgres, Gate::open(), |_| {}).await;
    let Db::Postgres(pg) = &f.db else {
        unreachable!()
    };
    let addr = f.server.local_addr();
    let stats = f.server.stats();
    let imei = "860000000000501";
    let mut s = device(addr, imei).await;
    s.write_all(&archive(0, 5)).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 5 }.to_bytes()
    );
    // The database goes away: the next commit fails through all its attempts, the device gets
    // no answer and its session is closed.
    cut_off(pg);
    s.write_all(&archive(5, 5)).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest))
        .await
        .expect("session closed in time")
        .ok();
    assert!(rest.is_empty(), "answered a failed commit: {rest:02x?}");
    let failed = stats.snapshot();
    assert!(failed.commit_failures >= 1);
    assert!(!stats.database_up.load(Ordering::Relaxed));
    // The database is back; the device reconnects and sends what was not answered, with the
    // records it already had answered (a device that lost the answer does that).
    restore(pg);
    assert_eq!(f.db.count("SELECT count(*) FROM records"), 5);
    let mut s = device(addr, imei).await;
    s.write_all(&archive(0, 10)).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 10 }.to_bytes()
    );
    assert!(stats.database_up.load(Ordering::Relaxed));
    // The server drops the writer's connection between two sends: the writer reconnects and
    // the next commit is answered.
    terminate_sessions(pg);
    s.write_all(&archive(10, 5)).await.unwrap();
    assert_eq!(
        read_exact(&mut s, 4).await,
        Reply::Archive { count: 5 }.to_bytes()
    );
    drop(s);
    let (report, _) = f.server.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    // Every record once, none lost, none twice.
    assert_eq!(f.db.count("SELECT count(*) FROM records"), 15);
    assert_eq!(
        f.db.count(
            "SELECT count(DISTINCT record_index) FROM records WHERE record_index BETWEEN 0 AND 14"
        ),
        15
    );
    assert_eq!(
        f.db.count(&format!(
            "SELECT count(*) FROM v_records WHERE imei = '{imei}'"
        )),
        15
    );
    // Two sessions of handshake, negotiation and answered ~A messages; the unanswered ~A is
    // not stored.
    assert_eq!(f.db.count("SELECT count(*) FROM raw_frames"), 7);
    let s = stats.snapshot();
    assert_eq!(s.records_stored, 15);
    assert_eq!(s.duplicates, 5);
    assert_eq!(s.commit_failures, failed.commit_failures);
}
