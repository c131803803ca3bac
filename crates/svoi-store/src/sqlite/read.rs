//! Read queries: table counts, record keys, and the paged frame scan that feeds reprocessing.

use rusqlite::Row;

use super::SqliteStore;
use crate::{FrameStatus, LayoutKey, StoreError};

/// Row counts of the main tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Devices known.
    pub devices: u64,
    /// Raw frames archived.
    pub raw_frames: u64,
    /// Archive and alarm records.
    pub records: u64,
    /// Alarm events.
    pub alarm_events: u64,
    /// Current-state rows.
    pub current_states: u64,
    /// Additional records.
    pub ext_records: u64,
    /// Decode errors.
    pub decode_errors: u64,
}

/// The deduplication key of a stored record, with its device's IMEI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// Device IMEI.
    pub imei: String,
    /// Record number in the device log.
    pub record_index: Option<u32>,
    /// Event time, Unix seconds.
    pub event_time: Option<i64>,
}

/// Which raw frames to re-decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameFilter {
    /// Receive time lower bound, Unix microseconds, inclusive.
    pub since_us: i64,
    /// Receive time upper bound, Unix microseconds, exclusive; `None` for no bound.
    pub until_us: Option<i64>,
    /// Only this device's frames.
    pub imei: Option<String>,
}

/// A raw frame as archived, with what is needed to decode it again.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFrame {
    /// `raw_frames.id`, the key [`Store::reprocess`] takes.
    pub id: i64,
    /// Connection the frame arrived on.
    pub conn_id: u64,
    /// Device IMEI, when known.
    pub imei: Option<String>,
    /// Receive time, Unix microseconds.
    pub received_at_us: i64,
    /// Message type name as stored.
    pub kind: String,
    /// Decode outcome as stored.
    pub status: FrameStatus,
    /// Error text as stored.
    pub error: Option<String>,
    /// The bytes as received.
    pub bytes: Vec<u8>,
    /// The layout the frame was decoded with.
    pub layout: Option<LayoutKey>,
    /// The device's NTCB id, when known.
    pub device_id: Option<u32>,
}

impl SqliteStore {
    /// Row counts of the main tables.
    pub fn counts(&self) -> Result<TableCounts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            let n: i64 =
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                        row.get(0)
                    })?;
            // count(*) is never negative.
            Ok(n.unsigned_abs())
        };
        Ok(TableCounts {
            devices: count("devices")?,
            raw_frames: count("raw_frames")?,
            records: count("records")?,
            alarm_events: count("alarm_events")?,
            current_states: count("current_states")?,
            ext_records: count("ext_records")?,
            decode_errors: count("decode_errors")?,
        })
    }

    /// The keys of stored records, of one device or all, ordered by IMEI, record index, event
    /// time (unknown values first).
    pub fn record_keys(&self, imei: Option<&str>) -> Result<Vec<RecordKey>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.imei, r.record_index, r.event_time
             FROM records r JOIN devices d ON d.id = r.device
             WHERE ?1 IS NULL OR d.imei = ?1
             ORDER BY d.imei, r.record_index, r.event_time, r.id",
        )?;
        let rows = stmt.query_map([imei], |row| {
            Ok(RecordKey {
                imei: row.get(0)?,
                record_index: row.get(1)?,
                event_time: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` archived frames with id greater than `after_id` that match `filter`,
    /// ascending by id: page through with the last id returned.
    pub fn frames_for_reprocess(
        &self,
        filter: &FrameFilter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredFrame>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.id, f.conn_id, d.imei, f.received_at_us, f.kind, f.status, f.error,
                    f.bytes, l.protocol_version, l.struct_version, l.data_size, l.mask,
                    d.device_id
             FROM raw_frames f
             LEFT JOIN devices d ON d.id = f.device
             LEFT JOIN layouts l ON l.id = f.layout
             WHERE f.id > ?1 AND f.received_at_us >= ?2
               AND (?3 IS NULL OR f.received_at_us < ?3)
               AND (?4 IS NULL OR d.imei = ?4)
             ORDER BY f.id
             LIMIT ?5",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query((
            after_id,
            filter.since_us,
            filter.until_us,
            filter.imei.as_deref(),
            limit,
        ))?;
        let mut frames = Vec::new();
        while let Some(row) = rows.next()? {
            frames.push(stored_frame(row)?);
        }
        Ok(frames)
    }
}

/// One row of the frame scan.
fn stored_frame(row: &Row<'_>) -> Result<StoredFrame, StoreError> {
    let id: i64 = row.get(0)?;
    let conn_id: i64 = row.get(1)?;
    let conn_id = u64::try_from(conn_id)
        .map_err(|_| StoreError::Corrupt(format!("raw frame {id} has conn_id {conn_id}")))?;
    let status: String = row.get(5)?;
    let status = parse_status(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("raw frame {id} has status {status:?}")))?;
    let protocol_version: Option<u8> = row.get(8)?;
    let layout = match protocol_version {
        Some(protocol_version) => Some(LayoutKey {
            protocol_version,
            struct_version: row.get(9)?,
            data_size: row.get(10)?,
            mask: row.get(11)?,
        }),
        None => None,
    };
    Ok(StoredFrame {
        id,
        conn_id,
        imei: row.get(2)?,
        received_at_us: row.get(3)?,
        kind: row.get(4)?,
        status,
        error: row.get(6)?,
        bytes: row.get(7)?,
        layout,
        device_id: row.get(12)?,
    })
}

/// The status named `text` in `raw_frames.status`.
pub(crate) fn parse_status(text: &str) -> Option<FrameStatus> {
    [FrameStatus::Ok, FrameStatus::Error, FrameStatus::Garbage]
        .into_iter()
        .find(|status| status.as_str() == text)
}
