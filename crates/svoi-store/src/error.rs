//! The store's error type, and which of its errors are worth retrying.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Everything the store can fail with. Messages are lowercase and name what an operator can
/// act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not one the store understands.
    #[error("bad database url {0:?}: expected sqlite:PATH or postgres://USER@HOST/DBNAME")]
    BadUrl(String),
    /// The URL names a backend this build cannot use yet.
    #[error("{0}")]
    Unsupported(String),
    /// A `synchronous` setting other than off, normal, full or extra.
    #[error("bad synchronous mode {0:?}: expected off, normal, full or extra")]
    BadSynchronous(String),
    /// The database directory could not be created.
    #[error("cannot create database directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// SQLite refused to switch the database to write-ahead logging (the file system may not
    /// support the shared memory it needs).
    #[error("cannot enable wal journal mode on {}: sqlite kept {mode:?}", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The database was written by a newer build with a schema this one does not know.
    #[error(
        "database schema version {found} is newer than this build knows ({known}): \
         run a newer svoi or restore a backup"
    )]
    SchemaTooNew {
        /// The version recorded in `schema_migrations`.
        found: u32,
        /// The newest version this build embeds.
        known: u32,
    },
    /// A read-only handle ([`crate::Reader`]) found a database whose schema is older than
    /// this build (0: never migrated): it cannot migrate, the writer must open it first.
    #[error(
        "database schema version {found} is older than this build ({known}): \
         open it for writing first (the store migrates it on open)"
    )]
    SchemaMismatch {
        /// The version recorded in `schema_migrations` (0 when there is none).
        found: u32,
        /// The version this build expects.
        known: u32,
    },
    /// An active API token already has this name.
    #[error("a token named {name:?} exists: revoke it first")]
    TokenExists {
        /// The name asked for.
        name: String,
    },
    /// A database file could not be read (it is missing, or its metadata is unreadable).
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// An embedded migration failed; its transaction was rolled back.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: u32,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Every read connection stayed busy for the whole wait.
    #[error("all read connections busy for {waited:?}")]
    ReadersBusy {
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// The caller handed the store something it cannot store (checked before any write).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value is not what this build expects (hand-edited or corrupt database).
    #[error("unexpected stored data: {0}")]
    Corrupt(String),
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An embedded PostgreSQL migration failed; its transaction was rolled back.
    #[error("migration {version} failed: {}", pg_message(.cause))]
    PgMigration {
        /// The migration's version.
        version: u32,
        /// What PostgreSQL said (in the message, not repeated as a `source`).
        cause: tokio_postgres::Error,
    },
    /// Any other PostgreSQL failure, connecting included. The message carries the whole
    /// story (server message and SQLSTATE, or the client's error and its cause), so the client
    /// error is not also given as the `source` (callers printing the chain would repeat it).
    #[error("postgres: {}", pg_message(.0))]
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// The server's message and SQLSTATE with its detail when PostgreSQL sent one, else the
/// client's error with its cause (named once).
fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    let text = e.to_string();
    match std::error::Error::source(e) {
        Some(cause) if !text.contains(&cause.to_string()) => format!("{text}: {cause}"),
        _ => text,
    }
}

/// SQLSTATE classes and codes after which the same statement may well succeed: connection
/// exceptions (08), serialization failures and deadlocks (40), insufficient resources (53),
/// lock timeouts and object-in-use (55), operator intervention such as a shutdown or a
/// cancelled (timed-out) statement (57), and system errors such as I/O failures (58).
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            ["08", "40", "53", "55", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        // No SQLSTATE: the client failed to reach or talk to the server (refused, reset, timed
        // out), which passes; or it could not convert a value, which does not.
        None => {
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                if c.is::<std::io::Error>() {
                    return true;
                }
                cause = c.source();
            }
            e.to_string().contains("timed out") || e.to_string().contains("connection")
        }
    }
}

impl StoreError {
    /// Whether trying the same operation again may succeed: the database was busy or locked
    /// by another connection, or an I/O error occurred (disk full, transient failure).
    /// Constraint, schema, URL and input errors are not retryable: the same call fails the
    /// same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Io { .. } | StoreError::ReadersBusy { .. } => true,
            StoreError::File { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::DiskFull
                )
            ),
            StoreError::Postgres(e) => pg_retryable(e),
            StoreError::BadUrl(_)
            | StoreError::PgMigration { .. }
            | StoreError::Unsupported(_)
            | StoreError::BadSynchronous(_)
            | StoreError::NotWal { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::SchemaMismatch { .. }
            | StoreError::TokenExists { .. }
            | StoreError::Migration { .. }
            | StoreError::Invalid(_)
            | StoreError::Corrupt(_) => false,
        }
    }
}
