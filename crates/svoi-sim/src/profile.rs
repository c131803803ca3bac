//! Who each simulated device is and what its records hold: IMEI, NTCB ids, FLEX versions, field
//! set, and the values of every record. Everything is a pure function of the config's seed, the
//! device number and the record index, so a record resent after a reconnect is byte for byte
//! the record first sent, and tests can predict what a device sends.

use svoi_proto::dictionary::{self, Scalar};
use svoi_proto::encode::RecordValues;
use svoi_proto::mask::{FieldMask, RecordLayout};
use svoi_proto::record::{RawValue, Value};
use svoi_proto::{DecodeError, version};

use crate::SimConfig;

/// Fields every simulated device sends: index, event code, event time, navigation status, fix
/// time, latitude, longitude, altitude, speed and course.
pub const MANDATORY_FIELDS: [u8; 10] = [1, 2, 3, 8, 9, 10, 11, 12, 13, 14];

/// The NTCB id the devices address the server with (IDr of their packets).
pub const SERVER_ID: u32 = 0;

/// Event code of `~C` records ([DOC]: current state).
pub const CURRENT_EVENT_CODE: u16 = 0xFF00;

/// Share of records without a GPS fix (receiver on, fix invalid, zero coordinates).
const NO_FIX_SHARE: f64 = 0.05;

/// Raw coordinate units per degree (fields 10 and 11 count 1/600 000 of a degree).
const RAW_PER_DEGREE: f64 = 600_000.0;

/// Records per leg of a device's back-and-forth track.
const TRACK_LEG: u64 = 100_000;

/// Random streams, so the profile and the record values never share generator output.
const STREAM_PROFILE: u64 = 1;
const STREAM_RECORD: u64 = 2;
const STREAM_CURRENT: u64 = 3;

/// What one simulated device is: its identity, the FLEX versions and field set it negotiates,
/// and (privately) the seed of its record values.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    /// Device number in the fleet, `0..devices`.
    pub number: usize,
    /// The identifier of `*>S:` (15 digits).
    pub imei: String,
    /// The device's NTCB id (IDs of its packets): `1 + number`.
    pub device_id: u32,
    /// The id the device addresses the server with (IDr of its packets), [`SERVER_ID`].
    pub server_id: u32,
    /// FLEX protocol version of `*>FLEX` (0x0A, 0x14 or 0x1E).
    pub protocol_version: u8,
    /// FLEX structure version of `*>FLEX` (same as the protocol version).
    pub struct_version: u8,
    /// Number of mask bits of `*>FLEX`: the full size of the structure version (69, 122, 255).
    pub data_size: u8,
    /// Enabled fields in increasing order: [`MANDATORY_FIELDS`] plus a random subset of the
    /// structure's other fields.
    pub fields: Vec<u8>,
    /// Event time of record 0 (Unix seconds); record k has `start_time + k`.
    pub start_time: u32,
    value_seed: u64,
    /// Track origin, raw latitude and longitude.
    origin: (i32, i32),
    /// Raw latitude and longitude change per record.
    step: (i32, i32),
}

/// The profile of device `i` of the fleet `cfg` describes.
///
/// Devices take their version from `cfg.flex_versions` in turn (device `i` uses entry
/// `i % len`); an empty list means FLEX 3.0, and a version the codec does not support is
/// replaced by the highest supported one below it (FLEX 1.0 at worst), as a device would after
/// the server's answer. [`run`](crate::run) refuses such configs before any device starts.
pub fn device_profile(cfg: &SimConfig, i: usize) -> DeviceProfile {
    let mut rng = SplitMix::new(mix(&[cfg.seed, i as u64, STREAM_PROFILE]));
    let requested = match cfg.flex_versions.as_slice() {
        [] => version::V3_0,
        list => list[i % list.len()],
    };
    let flex = version::best_supported(requested).unwrap_or(version::V1_0);
    // `best_supported` only returns versions of `SUPPORTED`, which all have a full size.
    let data_size = version::full_data_size(flex).unwrap_or(69);
    let density = 0.05 + 0.35 * rng.unit();
    let fields = (1..=data_size)
        .filter(|f| MANDATORY_FIELDS.contains(f) || rng.unit() < density)
        .collect();
    let value_seed = rng.next_u64();
    let origin = (
        degrees_to_raw(rng.unit() * 130.0 - 60.0),
        degrees_to_raw(rng.unit() * 340.0 - 170.0),
    );
    let step = (rng.between(-60, 60) as i32, rng.between(-60, 60) as i32);
    DeviceProfile {
        number: i,
        imei: format!("{:015}", cfg.imei_base.saturating_add(i as u64)),
        device_id: u32::try_from(i).map_or(u32::MAX, |i| i.saturating_add(1)),
        server_id: SERVER_ID,
        protocol_version: flex,
        struct_version: flex,
        data_size,
        fields,
        start_time: cfg.start_time,
        value_seed,
        origin,
        step,
    }
}

impl DeviceProfile {
    /// The mask of the enabled fields.
    pub fn mask(&self) -> FieldMask {
        let mut mask = FieldMask::empty();
        for &f in &self.fields {
            mask.insert(f);
        }
        mask
    }

    /// The record layout the device negotiates.
    pub fn layout(&self) -> Result<RecordLayout, DecodeError> {
        RecordLayout::new(self.mask())
    }

    /// Event time of record `index`.
    pub fn event_time(&self, index: u32) -> u32 {
        self.start_time.wrapping_add(index)
    }

    /// The values of archive (or out-of-turn) record `index`: field 1 is the index, field 3
    /// the event time, fields 8..14 a slowly moving valid fix (or, for about 5% of records, no
    /// fix with zero coordinates), every other field a random value of its wire type (floats
    /// finite). A device encodes a few of these once and derives the records it sends from
    /// them (see `templates.rs`), so only the first records are exactly these values.
    pub fn record_values(&self, index: u32) -> RecordValues {
        let event_code = None;
        self.values(STREAM_RECORD, u64::from(index), index, event_code)
    }

    /// The values of the `~C` record sent once `acked` records are acknowledged: index 0 and
    /// event code 0xFF00 as [DOC] describes, event time `start_time + acked`, so its
    /// (index, event time) pair never equals an archive record's.
    pub fn current_values(&self, acked: u32) -> RecordValues {
        self.values(
            STREAM_CURRENT,
            u64::from(acked),
            0,
            Some((CURRENT_EVENT_CODE, self.event_time(acked))),
        )
    }

    fn values(
        &self,
        stream: u64,
        position: u64,
        index: u32,
        current: Option<(u16, u32)>,
    ) -> RecordValues {
        let mut rng = SplitMix::new(mix(&[self.value_seed, position, stream]));
        let mut values = RecordValues::new();
        for &f in &self.fields {
            let Some(def) = dictionary::lookup(f) else {
                continue;
            };
            let raw = match def.wire {
                [one] => RawValue::Scalar(random_value(*one, &mut rng)),
                many => RawValue::List(many.iter().map(|&s| random_value(s, &mut rng)).collect()),
            };
            values.insert(f, raw);
        }
        let (event_code, event_time) = match current {
            Some(c) => c,
            None => (
                (rng.next_u64() & 0x0FFF) as u16,
                self.event_time(position as u32),
            ),
        };
        let fix = rng.unit() >= NO_FIX_SHARE;
        let u = |v: u64| RawValue::Scalar(Value::U(v));
        let i = |v: i64| RawValue::Scalar(Value::I(v));
        values.insert(1, u(u64::from(index)));
        values.insert(2, u(u64::from(event_code)));
        values.insert(3, u(u64::from(event_time)));
        if fix {
            let satellites = rng.between(4, 20) as u8;
            let (lat, lon, course) = self.position(position);
            values.insert(8, u(u64::from((satellites << 2) | 0b11)));
            values.insert(
                9,
                u(u64::from(
                    event_time.saturating_sub(rng.between(0, 2) as u32),
                )),
            );
            values.insert(10, i(i64::from(lat)));
            values.insert(11, i(i64::from(lon)));
            values.insert(12, i(rng.between(500, 3000)));
            let speed = 20.0 + 70.0 * rng.unit();
            values.insert(13, RawValue::Scalar(Value::F(speed as f32)));
            values.insert(14, u(u64::from(course)));
        } else {
            // Receiver on, fix invalid, no satellites.
            values.insert(8, u(0b01));
            for f in [9, 14] {
                values.insert(f, u(0));
            }
            for f in [10, 11, 12] {
                values.insert(f, i(0));
            }
            values.insert(13, RawValue::Scalar(Value::F(0.0)));
        }
        values
    }

    /// Raw latitude, raw longitude and course (degrees) at record `position`: the device goes
    /// back and forth along a straight track of [`TRACK_LEG`] records (at most about 10
    /// degrees from its origin).
    fn position(&self, position: u64) -> (i32, i32, u16) {
        let phase = position % (2 * TRACK_LEG);
        let (t, back) = if phase < TRACK_LEG {
            (phase, false)
        } else {
            (2 * TRACK_LEG - phase, true)
        };
        // t <= TRACK_LEG = 100 000 fits an i32.
        let t = t as i32;
        let lat = self.origin.0.saturating_add(t * self.step.0);
        let lon = self.origin.1.saturating_add(t * self.step.1);
        let heading = f64::from(self.step.1)
            .atan2(f64::from(self.step.0))
            .to_degrees();
        let heading = if back { heading + 180.0 } else { heading };
        (lat, lon, (heading.rem_euclid(360.0) as u16) % 360)
    }
}

fn degrees_to_raw(degrees: f64) -> i32 {
    (degrees * RAW_PER_DEGREE) as i32
}

/// A random value of one wire component: integers half of the time small (0..=100), else over
/// the type's whole range; floats finite, within ±10 000.
fn random_value(scalar: Scalar, rng: &mut SplitMix) -> Value {
    let r = rng.next_u64();
    let small = rng.unit() < 0.5;
    if small && scalar != Scalar::F32 {
        return match scalar {
            Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64 => Value::I((r % 101) as i64),
            _ => Value::U(r % 101),
        };
    }
    match scalar {
        Scalar::U8 => Value::U(r & 0xFF),
        Scalar::U16 => Value::U(r & 0xFFFF),
        Scalar::U32 => Value::U(r & 0xFFFF_FFFF),
        Scalar::U64 => Value::U(r),
        Scalar::I8 => Value::I(i64::from(r as u8 as i8)),
        Scalar::I16 => Value::I(i64::from(r as u16 as i16)),
        Scalar::I32 => Value::I(i64::from(r as u32 as i32)),
        Scalar::I64 => Value::I(r as i64),
        Scalar::F32 => Value::F(((rng.unit() * 2.0 - 1.0) * 10_000.0) as f32),
    }
}

/// SplitMix64: a tiny generator whose output never changes with a dependency upgrade, so a
/// seed means the same fleet on every machine and version.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub(crate) fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = hi.abs_diff(lo) + 1;
        lo + (self.next_u64() % span) as i64
    }
}

/// Hashes several words into one seed.
fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| {
        SplitMix::new(h ^ p.rotate_left(17)).next_u64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use svoi_proto::encode;

    #[test]
    fn every_record_encodes_and_resends_identically() {
        let cfg = SimConfig {
            flex_versions: vec![version::V1_0, version::V2_0, version::V3_0],
            ..SimConfig::default()
        };
        for d in 0..6 {
            let p = device_profile(&cfg, d);
            let layout = p.layout().unwrap();
            let mut no_fix = 0;
            for k in 0..400 {
                let mut a = Vec::new();
                encode::record(&layout, &p.record_values(k), &mut a).unwrap();
                let mut b = Vec::new();
                encode::record(&layout, &p.record_values(k), &mut b).unwrap();
                assert_eq!(a, b);
                assert_eq!(a.len(), layout.record_size());
                if let Some(RawValue::Scalar(Value::U(0b01))) = p.record_values(k).get(&8) {
                    no_fix += 1;
                }
            }
            assert!(
                (5..=45).contains(&no_fix),
                "device {d}: {no_fix} of 400 without fix"
            );
            let mut c = Vec::new();
            encode::record(&layout, &p.current_values(10), &mut c).unwrap();
        }
    }

    #[test]
    fn track_stays_on_the_globe() {
        let p = device_profile(&SimConfig::default(), 0);
        for k in [
            0,
            1,
            TRACK_LEG - 1,
            TRACK_LEG,
            TRACK_LEG + 1,
            2 * TRACK_LEG,
            u64::MAX,
        ] {
            let (lat, lon, course) = p.position(k);
            assert!(lat.unsigned_abs() <= 90 * 600_000, "{lat}");
            assert!(lon.unsigned_abs() <= 180 * 600_000, "{lon}");
            assert!(course < 360);
        }
    }
}
