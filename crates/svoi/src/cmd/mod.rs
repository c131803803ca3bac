//! One module per subcommand; each exposes `Args` (clap) and a `run` returning the exit code.

pub mod alerts;
pub mod backup;
pub mod bench;
pub mod config;
pub mod db;
pub mod decode;
pub mod emergency;
pub mod fields;
pub mod incident;
pub mod maintenance;
pub mod report;
pub mod reprocess;
pub mod retention;
pub mod runbook;
pub mod serve;
pub mod service;
pub mod sim;
pub mod smoke;
pub mod token;

use anyhow::{Context, Result};
use svoi_store::{DbUrl, Store, StoreOptions};

use crate::config::Loaded;

/// Opens the configured database (creating it and applying migrations when needed).
pub fn open_store(loaded: &Loaded) -> Result<Store> {
    let (url, options) = store_options(loaded)?;
    Store::open(&url, &options).with_context(|| format!("cannot open database {url}"))
}

/// The configured database and connection settings.
pub fn store_options(loaded: &Loaded) -> Result<(DbUrl, StoreOptions)> {
    let url: DbUrl = loaded
        .config
        .db
        .parse()
        .with_context(|| format!("db {:?}", loaded.config.db))?;
    let options = StoreOptions {
        synchronous: loaded.config.sqlite.synchronous.parse().with_context(|| {
            format!("sqlite.synchronous {:?}", loaded.config.sqlite.synchronous)
        })?,
        busy_timeout: loaded.config.sqlite.busy_timeout,
        background_checkpoint: false,
        postgres: svoi_store::PgOptions {
            connect_timeout: loaded.config.postgres.connect_timeout,
            statement_timeout: loaded.config.postgres.statement_timeout,
            ..svoi_store::PgOptions::default()
        },
    };
    Ok((url, options))
}

/// Opens the store for a long-running writer. On SQLite its WAL checkpoints run on a thread of
/// their own (the returned handle) so that commits, and the acknowledgements waiting on them,
/// never stall on one; PostgreSQL checkpoints by itself.
pub fn open_writer_store(
    loaded: &Loaded,
) -> Result<(Store, Option<svoi_store::CheckpointerHandle>)> {
    let (url, mut options) = store_options(loaded)?;
    options.background_checkpoint = true;
    // The server's PostgreSQL sessions, as `backup restore` finds them in pg_stat_activity.
    options.postgres.application_name = Some(svoi_store::backup::SERVE_APPLICATION_NAME.to_owned());
    let store =
        Store::open(&url, &options).with_context(|| format!("cannot open database {url}"))?;
    let DbUrl::Sqlite(path) = &url else {
        return Ok((store, None));
    };
    let checkpointer = svoi_store::Checkpointer::open(&url, &options)
        .and_then(|c| {
            c.spawn(CHECKPOINT_INTERVAL)
                .map_err(|e| svoi_store::StoreError::Io {
                    path: path.clone(),
                    source: e,
                })
        })
        .with_context(|| format!("cannot start the checkpointer of {url}"))?;
    Ok((store, Some(checkpointer)))
}

/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
