//! `Reader`: the read-only handle the HTTP API queries through, whichever backend the URL
//! names: a small pool of read-only connections ([`crate::pool::Pool`]), each query run on one
//! of them, and the paged (keyset) queries over devices, records, alarm events, raw frames and
//! decode errors. This file has the facade and the SQLite reader; the PostgreSQL one, with the
//! same queries and semantics, is `crate::pg::reader`.
//!
//! Every paged query seeks an index on its key and walks it in order, so a page costs the
//! same however deep it is (see `every_paged_query_seeks_an_index` in the tests for the plans).
//! The methods block; async callers run them in `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::pg::reader::PgReader;
use crate::pool::Pool;
use crate::sqlite::parse_status;
use crate::{
    AlarmEvent, DatabaseSize, DbUrl, DecodeErrorInfo, DeviceDetail, DeviceSummary, FrameStatus,
    PageQuery, Position, RawFrameInfo, RecordRow, StoreError, StoreOptions, StoredRecord,
    TokenRecord, TokenScope, migrate,
};

/// The columns of a device row, in the order [`summary`] and [`detail`] read them.
macro_rules! device_select {
    () => {
        "SELECT id, imei, device_id, first_seen_us, last_seen_us, protocol_version,
                struct_version, data_size, mask, fields, negotiated_at_us
         FROM devices"
    };
}

/// The raw frame page query up to its device filter. Parameter 1 is the IMEI, unreferenced
/// without the filter (SQLite counts parameters up to the highest number used, so both
/// variants take the same six).
macro_rules! raw_frames_select {
    () => {
        "SELECT f.id, d.imei, f.conn_id, f.received_at_us, f.kind, f.status, f.error_reason,
                f.error, f.bytes
         FROM raw_frames f
         LEFT JOIN devices d ON d.id = f.device
         WHERE f.received_at_us >= ?2 AND f.received_at_us < ?3
           AND (?4 IS NULL OR (f.received_at_us, f.id) > (?4, ?5))"
    };
}

/// The order and limit of the raw frame page query.
macro_rules! raw_frames_tail {
    () => {
        " ORDER BY f.received_at_us, f.id LIMIT ?6"
    };
}

/// The decode error page query up to its device filter (parameters as for raw frames).
macro_rules! decode_errors_select {
    () => {
        "SELECT e.id, e.frame, d.imei, e.received_at_us, f.kind, e.reason, e.error
         FROM decode_errors e
         JOIN raw_frames f ON f.id = e.frame
         LEFT JOIN devices d ON d.id = e.device
         WHERE e.received_at_us >= ?2 AND e.received_at_us < ?3
           AND (?4 IS NULL OR (e.received_at_us, e.id) > (?4, ?5))"
    };
}

/// The order and limit of the decode error page query.
macro_rules! decode_errors_tail {
    () => {
        " ORDER BY e.received_at_us, e.id LIMIT ?6"
    };
}

/// The columns of a token row, in the order [`token_record`] reads them.
macro_rules! token_select {
    () => {
        "SELECT id, name, scope, secret_sha256, created_at_us, revoked_at_us FROM api_tokens"
    };
}
pub(crate) use token_select;

/// The first page of devices (parameter 1 is the limit).
const DEVICES_FIRST: &str = concat!(device_select!(), " ORDER BY imei LIMIT ?1");

/// A later page of devices: parameter 2 is the last IMEI of the previous page.
const DEVICES_AFTER: &str = concat!(device_select!(), " WHERE imei > ?2 ORDER BY imei LIMIT ?1");

/// One device by IMEI.
const DEVICE_BY_IMEI: &str = concat!(device_select!(), " WHERE imei = ?1");

/// The number of records of a device (counted on the deduplication key's index).
const RECORD_COUNT: &str = "SELECT count(*) FROM records WHERE device = ?1";

/// The newest valid fix of a device: walks the (device, event_time, ...) index backwards.
const LAST_POSITION: &str = "
    SELECT event_time, latitude, longitude, speed_kmh
    FROM records
    WHERE device = ?1 AND event_time IS NOT NULL AND valid = 1
      AND latitude IS NOT NULL AND longitude IS NOT NULL
    ORDER BY event_time DESC, id DESC
    LIMIT 1";

/// A page of a device's records (parameters: see [`page_params`]).
const RECORDS_PAGE: &str = "
    SELECT r.id, r.source, r.received_at_us, r.record_index, r.event_code, r.event_time,
           r.fix_time, r.valid, r.satellites, r.latitude, r.longitude, r.altitude_m,
           r.speed_kmh, r.course, r.odometer_km, r.power_mv, r.battery_mv, r.gsm_level, r.fields
    FROM records r
    WHERE r.device = (SELECT id FROM devices WHERE imei = ?1)
      AND r.event_time >= ?2 AND r.event_time < ?3
      AND (?4 IS NULL OR (r.event_time, r.id) > (?4, ?5))
    ORDER BY r.event_time, r.id
    LIMIT ?6";

/// A page of a device's alarm events (parameters: see [`page_params`]).
const EVENTS_PAGE: &str = "
    SELECT e.id, e.event_index, e.record_index, e.event_time, e.event_code, e.latitude,
           e.longitude, e.frame, e.received_at_us
    FROM alarm_events e
    WHERE e.device = (SELECT id FROM devices WHERE imei = ?1)
      AND e.event_time >= ?2 AND e.event_time < ?3
      AND (?4 IS NULL OR (e.event_time, e.id) > (?4, ?5))
    ORDER BY e.event_time, e.id
    LIMIT ?6";

/// A page of raw frames of all devices (parameters: see [`page_params`]).
const RAW_FRAMES_PAGE: &str = concat!(raw_frames_select!(), raw_frames_tail!());

/// A page of one device's raw frames.
const RAW_FRAMES_DEVICE_PAGE: &str = concat!(
    raw_frames_select!(),
    " AND f.device = (SELECT id FROM devices WHERE imei = ?1)",
    raw_frames_tail!()
);

/// A page of decode errors of all devices (parameters: see [`page_params`]).
const DECODE_ERRORS_PAGE: &str = concat!(decode_errors_select!(), decode_errors_tail!());

/// A page of one device's decode errors.
const DECODE_ERRORS_DEVICE_PAGE: &str = concat!(
    decode_errors_select!(),
    " AND e.device = (SELECT id FROM devices WHERE imei = ?1)",
    decode_errors_tail!()
);

/// One token by public id.
const TOKEN_BY_ID: &str = concat!(token_select!(), " WHERE id = ?1");

/// A read-only handle on an existing, migrated database: a pool of read-only connections.
/// Cheap to clone (the pool is shared) and `Send + Sync`. Each call takes a connection from
/// the pool, waiting for one when all are in use (at most the options' busy timeout, then
/// [`StoreError::ReadersBusy`]), and starts a fresh read, so it sees every transaction
/// committed before it began (also those of a [`crate::Store`] in another process or on
/// another server). A call whose answer takes several lookups (a device list with last
/// positions, a device with its record count) reads one snapshot, so its figures agree: one
/// read transaction on SQLite, one statement on PostgreSQL.
///
/// Both backends return the same rows in the same order with the same types and errors. On
/// SQLite every connection is opened by [`Reader::open`]. On PostgreSQL the first one is, the
/// others when first needed; a connection the server closed (restart, failover, an
/// administrator terminating it) is replaced on its next use, so a query on it fails at most
/// once, with a retryable error, and the next one reconnects. A failed reconnect is a
/// retryable error too, and the next call tries again.
#[derive(Debug, Clone)]
pub struct Reader {
    backend: Backend,
}

/// The reader of each backend.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqliteReader),
    Postgres(PgReader),
}

impl Reader {
    /// Opens a reader with a pool of `connections` (>= 1, else [`StoreError::Invalid`])
    /// connections on an existing, migrated database. Refuses a database whose schema version
    /// is not [`crate::latest_schema_version`]: [`StoreError::SchemaMismatch`] when it is
    /// older (a reader cannot migrate; 0 for a database never migrated),
    /// [`StoreError::SchemaTooNew`] when newer.
    ///
    /// SQLite: opens every connection read-only (SQLITE_OPEN_READ_ONLY, busy timeout from
    /// `opts`, PRAGMA query_only); [`StoreError::File`] when the file does not exist (it is
    /// never created). PostgreSQL: opens the first connection (connect and statement timeouts
    /// from `opts.postgres`; its transactions are read-only by default) to check the schema;
    /// an unreachable server is a retryable [`StoreError::Postgres`].
    pub fn open(
        url: &DbUrl,
        opts: &StoreOptions,
        connections: usize,
    ) -> Result<Reader, StoreError> {
        if connections == 0 {
            return Err(StoreError::Invalid(
                "a reader needs at least one connection".to_owned(),
            ));
        }
        let backend = match url {
            DbUrl::Sqlite(path) => Backend::Sqlite(SqliteReader::open(path, opts, connections)?),
            DbUrl::Postgres(url) => Backend::Postgres(PgReader::open(url, opts, connections)?),
        };
        Ok(Reader { backend })
    }

    /// Cheap liveness query (`SELECT max(version) FROM schema_migrations`) on a pooled
    /// connection.
    pub fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.ping(),
            Backend::Postgres(r) => r.ping(),
        }
    }

    /// The space the database takes. SQLite: bytes on disk of the database file and of its
    /// write-ahead log (0 when there is none). PostgreSQL: `file_bytes` is
    /// `pg_database_size(current_database())` (every table, index and partition of the
    /// database, on the server's disk) and `wal_bytes` is 0, the server's write-ahead log
    /// being shared by all its databases.
    pub fn database_size(&self) -> Result<DatabaseSize, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.database_size(),
            Backend::Postgres(r) => r.database_size(),
        }
    }

    /// Devices ordered by IMEI, strictly after `after_imei`, at most `limit`, each with its
    /// last position (see [`DeviceSummary::last_position`]). PostgreSQL compares IMEIs in the
    /// database's collation (IMEIs are digits, which every collation orders alike).
    pub fn devices(
        &self,
        after_imei: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeviceSummary>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.devices(after_imei, limit),
            Backend::Postgres(r) => r.devices(after_imei, limit),
        }
    }

    /// The device with this IMEI, with its negotiated layout and record count; `None` when
    /// the IMEI is unknown. A stored field list that is not a JSON array of field numbers is
    /// [`StoreError::Corrupt`].
    pub fn device(&self, imei: &str) -> Result<Option<DeviceDetail>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.device(imei),
            Backend::Postgres(r) => r.device(imei),
        }
    }

    /// Whether a device with this IMEI is known: one index lookup, unlike [`Reader::device`],
    /// which also counts the device's records.
    pub fn device_exists(&self, imei: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.device_exists(imei),
            Backend::Postgres(r) => r.device_exists(imei),
        }
    }

    /// The device's records with event_time in [q.from, q.to), ordered by (event_time, id),
    /// strictly after q.after. Records with NULL event_time are never returned. Unknown
    /// IMEI -> empty.
    pub fn records(&self, imei: &str, q: &PageQuery) -> Result<Vec<StoredRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.records(imei, q),
            Backend::Postgres(r) => r.records(imei, q),
        }
    }

    /// Same for alarm_events (key = event_time): the device's events with event_time in
    /// [q.from, q.to), ordered by (event_time, id), strictly after q.after. Events with NULL
    /// event_time are never returned. Unknown IMEI -> empty.
    pub fn events(&self, imei: &str, q: &PageQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.events(imei, q),
            Backend::Postgres(r) => r.events(imei, q),
        }
    }

    /// raw_frames with received_at_us in [q.from, q.to), optional device filter, ordered by
    /// (received_at_us, id), strictly after q.after; an unknown IMEI gives an empty page.
    pub fn raw_frames(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<RawFrameInfo>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.raw_frames(imei, q),
            Backend::Postgres(r) => r.raw_frames(imei, q),
        }
    }

    /// decode_errors likewise (key = received_at_us), optional device filter: received_at_us
    /// in [q.from, q.to), ordered by (received_at_us, id), strictly after q.after.
    pub fn decode_errors(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<DecodeErrorInfo>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.decode_errors(imei, q),
            Backend::Postgres(r) => r.decode_errors(imei, q),
        }
    }

    /// The token with this public id (revoked ones included; caller checks revoked_at_us).
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.token(id),
            Backend::Postgres(r) => r.token(id),
        }
    }
}

impl Reader {
    /// Runs an operations query (`crate::ops`) on a pooled connection: `sqlite` or `pg`,
    /// whichever backend this reader is on.
    pub(crate) fn with_ops<T>(
        &self,
        sqlite: impl FnOnce(&Connection) -> Result<T, StoreError>,
        pg: impl FnOnce(&tokio_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.with(|conn| sqlite(conn)),
            Backend::Postgres(r) => r.with_client(pg),
        }
    }
}

/// The SQLite reader: read-only connections on the database file.
#[derive(Debug, Clone)]
struct SqliteReader {
    shared: Arc<SqliteShared>,
}

/// What the clones of a [`SqliteReader`] share.
#[derive(Debug)]
struct SqliteShared {
    path: PathBuf,
    busy_timeout: Duration,
    pool: Pool<Connection>,
}

/// Statements per connection: the queries below with their variants come to about twenty.
const STATEMENT_CACHE: usize = 32;

/// Opens one read-only connection on the database at `path`.
fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteReader {
    /// [`Reader::open`] on SQLite: every connection opened now.
    fn open(
        path: &Path,
        opts: &StoreOptions,
        connections: usize,
    ) -> Result<SqliteReader, StoreError> {
        // Checked first: SQLite's own error for a missing file does not name it.
        std::fs::metadata(path).map_err(|source| StoreError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let mut idle = Vec::with_capacity(connections);
        for _ in 0..connections {
            let conn = open_connection(path, opts.busy_timeout)?;
            if idle.is_empty() {
                check_version(migrate::current_version(&conn)?)?;
            }
            idle.push(conn);
        }
        Ok(SqliteReader {
            shared: Arc::new(SqliteShared {
                path: path.to_path_buf(),
                busy_timeout: opts.busy_timeout,
                pool: Pool::new(idle, connections, opts.busy_timeout),
            }),
        })
    }

    /// Runs `read` on a pooled connection (reopened should its slot be empty, which a SQLite
    /// reader never leaves it).
    fn with<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let shared = &*self.shared;
        let mut lease = shared.pool.lease()?;
        let conn = lease.get_or_open(|| open_connection(&shared.path, shared.busy_timeout))?;
        read(conn)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT max(version) FROM schema_migrations")?
                .query_row([], |row| row.get::<_, Option<i64>>(0))?;
            Ok(())
        })
    }

    fn database_size(&self) -> Result<DatabaseSize, StoreError> {
        let path = &self.shared.path;
        let file_bytes = file_len(path)?.unwrap_or(0);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = file_len(Path::new(&wal))?.unwrap_or(0);
        Ok(DatabaseSize {
            file_bytes,
            wal_bytes,
        })
    }

    fn devices(
        &self,
        after_imei: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeviceSummary>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut devices = Vec::new();
            {
                let mut stmt = match after_imei {
                    None => tx.prepare_cached(DEVICES_FIRST)?,
                    Some(_) => tx.prepare_cached(DEVICES_AFTER)?,
                };
                let mut rows = match after_imei {
                    None => stmt.query((limit,))?,
                    Some(after) => stmt.query((limit, after))?,
                };
                while let Some(row) = rows.next()? {
                    let id: i64 = row.get(0)?;
                    devices.push((id, summary(row)?));
                }
            }
            let mut summaries = Vec::with_capacity(devices.len());
            for (id, mut summary) in devices {
                summary.last_position = last_position(&tx, id)?;
                summaries.push(summary);
            }
            Ok(summaries)
        })
    }

    fn device(&self, imei: &str) -> Result<Option<DeviceDetail>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let found = tx
                .prepare_cached(DEVICE_BY_IMEI)?
                .query_row([imei], |row| {
                    let fields: Option<String> = row.get(9)?;
                    Ok((row.get::<_, i64>(0)?, detail(row)?, fields))
                })
                .optional()?;
            let Some((id, mut detail, fields)) = found else {
                return Ok(None);
            };
            detail.summary.last_position = last_position(&tx, id)?;
            detail.fields = match fields {
                Some(text) => Some(parse_fields_of(imei, &text)?),
                None => None,
            };
            let records: i64 = tx
                .prepare_cached(RECORD_COUNT)?
                .query_row([id], |row| row.get(0))?;
            // count(*) is never negative.
            detail.records = records.unsigned_abs();
            Ok(Some(detail))
        })
    }

    fn device_exists(&self, imei: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let found = conn
                .prepare_cached("SELECT 1 FROM devices WHERE imei = ?1")?
                .query_row([imei], |_| Ok(()))
                .optional()?;
            Ok(found.is_some())
        })
    }

    fn records(&self, imei: &str, q: &PageQuery) -> Result<Vec<StoredRecord>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(RECORDS_PAGE)?;
            let mut rows = stmt.query(page_params(Some(imei), q))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(StoredRecord {
                    id: row.get(0)?,
                    source: row.get(1)?,
                    received_at_us: row.get(2)?,
                    row: record_row(row, 3)?,
                });
            }
            Ok(out)
        })
    }

    fn events(&self, imei: &str, q: &PageQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(EVENTS_PAGE)?;
            let mut rows = stmt.query(page_params(Some(imei), q))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(AlarmEvent {
                    id: row.get(0)?,
                    event_index: row.get(1)?,
                    record_index: row.get(2)?,
                    event_time: row.get(3)?,
                    event_code: row.get(4)?,
                    latitude: row.get(5)?,
                    longitude: row.get(6)?,
                    frame_id: row.get(7)?,
                    received_at_us: row.get(8)?,
                });
            }
            Ok(out)
        })
    }

    fn raw_frames(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<RawFrameInfo>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(match imei {
                None => RAW_FRAMES_PAGE,
                Some(_) => RAW_FRAMES_DEVICE_PAGE,
            })?;
            let mut rows = stmt.query(page_params(imei, q))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let status: String = row.get(5)?;
                out.push(RawFrameInfo {
                    id,
                    imei: row.get(1)?,
                    conn_id: frame_conn_id(id, row.get(2)?)?,
                    received_at_us: row.get(3)?,
                    kind: row.get(4)?,
                    status: frame_status(id, &status)?,
                    error_reason: row.get(6)?,
                    error: row.get(7)?,
                    bytes: row.get(8)?,
                });
            }
            Ok(out)
        })
    }

    fn decode_errors(
        &self,
        imei: Option<&str>,
        q: &PageQuery,
    ) -> Result<Vec<DecodeErrorInfo>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(match imei {
                None => DECODE_ERRORS_PAGE,
                Some(_) => DECODE_ERRORS_DEVICE_PAGE,
            })?;
            let mut rows = stmt.query(page_params(imei, q))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(DecodeErrorInfo {
                    id: row.get(0)?,
                    frame_id: row.get(1)?,
                    imei: row.get(2)?,
                    received_at_us: row.get(3)?,
                    kind: row.get(4)?,
                    reason: row.get(5)?,
                    error: row.get(6)?,
                });
            }
            Ok(out)
        })
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(TOKEN_BY_ID)?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(row) => Ok(Some(token_record(row)?)),
                None => Ok(None),
            }
        })
    }
}

/// The parameters of a page query: IMEI (may be unused), lower bound, upper bound, cursor key
/// and id (NULL for the first page), limit.
///
/// The lower bound is raised to the cursor's key, so that the index seek starts at the cursor
/// rather than at `from` and a deep page costs what the first one does; the row-value
/// predicate then only drops the rows of the cursor's key up to its id.
pub(crate) fn page_params<'a>(
    imei: Option<&'a str>,
    q: &PageQuery,
) -> (Option<&'a str>, i64, i64, Option<i64>, Option<i64>, u32) {
    let from = match q.after {
        Some(after) => q.from.max(after.key),
        None => q.from,
    };
    (
        imei,
        from,
        q.to,
        q.after.map(|c| c.key),
        q.after.map(|c| c.id),
        q.limit,
    )
}

/// Refuses a database this build cannot read, given its schema version: older (not
/// migrated) or newer.
pub(crate) fn check_version(found: u32) -> Result<(), StoreError> {
    let known = migrate::latest_version();
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if found < known {
        return Err(StoreError::SchemaMismatch { found, known });
    }
    Ok(())
}

/// A stored `raw_frames.conn_id` as the connection id it was written from.
pub(crate) fn frame_conn_id(id: i64, conn_id: i64) -> Result<u64, StoreError> {
    u64::try_from(conn_id)
        .map_err(|_| StoreError::Corrupt(format!("raw frame {id} has conn_id {conn_id}")))
}

/// A stored `raw_frames.status`.
pub(crate) fn frame_status(id: i64, status: &str) -> Result<FrameStatus, StoreError> {
    parse_status(status)
        .ok_or_else(|| StoreError::Corrupt(format!("raw frame {id} has status {status:?}")))
}

/// A stored `api_tokens.scope`.
pub(crate) fn token_scope(id: &str, scope: &str) -> Result<TokenScope, StoreError> {
    scope
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("token {id:?} has scope {scope:?}")))
}

/// A device's stored field list (`devices.fields`), parsed.
pub(crate) fn parse_fields_of(imei: &str, text: &str) -> Result<Vec<u8>, StoreError> {
    parse_fields(text)
        .ok_or_else(|| StoreError::Corrupt(format!("device {imei} has field list {text:?}")))
}

/// The length of the file at `path`, `None` if there is none.
fn file_len(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The summary part of a [`device_select!`] row, without its position.
fn summary(row: &Row<'_>) -> rusqlite::Result<DeviceSummary> {
    Ok(DeviceSummary {
        imei: row.get(1)?,
        device_id: row.get(2)?,
        first_seen_us: row.get(3)?,
        last_seen_us: row.get(4)?,
        last_position: None,
    })
}

/// A [`device_select!`] row as a detail, without position, field list and record count.
fn detail(row: &Row<'_>) -> rusqlite::Result<DeviceDetail> {
    Ok(DeviceDetail {
        summary: summary(row)?,
        protocol_version: row.get(5)?,
        struct_version: row.get(6)?,
        data_size: row.get(7)?,
        mask: row.get(8)?,
        fields: None,
        negotiated_at_us: row.get(10)?,
        records: 0,
    })
}

/// The newest valid fix of `device`: the record with the greatest event time (then id) whose
/// fix is valid and has both coordinates. Walks the (device, event_time) index backwards.
fn last_position(conn: &Connection, device: i64) -> Result<Option<Position>, StoreError> {
    Ok(conn
        .prepare_cached(LAST_POSITION)?
        .query_row([device], |row| {
            Ok(Position {
                event_time: row.get(0)?,
                latitude: row.get(1)?,
                longitude: row.get(2)?,
                speed_kmh: row.get(3)?,
            })
        })
        .optional()?)
}

/// The sixteen core columns starting at column `first`, in the order of the schema.
fn record_row(row: &Row<'_>, first: usize) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        record_index: row.get(first)?,
        event_code: row.get(first + 1)?,
        event_time: row.get(first + 2)?,
        fix_time: row.get(first + 3)?,
        valid: row.get(first + 4)?,
        satellites: row.get(first + 5)?,
        latitude: row.get(first + 6)?,
        longitude: row.get(first + 7)?,
        altitude_m: row.get(first + 8)?,
        speed_kmh: row.get(first + 9)?,
        course: row.get(first + 10)?,
        odometer_km: row.get(first + 11)?,
        power_mv: row.get(first + 12)?,
        battery_mv: row.get(first + 13)?,
        gsm_level: row.get(first + 14)?,
        fields_json: row.get(first + 15)?,
    })
}

/// A [`token_select!`] row.
pub(crate) fn token_record(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    let id: String = row.get(0)?;
    let scope: String = row.get(2)?;
    Ok(TokenRecord {
        scope: token_scope(&id, &scope)?,
        name: row.get(1)?,
        secret_sha256: row.get(3)?,
        created_at_us: row.get(4)?,
        revoked_at_us: row.get(5)?,
        id,
    })
}

/// Parses the stored field list, a JSON array of field numbers as the writer renders it
/// (`[1,2,3]`; whitespace tolerated). `None` if it is anything else.
fn parse_fields(text: &str) -> Option<Vec<u8>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|item| item.trim().parse::<u8>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for `sql` on the migrated schema, one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The plans, recorded: every paged query seeks an index on (device,) key with both
    /// bounds of its range and walks it in key order, so a page never scans what precedes
    /// its cursor and never sorts the whole range.
    ///
    /// The one sort is on records: their only time index is the deduplication key (device,
    /// event_time, record_index), whose ties on event_time are in record_index order, not id
    /// order, so SQLite sorts each group of equal event_time by id ("LAST TERM OF ORDER BY").
    /// That is a handful of rows (records of one device in one second), stops at the limit,
    /// and spares the hottest insert path a second index on records.
    #[test]
    fn every_paged_query_seeks_an_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate::migrate(&mut conn).unwrap();
        let devices = "SEARCH devices USING COVERING INDEX sqlite_autoindex_devices_1 (imei=?)";
        let cases: [(&str, &[&str]); 12] = [
            (
                DEVICES_FIRST,
                &["SCAN devices USING INDEX sqlite_autoindex_devices_1"],
            ),
            (
                DEVICES_AFTER,
                &["SEARCH devices USING INDEX sqlite_autoindex_devices_1 (imei>?)"],
            ),
            (
                DEVICE_BY_IMEI,
                &["SEARCH devices USING INDEX sqlite_autoindex_devices_1 (imei=?)"],
            ),
            (
                RECORD_COUNT,
                &["SEARCH records USING COVERING INDEX sqlite_autoindex_records_1 (device=?)"],
            ),
            (
                LAST_POSITION,
                &[
                    "SEARCH records USING INDEX sqlite_autoindex_records_1 \
                     (device=? AND event_time>?)",
                    "USE TEMP B-TREE FOR LAST TERM OF ORDER BY",
                ],
            ),
            (
                RECORDS_PAGE,
                &[
                    "SEARCH r USING INDEX sqlite_autoindex_records_1 \
                     (device=? AND event_time>? AND event_time<?)",
                    "SCALAR SUBQUERY 1",
                    devices,
                    "USE TEMP B-TREE FOR LAST TERM OF ORDER BY",
                ],
            ),
            (
                EVENTS_PAGE,
                &[
                    "SEARCH e USING INDEX alarm_events_device_time \
                     (device=? AND event_time>? AND event_time<?)",
                    "SCALAR SUBQUERY 1",
                    devices,
                ],
            ),
            (
                RAW_FRAMES_PAGE,
                &[
                    "SEARCH f USING INDEX raw_frames_received_at \
                     (received_at_us>? AND received_at_us<?)",
                    "SEARCH d USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
                ],
            ),
            (
                RAW_FRAMES_DEVICE_PAGE,
                &[
                    "SEARCH f USING INDEX raw_frames_device_received_at \
                     (device=? AND received_at_us>? AND received_at_us<?)",
                    "SCALAR SUBQUERY 1",
                    devices,
                    "SEARCH d USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
                ],
            ),
            (
                DECODE_ERRORS_PAGE,
                &[
                    "SEARCH e USING INDEX decode_errors_received_at \
                     (received_at_us>? AND received_at_us<?)",
                    "SEARCH f USING INTEGER PRIMARY KEY (rowid=?)",
                    "SEARCH d USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
                ],
            ),
            (
                DECODE_ERRORS_DEVICE_PAGE,
                &[
                    "SEARCH e USING INDEX decode_errors_device_received_at \
                     (device=? AND received_at_us>? AND received_at_us<?)",
                    "SCALAR SUBQUERY 1",
                    devices,
                    "SEARCH f USING INTEGER PRIMARY KEY (rowid=?)",
                    "SEARCH d USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
                ],
            ),
            (
                TOKEN_BY_ID,
                &["SEARCH api_tokens USING INDEX sqlite_autoindex_api_tokens_1 (id=?)"],
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(plan(&conn, sql), expected, "{sql}");
        }
    }

    #[test]
    fn page_params_start_the_seek_at_the_cursor() {
        let mut q = PageQuery {
            from: 10,
            to: 100,
            after: None,
            limit: 5,
        };
        assert_eq!(
            page_params(Some("x"), &q),
            (Some("x"), 10, 100, None, None, 5)
        );
        q.after = Some(crate::Cursor { key: 40, id: 7 });
        assert_eq!(page_params(None, &q), (None, 40, 100, Some(40), Some(7), 5));
        // A cursor before the range (the caller changed `from`) does not widen it.
        q.after = Some(crate::Cursor { key: 3, id: 7 });
        assert_eq!(page_params(None, &q), (None, 10, 100, Some(3), Some(7), 5));
    }

    #[test]
    fn parse_fields_reads_what_the_writer_writes() {
        assert_eq!(parse_fields("[]"), Some(vec![]));
        assert_eq!(parse_fields("[1]"), Some(vec![1]));
        assert_eq!(parse_fields("[1,2,255]"), Some(vec![1, 2, 255]));
        assert_eq!(parse_fields(" [ 1 , 2 ] "), Some(vec![1, 2]));
        for bad in ["", "1,2", "[1,]", "[256]", "[-1]", "[a]", "{}", "[1 2]"] {
            assert_eq!(parse_fields(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reader_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone>() {}
        assert_traits::<Reader>();
    }
}
