//! Every capture in `data/vectors.json` (a copy of the protocol reference's vectors) decodes to
//! what its `expect` says and gets exactly its `reply_hex`, through one `check` helper.

use serde_json::Value as Json;
use svoi_proto::{Session, Step, json};

fn vectors() -> Vec<Json> {
    let text = include_str!("data/vectors.json");
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Array(v)) => v,
        other => panic!("vectors.json is not an array: {other:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Decodes a whole buffer as a session would, returning the JSON of every message and the
/// concatenated replies.
fn decode_all(session: &mut Session, bytes: &[u8]) -> (Vec<Json>, Vec<u8>) {
    let mut out = Vec::new();
    let mut replies = Vec::new();
    let mut rest = bytes;
    loop {
        let message = match session.decode(rest) {
            Step::Message(m) => m,
            Step::NeedMore => match session.decode_eof(rest) {
                Some(m) => m,
                None => break,
            },
        };
        out.push(json::message(&message, &rest[..message.len]));
        if let Some(r) = message.reply {
            r.encode_into(&mut replies);
        }
        rest = &rest[message.len..];
    }
    (out, replies)
}

/// `actual` matches `expect`: every expected key present and equal; `fields` maps equal key
/// for key; numbers inside `fields` equal as f32 (raw values are at most single precision,
/// and the vectors print some with fewer digits), within 1e-6 elsewhere.
fn matches(path: &str, expect: &Json, actual: &Json, exact: bool) -> Result<(), String> {
    match (expect, actual) {
        (Json::Object(e), Json::Object(a)) => {
            if path.ends_with(".fields") {
                let ek: Vec<_> = e.keys().collect();
                let ak: Vec<_> = a.keys().collect();
                if ek != ak {
                    return Err(format!("{path}: field numbers {ek:?} != {ak:?}"));
                }
            }
            for (k, ev) in e {
                let av = a.get(k).ok_or_else(|| format!("{path}.{k}: missing"))?;
                matches(&format!("{path}.{k}"), ev, av, exact || k == "fields")?;
            }
            Ok(())
        }
        (Json::Array(e), Json::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{path}: {} items expected, got {}", e.len(), a.len()));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(&format!("{path}[{i}]"), ev, av, exact)?;
            }
            Ok(())
        }
        (Json::Number(e), Json::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64(), e.as_u64(), a.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => {
                    let (x, y) = (e.as_f64().unwrap_or(f64::NAN), a.as_f64().unwrap_or(f64::NAN));
                    if exact { x as f32 == y as f32 } else { (x - y).abs() <= 1e-6 }
                }
            };
            if same { Ok(()) } else { Err(format!("{path}: expected {e}, got {a}")) }
        }
        _ if expect == actual => Ok(()),
        _ => Err(format!("{path}: expected {expect}, got {actual}")),
    }
}

fn check(v: &Json) -> Result<(), String> {
    let name = v["name"].as_str().unwrap_or("?");
    let mut session = Session::default();
    for key in ["handshake_hex", "flex_hex"] {
        if let Some(h) = v["context"].get(key).and_then(Json::as_str) {
            decode_all(&mut session, &unhex(h));
        }
    }
    let bytes = unhex(v["hex"].as_str().unwrap_or_default());
    let (messages, replies) = decode_all(&mut session, &bytes);
    let expected: Vec<Json> = match v["expect"].get("messages") {
        Some(Json::Array(m)) => m.clone(),
        _ => vec![v["expect"].clone()],
    };
    if messages.len() != expected.len() {
        return Err(format!(
            "{name}: {} messages expected, got {}: {messages:#?}",
            expected.len(),
            messages.len()
        ));
    }
    for (i, (e, a)) in expected.iter().zip(&messages).enumerate() {
        matches(&format!("{name}[{i}]"), e, a, false)?;
        if a.get("offset").is_none() {
            return Err(format!("{name}[{i}]: no offset"));
        }
    }
    let want = v["reply_hex"].as_str().unwrap_or_default();
    if hex::encode(&replies) != want {
        return Err(format!("{name}: reply {} != {want}", hex::encode(&replies)));
    }
    Ok(())
}

#[test]
fn every_vector_decodes_as_expected() {
    let all = vectors();
    assert_eq!(all.len(), 85, "the reference ships 85 vectors");
    let failures: Vec<String> = all.iter().filter_map(|v| check(v).err()).collect();
    assert!(failures.is_empty(), "{} of {} vectors fail:\n{}", failures.len(), all.len(), failures.join("\n"));
}

/// The helper itself must be able to fail: a changed expectation is caught.
#[test]
fn check_detects_a_wrong_expectation() {
    let mut v = vectors().into_iter().find(|v| v["name"] == "navis_flex10_T").unwrap_or_default();
    v["expect"]["records"][0]["fields"]["12"] = serde_json::json!(930);
    assert!(check(&v).is_err());
    v = vectors().into_iter().find(|v| v["name"] == "navis_flex10_T").unwrap_or_default();
    v["reply_hex"] = serde_json::json!("7e540400000018");
    assert!(check(&v).is_err());
}
