//! `svoi maintenance run daily|weekly|monthly|quarterly`: the scheduled procedures, each a
//! checklist (smoke's [`Report`]: pass, fail or skip per item) that exits 1 when an item needs
//! a person, and one `scheduled` entry in the maintenance log with every item.
//!
//! - daily: the server's health, this host's resources against the `[alerts]` thresholds,
//!   ERROR lines of the last 24 hours in `log.file`, the alerts that fire now, the freshness and
//!   verification of the newest backup, an overdue maintenance window;
//! - weekly: log rotation and cleanup, backup pruning, database optimisation, index statistics;
//! - monthly: a full restore test of the newest backup, performance figures (commit and
//!   acknowledgement latency now and over 30 days of hourly statistics), slow queries;
//! - quarterly: capacity planning (growth of records per day and of the database, days until
//!   the disk is full; under 90 days fails).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use svoi_store::LogResult;

use super::Schedule;
use crate::cmd::alerts::{self, State};
use crate::cmd::smoke::api_base;
use crate::cmd::smoke::report::{Outcome, Report, fail, one_line, pass, skip};
use crate::config::Loaded;
use crate::oplog::{Op, now_us};
use crate::probe::{self, Api, GIB, Scrape, Space};

/// Longest wait of one HTTP request to the server.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How far back the daily error scan reads the log.
const ERROR_SCAN: Duration = Duration::from_secs(24 * 3600);

/// How many ERROR lines the daily error scan shows.
const ERROR_LINES_SHOWN: usize = 3;

/// Time between the two scrapes the daily alert evaluation computes rates over.
const ALERT_WINDOW: Duration = Duration::from_secs(3);

/// How long the CPU is sampled.
const CPU_SAMPLE: Duration = Duration::from_secs(1);

/// The quarterly capacity check fails when the disk is full sooner than this.
const CAPACITY_MIN_DAYS: f64 = 90.0;

/// How far back the monthly procedure reads the hourly statistics.
const PERFORMANCE_DAYS: i64 = 30;

impl Schedule {
    /// `daily`, `weekly`, `monthly` or `quarterly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Daily => "daily",
            Schedule::Weekly => "weekly",
            Schedule::Monthly => "monthly",
            Schedule::Quarterly => "quarterly",
        }
    }
}

/// A procedure's outcome: the checklist and, for people, longer sections printed after it
/// (database statistics).
pub struct Procedure {
    /// The checklist.
    pub report: Report,
    /// `(title, text)` sections.
    pub sections: Vec<(&'static str, String)>,
}

/// Runs a scheduled procedure, prints its checklist (or JSON document), logs it and returns
/// the exit code: 0 when no item failed, 1 otherwise. Errors only for unusable flags.
pub fn run(loaded: &Loaded, schedule: Schedule, api: Option<&str>, json: bool) -> Result<ExitCode> {
    let base = api_base(loaded, api)?;
    let op = Op::begin("scheduled");
    let procedure = match schedule {
        Schedule::Daily => daily(loaded, &base),
        Schedule::Weekly => weekly(loaded),
        Schedule::Monthly => monthly(loaded, &base),
        Schedule::Quarterly => quarterly(loaded),
    };
    let report = &procedure.report;
    let items = report.json()["checks"].clone();
    if json {
        let sections: serde_json::Map<String, serde_json::Value> = procedure
            .sections
            .iter()
            .map(|(t, s)| ((*t).to_string(), json!(s)))
            .collect();
        let doc = json!({
            "schedule": schedule.as_str(),
            "ok": report.ok(),
            "checks": items,
            "sections": sections,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", report.text());
        for (title, text) in &procedure.sections {
            println!("\n== {title}\n{}", text.trim_end());
        }
    }
    let result = if report.ok() {
        LogResult::Ok
    } else {
        LogResult::Failed
    };
    op.finish(
        loaded,
        result,
        format!("maintenance run {}", report.summary()),
        json!({ "schedule": schedule.as_str(), "items": items }),
    );
    Ok(ExitCode::from(report.exit_code()))
}

/// A checklist (the health check, the post-check) as one item: its summary, and the failed
/// items with their details.
pub fn as_item(report: &Report) -> Outcome {
    let failed: Vec<String> = report.json()["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap_or_default(),
                c["detail"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if failed.is_empty() {
        pass(report.summary())
    } else {
        fail(format!("{}; {}", report.summary(), failed.join("; ")))
    }
}

/// `12.3 GiB`.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB)
}

/// `42 %`.
fn percent(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

/// The daily procedure.
pub fn daily(loaded: &Loaded, base: &str) -> Procedure {
    let t = &loaded.config.alerts;
    let mut report = Report::new("daily");
    report.run("health", || {
        match crate::cmd::smoke::health(loaded, Some(base)) {
            Ok(h) => as_item(&h),
            Err(e) => fail(format!("{e:#}")),
        }
    });
    let dir = probe::data_dir(&loaded.config);
    report.run("disk", || {
        disk_verdict(probe::disk_space(&dir), t.disk_free_ratio.get(), &dir)
    });
    report.run("memory", || {
        memory_verdict(probe::memory(), t.memory_ratio.get())
    });
    report.run("cpu", || {
        cpu_verdict(probe::cpu_busy(CPU_SAMPLE), t.cpu_ratio.get())
    });
    report.run("log", || error_scan(loaded.config.log.file.as_deref()));
    report.run("alerts", || {
        let api = Api::new(base, HTTP_TIMEOUT);
        let inputs = alerts::gather(&api, ALERT_WINDOW);
        alerts_verdict(&alerts::evaluate(&inputs, t))
    });
    report.run("backup", || {
        let backups =
            crate::cmd::report::read_backups(&loaded.config.backup.dir, now_us() / 1_000_000);
        backup_verdict(&backups, t.backup_max_age)
    });
    report.run("window", || match open_window(loaded) {
        Ok(w) => window_verdict(w.as_ref(), now_us()),
        Err(e) => fail(format!("{e:#}")),
    });
    Procedure {
        report,
        sections: Vec::new(),
    }
}

/// The open maintenance window of the configured database.
fn open_window(loaded: &Loaded) -> Result<Option<svoi_store::Window>> {
    let mut store = crate::cmd::open_store(loaded)?;
    Ok(store.current_window()?)
}

/// Free space of the data filesystem against `alerts.disk_free_ratio`.
pub fn disk_verdict(space: Option<Space>, min_free: f64, dir: &std::path::Path) -> Outcome {
    let Some(space) = space else {
        return fail(format!("cannot read the filesystem of {}", dir.display()));
    };
    let text = format!(
        "{} free of {} ({}) on the filesystem of {} (limit {})",
        gib(space.free),
        gib(space.total),
        percent(space.free_ratio()),
        dir.display(),
        percent(min_free)
    );
    if space.free_ratio() < min_free {
        fail(text)
    } else {
        pass(text)
    }
}

/// Used memory of this host against `alerts.memory_ratio`.
pub fn memory_verdict(memory: Space, max_used: f64) -> Outcome {
    let used = 1.0 - memory.free_ratio();
    let text = format!(
        "{} used of {} (limit {})",
        percent(used),
        gib(memory.total),
        percent(max_used)
    );
    if used > max_used {
        fail(text)
    } else {
        pass(text)
    }
}

/// Busy CPU fraction of this host against `alerts.cpu_ratio`.
pub fn cpu_verdict(busy: f64, max_busy: f64) -> Outcome {
    let text = format!(
        "{} busy over {} s (limit {})",
        percent(busy),
        CPU_SAMPLE.as_secs(),
        percent(max_busy)
    );
    if busy > max_busy {
        fail(text)
    } else {
        pass(text)
    }
}

/// ERROR lines of the last 24 hours in the log file: none passes; any fails with the count
/// and the first lines.
pub fn error_scan(file: Option<&std::path::Path>) -> Outcome {
    let Some(path) = file else {
        return skip("log.file not set (the log goes to standard error or the journal)");
    };
    if !path.exists() {
        return pass(format!("{} does not exist yet: no errors", path.display()));
    }
    match probe::recent_errors(path, ERROR_SCAN, usize::MAX) {
        Err(e) => fail(format!("{e:#}")),
        Ok(lines) if lines.is_empty() => pass(format!(
            "no ERROR line in the last 24 h of {}",
            path.display()
        )),
        Ok(lines) => {
            let first: Vec<String> = lines
                .iter()
                .take(ERROR_LINES_SHOWN)
                .map(|l| one_line(l, 120))
                .collect();
            fail(format!(
                "{} ERROR line(s) in the last 24 h of {}; first: {}",
                lines.len(),
                path.display(),
                first.join(" | ")
            ))
        }
    }
}

/// The evaluated alerts: firing ones fail (named); suppressed warnings are mentioned.
pub fn alerts_verdict(outcomes: &[alerts::Outcome]) -> Outcome {
    let named = |state: State| -> Vec<String> {
        outcomes
            .iter()
            .filter(|o| o.state == state)
            .map(|o| format!("{} ({})", o.alert.name, o.detail))
            .collect()
    };
    let firing = named(State::Firing);
    let suppressed = named(State::Suppressed);
    let note = if suppressed.is_empty() {
        String::new()
    } else {
        format!(
            "; suppressed by the maintenance window: {}",
            suppressed.join(", ")
        )
    };
    if firing.is_empty() {
        let evaluated = outcomes.iter().filter(|o| o.state != State::NoData).count();
        pass(format!(
            "none firing ({evaluated} of {} evaluated){note}",
            outcomes.len()
        ))
    } else {
        fail(format!("firing: {}{note}", firing.join(", ")))
    }
}

/// The newest backup is younger than `alerts.backup_max_age` and did not fail verification.
pub fn backup_verdict(backups: &crate::cmd::report::Backups, max_age: Duration) -> Outcome {
    let Some(newest) = &backups.newest else {
        return fail(format!(
            "no backup in {} ({} broken entries)",
            backups.dir, backups.broken
        ));
    };
    let limit_h = max_age.as_secs_f64() / 3600.0;
    let age = newest
        .age_hours
        .map_or("unknown age".to_string(), |h| format!("{h:.1} h old"));
    let verified = match (newest.verified, &newest.verified_at) {
        (None, _) => "not verified yet".to_string(),
        (Some(true), at) => format!(
            "verified ok{}",
            at.as_ref().map_or(String::new(), |a| format!(" at {a}"))
        ),
        (Some(false), at) => format!(
            "verification FAILED{}",
            at.as_ref().map_or(String::new(), |a| format!(" at {a}"))
        ),
    };
    let text = format!(
        "newest {} ({age}, limit {limit_h:.0} h), {verified}",
        newest.id
    );
    let stale = newest.age_hours.is_none_or(|h| h > limit_h);
    if stale || newest.verified == Some(false) {
        fail(text)
    } else {
        pass(text)
    }
}

/// An open window whose planned end has passed fails.
pub fn window_verdict(window: Option<&svoi_store::Window>, now_us: i64) -> Outcome {
    let Some(w) = window else {
        return pass("no maintenance window open");
    };
    let since = super::log::time_text(w.window.started_at_us);
    let until = super::log::time_text(w.window.planned_end_us);
    if now_us > w.window.planned_end_us {
        let over = super::log::duration_text((now_us - w.window.planned_end_us) / 1000);
        fail(format!(
            "window #{} ({}) open since {since}, planned end {until} passed {over} ago: \
             close it with `svoi maintenance end`",
            w.id, w.window.reason
        ))
    } else {
        pass(format!(
            "window #{} ({}) open since {since}, until {until}",
            w.id, w.window.reason
        ))
    }
}

/// The weekly procedure.
pub fn weekly(loaded: &Loaded) -> Procedure {
    let mut report = Report::new("weekly");
    let mut sections = Vec::new();
    report.run("logs", || rotation_item(loaded));
    report.run("backups.prune", || {
        let b = &loaded.config.backup;
        match crate::cmd::backup::prune(loaded, b.keep_days, b.keep_last, false) {
            Ok(p) => prune_verdict(&p, b.keep_days, b.keep_last),
            Err(e) => fail(format!("{e:#}")),
        }
    });
    report.run("optimize", || optimize_item(loaded));
    let stats = db_stats(loaded);
    report.run("indexes", || match &stats {
        Ok(s) => index_verdict(s),
        Err(e) => fail(format!("{e:#}")),
    });
    if let Ok(s) = &stats {
        sections.push(("database statistics", crate::cmd::db::stats_text(s)));
    }
    Procedure { report, sections }
}

/// The configured database's statistics.
fn db_stats(loaded: &Loaded) -> Result<svoi_store::DbStats> {
    let mut store = crate::cmd::open_store(loaded)?;
    Ok(store.db_stats()?)
}

/// Rotates the log file and deletes rotated files older than `retention.logs`.
fn rotation_item(loaded: &Loaded) -> Outcome {
    let Some(file) = &loaded.config.log.file else {
        return skip("log.file not set (the log goes to standard error or the journal)");
    };
    match crate::cmd::retention::rotate_logs(loaded, false) {
        Err(e) => fail(format!("{e:#}")),
        Ok(r) => {
            let rotated = match &r.rotated {
                Some(p) => format!("{} rotated to {}", file.display(), p.display()),
                None => format!("{} empty or missing: nothing to rotate", file.display()),
            };
            let keep = humantime::format_duration(loaded.config.retention.logs);
            pass(format!(
                "{rotated}; {} rotated file(s) older than {keep} deleted",
                r.deleted.len()
            ))
        }
    }
}

/// Backups deleted and kept; entries whose manifest does not read need a person.
pub fn prune_verdict(
    p: &crate::cmd::backup::PruneOutcome,
    keep_days: usize,
    keep_last: usize,
) -> Outcome {
    let text = format!(
        "{} deleted ({:.1} MiB freed), {} kept (younger than {keep_days} days or among the \
         newest {keep_last})",
        p.deleted.len(),
        p.freed_bytes as f64 / f64::from(1u32 << 20),
        p.kept.len()
    );
    if p.broken.is_empty() {
        pass(text)
    } else {
        fail(format!(
            "{text}; broken entries (no readable manifest): {}",
            p.broken.join(", ")
        ))
    }
}

/// `Store::optimize`, logged as an `optimize` entry like `svoi db optimize`; a failed
/// integrity check fails.
fn optimize_item(loaded: &Loaded) -> Outcome {
    let op = Op::begin("optimize");
    let report = crate::cmd::open_store(loaded).and_then(|mut s| Ok(s.optimize()?));
    let (outcome, result, details) = match report {
        Err(e) => {
            let e = format!("{e:#}");
            (fail(e.clone()), LogResult::Failed, json!({ "error": e }))
        }
        Ok(r) => {
            let steps: Vec<String> = r.steps.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let details = json!({ "integrity_ok": r.integrity_ok, "steps": steps });
            if r.integrity_ok {
                (pass(steps.join("; ")), LogResult::Ok, details)
            } else {
                (
                    fail(format!(
                        "the integrity check found problems; {}",
                        steps.join("; ")
                    )),
                    LogResult::Failed,
                    details,
                )
            }
        }
    };
    let summary = match result {
        LogResult::Ok => "optimized, integrity ok (weekly procedure)".to_string(),
        _ => format!("optimize failed (weekly procedure): {}", outcome.1),
    };
    op.finish(loaded, result, summary, details);
    outcome
}

/// Index sizes; on PostgreSQL, indexes never scanned since the statistics were reset are
/// named (primary keys and unique constraints, which enforce something, are left out).
pub fn index_verdict(stats: &svoi_store::DbStats) -> Outcome {
    let total: i64 = stats.indexes.iter().filter_map(|i| i.bytes).sum();
    let head = format!(
        "{} indexes, {:.1} MiB",
        stats.indexes.len(),
        total as f64 / f64::from(1u32 << 20)
    );
    if stats.indexes.iter().all(|i| i.scans.is_none()) {
        return pass(format!("{head}; usage is not tracked on this backend"));
    }
    let unused: Vec<&str> = stats
        .indexes
        .iter()
        .filter(|i| i.scans == Some(0))
        .filter(|i| !i.name.ends_with("_pkey") && !i.name.ends_with("_key"))
        .map(|i| i.name.as_str())
        .collect();
    if unused.is_empty() {
        pass(format!("{head}; every index has been used"))
    } else {
        pass(format!(
            "{head}; UNUSED since the statistics were reset (consider dropping): {}",
            unused.join(", ")
        ))
    }
}

/// The monthly procedure.
pub fn monthly(loaded: &Loaded, base: &str) -> Procedure {
    let t = &loaded.config.alerts;
    let mut report = Report::new("monthly");
    let mut sections = Vec::new();
    report.run("restore-test", || {
        match crate::cmd::backup::verify(loaded, "latest") {
            Ok(v) => {
                let (status, detail) = as_item(&v.report);
                (
                    status,
                    format!("backup {} restored into a scratch database: {detail}", v.id),
                )
            }
            Err(e) => fail(format!("{e:#}")),
        }
    });
    report.run("performance", || {
        let api = Api::new(base, HTTP_TIMEOUT);
        match api.scrape() {
            Ok(scrape) => performance_verdict(&scrape, t.commit_p99),
            Err(e) => fail(format!("{e:#}")),
        }
    });
    report.run("ack.history", || {
        let now_s = now_us() / 1_000_000;
        let from = now_s - PERFORMANCE_DAYS * 86_400;
        match crate::cmd::open_store(loaded).and_then(|mut s| Ok(s.hourly_stats(from, now_s + 1)?))
        {
            Ok(rows) => ack_history(&rows),
            Err(e) => fail(format!("{e:#}")),
        }
    });
    let stats = db_stats(loaded);
    report.run("slow-queries", || match &stats {
        Ok(s) => slow_query_verdict(&s.slow_queries, t.commit_p99),
        Err(e) => fail(format!("{e:#}")),
    });
    if let Ok(s) = &stats {
        sections.push(("database statistics", crate::cmd::db::stats_text(s)));
    }
    Procedure { report, sections }
}

/// Commit and acknowledgement latency percentiles since the server started (cumulative
/// histograms of one scrape); a commit p99 above `alerts.commit_p99` fails.
pub fn performance_verdict(scrape: &Scrape, commit_limit: Duration) -> Outcome {
    let p = |name: &str, q: f64| probe::quantile(q, &scrape.buckets(name));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.1} ms", s * 1000.0));
    let commit99 = p("svoi_commit_duration_seconds", 0.99);
    let text = format!(
        "since the server started: commit p50 {} p99 {} (limit {} ms); acknowledgement p50 {} \
         p99 {}",
        ms(p("svoi_commit_duration_seconds", 0.5)),
        ms(commit99),
        commit_limit.as_millis(),
        ms(p("svoi_ack_latency_seconds", 0.5)),
        ms(p("svoi_ack_latency_seconds", 0.99)),
    );
    match commit99 {
        Some(v) if v > commit_limit.as_secs_f64() => fail(text),
        _ => pass(text),
    }
}

/// Acknowledgement latency over the hourly statistics: the frame-weighted mean of the hourly
/// p99 and the worst hour. Information only.
pub fn ack_history(rows: &[svoi_store::HourlyStats]) -> Outcome {
    let with: Vec<(f64, f64, i64)> = rows
        .iter()
        .filter_map(|r| {
            r.ack_p99_ms
                .map(|p| (p, r.frames.max(1) as f64, r.hour_start))
        })
        .collect();
    if with.is_empty() {
        return skip(format!(
            "no hourly statistics with acknowledgement latency in the last {PERFORMANCE_DAYS} days"
        ));
    }
    let weight: f64 = with.iter().map(|(_, w, _)| w).sum();
    let mean = with.iter().map(|(p, w, _)| p * w).sum::<f64>() / weight;
    let (worst, _, hour) = with
        .iter()
        .copied()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, 0.0, 0));
    pass(format!(
        "{} hours over {PERFORMANCE_DAYS} days: acknowledgement p99 {mean:.1} ms (frame-weighted), \
         worst hour {worst:.1} ms at {}",
        with.len(),
        super::log::time_text(hour * 1_000_000)
    ))
}

/// `pg_stat_statements`' slowest statement against `alerts.commit_p99`; skipped where the
/// extension is not available (always on SQLite).
pub fn slow_query_verdict(
    slow: &std::result::Result<Vec<svoi_store::SlowQuery>, String>,
    limit: Duration,
) -> Outcome {
    match slow {
        Err(why) => skip(why.clone()),
        Ok(list) => match list.first() {
            None => pass("none recorded by pg_stat_statements"),
            Some(q) => {
                let text = format!(
                    "slowest by mean time {:.1} ms over {} calls (limit {} ms): {}",
                    q.mean_ms,
                    q.calls,
                    limit.as_millis(),
                    one_line(&q.query, 120)
                );
                if q.mean_ms > limit.as_secs_f64() * 1000.0 {
                    fail(text)
                } else {
                    pass(text)
                }
            }
        },
    }
}

/// The quarterly procedure: capacity planning.
pub fn quarterly(loaded: &Loaded) -> Procedure {
    let mut report = Report::new("quarterly");
    match crate::cmd::report::capacity(loaded) {
        Err(e) => {
            report.push("capacity", fail(format!("{e:#}")), 0);
        }
        Ok(c) => {
            report.push("records", records_item(&c), 0);
            report.push("database", database_item(&c), 0);
            report.push("disk.forecast", forecast_verdict(&c), 0);
        }
    }
    Procedure {
        report,
        sections: Vec::new(),
    }
}

/// Records per day and their trend.
fn records_item(c: &crate::cmd::report::Capacity) -> Outcome {
    match (c.records_per_day, c.records_growth_per_day) {
        (Some(per_day), Some(growth)) => pass(format!(
            "{per_day:.0} records/day, {growth:+.1} records/day per day (fitted over {} days)",
            c.days_fitted
        )),
        _ => skip(format!(
            "not enough days with data for a trend ({} complete days)",
            c.days_fitted
        )),
    }
}

/// Database size and growth.
fn database_item(c: &crate::cmd::report::Capacity) -> Outcome {
    match (c.db_bytes, c.db_growth_bytes_per_day) {
        (Some(size), Some(growth)) => pass(format!(
            "{} now, {:+.1} MiB/day",
            gib(u64::try_from(size).unwrap_or(0)),
            growth / f64::from(1u32 << 20)
        )),
        (Some(size), None) => skip(format!(
            "{} now; not enough hourly statistics for a trend",
            gib(u64::try_from(size).unwrap_or(0))
        )),
        _ => skip("no hourly statistics with the database size yet"),
    }
}

/// Days until the disk is full: under 90 fails.
pub fn forecast_verdict(c: &crate::cmd::report::Capacity) -> Outcome {
    let free = match (c.disk_free_bytes, c.disk_total_bytes) {
        (Some(free), Some(total)) => format!("{} free of {}", gib(free), gib(total)),
        _ => return fail("cannot read the free space of the data filesystem"),
    };
    match c.days_until_full {
        None => pass(format!("{free}; the database is not growing: no date")),
        Some(days) if days < CAPACITY_MIN_DAYS => fail(format!(
            "{free}; full in {days:.0} days at the current growth (limit {CAPACITY_MIN_DAYS:.0})"
        )),
        Some(days) => pass(format!(
            "{free}; full in {days:.0} days at the current growth"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use svoi_store::{HourlyStats, NewWindow, SlowQuery, Window};

    use super::*;
    use crate::cmd::alerts::ALERTS;
    use crate::cmd::report::{BackupDoc, Backups, Capacity};
    use crate::cmd::smoke::report::Status;

    const GB: u64 = 1 << 30;

    #[test]
    fn host_figures_fail_past_their_thresholds() {
        let dir = Path::new("/data");
        let space = |free| {
            Some(Space {
                free,
                total: 100 * GB,
            })
        };
        assert_eq!(disk_verdict(space(11 * GB), 0.10, dir).0, Status::Pass);
        let (status, detail) = disk_verdict(space(9 * GB), 0.10, dir);
        assert_eq!(status, Status::Fail);
        assert_eq!(
            detail,
            "9.0 GiB free of 100.0 GiB (9 %) on the filesystem of /data (limit 10 %)"
        );
        assert_eq!(disk_verdict(None, 0.10, dir).0, Status::Fail);

        let mem = |free| Space {
            free,
            total: 10 * GB,
        };
        assert_eq!(memory_verdict(mem(2 * GB), 0.9).0, Status::Pass);
        assert_eq!(memory_verdict(mem(GB / 2), 0.9).0, Status::Fail);
        assert_eq!(cpu_verdict(0.5, 0.9).0, Status::Pass);
        assert_eq!(cpu_verdict(0.95, 0.9).0, Status::Fail);
    }

    #[test]
    fn the_error_scan_counts_recent_error_lines_and_shows_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svoi.log");
        assert_eq!(error_scan(None).0, Status::Skip);
        assert_eq!(error_scan(Some(&log)).0, Status::Pass, "missing file");
        let now = jiff::Timestamp::now();
        let old = now - jiff::SignedDuration::from_hours(30);
        let recent = now - jiff::SignedDuration::from_hours(2);
        std::fs::write(
            &log,
            format!(
                "{old} ERROR svoi: long ago\n{recent}  INFO svoi: fine\n{recent} ERROR svoi: \
                 first\n{now} ERROR svoi: second\n"
            ),
        )
        .unwrap();
        let (status, detail) = error_scan(Some(&log));
        assert_eq!(status, Status::Fail);
        assert!(
            detail.starts_with("2 ERROR line(s) in the last 24 h"),
            "{detail}"
        );
        assert!(detail.contains("svoi: first |"), "{detail}");
        assert!(!detail.contains("long ago"), "{detail}");
        std::fs::write(&log, format!("{recent}  INFO svoi: fine\n")).unwrap();
        assert_eq!(error_scan(Some(&log)).0, Status::Pass);
    }

    fn outcome(name: &str, state: State) -> alerts::Outcome {
        alerts::Outcome {
            alert: *ALERTS.iter().find(|a| a.name == name).unwrap(),
            state,
            detail: "figure".into(),
        }
    }

    #[test]
    fn firing_alerts_fail_and_suppressed_ones_are_mentioned() {
        let quiet = [
            outcome("ServerDown", State::Ok),
            outcome("HighCpu", State::NoData),
        ];
        let (status, detail) = alerts_verdict(&quiet);
        assert_eq!(status, Status::Pass);
        assert_eq!(detail, "none firing (1 of 2 evaluated)");
        let maint = [outcome("QueueDepthHigh", State::Suppressed)];
        let (status, detail) = alerts_verdict(&maint);
        assert_eq!(status, Status::Pass);
        assert!(detail.contains("suppressed by the maintenance window: QueueDepthHigh"));
        let firing = [
            outcome("ServerDown", State::Firing),
            outcome("HighCpu", State::Ok),
        ];
        let (status, detail) = alerts_verdict(&firing);
        assert_eq!(status, Status::Fail);
        assert_eq!(detail, "firing: ServerDown (figure)");
    }

    fn backups(age_hours: f64, verified: Option<bool>) -> Backups {
        Backups {
            dir: "backups".into(),
            count: 1,
            broken: 0,
            newest: Some(BackupDoc {
                id: "20261125T020000Z".into(),
                age_hours: Some(age_hours),
                verified,
                ..BackupDoc::default()
            }),
        }
    }

    #[test]
    fn the_newest_backup_must_be_fresh_and_not_failed() {
        let limit = Duration::from_secs(26 * 3600);
        let (status, detail) = backup_verdict(&backups(3.0, None), limit);
        assert_eq!(status, Status::Pass);
        assert_eq!(
            detail,
            "newest 20261125T020000Z (3.0 h old, limit 26 h), not verified yet"
        );
        assert_eq!(
            backup_verdict(&backups(3.0, Some(true)), limit).0,
            Status::Pass
        );
        assert_eq!(
            backup_verdict(&backups(27.0, Some(true)), limit).0,
            Status::Fail
        );
        let (status, detail) = backup_verdict(&backups(1.0, Some(false)), limit);
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("verification FAILED"), "{detail}");
        let none = Backups {
            dir: "backups".into(),
            ..Backups::default()
        };
        assert_eq!(backup_verdict(&none, limit).0, Status::Fail);
    }

    #[test]
    fn an_open_window_past_its_planned_end_fails() {
        let w = Window {
            id: 3,
            window: NewWindow {
                started_at_us: 1_000_000_000,
                planned_end_us: 4_600_000_000,
                reason: "disk swap".into(),
                operator: "bob".into(),
                backup_id: None,
            },
            silence_id: None,
            ended_at_us: None,
            result: None,
        };
        assert_eq!(window_verdict(None, 0).0, Status::Pass);
        assert_eq!(window_verdict(Some(&w), 4_600_000_000).0, Status::Pass);
        let (status, detail) = window_verdict(Some(&w), 4_600_000_000 + 120_000_000);
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("#3 (disk swap)"), "{detail}");
        assert!(detail.contains("passed 2m 00s ago"), "{detail}");
    }

    #[test]
    fn capacity_under_ninety_days_fails() {
        let c = |days| Capacity {
            disk_free_bytes: Some(50 * GB),
            disk_total_bytes: Some(100 * GB),
            days_until_full: days,
            ..Capacity::default()
        };
        assert_eq!(forecast_verdict(&c(Some(400.0))).0, Status::Pass);
        assert_eq!(forecast_verdict(&c(Some(90.0))).0, Status::Pass);
        let (status, detail) = forecast_verdict(&c(Some(89.4)));
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("full in 89 days"), "{detail}");
        assert_eq!(forecast_verdict(&c(None)).0, Status::Pass);
        assert_eq!(forecast_verdict(&Capacity::default()).0, Status::Fail);
    }

    #[test]
    fn prune_fails_on_broken_entries_only() {
        let mut p = crate::cmd::backup::PruneOutcome {
            kept: vec!["b".into(), "c".into()],
            deleted: vec!["a".into()],
            broken: Vec::new(),
            freed_bytes: 3 << 20,
            dry_run: false,
        };
        let (status, detail) = prune_verdict(&p, 90, 7);
        assert_eq!(status, Status::Pass);
        assert!(
            detail.starts_with("1 deleted (3.0 MiB freed), 2 kept"),
            "{detail}"
        );
        p.broken.push("20260101T000000Z".into());
        let (status, detail) = prune_verdict(&p, 90, 7);
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("20260101T000000Z"), "{detail}");
    }

    fn stats(indexes: &[(&str, Option<i64>)]) -> svoi_store::DbStats {
        svoi_store::DbStats {
            server_version: "x".into(),
            database_bytes: 0,
            tables: Vec::new(),
            indexes: indexes
                .iter()
                .map(|(name, scans)| svoi_store::IndexUsage {
                    name: (*name).into(),
                    table: "t".into(),
                    bytes: Some(1 << 20),
                    scans: *scans,
                })
                .collect(),
            slow_queries: Err("n/a".into()),
        }
    }

    #[test]
    fn unused_indexes_are_named_but_keys_are_not() {
        let detail = index_verdict(&stats(&[("a", None), ("b", None)])).1;
        assert_eq!(
            detail,
            "2 indexes, 2.0 MiB; usage is not tracked on this backend"
        );
        let s = stats(&[
            ("records_pkey", Some(0)),
            ("used", Some(5)),
            ("idle", Some(0)),
        ]);
        let (status, detail) = index_verdict(&s);
        assert_eq!(status, Status::Pass);
        assert!(detail.ends_with("(consider dropping): idle"), "{detail}");
        let detail = index_verdict(&stats(&[("used", Some(1))])).1;
        assert!(detail.ends_with("every index has been used"), "{detail}");
    }

    #[test]
    fn performance_fails_on_a_slow_commit_percentile() {
        let page = |le_1: u64, inf: u64| {
            Scrape::parse(&format!(
                "svoi_commit_duration_seconds_bucket{{le=\"0.01\"}} 0\n\
                 svoi_commit_duration_seconds_bucket{{le=\"1\"}} {le_1}\n\
                 svoi_commit_duration_seconds_bucket{{le=\"4\"}} {inf}\n\
                 svoi_commit_duration_seconds_bucket{{le=\"+Inf\"}} {inf}\n"
            ))
        };
        let limit = Duration::from_secs(1);
        let (status, detail) = performance_verdict(&page(100, 100), limit);
        assert_eq!(status, Status::Pass, "{detail}");
        assert!(detail.contains("p99 990."), "{detail}");
        assert!(detail.contains("ms (limit 1000 ms)"), "{detail}");
        assert!(detail.contains("acknowledgement p50 - p99 -"), "{detail}");
        assert_eq!(performance_verdict(&page(90, 100), limit).0, Status::Fail);
        assert_eq!(
            performance_verdict(&Scrape::default(), limit).0,
            Status::Pass
        );
    }

    fn hour(h: i64, frames: i64, p99: Option<f64>) -> HourlyStats {
        HourlyStats {
            hour_start: h * 3600,
            instance: "a:5221".into(),
            frames,
            records: 0,
            duplicates: 0,
            decode_errors: 0,
            acks: 0,
            ack_p50_ms: None,
            ack_p95_ms: None,
            ack_p99_ms: p99,
            devices_active: 0,
            connections_max: 0,
            db_bytes: None,
            updated_at_us: 0,
        }
    }

    #[test]
    fn the_ack_history_is_frame_weighted_with_the_worst_hour() {
        assert_eq!(ack_history(&[hour(1, 5, None)]).0, Status::Skip);
        let rows = [
            hour(1, 300, Some(10.0)),
            hour(2, 100, Some(50.0)),
            hour(3, 0, None),
        ];
        let (status, detail) = ack_history(&rows);
        assert_eq!(status, Status::Pass);
        assert!(detail.starts_with("2 hours over 30 days"), "{detail}");
        assert!(detail.contains("p99 20.0 ms (frame-weighted)"), "{detail}");
        assert!(
            detail.contains("worst hour 50.0 ms at 1970-01-01T02:00:00Z"),
            "{detail}"
        );
    }

    #[test]
    fn slow_queries_skip_without_statistics_and_fail_past_the_limit() {
        let limit = Duration::from_secs(1);
        assert_eq!(
            slow_query_verdict(&Err("sqlite".into()), limit).0,
            Status::Skip
        );
        assert_eq!(slow_query_verdict(&Ok(Vec::new()), limit).0, Status::Pass);
        let q = |mean_ms| SlowQuery {
            query: "SELECT\n  1".into(),
            calls: 3,
            mean_ms,
            total_ms: 3.0 * mean_ms,
        };
        let (status, detail) = slow_query_verdict(&Ok(vec![q(12.0)]), limit);
        assert_eq!(status, Status::Pass);
        assert!(detail.ends_with("(limit 1000 ms): SELECT 1"), "{detail}");
        assert_eq!(
            slow_query_verdict(&Ok(vec![q(1500.0)]), limit).0,
            Status::Fail
        );
    }

    #[test]
    fn a_checklist_becomes_one_item_naming_its_failures() {
        let mut r = Report::new("health");
        r.push("api.health", pass("200"), 0);
        assert_eq!(as_item(&r), pass("health: 1 passed, 0 failed, 0 skipped"));
        r.push("disk", fail("9 % free"), 0);
        r.push("memory", skip("remote"), 0);
        assert_eq!(
            as_item(&r),
            fail("health: 1 passed, 1 failed (disk), 1 skipped; disk: 9 % free")
        );
    }
}
