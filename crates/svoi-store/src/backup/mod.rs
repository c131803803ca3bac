//! Consistent backups of the database and restores of them: the primitives `svoi backup` builds
//! on. Nothing here names a backup directory or a manifest; the binary owns those.
//!
//! SQLite: [`snapshot_sqlite`] copies the live database with `VACUUM INTO` (one read
//! transaction, so consistent while a server writes), [`check_sqlite`] checks a copy, and
//! [`restore_sqlite`] copies one back with SQLite's online backup API after carrying the
//! operations rows written since (maintenance log, windows, hourly statistics) over into it.
//! PostgreSQL: [`dump_postgres`] runs `pg_dump` on a snapshot exported from a transaction that
//! also counted the rows, so the counts describe the dump exactly; [`check_postgres`] restores
//! a dump into a scratch database and counts there; [`restore_postgres`] restores into the live
//! database and carries the operations rows over. Every restore bumps the restore epoch
//! (`svoi_state.restore_epoch`) so that a running writer drops the ids it cached.
//!
//! [`ServerLock`] is the lock file a running `svoi serve` holds on an SQLite database, and
//! [`server_using`] asks whether a server is using a database (lock file, or `pg_stat_activity`
//! on PostgreSQL).

mod lock;
mod pg;
mod sqlite;

use std::path::{Path, PathBuf};

use crate::{DbUrl, RowCounts, StoreError, StoreOptions};

pub use lock::{SERVE_APPLICATION_NAME, ServerLock, lock_path, server_using};
pub use pg::{PgCheck, PgTools, check_postgres, dump_postgres, restore_postgres};
pub use sqlite::{SqliteCheck, check_sqlite, restore_sqlite, snapshot_sqlite};

/// The tables holding device data, in dependency order: a restore must bring these back
/// exactly as backed up.
pub const DATA_TABLES: &[&str] = crate::ops::TABLES
    .as_slice()
    .split_at(crate::ops::DATA_TABLE_COUNT)
    .0;

/// The tables operations write (schema version 3). A restore carries the live database's rows
/// of these over into the restored one, so they may hold more rows than the backup.
pub const OPS_TABLES: &[&str] = crate::ops::TABLES
    .as_slice()
    .split_at(crate::ops::DATA_TABLE_COUNT)
    .1;

/// What a backup holds, read inside the backup's own snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Rows per table ([`DATA_TABLES`] and [`OPS_TABLES`] that exist).
    pub counts: RowCounts,
    /// The schema version recorded in `schema_migrations`.
    pub schema_version: u32,
    /// `sqlite 3.x.y`, or PostgreSQL's `server_version`.
    pub server_version: String,
}

/// What a restore carried over from the live database into the restored one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// Maintenance log entries the backup did not have.
    pub log_entries: i64,
    /// Maintenance windows (replacing the backup's row of the same id).
    pub windows: i64,
    /// Hourly statistics rows (replacing the backup's row of the same hour and instance).
    pub hourly_stats: i64,
    /// The restore epoch the restored database now has.
    pub epoch: i64,
    /// Whether there was a live database to carry rows over from.
    pub live_existed: bool,
}

/// What backups and restores fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `pg_dump` or `pg_restore` could not be found.
    #[error("{0}")]
    ToolsMissing(String),
    /// `pg_dump` or `pg_restore` ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The program.
        tool: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to standard error.
        stderr: String,
    },
    /// A file could not be read, written or run.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another server holds the database's lock file.
    #[error("{db} is in use by {holder} (lock file {})", lock.display())]
    InUse {
        /// The database.
        db: String,
        /// Who holds it (`svoi serve (pid 1234)`).
        holder: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The input is not something this can back up or restore.
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Store(StoreError::Sqlite(e))
    }
}

impl From<tokio_postgres::Error> for BackupError {
    fn from(e: tokio_postgres::Error) -> Self {
        BackupError::Store(StoreError::Postgres(e))
    }
}

/// An [`BackupError::Io`] on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counts, schema version and server version of the live database at `url`; `None` when it
/// does not exist (SQLite: no file or an empty one; PostgreSQL: no such database). Opens
/// nothing for writing and creates nothing.
pub fn live_snapshot(url: &DbUrl, opts: &StoreOptions) -> Result<Option<Snapshot>, BackupError> {
    match url {
        DbUrl::Sqlite(db) => sqlite::live_snapshot(db, opts),
        DbUrl::Postgres(pg) => pg::live_snapshot(pg, opts),
    }
}

impl Snapshot {
    /// Rows in the [`DATA_TABLES`] together.
    pub fn data_rows(&self) -> i64 {
        DATA_TABLES.iter().filter_map(|t| self.counts.get(*t)).sum()
    }
}
