//! Retention on SQLite: chunked deletes with foreign keys on. Records go per device along the
//! (device, event_time, record_index) index; raw frames go oldest first along the receive
//! time index, a chunk's ids collected in a temporary table, and before the frames of a chunk
//! go, their records' `frame` is unset and their dependent rows are deleted.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{FRAME_DEPENDENTS, US};
use crate::{RetentionPlan, RetentionReport, StoreError};

/// Records of one device older than the cutoff, a chunk at a time (`?1` device, `?2` cutoff
/// seconds, `?3` chunk size).
const RECORDS_BY_EVENT_TIME: &str = "DELETE FROM records WHERE id IN (
    SELECT id FROM records WHERE device = ?1 AND event_time < ?2 LIMIT ?3)";

/// Records of one device without an event time, received before the cutoff (`?2` in
/// microseconds).
const RECORDS_BY_RECEIVE_TIME: &str = "DELETE FROM records WHERE id IN (
    SELECT id FROM records WHERE device = ?1 AND event_time IS NULL AND received_at_us < ?2
    LIMIT ?3)";

/// The ids of the next chunk of frames to go.
const PICK_FRAMES: &str = "INSERT INTO temp.svoi_retention_frames
    SELECT id FROM raw_frames WHERE received_at_us < ?1 ORDER BY received_at_us LIMIT ?2";

/// Runs `work` in a `BEGIN IMMEDIATE` transaction, rolled back on error.
fn immediate<T>(
    conn: &Connection,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = work().and_then(|value| {
        conn.execute_batch("COMMIT")?;
        Ok(value)
    });
    if result.is_err() && !conn.is_autocommit() {
        // The original error is what the caller needs.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// After a transaction that took `took`: give a waiting writer the lock for as long (at least
/// a few milliseconds), so retention takes at most about half of the write time.
fn pause(took: Duration) {
    std::thread::sleep(took.clamp(Duration::from_millis(5), Duration::from_millis(200)));
}

/// [`crate::Store::retention`] on SQLite, with transactions of about `budget` rows.
pub(crate) fn retention(
    conn: &Connection,
    plan: &RetentionPlan,
    dry_run: bool,
    budget: i64,
) -> Result<RetentionReport, StoreError> {
    if dry_run {
        return count(conn, plan);
    }
    let mut report = RetentionReport::default();
    if let Some(cutoff) = plan.records_before_s {
        let n = delete_records(conn, cutoff, budget)?;
        report.deleted.insert("records".to_owned(), n);
    }
    if let Some(cutoff) = plan.raw_frames_before_us {
        let _per_transaction = delete_frames(conn, cutoff, budget, &mut report)?;
    }
    Ok(report)
}

/// What a run would remove, in one read transaction.
fn count(conn: &Connection, plan: &RetentionPlan) -> Result<RetentionReport, StoreError> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let mut report = RetentionReport::default();
        if let Some(cutoff) = plan.records_before_s {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM records
                 WHERE event_time < ?1 OR (event_time IS NULL AND received_at_us < ?2)",
                [cutoff, cutoff.saturating_mul(US)],
                |row| row.get(0),
            )?;
            report.deleted.insert("records".to_owned(), n);
        }
        if let Some(cutoff) = plan.raw_frames_before_us {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM raw_frames WHERE received_at_us < ?1",
                [cutoff],
                |row| row.get(0),
            )?;
            report.deleted.insert("raw_frames".to_owned(), n);
            for table in FRAME_DEPENDENTS {
                let n: i64 = conn.query_row(
                    &format!(
                        "SELECT count(*) FROM {table} WHERE frame IN
                         (SELECT id FROM raw_frames WHERE received_at_us < ?1)"
                    ),
                    [cutoff],
                    |row| row.get(0),
                )?;
                report.deleted.insert(table.to_owned(), n);
            }
        }
        Ok(report)
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}

/// Deletes the records older than `cutoff` (seconds), device by device, at most `budget` per
/// transaction; returns how many.
fn delete_records(conn: &Connection, cutoff: i64, budget: i64) -> Result<i64, StoreError> {
    let devices: Vec<i64> = conn
        .prepare("SELECT id FROM devices ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for device in devices {
        for (sql, bound) in [
            (RECORDS_BY_EVENT_TIME, cutoff),
            (RECORDS_BY_RECEIVE_TIME, cutoff.saturating_mul(US)),
        ] {
            loop {
                let started = Instant::now();
                let n = immediate(conn, || {
                    Ok(conn
                        .prepare_cached(sql)?
                        .execute(rusqlite::params![device, bound, budget])?)
                })?;
                deleted += n as i64;
                if (n as i64) < budget {
                    break;
                }
                pause(started.elapsed());
            }
        }
    }
    Ok(deleted)
}

/// Deletes the raw frames received before `cutoff` (microseconds) with their dependent rows,
/// oldest first. The chunk of frames adapts so that a transaction touches about `budget`
/// rows, dependents and updated records included (the first chunk is a tenth of that).
/// Returns the rows each transaction touched.
fn delete_frames(
    conn: &Connection,
    cutoff: i64,
    budget: i64,
    report: &mut RetentionReport,
) -> Result<Vec<i64>, StoreError> {
    for table in ["raw_frames"].into_iter().chain(FRAME_DEPENDENTS) {
        report.deleted.insert(table.to_owned(), 0);
    }
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS svoi_retention_frames (id INTEGER PRIMARY KEY)",
    )?;
    let mut chunk: i64 = (budget / 10).max(1);
    let mut per_transaction = Vec::new();
    let result = loop {
        let started = Instant::now();
        let step = immediate(conn, || {
            conn.execute("DELETE FROM temp.svoi_retention_frames", [])?;
            let frames = conn.prepare_cached(PICK_FRAMES)?.execute([cutoff, chunk])? as i64;
            if frames == 0 {
                return Ok(None);
            }
            let mut touched = frames;
            touched += conn
                .prepare_cached(
                    "UPDATE records SET frame = NULL
                     WHERE frame IN (SELECT id FROM temp.svoi_retention_frames)",
                )?
                .execute([])? as i64;
            let mut counts = Vec::with_capacity(FRAME_DEPENDENTS.len() + 1);
            for table in FRAME_DEPENDENTS {
                let n = conn
                    .prepare_cached(&format!(
                        "DELETE FROM {table}
                         WHERE frame IN (SELECT id FROM temp.svoi_retention_frames)"
                    ))?
                    .execute([])? as i64;
                touched += n;
                counts.push((table, n));
            }
            let gone = conn
                .prepare_cached(
                    "DELETE FROM raw_frames
                     WHERE id IN (SELECT id FROM temp.svoi_retention_frames)",
                )?
                .execute([])? as i64;
            counts.push(("raw_frames", gone));
            Ok(Some((counts, touched)))
        });
        match step {
            Ok(None) => break Ok(per_transaction),
            Ok(Some((counts, touched))) => {
                per_transaction.push(touched);
                for (table, n) in counts {
                    *report.deleted.entry(table.to_owned()).or_default() += n;
                }
                chunk = (chunk * budget / touched.max(1)).clamp(1, budget.max(1));
                pause(started.elapsed());
            }
            Err(e) => break Err(e),
        }
    };
    let _ = conn.execute_batch("DROP TABLE IF EXISTS temp.svoi_retention_frames");
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::{DecodedRecord, FrameRow, FrameStatus, RecordKind, RecordRow, StoreOptions};

    fn row(index: u32, event_time: i64) -> RecordRow {
        RecordRow {
            record_index: Some(index),
            event_code: None,
            event_time: Some(event_time),
            fix_time: None,
            valid: None,
            satellites: None,
            latitude: None,
            longitude: None,
            altitude_m: None,
            speed_kmh: None,
            course: None,
            odometer_km: None,
            power_mv: None,
            battery_mv: None,
            gsm_level: None,
            fields_json: "{}".to_owned(),
        }
    }

    /// 60 frames received at 0..60 us, each with three archive records (event times 3i ..
    /// 3i + 2) and a current state.
    fn store(dir: &std::path::Path) -> SqliteStore {
        let mut store = SqliteStore::open(&dir.join("svoi.db"), &StoreOptions::default()).unwrap();
        let frames: Vec<FrameRow> = (0..60u32)
            .map(|i| {
                let mut records: Vec<DecodedRecord> = (0..3)
                    .map(|k| DecodedRecord {
                        kind: RecordKind::Archive,
                        row: row(3 * i + k, i64::from(3 * i + k)),
                    })
                    .collect();
                records.push(DecodedRecord {
                    kind: RecordKind::Current,
                    row: row(1_000 + i, 0),
                });
                FrameRow {
                    seq: u64::from(i),
                    conn_id: 1,
                    imei: Some(Arc::from(if i % 2 == 0 { "a" } else { "b" })),
                    received_at_us: i64::from(i),
                    kind: Arc::from("~A"),
                    status: FrameStatus::Ok,
                    error_reason: None,
                    error: None,
                    bytes: vec![1],
                    layout: None,
                    device: None,
                    records,
                    ext_records: Vec::new(),
                }
            })
            .collect();
        let _ = store.write(&frames).unwrap();
        store
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn frames_go_in_transactions_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let conn = store.conn();
        let mut report = RetentionReport::default();
        let per_transaction = delete_frames(conn, 50, 20, &mut report).unwrap();
        // Each frame touches five rows: itself, its current state, three records unset.
        assert!(per_transaction.len() >= 13, "{per_transaction:?}");
        assert!(
            per_transaction.iter().all(|&n| n <= 20),
            "{per_transaction:?}"
        );
        assert_eq!(per_transaction.iter().sum::<i64>(), 50 * 5);
        assert_eq!(report.deleted["raw_frames"], 50);
        assert_eq!(report.deleted["current_states"], 50);
        assert_eq!(
            count(conn, "SELECT min(received_at_us) FROM raw_frames"),
            50
        );
        assert_eq!(
            count(conn, "SELECT count(*) FROM records WHERE frame IS NULL"),
            150
        );
        assert_eq!(count(conn, "SELECT count(*) FROM records"), 180);
    }

    #[test]
    fn records_go_in_transactions_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let conn = store.conn();
        // 70 records of two devices, 7 per transaction: several transactions per device.
        assert_eq!(delete_records(conn, 70, 7).unwrap(), 70);
        assert_eq!(count(conn, "SELECT min(event_time) FROM records"), 70);
        assert_eq!(count(conn, "SELECT count(*) FROM records"), 110);
    }
}
