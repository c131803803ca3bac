//! The built `svoi` binary driven like an operator drives it: every reference vector through
//! `svoi decode`, exit codes, and errors on bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use svoi_proto::json;

fn svoi(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_svoi"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("svoi starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("svoi runs")
}

fn lines(out: &Output) -> Vec<Json> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn vectors() -> Vec<Json> {
    let text = include_str!("../../svoi-proto/tests/data/vectors.json");
    serde_json::from_str::<Vec<Json>>(text).expect("vectors.json")
}

/// Hex text the way an operator pastes it: spaced bytes, wrapped lines.
fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn decode_hex_prints_what_every_vector_expects() {
    let mut failures = Vec::new();
    for v in vectors() {
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let mut context = Vec::new();
        for key in ["handshake_hex", "flex_hex"] {
            if let Some(h) = v["context"].get(key).and_then(Json::as_str) {
                context.extend(hex::decode(h).expect("context hex"));
            }
        }
        let context_lines = if context.is_empty() {
            0
        } else {
            lines(&svoi(&["decode", "--hex"], spaced_hex(&context).as_bytes())).len()
        };
        let mut input = context.clone();
        input.extend(hex::decode(v["hex"].as_str().unwrap_or_default()).expect("hex"));
        let out = svoi(&["decode", "--hex", "-"], spaced_hex(&input).as_bytes());
        let got = lines(&out);
        let expected: Vec<Json> = match v["expect"].get("messages") {
            Some(Json::Array(m)) => m.clone(),
            _ => vec![v["expect"].clone()],
        };
        if got.len() != context_lines + expected.len() {
            failures.push(format!(
                "{name}: {} lines for {} messages",
                got.len(),
                expected.len()
            ));
            continue;
        }
        for (i, (e, a)) in expected.iter().zip(&got[context_lines..]).enumerate() {
            if let Err(d) = json::conforms(&format!("{name}[{i}]"), e, a) {
                failures.push(d);
            }
        }
        let offsets_ok = got.iter().all(|l| l["offset"].is_u64());
        let any_error = got.iter().any(|l| l.get("error").is_some());
        let want_code = if any_error { 1 } else { 0 };
        if !offsets_ok || out.status.code() != Some(want_code) {
            failures.push(format!(
                "{name}: exit {:?}, want {want_code}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn raw_file_input_matches_hex_input() {
    let stream = vectors()
        .into_iter()
        .find(|v| v["name"] == "synthetic_session_stream")
        .expect("vector");
    let bytes = hex::decode(stream["hex"].as_str().unwrap_or_default()).expect("hex");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.bin");
    std::fs::write(&path, &bytes).expect("write capture");
    let from_file = svoi(&["decode", path.to_str().expect("utf-8 path")], b"");
    let from_hex = svoi(&["decode", "--hex"], hex::encode(&bytes).as_bytes());
    assert_eq!(from_file.status.code(), Some(0));
    assert_eq!(lines(&from_file), lines(&from_hex));
    assert_eq!(lines(&from_file).len(), 7);
}

#[test]
fn decoding_goes_on_after_an_error_and_exits_1() {
    // Handshake, then bytes that start no message, a ping byte (too weak a sync point to
    // resynchronise on, so it is part of the skipped bytes) and a valid keep-alive packet.
    let mut input =
        hex::decode("404e544301000000000000001300424d2a3e533a383632353331303436313830393335")
            .expect("hex");
    input[15] = 0x49; // fix CSp so the handshake is valid
    input.extend_from_slice(b"\x01\x02\x03");
    input.push(0x7f);
    input.extend(hex::decode("404e5443010000000000000000000018").expect("hex"));
    let out = svoi(&["decode", "--hex"], hex::encode(&input).as_bytes());
    let got = lines(&out);
    let kinds: Vec<&str> = got
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["ntcb", "error", "ntcb"], "{got:#?}");
    assert_eq!(got[1]["offset"], 35);
    assert_eq!(got[1]["data_hex"], "0102037f");
    assert_eq!(got[2]["keepalive"], true);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let bad_hex = svoi(&["decode", "--hex"], b"7e 4g");
    assert_eq!(bad_hex.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_hex.stderr).contains("not a hex digit"));
    let missing = svoi(&["decode", "/nonexistent/capture.bin"], b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/capture.bin")
    );
    assert_eq!(
        svoi(&["decode", "--no-such-flag"], b"").status.code(),
        Some(2)
    );
    assert_eq!(svoi(&["no-such-command"], b"").status.code(), Some(2));
    assert_eq!(svoi(&["--help"], b"").status.code(), Some(0));
}

#[test]
fn fields_lists_the_whole_dictionary() {
    let out = svoi(&["fields", "--json"], b"");
    let got = lines(&out);
    assert_eq!(got.len(), 255);
    assert_eq!(got[9]["name"], "latitude");
    assert_eq!(got[9]["unit"], "deg");
}

/// The `svoi decode` example in README.md prints what the README shows.
#[test]
fn readme_decode_example_is_true() {
    let readme = include_str!("../../../README.md");
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("$ echo '"));
    let command = lines
        .next()
        .expect("README has a `$ echo '...' | svoi decode` example");
    let printed = lines.next().expect("README shows the example's output");
    let input = command
        .strip_prefix("$ echo '")
        .and_then(|c| c.split('\'').next())
        .expect("quoted hex");
    assert!(command.ends_with("| svoi decode --hex"), "{command}");
    let out = svoi(&["decode", "--hex"], input.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), printed);
}
