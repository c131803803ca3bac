//! WAL checkpoints on their own connection: a store opened for a background checkpointer does
//! not checkpoint inside its commits, the checkpointer copies the WAL into the database file,
//! and stopping it leaves an empty WAL with every committed row readable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use svoi_store::{BACKSTOP_CHECKPOINT_PAGES, Checkpointer, Store, StoreOptions, Synchronous};

fn wal_size(dir: &tempfile::TempDir) -> u64 {
    std::fs::metadata(dir.path().join("svoi.db-wal")).map_or(0, |m| m.len())
}

/// 100 commits of 5 frames × 50 records, each commit's receipt checked.
fn fill(store: &mut Store) {
    let mut seq = 0;
    for round in 0..100u32 {
        let frames: Vec<_> = (0..5u32)
            .map(|f| {
                seq += 1;
                let first = (round * 5 + f) * 50;
                frame(seq, IMEI, archives(first..first + 50))
            })
            .collect();
        let receipt = store.commit(&frames).unwrap();
        assert!(receipt.covers(seq));
    }
}

#[test]
fn background_checkpoints_move_the_wal_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        synchronous: Synchronous::Full,
        background_checkpoint: true,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&url(&dir), &opts).unwrap();
    // The store's own checkpoint threshold is per connection; it shows in the WAL growing
    // past SQLite's default of 1000 pages.
    fill(&mut store);
    let grown = wal_size(&dir);
    assert!(
        grown > 1000 * 16_384,
        "the writer checkpointed by itself: WAL {grown} bytes"
    );
    assert!(u64::from(BACKSTOP_CHECKPOINT_PAGES) * 16_384 > grown);

    let checkpointer = Checkpointer::open(&url(&dir), &opts).unwrap();
    let r = checkpointer.passive().unwrap();
    assert!(!r.busy);
    assert!(r.wal_frames > 0);
    assert_eq!(r.checkpointed_frames, r.wal_frames);

    let handle = checkpointer.spawn(Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(handle.stop(), 0, "periodic checkpoints failed");
    assert_eq!(wal_size(&dir), 0, "the final checkpoint truncates the WAL");
    drop(store);
    assert_eq!(count(&raw(&dir), "records"), 100 * 5 * 50);
}

#[test]
fn a_store_without_a_checkpointer_keeps_its_wal_small() {
    let (dir, mut store) = temp_store(Synchronous::Full);
    fill(&mut store);
    // SQLite's automatic checkpoint restarts the WAL once it passes 1000 pages.
    assert!(
        wal_size(&dir) < 2 * 1000 * 16_384,
        "WAL {} bytes",
        wal_size(&dir)
    );
}
