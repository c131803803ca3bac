//! Reprocessing, whichever the backend: the per-frame diff that replaces what was decoded from
//! archived frames by a fresh decode of their bytes (after a decoder fix), keyed by (record
//! index, event time) so that record ids survive and running it twice changes nothing.
//!
//! The algorithm is written once, in [`reprocess_frames`], over [`FrameOps`]: the primitive
//! statements each backend runs on its open transaction (`crate::sqlite::reprocess`,
//! `crate::pg::reprocess`). The backends own their SQL and their transaction.

use crate::{ExtRecordRow, FrameRow, FrameStatus, RecordKind, RecordRow, StoreError};

/// What a reprocess run changed. The `records_*` counters and `duplicates` cover both
/// `records` and `ext_records`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReprocessStats {
    /// Frames processed.
    pub frames: u64,
    /// Frames whose kind, status or error changed.
    pub status_changed: u64,
    /// Records the new decode has and the frame did not.
    pub records_added: u64,
    /// Records with the same key and different values (updated in place, id kept).
    pub records_changed: u64,
    /// Records the frame had and the new decode does not (deleted).
    pub records_removed: u64,
    /// Records with the same key and the same values.
    pub records_unchanged: u64,
    /// New records whose key another frame already holds (not stored, as in a commit).
    pub duplicates: u64,
}

impl ReprocessStats {
    /// Adds `other`'s counts to these (totals over several calls).
    pub fn add(&mut self, other: ReprocessStats) {
        self.frames += other.frames;
        self.status_changed += other.status_changed;
        self.records_added += other.records_added;
        self.records_changed += other.records_changed;
        self.records_removed += other.records_removed;
        self.records_unchanged += other.records_unchanged;
        self.duplicates += other.duplicates;
    }
}

/// The key of a record-shaped row: (record index, event time).
pub(crate) type Key = (Option<i64>, Option<i64>);

/// The key of `row`.
fn key_of(row: &RecordRow) -> Key {
    (row.record_index.map(i64::from), row.event_time)
}

/// The stored head of a frame being reprocessed.
pub(crate) struct FrameHead {
    pub(crate) device: Option<i64>,
    pub(crate) received_at_us: i64,
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) error_reason: Option<String>,
    pub(crate) error: Option<String>,
    /// The IMEI of `device`.
    pub(crate) imei: Option<String>,
}

/// The statements reprocessing runs, on a backend's open transaction. `frame` is always the
/// `raw_frames.id` being reprocessed; `at` its receive time. Methods that return `bool` say
/// whether the statement changed a row.
pub(crate) trait FrameOps {
    /// The stored head of frame `frame`; `None` when there is no such frame.
    fn frame_head(&mut self, frame: i64) -> Result<Option<FrameHead>, StoreError>;

    /// Sets the frame's kind, status, error reason and error to `new`'s.
    fn update_frame(&mut self, frame: i64, at: i64, new: &FrameRow) -> Result<(), StoreError>;

    /// Deletes the frame's decode errors.
    fn delete_decode_errors(&mut self, frame: i64) -> Result<(), StoreError>;

    /// Records why `new` (the frame's new decode) failed.
    fn insert_decode_error(
        &mut self,
        frame: i64,
        device: Option<i64>,
        at: i64,
        new: &FrameRow,
    ) -> Result<(), StoreError>;

    /// Deletes the frame's alarm events.
    fn delete_alarms(&mut self, frame: i64) -> Result<(), StoreError>;

    /// Deletes the frame's current-state rows.
    fn delete_current(&mut self, frame: i64) -> Result<(), StoreError>;

    /// The (id, key) of the frame's `records`, by id.
    fn old_records(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError>;

    /// Updates record `id` (same key) to `source` and `row`'s values when they differ.
    fn update_record(
        &mut self,
        frame: i64,
        id: i64,
        source: &'static str,
        row: &RecordRow,
    ) -> Result<bool, StoreError>;

    /// Inserts a record unless its key is stored.
    fn insert_record(
        &mut self,
        device: i64,
        frame: i64,
        source: &'static str,
        row: &RecordRow,
        at: i64,
    ) -> Result<bool, StoreError>;

    /// Deletes record `id` (key `key`).
    fn delete_record(&mut self, frame: i64, id: i64, key: Key) -> Result<(), StoreError>;

    /// The (id, key) of the frame's `ext_records`, by id.
    fn old_ext(&mut self, frame: i64) -> Result<Vec<(i64, Key)>, StoreError>;

    /// Updates additional record `id` (same key) to `ext`'s values when they differ.
    fn update_ext(&mut self, id: i64, ext: &ExtRecordRow) -> Result<bool, StoreError>;

    /// Inserts an additional record unless its key is stored.
    fn insert_ext(
        &mut self,
        device: i64,
        frame: i64,
        ext: &ExtRecordRow,
        at: i64,
    ) -> Result<bool, StoreError>;

    /// Deletes additional record `id`.
    fn delete_ext(&mut self, id: i64) -> Result<(), StoreError>;

    /// Inserts an alarm event unless stored.
    fn insert_alarm(
        &mut self,
        device: i64,
        frame: i64,
        event_index: u32,
        row: &RecordRow,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Inserts a current-state row.
    fn insert_current(
        &mut self,
        device: i64,
        frame: i64,
        row: &RecordRow,
        at: i64,
    ) -> Result<(), StoreError>;
}

/// The body of [`crate::Store::reprocess`], inside the backend's transaction: `updates` are
/// (`raw_frames.id`, fresh decode of its bytes).
pub(crate) fn reprocess_frames<O: FrameOps>(
    ops: &mut O,
    updates: &[(i64, FrameRow)],
) -> Result<ReprocessStats, StoreError> {
    let mut stats = ReprocessStats::default();
    for (id, new) in updates {
        let id = *id;
        let head = ops
            .frame_head(id)?
            .ok_or_else(|| StoreError::Invalid(format!("raw frame {id} does not exist")))?;
        if let (Some(new_imei), Some(stored_imei)) = (&new.imei, &head.imei)
            && **new_imei != **stored_imei
        {
            return Err(StoreError::Invalid(format!(
                "reprocess of raw frame {id} names imei {new_imei} but the frame belongs \
                 to {stored_imei}"
            )));
        }
        stats.frames += 1;

        let status_changed =
            head.kind != *new.kind || head.status != new.status.as_str() || head.error != new.error;
        if status_changed {
            stats.status_changed += 1;
        }
        if status_changed || head.error_reason.as_deref() != new.error_reason {
            ops.update_frame(id, head.received_at_us, new)?;
        }

        ops.delete_decode_errors(id)?;
        if new.status != FrameStatus::Ok {
            ops.insert_decode_error(id, head.device, head.received_at_us, new)?;
        }
        ops.delete_alarms(id)?;
        ops.delete_current(id)?;

        let Some(device) = head.device else {
            // Records need a device, so a frame without one holds none.
            if new.records.is_empty() && new.ext_records.is_empty() {
                continue;
            }
            return Err(StoreError::Invalid(format!(
                "raw frame {id} has no device: its {} records and {} additional records \
                 cannot be stored",
                new.records.len(),
                new.ext_records.len()
            )));
        };
        let at = head.received_at_us;

        let old = ops.old_records(id)?;
        let records = new.records.iter().filter_map(|record| {
            let source = match record.kind {
                RecordKind::Archive => "archive",
                RecordKind::Alarm { .. } => "alarm",
                RecordKind::Current => return None,
            };
            Some((key_of(&record.row), (source, &record.row)))
        });
        diff(
            ops,
            &mut stats,
            old,
            records,
            |ops, old_id, (source, row)| ops.update_record(id, old_id, source, row),
            |ops, (source, row)| ops.insert_record(device, id, source, row, at),
            |ops, old_id, key| ops.delete_record(id, old_id, key),
        )?;
        for record in &new.records {
            match record.kind {
                RecordKind::Alarm { event_index } => {
                    ops.insert_alarm(device, id, event_index, &record.row, at)?;
                }
                RecordKind::Current => ops.insert_current(device, id, &record.row, at)?,
                RecordKind::Archive => {}
            }
        }

        let old = ops.old_ext(id)?;
        let ext = new.ext_records.iter().map(|ext| (key_of(&ext.row), ext));
        diff(
            ops,
            &mut stats,
            old,
            ext,
            |ops, old_id, ext| ops.update_ext(old_id, ext),
            |ops, ext| ops.insert_ext(device, id, ext, at),
            |ops, old_id, _| ops.delete_ext(old_id),
        )?;
    }
    Ok(stats)
}

/// Diffs one table's rows of a frame, `old` as (id, key), against the new decode's `new` as
/// (key, row), and counts the outcome into `stats`: a new row paired with an old one of its
/// key is updated in place (changed or unchanged), an unpaired one inserted (added, or a
/// duplicate when another frame holds its key); the old rows left unpaired are deleted
/// (removed).
fn diff<O, T>(
    ops: &mut O,
    stats: &mut ReprocessStats,
    old: Vec<(i64, Key)>,
    new: impl Iterator<Item = (Key, T)>,
    mut update: impl FnMut(&mut O, i64, T) -> Result<bool, StoreError>,
    mut insert: impl FnMut(&mut O, T) -> Result<bool, StoreError>,
    mut delete: impl FnMut(&mut O, i64, Key) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut old: Vec<(i64, Key, bool)> =
        old.into_iter().map(|(id, key)| (id, key, false)).collect();
    for (key, row) in new {
        match take_match(&mut old, key) {
            Some(old_id) => {
                if update(ops, old_id, row)? {
                    stats.records_changed += 1;
                } else {
                    stats.records_unchanged += 1;
                }
            }
            None => {
                if insert(ops, row)? {
                    stats.records_added += 1;
                } else {
                    stats.duplicates += 1;
                }
            }
        }
    }
    for &(old_id, key, _) in old.iter().filter(|(_, _, matched)| !matched) {
        delete(ops, old_id, key)?;
        stats.records_removed += 1;
    }
    Ok(())
}

/// Pairs a new row with the first unpaired old row of the same key (NULLs equal: a frame's
/// own key-less rows are matched in order); returns the old row's id.
fn take_match(old: &mut [(i64, Key, bool)], key: Key) -> Option<i64> {
    let (id, _, matched) = old
        .iter_mut()
        .find(|(_, old_key, matched)| !*matched && *old_key == key)?;
    *matched = true;
    Some(*id)
}
