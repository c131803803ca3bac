//! `svoi serve`: the device listener and the HTTP API on the configured database, until
//! SIGTERM or SIGINT, then a graceful drain (in-flight commits finish and their answers go out)
//! and exit 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use svoi_ingest::{IngestConfig, Server};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Loaded;

/// How often the server logs its counters (connections, frames, records, queue depth) at INFO;
/// `/metrics` carries the same figures.
const SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Arguments of `svoi serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address devices connect to (config `ingest.listen`, default 0.0.0.0:5221).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the HTTP API, health, readiness and metrics (config `api.listen`, default
    /// 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// Also serve `/metrics` alone on this address (config `api.metrics_listen`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Read connections the API keeps open on SQLite (reads run on the blocking pool; WAL lets
/// them proceed beside the writer). PostgreSQL's come from `postgres.pool_size`.
const API_READERS: usize = 4;

/// How long the HTTP side gets to finish in-flight requests after the device side stopped.
const API_GRACE: Duration = Duration::from_secs(5);

/// The ingest settings of the effective configuration.
pub fn ingest_config(loaded: &Loaded) -> IngestConfig {
    loaded.config.ingest.clone()
}

/// Runs the server until a termination signal.
pub fn run(loaded: &Loaded) -> Result<ExitCode> {
    crate::telemetry::init(&loaded.config.log)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let (store, checkpointer) = crate::cmd::open_writer_store(loaded)?;
    let (url, options) = crate::cmd::store_options(loaded)?;
    let readers = match url {
        svoi_store::DbUrl::Sqlite(_) => API_READERS,
        svoi_store::DbUrl::Postgres(_) => loaded.config.postgres.pool_size,
    };
    // The URL as logged: a PostgreSQL password shows as ***.
    let url_shown = url.to_string();
    let durability = match url {
        svoi_store::DbUrl::Sqlite(_) => format!("synchronous={}", loaded.config.sqlite.synchronous),
        svoi_store::DbUrl::Postgres(_) => "synchronous_commit=on".to_owned(),
    };
    let reader = svoi_store::Reader::open(&url, &options, readers)
        .with_context(|| format!("cannot open read connections on {url}"))?;
    let metrics = crate::metrics::install()?;
    let config = ingest_config(loaded);
    let api = loaded.config.api.clone();
    raise_fd_limit(config.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut signals = Signals::watch()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (ingest.listen)", config.listen))?;
        let api_listener = tokio::net::TcpListener::bind(api.listen)
            .await
            .with_context(|| format!("cannot listen on {} (api.listen)", api.listen))?;
        let metrics_listener = match api.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (api.metrics_listen)"))?,
            ),
            None => None,
        };
        let grace = config.shutdown_grace;
        let server = Server::start(listener, config, store)?;
        let state = svoi_api::ApiState::new(
            reader,
            Arc::new(crate::metrics::IngestLive(server.stats())),
            crate::metrics::render_fn(
                metrics.clone(),
                server.stats(),
                crate::probe::data_dir(&loaded.config),
            ),
        );
        let http_stop = CancellationToken::new();
        let mut http = tokio::task::JoinSet::new();
        let api_addr = api_listener.local_addr()?;
        http.spawn(svoi_api::serve(
            api_listener,
            svoi_api::app(state.clone()),
            http_stop.clone(),
        ));
        if let Some(l) = metrics_listener {
            info!(listen = %l.local_addr()?, "serving /metrics");
            http.spawn(svoi_api::serve(
                l,
                svoi_api::metrics_app(state.clone()),
                http_stop.clone(),
            ));
        }
        let upkeep = tokio::spawn(async move {
            // Histograms keep their samples until the exporter's upkeep drains them.
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        info!(
            listen = %server.local_addr(),
            api = %api_addr,
            db = %url_shown,
            durability = %durability,
            version = env!("CARGO_PKG_VERSION"),
            "svoi serving devices"
        );
        let stats = server.stats();
        let summary = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = stats.snapshot();
                info!(
                    connections = s.connections_open,
                    frames = s.frames_received,
                    records_stored = s.records_stored,
                    duplicates = s.duplicates,
                    decode_errors = s.decode_errors,
                    queue_depth = s.queue_depth,
                    commits = s.commits,
                    commit_failures = s.commit_failures,
                    "ingest summary"
                );
            }
        });
        let signal = signals.wait().await?;
        summary.abort();
        info!(signal, grace_s = grace.as_secs_f64(), "shutting down");
        let stats = server.stats();
        let (report, _) = server.shutdown(grace).await;
        // The HTTP side outlives the device side so that /ready reports the drain.
        http_stop.cancel();
        let drained = tokio::time::timeout(API_GRACE, async {
            while let Some(r) = http.join_next().await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => error!(error = %e, "http listener failed"),
                    Err(e) => error!(error = %e, "http task failed"),
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("http requests still running after the grace period; dropped");
        }
        upkeep.abort();
        let s = stats.snapshot();
        if report.clean {
            info!(
                records_stored = s.records_stored,
                duplicates = s.duplicates,
                acks_sent = s.acks_sent,
                "stopped cleanly"
            );
        } else {
            warn!(
                abandoned_sessions = report.abandoned_sessions,
                "grace period over; unanswered frames will be resent by their devices"
            );
        }
        let failed = checkpointer.map_or(0, svoi_store::CheckpointerHandle::stop);
        if failed > 0 {
            warn!(
                failed,
                "background checkpoints failed; the writer checkpointed instead"
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Descriptors the process needs besides one per device connection: the database, its WAL,
/// the checkpointer, logs, and later the API's listeners and clients.
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files towards the hard limit so that `max_connections` can
/// actually be reached (many systems start services with a soft limit of 1024); warns when
/// even the hard limit is too low.
fn raise_fd_limit(max_connections: usize) {
    let wanted = max_connections as u64 + FD_RESERVE;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => warn!(
            limit = got,
            max_connections,
            "the open-file limit is below ingest.max_connections; connections beyond it fail"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// SIGTERM and SIGINT, watched from before the listeners open: a signal that arrives as soon
/// as a port accepts connections shuts the server down cleanly instead of killing it.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn watch() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn wait(&mut self) -> Result<&'static str> {
        Ok(tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        })
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn watch() -> Result<Signals> {
        Ok(Signals)
    }

    async fn wait(&mut self) -> Result<&'static str> {
        tokio::signal::ctrl_c()
            .await
            .context("cannot watch Ctrl-C")?;
        Ok("ctrl-c")
    }
}
