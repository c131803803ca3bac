//! The maintenance log from the commands' side: every backup, verification, restore, prune,
//! retention run, optimisation, window and scheduled procedure appends one entry (time, kind,
//! operator, duration, result, summary, details) to the database's append-only
//! `maintenance_log` table (`svoi maintenance log` prints it).

use std::time::Instant;

use svoi_store::{LogResult, NewLogEntry};

use crate::config::Loaded;

/// Who runs the command: `SVOI_OPERATOR`, else `SUDO_USER` (the person behind `sudo`), else
/// `USER`, else `unknown`.
pub fn operator() -> String {
    ["SVOI_OPERATOR", "SUDO_USER", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Now, Unix microseconds.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// One operation being timed for the log.
#[derive(Debug)]
pub struct Op {
    kind: &'static str,
    at_us: i64,
    started: Instant,
}

impl Op {
    /// Starts timing an operation of `kind` (`backup`, `verify`, ...).
    pub fn begin(kind: &'static str) -> Op {
        Op {
            kind,
            at_us: now_us(),
            started: Instant::now(),
        }
    }

    /// The entry this operation would append now.
    pub fn entry(
        &self,
        result: LogResult,
        summary: impl Into<String>,
        details: serde_json::Value,
    ) -> NewLogEntry {
        NewLogEntry {
            at_us: self.at_us,
            kind: self.kind.to_string(),
            operator: operator(),
            duration_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            result,
            summary: summary.into(),
            details: details.to_string(),
        }
    }

    /// Appends the entry to the configured database's maintenance log. A log that cannot be
    /// written (the database is down, which may be why the operation failed) is reported on
    /// standard error and does not change the command's outcome; returns whether it was
    /// written.
    pub fn finish(
        self,
        loaded: &Loaded,
        result: LogResult,
        summary: impl Into<String>,
        details: serde_json::Value,
    ) -> bool {
        let entry = self.entry(result, summary, details);
        match append(loaded, &entry) {
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "svoi: warning: cannot write the maintenance log ({}): {e:#}",
                    entry.kind
                );
                false
            }
        }
    }
}

/// Appends `entry` to the configured database's log and returns its id.
pub fn append(loaded: &Loaded, entry: &NewLogEntry) -> anyhow::Result<i64> {
    let mut store = crate::cmd::open_store(loaded)?;
    Ok(store.append_log(entry)?)
}
