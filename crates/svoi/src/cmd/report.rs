//! `svoi report weekly|monthly|quarterly`: the operations report from the database alone
//! (hourly statistics, the data, the maintenance log, the backups), and the capacity forecast
//! `svoi maintenance run quarterly` checks.
//!
//! Gathering ([`gather`]) reads everything once; [`build`] turns what was read into the
//! [`Document`] every format renders, without touching the database or the clock, so the
//! arithmetic is tested on its own.

mod render;
mod svg;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use svoi_store::{DailyFigures, HourlyStats, LogEntry, LogResult, Window};

use crate::config::Loaded;
use crate::timearg::format_us;

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

impl Period {
    /// Days covered, today (UTC) included.
    pub fn days(self) -> i64 {
        match self {
            Period::Weekly => 7,
            Period::Monthly => 30,
            Period::Quarterly => 90,
        }
    }

    /// `weekly`, `monthly` or `quarterly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Quarterly => "quarterly",
        }
    }
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

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Days the capacity forecast fits its trends over.
pub const CAPACITY_DAYS: i64 = 90;

/// The capacity forecast: how fast the data grows and when the disk is full at that pace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Capacity {
    /// Complete days (today excluded) the records trend was fitted over: from the first day
    /// with data within the last 90 to yesterday.
    pub days_fitted: usize,
    /// Records per day on the last complete day, by the fitted trend (least squares).
    pub records_per_day: Option<f64>,
    /// Change of records per day, per day (the trend's slope).
    pub records_growth_per_day: Option<f64>,
    /// Database size at the newest hourly statistics row, bytes.
    pub db_bytes: Option<i64>,
    /// Database growth, bytes per day (least squares over the last size of each day).
    pub db_growth_bytes_per_day: Option<f64>,
    /// Free bytes of the filesystem holding the data.
    pub disk_free_bytes: Option<u64>,
    /// Size of that filesystem, bytes.
    pub disk_total_bytes: Option<u64>,
    /// Free space divided by the database growth; `None` when the database is not growing
    /// (or a figure is missing).
    pub days_until_full: Option<f64>,
}

/// The capacity forecast of the configured database over the last 90 days: records per day
/// from the data ([`svoi_store::Store::daily_figures`]), database size from the hourly
/// statistics, free space of the data filesystem.
pub fn capacity(loaded: &Loaded) -> Result<Capacity> {
    let now_s = crate::oplog::now_us().div_euclid(1_000_000);
    let today = day_floor(now_s);
    let from = today - CAPACITY_DAYS * DAY;
    let mut store = crate::cmd::open_store(loaded)?;
    let daily = store
        .daily_figures(from, now_s + 1)
        .context("cannot read the daily figures")?;
    let hourly = store
        .hourly_stats(from, now_s + 1)
        .context("cannot read the hourly statistics")?;
    let disk = crate::probe::disk_space(&crate::probe::data_dir(&loaded.config));
    Ok(forecast(now_s, &daily, &hourly, disk))
}

/// Midnight UTC starting the day of `t` (Unix seconds).
fn day_floor(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// `YYYY-MM-DD` of the UTC day of `t`.
fn date(t: i64) -> String {
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => ts.strftime("%Y-%m-%d").to_string(),
        Err(_) => format!("@{t}"),
    }
}

/// Least-squares line through `points`: `(slope, intercept)`; `None` with fewer than two
/// distinct x values.
pub fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    Some((slope, mean_y - slope * mean_x))
}

/// The newest row of each UTC day that has a database size: `(day start, hour start of the
/// row, bytes)`, ascending.
fn last_size_per_day(hourly: &[HourlyStats]) -> Vec<(i64, i64, i64)> {
    let mut by_day: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for h in hourly {
        let Some(bytes) = h.db_bytes else { continue };
        let key = (h.hour_start, h.updated_at_us);
        let day = day_floor(h.hour_start);
        match by_day.get(&day) {
            Some(&(hour, updated, _)) if (hour, updated) >= key => {}
            _ => {
                by_day.insert(day, (h.hour_start, h.updated_at_us, bytes));
            }
        }
    }
    by_day
        .into_iter()
        .map(|(day, (hour, _, bytes))| (day, hour, bytes))
        .collect()
}

/// The forecast from the figures of the last 90 days (see [`Capacity`]).
pub fn forecast(
    now_s: i64,
    daily: &[DailyFigures],
    hourly: &[HourlyStats],
    disk: Option<crate::probe::Space>,
) -> Capacity {
    let today = day_floor(now_s);
    let window_start = today - CAPACITY_DAYS * DAY;
    // Records: every complete day from the first with data, days without data counting 0.
    let by_day: BTreeMap<i64, i64> = daily
        .iter()
        .filter(|d| d.day_start >= window_start && d.day_start < today)
        .map(|d| (d.day_start, d.records))
        .collect();
    let mut points = Vec::new();
    if let Some((&first, _)) = by_day.iter().find(|(_, r)| **r > 0) {
        let mut day = first;
        while day < today {
            let x = ((day - first) / DAY) as f64;
            points.push((x, by_day.get(&day).copied().unwrap_or(0) as f64));
            day += DAY;
        }
    }
    let records_fit = least_squares(&points);
    let last_x = points.last().map_or(0.0, |p| p.0);
    // Database size: the last size of each day, at the time it was written.
    let sizes: Vec<(i64, i64, i64)> = last_size_per_day(hourly)
        .into_iter()
        .filter(|(day, _, _)| *day >= window_start)
        .collect();
    let size_points: Vec<(f64, f64)> = sizes
        .iter()
        .map(|(_, hour, bytes)| (*hour as f64 / DAY as f64, *bytes as f64))
        .collect();
    let db_growth = least_squares(&size_points).map(|(slope, _)| slope);
    let disk_free = disk.map(|d| d.free);
    let days_until_full = match (disk_free, db_growth) {
        (Some(free), Some(g)) if g > 0.0 => Some(free as f64 / g),
        _ => None,
    };
    Capacity {
        days_fitted: points.len(),
        records_per_day: records_fit.map(|(slope, b)| (slope * last_x + b).max(0.0)),
        records_growth_per_day: records_fit.map(|(slope, _)| slope),
        db_bytes: sizes.last().map(|s| s.2),
        db_growth_bytes_per_day: db_growth,
        disk_free_bytes: disk_free,
        disk_total_bytes: disk.map(|d| d.total),
        days_until_full,
    }
}

/// The whole report: every figure every format shows.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// `weekly`, `monthly` or `quarterly`.
    pub period: String,
    /// Days covered (today included).
    pub days: i64,
    /// Midnight UTC starting the first day, RFC 3339.
    pub from: String,
    /// When the report was made, RFC 3339 (the end of the period).
    pub generated_at: String,
    /// Version, database, schema, open window.
    pub system: SystemStatus,
    /// The maintenance log of the period.
    pub tasks: Tasks,
    /// One entry per UTC day of the period, oldest first, days without data included.
    pub daily: Vec<Day>,
    /// Sums over the period.
    pub totals: Totals,
    /// The newest backup in the backup directory.
    pub backups: Backups,
    /// The capacity forecast (always over 90 days).
    pub capacity: Capacity,
}

/// The system as it is now.
#[derive(Clone, Debug, Serialize)]
pub struct SystemStatus {
    /// svoi's version.
    pub version: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database URL (password redacted).
    pub database: String,
    /// Database size now, bytes (SQLite file plus WAL).
    pub database_bytes: Option<i64>,
    /// Schema version of the database.
    pub schema_version: Option<u32>,
    /// The open maintenance window.
    pub maintenance_window: Option<WindowDoc>,
}

/// An open maintenance window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowDoc {
    /// Why.
    pub reason: String,
    /// Who opened it.
    pub operator: String,
    /// When, RFC 3339.
    pub since: String,
    /// Planned end, RFC 3339.
    pub planned_end: String,
    /// The pre-maintenance backup.
    pub backup_id: Option<String>,
}

/// Operations done in the period, from the maintenance log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tasks {
    /// Entries in the period.
    pub total: usize,
    /// Counts of each kind's results.
    pub by_kind: BTreeMap<String, ResultCounts>,
    /// Every entry that did not end `ok`, oldest first.
    pub problems: Vec<TaskDoc>,
}

/// How often each result occurred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResultCounts {
    /// Ended ok.
    pub ok: usize,
    /// Done, with a warning.
    pub warning: usize,
    /// Failed.
    pub failed: usize,
}

/// One maintenance log entry.
#[derive(Clone, Debug, Serialize)]
pub struct TaskDoc {
    /// Start, RFC 3339.
    pub at: String,
    /// Kind.
    pub kind: String,
    /// Who ran it.
    pub operator: String,
    /// `warning` or `failed`.
    pub result: String,
    /// Its one-line summary.
    pub summary: String,
}

/// Figures of one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Midnight UTC, Unix seconds.
    pub day_start: i64,
    /// Raw frames received.
    pub frames: i64,
    /// Archive records received.
    pub records: i64,
    /// Frames that failed to decode.
    pub decode_errors: i64,
    /// `decode_errors / frames`; `None` without frames.
    pub decode_error_rate: Option<f64>,
    /// Distinct devices that sent a frame.
    pub devices_active: i64,
    /// Acknowledgement latency, frame-weighted mean of the hourly 50th percentiles, ms.
    pub ack_p50_ms: Option<f64>,
    /// The same of the 95th percentiles.
    pub ack_p95_ms: Option<f64>,
    /// The same of the 99th percentiles.
    pub ack_p99_ms: Option<f64>,
    /// The database size last written that day, bytes.
    pub db_bytes: Option<i64>,
}

/// Sums over the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Raw frames received.
    pub frames: i64,
    /// Archive records received.
    pub records: i64,
    /// Frames that failed to decode.
    pub decode_errors: i64,
    /// `decode_errors / frames`.
    pub decode_error_rate: Option<f64>,
    /// The most devices active on one day.
    pub devices_active_max: i64,
    /// The highest daily acknowledgement p99, ms.
    pub ack_p99_ms_max: Option<f64>,
}

/// The backups in the backup directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Backups {
    /// The directory.
    pub dir: String,
    /// Backups with a readable manifest.
    pub count: usize,
    /// Entries without a readable manifest.
    pub broken: usize,
    /// The newest by creation time.
    pub newest: Option<BackupDoc>,
}

/// One backup, from its `manifest.json` and `verify.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupDoc {
    /// Its ID (the directory name).
    pub id: String,
    /// `manual`, `pre-maintenance`, `pre-restore`.
    pub kind: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Hours since it was created.
    pub age_hours: Option<f64>,
    /// Size of the data file.
    pub bytes: Option<u64>,
    /// The verification's outcome; `None` when it was never verified.
    pub verified: Option<bool>,
    /// When it was verified, RFC 3339 (as `verify.json` says).
    pub verified_at: Option<String>,
}

/// Everything [`build`] needs, read by [`gather`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Inputs {
    /// Now, Unix seconds.
    pub now_s: i64,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database URL, redacted.
    pub database: String,
    /// Database size now.
    pub database_bytes: Option<i64>,
    /// Schema version.
    pub schema_version: Option<u32>,
    /// The open window.
    pub window: Option<Window>,
    /// The maintenance log (all of it; filtered to the period here).
    pub log: Vec<LogEntry>,
    /// Daily figures of at least the period and the 90 days before today.
    pub daily: Vec<DailyFigures>,
    /// Hourly statistics of the same span.
    pub hourly: Vec<HourlyStats>,
    /// The backup directory's contents.
    pub backups: Backups,
    /// The data filesystem.
    pub disk: Option<crate::probe::Space>,
}

/// Reads what the report needs from the configured database, the backup directory and the
/// data filesystem.
pub(crate) fn gather(loaded: &Loaded, period: Period) -> Result<Inputs> {
    let now_s = crate::oplog::now_us().div_euclid(1_000_000);
    let from = day_floor(now_s) - period.days().max(CAPACITY_DAYS) * DAY;
    let (url, options) = crate::cmd::store_options(loaded)?;
    let mut store = crate::cmd::open_store(loaded)?;
    let reader = svoi_store::Reader::open(&url, &options, 1)
        .with_context(|| format!("cannot open a read connection on {url}"))?;
    let size = reader
        .database_size()
        .context("cannot read the database size")?;
    Ok(Inputs {
        now_s,
        backend: match url {
            svoi_store::DbUrl::Sqlite(_) => "sqlite".to_owned(),
            svoi_store::DbUrl::Postgres(_) => "postgres".to_owned(),
        },
        database: url.to_string(),
        database_bytes: i64::try_from(size.file_bytes.saturating_add(size.wal_bytes)).ok(),
        schema_version: Some(store.schema_version()?),
        window: store.current_window()?,
        log: store
            .log_entries()
            .context("cannot read the maintenance log")?,
        daily: store
            .daily_figures(from, now_s + 1)
            .context("cannot read the daily figures")?,
        hourly: store
            .hourly_stats(from, now_s + 1)
            .context("cannot read the hourly statistics")?,
        backups: read_backups(&loaded.config.backup.dir, now_s),
        disk: crate::probe::disk_space(&crate::probe::data_dir(&loaded.config)),
    })
}

/// The backups in `dir` (missing: none). Directories starting with `.` are backups being
/// written; others without a readable `manifest.json` count as broken.
pub(crate) fn read_backups(dir: &Path, now_s: i64) -> Backups {
    let mut out = Backups {
        dir: dir.display().to_string(),
        ..Backups::default()
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut newest: Option<(String, BackupDoc)> = None;
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let manifest: Option<serde_json::Value> = std::fs::read(entry.path().join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(manifest) = manifest.filter(serde_json::Value::is_object) else {
            out.broken += 1;
            continue;
        };
        out.count += 1;
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let created_at = text(&manifest, "created_at");
        let created_s = created_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(jiff::Timestamp::as_second);
        let verify: Option<serde_json::Value> = std::fs::read(entry.path().join("verify.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let doc = BackupDoc {
            id: text(&manifest, "id").unwrap_or_else(|| id.clone()),
            kind: text(&manifest, "kind"),
            created_at: created_at.clone(),
            age_hours: created_s.map(|c| (now_s - c) as f64 / 3600.0),
            bytes: manifest.get("bytes").and_then(serde_json::Value::as_u64),
            verified: verify
                .as_ref()
                .and_then(|v| v.get("ok"))
                .and_then(serde_json::Value::as_bool),
            verified_at: verify.as_ref().and_then(|v| {
                ["finished_at", "verified_at", "at", "created_at"]
                    .iter()
                    .find_map(|k| text(v, k))
            }),
        };
        // Newest by creation time; the ID (a UTC timestamp) breaks ties and stands in.
        let key = format!("{}|{id}", created_at.unwrap_or_default());
        if newest.as_ref().is_none_or(|(k, _)| key > *k) {
            newest = Some((key, doc));
        }
    }
    out.newest = newest.map(|(_, d)| d);
    out
}

/// Frame-weighted mean of the hourly percentile `pick` over `rows` (hours without the
/// percentile are left out; an hour counts at least once).
fn weighted(rows: &[&HourlyStats], pick: impl Fn(&HourlyStats) -> Option<f64>) -> Option<f64> {
    let mut sum = 0.0;
    let mut weight = 0.0;
    for h in rows {
        if let Some(v) = pick(h).filter(|v| v.is_finite()) {
            let w = h.frames.max(1) as f64;
            sum += v * w;
            weight += w;
        }
    }
    (weight > 0.0).then(|| sum / weight)
}

/// The report from what was read.
pub(crate) fn build(period: Period, inputs: &Inputs) -> Document {
    let today = day_floor(inputs.now_s);
    let first = today - (period.days() - 1) * DAY;
    let from_us = first.saturating_mul(1_000_000);
    let now_us = (inputs.now_s + 1).saturating_mul(1_000_000);

    let mut tasks = Tasks::default();
    for e in inputs
        .log
        .iter()
        .filter(|e| e.entry.at_us >= from_us && e.entry.at_us < now_us)
    {
        tasks.total += 1;
        let counts = tasks.by_kind.entry(e.entry.kind.clone()).or_default();
        match e.entry.result {
            LogResult::Ok => counts.ok += 1,
            LogResult::Warning => counts.warning += 1,
            LogResult::Failed => counts.failed += 1,
        }
        if e.entry.result != LogResult::Ok {
            tasks.problems.push(TaskDoc {
                at: format_us(e.entry.at_us),
                kind: e.entry.kind.clone(),
                operator: e.entry.operator.clone(),
                result: e.entry.result.as_str().to_owned(),
                summary: e.entry.summary.clone(),
            });
        }
    }

    let sizes: BTreeMap<i64, i64> = last_size_per_day(&inputs.hourly)
        .into_iter()
        .map(|(day, _, bytes)| (day, bytes))
        .collect();
    let mut daily = Vec::new();
    let mut day = first;
    while day <= today {
        let figures = inputs
            .daily
            .iter()
            .find(|d| d.day_start == day)
            .cloned()
            .unwrap_or_default();
        let hours: Vec<&HourlyStats> = inputs
            .hourly
            .iter()
            .filter(|h| day_floor(h.hour_start) == day)
            .collect();
        daily.push(Day {
            date: date(day),
            day_start: day,
            frames: figures.frames,
            records: figures.records,
            decode_errors: figures.decode_errors,
            decode_error_rate: (figures.frames > 0)
                .then(|| figures.decode_errors as f64 / figures.frames as f64),
            devices_active: figures.devices_active,
            ack_p50_ms: weighted(&hours, |h| h.ack_p50_ms),
            ack_p95_ms: weighted(&hours, |h| h.ack_p95_ms),
            ack_p99_ms: weighted(&hours, |h| h.ack_p99_ms),
            db_bytes: sizes.get(&day).copied(),
        });
        day += DAY;
    }
    let frames: i64 = daily.iter().map(|d| d.frames).sum();
    let decode_errors: i64 = daily.iter().map(|d| d.decode_errors).sum();
    let totals = Totals {
        frames,
        records: daily.iter().map(|d| d.records).sum(),
        decode_errors,
        decode_error_rate: (frames > 0).then(|| decode_errors as f64 / frames as f64),
        devices_active_max: daily.iter().map(|d| d.devices_active).max().unwrap_or(0),
        ack_p99_ms_max: daily.iter().filter_map(|d| d.ack_p99_ms).reduce(f64::max),
    };

    Document {
        period: period.as_str().to_owned(),
        days: period.days(),
        from: format_us(first.saturating_mul(1_000_000)),
        generated_at: format_us(inputs.now_s.saturating_mul(1_000_000)),
        system: SystemStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: inputs.backend.clone(),
            database: inputs.database.clone(),
            database_bytes: inputs.database_bytes,
            schema_version: inputs.schema_version,
            maintenance_window: inputs.window.as_ref().map(|w| WindowDoc {
                reason: w.window.reason.clone(),
                operator: w.window.operator.clone(),
                since: format_us(w.window.started_at_us),
                planned_end: format_us(w.window.planned_end_us),
                backup_id: w.window.backup_id.clone(),
            }),
        },
        tasks,
        daily,
        totals,
        backups: inputs.backups.clone(),
        capacity: forecast(inputs.now_s, &inputs.daily, &inputs.hourly, inputs.disk),
    }
}

/// Writes the report.
pub fn run(args: &ReportArgs, loaded: &Loaded) -> Result<ExitCode> {
    let inputs = gather(loaded, args.period)?;
    let doc = build(args.period, &inputs);
    let text = match args.format {
        Format::Md => render::markdown(&doc),
        Format::Html => render::html(&doc),
        Format::Json => {
            let mut t = serde_json::to_string_pretty(&doc).context("report to json")?;
            t.push('\n');
            t
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("svoi: report written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
