//! Logging setup: one tracing subscriber for the process, human-readable text by default and
//! JSON lines for production log shippers, filtered by `log.level` (a tracing filter string),
//! written to standard error or appended to `log.file`.

use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, before any task starts. With `log.file` set the
/// file is created if missing (with its directory) and appended to; it is refused at start
/// when it cannot be opened.
pub fn init(log: &LogConfig) -> Result<()> {
    let filter = EnvFilter::try_new(&log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", log.level))?;
    use std::io::IsTerminal;
    let (writer, ansi) = match &log.file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("log.file: cannot create directory {}", dir.display())
                })?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log.file: cannot open {}", path.display()))?;
            (BoxMakeWriter::new(Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
