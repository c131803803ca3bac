//! `svoi db migrate`: brings the configured database's schema up to this build's version
//! (the server does the same when it starts; this does it ahead of a deployment).
//! `svoi db optimize`: routine maintenance of the database ([`svoi_store::Store::optimize`]),
//! logged in the maintenance log, exit 1 when the integrity check fails. `svoi db stats`:
//! table and index sizes, index usage and slow statements ([`stats_text`]).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::{DbStats, LogResult, OptimizeReport, StoreError};

use crate::cmd::service::human_bytes;
use crate::config::Loaded;
use crate::oplog::Op;

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
        DbCommand::Optimize => optimize(loaded),
        DbCommand::Stats { json } => {
            let mut store = crate::cmd::open_store(loaded)?;
            let stats = store
                .db_stats()
                .context("cannot read the database statistics")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&stats_json(&stats))?);
            } else {
                print!("{}", stats_text(&stats));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `svoi db optimize`: runs the maintenance steps, prints each with its outcome, appends an
/// `optimize` entry to the maintenance log (failed when the integrity check failed or a step
/// could not run), exit 1 when the integrity check failed.
fn optimize(loaded: &Loaded) -> Result<ExitCode> {
    let op = Op::begin("optimize");
    let report = crate::cmd::open_store(loaded)
        .and_then(|mut store| store.optimize().context("database maintenance failed"));
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            op.finish(
                loaded,
                LogResult::Failed,
                format!("optimize failed: {e:#}"),
                json!({ "error": format!("{e:#}") }),
            );
            return Err(e);
        }
    };
    print!("{}", optimize_text(&report));
    let steps: Vec<serde_json::Value> = report
        .steps
        .iter()
        .map(|(step, outcome)| json!({ "step": step, "outcome": outcome }))
        .collect();
    let details = json!({ "integrity_ok": report.integrity_ok, "steps": steps });
    if report.integrity_ok {
        op.finish(loaded, LogResult::Ok, "optimized, integrity ok", details);
        Ok(ExitCode::SUCCESS)
    } else {
        op.finish(
            loaded,
            LogResult::Failed,
            "the integrity check found problems",
            details,
        );
        eprintln!(
            "svoi: the integrity check found problems: restore the latest verified backup \
             (svoi backup restore) or see the database runbook"
        );
        Ok(ExitCode::from(1))
    }
}

/// One line per step: its name and outcome.
fn optimize_text(report: &OptimizeReport) -> String {
    let width = report
        .steps
        .iter()
        .map(|(step, _)| step.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (step, outcome) in &report.steps {
        let _ = writeln!(out, "{step:<width$}  {outcome}");
    }
    out
}

/// `n` or `-` for an unknown figure.
fn or_dash(n: Option<i64>, show: impl Fn(i64) -> String) -> String {
    n.map_or_else(|| "-".to_owned(), show)
}

/// Bytes as `12.3 MiB` (negative figures, which no database reports, as 0).
fn bytes(n: i64) -> String {
    human_bytes(u64::try_from(n).unwrap_or(0))
}

/// The text `svoi db stats` prints (also used by the weekly and monthly procedures): the
/// database's size and server version, tables and indexes largest first, index scans where
/// the backend counts them, and the slowest statements or why there are none.
pub fn stats_text(stats: &DbStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "database: {}, {}",
        stats.server_version,
        bytes(stats.database_bytes)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>12}",
        "table", "rows", "data", "indexes"
    );
    for t in &stats.tables {
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>12} {:>12}",
            t.name,
            t.rows,
            or_dash(t.table_bytes, bytes),
            or_dash(t.index_bytes, bytes)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<40} {:<20} {:>12} {:>10}",
        "index", "table", "size", "scans"
    );
    for i in &stats.indexes {
        let _ = writeln!(
            out,
            "{:<40} {:<20} {:>12} {:>10}",
            i.name,
            i.table,
            or_dash(i.bytes, bytes),
            or_dash(i.scans, |n| n.to_string())
        );
    }
    let _ = writeln!(out);
    match &stats.slow_queries {
        Ok(slow) if slow.is_empty() => {
            let _ = writeln!(out, "slow queries: none recorded (pg_stat_statements)");
        }
        Ok(slow) => {
            let _ = writeln!(out, "slow queries (pg_stat_statements, by mean time):");
            for q in slow {
                let text: String = q.query.split_whitespace().collect::<Vec<_>>().join(" ");
                let text: String = text.chars().take(160).collect();
                let _ = writeln!(
                    out,
                    "  mean {:>10.2} ms  calls {:>8}  total {:>12.1} ms  {text}",
                    q.mean_ms, q.calls, q.total_ms
                );
            }
        }
        Err(why) => {
            let _ = writeln!(out, "slow queries: not available: {why}");
        }
    }
    out
}

/// The `--json` document of `svoi db stats`.
fn stats_json(stats: &DbStats) -> serde_json::Value {
    let tables: Vec<serde_json::Value> = stats
        .tables
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "rows": t.rows,
                "table_bytes": t.table_bytes,
                "index_bytes": t.index_bytes,
            })
        })
        .collect();
    let indexes: Vec<serde_json::Value> = stats
        .indexes
        .iter()
        .map(|i| json!({ "name": i.name, "table": i.table, "bytes": i.bytes, "scans": i.scans }))
        .collect();
    let slow = match &stats.slow_queries {
        Ok(slow) => json!(
            slow.iter()
                .map(|q| json!({
                    "query": q.query,
                    "calls": q.calls,
                    "mean_ms": q.mean_ms,
                    "total_ms": q.total_ms,
                }))
                .collect::<Vec<_>>()
        ),
        Err(_) => serde_json::Value::Null,
    };
    json!({
        "server_version": stats.server_version,
        "database_bytes": stats.database_bytes,
        "tables": tables,
        "indexes": indexes,
        "slow_queries": slow,
        "slow_queries_unavailable": stats.slow_queries.as_ref().err(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use svoi_store::{IndexUsage, SlowQuery, TableSize};

    fn stats(slow: Result<Vec<SlowQuery>, String>) -> DbStats {
        DbStats {
            server_version: "PostgreSQL 15.4".to_owned(),
            database_bytes: 5 << 20,
            tables: vec![TableSize {
                name: "records".to_owned(),
                rows: 1234,
                table_bytes: Some(3 << 20),
                index_bytes: None,
            }],
            indexes: vec![IndexUsage {
                name: "records_frame".to_owned(),
                table: "records".to_owned(),
                bytes: Some(1 << 20),
                scans: Some(17),
            }],
            slow_queries: slow,
        }
    }

    #[test]
    fn stats_text_lists_tables_indexes_and_slow_queries() {
        let text = stats_text(&stats(Ok(vec![SlowQuery {
            query: "SELECT  *\n FROM records".to_owned(),
            calls: 3,
            mean_ms: 12.5,
            total_ms: 37.5,
        }])));
        assert!(
            text.starts_with("database: PostgreSQL 15.4, 5.0 MiB\n"),
            "{text}"
        );
        assert!(text.contains("records"), "{text}");
        assert!(text.contains("1234"), "{text}");
        assert!(text.contains("3.0 MiB"), "{text}");
        assert!(text.contains("records_frame"), "{text}");
        assert!(text.contains("17"), "{text}");
        assert!(text.contains("12.50 ms"), "{text}");
        assert!(text.contains("SELECT * FROM records"), "{text}");
        let missing = stats_text(&stats(Err("pg_stat_statements is not installed".into())));
        assert!(
            missing.contains("slow queries: not available: pg_stat_statements is not installed"),
            "{missing}"
        );
    }
}
