//! `svoi retention run`: deletes data older than `retention.*` and rotates and deletes logs.
//!
//! The cutoffs are now minus `retention.raw_frames` (by receive time) and minus
//! `retention.records` (by event time); an unset age keeps that data forever. The store does
//! the deleting ([`svoi_store::Store::retention`]: small transactions on SQLite, whole
//! monthly partitions on PostgreSQL). The log file (`log.file`) is rotated by copy and
//! truncate, since the server keeps it open with `O_APPEND` and goes on writing at the new
//! end; rotated files older than `retention.logs` are deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::{LogResult, RetentionPlan, RetentionReport};

use crate::config::Loaded;
use crate::oplog::Op;

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

/// What [`rotate_logs`] did (or, on a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRotation {
    /// The compressed copy of the log file (`<file>.<YYYYmmddTHHMMSSZ>.gz`); `None` when
    /// no log file is configured, or it is missing or empty.
    pub rotated: Option<PathBuf>,
    /// Rotated files deleted for being older than `retention.logs`, oldest first.
    pub deleted: Vec<PathBuf>,
}

/// Runs a retention command.
pub fn run(command: &RetentionCommand, loaded: &Loaded) -> Result<ExitCode> {
    let RetentionCommand::Run { dry_run, json } = *command;
    let op = Op::begin("retention");
    let now = jiff::Timestamp::now();
    let plan = plan(loaded, now);
    let outcome = (|| -> Result<(RetentionReport, LogRotation)> {
        let mut store = crate::cmd::open_store(loaded)?;
        let report = store
            .retention(&plan, dry_run)
            .context("retention in the database failed")?;
        let logs = rotate_logs(loaded, dry_run)?;
        Ok((report, logs))
    })();
    let (report, logs) = match outcome {
        Ok(done) => done,
        Err(e) => {
            if !dry_run {
                op.finish(
                    loaded,
                    LogResult::Failed,
                    format!("retention failed: {e:#}"),
                    json!({ "error": format!("{e:#}") }),
                );
            }
            return Err(e);
        }
    };
    let document = document(loaded, &plan, &report, &logs, dry_run);
    if !dry_run {
        op.finish(
            loaded,
            LogResult::Ok,
            summary(&report, &logs),
            document.clone(),
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!("{}", text(loaded, &plan, &report, &logs, dry_run));
    }
    Ok(ExitCode::SUCCESS)
}

/// The cutoffs of a run at `now`: now minus each configured age.
fn plan(loaded: &Loaded, now: jiff::Timestamp) -> RetentionPlan {
    let r = &loaded.config.retention;
    let age_us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    RetentionPlan {
        raw_frames_before_us: r
            .raw_frames
            .map(|d| now.as_microsecond().saturating_sub(age_us(d))),
        records_before_s: r.records.map(|d| {
            now.as_second()
                .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }),
    }
}

/// RFC 3339 text of Unix microseconds.
fn rfc3339_us(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| format!("{us} us"), |t| t.to_string())
}

/// RFC 3339 text of Unix seconds.
fn rfc3339_s(s: i64) -> String {
    jiff::Timestamp::from_second(s).map_or_else(|_| format!("{s} s"), |t| t.to_string())
}

/// The one-line summary for the maintenance log.
fn summary(report: &RetentionReport, logs: &LogRotation) -> String {
    let rows: i64 = report.deleted.values().sum();
    let mut text = format!("removed {rows} rows");
    if !report.dropped_partitions.is_empty() {
        text.push_str(&format!(
            " ({} partitions dropped)",
            report.dropped_partitions.len()
        ));
    }
    if logs.rotated.is_some() {
        text.push_str(", rotated the log");
    }
    if !logs.deleted.is_empty() {
        text.push_str(&format!(", deleted {} old logs", logs.deleted.len()));
    }
    text
}

/// The `--json` document (also the log entry's details).
fn document(
    loaded: &Loaded,
    plan: &RetentionPlan,
    report: &RetentionReport,
    logs: &LogRotation,
    dry_run: bool,
) -> serde_json::Value {
    let r = &loaded.config.retention;
    json!({
        "dry_run": dry_run,
        "raw_frames": {
            "max_age": r.raw_frames.map(|d| humantime::format_duration(d).to_string()),
            "before": plan.raw_frames_before_us.map(rfc3339_us),
        },
        "records": {
            "max_age": r.records.map(|d| humantime::format_duration(d).to_string()),
            "before": plan.records_before_s.map(rfc3339_s),
        },
        "deleted": report.deleted,
        "dropped_partitions": report.dropped_partitions,
        "logs": {
            "file": loaded.config.log.file,
            "max_age": humantime::format_duration(r.logs).to_string(),
            "rotated": logs.rotated,
            "deleted": logs.deleted,
        },
    })
}

/// The text report: per table what was removed (or would be, on a dry run).
fn text(
    loaded: &Loaded,
    plan: &RetentionPlan,
    report: &RetentionReport,
    logs: &LogRotation,
    dry_run: bool,
) -> String {
    let r = &loaded.config.retention;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    if dry_run {
        out.push_str("retention dry run: nothing was removed\n");
    }
    let age = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
    match (age(r.raw_frames), plan.raw_frames_before_us) {
        (Some(age), Some(before)) => out.push_str(&format!(
            "raw frames: older than {age} (received before {})\n",
            rfc3339_us(before)
        )),
        _ => out.push_str("raw frames: kept forever (retention.raw_frames is not set)\n"),
    }
    match (age(r.records), plan.records_before_s) {
        (Some(age), Some(before)) => out.push_str(&format!(
            "records: older than {age} (event time before {})\n",
            rfc3339_s(before)
        )),
        _ => out.push_str("records: kept forever (retention.records is not set)\n"),
    }
    for (table, n) in &report.deleted {
        out.push_str(&format!("  {table:<16} {verb} {n} rows\n"));
    }
    if !report.dropped_partitions.is_empty() {
        let verb = if dry_run { "would drop" } else { "dropped" };
        out.push_str(&format!(
            "  partitions       {verb} {}\n",
            report.dropped_partitions.join(", ")
        ));
    }
    match &loaded.config.log.file {
        None => out.push_str("logs: no log file configured (log.file), nothing to rotate\n"),
        Some(file) => {
            match &logs.rotated {
                Some(to) => out.push_str(&format!(
                    "logs: {} {} -> {}\n",
                    if dry_run { "would rotate" } else { "rotated" },
                    file.display(),
                    to.display()
                )),
                None => out.push_str(&format!(
                    "logs: {} is empty or missing, not rotated\n",
                    file.display()
                )),
            }
            out.push_str(&format!(
                "  rotated logs older than {}: {} {}\n",
                humantime::format_duration(r.logs),
                if dry_run { "would delete" } else { "deleted" },
                logs.deleted.len()
            ));
            for path in &logs.deleted {
                out.push_str(&format!("    {}\n", path.display()));
            }
        }
    }
    out
}

/// Rotates the log file (`log.file`): copies it to `<file>.<YYYYmmddTHHMMSSZ>.gz` (gzip),
/// then truncates it, so the server, which appends with `O_APPEND`, goes on writing at its
/// start. Lines the server writes between the copy and the truncation are lost (the usual
/// cost of copy-and-truncate). A missing or empty file is not rotated. Then deletes the
/// rotated files (`<file>.*.gz`) whose modification time is older than `retention.logs`.
/// With `dry_run` nothing changes and the result says what would be done. Without a log
/// file configured there is nothing to do.
pub fn rotate_logs(loaded: &Loaded, dry_run: bool) -> Result<LogRotation> {
    let Some(file) = &loaded.config.log.file else {
        return Ok(LogRotation::default());
    };
    let mut rotation = LogRotation::default();
    let len = match std::fs::metadata(file) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if len > 0 {
        let dest = rotated_name(file, jiff::Timestamp::now());
        if !dry_run {
            compress(file, &dest)?;
            OpenOptions::new()
                .write(true)
                .open(file)
                .and_then(|f| f.set_len(0))
                .with_context(|| format!("cannot truncate {}", file.display()))?;
        }
        rotation.rotated = Some(dest);
    }
    let max_age = loaded.config.retention.logs;
    let cutoff = SystemTime::now()
        .checked_sub(max_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut old = Vec::new();
    for path in rotated_files(file)? {
        if Some(&path) == rotation.rotated.as_ref() {
            continue;
        }
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot read {}", path.display()))?;
        if modified < cutoff {
            old.push((modified, path));
        }
    }
    old.sort();
    for (_, path) in old {
        if !dry_run {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot delete {}", path.display()))?;
        }
        rotation.deleted.push(path);
    }
    Ok(rotation)
}

/// `<file>.<YYYYmmddTHHMMSSZ>.gz`, with `-2`, `-3`, ... after the time when that is taken.
fn rotated_name(file: &Path, now: jiff::Timestamp) -> PathBuf {
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let with = |suffix: &str| {
        let mut name = file.as_os_str().to_owned();
        name.push(format!(".{stamp}{suffix}.gz"));
        PathBuf::from(name)
    };
    let mut candidate = with("");
    let mut n = 2;
    while candidate.exists() {
        candidate = with(&format!("-{n}"));
        n += 1;
    }
    candidate
}

/// The rotated files of `file`: `<file>.*.gz` in its directory.
fn rotated_files(file: &Path) -> Result<Vec<PathBuf>> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let entry_name = entry.file_name();
        let Some(entry_name) = entry_name.to_str() else {
            continue;
        };
        if entry_name.len() > prefix.len() + 3
            && entry_name.starts_with(&prefix)
            && entry_name.ends_with(".gz")
        {
            found.push(dir.join(entry_name));
        }
    }
    found.sort();
    Ok(found)
}

/// Gzips `file` into `dest`, through a temporary name so a failed copy leaves no `.gz`.
fn compress(file: &Path, dest: &Path) -> Result<()> {
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = (|| -> Result<()> {
        let mut input = BufReader::new(
            File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        );
        let output =
            File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
        let mut gz = flate2::write::GzEncoder::new(BufWriter::new(output), Default::default());
        std::io::copy(&mut input, &mut gz)
            .with_context(|| format!("cannot compress {}", file.display()))?;
        let mut out = gz.finish()?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&part, dest)
            .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_carry_the_utc_time_and_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svoi.log");
        let now: jiff::Timestamp = "2026-11-25T14:03:09Z".parse().unwrap();
        let first = rotated_name(&file, now);
        assert_eq!(first, dir.path().join("svoi.log.20261125T140309Z.gz"));
        std::fs::write(&first, b"x").unwrap();
        assert_eq!(
            rotated_name(&file, now),
            dir.path().join("svoi.log.20261125T140309Z-2.gz")
        );
    }

    #[test]
    fn only_gz_files_named_after_the_log_are_rotated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svoi.log");
        for name in [
            "svoi.log",
            "svoi.log.20260101T000000Z.gz",
            "svoi.log.x.gz",
            "svoi.log.gz",
            "svoi.log.20260101T000000Z.gz.part",
            "other.log.20260101T000000Z.gz",
            "svoi.logx.1.gz",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = rotated_files(&file)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["svoi.log.20260101T000000Z.gz", "svoi.log.x.gz"]);
    }
}
