//! `svoi maintenance run|start|end|status|log`: scheduled procedures, maintenance windows with
//! automatic rollback, and the maintenance log.
//!
//! [`scheduled`] runs the daily, weekly, monthly and quarterly checklists; [`window`] opens and
//! closes windows (pre-check, pre-maintenance backup, post-check, rollback); [`notify`] talks
//! to the Slack-compatible webhook and to Alertmanager; [`log`] prints the maintenance log.
//! Exit codes: 0 nothing needs a person, 1 something does (a failed item, a refused start, a
//! failed post-check), 2 usage and configuration errors.

pub mod log;
pub mod notify;
pub mod scheduled;
pub mod window;

use std::process::ExitCode;

use anyhow::Result;

use crate::config::Loaded;

/// Which scheduled procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// Health, resources, log errors, firing alerts, backup freshness.
    Daily,
    /// Log cleanup, backup pruning, database optimisation, index statistics.
    Weekly,
    /// Full restore test of the latest backup, performance analysis, slow queries.
    Monthly,
    /// Capacity planning: growth of records per day and of the database, days until the disk
    /// is full.
    Quarterly,
}

/// `svoi maintenance ...`.
#[derive(Debug, clap::Subcommand)]
pub enum MaintenanceCommand {
    /// Run a scheduled procedure and print its checklist; exit 1 when something needs a person.
    Run {
        /// daily, weekly, monthly or quarterly.
        #[arg(value_enum)]
        schedule: Schedule,
        /// API base URL (default: `http://` + `api.listen`).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// One JSON document instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Open a maintenance window: pre-check, pre-maintenance backup, notification, maintenance
    /// mode on, Alertmanager silence.
    Start {
        /// Why (shown in notifications, `/api/v1/status` and the log).
        #[arg(long, value_name = "REASON")]
        reason: String,
        /// How long it is expected to last (config `maintenance.default_duration`, default 1h).
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// API base URL (default: `http://` + `api.listen`).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
    },
    /// Close the open window: post-check (the smoke test); when it fails, restore the
    /// pre-maintenance backup and check again; maintenance mode off, silence expired,
    /// notification. Exit 0 when the post-check passed, 1 after a rollback.
    End {
        /// API base URL (default: `http://` + `api.listen`).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// Device listener the post-check dials (default: `ingest.listen`).
        #[arg(long, value_name = "ADDR")]
        device: Option<String>,
        /// API token for the post-check's read-back (also `SVOI_TOKEN`).
        #[arg(long, env = "SVOI_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        token: Option<String>,
        /// Do not roll back when the post-check fails (report and close only).
        #[arg(long)]
        no_rollback: bool,
    },
    /// Show the open window (exit 0 whether or not one is open).
    Status {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Print the maintenance log, oldest first.
    Log {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only the last N entries.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only entries of this kind (backup, verify, restore, window, ...).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
    },
}

/// Runs a maintenance command.
pub fn run(command: &MaintenanceCommand, loaded: &Loaded) -> Result<ExitCode> {
    match command {
        MaintenanceCommand::Log { json, limit, kind } => {
            log::run(loaded, *json, *limit, kind.as_deref())
        }
        MaintenanceCommand::Run {
            schedule,
            api,
            json,
        } => scheduled::run(loaded, *schedule, api.as_deref(), *json),
        MaintenanceCommand::Start {
            reason,
            duration,
            api,
        } => window::start(loaded, reason, duration.as_deref(), api.as_deref()),
        MaintenanceCommand::End {
            api,
            device,
            token,
            no_rollback,
        } => window::end(
            loaded,
            api.as_deref(),
            device.as_deref(),
            token.as_deref(),
            *no_rollback,
        ),
        MaintenanceCommand::Status { json } => window::status(loaded, *json),
    }
}
