//! The operations queries on PostgreSQL: the same rows, order and errors as `ops::sqlite`.
//! Queries whose figures must agree (daily figures, row counts) are single statements, so
//! they read one snapshot.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use super::{
    HOURLY_SELECT, HOURLY_UPSERT, HourlyStats, LOG_SELECT, LogEntry, NewLogEntry, NewWindow,
    OpsState, RowCounts, TABLES, US, WINDOW_SELECT, Window, merge_days, no_window, parse_result,
    window_open,
};
use crate::pg::wait;
use crate::{DailyFigures, StoreError};

/// The start of the UTC day of the time in microseconds in column `$t`, in Unix seconds.
macro_rules! day_of {
    ($t:literal) => {
        concat!("(div(", $t, ", 86400000000) * 86400)::bigint")
    };
}

pub(crate) fn append_log(client: &Client, e: &NewLogEntry) -> Result<i64, StoreError> {
    let row = wait(client.query_one(
        "INSERT INTO maintenance_log
             (at_us, kind, operator, duration_ms, result, summary, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &e.at_us,
            &e.kind,
            &e.operator,
            &e.duration_ms,
            &e.result.as_str(),
            &e.summary,
            &e.details,
        ],
    ))?;
    Ok(row.try_get(0)?)
}

fn log_entry(row: &Row) -> Result<LogEntry, StoreError> {
    let id: i64 = row.try_get(0)?;
    let result: String = row.try_get(5)?;
    Ok(LogEntry {
        id,
        entry: NewLogEntry {
            at_us: row.try_get(1)?,
            kind: row.try_get(2)?,
            operator: row.try_get(3)?,
            duration_ms: row.try_get(4)?,
            result: parse_result(id, &result)?,
            summary: row.try_get(6)?,
            details: row.try_get(7)?,
        },
    })
}

pub(crate) fn log_entries(client: &Client) -> Result<Vec<LogEntry>, StoreError> {
    wait(client.query(&format!("{LOG_SELECT} ORDER BY id"), &[]))?
        .iter()
        .map(log_entry)
        .collect()
}

fn window(row: &Row) -> Result<Window, StoreError> {
    Ok(Window {
        id: row.try_get(0)?,
        window: NewWindow {
            started_at_us: row.try_get(1)?,
            planned_end_us: row.try_get(2)?,
            reason: row.try_get(3)?,
            operator: row.try_get(4)?,
            backup_id: row.try_get(5)?,
        },
        silence_id: row.try_get(6)?,
        ended_at_us: row.try_get(7)?,
        result: row.try_get(8)?,
    })
}

pub(crate) fn current_window(client: &Client) -> Result<Option<Window>, StoreError> {
    wait(client.query_opt(&format!("{WINDOW_SELECT} WHERE ended_at_us IS NULL"), &[]))?
        .as_ref()
        .map(window)
        .transpose()
}

pub(crate) fn windows(client: &Client) -> Result<Vec<Window>, StoreError> {
    wait(client.query(&format!("{WINDOW_SELECT} ORDER BY id"), &[]))?
        .iter()
        .map(window)
        .collect()
}

/// Inserts the window; the unique index on open windows refuses a second one, and the error
/// then names the open one.
pub(crate) fn open_window(client: &Client, w: &NewWindow) -> Result<Window, StoreError> {
    if let Some(open) = current_window(client)? {
        return Err(window_open(&open));
    }
    let inserted = wait(client.query_one(
        "INSERT INTO maintenance_windows
             (started_at_us, planned_end_us, reason, operator, backup_id)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        &[
            &w.started_at_us,
            &w.planned_end_us,
            &w.reason,
            &w.operator,
            &w.backup_id,
        ],
    ));
    match inserted {
        Ok(row) => Ok(Window {
            id: row.try_get(0)?,
            window: w.clone(),
            silence_id: None,
            ended_at_us: None,
            result: None,
        }),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => match current_window(client)? {
            Some(open) => Err(window_open(&open)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn set_window_silence(
    client: &Client,
    id: i64,
    silence_id: &str,
) -> Result<(), StoreError> {
    let changed = wait(client.execute(
        "UPDATE maintenance_windows SET silence_id = $2 WHERE id = $1",
        &[&id, &silence_id],
    ))?;
    if changed == 0 {
        return Err(no_window(id, false));
    }
    Ok(())
}

pub(crate) fn close_window(
    client: &Client,
    id: i64,
    ended_at_us: i64,
    result: &str,
) -> Result<(), StoreError> {
    let changed = wait(client.execute(
        "UPDATE maintenance_windows SET ended_at_us = $2, result = $3
         WHERE id = $1 AND ended_at_us IS NULL",
        &[&id, &ended_at_us, &result],
    ))?;
    if changed == 0 {
        return Err(no_window(id, true));
    }
    Ok(())
}

pub(crate) fn upsert_hourly_stats(client: &Client, s: &HourlyStats) -> Result<(), StoreError> {
    wait(client.execute(
        &format!(
            "INSERT INTO hourly_stats (hour_start, instance, frames, records, duplicates,
             decode_errors, acks, ack_p50_ms, ack_p95_ms, ack_p99_ms, devices_active,
             connections_max, db_bytes, updated_at_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) {HOURLY_UPSERT}"
        ),
        &[
            &s.hour_start,
            &s.instance,
            &s.frames,
            &s.records,
            &s.duplicates,
            &s.decode_errors,
            &s.acks,
            &s.ack_p50_ms,
            &s.ack_p95_ms,
            &s.ack_p99_ms,
            &s.devices_active,
            &s.connections_max,
            &s.db_bytes,
            &s.updated_at_us,
        ],
    ))?;
    Ok(())
}

fn hourly(row: &Row) -> Result<HourlyStats, StoreError> {
    Ok(HourlyStats {
        hour_start: row.try_get(0)?,
        instance: row.try_get(1)?,
        frames: row.try_get(2)?,
        records: row.try_get(3)?,
        duplicates: row.try_get(4)?,
        decode_errors: row.try_get(5)?,
        acks: row.try_get(6)?,
        ack_p50_ms: row.try_get(7)?,
        ack_p95_ms: row.try_get(8)?,
        ack_p99_ms: row.try_get(9)?,
        devices_active: row.try_get(10)?,
        connections_max: row.try_get(11)?,
        db_bytes: row.try_get(12)?,
        updated_at_us: row.try_get(13)?,
    })
}

pub(crate) fn hourly_stats(
    client: &Client,
    from_hour: i64,
    to_hour: i64,
) -> Result<Vec<HourlyStats>, StoreError> {
    wait(client.query(
        &format!(
            "{HOURLY_SELECT} WHERE hour_start >= $1 AND hour_start < $2
             ORDER BY hour_start, instance"
        ),
        &[&from_hour, &to_hour],
    ))?
    .iter()
    .map(hourly)
    .collect()
}

/// One statement over the three tables, so the figures share a snapshot: `t` tells the table
/// (`f` frames, `e` decode errors, `r` records).
const DAILY: &str = concat!(
    "SELECT 'f' AS t, ",
    day_of!("received_at_us"),
    " AS day, count(*), count(DISTINCT device) FROM raw_frames
     WHERE received_at_us >= $1 AND received_at_us < $2 GROUP BY day
     UNION ALL
     SELECT 'e', ",
    day_of!("received_at_us"),
    " AS day, count(*), 0 FROM decode_errors
     WHERE received_at_us >= $1 AND received_at_us < $2 GROUP BY day
     UNION ALL
     SELECT 'r', ",
    day_of!("received_at_us"),
    " AS day, count(*), 0 FROM records
     WHERE received_at_us >= $1 AND received_at_us < $2 GROUP BY day"
);

pub(crate) fn daily_figures(
    client: &Client,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<DailyFigures>, StoreError> {
    let (from_us, to_us) = (from_s.saturating_mul(US), to_s.saturating_mul(US));
    let (mut frames, mut errors, mut records) = (Vec::new(), Vec::new(), Vec::new());
    for row in wait(client.query(DAILY, &[&from_us, &to_us]))? {
        let table: &str = row.try_get(0)?;
        let day: i64 = row.try_get(1)?;
        let n: i64 = row.try_get(2)?;
        match table {
            "f" => frames.push((day, n, row.try_get(3)?)),
            "e" => errors.push((day, n)),
            _ => records.push((day, n)),
        }
    }
    Ok(merge_days(frames, errors, records))
}

/// The end times of the newest successful and failed backup and the newest verification with
/// its result, in one statement.
const OPS_STATE: &str = "
    SELECT
      (SELECT max(at_us + duration_ms * 1000) FROM maintenance_log
        WHERE kind = 'backup' AND result <> 'failed'),
      (SELECT max(at_us + duration_ms * 1000) FROM maintenance_log
        WHERE kind = 'backup' AND result = 'failed'),
      v.end_us, v.result
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (
        SELECT at_us + duration_ms * 1000 AS end_us, result FROM maintenance_log
        WHERE kind = 'verify' ORDER BY at_us + duration_ms * 1000 DESC, id DESC LIMIT 1
    ) v ON true";

pub(crate) fn ops_state(client: &Client) -> Result<OpsState, StoreError> {
    let row = wait(client.query_one(OPS_STATE, &[]))?;
    let verify_result: Option<String> = row.try_get(3)?;
    Ok(OpsState {
        window: current_window(client)?,
        last_backup_ok_us: row.try_get(0)?,
        last_backup_failed_us: row.try_get(1)?,
        last_verify_us: row.try_get(2)?,
        last_verify_ok: verify_result.map(|r| r != "failed"),
    })
}

pub(crate) fn table_counts(client: &Client) -> Result<RowCounts, StoreError> {
    let columns: Vec<String> = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t})"))
        .collect();
    let row = wait(client.query_one(&format!("SELECT {}", columns.join(", ")), &[]))?;
    let mut counts = RowCounts::new();
    for (i, table) in TABLES.iter().enumerate() {
        counts.insert((*table).to_owned(), row.try_get(i)?);
    }
    Ok(counts)
}
