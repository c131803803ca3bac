//! The accept loop and the server's lifetime: connection cap, one tracked task per connection,
//! and the graceful shutdown that lets in-flight commits finish and their answers go out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::IngestConfig;
use crate::session::{self, Shared};
use crate::stats::IngestStats;
use crate::writer::{self, Committer, WriterConfig};

/// A running ingest server.
#[derive(Debug)]
pub struct Server<C> {
    local_addr: SocketAddr,
    stats: Arc<IngestStats>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<Option<C>>,
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every session and the writer finished within the grace period.
    pub clean: bool,
    /// Sessions still running when the grace period ended (abandoned: their frames were not
    /// acknowledged, so their devices resend).
    pub abandoned_sessions: usize,
}

impl<C: Committer> Server<C> {
    /// Starts accepting on `listener` with the writer committing through `committer`.
    pub fn start(
        listener: TcpListener,
        config: IngestConfig,
        committer: C,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(IngestStats::default());
        let shutdown = CancellationToken::new();
        let sessions = TaskTracker::new();
        let writer_tracker = TaskTracker::new();
        let (queue, writer) = writer::spawn(
            committer,
            config.queue_capacity,
            WriterConfig {
                batch_max_records: config.batch_max_records,
                batch_max_delay: config.batch_max_delay,
                commit_attempts: 3,
            },
            Arc::clone(&stats),
            &writer_tracker,
        );
        writer_tracker.close();
        let shared = Arc::new(Shared {
            config: config.clone(),
            stats: Arc::clone(&stats),
            seq: AtomicU64::new(1),
        });
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let token = shutdown.clone();
        let tracker = sessions.clone();
        let accept = tokio::spawn(
            async move {
                let next_id = AtomicU64::new(1);
                let mut last_cap_warning: Option<tokio::time::Instant> = None;
                shared.stats.listener_up.store(true, Ordering::Relaxed);
                loop {
                    let accepted = tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    let (stream, peer) = match accepted {
                        Ok(v) => v,
                        Err(e) => {
                            // Out of descriptors and similar: back off instead of spinning.
                            error!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        shared.stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
                        let now = tokio::time::Instant::now();
                        if last_cap_warning.is_none_or(|t| now - t > Duration::from_secs(60)) {
                            warn!(%peer, max = shared.config.max_connections, "connection cap reached, refusing connections");
                            last_cap_warning = Some(now);
                        }
                        drop(stream);
                        continue;
                    };
                    let conn_id = next_id.fetch_add(1, Ordering::Relaxed);
                    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    shared.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("session", conn = conn_id, %peer, imei = tracing::field::Empty);
                    let shared = Arc::clone(&shared);
                    let queue = queue.clone();
                    let token = token.clone();
                    tracker.spawn(
                        async move {
                            session::run(stream, conn_id, Arc::clone(&shared), queue, token).await;
                            shared.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                // The accept loop's queue handle goes here; the writer ends once every
                // session's handle is gone too.
                drop(queue);
                shared.stats.listener_up.store(false, Ordering::Relaxed);
                info!("listener closed");
            }
            .instrument(info_span!("ingest", listen = %local_addr)),
        );
        Ok(Server {
            local_addr,
            stats,
            shutdown,
            sessions,
            accept,
            writer,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.stats)
    }

    /// A token that starts the shutdown when cancelled (for a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets every session finish the message it is handling (its commit and
    /// answer) and waits for the writer to drain, for at most `grace`. Returns the committer
    /// when the writer finished.
    pub async fn shutdown(self, grace: Duration) -> (ShutdownReport, Option<C>) {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let _ = self.accept.await;
        self.sessions.close();
        let sessions_done = tokio::time::timeout_at(deadline, self.sessions.wait())
            .await
            .is_ok();
        let abandoned = self.sessions.len();
        let committer = if sessions_done {
            match tokio::time::timeout_at(deadline, self.writer).await {
                Ok(Ok(c)) => c,
                _ => None,
            }
        } else {
            self.writer.abort();
            None
        };
        let clean = sessions_done && committer.is_some();
        (
            ShutdownReport {
                clean,
                abandoned_sessions: abandoned,
            },
            committer,
        )
    }
}
