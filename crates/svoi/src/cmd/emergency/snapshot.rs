//! The status snapshot of `svoi emergency status` (and of `svoi incident new` and the
//! emergency bundle): what the server's API says (`/health`, `/ready`, `/metrics`) and what
//! this host says (the `svoi serve` processes, disk, memory, recent ERROR lines of the log).
//!
//! Every figure is measured or absent, never assumed: a part that cannot be read says why, and
//! the other parts are still shown. Host figures describe the server only when the API is on
//! this host (`probe::is_local`); otherwise they are left out and the disk figures come from
//! the server's own `/metrics`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cmd::service::{self, ServeProcess, human_bytes};
use crate::config::Loaded;
use crate::probe::{self, Api, Scrape};

/// How long each request to the API may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// How far back ERROR lines of the log count.
const ERROR_WINDOW: Duration = Duration::from_secs(3600);

/// How many ERROR lines the snapshot keeps.
const ERROR_LINES: usize = 10;

/// Longest log line the screen shows (the JSON keeps whole lines).
const SCREEN_LINE: usize = 160;

/// How far apart (seconds) a process's start and `svoi_start_time_seconds` may be for the
/// process to be named the API's server.
const START_MATCH: i64 = 3;

/// How long process CPU use is sampled.
const CPU_SAMPLE: Duration = Duration::from_millis(250);

/// Everything the on-call engineer reads first.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// When it was taken, RFC 3339 UTC.
    pub taken_at: String,
    /// This host's name.
    pub host: Option<String>,
    /// `/health` answered 200 and `/ready` answered 200 with `"ready": true`.
    pub healthy: bool,
    /// What the API answered.
    pub api: ApiStatus,
    /// Figures from `/metrics`.
    pub server: ServerFigures,
    /// The `svoi serve` processes on this host; `None` when not looked for (remote API).
    pub processes: Option<Vec<ServeProcess>>,
    /// The one process among them that started within 3 s of `svoi_start_time_seconds`, if
    /// exactly one did: most likely the server behind this API.
    pub api_pid: Option<u32>,
    /// Filesystem of the data directory.
    pub disk: Option<Disk>,
    /// This host's memory and CPU; `None` for a remote API.
    pub memory: Option<Memory>,
    /// Recent ERROR lines of the log.
    pub log: LogErrors,
}

/// What `/health` and `/ready` answered.
#[derive(Clone, Debug, Serialize)]
pub struct ApiStatus {
    /// The base URL asked.
    pub base: String,
    /// The API is on this host.
    pub local: bool,
    /// Why the API could not be asked (transport failure), if so.
    pub unreachable: Option<String>,
    /// HTTP status of `/health`.
    pub health_status: Option<u16>,
    /// HTTP status of `/ready`.
    pub ready_status: Option<u16>,
    /// `ready` of the `/ready` answer.
    pub ready: Option<bool>,
    /// The checks of the `/ready` answer (`database`: `ok` or `error`, ...).
    pub checks: BTreeMap<String, String>,
    /// A maintenance window is open (from `/ready`).
    pub maintenance: Option<bool>,
    /// What went wrong reading `/ready` (not JSON, ...).
    pub ready_error: Option<String>,
}

impl ApiStatus {
    /// The checks that are not `ok`.
    pub fn failing(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, v)| *v != "ok")
            .map(|(k, v)| format!("{k} {v}"))
            .collect()
    }
}

/// Figures of `/metrics`; all `None` when the page could not be read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// Why `/metrics` could not be read, if so.
    pub metrics_error: Option<String>,
    /// `svoi_build_info{version}`.
    pub version: Option<String>,
    /// `svoi_start_time_seconds` as RFC 3339.
    pub started_at: Option<String>,
    /// `svoi_start_time_seconds`, whole seconds.
    #[serde(skip)]
    pub start_unix: Option<i64>,
    /// Seconds since `svoi_start_time_seconds`.
    pub uptime_seconds: Option<u64>,
    /// `svoi_connections_open`.
    pub connections_open: Option<u64>,
    /// `svoi_devices_online`.
    pub devices_online: Option<u64>,
    /// `svoi_queue_depth`.
    pub queue_depth: Option<u64>,
    /// `ingest.queue_capacity` of this invocation's configuration.
    pub queue_capacity: usize,
    /// `svoi_last_frame_timestamp_seconds` (0: no frame since the start).
    pub last_frame_timestamp: Option<f64>,
    /// The last frame's time, RFC 3339 (none when no frame came yet).
    pub last_frame_at: Option<String>,
    /// Seconds since the last frame.
    pub last_frame_age_seconds: Option<i64>,
    /// `svoi_database_up`.
    pub database_up: Option<bool>,
    /// `svoi_commit_failures_total`.
    pub commit_failures_total: Option<u64>,
    /// `svoi_records_stored_total`.
    pub records_stored_total: Option<u64>,
    /// `svoi_writer_up`.
    pub writer_up: Option<bool>,
    /// `svoi_ingest_listener_up`.
    pub ingest_listener_up: Option<bool>,
}

/// Free and total space of the data directory's filesystem.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// The directory (local) or `svoi_disk_free_bytes` (remote).
    pub source: String,
    /// Bytes available.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

/// This host's memory and CPU use.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    /// Bytes available to new allocations.
    pub available_bytes: u64,
    /// Installed memory.
    pub total_bytes: u64,
    /// Busy fraction of the host's CPUs over the sampling interval, 0 to 1.
    pub cpu_busy: Option<f64>,
}

/// The recent ERROR lines of the log.
#[derive(Clone, Debug, Serialize)]
pub struct LogErrors {
    /// The file read.
    pub file: Option<String>,
    /// Why no file was read, or what went wrong reading it.
    pub note: Option<String>,
    /// The last ERROR lines of the last hour, oldest first.
    pub lines: Vec<String>,
}

/// What [`collect`] read besides the snapshot: the raw answers, for the bundle.
pub struct Raw {
    /// The `/metrics` page, or why there is none.
    pub metrics: Result<String, String>,
    /// The `/ready` body, or why there is none.
    pub ready: Result<String, String>,
}

/// The server's log file: `log.file`, or when that is unset the log `svoi service start`
/// writes beside its default pid file, when it exists. The text says which.
pub fn log_file(loaded: &Loaded) -> (Option<PathBuf>, String) {
    if let Some(file) = &loaded.config.log.file {
        return (Some(file.clone()), file.display().to_string());
    }
    let service_log = service::service_dir(Path::new(service::DEFAULT_PID_FILE)).join("svoi.log");
    if service_log.is_file() {
        let shown = format!(
            "{} (log.file not set; the log of svoi service)",
            service_log.display()
        );
        return (Some(service_log), shown);
    }
    (None, "log.file not set".to_string())
}

/// Takes the snapshot of the server at `api_base` and of this host.
pub fn snapshot(loaded: &Loaded, api_base: &str) -> Snapshot {
    collect(loaded, api_base).0
}

/// [`snapshot`] plus the raw answers.
pub fn collect(loaded: &Loaded, api_base: &str) -> (Snapshot, Raw) {
    let taken = jiff::Timestamp::now();
    let local = probe::is_local(api_base);
    let client = Api::new(api_base, API_TIMEOUT);
    let mut api = ApiStatus {
        base: client.base().to_string(),
        local,
        unreachable: None,
        health_status: None,
        ready_status: None,
        ready: None,
        checks: BTreeMap::new(),
        maintenance: None,
        ready_error: None,
    };
    let mut raw = Raw {
        metrics: Err("not asked: the API is unreachable".to_string()),
        ready: Err("not asked: the API is unreachable".to_string()),
    };
    let mut server = ServerFigures {
        queue_capacity: loaded.config.ingest.queue_capacity,
        ..ServerFigures::default()
    };
    match client.get("/health", None) {
        Err(e) => {
            api.unreachable = Some(format!("{e:#}"));
            server.metrics_error = Some("API unreachable".to_string());
        }
        Ok(health) => {
            api.health_status = Some(health.status);
            read_ready(&client, &mut api, &mut raw);
            match client.get("/metrics", None) {
                Ok(page) if page.status == 200 => {
                    read_metrics(&Scrape::parse(&page.body), &mut server, taken);
                    raw.metrics = Ok(page.body);
                }
                Ok(page) => {
                    let e = format!("GET /metrics answered {}", page.status);
                    server.metrics_error = Some(e.clone());
                    raw.metrics = Err(e);
                }
                Err(e) => {
                    server.metrics_error = Some(format!("{e:#}"));
                    raw.metrics = Err(format!("{e:#}"));
                }
            }
        }
    }
    let healthy =
        api.health_status == Some(200) && api.ready_status == Some(200) && api.ready == Some(true);

    let (processes, disk, memory, log) = if local {
        // Both sample CPU use over the same interval.
        let (processes, cpu) = std::thread::scope(|scope| {
            let host = scope.spawn(|| probe::cpu_busy(CPU_SAMPLE));
            let processes = service::serve_processes(CPU_SAMPLE);
            (processes, host.join().ok())
        });
        let dir = probe::data_dir(&loaded.config);
        let disk = probe::disk_space(&dir).map(|s| Disk {
            source: dir.display().to_string(),
            free_bytes: s.free,
            total_bytes: s.total,
        });
        let m = probe::memory();
        let memory = Memory {
            available_bytes: m.free,
            total_bytes: m.total,
            cpu_busy: cpu.filter(|c| c.is_finite()),
        };
        (Some(processes), disk, Some(memory), log_errors(loaded))
    } else {
        let disk = server_disk(&raw);
        let log = LogErrors {
            file: None,
            note: Some("not read: the API is not on this host".to_string()),
            lines: Vec::new(),
        };
        (None, disk, None, log)
    };
    let api_pid = processes
        .as_deref()
        .zip(server.start_unix)
        .and_then(|(list, start)| api_process(list, start));
    let snapshot = Snapshot {
        taken_at: rfc3339(taken),
        host: sysinfo::System::host_name(),
        healthy,
        api,
        server,
        processes,
        api_pid,
        disk,
        memory,
        log,
    };
    (snapshot, raw)
}

fn read_ready(client: &Api, api: &mut ApiStatus, raw: &mut Raw) {
    let answer = match client.get("/ready", None) {
        Ok(a) => a,
        Err(e) => {
            api.ready_error = Some(format!("{e:#}"));
            raw.ready = Err(format!("{e:#}"));
            return;
        }
    };
    api.ready_status = Some(answer.status);
    match answer.json() {
        Ok(json) => {
            api.ready = json["ready"].as_bool();
            api.maintenance = json["maintenance"].as_bool();
            if let Some(checks) = json["checks"].as_object() {
                for (k, v) in checks {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    api.checks.insert(k.clone(), v);
                }
            }
        }
        Err(e) => api.ready_error = Some(format!("{e:#}")),
    }
    raw.ready = Ok(answer.body);
}

/// A gauge as a count (`None` when absent or not a finite non-negative number).
fn count(scrape: &Scrape, name: &str) -> Option<u64> {
    let v = scrape.value(name)?;
    // Gauges of counts are whole numbers; the cast is checked by the guard.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

fn read_metrics(scrape: &Scrape, server: &mut ServerFigures, now: jiff::Timestamp) {
    server.version = scrape
        .samples
        .iter()
        .find(|s| s.name == "svoi_build_info")
        .and_then(|s| s.label("version"))
        .map(str::to_string);
    if let Some(started) = scrape.value("svoi_start_time_seconds").and_then(timestamp) {
        server.started_at = Some(rfc3339(started));
        server.start_unix = Some(started.as_second());
        server.uptime_seconds =
            u64::try_from(now.as_second().saturating_sub(started.as_second())).ok();
    }
    server.connections_open = count(scrape, "svoi_connections_open");
    server.devices_online = count(scrape, "svoi_devices_online");
    server.queue_depth = count(scrape, "svoi_queue_depth");
    server.last_frame_timestamp = scrape.value("svoi_last_frame_timestamp_seconds");
    if let Some(at) = server
        .last_frame_timestamp
        .filter(|v| *v > 0.0)
        .and_then(timestamp)
    {
        server.last_frame_at = Some(rfc3339(at));
        server.last_frame_age_seconds = Some(now.as_second().saturating_sub(at.as_second()));
    }
    let up = |name: &str| scrape.value(name).map(|v| v >= 1.0);
    server.database_up = up("svoi_database_up");
    server.writer_up = up("svoi_writer_up");
    server.ingest_listener_up = up("svoi_ingest_listener_up");
    server.commit_failures_total = count(scrape, "svoi_commit_failures_total");
    server.records_stored_total = count(scrape, "svoi_records_stored_total");
}

/// Which of `processes` started within [`START_MATCH`] seconds of the server's
/// `svoi_start_time_seconds`, when exactly one did.
fn api_process(processes: &[ServeProcess], start: i64) -> Option<u32> {
    let mut near = processes
        .iter()
        .filter(|p| i64::try_from(p.start_time).is_ok_and(|t| (t - start).abs() <= START_MATCH));
    match (near.next(), near.next()) {
        (Some(p), None) => Some(p.pid),
        _ => None,
    }
}

/// The server's own disk figures, for a remote API.
fn server_disk(raw: &Raw) -> Option<Disk> {
    let space = Scrape::parse(raw.metrics.as_ref().ok()?).disk_space()?;
    Some(Disk {
        source: "svoi_disk_free_bytes".to_string(),
        free_bytes: space.free,
        total_bytes: space.total,
    })
}

fn log_errors(loaded: &Loaded) -> LogErrors {
    let (file, shown) = log_file(loaded);
    let Some(path) = file else {
        return LogErrors {
            file: None,
            note: Some(shown),
            lines: Vec::new(),
        };
    };
    match probe::recent_errors(&path, ERROR_WINDOW, ERROR_LINES) {
        Ok(lines) => LogErrors {
            file: Some(shown),
            note: None,
            lines,
        },
        Err(e) => LogErrors {
            file: Some(shown),
            note: Some(format!("{e:#}")),
            lines: Vec::new(),
        },
    }
}

/// Unix seconds (fraction dropped) as a timestamp.
fn timestamp(seconds: f64) -> Option<jiff::Timestamp> {
    // Unix seconds of any plausible time fit in i64; `from_second` rejects the rest.
    #[allow(clippy::cast_possible_truncation)]
    let whole = seconds.floor() as i64;
    (seconds.is_finite())
        .then(|| jiff::Timestamp::from_second(whole).ok())
        .flatten()
}

/// RFC 3339 UTC to the second: `2026-05-01T10:00:00Z`.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn duration(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1} %", 100.0 * part / whole)
    } else {
        "n/a".to_string()
    }
}

fn or_unknown<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

fn up_down(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "up",
        Some(false) => "DOWN",
        None => "unknown",
    }
}

fn clip(line: &str) -> String {
    if line.chars().count() <= SCREEN_LINE {
        line.to_string()
    } else {
        let mut s: String = line.chars().take(SCREEN_LINE - 1).collect();
        s.push('…');
        s
    }
}

impl Snapshot {
    fn api_line(&self) -> String {
        let a = &self.api;
        if let Some(e) = &a.unreachable {
            return format!("API unreachable: {e}");
        }
        let mut line = format!("{}: /health {}", a.base, or_unknown(a.health_status));
        match (a.ready_status, a.ready) {
            (Some(200), Some(true)) => line.push_str(", ready"),
            (Some(status), _) => {
                line.push_str(&format!(", NOT READY (/ready {status})"));
            }
            (None, _) => line.push_str(", /ready unknown"),
        }
        let failing = a.failing();
        if !failing.is_empty() {
            line.push_str(&format!(", failing: {}", failing.join(", ")));
        } else if !a.checks.is_empty() {
            let names: Vec<&str> = a.checks.keys().map(String::as_str).collect();
            line.push_str(&format!(" ({} ok)", names.join(", ")));
        }
        if let Some(e) = &a.ready_error {
            line.push_str(&format!("; /ready: {e}"));
        }
        if a.maintenance == Some(true) {
            line.push_str("; MAINTENANCE window open");
        }
        line
    }
}

impl fmt::Display for Snapshot {
    /// One screen: a line per part, the log's ERROR lines last.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.server;
        let host = self.host.as_deref().unwrap_or("unknown host");
        writeln!(f, "svoi status at {} on {host}", self.taken_at)?;
        let verdict = if self.healthy {
            "HEALTHY (API answers and is ready)"
        } else {
            "NOT HEALTHY"
        };
        writeln!(f, "verdict      {verdict}")?;
        writeln!(f, "api          {}", self.api_line())?;
        let no_metrics = s
            .metrics_error
            .as_deref()
            .map(|e| format!("unknown (no metrics: {e})"));
        match (&no_metrics, &s.started_at) {
            (Some(e), _) => writeln!(f, "server       {e}")?,
            (None, Some(started)) => writeln!(
                f,
                "server       version {}, up {} (since {started})",
                or_unknown(s.version.as_deref()),
                duration(s.uptime_seconds.unwrap_or(0))
            )?,
            (None, None) => writeln!(
                f,
                "server       version {}, start time unknown",
                or_unknown(s.version.as_deref())
            )?,
        }
        match &self.processes {
            None => writeln!(
                f,
                "process      not looked for: the API is not on this host"
            )?,
            Some(list) if list.is_empty() => {
                writeln!(f, "process      none found (no svoi serve on this host)")?;
            }
            Some(list) => {
                // The API's own server first.
                let mut list: Vec<&ServeProcess> = list.iter().collect();
                list.sort_by_key(|p| Some(p.pid) != self.api_pid);
                for p in list.iter().take(3) {
                    let mark = if Some(p.pid) == self.api_pid {
                        " (this API's server: same start time)"
                    } else {
                        ""
                    };
                    let cpu = p
                        .cpu_percent
                        .map_or_else(|| "unknown".to_string(), |c| format!("{c:.1} %"));
                    writeln!(
                        f,
                        "process      pid {}{mark}, up {}, RSS {}, CPU {cpu}",
                        p.pid,
                        duration(p.uptime_seconds),
                        human_bytes(p.rss_bytes)
                    )?;
                }
                if list.len() > 3 {
                    writeln!(f, "process      and {} more svoi serve", list.len() - 3)?;
                }
            }
        }
        if let Some(e) = &no_metrics {
            for part in ["connections", "queue", "last frame"] {
                writeln!(f, "{part:<12} {e}")?;
            }
        } else {
            writeln!(
                f,
                "connections  {} open, {} devices online",
                or_unknown(s.connections_open),
                or_unknown(s.devices_online)
            )?;
            let queue = match s.queue_depth {
                #[allow(clippy::cast_precision_loss)]
                Some(d) => format!(
                    "{d} of {} frames ({})",
                    s.queue_capacity,
                    percent(d as f64, s.queue_capacity as f64)
                ),
                None => format!("unknown of {} frames", s.queue_capacity),
            };
            writeln!(f, "queue        {queue}")?;
            let last = match (s.last_frame_timestamp, &s.last_frame_at) {
                (_, Some(at)) => format!(
                    "{at} ({} s ago)",
                    s.last_frame_age_seconds.unwrap_or_default()
                ),
                (Some(_), None) => "none yet".to_string(),
                (None, None) => "unknown".to_string(),
            };
            writeln!(f, "last frame   {last}")?;
        }
        let db_check = self
            .api
            .checks
            .get("database")
            .map_or("unknown", String::as_str);
        writeln!(
            f,
            "database     ready check {db_check}, svoi_database_up {}, commit failures {}, records stored {}",
            match s.database_up {
                Some(true) => "1",
                Some(false) => "0",
                None => "unknown",
            },
            or_unknown(s.commit_failures_total),
            or_unknown(s.records_stored_total)
        )?;
        writeln!(
            f,
            "writer       {}, device listener {}",
            up_down(s.writer_up),
            up_down(s.ingest_listener_up)
        )?;
        match &self.disk {
            #[allow(clippy::cast_precision_loss)]
            Some(d) => writeln!(
                f,
                "disk         {}: {} free of {} ({} free)",
                d.source,
                human_bytes(d.free_bytes),
                human_bytes(d.total_bytes),
                percent(d.free_bytes as f64, d.total_bytes as f64)
            )?,
            None => writeln!(f, "disk         unknown")?,
        }
        match &self.memory {
            #[allow(clippy::cast_precision_loss)]
            Some(m) => writeln!(
                f,
                "host         memory {} available of {} ({} available), CPU {}",
                human_bytes(m.available_bytes),
                human_bytes(m.total_bytes),
                percent(m.available_bytes as f64, m.total_bytes as f64),
                m.cpu_busy.map_or_else(
                    || "unknown".to_string(),
                    |c| format!("{:.1} % busy", 100.0 * c)
                )
            )?,
            None => writeln!(f, "host         not measured: the API is not on this host")?,
        }
        let log = &self.log;
        match (&log.file, &log.note) {
            (None, Some(note)) => writeln!(f, "errors       {note}")?,
            (Some(file), Some(note)) => writeln!(f, "errors       {file}: {note}")?,
            (Some(file), None) if log.lines.is_empty() => {
                writeln!(f, "errors       none in the last hour in {file}")?;
            }
            (file, _) => writeln!(
                f,
                "errors       last {} ERROR lines of the last hour in {}:",
                log.lines.len(),
                file.as_deref().unwrap_or("the log")
            )?,
        }
        for line in &log.lines {
            writeln!(f, "  {}", clip(line))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> Loaded {
        crate::config::load(None, &[], &crate::config::Overrides::default()).unwrap()
    }

    const PAGE: &str = "svoi_build_info{version=\"9.9.9\"} 1\n\
        svoi_start_time_seconds 1700000000\n\
        svoi_connections_open 3\n\
        svoi_devices_online 2\n\
        svoi_queue_depth 1024\n\
        svoi_last_frame_timestamp_seconds 1700000090\n\
        svoi_database_up 0\n\
        svoi_writer_up 1\n\
        svoi_ingest_listener_up 1\n\
        svoi_commit_failures_total 4\n\
        svoi_records_stored_total 100\n";

    fn sample() -> Snapshot {
        let now = jiff::Timestamp::from_second(1_700_000_100).unwrap();
        let mut server = ServerFigures {
            queue_capacity: 4096,
            ..ServerFigures::default()
        };
        read_metrics(&Scrape::parse(PAGE), &mut server, now);
        let mut checks = BTreeMap::new();
        checks.insert("database".to_string(), "error".to_string());
        checks.insert("writer".to_string(), "ok".to_string());
        Snapshot {
            taken_at: rfc3339(now),
            host: Some("h1".to_string()),
            healthy: false,
            api: ApiStatus {
                base: "http://127.0.0.1:8080".to_string(),
                local: true,
                unreachable: None,
                health_status: Some(200),
                ready_status: Some(503),
                ready: Some(false),
                checks,
                maintenance: Some(false),
                ready_error: None,
            },
            server,
            processes: Some(Vec::new()),
            api_pid: None,
            disk: None,
            memory: None,
            log: LogErrors {
                file: None,
                note: Some("log.file not set".to_string()),
                lines: Vec::new(),
            },
        }
    }

    #[test]
    fn emergency_snapshot_reads_the_metrics_it_names() {
        let s = sample().server;
        assert_eq!(s.version.as_deref(), Some("9.9.9"));
        assert_eq!(s.uptime_seconds, Some(100));
        assert_eq!(s.started_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(s.last_frame_age_seconds, Some(10));
        assert_eq!(s.queue_depth, Some(1024));
        assert_eq!(s.database_up, Some(false));
        assert_eq!(s.commit_failures_total, Some(4));
    }

    #[test]
    fn emergency_snapshot_screen_names_failing_checks_and_figures() {
        let text = sample().to_string();
        assert!(text.lines().count() <= 35, "{text}");
        assert!(text.contains("NOT HEALTHY"), "{text}");
        assert!(text.contains("failing: database error"), "{text}");
        assert!(text.contains("1024 of 4096 frames (25.0 %)"), "{text}");
        assert!(text.contains("3 open, 2 devices online"), "{text}");
        assert!(text.contains("2023-11-14T22:14:50Z (10 s ago)"), "{text}");
        assert!(text.contains("svoi_database_up 0"), "{text}");
        assert!(text.contains("none found"), "{text}");
        assert!(text.contains("log.file not set"), "{text}");
    }

    #[test]
    fn emergency_snapshot_names_the_api_process_only_when_one_start_time_matches() {
        let p = |pid, start_time| ServeProcess {
            pid,
            uptime_seconds: 0,
            rss_bytes: 0,
            cpu_percent: None,
            start_time,
        };
        let list = [p(1, 100), p(2, 200), p(3, 203)];
        assert_eq!(api_process(&list, 101), Some(1));
        assert_eq!(api_process(&list, 201), None, "two candidates");
        assert_eq!(api_process(&list, 150), None);
    }

    #[test]
    fn emergency_snapshot_says_none_yet_for_a_zero_last_frame() {
        let mut server = ServerFigures::default();
        let now = jiff::Timestamp::from_second(1_700_000_100).unwrap();
        read_metrics(
            &Scrape::parse("svoi_last_frame_timestamp_seconds 0\n"),
            &mut server,
            now,
        );
        let mut s = sample();
        s.server = server;
        assert!(s.to_string().contains("last frame   none yet"), "{s}");
    }

    #[test]
    fn emergency_snapshot_of_an_unreachable_api_still_measures_the_host() {
        // Port 9 on loopback (discard) is closed on any sane test machine; refused at once.
        let s = snapshot(&loaded(), "http://127.0.0.1:9");
        assert!(!s.healthy);
        assert!(s.api.unreachable.is_some());
        assert!(s.memory.as_ref().is_some_and(|m| m.total_bytes > 0));
        assert!(s.processes.is_some());
        let text = s.to_string();
        assert!(text.contains("API unreachable: "), "{text}");
        assert!(text.contains("host         memory "), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["healthy"], false);
    }
}
