//! What the ingest side hands the store: one [`FrameRow`] per message received, with the rows
//! decoded from it. Plain data, no protocol types: the store knows nothing of NTCB or FLEX.

use std::sync::Arc;

/// How a received message fared in the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameStatus {
    /// Decoded and accepted.
    Ok,
    /// Framed but rejected (bad checksum, bad content): archived with its error.
    Error,
    /// Bytes that could not be framed (sync lost) or were skipped before the handshake.
    Garbage,
}

impl FrameStatus {
    /// The stable name stored in `raw_frames.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameStatus::Ok => "ok",
            FrameStatus::Error => "error",
            FrameStatus::Garbage => "garbage",
        }
    }
}

/// The negotiated FLEX record layout a frame was decoded with: enough to decode it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayoutKey {
    /// Negotiated FLEX protocol version (10, 20, 30).
    pub protocol_version: u8,
    /// Negotiated structure version.
    pub struct_version: u8,
    /// Number of mask bits.
    pub data_size: u8,
    /// The mask bitfield as the device sent it (MSB first).
    pub mask: Vec<u8>,
}

/// What a handshake or negotiation tells about the device; updates the `devices` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpdate {
    /// Device id from the NTCB header (IDs).
    pub device_id: u32,
    /// The layout just negotiated, when the frame is a FLEX negotiation.
    pub layout: Option<Arc<LayoutKey>>,
    /// Enabled field numbers, when the frame is a FLEX negotiation.
    pub fields: Option<Vec<u8>>,
}

/// One decoded telemetry record (`~A`, `~T`, `~C`, `*@C`): typed core columns plus every other
/// enabled field as a JSON object (field name → scaled value, `null` for no data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordRow {
    /// Record number in the device log (field 1); `None` when the mask disables it.
    pub record_index: Option<u32>,
    /// Event code (field 2).
    pub event_code: Option<u16>,
    /// Event time, Unix seconds (field 3).
    pub event_time: Option<i64>,
    /// Time of the last valid fix, Unix seconds (field 9).
    pub fix_time: Option<i64>,
    /// Fix valid (field 8).
    pub valid: Option<bool>,
    /// Satellites in use (field 8).
    pub satellites: Option<u8>,
    /// Latitude, degrees.
    pub latitude: Option<f64>,
    /// Longitude, degrees.
    pub longitude: Option<f64>,
    /// Altitude, metres.
    pub altitude_m: Option<f64>,
    /// Speed, km/h.
    pub speed_kmh: Option<f64>,
    /// Course, degrees.
    pub course: Option<u16>,
    /// Total mileage, km.
    pub odometer_km: Option<f64>,
    /// Main supply voltage, mV.
    pub power_mv: Option<u16>,
    /// Backup battery voltage, mV.
    pub battery_mv: Option<u16>,
    /// GSM level.
    pub gsm_level: Option<u8>,
    /// Every other enabled field, as a JSON object text.
    pub fields_json: String,
}

/// What a record row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An archive record (`~A`, legacy archive): goes to `records`, deduplicated.
    Archive,
    /// An out-of-turn record (`~T`): goes to `records` (deduplicated) and to `alarm_events`.
    Alarm {
        /// The event index from the `~T` header (what the reply echoes).
        event_index: u32,
    },
    /// A current-state record (`~C`, `*@C`): not in the device archive, its index is not a key;
    /// goes to `current_states`, never deduplicated.
    Current,
}

/// One decoded record with what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    /// Where the row goes.
    pub kind: RecordKind,
    /// The values.
    pub row: RecordRow,
}

/// One FLEX 2.0 additional record (`~E`, `~X`): core columns plus the items as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtRecordRow {
    /// Event index from the `~X` header, `None` for `~E`.
    pub event_index: Option<u32>,
    /// Additional-record structure version.
    pub struct_version: u8,
    /// The core values (index, event, time, position ...); `fields_json` holds the dynamic
    /// items and static extra bytes.
    pub row: RecordRow,
}

/// One message received from a device, with everything decoded from it. Committed as a unit:
/// the raw frame and its decoded rows land in the same transaction or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRow {
    /// Ingest's ticket for this frame; the [`crate::CommitReceipt`] lists the tickets it
    /// covers.
    pub seq: u64,
    /// Connection the frame arrived on (ingest's connection id).
    pub conn_id: u64,
    /// Device IMEI once the handshake is known; `None` for bytes before it.
    pub imei: Option<Arc<str>>,
    /// Receive time, Unix microseconds.
    pub received_at_us: i64,
    /// Stable message type name (`"~A"`, `"*>S"`, `"*>FLEX"`, `"ping"`, `"garbage"`, ...).
    pub kind: Arc<str>,
    /// Decode outcome.
    pub status: FrameStatus,
    /// Bounded reason code when not ok (`"crc"`, `"truncated"`, `"sync_lost"`, ...).
    pub error_reason: Option<&'static str>,
    /// Human-readable error when not ok.
    pub error: Option<String>,
    /// The raw bytes exactly as received.
    pub bytes: Vec<u8>,
    /// The layout in force when the frame was decoded (needed to decode it again).
    pub layout: Option<Arc<LayoutKey>>,
    /// Device facts learnt from this frame (handshake, negotiation).
    pub device: Option<DeviceUpdate>,
    /// Decoded records.
    pub records: Vec<DecodedRecord>,
    /// Decoded additional records.
    pub ext_records: Vec<ExtRecordRow>,
}

impl DeviceUpdate {
    /// The enabled field list as stored in `devices.fields`: a JSON array of field numbers,
    /// `[1,2,3]`.
    pub(crate) fn fields_json(&self) -> Option<String> {
        self.fields.as_deref().map(|fields| {
            let items: Vec<String> = fields.iter().map(u8::to_string).collect();
            format!("[{}]", items.join(","))
        })
    }
}

/// Now, Unix microseconds (0 if the clock is before 1970): the receive and creation times the
/// store stamps.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_list_is_a_json_array() {
        let update = |fields: Option<Vec<u8>>| DeviceUpdate {
            device_id: 1,
            layout: None,
            fields,
        };
        assert_eq!(update(None).fields_json(), None);
        assert_eq!(update(Some(vec![])).fields_json().as_deref(), Some("[]"));
        assert_eq!(update(Some(vec![1])).fields_json().as_deref(), Some("[1]"));
        assert_eq!(
            update(Some(vec![1, 2, 255])).fields_json().as_deref(),
            Some("[1,2,255]")
        );
    }
}
