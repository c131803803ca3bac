//! The checks of `svoi smoke` and `svoi health`, each returning its outcome and one-line
//! detail: configuration, `/health`, `/ready`, reading the smoke record back through the API,
//! the database, disk, memory and the log file. Every network step has a timeout; nothing
//! here prints or panics.

use std::path::Path;
use std::time::{Duration, Instant};

use svoi_store::{DbUrl, Reader, Store, StoreError, StoreOptions, TokenScope};

use super::device::SmokeRecord;
use super::report::{Outcome, fail, one_line, pass, skip};
use crate::config::{Loaded, Source};
use crate::probe::{self, Api, GIB, Scrape, Space};

/// How far back the log item looks for ERROR lines.
pub const LOG_WINDOW: Duration = Duration::from_secs(15 * 60);

/// At most this many ERROR lines are counted (a count at the limit is shown as "at least").
const LOG_LINES_MAX: usize = 10_000;

/// Longest log line quoted in a detail.
const LOG_LINE_CHARS: usize = 160;

/// Longest HTTP body quoted in a detail.
const BODY_CHARS: usize = 120;

/// Longest wait for a PostgreSQL connection or statement of the database item and the
/// temporary token, whatever the configuration says: a smoke test must not hang.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

/// `config`: the configuration loaded and validated; the detail says where it came from.
pub fn config(loaded: &Loaded) -> Outcome {
    if let Err(e) = crate::cmd::store_options(loaded) {
        return fail(format!("{e:#}"));
    }
    let file = loaded.sources.iter().find_map(|(_, _, s)| match s {
        Source::File { path, .. } => Some(path),
        _ => None,
    });
    let names = |pick: fn(&Source) -> Option<&str>| {
        let mut names: Vec<&str> = loaded
            .sources
            .iter()
            .filter_map(|(_, _, s)| pick(s))
            .collect();
        names.dedup();
        names.join(" ")
    };
    let env = names(|s| match s {
        Source::Env(var) => Some(var.as_str()),
        _ => None,
    });
    let flags = names(|s| match s {
        Source::Flag(flag) => Some(flag.as_str()),
        _ => None,
    });
    let mut detail = match file {
        Some(path) => format!("from {}", path.display()),
        None => "defaults and environment".to_string(),
    };
    if !env.is_empty() {
        detail.push_str(&format!("; environment: {env}"));
    }
    if !flags.is_empty() {
        detail.push_str(&format!("; flags: {flags}"));
    }
    if !loaded.warnings.is_empty() {
        detail.push_str(&format!("; warnings: {}", loaded.warnings.join("; ")));
    }
    pass(detail)
}

/// `api.health`: `GET /health` answers 200.
pub fn api_health(api: &Api) -> Outcome {
    let started = Instant::now();
    match api.get("/health", None) {
        Ok(a) if a.status == 200 => pass(format!(
            "/health answered 200 in {} ms",
            started.elapsed().as_millis()
        )),
        Ok(a) => fail(format!(
            "/health answered {}: {}",
            a.status,
            one_line(&a.body, BODY_CHARS)
        )),
        Err(e) => fail(format!("no answer: {e:#}")),
    }
}

/// What `GET /ready` said, for the health command's database item.
#[derive(Debug, Default)]
pub struct ReadyAnswer {
    /// `checks.database` of the answer (`ok`, `error`), when there was one.
    pub database: Option<String>,
}

/// `api.ready`: `GET /ready` answers 200 with `"ready": true`; a failure names the checks
/// that are not `ok`.
pub fn api_ready(api: &Api) -> (Outcome, Option<ReadyAnswer>) {
    let answer = match api.get("/ready", None) {
        Ok(a) => a,
        Err(e) => return (fail(format!("no answer: {e:#}")), None),
    };
    let Ok(json) = answer.json() else {
        let outcome = fail(format!(
            "/ready answered {} without JSON: {}",
            answer.status,
            one_line(&answer.body, BODY_CHARS)
        ));
        return (outcome, Some(ReadyAnswer::default()));
    };
    let checks = ["database", "device_listener", "writer"].map(|name| {
        let value = json["checks"][name]
            .as_str()
            .unwrap_or("missing")
            .to_string();
        (name, value)
    });
    let ready = ReadyAnswer {
        database: json["checks"]["database"].as_str().map(str::to_string),
    };
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, v)| v != "ok")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let outcome = if answer.status == 200 && json["ready"] == true && failing.is_empty() {
        pass("/ready: database, device_listener and writer ok")
    } else if failing.is_empty() {
        fail(format!(
            "/ready answered {} with ready {}",
            answer.status, json["ready"]
        ))
    } else {
        fail(format!(
            "/ready answered {}: not ready: {}",
            answer.status,
            failing.join(", ")
        ))
    };
    (outcome, Some(ready))
}

/// The configured database and its options with the PostgreSQL waits bounded by
/// [`DB_TIMEOUT`].
fn bounded_store_options(loaded: &Loaded) -> anyhow::Result<(DbUrl, StoreOptions)> {
    let (url, mut options) = crate::cmd::store_options(loaded)?;
    options.postgres.connect_timeout = options.postgres.connect_timeout.min(DB_TIMEOUT);
    options.postgres.statement_timeout = options.postgres.statement_timeout.min(DB_TIMEOUT);
    options.busy_timeout = options.busy_timeout.min(DB_TIMEOUT);
    Ok((url, options))
}

/// `sqlite` or `postgresql`.
fn backend(url: &DbUrl) -> &'static str {
    match url {
        DbUrl::Sqlite(_) => "sqlite",
        DbUrl::Postgres(_) => "postgresql",
    }
}

/// `database`: the configured database opens read-only (never created, never migrated) with
/// the schema this build expects, and answers a query.
pub fn database(loaded: &Loaded) -> Outcome {
    let (url, options) = match bounded_store_options(loaded) {
        Ok(v) => v,
        Err(e) => return fail(format!("{e:#}")),
    };
    let name = backend(&url);
    let reader = match Reader::open(&url, &options, 1) {
        Ok(r) => r,
        Err(StoreError::SchemaMismatch { found, known }) => {
            return fail(format!(
                "{name} {url}: schema version {found}, this build needs {known} \
                 (the server migrates it when it starts)"
            ));
        }
        Err(StoreError::SchemaTooNew { found, known }) => {
            return fail(format!(
                "{name} {url}: schema version {found} is newer than this build knows ({known})"
            ));
        }
        Err(e) => return fail(format!("{name} {url}: {e}")),
    };
    match reader.ping() {
        Ok(()) => pass(format!(
            "{name} schema version {} (current) at {url}",
            svoi_store::latest_schema_version()
        )),
        Err(e) => fail(format!("{name} {url}: {e}")),
    }
}

/// `database` of `svoi health`: what the server says, `/ready`'s `checks.database` and the
/// `svoi_database_up` gauge of `/metrics`.
pub fn health_database(ready: Option<&ReadyAnswer>, scrape: Option<&Scrape>) -> Outcome {
    let Some(ready) = ready else {
        return skip("skipped: /ready did not answer");
    };
    let up = scrape.and_then(|s| s.value("svoi_database_up"));
    let up_text = match up {
        Some(v) => format!("svoi_database_up {v}"),
        None => "svoi_database_up not reported".to_string(),
    };
    match ready.database.as_deref() {
        Some("ok") if up != Some(0.0) => pass(format!("/ready database ok, {up_text}")),
        Some(state) => fail(format!("/ready database {state}, {up_text}")),
        None => fail(format!("/ready did not report the database, {up_text}")),
    }
}

/// `disk`: the free fraction of the filesystem holding the data is at least
/// `alerts.disk_free_ratio`. On this host (the API is local) the filesystem of the data
/// directory is measured; for a remote server its `svoi_disk_*` gauges are used when given.
pub fn disk(loaded: &Loaded, local: bool, scrape: Option<&Scrape>) -> Outcome {
    let min = loaded.config.alerts.disk_free_ratio.get();
    if local {
        let dir = probe::data_dir(&loaded.config);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        return match probe::disk_space(&dir) {
            Some(space) => disk_verdict(space, min, &dir.display().to_string()),
            None => fail(format!(
                "cannot measure the filesystem of {}",
                dir.display()
            )),
        };
    }
    match scrape.and_then(Scrape::disk_space) {
        Some(space) => disk_verdict(space, min, "the server (svoi_disk_* of /metrics)"),
        None => skip("the server is not on this host and /metrics has no svoi_disk_* gauges"),
    }
}

/// Pass when `space` has at least `min` of it free.
pub fn disk_verdict(space: Space, min: f64, place: &str) -> Outcome {
    let ratio = space.free_ratio();
    let detail = format!(
        "{:.1} GiB free of {:.1} GiB ({:.0}%) on {place}; minimum {:.0}%",
        space.free as f64 / GIB,
        space.total as f64 / GIB,
        ratio * 100.0,
        min * 100.0
    );
    if space.total > 0 && ratio >= min {
        pass(detail)
    } else {
        fail(detail)
    }
}

/// `memory`: the available fraction of this host's memory is at least
/// 1 − `alerts.memory_ratio`. Skipped when the server is not on this host.
pub fn memory(loaded: &Loaded, local: bool) -> Outcome {
    if !local {
        return skip("the server is not on this host");
    }
    memory_verdict(probe::memory(), loaded.config.alerts.memory_ratio.get())
}

/// Pass when at most `max_used` of the memory is in use.
pub fn memory_verdict(mem: Space, max_used: f64) -> Outcome {
    let min_free = 1.0 - max_used;
    let ratio = mem.free_ratio();
    let detail = format!(
        "{:.1} GiB available of {:.1} GiB ({:.0}%); minimum {:.0}%",
        mem.free as f64 / GIB,
        mem.total as f64 / GIB,
        ratio * 100.0,
        min_free * 100.0
    );
    if mem.total > 0 && ratio >= min_free {
        pass(detail)
    } else {
        fail(detail)
    }
}

/// `log`: no ERROR line in `log.file` within [`LOG_WINDOW`]. Skipped without a log file or
/// when the server is not on this host; a log file that cannot be read fails.
pub fn log(loaded: &Loaded, local: bool) -> Outcome {
    let Some(path) = &loaded.config.log.file else {
        return skip("log.file not set");
    };
    if !local {
        return skip("the server is not on this host");
    }
    log_verdict(path)
}

/// The log item for the file at `path`.
pub fn log_verdict(path: &Path) -> Outcome {
    let minutes = LOG_WINDOW.as_secs() / 60;
    match probe::recent_errors(path, LOG_WINDOW, LOG_LINES_MAX) {
        Err(e) => fail(format!("{e:#}")),
        Ok(lines) => match lines.last() {
            None => pass(format!(
                "no ERROR line in the last {minutes} min of {}",
                path.display()
            )),
            Some(last) => {
                let n = lines.len();
                let count = if n >= LOG_LINES_MAX {
                    format!("at least {n}")
                } else {
                    n.to_string()
                };
                fail(format!(
                    "{count} ERROR line(s) in the last {minutes} min of {}; last: {}",
                    path.display(),
                    one_line(last, LOG_LINE_CHARS)
                ))
            }
        },
    }
}

/// An API token of `read` scope created for one smoke run through the store, revoked by
/// [`TempToken::revoke`] (or, as a fallback, when dropped).
pub struct TempToken {
    store: Store,
    /// The token's name, `smoke-<pid>`.
    pub name: String,
    /// The bearer token.
    pub text: String,
    revoked: bool,
}

impl TempToken {
    /// Creates the token in the configured database, which must exist with the current schema
    /// (checked read-only first, so a smoke test run from the wrong directory never creates or
    /// migrates a database).
    pub fn create(loaded: &Loaded) -> Result<TempToken, String> {
        let (url, options) = bounded_store_options(loaded).map_err(|e| format!("{e:#}"))?;
        Reader::open(&url, &options, 1).map_err(|e| format!("{url}: {e}"))?;
        let mut store = Store::open(&url, &options).map_err(|e| format!("{url}: {e}"))?;
        let pid = std::process::id();
        let mut name = format!("smoke-{pid}");
        let mut attempt = 0;
        loop {
            let (text, row) = svoi_api::token::generate(&name, TokenScope::Read);
            match store.create_token(&row) {
                Ok(()) => {
                    return Ok(TempToken {
                        store,
                        name,
                        text,
                        revoked: false,
                    });
                }
                // A token of a run that died before revoking it, with the same pid.
                Err(StoreError::TokenExists { .. }) if attempt < 3 => {
                    attempt += 1;
                    name = format!("smoke-{pid}-{}", SmokeRecord::now().run_id);
                }
                Err(e) => return Err(format!("cannot create token {name:?} in {url}: {e}")),
            }
        }
    }

    /// Revokes the token.
    pub fn revoke(mut self) -> Result<(), String> {
        self.revoked = true;
        match self.store.revoke_token(&self.name) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "cannot revoke temporary token {:?} ({e}): run svoi token revoke {}",
                self.name, self.name
            )),
        }
    }
}

impl Drop for TempToken {
    fn drop(&mut self) {
        if !self.revoked {
            let _ = self.store.revoke_token(&self.name);
        }
    }
}

/// `api.readback`: the smoke record is listed by `GET /api/v1/devices/{imei}/records` for
/// its second, with the values sent. Retries for `within` (the answer came after the commit,
/// so the record is normally there at once).
pub fn readback(
    api: &Api,
    token: &str,
    imei: &str,
    record: &SmokeRecord,
    within: Duration,
) -> Outcome {
    let path = format!(
        "/api/v1/devices/{imei}/records?from={}&to={}&limit=1000",
        record.event_time,
        u64::from(record.event_time) + 1
    );
    let started = Instant::now();
    let deadline = started + within;
    let mut last;
    loop {
        match api.get(&path, Some(token)) {
            Ok(a) if a.status == 200 => {
                let items = a
                    .json()
                    .ok()
                    .and_then(|j| j["items"].as_array().cloned())
                    .unwrap_or_default();
                let found = items
                    .iter()
                    .find(|i| i["index"].as_u64() == Some(u64::from(record.run_id)));
                if let Some(item) = found {
                    return match record.check_item(item) {
                        Ok(()) => pass(format!(
                            "record {} of {imei} read back with the values sent in {} ms",
                            record.run_id,
                            started.elapsed().as_millis()
                        )),
                        Err(diff) => fail(format!(
                            "record {} of {imei} read back with other values: {diff}",
                            record.run_id
                        )),
                    };
                }
                last = format!("200 with {} other record(s) in that second", items.len());
            }
            Ok(a) if a.status == 401 || a.status == 403 => {
                return fail(format!(
                    "the API refused the token ({}): {}",
                    a.status,
                    one_line(&a.body, BODY_CHARS)
                ));
            }
            Ok(a) => {
                last = format!("{}: {}", a.status, one_line(&a.body, BODY_CHARS));
            }
            Err(e) => last = format!("no answer: {e:#}"),
        }
        if Instant::now() >= deadline {
            return fail(format!(
                "record {} of {imei} not found within {} s (last answer: {last})",
                record.run_id,
                within.as_secs_f32()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::smoke::report::Status;

    #[test]
    fn disk_and_memory_compare_against_their_thresholds() {
        let gib = 1u64 << 30;
        let space = |free, total| Space {
            free: free * gib,
            total: total * gib,
        };
        let (s, d) = disk_verdict(space(20, 100), 0.10, "/data");
        assert_eq!(s, Status::Pass, "{d}");
        assert_eq!(d, "20.0 GiB free of 100.0 GiB (20%) on /data; minimum 10%");
        assert_eq!(disk_verdict(space(9, 100), 0.10, "/data").0, Status::Fail);
        assert_eq!(disk_verdict(space(10, 100), 0.10, "/data").0, Status::Pass);
        assert_eq!(disk_verdict(space(0, 0), 0.0, "/data").0, Status::Fail);

        // memory_ratio 0.90: at most 90% used, so at least 10% available.
        assert_eq!(memory_verdict(space(3, 16), 0.90).0, Status::Pass);
        let (s, d) = memory_verdict(space(1, 16), 0.90);
        assert_eq!(s, Status::Fail);
        assert!(d.contains("(6%); minimum 10%"), "{d}");
    }

    #[test]
    fn log_item_counts_recent_error_lines_and_quotes_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svoi.log");
        let now = jiff::Timestamp::now();
        let old = now
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap();
        std::fs::write(
            &path,
            format!("{old} ERROR svoi: long ago\n{now}  INFO svoi: fine\n"),
        )
        .unwrap();
        let (s, d) = log_verdict(&path);
        assert_eq!(s, Status::Pass, "{d}");

        let long = "x".repeat(500);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("{now} ERROR svoi_ingest: first\n"));
        text.push_str(&format!("{now} ERROR svoi_ingest: commit failed {long}\n"));
        std::fs::write(&path, text).unwrap();
        let (s, d) = log_verdict(&path);
        assert_eq!(s, Status::Fail);
        assert!(d.starts_with("2 ERROR line(s) in the last 15 min"), "{d}");
        assert!(d.contains("last: "), "{d}");
        assert!(d.contains("commit failed xxx"), "{d}");
        assert!(d.ends_with('…'), "{d}");

        let (s, d) = log_verdict(&dir.path().join("missing.log"));
        assert_eq!(s, Status::Fail);
        assert!(d.contains("cannot open"), "{d}");
    }

    #[test]
    fn config_item_says_where_the_configuration_came_from() {
        use crate::config::{Overrides, load};
        let loaded = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(config(&loaded), pass("defaults and environment"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svoi.toml");
        std::fs::write(&file, "[api]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let env = vec![(
            "SVOI_INGEST_LISTEN".to_string(),
            "127.0.0.1:9001".to_string(),
        )];
        let flags = Overrides::default().with("db", "--db", Some("sqlite:x.db"));
        let loaded = load(Some(&file), &env, &flags).unwrap();
        let (status, detail) = config(&loaded);
        assert_eq!(status, Status::Pass);
        assert_eq!(
            detail,
            format!(
                "from {}; environment: SVOI_INGEST_LISTEN; flags: --db",
                file.display()
            )
        );
    }

    #[test]
    fn health_database_reads_ready_and_the_gauge() {
        let ok = ReadyAnswer {
            database: Some("ok".into()),
        };
        let down = ReadyAnswer {
            database: Some("error".into()),
        };
        let up = Scrape::parse("svoi_database_up 1\n");
        let gone = Scrape::parse("svoi_database_up 0\n");
        assert_eq!(health_database(Some(&ok), Some(&up)).0, Status::Pass);
        assert_eq!(health_database(Some(&ok), None).0, Status::Pass);
        let (s, d) = health_database(Some(&ok), Some(&gone));
        assert_eq!(s, Status::Fail);
        assert_eq!(d, "/ready database ok, svoi_database_up 0");
        assert_eq!(health_database(Some(&down), Some(&up)).0, Status::Fail);
        assert_eq!(health_database(None, None).0, Status::Skip);
    }
}
