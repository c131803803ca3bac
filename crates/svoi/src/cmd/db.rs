//! `svoi db migrate`: brings the configured database's schema up to this build's version
//! (the server does the same when it starts; this does it ahead of a deployment).

use std::process::ExitCode;

use anyhow::{Context, Result};
use svoi_store::StoreError;

use crate::config::Loaded;

/// `svoi db ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Apply pending schema migrations and print the version before and after.
    Migrate,
    /// SQLite: `PRAGMA optimize`, `integrity_check`, incremental vacuum; PostgreSQL:
    /// `VACUUM ANALYZE`. Exit 1 when the integrity check fails.
    Optimize,
    /// Table and index sizes, index usage, slow queries (`pg_stat_statements`).
    Stats {
        /// One JSON document instead of the tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a database command.
pub fn run(command: &DbCommand, loaded: &Loaded) -> Result<ExitCode> {
    match command {
        DbCommand::Migrate => {
            let (url, options) = crate::cmd::store_options(loaded)?;
            let before = match svoi_store::Reader::open(&url, &options, 1) {
                Ok(_) => Some(svoi_store::latest_schema_version()),
                Err(StoreError::SchemaMismatch { found, .. }) => Some(found),
                // A new SQLite file: nothing to read yet.
                Err(StoreError::File { .. }) => None,
                Err(e) => return Err(e).with_context(|| format!("cannot open database {url}")),
            };
            let mut store = crate::cmd::open_store(loaded)?;
            let after = store
                .schema_version()
                .with_context(|| format!("cannot read the schema version of {url}"))?;
            match before {
                Some(v) if v == after => println!("{url}: schema version {after}, up to date"),
                Some(v) => println!("{url}: schema version {v} -> {after}"),
                None => println!("{url}: created, schema version {after}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Optimize | DbCommand::Stats { .. } => {
            anyhow::bail!("svoi db optimize/stats: not built yet")
        }
    }
}
