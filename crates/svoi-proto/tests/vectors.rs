//! Every capture in `data/vectors.json` (a copy of the protocol reference's vectors) decodes to
//! what its `expect` says and gets exactly its `reply_hex`, through one `check` helper.

use serde_json::Value as Json;
use svoi_proto::{Session, json};

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
    for (message, used) in session.messages(bytes) {
        out.push(json::message(&message, used));
        if let Some(r) = message.reply {
            r.encode_into(&mut replies);
        }
    }
    (out, replies)
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
        json::conforms(&format!("{name}[{i}]"), e, a)?;
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
    assert!(
        failures.is_empty(),
        "{} of {} vectors fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// The helper itself must be able to fail: a changed expectation is caught.
#[test]
fn check_detects_a_wrong_expectation() {
    let mut v = vectors()
        .into_iter()
        .find(|v| v["name"] == "navis_flex10_T")
        .unwrap_or_default();
    v["expect"]["records"][0]["fields"]["12"] = serde_json::json!(930);
    assert!(check(&v).is_err());
    v = vectors()
        .into_iter()
        .find(|v| v["name"] == "navis_flex10_T")
        .unwrap_or_default();
    v["reply_hex"] = serde_json::json!("7e540400000018");
    assert!(check(&v).is_err());
}

/// The streaming `Values` serializer the store uses writes exactly the `values` object of
/// [`json::record`], for every record of every vector; with `skip_core` it leaves out exactly
/// the core fields.
#[test]
fn values_serializer_matches_record_json() {
    let mut records = 0;
    for v in vectors() {
        let mut session = Session::default();
        for key in ["handshake_hex", "flex_hex"] {
            if let Some(h) = v["context"].get(key).and_then(Json::as_str) {
                decode_all(&mut session, &unhex(h));
            }
        }
        let bytes = unhex(v["hex"].as_str().unwrap_or_default());
        for (message, _) in session.messages(&bytes) {
            let svoi_proto::session::Body::Flex(flex) = &message.body else {
                continue;
            };
            for r in flex.records() {
                records += 1;
                // Compared as text: serde_json's default float parsing does not round-trip
                // every f64, and the text is what the store keeps.
                let full = json::record(r)["values"].clone();
                assert_eq!(
                    json::Values::new(r, false).to_json_string(),
                    full.to_string(),
                    "{}",
                    v["name"]
                );
                let mut expect = full.as_object().cloned().unwrap_or_default();
                for f in r.fields() {
                    if json::CORE_FIELDS.contains(&f.def.number) {
                        expect.shift_remove(f.def.name);
                    }
                }
                assert_eq!(
                    json::Values::new(r, true).to_json_string(),
                    Json::Object(expect).to_string(),
                    "{}",
                    v["name"]
                );
            }
        }
    }
    assert!(records > 20, "only {records} records in the vectors");
}
