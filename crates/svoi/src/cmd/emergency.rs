//! `svoi emergency status|logs`: the one-screen status of the server and this host, and a
//! tar.gz bundle of everything a second pair of eyes needs (status, redacted configuration,
//! metrics, readiness, log tails, system facts).
//!
//! `status` exits 0 only when the API answers `/health` and `/ready` says ready; 1 otherwise
//! (the screen is printed either way). `logs` exits 0 once the bundle is written, whatever
//! the server's state.

mod bundle;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

pub use snapshot::snapshot;

use crate::config::Loaded;
use crate::probe;

/// `svoi emergency ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EmergencyCommand {
    /// Everything an on-call engineer needs first, on one screen.
    Status {
        /// API base URL (default: `http://` + `api.listen`, loopback for 0.0.0.0).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// One JSON document instead of the screen.
        #[arg(long)]
        json: bool,
    },
    /// Write a tar.gz bundle of logs, status, redacted configuration and metrics.
    Logs {
        /// API base URL (default: `http://` + `api.listen`, loopback for 0.0.0.0).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// The bundle to write (default: `svoi-emergency-<UTC time>.tar.gz` here).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Runs an emergency command.
pub fn run(command: &EmergencyCommand, loaded: &Loaded) -> Result<ExitCode> {
    match command {
        EmergencyCommand::Status { api, json } => {
            let base = probe::api_base(&loaded.config, api.as_deref());
            let snap = snapshot(loaded, &base);
            if *json {
                println!("{}", serde_json::to_string_pretty(&snap)?);
            } else {
                print!("{snap}");
            }
            Ok(if snap.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        EmergencyCommand::Logs { api, output } => {
            let base = probe::api_base(&loaded.config, api.as_deref());
            bundle::write(loaded, &base, output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
