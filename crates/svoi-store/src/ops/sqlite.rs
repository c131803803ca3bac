//! The operations queries on SQLite: the maintenance log, windows, hourly statistics, daily
//! figures, the ops state and row counts. Each takes the connection it runs on (the store's
//! writer connection or a reader's), so the store and the reader share them.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    HOURLY_SELECT, HOURLY_UPSERT, HourlyStats, LOG_SELECT, LogEntry, NewLogEntry, NewWindow,
    OpsState, RowCounts, TABLES, US, WINDOW_SELECT, Window, merge_days, no_window, parse_result,
    window_open,
};
use crate::{DailyFigures, StoreError};

/// The start of the UTC day of the time in microseconds in column `$t`, in Unix seconds
/// (floored, also before 1970).
macro_rules! day_of {
    ($t:literal) => {
        concat!(
            "((",
            $t,
            " - ((",
            $t,
            " % 86400000000) + 86400000000) % 86400000000) / 1000000)"
        )
    };
}

pub(crate) fn append_log(conn: &Connection, e: &NewLogEntry) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO maintenance_log
             (at_us, kind, operator, duration_ms, result, summary, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.at_us,
        e.kind,
        e.operator,
        e.duration_ms,
        e.result.as_str(),
        e.summary,
        e.details
    ])?;
    Ok(conn.last_insert_rowid())
}

fn log_entry(row: &Row<'_>) -> Result<LogEntry, StoreError> {
    let id: i64 = row.get(0)?;
    let result: String = row.get(5)?;
    Ok(LogEntry {
        id,
        entry: NewLogEntry {
            at_us: row.get(1)?,
            kind: row.get(2)?,
            operator: row.get(3)?,
            duration_ms: row.get(4)?,
            result: parse_result(id, &result)?,
            summary: row.get(6)?,
            details: row.get(7)?,
        },
    })
}

pub(crate) fn log_entries(conn: &Connection) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{LOG_SELECT} ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(log_entry(row)?);
    }
    Ok(out)
}

fn window(row: &Row<'_>) -> rusqlite::Result<Window> {
    Ok(Window {
        id: row.get(0)?,
        window: NewWindow {
            started_at_us: row.get(1)?,
            planned_end_us: row.get(2)?,
            reason: row.get(3)?,
            operator: row.get(4)?,
            backup_id: row.get(5)?,
        },
        silence_id: row.get(6)?,
        ended_at_us: row.get(7)?,
        result: row.get(8)?,
    })
}

pub(crate) fn current_window(conn: &Connection) -> Result<Option<Window>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("{WINDOW_SELECT} WHERE ended_at_us IS NULL"))?
        .query_row([], window)
        .optional()?)
}

pub(crate) fn windows(conn: &Connection) -> Result<Vec<Window>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{WINDOW_SELECT} ORDER BY id"))?;
    let rows = stmt.query_map([], window)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Checks for an open window and inserts the new one in one `BEGIN IMMEDIATE` transaction,
/// so two commands racing cannot both open one (the unique index would refuse the second
/// anyway; this names the open one instead).
pub(crate) fn open_window(conn: &Connection, w: &NewWindow) -> Result<Window, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        if let Some(open) = current_window(conn)? {
            return Err(window_open(&open));
        }
        conn.prepare_cached(
            "INSERT INTO maintenance_windows
                 (started_at_us, planned_end_us, reason, operator, backup_id)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            w.started_at_us,
            w.planned_end_us,
            w.reason,
            w.operator,
            w.backup_id
        ])?;
        let id = conn.last_insert_rowid();
        conn.execute_batch("COMMIT")?;
        Ok(Window {
            id,
            window: w.clone(),
            silence_id: None,
            ended_at_us: None,
            result: None,
        })
    })();
    if result.is_err() && !conn.is_autocommit() {
        // The original error is what the caller needs.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

pub(crate) fn set_window_silence(
    conn: &Connection,
    id: i64,
    silence_id: &str,
) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached("UPDATE maintenance_windows SET silence_id = ?2 WHERE id = ?1")?
        .execute(params![id, silence_id])?;
    if changed == 0 {
        return Err(no_window(id, false));
    }
    Ok(())
}

pub(crate) fn close_window(
    conn: &Connection,
    id: i64,
    ended_at_us: i64,
    result: &str,
) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE maintenance_windows SET ended_at_us = ?2, result = ?3
             WHERE id = ?1 AND ended_at_us IS NULL",
        )?
        .execute(params![id, ended_at_us, result])?;
    if changed == 0 {
        return Err(no_window(id, true));
    }
    Ok(())
}

pub(crate) fn upsert_hourly_stats(conn: &Connection, s: &HourlyStats) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO hourly_stats (hour_start, instance, frames, records, duplicates,
             decode_errors, acks, ack_p50_ms, ack_p95_ms, ack_p99_ms, devices_active,
             connections_max, db_bytes, updated_at_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) {HOURLY_UPSERT}"
    ))?
    .execute(params![
        s.hour_start,
        s.instance,
        s.frames,
        s.records,
        s.duplicates,
        s.decode_errors,
        s.acks,
        s.ack_p50_ms,
        s.ack_p95_ms,
        s.ack_p99_ms,
        s.devices_active,
        s.connections_max,
        s.db_bytes,
        s.updated_at_us
    ])?;
    Ok(())
}

fn hourly(row: &Row<'_>) -> rusqlite::Result<HourlyStats> {
    Ok(HourlyStats {
        hour_start: row.get(0)?,
        instance: row.get(1)?,
        frames: row.get(2)?,
        records: row.get(3)?,
        duplicates: row.get(4)?,
        decode_errors: row.get(5)?,
        acks: row.get(6)?,
        ack_p50_ms: row.get(7)?,
        ack_p95_ms: row.get(8)?,
        ack_p99_ms: row.get(9)?,
        devices_active: row.get(10)?,
        connections_max: row.get(11)?,
        db_bytes: row.get(12)?,
        updated_at_us: row.get(13)?,
    })
}

pub(crate) fn hourly_stats(
    conn: &Connection,
    from_hour: i64,
    to_hour: i64,
) -> Result<Vec<HourlyStats>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{HOURLY_SELECT} WHERE hour_start >= ?1 AND hour_start < ?2
         ORDER BY hour_start, instance"
    ))?;
    let rows = stmt.query_map([from_hour, to_hour], hourly)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `(day, n)` pairs of a grouped count query with parameters `from_us`, `to_us`.
fn day_counts(
    conn: &Connection,
    sql: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([from_us, to_us], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn daily_figures(
    conn: &Connection,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<DailyFigures>, StoreError> {
    let (from_us, to_us) = (from_s.saturating_mul(US), to_s.saturating_mul(US));
    // One read transaction, so the three tables' figures agree.
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            day_of!("received_at_us"),
            " AS day, count(*), count(DISTINCT device) FROM raw_frames
             WHERE received_at_us >= ?1 AND received_at_us < ?2 GROUP BY day ORDER BY day"
        ))?;
        let frames = stmt
            .query_map([from_us, to_us], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let errors = day_counts(
            conn,
            concat!(
                "SELECT ",
                day_of!("received_at_us"),
                " AS day, count(*) FROM decode_errors
                 WHERE received_at_us >= ?1 AND received_at_us < ?2 GROUP BY day ORDER BY day"
            ),
            from_us,
            to_us,
        )?;
        let records = day_counts(
            conn,
            concat!(
                "SELECT ",
                day_of!("received_at_us"),
                " AS day, count(*) FROM records
                 WHERE received_at_us >= ?1 AND received_at_us < ?2 GROUP BY day ORDER BY day"
            ),
            from_us,
            to_us,
        )?;
        Ok(merge_days(frames, errors, records))
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}

/// The end time and result of the newest `kind` entry whose result matches `condition`
/// (SQL over `result`); "newest" by end time, then id.
fn newest_end(
    conn: &Connection,
    kind: &str,
    condition: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT at_us + duration_ms * 1000, result FROM maintenance_log
             WHERE kind = ?1 AND {condition}
             ORDER BY at_us + duration_ms * 1000 DESC, id DESC LIMIT 1"
        ))?
        .query_row([kind], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

pub(crate) fn ops_state(conn: &Connection) -> Result<OpsState, StoreError> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let verify = newest_end(conn, "verify", "true")?;
        Ok(OpsState {
            window: current_window(conn)?,
            last_backup_ok_us: newest_end(conn, "backup", "result <> 'failed'")?.map(|e| e.0),
            last_backup_failed_us: newest_end(conn, "backup", "result = 'failed'")?.map(|e| e.0),
            last_verify_us: verify.as_ref().map(|e| e.0),
            last_verify_ok: verify.map(|e| e.1 != "failed"),
        })
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}

pub(crate) fn table_counts(conn: &Connection) -> Result<RowCounts, StoreError> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let mut counts = RowCounts::new();
        for table in TABLES {
            let n: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            counts.insert(table.to_owned(), n);
        }
        Ok(counts)
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}
