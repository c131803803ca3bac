//! Integration tests of the read API the HTTP API uses ([`Reader`]) and of API token storage,
//! on both backends (`sqlite::` and `postgres::` tests, see `backends!`): keyset paging (exact
//! coverage, order by (key, id) with ties, half-open ranges, device filters), device summaries
//! and details, tokens, schema checks, corrupt values, and a reader seeing what a store on
//! another connection commits. Then what only one backend has: SQLite's files, and the
//! PostgreSQL pool against a server that closes, blocks or refuses its connections. Data goes
//! in through [`Store::commit`]; SQL of the test's own only damages or inspects it.

// The test functions run through `backends!`, not as `#[test]`s, which clippy.toml exempts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use svoi_store::{
    Cursor, DbUrl, DeviceUpdate, FrameRow, FrameStatus, NewToken, PageQuery, PgOptions, Reader,
    Store, StoreError, StoreOptions, Synchronous, TokenScope, latest_schema_version,
};
use svoi_testpg::backends;

const OTHER: &str = "352093089999999";
const THIRD: &str = "352093085555555";

/// A reader with two connections on `db`.
fn reader(db: &Db) -> Reader {
    Reader::open(&db.store_url(), &StoreOptions::default(), 2)
        .unwrap_or_else(|e| panic!("reader on {}: {e}", db.url()))
}

/// A page query over [from, to).
fn range(from: i64, to: i64, limit: u32) -> PageQuery {
    PageQuery {
        from,
        to,
        after: None,
        limit,
    }
}

/// Follows cursors from the first page until a short page, checking each page's size;
/// returns every row in the order received and the number of pages fetched.
fn all_pages<T>(
    limit: u32,
    mut page: impl FnMut(Option<Cursor>) -> Vec<T>,
    cursor: impl Fn(&T) -> Cursor,
) -> (Vec<T>, usize) {
    let mut rows = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let got = page(after);
        pages += 1;
        assert!(
            got.len() <= limit as usize,
            "page of {} > {limit}",
            got.len()
        );
        assert!(pages < 10_000, "paging does not end");
        let short = got.len() < limit as usize;
        if let Some(last) = got.last() {
            after = Some(cursor(last));
        }
        rows.extend(got);
        if short {
            return (rows, pages);
        }
    }
}

/// Asserts that cursors strictly increase (so no row is repeated and the order is (key, id)).
fn assert_strictly_increasing(cursors: &[Cursor]) {
    for pair in cursors.windows(2) {
        assert!(pair[0] < pair[1], "out of order: {pair:?}");
    }
}

/// `frame` with its receive time set.
fn frame_at(seq: u64, imei: &str, received_at_us: i64) -> FrameRow {
    let mut f = frame(seq, imei, Vec::new());
    f.received_at_us = received_at_us;
    f
}

// ---------------------------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------------------------

/// Stores, for `IMEI`, three records per second over `seconds` seconds from `T0`, in three
/// commits, the one of each second's highest record index first (so id order and index order
/// disagree on ties; the PostgreSQL writer orders the records of one commit by key, so only
/// separate commits can); records of `OTHER` at the same times; and records of `IMEI` without
/// an event time.
fn tied_records(store: &mut Store, seconds: u32) -> Vec<svoi_store::RecordRow> {
    let mut mine = Vec::new();
    for j in (0..3).rev() {
        let rows: Vec<_> = (0..seconds)
            .map(|second| record_at(Some(second * 3 + j), Some(T0 + i64::from(second))))
            .collect();
        let mut frames = Vec::new();
        for (n, chunk) in rows.chunks(5).enumerate() {
            let n = n as u32 + j * 100;
            let seq = u64::from(n) * 2;
            frames.push(frame(
                seq,
                IMEI,
                chunk.iter().cloned().map(archive).collect(),
            ));
            frames.push(frame(seq + 1, OTHER, archives(n * 2..n * 2 + 2)));
        }
        let _ = store
            .commit(&frames)
            .unwrap_or_else(|e| panic!("commit: {e}"));
        mine.extend(rows);
    }
    let _ = store
        .commit(&[frame(
            999,
            IMEI,
            vec![
                archive(record_at(Some(5000), None)),
                archive(record_at(None, None)),
            ],
        )])
        .unwrap_or_else(|e| panic!("commit: {e}"));
    mine
}

fn records_page_through_a_range_exactly_once_ordered_by_event_time_then_id(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let stored = tied_records(&mut store, 20);
    let reader = reader(&db);
    let (from, to) = (T0 + 3, T0 + 17);
    let expected: BTreeSet<u32> = stored
        .iter()
        .filter(|r| (from..to).contains(&r.event_time.unwrap()))
        .map(|r| r.record_index.unwrap())
        .collect();
    assert_eq!(expected.len(), 14 * 3);

    let whole = reader.records(IMEI, &range(from, to, 1000)).unwrap();
    assert_eq!(whole.len(), expected.len());
    for limit in [1, 2, 3, 4, 5, 7, 41, 42, 43] {
        let (rows, pages) = all_pages(
            limit,
            |after| {
                reader
                    .records(
                        IMEI,
                        &PageQuery {
                            after,
                            ..range(from, to, limit)
                        },
                    )
                    .unwrap()
            },
            |r| Cursor {
                key: r.row.event_time.unwrap(),
                id: r.id,
            },
        );
        assert_eq!(pages, expected.len() / limit as usize + 1, "limit {limit}");
        let cursors: Vec<Cursor> = rows
            .iter()
            .map(|r| Cursor {
                key: r.row.event_time.unwrap(),
                id: r.id,
            })
            .collect();
        assert_strictly_increasing(&cursors);
        let indexes: BTreeSet<u32> = rows.iter().map(|r| r.row.record_index.unwrap()).collect();
        assert_eq!(indexes.len(), rows.len(), "limit {limit}: a row repeated");
        assert_eq!(indexes, expected, "limit {limit}");
        assert_eq!(rows, whole, "limit {limit}: pages differ from one big page");
    }

    // Within a second, id order is the reverse of record index order here.
    let first_second: Vec<u32> = whole
        .iter()
        .take(3)
        .map(|r| r.row.record_index.unwrap())
        .collect();
    assert_eq!(first_second, [11, 10, 9]);

    // The values are the stored ones.
    let by_index = |i: u32| stored.iter().find(|r| r.record_index == Some(i)).unwrap();
    for r in &whole {
        assert_eq!(&r.row, by_index(r.row.record_index.unwrap()));
        assert_eq!(r.source, "archive");
        assert!(r.received_at_us >= T0 * 1_000_000);
    }
}

fn record_ranges_are_half_open_and_edge_cases_are_empty(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..5))]).unwrap();
    let reader = reader(&db);
    let times = |q: &PageQuery| -> Vec<i64> {
        reader
            .records(IMEI, q)
            .unwrap()
            .iter()
            .map(|r| r.row.event_time.unwrap())
            .collect()
    };
    assert_eq!(times(&range(T0 + 1, T0 + 3, 100)), [T0 + 1, T0 + 2]);
    assert_eq!(times(&range(T0 + 1, T0 + 2, 100)), [T0 + 1]);
    assert_eq!(times(&range(T0 + 1, T0 + 1, 100)), Vec::<i64>::new());
    assert_eq!(times(&range(T0 + 3, T0 + 1, 100)), Vec::<i64>::new());
    assert_eq!(times(&range(T0, T0 + 5, 0)), Vec::<i64>::new());
    assert_eq!(times(&range(i64::MIN, i64::MAX, 100)).len(), 5);

    let all = reader.records(IMEI, &range(T0, T0 + 5, 100)).unwrap();
    let after = |i: usize| Cursor {
        key: all[i].row.event_time.unwrap(),
        id: all[i].id,
    };
    // Strictly after the cursor, even when the cursor's key is the range start.
    let q = PageQuery {
        after: Some(after(0)),
        ..range(T0, T0 + 5, 100)
    };
    assert_eq!(times(&q), [T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
    // A cursor before the range does not widen it; one at its end leaves nothing.
    let q = PageQuery {
        after: Some(Cursor {
            key: T0 - 10,
            id: 0,
        }),
        ..range(T0 + 2, T0 + 5, 100)
    };
    assert_eq!(times(&q), [T0 + 2, T0 + 3, T0 + 4]);
    let q = PageQuery {
        after: Some(after(4)),
        ..range(T0, T0 + 5, 100)
    };
    assert_eq!(times(&q), Vec::<i64>::new());
    // Same key, smaller id than the stored row: the row still follows the cursor.
    let q = PageQuery {
        after: Some(Cursor {
            key: T0 + 2,
            id: all[2].id - 1,
        }),
        ..range(T0, T0 + 5, 100)
    };
    assert_eq!(times(&q), [T0 + 2, T0 + 3, T0 + 4]);
}

fn records_of_one_device_never_include_another_and_alarm_records_say_so(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store
        .commit(&[
            frame(1, IMEI, vec![archive(record(0)), alarm(7, record(1))]),
            frame(2, OTHER, archives(0..4)),
        ])
        .unwrap();
    let reader = reader(&db);
    let mine = reader.records(IMEI, &range(T0, T0 + 100, 100)).unwrap();
    let sources: Vec<&str> = mine.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["archive", "alarm"]);
    assert_eq!(
        reader
            .records(OTHER, &range(T0, T0 + 100, 100))
            .unwrap()
            .len(),
        4
    );
}

fn an_unknown_imei_gives_empty_pages_and_no_device(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut bad = frame(2, IMEI, Vec::new());
    bad.status = FrameStatus::Error;
    let _ = store
        .commit(&[frame(1, IMEI, vec![alarm(1, record(0))]), bad])
        .unwrap();
    let reader = reader(&db);
    let all = range(i64::MIN, i64::MAX, 100);
    assert!(reader.device("000000000000000").unwrap().is_none());
    assert!(!reader.device_exists("000000000000000").unwrap());
    assert!(reader.device_exists(IMEI).unwrap());
    assert!(reader.records("000000000000000", &all).unwrap().is_empty());
    assert!(reader.events("000000000000000", &all).unwrap().is_empty());
    assert!(
        reader
            .raw_frames(Some("000000000000000"), &all)
            .unwrap()
            .is_empty()
    );
    assert!(
        reader
            .decode_errors(Some("000000000000000"), &all)
            .unwrap()
            .is_empty()
    );
    // The known device has rows in each, so the emptiness above is the filter's doing.
    assert_eq!(reader.records(IMEI, &all).unwrap().len(), 1);
    assert_eq!(reader.events(IMEI, &all).unwrap().len(), 1);
    assert_eq!(reader.raw_frames(Some(IMEI), &all).unwrap().len(), 2);
    assert_eq!(reader.decode_errors(Some(IMEI), &all).unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Alarm events.
// ---------------------------------------------------------------------------------------------

fn events_page_by_event_time_then_id_and_skip_events_without_time(db: Db) {
    let mut store = db.open(Synchronous::Off);
    // Two events per second, the later-stored one with the lower event index.
    let mut records = Vec::new();
    for second in 0..6u32 {
        for k in [1u32, 0] {
            let index = second * 2 + k;
            records.push(alarm(
                100 - index,
                record_at(Some(index), Some(T0 + i64::from(second))),
            ));
        }
    }
    records.push(alarm(500, record_at(Some(500), None)));
    let _ = store
        .commit(&[
            frame(1, IMEI, records),
            frame(2, OTHER, vec![alarm(1, record(0))]),
        ])
        .unwrap();
    let reader = reader(&db);
    let (events, pages) = all_pages(
        5,
        |after| {
            reader
                .events(
                    IMEI,
                    &PageQuery {
                        after,
                        ..range(T0, T0 + 6, 5)
                    },
                )
                .unwrap()
        },
        |e| Cursor {
            key: e.event_time.unwrap(),
            id: e.id,
        },
    );
    assert_eq!(pages, 3);
    assert_eq!(events.len(), 12);
    let cursors: Vec<Cursor> = events
        .iter()
        .map(|e| Cursor {
            key: e.event_time.unwrap(),
            id: e.id,
        })
        .collect();
    assert_strictly_increasing(&cursors);
    let first = &events[0];
    assert_eq!(first.record_index, Some(1));
    assert_eq!(first.event_index, 99);
    assert_eq!(first.event_code, Some(0x1234));
    assert_eq!(first.latitude, record(1).latitude);
    assert_eq!(first.longitude, record(1).longitude);
    let frame_id = reader
        .raw_frames(Some(IMEI), &range(i64::MIN, i64::MAX, 10))
        .unwrap()[0]
        .id;
    assert_eq!(first.frame_id, frame_id);
    assert_eq!(first.received_at_us, T0 * 1_000_000 + 1);
    // Half-open: the last second is outside [T0, T0 + 5).
    assert_eq!(
        reader.events(IMEI, &range(T0, T0 + 5, 100)).unwrap().len(),
        10
    );
}

// ---------------------------------------------------------------------------------------------
// Raw frames and decode errors.
// ---------------------------------------------------------------------------------------------

/// Frames of `IMEI` and `OTHER` and device-less garbage, several sharing a receive time, some
/// of them errors. Returns the receive-time base.
fn mixed_frames(store: &mut Store) -> i64 {
    let base = T0 * 1_000_000;
    let mut frames = Vec::new();
    for n in 0..24u64 {
        // Receive times repeat in threes: ties on the key.
        let at = base + (n as i64 / 3) * 10;
        let mut f = match n % 4 {
            0 | 1 => frame_at(n, IMEI, at),
            2 => frame_at(n, OTHER, at),
            _ => {
                let mut g = frame_at(n, IMEI, at);
                g.imei = None;
                g.kind = Arc::from("garbage");
                g.status = FrameStatus::Garbage;
                g.error_reason = Some("sync_lost");
                g.layout = None;
                g
            }
        };
        if n % 5 == 0 && f.status == FrameStatus::Ok {
            f.status = FrameStatus::Error;
            f.error_reason = Some("crc");
            f.error = Some(format!("bad crc in frame {n}"));
        }
        f.conn_id = 100 + n;
        f.bytes = vec![0x7e, n as u8, 0xff];
        frames.push(f);
    }
    // Commit out of receive-time order so that ids and times disagree.
    frames.reverse();
    for half in frames.chunks(12) {
        let _ = store.commit(half).unwrap_or_else(|e| panic!("commit: {e}"));
    }
    base
}

fn raw_frames_page_by_receive_time_then_id_with_an_optional_device_filter(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let base = mixed_frames(&mut store);
    let reader = reader(&db);
    let (from, to) = (base, base + 80);
    let cursor = |f: &svoi_store::RawFrameInfo| Cursor {
        key: f.received_at_us,
        id: f.id,
    };
    let whole = reader.raw_frames(None, &range(from, to, 1000)).unwrap();
    // Receive times base, base + 10, ..., base + 70: 8 groups of 3.
    assert_eq!(whole.len(), 24);
    for imei in [None, Some(IMEI), Some(OTHER)] {
        for limit in [1, 2, 3, 5, 24] {
            let (rows, _) = all_pages(
                limit,
                |after| {
                    reader
                        .raw_frames(
                            imei,
                            &PageQuery {
                                after,
                                ..range(from, to, limit)
                            },
                        )
                        .unwrap()
                },
                cursor,
            );
            let cursors: Vec<Cursor> = rows.iter().map(cursor).collect();
            assert_strictly_increasing(&cursors);
            let expected: Vec<_> = whole
                .iter()
                .filter(|f| imei.is_none() || f.imei.as_deref() == imei)
                .cloned()
                .collect();
            assert_eq!(rows, expected, "{imei:?} limit {limit}");
        }
    }
    let mine = reader
        .raw_frames(Some(IMEI), &range(from, to, 100))
        .unwrap();
    assert_eq!(mine.len(), 12);
    assert_eq!(
        reader
            .raw_frames(Some(OTHER), &range(from, to, 100))
            .unwrap()
            .len(),
        6
    );
    // The key range is half-open in microseconds.
    assert_eq!(
        reader
            .raw_frames(None, &range(base + 10, base + 20, 100))
            .unwrap()
            .len(),
        3
    );

    let garbage: Vec<_> = whole.iter().filter(|f| f.imei.is_none()).collect();
    assert_eq!(garbage.len(), 6);
    let g = garbage[0];
    assert_eq!(
        (g.kind.as_str(), g.status, g.error_reason.as_deref()),
        ("garbage", FrameStatus::Garbage, Some("sync_lost"))
    );
    let n = (g.conn_id - 100) as u8;
    assert_eq!(g.bytes, [0x7e, n, 0xff]);
    assert_eq!(g.received_at_us, base + i64::from(n / 3) * 10);
    let errors: Vec<_> = whole
        .iter()
        .filter(|f| f.status == FrameStatus::Error)
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let e = errors[0];
    assert_eq!(e.kind, "~A");
    assert_eq!(e.error_reason.as_deref(), Some("crc"));
    assert_eq!(
        e.error.as_deref(),
        Some(format!("bad crc in frame {}", e.conn_id - 100).as_str())
    );
}

fn decode_errors_page_by_receive_time_then_id_with_frame_kind_and_device(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let base = mixed_frames(&mut store);
    let reader = reader(&db);
    let frames = reader
        .raw_frames(None, &range(base, base + 80, 100))
        .unwrap();
    let cursor = |e: &svoi_store::DecodeErrorInfo| Cursor {
        key: e.received_at_us,
        id: e.id,
    };
    let whole = reader
        .decode_errors(None, &range(base, base + 80, 100))
        .unwrap();
    // Six garbage frames and four crc errors (frames 0, 5, 20 of IMEI, 10 of OTHER).
    assert_eq!(whole.len(), 10);
    for imei in [None, Some(IMEI), Some(OTHER)] {
        for limit in [1, 2, 4] {
            let (rows, _) = all_pages(
                limit,
                |after| {
                    reader
                        .decode_errors(
                            imei,
                            &PageQuery {
                                after,
                                ..range(base, base + 80, limit)
                            },
                        )
                        .unwrap()
                },
                cursor,
            );
            let cursors: Vec<Cursor> = rows.iter().map(cursor).collect();
            assert_strictly_increasing(&cursors);
            let expected: Vec<_> = whole
                .iter()
                .filter(|e| imei.is_none() || e.imei.as_deref() == imei)
                .cloned()
                .collect();
            assert_eq!(rows, expected, "{imei:?} limit {limit}");
        }
    }
    for e in &whole {
        let f = frames.iter().find(|f| f.id == e.frame_id).unwrap();
        assert_eq!(e.kind, f.kind);
        assert_eq!(e.imei, f.imei);
        assert_eq!(e.received_at_us, f.received_at_us);
        assert_eq!(e.reason, f.error_reason);
        assert_eq!(e.error, f.error);
    }
    assert_eq!(
        reader
            .decode_errors(Some(IMEI), &range(base, base + 80, 100))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        reader
            .decode_errors(Some(OTHER), &range(base, base + 80, 100))
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Devices.
// ---------------------------------------------------------------------------------------------

fn devices_page_by_imei_with_the_newest_valid_fix_as_last_position(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let newest_valid = record_at(Some(10), Some(T0 + 10));
    let mut invalid = record_at(Some(12), Some(T0 + 12));
    invalid.valid = Some(false);
    let mut no_longitude = record_at(Some(11), Some(T0 + 11));
    no_longitude.longitude = None;
    let mut no_time = record_at(Some(13), None);
    no_time.latitude = Some(1.0);
    let mut unknown_validity = record_at(Some(14), Some(T0 + 14));
    unknown_validity.valid = None;
    let _ = store
        .commit(&[frame(
            1,
            IMEI,
            vec![
                archive(record(3)),
                archive(newest_valid.clone()),
                archive(invalid),
                archive(no_longitude),
                archive(no_time),
                archive(unknown_validity),
            ],
        )])
        .unwrap();
    // Stored later, but older by event time: not the last position.
    let _ = store.commit(&[frame(2, IMEI, archives(4..6))]).unwrap();
    let _ = store.commit(&[frame(3, OTHER, archives(0..2))]).unwrap();
    let mut hello = frame(4, THIRD, Vec::new());
    hello.kind = Arc::from("*>S");
    let _ = store.commit(&[hello]).unwrap();

    let reader = reader(&db);
    // IMEI < THIRD < OTHER.
    let first = reader.devices(None, 2).unwrap();
    let second = reader.devices(Some(&first[1].imei), 2).unwrap();
    let devices: Vec<_> = first.into_iter().chain(second).collect();
    let imeis: Vec<&str> = devices.iter().map(|d| d.imei.as_str()).collect();
    assert_eq!(imeis, [IMEI, THIRD, OTHER]);
    assert_eq!(reader.devices(Some(OTHER), 10).unwrap(), []);
    assert_eq!(reader.devices(None, 0).unwrap(), []);
    assert_eq!(reader.devices(Some(""), 1).unwrap()[0].imei, IMEI);

    let mine = &devices[0];
    let position = mine.last_position.as_ref().unwrap();
    assert_eq!(position.event_time, T0 + 10);
    assert_eq!(Some(position.latitude), newest_valid.latitude);
    assert_eq!(Some(position.longitude), newest_valid.longitude);
    assert_eq!(position.speed_kmh, newest_valid.speed_kmh);
    assert_eq!(mine.first_seen_us, T0 * 1_000_000 + 1);
    assert_eq!(mine.last_seen_us, T0 * 1_000_000 + 2);
    assert_eq!(mine.device_id, None);
    assert_eq!(
        devices[2].last_position.as_ref().unwrap().event_time,
        T0 + 1
    );
    assert_eq!(devices[1].last_position, None);
    // The detail agrees with the list.
    assert_eq!(&reader.device(IMEI).unwrap().unwrap().summary, mine);
}

fn device_detail_has_the_negotiated_layout_parsed_fields_and_record_count(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let mut handshake = frame(1, IMEI, Vec::new());
    handshake.kind = Arc::from("*>S");
    handshake.device = Some(DeviceUpdate {
        device_id: 4242,
        layout: None,
        fields: None,
    });
    let mut negotiation = frame(2, IMEI, Vec::new());
    negotiation.kind = Arc::from("*>FLEX");
    negotiation.device = Some(DeviceUpdate {
        device_id: 4242,
        layout: Some(layout()),
        fields: Some(vec![1, 2, 3, 8, 9, 255]),
    });
    let negotiated_at = negotiation.received_at_us;
    let _ = store
        .commit(&[handshake, negotiation, frame(3, IMEI, archives(0..4))])
        .unwrap();
    // A resend is not a second row.
    let _ = store.commit(&[frame(4, IMEI, archives(2..6))]).unwrap();
    let mut bare = frame(5, OTHER, Vec::new());
    bare.device = Some(DeviceUpdate {
        device_id: 7,
        layout: None,
        fields: None,
    });
    let _ = store.commit(&[bare]).unwrap();

    let reader = reader(&db);
    let detail = reader.device(IMEI).unwrap().unwrap();
    let l = layout();
    assert_eq!(detail.summary.imei, IMEI);
    assert_eq!(detail.summary.device_id, Some(4242));
    assert_eq!(detail.summary.first_seen_us, T0 * 1_000_000 + 1);
    assert_eq!(detail.summary.last_seen_us, T0 * 1_000_000 + 4);
    assert_eq!(detail.summary.last_position.unwrap().event_time, T0 + 5);
    assert_eq!(detail.protocol_version, Some(l.protocol_version));
    assert_eq!(detail.struct_version, Some(l.struct_version));
    assert_eq!(detail.data_size, Some(l.data_size));
    assert_eq!(detail.mask.as_deref(), Some(l.mask.as_slice()));
    assert_eq!(detail.fields, Some(vec![1, 2, 3, 8, 9, 255]));
    assert_eq!(detail.negotiated_at_us, Some(negotiated_at));
    assert_eq!(detail.records, 6);

    let other = reader.device(OTHER).unwrap().unwrap();
    assert_eq!(other.summary.device_id, Some(7));
    assert_eq!(other.summary.last_position, None);
    assert_eq!(
        (
            other.protocol_version,
            other.struct_version,
            other.data_size,
            other.mask,
            other.fields,
            other.negotiated_at_us,
            other.records
        ),
        (None, None, None, None, None, None, 0)
    );
}

fn a_device_with_an_unreadable_field_list_is_reported_as_corrupt(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, Vec::new())]).unwrap();
    db.exec("UPDATE devices SET fields = '[1,x]'");
    match reader(&db).device(IMEI) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().contains("[1,x]"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn a_frame_with_a_negative_connection_id_is_reported_as_corrupt(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, Vec::new())]).unwrap();
    let reader = reader(&db);
    let all = range(i64::MIN, i64::MAX, 10);
    assert_eq!(reader.raw_frames(None, &all).unwrap()[0].conn_id, 7);
    db.exec("UPDATE raw_frames SET conn_id = -1");
    match reader.raw_frames(Some(IMEI), &all) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().ends_with("has conn_id -1"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens.
// ---------------------------------------------------------------------------------------------

fn new_token(id: &str, name: &str, scope: TokenScope) -> NewToken {
    NewToken {
        id: id.to_owned(),
        name: name.to_owned(),
        scope,
        secret_sha256: [id.as_bytes()[0]; 32],
    }
}

fn tokens_are_created_listed_revoked_and_recreated(db: Db) {
    let mut store = db.open(Synchronous::Off);
    assert_eq!(store.tokens().unwrap(), []);
    store
        .create_token(&new_token("a1", "ops", TokenScope::Admin))
        .unwrap();
    store
        .create_token(&new_token("b2", "grafana", TokenScope::Read))
        .unwrap();

    let listed = store.tokens().unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a1", "b2"]);
    assert!(listed[0].created_at_us <= listed[1].created_at_us);
    assert_eq!(listed[0].name, "ops");
    assert_eq!(listed[0].scope, TokenScope::Admin);
    assert_eq!(listed[0].secret_sha256, [b'a'; 32]);
    assert_eq!(listed[0].revoked_at_us, None);
    assert!(listed[0].created_at_us > T0 * 1_000_000, "{listed:?}");

    let reader = reader(&db);
    assert_eq!(reader.token("b2").unwrap().as_ref(), Some(&listed[1]));
    assert_eq!(reader.token("zz").unwrap(), None);

    // A second active token of the same name is refused, with nothing stored.
    match store.create_token(&new_token("c3", "ops", TokenScope::Read)) {
        Err(e @ StoreError::TokenExists { .. }) => {
            assert_eq!(
                e.to_string(),
                r#"a token named "ops" exists: revoke it first"#
            );
            assert!(!e.is_retryable());
        }
        other => panic!("expected TokenExists, got {other:?}"),
    }
    assert_eq!(store.tokens().unwrap().len(), 2);

    assert!(store.revoke_token("ops").unwrap());
    assert!(!store.revoke_token("ops").unwrap(), "already revoked");
    assert!(!store.revoke_token("nobody").unwrap());
    let revoked = reader.token("a1").unwrap().unwrap();
    let revoked_at = revoked.revoked_at_us.unwrap();
    assert!(revoked_at >= revoked.created_at_us);

    // The name is free again; the revoked token stays listed and stays revoked.
    store
        .create_token(&new_token("c3", "ops", TokenScope::Read))
        .unwrap();
    let listed = store.tokens().unwrap();
    let rows: Vec<(&str, &str, Option<i64>)> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str(), t.revoked_at_us))
        .collect();
    assert_eq!(
        rows,
        [
            ("a1", "ops", Some(revoked_at)),
            ("b2", "grafana", None),
            ("c3", "ops", None)
        ]
    );
    assert!(store.revoke_token("ops").unwrap());
    assert_eq!(
        reader.token("a1").unwrap().unwrap().revoked_at_us,
        Some(revoked_at),
        "revoking again leaves an already revoked token alone"
    );
}

fn token_ids_are_never_reused_and_empty_names_are_refused(db: Db) {
    let mut store = db.open(Synchronous::Off);
    store
        .create_token(&new_token("a1", "ops", TokenScope::Admin))
        .unwrap();
    assert!(store.revoke_token("ops").unwrap());
    for bad in [
        new_token("a1", "other", TokenScope::Read),
        new_token("a1", "ops", TokenScope::Read),
    ] {
        match store.create_token(&bad) {
            Err(e @ StoreError::Invalid(_)) => {
                assert!(e.to_string().contains(r#"id "a1""#), "{e}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    let mut empty = new_token("x", "", TokenScope::Read);
    assert!(matches!(
        store.create_token(&empty),
        Err(StoreError::Invalid(_))
    ));
    empty.name = "n".into();
    empty.id = String::new();
    assert!(matches!(
        store.create_token(&empty),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.tokens().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Opening, schema checks, visibility, size.
// ---------------------------------------------------------------------------------------------

#[test]
fn sqlite_reader_refuses_a_missing_file_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svoi.db");
    match Reader::open(&DbUrl::Sqlite(path.clone()), &StoreOptions::default(), 1) {
        Err(e @ StoreError::File { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("cannot read "), "{msg}");
            assert!(msg.contains("svoi.db"), "{msg}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected File, got {other:?}"),
    }
    assert!(!path.exists());
}

fn reader_refuses_zero_connections(db: Db) {
    let _store = db.open(Synchronous::Off);
    assert!(matches!(
        Reader::open(&db.store_url(), &StoreOptions::default(), 0),
        Err(StoreError::Invalid(_))
    ));
}

fn reader_refuses_an_unmigrated_database(db: Db) {
    // PostgreSQL: the fresh database as created; SQLite needs a table for a file to exist.
    if !db.is_postgres() {
        db.exec("CREATE TABLE unrelated (x INTEGER)");
    }
    match Reader::open(&db.store_url(), &StoreOptions::default(), 1) {
        Err(e @ StoreError::SchemaMismatch { found: 0, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("schema version 0 is older"), "{msg}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
}

fn reader_refuses_an_older_schema_and_a_newer_one(db: Db) {
    drop(db.open(Synchronous::Off));
    let known = latest_schema_version();
    db.exec(&format!(
        "DELETE FROM schema_migrations WHERE version = {known}"
    ));
    match Reader::open(&db.store_url(), &StoreOptions::default(), 2) {
        Err(StoreError::SchemaMismatch { found, known: k }) => {
            assert_eq!((found, k), (known - 1, known));
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    db.exec(&format!(
        "INSERT INTO schema_migrations (version, applied_at)
         VALUES ({known}, '2024-01-01T00:00:00Z'), ({}, '2024-01-02T00:00:00Z')",
        known + 1
    ));
    match Reader::open(&db.store_url(), &StoreOptions::default(), 2) {
        Err(StoreError::SchemaTooNew { found, .. }) => assert_eq!(found, known + 1),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    db.exec(&format!(
        "DELETE FROM schema_migrations WHERE version = {}",
        known + 1
    ));
    assert!(Reader::open(&db.store_url(), &StoreOptions::default(), 2).is_ok());
}

fn reader_sees_what_a_store_commits_on_another_connection(db: Db) {
    let mut store = db.open(Synchronous::Full);
    let reader = reader(&db);
    let all = range(i64::MIN, i64::MAX, 1000);
    assert!(reader.records(IMEI, &all).unwrap().is_empty());
    assert!(reader.devices(None, 10).unwrap().is_empty());

    let _ = store.commit(&[frame(1, IMEI, archives(0..3))]).unwrap();
    assert_eq!(reader.records(IMEI, &all).unwrap().len(), 3);
    let _ = store.commit(&[frame(2, IMEI, archives(3..5))]).unwrap();
    // Every pooled connection sees the new commit, not a snapshot of an earlier one.
    for _ in 0..4 {
        assert_eq!(reader.records(IMEI, &all).unwrap().len(), 5);
        assert_eq!(reader.device(IMEI).unwrap().unwrap().records, 5);
    }
    // Clones share the pool and read from several threads at once.
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let reader = reader.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    assert_eq!(
                        reader
                            .records(IMEI, &range(i64::MIN, i64::MAX, 1000))
                            .unwrap()
                            .len(),
                        5
                    );
                    reader.ping().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store
        .create_token(&new_token("t1", "ops", TokenScope::Read))
        .unwrap();
    assert!(reader.token("t1").unwrap().is_some());
}

fn reader_opens_a_closed_database_and_follows_a_store_opened_later(db: Db) {
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..2))]).unwrap();
    // SQLite: the last connection to close checkpoints and removes the WAL.
    drop(store);
    let reader = reader(&db);
    let all = range(i64::MIN, i64::MAX, 1000);
    assert_eq!(reader.records(IMEI, &all).unwrap().len(), 2);
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(2, IMEI, archives(2..4))]).unwrap();
    assert_eq!(reader.records(IMEI, &all).unwrap().len(), 4);
}

#[test]
fn sqlite_ping_and_database_size_report_on_the_files() {
    let db = Db::sqlite();
    let Db::Sqlite(dir) = &db else {
        unreachable!("an sqlite db")
    };
    let mut store = db.open(Synchronous::Off);
    let reader = reader(&db);
    reader.ping().unwrap();
    let _ = store.commit(&[frame(1, IMEI, archives(0..50))]).unwrap();
    let size = reader.database_size().unwrap();
    assert!(size.file_bytes > 0, "{size:?}");
    assert_eq!(
        size.file_bytes,
        std::fs::metadata(dir.path().join("svoi.db")).unwrap().len()
    );
    // The store is open and has committed without a checkpoint: the log holds the commit.
    assert!(size.wal_bytes > 0, "{size:?}");
    assert_eq!(
        size.wal_bytes,
        std::fs::metadata(dir.path().join("svoi.db-wal"))
            .unwrap()
            .len()
    );
}

backends!(
    records_page_through_a_range_exactly_once_ordered_by_event_time_then_id,
    record_ranges_are_half_open_and_edge_cases_are_empty,
    records_of_one_device_never_include_another_and_alarm_records_say_so,
    an_unknown_imei_gives_empty_pages_and_no_device,
    events_page_by_event_time_then_id_and_skip_events_without_time,
    raw_frames_page_by_receive_time_then_id_with_an_optional_device_filter,
    decode_errors_page_by_receive_time_then_id_with_frame_kind_and_device,
    devices_page_by_imei_with_the_newest_valid_fix_as_last_position,
    device_detail_has_the_negotiated_layout_parsed_fields_and_record_count,
    a_device_with_an_unreadable_field_list_is_reported_as_corrupt,
    a_frame_with_a_negative_connection_id_is_reported_as_corrupt,
    tokens_are_created_listed_revoked_and_recreated,
    token_ids_are_never_reused_and_empty_names_are_refused,
    reader_refuses_zero_connections,
    reader_refuses_an_unmigrated_database,
    reader_refuses_an_older_schema_and_a_newer_one,
    reader_sees_what_a_store_commits_on_another_connection,
    reader_opens_a_closed_database_and_follows_a_store_opened_later,
);

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: the pool against a server that closes, blocks or refuses connections.
// ---------------------------------------------------------------------------------------------

/// The test database of a PostgreSQL fixture.
fn test_db(db: &Db) -> &svoi_testpg::TestDb {
    match db {
        Db::Postgres(pg) => pg,
        Db::Sqlite(_) => unreachable!("a postgres fixture"),
    }
}

/// Options with a short wait for a pooled connection and a short connect timeout.
fn quick(busy_timeout: Duration) -> StoreOptions {
    StoreOptions {
        busy_timeout,
        postgres: PgOptions {
            connect_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// Polls `check` until it holds; panics naming `what` after ten seconds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Terminates every other connection to the test database; returns how many.
fn kill_connections(db: &Db) -> usize {
    db.rows(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .len()
}

#[test]
fn postgres_reader_reconnects_after_the_server_closed_its_connections() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..3))]).unwrap();
    drop(store);
    let reader = Reader::open(&db.store_url(), &quick(Duration::from_secs(5)), 2).unwrap();
    let all = range(i64::MIN, i64::MAX, 100);
    // Each round kills the connections at once, before the client may have noticed: the
    // first read after it may fail (retryable) or reconnect at once; the next one succeeds.
    for round in 0..20 {
        assert_eq!(
            reader.records(IMEI, &all).unwrap().len(),
            3,
            "round {round}"
        );
        assert!(
            kill_connections(&db) >= 1,
            "round {round}: no reader connection"
        );
        match reader.records(IMEI, &all) {
            Ok(rows) => assert_eq!(rows.len(), 3, "round {round}"),
            Err(e) => assert!(e.is_retryable(), "round {round}: {e:?}"),
        }
        assert_eq!(
            reader.records(IMEI, &all).unwrap().len(),
            3,
            "round {round}"
        );
    }
    // The same after the client saw the connection close: no failure at all.
    assert!(kill_connections(&db) >= 1);
    wait_until("the connection to close", || {
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'svoi'",
        ) == "0"
    });
    std::thread::sleep(Duration::from_millis(100));
    reader.ping().unwrap();
    assert_eq!(reader.devices(None, 10).unwrap().len(), 1);
    assert_eq!(reader.device(IMEI).unwrap().unwrap().records, 3);
}

#[test]
fn postgres_a_failed_reconnect_is_retryable_and_the_next_call_tries_again() {
    let db = Db::postgres();
    drop(db.open(Synchronous::Off));
    let name = test_db(&db).name().to_owned();
    let reader = Reader::open(&db.store_url(), &quick(Duration::from_secs(5)), 1).unwrap();
    reader.ping().unwrap();
    // Refuse new connections to the database, then close the reader's.
    let admin = svoi_testpg::shared();
    let _ = admin.psql(
        "postgres",
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
    );
    let killed = admin.psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = '{name}'"
        ),
    );
    assert_eq!(killed, "1");
    let mut last = None;
    for _ in 0..3 {
        match reader.ping() {
            Ok(()) => panic!("a read succeeded while the database refuses connections"),
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                last = Some(e);
            }
        }
    }
    // The last attempts were reconnects, each refused: the slot stays empty, nothing waits.
    let last = last.unwrap().to_string();
    assert!(
        last.contains("not currently accepting connections"),
        "{last}"
    );
    let _ = admin.psql(
        "postgres",
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    );
    reader.ping().unwrap();
    assert!(reader.devices(None, 10).unwrap().is_empty());
}

#[test]
fn postgres_readers_busy_when_every_connection_is_leased() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..2))]).unwrap();
    drop(store);
    let wait = Duration::from_millis(300);
    let reader = Reader::open(&db.store_url(), &quick(wait), 2).unwrap();
    let pg = test_db(&db);
    let locked = "SELECT count(*) FROM pg_locks
                  WHERE relation = 'devices'::regclass AND mode = 'AccessExclusiveLock'
                    AND granted";
    std::thread::scope(|s| {
        // A transaction of the test's own locks `devices` until it is terminated below.
        let locker = s.spawn(|| {
            pg.try_psql(
                "BEGIN; LOCK TABLE devices IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT",
            )
        });
        wait_until("the lock", || db.scalar(locked) == "1");
        // Two reads wait for the lock, each holding one of the two connections.
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| reader.device_exists(IMEI)))
            .collect();
        wait_until("both reads to wait for the lock", || {
            db.scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ) == "2"
        });
        let started = Instant::now();
        match reader.ping() {
            Err(e @ StoreError::ReadersBusy { waited }) => {
                assert_eq!(waited, wait);
                assert!(e.is_retryable());
                assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
            }
            other => panic!("expected ReadersBusy, got {other:?}"),
        }
        let _ = db.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE relation = 'devices'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        );
        for r in readers {
            assert!(r.join().unwrap().unwrap());
        }
        assert!(locker.join().unwrap().is_err(), "the locker was terminated");
    });
    reader.ping().unwrap();
}

#[test]
fn postgres_reader_on_an_unreachable_server_is_a_retryable_error() {
    // Port 1 on the loopback: nothing listens, the connection is refused.
    let url: DbUrl = "postgres://postgres@127.0.0.1:1/svoi".parse().unwrap();
    let err = Reader::open(&url, &quick(Duration::from_secs(1)), 2).unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(err, StoreError::Postgres(_)), "{err:?}");
}

#[test]
fn postgres_database_size_is_the_database_size_without_a_log() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..50))]).unwrap();
    let reader = reader(&db);
    let sql = "SELECT pg_database_size(current_database())";
    let before: u64 = db.scalar(sql).parse().unwrap();
    let size = reader.database_size().unwrap();
    let after: u64 = db.scalar(sql).parse().unwrap();
    assert!(size.file_bytes > 0, "{size:?}");
    assert!(
        (before.min(after)..=before.max(after)).contains(&size.file_bytes),
        "{size:?} vs {before}..{after}"
    );
    assert_eq!(size.wal_bytes, 0);
}

#[test]
fn postgres_values_out_of_their_rust_range_are_reported_as_corrupt() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let _ = store
        .commit(&[frame(1, IMEI, vec![alarm(3, record(0))])])
        .unwrap();
    let reader = reader(&db);
    let all = range(i64::MIN, i64::MAX, 10);
    let id = reader.records(IMEI, &all).unwrap()[0].id;
    db.exec("UPDATE records SET satellites = 300");
    match reader.records(IMEI, &all) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert_eq!(
                e.to_string(),
                format!("unexpected stored data: record {id} has satellites 300")
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    db.exec("UPDATE alarm_events SET event_index = -1");
    match reader.events(IMEI, &all) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().ends_with("has event_index -1"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    db.exec("UPDATE devices SET device_id = 4294967296");
    match reader.devices(None, 10) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(
                e.to_string()
                    .ends_with(&format!("device {IMEI} has device_id 4294967296")),
                "{e}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
