//! The write side shared by commit, reprocess and the direct insert: the hot insert
//! statements (prepared once per transaction, bound column by column without copying text),
//! and the cached resolution of devices and layouts to ids.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use crate::{DeviceUpdate, ExtRecordRow, FrameRow, LayoutKey, RecordRow, StoreError};

/// The sixteen value columns every record-shaped table shares, in binding order.
macro_rules! core_columns {
    () => {
        "record_index, event_code, event_time, fix_time, valid, satellites, latitude, \
         longitude, altitude_m, speed_kmh, course, odometer_km, power_mv, battery_mv, \
         gsm_level, fields"
    };
}

/// Number of columns [`bind_core`] binds.
pub(super) const CORE_COLUMNS: usize = 16;

const INSERT_FRAME: &str = "INSERT INTO raw_frames
    (device, conn_id, received_at_us, kind, status, error_reason, error, bytes, layout)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const INSERT_DECODE_ERROR: &str = "INSERT INTO decode_errors
    (frame, device, received_at_us, reason, error) VALUES (?1, ?2, ?3, ?4, ?5)";

/// `ON CONFLICT (key) DO NOTHING` rather than `INSERT OR IGNORE`: the same effect on the
/// deduplication key, but a violation of any other constraint (NOT NULL, CHECK) still fails
/// loudly instead of passing for a duplicate.
const INSERT_RECORD: &str = concat!(
    "INSERT INTO records (device, frame, source, ",
    core_columns!(),
    ", received_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
     ?15, ?16, ?17, ?18, ?19, ?20)
     ON CONFLICT (device, event_time, record_index) DO NOTHING"
);

const INSERT_ALARM: &str = "INSERT INTO alarm_events
    (device, event_index, record_index, event_time, event_code, latitude, longitude, frame,
     received_at_us)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (device, event_index, event_time) DO NOTHING";

const INSERT_CURRENT: &str = concat!(
    "INSERT INTO current_states (device, frame, received_at_us, ",
    core_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19)"
);

const INSERT_EXT: &str = concat!(
    "INSERT INTO ext_records (device, frame, event_index, struct_version, ",
    core_columns!(),
    ", received_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
     ?15, ?16, ?17, ?18, ?19, ?20, ?21)
     ON CONFLICT (device, record_index, event_time) DO NOTHING"
);

/// Binds the core columns of `row` to parameters `first .. first + 16`, borrowing its text.
pub(super) fn bind_core(
    stmt: &mut CachedStatement<'_>,
    first: usize,
    row: &RecordRow,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, row.record_index)?;
    stmt.raw_bind_parameter(first + 1, row.event_code)?;
    stmt.raw_bind_parameter(first + 2, row.event_time)?;
    stmt.raw_bind_parameter(first + 3, row.fix_time)?;
    stmt.raw_bind_parameter(first + 4, row.valid)?;
    stmt.raw_bind_parameter(first + 5, row.satellites)?;
    stmt.raw_bind_parameter(first + 6, row.latitude)?;
    stmt.raw_bind_parameter(first + 7, row.longitude)?;
    stmt.raw_bind_parameter(first + 8, row.altitude_m)?;
    stmt.raw_bind_parameter(first + 9, row.speed_kmh)?;
    stmt.raw_bind_parameter(first + 10, row.course)?;
    stmt.raw_bind_parameter(first + 11, row.odometer_km)?;
    stmt.raw_bind_parameter(first + 12, row.power_mv)?;
    stmt.raw_bind_parameter(first + 13, row.battery_mv)?;
    stmt.raw_bind_parameter(first + 14, row.gsm_level)?;
    stmt.raw_bind_parameter(first + 15, row.fields_json.as_str())?;
    Ok(())
}

/// The insert statements of one transaction, prepared once (from the connection's cache)
/// and reused for every row.
pub(super) struct Writer<'c> {
    conn: &'c Connection,
    frame: CachedStatement<'c>,
    decode_error: CachedStatement<'c>,
    record: CachedStatement<'c>,
    alarm: CachedStatement<'c>,
    current: CachedStatement<'c>,
    ext: CachedStatement<'c>,
}

impl<'c> Writer<'c> {
    /// Takes the statements from the connection's statement cache.
    pub(super) fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Writer {
            conn,
            frame: conn.prepare_cached(INSERT_FRAME)?,
            decode_error: conn.prepare_cached(INSERT_DECODE_ERROR)?,
            record: conn.prepare_cached(INSERT_RECORD)?,
            alarm: conn.prepare_cached(INSERT_ALARM)?,
            current: conn.prepare_cached(INSERT_CURRENT)?,
            ext: conn.prepare_cached(INSERT_EXT)?,
        })
    }

    /// Archives the raw frame; returns its id.
    pub(super) fn insert_frame(
        &mut self,
        device: Option<i64>,
        frame: &FrameRow,
        layout: Option<i64>,
    ) -> Result<i64, StoreError> {
        let conn_id = i64::try_from(frame.conn_id).map_err(|_| {
            StoreError::Invalid(format!("connection id {} out of range", frame.conn_id))
        })?;
        let stmt = &mut self.frame;
        stmt.raw_bind_parameter(1, device)?;
        stmt.raw_bind_parameter(2, conn_id)?;
        stmt.raw_bind_parameter(3, frame.received_at_us)?;
        stmt.raw_bind_parameter(4, &*frame.kind)?;
        stmt.raw_bind_parameter(5, frame.status.as_str())?;
        stmt.raw_bind_parameter(6, frame.error_reason)?;
        stmt.raw_bind_parameter(7, frame.error.as_deref())?;
        stmt.raw_bind_parameter(8, frame.bytes.as_slice())?;
        stmt.raw_bind_parameter(9, layout)?;
        stmt.raw_execute()?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records why the frame `frame_id` was not decoded.
    pub(super) fn insert_decode_error(
        &mut self,
        frame_id: i64,
        device: Option<i64>,
        received_at_us: i64,
        frame: &FrameRow,
    ) -> Result<(), StoreError> {
        self.decode_error.execute(params![
            frame_id,
            device,
            received_at_us,
            frame.error_reason,
            frame.error.as_deref()
        ])?;
        Ok(())
    }

    /// Inserts an archive or alarm record unless its key is already stored; returns whether
    /// it was inserted.
    pub(super) fn insert_record(
        &mut self,
        device: i64,
        frame: Option<i64>,
        source: &'static str,
        row: &RecordRow,
        received_at_us: i64,
    ) -> Result<bool, StoreError> {
        let stmt = &mut self.record;
        stmt.raw_bind_parameter(1, device)?;
        stmt.raw_bind_parameter(2, frame)?;
        stmt.raw_bind_parameter(3, source)?;
        bind_core(stmt, 4, row)?;
        stmt.raw_bind_parameter(4 + CORE_COLUMNS, received_at_us)?;
        Ok(stmt.raw_execute()? == 1)
    }

    /// Inserts an alarm event unless already stored; returns whether it was inserted.
    pub(super) fn insert_alarm(
        &mut self,
        device: i64,
        frame: i64,
        event_index: u32,
        row: &RecordRow,
        received_at_us: i64,
    ) -> Result<bool, StoreError> {
        let changed = self.alarm.execute(params![
            device,
            event_index,
            row.record_index,
            row.event_time,
            row.event_code,
            row.latitude,
            row.longitude,
            frame,
            received_at_us
        ])?;
        Ok(changed == 1)
    }

    /// Inserts a current-state row (never deduplicated).
    pub(super) fn insert_current(
        &mut self,
        device: i64,
        frame: i64,
        row: &RecordRow,
        received_at_us: i64,
    ) -> Result<(), StoreError> {
        let stmt = &mut self.current;
        stmt.raw_bind_parameter(1, device)?;
        stmt.raw_bind_parameter(2, frame)?;
        stmt.raw_bind_parameter(3, received_at_us)?;
        bind_core(stmt, 4, row)?;
        stmt.raw_execute()?;
        Ok(())
    }

    /// Inserts an additional record unless its key is already stored; returns whether it was
    /// inserted.
    pub(super) fn insert_ext(
        &mut self,
        device: i64,
        frame: i64,
        ext: &ExtRecordRow,
        received_at_us: i64,
    ) -> Result<bool, StoreError> {
        let stmt = &mut self.ext;
        stmt.raw_bind_parameter(1, device)?;
        stmt.raw_bind_parameter(2, frame)?;
        stmt.raw_bind_parameter(3, ext.event_index)?;
        stmt.raw_bind_parameter(4, ext.struct_version)?;
        bind_core(stmt, 5, &ext.row)?;
        stmt.raw_bind_parameter(5 + CORE_COLUMNS, received_at_us)?;
        Ok(stmt.raw_execute()? == 1)
    }
}

/// The `devices.id` of `imei`, inserting the device (first and last seen `seen_us`) when new.
/// Served from `cache` after the first look-up.
pub(super) fn resolve_device(
    conn: &Connection,
    cache: &mut HashMap<Arc<str>, i64>,
    imei: &Arc<str>,
    seen_us: i64,
) -> Result<i64, StoreError> {
    if let Some(&id) = cache.get(&**imei) {
        return Ok(id);
    }
    let existing: Option<i64> = conn
        .prepare_cached("SELECT id FROM devices WHERE imei = ?1")?
        .query_row([&**imei], |row| row.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => conn
            .prepare_cached(
                "INSERT INTO devices (imei, first_seen_us, last_seen_us) VALUES (?1, ?2, ?2)",
            )?
            .insert(params![&**imei, seen_us])?,
    };
    cache.insert(Arc::clone(imei), id);
    Ok(id)
}

/// The `layouts.id` of `key`, inserting the layout when new. Served from `cache` after the
/// first look-up.
pub(super) fn resolve_layout(
    conn: &Connection,
    cache: &mut HashMap<Arc<LayoutKey>, i64>,
    key: &Arc<LayoutKey>,
) -> Result<i64, StoreError> {
    if let Some(&id) = cache.get(&**key) {
        return Ok(id);
    }
    let values = params![
        key.protocol_version,
        key.struct_version,
        key.data_size,
        key.mask.as_slice()
    ];
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM layouts WHERE protocol_version = ?1 AND struct_version = ?2
             AND data_size = ?3 AND mask = ?4",
        )?
        .query_row(values, |row| row.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => conn
            .prepare_cached(
                "INSERT INTO layouts (protocol_version, struct_version, data_size, mask)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .insert(values)?,
    };
    cache.insert(Arc::clone(key), id);
    Ok(id)
}

/// Applies what a handshake or negotiation frame received at `at_us` says about the device.
/// The enabled field list is stored as a JSON array of field numbers.
pub(super) fn apply_device_update(
    conn: &Connection,
    device: i64,
    update: &DeviceUpdate,
    at_us: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE devices SET device_id = ?2 WHERE id = ?1")?
        .execute(params![device, update.device_id])?;
    let fields = update.fields_json();
    if let Some(layout) = &update.layout {
        conn.prepare_cached(
            "UPDATE devices SET protocol_version = ?2, struct_version = ?3, data_size = ?4,
             mask = ?5, fields = ?6, negotiated_at_us = ?7 WHERE id = ?1",
        )?
        .execute(params![
            device,
            layout.protocol_version,
            layout.struct_version,
            layout.data_size,
            layout.mask.as_slice(),
            fields,
            at_us
        ])?;
    } else if let Some(fields) = fields {
        conn.prepare_cached("UPDATE devices SET fields = ?2 WHERE id = ?1")?
            .execute(params![device, fields])?;
    }
    Ok(())
}
