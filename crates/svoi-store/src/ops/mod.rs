//! What operations keep in the database (schema version 3): the append-only maintenance log,
//! maintenance windows, hourly statistics, and the figures reports, retention and database
//! maintenance work with. The same types on both backends.

pub(crate) mod maintenance;
mod pg;
mod sqlite;

use std::collections::BTreeMap;

use crate::store::Backend;
use crate::{Reader, Store, StoreError};

/// How an operation ended, as the maintenance log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogResult {
    /// Done, nothing needs a person.
    Ok,
    /// Done, but something needs a look (a notification failed, a check warned).
    Warning,
    /// Not done, or done and found a problem.
    Failed,
}

impl LogResult {
    /// `ok`, `warning` or `failed`: the stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            LogResult::Ok => "ok",
            LogResult::Warning => "warning",
            LogResult::Failed => "failed",
        }
    }

    /// The value for stored text; `None` for anything else.
    pub fn parse(text: &str) -> Option<LogResult> {
        match text {
            "ok" => Some(LogResult::Ok),
            "warning" => Some(LogResult::Warning),
            "failed" => Some(LogResult::Failed),
            _ => None,
        }
    }
}

/// A maintenance log entry to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLogEntry {
    /// When the operation started, Unix microseconds.
    pub at_us: i64,
    /// `backup`, `verify`, `restore`, `prune`, `retention`, `optimize`, `window`,
    /// `scheduled`, ...
    pub kind: String,
    /// Who ran it (`SVOI_OPERATOR`, `SUDO_USER`, `USER`).
    pub operator: String,
    /// How long it took.
    pub duration_ms: i64,
    /// How it ended.
    pub result: LogResult,
    /// One line for people.
    pub summary: String,
    /// A JSON object with the particulars (backup id, row counts, what was removed, ...).
    pub details: String,
}

/// A stored maintenance log entry.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Position in the log (ascending with time of writing).
    pub id: i64,
    /// The entry as appended.
    pub entry: NewLogEntry,
}

/// A maintenance window to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWindow {
    /// Unix microseconds.
    pub started_at_us: i64,
    /// When the window is expected to end, Unix microseconds.
    pub planned_end_us: i64,
    /// Why (`--reason`).
    pub reason: String,
    /// Who opened it.
    pub operator: String,
    /// The pre-maintenance backup's ID.
    pub backup_id: Option<String>,
}

/// A maintenance window, open (`ended_at_us` is `None`) or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Row id.
    pub id: i64,
    /// As opened.
    pub window: NewWindow,
    /// The Alertmanager silence created for it.
    pub silence_id: Option<String>,
    /// When it was closed, Unix microseconds.
    pub ended_at_us: Option<i64>,
    /// `ok`, `rolled_back`, `failed`, `aborted`, ...
    pub result: Option<String>,
}

/// What one server saw in one hour (`hourly_stats`).
#[derive(Clone, Debug, PartialEq)]
pub struct HourlyStats {
    /// Start of the hour, Unix seconds (a multiple of 3600).
    pub hour_start: i64,
    /// Which server (host name and device port).
    pub instance: String,
    /// Device messages received.
    pub frames: i64,
    /// Records stored (new, not duplicates).
    pub records: i64,
    /// Records received again and not stored twice.
    pub duplicates: i64,
    /// Messages that failed to decode.
    pub decode_errors: i64,
    /// Acknowledgements sent.
    pub acks: i64,
    /// Acknowledgement latency percentiles over the hour, milliseconds.
    pub ack_p50_ms: Option<f64>,
    /// 95th percentile.
    pub ack_p95_ms: Option<f64>,
    /// 99th percentile.
    pub ack_p99_ms: Option<f64>,
    /// Distinct devices that sent a message in the hour.
    pub devices_active: i64,
    /// Most connections open at once.
    pub connections_max: i64,
    /// Database size when last written, bytes.
    pub db_bytes: Option<i64>,
    /// When the row was last written, Unix microseconds.
    pub updated_at_us: i64,
}

/// What the server exports about operations: the open window and the last backup and
/// verification outcomes (from the maintenance log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpsState {
    /// The open maintenance window.
    pub window: Option<Window>,
    /// End of the last successful backup, Unix microseconds.
    pub last_backup_ok_us: Option<i64>,
    /// End of the last failed backup, Unix microseconds.
    pub last_backup_failed_us: Option<i64>,
    /// End of the last verification, Unix microseconds.
    pub last_verify_us: Option<i64>,
    /// Whether that verification passed.
    pub last_verify_ok: Option<bool>,
}

/// Figures of one UTC day computed from the data itself (not from `hourly_stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DailyFigures {
    /// Midnight UTC starting the day, Unix seconds.
    pub day_start: i64,
    /// Raw frames received that day.
    pub frames: i64,
    /// Decode errors that day.
    pub decode_errors: i64,
    /// Archive records received that day (by receive time).
    pub records: i64,
    /// Distinct devices that sent a frame that day.
    pub devices_active: i64,
}

/// What `Store::retention` removes: everything strictly older than each cutoff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Raw frames received before this (Unix microseconds) go, with the decode errors,
    /// current states, alarm events and additional records of those frames; records keep their
    /// rows with `frame` unset.
    pub raw_frames_before_us: Option<i64>,
    /// Archive records whose event time (Unix seconds) is before this go; records without an
    /// event time go by receive time.
    pub records_before_s: Option<i64>,
}

/// What a retention run removed (or would remove, on a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Rows deleted per table (including rows of dropped partitions).
    pub deleted: BTreeMap<String, i64>,
    /// Whole partitions dropped (PostgreSQL).
    pub dropped_partitions: Vec<String>,
}

/// Row counts of every SVOI table, by table name.
pub type RowCounts = BTreeMap<String, i64>;

/// What `Store::optimize` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptimizeReport {
    /// `(step, outcome)` in order: `("integrity_check", "ok")`, `("incremental_vacuum", "freed
    /// 120 pages")`, `("VACUUM ANALYZE", "done")`.
    pub steps: Vec<(String, String)>,
    /// The integrity check passed (always true on PostgreSQL, which has none to run).
    pub integrity_ok: bool,
}

/// Size of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSize {
    /// Table name (partitions are summed into their parent).
    pub name: String,
    /// Rows.
    pub rows: i64,
    /// Bytes of the table's data.
    pub table_bytes: Option<i64>,
    /// Bytes of its indexes.
    pub index_bytes: Option<i64>,
}

/// One index and how much it is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexUsage {
    /// Index name.
    pub name: String,
    /// Its table.
    pub table: String,
    /// Bytes (where known).
    pub bytes: Option<i64>,
    /// Scans since statistics were reset (PostgreSQL); `None` on SQLite.
    pub scans: Option<i64>,
}

/// A statement from `pg_stat_statements`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowQuery {
    /// Normalised text.
    pub query: String,
    /// Times called.
    pub calls: i64,
    /// Mean execution time, milliseconds.
    pub mean_ms: f64,
    /// Total execution time, milliseconds.
    pub total_ms: f64,
}

/// `Store::db_stats`.
#[derive(Clone, Debug, PartialEq)]
pub struct DbStats {
    /// `sqlite 3.x` or the PostgreSQL `server_version`.
    pub server_version: String,
    /// Whole database, bytes.
    pub database_bytes: i64,
    /// Tables, largest first.
    pub tables: Vec<TableSize>,
    /// Indexes, largest first.
    pub indexes: Vec<IndexUsage>,
    /// The slowest statements by mean time; `None` when `pg_stat_statements` is not available
    /// (always on SQLite), with the reason.
    pub slow_queries: Result<Vec<SlowQuery>, String>,
}

/// The columns of a log row, in the order the backends' `log_entry` reads them.
pub(crate) const LOG_SELECT: &str = "SELECT id, at_us, kind, operator, duration_ms, result,
    summary, details FROM maintenance_log";

/// The columns of a window row, in the order the backends' `window` reads them.
pub(crate) const WINDOW_SELECT: &str = "SELECT id, started_at_us, planned_end_us, reason,
    operator, backup_id, silence_id, ended_at_us, result FROM maintenance_windows";

/// The columns of an hourly row, in the order the backends' `hourly` reads them.
pub(crate) const HOURLY_SELECT: &str = "SELECT hour_start, instance, frames, records, duplicates,
    decode_errors, acks, ack_p50_ms, ack_p95_ms, ack_p99_ms, devices_active, connections_max,
    db_bytes, updated_at_us FROM hourly_stats";

/// What an hourly row written again for the same hour and instance replaces (both backends,
/// and a restore carrying rows over).
pub(crate) const HOURLY_UPSERT: &str = "ON CONFLICT (hour_start, instance) DO UPDATE SET
    frames = excluded.frames, records = excluded.records,
    duplicates = excluded.duplicates, decode_errors = excluded.decode_errors,
    acks = excluded.acks, ack_p50_ms = excluded.ack_p50_ms,
    ack_p95_ms = excluded.ack_p95_ms, ack_p99_ms = excluded.ack_p99_ms,
    devices_active = excluded.devices_active,
    connections_max = excluded.connections_max, db_bytes = excluded.db_bytes,
    updated_at_us = excluded.updated_at_us";

/// Every SVOI table, in the order counts and reports list them: the device data, then
/// (from index [`DATA_TABLE_COUNT`]) the tables operations write.
pub(crate) const TABLES: [&str; 12] = [
    "devices",
    "layouts",
    "raw_frames",
    "decode_errors",
    "records",
    "alarm_events",
    "current_states",
    "ext_records",
    "api_tokens",
    "maintenance_log",
    "maintenance_windows",
    "hourly_stats",
];

/// How many of [`TABLES`] hold device data.
pub(crate) const DATA_TABLE_COUNT: usize = 9;

/// Microseconds per second.
const US: i64 = 1_000_000;

/// The error for a window id that names no window (or no open one).
fn no_window(id: i64, open: bool) -> StoreError {
    if open {
        StoreError::Invalid(format!("maintenance window {id} is not open"))
    } else {
        StoreError::Invalid(format!("there is no maintenance window {id}"))
    }
}

/// The error for opening a window while `open` is open.
fn window_open(open: &Window) -> StoreError {
    StoreError::Invalid(format!(
        "maintenance window {} is open (since {} us, by {}, reason {:?}): end it first",
        open.id, open.window.started_at_us, open.window.operator, open.window.reason
    ))
}

/// A stored result text as a [`LogResult`].
fn parse_result(id: i64, text: &str) -> Result<LogResult, StoreError> {
    LogResult::parse(text).ok_or_else(|| {
        StoreError::Corrupt(format!("maintenance log entry {id} has result {text:?}"))
    })
}

/// Checks an hourly row before it is written.
fn check_hour(stats: &HourlyStats) -> Result<(), StoreError> {
    if stats.hour_start.rem_euclid(3600) != 0 {
        return Err(StoreError::Invalid(format!(
            "hourly stats start {} is not on the hour",
            stats.hour_start
        )));
    }
    if stats.instance.is_empty() {
        return Err(StoreError::Invalid(
            "hourly stats need an instance name".to_owned(),
        ));
    }
    Ok(())
}

/// Merges per-day figures from the three tables into [`DailyFigures`], ascending by day:
/// `frames` is (day, frames, devices), `errors` and `records` (day, rows).
fn merge_days(
    frames: Vec<(i64, i64, i64)>,
    errors: Vec<(i64, i64)>,
    records: Vec<(i64, i64)>,
) -> Vec<DailyFigures> {
    fn day(days: &mut BTreeMap<i64, DailyFigures>, d: i64) -> &mut DailyFigures {
        days.entry(d).or_insert_with(|| DailyFigures {
            day_start: d,
            ..DailyFigures::default()
        })
    }
    let mut days = BTreeMap::new();
    for (d, n, devices) in frames {
        let e = day(&mut days, d);
        e.frames = n;
        e.devices_active = devices;
    }
    for (d, n) in errors {
        day(&mut days, d).decode_errors = n;
    }
    for (d, n) in records {
        day(&mut days, d).records = n;
    }
    days.into_values().collect()
}

impl Store {
    /// Runs `sqlite` or `pg` on this store's connection. On PostgreSQL a retryable error drops
    /// the connection, so that the next call reconnects.
    fn ops<T>(
        &mut self,
        sqlite: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
        pg: impl FnOnce(&mut tokio_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => sqlite(s.conn()),
            Backend::Postgres(s) => {
                let result = pg(s.client()?);
                if let Err(e) = &result {
                    s.forget_broken(e);
                }
                result
            }
        }
    }

    /// Appends one entry to the maintenance log and returns its id. The log is append-only:
    /// the database refuses to change or remove its rows.
    pub fn append_log(&mut self, entry: &NewLogEntry) -> Result<i64, StoreError> {
        if entry.kind.is_empty() {
            return Err(StoreError::Invalid(
                "a maintenance log entry needs a kind".to_owned(),
            ));
        }
        self.ops(
            |c| sqlite::append_log(c, entry),
            |c| pg::append_log(c, entry),
        )
    }

    /// The whole maintenance log, ascending by id.
    pub fn log_entries(&mut self) -> Result<Vec<LogEntry>, StoreError> {
        self.ops(sqlite::log_entries, |c| pg::log_entries(c))
    }

    /// Opens a maintenance window. At most one is open at a time: while one is,
    /// [`StoreError::Invalid`] names it.
    pub fn open_window(&mut self, window: &NewWindow) -> Result<Window, StoreError> {
        self.ops(
            |c| sqlite::open_window(c, window),
            |c| pg::open_window(c, window),
        )
    }

    /// Records the Alertmanager silence created for window `id`
    /// ([`StoreError::Invalid`] when there is no such window).
    pub fn set_window_silence(&mut self, id: i64, silence_id: &str) -> Result<(), StoreError> {
        self.ops(
            |c| sqlite::set_window_silence(c, id, silence_id),
            |c| pg::set_window_silence(c, id, silence_id),
        )
    }

    /// Closes the open window `id` at `ended_at_us` with `result` (`ok`, `rolled_back`,
    /// `failed`, ...); [`StoreError::Invalid`] when `id` is not the open window.
    pub fn close_window(
        &mut self,
        id: i64,
        ended_at_us: i64,
        result: &str,
    ) -> Result<(), StoreError> {
        self.ops(
            |c| sqlite::close_window(c, id, ended_at_us, result),
            |c| pg::close_window(c, id, ended_at_us, result),
        )
    }

    /// The open maintenance window, if any.
    pub fn current_window(&mut self) -> Result<Option<Window>, StoreError> {
        self.ops(sqlite::current_window, |c| pg::current_window(c))
    }

    /// Every maintenance window, open and closed, ascending by id.
    pub fn windows(&mut self) -> Result<Vec<Window>, StoreError> {
        self.ops(sqlite::windows, |c| pg::windows(c))
    }

    /// Writes the row of (`hour_start`, `instance`), replacing the one there. The hour must
    /// start on the hour and the instance be named ([`StoreError::Invalid`]).
    pub fn upsert_hourly_stats(&mut self, stats: &HourlyStats) -> Result<(), StoreError> {
        check_hour(stats)?;
        self.ops(
            |c| sqlite::upsert_hourly_stats(c, stats),
            |c| pg::upsert_hourly_stats(c, stats),
        )
    }

    /// The hourly rows of every instance with `from_hour <= hour_start < to_hour` (Unix
    /// seconds), ascending by hour, then instance.
    pub fn hourly_stats(
        &mut self,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<HourlyStats>, StoreError> {
        self.ops(
            |c| sqlite::hourly_stats(c, from_hour, to_hour),
            |c| pg::hourly_stats(c, from_hour, to_hour),
        )
    }

    /// Figures of each UTC day with data received in `from_s <= t < to_s` (Unix seconds),
    /// ascending: raw frames, decode errors and records by receive time, and the devices that
    /// sent a frame. Computed from the data itself, one scan per table over the range (records
    /// have no receive-time index: on PostgreSQL this reads every record partition).
    pub fn daily_figures(
        &mut self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<DailyFigures>, StoreError> {
        self.ops(
            |c| sqlite::daily_figures(c, from_s, to_s),
            |c| pg::daily_figures(c, from_s, to_s),
        )
    }

    /// The open window and the last backup and verification outcomes; see
    /// [`Reader::ops_state`].
    pub fn ops_state(&mut self) -> Result<OpsState, StoreError> {
        self.ops(sqlite::ops_state, |c| pg::ops_state(c))
    }

    /// Row counts of every SVOI table: devices, layouts, raw_frames, decode_errors, records,
    /// alarm_events, current_states, ext_records, api_tokens, maintenance_log,
    /// maintenance_windows and hourly_stats. One snapshot (one read transaction on SQLite,
    /// one statement on PostgreSQL), so the counts agree with each other.
    pub fn table_counts(&mut self) -> Result<RowCounts, StoreError> {
        self.ops(sqlite::table_counts, |c| pg::table_counts(c))
    }

    /// Routine database maintenance. SQLite: `PRAGMA optimize`, `PRAGMA integrity_check`
    /// ([`OptimizeReport::integrity_ok`] false when it finds problems, which it lists),
    /// `PRAGMA incremental_vacuum` (which only returns free pages to the file system when the
    /// database uses `auto_vacuum = INCREMENTAL`; the step says what it did), and
    /// `PRAGMA wal_checkpoint(TRUNCATE)`. PostgreSQL: `VACUUM (ANALYZE)` of each table, with
    /// the statement timeout lifted for it. Safe while a server writes; the integrity check
    /// reads the whole SQLite file.
    pub fn optimize(&mut self) -> Result<OptimizeReport, StoreError> {
        self.ops(maintenance::optimize_sqlite, |c| {
            maintenance::optimize_pg(c)
        })
    }

    /// Table and index sizes, largest first, index usage and slow statements. SQLite: sizes
    /// from the `dbstat` table (which reads every page), `None` where this SQLite lacks it;
    /// no index usage or statement statistics. PostgreSQL: sizes summed over each table's
    /// partitions, index scans from `pg_stat_user_indexes`, and the ten slowest statements by
    /// mean time from `pg_stat_statements` when it is installed in the database (else
    /// [`DbStats::slow_queries`] says why not).
    pub fn db_stats(&mut self) -> Result<DbStats, StoreError> {
        self.ops(maintenance::db_stats_sqlite, |c| {
            maintenance::db_stats_pg(c)
        })
    }
}

impl Reader {
    /// What the server exports about operations: the open maintenance window, the end times
    /// of the newest successful (`ok` or `warning`) and failed `backup` log entries, and the
    /// end time and outcome (anything but `failed` passes) of the newest `verify` entry.
    /// "Newest" is the latest end (`at_us + duration_ms`). Cheap: the server polls it.
    pub fn ops_state(&self) -> Result<OpsState, StoreError> {
        self.with_ops(sqlite::ops_state, pg::ops_state)
    }

    /// [`Store::hourly_stats`] on a read connection.
    pub fn hourly_stats(
        &self,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<HourlyStats>, StoreError> {
        self.with_ops(
            |c| sqlite::hourly_stats(c, from_hour, to_hour),
            |c| pg::hourly_stats(c, from_hour, to_hour),
        )
    }
}
