//! SQLite backups: `VACUUM INTO` snapshots, their checks, and restores through the online
//! backup API.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{BackupError, Carried, DATA_TABLES, OPS_TABLES, Snapshot, io};
use crate::{RowCounts, StoreError, StoreOptions};

/// What [`check_sqlite`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteCheck {
    /// The rows of `PRAGMA integrity_check`: `["ok"]` when the file is sound.
    pub integrity: Vec<String>,
    /// One line per row of `PRAGMA foreign_key_check` (empty when every reference resolves).
    pub foreign_key_problems: Vec<String>,
    /// Counts, schema version and SQLite version of the file.
    pub snapshot: Snapshot,
}

impl SqliteCheck {
    /// The integrity check passed and every foreign key resolves.
    pub fn ok(&self) -> bool {
        self.integrity == ["ok"] && self.foreign_key_problems.is_empty()
    }
}

/// How long a restore keeps retrying to get the live database's write lock for the copy.
const COPY_WAIT: Duration = Duration::from_secs(30);

/// Writes a consistent copy of the live database `db` to `dest` (which must not exist) with
/// `VACUUM INTO`: one read transaction, so a server may keep writing (WAL mode), and the copy
/// is compact. The counts and schema version are read from the copy, so they describe it
/// exactly. The copy is left in rollback-journal mode, one self-contained file.
pub fn snapshot_sqlite(
    db: &Path,
    opts: &StoreOptions,
    dest: &Path,
) -> Result<Snapshot, BackupError> {
    if !db.is_file() {
        return Err(BackupError::Invalid(format!(
            "database {} does not exist",
            db.display()
        )));
    }
    if dest.exists() {
        return Err(BackupError::Invalid(format!(
            "{} exists already",
            dest.display()
        )));
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(opts.busy_timeout)?;
    let target = path_text(dest)?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    let copy = Connection::open(dest)?;
    copy.pragma_update(None, "journal_mode", "delete")?;
    snapshot_of(&copy)
}

/// Checks an SQLite file (a decompressed backup): `PRAGMA integrity_check`,
/// `PRAGMA foreign_key_check`, row counts and schema version. Errors when the file cannot be
/// opened or read as a database at all.
pub fn check_sqlite(file: &Path) -> Result<SqliteCheck, BackupError> {
    if !file.is_file() {
        return Err(BackupError::Invalid(format!(
            "{} does not exist",
            file.display()
        )));
    }
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let integrity = {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        stmt.query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
    };
    let foreign_key_problems = {
        let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
        stmt.query_map([], |row| {
            let table: String = row.get(0)?;
            let rowid: Option<i64> = row.get(1)?;
            let parent: String = row.get(2)?;
            Ok(format!(
                "{table} row {} refers to a missing {parent} row",
                rowid.map_or_else(|| "?".to_string(), |r| r.to_string())
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    Ok(SqliteCheck {
        integrity,
        foreign_key_problems,
        snapshot: snapshot_of(&conn)?,
    })
}

/// Restores the backup copy `file` into the database `db` (created when missing).
///
/// `file` is a scratch copy and is changed: it is migrated to this build's schema, then the
/// live database's operations rows are carried over into it: maintenance log entries whose ids
/// it lacks, maintenance windows (the live row replaces the copy's row of the same id) and
/// hourly statistics (likewise by hour and instance), and its restore epoch is set to one more
/// than the live one's. Then SQLite's online backup API copies it over the live database page
/// by page in one step, under the live database's write lock: correct while a server has the
/// database open (its connections see the new content at their next transaction; the epoch
/// tells its writer to drop its cached ids). Rows the live database gains between the carry-
/// over and the copy (a log entry a server appends in that moment) are not carried.
pub fn restore_sqlite(file: &Path, db: &Path, opts: &StoreOptions) -> Result<Carried, BackupError> {
    let mut scratch = Connection::open(file)?;
    scratch.busy_timeout(opts.busy_timeout)?;
    scratch.pragma_update(None, "journal_mode", "delete")?;
    crate::migrate::migrate(&mut scratch)?;
    let live_existed = db.is_file() && std::fs::metadata(db).map_err(io(db))?.len() > 0;
    let mut carried = Carried {
        live_existed,
        ..Carried::default()
    };
    let mut live_epoch = None;
    if live_existed {
        scratch.execute("ATTACH DATABASE ?1 AS live", [path_text(db)?])?;
        let result = carry_over(&mut scratch, &mut carried);
        let detached = scratch.execute_batch("DETACH DATABASE live");
        live_epoch = result?;
        detached?;
    }
    let own_epoch = epoch(&scratch, "main")?.unwrap_or(0);
    carried.epoch = own_epoch.max(live_epoch.unwrap_or(0)) + 1;
    scratch.execute(
        "INSERT INTO svoi_state (name, value) VALUES ('restore_epoch', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [carried.epoch],
    )?;

    if let Some(dir) = db.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut live = Connection::open(db)?;
    live.busy_timeout(opts.busy_timeout)?;
    copy_into(&scratch, &mut live)?;
    // A database that did not exist was created in rollback mode; servers expect WAL.
    let mode: String = live.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal {
            path: db.to_path_buf(),
            mode,
        }
        .into());
    }
    Ok(carried)
}

/// The carry-over of [`restore_sqlite`], with the live database attached as `live`, in one
/// transaction of the scratch database; returns the live restore epoch.
fn carry_over(scratch: &mut Connection, carried: &mut Carried) -> Result<Option<i64>, BackupError> {
    let has = |conn: &Connection, table: &str| -> Result<bool, rusqlite::Error> {
        conn.query_row(
            "SELECT count(*) FROM live.sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    let tx = scratch.transaction()?;
    if has(&tx, "maintenance_log")? {
        carried.log_entries = to_i64(tx.execute(
            "INSERT INTO main.maintenance_log
                 (id, at_us, kind, operator, duration_ms, result, summary, details)
             SELECT id, at_us, kind, operator, duration_ms, result, summary, details
             FROM live.maintenance_log
             WHERE id NOT IN (SELECT id FROM main.maintenance_log)
             ORDER BY id",
            [],
        )?);
    }
    if has(&tx, "maintenance_windows")? {
        tx.execute(
            "DELETE FROM main.maintenance_windows
             WHERE id IN (SELECT id FROM live.maintenance_windows)",
            [],
        )?;
        // At most one window may be open; the live database's open window is the one.
        tx.execute(
            "DELETE FROM main.maintenance_windows WHERE ended_at_us IS NULL
               AND EXISTS (SELECT 1 FROM live.maintenance_windows WHERE ended_at_us IS NULL)",
            [],
        )?;
        carried.windows = to_i64(tx.execute(
            "INSERT INTO main.maintenance_windows
                 (id, started_at_us, planned_end_us, reason, operator, backup_id, silence_id,
                  ended_at_us, result)
             SELECT id, started_at_us, planned_end_us, reason, operator, backup_id, silence_id,
                    ended_at_us, result
             FROM live.maintenance_windows ORDER BY id",
            [],
        )?);
    }
    if has(&tx, "hourly_stats")? {
        carried.hourly_stats = to_i64(tx.execute(
            "INSERT OR REPLACE INTO main.hourly_stats
                 (hour_start, instance, frames, records, duplicates, decode_errors, acks,
                  ack_p50_ms, ack_p95_ms, ack_p99_ms, devices_active, connections_max,
                  db_bytes, updated_at_us)
             SELECT hour_start, instance, frames, records, duplicates, decode_errors, acks,
                    ack_p50_ms, ack_p95_ms, ack_p99_ms, devices_active, connections_max,
                    db_bytes, updated_at_us
             FROM live.hourly_stats",
            [],
        )?);
    }
    let live_epoch = if has(&tx, "svoi_state")? {
        epoch(&tx, "live")?
    } else {
        None
    };
    tx.commit()?;
    Ok(live_epoch)
}

/// Copies `from` over `to` with the online backup API, all pages in one step, retrying while
/// another connection holds `to`'s lock.
fn copy_into(from: &Connection, to: &mut Connection) -> Result<(), BackupError> {
    let backup = Backup::new(from, to)?;
    let deadline = Instant::now() + COPY_WAIT;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                if Instant::now() >= deadline {
                    return Err(BackupError::Invalid(format!(
                        "the database stayed locked by another connection for {COPY_WAIT:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// [`super::live_snapshot`] of an SQLite database.
pub(super) fn live_snapshot(
    db: &Path,
    opts: &StoreOptions,
) -> Result<Option<Snapshot>, BackupError> {
    if !db.is_file() || std::fs::metadata(db).map_err(io(db))?.len() == 0 {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(opts.busy_timeout)?;
    conn.execute_batch("BEGIN")?;
    let snapshot = snapshot_of(&conn);
    conn.execute_batch("COMMIT")?;
    snapshot.map(Some)
}

/// The restore epoch of the attached database `schema`, if it has one.
fn epoch(conn: &Connection, schema: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row(
        &format!("SELECT value FROM {schema}.svoi_state WHERE name = 'restore_epoch'"),
        [],
        |row| row.get(0),
    )
    .optional()
}

/// Counts, schema version and SQLite version of an open database.
fn snapshot_of(conn: &Connection) -> Result<Snapshot, BackupError> {
    let mut counts = RowCounts::new();
    for &table in DATA_TABLES.iter().chain(OPS_TABLES) {
        let exists: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )?;
        if exists > 0 {
            let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })?;
            counts.insert(table.to_string(), n);
        }
    }
    let version: String = conn.query_row("SELECT sqlite_version()", [], |row| row.get(0))?;
    Ok(Snapshot {
        counts,
        schema_version: crate::migrate::current_version(conn)?,
        server_version: format!("sqlite {version}"),
    })
}

/// A path as the text SQL statements take.
fn path_text(path: &Path) -> Result<&str, BackupError> {
    path.to_str()
        .ok_or_else(|| BackupError::Invalid(format!("{} is not valid UTF-8", path.display())))
}

/// A row count as stored.
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
