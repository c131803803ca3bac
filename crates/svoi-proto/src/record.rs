//! Decoded records: the FLEX record laid out by the negotiated mask (`~A`, `~T`, `~C`, `*@C`)
//! and the additional record of `~E`/`~X` (reference §7.4).
//!
//! A [`Record`] keeps its wire bytes and decodes its typed [`Core`] eagerly (the values every
//! consumer needs: index, times, position, …); every other field is decoded on demand through
//! the dictionary, so framing and acknowledging a message never pays for fields nobody reads.

use std::sync::Arc;

use crate::dictionary::{FieldDef, NoData, NoDataOn, Scalar};
use crate::error::{DecodeError, EncodeError};
use crate::mask::RecordLayout;

/// One scalar wire value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An unsigned integer (`u8` … `u64`).
    U(u64),
    /// A signed integer (`i8` … `i64`).
    I(i64),
    /// A single-precision float.
    F(f32),
}

impl Value {
    /// Reads a `scalar` from the start of `b` (little-endian). `b` must hold at least
    /// `scalar.size()` bytes; callers slice records by the layout, which guarantees it.
    pub fn read(scalar: Scalar, b: &[u8]) -> Value {
        match scalar {
            Scalar::U8 => Value::U(u64::from(b[0])),
            Scalar::I8 => Value::I(i64::from(b[0] as i8)),
            Scalar::U16 => Value::U(u64::from(u16::from_le_bytes([b[0], b[1]]))),
            Scalar::I16 => Value::I(i64::from(i16::from_le_bytes([b[0], b[1]]))),
            Scalar::U32 => Value::U(u64::from(le_u32(b))),
            Scalar::I32 => Value::I(i64::from(le_u32(b) as i32)),
            Scalar::U64 => Value::U(le_u64(b)),
            Scalar::I64 => Value::I(le_u64(b) as i64),
            Scalar::F32 => Value::F(f32::from_bits(le_u32(b))),
        }
    }

    /// Appends the value as a `scalar` on the wire; `None` when it does not fit.
    pub fn write(self, scalar: Scalar, out: &mut Vec<u8>) -> Option<()> {
        match (scalar, self) {
            (Scalar::F32, Value::F(f)) => out.extend_from_slice(&f.to_le_bytes()),
            (Scalar::F32, _) | (_, Value::F(_)) => return None,
            (Scalar::U8, v) => out.push(u8::try_from(v.as_i128()).ok()?),
            (Scalar::I8, v) => out.push(i8::try_from(v.as_i128()).ok()? as u8),
            (Scalar::U16, v) => {
                out.extend_from_slice(&u16::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
            (Scalar::I16, v) => {
                out.extend_from_slice(&i16::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
            (Scalar::U32, v) => {
                out.extend_from_slice(&u32::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
            (Scalar::I32, v) => {
                out.extend_from_slice(&i32::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
            (Scalar::U64, v) => {
                out.extend_from_slice(&u64::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
            (Scalar::I64, v) => {
                out.extend_from_slice(&i64::try_from(v.as_i128()).ok()?.to_le_bytes())
            }
        }
        Some(())
    }

    fn as_i128(self) -> i128 {
        match self {
            Value::U(u) => i128::from(u),
            Value::I(i) => i128::from(i),
            Value::F(f) => f as i128,
        }
    }

    /// The value as a float (integers convert, possibly rounding above 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::U(u) => u as f64,
            Value::I(i) => i as f64,
            Value::F(f) => f64::from(f),
        }
    }

    fn is_no_data(self, rule: NoData) -> bool {
        match rule {
            NoData::None => false,
            NoData::Equals(x) => !matches!(self, Value::F(_)) && self.as_i128() == i128::from(x),
            NoData::AtLeast(x) => !matches!(self, Value::F(_)) && self.as_i128() >= i128::from(x),
            NoData::Negative => matches!(self, Value::F(f) if f < 0.0),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The raw value of one field: one scalar, or the components of a composite field in wire
/// order.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// A plain field.
    Scalar(Value),
    /// A composite field (satellites in view, LBS cells, tyre sensors, …).
    List(Vec<Value>),
}

impl RawValue {
    /// Reads the field `def` from the start of `b`.
    pub fn read(def: &FieldDef, b: &[u8]) -> RawValue {
        if let [only] = def.wire {
            return RawValue::Scalar(Value::read(*only, b));
        }
        let mut offset = 0;
        let mut list = Vec::with_capacity(def.wire.len());
        for &scalar in def.wire {
            list.push(Value::read(scalar, &b[offset..]));
            offset += scalar.size();
        }
        RawValue::List(list)
    }

    /// Components in wire order (one for a plain field).
    pub fn components(&self) -> &[Value] {
        match self {
            RawValue::Scalar(v) => std::slice::from_ref(v),
            RawValue::List(l) => l,
        }
    }

    /// Appends the value as field `def` on the wire.
    pub fn write(&self, def: &FieldDef, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let values = self.components();
        if values.len() != def.wire.len() {
            return Err(EncodeError::BadValue(def.number));
        }
        for (v, &scalar) in values.iter().zip(def.wire) {
            v.write(scalar, out)
                .ok_or(EncodeError::BadValue(def.number))?;
        }
        Ok(())
    }
}

/// One field of a record with its dictionary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// The field's definition.
    pub def: &'static FieldDef,
    /// The value as it was on the wire.
    pub raw: RawValue,
}

impl FieldValue {
    /// The value in the field's unit, per component in wire order: raw × scale, or `None`
    /// where the raw value is the field's "no data" sentinel.
    pub fn scaled(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        let def = self.def;
        self.raw.components().iter().enumerate().map(move |(i, v)| {
            let applies = match def.no_data_on {
                NoDataOn::All => true,
                NoDataOn::Only(k) => usize::from(k) == i,
            };
            (!(applies && v.is_no_data(def.no_data))).then(|| v.as_f64() * def.scale)
        })
    }
}

/// Where the core fields sit inside a record of one layout (`None` when disabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreOffsets {
    index: Option<usize>,
    event_code: Option<usize>,
    event_time: Option<usize>,
    gsm_level: Option<usize>,
    nav_status: Option<usize>,
    fix_time: Option<usize>,
    latitude: Option<usize>,
    longitude: Option<usize>,
    altitude: Option<usize>,
    speed: Option<usize>,
    course: Option<usize>,
    odometer: Option<usize>,
    power: Option<usize>,
    battery: Option<usize>,
}

impl CoreOffsets {
    /// Records the offset of field `number` when it is a core field.
    pub(crate) fn set(&mut self, number: u8, offset: usize) {
        let slot = match number {
            1 => &mut self.index,
            2 => &mut self.event_code,
            3 => &mut self.event_time,
            7 => &mut self.gsm_level,
            8 => &mut self.nav_status,
            9 => &mut self.fix_time,
            10 => &mut self.latitude,
            11 => &mut self.longitude,
            12 => &mut self.altitude,
            13 => &mut self.speed,
            14 => &mut self.course,
            15 => &mut self.odometer,
            19 => &mut self.power,
            20 => &mut self.battery,
            _ => return,
        };
        *slot = Some(offset);
    }
}

/// The typed core of a record: the values every consumer needs, each `None` when its field is
/// not enabled in the session's mask.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Core {
    /// Record number in the device log (field 1).
    pub index: Option<u32>,
    /// Event code (field 2).
    pub event_code: Option<u16>,
    /// Event time, Unix seconds (field 3).
    pub event_time: Option<u32>,
    /// GSM level 0..31, 99 = no network (field 7).
    pub gsm_level: Option<u8>,
    /// Navigation receiver state byte (field 8).
    pub nav_status: Option<u8>,
    /// Time of the last valid fix, Unix seconds (field 9).
    pub fix_time: Option<u32>,
    /// Latitude in 1/10000 arc-minute (field 10).
    pub latitude_raw: Option<i32>,
    /// Longitude in 1/10000 arc-minute (field 11).
    pub longitude_raw: Option<i32>,
    /// Altitude in decimetres (field 12).
    pub altitude_dm: Option<i32>,
    /// Speed, km/h (field 13).
    pub speed_kmh: Option<f32>,
    /// Course, degrees (field 14).
    pub course: Option<u16>,
    /// Total mileage, km (field 15).
    pub odometer_km: Option<f32>,
    /// Main supply voltage, mV (field 19).
    pub power_mv: Option<u16>,
    /// Backup battery voltage, mV (field 20).
    pub battery_mv: Option<u16>,
}

/// Degrees from the wire unit of fields 10/11 (1/10000 arc-minute).
pub fn degrees(raw: i32) -> f64 {
    f64::from(raw) / 600_000.0
}

impl Core {
    fn decode(o: &CoreOffsets, b: &[u8]) -> Core {
        let u16_at = |off: Option<usize>| off.map(|i| u16::from_le_bytes([b[i], b[i + 1]]));
        let u32_at = |off: Option<usize>| off.map(|i| le_u32(&b[i..]));
        let f32_at = |off: Option<usize>| off.map(|i| f32::from_bits(le_u32(&b[i..])));
        Core {
            index: u32_at(o.index),
            event_code: u16_at(o.event_code),
            event_time: u32_at(o.event_time),
            gsm_level: o.gsm_level.map(|i| b[i]),
            nav_status: o.nav_status.map(|i| b[i]),
            fix_time: u32_at(o.fix_time),
            latitude_raw: u32_at(o.latitude).map(|v| v as i32),
            longitude_raw: u32_at(o.longitude).map(|v| v as i32),
            altitude_dm: u32_at(o.altitude).map(|v| v as i32),
            speed_kmh: f32_at(o.speed),
            course: u16_at(o.course),
            odometer_km: f32_at(o.odometer),
            power_mv: u16_at(o.power),
            battery_mv: u16_at(o.battery),
        }
    }

    /// Navigation receiver on (field 8 bit 0).
    pub fn nav_on(&self) -> Option<bool> {
        self.nav_status.map(|s| s & 1 != 0)
    }

    /// The fix is valid (field 8 bit 1).
    pub fn valid(&self) -> Option<bool> {
        self.nav_status.map(|s| s & 2 != 0)
    }

    /// Satellites used in the fix (field 8 bits 2..7).
    pub fn satellites(&self) -> Option<u8> {
        self.nav_status.map(|s| s >> 2)
    }

    /// Latitude in degrees, north positive.
    pub fn latitude(&self) -> Option<f64> {
        self.latitude_raw.map(degrees)
    }

    /// Longitude in degrees, east positive.
    pub fn longitude(&self) -> Option<f64> {
        self.longitude_raw.map(degrees)
    }

    /// Altitude in metres.
    pub fn altitude_m(&self) -> Option<f64> {
        self.altitude_dm.map(|dm| f64::from(dm) / 10.0)
    }
}

/// A FLEX record laid out by the session's negotiated mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    layout: Arc<RecordLayout>,
    bytes: Box<[u8]>,
    core: Core,
}

impl Record {
    /// Decodes one record. `bytes` must be exactly `layout.record_size()` long; the framer
    /// slices records by that size.
    pub fn decode(layout: &Arc<RecordLayout>, bytes: &[u8]) -> Record {
        debug_assert_eq!(bytes.len(), layout.record_size());
        Record {
            core: Core::decode(layout.core_offsets(), bytes),
            layout: Arc::clone(layout),
            bytes: bytes.into(),
        }
    }

    /// The typed core values.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The record as it was on the wire.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The layout the record was decoded with.
    pub fn layout(&self) -> &RecordLayout {
        &self.layout
    }

    /// Every enabled field in wire order.
    pub fn fields(&self) -> impl Iterator<Item = FieldValue> + '_ {
        self.layout.slots().iter().map(|slot| FieldValue {
            def: slot.def,
            raw: RawValue::read(slot.def, &self.bytes[slot.offset..]),
        })
    }

    /// Field `number`, when enabled.
    pub fn field(&self, number: u8) -> Option<FieldValue> {
        self.fields().find(|f| f.def.number == number)
    }
}

/// Static part length of additional-record version 1.0.
pub const EXT_STATIC_LEN: u8 = 37;

/// One item of the dynamic part of an additional record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicItem {
    /// Item type: 1 Touch Memory key, 2 tachograph driver card, 3 RFID tag.
    pub kind: u8,
    /// Item bytes.
    pub data: Vec<u8>,
}

impl DynamicItem {
    /// The identifier as a number, for the 8-byte key types (Touch Memory 0x01, RFID 0x03).
    pub fn value(&self) -> Option<u64> {
        match (self.kind, self.data.len()) {
            (1 | 3, 8) => Some(le_u64(&self.data)),
            _ => None,
        }
    }
}

/// An additional record of `~E`/`~X` (reference §7.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtRecord {
    /// Static part version (0x0A = 1.0).
    pub struct_version: u8,
    /// Core values of the static part (`gsm_level`, `power_mv` and `battery_mv` are absent).
    pub core: Core,
    /// Static-part bytes beyond the 37 this codec knows (a newer static version), kept raw.
    pub static_extra: Vec<u8>,
    /// Dynamic items in wire order.
    pub dynamic: Vec<DynamicItem>,
}

impl ExtRecord {
    /// Decodes one additional record from `b` = size:u16 followed by `size` bytes (the framer
    /// has checked the length).
    pub fn decode(b: &[u8]) -> Result<ExtRecord, DecodeError> {
        let size = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if size + 2 != b.len() {
            return Err(DecodeError::BadAdditionalRecord(
                "size does not match the frame",
            ));
        }
        if size < 2 {
            return Err(DecodeError::BadAdditionalRecord("shorter than its header"));
        }
        let struct_version = b[2];
        let l = usize::from(b[3]);
        if l < usize::from(EXT_STATIC_LEN) {
            return Err(DecodeError::BadAdditionalRecord(
                "static part shorter than 37 bytes",
            ));
        }
        if 2 + l > size {
            return Err(DecodeError::BadAdditionalRecord(
                "static part longer than the record",
            ));
        }
        let s = &b[4..4 + l];
        let core = Core {
            index: Some(le_u32(&s[0..])),
            event_code: Some(u16::from_le_bytes([s[4], s[5]])),
            event_time: Some(le_u32(&s[6..])),
            nav_status: Some(s[10]),
            fix_time: Some(le_u32(&s[11..])),
            latitude_raw: Some(le_u32(&s[15..]) as i32),
            longitude_raw: Some(le_u32(&s[19..]) as i32),
            altitude_dm: Some(le_u32(&s[23..]) as i32),
            speed_kmh: Some(f32::from_bits(le_u32(&s[27..]))),
            course: Some(u16::from_le_bytes([s[31], s[32]])),
            odometer_km: Some(f32::from_bits(le_u32(&s[33..]))),
            ..Core::default()
        };
        let mut dynamic = Vec::new();
        let mut rest = &b[4 + l..];
        while !rest.is_empty() {
            let [kind, len, tail @ ..] = rest else {
                return Err(DecodeError::BadAdditionalRecord(
                    "dynamic item header cut short",
                ));
            };
            let len = usize::from(*len);
            if tail.len() < len {
                return Err(DecodeError::BadAdditionalRecord(
                    "dynamic item overruns the record",
                ));
            }
            dynamic.push(DynamicItem {
                kind: *kind,
                data: tail[..len].to_vec(),
            });
            rest = &tail[len..];
        }
        Ok(ExtRecord {
            struct_version,
            core,
            static_extra: s[usize::from(EXT_STATIC_LEN)..].to_vec(),
            dynamic,
        })
    }

    /// The static part length L this record has on the wire.
    pub fn static_length(&self) -> usize {
        usize::from(EXT_STATIC_LEN) + self.static_extra.len()
    }

    /// The `size` field: bytes after the size itself.
    pub fn size(&self) -> usize {
        2 + self.static_length() + self.dynamic.iter().map(|d| 2 + d.data.len()).sum::<usize>()
    }

    /// Appends the record (size, header, static part, dynamic items) to `out`. Core values that
    /// are `None` are written as zero.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let size = self.size();
        let size16 = u16::try_from(size).map_err(|_| EncodeError::TooLong(size))?;
        let l = u8::try_from(self.static_length())
            .map_err(|_| EncodeError::TooLong(self.static_length()))?;
        if self.dynamic.iter().any(|d| d.data.len() > 255) {
            return Err(EncodeError::TooLong(size));
        }
        let c = &self.core;
        out.extend_from_slice(&size16.to_le_bytes());
        out.push(self.struct_version);
        out.push(l);
        out.extend_from_slice(&c.index.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.event_code.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.event_time.unwrap_or(0).to_le_bytes());
        out.push(c.nav_status.unwrap_or(0));
        out.extend_from_slice(&c.fix_time.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.latitude_raw.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.longitude_raw.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.altitude_dm.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.speed_kmh.unwrap_or(0.0).to_le_bytes());
        out.extend_from_slice(&c.course.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&c.odometer_km.unwrap_or(0.0).to_le_bytes());
        out.extend_from_slice(&self.static_extra);
        for d in &self.dynamic {
            out.push(d.kind);
            // Checked above: every item is at most 255 bytes.
            out.push(d.data.len() as u8);
            out.extend_from_slice(&d.data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{self, RecordValues};
    use crate::mask::FieldMask;

    fn record_with(values: &[(u8, RawValue)]) -> Record {
        let mask = FieldMask::from_fields(values.iter().map(|(n, _)| *n)).unwrap();
        let layout = Arc::new(RecordLayout::new(mask).unwrap());
        let map: RecordValues = values.iter().cloned().collect();
        let mut bytes = Vec::new();
        encode::record(&layout, &map, &mut bytes).unwrap();
        Record::decode(&layout, &bytes)
    }

    fn scaled(r: &Record, n: u8) -> Vec<Option<f64>> {
        r.field(n).unwrap().scaled().collect()
    }

    #[test]
    fn scaled_values_apply_scale_and_no_data_rules() {
        use RawValue::{List, Scalar as One};
        let r = record_with(&[
            (10, One(Value::I(33_450_746))),
            (12, One(Value::I(1563))),
            (38, One(Value::U(65531))),
            (45, One(Value::I(-128))),
            (46, One(Value::I(-12))),
            (54, One(Value::F(-1.0))),
            (68, One(Value::I(-1))),
            (84, List(vec![Value::U(65510), Value::I(-5)])),
            (163, One(Value::I(500))),
        ]);
        let lat = scaled(&r, 10)[0].unwrap();
        assert!((lat - 55.751_243).abs() < 1e-6, "{lat}");
        assert!((scaled(&r, 12)[0].unwrap() - 156.3).abs() < 1e-9);
        assert_eq!(scaled(&r, 38), [None], "fuel sensor error code");
        assert_eq!(scaled(&r, 45), [None], "1-Wire sensor not connected");
        assert_eq!(scaled(&r, 46), [Some(-12.0)]);
        assert_eq!(scaled(&r, 54), [None], "CAN fuel used not read");
        assert_eq!(scaled(&r, 68), [None], "service distance not read");
        assert_eq!(
            scaled(&r, 84),
            [None, Some(-5.0)],
            "rule applies to the level only"
        );
        assert_eq!(scaled(&r, 163), [Some(25.0)]);
        assert_eq!(r.core().latitude_raw, Some(33_450_746));
        assert_eq!(r.core().altitude_m(), Some(156.3));
    }

    #[test]
    fn values_that_do_not_fit_their_wire_type_are_refused() {
        let layout = RecordLayout::new(FieldMask::from_fields([7]).unwrap()).unwrap();
        let mut bytes = Vec::new();
        let too_big: RecordValues = [(7, RawValue::Scalar(Value::U(256)))].into();
        assert_eq!(
            encode::record(&layout, &too_big, &mut bytes),
            Err(EncodeError::BadValue(7))
        );
        let missing = RecordValues::new();
        assert_eq!(
            encode::record(&layout, &missing, &mut bytes),
            Err(EncodeError::MissingField(7))
        );
    }
}
