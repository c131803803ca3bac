//! Property tests of the codec as a whole. This file owns the cross-module properties:
//! encode→decode round trips of FLEX records and additional records, invariance of decoding
//! under any split of the input into socket reads, totality of the decoder on arbitrary bytes,
//! and detection of every single-byte corruption of the accepted reference vectors. Unit tests
//! stay next to their modules, and the conformance of each vector to its expectation lives in
//! `vectors.rs`.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use serde_json::Value as Json;
use svoi_proto::checksum::crc8;
use svoi_proto::dictionary::Scalar;
use svoi_proto::encode::{self, RecordValues};
use svoi_proto::flex::FlexBody;
use svoi_proto::ntcb::{Command, encode_packet};
use svoi_proto::record::{DynamicItem, RawValue, Value};
use svoi_proto::session::DEFAULT_MAX_FRAME;
use svoi_proto::{
    Body, Core, ExtRecord, FieldMask, Message, Record, RecordLayout, Session, SessionConfig, Step,
    json,
};

// ---------------------------------------------------------------------------------------------
// Shared helpers.
// ---------------------------------------------------------------------------------------------

/// A proptest configuration with `cases` cases that never writes regression files, so a
/// failing run leaves the crate directory untouched.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One decoded message together with the bytes it used.
struct Decoded {
    message: Message,
    bytes: Vec<u8>,
}

impl Decoded {
    /// The decoder's JSON output for this message.
    fn json(&self) -> Json {
        json::message(&self.message, &self.bytes)
    }

    /// The reply bytes, if the message gets a reply.
    fn reply(&self) -> Option<Vec<u8>> {
        self.message.reply.map(|r| r.to_bytes())
    }
}

/// Decodes `bytes` completely the way `svoi decode` does: `decode` until it needs more, then
/// `decode_eof` for the tail. Panics (which fails the surrounding test or proptest case) when a
/// message uses no byte or more bytes than are left, or when the decoder does not terminate.
fn decode_all(session: &mut Session, bytes: &[u8]) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut rest = bytes;
    // Every message uses at least one byte, so a terminating decoder needs at most one call
    // per input byte plus the final call that finds nothing left.
    for _ in 0..=bytes.len() {
        let message = match session.decode(rest) {
            Step::Message(m) => m,
            Step::NeedMore => match session.decode_eof(rest) {
                Some(m) => m,
                None => {
                    assert!(
                        rest.is_empty(),
                        "decode_eof returned nothing with {} bytes left",
                        rest.len()
                    );
                    return out;
                }
            },
        };
        assert!(
            message.len >= 1 && message.len <= rest.len(),
            "message of {} bytes with {} bytes left: {message:?}",
            message.len,
            rest.len()
        );
        let (used, tail) = rest.split_at(message.len);
        out.push(Decoded {
            bytes: used.to_vec(),
            message,
        });
        rest = tail;
    }
    panic!("the decoder did not terminate on {} bytes", bytes.len());
}

/// Field numbers of the typed record core, in the order of [`core_bits`].
const CORE_FIELDS: [u8; 14] = [1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20];

/// The core as comparable bit patterns (floats by their bits, so NaN compares equal to
/// itself), in the order of [`CORE_FIELDS`].
fn core_bits(c: &Core) -> [Option<u64>; 14] {
    let f = |v: Option<f32>| v.map(|x| u64::from(x.to_bits()));
    let i = |v: Option<i32>| v.map(|x| i64::from(x) as u64);
    [
        c.index.map(u64::from),
        c.event_code.map(u64::from),
        c.event_time.map(u64::from),
        c.gsm_level.map(u64::from),
        c.nav_status.map(u64::from),
        c.fix_time.map(u64::from),
        i(c.latitude_raw),
        i(c.longitude_raw),
        i(c.altitude_dm),
        f(c.speed_kmh),
        c.course.map(u64::from),
        f(c.odometer_km),
        c.power_mv.map(u64::from),
        c.battery_mv.map(u64::from),
    ]
}

/// A scalar value as a comparable bit pattern, matching [`core_bits`].
fn value_bits(v: Value) -> u64 {
    match v {
        Value::U(u) => u,
        Value::I(i) => i as u64,
        Value::F(f) => u64::from(f.to_bits()),
    }
}

/// Whether two scalar values are identical: integers exactly, floats by their bits.
fn same_value(a: Value, b: Value) -> bool {
    match (a, b) {
        (Value::U(x), Value::U(y)) => x == y,
        (Value::I(x), Value::I(y)) => x == y,
        (Value::F(x), Value::F(y)) => x.to_bits() == y.to_bits(),
        _ => false,
    }
}

/// The core the decoder must derive from a record's field values.
fn expected_core(values: &RecordValues) -> [Option<u64>; 14] {
    CORE_FIELDS.map(|n| {
        values
            .get(&n)
            .and_then(|r| r.components().first().copied())
            .map(value_bits)
    })
}

/// An additional record as a comparable key (floats by their bits).
fn ext_key(r: &ExtRecord) -> (u8, [Option<u64>; 14], Vec<u8>, Vec<DynamicItem>) {
    (
        r.struct_version,
        core_bits(&r.core),
        r.static_extra.clone(),
        r.dynamic.clone(),
    )
}

/// A FLEX answer: `bytes` followed by their CRC8.
fn flex_reply(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.push(crc8(bytes));
    out
}

/// The NTCB answer the server sends to `device_id` from `server_id` with `body`.
fn ntcb_reply(device_id: u32, server_id: u32, body: &[u8]) -> Vec<u8> {
    encode_packet(device_id, server_id, body).unwrap_or_else(|e| panic!("encode reply: {e}"))
}

/// A `*>FLEX` request as negotiated by the device.
#[derive(Debug, Clone)]
struct Negotiation {
    protocol_version: u8,
    struct_version: u8,
    data_size: u8,
    mask: FieldMask,
}

impl Negotiation {
    fn layout(&self) -> RecordLayout {
        RecordLayout::new(self.mask).unwrap_or_else(|e| panic!("layout of {:?}: {e}", self.mask))
    }

    fn request(&self, device_id: u32, server_id: u32) -> Vec<u8> {
        encode::flex_request(
            device_id,
            server_id,
            self.protocol_version,
            self.struct_version,
            self.data_size,
            &self.mask,
        )
        .unwrap_or_else(|e| panic!("encode *>FLEX: {e}"))
    }
}

/// Groups the flat component values of one record into field values by the layout.
fn record_values(layout: &RecordLayout, components: &[Value]) -> RecordValues {
    let mut values = BTreeMap::new();
    let mut rest = components;
    for slot in layout.slots() {
        let (mine, tail) = rest.split_at(slot.def.wire.len());
        let raw = match mine {
            [only] => RawValue::Scalar(*only),
            many => RawValue::List(many.to_vec()),
        };
        values.insert(slot.def.number, raw);
        rest = tail;
    }
    assert!(rest.is_empty(), "{} components left over", rest.len());
    values
}

/// Encodes one record's values with `encode::record`.
fn encode_record(layout: &RecordLayout, values: &RecordValues) -> Vec<u8> {
    let mut out = Vec::new();
    encode::record(layout, values, &mut out).unwrap_or_else(|e| panic!("encode record: {e}"));
    out
}

/// Everything a generated device session is made of.
#[derive(Debug, Clone)]
struct Scenario {
    device_id: u32,
    server_id: u32,
    imei: String,
    negotiation: Negotiation,
    /// Flat component values of 1..=5 records, in wire order.
    records: Vec<Vec<Value>>,
    event_index: u32,
    ext: Vec<ExtRecord>,
    ext_index: u32,
    notification: (u8, u8, u32),
    transparent: (u8, u8, Vec<u8>),
}

impl Scenario {
    fn handshake(&self) -> Vec<u8> {
        encode::handshake(self.device_id, self.server_id, &self.imei)
            .unwrap_or_else(|e| panic!("encode *>S: {e}"))
    }

    /// The record values and their encodings.
    fn encoded(&self) -> (RecordLayout, Vec<RecordValues>, Vec<Vec<u8>>) {
        let layout = self.negotiation.layout();
        let values: Vec<RecordValues> = self
            .records
            .iter()
            .map(|c| record_values(&layout, c))
            .collect();
        let bytes = values.iter().map(|v| encode_record(&layout, v)).collect();
        (layout, values, bytes)
    }

    /// A stream with every message type a device sends: handshake, negotiation, `~A`, ping,
    /// NTCB keep-alive, `~T`, `~C`, `~E`, `~X`, `~N`, `~P`, `*@C` and a final ping.
    fn rich_stream(&self) -> Vec<u8> {
        let (_, _, records) = self.encoded();
        let (d, s) = (self.device_id, self.server_id);
        let fail = |what: &'static str| {
            move |e: svoi_proto::EncodeError| -> Vec<u8> { panic!("encode {what}: {e}") }
        };
        let (module, notification, time) = self.notification;
        let (t_module, put_id, data) = &self.transparent;
        let parts: Vec<Vec<u8>> = vec![
            self.handshake(),
            self.negotiation.request(d, s),
            encode::archive(&records).unwrap_or_else(fail("~A")),
            vec![encode::PING],
            encode::keepalive(d, s).unwrap_or_else(fail("keep-alive")),
            encode::alarm(self.event_index, &records[0]),
            encode::current(&records[0]),
            encode::ext_archive(&self.ext).unwrap_or_else(fail("~E")),
            encode::ext_alarm(self.ext_index, &self.ext[0]).unwrap_or_else(fail("~X")),
            encode::notification(module, notification, time),
            encode::transparent(*t_module, *put_id, data).unwrap_or_else(fail("~P")),
            encode::record_answer(d, s, &records[0]).unwrap_or_else(fail("*@C")),
            vec![encode::PING],
        ];
        parts.concat()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

/// An integer strategy that hits the type's extremes and zero more often than uniform.
macro_rules! edgy {
    ($t:ty, $wrap:expr) => {
        prop_oneof![
            1 => Just(<$t>::MIN),
            1 => Just(<$t>::MAX),
            1 => Just(0 as $t),
            6 => any::<$t>(),
        ]
        .prop_map($wrap)
        .boxed()
    };
}

/// Any value of one wire component: integers over their full range, floats from arbitrary
/// bits (NaNs with payloads, infinities, subnormals and negative zero included).
fn scalar_value(s: Scalar) -> BoxedStrategy<Value> {
    match s {
        Scalar::U8 => edgy!(u8, |v| Value::U(u64::from(v))),
        Scalar::U16 => edgy!(u16, |v| Value::U(u64::from(v))),
        Scalar::U32 => edgy!(u32, |v| Value::U(u64::from(v))),
        Scalar::U64 => edgy!(u64, Value::U),
        Scalar::I8 => edgy!(i8, |v| Value::I(i64::from(v))),
        Scalar::I16 => edgy!(i16, |v| Value::I(i64::from(v))),
        Scalar::I32 => edgy!(i32, |v| Value::I(i64::from(v))),
        Scalar::I64 => edgy!(i64, Value::I),
        Scalar::F32 => prop_oneof![
            3 => any::<u32>(),
            1 => select(vec![
                0x7FC0_0000u32, // Quiet NaN.
                0x7F80_0001,    // Signalling NaN.
                0xFFC0_1234,    // Negative NaN with a payload.
                0x7F80_0000,    // Positive infinity.
                0xFF80_0000,    // Negative infinity.
                0x8000_0000,    // Negative zero.
                0x0000_0001,    // Smallest subnormal.
            ]),
        ]
        .prop_map(|b| Value::F(f32::from_bits(b)))
        .boxed(),
    }
}

/// Flat component strategies for one record of `layout`, in wire order.
fn record_components(layout: &RecordLayout) -> Vec<BoxedStrategy<Value>> {
    layout
        .slots()
        .iter()
        .flat_map(|slot| slot.def.wire.iter().map(|&s| scalar_value(s)))
        .collect()
}

/// A negotiation: a random subset of the fields of FLEX 1.0 (1..=69), 2.0 (1..=122) or 3.0
/// (1..=255) with the matching versions and `data_size`, sometimes a full structure, and
/// rarely the empty mask.
fn negotiation() -> impl Strategy<Value = Negotiation> {
    let structure = |version: u8, last: u8| {
        let all: Vec<u8> = (1..=last).collect();
        subsequence(all, 0..=usize::from(last)).prop_map(move |fields| Negotiation {
            protocol_version: version,
            struct_version: version,
            data_size: last,
            mask: FieldMask::from_fields(fields).unwrap_or_else(|e| panic!("mask: {e}")),
        })
    };
    let full =
        select(vec![(0x0Au8, 69u8), (0x14, 122), (0x1E, 255)]).prop_map(|(v, last)| Negotiation {
            protocol_version: v,
            struct_version: v,
            data_size: last,
            mask: FieldMask::all_up_to(last),
        });
    let empty =
        select(vec![(0x0Au8, 69u8), (0x14, 122), (0x1E, 255)]).prop_map(|(v, last)| Negotiation {
            protocol_version: v,
            struct_version: v,
            data_size: last,
            mask: FieldMask::empty(),
        });
    prop_oneof![
        3 => structure(0x0A, 69),
        3 => structure(0x14, 122),
        4 => structure(0x1E, 255),
        1 => full,
        1 => empty,
    ]
}

/// Any f32, NaNs and infinities included, made from arbitrary bits; additional records are
/// therefore compared by bits.
fn f32_any() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

/// An additional record of static version 1.0 with 0..=3 dynamic items.
fn ext_record() -> impl Strategy<Value = ExtRecord> {
    let head = (
        any::<u32>(),
        any::<u16>(),
        any::<u32>(),
        any::<u8>(),
        any::<u32>(),
        any::<i32>(),
    );
    let tail = (
        any::<i32>(),
        any::<i32>(),
        f32_any(),
        any::<u16>(),
        f32_any(),
    );
    let item =
        (1u8..=3, vec(any::<u8>(), 0..=32)).prop_map(|(kind, data)| DynamicItem { kind, data });
    (head, tail, vec(item, 0..=3)).prop_map(
        |(
            (index, event_code, event_time, nav_status, fix_time, latitude),
            (longitude, altitude, speed, course, odometer),
            dynamic,
        )| ExtRecord {
            struct_version: 0x0A,
            core: Core {
                index: Some(index),
                event_code: Some(event_code),
                event_time: Some(event_time),
                gsm_level: None,
                nav_status: Some(nav_status),
                fix_time: Some(fix_time),
                latitude_raw: Some(latitude),
                longitude_raw: Some(longitude),
                altitude_dm: Some(altitude),
                speed_kmh: Some(speed),
                course: Some(course),
                odometer_km: Some(odometer),
                power_mv: None,
                battery_mv: None,
            },
            static_extra: Vec::new(),
            dynamic,
        },
    )
}

/// A whole generated device session.
fn scenario() -> impl Strategy<Value = Scenario> {
    let head = (any::<u32>(), any::<u32>(), "[!-~]{1,24}");
    let data = negotiation().prop_flat_map(|n| {
        let components = record_components(&n.layout());
        (Just(n), vec(components, 1..=5))
    });
    let extras = (
        any::<u32>(),
        vec(ext_record(), 1..=3),
        any::<u32>(),
        (any::<u8>(), any::<u8>(), any::<u32>()),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..64)),
    );
    (head, data, extras).prop_map(
        |(
            (device_id, server_id, imei),
            (negotiation, records),
            (event_index, ext, ext_index, notification, transparent),
        )| Scenario {
            device_id,
            server_id,
            imei,
            negotiation,
            records,
            event_index,
            ext,
            ext_index,
            notification,
            transparent,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Encode → decode round trips.
// ---------------------------------------------------------------------------------------------

/// How the generated records travel.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    /// `~A` with every record.
    Archive,
    /// `~T` with the first record.
    Alarm,
    /// `~C` with the first record.
    Current,
    /// `*@C` with the first record.
    RecordAnswer,
}

fn carrier() -> impl Strategy<Value = Carrier> {
    select(vec![
        Carrier::Archive,
        Carrier::Alarm,
        Carrier::Current,
        Carrier::RecordAnswer,
    ])
}

/// Checks the handshake and negotiation answers at the start of a decoded session.
fn check_session_start(
    s: &Scenario,
    session: &Session,
    out: &[Decoded],
) -> Result<(), TestCaseError> {
    let n = &s.negotiation;
    prop_assert!(out.len() >= 2, "only {} messages", out.len());
    prop_assert!(out[0].message.error().is_none(), "{:?}", out[0].message);
    prop_assert_eq!(
        out[0].reply(),
        Some(ntcb_reply(s.device_id, s.server_id, b"*<S"))
    );
    match &out[1].message.body {
        Body::Ntcb(p) => match &p.command {
            Some(Command::FlexRequest(r)) => prop_assert!(r.accepted(), "{r:?}"),
            other => prop_assert!(false, "not a *>FLEX: {other:?}"),
        },
        other => prop_assert!(false, "not an NTCB packet: {other:?}"),
    }
    let mut answer = b"*<FLEX".to_vec();
    answer.extend_from_slice(&[0xB0, n.protocol_version, n.struct_version]);
    prop_assert_eq!(
        out[1].reply(),
        Some(ntcb_reply(s.device_id, s.server_id, &answer))
    );
    prop_assert_eq!(
        session.identity().map(|i| i.imei.as_str()),
        Some(s.imei.as_str())
    );
    prop_assert_eq!(session.negotiated().map(|x| *x.layout.mask()), Some(n.mask));
    Ok(())
}

/// Checks one decoded record against the values and bytes it was encoded from.
fn check_record(record: &Record, values: &RecordValues, bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(record.bytes(), bytes);
    let fields: Vec<_> = record.fields().collect();
    prop_assert_eq!(fields.len(), values.len());
    for (field, (number, want)) in fields.iter().zip(values) {
        prop_assert_eq!(field.def.number, *number);
        let got = field.raw.components();
        let want = want.components();
        prop_assert_eq!(got.len(), want.len(), "field {}", number);
        for (g, w) in got.iter().zip(want) {
            prop_assert!(
                same_value(*g, *w),
                "field {number}: decoded {g:?}, encoded {w:?}"
            );
        }
    }
    prop_assert_eq!(core_bits(record.core()), expected_core(values));
    Ok(())
}

fn check_round_trip(s: &Scenario, carrier: Carrier) -> Result<(), TestCaseError> {
    let (_, values, records) = s.encoded();
    let (d, sv) = (s.device_id, s.server_id);
    let (data, used, reply) = match carrier {
        Carrier::Archive => {
            let count = records.len() as u8;
            let data = encode::archive(&records)
                .map_err(|e| TestCaseError::fail(format!("encode ~A: {e}")))?;
            (data, records.len(), Some(flex_reply(&[0x7E, 0x41, count])))
        }
        Carrier::Alarm => {
            let mut header = vec![0x7E, 0x54];
            header.extend_from_slice(&s.event_index.to_le_bytes());
            let data = encode::alarm(s.event_index, &records[0]);
            (data, 1, Some(flex_reply(&header)))
        }
        Carrier::Current => (
            encode::current(&records[0]),
            1,
            Some(vec![0x7E, 0x43, 0xB9]),
        ),
        Carrier::RecordAnswer => {
            let data = encode::record_answer(d, sv, &records[0])
                .map_err(|e| TestCaseError::fail(format!("encode *@C: {e}")))?;
            (data, 1, None)
        }
    };
    let stream = [s.handshake(), s.negotiation.request(d, sv), data.clone()].concat();
    let mut session = Session::default();
    let out = decode_all(&mut session, &stream);
    prop_assert_eq!(
        out.len(),
        3,
        "{:#?}",
        out.iter().map(Decoded::json).collect::<Vec<_>>()
    );
    check_session_start(s, &session, &out)?;

    let m = &out[2].message;
    prop_assert!(m.error().is_none(), "{:?}", m.error());
    prop_assert_eq!(m.len, data.len());
    let decoded: &[Record] = match &m.body {
        Body::Flex(f) => {
            prop_assert!(f.crc_ok);
            if let FlexBody::Archive { count, .. } = f.body {
                prop_assert_eq!(usize::from(count), records.len());
            }
            f.records()
        }
        Body::Ntcb(p) => {
            prop_assert!(p.checksum_ok());
            match &p.command {
                Some(Command::RecordAnswer { name, record }) => {
                    prop_assert_eq!(*name, "*@C");
                    std::slice::from_ref(record)
                }
                other => return Err(TestCaseError::fail(format!("not *@C: {other:?}"))),
            }
        }
        other => return Err(TestCaseError::fail(format!("not data: {other:?}"))),
    };
    prop_assert_eq!(decoded.len(), used);
    for (record, (v, b)) in decoded.iter().zip(values.iter().zip(&records)) {
        check_record(record, v, b)?;
    }
    prop_assert_eq!(out[2].reply(), reply);
    Ok(())
}

fn check_ext_round_trip(s: &Scenario) -> Result<(), TestCaseError> {
    let (d, sv) = (s.device_id, s.server_id);
    let archive =
        encode::ext_archive(&s.ext).map_err(|e| TestCaseError::fail(format!("encode ~E: {e}")))?;
    let alarm = encode::ext_alarm(s.ext_index, &s.ext[0])
        .map_err(|e| TestCaseError::fail(format!("encode ~X: {e}")))?;
    let stream = [
        s.handshake(),
        s.negotiation.request(d, sv),
        archive.clone(),
        alarm.clone(),
    ]
    .concat();
    let mut session = Session::default();
    let out = decode_all(&mut session, &stream);
    prop_assert_eq!(
        out.len(),
        4,
        "{:#?}",
        out.iter().map(Decoded::json).collect::<Vec<_>>()
    );
    check_session_start(s, &session, &out)?;

    let want: Vec<_> = s.ext.iter().map(ext_key).collect();
    for (i, (decoded, len, expected)) in [
        (&out[2], archive.len(), &want[..]),
        (&out[3], alarm.len(), &want[..1]),
    ]
    .into_iter()
    .enumerate()
    {
        let m = &decoded.message;
        prop_assert!(m.error().is_none(), "message {}: {:?}", i + 2, m.error());
        prop_assert_eq!(m.len, len);
        let Body::Flex(f) = &m.body else {
            return Err(TestCaseError::fail(format!("not FLEX: {:?}", m.body)));
        };
        prop_assert!(f.crc_ok);
        let got: Vec<_> = f.ext_records().iter().map(ext_key).collect();
        prop_assert_eq!(&got[..], expected);
        // Without NaNs the derived equality must agree with the bitwise comparison.
        let finite = |r: &ExtRecord| {
            !r.core.speed_kmh.is_some_and(f32::is_nan)
                && !r.core.odometer_km.is_some_and(f32::is_nan)
        };
        if s.ext.iter().all(finite) {
            prop_assert_eq!(f.ext_records(), &s.ext[..expected.len()]);
        }
    }
    let mut x_header = vec![0x7E, 0x58];
    x_header.extend_from_slice(&s.ext_index.to_le_bytes());
    prop_assert_eq!(
        out[2].reply(),
        Some(flex_reply(&[0x7E, 0x45, s.ext.len() as u8]))
    );
    prop_assert_eq!(out[3].reply(), Some(flex_reply(&x_header)));
    Ok(())
}

proptest! {
    #![proptest_config(config(192))]

    /// Records with random masks and values survive `~A`, `~T`, `~C` and `*@C` bit for bit,
    /// with the typed core agreeing with the fields and the exact expected answers.
    #[test]
    fn records_round_trip(s in scenario(), carrier in carrier()) {
        check_round_trip(&s, carrier)?;
    }

    /// Additional records survive `~E` and `~X` unchanged, with the exact expected answers.
    #[test]
    fn additional_records_round_trip(s in scenario()) {
        check_ext_round_trip(&s)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Chunk-split invariance.
// ---------------------------------------------------------------------------------------------

/// What a decode produced: `(offset, len, json)` per message, and the concatenated replies.
type Transcript = (Vec<(u64, usize, Json)>, Vec<u8>);

/// Decodes a whole stream and also checks that, at every message boundary, every strict prefix
/// of the next message makes `decode` answer `NeedMore` without changing the session.
fn decode_whole_checking_prefixes(bytes: &[u8]) -> Result<Transcript, TestCaseError> {
    let mut session = Session::default();
    let mut messages = Vec::new();
    let mut replies = Vec::new();
    let mut rest = bytes;
    for _ in 0..=bytes.len() {
        let message = match session.decode(rest) {
            Step::Message(m) => m,
            Step::NeedMore => match session.decode_eof(rest) {
                Some(m) => m,
                None => return Ok((messages, replies)),
            },
        };
        prop_assert!(message.len >= 1 && message.len <= rest.len());
        for k in 1..message.len {
            let mut probe = session.clone();
            let before = probe.position();
            prop_assert_eq!(
                probe.decode(&rest[..k]),
                Step::NeedMore,
                "a {}-byte prefix of the {}-byte message at offset {} was not NeedMore",
                k,
                message.len,
                message.offset
            );
            prop_assert_eq!(probe.position(), before);
        }
        messages.push((
            message.offset,
            message.len,
            json::message(&message, &rest[..message.len]),
        ));
        if let Some(r) = message.reply {
            r.encode_into(&mut replies);
        }
        rest = &rest[message.len..];
    }
    Err(TestCaseError::fail("the decoder did not terminate"))
}

/// Decodes `bytes` as a server reads a socket: the stream arrives in the chunks between the
/// sorted `cuts`, each appended to a buffer that is decoded until `NeedMore` and drained by
/// each message's length; `decode_eof` runs only after the last chunk. `expected` is the whole
/// decode, used to check that `NeedMore` comes exactly while the next message is incomplete.
fn decode_chunked(
    bytes: &[u8],
    cuts: &[usize],
    expected: &[(u64, usize, Json)],
) -> Result<Transcript, TestCaseError> {
    let mut session = Session::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut messages = Vec::new();
    let mut replies = Vec::new();
    let mut start = 0;
    let mut take = |m: Message, buf: &mut Vec<u8>, messages: &mut Vec<_>| {
        messages.push((m.offset, m.len, json::message(&m, &buf[..m.len])));
        if let Some(r) = m.reply {
            r.encode_into(&mut replies);
        }
        buf.drain(..m.len);
    };
    for end in cuts.iter().copied().chain([bytes.len()]) {
        buf.extend_from_slice(&bytes[start..end]);
        start = end;
        loop {
            match session.decode(&buf) {
                Step::NeedMore => {
                    if let Some((offset, len, _)) = expected.get(messages.len()) {
                        prop_assert!(
                            buf.len() < *len,
                            "NeedMore with {} bytes buffered although the message at {} has {}",
                            buf.len(),
                            offset,
                            len
                        );
                    }
                    break;
                }
                Step::Message(m) => {
                    prop_assert!(m.len >= 1 && m.len <= buf.len(), "{m:?}");
                    take(m, &mut buf, &mut messages);
                }
            }
        }
    }
    for _ in 0..=buf.len() {
        match session.decode_eof(&buf) {
            Some(m) => {
                prop_assert!(m.len >= 1 && m.len <= buf.len(), "{m:?}");
                take(m, &mut buf, &mut messages);
            }
            None => break,
        }
    }
    prop_assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    Ok((messages, replies))
}

/// Asserts that decoding `bytes` whole and in the chunks given by `cuts` agree.
fn check_split(bytes: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let (whole, whole_replies) = decode_whole_checking_prefixes(bytes)?;
    let (chunked, chunked_replies) = decode_chunked(bytes, cuts, &whole)?;
    prop_assert_eq!(whole.len(), chunked.len());
    for (w, c) in whole.iter().zip(&chunked) {
        prop_assert_eq!(w, c);
    }
    prop_assert_eq!(hex::encode(whole_replies), hex::encode(chunked_replies));
    Ok(())
}

proptest! {
    #![proptest_config(config(96))]

    /// A valid stream with every message type decodes to the same messages and replies however
    /// it is split into reads.
    #[test]
    fn any_split_decodes_the_same(
        s in scenario(),
        cuts in prop_oneof![vec(any::<Index>(), 0..8), vec(any::<Index>(), 0..200)],
    ) {
        let bytes = s.rich_stream();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let (whole, _) = decode_whole_checking_prefixes(&bytes)?;
        // The stream is valid: thirteen messages, none rejected.
        prop_assert_eq!(whole.len(), 13);
        for (_, _, j) in &whole {
            prop_assert!(j.get("error").is_none(), "{j}");
        }
        check_split(&bytes, &cuts)?;
    }
}

/// A deterministic 64-bit generator (SplitMix64) for fixed test inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Deterministic component values for one record of `layout`.
fn fixed_components(layout: &RecordLayout, rng: &mut SplitMix) -> Vec<Value> {
    layout
        .slots()
        .iter()
        .flat_map(|slot| slot.def.wire.iter())
        .map(|&s| {
            let r = rng.next();
            match s {
                Scalar::U8 => Value::U(r & 0xFF),
                Scalar::U16 => Value::U(r & 0xFFFF),
                Scalar::U32 => Value::U(r & 0xFFFF_FFFF),
                Scalar::U64 => Value::U(r),
                Scalar::I8 => Value::I(i64::from(r as u8 as i8)),
                Scalar::I16 => Value::I(i64::from(r as u16 as i16)),
                Scalar::I32 => Value::I(i64::from(r as u32 as i32)),
                Scalar::I64 => Value::I(r as i64),
                Scalar::F32 => Value::F(f32::from_bits(r as u32)),
            }
        })
        .collect()
}

/// A fixed FLEX 3.0 scenario with every field enabled and three records.
fn fixed_scenario() -> Scenario {
    let negotiation = Negotiation {
        protocol_version: 0x1E,
        struct_version: 0x1E,
        data_size: 255,
        mask: FieldMask::all_up_to(255),
    };
    let layout = negotiation.layout();
    let mut rng = SplitMix(0x5EED);
    let records = (0..3)
        .map(|_| fixed_components(&layout, &mut rng))
        .collect();
    let ext = ExtRecord {
        struct_version: 0x0A,
        core: Core {
            index: Some(7),
            event_code: Some(0x2530),
            event_time: Some(1_700_000_000),
            nav_status: Some(0x2B),
            fix_time: Some(1_699_999_990),
            latitude_raw: Some(33_000_000),
            longitude_raw: Some(-22_000_000),
            altitude_dm: Some(1234),
            speed_kmh: Some(42.5),
            course: Some(359),
            odometer_km: Some(12345.5),
            ..Core::default()
        },
        static_extra: Vec::new(),
        dynamic: vec![
            DynamicItem {
                kind: 1,
                data: 0x0123_4567_89AB_CDEFu64.to_le_bytes().to_vec(),
            },
            DynamicItem {
                kind: 2,
                data: b"1234567890ABCDEF".to_vec(),
            },
        ],
    };
    Scenario {
        device_id: 1,
        server_id: 0,
        imei: "866795031410689".into(),
        negotiation,
        records,
        event_index: 0xDEAD_BEEF,
        ext: vec![ext.clone(), ext],
        ext_index: 3,
        notification: (0x80, 5, 1_700_000_100),
        transparent: (0x7F, 2, b"transparent data".to_vec()),
    }
}

/// The worst split: every byte arrives on its own, for a full FLEX 3.0 stream and for the
/// reference's multi-message session vector.
#[test]
fn byte_at_a_time_decodes_the_same() {
    let reference = vectors()
        .into_iter()
        .find(|v| v["name"] == "synthetic_session_stream")
        .map(|v| unhex(v["hex"].as_str().unwrap_or_default()))
        .unwrap_or_default();
    assert!(!reference.is_empty(), "synthetic_session_stream is missing");
    for bytes in [fixed_scenario().rich_stream(), reference] {
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        check_split(&bytes, &cuts).unwrap_or_else(|e| panic!("byte at a time: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Arbitrary bytes never panic.
// ---------------------------------------------------------------------------------------------

/// Decodes arbitrary `bytes` fully and checks the accounting invariants: every message uses at
/// least one byte, offsets are contiguous, the lengths add up to the input, the session's
/// position ends at the input length, only messages without an error are answered, and every
/// message can be printed as JSON.
fn check_total(session: Session, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut session = session;
    let start = session.position();
    let out = decode_all(&mut session, bytes);
    let mut offset = start;
    for d in &out {
        let m = &d.message;
        prop_assert_eq!(m.offset, offset, "offsets are not contiguous");
        prop_assert!(m.len >= 1);
        prop_assert!(
            m.reply.is_none() || m.error().is_none(),
            "a rejected message is answered: {m:?}"
        );
        let j = d.json();
        prop_assert_eq!(j["offset"].as_u64(), Some(m.offset));
        offset += m.len as u64;
    }
    prop_assert_eq!(
        offset - start,
        bytes.len() as u64,
        "bytes not accounted for"
    );
    prop_assert_eq!(session.position(), offset);
    Ok(())
}

/// A session that has already seen a handshake and a negotiation of `n`. The frame limit is
/// raised to 64 bytes when it is lower, so that the 58-byte `*>FLEX` of FLEX 3.0 still fits.
fn primed(n: &Negotiation, max_frame: usize) -> Session {
    let mut session = Session::new(SessionConfig {
        max_frame: max_frame.max(64),
    });
    let prefix = [
        encode::handshake(1, 0, "866795031410689").unwrap_or_else(|e| panic!("*>S: {e}")),
        n.request(1, 0),
    ]
    .concat();
    let out = decode_all(&mut session, &prefix);
    assert_eq!(out.len(), 2, "prefix must decode to two messages");
    session
}

/// An additional record with a correct `size` but otherwise loose content: any version, a
/// static length `L` near the boundaries that matter with a static part that may be shorter or
/// longer than `L`, and dynamic items whose length bytes may be off by a little.
fn loose_ext_record() -> impl Strategy<Value = Vec<u8>> {
    let l = prop_oneof![
        3 => Just(37u8),
        2 => select(vec![0u8, 1, 2, 36, 38, 40]),
        1 => any::<u8>(),
    ];
    let off_by = || prop_oneof![2 => Just(0i32), 1 => -2i32..=2];
    let item = (any::<u8>(), off_by(), vec(any::<u8>(), 0..12));
    (
        any::<u8>(),
        l,
        off_by(),
        vec(item, 0..4),
        vec(any::<u8>(), 0..2),
    )
        .prop_map(|(version, l, static_delta, items, trailing)| {
            let static_len = (i32::from(l) + static_delta).clamp(0, 300) as usize;
            let mut body = vec![version, l];
            body.extend(std::iter::repeat_n(0x55, static_len));
            for (kind, delta, data) in items {
                let declared = (data.len() as i32 + delta).clamp(0, 255) as u8;
                body.extend_from_slice(&[kind, declared]);
                body.extend_from_slice(&data);
            }
            body.extend_from_slice(&trailing);
            let size = body.len() as u16;
            [&size.to_le_bytes()[..], &body].concat()
        })
}

/// Pieces that make a decoder take its less travelled paths: preambles and their prefixes,
/// FLEX type letters with random tails, valid FLEX frames, well-framed `~E`/`~X` with a good CRC
/// around malformed additional records, NTCB packets with every command and random bodies, and
/// plain random bytes.
fn token() -> BoxedStrategy<Vec<u8>> {
    let letters = b"ATCEXNPZQM".to_vec();
    let commands: Vec<&'static [u8]> = vec![
        b"*>S:",
        b"*>S",
        b"*>S2U",
        b"*>FLEX\xB0",
        b"*>FLEX",
        b"*<FLEX",
        b"*>TMKEY",
        b"*>CODE",
        b"*>A",
        b"*>T",
        b"*>T\x00",
        b"*@C",
        b"*#A",
        b"*@",
        b"",
    ];
    prop_oneof![
        3 => vec(any::<u8>(), 0..16),
        1 => select(vec![
            b"@NTC".to_vec(),
            b"@NT".to_vec(),
            b"@N".to_vec(),
            b"@".to_vec(),
            b"~".to_vec(),
            vec![0x7F],
        ]),
        2 => (select(letters.clone()), vec(any::<u8>(), 0..12)).prop_map(|(l, tail)| {
            [vec![b'~', l], tail].concat()
        }),
        2 => (select(letters), vec(any::<u8>(), 0..24)).prop_map(|(l, tail)| {
            flex_reply(&[vec![b'~', l], tail].concat())
        }),
        1 => vec(ext_record(), 0..3).prop_map(|r| {
            encode::ext_archive(&r).unwrap_or_else(|e| panic!("~E: {e}"))
        }),
        1 => (any::<u32>(), ext_record()).prop_map(|(i, r)| {
            encode::ext_alarm(i, &r).unwrap_or_else(|e| panic!("~X: {e}"))
        }),
        2 => vec(loose_ext_record(), 0..3).prop_map(|r| {
            flex_reply(&[vec![b'~', b'E', r.len() as u8], r.concat()].concat())
        }),
        2 => (any::<u32>(), loose_ext_record()).prop_map(|(i, r)| {
            flex_reply(&[&[b'~', b'X'][..], &i.to_le_bytes(), &r].concat())
        }),
        1 => (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..24)).prop_map(|(m, p, d)| {
            encode::transparent(m, p, &d).unwrap_or_else(|e| panic!("~P: {e}"))
        }),
        3 => (any::<u32>(), any::<u32>(), select(commands), vec(any::<u8>(), 0..40)).prop_map(
            |(r, s, c, tail)| {
                encode_packet(r, s, &[c, &tail[..]].concat())
                    .unwrap_or_else(|e| panic!("ntcb: {e}"))
            }
        ),
        1 => (negotiation(), any::<u32>(), any::<u32>()).prop_map(|(n, d, s)| n.request(d, s)),
    ]
    .boxed()
}

/// A stream of concatenated tokens.
fn soup(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(token(), 0..max).prop_map(|t| t.concat())
}

/// Either the default frame limit or a small one that the generated frames exceed.
fn max_frame() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(DEFAULT_MAX_FRAME), 1 => 1usize..=600]
}

proptest! {
    #![proptest_config(config(160))]

    /// Random bytes, from a fresh session.
    #[test]
    fn random_bytes_are_accounted_for(bytes in vec(any::<u8>(), 0..4096), limit in max_frame()) {
        check_total(Session::new(SessionConfig { max_frame: limit }), &bytes)?;
    }

    /// Structured noise, from a fresh session and after a valid handshake and negotiation.
    #[test]
    fn structured_noise_is_accounted_for(
        bytes in soup(64),
        n in negotiation(),
        limit in max_frame(),
    ) {
        check_total(Session::new(SessionConfig { max_frame: limit }), &bytes)?;
        check_total(primed(&n, limit), &bytes)?;
    }

    /// Random bytes after a valid handshake and negotiation.
    #[test]
    fn random_bytes_after_negotiation_are_accounted_for(
        bytes in vec(any::<u8>(), 0..4096),
        n in negotiation(),
        limit in max_frame(),
    ) {
        check_total(primed(&n, limit), &bytes)?;
    }

    /// A valid stream with random bytes inserted and overwritten at random places.
    #[test]
    fn damaged_streams_are_accounted_for(
        s in scenario(),
        inserts in vec((any::<Index>(), vec(any::<u8>(), 1..8)), 0..6),
        overwrites in vec((any::<Index>(), any::<u8>()), 0..6),
        limit in max_frame(),
    ) {
        let mut bytes = s.rich_stream();
        for (at, noise) in inserts {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, noise);
        }
        for (at, b) in overwrites {
            let at = at.index(bytes.len());
            bytes[at] = b;
        }
        check_total(Session::new(SessionConfig { max_frame: limit }), &bytes)?;
    }
}

/// A frame limit of zero must still make progress. Before the handshake, a buffer holding only
/// a cut preamble (`@`, `@N`, `@NT`) leaves nothing to skip; a session that emitted a
/// zero-length garbage message there (as one did when `0 >= max_frame`) would make a caller
/// that drains `message.len` bytes and decodes again loop forever.
#[test]
fn zero_frame_limit_still_makes_progress() {
    for bytes in [&b"@NT"[..], b"x@N", b"@"] {
        check_total(Session::new(SessionConfig { max_frame: 0 }), bytes)
            .unwrap_or_else(|e| panic!("{bytes:?}: {e}"));
    }
}

/// Deterministic coverage of the framing decisions: every pair of leading bytes after a
/// negotiation (followed by a fixed tail), and every vector, every prefix of it and every
/// vector without its context.
#[test]
fn arbitrary_bytes_deterministic() {
    let n = Negotiation {
        protocol_version: 0x14,
        struct_version: 0x14,
        data_size: 122,
        mask: FieldMask::from_fields([1, 2, 3, 10, 11]).unwrap_or_else(|e| panic!("{e}")),
    };
    let session = primed(&n, DEFAULT_MAX_FRAME);
    let tail = [
        0x01, 0x00, 0x27, 0x00, 0x0A, 0x25, 0x7E, 0x41, 0x00, 0xFF, 0x40, 0x4E,
    ];
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            let bytes = [&[a, b][..], &tail].concat();
            check_total(session.clone(), &bytes)
                .unwrap_or_else(|e| panic!("{:02x} {:02x}: {e}", a, b));
        }
    }
    for v in vectors() {
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let bytes = unhex(v["hex"].as_str().unwrap_or_default());
        let with_context = context_session(&v);
        check_total(Session::default(), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for k in 0..=bytes.len() {
            check_total(with_context.clone(), &bytes[..k])
                .unwrap_or_else(|e| panic!("{name}[..{k}]: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Every single-byte corruption is caught.
// ---------------------------------------------------------------------------------------------

fn vectors() -> Vec<Json> {
    match serde_json::from_str::<Json>(include_str!("data/vectors.json")) {
        Ok(Json::Array(v)) => v,
        other => panic!("vectors.json is not an array: {other:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// A fresh session that has decoded the vector's context (handshake, then negotiation) the way
/// `vectors.rs` feeds it.
fn context_session(v: &Json) -> Session {
    let mut session = Session::default();
    for key in ["handshake_hex", "flex_hex"] {
        if let Some(h) = v["context"].get(key).and_then(Json::as_str) {
            decode_all(&mut session, &unhex(h));
        }
    }
    session
}

/// Whether a message is accepted as valid: NTCB with both checksums and a parsed body, FLEX
/// with a good CRC and no error, or a ping.
fn accepted(m: &Message) -> bool {
    match &m.body {
        Body::Ntcb(p) => p.checksum_ok() && p.error.is_none(),
        Body::Flex(f) => f.crc_ok && f.error.is_none(),
        Body::Ping => true,
        Body::Garbage | Body::Error(_) => false,
    }
}

/// Flipping bits of any one byte of an accepted device → server vector (after its context)
/// never yields a decode without an error; when the corrupted bytes still decode as one message
/// of the original length, that message carries the error (CRC8 or XOR caught the change).
#[test]
fn every_single_byte_corruption_is_caught() {
    const DELTAS: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF, 0x5A];
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for v in vectors() {
        if v["direction"] != "device->server" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let original = unhex(v["hex"].as_str().unwrap_or_default());
        let context = context_session(&v);
        let decoded = decode_all(&mut context.clone(), &original);
        // Only vectors whose every message is accepted can reveal a silently accepted
        // corruption. This leaves out the vectors that are rejected to begin with (bad CRC, bad
        // header checksum, FLEX before negotiation) and `synthetic_garbage_before_handshake`:
        // its leading garbage is skipped by design, so corrupting it changes nothing the
        // assertion could observe. The multi-message `synthetic_session_stream` stays in.
        if decoded.is_empty() || !decoded.iter().all(|d| accepted(&d.message)) {
            continue;
        }
        // Before the handshake the codec skips anything that is not an NTCB packet as garbage
        // without an error (reference §8 rule 1, §9: a corrupt `*>S` leaves the session
        // unauthenticated), so there a corruption may also turn the whole input into garbage:
        // nothing is decoded and nothing is answered.
        let before_handshake = context.identity().is_none();
        checked.push(name.clone());
        for pos in 0..original.len() {
            for delta in DELTAS {
                let mut corrupted = original.clone();
                corrupted[pos] ^= delta;
                let out = decode_all(&mut context.clone(), &corrupted);
                let rejected = out.iter().any(|d| d.message.error().is_some());
                let skipped = before_handshake
                    && out.iter().all(|d| d.message.body == Body::Garbage)
                    && out.iter().all(|d| d.message.reply.is_none());
                let describe = || {
                    format!(
                        "{name}: byte {pos} ^ {delta:#04x}: {:?}",
                        out.iter().map(Decoded::json).collect::<Vec<_>>()
                    )
                };
                if !(rejected || skipped) {
                    failures.push(format!("silently accepted: {}", describe()));
                }
                if let [only] = &out[..]
                    && only.message.len == original.len()
                    && only.message.error().is_none()
                    && !skipped
                {
                    failures.push(format!("same-length frame without error: {}", describe()));
                }
            }
        }
    }
    // Every accepted device → server vector takes part: 78 device → server vectors minus the
    // four listed above.
    assert_eq!(checked.len(), 74, "vectors checked: {checked:?}");
    assert!(
        failures.is_empty(),
        "{} corruptions not caught:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
