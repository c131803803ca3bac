//! The JSON documents the API returns, each with its OpenAPI schema, and their construction
//! from the store's rows. Times the server measured (receive, first/last seen) are RFC 3339
//! text with microseconds; times the device reported (event, fix) are Unix seconds, as
//! `svoi decode` prints them.

use serde::Serialize;
use serde_json::{Map, Value};
use svoi_store::{
    AlarmEvent, DecodeErrorInfo, DeviceDetail, DeviceSummary, FrameStatus, Position, RawFrameInfo,
    StoredRecord,
};
use utoipa::ToSchema;

use crate::time::format_us;

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: the process answers.
    #[schema(value_type = String, pattern = "^ok$")]
    pub(crate) status: &'static str,
}

/// One readiness check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Check {
    /// Working.
    Ok,
    /// The check failed (the database did not answer in time or answered with an error).
    Error,
    /// The component is not running.
    Down,
}

/// The readiness checks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadyChecks {
    /// A query on the database (`ok` or `error`).
    pub(crate) database: Check,
    /// The device TCP listener (`ok` or `down`).
    pub(crate) device_listener: Check,
    /// The batch writer task (`ok` or `down`).
    pub(crate) writer: Check,
}

/// `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Every check passed.
    pub(crate) ready: bool,
    /// Each check.
    pub(crate) checks: ReadyChecks,
    /// A maintenance window is open (`svoi maintenance start`). It does not make the server
    /// unready: a window is planned work, and the server keeps serving.
    pub(crate) maintenance: bool,
}

/// A device's latest valid position fix.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LastPosition {
    /// Event time of the record, Unix seconds.
    pub(crate) event_time: i64,
    /// Latitude, degrees.
    pub(crate) latitude: f64,
    /// Longitude, degrees.
    pub(crate) longitude: f64,
    /// Speed, km/h.
    pub(crate) speed_kmh: Option<f64>,
}

impl From<&Position> for LastPosition {
    fn from(p: &Position) -> Self {
        LastPosition {
            event_time: p.event_time,
            latitude: p.latitude,
            longitude: p.longitude,
            speed_kmh: finite(p.speed_kmh),
        }
    }
}

/// A device in the device list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Device {
    /// IMEI.
    pub(crate) imei: String,
    /// Device id from the NTCB header.
    pub(crate) device_id: Option<u32>,
    /// First frame received, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) first_seen: String,
    /// Latest frame received, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) last_seen: String,
    /// The device has an open connection now.
    pub(crate) online: bool,
    /// The newest record with a valid fix.
    pub(crate) last_position: Option<LastPosition>,
}

impl Device {
    /// The list entry of `d`, `online` as the ingest side reports it.
    pub(crate) fn new(d: &DeviceSummary, online: bool) -> Device {
        Device {
            imei: d.imei.clone(),
            device_id: d.device_id,
            first_seen: format_us(d.first_seen_us),
            last_seen: format_us(d.last_seen_us),
            online,
            last_position: d
                .last_position
                .as_ref()
                .filter(|p| p.latitude.is_finite() && p.longitude.is_finite())
                .map(LastPosition::from),
        }
    }
}

/// `GET /api/v1/devices`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DevicePage {
    /// Devices ordered by IMEI.
    pub(crate) items: Vec<Device>,
    /// Cursor of the next page; null on the last page.
    pub(crate) next: Option<String>,
}

/// `GET /api/v1/devices/{imei}`: the list entry plus the negotiated layout.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceInfo {
    /// The list entry.
    #[serde(flatten)]
    pub(crate) device: Device,
    /// Negotiated FLEX protocol version.
    pub(crate) protocol_version: Option<u8>,
    /// Negotiated FLEX structure version.
    pub(crate) struct_version: Option<u8>,
    /// Number of mask bits.
    pub(crate) data_size: Option<u8>,
    /// The negotiated field mask, hex (MSB first).
    pub(crate) mask_hex: Option<String>,
    /// Enabled FLEX field numbers (empty before a negotiation).
    pub(crate) fields: Vec<u8>,
    /// When the layout was negotiated, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) negotiated_at: Option<String>,
    /// Number of stored records.
    pub(crate) records: u64,
}

impl DeviceInfo {
    /// The detail document of `d`.
    pub(crate) fn new(d: &DeviceDetail, online: bool) -> DeviceInfo {
        DeviceInfo {
            device: Device::new(&d.summary, online),
            protocol_version: d.protocol_version,
            struct_version: d.struct_version,
            data_size: d.data_size,
            mask_hex: d.mask.as_deref().map(hex::encode),
            fields: d.fields.clone().unwrap_or_default(),
            negotiated_at: d.negotiated_at_us.map(format_us),
            records: d.records,
        }
    }
}

/// One stored record: the core values present in it (absent keys had no value), its source
/// and receive time, then every other decoded field by name (`additionalProperties`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordItem {
    /// Record number in the device log.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) index: Option<u32>,
    /// Event code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) event_code: Option<u16>,
    /// Event time, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) event_time: Option<i64>,
    /// GSM signal level.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) gsm_level: Option<u8>,
    /// The position fix is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) valid: Option<bool>,
    /// Satellites in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) satellites: Option<u8>,
    /// Time of the last valid fix, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) fix_time: Option<i64>,
    /// Latitude, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) latitude: Option<f64>,
    /// Longitude, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) longitude: Option<f64>,
    /// Altitude, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) altitude_m: Option<f64>,
    /// Speed, km/h.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) speed_kmh: Option<f64>,
    /// Course, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) course: Option<u16>,
    /// Total mileage, km.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) odometer_km: Option<f64>,
    /// Main supply voltage, mV.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) power_mv: Option<u16>,
    /// Backup battery voltage, mV.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) battery_mv: Option<u16>,
    /// `archive` or `alarm`.
    pub(crate) source: String,
    /// When the record was received, RFC 3339 with microseconds.
    #[schema(format = DateTime)]
    pub(crate) received_at: String,
    /// Every other field by name.
    #[serde(flatten)]
    #[schema(value_type = HashMap<String, Value>)]
    pub(crate) other: Map<String, Value>,
}

/// The core keys of a record item, in their order: CSV columns come in this order.
pub(crate) const CORE_KEYS: [&str; 17] = [
    "index",
    "event_code",
    "event_time",
    "gsm_level",
    "valid",
    "satellites",
    "fix_time",
    "latitude",
    "longitude",
    "altitude_m",
    "speed_kmh",
    "course",
    "odometer_km",
    "power_mv",
    "battery_mv",
    "source",
    "received_at",
];

/// `None` for a float that JSON cannot carry (NaN, infinities): such a value is "no value".
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|f| f.is_finite())
}

impl RecordItem {
    /// The item of a stored record. The stored fields object is merged in after the core
    /// keys; a stored field named like a core key is left out rather than emit the key twice
    /// (the dictionary has no such names, a hand-edited row might).
    pub(crate) fn new(r: &StoredRecord) -> RecordItem {
        let row = &r.row;
        let other = match serde_json::from_str::<Value>(&row.fields_json) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .filter(|(k, _)| !CORE_KEYS.contains(&k.as_str()))
                .collect(),
            Ok(_) | Err(_) => {
                tracing::warn!(
                    record = r.id,
                    "stored fields are not a json object, left out"
                );
                Map::new()
            }
        };
        RecordItem {
            index: row.record_index,
            event_code: row.event_code,
            event_time: row.event_time,
            gsm_level: row.gsm_level,
            valid: row.valid,
            satellites: row.satellites,
            fix_time: row.fix_time,
            latitude: finite(row.latitude),
            longitude: finite(row.longitude),
            altitude_m: finite(row.altitude_m),
            speed_kmh: finite(row.speed_kmh),
            course: row.course,
            odometer_km: finite(row.odometer_km),
            power_mv: row.power_mv,
            battery_mv: row.battery_mv,
            source: r.source.clone(),
            received_at: format_us(r.received_at_us),
            other,
        }
    }
}

/// `GET /api/v1/devices/{imei}/records` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordPage {
    /// Records ordered by event time.
    pub(crate) items: Vec<RecordItem>,
    /// Cursor of the next page; null on the last page.
    pub(crate) next: Option<String>,
}

/// The GeoJSON object type of a feature collection.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) enum FeatureCollectionType {
    /// The only value.
    FeatureCollection,
}

/// The GeoJSON object type of a feature.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) enum FeatureType {
    /// The only value.
    Feature,
}

/// The GeoJSON geometry type of the track.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) enum LineStringType {
    /// The only value.
    LineString,
}

/// The GeoJSON geometry type of a record.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) enum PointType {
    /// The only value.
    Point,
}

/// The page's track: the valid fixes in time order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineString {
    /// `LineString`.
    #[serde(rename = "type")]
    pub(crate) kind: LineStringType,
    /// `[longitude, latitude]` pairs, at least two.
    #[schema(min_items = 2, value_type = Vec<Coordinates>)]
    pub(crate) coordinates: Vec<[f64; 2]>,
}

/// A `[longitude, latitude]` pair.
#[derive(Debug, ToSchema)]
#[schema(min_items = 2, max_items = 2)]
#[allow(dead_code)] // A schema only: the values are `[f64; 2]`.
pub(crate) struct Coordinates(Vec<f64>);

/// A record's position.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Point {
    /// `Point`.
    #[serde(rename = "type")]
    pub(crate) kind: PointType,
    /// `[longitude, latitude]`.
    #[schema(min_items = 2, max_items = 2)]
    pub(crate) coordinates: [f64; 2],
}

/// Properties of the track feature (none).
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct TrackProperties {}

/// The track feature, first in the collection when the page has two or more valid fixes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TrackFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    pub(crate) kind: FeatureType,
    /// The track.
    pub(crate) geometry: LineString,
    /// Empty.
    pub(crate) properties: TrackProperties,
}

/// One record with coordinates as a point feature.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PointFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    pub(crate) kind: FeatureType,
    /// Where the record was.
    pub(crate) geometry: Point,
    /// The record's JSON item.
    pub(crate) properties: RecordItem,
}

/// A feature of the record collection.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Feature {
    /// The page's track.
    Track(TrackFeature),
    /// A record.
    Point(Box<PointFeature>),
}

/// `GET /api/v1/devices/{imei}/records?format=geojson`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FeatureCollection {
    /// `FeatureCollection`.
    #[serde(rename = "type")]
    pub(crate) kind: FeatureCollectionType,
    /// The track (when two or more valid fixes), then one point per record with coordinates.
    pub(crate) features: Vec<Feature>,
    /// Cursor of the next page; null on the last page (a foreign member).
    pub(crate) next: Option<String>,
}

/// An alarm (`~T`) event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Event {
    /// Row id.
    pub(crate) id: i64,
    /// The event index from the `~T` header.
    pub(crate) event_index: u32,
    /// Record number in the device log.
    pub(crate) record_index: Option<u32>,
    /// Event time, Unix seconds.
    pub(crate) event_time: Option<i64>,
    /// Event code.
    pub(crate) event_code: Option<u16>,
    /// Latitude, degrees.
    pub(crate) latitude: Option<f64>,
    /// Longitude, degrees.
    pub(crate) longitude: Option<f64>,
    /// When the event was received, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) received_at: String,
}

impl From<&AlarmEvent> for Event {
    fn from(e: &AlarmEvent) -> Self {
        Event {
            id: e.id,
            event_index: e.event_index,
            record_index: e.record_index,
            event_time: e.event_time,
            event_code: e.event_code,
            latitude: finite(e.latitude),
            longitude: finite(e.longitude),
            received_at: format_us(e.received_at_us),
        }
    }
}

/// `GET /api/v1/devices/{imei}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventPage {
    /// Events ordered by event time.
    pub(crate) items: Vec<Event>,
    /// Cursor of the next page; null on the last page.
    pub(crate) next: Option<String>,
}

/// How a received frame fared in the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FrameOutcome {
    /// Decoded and accepted.
    Ok,
    /// Framed but rejected.
    Error,
    /// Bytes that could not be framed.
    Garbage,
}

impl From<FrameStatus> for FrameOutcome {
    fn from(s: FrameStatus) -> Self {
        match s {
            FrameStatus::Ok => FrameOutcome::Ok,
            FrameStatus::Error => FrameOutcome::Error,
            FrameStatus::Garbage => FrameOutcome::Garbage,
        }
    }
}

/// A frame as received, from the raw archive.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RawFrame {
    /// Row id.
    pub(crate) id: i64,
    /// Device IMEI, when the frame came after a handshake.
    pub(crate) imei: Option<String>,
    /// Connection the frame arrived on.
    pub(crate) conn_id: u64,
    /// Receive time, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) received_at: String,
    /// Message type (`~A`, `*>S`, `garbage`, ...).
    pub(crate) kind: String,
    /// Decode outcome.
    pub(crate) status: FrameOutcome,
    /// Bounded reason code when not ok.
    pub(crate) error_reason: Option<String>,
    /// Human-readable error when not ok.
    pub(crate) error: Option<String>,
    /// The bytes as received, lowercase hex.
    pub(crate) hex: String,
}

impl From<&RawFrameInfo> for RawFrame {
    fn from(f: &RawFrameInfo) -> Self {
        RawFrame {
            id: f.id,
            imei: f.imei.clone(),
            conn_id: f.conn_id,
            received_at: format_us(f.received_at_us),
            kind: f.kind.clone(),
            status: f.status.into(),
            error_reason: f.error_reason.clone(),
            error: f.error.clone(),
            hex: hex::encode(&f.bytes),
        }
    }
}

/// `GET /api/v1/raw-frames`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RawFramePage {
    /// Frames ordered by receive time.
    pub(crate) items: Vec<RawFrame>,
    /// Cursor of the next page; null on the last page.
    pub(crate) next: Option<String>,
}

/// A frame that failed to decode.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecodeError {
    /// Row id.
    pub(crate) id: i64,
    /// The raw frame (see `/api/v1/raw-frames`).
    pub(crate) frame_id: i64,
    /// Device IMEI, when known.
    pub(crate) imei: Option<String>,
    /// Receive time, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) received_at: String,
    /// The frame's message type.
    pub(crate) kind: String,
    /// Bounded reason code (`crc`, `truncated`, ...).
    pub(crate) reason: Option<String>,
    /// Human-readable error.
    pub(crate) error: Option<String>,
}

impl From<&DecodeErrorInfo> for DecodeError {
    fn from(e: &DecodeErrorInfo) -> Self {
        DecodeError {
            id: e.id,
            frame_id: e.frame_id,
            imei: e.imei.clone(),
            received_at: format_us(e.received_at_us),
            kind: e.kind.clone(),
            reason: e.reason.clone(),
            error: e.error.clone(),
        }
    }
}

/// `GET /api/v1/decode-errors`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecodeErrorPage {
    /// Decode errors ordered by receive time.
    pub(crate) items: Vec<DecodeError>,
    /// Cursor of the next page; null on the last page.
    pub(crate) next: Option<String>,
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// Server version.
    pub(crate) version: String,
    /// Seconds since the API started.
    pub(crate) uptime_seconds: u64,
    /// Device connections open now.
    pub(crate) connected_devices: u64,
    /// Frames received per second over about the last minute.
    pub(crate) frames_per_second: f64,
    /// Frames waiting for the writer.
    pub(crate) queue_depth: u64,
    /// When the last frame arrived, RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) last_frame_time: Option<String>,
    /// Fraction of frames that failed to decode over the same window, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub(crate) decode_error_rate: f64,
    /// Database file plus write-ahead log, bytes.
    pub(crate) database_size_bytes: u64,
    /// The batch writer is running.
    pub(crate) writer_alive: bool,
    /// A maintenance window is open (`svoi maintenance start`).
    pub(crate) maintenance: bool,
    /// Why the open window was opened; null when none is open.
    pub(crate) maintenance_reason: Option<String>,
    /// When the open window was opened, RFC 3339; null when none is open.
    #[schema(format = DateTime)]
    pub(crate) maintenance_since: Option<String>,
    /// When the open window is planned to end, RFC 3339; null when none is open.
    #[schema(format = DateTime)]
    pub(crate) maintenance_until: Option<String>,
}
