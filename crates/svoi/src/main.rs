//! The `svoi` binary: command-line parsing, configuration, logging and exit codes. Each
//! subcommand lives in its own module under `cmd/`; the libraries never exit the process,
//! read the environment or print.
//!
//! Exit codes are part of the interface that scripts, cron and monitoring rely on: 0 success,
//! 1 a check or decode found a problem, 2 usage, configuration or I/O error.

mod cmd;
mod config;
mod hourly;
mod metrics;
mod oplog;
mod probe;
mod telemetry;
mod timearg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted receiver for Navtelecom NTCB/FLEX GPS/GLONASS trackers.
#[derive(Debug, Parser)]
#[command(name = "svoi", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML); also `SVOI_CONFIG`.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Database URL, e.g. `sqlite:./data/svoi.db` (config `db`, env `SVOI_DB`).
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    /// Log format: text or json (config `log.format`).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Append the server's log to this file instead of standard error (config `log.file`).
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<String>,
    /// Directory of the backups (config `backup.dir`, default `./backups`).
    #[arg(long, global = true, value_name = "DIR")]
    backup_dir: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the device listener: sessions, durable storage, acknowledgements after commit.
    ///
    /// Stops on SIGTERM or SIGINT after in-flight commits are answered (exit 0).
    Serve(cmd::serve::Args),
    /// Decode a captured device-to-server byte stream and print one JSON object per message.
    ///
    /// Session state (handshake, negotiated FLEX mask) is kept across messages exactly as the
    /// server keeps it. Exit code 0 when every message decoded, 1 when any failed, 2 on usage
    /// or I/O errors.
    Decode(cmd::decode::Args),
    /// Print the FLEX field dictionary (number, name, size, wire type, unit, scale, no-data).
    Fields(cmd::fields::Args),
    /// Decode archived raw frames again (after a decoder or dictionary fix) and report changes.
    Reprocess(cmd::reprocess::Args),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Simulate a fleet of devices against a server (tests, demos, smoke tests, benchmarks).
    Sim(cmd::sim::Args),
    /// Manage API bearer tokens (stored as hashes in the database).
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Measure this machine.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// The on-call runbooks (embedded copies of ops/runbooks).
    #[command(subcommand)]
    Runbook(cmd::runbook::RunbookCommand),
    /// The alert conditions of ops/alerts/prometheus-rules.yml, evaluated without Prometheus.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCommand),
    /// End-to-end check of a running server: config, API, a synthetic device, database, host.
    ///
    /// Exit 0 when no item fails (skipped items do not fail the run), 1 otherwise.
    Smoke(cmd::smoke::SmokeArgs),
    /// Quick health check: liveness, readiness, database, disk. Exit 0 when healthy.
    Health(cmd::smoke::HealthArgs),
    /// Emergency commands: one-screen status, a diagnostics bundle.
    #[command(subcommand)]
    Emergency(cmd::emergency::EmergencyCommand),
    /// Incident files from ops/templates.
    #[command(subcommand)]
    Incident(cmd::incident::IncidentCommand),
    /// Database administration.
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
    /// Run `svoi serve` in the background with a pid file (machines without systemd).
    Service(cmd::service::ServiceArgs),
    /// Verified backups: create, list, verify, restore, prune.
    #[command(subcommand)]
    Backup(cmd::backup::BackupCommand),
    /// Delete data and logs older than their configured ages.
    #[command(subcommand)]
    Retention(cmd::retention::RetentionCommand),
    /// Scheduled procedures, maintenance windows with automatic rollback, the maintenance log.
    #[command(subcommand)]
    Maintenance(cmd::maintenance::MaintenanceCommand),
    /// Weekly, monthly or quarterly operations report (Markdown, HTML with charts, JSON).
    Report(cmd::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version requests are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mut overrides = config::Overrides::default()
        .with("db", "--db", cli.db.as_deref())
        .with("log.format", "--log-format", cli.log_format.as_deref())
        .with("log.file", "--log-file", cli.log_file.as_deref())
        .with("backup.dir", "--backup-dir", cli.backup_dir.as_deref());
    if let Command::Serve(a) = &cli.command {
        overrides = overrides
            .with("ingest.listen", "--listen", a.listen.as_deref())
            .with("api.listen", "--api-listen", a.api_listen.as_deref())
            .with(
                "api.metrics_listen",
                "--metrics-listen",
                a.metrics_listen.as_deref(),
            );
    }
    let env = config::process_env();
    let loaded = config::load(cli.config.as_deref(), &env, &overrides);
    let result = match cli.command {
        Command::Decode(args) => cmd::decode::run(&args),
        Command::Fields(args) => cmd::fields::run(&args),
        Command::Sim(args) => cmd::sim::run(&args),
        Command::Runbook(c) => cmd::runbook::run(&c),
        Command::Config(c) => cmd::config::run(&c, loaded),
        command => match loaded {
            Err(e) => Err(e),
            Ok(loaded) => match command {
                Command::Serve(_) => cmd::serve::run(&loaded),
                Command::Reprocess(args) => cmd::reprocess::run(&args, &loaded),
                Command::Bench(b) => cmd::bench::run(&b, &loaded),
                Command::Token(t) => cmd::token::run(&t, &loaded),
                Command::Alerts(c) => cmd::alerts::run(&c, &loaded),
                Command::Smoke(a) => cmd::smoke::run_smoke(&a, &loaded),
                Command::Health(a) => cmd::smoke::run_health(&a, &loaded),
                Command::Emergency(c) => cmd::emergency::run(&c, &loaded),
                Command::Incident(c) => cmd::incident::run(&c, &loaded),
                Command::Service(a) => cmd::service::run(&a, &loaded),
                Command::Db(c) => cmd::db::run(&c, &loaded),
                Command::Backup(c) => cmd::backup::run(&c, &loaded),
                Command::Retention(c) => cmd::retention::run(&c, &loaded),
                Command::Maintenance(c) => cmd::maintenance::run(&c, &loaded),
                Command::Report(a) => cmd::report::run(&a, &loaded),
                Command::Decode(_)
                | Command::Fields(_)
                | Command::Sim(_)
                | Command::Config(_)
                | Command::Runbook(_) => {
                    unreachable!("handled above")
                }
            },
        },
    };
    match result {
        Ok(code) => code,
        // A reader that stops early (`svoi decode | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("svoi: {e:#}");
            ExitCode::from(2)
        }
    }
}
