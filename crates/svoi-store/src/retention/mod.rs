//! Retention: removing raw frames and records strictly older than their cutoffs
//! ([`Store::retention`]), with what was decoded from the removed frames.
//!
//! Both backends remove the same rows and report the same counts; how differs. SQLite deletes
//! in short transactions (about [`ROWS_PER_TRANSACTION`] rows each, pausing between them) so
//! that a running server's writer, which needs the one write lock, is never held off for
//! long. PostgreSQL drops the monthly partitions wholly older than the cutoff and deletes the
//! older rows of the partition straddling it and of the default partition.

mod pg;
mod sqlite;

use crate::store::Backend;
use crate::{RetentionPlan, RetentionReport, Store, StoreError};

/// About how many rows one SQLite retention transaction touches (deleted or updated).
pub(crate) const ROWS_PER_TRANSACTION: i64 = 10_000;

/// The tables whose rows belong to a raw frame and go with it (`records` keep theirs, with
/// `frame` unset).
pub(crate) const FRAME_DEPENDENTS: [&str; 4] = [
    "decode_errors",
    "current_states",
    "alarm_events",
    "ext_records",
];

/// Microseconds per second.
const US: i64 = 1_000_000;

impl Store {
    /// Removes what `plan` says is too old: raw frames received strictly before
    /// `raw_frames_before_us` with their decode errors, current states, alarm events and
    /// additional records (their records stay, with `frame` unset), and records whose event
    /// time is strictly before `records_before_s` (those without an event time by receive
    /// time). A row exactly at a cutoff stays. Devices, layouts and tokens are never removed.
    ///
    /// With `dry_run` nothing changes and the report counts what a run would remove now.
    /// SQLite deletes in transactions of about 10,000 rows with a pause after each, so a
    /// server writing to the same database keeps committing; a run interrupted halfway has
    /// removed only whole chunks, and running it again finishes the job. PostgreSQL drops
    /// whole monthly partitions (listed in the report) and deletes the rest in one
    /// transaction per partition, with the statement timeout lifted.
    pub fn retention(
        &mut self,
        plan: &RetentionPlan,
        dry_run: bool,
    ) -> Result<RetentionReport, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => sqlite::retention(s.conn(), plan, dry_run, ROWS_PER_TRANSACTION),
            Backend::Postgres(s) => {
                let result = match s.client() {
                    Ok(client) => {
                        crate::ops::maintenance::without_statement_timeout(client, |client| {
                            pg::retention(client, plan, dry_run)
                        })
                    }
                    Err(e) => Err(e),
                };
                // Dropped partitions may be among those the store believes exist; it checks
                // again when next needed.
                s.partitions.clear();
                if let Err(e) = &result {
                    s.forget_broken(e);
                }
                result
            }
        }
    }
}
