//! `SqliteStore`: one SQLite connection in WAL mode, its settings, the embedded migrations, and the
//! batch commit that turns frames into rows (the [`crate::Store`] makes the receipt).
//!
//! The submodules split the rest of the work: `write` holds the insert statements shared by
//! commit and reprocess, `read` the queries, `reprocess` the re-decode diff, `tokens` the API
//! token writes. Read-only queries go through [`crate::Reader`], on connections of its own.

mod read;
mod reprocess;
mod tokens;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

pub(crate) use read::parse_status;
pub use read::{FrameFilter, RecordKey, StoredFrame, TableCounts};

use crate::rows::now_us;
use crate::{
    CommitStats, FrameRow, FrameStatus, LayoutKey, RecordKind, RecordRow, StoreError, StoreOptions,
    migrate,
};
use write::{Writer, apply_device_update, resolve_device, resolve_layout};

/// A handle on the database: one SQLite connection (so one writer), with in-memory caches of
/// device and layout ids. `Send`, not `Sync`: give it to one thread (the batch writer) and
/// open another handle for readers.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// IMEI → `devices.id`. Cleared on rollback: a rolled-back insert's id may be reused.
    devices: HashMap<Arc<str>, i64>,
    /// Layout → `layouts.id`. Cleared on rollback, like `devices`.
    layouts: HashMap<Arc<LayoutKey>, i64>,
    /// Scratch for one commit: device id → latest receive time seen in the batch.
    touched: HashMap<i64, i64>,
    /// `svoi_state.restore_epoch` when the caches were last known good: a restore bumps it,
    /// and a transaction that finds another value clears the caches first.
    epoch: i64,
}

/// Page size of a new database. Records with their JSON run to about a kilobyte; 16 KiB pages
/// cut B-tree splits and per-page WAL writes against SQLite's 4 KiB default (measured with
/// `svoi bench ingest`: the plain insert went from about 300k to 440k rows/s, end-to-end
/// ingest rose with it). Only applies when the file is created.
const PAGE_SIZE: i64 = 16_384;

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `url`: WAL journal,
    /// `synchronous` and busy timeout from `opts`, foreign keys on, then the embedded
    /// migrations. Refuses a database whose schema is newer than this build.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        // The timeout first: switching to WAL needs a lock another process may hold.
        conn.busy_timeout(opts.busy_timeout)?;
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // Like the page size, only takes effect on a new file: pages freed by retention can
        // then be given back to the filesystem by `svoi db optimize` (incremental vacuum)
        // without a full VACUUM, which would need the server stopped and twice the space.
        conn.pragma_update(None, "auto_vacuum", "incremental")?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", opts.synchronous.as_str())?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // A 64 MiB page cache: large batches otherwise spill dirty pages to the WAL before
        // the commit (measured: a 400k-row transaction ran at a quarter of the speed).
        conn.pragma_update(None, "cache_size", -65_536)?;
        if opts.background_checkpoint {
            conn.pragma_update(
                None,
                "wal_autocheckpoint",
                crate::options::BACKSTOP_CHECKPOINT_PAGES,
            )?;
            // A WAL that grew while the checkpointer lagged is cut back after it caught up.
            conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        }
        // Commit and reprocess together use about 30 distinct statements; keep them all.
        conn.set_prepared_statement_cache_capacity(64);
        migrate::migrate(&mut conn)?;
        let epoch = restore_epoch(&conn)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            devices: HashMap::new(),
            layouts: HashMap::new(),
            touched: HashMap::new(),
            epoch,
        })
    }

    /// The applied schema version.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrate::current_version(&self.conn)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the operations queries (`crate::ops`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// [`crate::Store::commit`] after validation: the batch in one `BEGIN IMMEDIATE` …
    /// `COMMIT`, all or nothing. SQLite treats NULLs as distinct in the deduplication key.
    pub(crate) fn write(&mut self, frames: &[FrameRow]) -> Result<CommitStats, StoreError> {
        self.in_transaction(|store| store.write_batch(frames))
    }

    /// [`crate::Store::insert_records_direct_many`]: one prepared insert per row, in one
    /// transaction; a duplicate key is skipped.
    pub(crate) fn insert_records_direct_many(
        &mut self,
        devices: &[(&str, &[RecordRow])],
    ) -> Result<u64, StoreError> {
        let received_at_us = now_us();
        self.in_transaction(|store| {
            let SqliteStore {
                conn, devices: ids, ..
            } = store;
            let mut inserted = 0;
            for (imei, rows) in devices {
                let imei: Arc<str> = Arc::from(*imei);
                let device = resolve_device(conn, ids, &imei, received_at_us)?;
                let mut writer = Writer::new(conn)?;
                for row in *rows {
                    if writer.insert_record(device, None, "archive", row, received_at_us)? {
                        inserted += 1;
                    }
                }
            }
            Ok(inserted)
        })
    }

    /// Runs `work` inside `BEGIN IMMEDIATE` … `COMMIT`. On any error the transaction is rolled
    /// back and the id caches are cleared, since ids handed out inside it no longer exist.
    fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = self
            .check_epoch()
            .and_then(|()| work(self))
            .and_then(|value| {
                self.conn.execute_batch("COMMIT")?;
                Ok(value)
            });
        if result.is_err() {
            if !self.conn.is_autocommit() {
                // The original error is what the caller needs; a failed rollback leaves the
                // transaction open and the next BEGIN reports it.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            self.devices.clear();
            self.layouts.clear();
        }
        result
    }

    /// Inside a transaction, before any id is resolved: when a restore replaced the database
    /// since the caches were filled (the restore epoch moved), the cached ids name rows of
    /// the old contents, so they are dropped.
    fn check_epoch(&mut self) -> Result<(), StoreError> {
        let epoch = restore_epoch(&self.conn)?;
        if epoch != self.epoch {
            self.devices.clear();
            self.layouts.clear();
            self.epoch = epoch;
        }
        Ok(())
    }

    /// The body of [`Store::commit`], inside its transaction.
    fn write_batch(&mut self, frames: &[FrameRow]) -> Result<CommitStats, StoreError> {
        let SqliteStore {
            conn,
            devices,
            layouts,
            touched,
            ..
        } = self;
        let conn: &Connection = conn;
        touched.clear();
        let mut writer = Writer::new(conn)?;
        let mut stats = CommitStats::default();
        for frame in frames {
            let at = frame.received_at_us;
            let device = match &frame.imei {
                Some(imei) => {
                    let id = resolve_device(conn, devices, imei, at)?;
                    let seen = touched.entry(id).or_insert(at);
                    *seen = (*seen).max(at);
                    Some(id)
                }
                None => None,
            };
            if let (Some(id), Some(update)) = (device, &frame.device) {
                apply_device_update(conn, id, update, at)?;
            }
            let layout = match &frame.layout {
                Some(key) => Some(resolve_layout(conn, layouts, key)?),
                None => None,
            };
            let frame_id = writer.insert_frame(device, frame, layout)?;
            stats.frames += 1;
            if frame.status != FrameStatus::Ok {
                writer.insert_decode_error(frame_id, device, at, frame)?;
                stats.decode_errors += 1;
            }
            if frame.records.is_empty() && frame.ext_records.is_empty() {
                continue;
            }
            let device = device.ok_or_else(|| crate::store::no_imei(frame))?;
            for record in &frame.records {
                match record.kind {
                    RecordKind::Archive => {
                        if writer.insert_record(
                            device,
                            Some(frame_id),
                            "archive",
                            &record.row,
                            at,
                        )? {
                            stats.records += 1;
                        } else {
                            stats.duplicates += 1;
                        }
                    }
                    RecordKind::Alarm { event_index } => {
                        if writer.insert_record(device, Some(frame_id), "alarm", &record.row, at)? {
                            stats.records += 1;
                        } else {
                            stats.duplicates += 1;
                        }
                        if writer.insert_alarm(device, frame_id, event_index, &record.row, at)? {
                            stats.alarms += 1;
                        }
                    }
                    RecordKind::Current => {
                        writer.insert_current(device, frame_id, &record.row, at)?;
                        stats.current += 1;
                    }
                }
            }
            for ext in &frame.ext_records {
                if writer.insert_ext(device, frame_id, ext, at)? {
                    stats.ext_records += 1;
                } else {
                    stats.duplicates += 1;
                }
            }
        }
        let mut last_seen = conn.prepare_cached(
            "UPDATE devices SET last_seen_us = max(last_seen_us, ?2) WHERE id = ?1",
        )?;
        for (&id, &at) in touched.iter() {
            last_seen.execute((id, at))?;
        }
        Ok(stats)
    }
}

/// `svoi_state.restore_epoch` (bumped by every restore).
fn restore_epoch(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM svoi_state WHERE name = 'restore_epoch'")?
        .query_row([], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Synchronous;

    fn open(dir: &Path, synchronous: Synchronous) -> SqliteStore {
        SqliteStore::open(
            &dir.join("svoi.db"),
            &StoreOptions {
                synchronous,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    fn pragma(store: &SqliteStore, name: &str) -> String {
        store
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    }

    #[test]
    fn open_sets_wal_synchronous_foreign_keys_and_busy_timeout() {
        for mode in [
            Synchronous::Off,
            Synchronous::Normal,
            Synchronous::Full,
            Synchronous::Extra,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), mode);
            assert_eq!(pragma(&store, "journal_mode"), "wal");
            assert_eq!(pragma(&store, "synchronous"), mode.level().to_string());
            assert_eq!(pragma(&store, "foreign_keys"), "1");
            assert_eq!(pragma(&store, "busy_timeout"), "5000");
        }
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SqliteStore>();
    }

    #[test]
    fn a_failed_commit_clears_the_id_caches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), Synchronous::Off);
        let layout = Arc::new(LayoutKey {
            protocol_version: 20,
            struct_version: 20,
            data_size: 8,
            mask: vec![0xff],
        });
        let mut frame = FrameRow {
            seq: 1,
            conn_id: 1,
            imei: Some(Arc::from("123")),
            received_at_us: 1,
            kind: Arc::from("~A"),
            status: FrameStatus::Ok,
            error_reason: None,
            error: None,
            bytes: vec![1],
            layout: Some(layout),
            device: None,
            records: Vec::new(),
            ext_records: Vec::new(),
        };
        let _ = store.write(std::slice::from_ref(&frame)).unwrap();
        assert_eq!(store.devices.len(), 1);
        assert_eq!(store.layouts.len(), 1);
        // Make the next raw frame insert fail inside the transaction.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON raw_frames WHEN NEW.kind = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END",
            )
            .unwrap();
        frame.kind = Arc::from("boom");
        assert!(store.write(std::slice::from_ref(&frame)).is_err());
        assert!(store.devices.is_empty());
        assert!(store.layouts.is_empty());
        assert!(store.conn.is_autocommit(), "transaction left open");
    }
}
