//! `svoi backup create|list|verify|restore|prune`: verified backups in `backup.dir`
//! (`--backup-dir`).

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Loaded;

/// `svoi backup ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a consistent online backup (the server may keep running); the new backup's ID is
    /// the last line of standard output.
    Create {
        /// A word to remember it by, appended to the ID (`20261125T140512Z-before-upgrade`).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// List the backups, newest first.
    List {
        /// One JSON array of manifests instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a scratch database, check its integrity and compare its row counts
    /// with the manifest. Exit 0 when it verifies, 1 when it does not.
    Verify {
        /// Backup ID, or `latest`.
        #[arg(default_value = "latest", value_name = "ID|latest")]
        id: String,
        /// One JSON document instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the configured database (a backup of that database is taken
    /// first when it exists).
    Restore {
        /// Backup ID, or `latest`.
        #[arg(value_name = "ID|latest")]
        id: String,
        /// Restore even while a server is using the database.
        #[arg(long)]
        force: bool,
    },
    /// Delete backups older than `--keep-days`, always keeping the newest `--keep-last`.
    Prune {
        /// Keep backups younger than this many days (config `backup.keep_days`, default 90).
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<usize>,
        /// Keep at least this many of the newest backups (config `backup.keep_last`, default 7).
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a backup command.
pub fn run(command: &BackupCommand, loaded: &Loaded) -> Result<ExitCode> {
    let _ = (command, loaded);
    bail!("svoi backup: not built yet")
}
