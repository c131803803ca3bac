//! `svoi maintenance log`: the database's maintenance log as a table (time, kind, operator,
//! duration, result, summary) or as one JSON object per line, filtered by kind and cut to the
//! last N entries.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::LogEntry;

use crate::config::Loaded;

/// Prints the configured database's maintenance log.
pub fn run(
    loaded: &Loaded,
    json: bool,
    limit: Option<usize>,
    kind: Option<&str>,
) -> Result<ExitCode> {
    let mut store = crate::cmd::open_store(loaded)?;
    let entries = store
        .log_entries()
        .context("cannot read the maintenance log")?;
    let entries = select(entries, limit, kind);
    if json {
        for e in &entries {
            println!("{}", entry_json(e));
        }
    } else {
        print!("{}", table(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

/// The entries of `kind` (all when `None`), then the last `limit` of those.
pub fn select(entries: Vec<LogEntry>, limit: Option<usize>, kind: Option<&str>) -> Vec<LogEntry> {
    let mut kept: Vec<LogEntry> = entries
        .into_iter()
        .filter(|e| kind.is_none_or(|k| e.entry.kind == k))
        .collect();
    if let Some(n) = limit {
        let skip = kept.len().saturating_sub(n);
        kept.drain(..skip);
    }
    kept
}

/// Unix microseconds as RFC 3339 UTC to the second (`2026-11-25T14:05:12Z`).
pub fn time_text(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("@{us}us"))
}

/// `350 ms`, `12.4 s`, `3m 05s`, `2h 01m`.
pub fn duration_text(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The `--json` form of one entry; `details` is the stored JSON object itself (or its text when
/// it is not JSON).
pub fn entry_json(e: &LogEntry) -> serde_json::Value {
    let details = serde_json::from_str::<serde_json::Value>(&e.entry.details)
        .unwrap_or_else(|_| serde_json::Value::String(e.entry.details.clone()));
    json!({
        "id": e.id,
        "at": time_text(e.entry.at_us),
        "at_us": e.entry.at_us,
        "kind": e.entry.kind,
        "operator": e.entry.operator,
        "duration_ms": e.entry.duration_ms,
        "result": e.entry.result.as_str(),
        "summary": e.entry.summary,
        "details": details,
    })
}

/// The text table: a header, one line per entry (the summary last, unpadded), or a line saying
/// the log is empty.
pub fn table(entries: &[LogEntry]) -> String {
    if entries.is_empty() {
        return "the maintenance log is empty\n".to_string();
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                time_text(e.entry.at_us),
                e.entry.kind.clone(),
                e.entry.operator.clone(),
                duration_text(e.entry.duration_ms),
                e.entry.result.as_str().to_string(),
                crate::cmd::smoke::report::one_line(&e.entry.summary, 200),
            ]
        })
        .collect();
    let header = ["TIME", "KIND", "OPERATOR", "DURATION", "RESULT", "SUMMARY"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (w, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(&row[5]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use svoi_store::{LogResult, NewLogEntry};

    use super::*;

    fn entry(id: i64, kind: &str, result: LogResult, summary: &str) -> LogEntry {
        LogEntry {
            id,
            entry: NewLogEntry {
                at_us: 1_790_000_000_000_000 + id * 1_000_000,
                kind: kind.into(),
                operator: "alice".into(),
                duration_ms: 1500 * id,
                result,
                summary: summary.into(),
                details: format!(r#"{{"n":{id}}}"#),
            },
        }
    }

    fn sample() -> Vec<LogEntry> {
        vec![
            entry(1, "backup", LogResult::Ok, "backup 20260921T141321Z"),
            entry(2, "window", LogResult::Failed, "window #1 rolled back"),
            entry(3, "backup", LogResult::Warning, "backup slow"),
            entry(4, "verify", LogResult::Ok, "verified"),
        ]
    }

    #[test]
    fn kind_filters_before_limit_keeps_the_newest() {
        let ids = |v: Vec<LogEntry>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(select(sample(), None, None)), [1, 2, 3, 4]);
        assert_eq!(ids(select(sample(), Some(2), None)), [3, 4]);
        assert_eq!(ids(select(sample(), None, Some("backup"))), [1, 3]);
        assert_eq!(ids(select(sample(), Some(1), Some("backup"))), [3]);
        assert_eq!(ids(select(sample(), Some(10), Some("window"))), [2]);
        assert!(select(sample(), Some(0), None).is_empty());
        assert!(select(sample(), None, Some("nothing")).is_empty());
    }

    #[test]
    fn the_table_has_aligned_columns_and_the_summary_last() {
        let text = table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "TIME                  KIND    OPERATOR  DURATION  RESULT   SUMMARY"
        );
        assert_eq!(
            lines[2],
            "2026-09-21T14:13:22Z  window  alice     3.0 s     failed   window #1 rolled back"
        );
        assert_eq!(table(&[]), "the maintenance log is empty\n");
    }

    #[test]
    fn json_lines_carry_the_details_as_json() {
        let v = entry_json(&sample()[1]);
        assert_eq!(v["id"], 2);
        assert_eq!(v["kind"], "window");
        assert_eq!(v["result"], "failed");
        assert_eq!(v["at"], "2026-09-21T14:13:22Z");
        assert_eq!(v["duration_ms"], 3000);
        assert_eq!(v["details"], json!({"n": 2}));
        let mut odd = sample()[0].clone();
        odd.entry.details = "not json".into();
        assert_eq!(entry_json(&odd)["details"], "not json");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(0), "0 ms");
        assert_eq!(duration_text(999), "999 ms");
        assert_eq!(duration_text(1_000), "1.0 s");
        assert_eq!(duration_text(12_449), "12.4 s");
        assert_eq!(duration_text(185_000), "3m 05s");
        assert_eq!(duration_text(7_260_000), "2h 01m");
    }
}
