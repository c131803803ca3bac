//! `svoi report weekly|monthly|quarterly`: the operations report from the database alone
//! (hourly statistics, the data, the maintenance log, the backups).

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Loaded;

/// The period a report covers, ending now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Period {
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
    /// The last 90 days.
    Quarterly,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown.
    Md,
    /// A self-contained HTML page with inline SVG charts.
    Html,
    /// One JSON document.
    Json,
}

/// `svoi report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// weekly, monthly or quarterly.
    #[arg(value_enum)]
    pub period: Period,
    /// md, html or json.
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<std::path::PathBuf>,
}

/// Writes the report.
pub fn run(args: &ReportArgs, loaded: &Loaded) -> Result<ExitCode> {
    let _ = (args, loaded);
    bail!("svoi report: not built yet")
}
