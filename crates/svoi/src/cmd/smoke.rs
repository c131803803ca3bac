//! `svoi smoke` and `svoi health`: checklists run against a running `svoi serve`.
//!
//! `smoke` goes end to end: the configuration, `/health`, `/ready`, a synthetic device that
//! connects to the device port, identifies itself with [`SMOKE_IMEI`], negotiates FLEX 3.0
//! and sends one record (every answer compared byte for byte with what the protocol says),
//! that record read back through the API, the database opened read-only, disk, memory and the
//! log file's recent ERROR lines. `health` is the quick subset an orchestrator or
//! `make health-check` polls: `/health`, `/ready`, the database as the server sees it, disk.
//!
//! Each item passes, fails or is skipped with a one-line detail; the exit code is 0 when no
//! item failed, 1 otherwise, 2 for usage errors (a bad `--api` or `--device`). An item that
//! cannot run because an earlier one failed is skipped, saying so; the earlier failure
//! already sets the exit code.

mod checks;
mod device;
pub mod report;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::config::Loaded;
use crate::probe::{self, Api};
pub use report::Report;
use report::{Status, fail, skip};

/// The IMEI of the synthetic device. Fifteen zeros: every real IMEI starts with a type
/// allocation code issued by the GSMA, and none is all zeros, so no tracker can send it; the
/// server and the API accept any identifier of digits. Its records stay in the database
/// (under device `000000000000000`, event code 0, near 0° N 0° E) like any device's, one per
/// smoke run; filter the IMEI out of reports if they matter.
pub const SMOKE_IMEI: &str = "000000000000000";

/// Longest wait of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the device connection and for each answer of the session.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the read-back retries before it fails.
const READBACK_WITHIN: Duration = Duration::from_secs(3);

/// `svoi smoke`.
#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// API base URL (default: `http://` + `api.listen`, loopback for 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Device listener to dial (default: `ingest.listen`, loopback for 0.0.0.0).
    #[arg(long, value_name = "ADDR")]
    pub device: Option<String>,
    /// API token with read scope (also `SVOI_TOKEN`).
    #[arg(long, env = "SVOI_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// One JSON document instead of the checklist.
    #[arg(long)]
    pub json: bool,
}

/// `svoi health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// API base URL (default: `http://` + `api.listen`, loopback for 0.0.0.0).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// One JSON document instead of the checklist.
    #[arg(long)]
    pub json: bool,
}

/// Runs the smoke test.
pub fn run_smoke(args: &SmokeArgs, loaded: &Loaded) -> Result<ExitCode> {
    let report = smoke(
        loaded,
        args.api.as_deref(),
        args.device.as_deref(),
        args.token.as_deref(),
    )?;
    print(&report, args.json)
}

/// The smoke test's checklist (what `svoi smoke` prints; the maintenance post-check uses it
/// too). `api`, `device` and `token` are the flags' values. Errors only for unusable flags.
pub fn smoke(
    loaded: &Loaded,
    api: Option<&str>,
    device: Option<&str>,
    token: Option<&str>,
) -> Result<Report> {
    let base = api_base(loaded, api)?;
    let device = probe::device_addr(&loaded.config, device)?;
    let local = probe::is_local(&base);
    let api = Api::new(&base, HTTP_TIMEOUT);
    let token = token.map(str::trim).filter(|t| !t.is_empty());

    let mut report = Report::new("smoke");
    report.run("config", || checks::config(loaded));
    let health = report.run("api.health", || checks::api_health(&api));
    report.run("api.ready", || checks::api_ready(&api).0);
    let record = device::SmokeRecord::now();
    let session = report.run("device.session", || {
        match device::session(device, SMOKE_IMEI, &record, DEVICE_TIMEOUT) {
            Ok(detail) => report::pass(detail),
            Err(why) => fail(why),
        }
    });
    if session != Status::Pass {
        report.push("api.readback", skip("skipped: device.session failed"), 0);
    } else if health != Status::Pass {
        report.push("api.readback", skip("skipped: api.health failed"), 0);
    } else {
        report.run("api.readback", || readback(&api, token, loaded, &record));
    }
    report.run("database", || checks::database(loaded));
    let scrape = if local { None } else { api.scrape().ok() };
    report.run("disk", || checks::disk(loaded, local, scrape.as_ref()));
    report.run("memory", || checks::memory(loaded, local));
    report.run("log", || checks::log(loaded, local));
    Ok(report)
}

/// Runs the quick health check.
pub fn run_health(args: &HealthArgs, loaded: &Loaded) -> Result<ExitCode> {
    let report = health(loaded, args.api.as_deref())?;
    print(&report, args.json)
}

/// The quick health check's checklist (`svoi health`; the maintenance pre-check and the
/// daily procedure use it too).
pub fn health(loaded: &Loaded, api: Option<&str>) -> Result<Report> {
    let base = api_base(loaded, api)?;
    let local = probe::is_local(&base);
    let api = Api::new(&base, HTTP_TIMEOUT);

    let mut report = Report::new("health");
    report.run("api.health", || checks::api_health(&api));
    let mut ready = None;
    report.run("api.ready", || {
        let (outcome, answer) = checks::api_ready(&api);
        ready = answer;
        outcome
    });
    let scrape = if ready.is_some() {
        api.scrape().ok()
    } else {
        None
    };
    report.run("database", || {
        checks::health_database(ready.as_ref(), scrape.as_ref())
    });
    report.run("disk", || checks::disk(loaded, local, scrape.as_ref()));
    Ok(report)
}

/// The API base URL, refusing anything but `http://` and `https://` URLs (a usage error);
/// every command that talks to the API (smoke, health, maintenance) takes its `--api` here.
pub fn api_base(loaded: &Loaded, flag: Option<&str>) -> Result<String> {
    let base = probe::api_base(&loaded.config, flag);
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(base),
        _ => bail!("--api {base:?}: expected a URL such as http://127.0.0.1:8080"),
    }
}

/// `api.readback` with the token given, else a temporary one created and revoked around it.
fn readback(
    api: &Api,
    token: Option<&str>,
    loaded: &Loaded,
    record: &device::SmokeRecord,
) -> report::Outcome {
    if let Some(token) = token {
        return checks::readback(api, token, SMOKE_IMEI, record, READBACK_WITHIN);
    }
    let temp = match checks::TempToken::create(loaded) {
        Ok(t) => t,
        Err(why) => {
            return fail(format!(
                "no token: pass --token or set SVOI_TOKEN (a temporary one needs the \
                 database: {why})"
            ));
        }
    };
    let (status, detail) = checks::readback(api, &temp.text, SMOKE_IMEI, record, READBACK_WITHIN);
    let name = temp.name.clone();
    match temp.revoke() {
        Ok(()) => (
            status,
            format!("{detail} (temporary token {name}, revoked)"),
        ),
        Err(why) => fail(format!("{detail}; {why}")),
    }
}

/// Prints the checklist (or the JSON document) and returns the exit code.
fn print(report: &Report, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::from(report.exit_code()))
}
