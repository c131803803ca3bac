//! What the fleet measures while it runs: per-device counters, the acknowledgement-latency
//! histogram shared by every device, and the log of the first distinct errors.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of distinct error messages kept.
pub const MAX_ERRORS: usize = 20;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// Counters of one device, summed into the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeviceStats {
    pub records_sent: u64,
    pub records_acked: u64,
    pub records_resent: u64,
    pub alarms_acked: u64,
    pub currents_acked: u64,
    pub reconnects: u64,
    pub reply_mismatches: u64,
    pub completed: bool,
}

impl DeviceStats {
    /// Adds another device's counters (a completed device counts once in `completed_devices`).
    pub fn absorb(&mut self, other: &DeviceStats, completed_devices: &mut usize) {
        self.records_sent += other.records_sent;
        self.records_acked += other.records_acked;
        self.records_resent += other.records_resent;
        self.alarms_acked += other.alarms_acked;
        self.currents_acked += other.currents_acked;
        self.reconnects += other.reconnects;
        self.reply_mismatches += other.reply_mismatches;
        *completed_devices += usize::from(other.completed);
    }
}

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most about 3% wide.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64 microsecond value.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB as usize;

/// A log-linear histogram of latencies in microseconds, updated lock-free by every device
/// (a few kilobytes for the whole fleet, however many messages it sends).
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// The middle of bucket `i`, in microseconds.
fn bucket_mid(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64;
    }
    let shift = i / SUB - 1;
    let low = ((SUB + i % SUB) as f64) * (shift as f64).exp2();
    let width = (shift as f64).exp2();
    low + (width - 1.0) / 2.0
}

impl LatencyHistogram {
    /// Adds one sample.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// p50, p90, p99 and max in milliseconds (zeros without samples).
    pub fn percentiles(&self) -> Percentiles {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return Percentiles::default();
        }
        let max_us = self.max_us.load(Ordering::Relaxed) as f64;
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                seen += b.load(Ordering::Relaxed);
                if seen >= rank {
                    return bucket_mid(i).min(max_us) / 1000.0;
                }
            }
            max_us / 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: max_us / 1000.0,
        }
    }
}

/// The first [`MAX_ERRORS`] distinct error messages with the first device that hit each and
/// how often it happened.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    entries: Mutex<Vec<ErrorEntry>>,
}

#[derive(Debug)]
struct ErrorEntry {
    message: String,
    first_device: String,
    count: u64,
}

impl ErrorLog {
    /// Notes that `device` hit `message`.
    pub fn record(&self, device: &str, message: String) {
        // A panic while holding this lock leaves the log consistent: take it anyway.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter_mut().find(|e| e.message == message) {
            e.count += 1;
        } else if entries.len() < MAX_ERRORS {
            entries.push(ErrorEntry {
                message,
                first_device: device.to_string(),
                count: 1,
            });
        }
    }

    /// One line per distinct error, in the order first seen.
    pub fn lines(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|e| match e.count {
                1 => format!("{}: {}", e.first_device, e.message),
                n => format!(
                    "{}: {} (and {} more times)",
                    e.first_device,
                    e.message,
                    n - 1
                ),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut last = 0;
        for us in 0..200_000u64 {
            let b = bucket_of(us);
            assert!(b == last || b == last + 1, "{us}");
            last = b;
            let mid = bucket_mid(b);
            assert!(
                (mid - us as f64).abs() <= 0.035 * us as f64 + 0.5,
                "{us} -> {mid}"
            );
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert!((p.p50 - 50.0).abs() < 2.0, "{p:?}");
        assert!((p.p90 - 90.0).abs() < 3.0, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 3.5, "{p:?}");
        assert_eq!(p.max, 100.0);
        assert_eq!(
            LatencyHistogram::default().percentiles(),
            Percentiles::default()
        );
    }

    #[test]
    fn errors_are_distinct_and_capped() {
        let log = ErrorLog::default();
        for i in 0..30 {
            log.record("d1", format!("e{i}"));
            log.record("d2", format!("e{i}"));
        }
        let lines = log.lines();
        assert_eq!(lines.len(), MAX_ERRORS);
        assert_eq!(lines[0], "d1: e0 (and 1 more times)");
    }
}
