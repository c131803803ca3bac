//! The values the read API pages through and returns (devices, records, alarm events, raw
//! frames, decode errors, database size) and the API token types. Plain data: the store knows
//! nothing of HTTP, these are what an API layer renders.

use std::fmt;
use std::str::FromStr;

use crate::{FrameStatus, RecordRow, StoreError};

/// Keyset position: rows are ordered by (key, id); a page continues strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The ordering key of the last row returned (event time or receive time, by query).
    pub key: i64,
    /// The row id of the last row returned: breaks ties between rows with the same key.
    pub id: i64,
}

/// A page request: `key` in [from, to) (half-open), strictly after `after`, at most `limit` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Lower bound of the key, inclusive.
    pub from: i64,
    /// Upper bound of the key, exclusive.
    pub to: i64,
    /// Where the previous page ended; `None` for the first page.
    pub after: Option<Cursor>,
    /// Most rows to return (0 returns none).
    pub limit: u32,
}

/// A position fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Event time of the record carrying the fix, Unix seconds.
    pub event_time: i64,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// Speed, km/h, when the record has it.
    pub speed_kmh: Option<f64>,
}

/// A device as listed: identity, when it was seen, where it last was.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSummary {
    /// The device IMEI.
    pub imei: String,
    /// The device id from the NTCB header, once a handshake was stored.
    pub device_id: Option<u32>,
    /// First frame received, Unix microseconds.
    pub first_seen_us: i64,
    /// Latest frame received, Unix microseconds.
    pub last_seen_us: i64,
    /// Newest record (by event_time) with valid = 1 and both coordinates present.
    pub last_position: Option<Position>,
}

/// A device with its negotiated layout and record count.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetail {
    /// What the device list shows.
    pub summary: DeviceSummary,
    /// Negotiated FLEX protocol version.
    pub protocol_version: Option<u8>,
    /// Negotiated FLEX structure version.
    pub struct_version: Option<u8>,
    /// Number of mask bits.
    pub data_size: Option<u8>,
    /// The negotiated mask bitfield (MSB first).
    pub mask: Option<Vec<u8>>,
    /// Enabled FLEX field numbers (devices.fields JSON array parsed), None if never negotiated.
    pub fields: Option<Vec<u8>>,
    /// When the layout was negotiated, Unix microseconds.
    pub negotiated_at_us: Option<i64>,
    /// Number of rows in `records` for the device.
    pub records: u64,
}

/// One row of `records`. Cursor key = event_time (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// `records.id`, the cursor's tie-breaker.
    pub id: i64,
    /// "archive" or "alarm".
    pub source: String,
    /// When the frame that first carried the record was received, Unix microseconds.
    pub received_at_us: i64,
    /// The stored values; `row.fields_json` is the stored `fields` text (JSON object,
    /// name -> value).
    pub row: RecordRow,
}

/// One row of `alarm_events`. Cursor key = event_time (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    /// `alarm_events.id`, the cursor's tie-breaker.
    pub id: i64,
    /// The event index from the `~T` header.
    pub event_index: u32,
    /// Record number in the device log.
    pub record_index: Option<u32>,
    /// Event time, Unix seconds.
    pub event_time: Option<i64>,
    /// Event code.
    pub event_code: Option<u16>,
    /// Latitude, degrees.
    pub latitude: Option<f64>,
    /// Longitude, degrees.
    pub longitude: Option<f64>,
    /// The raw frame that carried the event (`raw_frames.id`).
    pub frame_id: i64,
    /// When that frame was received, Unix microseconds.
    pub received_at_us: i64,
}

/// One row of `raw_frames` with its device. Cursor key = received_at_us.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrameInfo {
    /// `raw_frames.id`, the cursor's tie-breaker.
    pub id: i64,
    /// Device IMEI, when the frame came after a handshake.
    pub imei: Option<String>,
    /// Connection the frame arrived on.
    pub conn_id: u64,
    /// Receive time, Unix microseconds.
    pub received_at_us: i64,
    /// Message type name as stored (`"~A"`, `"*>S"`, `"garbage"`, ...).
    pub kind: String,
    /// Decode outcome.
    pub status: FrameStatus,
    /// Bounded reason code when not ok.
    pub error_reason: Option<String>,
    /// Human-readable error when not ok.
    pub error: Option<String>,
    /// The bytes as received.
    pub bytes: Vec<u8>,
}

/// One row of `decode_errors` with its frame's kind and device. Cursor key = received_at_us.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeErrorInfo {
    /// `decode_errors.id`, the cursor's tie-breaker.
    pub id: i64,
    /// The frame that failed (`raw_frames.id`).
    pub frame_id: i64,
    /// Device IMEI, when known.
    pub imei: Option<String>,
    /// Receive time, Unix microseconds.
    pub received_at_us: i64,
    /// The frame's message type name.
    pub kind: String,
    /// Bounded reason code (`"crc"`, `"truncated"`, ...).
    pub reason: Option<String>,
    /// Human-readable error.
    pub error: Option<String>,
}

/// Bytes the database occupies on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSize {
    /// The main database file.
    pub file_bytes: u64,
    /// The write-ahead log (`-wal` file; 0 when absent).
    pub wal_bytes: u64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenScope {
    /// Read endpoints only.
    Read,
    /// Everything, including administrative endpoints.
    Admin,
}

impl TokenScope {
    /// The stable name stored in `api_tokens.scope`: `"read"` or `"admin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Admin => "admin",
        }
    }
}

impl FromStr for TokenScope {
    type Err = StoreError;

    /// Parses `read` or `admin`, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [TokenScope::Read, TokenScope::Admin]
            .into_iter()
            .find(|scope| scope.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                StoreError::Invalid(format!("bad token scope {s:?}: expected read or admin"))
            })
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token to store: the caller generates the id and secret and keeps the secret; the store
/// only ever sees its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    /// Public id embedded in the token text (the primary key).
    pub id: String,
    /// Operator-chosen name; unique among active tokens.
    pub name: String,
    /// What the token may do.
    pub scope: TokenScope,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
}

/// A stored token, active or revoked.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// Public id embedded in the token text.
    pub id: String,
    /// Operator-chosen name.
    pub name: String,
    /// What the token may do.
    pub scope: TokenScope,
    /// SHA-256 of the secret part (32 bytes).
    pub secret_sha256: Vec<u8>,
    /// Creation time, Unix microseconds.
    pub created_at_us: i64,
    /// Revocation time, Unix microseconds; `None` while active.
    pub revoked_at_us: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scope_round_trips_through_text() {
        for scope in [TokenScope::Read, TokenScope::Admin] {
            assert_eq!(scope.to_string(), scope.as_str());
            assert_eq!(scope.as_str().parse::<TokenScope>().unwrap(), scope);
        }
        assert_eq!(" ADMIN ".parse::<TokenScope>().unwrap(), TokenScope::Admin);
        match "write".parse::<TokenScope>() {
            Err(e @ StoreError::Invalid(_)) => {
                assert_eq!(
                    e.to_string(),
                    r#"invalid input: bad token scope "write": expected read or admin"#
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn cursors_order_by_key_then_id() {
        let a = Cursor { key: 1, id: 9 };
        let b = Cursor { key: 2, id: 1 };
        let c = Cursor { key: 2, id: 2 };
        assert!(a < b && b < c);
    }
}
