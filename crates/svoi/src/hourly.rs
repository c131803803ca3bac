//! The hourly statistics collector of `svoi serve`: what this server saw in each hour
//! (frames, records, duplicates, decode errors, acknowledgements, acknowledgement latency
//! percentiles, devices, connections, database size), kept in the database's `hourly_stats`
//! table so that `svoi report` works without Prometheus.
//!
//! [`Collector`] is the arithmetic alone: it takes readings of the ingest counters and of the
//! acknowledgement-latency histogram and turns them into the current hour's row (deltas since
//! the hour began). The task in `serve` feeds it and writes the rows through a store handle of
//! its own, never the ingest writer's.
//!
//! Devices active: the ingest side keeps no per-device record of who sent what when, so the
//! figure is the most distinct devices seen online at once among the samples of the hour
//! (taken every second: a lower bound of the devices that sent in the hour, exact for devices
//! that keep their connection open, as trackers do). `svoi report` takes its devices per day
//! from the data itself instead.

use svoi_ingest::StatsSnapshot;
use svoi_store::HourlyStats;

/// Seconds in an hour.
const HOUR: i64 = 3600;

/// One reading of the live figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// When, Unix seconds.
    pub at_s: i64,
    /// The ingest counters.
    pub stats: StatsSnapshot,
    /// Distinct devices with an identified session open.
    pub online: u64,
    /// Cumulative buckets of the acknowledgement-latency histogram (seconds), as
    /// [`crate::probe::Scrape::buckets`] returns them.
    pub ack_buckets: Vec<(f64, f64)>,
}

/// The counters and buckets at the start of an hour (the first reading in it, or the last
/// of the previous hour).
#[derive(Clone, Debug)]
struct Base {
    stats: StatsSnapshot,
    ack_buckets: Vec<(f64, f64)>,
}

/// Turns readings into hourly rows.
#[derive(Clone, Debug)]
pub struct Collector {
    instance: String,
    hour_start: i64,
    base: Base,
    devices_max: u64,
    connections_max: u64,
    last: Reading,
    /// The row an earlier run of this server wrote for the hour being counted (a restart
    /// within the hour): added to, not overwritten.
    carry: Option<HourlyStats>,
}

/// The start of the hour of `t`.
pub fn hour_of(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

fn delta(now: u64, base: u64) -> i64 {
    i64::try_from(now.saturating_sub(base)).unwrap_or(i64::MAX)
}

impl Collector {
    /// Starts with the reading taken when the server started: the hour's row counts from
    /// here.
    pub fn new(instance: String, first: Reading) -> Collector {
        Collector {
            instance,
            hour_start: hour_of(first.at_s),
            base: Base {
                stats: first.stats,
                ack_buckets: first.ack_buckets.clone(),
            },
            devices_max: first.online,
            connections_max: first.stats.connections_open,
            last: first,
            carry: None,
        }
    }

    /// Continues the row an earlier run of this server wrote for the hour being counted:
    /// its counts are added to this run's, its maxima kept, its percentiles mixed with this
    /// run's weighted by acknowledgements. Rows of other hours or instances are ignored.
    pub fn carry_over(&mut self, earlier: HourlyStats) {
        if earlier.hour_start == self.hour_start && earlier.instance == self.instance {
            self.carry = Some(earlier);
        }
    }

    /// The hour the collector is counting.
    pub fn hour_start(&self) -> i64 {
        self.hour_start
    }

    /// Notes the devices online and connections open at `at_s` between rows (their maxima
    /// go into the row). A sample of a later hour is left to [`Collector::observe`].
    pub fn sample(&mut self, at_s: i64, online: u64, connections: u64) {
        if hour_of(at_s) == self.hour_start {
            self.devices_max = self.devices_max.max(online);
            self.connections_max = self.connections_max.max(connections);
        }
    }

    /// Takes a reading. When it falls into a later hour than the one being counted, the
    /// counted hour's final row is returned first (everything since the previous reading is
    /// put into it: readings a minute apart shift at most a minute across the boundary) and
    /// counting starts over from this reading. The second element is the row of the hour the
    /// reading is in, as of this reading (`None` right after such a switch: nothing counted
    /// yet).
    pub fn observe(
        &mut self,
        reading: Reading,
        db_bytes: Option<i64>,
        now_us: i64,
    ) -> (Option<HourlyStats>, Option<HourlyStats>) {
        let hour = hour_of(reading.at_s);
        if hour > self.hour_start {
            self.devices_max = self.devices_max.max(reading.online);
            self.connections_max = self.connections_max.max(reading.stats.connections_open);
            let closed = self.row(&reading, db_bytes, now_us);
            self.hour_start = hour;
            self.base = Base {
                stats: reading.stats,
                ack_buckets: reading.ack_buckets.clone(),
            };
            self.devices_max = reading.online;
            self.connections_max = reading.stats.connections_open;
            self.last = reading;
            self.carry = None;
            return (Some(closed), None);
        }
        self.devices_max = self.devices_max.max(reading.online);
        self.connections_max = self.connections_max.max(reading.stats.connections_open);
        let row = self.row(&reading, db_bytes, now_us);
        self.last = reading;
        (None, Some(row))
    }

    /// The counted hour's row as of `reading`.
    fn row(&self, reading: &Reading, db_bytes: Option<i64>, now_us: i64) -> HourlyStats {
        let s = &reading.stats;
        let b = &self.base.stats;
        let increase = crate::probe::bucket_increase(&self.base.ack_buckets, &reading.ack_buckets);
        let ms = |q: f64| crate::probe::quantile(q, &increase).map(|v| v * 1000.0);
        let row = HourlyStats {
            hour_start: self.hour_start,
            instance: self.instance.clone(),
            frames: delta(s.frames_received, b.frames_received),
            records: delta(s.records_stored, b.records_stored),
            duplicates: delta(s.duplicates, b.duplicates),
            decode_errors: delta(s.decode_errors, b.decode_errors),
            acks: delta(s.acks_sent, b.acks_sent),
            ack_p50_ms: ms(0.5),
            ack_p95_ms: ms(0.95),
            ack_p99_ms: ms(0.99),
            devices_active: i64::try_from(self.devices_max).unwrap_or(i64::MAX),
            connections_max: i64::try_from(self.connections_max).unwrap_or(i64::MAX),
            db_bytes,
            updated_at_us: now_us,
        };
        match &self.carry {
            Some(earlier) => merge(earlier, row),
            None => row,
        }
    }
}

/// `earlier` and `later` rows of the same hour and instance as one.
fn merge(earlier: &HourlyStats, later: HourlyStats) -> HourlyStats {
    let mix = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => {
            let (wa, wb) = (earlier.acks.max(1) as f64, later.acks.max(1) as f64);
            Some((a * wa + b * wb) / (wa + wb))
        }
        (a, b) => a.or(b),
    };
    HourlyStats {
        frames: earlier.frames + later.frames,
        records: earlier.records + later.records,
        duplicates: earlier.duplicates + later.duplicates,
        decode_errors: earlier.decode_errors + later.decode_errors,
        acks: earlier.acks + later.acks,
        ack_p50_ms: mix(earlier.ack_p50_ms, later.ack_p50_ms),
        ack_p95_ms: mix(earlier.ack_p95_ms, later.ack_p95_ms),
        ack_p99_ms: mix(earlier.ack_p99_ms, later.ack_p99_ms),
        devices_active: earlier.devices_active.max(later.devices_active),
        connections_max: earlier.connections_max.max(later.connections_max),
        db_bytes: later.db_bytes.or(earlier.db_bytes),
        ..later
    }
}

/// This server's name in `hourly_stats`: the host name, `:`, the device port.
pub fn instance(port: u16) -> String {
    let host = sysinfo::System::host_name()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-10T12:00:00Z.
    const T: i64 = 1_710_072_000;

    fn reading(
        at_s: i64,
        frames: u64,
        acks: u64,
        conns: u64,
        online: u64,
        buckets: &[(f64, f64)],
    ) -> Reading {
        Reading {
            at_s,
            stats: StatsSnapshot {
                frames_received: frames,
                records_stored: frames * 3,
                duplicates: frames / 10,
                decode_errors: frames / 100,
                acks_sent: acks,
                connections_open: conns,
                ..StatsSnapshot::default()
            },
            online,
            ack_buckets: buckets.to_vec(),
        }
    }

    /// Cumulative buckets with `fast` observations under 1 ms and `slow` between 10 and
    /// 100 ms.
    fn buckets(fast: f64, slow: f64) -> Vec<(f64, f64)> {
        vec![
            (0.001, fast),
            (0.01, fast),
            (0.1, fast + slow),
            (f64::INFINITY, fast + slow),
        ]
    }

    #[test]
    fn rows_count_from_the_start_of_the_hour() {
        let mut c = Collector::new(
            "h:5221".to_owned(),
            reading(T + 10, 1000, 900, 5, 4, &buckets(500.0, 0.0)),
        );
        assert_eq!(c.hour_start(), T);
        let (closed, row) = c.observe(
            reading(T + 70, 1300, 1200, 9, 2, &buckets(700.0, 100.0)),
            Some(4096),
            7,
        );
        assert!(closed.is_none());
        let row = row.unwrap();
        assert_eq!(row.hour_start, T);
        assert_eq!(row.instance, "h:5221");
        assert_eq!(row.frames, 300);
        assert_eq!(row.records, 900);
        assert_eq!(row.duplicates, 30);
        assert_eq!(row.decode_errors, 3);
        assert_eq!(row.acks, 300);
        assert_eq!(row.connections_max, 9);
        assert_eq!(row.devices_active, 4);
        assert_eq!(row.db_bytes, Some(4096));
        assert_eq!(row.updated_at_us, 7);
        // This hour: 200 fast, 100 slow. p50 is in the first bucket (rank 150 of 200 there),
        // p99 in the 10-100 ms bucket.
        let p50 = row.ack_p50_ms.unwrap();
        assert!((p50 - 0.75).abs() < 1e-9, "{p50}");
        let p99 = row.ack_p99_ms.unwrap();
        // rank 297: 97 of the 100 slow ones into the 10..100 ms bucket.
        assert!((p99 - (10.0 + 90.0 * 97.0 / 100.0)).abs() < 1e-9, "{p99}");
        let p95 = row.ack_p95_ms.unwrap();
        assert!((p95 - (10.0 + 90.0 * 85.0 / 100.0)).abs() < 1e-9, "{p95}");
    }

    #[test]
    fn a_new_hour_closes_the_last_and_starts_over() {
        let mut c = Collector::new(
            "h:1".to_owned(),
            reading(T + 3500, 0, 0, 1, 1, &buckets(0.0, 0.0)),
        );
        let (closed, row) = c.observe(
            reading(T + 3560, 50, 50, 3, 3, &buckets(50.0, 0.0)),
            None,
            1,
        );
        assert!(closed.is_none());
        assert_eq!(row.unwrap().frames, 50);
        // The next reading is in the next hour: the 10 frames since go to the closing hour.
        let (closed, row) = c.observe(
            reading(T + 3620, 60, 60, 2, 2, &buckets(60.0, 0.0)),
            Some(9),
            2,
        );
        assert!(row.is_none());
        let closed = closed.unwrap();
        assert_eq!(closed.hour_start, T);
        assert_eq!(closed.frames, 60);
        assert_eq!(closed.connections_max, 3);
        assert_eq!(c.hour_start(), T + 3600);
        let (closed, row) = c.observe(
            reading(T + 3680, 100, 100, 2, 2, &buckets(60.0, 40.0)),
            None,
            3,
        );
        assert!(closed.is_none());
        let row = row.unwrap();
        assert_eq!(row.hour_start, T + 3600);
        assert_eq!(row.frames, 40);
        assert_eq!(row.connections_max, 2);
        // Only this hour's 40 slow acknowledgements count: all percentiles in 10..100 ms.
        assert!(row.ack_p50_ms.unwrap() >= 10.0, "{row:?}");
    }

    #[test]
    fn samples_between_rows_raise_the_maxima_of_their_hour_only() {
        let mut c = Collector::new("h:1".to_owned(), reading(T, 0, 0, 1, 1, &[]));
        c.sample(T + 5, 30, 40);
        c.sample(T + 3605, 90, 90);
        let (_, row) = c.observe(reading(T + 60, 0, 0, 2, 2, &[]), None, 0);
        let row = row.unwrap();
        assert_eq!((row.connections_max, row.devices_active), (40, 30));
    }

    #[test]
    fn a_quiet_hour_has_no_percentiles() {
        let b = buckets(10.0, 10.0);
        let mut c = Collector::new("h:1".to_owned(), reading(T, 5, 5, 0, 0, &b));
        let (_, row) = c.observe(reading(T + 60, 5, 5, 0, 0, &b), None, 0);
        let row = row.unwrap();
        assert_eq!(row.frames, 0);
        assert_eq!(row.ack_p50_ms, None);
        assert_eq!(row.ack_p99_ms, None);
    }

    #[test]
    fn a_restart_within_the_hour_adds_to_the_earlier_row() {
        let mut c = Collector::new("h:1".to_owned(), reading(T + 1800, 0, 0, 0, 0, &[]));
        let mut earlier = c
            .clone()
            .observe(
                reading(T + 1860, 100, 100, 7, 6, &buckets(0.0, 100.0)),
                Some(5),
                1,
            )
            .1
            .unwrap();
        earlier.frames = 1000;
        earlier.acks = 300;
        // Another hour's row or another instance's is not carried.
        let mut other = earlier.clone();
        other.instance = "other:1".to_owned();
        c.carry_over(other);
        c.carry_over(HourlyStats {
            hour_start: T - 3600,
            ..earlier.clone()
        });
        let (_, row) = c.observe(
            reading(T + 1900, 10, 100, 1, 1, &buckets(100.0, 0.0)),
            None,
            2,
        );
        assert_eq!(row.unwrap().frames, 10);
        c.carry_over(earlier.clone());
        let (_, row) = c.observe(
            reading(T + 1960, 10, 100, 1, 1, &buckets(100.0, 0.0)),
            None,
            3,
        );
        let row = row.unwrap();
        assert_eq!(row.frames, 1010);
        assert_eq!(row.acks, 400);
        assert_eq!(row.connections_max, 7);
        assert_eq!(row.devices_active, 6);
        assert_eq!(row.db_bytes, Some(5));
        assert_eq!(row.updated_at_us, 3);
        // p99: 300 acknowledgements at the earlier p99, 100 at this run's.
        let (a, b) = (earlier.ack_p99_ms.unwrap(), 0.99);
        let want = (a * 300.0 + b * 100.0) / 400.0;
        assert!((row.ack_p99_ms.unwrap() - want).abs() < 1e-9, "{row:?}");
        // After the hour ends the carried row is gone.
        let (closed, _) = c.observe(
            reading(T + 3600, 20, 100, 1, 1, &buckets(100.0, 0.0)),
            None,
            4,
        );
        assert_eq!(closed.unwrap().frames, 1020);
        let (_, row) = c.observe(
            reading(T + 3700, 25, 100, 1, 1, &buckets(100.0, 0.0)),
            None,
            5,
        );
        assert_eq!(row.unwrap().frames, 5);
    }

    #[test]
    fn instance_names_the_port() {
        assert!(instance(5221).ends_with(":5221"));
    }
}
