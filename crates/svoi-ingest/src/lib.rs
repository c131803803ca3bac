//! The device side of SVOI: a TCP listener, one session task per connection running the
//! codec's [`svoi_proto::Session`], a bounded queue to one batch writer that commits frames of
//! all sessions together, and answers that say "saved" sent only after that commit.
//!
//! ```text
//! socket ──read──▶ Session::decode ──FrameRow──▶ bounded queue ──▶ writer: Store::commit
//!    ▲                                                                 │ CommitReceipt
//!    └──────────── AfterCommit::encode(&receipt) ◀──────oneshot────────┘
//! ```
//! See [`ack`] for how the type system keeps an answer from going out before its commit.

pub mod ack;
pub mod convert;
pub mod names;
mod server;
mod session;
pub mod stats;
pub mod writer;

use std::net::SocketAddr;
use std::time::Duration;

pub use server::{Server, ShutdownReport};
pub use stats::{IngestStats, StatsSnapshot};
pub use writer::{CommitFailed, Committer, WriterConfig};

/// Settings of the device side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Where devices connect.
    pub listen: SocketAddr,
    /// Connections beyond this many are refused.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// A connection without a handshake this long after connecting is closed.
    pub handshake_timeout: Duration,
    /// Largest message accepted; a longer one loses sync and closes the session.
    pub max_message_bytes: usize,
    /// Frames that may wait for the writer before sessions stop reading.
    pub queue_capacity: usize,
    /// Rows per commit at most.
    pub batch_max_records: usize,
    /// Longest wait for more frames before a commit.
    pub batch_max_delay: Duration,
    /// Longest wait for sessions and the writer at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5221)),
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(30),
            max_message_bytes: 256 * 1024,
            queue_capacity: 4096,
            batch_max_records: 5_000,
            batch_max_delay: Duration::from_millis(1),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
