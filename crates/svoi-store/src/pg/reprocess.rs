//! Reprocessing on PostgreSQL: the statements of the diff by key in `crate::reprocess`, run in
//! one transaction.
//!
//! `records` has no index on `id` alone (it is partitioned by event time and has no primary
//! key), so its rows are found by `frame` (index `records_frame`), and every update or delete
//! by id also names the frame, plus the event time when there is one so that only its
//! partition is searched. A changed record keeps its key and so its partition; a new key may
//! fall in a month without a partition yet, which is created before the transaction, as a
//! commit does.

use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use super::partition::{AHEAD, BACKFILL, month_of};
use super::write::{CoreRow, Prepared, real};
use super::{Partitioned, PgStore, wait};
use crate::reprocess::{FrameHead, FrameOps, Key, reprocess_frames};
use crate::{ExtRecordRow, FrameRow, RecordKind, RecordRow, ReprocessStats, StoreError};

const SELECT_FRAME: &str = "SELECT f.device, f.received_at_us, f.kind, f.status,
        f.error_reason, f.error, d.imei
    FROM raw_frames f LEFT JOIN devices d ON d.id = f.device
    WHERE f.id = $1";

/// By id and receive time (the primary key, and the partition key).
const UPDATE_FRAME: &str = "UPDATE raw_frames SET kind = $2, status = $3, error_reason = $4,
    error = $5 WHERE id = $1 AND received_at_us = $6";

const DELETE_ERRORS: &str = "DELETE FROM decode_errors WHERE frame = $1";
const DELETE_ALARMS: &str = "DELETE FROM alarm_events WHERE frame = $1";
const DELETE_CURRENT: &str = "DELETE FROM current_states WHERE frame = $1";

const OLD_RECORDS: &str =
    "SELECT id, record_index, event_time FROM records WHERE frame = $1 ORDER BY id";
const OLD_EXT: &str =
    "SELECT id, record_index, event_time FROM ext_records WHERE frame = $1 ORDER BY id";

/// Updates the values of record `$1` of frame `$19` only when one differs (`IS NOT DISTINCT
/// FROM` compares NULLs as equal, like SQLite's `IS`), so the row count says whether anything
/// changed. Binds: id, source, the core columns from `$3` (record index `$3` and event time
/// `$5` are the key, checked, not set), frame.
macro_rules! update_record {
    () => {
        "UPDATE records SET source = $2, event_code = $4, fix_time = $6, valid = $7,
            satellites = $8, latitude = $9, longitude = $10, altitude_m = $11,
            speed_kmh = $12, course = $13, odometer_km = $14, power_mv = $15,
            battery_mv = $16, gsm_level = $17, fields = $18
        WHERE id = $1 AND frame = $19
          AND record_index IS NOT DISTINCT FROM $3 AND event_time IS NOT DISTINCT FROM $5
          AND NOT (source IS NOT DISTINCT FROM $2 AND event_code IS NOT DISTINCT FROM $4
            AND fix_time IS NOT DISTINCT FROM $6 AND valid IS NOT DISTINCT FROM $7
            AND satellites IS NOT DISTINCT FROM $8 AND latitude IS NOT DISTINCT FROM $9
            AND longitude IS NOT DISTINCT FROM $10 AND altitude_m IS NOT DISTINCT FROM $11
            AND speed_kmh IS NOT DISTINCT FROM $12 AND course IS NOT DISTINCT FROM $13
            AND odometer_km IS NOT DISTINCT FROM $14 AND power_mv IS NOT DISTINCT FROM $15
            AND battery_mv IS NOT DISTINCT FROM $16 AND gsm_level IS NOT DISTINCT FROM $17
            AND fields IS NOT DISTINCT FROM $18)"
    };
}

/// [`update_record!`] for a record without an event time (it is in the default partition).
const UPDATE_RECORD: &str = update_record!();

/// [`update_record!`] for a record with an event time: only its partition is searched.
const UPDATE_RECORD_AT: &str = concat!(update_record!(), " AND event_time = $5");

const DELETE_RECORD: &str = "DELETE FROM records WHERE id = $1 AND frame = $2";
const DELETE_RECORD_AT: &str =
    "DELETE FROM records WHERE id = $1 AND frame = $2 AND event_time = $3";

/// As [`UPDATE_RECORD`] for `ext_records` (whose primary key is `id`). Binds: id, event index,
/// structure version, then the core columns from `$4` (key: record index `$4`, event time
/// `$6`).
const UPDATE_EXT: &str = "UPDATE ext_records SET event_index = $2, struct_version = $3,
        event_code = $5, fix_time = $7, valid = $8, satellites = $9, latitude = $10,
        longitude = $11, altitude_m = $12, speed_kmh = $13, course = $14, odometer_km = $15,
        power_mv = $16, battery_mv = $17, gsm_level = $18, fields = $19
    WHERE id = $1
      AND record_index IS NOT DISTINCT FROM $4 AND event_time IS NOT DISTINCT FROM $6
      AND NOT (event_index IS NOT DISTINCT FROM $2 AND struct_version IS NOT DISTINCT FROM $3
        AND event_code IS NOT DISTINCT FROM $5 AND fix_time IS NOT DISTINCT FROM $7
        AND valid IS NOT DISTINCT FROM $8 AND satellites IS NOT DISTINCT FROM $9
        AND latitude IS NOT DISTINCT FROM $10 AND longitude IS NOT DISTINCT FROM $11
        AND altitude_m IS NOT DISTINCT FROM $12 AND speed_kmh IS NOT DISTINCT FROM $13
        AND course IS NOT DISTINCT FROM $14 AND odometer_km IS NOT DISTINCT FROM $15
        AND power_mv IS NOT DISTINCT FROM $16 AND battery_mv IS NOT DISTINCT FROM $17
        AND gsm_level IS NOT DISTINCT FROM $18 AND fields IS NOT DISTINCT FROM $19)";

const DELETE_EXT: &str = "DELETE FROM ext_records WHERE id = $1";

/// The sixteen value columns of every record-shaped table, in the order of the schema.
macro_rules! core_columns {
    () => {
        "record_index, event_code, event_time, fix_time, valid, satellites, latitude, \
         longitude, altitude_m, speed_kmh, course, odometer_km, power_mv, battery_mv, \
         gsm_level, fields"
    };
}

/// One new record; a key already stored is skipped, as in a commit.
const INSERT_RECORD: &str = concat!(
    "INSERT INTO records (device, frame, source, ",
    core_columns!(),
    ", received_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16, $17, $18, $19, $20) ON CONFLICT (device, event_time, record_index) DO NOTHING"
);

const INSERT_EXT: &str = concat!(
    "INSERT INTO ext_records (device, frame, event_index, struct_version, ",
    core_columns!(),
    ", received_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16, $17, $18, $19, $20, $21) ON CONFLICT (device, record_index, event_time) DO NOTHING"
);

const INSERT_CURRENT: &str = concat!(
    "INSERT INTO current_states (device, frame, received_at_us, ",
    core_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19)"
);

const INSERT_ALARM: &str = "INSERT INTO alarm_events
    (device, event_index, record_index, event_time, event_code, latitude, longitude, frame,
     received_at_us)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (device, event_index, event_time) DO NOTHING";

const INSERT_DECODE_ERROR: &str = "INSERT INTO decode_errors
    (frame, device, received_at_us, reason, error) VALUES ($1, $2, $3, $4, $5)";

/// One transaction's statements, prepared once per connection.
struct Session<'t, 'c> {
    tx: &'t Transaction<'c>,
    prepared: &'t mut Prepared,
}

impl Session<'_, '_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.prepared.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = wait(self.tx.prepare(sql))?;
        self.prepared.insert(sql, stmt.clone());
        Ok(stmt)
    }

    /// Runs `sql`; returns the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        Ok(wait(self.tx.execute(&stmt, params))?)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let stmt = self.statement(sql)?;
        Ok(wait(self.tx.query(&stmt, params))?)
    }

    /// The (id, key) of the rows `frame` holds, through `sql`.
    fn load_old(&mut self, sql: &'static str, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
        let rows = self.query(sql, &[&frame])?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect())
    }
}

impl FrameOps for Session<'_, '_> {
    fn frame_head(&mut self, frame: i64) -> Result<Option<FrameHead>, StoreError> {
        Ok(self
            .query(SELECT_FRAME, &[&frame])?
            .first()
            .map(|row| FrameHead {
                device: row.get(0),
                received_at_us: row.get(1),
                kind: row.get(2),
                status: row.get(3),
                error_reason: row.get(4),
                error: row.get(5),
                imei: row.get(6),
            }))
    }

    fn update_frame(&mut self, frame: i64, at: i64, new: &FrameRow) -> Result<(), StoreError> {
        self.execute(
            UPDATE_FRAME,
            &[
                &frame,
                &&*new.kind,
                &new.status.as_str(),
                &new.error_reason,
                &new.error.as_deref(),
                &at,
            ],
        )?;
        Ok(())
    }

    fn delete_decode_errors(&mut self, frame: i64) -> Result<(), StoreError> {
        self.execute(DELETE_ERRORS, &[&frame])?;
        Ok(())
    }

    fn insert_decode_error(
        &mut self,
        frame: i64,
        device: Option<i64>,
        at: i64,
        new: &FrameRow,
    ) -> Result<(), StoreError> {
        self.execute(
            INSERT_DECODE_ERROR,
            &[
                &frame,
                &device,
                &at,
                &new.error_reason,
                &new.error.as_deref(),
            ],
        )?;
        Ok(())
    }

    fn delete_alarms(&mut self, frame: i64) -> Result<(), StoreError> {
        self.execute(DELETE_ALARMS, &[&frame])?;
        Ok(())
    }

    fn delete_current(&mut self, frame: i64) -> Result<(), StoreError> {
        self.execute(DELETE_CURRENT, &[&frame])?;
        Ok(())
    }

    fn old_records(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
        self.load_old(OLD_RECORDS, frame)
    }

    fn update_record(
        &mut self,
        frame: i64,
        id: i64,
        source: &'static str,
        row: &RecordRow,
    ) -> Result<bool, StoreError> {
        let core = CoreRow::from(row);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &source];
        params.extend(core.params());
        params.push(&frame);
        let sql = if row.event_time.is_some() {
            UPDATE_RECORD_AT
        } else {
            UPDATE_RECORD
        };
        Ok(self.execute(sql, &params)? == 1)
    }

    fn insert_record(
        &mut self,
        device: i64,
        frame: i64,
        source: &'static str,
        row: &RecordRow,
        at: i64,
    ) -> Result<bool, StoreError> {
        let core = CoreRow::from(row);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&device, &frame, &source];
        params.extend(core.params());
        params.push(&at);
        Ok(self.execute(INSERT_RECORD, &params)? == 1)
    }

    fn delete_record(&mut self, frame: i64, id: i64, key: Key) -> Result<(), StoreError> {
        match key.1 {
            Some(event_time) => self.execute(DELETE_RECORD_AT, &[&id, &frame, &event_time])?,
            None => self.execute(DELETE_RECORD, &[&id, &frame])?,
        };
        Ok(())
    }

    fn old_ext(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
        self.load_old(OLD_EXT, frame)
    }

    fn update_ext(&mut self, id: i64, ext: &ExtRecordRow) -> Result<bool, StoreError> {
        let core = CoreRow::from(&ext.row);
        let event_index = ext.event_index.map(i64::from);
        let struct_version = i32::from(ext.struct_version);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &event_index, &struct_version];
        params.extend(core.params());
        Ok(self.execute(UPDATE_EXT, &params)? == 1)
    }

    fn insert_ext(
        &mut self,
        device: i64,
        frame: i64,
        ext: &ExtRecordRow,
        at: i64,
    ) -> Result<bool, StoreError> {
        let core = CoreRow::from(&ext.row);
        let event_index = ext.event_index.map(i64::from);
        let struct_version = i32::from(ext.struct_version);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&device, &frame, &event_index, &struct_version];
        params.extend(core.params());
        params.push(&at);
        Ok(self.execute(INSERT_EXT, &params)? == 1)
    }

    fn delete_ext(&mut self, id: i64) -> Result<(), StoreError> {
        self.execute(DELETE_EXT, &[&id])?;
        Ok(())
    }

    fn insert_alarm(
        &mut self,
        device: i64,
        frame: i64,
        event_index: u32,
        row: &RecordRow,
        at: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            INSERT_ALARM,
            &[
                &device,
                &i64::from(event_index),
                &row.record_index.map(i64::from),
                &row.event_time,
                &row.event_code.map(i32::from),
                &real(row.latitude),
                &real(row.longitude),
                &frame,
                &at,
            ],
        )?;
        Ok(())
    }

    fn insert_current(
        &mut self,
        device: i64,
        frame: i64,
        row: &RecordRow,
        at: i64,
    ) -> Result<(), StoreError> {
        let core = CoreRow::from(row);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&device, &frame, &at];
        params.extend(core.params());
        self.execute(INSERT_CURRENT, &params)?;
        Ok(())
    }
}

impl PgStore {
    /// [`crate::Store::reprocess`].
    pub(crate) fn reprocess(
        &mut self,
        updates: &[(i64, FrameRow)],
    ) -> Result<ReprocessStats, StoreError> {
        // The partitions new keys may need, as a commit creates them: months within the
        // backfill window; older or undated keys go to the default partition.
        let now = month_of(Timestamp::now().as_second()).unwrap_or(0);
        let window = now - BACKFILL..=now + AHEAD;
        let mut months: Vec<i64> = updates
            .iter()
            .flat_map(|(_, frame)| &frame.records)
            .filter(|record| !matches!(record.kind, RecordKind::Current))
            .filter_map(|record| record.row.event_time.and_then(month_of))
            .filter(|month| window.contains(month))
            .collect();
        months.sort_unstable();
        months.dedup();
        for month in months {
            self.ensure_partition(Partitioned::Records, month)?;
        }
        self.in_transaction(|tx, caches| {
            let mut session = Session {
                tx,
                prepared: caches.prepared,
            };
            reprocess_frames(&mut session, updates)
        })
    }
}
