//! Criterion benchmark of the server-side decode path: owns the synthetic FLEX 2.0 device
//! streams (built once with the encoders) and the `frame_and_decode`, `decode_all_fields` and
//! `to_json` benchmarks, each measured per byte and per record for two negotiation masks.
//!
//! A stream is what one tracker sends on one connection: handshake, `*>FLEX` 2.0 negotiation,
//! then mostly `~A` packets of 1..=5 records with some `~T`, `~C`, `~E`, `~X` and pings, with a
//! moving position and increasing index and time. The timed loop decodes it the way a server
//! does: a fresh `Session`, `decode` until `NeedMore` advancing past each message (a cursor
//! over the buffer, as `BytesMut::advance` would), `decode_eof` at the end, every reply
//! encoded into one output buffer.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use svoi_proto::dictionary::{FieldDef, Scalar};
use svoi_proto::encode::{self, RecordValues};
use svoi_proto::record::{DynamicItem, RawValue, Value};
use svoi_proto::{Body, Core, ExtRecord, FieldMask, Message, RecordLayout, Session, Step, json};

/// Bytes of device traffic per stream.
const STREAM_BYTES: usize = 2 * 1024 * 1024;

/// One device connection's traffic and what decoding it must find.
struct Stream {
    name: &'static str,
    bytes: Vec<u8>,
    messages: u64,
    records: u64,
    ext_records: u64,
    pings: u64,
    record_size: usize,
    fields: usize,
}

/// A small deterministic generator (xorshift64*), so every run benchmarks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The tracker's state, advanced once per record.
struct Track {
    index: u32,
    time: u32,
    lat: i32,
    lon: i32,
    alt_dm: i32,
    speed: f32,
    course: u16,
    odometer: f32,
    power_mv: u16,
}

impl Track {
    fn new() -> Self {
        Track {
            index: 1,
            time: 1_717_200_000,
            lat: 33_450_000, // 55.75° N in 1/10000 arc-minute
            lon: 22_572_000, // 37.62° E
            alt_dm: 1_520,
            speed: 42.5,
            course: 90,
            odometer: 12_345.6,
            power_mv: 12_600,
        }
    }

    fn step(&mut self, rng: &mut Rng) {
        self.index += 1;
        self.time += 5 + rng.below(26) as u32;
        self.course = ((i32::from(self.course) + rng.below(31) as i32 - 15).rem_euclid(360)) as u16;
        self.speed = (self.speed + rng.below(11) as f32 - 5.0).clamp(0.0, 110.0);
        let rad = f64::from(self.course).to_radians();
        let metres = f64::from(self.speed) / 3.6 * 10.0;
        // 1 m ≈ 0.54 units of 1/10000 arc-minute of latitude.
        self.lat += (metres * rad.cos() * 0.54) as i32;
        self.lon += (metres * rad.sin() * 0.96) as i32;
        self.alt_dm += rng.below(21) as i32 - 10;
        self.odometer += (metres / 1000.0) as f32;
        self.power_mv = 12_400 + rng.below(400) as u16;
    }

    fn core(&self) -> Core {
        Core {
            index: Some(self.index),
            event_code: Some(6417),
            event_time: Some(self.time),
            nav_status: Some((11 << 2) | 3),
            fix_time: Some(self.time),
            latitude_raw: Some(self.lat),
            longitude_raw: Some(self.lon),
            altitude_dm: Some(self.alt_dm),
            speed_kmh: Some(self.speed),
            course: Some(self.course),
            odometer_km: Some(self.odometer),
            ..Core::default()
        }
    }
}

/// A plausible value for one component of a non-core field.
fn filler(scalar: Scalar, number: u8, k: usize, rng: &mut Rng) -> Value {
    let small = u64::from(number) + k as u64 + rng.below(8);
    match scalar {
        Scalar::U8 => Value::U(small % 256),
        Scalar::I8 => Value::I(if number.is_multiple_of(3) { -128 } else { 21 }),
        Scalar::U16 => Value::U(1000 + small * 7),
        Scalar::I16 => Value::I(-40 + small as i64),
        Scalar::U32 => Value::U(100_000 + small * 13),
        Scalar::I32 => Value::I(-5_000 + small as i64),
        Scalar::U64 => Value::U(0x0123_4567_89AB_0000 + small),
        Scalar::I64 => Value::I(-(small as i64)),
        Scalar::F32 => Value::F(small as f32 * 1.25),
    }
}

fn field_value(def: &FieldDef, t: &Track, rng: &mut Rng) -> RawValue {
    let c = t.core();
    let scalar = match def.number {
        1 => Value::U(u64::from(t.index)),
        2 => Value::U(6417),
        3 | 9 => Value::U(u64::from(t.time)),
        4 => Value::U(0b0001_0101),
        5 => Value::U(1),
        6 => Value::U(0),
        7 => Value::U(18 + rng.below(8)),
        8 => Value::U(u64::from(c.nav_status.unwrap_or(0))),
        10 => Value::I(i64::from(t.lat)),
        11 => Value::I(i64::from(t.lon)),
        12 => Value::I(i64::from(t.alt_dm)),
        13 => Value::F(t.speed),
        14 => Value::U(u64::from(t.course)),
        15 => Value::F(t.odometer),
        19 => Value::U(u64::from(t.power_mv)),
        20 => Value::U(4_100 + rng.below(50)),
        _ => {
            let list: Vec<Value> = def
                .wire
                .iter()
                .enumerate()
                .map(|(k, &s)| filler(s, def.number, k, rng))
                .collect();
            return match list.as_slice() {
                [one] => RawValue::Scalar(*one),
                _ => RawValue::List(list),
            };
        }
    };
    RawValue::Scalar(scalar)
}

fn record(layout: &RecordLayout, t: &mut Track, rng: &mut Rng) -> Vec<u8> {
    t.step(rng);
    let values: RecordValues = layout
        .slots()
        .iter()
        .map(|s| (s.def.number, field_value(s.def, t, rng)))
        .collect::<BTreeMap<_, _>>();
    let mut out = Vec::with_capacity(layout.record_size());
    encode::record(layout, &values, &mut out).unwrap_or_else(|e| panic!("record: {e}"));
    out
}

fn ext_record(t: &mut Track, rng: &mut Rng) -> ExtRecord {
    t.step(rng);
    let dynamic = if rng.below(3) == 0 {
        vec![DynamicItem {
            kind: 1,
            data: 0x0000_0123_4567_89AB_u64.to_le_bytes().to_vec(),
        }]
    } else {
        Vec::new()
    };
    ExtRecord {
        struct_version: 0x0A,
        core: t.core(),
        static_extra: Vec::new(),
        dynamic,
    }
}

/// Builds about `target` bytes of one tracker's traffic after negotiating `fields`.
fn build(name: &'static str, fields: &[u8], target: usize) -> Stream {
    let mask = FieldMask::from_fields(fields.iter().copied())
        .unwrap_or_else(|e| panic!("{name}: mask: {e}"));
    let layout = RecordLayout::new(mask).unwrap_or_else(|e| panic!("{name}: layout: {e}"));
    let ok = |r: Result<Vec<u8>, svoi_proto::EncodeError>| {
        r.unwrap_or_else(|e| panic!("{name}: encode: {e}"))
    };
    let mut bytes = ok(encode::handshake(0, 1, "868345031234567"));
    bytes.extend(ok(encode::flex_request(0, 1, 0x14, 0x14, 122, &mask)));
    let mut s = Stream {
        name,
        bytes,
        messages: 2,
        records: 0,
        ext_records: 0,
        pings: 0,
        record_size: layout.record_size(),
        fields: mask.len(),
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut t = Track::new();
    while s.bytes.len() < target {
        let frame = match rng.below(100) {
            0..78 => {
                let n = 1 + rng.below(5);
                let records: Vec<Vec<u8>> =
                    (0..n).map(|_| record(&layout, &mut t, &mut rng)).collect();
                s.records += n;
                ok(encode::archive(&records))
            }
            78..86 => {
                s.records += 1;
                encode::alarm(t.index, &record(&layout, &mut t, &mut rng))
            }
            86..90 => {
                s.records += 1;
                encode::current(&record(&layout, &mut t, &mut rng))
            }
            90..94 => {
                let n = 1 + rng.below(3);
                let records: Vec<ExtRecord> =
                    (0..n).map(|_| ext_record(&mut t, &mut rng)).collect();
                s.ext_records += n;
                ok(encode::ext_archive(&records))
            }
            94..96 => {
                s.ext_records += 1;
                ok(encode::ext_alarm(t.index, &ext_record(&mut t, &mut rng)))
            }
            _ => {
                s.pings += 1;
                vec![encode::PING]
            }
        };
        s.bytes.extend(frame);
        s.messages += 1;
    }
    s
}

/// What one pass over a stream found.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    messages: u64,
    records: u64,
    ext_records: u64,
    errors: u64,
    replies: u64,
}

/// Decodes `stream` as a server would, calling `each` on every message with its bytes and
/// encoding every reply into `out`.
fn serve(stream: &[u8], out: &mut Vec<u8>, mut each: impl FnMut(&Message, &[u8])) -> Counts {
    out.clear();
    let mut counts = Counts::default();
    let mut session = Session::default();
    let mut rest = stream;
    loop {
        let m = match session.decode(rest) {
            Step::Message(m) => m,
            Step::NeedMore => match session.decode_eof(rest) {
                Some(m) => m,
                None => break,
            },
        };
        let (bytes, tail) = rest.split_at(m.len);
        counts.messages += 1;
        counts.errors += u64::from(m.error().is_some());
        if let Body::Flex(f) = &m.body {
            counts.records += f.records().len() as u64;
            counts.ext_records += f.ext_records().len() as u64;
        }
        each(&m, bytes);
        if let Some(r) = m.reply {
            counts.replies += 1;
            r.encode_into(out);
        }
        rest = tail;
    }
    counts
}

/// Reads every field of every record and scales it, as storage does.
fn all_fields(m: &Message) -> f64 {
    let mut acc = 0.0;
    if let Body::Flex(f) = &m.body {
        for r in f.records() {
            for field in r.fields() {
                for v in field.scaled() {
                    acc += v.unwrap_or(0.0);
                }
            }
        }
    }
    acc
}

fn bench_stream(c: &mut Criterion, s: &Stream) {
    let mut out = Vec::with_capacity(s.bytes.len() / 8);
    let found = serve(&s.bytes, &mut out, |_, _| {});
    let expected = Counts {
        messages: s.messages,
        records: s.records,
        ext_records: s.ext_records,
        errors: 0,
        // Every message is acknowledged except the pings.
        replies: s.messages - s.pings,
    };
    assert_eq!(
        found, expected,
        "{}: the stream does not decode cleanly",
        s.name
    );
    eprintln!(
        "{}: {} bytes, {} messages, {} records of {} bytes ({} fields), {} additional \
         records, {} reply bytes",
        s.name,
        s.bytes.len(),
        s.messages,
        s.records,
        s.record_size,
        s.fields,
        s.ext_records,
        out.len()
    );

    let mut g = c.benchmark_group(s.name);
    for (unit, throughput) in [
        ("bytes", Throughput::Bytes(s.bytes.len() as u64)),
        ("records", Throughput::Elements(s.records)),
    ] {
        g.throughput(throughput);
        g.bench_function(BenchmarkId::new("frame_and_decode", unit), |b| {
            b.iter(|| black_box(serve(black_box(&s.bytes), &mut out, |_, _| {})))
        });
        g.bench_function(BenchmarkId::new("decode_all_fields", unit), |b| {
            b.iter(|| {
                let mut acc = 0.0;
                let counts = serve(black_box(&s.bytes), &mut out, |m, _| acc += all_fields(m));
                black_box((counts, acc))
            })
        });
        g.bench_function(BenchmarkId::new("to_json", unit), |b| {
            b.iter(|| {
                black_box(serve(black_box(&s.bytes), &mut out, |m, bytes| {
                    black_box(json::message(m, bytes));
                }))
            })
        });
    }
    g.finish();
}

/// The navtrack FLEX 2.0 capture's mask (`fffffc0fff9f0fffbfff80007ff807c7`): 85 fields,
/// 244-byte records.
const NAVTRACK_FIELDS: [u8; 85] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 29, 30, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 44, 45, 46, 47, 48, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
    63, 64, 65, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 98, 99, 100, 101, 102,
    103, 104, 105, 106, 107, 108, 109, 118, 119, 120, 121, 122,
];

/// The Navis FLEX 2.0 capture's mask (`fffff008080800000e00000000000000`): 26 fields, 70-byte
/// records, a typical light configuration.
const NAVIS_FIELDS: [u8; 26] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 29, 37, 45, 69, 70, 71,
];

fn benches(c: &mut Criterion) {
    let navtrack = build("flex20_navtrack_85f", &NAVTRACK_FIELDS, STREAM_BYTES);
    assert_eq!(navtrack.record_size, 244);
    let navis = build("flex20_navis_26f", &NAVIS_FIELDS, STREAM_BYTES);
    assert_eq!(navis.record_size, 70);
    bench_stream(c, &navtrack);
    bench_stream(c, &navis);
}

criterion_group!(decode, benches);
criterion_main!(decode);
