//! Logging setup: one tracing subscriber for the process, human-readable text by default and
//! JSON lines for production log shippers, filtered by `log.level` (a tracing filter string).

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber writing to standard error. Call once, before any task starts.
pub fn init(log: &LogConfig) -> Result<()> {
    let filter = EnvFilter::try_new(&log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", log.level))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
