//! What operations keep in the database (schema version 3): the append-only maintenance log,
//! maintenance windows, hourly statistics, and the figures reports, retention and database
//! maintenance work with. The same types on both backends.

use std::collections::BTreeMap;

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

impl crate::Store {
    /// Appends one entry to the maintenance log and returns its id.
    pub fn append_log(&mut self, entry: &NewLogEntry) -> Result<i64, crate::StoreError> {
        let _ = entry;
        Err(crate::StoreError::Unsupported(
            "the maintenance log is not built yet".into(),
        ))
    }
}
