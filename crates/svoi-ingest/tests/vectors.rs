//! Every capture of the protocol reference (`svoi-proto/tests/data/vectors.json`) sent to the
//! real server over loopback TCP, each on its own connection after its context (handshake,
//! negotiation): the server's answers are byte for byte the reference's, whatever the message
//! type — FLEX 1.0/2.0/3.0 records, additional records, legacy NTCB archives, text answers,
//! rejected frames (no answer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value as Json;
use svoi_ingest::{IngestConfig, Server};
use svoi_proto::Session;
use svoi_store::{DbUrl, Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// The answers a session gives to `bytes`, as the codec computes them.
fn replies(session: &mut Session, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (m, _) in session.messages(bytes) {
        if let Some(r) = m.reply {
            r.encode_into(&mut out);
        }
    }
    out
}

#[tokio::test]
async fn every_reference_capture_gets_the_reference_answer_from_the_server() {
    let vectors: Vec<Json> =
        serde_json::from_str(include_str!("../../svoi-proto/tests/data/vectors.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let store = Store::open(&DbUrl::Sqlite(path.clone()), &StoreOptions::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(
        listener,
        IngestConfig {
            listen: addr,
            ..IngestConfig::default()
        },
        store,
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut answered = 0;
    for v in &vectors {
        let name = v["name"].as_str().unwrap_or("?");
        let mut local = Session::default();
        let mut sent = Vec::new();
        let mut want = Vec::new();
        for key in ["handshake_hex", "flex_hex"] {
            if let Some(h) = v["context"].get(key).and_then(Json::as_str) {
                let b = unhex(h);
                want.extend(replies(&mut local, &b));
                sent.extend(b);
            }
        }
        want.extend(unhex(v["reply_hex"].as_str().unwrap_or_default()));
        sent.extend(unhex(v["hex"].as_str().unwrap_or_default()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; want.len()];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await;
        if !matches!(read, Ok(Ok(_))) {
            failures.push(format!("{name}: no complete answer ({read:?})"));
            continue;
        }
        if got != want {
            failures.push(format!(
                "{name}: answer {} != reference {}",
                hex::encode(&got),
                hex::encode(&want)
            ));
            continue;
        }
        // Nothing more than the reference's answer.
        let mut extra = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut extra)).await
            && n > 0
        {
            failures.push(format!("{name}: extra answer byte {:02x}", extra[0]));
        }
        if !want.is_empty() {
            answered += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(answered > 60, "only {answered} vectors got an answer");
    let (report, _) = server.shutdown(Duration::from_secs(10)).await;
    assert!(report.clean);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // The FLEX 2.0/3.0 additional records, the legacy archives and the decode errors all left
    // their rows.
    assert!(count("SELECT count(*) FROM ext_records") >= 8);
    assert!(count("SELECT count(*) FROM raw_frames WHERE kind = '*>A'") >= 4);
    assert!(count("SELECT count(*) FROM decode_errors") >= 3);
    assert!(count("SELECT count(*) FROM raw_frames") >= vectors.len() as i64);
}
