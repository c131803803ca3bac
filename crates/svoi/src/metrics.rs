//! The process's Prometheus exporter: installs the global `metrics` recorder with histogram
//! buckets, publishes the ingest side's counters at scrape time, and renders the text format
//! for `/metrics`.
//!
//! The libraries emit labelled counters and histograms through the `metrics` facade as events
//! happen; plain counters and gauges live as atomics in `IngestStats` and are copied into the
//! recorder just before each render, so the hot path pays for one atomic add, not a registry
//! lookup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use svoi_ingest::IngestStats;

/// Installs the process-wide recorder. Call once, before the server starts.
pub fn install() -> Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets(svoi_ingest::names::SECONDS)
        .context("invalid histogram buckets")?;
    for (name, buckets) in svoi_ingest::names::HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .context("invalid histogram buckets")?;
    }
    let handle = builder
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    svoi_ingest::names::describe();
    describe();
    gauge!("svoi_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!("svoi_start_time_seconds").set(started);
    Ok(handle)
}

fn describe() {
    describe_gauge!("svoi_build_info", "Build of the running server (value 1)");
    describe_gauge!("svoi_start_time_seconds", "Process start, Unix seconds");
    describe_gauge!("svoi_connections_open", "Device connections open now");
    describe_counter!(
        "svoi_connections_accepted_total",
        "Device connections accepted"
    );
    describe_counter!(
        "svoi_connections_rejected_total",
        "Device connections refused at the connection cap"
    );
    describe_gauge!(
        "svoi_devices_online",
        "Distinct devices with an identified session open now"
    );
    describe_counter!(
        "svoi_records_stored_total",
        "Records stored (new rows in records and ext_records)"
    );
    describe_counter!(
        "svoi_records_duplicate_total",
        "Records received again and not stored twice"
    );
    describe_gauge!("svoi_queue_depth", "Frames waiting for the batch writer");
    describe_counter!(
        "svoi_acks_sent_total",
        "Acknowledgements sent after a durable commit"
    );
    describe_counter!("svoi_commits_total", "Group commits done");
    describe_counter!(
        "svoi_commit_failures_total",
        "Group commits that failed (their frames were not acknowledged)"
    );
    describe_counter!(
        "svoi_sync_losses_total",
        "Device sessions closed because framing was lost"
    );
    describe_gauge!(
        "svoi_last_frame_timestamp_seconds",
        "Arrival of the last device message, Unix seconds (0 = none yet)"
    );
    describe_gauge!("svoi_writer_up", "1 while the batch writer runs");
    describe_gauge!(
        "svoi_database_up",
        "0 after a commit failed because the database was unreachable, busy or timed out (nothing is acknowledged meanwhile), 1 again after the next successful commit"
    );
    describe_gauge!(
        "svoi_ingest_listener_up",
        "1 while the device listener accepts connections"
    );
    describe_gauge!(
        "svoi_disk_free_bytes",
        "Bytes available on the filesystem of the data (the SQLite database's directory, or the working directory on PostgreSQL)"
    );
    describe_gauge!("svoi_disk_size_bytes", "Size of the filesystem of the data");
    describe_gauge!(
        "svoi_maintenance_mode",
        "1 while a maintenance window is open (warning alerts are silenced), else 0"
    );
    describe_gauge!(
        "svoi_backup_last_success_timestamp_seconds",
        "End of the last successful backup in the maintenance log, Unix seconds (absent until there is one)"
    );
    describe_gauge!(
        "svoi_backup_last_failure_timestamp_seconds",
        "End of the last failed backup in the maintenance log, Unix seconds (absent until there is one)"
    );
    describe_gauge!(
        "svoi_backup_last_verify_timestamp_seconds",
        "End of the last backup verification in the maintenance log, Unix seconds (absent until there is one)"
    );
    describe_gauge!(
        "svoi_backup_last_verify_success",
        "1 when the last backup verification passed, 0 when it failed (absent until there is one)"
    );
}

/// Publishes the operations state read from the database: maintenance mode always, each
/// backup figure only once the maintenance log has such an entry (a missing series, not a
/// made-up zero: the backup alerts compare these timestamps).
pub fn publish_ops(state: &svoi_store::OpsState) {
    let seconds = |us: i64| us as f64 / 1e6;
    gauge!("svoi_maintenance_mode").set(if state.window.is_some() { 1.0 } else { 0.0 });
    if let Some(us) = state.last_backup_ok_us {
        gauge!("svoi_backup_last_success_timestamp_seconds").set(seconds(us));
    }
    if let Some(us) = state.last_backup_failed_us {
        gauge!("svoi_backup_last_failure_timestamp_seconds").set(seconds(us));
    }
    if let Some(us) = state.last_verify_us {
        gauge!("svoi_backup_last_verify_timestamp_seconds").set(seconds(us));
    }
    if let Some(ok) = state.last_verify_ok {
        gauge!("svoi_backup_last_verify_success").set(if ok { 1.0 } else { 0.0 });
    }
}

/// Copies the ingest counters into the recorder.
pub fn publish(stats: &IngestStats) {
    let s = stats.snapshot();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge!("svoi_connections_open").set(s.connections_open as f64);
    counter!("svoi_connections_accepted_total").absolute(s.connections_accepted);
    counter!("svoi_connections_rejected_total").absolute(s.connections_rejected);
    gauge!("svoi_devices_online").set(stats.online_devices() as f64);
    counter!("svoi_records_stored_total").absolute(s.records_stored);
    counter!("svoi_records_duplicate_total").absolute(s.duplicates);
    gauge!("svoi_queue_depth").set(s.queue_depth as f64);
    counter!("svoi_acks_sent_total").absolute(s.acks_sent);
    counter!("svoi_commits_total").absolute(s.commits);
    counter!("svoi_commit_failures_total").absolute(s.commit_failures);
    counter!("svoi_sync_losses_total").absolute(s.sync_losses);
    let last_ms = stats.last_frame_unix_ms.load(Ordering::Relaxed);
    gauge!("svoi_last_frame_timestamp_seconds").set(last_ms as f64 / 1000.0);
    gauge!("svoi_writer_up").set(flag(stats.writer_alive.load(Ordering::Relaxed)));
    gauge!("svoi_database_up").set(flag(stats.database_up.load(Ordering::Relaxed)));
    gauge!("svoi_ingest_listener_up").set(flag(stats.listener_up.load(Ordering::Relaxed)));
}

/// Publishes the free and total space of the filesystem holding `data_dir` (nothing when it
/// cannot be read: a missing series, not a made-up value).
pub fn publish_disk(data_dir: &Path) {
    if let Some(space) = crate::probe::disk_space(data_dir) {
        gauge!("svoi_disk_free_bytes").set(space.free as f64);
        gauge!("svoi_disk_size_bytes").set(space.total as f64);
    }
}

/// The `/metrics` body source handed to the API: publish, then render.
pub fn render_fn(
    handle: PrometheusHandle,
    stats: Arc<IngestStats>,
    data_dir: PathBuf,
) -> svoi_api::MetricsRender {
    gauge!("svoi_maintenance_mode").set(0.0);
    Arc::new(move || {
        publish(&stats);
        publish_disk(&data_dir);
        handle.render()
    })
}

/// The API's view of the live ingest side.
pub struct IngestLive(pub Arc<IngestStats>);

impl svoi_api::Live for IngestLive {
    fn status(&self) -> svoi_api::LiveStatus {
        let s = self.0.snapshot();
        let last = self.0.last_frame_unix_ms.load(Ordering::Relaxed);
        svoi_api::LiveStatus {
            listener_up: self.0.listener_up.load(Ordering::Relaxed),
            writer_alive: self.0.writer_alive.load(Ordering::Relaxed),
            connections_open: s.connections_open,
            frames_received: s.frames_received,
            decode_errors: s.decode_errors,
            queue_depth: s.queue_depth,
            last_frame_unix_ms: (last > 0).then_some(last),
        }
    }

    fn is_online(&self, imei: &str) -> bool {
        self.0.is_online(imei)
    }
}
