//! The batch writer: one task owns the store and commits whatever the sessions queued as one
//! transaction (group commit across all sessions), then hands every frame's sender the receipt.
//! Flushes at `batch_max_records` rows or `batch_max_delay` after the first frame of a batch,
//! whichever comes first; with a zero delay it commits whatever is queued at once, and frames
//! arriving during a commit form the next batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svoi_store::{CommitReceipt, FrameRow, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, error, info_span, warn};

use crate::names;
use crate::stats::IngestStats;

/// What the writer commits through: the store, or in tests a wrapper around it that stalls or
/// fails. Only the store can make a [`CommitReceipt`], so no implementation can fake one.
pub trait Committer: Send + 'static {
    /// Stores the frames in one transaction.
    fn commit(&mut self, frames: &[FrameRow]) -> Result<CommitReceipt, StoreError>;
}

impl Committer for Store {
    fn commit(&mut self, frames: &[FrameRow]) -> Result<CommitReceipt, StoreError> {
        Store::commit(self, frames)
    }
}

/// Why a frame was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("commit failed: {0}")]
pub struct CommitFailed(pub Arc<str>);

/// What a session learns about its frame.
pub type Outcome = Result<Arc<CommitReceipt>, CommitFailed>;

/// One queued frame.
#[derive(Debug)]
pub struct Job {
    /// The frame and its rows.
    pub frame: FrameRow,
    /// Where to send the outcome, when the session waits for it.
    pub done: Option<oneshot::Sender<Outcome>>,
}

impl Job {
    fn rows(&self) -> usize {
        self.frame.records.len() + self.frame.ext_records.len() + 1
    }
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Flush when a batch holds this many rows (records plus one per frame).
    pub batch_max_records: usize,
    /// Flush this long after the first frame of a batch at the latest.
    pub batch_max_delay: Duration,
    /// Attempts for a commit that fails with a retryable error (busy, I/O).
    pub commit_attempts: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_max_records: 5_000,
            batch_max_delay: Duration::from_millis(1),
            commit_attempts: 3,
        }
    }
}

/// The sending side the sessions hold.
#[derive(Debug, Clone)]
pub struct Queue {
    tx: mpsc::Sender<Job>,
    stats: Arc<IngestStats>,
}

impl Queue {
    /// Queues a frame, waiting while the queue is full (the caller stops reading its socket
    /// meanwhile: that is the backpressure). Fails only when the writer is gone.
    pub async fn send(&self, job: Job) -> Result<(), CommitFailed> {
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(job).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(CommitFailed(Arc::from("writer stopped")))
            }
        }
    }
}

/// Starts the writer task on the current runtime; it ends when every [`Queue`] clone is
/// dropped and the queue is drained, returning the committer (`None` if it panicked).
pub fn spawn<C: Committer>(
    committer: C,
    capacity: usize,
    config: WriterConfig,
    stats: Arc<IngestStats>,
    tracker: &tokio_util::task::TaskTracker,
) -> (Queue, tokio::task::JoinHandle<Option<C>>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let queue = Queue {
        tx,
        stats: Arc::clone(&stats),
    };
    let handle = tracker.spawn(run(committer, rx, config, stats));
    (queue, handle)
}

async fn run<C: Committer>(
    mut committer: C,
    mut rx: mpsc::Receiver<Job>,
    config: WriterConfig,
    stats: Arc<IngestStats>,
) -> Option<C> {
    let mut batch_no: u64 = 0;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut rows = jobs[0].rows();
        while rows < config.batch_max_records {
            match rx.try_recv() {
                Ok(j) => {
                    rows += j.rows();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        if rows < config.batch_max_records && !config.batch_max_delay.is_zero() {
            let deadline = tokio::time::Instant::now() + config.batch_max_delay;
            while rows < config.batch_max_records {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => {
                        rows += j.rows();
                        jobs.push(j);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        stats
            .queue_depth
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        batch_no += 1;
        let span = info_span!("commit", batch = batch_no, frames = jobs.len(), rows);
        let (frames, dones): (Vec<FrameRow>, Vec<_>) =
            jobs.into_iter().map(|j| (j.frame, j.done)).unzip();
        let attempts = config.commit_attempts.max(1);
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let (results, reachable) = commit_isolating(&mut committer, &frames, attempts);
            (committer, (results, reachable))
        })
        .instrument(span.clone())
        .await;
        let (c, (results, reachable)) = match joined {
            Ok(v) => v,
            Err(e) => {
                // The committer panicked: it is gone, and so is the writer. Sessions see their
                // outcome senders dropped and close their connections; nothing was answered,
                // so devices keep their data.
                error!(parent: &span, error = %e, "writer panicked; ingest stops acknowledging");
                stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                stats.writer_alive.store(false, Ordering::Relaxed);
                return None;
            }
        };
        committer = c;
        if stats.database_up.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                warn!(parent: &span, "database reachable again; acknowledging resumes");
            } else {
                error!(parent: &span, "database unreachable; nothing is acknowledged until it is back");
            }
        }
        let elapsed = started.elapsed();
        stats.record_commit(elapsed, results.len() as u64);
        metrics::histogram!(names::COMMIT_DURATION).record(elapsed.as_secs_f64());
        metrics::histogram!(names::COMMIT_BATCH_FRAMES).record(results.len() as f64);
        metrics::histogram!(names::COMMIT_BATCH_ROWS).record(rows as f64);
        let mut last: Option<&Arc<CommitReceipt>> = None;
        let mut failed = 0usize;
        for result in &results {
            match result {
                Ok(receipt) => {
                    // Count each receipt once, though it is shared by its frames.
                    if !last.is_some_and(|l| Arc::ptr_eq(l, receipt)) {
                        stats.record_receipt(receipt);
                        last = Some(receipt);
                    }
                }
                Err(_) => failed += 1,
            }
        }
        if failed == 0 {
            debug!(parent: &span, elapsed_ms = elapsed.as_secs_f64() * 1e3, "committed");
        } else {
            stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            let first = results.iter().find_map(|r| r.as_ref().err());
            error!(
                parent: &span,
                failed,
                error = %first.map_or_else(String::new, ToString::to_string),
                "commit failed; those frames are not acknowledged"
            );
        }
        for (done, outcome) in dones.into_iter().zip(results) {
            if let Some(done) = done {
                // A session that went away no longer waits; its device resends.
                let _ = done.send(outcome);
            }
        }
    }
    Some(committer)
}

/// Commits the batch; when the store refuses it for a reason that is not transient (a frame
/// it cannot store), commits the frames one by one instead, so that one bad frame costs only
/// its own acknowledgement, not those of every session in the batch. One outcome per frame,
/// and whether the database was reachable (false when the last failure was a retryable one).
fn commit_isolating<C: Committer>(
    committer: &mut C,
    frames: &[FrameRow],
    attempts: u32,
) -> (Vec<Outcome>, bool) {
    let failed = |e: &StoreError| CommitFailed(Arc::from(e.to_string()));
    let outcomes = match commit_with_retry(committer, frames, attempts) {
        Ok(receipt) => {
            let receipt = Arc::new(receipt);
            frames.iter().map(|_| Ok(Arc::clone(&receipt))).collect()
        }
        Err(e) if frames.len() > 1 && !e.is_retryable() => {
            warn!(error = %e, frames = frames.len(), "batch refused; committing its frames one by one");
            frames
                .iter()
                .map(|f| {
                    commit_with_retry(committer, std::slice::from_ref(f), attempts)
                        .map(Arc::new)
                        .map_err(|e| failed(&e))
                })
                .collect()
        }
        Err(e) => {
            let reachable = !e.is_retryable();
            let e = failed(&e);
            return (frames.iter().map(|_| Err(e.clone())).collect(), reachable);
        }
    };
    (outcomes, true)
}

fn commit_with_retry<C: Committer>(
    committer: &mut C,
    frames: &[FrameRow],
    attempts: u32,
) -> Result<CommitReceipt, StoreError> {
    let mut attempt = 1;
    loop {
        match committer.commit(frames) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_retryable() && attempt < attempts => {
                warn!(error = %e, attempt, "commit failed, retrying");
                std::thread::sleep(Duration::from_millis(50 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
