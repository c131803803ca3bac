//! Reprocessing: replacing what was decoded from archived frames by a fresh decode of their
//! bytes (after a decoder fix), as a diff keyed by (record index, event time) so that record
//! ids survive and running it twice changes nothing.

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use super::SqliteStore;
use super::write::{Writer, bind_core};
use crate::{FrameRow, FrameStatus, RecordKind, RecordRow, StoreError};

/// What a reprocess run changed. The `records_*` counters and `duplicates` cover both
/// `records` and `ext_records`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReprocessStats {
    /// Frames processed.
    pub frames: u64,
    /// Frames whose kind, status or error changed.
    pub status_changed: u64,
    /// Records the new decode has and the frame did not.
    pub records_added: u64,
    /// Records with the same key and different values (updated in place, id kept).
    pub records_changed: u64,
    /// Records the frame had and the new decode does not (deleted).
    pub records_removed: u64,
    /// Records with the same key and the same values.
    pub records_unchanged: u64,
    /// New records whose key another frame already holds (not stored, as in a commit).
    pub duplicates: u64,
}

impl ReprocessStats {
    /// Adds `other`'s counts to these (totals over several calls).
    pub fn add(&mut self, other: ReprocessStats) {
        self.frames += other.frames;
        self.status_changed += other.status_changed;
        self.records_added += other.records_added;
        self.records_changed += other.records_changed;
        self.records_removed += other.records_removed;
        self.records_unchanged += other.records_unchanged;
        self.duplicates += other.duplicates;
    }
}

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

/// The key of a record-shaped row.
type Key = (Option<u32>, Option<i64>);

/// A row the frame held before, and whether the new decode has its key.
struct OldRow {
    id: i64,
    key: Key,
    matched: bool,
}

/// The stored head of a frame being reprocessed.
struct StoredHead {
    device: Option<i64>,
    received_at_us: i64,
    kind: String,
    status: String,
    error_reason: Option<String>,
    error: Option<String>,
    imei: Option<String>,
}

/// The statements of one reprocess transaction besides the [`Writer`]'s.
struct Statements<'c> {
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
    fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
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

/// Loads the (id, key) of the rows `frame` holds through `stmt` into `old`.
fn load_old(
    stmt: &mut CachedStatement<'_>,
    frame: i64,
    old: &mut Vec<OldRow>,
) -> Result<(), StoreError> {
    old.clear();
    let mut rows = stmt.query([frame])?;
    while let Some(row) = rows.next()? {
        old.push(OldRow {
            id: row.get(0)?,
            key: (row.get(1)?, row.get(2)?),
            matched: false,
        });
    }
    Ok(())
}

/// Pairs a new row with the first unpaired old row of the same key (NULLs equal: a frame's
/// own key-less rows are matched in order).
fn take_match(old: &mut [OldRow], key: Key) -> Option<i64> {
    let row = old.iter_mut().find(|row| !row.matched && row.key == key)?;
    row.matched = true;
    Some(row.id)
}

impl SqliteStore {
    /// Replaces what was decoded from archived frames by a new decode. Each update is a
    /// `raw_frames.id` and the [`FrameRow`] freshly decoded from that frame's bytes; all
    /// updates run in one transaction, all or nothing.
    ///
    /// Per frame: kind, status and error are updated; decode errors, alarm events and
    /// current-state rows are replaced; records and additional records are diffed by key
    /// (record index, event time): same key and values = unchanged, same key and other
    /// values = changed (updated in place, id kept), a new key = added (or a duplicate when
    /// another frame holds it), a key gone = removed. The frame keeps its device, receive time
    /// and layout, and device updates in `FrameRow::device` are ignored (a re-decoded old
    /// negotiation must not roll back the device's current layout). A removed record that
    /// later frames had resent is gone with it; reprocessing those frames adds it back.
    ///
    /// Fails with [`StoreError::Invalid`] for an unknown frame id, an IMEI other than the
    /// frame's device, or records for a frame without a device.
    pub fn reprocess(&mut self, updates: &[(i64, FrameRow)]) -> Result<ReprocessStats, StoreError> {
        self.in_transaction(|store| store.reprocess_batch(updates))
    }

    /// The body of [`Store::reprocess`], inside its transaction.
    fn reprocess_batch(
        &mut self,
        updates: &[(i64, FrameRow)],
    ) -> Result<ReprocessStats, StoreError> {
        let conn: &Connection = &self.conn;
        let mut writer = Writer::new(conn)?;
        let mut st = Statements::new(conn)?;
        let mut stats = ReprocessStats::default();
        let mut old = Vec::new();
        for (id, new) in updates {
            let id = *id;
            let head = st
                .select_frame
                .query_row([id], |row| {
                    Ok(StoredHead {
                        device: row.get(0)?,
                        received_at_us: row.get(1)?,
                        kind: row.get(2)?,
                        status: row.get(3)?,
                        error_reason: row.get(4)?,
                        error: row.get(5)?,
                        imei: row.get(6)?,
                    })
                })
                .optional()?
                .ok_or_else(|| StoreError::Invalid(format!("raw frame {id} does not exist")))?;
            if let (Some(new_imei), Some(stored_imei)) = (&new.imei, &head.imei)
                && **new_imei != **stored_imei
            {
                return Err(StoreError::Invalid(format!(
                    "reprocess of raw frame {id} names imei {new_imei} but the frame belongs \
                     to {stored_imei}"
                )));
            }
            stats.frames += 1;

            if head.kind != *new.kind
                || head.status != new.status.as_str()
                || head.error != new.error
            {
                stats.status_changed += 1;
            }
            if head.kind != *new.kind
                || head.status != new.status.as_str()
                || head.error != new.error
                || head.error_reason.as_deref() != new.error_reason
            {
                st.update_frame.execute(params![
                    id,
                    &*new.kind,
                    new.status.as_str(),
                    new.error_reason,
                    new.error.as_deref()
                ])?;
            }

            st.delete_errors.execute([id])?;
            if new.status != FrameStatus::Ok {
                writer.insert_decode_error(id, head.device, head.received_at_us, new)?;
            }
            st.delete_alarms.execute([id])?;
            st.delete_current.execute([id])?;

            let Some(device) = head.device else {
                // Records need a device, so a frame without one holds none.
                if new.records.is_empty() && new.ext_records.is_empty() {
                    continue;
                }
                return Err(StoreError::Invalid(format!(
                    "raw frame {id} has no device: its {} records and {} additional records \
                     cannot be stored",
                    new.records.len(),
                    new.ext_records.len()
                )));
            };
            let at = head.received_at_us;

            load_old(&mut st.old_records, id, &mut old)?;
            for record in &new.records {
                let source = match record.kind {
                    RecordKind::Archive => "archive",
                    RecordKind::Alarm { .. } => "alarm",
                    RecordKind::Current => continue,
                };
                let row = &record.row;
                match take_match(&mut old, (row.record_index, row.event_time)) {
                    Some(old_id) => {
                        if update_record(&mut st.update_record, old_id, source, row)? {
                            stats.records_changed += 1;
                        } else {
                            stats.records_unchanged += 1;
                        }
                    }
                    None => {
                        if writer.insert_record(device, Some(id), source, row, at)? {
                            stats.records_added += 1;
                        } else {
                            stats.duplicates += 1;
                        }
                    }
                }
            }
            for row in old.iter().filter(|row| !row.matched) {
                st.delete_record.execute([row.id])?;
                stats.records_removed += 1;
            }
            for record in &new.records {
                match record.kind {
                    RecordKind::Alarm { event_index } => {
                        writer.insert_alarm(device, id, event_index, &record.row, at)?;
                    }
                    RecordKind::Current => writer.insert_current(device, id, &record.row, at)?,
                    RecordKind::Archive => {}
                }
            }

            load_old(&mut st.old_ext, id, &mut old)?;
            for ext in &new.ext_records {
                let row = &ext.row;
                match take_match(&mut old, (row.record_index, row.event_time)) {
                    Some(old_id) => {
                        let stmt = &mut st.update_ext;
                        stmt.raw_bind_parameter(1, old_id)?;
                        stmt.raw_bind_parameter(2, ext.event_index)?;
                        stmt.raw_bind_parameter(3, ext.struct_version)?;
                        bind_core(stmt, 4, row)?;
                        if stmt.raw_execute()? == 1 {
                            stats.records_changed += 1;
                        } else {
                            stats.records_unchanged += 1;
                        }
                    }
                    None => {
                        if writer.insert_ext(device, id, ext, at)? {
                            stats.records_added += 1;
                        } else {
                            stats.duplicates += 1;
                        }
                    }
                }
            }
            for row in old.iter().filter(|row| !row.matched) {
                st.delete_ext.execute([row.id])?;
                stats.records_removed += 1;
            }
        }
        Ok(stats)
    }
}

/// Updates record `id` to `row`'s values when they differ; returns whether they did.
fn update_record(
    stmt: &mut CachedStatement<'_>,
    id: i64,
    source: &str,
    row: &RecordRow,
) -> Result<bool, StoreError> {
    stmt.raw_bind_parameter(1, id)?;
    stmt.raw_bind_parameter(2, source)?;
    bind_core(stmt, 3, row)?;
    Ok(stmt.raw_execute()? == 1)
}
