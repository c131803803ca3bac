//! Monthly partitions of `raw_frames` (by receive time) and `records` (by event time).
//!
//! The store creates the partitions of the previous, current and next [`AHEAD`] months when it
//! opens and as the months turn, and before each commit those of any month within
//! [`BACKFILL`] months back (a device emptying an old archive) that the batch needs. Keys
//! outside that window, or without an event time, go to the table's default partition; should
//! their month's partition be created later, `svoi_ensure_partition` moves them into it.
//! Retention can then drop whole months.

use jiff::Timestamp;
use jiff::tz::Offset;
use tokio_postgres::Client;

use super::{PgStore, wait};
use crate::{FrameRow, RecordKind, StoreError};

/// Months ahead of the current one whose partitions exist before their rows arrive.
pub(crate) const AHEAD: i64 = 2;

/// Months back for which a batch's records get a partition of their own on demand.
pub(crate) const BACKFILL: i64 = 24;

/// A partitioned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Partitioned {
    /// `raw_frames`, by `received_at_us` (microseconds).
    RawFrames,
    /// `records`, by `event_time` (seconds).
    Records,
}

impl Partitioned {
    fn table(self) -> &'static str {
        match self {
            Partitioned::RawFrames => "raw_frames",
            Partitioned::Records => "records",
        }
    }

    /// Units of the partition key per second.
    fn per_second(self) -> i64 {
        match self {
            Partitioned::RawFrames => 1_000_000,
            Partitioned::Records => 1,
        }
    }
}

/// Months since January of year 0 (`year * 12 + month - 1`) of a Unix time in seconds, `None`
/// outside the range jiff represents.
pub(crate) fn month_of(unix_seconds: i64) -> Option<i64> {
    let date = Offset::UTC
        .to_datetime(Timestamp::from_second(unix_seconds).ok()?)
        .date();
    Some(i64::from(date.year()) * 12 + i64::from(date.month()) - 1)
}

/// Unix seconds at the start (00:00 UTC on the 1st) of `month`.
fn month_start(month: i64) -> Option<i64> {
    let year = i16::try_from(month.div_euclid(12)).ok()?;
    let month = i8::try_from(month.rem_euclid(12) + 1).ok()?;
    let date = jiff::civil::Date::new(year, month, 1).ok()?;
    Some(
        Offset::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .ok()?
            .as_second(),
    )
}

/// The current month.
fn this_month() -> i64 {
    month_of(Timestamp::now().as_second()).unwrap_or(0)
}

/// Creates the partition of `month` for `table` unless it exists; returns whether it did.
fn create(client: &Client, table: Partitioned, month: i64) -> Result<bool, StoreError> {
    let (Some(lo), Some(hi)) = (month_start(month), month_start(month + 1)) else {
        return Err(StoreError::Invalid(format!("month {month} out of range")));
    };
    let suffix = format!(
        "y{:04}m{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    );
    let per = table.per_second();
    let row = wait(client.query_one(
        "SELECT svoi_ensure_partition($1, $2, $3, $4)",
        &[&table.table(), &suffix, &(lo * per), &(hi * per)],
    ))?;
    Ok(row.get(0))
}

impl PgStore {
    /// Makes sure the partitions of both tables exist for the previous month, this one and
    /// the next [`AHEAD`]. Cheap once they are known: only a new month costs a round trip.
    pub(crate) fn ensure_partitions_ahead(&mut self) -> Result<(), StoreError> {
        let now = this_month();
        for table in [Partitioned::RawFrames, Partitioned::Records] {
            for month in now - 1..=now + AHEAD {
                self.ensure_partition(table, month)?;
            }
        }
        Ok(())
    }

    /// Makes sure the partition exists (each in a transaction of its own, outside any batch).
    pub(crate) fn ensure_partition(
        &mut self,
        table: Partitioned,
        month: i64,
    ) -> Result<(), StoreError> {
        if self.partitions.contains(&(table, month)) {
            return Ok(());
        }
        let client = self.client()?;
        if let Err(e) = create(client, table, month) {
            self.forget_broken(&e);
            return Err(e);
        }
        self.partitions.insert((table, month));
        Ok(())
    }

    /// The partitions `frames` needs, within the window, created before its transaction.
    pub(crate) fn ensure_partitions_for(&mut self, frames: &[FrameRow]) -> Result<(), StoreError> {
        self.ensure_partitions_ahead()?;
        let now = this_month();
        let window = now - BACKFILL..=now + AHEAD;
        let mut needed = std::collections::BTreeSet::new();
        let (mut frame_months, mut record_months) = (Months::default(), Months::default());
        for frame in frames {
            if let Some(m) = frame_months.of(frame.received_at_us.div_euclid(1_000_000)) {
                needed.insert((Partitioned::RawFrames, m));
            }
            for record in &frame.records {
                if matches!(record.kind, RecordKind::Current) {
                    continue;
                }
                if let Some(m) = record.row.event_time.and_then(|t| record_months.of(t)) {
                    needed.insert((Partitioned::Records, m));
                }
            }
        }
        for (table, month) in needed {
            if window.contains(&month) {
                self.ensure_partition(table, month)?;
            }
        }
        Ok(())
    }
}

/// [`month_of`] for a run of times, remembering the bounds of the last month seen: the
/// records of a batch mostly share a month, so each costs a comparison rather than a calendar
/// conversion.
#[derive(Default)]
pub(crate) struct Months {
    /// Start, end (exclusive) and number of the last month seen.
    last: Option<(i64, i64, i64)>,
}

impl Months {
    /// The month of `unix_seconds`, as [`month_of`].
    pub(crate) fn of(&mut self, unix_seconds: i64) -> Option<i64> {
        if let Some((lo, hi, month)) = self.last
            && (lo..hi).contains(&unix_seconds)
        {
            return Some(month);
        }
        let month = month_of(unix_seconds)?;
        if let (Some(lo), Some(hi)) = (month_start(month), month_start(month + 1)) {
            self.last = Some((lo, hi, month));
        }
        Some(month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_remembers_the_last_month_and_agrees_with_month_of() {
        let mut months = Months::default();
        for t in [
            1_795_604_400,
            1_793_491_200,
            1_793_491_199,
            1_796_083_199,
            1_796_083_200,
            1_795_604_401,
            0,
            -1,
        ] {
            assert_eq!(months.of(t), month_of(t), "{t}");
        }
    }

    #[test]
    fn months_round_trip_through_their_start() {
        // 2026-11-25T11:00:00Z
        let m = month_of(1_795_604_400).unwrap();
        assert_eq!(m, 2026 * 12 + 10);
        assert_eq!(month_start(m), Some(1_793_491_200)); // 2026-11-01T00:00:00Z
        assert_eq!(month_start(m + 1), Some(1_796_083_200)); // 2026-12-01
        assert_eq!(month_start(m + 2), Some(1_798_761_600)); // 2027-01-01
        assert_eq!(month_of(0), Some(1970 * 12));
        assert_eq!(month_of(-1), Some(1969 * 12 + 11));
        for m in [1970 * 12, 1999 * 12 + 11, 2024 * 12 + 1, 2038 * 12 + 5] {
            let start = month_start(m).unwrap();
            assert_eq!(month_of(start), Some(m));
            assert_eq!(month_of(start - 1), Some(m - 1));
        }
    }
}
