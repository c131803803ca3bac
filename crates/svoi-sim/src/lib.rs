//! A simulated fleet of Navtelecom trackers for tests, demos, smoke tests and benchmarks.
//!
//! Each of N devices opens its own TCP connection to the server's device port, identifies
//! itself with its IMEI (`*>S`), negotiates its own FLEX version and field set (`*>FLEX`), then
//! sends its archive as `~A` batches, with `~T` out-of-turn and `~C` current-state records
//! mixed in, and checks every reply byte for byte against what [`svoi_proto::reply::Reply`]
//! says a conforming server answers. Like a real device it keeps every unacknowledged record:
//! after a timeout, a wrong reply or a dropped connection it reconnects, redoes the handshake
//! and negotiation, and resends them. The run ends when every device has its records
//! acknowledged, has given up reconnecting, or the time limit passes, and yields a
//! [`SimReport`]: counts, throughput and acknowledgement-latency percentiles.
//!
//! What a device sends is a pure function of the [`SimConfig`] (seed, device number, record
//! index), so [`device_profile`] lets a test predict it exactly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), svoi_sim::SimError> {
//! let cfg = svoi_sim::SimConfig { devices: 100, records: 1_000, ..Default::default() };
//! let report = svoi_sim::run(cfg, None).await?;
//! assert!(report.success(), "{:?}", report.problems());
//! # Ok(())
//! # }
//! ```

mod device;
mod profile;
mod stats;
mod templates;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use svoi_proto::version;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

pub use profile::{CURRENT_EVENT_CODE, DeviceProfile, MANDATORY_FIELDS, SERVER_ID, device_profile};
pub use stats::{MAX_ERRORS, Percentiles};

use device::Shared;
use stats::{DeviceStats, ErrorLog, LatencyHistogram};

/// Default event time of record 0: 2023-11-14 22:13:20 UTC. A fixed value keeps runs
/// reproducible: the same config always sends the same (IMEI, index, event time) triples.
pub const DEFAULT_START_TIME: u32 = 1_700_000_000;

/// Default IMEI of device 0.
pub const DEFAULT_IMEI_BASE: u64 = 860_000_000_000_000;

/// Largest 15-digit IMEI.
const MAX_IMEI: u64 = 999_999_999_999_999;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The server's device port.
    pub addr: SocketAddr,
    /// Number of devices, each with its own TCP connection, all running concurrently.
    pub devices: usize,
    /// Archive records per device to get acknowledged (`~T` records included).
    pub records: u64,
    /// Records per `~A`, 1..=255.
    pub batch: u8,
    /// Ceiling on records per second per device: record k appears in the device's memory
    /// `k / rate` seconds after the start, and a batch holds only records that exist. `None`
    /// sends as fast as acknowledgements allow.
    pub rate: Option<f64>,
    /// Send the record after every K archive records as a `~T` (it has its own index and
    /// counts in `records`).
    pub alarm_every: Option<u64>,
    /// Send a `~C` after every K acknowledged records (not counted in `records`).
    pub current_every: Option<u64>,
    /// Hard stop for the whole run.
    pub duration: Option<Duration>,
    /// A reply (or connect, or send) that takes longer means the connection is broken: the
    /// device reconnects.
    pub reply_timeout: Duration,
    /// After a failure, a device keeps reconnecting (pausing 100 to 500 ms between attempts)
    /// until an acknowledgement arrives or this long has passed, then gives up.
    pub reconnect_for: Duration,
    /// Device i has IMEI `format!("{:015}", imei_base + i)`.
    pub imei_base: u64,
    /// Seed of field sets and values: the same seed gives the same fleet.
    pub seed: u64,
    /// Event time of record 0 (Unix seconds); record k has `start_time + k`, so the
    /// (index, event time) pairs of a device are unique.
    pub start_time: u32,
    /// FLEX versions spread over the devices in turn (0x0A = 10 for 1.0, 0x14 = 20 for 2.0,
    /// 0x1E = 30 for 3.0); the device uses it for protocol and structure alike.
    pub flex_versions: Vec<u8>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 5221)),
            devices: 1,
            records: 100,
            batch: 50,
            rate: None,
            alarm_every: None,
            current_every: None,
            duration: None,
            reply_timeout: Duration::from_secs(10),
            reconnect_for: Duration::from_secs(10),
            imei_base: DEFAULT_IMEI_BASE,
            seed: 1,
            start_time: DEFAULT_START_TIME,
            flex_versions: version::SUPPORTED.to_vec(),
        }
    }
}

impl SimConfig {
    /// Checks the config is one the simulator can run.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |why: String| Err(SimError::Config(why));
        if self.devices == 0 {
            return bad("devices must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch must be 1..=255".into());
        }
        if self.records > 1 << 32 {
            return bad(format!(
                "records {} does not fit u32 record indices",
                self.records
            ));
        }
        if u64::from(self.start_time) + self.records > u64::from(u32::MAX) {
            return bad(format!(
                "start_time {} + records {} overflows u32 event times",
                self.start_time, self.records
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return bad(format!("rate must be a positive number, not {rate}"));
        }
        if self.alarm_every == Some(0) || self.current_every == Some(0) {
            return bad("alarm_every and current_every must be at least 1".into());
        }
        if self.reply_timeout.is_zero() {
            return bad("reply_timeout must be positive".into());
        }
        if self.flex_versions.is_empty() {
            return bad("flex_versions is empty".into());
        }
        if let Some(v) = self
            .flex_versions
            .iter()
            .find(|v| !version::SUPPORTED.contains(v))
        {
            return bad(format!(
                "unsupported flex version {v} (supported: 10, 20, 30)"
            ));
        }
        let last = self.imei_base.checked_add(self.devices as u64 - 1);
        if last.is_none_or(|last| last > MAX_IMEI) {
            return bad(format!(
                "imei_base {} + {} devices exceeds 15 digits",
                self.imei_base, self.devices
            ));
        }
        Ok(())
    }
}

/// One record the server acknowledged (archive or out-of-turn; `~C` records are not reported).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Ack {
    /// The device's IMEI.
    pub imei: String,
    /// Field 1 of the record.
    pub record_index: u32,
    /// Field 3 of the record (Unix seconds).
    pub event_time: u32,
    /// Fields 10 and 11 as sent (latitude, longitude in 1/600 000 degree) when the record
    /// has a valid fix.
    pub position: Option<(i32, i32)>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimReport {
    /// Devices simulated.
    pub devices: usize,
    /// Devices that got every record (and every due `~C`) acknowledged.
    pub devices_completed: usize,
    /// Records each device was to get acknowledged.
    pub records_per_device: u64,
    /// Records sent, resends included.
    pub records_sent: u64,
    /// Distinct records acknowledged (`~T` records included).
    pub records_acked: u64,
    /// Records sent again after a failure.
    pub records_resent: u64,
    /// `~T` records acknowledged.
    pub alarms_acked: u64,
    /// `~C` records acknowledged.
    pub currents_acked: u64,
    /// Connection attempts after a failure.
    pub reconnects: u64,
    /// Replies that were not byte for byte what a conforming server answers.
    pub reply_mismatches: u64,
    /// Whether the duration limit or a shutdown request ended the run.
    pub stopped_early: bool,
    /// The first distinct errors (at most [`MAX_ERRORS`]), each with the first device that
    /// hit it.
    pub errors: Vec<String>,
    /// Wall time of the run.
    #[serde(rename = "elapsed_s", serialize_with = "as_secs")]
    pub elapsed: Duration,
    /// Records acknowledged per second of `elapsed`.
    pub acked_per_sec: f64,
    /// Send-complete to reply-received time of every acknowledged `~A`, `~T` and `~C`.
    pub ack_latency_ms: Percentiles,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl SimReport {
    /// Why the run is not a success; empty when every device got all its records
    /// acknowledged and every reply was right.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.devices_completed < self.devices {
            let why = if self.stopped_early {
                "the time limit or a shutdown ended the run first"
            } else {
                "they gave up reconnecting"
            };
            problems.push(format!(
                "{} of {} devices did not get all {} records acknowledged ({} of {} acknowledged): {why}",
                self.devices - self.devices_completed,
                self.devices,
                self.records_per_device,
                self.records_acked,
                self.records_per_device * self.devices as u64,
            ));
        }
        if self.reply_mismatches > 0 {
            problems.push(format!(
                "{} replies did not match what the protocol requires",
                self.reply_mismatches
            ));
        }
        problems
    }

    /// Whether every device got all its records acknowledged with no wrong reply.
    pub fn success(&self) -> bool {
        self.problems().is_empty()
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The config is not one the simulator can run.
    #[error("invalid simulation config: {0}")]
    Config(String),
}

/// Runs the fleet until every device is done or gives up, or `cfg.duration` passes. Every
/// acknowledged archive and out-of-turn record is sent on `acks` (the devices wait when the
/// channel is full).
pub async fn run(cfg: SimConfig, acks: Option<mpsc::Sender<Ack>>) -> Result<SimReport, SimError> {
    run_until(cfg, acks, std::future::pending()).await
}

/// [`run`], also stopping the devices when `shutdown` completes (e.g. on Ctrl-C); the report
/// then covers what happened so far.
pub async fn run_until(
    cfg: SimConfig,
    acks: Option<mpsc::Sender<Ack>>,
    shutdown: impl Future<Output = ()>,
) -> Result<SimReport, SimError> {
    cfg.validate()?;
    let started = Instant::now();
    let devices = cfg.devices;
    let records_per_device = cfg.records;
    let duration = cfg.duration;
    let shared = Arc::new(Shared {
        cfg,
        acks,
        latency: LatencyHistogram::default(),
        errors: ErrorLog::default(),
        stop: CancellationToken::new(),
        started,
    });
    let mut set = JoinSet::new();
    for i in 0..devices {
        set.spawn(device::run(Arc::clone(&shared), i));
    }
    let stop = shared.stop.clone();
    let watchdog = async move {
        match duration {
            Some(d) => tokio::select! {
                () = sleep(d) => {}
                () = shutdown => {}
            },
            None => shutdown.await,
        }
        stop.cancel();
    };
    tokio::pin!(watchdog);
    let mut watching = true;
    let mut totals = DeviceStats::default();
    let mut completed = 0;
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(stats)) => totals.absorb(&stats, &mut completed),
                Some(Err(e)) => shared.errors.record("simulator", format!("device task failed: {e}")),
            },
            () = &mut watchdog, if watching => watching = false,
        }
    }
    let elapsed = started.elapsed();
    let secs = elapsed.as_secs_f64();
    Ok(SimReport {
        devices,
        devices_completed: completed,
        records_per_device,
        records_sent: totals.records_sent,
        records_acked: totals.records_acked,
        records_resent: totals.records_resent,
        alarms_acked: totals.alarms_acked,
        currents_acked: totals.currents_acked,
        reconnects: totals.reconnects,
        reply_mismatches: totals.reply_mismatches,
        stopped_early: shared.stop.is_cancelled(),
        errors: shared.errors.lines(),
        elapsed,
        acked_per_sec: if secs > 0.0 {
            totals.records_acked as f64 / secs
        } else {
            0.0
        },
        ack_latency_ms: shared.latency.percentiles(),
    })
}
