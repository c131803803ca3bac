//! SVOI storage: the SQLite database (embedded, the default) or PostgreSQL, their migrations,
//! the idempotent batch commit that produces [`CommitReceipt`]s, reprocessing, and read
//! queries, behind one interface ([`Store`] for the writer, [`Reader`] for readers).
//!
//! The ingest side hands [`Store::commit`] one [`FrameRow`] per received message with the rows
//! decoded from it; the raw frame and everything decoded from it land in one transaction or
//! not at all, and only a successful commit yields the receipt an acknowledgement needs.
//! Records are deduplicated on (device, record index, event time), so a device resending
//! unacknowledged records never stores them twice.
//!
//! Readers (an API server, say) use a [`Reader`]: a pool of read-only connections with
//! keyset-paged queries ([`PageQuery`], [`Cursor`]) and token look-up; tokens are written
//! through the [`Store`]. The crate knows nothing of NTCB, FLEX, TCP or HTTP.

pub mod backup;
mod checkpoint;
mod error;
mod migrate;
mod ops;
mod options;
mod pg;
mod pool;
mod query;
mod reader;
mod receipt;
mod reprocess;
mod retention;
mod rows;
mod sqlite;
mod store;
mod url;

pub use checkpoint::{CheckpointResult, Checkpointer, CheckpointerHandle};
pub use error::StoreError;
pub use ops::{
    DailyFigures, DbStats, HourlyStats, IndexUsage, LogEntry, LogResult, NewLogEntry, NewWindow,
    OpsState, OptimizeReport, RetentionPlan, RetentionReport, RowCounts, SlowQuery, TableSize,
    Window,
};
pub use options::{BACKSTOP_CHECKPOINT_PAGES, PgOptions, RecordsVia, StoreOptions, Synchronous};
pub use pg::{create_database as pg_create_database, drop_database as pg_drop_database};
pub use query::{
    AlarmEvent, Cursor, DatabaseSize, DecodeErrorInfo, DeviceDetail, DeviceSummary, NewToken,
    PageQuery, Position, RawFrameInfo, StoredRecord, TokenRecord, TokenScope,
};
pub use reader::Reader;
pub use receipt::{CommitReceipt, CommitStats};
pub use reprocess::ReprocessStats;
pub use rows::{
    DecodedRecord, DeviceUpdate, ExtRecordRow, FrameRow, FrameStatus, LayoutKey, RecordKind,
    RecordRow,
};
pub use sqlite::{FrameFilter, RecordKey, StoredFrame, TableCounts};
pub use store::Store;
pub use url::{DbUrl, PgUrl};

/// The newest schema version this build knows (what [`Store::schema_version`] reports after
/// [`Store::open`] on a database this build created).
pub fn latest_schema_version() -> u32 {
    migrate::latest_version()
}
