//! The JSON form of decoded messages, with the key names and conventions of the reference's
//! test vectors (§10): what `svoi decode` prints and what stored records and the API reuse.

use serde_json::{Map, Value as Json, json};

use crate::flex::{FlexBody, FlexMessage};
use crate::ntcb::{Command, Packet};
use crate::record::{Core, ExtRecord, FieldValue, RawValue, Record, Value};
use crate::session::{Body, Message};

/// A float as JSON: finite values as numbers, others as `"NaN"`, `"inf"`, `"-inf"`.
pub fn float(f: f64) -> Json {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(f)
    }
}

fn value(v: Value) -> Json {
    match v {
        Value::U(u) => json!(u),
        Value::I(i) => json!(i),
        Value::F(f) => float(f64::from(f)),
    }
}

/// A raw field value: a number, or a flat list for composite fields.
pub fn raw(r: &RawValue) -> Json {
    match r {
        RawValue::Scalar(v) => value(*v),
        RawValue::List(l) => Json::Array(l.iter().map(|v| value(*v)).collect()),
    }
}

/// Largest magnitude below which every integer is exactly representable as an `f64`.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Whether a scaled value is a whole number printed as an integer: most fields are counters,
/// codes and bit sets with scale 1, and `12052` reads (and formats) better than `12052.0`.
fn whole(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && x.abs() < EXACT_INT).then_some(x as i64)
}

/// A scaled field value: a number (whole numbers without a fraction, `null` for "no data"),
/// or a list for composite fields.
pub fn scaled(f: &FieldValue) -> Json {
    let one = |v: Option<f64>| {
        v.map_or(Json::Null, |x| match whole(x) {
            Some(i) => json!(i),
            None if x.is_finite() => json!(x),
            None => Json::Null,
        })
    };
    match &f.raw {
        RawValue::Scalar(_) => one(f.scaled().next().flatten()),
        RawValue::List(_) => Json::Array(f.scaled().map(one).collect()),
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The convenience keys of a record core, only for the fields present.
fn core_keys(c: &Core, o: &mut Map<String, Json>) {
    let mut put = |k: &str, v: Option<Json>| {
        if let Some(v) = v {
            o.insert(k.to_string(), v);
        }
    };
    put("index", c.index.map(|v| json!(v)));
    put("event_code", c.event_code.map(|v| json!(v)));
    put("event_time", c.event_time.map(|v| json!(v)));
    put("gsm_level", c.gsm_level.map(|v| json!(v)));
    put("nav_on", c.nav_on().map(|v| json!(v)));
    put("valid", c.valid().map(|v| json!(v)));
    put("satellites", c.satellites().map(|v| json!(v)));
    put("fix_time", c.fix_time.map(|v| json!(v)));
    put("latitude", c.latitude().map(|v| json!(round6(v))));
    put("longitude", c.longitude().map(|v| json!(round6(v))));
    put("altitude_m", c.altitude_m().map(|v| json!(v)));
    put("speed_kmh", c.speed_kmh.map(|v| float(f64::from(v))));
    put("course", c.course.map(|v| json!(v)));
    put("odometer_km", c.odometer_km.map(|v| float(f64::from(v))));
    put("power_mv", c.power_mv.map(|v| json!(v)));
    put("battery_mv", c.battery_mv.map(|v| json!(v)));
}

/// A FLEX record: core keys, `fields` (number → raw value) and `values` (name → scaled value).
pub fn record(r: &Record) -> Json {
    let mut o = Map::new();
    core_keys(r.core(), &mut o);
    let mut fields = Map::new();
    let mut values = Map::new();
    for f in r.fields() {
        fields.insert(f.def.number.to_string(), raw(&f.raw));
        values.insert(f.def.name.to_string(), scaled(&f));
    }
    o.insert("fields".into(), Json::Object(fields));
    o.insert("values".into(), Json::Object(values));
    Json::Object(o)
}

/// An additional record of `~E`/`~X`.
pub fn ext_record(r: &ExtRecord) -> Json {
    let mut o = Map::new();
    o.insert("size".into(), json!(r.size()));
    o.insert("struct_version".into(), json!(r.struct_version));
    o.insert("static_length".into(), json!(r.static_length()));
    core_keys(&r.core, &mut o);
    o.insert(
        "raw".into(),
        json!({
            "nav_status": r.core.nav_status,
            "latitude": r.core.latitude_raw,
            "longitude": r.core.longitude_raw,
            "altitude_dm": r.core.altitude_dm,
        }),
    );
    if !r.static_extra.is_empty() {
        o.insert(
            "static_extra_hex".into(),
            json!(hex::encode(&r.static_extra)),
        );
    }
    let dynamic: Vec<Json> = r
        .dynamic
        .iter()
        .map(|d| {
            let mut item = Map::new();
            item.insert("type".into(), json!(d.kind));
            item.insert("length".into(), json!(d.data.len()));
            item.insert("data_hex".into(), json!(hex::encode(&d.data)));
            if let Some(v) = d.value() {
                item.insert("value".into(), json!(v));
            }
            Json::Object(item)
        })
        .collect();
    o.insert("dynamic".into(), Json::Array(dynamic));
    Json::Object(o)
}

fn ntcb(p: &Packet, o: &mut Map<String, Json>) {
    let h = &p.header;
    o.insert("preamble".into(), json!("@NTC"));
    o.insert("receiver_id".into(), json!(h.receiver_id));
    o.insert("sender_id".into(), json!(h.sender_id));
    o.insert("length".into(), json!(h.length));
    o.insert("csd".into(), json!(h.csd));
    o.insert("csp".into(), json!(h.csp));
    o.insert("header_ok".into(), json!(p.header_ok));
    o.insert("body_ok".into(), json!(p.body_ok));
    o.insert("checksum_ok".into(), json!(p.checksum_ok()));
    if !p.checksum_ok() {
        return;
    }
    let name = match &p.command {
        Some(c) => c.name().map(str::to_string),
        None => p.name.clone(),
    };
    o.insert("command".into(), json!(name));
    let mut put = |k: &str, v: Json| {
        o.insert(k.to_string(), v);
    };
    match &p.command {
        None => {}
        Some(Command::KeepAlive) => put("keepalive", json!(true)),
        Some(Command::Handshake { imei }) => put("imei", json!(imei)),
        Some(Command::FlexRequest(r)) => {
            put("protocol", json!(r.protocol));
            put("protocol_version", json!(r.protocol_version));
            put("struct_version", json!(r.struct_version));
            put("data_size", json!(r.data_size));
            put("bitfield_hex", json!(hex::encode(&r.bitfield)));
            put(
                "fields_enabled",
                json!(r.layout.mask().iter().collect::<Vec<u8>>()),
            );
            put("record_size", json!(r.layout.record_size()));
            put("accepted", json!(r.accepted()));
        }
        Some(Command::FlexAnswer {
            protocol,
            protocol_version,
            struct_version,
        }) => {
            put("protocol", json!(protocol));
            put("protocol_version", json!(protocol_version));
            put("struct_version", json!(struct_version));
        }
        Some(Command::RecordAnswer { record: r, .. }) => put("records", json!([record(r)])),
        Some(Command::TmKey { data }) | Some(Command::S2u { data }) => {
            put("data_hex", json!(hex::encode(data)));
        }
        Some(Command::Code { mode }) => put("mode", json!(mode)),
        Some(Command::LegacyArchive { count, format }) => {
            put("legacy", json!(true));
            put("count", json!(count));
            put("legacy_format", json!(format));
        }
        Some(Command::LegacyAlarm { format, index }) => {
            put("legacy", json!(true));
            put("legacy_format", json!(format));
            put("index", json!(index));
        }
        Some(Command::Text { text, .. }) => put("text", json!(text)),
    }
}

fn flex(m: &FlexMessage, len: usize, o: &mut Map<String, Json>) {
    o.insert("type".into(), json!(m.kind.name()));
    o.insert("length".into(), json!(len));
    o.insert("crc".into(), json!(m.crc));
    o.insert("crc_ok".into(), json!(m.crc_ok));
    let mut put = |k: &str, v: Json| {
        o.insert(k.to_string(), v);
    };
    match &m.body {
        FlexBody::Archive { count, .. } | FlexBody::ExtArchive { count, .. } => {
            put("count", json!(count));
        }
        FlexBody::Alarm { event_index, .. } | FlexBody::ExtAlarm { event_index, .. } => {
            put("event_index", json!(event_index));
        }
        FlexBody::Current { .. } => {}
        FlexBody::Notification {
            module,
            notification,
            time,
        } => {
            put("module", json!(module));
            put("notification", json!(notification));
            put("time", json!(time));
        }
        FlexBody::Transparent {
            module,
            put_id,
            data,
        } => {
            put("module", json!(module));
            put("put_id", json!(put_id));
            put("data_hex", json!(hex::encode(data)));
        }
        FlexBody::Unsupported { rejected } => put("rejected_hex", json!(hex::encode(rejected))),
    }
    match &m.body {
        FlexBody::Archive { .. } | FlexBody::Alarm { .. } | FlexBody::Current { .. }
            if m.crc_ok =>
        {
            put(
                "records",
                Json::Array(m.records().iter().map(record).collect()),
            );
        }
        FlexBody::ExtArchive { .. } | FlexBody::ExtAlarm { .. } if m.error.is_none() => {
            put(
                "records",
                Json::Array(m.ext_records().iter().map(ext_record).collect()),
            );
        }
        _ => {}
    }
}

/// One message as the decoder prints it. `bytes` are the message's bytes (the first
/// `message.len` bytes of the buffer it was decoded from).
pub fn message(m: &Message, bytes: &[u8]) -> Json {
    let mut o = Map::new();
    let kind = match m.body {
        Body::Ntcb(_) => "ntcb",
        Body::Flex(_) => "flex",
        Body::Ping => "ping",
        Body::Garbage => "garbage",
        Body::Error(_) => "error",
    };
    o.insert("kind".into(), json!(kind));
    o.insert("offset".into(), json!(m.offset));
    match &m.body {
        Body::Ntcb(p) => ntcb(p, &mut o),
        Body::Flex(f) => flex(f, m.len, &mut o),
        Body::Ping => {}
        Body::Garbage => {
            o.insert("skipped".into(), json!(m.len));
            o.insert("data_hex".into(), json!(hex::encode(bytes)));
        }
        Body::Error(_) => {
            o.insert("data_hex".into(), json!(hex::encode(bytes)));
        }
    }
    if let Some(e) = m.error() {
        o.insert("error".into(), json!(e.to_string()));
    }
    let reply = m
        .reply
        .map(|r| hex::encode(r.to_bytes()))
        .unwrap_or_default();
    o.insert("reply_hex".into(), json!(reply));
    Json::Object(o)
}

/// Checks a decoder output against an expectation the way the reference's vectors are compared
/// (§10): every expected key present and equal, `fields` maps equal key for key, raw values
/// inside `fields` equal as f32 (they are at most single precision, and the vectors print some
/// with fewer digits), other numbers within 1e-6. The error names the first difference by path.
pub fn conforms(path: &str, expect: &Json, actual: &Json) -> Result<(), String> {
    matches(path, expect, actual, false)
}

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
                return Err(format!(
                    "{path}: {} items expected, got {}",
                    e.len(),
                    a.len()
                ));
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
                    let (x, y) = (
                        e.as_f64().unwrap_or(f64::NAN),
                        a.as_f64().unwrap_or(f64::NAN),
                    );
                    if exact {
                        x as f32 == y as f32
                    } else {
                        (x - y).abs() <= 1e-6
                    }
                }
            };
            if same {
                Ok(())
            } else {
                Err(format!("{path}: expected {e}, got {a}"))
            }
        }
        _ if expect == actual => Ok(()),
        _ => Err(format!("{path}: expected {expect}, got {actual}")),
    }
}

/// Field numbers with typed columns of their own in the store (index, event code, time, GSM,
/// navigation state, fix time, position, altitude, speed, course, mileage, supply voltages);
/// [`Values`] with `skip_core` leaves them out.
pub const CORE_FIELDS: [u8; 14] = [1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20];

/// The `values` object of a record (field name → scaled value, `null` for no data, a list for
/// composite fields), serialized straight from the record bytes. The store keeps this for every
/// record, so it avoids building a [`serde_json::Map`] per record.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    record: &'a Record,
    skip_core: bool,
}

impl<'a> Values<'a> {
    /// Every enabled field of `record`, or only the non-core ones when `skip_core`.
    pub fn new(record: &'a Record, skip_core: bool) -> Self {
        Values { record, skip_core }
    }

    /// The JSON text.
    pub fn to_json_string(&self) -> String {
        // Serializing numbers, strings and nulls into a `String` cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A finite scaled number, or `null`.
struct Scaled(Option<f64>);

impl serde::Serialize for Scaled {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(x) => match whole(x) {
                Some(i) => s.serialize_i64(i),
                None if x.is_finite() => s.serialize_f64(x),
                None => s.serialize_unit(),
            },
            _ => s.serialize_unit(),
        }
    }
}

struct ScaledList<'f>(&'f FieldValue);

impl serde::Serialize for ScaledList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        for v in self.0.scaled() {
            seq.serialize_element(&Scaled(v))?;
        }
        seq.end()
    }
}

impl serde::Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for f in self.record.fields() {
            if self.skip_core && CORE_FIELDS.contains(&f.def.number) {
                continue;
            }
            match &f.raw {
                RawValue::Scalar(_) => {
                    map.serialize_entry(f.def.name, &Scaled(f.scaled().next().flatten()))?
                }
                RawValue::List(_) => map.serialize_entry(f.def.name, &ScaledList(&f))?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod whole_tests {
    use super::whole;

    #[test]
    fn whole_numbers_print_without_a_fraction() {
        assert_eq!(whole(128.0), Some(128));
        assert_eq!(whole(-40.0), Some(-40));
        assert_eq!(whole(149.1), None);
        assert_eq!(whole(f64::NAN), None);
        assert_eq!(whole(f64::INFINITY), None);
        assert_eq!(whole(1e300), None);
    }
}
