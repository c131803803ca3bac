//! `PgReader`: [`crate::Reader`] on PostgreSQL. The same queries as the SQLite reader, with
//! the same rows, order, types and errors, over a pool of connections whose transactions are
//! read-only, each with its statements prepared once.
//!
//! Each paged query comes in two statements, the first page and the pages after a cursor, so
//! that no predicate hinges on a parameter being NULL: the planner (generic plans included)
//! then sees a plain range on the index key, `key >= $2 AND key < $3`, and on later pages the
//! row comparison `(key, id) > ($4, $5)`, which it turns into a bound on the index as well.
//! Partitioned tables (`records`, `raw_frames`) are read as a merge of index scans, one per
//! partition left after pruning, in key order. Parameters are numbered as on SQLite (IMEI,
//! from, to, cursor key, cursor id, limit) and declared with their types, so every variant
//! takes the same six whether or not it uses them.
//!
//! A device list or device detail is one statement (its last position a `LATERAL` lookup, its
//! record count a subquery): one round trip, and one snapshot, so the figures agree.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use super::{connect, migrate, wait};
use crate::pool::Pool;
use crate::reader::{
    check_version, frame_conn_id, frame_status, page_params, parse_fields_of, token_scope,
};
use crate::{
    AlarmEvent, DatabaseSize, DecodeErrorInfo, DeviceDetail, DeviceSummary, PageQuery, PgUrl,
    Position, RawFrameInfo, RecordRow, StoreError, StoreOptions, StoredRecord, TokenRecord,
};

/// A device row with its last position (columns 11 to 14), in the order [`summary`] and
/// [`device`](PgReader::device) read them, then `$extra` columns, over the devices that the
/// subquery `$devices` selects.
macro_rules! device_select {
    ($extra:literal, $devices:literal) => {
        concat!(
            "SELECT d.id, d.imei, d.device_id, d.first_seen_us, d.last_seen_us,
                    d.protocol_version, d.struct_version, d.data_size, d.mask, d.fields,
                    d.negotiated_at_us, p.event_time, p.latitude, p.longitude, p.speed_kmh",
            $extra,
            " FROM (",
            $devices,
            ") d
             LEFT JOIN LATERAL (
                 SELECT r.event_time, r.latitude, r.longitude, r.speed_kmh
                 FROM records r
                 WHERE r.device = d.id AND r.event_time IS NOT NULL AND r.valid
                   AND r.latitude IS NOT NULL AND r.longitude IS NOT NULL
                 ORDER BY r.event_time DESC, r.id DESC
                 LIMIT 1
             ) p ON true
             ORDER BY d.imei"
        )
    };
}

/// A page of a device's records (parameters: see [`page_params`]); `$cursor` is empty on the
/// first page.
macro_rules! records_page {
    ($cursor:literal) => {
        concat!(
            "SELECT r.id, r.source, r.received_at_us, r.record_index, r.event_code,
                    r.event_time, r.fix_time, r.valid, r.satellites, r.latitude, r.longitude,
                    r.altitude_m, r.speed_kmh, r.course, r.odometer_km, r.power_mv,
                    r.battery_mv, r.gsm_level, r.fields
             FROM records r
             WHERE r.device = (SELECT id FROM devices WHERE imei = $1)
               AND r.event_time >= $2 AND r.event_time < $3",
            $cursor,
            " ORDER BY r.event_time, r.id LIMIT $6"
        )
    };
}

/// A page of a device's alarm events.
macro_rules! events_page {
    ($cursor:literal) => {
        concat!(
            "SELECT e.id, e.event_index, e.record_index, e.event_time, e.event_code,
                    e.latitude, e.longitude, e.frame, e.received_at_us
             FROM alarm_events e
             WHERE e.device = (SELECT id FROM devices WHERE imei = $1)
               AND e.event_time >= $2 AND e.event_time < $3",
            $cursor,
            " ORDER BY e.event_time, e.id LIMIT $6"
        )
    };
}

/// A page of raw frames; `$device` is empty for all devices.
macro_rules! raw_frames_page {
    ($device:literal, $cursor:literal) => {
        concat!(
            "SELECT f.id, d.imei, f.conn_id, f.received_at_us, f.kind, f.status,
                    f.error_reason, f.error, f.bytes
             FROM raw_frames f
             LEFT JOIN devices d ON d.id = f.device
             WHERE f.received_at_us >= $2 AND f.received_at_us < $3",
            $device,
            $cursor,
            " ORDER BY f.received_at_us, f.id LIMIT $6"
        )
    };
}

/// A page of decode errors; `$device` is empty for all devices.
macro_rules! decode_errors_page {
    ($device:literal, $cursor:literal) => {
        concat!(
            "SELECT e.id, e.frame, d.imei, e.received_at_us, f.kind, e.reason, e.error
             FROM decode_errors e
             JOIN raw_frames f ON f.id = e.frame
             LEFT JOIN devices d ON d.id = e.device
             WHERE e.received_at_us >= $2 AND e.received_at_us < $3",
            $device,
            $cursor,
            " ORDER BY e.received_at_us, e.id LIMIT $6"
        )
    };
}

/// The first page of devices (parameter 1 is the limit; 2, the IMEI to start after, unused).
const DEVICES_FIRST: &str = device_select!("", "SELECT * FROM devices ORDER BY imei LIMIT $1");

/// A later page of devices: parameter 2 is the last IMEI of the previous page.
const DEVICES_AFTER: &str = device_select!(
    "",
    "SELECT * FROM devices WHERE imei > $2 ORDER BY imei LIMIT $1"
);

/// One device by IMEI, with its record count (column 15, counted on the deduplication key's
/// index).
const DEVICE_BY_IMEI: &str = device_select!(
    ", (SELECT count(*) FROM records c WHERE c.device = d.id)",
    "SELECT * FROM devices WHERE imei = $1"
);

/// The parameter types of the device list queries: limit, IMEI to start after.
const DEVICES_TYPES: &[Type] = &[Type::INT8, Type::TEXT];

/// The parameter types of every page query: IMEI, from, to, cursor key, cursor id, limit.
const PAGE_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
];

/// The two statements of a page query.
struct Page {
    first: &'static str,
    after: &'static str,
}

impl Page {
    /// The statement for `q`'s page.
    fn sql(&self, q: &PageQuery) -> &'static str {
        match q.after {
            None => self.first,
            Some(_) => self.after,
        }
    }
}

const RECORDS: Page = Page {
    first: records_page!(""),
    after: records_page!(" AND (r.event_time, r.id) > ($4, $5)"),
};

const EVENTS: Page = Page {
    first: events_page!(""),
    after: events_page!(" AND (e.event_time, e.id) > ($4, $5)"),
};

const RAW_FRAMES: Page = Page {
    first: raw_frames_page!("", ""),
    after: raw_frames_page!("", " AND (f.received_at_us, f.id) > ($4, $5)"),
};

const RAW_FRAMES_DEVICE: Page = Page {
    first: raw_frames_page!(
        " AND f.device = (SELECT id FROM devices WHERE imei = $1)",
        ""
    ),
    after: raw_frames_page!(
        " AND f.device = (SELECT id FROM devices WHERE imei = $1)",
        " AND (f.received_at_us, f.id) > ($4, $5)"
    ),
};

const DECODE_ERRORS: Page = Page {
    first: decode_errors_page!("", ""),
    after: decode_errors_page!("", " AND (e.received_at_us, e.id) > ($4, $5)"),
};

const DECODE_ERRORS_DEVICE: Page = Page {
    first: decode_errors_page!(
        " AND e.device = (SELECT id FROM devices WHERE imei = $1)",
        ""
    ),
    after: decode_errors_page!(
        " AND e.device = (SELECT id FROM devices WHERE imei = $1)",
        " AND (e.received_at_us, e.id) > ($4, $5)"
    ),
};

/// One token by public id.
const TOKEN_BY_ID: &str = "SELECT id, name, scope, secret_sha256, created_at_us, revoked_at_us
                           FROM api_tokens WHERE id = $1";

/// The liveness query.
const PING: &str = "SELECT max(version) FROM schema_migrations";

/// The size of the database.
const DATABASE_SIZE: &str = "SELECT pg_database_size(current_database())";

/// Whether a device is known.
const DEVICE_EXISTS: &str = "SELECT 1 FROM devices WHERE imei = $1";

/// The PostgreSQL reader. Cheap to clone: the clones share the pool.
#[derive(Debug, Clone)]
pub(crate) struct PgReader {
    shared: Arc<Shared>,
}

/// What the clones of a [`PgReader`] share: where to (re)connect, and the pool.
#[derive(Debug)]
struct Shared {
    url: PgUrl,
    opts: StoreOptions,
    pool: Pool<PgConn>,
}

/// A pooled connection and the statements prepared on it, by SQL text.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgConn {
    /// Connects (see [`connect`]) with read-only transactions by default: the reader's
    /// counterpart of SQLite's `query_only`.
    fn open(url: &PgUrl, opts: &StoreOptions) -> Result<PgConn, StoreError> {
        let client = connect(url, opts)?;
        wait(client.batch_execute("SET default_transaction_read_only = on"))?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }

    /// The statement for `sql` with parameters of `types` (inferred where `types` stops),
    /// prepared on this connection the first time.
    fn statement(&mut self, sql: &'static str, types: &[Type]) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = wait(self.client.prepare_typed(sql, types))?;
        self.statements.insert(sql, stmt.clone());
        Ok(stmt)
    }

    /// Runs the statement for `sql` and returns its rows.
    fn query(
        &mut self,
        sql: &'static str,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql, types)?;
        Ok(wait(self.client.query(&stmt, params))?)
    }

    /// Runs the page statement for `q` with [`page_params`].
    fn page(
        &mut self,
        page: &Page,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<Row>, StoreError> {
        let (imei, from, to, key, id, limit) = page_params(imei, q);
        let limit = i64::from(limit);
        self.query(
            page.sql(q),
            PAGE_TYPES,
            &[&imei, &from, &to, &key, &id, &limit],
        )
    }
}

/// Whether `e` means the connection is gone (so it must be replaced, not reused): the client
/// saw it close, the server reported a connection exception (class 08) or its shutdown or
/// restart (57P01-57P03), or talking to it failed with an I/O error.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

impl PgReader {
    /// [`crate::Reader::open`] on PostgreSQL: the first connection now (it checks the schema),
    /// the others when first needed.
    pub(crate) fn open(
        url: &PgUrl,
        opts: &StoreOptions,
        connections: usize,
    ) -> Result<PgReader, StoreError> {
        let conn = PgConn::open(url, opts)?;
        check_version(migrate::current_version(&conn.client)?)?;
        Ok(PgReader {
            shared: Arc::new(Shared {
                url: url.clone(),
                opts: opts.clone(),
                pool: Pool::new(vec![conn], connections, opts.busy_timeout),
            }),
        })
    }

    /// Runs `read` on a pooled connection. A connection found closed is replaced first; one
    /// that `read` finds broken is dropped, so that the next call reconnects instead of
    /// failing on it again.
    fn with<T>(
        &self,
        read: impl FnOnce(&mut PgConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let shared = &*self.shared;
        let mut lease = shared.pool.lease()?;
        if lease.get().is_some_and(|conn| conn.client.is_closed()) {
            lease.discard();
        }
        let conn = lease.get_or_open(|| PgConn::open(&shared.url, &shared.opts))?;
        let result = read(conn);
        let broken = match &result {
            Err(StoreError::Postgres(e)) => connection_lost(e) || conn.client.is_closed(),
            _ => false,
        };
        if broken {
            lease.discard();
        }
        result
    }

    /// Runs `read` on a pooled connection's client (the operations queries, `crate::ops`).
    pub(crate) fn with_client<T>(
        &self,
        read: impl FnOnce(&Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|conn| read(&conn.client))
    }

    /// [`crate::Reader::ping`].
    pub(crate) fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query(PING, &[], &[])?;
            Ok(())
        })
    }

    /// [`crate::Reader::database_size`]: `pg_database_size`, no log of its own.
    pub(crate) fn database_size(&self) -> Result<DatabaseSize, StoreError> {
        self.with(|conn| {
            let rows = conn.query(DATABASE_SIZE, &[], &[])?;
            let bytes: Option<i64> = match rows.first() {
                Some(row) => row.try_get(0)?,
                None => None,
            };
            let bytes = bytes.unwrap_or(0);
            let file_bytes = u64::try_from(bytes)
                .map_err(|_| StoreError::Corrupt(format!("database size {bytes}")))?;
            Ok(DatabaseSize {
                file_bytes,
                wal_bytes: 0,
            })
        })
    }

    /// [`crate::Reader::devices`].
    pub(crate) fn devices(
        &self,
        after_imei: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeviceSummary>, StoreError> {
        let sql = match after_imei {
            None => DEVICES_FIRST,
            Some(_) => DEVICES_AFTER,
        };
        let limit = i64::from(limit);
        self.with(|conn| {
            conn.query(sql, DEVICES_TYPES, &[&limit, &after_imei])?
                .iter()
                .map(summary)
                .collect()
        })
    }

    /// [`crate::Reader::device`].
    pub(crate) fn device(&self, imei: &str) -> Result<Option<DeviceDetail>, StoreError> {
        self.with(|conn| {
            let rows = conn.query(DEVICE_BY_IMEI, &[Type::TEXT], &[&imei])?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let records: i64 = row.try_get(15)?;
            let fields: Option<String> = row.try_get(9)?;
            Ok(Some(DeviceDetail {
                protocol_version: narrow(int4(row, 5)?, |v| {
                    device_value(imei, "protocol_version", v)
                })?,
                struct_version: narrow(int4(row, 6)?, |v| device_value(imei, "struct_version", v))?,
                data_size: narrow(int4(row, 7)?, |v| device_value(imei, "data_size", v))?,
                mask: row.try_get(8)?,
                fields: match fields {
                    Some(text) => Some(parse_fields_of(imei, &text)?),
                    None => None,
                },
                negotiated_at_us: row.try_get(10)?,
                // count(*) is never negative.
                records: records.unsigned_abs(),
                summary: summary(row)?,
            }))
        })
    }

    /// [`crate::Reader::device_exists`].
    pub(crate) fn device_exists(&self, imei: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(!conn
                .query(DEVICE_EXISTS, &[Type::TEXT], &[&imei])?
                .is_empty())
        })
    }

    /// [`crate::Reader::records`].
    pub(crate) fn records(
        &self,
        imei: &str,
        q: &PageQuery,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.with(|conn| {
            conn.page(&RECORDS, Some(imei), q)?
                .iter()
                .map(|row| {
                    let id: i64 = row.try_get(0)?;
                    Ok(StoredRecord {
                        id,
                        source: row.try_get(1)?,
                        received_at_us: row.try_get(2)?,
                        row: record_row(row, 3, id)?,
                    })
                })
                .collect()
        })
    }

    /// [`crate::Reader::events`].
    pub(crate) fn events(&self, imei: &str, q: &PageQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        self.with(|conn| {
            conn.page(&EVENTS, Some(imei), q)?
                .iter()
                .map(|row| {
                    let id: i64 = row.try_get(0)?;
                    let what = |column: &str, v: i64| format!("alarm event {id} has {column} {v}");
                    let event_index: i64 = row.try_get(1)?;
                    Ok(AlarmEvent {
                        id,
                        event_index: u32::try_from(event_index)
                            .map_err(|_| StoreError::Corrupt(what("event_index", event_index)))?,
                        record_index: narrow(row.try_get(2)?, |v| what("record_index", v))?,
                        event_time: row.try_get(3)?,
                        event_code: narrow(int4(row, 4)?, |v| what("event_code", v))?,
                        latitude: row.try_get(5)?,
                        longitude: row.try_get(6)?,
                        frame_id: row.try_get(7)?,
                        received_at_us: row.try_get(8)?,
                    })
                })
                .collect()
        })
    }

    /// [`crate::Reader::raw_frames`].
    pub(crate) fn raw_frames(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<RawFrameInfo>, StoreError> {
        let page = match imei {
            None => &RAW_FRAMES,
            Some(_) => &RAW_FRAMES_DEVICE,
        };
        self.with(|conn| {
            conn.page(page, imei, q)?
                .iter()
                .map(|row| {
                    let id: i64 = row.try_get(0)?;
                    let status: String = row.try_get(5)?;
                    Ok(RawFrameInfo {
                        id,
                        imei: row.try_get(1)?,
                        conn_id: frame_conn_id(id, row.try_get(2)?)?,
                        received_at_us: row.try_get(3)?,
                        kind: row.try_get(4)?,
                        status: frame_status(id, &status)?,
                        error_reason: row.try_get(6)?,
                        error: row.try_get(7)?,
                        bytes: row.try_get(8)?,
                    })
                })
                .collect()
        })
    }

    /// [`crate::Reader::decode_errors`].
    pub(crate) fn decode_errors(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<DecodeErrorInfo>, StoreError> {
        let page = match imei {
            None => &DECODE_ERRORS,
            Some(_) => &DECODE_ERRORS_DEVICE,
        };
        self.with(|conn| {
            conn.page(page, imei, q)?
                .iter()
                .map(|row| {
                    Ok(DecodeErrorInfo {
                        id: row.try_get(0)?,
                        frame_id: row.try_get(1)?,
                        imei: row.try_get(2)?,
                        received_at_us: row.try_get(3)?,
                        kind: row.try_get(4)?,
                        reason: row.try_get(5)?,
                        error: row.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    /// [`crate::Reader::token`].
    pub(crate) fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|conn| {
            let rows = conn.query(TOKEN_BY_ID, &[Type::TEXT], &[&id])?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let id: String = row.try_get(0)?;
            let scope: String = row.try_get(2)?;
            Ok(Some(TokenRecord {
                scope: token_scope(&id, &scope)?,
                name: row.try_get(1)?,
                secret_sha256: row.try_get(3)?,
                created_at_us: row.try_get(4)?,
                revoked_at_us: row.try_get(5)?,
                id,
            }))
        })
    }
}

/// An `integer` column, widened.
fn int4(row: &Row, idx: usize) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<_, Option<i32>>(idx)?.map(i64::from))
}

/// A stored integer as the narrower type it was written from; [`StoreError::Corrupt`] with
/// `corrupt(value)` when it does not fit.
fn narrow<T: TryFrom<i64>>(
    value: Option<i64>,
    corrupt: impl FnOnce(i64) -> String,
) -> Result<Option<T>, StoreError> {
    match value {
        None => Ok(None),
        Some(v) => T::try_from(v)
            .map(Some)
            .map_err(|_| StoreError::Corrupt(corrupt(v))),
    }
}

/// What a device row with an out-of-range value is reported as.
fn device_value(imei: &str, column: &str, value: i64) -> String {
    format!("device {imei} has {column} {value}")
}

/// The summary part of a [`device_select!`] row, with its last position.
fn summary(row: &Row) -> Result<DeviceSummary, StoreError> {
    let imei: String = row.try_get(1)?;
    let device_id = narrow(row.try_get(2)?, |v| device_value(&imei, "device_id", v))?;
    let event_time: Option<i64> = row.try_get(11)?;
    let latitude: Option<f64> = row.try_get(12)?;
    let longitude: Option<f64> = row.try_get(13)?;
    let last_position = match (event_time, latitude, longitude) {
        (Some(event_time), Some(latitude), Some(longitude)) => Some(Position {
            event_time,
            latitude,
            longitude,
            speed_kmh: row.try_get(14)?,
        }),
        _ => None,
    };
    Ok(DeviceSummary {
        device_id,
        first_seen_us: row.try_get(3)?,
        last_seen_us: row.try_get(4)?,
        last_position,
        imei,
    })
}

/// The sixteen core columns of record `id` starting at column `first`, in the order of the
/// schema.
fn record_row(row: &Row, first: usize, id: i64) -> Result<RecordRow, StoreError> {
    let what = |column: &str, v: i64| format!("record {id} has {column} {v}");
    Ok(RecordRow {
        record_index: narrow(row.try_get(first)?, |v| what("record_index", v))?,
        event_code: narrow(int4(row, first + 1)?, |v| what("event_code", v))?,
        event_time: row.try_get(first + 2)?,
        fix_time: row.try_get(first + 3)?,
        valid: row.try_get(first + 4)?,
        satellites: narrow(int4(row, first + 5)?, |v| what("satellites", v))?,
        latitude: row.try_get(first + 6)?,
        longitude: row.try_get(first + 7)?,
        altitude_m: row.try_get(first + 8)?,
        speed_kmh: row.try_get(first + 9)?,
        course: narrow(int4(row, first + 10)?, |v| what("course", v))?,
        odometer_km: row.try_get(first + 11)?,
        power_mv: narrow(int4(row, first + 12)?, |v| what("power_mv", v))?,
        battery_mv: narrow(int4(row, first + 13)?, |v| what("battery_mv", v))?,
        gsm_level: narrow(int4(row, first + 14)?, |v| what("gsm_level", v))?,
        fields_json: row.try_get(first + 15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbUrl, Store};

    /// Twenty devices with 4000 records each, half in the current month's partition and half
    /// in the default one (2023), alarm events, raw frames and decode errors; analysed.
    fn filled() -> svoi_testpg::TestDb {
        let db = svoi_testpg::database();
        let url: DbUrl = db.url().parse().unwrap();
        drop(Store::open(&url, &StoreOptions::default()).unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Today's start: in this month's partition or the previous one, which the store made.
        let today = i64::try_from(now).unwrap() / 86_400 * 86_400;
        db.psql(
            "INSERT INTO devices (imei, first_seen_us, last_seen_us)
             SELECT 'imei' || d, 0, 0 FROM generate_series(1, 20) d",
        );
        for base in [1_700_000_000, today - 2_000 * 20] {
            db.psql(&format!(
                "INSERT INTO records (device, frame, source, record_index, event_time, valid,
                                      latitude, longitude, fields, received_at_us)
                 SELECT d, g, 'archive', g + {base}, {base} + g * 20 + d, true, 1, 2, '{{}}', 0
                 FROM generate_series(1, 20) d, generate_series(1, 2000) g"
            ));
        }
        db.psql(
            "INSERT INTO alarm_events (device, event_index, record_index, event_time, frame,
                                       received_at_us)
             SELECT g % 20 + 1, g, g, 1700000000 + g, g, 0 FROM generate_series(1, 40000) g;
             INSERT INTO raw_frames (device, conn_id, received_at_us, kind, status, bytes)
             SELECT g % 20 + 1, 1, 1700000000000000 + g * 1000, '~A', 'ok', '\\x00'
             FROM generate_series(1, 40000) g;
             INSERT INTO decode_errors (frame, device, received_at_us)
             SELECT g, g % 20 + 1, 1700000000000000 + g * 1000 FROM generate_series(1, 40000) g;
             ANALYZE",
        );
        db
    }

    /// The plan of `sql` prepared with the page parameter types, run with `args`, under
    /// `plan_cache_mode` (custom plans see the values; generic ones, what a statement prepared
    /// once gets after a few runs, do not).
    fn plan(db: &svoi_testpg::TestDb, mode: &str, sql: &str, args: &str) -> String {
        db.psql(&format!(
            "SET plan_cache_mode = {mode};
             PREPARE q(text, bigint, bigint, bigint, bigint, bigint) AS {sql};
             EXPLAIN EXECUTE q({args})"
        ))
    }

    /// The counterpart of the SQLite reader's `every_paged_query_seeks_an_index`: every page
    /// query, first and later pages, custom and generic plans, reads its table through the
    /// index on its key, never by a sequential scan, so a page costs the same however much
    /// the table holds. (Records: the deduplication key's index, a merge of one scan per
    /// partition, then an incremental sort of each group of equal event times by id.)
    #[test]
    fn every_paged_query_seeks_an_index_on_every_partition() {
        let db = filled();
        let (min, max) = (i64::MIN, i64::MAX);
        // Each page query, the name its index's name contains, and a cursor key in its data.
        let cases: [(&Page, &str, &str, i64); 6] = [
            (
                &RECORDS,
                "records",
                "_device_event_time_record_index_key",
                1_700_010_000,
            ),
            (
                &EVENTS,
                "alarm_events",
                "alarm_events_device_time",
                1_700_010_000,
            ),
            (
                &RAW_FRAMES,
                "raw_frames",
                "_received_at_us_id_idx",
                1_700_000_010_000_000,
            ),
            (
                &RAW_FRAMES_DEVICE,
                "raw_frames",
                "_device_received_at_us_id_idx",
                1_700_000_010_000_000,
            ),
            (
                &DECODE_ERRORS,
                "decode_errors",
                "decode_errors_received_at",
                1_700_000_010_000_000,
            ),
            (
                &DECODE_ERRORS_DEVICE,
                "decode_errors",
                "decode_errors_device_received_at",
                1_700_000_010_000_000,
            ),
        ];
        for (page, table, index, key) in cases {
            for mode in ["force_custom_plan", "force_generic_plan"] {
                for (sql, args) in [
                    (page.first, format!("'imei7', {min}, {max}, NULL, NULL, 50")),
                    (
                        page.after,
                        format!("'imei7', {key}, {max}, {key}, 12345, 50"),
                    ),
                ] {
                    let plan = plan(&db, mode, sql, &args);
                    let context = format!("{mode}: {sql}\n{plan}");
                    assert!(!plan.contains(&format!("Seq Scan on {table}")), "{context}");
                    assert!(
                        plan.contains(&format!("Index Scan using {table}")),
                        "{context}"
                    );
                    assert!(plan.contains(index), "{context}");
                }
            }
        }
    }
}
