//! The batch commit on PostgreSQL: a fixed handful of set-based statements per batch, whatever
//! its size. Each table gets one multi-row `INSERT ... SELECT * FROM unnest($1, $2, ...)` whose
//! parameters are whole columns (arrays); the deduplicated tables add `ON CONFLICT DO NOTHING`,
//! and the row count the server reports is the number inserted. Deduplicated rows are sent in
//! key order, so two servers writing overlapping keys (a device that moved between them) take
//! their locks in the same order and cannot deadlock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Statement, Transaction};

use super::{Caches, wait};
use crate::{
    CommitStats, DeviceUpdate, ExtRecordRow, FrameRow, FrameStatus, LayoutKey, RecordKind,
    RecordRow, StoreError,
};

/// The typed `unnest` parameters of the sixteen core columns from `$4` (records and current
/// states) in schema order: record_index .. fields.
macro_rules! core_from_4 {
    () => {
        "$4::bigint[], $5::int[], $6::bigint[], $7::bigint[], $8::bool[], $9::int[], \
         $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::int[], \
         $15::float8[], $16::int[], $17::int[], $18::int[], $19::text[]"
    };
}

/// The sixteen value columns of every record-shaped table, in the order of the schema.
macro_rules! core_columns {
    () => {
        "record_index, event_code, event_time, fix_time, valid, satellites, latitude, \
         longitude, altitude_m, speed_kmh, course, odometer_km, power_mv, battery_mv, \
         gsm_level, fields"
    };
}

const INSERT_FRAMES: &str = "INSERT INTO raw_frames
    (id, device, conn_id, received_at_us, kind, status, error_reason, error, bytes, layout)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bigint[])";

const INSERT_DECODE_ERRORS: &str = "INSERT INTO decode_errors
    (frame, device, received_at_us, reason, error)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])";

const INSERT_RECORDS: &str = concat!(
    "INSERT INTO records (device, frame, source, ",
    core_columns!(),
    ", received_at_us) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], ",
    core_from_4!(),
    ", $20::bigint[]) ON CONFLICT (device, event_time, record_index) DO NOTHING"
);

const INSERT_CURRENT: &str = concat!(
    "INSERT INTO current_states (device, frame, received_at_us, ",
    core_columns!(),
    ") SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], ",
    core_from_4!(),
    ")"
);

/// Additional records: device, frame, received_at, then the core columns, then event index and
/// structure version (listed in that order so the core parameters are numbered as above).
const INSERT_EXT: &str = concat!(
    "INSERT INTO ext_records (device, frame, received_at_us, ",
    core_columns!(),
    ", event_index, struct_version) SELECT * FROM unnest($1::bigint[], $2::bigint[], \
     $3::bigint[], ",
    core_from_4!(),
    ", $20::bigint[], $21::int[]) ON CONFLICT (device, record_index, event_time) DO NOTHING"
);

const INSERT_ALARMS: &str = "INSERT INTO alarm_events
    (device, event_index, record_index, event_time, event_code, latitude, longitude, frame,
     received_at_us)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[],
                         $6::float8[], $7::float8[], $8::bigint[], $9::bigint[])
    ON CONFLICT (device, event_index, event_time) DO NOTHING";

const NEXT_FRAME_IDS: &str = "SELECT nextval('raw_frames_id_seq') FROM generate_series(1, $1)";

const INSERT_DEVICES: &str = "INSERT INTO devices (imei, first_seen_us, last_seen_us)
    SELECT i, t, t FROM unnest($1::text[], $2::bigint[]) AS v(i, t) ORDER BY i
    ON CONFLICT (imei) DO NOTHING";

const SELECT_DEVICES: &str = "SELECT imei, id FROM devices WHERE imei = ANY($1::text[])";

const TOUCH_DEVICES: &str = "UPDATE devices d SET last_seen_us = greatest(d.last_seen_us, v.at)
    FROM unnest($1::bigint[], $2::bigint[]) AS v(id, at) WHERE d.id = v.id";

/// The binary `COPY` types of the sixteen core columns, in schema order.
const CORE_TYPES: [Type; 16] = [
    Type::INT8,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::INT4,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT4,
    Type::FLOAT8,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::TEXT,
];

/// Prepared statements, by SQL text, of the current connection.
pub(crate) type Prepared = HashMap<&'static str, Statement>;

/// The statement for `sql`, prepared once per connection.
fn prepared(
    tx: &Transaction<'_>,
    cache: &mut Prepared,
    sql: &'static str,
) -> Result<Statement, StoreError> {
    if let Some(stmt) = cache.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = wait(tx.prepare(sql))?;
    cache.insert(sql, stmt.clone());
    Ok(stmt)
}

/// Runs a prepared statement; returns the rows it changed.
fn exec(
    tx: &Transaction<'_>,
    cache: &mut Prepared,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = prepared(tx, cache, sql)?;
    Ok(wait(tx.execute(&stmt, params))?)
}

/// A real column's value as SQLite stores it: NaN (a field the device left unset) becomes
/// NULL, so both backends hold and return the same thing.
pub(super) fn real(value: Option<f64>) -> Option<f64> {
    value.filter(|v| !v.is_nan())
}

/// The sixteen core columns in schema order, generic over what holds each one's values (one
/// row's: [`CoreRow`]; many rows' as arrays: [`Core`]), so both bind them in the same order.
#[derive(Default)]
pub(super) struct CoreColumns<Int8, Int4, Bool, Float8, Text> {
    record_index: Int8,
    event_code: Int4,
    event_time: Int8,
    fix_time: Int8,
    valid: Bool,
    satellites: Int4,
    latitude: Float8,
    longitude: Float8,
    altitude_m: Float8,
    speed_kmh: Float8,
    course: Int4,
    odometer_km: Float8,
    power_mv: Int4,
    battery_mv: Int4,
    gsm_level: Int4,
    fields: Text,
}

/// The core values of one row, converted to their column types (see [`CoreRow::from`]).
pub(super) type CoreRow<'a> =
    CoreColumns<Option<i64>, Option<i32>, Option<bool>, Option<f64>, &'a str>;

/// The core columns of many rows, as arrays.
type Core<'a> = CoreColumns<
    Vec<Option<i64>>,
    Vec<Option<i32>>,
    Vec<Option<bool>>,
    Vec<Option<f64>>,
    Vec<&'a str>,
>;

impl<Int8, Int4, Bool, Float8, Text> CoreColumns<Int8, Int4, Bool, Float8, Text>
where
    Int8: ToSql + Sync,
    Int4: ToSql + Sync,
    Bool: ToSql + Sync,
    Float8: ToSql + Sync,
    Text: ToSql + Sync,
{
    /// The sixteen columns as statement parameters, in schema order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.record_index,
            &self.event_code,
            &self.event_time,
            &self.fix_time,
            &self.valid,
            &self.satellites,
            &self.latitude,
            &self.longitude,
            &self.altitude_m,
            &self.speed_kmh,
            &self.course,
            &self.odometer_km,
            &self.power_mv,
            &self.battery_mv,
            &self.gsm_level,
            &self.fields,
        ]
    }
}

impl<'a> From<&'a RecordRow> for CoreRow<'a> {
    /// The column types of `row`'s values; a NaN real is NULL ([`real`]).
    fn from(row: &'a RecordRow) -> CoreRow<'a> {
        CoreColumns {
            record_index: row.record_index.map(i64::from),
            event_code: row.event_code.map(i32::from),
            event_time: row.event_time,
            fix_time: row.fix_time,
            valid: row.valid,
            satellites: row.satellites.map(i32::from),
            latitude: real(row.latitude),
            longitude: real(row.longitude),
            altitude_m: real(row.altitude_m),
            speed_kmh: real(row.speed_kmh),
            course: row.course.map(i32::from),
            odometer_km: real(row.odometer_km),
            power_mv: row.power_mv.map(i32::from),
            battery_mv: row.battery_mv.map(i32::from),
            gsm_level: row.gsm_level.map(i32::from),
            fields: &row.fields_json,
        }
    }
}

impl<'a> Core<'a> {
    fn push(&mut self, row: &'a RecordRow) {
        let row = CoreRow::from(row);
        self.record_index.push(row.record_index);
        self.event_code.push(row.event_code);
        self.event_time.push(row.event_time);
        self.fix_time.push(row.fix_time);
        self.valid.push(row.valid);
        self.satellites.push(row.satellites);
        self.latitude.push(row.latitude);
        self.longitude.push(row.longitude);
        self.altitude_m.push(row.altitude_m);
        self.speed_kmh.push(row.speed_kmh);
        self.course.push(row.course);
        self.odometer_km.push(row.odometer_km);
        self.power_mv.push(row.power_mv);
        self.battery_mv.push(row.battery_mv);
        self.gsm_level.push(row.gsm_level);
        self.fields.push(row.fields);
    }

    fn len(&self) -> usize {
        self.fields.len()
    }
}

/// Rows of a record-shaped table: the columns before the core ones, the core ones, and the
/// columns after.
#[derive(Default)]
struct Rows<'a> {
    device: Vec<i64>,
    frame: Vec<Option<i64>>,
    /// `source` (records) or nothing.
    source: Vec<&'static str>,
    received_at_us: Vec<i64>,
    core: Core<'a>,
    /// The rows the core columns came from, in the same order (for `COPY`, row by row).
    rows: Vec<&'a RecordRow>,
    /// `event_index` (additional records).
    event_index: Vec<Option<i64>>,
    /// `struct_version` (additional records).
    struct_version: Vec<i32>,
}

/// A record-shaped row waiting to be sent: its deduplication key first, for sorting.
struct Pending<'a> {
    key: (i64, Option<i64>, Option<i64>),
    frame: Option<i64>,
    source: &'static str,
    received_at_us: i64,
    row: &'a RecordRow,
    ext: Option<&'a ExtRecordRow>,
}

impl<'a> Rows<'a> {
    fn from_pending(mut pending: Vec<Pending<'a>>) -> Rows<'a> {
        // NULL keys sort first, like PostgreSQL's NULLS FIRST on ascending ids does not matter
        // here: only a consistent order between servers does.
        pending.sort_by_key(|p| p.key);
        let mut rows = Rows::default();
        for p in pending {
            rows.device.push(p.key.0);
            rows.frame.push(p.frame);
            rows.source.push(p.source);
            rows.received_at_us.push(p.received_at_us);
            rows.core.push(p.row);
            rows.rows.push(p.row);
            if let Some(ext) = p.ext {
                rows.event_index.push(ext.event_index.map(i64::from));
                rows.struct_version.push(i32::from(ext.struct_version));
            }
        }
        rows
    }

    /// Inserts into `records`; returns the number inserted.
    fn insert_records(
        &self,
        tx: &Transaction<'_>,
        cache: &mut Prepared,
    ) -> Result<u64, StoreError> {
        if self.core.len() == 0 {
            return Ok(0);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.device, &self.frame, &self.source];
        params.extend(self.core.params());
        params.push(&self.received_at_us);
        exec(tx, cache, INSERT_RECORDS, &params)
    }

    /// Inserts into `records` through a staging table: a binary `COPY` into it, then one
    /// `INSERT ... SELECT ... ON CONFLICT DO NOTHING`; returns the number inserted.
    fn copy_records_staged(&self, tx: &Transaction<'_>) -> Result<u64, StoreError> {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        if self.core.len() == 0 {
            return Ok(0);
        }
        wait(tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS svoi_stage_records
                 (LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        ))?;
        let sink = wait(tx.copy_in(concat!(
            "COPY svoi_stage_records (device, frame, source, ",
            core_columns!(),
            ", received_at_us) FROM STDIN (FORMAT binary)"
        )))?;
        let mut types = vec![Type::INT8, Type::INT8, Type::TEXT];
        types.extend(CORE_TYPES);
        types.push(Type::INT8);
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        for (i, row) in self.rows.iter().enumerate() {
            let core = CoreRow::from(*row);
            let mut values: Vec<&(dyn ToSql + Sync)> =
                vec![&self.device[i], &self.frame[i], &self.source[i]];
            values.extend(core.params());
            values.push(&self.received_at_us[i]);
            wait(writer.as_mut().write(&values))?;
        }
        wait(writer.as_mut().finish())?;
        Ok(wait(tx.execute(
            concat!(
                "INSERT INTO records (device, frame, source, ",
                core_columns!(),
                ", received_at_us) SELECT device, frame, source, ",
                core_columns!(),
                ", received_at_us FROM svoi_stage_records
                 ORDER BY device, event_time, record_index
                 ON CONFLICT (device, event_time, record_index) DO NOTHING"
            ),
            &[],
        ))?)
    }

    /// Inserts into `current_states`.
    fn insert_current(
        &self,
        tx: &Transaction<'_>,
        cache: &mut Prepared,
    ) -> Result<u64, StoreError> {
        if self.core.len() == 0 {
            return Ok(0);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&self.device, &self.frame, &self.received_at_us];
        params.extend(self.core.params());
        exec(tx, cache, INSERT_CURRENT, &params)
    }

    /// Inserts into `ext_records`; returns the number inserted.
    fn insert_ext(&self, tx: &Transaction<'_>, cache: &mut Prepared) -> Result<u64, StoreError> {
        if self.core.len() == 0 {
            return Ok(0);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&self.device, &self.frame, &self.received_at_us];
        params.extend(self.core.params());
        params.push(&self.event_index);
        params.push(&self.struct_version);
        exec(tx, cache, INSERT_EXT, &params)
    }
}

/// Alarm events as arrays, in key order.
#[derive(Default)]
struct Alarms {
    device: Vec<i64>,
    event_index: Vec<i64>,
    record_index: Vec<Option<i64>>,
    event_time: Vec<Option<i64>>,
    event_code: Vec<Option<i32>>,
    latitude: Vec<Option<f64>>,
    longitude: Vec<Option<f64>>,
    frame: Vec<i64>,
    received_at_us: Vec<i64>,
}

/// One alarm event waiting to be sent, its key first.
type PendingAlarm<'a> = ((i64, i64, Option<i64>), i64, i64, &'a RecordRow);

impl Alarms {
    fn from_pending(mut pending: Vec<PendingAlarm<'_>>) -> Alarms {
        pending.sort_by_key(|p| p.0);
        let mut a = Alarms::default();
        for ((device, event_index, event_time), frame, at, row) in pending {
            a.device.push(device);
            a.event_index.push(event_index);
            a.record_index.push(row.record_index.map(i64::from));
            a.event_time.push(event_time);
            a.event_code.push(row.event_code.map(i32::from));
            a.latitude.push(real(row.latitude));
            a.longitude.push(real(row.longitude));
            a.frame.push(frame);
            a.received_at_us.push(at);
        }
        a
    }

    fn insert(&self, tx: &Transaction<'_>, cache: &mut Prepared) -> Result<u64, StoreError> {
        if self.device.is_empty() {
            return Ok(0);
        }
        exec(
            tx,
            cache,
            INSERT_ALARMS,
            &[
                &self.device,
                &self.event_index,
                &self.record_index,
                &self.event_time,
                &self.event_code,
                &self.latitude,
                &self.longitude,
                &self.frame,
                &self.received_at_us,
            ],
        )
    }
}

/// The ids of `imeis` (inserting the new ones, first and last seen at the time given), into
/// the cache. One statement for the inserts and one for the look-up, whatever the count.
pub(crate) fn resolve_devices(
    tx: &Transaction<'_>,
    prepared_cache: &mut Prepared,
    cache: &mut HashMap<Arc<str>, i64>,
    imeis: &BTreeMap<Arc<str>, i64>,
) -> Result<(), StoreError> {
    let missing: Vec<(&str, i64)> = imeis
        .iter()
        .filter(|(imei, _)| !cache.contains_key(&***imei))
        .map(|(imei, &at)| (&**imei, at))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let seen: Vec<i64> = missing.iter().map(|m| m.1).collect();
    exec(tx, prepared_cache, INSERT_DEVICES, &[&names, &seen])?;
    let stmt = prepared(tx, prepared_cache, SELECT_DEVICES)?;
    for row in wait(tx.query(&stmt, &[&names]))? {
        let imei: &str = row.get(0);
        let id: i64 = row.get(1);
        if let Some((key, _)) = imeis.get_key_value(imei) {
            cache.insert(Arc::clone(key), id);
        }
    }
    Ok(())
}

/// The cached id of a device [`resolve_devices`] saw.
fn device_id(cache: &HashMap<Arc<str>, i64>, imei: &str) -> Result<i64, StoreError> {
    cache
        .get(imei)
        .copied()
        .ok_or_else(|| StoreError::Corrupt(format!("device {imei} vanished during the commit")))
}

/// The `layouts.id` of `key`, inserting the layout when new.
fn resolve_layout(
    tx: &Transaction<'_>,
    cache: &mut HashMap<Arc<LayoutKey>, i64>,
    key: &Arc<LayoutKey>,
) -> Result<i64, StoreError> {
    if let Some(&id) = cache.get(&**key) {
        return Ok(id);
    }
    let params: [&(dyn ToSql + Sync); 4] = [
        &i32::from(key.protocol_version),
        &i32::from(key.struct_version),
        &i32::from(key.data_size),
        &key.mask,
    ];
    wait(tx.execute(
        "INSERT INTO layouts (protocol_version, struct_version, data_size, mask)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &params,
    ))?;
    let row = wait(tx.query_one(
        "SELECT id FROM layouts WHERE protocol_version = $1 AND struct_version = $2
         AND data_size = $3 AND mask = $4",
        &params,
    ))?;
    let id: i64 = row.get(0);
    cache.insert(Arc::clone(key), id);
    Ok(id)
}

/// Applies what a handshake or negotiation frame received at `at_us` says about the device.
fn apply_device_update(
    tx: &Transaction<'_>,
    device: i64,
    update: &DeviceUpdate,
    at_us: i64,
) -> Result<(), StoreError> {
    wait(tx.execute(
        "UPDATE devices SET device_id = $2 WHERE id = $1",
        &[&device, &i64::from(update.device_id)],
    ))?;
    let fields = update.fields_json();
    if let Some(layout) = &update.layout {
        wait(tx.execute(
            "UPDATE devices SET protocol_version = $2, struct_version = $3, data_size = $4,
             mask = $5, fields = $6, negotiated_at_us = $7 WHERE id = $1",
            &[
                &device,
                &i32::from(layout.protocol_version),
                &i32::from(layout.struct_version),
                &i32::from(layout.data_size),
                &layout.mask,
                &fields,
                &at_us,
            ],
        ))?;
    } else if let Some(fields) = fields {
        wait(tx.execute(
            "UPDATE devices SET fields = $2 WHERE id = $1",
            &[&device, &fields],
        ))?;
    }
    Ok(())
}

/// The body of a commit, inside its transaction.
pub(crate) fn write_batch(
    tx: &Transaction<'_>,
    caches: &mut Caches<'_>,
    frames: &[FrameRow],
) -> Result<CommitStats, StoreError> {
    let mut stats = CommitStats::default();
    if frames.is_empty() {
        return Ok(stats);
    }
    let cache = &mut *caches.prepared;

    // Devices: first and last receive time of each in this batch.
    let mut seen: BTreeMap<Arc<str>, (i64, i64)> = BTreeMap::new();
    for frame in frames {
        if let Some(imei) = &frame.imei {
            let at = frame.received_at_us;
            let e = seen.entry(Arc::clone(imei)).or_insert((at, at));
            e.0 = e.0.min(at);
            e.1 = e.1.max(at);
        }
    }
    let first_seen: BTreeMap<Arc<str>, i64> =
        seen.iter().map(|(k, v)| (Arc::clone(k), v.0)).collect();
    resolve_devices(tx, cache, caches.devices, &first_seen)?;

    // Frame ids, one round trip for the batch.
    let count = i32::try_from(frames.len())
        .map_err(|_| StoreError::Invalid(format!("{} frames in one batch", frames.len())))?;
    let stmt = prepared(tx, cache, NEXT_FRAME_IDS)?;
    let ids: Vec<i64> = wait(tx.query(&stmt, &[&count]))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if ids.len() != frames.len() {
        return Err(StoreError::Corrupt(format!(
            "asked for {} frame ids, got {}",
            frames.len(),
            ids.len()
        )));
    }

    let mut f_device = Vec::with_capacity(frames.len());
    let mut f_conn = Vec::with_capacity(frames.len());
    let mut f_at = Vec::with_capacity(frames.len());
    let mut f_kind = Vec::with_capacity(frames.len());
    let mut f_status = Vec::with_capacity(frames.len());
    let mut f_reason = Vec::with_capacity(frames.len());
    let mut f_error = Vec::with_capacity(frames.len());
    let mut f_bytes = Vec::with_capacity(frames.len());
    let mut f_layout = Vec::with_capacity(frames.len());
    let mut e_frame = Vec::new();
    let mut e_device = Vec::new();
    let mut e_at = Vec::new();
    let mut e_reason = Vec::new();
    let mut e_error = Vec::new();
    let mut records = Vec::new();
    let mut current = Vec::new();
    let mut ext = Vec::new();
    let mut alarms = Vec::new();

    for (frame, &frame_id) in frames.iter().zip(&ids) {
        let at = frame.received_at_us;
        let device = match &frame.imei {
            Some(imei) => Some(device_id(caches.devices, imei)?),
            None => None,
        };
        if let (Some(id), Some(update)) = (device, &frame.device) {
            apply_device_update(tx, id, update, at)?;
        }
        let layout = match &frame.layout {
            Some(key) => Some(resolve_layout(tx, caches.layouts, key)?),
            None => None,
        };
        let conn_id = i64::try_from(frame.conn_id).map_err(|_| {
            StoreError::Invalid(format!("connection id {} out of range", frame.conn_id))
        })?;
        f_device.push(device);
        f_conn.push(conn_id);
        f_at.push(at);
        f_kind.push(&*frame.kind);
        f_status.push(frame.status.as_str());
        f_reason.push(frame.error_reason);
        f_error.push(frame.error.as_deref());
        f_bytes.push(frame.bytes.as_slice());
        f_layout.push(layout);
        stats.frames += 1;
        if frame.status != FrameStatus::Ok {
            e_frame.push(frame_id);
            e_device.push(device);
            e_at.push(at);
            e_reason.push(frame.error_reason);
            e_error.push(frame.error.as_deref());
            stats.decode_errors += 1;
        }
        if frame.records.is_empty() && frame.ext_records.is_empty() {
            continue;
        }
        let Some(device) = device else {
            return Err(StoreError::Invalid(format!(
                "frame seq {} carries records but no imei",
                frame.seq
            )));
        };
        for record in &frame.records {
            let row = &record.row;
            let key = (device, row.event_time, row.record_index.map(i64::from));
            match record.kind {
                RecordKind::Archive | RecordKind::Alarm { .. } => {
                    let source = if let RecordKind::Alarm { event_index } = record.kind {
                        alarms.push((
                            (device, i64::from(event_index), row.event_time),
                            frame_id,
                            at,
                            row,
                        ));
                        "alarm"
                    } else {
                        "archive"
                    };
                    records.push(Pending {
                        key,
                        frame: Some(frame_id),
                        source,
                        received_at_us: at,
                        row,
                        ext: None,
                    });
                }
                RecordKind::Current => current.push(Pending {
                    key,
                    frame: Some(frame_id),
                    source: "",
                    received_at_us: at,
                    row,
                    ext: None,
                }),
            }
        }
        for e in &frame.ext_records {
            ext.push(Pending {
                key: (device, e.row.record_index.map(i64::from), e.row.event_time),
                frame: Some(frame_id),
                source: "",
                received_at_us: at,
                row: &e.row,
                ext: Some(e),
            });
        }
    }

    exec(
        tx,
        cache,
        INSERT_FRAMES,
        &[
            &ids, &f_device, &f_conn, &f_at, &f_kind, &f_status, &f_reason, &f_error, &f_bytes,
            &f_layout,
        ],
    )?;
    if !e_frame.is_empty() {
        exec(
            tx,
            cache,
            INSERT_DECODE_ERRORS,
            &[&e_frame, &e_device, &e_at, &e_reason, &e_error],
        )?;
    }
    let sent = records.len() as u64;
    let records = Rows::from_pending(records);
    let inserted = match caches.records_via {
        crate::RecordsVia::Unnest => records.insert_records(tx, cache)?,
        crate::RecordsVia::Copy => records.copy_records_staged(tx)?,
    };
    stats.records += inserted;
    stats.duplicates += sent - inserted;
    stats.alarms += Alarms::from_pending(alarms).insert(tx, cache)?;
    stats.current += Rows::from_pending(current).insert_current(tx, cache)?;
    let sent = ext.len() as u64;
    let inserted = Rows::from_pending(ext).insert_ext(tx, cache)?;
    stats.ext_records += inserted;
    stats.duplicates += sent - inserted;

    let (touch_ids, touch_at): (Vec<i64>, Vec<i64>) = {
        let mut touched: Vec<(i64, i64)> = seen
            .iter()
            .map(|(imei, &(_, last))| Ok((device_id(caches.devices, imei)?, last)))
            .collect::<Result<_, StoreError>>()?;
        touched.sort_unstable();
        touched.into_iter().unzip()
    };
    exec(tx, cache, TOUCH_DEVICES, &[&touch_ids, &touch_at])?;
    Ok(stats)
}

/// The direct insert of the benchmark baseline: `rows` of each device into `records` with one
/// binary `COPY` for the whole set (no deduplication: a repeated key fails the copy). Returns
/// the number of rows copied.
pub(crate) fn copy_records(
    tx: &Transaction<'_>,
    caches: &mut Caches<'_>,
    devices: &[(&str, &[RecordRow])],
    received_at_us: i64,
) -> Result<u64, StoreError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;

    let seen: BTreeMap<Arc<str>, i64> = devices
        .iter()
        .map(|(imei, _)| (Arc::from(*imei), received_at_us))
        .collect();
    resolve_devices(tx, caches.prepared, caches.devices, &seen)?;
    let sink = wait(tx.copy_in(concat!(
        "COPY records (device, source, ",
        core_columns!(),
        ", received_at_us) FROM STDIN (FORMAT binary)"
    )))?;
    let mut types = vec![Type::INT8, Type::TEXT];
    types.extend(CORE_TYPES);
    types.push(Type::INT8);
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for (imei, rows) in devices {
        let device = device_id(caches.devices, imei)?;
        for row in *rows {
            let core = CoreRow::from(row);
            let mut values: Vec<&(dyn ToSql + Sync)> = vec![&device, &"archive"];
            values.extend(core.params());
            values.push(&received_at_us);
            wait(writer.as_mut().write(&values))?;
        }
    }
    let copied = wait(writer.as_mut().finish())?;
    Ok(copied)
}
