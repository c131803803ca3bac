//! Table counts, record keys and the frame scan of reprocessing, on PostgreSQL: the same rows in
//! the same order as the SQLite store returns (text sorted bytewise, NULLs first).

use tokio_postgres::{Client, Row};

use super::{PgStore, wait};
use crate::sqlite::parse_status;
use crate::{FrameFilter, LayoutKey, RecordKey, StoreError, StoredFrame, TableCounts};

const COUNTS: &str = "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM raw_frames),
    (SELECT count(*) FROM records), (SELECT count(*) FROM alarm_events),
    (SELECT count(*) FROM current_states), (SELECT count(*) FROM ext_records),
    (SELECT count(*) FROM decode_errors)";

/// SQLite compares text bytewise and sorts NULLs first; `COLLATE "C"` and `NULLS FIRST` make
/// PostgreSQL do the same whatever the database's collation.
const RECORD_KEYS: &str = "SELECT d.imei, r.record_index, r.event_time
    FROM records r JOIN devices d ON d.id = r.device
    WHERE $1::text IS NULL OR d.imei = $1::text
    ORDER BY d.imei COLLATE \"C\", r.record_index NULLS FIRST, r.event_time NULLS FIRST, r.id";

const FRAMES_FOR_REPROCESS: &str = "SELECT f.id, f.conn_id, d.imei, f.received_at_us, f.kind,
        f.status, f.error, f.bytes, l.protocol_version, l.struct_version, l.data_size, l.mask,
        d.device_id
    FROM raw_frames f
    LEFT JOIN devices d ON d.id = f.device
    LEFT JOIN layouts l ON l.id = f.layout
    WHERE f.id > $1 AND f.received_at_us >= $2
      AND ($3::bigint IS NULL OR f.received_at_us < $3::bigint)
      AND ($4::text IS NULL OR d.imei = $4::text)
    ORDER BY f.id
    LIMIT $5";

impl PgStore {
    /// Runs `work` on the connection (reconnecting first if it broke); after a retryable
    /// error the connection is dropped, so the next call starts on a fresh one.
    pub(super) fn run<T>(
        &mut self,
        work: impl FnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let result = work(self.client()?).map_err(StoreError::from);
        if let Err(e) = &result {
            self.forget_broken(e);
        }
        result
    }

    /// Row counts of the main tables.
    pub(crate) fn counts(&mut self) -> Result<TableCounts, StoreError> {
        let row = self.run(|c| wait(c.query_one(COUNTS, &[])))?;
        // count(*) is never negative.
        let n = |i: usize| -> u64 { row.get::<_, i64>(i).unsigned_abs() };
        Ok(TableCounts {
            devices: n(0),
            raw_frames: n(1),
            records: n(2),
            alarm_events: n(3),
            current_states: n(4),
            ext_records: n(5),
            decode_errors: n(6),
        })
    }

    /// The keys of stored records, ordered by IMEI, record index, event time (NULLs first),
    /// then id.
    pub(crate) fn record_keys(&mut self, imei: Option<&str>) -> Result<Vec<RecordKey>, StoreError> {
        let rows = self.run(|c| wait(c.query(RECORD_KEYS, &[&imei])))?;
        rows.iter()
            .map(|row| {
                let imei: String = row.get(0);
                let record_index = row
                    .get::<_, Option<i64>>(1)
                    .map(|i| {
                        u32::try_from(i).map_err(|_| {
                            StoreError::Corrupt(format!(
                                "a record of device {imei} has record_index {i}"
                            ))
                        })
                    })
                    .transpose()?;
                Ok(RecordKey {
                    record_index,
                    event_time: row.get(2),
                    imei,
                })
            })
            .collect()
    }

    /// Up to `limit` archived frames with id greater than `after_id` matching `filter`,
    /// ascending by id.
    pub(crate) fn frames_for_reprocess(
        &mut self,
        filter: &FrameFilter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredFrame>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let imei = filter.imei.as_deref();
        let rows = self.run(|c| {
            wait(c.query(
                FRAMES_FOR_REPROCESS,
                &[&after_id, &filter.since_us, &filter.until_us, &imei, &limit],
            ))
        })?;
        rows.iter().map(stored_frame).collect()
    }
}

/// One row of the frame scan.
fn stored_frame(row: &Row) -> Result<StoredFrame, StoreError> {
    let id: i64 = row.get(0);
    let corrupt = |what: &str, value: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("raw frame {id} has {what} {value}"))
    };
    let conn_id: i64 = row.get(1);
    let conn_id = u64::try_from(conn_id).map_err(|_| corrupt("conn_id", &conn_id))?;
    let status: String = row.get(5);
    let status = parse_status(&status).ok_or_else(|| corrupt("status", &format!("{status:?}")))?;
    let small = |i: usize, what: &str| -> Result<u8, StoreError> {
        let v: i32 = row.get(i);
        u8::try_from(v).map_err(|_| corrupt(what, &v))
    };
    let layout = match row.get::<_, Option<i32>>(8) {
        Some(_) => Some(LayoutKey {
            protocol_version: small(8, "layout protocol_version")?,
            struct_version: small(9, "layout struct_version")?,
            data_size: small(10, "layout data_size")?,
            mask: row.get(11),
        }),
        None => None,
    };
    let device_id = row
        .get::<_, Option<i64>>(12)
        .map(|v| u32::try_from(v).map_err(|_| corrupt("device_id", &v)))
        .transpose()?;
    Ok(StoredFrame {
        id,
        conn_id,
        imei: row.get(2),
        received_at_us: row.get(3),
        kind: row.get(4),
        status,
        error: row.get(6),
        bytes: row.get(7),
        layout,
        device_id,
    })
}
