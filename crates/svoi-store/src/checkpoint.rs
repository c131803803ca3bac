//! WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside the commit
//! that crosses the threshold, so the writer — and every acknowledgement waiting on it —
//! stalls while the WAL is copied into the database file. A [`Checkpointer`] runs them on its
//! own connection and thread instead; the writer's automatic checkpoint stays as a backstop at
//! a much higher threshold (see [`StoreOptions::background_checkpoint`]).
//!
//! Checkpointing does not change durability: a commit is durable once its WAL frames are
//! synced; the checkpoint only moves them into the main file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::{DbUrl, StoreError, StoreOptions};

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointResult {
    /// The checkpoint could not run to completion because another connection held a lock.
    pub busy: bool,
    /// Frames in the WAL.
    pub wal_frames: i64,
    /// Frames copied into the database file.
    pub checkpointed_frames: i64,
}

/// A connection that only checkpoints.
#[derive(Debug)]
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// Opens a second connection to an existing database (open the [`crate::Store`] first:
    /// it creates the file and applies migrations).
    pub fn open(url: &DbUrl, opts: &StoreOptions) -> Result<Checkpointer, StoreError> {
        let DbUrl::Sqlite(path) = url else {
            return Err(StoreError::Unsupported(
                "checkpoints are an SQLite matter: PostgreSQL runs its own".to_owned(),
            ));
        };
        let conn = Connection::open(path)?;
        conn.busy_timeout(opts.busy_timeout)?;
        conn.pragma_update(None, "synchronous", opts.synchronous.as_str())?;
        Ok(Checkpointer { conn })
    }

    fn run(&self, mode: &str) -> Result<CheckpointResult, StoreError> {
        let (busy, wal_frames, checkpointed_frames): (i64, i64, i64) =
            self.conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        Ok(CheckpointResult {
            busy: busy != 0,
            wal_frames,
            checkpointed_frames,
        })
    }

    /// Copies as much of the WAL as it can without waiting for the writer (`PASSIVE`).
    pub fn passive(&self) -> Result<CheckpointResult, StoreError> {
        self.run("PASSIVE")
    }

    /// Copies all of the WAL and truncates it, waiting for the writer (`TRUNCATE`); for a
    /// quiet moment such as shutdown.
    pub fn truncate(&self) -> Result<CheckpointResult, StoreError> {
        self.run("TRUNCATE")
    }

    /// Runs a passive checkpoint every `interval` on a thread of its own until the handle is
    /// stopped or dropped; then one truncating checkpoint.
    pub fn spawn(self, interval: Duration) -> std::io::Result<CheckpointerHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("svoi-checkpoint".into())
            .spawn(move || {
                let mut failures = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    if self.passive().is_err() {
                        // The writer's own automatic checkpoint is the backstop; a failure
                        // here costs only commit latency. Counted for the handle's owner.
                        failures += 1;
                    }
                }
                let _ = self.truncate();
                failures
            })?;
        Ok(CheckpointerHandle {
            stop,
            thread: Some(thread),
        })
    }
}

/// The running checkpoint thread.
#[derive(Debug)]
pub struct CheckpointerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl CheckpointerHandle {
    /// Stops the thread after a final truncating checkpoint; returns how many periodic
    /// checkpoints failed.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join().unwrap_or(0)
            }
            None => 0,
        }
    }
}

impl Drop for CheckpointerHandle {
    fn drop(&mut self) {
        self.finish();
    }
}
