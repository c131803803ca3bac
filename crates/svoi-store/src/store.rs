//! `Store`: the writer's handle on the database, whichever backend the URL names. Every method
//! behaves the same on SQLite (the embedded default) and PostgreSQL; what differs is said in
//! the method's documentation.

use std::path::Path;

use crate::pg::PgStore;
use crate::sqlite::SqliteStore;
use crate::{
    CommitReceipt, DbUrl, FrameFilter, FrameRow, NewToken, RecordKey, RecordRow, ReprocessStats,
    StoreError, StoreOptions, StoredFrame, TableCounts, TokenRecord,
};

/// A handle on the database for one writer: one connection (SQLite: in WAL mode; PostgreSQL:
/// reopened by itself after the server comes back), with in-memory caches of device and layout
/// ids. `Send`, not `Sync`: give it to one thread (the batch writer) and open a
/// [`crate::Reader`] for readers.
#[derive(Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    /// Number of the last successful commit of this handle (0 before the first).
    batch_no: u64,
}

#[derive(Debug)]
pub(crate) enum Backend {
    Sqlite(Box<SqliteStore>),
    Postgres(Box<PgStore>),
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// SQLite: creates the file and its directory if missing; WAL journal, `synchronous` and
    /// busy timeout from `opts`, foreign keys on. PostgreSQL: connects (connect and statement
    /// timeouts from `opts.postgres`), applies the migrations under an advisory lock (several
    /// servers may start at once), and creates the monthly partitions of `raw_frames` and
    /// `records` for the previous, current and next two months. Refuses a database whose schema
    /// is newer than this build.
    pub fn open(url: &DbUrl, opts: &StoreOptions) -> Result<Store, StoreError> {
        let backend = match url {
            DbUrl::Sqlite(path) => Backend::Sqlite(Box::new(SqliteStore::open(path, opts)?)),
            DbUrl::Postgres(url) => Backend::Postgres(Box::new(PgStore::open(url, opts)?)),
        };
        Ok(Store {
            backend,
            batch_no: 0,
        })
    }

    /// The applied schema version.
    pub fn schema_version(&mut self) -> Result<u32, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.schema_version(),
            Backend::Postgres(s) => s.schema_version(),
        }
    }

    /// The database file (SQLite); `None` for PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Which database this is, as its URL (a PostgreSQL password shows as `***`).
    pub fn url(&self) -> DbUrl {
        match &self.backend {
            Backend::Sqlite(s) => DbUrl::Sqlite(s.path().to_path_buf()),
            Backend::Postgres(s) => DbUrl::Postgres(s.url().clone()),
        }
    }

    /// Stores `frames` and everything decoded from them in one transaction, all or nothing,
    /// and returns the receipt that lets ingest acknowledge them.
    ///
    /// The batch is validated before anything is written: a frame with records but no IMEI
    /// fails the whole batch with [`StoreError::Invalid`]. Archive and alarm records are
    /// deduplicated on (device, record index, event time): a resent record is counted in
    /// [`crate::CommitStats::duplicates`], not stored again, also when another server sharing
    /// the PostgreSQL database stored it. A record whose index or event time is unknown cannot
    /// be deduplicated (NULLs are distinct) and is stored each time. On error the transaction
    /// is rolled back and no receipt exists; a retryable error
    /// ([`StoreError::is_retryable`]: busy, I/O, PostgreSQL unreachable or restarting) may
    /// succeed on the next call, which on PostgreSQL reconnects first.
    pub fn commit(&mut self, frames: &[FrameRow]) -> Result<CommitReceipt, StoreError> {
        validate(frames)?;
        let stats = match &mut self.backend {
            Backend::Sqlite(s) => s.write(frames)?,
            Backend::Postgres(s) => s.write(frames)?,
        };
        self.batch_no += 1;
        let seqs = frames.iter().map(|frame| frame.seq).collect();
        Ok(CommitReceipt::new(self.batch_no, seqs, stats))
    }

    /// Inserts `rows` straight into `records` for the device `imei` in one transaction,
    /// without raw frames, alarm events or receipts: the baseline the benchmarks compare
    /// [`Store::commit`] with. Returns the number of rows inserted.
    ///
    /// SQLite: one prepared statement per row, a duplicate key is skipped. PostgreSQL: one
    /// binary `COPY`, and a duplicate key fails it.
    pub fn insert_records_direct(
        &mut self,
        imei: &str,
        rows: &[RecordRow],
    ) -> Result<u64, StoreError> {
        self.insert_records_direct_many(&[(imei, rows)])
    }

    /// [`Store::insert_records_direct`] for several devices in one transaction: the baseline
    /// `svoi bench ingest` compares end-to-end ingest with.
    pub fn insert_records_direct_many(
        &mut self,
        devices: &[(&str, &[RecordRow])],
    ) -> Result<u64, StoreError> {
        if devices.iter().any(|(imei, _)| imei.is_empty()) {
            return Err(StoreError::Invalid(
                "records need a non-empty imei".to_owned(),
            ));
        }
        match &mut self.backend {
            Backend::Sqlite(s) => s.insert_records_direct_many(devices),
            Backend::Postgres(s) => s.insert_records_direct_many(devices),
        }
    }

    /// Replaces what was decoded from archived frames by a new decode. Each update is a
    /// `raw_frames.id` and the [`FrameRow`] freshly decoded from that frame's bytes; all
    /// updates run in one transaction, all or nothing.
    ///
    /// Per frame: kind, status and error are updated; decode errors, alarm events and
    /// current-state rows are replaced; records and additional records are diffed by key
    /// (record index, event time): same key and values = unchanged, same key and other
    /// values = changed (updated in place, id kept), a new key = added (or a duplicate when
    /// another frame holds it), a key gone = removed. The frame keeps its device, receive time
    /// and layout, and device updates in `FrameRow::device` are ignored (a re-decoded old
    /// negotiation must not roll back the device's current layout). A removed record that
    /// later frames had resent is gone with it; reprocessing those frames adds it back.
    ///
    /// Fails with [`StoreError::Invalid`] for an unknown frame id, an IMEI other than the
    /// frame's device, or records for a frame without a device.
    pub fn reprocess(&mut self, updates: &[(i64, FrameRow)]) -> Result<ReprocessStats, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.reprocess(updates),
            Backend::Postgres(s) => s.reprocess(updates),
        }
    }

    /// Row counts of the main tables.
    pub fn counts(&mut self) -> Result<TableCounts, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.counts(),
            Backend::Postgres(s) => s.counts(),
        }
    }

    /// The keys of stored records, of one device or all, ordered by IMEI, record index, event
    /// time (unknown values first), then id.
    pub fn record_keys(&mut self, imei: Option<&str>) -> Result<Vec<RecordKey>, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.record_keys(imei),
            Backend::Postgres(s) => s.record_keys(imei),
        }
    }

    /// Up to `limit` archived frames with id greater than `after_id` that match `filter`,
    /// ascending by id: page through with the last id returned.
    pub fn frames_for_reprocess(
        &mut self,
        filter: &FrameFilter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredFrame>, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.frames_for_reprocess(filter, after_id, limit),
            Backend::Postgres(s) => s.frames_for_reprocess(filter, after_id, limit),
        }
    }

    /// Inserts an API token; an active token with the same name ->
    /// [`StoreError::TokenExists`]. An empty id or name, or an id already used by any token
    /// (revoked ones included), is [`StoreError::Invalid`]. The creation time is now.
    pub fn create_token(&mut self, t: &NewToken) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.create_token(t),
            Backend::Postgres(s) => s.create_token(t),
        }
    }

    /// All tokens, revoked included, ordered by creation time, then id.
    pub fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.tokens(),
            Backend::Postgres(s) => s.tokens(),
        }
    }

    /// Revokes the active token of that name (revocation time now); `Ok(false)` if there is
    /// none.
    pub fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.revoke_token(name),
            Backend::Postgres(s) => s.revoke_token(name),
        }
    }
}

/// Checks a batch before anything is written, so that a bad frame stores nothing.
pub(crate) fn validate(frames: &[FrameRow]) -> Result<(), StoreError> {
    for frame in frames {
        match &frame.imei {
            None if !frame.records.is_empty() || !frame.ext_records.is_empty() => {
                return Err(no_imei(frame));
            }
            None if frame.device.is_some() => {
                return Err(StoreError::Invalid(format!(
                    "frame seq {} carries a device update but no imei",
                    frame.seq
                )));
            }
            Some(imei) if imei.is_empty() => {
                return Err(StoreError::Invalid(format!(
                    "frame seq {} has an empty imei",
                    frame.seq
                )));
            }
            _ => {}
        }
        if i64::try_from(frame.conn_id).is_err() {
            return Err(StoreError::Invalid(format!(
                "frame seq {} has connection id {} beyond the storable range",
                frame.seq, frame.conn_id
            )));
        }
    }
    Ok(())
}

/// The error for decoded rows that have no device to belong to.
pub(crate) fn no_imei(frame: &FrameRow) -> StoreError {
    StoreError::Invalid(format!(
        "frame seq {} carries {} records and {} additional records but no imei: \
         records need a device",
        frame.seq,
        frame.records.len(),
        frame.ext_records.len()
    ))
}
