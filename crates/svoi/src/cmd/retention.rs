//! `svoi retention run`: deletes data older than `retention.*` and rotates and deletes logs.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Loaded;

/// `svoi retention ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Delete raw frames and records older than `retention.raw_frames` / `retention.records`
    /// (PostgreSQL: whole monthly partitions are dropped), rotate the log file and delete
    /// rotated logs older than `retention.logs`; report what was removed.
    Run {
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document instead of the text report.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a retention command.
pub fn run(command: &RetentionCommand, loaded: &Loaded) -> Result<ExitCode> {
    let _ = (command, loaded);
    bail!("svoi retention: not built yet")
}
