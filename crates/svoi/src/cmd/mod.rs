//! One module per subcommand; each exposes `Args` (clap) and a `run` returning the exit code.

pub mod bench;
pub mod config;
pub mod decode;
pub mod fields;
pub mod reprocess;
pub mod serve;
pub mod sim;

use anyhow::{Context, Result};
use svoi_store::{DbUrl, Store, StoreOptions};

use crate::config::Loaded;

/// Opens the configured database (creating it and applying migrations when needed).
pub fn open_store(loaded: &Loaded) -> Result<Store> {
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
    };
    Store::open(&url, &options).with_context(|| format!("cannot open database {url}"))
}
