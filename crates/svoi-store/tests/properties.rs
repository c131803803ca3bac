//! Property tests of deduplication: whatever sequence of batches a set of devices sends, with
//! keys repeating within and across batches, the store keeps exactly one row per distinct key
//! and every submitted record is counted either as stored or as a duplicate.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use svoi_store::{FrameRow, Synchronous};

const IMEIS: [&str; 3] = ["352093081234567", "352093089999999", "352093080000003"];

/// A device (index into [`IMEIS`]) and the (index, time) keys of its frame's records.
type FrameKeys = (usize, Vec<(u32, i64)>);

/// One frame: a device and the (index, time) keys of its records, from small ranges so that
/// keys repeat often.
fn frame_strategy() -> impl Strategy<Value = FrameKeys> {
    (0..IMEIS.len(), vec((0u32..12, 0i64..3), 0..12))
}

/// Batches of frames.
fn batches_strategy() -> impl Strategy<Value = Vec<Vec<FrameKeys>>> {
    vec(vec(frame_strategy(), 1..5), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stored_records_are_the_distinct_keys_and_every_record_is_counted(
        batches in batches_strategy()
    ) {
        let (_dir, mut store) = temp_store(Synchronous::Off);
        let mut seen = BTreeSet::new();
        let mut seq = 0;
        for batch in &batches {
            let mut submitted = 0;
            let mut new_keys = 0;
            let frames: Vec<FrameRow> = batch
                .iter()
                .map(|(device, keys)| {
                    seq += 1;
                    let records = keys
                        .iter()
                        .map(|&(index, time)| {
                            submitted += 1;
                            if seen.insert((*device, index, time)) {
                                new_keys += 1;
                            }
                            archive(record_at(Some(index), Some(T0 + time)))
                        })
                        .collect();
                    frame(seq, IMEIS[*device], records)
                })
                .collect();
            let receipt = store.commit(&frames).unwrap();
            let stats = receipt.stats();
            prop_assert_eq!(stats.records + stats.duplicates, submitted);
            prop_assert_eq!(stats.records, new_keys);
            for f in &frames {
                prop_assert!(receipt.covers(f.seq));
            }
        }
        let counts = store.counts().unwrap();
        prop_assert_eq!(counts.records, seen.len() as u64);
        let keys: BTreeSet<(String, u32, i64)> = store
            .record_keys(None)
            .unwrap()
            .into_iter()
            .map(|k| (k.imei, k.record_index.unwrap(), k.event_time.unwrap() - T0))
            .collect();
        let expected: BTreeSet<(String, u32, i64)> = seen
            .iter()
            .map(|&(device, index, time)| (IMEIS[device].to_owned(), index, time))
            .collect();
        prop_assert_eq!(keys, expected);
    }
}
