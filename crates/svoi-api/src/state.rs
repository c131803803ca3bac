//! What every handler shares: the store [`Reader`], the live view of the ingest side
//! ([`Live`]), the maintenance view ([`Maintenance`]), the `/metrics` renderer, and the
//! samples the status endpoint derives rates from.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use svoi_store::{Reader, StoreError};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::ApiError;

/// The live side of the server as the API sees it; implemented by the binary over the ingest
/// statistics, faked in tests.
pub trait Live: Send + Sync + 'static {
    /// A snapshot of the ingest side now.
    fn status(&self) -> LiveStatus;
    /// Whether the device has an open session now.
    fn is_online(&self, imei: &str) -> bool;
}

/// A snapshot of the ingest side.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    /// The device listener accepts connections.
    pub listener_up: bool,
    /// The batch writer task is running.
    pub writer_alive: bool,
    /// Device connections open now.
    pub connections_open: u64,
    /// Frames received since start (monotonic).
    pub frames_received: u64,
    /// Frames that failed to decode since start (monotonic).
    pub decode_errors: u64,
    /// Frames waiting for the writer now.
    pub queue_depth: u64,
    /// Time of the last frame received, Unix milliseconds.
    pub last_frame_unix_ms: Option<u64>,
}

/// What the API shows about maintenance windows; implemented by the binary over its poller of
/// the database's operations state, faked in tests. Answers from memory: the handlers call it
/// on every `/ready` and must not wait for the database.
pub trait Maintenance: Send + Sync + 'static {
    /// The open maintenance window, if any.
    fn window(&self) -> Option<MaintenanceWindow>;
}

/// An open maintenance window as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Why it was opened (`svoi maintenance start --reason`).
    pub reason: String,
    /// When it was opened, Unix microseconds.
    pub since_us: i64,
    /// When it is planned to end, Unix microseconds.
    pub until_us: i64,
}

/// No maintenance windows at all (the view of [`ApiState::new`]).
struct NoMaintenance;

impl Maintenance for NoMaintenance {
    fn window(&self) -> Option<MaintenanceWindow> {
        None
    }
}

/// Renders the Prometheus text exposition for `GET /metrics`. The binary owns the recorder;
/// the API only calls this.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The window the status endpoint computes frame and error rates over.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the background ticker samples the counters, so that a status call after a
/// quiet minute still finds a sample about a minute old.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// More samples than the window can hold at the ticker's pace; bounds the deque whatever the
/// call rate.
const MAX_SAMPLES: usize = 64;

/// One reading of the monotonic ingest counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    frames: u64,
    errors: u64,
}

/// Frames per second and the fraction of them that failed to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rates {
    pub(crate) frames_per_second: f64,
    pub(crate) decode_error_rate: f64,
}

/// The state shared by the handlers. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    reader: Reader,
    live: Arc<dyn Live>,
    maintenance: Arc<dyn Maintenance>,
    metrics: MetricsRender,
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
    /// Stops the sampling ticker when the last handle to the state goes away.
    _ticker: Option<DropGuard>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("reader", &self.inner.reader)
            .field("started", &self.inner.started)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state over `reader`, `live` and the `/metrics` renderer.
    ///
    /// Called inside a Tokio runtime, it also starts a light task sampling the ingest
    /// counters every 5 s for the status endpoint's rates; the task ends when the last clone
    /// of the state is dropped. Outside a runtime the status endpoint samples on its calls
    /// only. It also gives the installed `metrics` recorder the help texts of the API's
    /// metrics ([`crate::names::describe`]): create the state after installing the recorder.
    pub fn new(reader: Reader, live: Arc<dyn Live>, metrics: MetricsRender) -> ApiState {
        ApiState::with_maintenance(reader, live, Arc::new(NoMaintenance), metrics)
    }

    /// [`ApiState::new`] with a view of maintenance windows: `/ready` and `/api/v1/status`
    /// show the open one.
    pub fn with_maintenance(
        reader: Reader,
        live: Arc<dyn Live>,
        maintenance: Arc<dyn Maintenance>,
        metrics: MetricsRender,
    ) -> ApiState {
        crate::names::describe();
        let started = Instant::now();
        let first = live.status();
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let inner = Arc::new(Inner {
            reader,
            live,
            maintenance,
            metrics,
            started,
            samples: Mutex::new(VecDeque::from([Sample {
                at: started,
                frames: first.frames_received,
                errors: first.decode_errors,
            }])),
            _ticker: runtime.as_ref().map(|_| stop.clone().drop_guard()),
        });
        if let Some(runtime) = runtime {
            runtime.spawn(sample_ticker(Arc::downgrade(&inner), stop));
        }
        ApiState { inner }
    }

    /// The live ingest view.
    pub(crate) fn live(&self) -> &dyn Live {
        self.inner.live.as_ref()
    }

    /// The open maintenance window.
    pub(crate) fn maintenance(&self) -> Option<MaintenanceWindow> {
        self.inner.maintenance.window()
    }

    /// The Prometheus text now.
    pub(crate) fn render_metrics(&self) -> String {
        (self.inner.metrics)()
    }

    /// Time since the state was created (the server's uptime, near enough).
    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Runs `f` on the reader in the blocking pool: every store call goes through here, so
    /// no SQLite work ever runs on a runtime thread.
    pub(crate) async fn store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = self.inner.reader.clone();
        Ok(tokio::task::spawn_blocking(move || f(&reader)).await??)
    }

    /// Records a sample of `status` and returns the rates over the last minute.
    pub(crate) fn rates(&self, status: &LiveStatus) -> Rates {
        let now = Instant::now();
        let mut samples = self
            .inner
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        push_sample(&mut samples, now, status);
        compute_rates(&samples, now.duration_since(self.inner.started))
    }

    /// Records a sample of the live counters now (the ticker's work).
    fn sample(&self) {
        let status = self.inner.live.status();
        let mut samples = self
            .inner
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        push_sample(&mut samples, Instant::now(), &status);
    }
}

/// Samples every [`SAMPLE_EVERY`] until `stop` is cancelled or the state is gone. Holds only
/// a weak reference so that it never keeps the state (and its database connections) alive.
async fn sample_ticker(state: Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.upgrade() {
            Some(inner) => ApiState { inner }.sample(),
            None => return,
        }
    }
}

/// Appends a sample and forgets those no longer needed: everything older than the window
/// except the newest such sample, which is what the window's rate is measured from.
fn push_sample(samples: &mut VecDeque<Sample>, now: Instant, status: &LiveStatus) {
    samples.push_back(Sample {
        at: now,
        frames: status.frames_received,
        errors: status.decode_errors,
    });
    while samples.len() > MAX_SAMPLES
        || (samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|s| now.duration_since(s.at) >= RATE_WINDOW))
    {
        samples.pop_front();
    }
}

/// Rates between the oldest sample within about a minute and the newest. With only one
/// sample (or none spanning any time) the since-start average stands in: the first sample is
/// taken when the state is created.
fn compute_rates(samples: &VecDeque<Sample>, uptime: Duration) -> Rates {
    let (Some(newest), Some(oldest)) = (samples.back(), samples.front()) else {
        return Rates {
            frames_per_second: 0.0,
            decode_error_rate: 0.0,
        };
    };
    let span = newest.at.duration_since(oldest.at);
    let (frames, errors, secs) = if samples.len() >= 2 && !span.is_zero() {
        (
            newest.frames.saturating_sub(oldest.frames),
            newest.errors.saturating_sub(oldest.errors),
            span.as_secs_f64(),
        )
    } else {
        (newest.frames, newest.errors, uptime.as_secs_f64())
    };
    let frames_per_second = if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    };
    let decode_error_rate = if frames > 0 {
        (errors as f64 / frames as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Rates {
        frames_per_second,
        decode_error_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(frames: u64, errors: u64) -> LiveStatus {
        LiveStatus {
            frames_received: frames,
            decode_errors: errors,
            ..LiveStatus::default()
        }
    }

    #[test]
    fn rates_cover_about_the_last_minute() {
        let start = Instant::now();
        let mut samples = VecDeque::new();
        push_sample(&mut samples, start, &status(0, 0));
        // One sample: the since-start average.
        let r = compute_rates(&samples, Duration::from_secs(10));
        assert_eq!(r.frames_per_second, 0.0);

        // 10 frames/s with 1 error in 10 for two minutes, sampled every 5 s.
        for i in 1..=24u64 {
            let at = start + SAMPLE_EVERY * u32::try_from(i).unwrap();
            push_sample(&mut samples, at, &status(i * 50, i * 5));
        }
        // Then a burst of 600 frames, all bad, within 5 s.
        let end = start + Duration::from_secs(125);
        push_sample(&mut samples, end, &status(24 * 50 + 600, 24 * 5 + 600));
        let r = compute_rates(&samples, Duration::from_secs(125));
        // The window spans the last 60-65 s: 600 frames then 550 more, of which 55 bad.
        let oldest = samples.front().unwrap();
        let span = end.duration_since(oldest.at).as_secs_f64();
        assert!((60.0..=65.0).contains(&span), "{span}");
        let frames = (24 * 50 + 600 - oldest.frames) as f64;
        assert!((r.frames_per_second - frames / span).abs() < 1e-9, "{r:?}");
        assert!(
            r.decode_error_rate > 0.5 && r.decode_error_rate <= 1.0,
            "{r:?}"
        );
        assert!(samples.len() <= MAX_SAMPLES);
    }

    #[test]
    fn one_sample_uses_the_since_start_average() {
        let mut samples = VecDeque::new();
        let now = Instant::now();
        push_sample(&mut samples, now, &status(100, 25));
        let r = compute_rates(&samples, Duration::from_secs(50));
        assert_eq!(r.frames_per_second, 2.0);
        assert_eq!(r.decode_error_rate, 0.25);
        // A counter that went backwards (a restart of the stats) never yields a negative rate.
        push_sample(&mut samples, now + Duration::from_secs(5), &status(10, 30));
        let r = compute_rates(&samples, Duration::from_secs(55));
        assert_eq!(r.frames_per_second, 0.0);
        assert_eq!(r.decode_error_rate, 0.0);
    }
}
