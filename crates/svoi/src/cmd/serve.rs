//! `svoi serve`: the device listener and the HTTP API on the configured database, until
//! SIGTERM or SIGINT, then a graceful drain (in-flight commits finish and their answers go out)
//! and exit 0.
//!
//! Beside them run two light tasks: the operations poller (the open maintenance window and
//! the last backup and verification outcomes, from the database every 2 s, for `/ready`,
//! `/api/v1/status` and the gauges) and the hourly statistics collector ([`crate::hourly`]).
//! The server holds its database's server lock ([`svoi_store::backup::ServerLock`]) for as
//! long as it runs, so a second server, or a restore, is refused.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use svoi_ingest::{IngestConfig, IngestStats, Server};
use svoi_store::{Reader, Store};
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

/// How often the operations state (open window, backup outcomes) is read from the database.
const OPS_POLL: Duration = Duration::from_secs(2);

/// How often the hourly statistics row of the current hour is written.
const HOURLY_WRITE: Duration = Duration::from_secs(60);

/// How often the hourly collector samples devices online and connections open (their maxima
/// go into the row). Two atomic loads and a short lock: cheap.
const HOURLY_SAMPLE: Duration = Duration::from_secs(1);

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
    let (url, mut options) = crate::cmd::store_options(loaded)?;
    // Held until the process ends: another server, or a restore, sees this one.
    let _lock = svoi_store::backup::ServerLock::acquire(&url)
        .with_context(|| format!("cannot start a server on {url}"))?;
    options.postgres.application_name = Some(svoi_store::backup::SERVE_APPLICATION_NAME.to_owned());
    let (store, checkpointer) = crate::cmd::open_writer_store(loaded)?;
    // The hourly statistics go through a connection of their own, never the ingest writer's.
    let hourly_store = Store::open(&url, &options)
        .with_context(|| format!("cannot open database {url} (hourly statistics)"))?;
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
        let render = crate::metrics::render_fn(
            metrics.clone(),
            server.stats(),
            crate::probe::data_dir(&loaded.config),
        );
        let ops = Arc::new(OpsView::default());
        // Once before serving, so that /ready shows an open window from the first request.
        ops.poll(&reader).await;
        let background = CancellationToken::new();
        let ops_task = tokio::spawn(ops.clone().run(reader.clone(), background.clone()));
        let hourly = HourlyTask {
            instance: crate::hourly::instance(server.local_addr().port()),
            stats: server.stats(),
            metrics: metrics.clone(),
            reader: reader.clone(),
            store: Arc::new(Mutex::new(hourly_store)),
        };
        let hourly_task = tokio::spawn(hourly.run(background.clone()));
        let state = svoi_api::ApiState::with_maintenance(
            reader,
            Arc::new(crate::metrics::IngestLive(server.stats())),
            ops,
            render,
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
        // The collector writes the hour's row once more with the drained counts, then stops.
        background.cancel();
        ops_task.abort();
        match tokio::time::timeout(API_GRACE, hourly_task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "hourly statistics task failed"),
            Err(_) => warn!("the last hourly statistics were not written in time"),
        }
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

/// The operations state as last read from the database: the API's maintenance view; the
/// poller also publishes the gauges.
#[derive(Default)]
struct OpsView {
    window: Mutex<Option<svoi_api::MaintenanceWindow>>,
    /// Whether the last poll failed (a failure is logged once, not every 2 s).
    failing: std::sync::atomic::AtomicBool,
}

impl svoi_api::Maintenance for OpsView {
    fn window(&self) -> Option<svoi_api::MaintenanceWindow> {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl OpsView {
    /// Reads the operations state once and publishes it. A failed read keeps the last state.
    async fn poll(&self, reader: &Reader) {
        use std::sync::atomic::Ordering;
        let r = reader.clone();
        let state = match tokio::task::spawn_blocking(move || r.ops_state()).await {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "cannot read the operations state (maintenance window, backups)");
                }
                return;
            }
            Err(e) => {
                error!(error = %e, "operations state task failed");
                return;
            }
        };
        if self.failing.swap(false, Ordering::Relaxed) {
            info!("operations state readable again");
        }
        crate::metrics::publish_ops(&state);
        let window = state.window.map(|w| svoi_api::MaintenanceWindow {
            reason: w.window.reason,
            since_us: w.window.started_at_us,
            until_us: w.window.planned_end_us,
        });
        *self.window.lock().unwrap_or_else(PoisonError::into_inner) = window;
    }

    /// Polls every [`OPS_POLL`] until `stop`.
    async fn run(self: Arc<Self>, reader: Reader, stop: CancellationToken) {
        let mut tick = tokio::time::interval(OPS_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.poll(&reader).await,
            }
        }
    }
}

/// What the hourly statistics collector reads and where it writes.
struct HourlyTask {
    instance: String,
    stats: Arc<IngestStats>,
    metrics: PrometheusHandle,
    reader: Reader,
    store: Arc<Mutex<Store>>,
}

impl HourlyTask {
    /// A reading of the live figures now.
    fn reading(&self) -> crate::hourly::Reading {
        let page = crate::probe::Scrape::parse(&self.metrics.render());
        crate::hourly::Reading {
            at_s: crate::oplog::now_us().div_euclid(1_000_000),
            stats: self.stats.snapshot(),
            online: self.stats.online_devices() as u64,
            ack_buckets: page.buckets(svoi_ingest::names::ACK_LATENCY),
        }
    }

    /// Samples every [`HOURLY_SAMPLE`], writes the hour's row every [`HOURLY_WRITE`] and
    /// once more when `stop` is cancelled.
    async fn run(self, stop: CancellationToken) {
        let mut collector = crate::hourly::Collector::new(self.instance.clone(), self.reading());
        // A restart within the hour continues the row the last run wrote.
        let (hour, instance, reader) = (
            collector.hour_start(),
            self.instance.clone(),
            self.reader.clone(),
        );
        match tokio::task::spawn_blocking(move || reader.hourly_stats(hour, hour + 3600)).await {
            Ok(Ok(rows)) => {
                if let Some(row) = rows.into_iter().find(|r| r.instance == instance) {
                    collector.carry_over(row);
                }
            }
            Ok(Err(e)) => warn!(error = %e, "cannot read this hour's statistics"),
            Err(e) => error!(error = %e, "hourly statistics task failed"),
        }
        let mut sample = tokio::time::interval(HOURLY_SAMPLE);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut write = tokio::time::interval(HOURLY_WRITE);
        write.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sample.tick().await;
        write.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.write(&mut collector).await;
                    return;
                }
                _ = sample.tick() => collector.sample(
                    crate::oplog::now_us().div_euclid(1_000_000),
                    self.stats.online_devices() as u64,
                    self.stats.connections_open.load(std::sync::atomic::Ordering::Relaxed),
                ),
                _ = write.tick() => self.write(&mut collector).await,
            }
        }
    }

    /// Takes a reading and writes the rows it completes.
    async fn write(&self, collector: &mut crate::hourly::Collector) {
        let reading = self.reading();
        let reader = self.reader.clone();
        let db_bytes = match tokio::task::spawn_blocking(move || reader.database_size()).await {
            Ok(Ok(size)) => i64::try_from(size.file_bytes.saturating_add(size.wal_bytes)).ok(),
            _ => None,
        };
        let (closed, current) = collector.observe(reading, db_bytes, crate::oplog::now_us());
        let rows: Vec<_> = closed.into_iter().chain(current).collect();
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            rows.iter().try_for_each(|r| store.upsert_hourly_stats(r))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot write the hourly statistics"),
            Err(e) => error!(error = %e, "hourly statistics task failed"),
        }
    }
}
