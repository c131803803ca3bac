//! The synthetic device of `svoi smoke`: one blocking TCP connection to the device port that
//! does what a tracker does (`*>S` handshake, `*>FLEX` negotiation, one `~A` with one record)
//! and checks that each answer is exactly the bytes a conforming server sends, as computed by
//! `svoi_proto`'s reply encoder. The record's event time is now and its index is a random run
//! id, so the record of each run is new (never a duplicate) and can be read back by index.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;
use svoi_proto::encode::{self, RecordValues};
use svoi_proto::mask::{FieldMask, RecordLayout};
use svoi_proto::record::{RawValue, Value};
use svoi_proto::reply::{NtcbReply, Reply};
use svoi_proto::version;

/// The NTCB id the synthetic device sends from (IDs of its packets).
const DEVICE_ID: u32 = 1;

/// The NTCB id it addresses the server with, as the simulator does.
const SERVER_ID: u32 = svoi_sim::SERVER_ID;

/// The FLEX version it negotiates (protocol and structure): 3.0, the server's newest.
const FLEX: u8 = version::V3_0;

/// Fields of the record: index, event code, event time, navigation status, fix time,
/// latitude, longitude, altitude, speed, course (the simulator's mandatory set).
const FIELDS: [u8; 10] = svoi_sim::MANDATORY_FIELDS;

/// Satellites in the record's valid fix.
const SATELLITES: u8 = 8;
/// Latitude and longitude, raw (1/600 000 degree): 0.001° N, 0.002° E, next to "Null Island"
/// (0°, 0°) in the Gulf of Guinea, where no vehicle drives; different, so a swap shows.
const LATITUDE_RAW: i32 = 600;
const LONGITUDE_RAW: i32 = 1_200;
/// Altitude, decimetres (12.3 m).
const ALTITUDE_DM: i32 = 123;
/// Speed, km/h (exact in `f32`).
const SPEED_KMH: f32 = 4.5;
/// Course, degrees.
const COURSE: u16 = 67;
/// Event code of the record.
const EVENT_CODE: u16 = 0;

/// How long to wait, after the last answer, for bytes that should not come.
const TRAILING_WAIT: Duration = Duration::from_millis(100);

/// The one record a smoke run sends: what identifies it and every value it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmokeRecord {
    /// Field 1, the record index: a random id of this run.
    pub run_id: u32,
    /// Field 3, the event time (Unix seconds): when the run started.
    pub event_time: u32,
}

impl SmokeRecord {
    /// The record of a run starting now.
    pub fn now() -> SmokeRecord {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let event_time = u32::try_from(since_epoch.as_secs()).unwrap_or(u32::MAX);
        let seed = u64::from(since_epoch.subsec_nanos())
            ^ since_epoch.as_secs().rotate_left(32)
            ^ (u64::from(std::process::id()) << 16);
        SmokeRecord {
            run_id: (mix(seed) >> 32) as u32,
            event_time,
        }
    }

    /// The negotiated layout: [`FIELDS`] enabled.
    pub fn layout() -> Result<RecordLayout, String> {
        RecordLayout::new(mask()).map_err(|e| format!("cannot lay out the smoke record: {e}"))
    }

    /// The values by field number.
    pub fn values(&self) -> RecordValues {
        let u = |v: u64| RawValue::Scalar(Value::U(v));
        let i = |v: i64| RawValue::Scalar(Value::I(v));
        let mut values = RecordValues::new();
        values.insert(1, u(u64::from(self.run_id)));
        values.insert(2, u(u64::from(EVENT_CODE)));
        values.insert(3, u(u64::from(self.event_time)));
        // Receiver on (bit 0), fix valid (bit 1), satellites in bits 2..7.
        values.insert(8, u(u64::from((SATELLITES << 2) | 0b11)));
        values.insert(9, u(u64::from(self.event_time)));
        values.insert(10, i(i64::from(LATITUDE_RAW)));
        values.insert(11, i(i64::from(LONGITUDE_RAW)));
        values.insert(12, i(i64::from(ALTITUDE_DM)));
        values.insert(13, RawValue::Scalar(Value::F(SPEED_KMH)));
        values.insert(14, u(u64::from(COURSE)));
        values
    }

    /// Compares a record item of `GET /api/v1/devices/{imei}/records` with what was sent;
    /// the error names the first value that differs.
    pub fn check_item(&self, item: &Json) -> Result<(), String> {
        let int = |key: &str, want: i64| match item.get(key).and_then(Json::as_i64) {
            Some(got) if got == want => Ok(()),
            got => Err(format!("{key}: sent {want}, read {}", show(got))),
        };
        let float =
            |key: &str, want: f64, tolerance: f64| match item.get(key).and_then(Json::as_f64) {
                Some(got) if (got - want).abs() <= tolerance => Ok(()),
                got => Err(format!("{key}: sent {want}, read {}", show(got))),
            };
        int("index", i64::from(self.run_id))?;
        int("event_code", i64::from(EVENT_CODE))?;
        int("event_time", i64::from(self.event_time))?;
        int("fix_time", i64::from(self.event_time))?;
        match item.get("valid").and_then(Json::as_bool) {
            Some(true) => {}
            got => return Err(format!("valid: sent true, read {}", show(got))),
        }
        int("satellites", i64::from(SATELLITES))?;
        float("latitude", f64::from(LATITUDE_RAW) / 600_000.0, 1e-9)?;
        float("longitude", f64::from(LONGITUDE_RAW) / 600_000.0, 1e-9)?;
        float("altitude_m", f64::from(ALTITUDE_DM) / 10.0, 1e-6)?;
        float("speed_kmh", f64::from(SPEED_KMH), 1e-6)?;
        int("course", i64::from(COURSE))?;
        match item.get("source").and_then(Json::as_str) {
            Some("archive") => Ok(()),
            got => Err(format!("source: sent archive (~A), read {}", show(got))),
        }
    }
}

/// The mask of [`FIELDS`].
fn mask() -> FieldMask {
    let mut mask = FieldMask::empty();
    for f in FIELDS {
        mask.insert(f);
    }
    mask
}

/// `null` or the value, for error messages.
fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// SplitMix64's finaliser: spreads the bits of a seed.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One message of the session and the exact answer it must get.
struct Step {
    what: &'static str,
    message: Vec<u8>,
    expected: Vec<u8>,
}

/// The three messages of a smoke session and their expected answers.
fn steps(imei: &str, record: &SmokeRecord) -> Result<Vec<Step>, String> {
    let answer = |body| {
        Reply::Ntcb {
            receiver_id: DEVICE_ID,
            sender_id: SERVER_ID,
            body,
        }
        .to_bytes()
    };
    let handshake = encode::handshake(DEVICE_ID, SERVER_ID, imei)
        .map_err(|e| format!("cannot encode *>S: {e}"))?;
    let data_size = version::full_data_size(FLEX).unwrap_or(u8::MAX);
    let flex = encode::flex_request(DEVICE_ID, SERVER_ID, FLEX, FLEX, data_size, &mask())
        .map_err(|e| format!("cannot encode *>FLEX: {e}"))?;
    let layout = SmokeRecord::layout()?;
    let mut bytes = Vec::with_capacity(layout.record_size());
    encode::record(&layout, &record.values(), &mut bytes)
        .map_err(|e| format!("cannot encode the smoke record: {e}"))?;
    let archive = encode::archive(&[&bytes]).map_err(|e| format!("cannot encode ~A: {e}"))?;
    Ok(vec![
        Step {
            what: "*>S handshake",
            message: handshake,
            expected: answer(NtcbReply::Handshake),
        },
        Step {
            what: "*>FLEX negotiation",
            message: flex,
            expected: answer(NtcbReply::Flex {
                protocol_version: FLEX,
                struct_version: FLEX,
            }),
        },
        Step {
            what: "~A",
            message: archive,
            expected: Reply::Archive { count: 1 }.to_bytes(),
        },
    ])
}

/// Runs the session against `addr` as device `imei`, waiting at most `timeout` for the
/// connection and for each answer. `Ok` carries the pass detail, `Err` what went wrong.
pub fn session(
    addr: SocketAddr,
    imei: &str,
    record: &SmokeRecord,
    timeout: Duration,
) -> Result<String, String> {
    let steps = steps(imei, record)?;
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr} failed: {e}"))?;
    // Latency matters more than packet count; failing to set it changes nothing else.
    let _ = stream.set_nodelay(true);
    let mut ack_ms = 0;
    for step in &steps {
        let answered = exchange(&mut stream, step, timeout)?;
        ack_ms = answered.as_millis();
    }
    no_more_bytes(&mut stream)?;
    Ok(format!(
        "{imei} at {addr}: *>S, *>FLEX {} and ~A of record {} answered byte for byte \
         (~A acknowledged in {ack_ms} ms, session {} ms)",
        version::display(FLEX),
        record.run_id,
        started.elapsed().as_millis()
    ))
}

/// Sends a step's message and reads its answer, which must be exactly the expected bytes;
/// returns how long the answer took.
fn exchange(stream: &mut TcpStream, step: &Step, timeout: Duration) -> Result<Duration, String> {
    let what = step.what;
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(&step.message))
        .map_err(|e| format!("sending {what} failed: {e}"))?;
    let sent = Instant::now();
    let got = read_exactly(stream, step.expected.len(), sent + timeout)
        .map_err(|(why, got)| format!("{why} {what} (got {})", got_bytes(&got)))?;
    if got != step.expected {
        return Err(format!(
            "the answer to {what} is not the expected bytes: expected {}, got {}",
            hex::encode(&step.expected),
            hex::encode(&got)
        ));
    }
    Ok(sent.elapsed())
}

/// `3 bytes: 7e4101` or `nothing`.
fn got_bytes(got: &[u8]) -> String {
    if got.is_empty() {
        "nothing".to_string()
    } else {
        format!("{} bytes: {}", got.len(), hex::encode(got))
    }
}

/// Reads `n` bytes before `deadline`; on failure, why (a phrase ending before the message's
/// name) and what arrived.
fn read_exactly(
    stream: &mut TcpStream,
    n: usize,
    deadline: Instant,
) -> Result<Vec<u8>, (String, Vec<u8>)> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            buf.truncate(filled);
            return Err(("no complete answer in time to".to_string(), buf));
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            buf.truncate(filled);
            return Err((format!("cannot wait ({e}) for the answer to"), buf));
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                buf.truncate(filled);
                return Err((
                    "the server closed the connection instead of answering".to_string(),
                    buf,
                ));
            }
            Ok(k) => filled += k,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                buf.truncate(filled);
                return Err((
                    format!("reading failed ({e}) while waiting for the answer to"),
                    buf,
                ));
            }
        }
    }
    Ok(buf)
}

/// After the last answer the server has nothing more to say: bytes arriving within
/// [`TRAILING_WAIT`] mean an answer was longer than the protocol's.
fn no_more_bytes(stream: &mut TcpStream) -> Result<(), String> {
    if stream.set_read_timeout(Some(TRAILING_WAIT)).is_err() {
        return Ok(());
    }
    let mut extra = [0u8; 64];
    match stream.read(&mut extra) {
        Ok(0) | Err(_) => Ok(()),
        Ok(k) => Err(format!(
            "the server sent {k} unexpected bytes after the answer to ~A: {}",
            hex::encode(&extra[..k])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use svoi_proto::{Session, Step as Decoded};

    /// A one-connection server on loopback that decodes with `svoi_proto::Session` and answers
    /// each message through `answer` (given the correct reply bytes).
    fn fake_server(answer: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut session = Session::default();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Decoded::Message(m) = session.decode(&buf) {
                    if let Some(reply) = m.reply {
                        let _ = conn.write_all(&answer(&reply.to_bytes()));
                    }
                    buf.drain(..m.len);
                }
            }
        });
        addr
    }

    const IMEI: &str = "000000000000000";
    const LIMIT: Duration = Duration::from_millis(500);

    fn record() -> SmokeRecord {
        SmokeRecord {
            run_id: 123_456,
            event_time: 1_700_000_000,
        }
    }

    #[test]
    fn a_conforming_server_passes() {
        let addr = fake_server(|correct| correct.to_vec());
        let detail = session(addr, IMEI, &record(), LIMIT).unwrap();
        assert!(detail.contains("record 123456"), "{detail}");
        assert!(detail.contains("FLEX 3.0"), "{detail}");
    }

    #[test]
    fn a_wrong_byte_in_any_answer_fails() {
        // The ~A answer (3 bytes + CRC) with its count changed.
        let addr = fake_server(|correct| {
            let mut v = correct.to_vec();
            if v.starts_with(b"~A") {
                v[2] = 2;
            }
            v
        });
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(
            err.contains("answer to ~A is not the expected bytes"),
            "{err}"
        );
        assert!(err.contains("expected 7e4101df"), "{err}");

        // A handshake answer with a bad checksum.
        let addr = fake_server(|correct| {
            let mut v = correct.to_vec();
            if v.starts_with(b"@NTC") {
                let last = v.len() - 1;
                v[last] ^= 1;
            }
            v
        });
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(err.contains("*>S handshake"), "{err}");
    }

    #[test]
    fn silence_short_answers_and_extra_bytes_fail() {
        let addr = fake_server(|correct| {
            if correct.starts_with(b"~A") {
                Vec::new()
            } else {
                correct.to_vec()
            }
        });
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(
            err.contains("no complete answer in time to ~A (got nothing)"),
            "{err}"
        );

        let addr = fake_server(|correct| {
            if correct.starts_with(b"~A") {
                correct[..2].to_vec()
            } else {
                correct.to_vec()
            }
        });
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(err.contains("(got 2 bytes: 7e41)"), "{err}");

        let addr = fake_server(|correct| {
            let mut v = correct.to_vec();
            if correct.starts_with(b"~A") {
                v.push(0);
            }
            v
        });
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(
            err.contains("1 unexpected bytes after the answer to ~A"),
            "{err}"
        );
    }

    #[test]
    fn a_closed_port_fails_at_connect() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = session(addr, IMEI, &record(), LIMIT).unwrap_err();
        assert!(
            err.starts_with(&format!("connect to {addr} failed")),
            "{err}"
        );
    }

    #[test]
    fn the_record_encodes_and_check_item_names_the_first_difference() {
        let r = record();
        let layout = SmokeRecord::layout().unwrap();
        let mut bytes = Vec::new();
        encode::record(&layout, &r.values(), &mut bytes).unwrap();
        assert_eq!(bytes.len(), layout.record_size());
        let item = serde_json::json!({
            "index": 123_456, "event_code": 0, "event_time": 1_700_000_000,
            "fix_time": 1_700_000_000, "valid": true, "satellites": 8,
            "latitude": 0.001, "longitude": 0.002, "altitude_m": 12.3,
            "speed_kmh": 4.5, "course": 67, "source": "archive",
        });
        r.check_item(&item).unwrap();
        let mut swapped = item.clone();
        swapped["latitude"] = serde_json::json!(0.002);
        assert_eq!(
            r.check_item(&swapped).unwrap_err(),
            "latitude: sent 0.001, read 0.002"
        );
        let mut missing = item.clone();
        missing.as_object_mut().unwrap().remove("course");
        assert_eq!(
            r.check_item(&missing).unwrap_err(),
            "course: sent 67, read nothing"
        );
    }

    #[test]
    fn run_ids_differ_between_runs() {
        let a = SmokeRecord::now();
        std::thread::sleep(Duration::from_millis(2));
        let b = SmokeRecord::now();
        assert_ne!(a.run_id, b.run_id);
        assert!(a.event_time > 1_700_000_000);
    }
}
