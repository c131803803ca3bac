//! Reprocessing on SQLite: the statements of the diff by key in `crate::reprocess`, run in
//! one `BEGIN IMMEDIATE` transaction.

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use super::SqliteStore;
use super::write::{Writer, bind_core};
use crate::reprocess::{FrameHead, FrameOps, Key, reprocess_frames};
use crate::{ExtRecordRow, FrameRow, RecordRow, StoreError};

const SELECT_FRAME: &str = "SELECT f.device, f.received_at_us, f.kind, f.status,
        f.error_reason, f.error, d.imei
    FROM raw_frames f LEFT JOIN devices d ON d.id = f.device
    WHERE f.id = ?1";

const UPDATE_FRAME: &str = "UPDATE raw_frames SET kind = ?2, status = ?3, error_reason = ?4,
    error = ?5 WHERE id = ?1";

/// Updates the values of record `?1` only when one differs (`IS` compares NULLs as equal), so
/// the change count says whether anything changed. Binds: id, source, then the core columns
/// from `?3` (record index `?3` and event time `?5` are the key, checked, not set).
const UPDATE_RECORD: &str = "UPDATE records SET source = ?2, event_code = ?4, fix_time = ?6,
        valid = ?7, satellites = ?8, latitude = ?9, longitude = ?10, altitude_m = ?11,
        speed_kmh = ?12, course = ?13, odometer_km = ?14, power_mv = ?15, battery_mv = ?16,
        gsm_level = ?17, fields = ?18
    WHERE id = ?1 AND record_index IS ?3 AND event_time IS ?5
      AND NOT (source IS ?2 AND event_code IS ?4 AND fix_time IS ?6 AND valid IS ?7
        AND satellites IS ?8 AND latitude IS ?9 AND longitude IS ?10 AND altitude_m IS ?11
        AND speed_kmh IS ?12 AND course IS ?13 AND odometer_km IS ?14 AND power_mv IS ?15
        AND battery_mv IS ?16 AND gsm_level IS ?17 AND fields IS ?18)";

/// As [`UPDATE_RECORD`] for `ext_records`. Binds: id, event index, structure version, then
/// the core columns from `?4` (key: record index `?4`, event time `?6`).
const UPDATE_EXT: &str = "UPDATE ext_records SET event_index = ?2, struct_version = ?3,
        event_code = ?5, fix_time = ?7, valid = ?8, satellites = ?9, latitude = ?10,
        longitude = ?11, altitude_m = ?12, speed_kmh = ?13, course = ?14, odometer_km = ?15,
        power_mv = ?16, battery_mv = ?17, gsm_level = ?18, fields = ?19
    WHERE id = ?1 AND record_index IS ?4 AND event_time IS ?6
      AND NOT (event_index IS ?2 AND struct_version IS ?3 AND event_code IS ?5
        AND fix_time IS ?7 AND valid IS ?8 AND satellites IS ?9 AND latitude IS ?10
        AND longitude IS ?11 AND altitude_m IS ?12 AND speed_kmh IS ?13 AND course IS ?14
        AND odometer_km IS ?15 AND power_mv IS ?16 AND battery_mv IS ?17
        AND gsm_level IS ?18 AND fields IS ?19)";

/// The statements of one reprocess transaction: the [`Writer`]'s and its own.
struct Statements<'c> {
    writer: Writer<'c>,
    select_frame: CachedStatement<'c>,
    update_frame: CachedStatement<'c>,
    delete_errors: CachedStatement<'c>,
    delete_alarms: CachedStatement<'c>,
    delete_current: CachedStatement<'c>,
    old_records: CachedStatement<'c>,
    old_ext: CachedStatement<'c>,
    update_record: CachedStatement<'c>,
    update_ext: CachedStatement<'c>,
    delete_record: CachedStatement<'c>,
    delete_ext: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Result<Self, StoreError> {
        Ok(Statements {
            writer: Writer::new(conn)?,
            select_frame: conn.prepare_cached(SELECT_FRAME)?,
            update_frame: conn.prepare_cached(UPDATE_FRAME)?,
            delete_errors: conn.prepare_cached("DELETE FROM decode_errors WHERE frame = ?1")?,
            delete_alarms: conn.prepare_cached("DELETE FROM alarm_events WHERE frame = ?1")?,
            delete_current: conn.prepare_cached("DELETE FROM current_states WHERE frame = ?1")?,
            old_records: conn.prepare_cached(
                "SELECT id, record_index, event_time FROM records WHERE frame = ?1 ORDER BY id",
            )?,
            old_ext: conn.prepare_cached(
                "SELECT id, record_index, event_time FROM ext_records WHERE frame = ?1
                 ORDER BY id",
            )?,
            update_record: conn.prepare_cached(UPDATE_RECORD)?,
            update_ext: conn.prepare_cached(UPDATE_EXT)?,
            delete_record: conn.prepare_cached("DELETE FROM records WHERE id = ?1")?,
            delete_ext: conn.prepare_cached("DELETE FROM ext_records WHERE id = ?1")?,
        })
    }
}

/// Loads the (id, key) of the rows `frame` holds through `stmt`.
fn load_old(stmt: &mut CachedStatement<'_>, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
    let mut old = Vec::new();
    let mut rows = stmt.query([frame])?;
    while let Some(row) = rows.next()? {
        let record_index: Option<u32> = row.get(1)?;
        old.push((row.get(0)?, (record_index.map(i64::from), row.get(2)?)));
    }
    Ok(old)
}

impl FrameOps for Statements<'_> {
    fn frame_head(&mut self, frame: i64) -> Result<Option<FrameHead>, StoreError> {
        let head = self
            .select_frame
            .query_row([frame], |row| {
                Ok(FrameHead {
                    device: row.get(0)?,
                    received_at_us: row.get(1)?,
                    kind: row.get(2)?,
                    status: row.get(3)?,
                    error_reason: row.get(4)?,
                    error: row.get(5)?,
                    imei: row.get(6)?,
                })
            })
            .optional()?;
        Ok(head)
    }

    fn update_frame(&mut self, frame: i64, _at: i64, new: &FrameRow) -> Result<(), StoreError> {
        self.update_frame.execute(params![
            frame,
            &*new.kind,
            new.status.as_str(),
            new.error_reason,
            new.error.as_deref()
        ])?;
        Ok(())
    }

    fn delete_decode_errors(&mut self, frame: i64) -> Result<(), StoreError> {
        self.delete_errors.execute([frame])?;
        Ok(())
    }

    fn insert_decode_error(
        &mut self,
        frame: i64,
        device: Option<i64>,
        at: i64,
        new: &FrameRow,
    ) -> Result<(), StoreError> {
        self.writer.insert_decode_error(frame, device, at, new)
    }

    fn delete_alarms(&mut self, frame: i64) -> Result<(), StoreError> {
        self.delete_alarms.execute([frame])?;
        Ok(())
    }

    fn delete_current(&mut self, frame: i64) -> Result<(), StoreError> {
        self.delete_current.execute([frame])?;
        Ok(())
    }

    fn old_records(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
        load_old(&mut self.old_records, frame)
    }

    fn update_record(
        &mut self,
        _frame: i64,
        id: i64,
        source: &'static str,
        row: &RecordRow,
    ) -> Result<bool, StoreError> {
        let stmt = &mut self.update_record;
        stmt.raw_bind_parameter(1, id)?;
        stmt.raw_bind_parameter(2, source)?;
        bind_core(stmt, 3, row)?;
        Ok(stmt.raw_execute()? == 1)
    }

    fn insert_record(
        &mut self,
        device: i64,
        frame: i64,
        source: &'static str,
        row: &RecordRow,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.writer
            .insert_record(device, Some(frame), source, row, at)
    }

    fn delete_record(&mut self, _frame: i64, id: i64, _key: Key) -> Result<(), StoreError> {
        self.delete_record.execute([id])?;
        Ok(())
    }

    fn old_ext(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError> {
        load_old(&mut self.old_ext, frame)
    }

    fn update_ext(&mut self, id: i64, ext: &ExtRecordRow) -> Result<bool, StoreError> {
        let stmt = &mut self.update_ext;
        stmt.raw_bind_parameter(1, id)?;
        stmt.raw_bind_parameter(2, ext.event_index)?;
        stmt.raw_bind_parameter(3, ext.struct_version)?;
        bind_core(stmt, 4, &ext.row)?;
        Ok(stmt.raw_execute()? == 1)
    }

    fn insert_ext(
        &mut self,
        device: i64,
        frame: i64,
        ext: &ExtRecordRow,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.writer.insert_ext(device, frame, ext, at)
    }

    fn delete_ext(&mut self, id: i64) -> Result<(), StoreError> {
        self.delete_ext.execute([id])?;
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
        self.writer
            .insert_alarm(device, frame, event_index, row, at)?;
        Ok(())
    }

    fn insert_current(
        &mut self,
        device: i64,
        frame: i64,
        row: &RecordRow,
        at: i64,
    ) -> Result<(), StoreError> {
        self.writer.insert_current(device, frame, row, at)
    }
}

impl SqliteStore {
    /// [`crate::Store::reprocess`]: the diff in one `BEGIN IMMEDIATE` … `COMMIT`, all or
    /// nothing.
    pub fn reprocess(
        &mut self,
        updates: &[(i64, FrameRow)],
    ) -> Result<crate::ReprocessStats, StoreError> {
        self.in_transaction(|store| reprocess_frames(&mut Statements::new(&store.conn)?, updates))
    }
}
