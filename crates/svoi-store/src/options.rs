//! Connection settings: durability (`synchronous`) and how long to wait for a lock.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::StoreError;

/// SQLite's `PRAGMA synchronous`: how hard a commit pushes data to the disk. With WAL,
/// `Full` makes every commit durable across power loss; `Normal` may lose the last commits
/// (but never corrupts) on power loss, which breaks the acknowledgement promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    /// No syncs at all: for tests and benchmarks only.
    Off,
    /// Sync at checkpoints only.
    Normal,
    /// Sync the WAL on every commit (the default: acknowledged means durable).
    #[default]
    Full,
    /// Like `Full`, plus a directory sync.
    Extra,
}

impl Synchronous {
    /// The pragma's value, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "off",
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
            Synchronous::Extra => "extra",
        }
    }

    /// The number SQLite reports for `PRAGMA synchronous`.
    pub fn level(self) -> i64 {
        match self {
            Synchronous::Off => 0,
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
            Synchronous::Extra => 3,
        }
    }
}

impl FromStr for Synchronous {
    type Err = StoreError;

    /// Parses `off`, `normal`, `full` or `extra`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Synchronous::Off,
            Synchronous::Normal,
            Synchronous::Full,
            Synchronous::Extra,
        ]
        .into_iter()
        .find(|mode| mode.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| StoreError::BadSynchronous(s.to_owned()))
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Durability of each commit (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long a write waits for another connection's lock before failing with a retryable
    /// error, and how long a [`crate::Reader`] call waits for a free connection of its pool
    /// (default 5 s).
    pub busy_timeout: Duration,
    /// A [`crate::Checkpointer`] runs the WAL checkpoints on its own connection (the server
    /// does this): the store's automatic checkpoint then only fires as a backstop when the
    /// WAL exceeds [`BACKSTOP_CHECKPOINT_PAGES`], instead of every 1000 pages inside a commit.
    pub background_checkpoint: bool,
    /// PostgreSQL settings (ignored for SQLite).
    pub postgres: PgOptions,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// How long to wait for a connection to the server (default 5 s).
    pub connect_timeout: Duration,
    /// The longest any statement may run before the server cancels it, which fails the commit
    /// or query with a retryable error (default 30 s).
    pub statement_timeout: Duration,
    /// How a commit writes its archive records (default [`RecordsVia::Unnest`], which
    /// measured faster; the other stays so `svoi bench ingest --pg-records` can compare).
    pub records_via: RecordsVia,
    /// The `application_name` the connections report to the server (`pg_stat_activity`);
    /// `None` keeps the URL's, else `svoi`. `svoi serve` sets `svoi serve`, which is how
    /// `svoi backup restore` tells that a server is using the database.
    pub application_name: Option<String>,
}

/// The two ways a PostgreSQL commit can write a batch of records with deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordsVia {
    /// One `INSERT ... SELECT * FROM unnest(column arrays) ON CONFLICT DO NOTHING`.
    #[default]
    Unnest,
    /// A binary `COPY` into a session-local staging table, then `INSERT ... SELECT FROM` it
    /// `ON CONFLICT DO NOTHING` (`COPY` itself cannot skip duplicates).
    Copy,
}

impl FromStr for RecordsVia {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unnest" => Ok(RecordsVia::Unnest),
            "copy" => Ok(RecordsVia::Copy),
            other => Err(format!("{other:?}: expected unnest or copy")),
        }
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            records_via: RecordsVia::Unnest,
            application_name: None,
        }
    }
}

/// WAL size in pages (of 4 KiB) at which a store with a background checkpointer still
/// checkpoints inside a commit, should the checkpointer fall behind.
pub const BACKSTOP_CHECKPOINT_PAGES: u32 = 65_536;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            background_checkpoint: false,
            postgres: PgOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_parses_case_insensitively_and_displays_lowercase() {
        for (text, mode) in [
            ("off", Synchronous::Off),
            ("Normal", Synchronous::Normal),
            ("FULL", Synchronous::Full),
            ("extra", Synchronous::Extra),
        ] {
            let parsed: Synchronous = text.parse().unwrap();
            assert_eq!(parsed, mode);
            assert_eq!(parsed.to_string(), text.to_ascii_lowercase());
        }
        assert!(matches!(
            "fsync".parse::<Synchronous>(),
            Err(StoreError::BadSynchronous(t)) if t == "fsync"
        ));
    }

    #[test]
    fn defaults_are_durable() {
        assert_eq!(Synchronous::default(), Synchronous::Full);
        let opts = StoreOptions::default();
        assert_eq!(opts.synchronous, Synchronous::Full);
        assert_eq!(opts.busy_timeout, Duration::from_secs(5));
    }
}
