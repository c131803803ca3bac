//! `svoi alerts check|list`: the alerts of `ops/alerts/prometheus-rules.yml` evaluated against
//! a running server without Prometheus, for small sites, `make alerts` and the drills.
//!
//! The check scrapes `/metrics` twice, `--window` apart: rates are the increase between the
//! two scrapes, gauges must be over their threshold in both (a short `for:`), the commit
//! percentile comes from the histogram buckets that grew in between. Thresholds are the
//! `[alerts]` configuration keys, whose defaults are the numbers written in the rules file (a
//! test keeps them equal). Host figures (CPU, memory) are read on this machine, so only when
//! the API address is local; the rules use node exporter for them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::config::{AlertsConfig, Loaded};
use crate::probe::{self, Api, GIB, Scrape};

/// `svoi alerts ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Scrape a running server twice and print the alerts that fire (exit 1 when any does).
    Check {
        /// API base URL (default: `http://` + `api.listen`, loopback for 0.0.0.0).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// Time between the two scrapes that rates are computed over.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        window: Duration,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every alert: name, severity, runbook.
    List,
}

/// How urgent an alert is; warnings are silenced during a maintenance window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Someone acts now, maintenance or not.
    Critical,
    /// Needs attention soon; silenced while `svoi_maintenance_mode` is 1.
    Warning,
}

impl Severity {
    /// `critical` or `warning`, the rules' `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// One alert of the rules file.
#[derive(Clone, Copy, Debug)]
pub struct Alert {
    /// The rule's `alert:` name.
    pub name: &'static str,
    /// Its `severity` label.
    pub severity: Severity,
    /// The runbook it links to (`ops/runbooks/<runbook>.md`).
    pub runbook: &'static str,
    /// What it means, one line.
    pub summary: &'static str,
}

use Severity::{Critical, Warning};

/// Every alert, in the order of `ops/alerts/prometheus-rules.yml`.
pub const ALERTS: &[Alert] = &[
    alert(
        "ServerDown",
        Critical,
        "01-no-frames",
        "the server does not answer",
    ),
    alert(
        "NoFrames",
        Critical,
        "01-no-frames",
        "devices are connected but no message arrived",
    ),
    alert(
        "DecodeErrorRateHigh",
        Warning,
        "03-decode-errors-spike",
        "many device messages fail to decode",
    ),
    alert(
        "QueueDepthHigh",
        Warning,
        "02-queue-spike",
        "frames pile up in front of the batch writer",
    ),
    alert(
        "DatabaseCommitSlow",
        Warning,
        "04-db-slow",
        "group commits take long (99th percentile)",
    ),
    alert(
        "ApiErrorRateHigh",
        Critical,
        "05-api-5xx-spike",
        "many API requests fail with 5xx",
    ),
    alert(
        "FailedAuthHigh",
        Warning,
        "08-security-incident",
        "many API requests are refused for their credentials",
    ),
    alert(
        "BackupFailed",
        Warning,
        "06-backup-restore",
        "the last backup failed",
    ),
    alert(
        "NoRecentBackup",
        Warning,
        "06-backup-restore",
        "no successful backup for too long",
    ),
    alert(
        "BackupVerifyFailed",
        Warning,
        "06-backup-restore",
        "the newest backup verification failed",
    ),
    alert(
        "DiskSpaceLow",
        Critical,
        "04-db-slow",
        "the data filesystem is almost full",
    ),
    alert("HighCpu", Warning, "04-db-slow", "the host's CPUs are busy"),
    alert(
        "HighMemory",
        Warning,
        "04-db-slow",
        "the host's memory is almost used up",
    ),
];

const fn alert(
    name: &'static str,
    severity: Severity,
    runbook: &'static str,
    summary: &'static str,
) -> Alert {
    Alert {
        name,
        severity,
        runbook,
        summary,
    }
}

/// The outcome of one alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The condition holds.
    Firing,
    /// The condition holds but the alert is a warning and maintenance mode is on.
    Suppressed,
    /// The condition does not hold.
    Ok,
    /// The figures it needs are not there (no backup metrics yet, a remote host's CPU).
    NoData,
}

impl State {
    fn as_str(&self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Suppressed => "suppressed",
            State::Ok => "ok",
            State::NoData => "no data",
        }
    }
}

/// One evaluated alert.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The alert.
    pub alert: Alert,
    /// Its state.
    pub state: State,
    /// The measured figure against the threshold, or why there is none.
    pub detail: String,
}

/// What the evaluation reads: two scrapes `window` apart and the host figures (when local).
pub struct Inputs {
    /// `/health` answered 200 (and `/metrics` could be read): otherwise only ServerDown is
    /// evaluated.
    pub reachable: Result<(), String>,
    /// The first scrape.
    pub before: Scrape,
    /// The second scrape.
    pub after: Scrape,
    /// Seconds between the two.
    pub window: f64,
    /// Unix seconds at the second scrape.
    pub now: f64,
    /// Busy fraction of this host's CPUs over the window, when the server is local.
    pub cpu_busy: Option<f64>,
    /// Used fraction of this host's memory, when the server is local.
    pub memory_used: Option<f64>,
}

/// Evaluates every alert of [`ALERTS`] in order.
pub fn evaluate(inputs: &Inputs, t: &AlertsConfig) -> Vec<Outcome> {
    let maintenance = inputs
        .after
        .value("svoi_maintenance_mode")
        .is_some_and(|v| v >= 1.0);
    ALERTS
        .iter()
        .map(|alert| {
            let (holds, detail) = condition(alert.name, inputs, t);
            let state = match holds {
                None => State::NoData,
                Some(false) => State::Ok,
                Some(true) if maintenance && alert.severity == Warning => State::Suppressed,
                Some(true) => State::Firing,
            };
            Outcome {
                alert: *alert,
                state,
                detail,
            }
        })
        .collect()
}

/// `Some(true)` when the alert's condition holds, `None` without the figures, and a detail.
fn condition(name: &str, i: &Inputs, t: &AlertsConfig) -> (Option<bool>, String) {
    if name == "ServerDown" {
        return match &i.reachable {
            Ok(()) => (Some(false), "the API answers".into()),
            Err(e) => (Some(true), e.clone()),
        };
    }
    if let Err(e) = &i.reachable {
        return (None, format!("not evaluated: {e}"));
    }
    let (a, b) = (&i.before, &i.after);
    let increase = |name: &str| -> Option<f64> {
        let later = b.value(name)?;
        Some((later - a.value(name).unwrap_or(0.0)).max(0.0))
    };
    match name {
        "NoFrames" => {
            let (Some(open), Some(last)) = (
                b.value("svoi_connections_open"),
                b.value("svoi_last_frame_timestamp_seconds"),
            ) else {
                return (
                    None,
                    "svoi_connections_open or the last frame time missing".into(),
                );
            };
            let limit = t.no_frames_after.as_secs_f64();
            let age = i.now - last;
            let detail = if last > 0.0 {
                format!(
                    "last device message {age:.0} s ago, {open:.0} connections open (limit {})",
                    humantime::format_duration(t.no_frames_after)
                )
            } else {
                format!("no device message since the start, {open:.0} connections open")
            };
            (Some(open > 0.0 && age > limit), detail)
        }
        "DecodeErrorRateHigh" => {
            let errors = increase("svoi_decode_errors_total").unwrap_or(0.0);
            let Some(messages) = increase("svoi_messages_received_total").filter(|m| *m > 0.0)
            else {
                return (Some(false), "no device messages in the window".into());
            };
            let ratio = errors / messages;
            let limit = t.decode_error_ratio.get();
            (
                Some(ratio > limit),
                format!(
                    "{errors:.0} of {messages:.0} messages failed to decode ({:.1} %, limit {:.1} %)",
                    ratio * 100.0,
                    limit * 100.0
                ),
            )
        }
        "QueueDepthHigh" => {
            let (Some(first), Some(second)) =
                (a.value("svoi_queue_depth"), b.value("svoi_queue_depth"))
            else {
                return (None, "svoi_queue_depth missing".into());
            };
            let limit = t.queue_depth as f64;
            (
                Some(first > limit && second > limit),
                format!(
                    "{first:.0} then {second:.0} frames waiting for the writer (limit {limit:.0})"
                ),
            )
        }
        "DatabaseCommitSlow" => {
            let grown = probe::bucket_increase(
                &a.buckets("svoi_commit_duration_seconds"),
                &b.buckets("svoi_commit_duration_seconds"),
            );
            let commits = grown.last().map_or(0.0, |(_, n)| *n);
            let Some(p99) = probe::quantile(0.99, &grown) else {
                return (Some(false), "no commits in the window".into());
            };
            let limit = t.commit_p99.as_secs_f64();
            (
                Some(p99 > limit),
                format!(
                    "p99 of {commits:.0} commits {:.0} ms (limit {:.0} ms)",
                    p99 * 1e3,
                    limit * 1e3
                ),
            )
        }
        "ApiErrorRateHigh" => {
            let api = |s: &probe::Sample| s.label("route") != Some("/ready");
            let count = |scrape: &Scrape, server_errors: bool| {
                scrape
                    .sum("svoi_http_requests_total", |s| {
                        api(s)
                            && (!server_errors
                                || s.label("status").is_some_and(|c| c.starts_with('5')))
                    })
                    .unwrap_or(0.0)
            };
            let total = (count(b, false) - count(a, false)).max(0.0);
            let errors = (count(b, true) - count(a, true)).max(0.0);
            if total <= 0.0 {
                return (Some(false), "no API requests in the window".into());
            }
            let ratio = errors / total;
            let limit = t.api_5xx_ratio.get();
            (
                Some(ratio > limit),
                format!(
                    "{errors:.0} of {total:.0} API requests answered 5xx ({:.1} %, limit {:.1} %)",
                    ratio * 100.0,
                    limit * 100.0
                ),
            )
        }
        "FailedAuthHigh" => {
            let refused = increase("svoi_api_auth_failures_total").unwrap_or(0.0);
            let per_minute = refused * 60.0 / i.window.max(1e-3);
            let limit = t.failed_auth_per_minute as f64;
            (
                Some(per_minute > limit),
                format!(
                    "{refused:.0} refused credentials in {:.0} s = {per_minute:.0}/min (limit {limit:.0}/min)",
                    i.window
                ),
            )
        }
        "BackupFailed" => match (
            b.value("svoi_backup_last_failure_timestamp_seconds"),
            b.value("svoi_backup_last_success_timestamp_seconds"),
        ) {
            (Some(failed), success) => {
                let success = success.unwrap_or(0.0);
                (
                    Some(failed > success),
                    format!("last failure at {failed:.0}, last success at {success:.0} (Unix s)"),
                )
            }
            (None, _) => (
                None,
                "no backup in the maintenance log yet (svoi backup create)".into(),
            ),
        },
        "NoRecentBackup" => match b.value("svoi_backup_last_success_timestamp_seconds") {
            Some(success) => {
                let age = i.now - success;
                let limit = t.backup_max_age.as_secs_f64();
                (
                    Some(age > limit),
                    format!(
                        "last successful backup {:.1} h ago (limit {:.0} h)",
                        age / 3600.0,
                        limit / 3600.0
                    ),
                )
            }
            None => (
                None,
                "no backup in the maintenance log yet (svoi backup create)".into(),
            ),
        },
        "BackupVerifyFailed" => match b.value("svoi_backup_last_verify_success") {
            Some(ok) => (
                Some(ok == 0.0),
                if ok == 0.0 {
                    "the newest backup verification failed".to_owned()
                } else {
                    "the newest backup verification passed".to_owned()
                },
            ),
            None => (
                None,
                "no backup verification in the maintenance log yet (svoi backup verify)".into(),
            ),
        },
        "DiskSpaceLow" => match b.disk_space().filter(|d| d.total > 0) {
            Some(space) => {
                let ratio = space.free_ratio();
                let limit = t.disk_free_ratio.get();
                (
                    Some(ratio < limit),
                    format!(
                        "{:.1} of {:.1} GiB free ({:.1} %, limit {:.1} %)",
                        space.free as f64 / GIB,
                        space.total as f64 / GIB,
                        ratio * 100.0,
                        limit * 100.0
                    ),
                )
            }
            None => (None, "svoi_disk_free_bytes missing".into()),
        },
        "HighCpu" => host(i.cpu_busy, t.cpu_ratio.get(), "CPU busy"),
        "HighMemory" => host(i.memory_used, t.memory_ratio.get(), "memory used"),
        other => (None, format!("no evaluation for {other}")),
    }
}

fn host(figure: Option<f64>, limit: f64, what: &str) -> (Option<bool>, String) {
    match figure {
        Some(v) => (
            Some(v > limit),
            format!(
                "{what} {:.0} % on this host (limit {:.0} %)",
                v * 100.0,
                limit * 100.0
            ),
        ),
        None => (
            None,
            "not evaluated: the server is not on this host (the rules use node exporter)".into(),
        ),
    }
}

/// Reads the inputs from the server at `api`: `/health`, then `/metrics` twice.
pub fn gather(api: &Api, window: Duration) -> Inputs {
    let local = probe::is_local(api.base());
    let down = |e: String| Inputs {
        reachable: Err(e),
        before: Scrape::default(),
        after: Scrape::default(),
        window: window.as_secs_f64(),
        now: unix_now(),
        cpu_busy: None,
        memory_used: None,
    };
    match api.get("/health", None) {
        Ok(a) if a.status == 200 => {}
        Ok(a) => return down(format!("GET {}/health answered {}", api.base(), a.status)),
        Err(e) => return down(format!("{e:#}")),
    }
    let before = match api.scrape() {
        Ok(s) => s,
        Err(e) => return down(format!("{e:#}")),
    };
    let started = Instant::now();
    let mut system = sysinfo::System::new();
    if local {
        system.refresh_cpu_usage();
    }
    std::thread::sleep(window);
    let after = match api.scrape() {
        Ok(s) => s,
        Err(e) => return down(format!("{e:#}")),
    };
    let (cpu_busy, memory_used) = if local {
        system.refresh_cpu_usage();
        let memory = probe::memory();
        (
            Some(f64::from(system.global_cpu_usage()) / 100.0),
            Some(1.0 - memory.free_ratio()),
        )
    } else {
        (None, None)
    };
    Inputs {
        reachable: Ok(()),
        before,
        after,
        window: started.elapsed().as_secs_f64(),
        now: unix_now(),
        cpu_busy,
        memory_used,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs an alerts command: `check` exits 1 when any alert fires.
pub fn run(command: &AlertsCommand, loaded: &Loaded) -> Result<ExitCode> {
    match command {
        AlertsCommand::List => {
            for a in ALERTS {
                println!(
                    "{:<20} {:<8} svoi runbook show {:<24} {}",
                    a.name,
                    a.severity.as_str(),
                    a.runbook,
                    a.summary
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Check { api, window, json } => {
            let base = probe::api_base(&loaded.config, api.as_deref());
            let client = Api::new(&base, Duration::from_secs(5));
            let inputs = gather(&client, *window);
            let outcomes = evaluate(&inputs, &loaded.config.alerts);
            let firing: Vec<&str> = outcomes
                .iter()
                .filter(|o| o.state == State::Firing)
                .map(|o| o.alert.name)
                .collect();
            if *json {
                let alerts: Vec<_> = outcomes
                    .iter()
                    .map(|o| {
                        json!({
                            "name": o.alert.name,
                            "severity": o.alert.severity.as_str(),
                            "state": o.state.as_str(),
                            "detail": o.detail,
                            "runbook": format!("svoi runbook show {}", o.alert.runbook),
                            "runbook_url": runbook_url(o.alert.runbook),
                        })
                    })
                    .collect();
                let doc = json!({
                    "api": base,
                    "window_seconds": inputs.window,
                    "firing": firing,
                    "alerts": alerts,
                });
                println!("{doc}");
            } else {
                print!("{}", render(&base, &outcomes));
            }
            Ok(if firing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The rules' `runbook_url` annotation for a runbook.
pub fn runbook_url(runbook: &str) -> String {
    format!("ops/runbooks/{runbook}.md")
}

/// The text report: one line per alert, firing ones with their runbook, then a summary.
pub fn render(base: &str, outcomes: &[Outcome]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("alerts of {base}\n");
    for o in outcomes {
        let state = match o.state {
            State::Firing => "FIRING",
            State::Suppressed => "silenced",
            State::Ok => "ok",
            State::NoData => "no data",
        };
        let _ = writeln!(
            out,
            "{state:<8}  {:<8}  {:<20}  {}",
            o.alert.severity.as_str(),
            o.alert.name,
            o.detail
        );
        if o.state == State::Firing {
            let _ = writeln!(
                out,
                "{:32}runbook: svoi runbook show {} ({})",
                "",
                o.alert.runbook,
                runbook_url(o.alert.runbook)
            );
        }
    }
    let count = |s: State| outcomes.iter().filter(|o| o.state == s).count();
    let firing: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.state == State::Firing)
        .map(|o| o.alert.name)
        .collect();
    let _ = write!(out, "alerts: {} firing", firing.len());
    if !firing.is_empty() {
        let _ = write!(out, " ({})", firing.join(", "));
    }
    let _ = writeln!(
        out,
        ", {} silenced by maintenance, {} ok, {} without data",
        count(State::Suppressed),
        count(State::Ok),
        count(State::NoData)
    );
    out
}

#[cfg(test)]
mod tests;
