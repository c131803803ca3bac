//! Counters and gauges of the ingest side, shared lock-free between the accept loop, the
//! sessions and the writer. The API's `/metrics` reads them; nothing here formats them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use svoi_store::CommitReceipt;

/// Live figures of the ingest side.
#[derive(Debug)]
pub struct IngestStats {
    /// Device connections open now.
    pub connections_open: AtomicU64,
    /// Device connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub connections_rejected: AtomicU64,
    /// Messages received (every frame archived, including pings and garbage).
    pub frames_received: AtomicU64,
    /// Messages that failed to decode.
    pub decode_errors: AtomicU64,
    /// Sessions closed because framing was lost.
    pub sync_losses: AtomicU64,
    /// Frames waiting for the writer now.
    pub queue_depth: AtomicU64,
    /// Records stored (new).
    pub records_stored: AtomicU64,
    /// Records received again and not stored twice.
    pub duplicates: AtomicU64,
    /// Acknowledgements sent after a commit.
    pub acks_sent: AtomicU64,
    /// Commits done.
    pub commits: AtomicU64,
    /// Commits that failed (their frames were not acknowledged).
    pub commit_failures: AtomicU64,
    /// Frames in the last commit.
    pub last_batch_frames: AtomicU64,
    /// Duration of the last commit, microseconds.
    pub last_commit_us: AtomicU64,
    /// Time of the last frame received, Unix milliseconds (0 = none yet).
    pub last_frame_unix_ms: AtomicU64,
    /// False once the writer has died.
    pub writer_alive: AtomicBool,
    /// True while the device listener accepts connections.
    pub listener_up: AtomicBool,
    /// False after a commit failed for a reason that may pass (database unreachable, busy,
    /// timed out) until the next commit succeeds: while it is false nothing is acknowledged.
    pub database_up: AtomicBool,
    /// IMEI → number of sessions identified with it that are open now.
    online: Mutex<HashMap<Arc<str>, u32>>,
}

impl Default for IngestStats {
    fn default() -> Self {
        IngestStats {
            connections_open: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            sync_losses: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            records_stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            last_batch_frames: AtomicU64::new(0),
            last_commit_us: AtomicU64::new(0),
            last_frame_unix_ms: AtomicU64::new(0),
            writer_alive: AtomicBool::new(true),
            listener_up: AtomicBool::new(false),
            database_up: AtomicBool::new(true),
            online: Mutex::new(HashMap::new()),
        }
    }
}

impl IngestStats {
    pub(crate) fn record_commit(&self, elapsed: Duration, frames: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.last_batch_frames.store(frames, Ordering::Relaxed);
        self.last_commit_us
            .store(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_receipt(&self, r: &CommitReceipt) {
        let s = r.stats();
        self.records_stored
            .fetch_add(s.records + s.ext_records, Ordering::Relaxed);
        self.duplicates.fetch_add(s.duplicates, Ordering::Relaxed);
    }

    pub(crate) fn frame_received(&self, now: SystemTime) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_frame_unix_ms.store(ms, Ordering::Relaxed);
    }

    /// A session identified itself as `imei`.
    pub(crate) fn device_online(&self, imei: &Arc<str>) {
        let mut online = self.online.lock().unwrap_or_else(PoisonError::into_inner);
        *online.entry(imei.clone()).or_insert(0) += 1;
    }

    /// A session identified as `imei` ended (or changed identity).
    pub(crate) fn device_offline(&self, imei: &str) {
        let mut online = self.online.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = online.get_mut(imei) {
            *n -= 1;
            if *n == 0 {
                online.remove(imei);
            }
        }
    }

    /// Whether a session identified as `imei` is open now.
    pub fn is_online(&self, imei: &str) -> bool {
        self.online
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(imei)
    }

    /// Number of distinct devices with an open, identified session.
    pub fn online_devices(&self) -> usize {
        self.online
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A plain copy for reports and tests.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_open: g(&self.connections_open),
            connections_accepted: g(&self.connections_accepted),
            connections_rejected: g(&self.connections_rejected),
            frames_received: g(&self.frames_received),
            decode_errors: g(&self.decode_errors),
            sync_losses: g(&self.sync_losses),
            queue_depth: g(&self.queue_depth),
            records_stored: g(&self.records_stored),
            duplicates: g(&self.duplicates),
            acks_sent: g(&self.acks_sent),
            commits: g(&self.commits),
            commit_failures: g(&self.commit_failures),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`IngestStats::connections_open`].
    pub connections_open: u64,
    /// See [`IngestStats::connections_accepted`].
    pub connections_accepted: u64,
    /// See [`IngestStats::connections_rejected`].
    pub connections_rejected: u64,
    /// See [`IngestStats::frames_received`].
    pub frames_received: u64,
    /// See [`IngestStats::decode_errors`].
    pub decode_errors: u64,
    /// See [`IngestStats::sync_losses`].
    pub sync_losses: u64,
    /// See [`IngestStats::queue_depth`].
    pub queue_depth: u64,
    /// See [`IngestStats::records_stored`].
    pub records_stored: u64,
    /// See [`IngestStats::duplicates`].
    pub duplicates: u64,
    /// See [`IngestStats::acks_sent`].
    pub acks_sent: u64,
    /// See [`IngestStats::commits`].
    pub commits: u64,
    /// See [`IngestStats::commit_failures`].
    pub commit_failures: u64,
}
