//! PostgreSQL-only tests of the store: monthly partitions (created around now, on demand for a
//! backfill, the default partition for the rest and moving rows out of it), several servers
//! sharing one database (concurrent commits of overlapping keys, concurrent migrations), and
//! failures (a killed connection, a statement timeout, an unreachable server) that must be
//! retryable and lose or double nothing.

// The test bodies are plain functions run by `backends!` or threads, outside `#[test]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use jiff::civil::Time;
use jiff::tz::Offset;
use jiff::{Span, Timestamp};
use svoi_store::{
    DbUrl, FrameFilter, PgOptions, RecordsVia, Store, StoreError, StoreOptions, Synchronous,
    latest_schema_version,
};

/// A calendar month relative to the current one.
struct Month {
    /// Partition name suffix, `yYYYYmMM`.
    suffix: String,
    /// Start, Unix seconds.
    lo: i64,
    /// Start of the next month, Unix seconds.
    hi: i64,
}

/// The month `offset` months from now (UTC).
fn month(offset: i32) -> Month {
    let today = Offset::UTC.to_datetime(Timestamp::now()).date();
    let first = today
        .first_of_month()
        .checked_add(Span::new().months(offset))
        .unwrap();
    let next = first.checked_add(Span::new().months(1)).unwrap();
    let start = |d: jiff::civil::Date| {
        Offset::UTC
            .to_timestamp(d.to_datetime(Time::midnight()))
            .unwrap()
            .as_second()
    };
    Month {
        suffix: format!("y{:04}m{:02}", first.year(), first.month()),
        lo: start(first),
        hi: start(next),
    }
}

/// The partitions of `table` with their bounds, sorted by name.
fn partitions(db: &Db, table: &str) -> Vec<String> {
    db.rows(&format!(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = '{table}'::regclass ORDER BY c.relname"
    ))
}

/// Where the records are: `partition|count` rows.
fn placement(db: &Db) -> Vec<String> {
    db.rows("SELECT tableoid::regclass::text, count(*) FROM records GROUP BY 1 ORDER BY 1")
}

/// Archive records with indexes from `first` at times from `t`, one second apart.
fn records_at(first: u32, count: u32, t: i64) -> Vec<svoi_store::DecodedRecord> {
    (first..first + count)
        .map(|i| archive(record_at(Some(i), Some(t + i64::from(i)))))
        .collect()
}

fn options(statement_timeout: Duration) -> StoreOptions {
    options_via(statement_timeout, RecordsVia::default())
}

fn options_via(statement_timeout: Duration, records_via: RecordsVia) -> StoreOptions {
    StoreOptions {
        synchronous: Synchronous::Off,
        postgres: PgOptions {
            connect_timeout: Duration::from_secs(2),
            statement_timeout,
            records_via,
            application_name: None,
        },
        ..StoreOptions::default()
    }
}

/// Both ways of writing records, `unnest` first.
const VIAS: [RecordsVia; 2] = [RecordsVia::Unnest, RecordsVia::Copy];

/// Terminates every other connection to the test database; returns how many.
fn kill_connections(db: &Db) -> usize {
    db.rows(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .len()
}

/// Makes an insert of a record with index 999 sleep `seconds` (PL/pgSQL, per row).
fn slow_trigger(db: &Db, seconds: f64) {
    db.exec(&format!(
        "CREATE FUNCTION slow_999() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.record_index = 999 THEN PERFORM pg_sleep({seconds}); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow_999 BEFORE INSERT ON records
             FOR EACH ROW EXECUTE FUNCTION slow_999();"
    ));
}

// ---------------------------------------------------------------------------------------------
// Partitions.
// ---------------------------------------------------------------------------------------------

#[test]
fn open_creates_partitions_for_the_previous_current_and_next_two_months() {
    let db = Db::postgres();
    let _store = db.open(Synchronous::Off);
    for (table, per_second) in [("records", 1), ("raw_frames", 1_000_000)] {
        let mut expected: Vec<String> = (-1..=2)
            .map(|offset| {
                let m = month(offset);
                format!(
                    "{table}_{}|FOR VALUES FROM ('{}') TO ('{}')",
                    m.suffix,
                    m.lo * per_second,
                    m.hi * per_second
                )
            })
            .collect();
        expected.push(format!("{table}_default|DEFAULT"));
        expected.sort();
        assert_eq!(partitions(&db, table), expected);
    }
    // Reopening creates nothing new.
    drop(db.open(Synchronous::Off));
    assert_eq!(partitions(&db, "records").len(), 5);
}

#[test]
fn a_commit_five_months_back_creates_that_months_partition() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let m = month(-5);
    let name = format!("records_{}", m.suffix);
    assert_eq!(db.scalar(&format!("SELECT to_regclass('{name}')")), "NULL");
    let mut f = frame(1, IMEI, records_at(0, 3, m.lo + 86_400));
    f.received_at_us = Timestamp::now().as_microsecond();
    let receipt = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!(receipt.stats().records, 3);
    assert_eq!(placement(&db), [format!("{name}|3")]);
    assert_eq!(
        db.rows("SELECT tableoid::regclass::text FROM raw_frames"),
        [format!("raw_frames_{}", month(0).suffix)]
    );
    f.seq = 2;
    let again = store.commit(&[f]).unwrap();
    assert_eq!((again.stats().records, again.stats().duplicates), (0, 3));
    assert_eq!(placement(&db), [format!("{name}|3")]);
}

#[test]
fn a_record_outside_the_backfill_window_goes_to_default_and_moves_to_a_later_partition() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let old = month(-36);
    let older = month(-40);
    let name = format!("records_{}", old.suffix);
    let mut rows = records_at(0, 3, old.lo + 3_600);
    rows.extend(records_at(10, 1, older.lo + 3_600));
    let f = frame(1, IMEI, rows);
    let _ = store.commit(std::slice::from_ref(&f)).unwrap();
    assert_eq!(placement(&db), ["records_default|4"]);
    assert_eq!(db.scalar(&format!("SELECT to_regclass('{name}')")), "NULL");

    let ensure = format!(
        "SELECT svoi_ensure_partition('records', '{}', {}, {})",
        old.suffix, old.lo, old.hi
    );
    assert_eq!(db.scalar(&ensure), "true");
    assert_eq!(db.scalar(&ensure), "false", "a second call finds it");
    assert_eq!(
        placement(&db),
        ["records_default|1".to_owned(), format!("{name}|3")]
    );
    assert_eq!(store.counts().unwrap().records, 4);

    // Deduplication still meets the moved rows, through the store's prepared statements.
    let mut again = f.clone();
    again.seq = 2;
    let receipt = store.commit(&[again]).unwrap();
    assert_eq!(
        (receipt.stats().records, receipt.stats().duplicates),
        (0, 4)
    );
    let more = store
        .commit(&[frame(3, IMEI, records_at(3, 1, old.lo + 3_600))])
        .unwrap();
    assert_eq!(more.stats().records, 1);
    assert_eq!(
        placement(&db),
        ["records_default|1".to_owned(), format!("{name}|4")]
    );
}

#[test]
fn reprocess_puts_a_record_moved_to_another_month_in_its_partition() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let now = Timestamp::now().as_second();
    let _ = store
        .commit(&[frame(1, IMEI, records_at(1, 2, now))])
        .unwrap();
    let id = store
        .frames_for_reprocess(&FrameFilter::default(), 0, 10)
        .unwrap()[0]
        .id;
    let m = month(-7);
    let name = format!("records_{}", m.suffix);
    assert_eq!(db.scalar(&format!("SELECT to_regclass('{name}')")), "NULL");
    // Record 1 moves seven months back, record 2 changes in place.
    let mut rows = records_at(1, 1, m.lo + 60);
    let mut two = record_at(Some(2), Some(now + 2));
    two.speed_kmh = Some(1.5);
    rows.push(archive(two));
    let stats = store.reprocess(&[(id, frame(1, IMEI, rows))]).unwrap();
    assert_eq!(
        (
            stats.records_added,
            stats.records_removed,
            stats.records_changed
        ),
        (1, 1, 1)
    );
    assert_eq!(
        placement(&db),
        [
            format!("{name}|1"),
            format!("records_{}|1", month(0).suffix)
        ]
    );
    assert_eq!(
        db.scalar("SELECT speed_kmh FROM records WHERE record_index = 2"),
        "1.5"
    );
}

// ---------------------------------------------------------------------------------------------
// Several servers on one database.
// ---------------------------------------------------------------------------------------------

#[test]
fn two_stores_committing_overlapping_keys_at_once_store_each_key_once() {
    for via in VIAS {
        concurrent_commits(via);
    }
}

fn concurrent_commits(via: RecordsVia) {
    const ROUNDS: u32 = 20;
    const IMEIS: [&str; 3] = ["352093080000001", "352093080000002", "352093080000003"];
    let db = Db::postgres();
    drop(db.open(Synchronous::Off));
    let url = db.store_url();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let url = url.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut store =
                    Store::open(&url, &options_via(Duration::from_secs(10), via)).unwrap();
                barrier.wait();
                let (mut stored, mut duplicates, mut exts, mut alarms) = (0, 0, 0, 0);
                for round in 0..ROUNDS {
                    let mut frames = Vec::new();
                    for (d, imei) in (0u64..).zip(IMEIS) {
                        let first = round * 10;
                        let mut rows = archives(first..first + 20);
                        rows.push(alarm(round, record(100_000 + round)));
                        if t == 1 {
                            rows.reverse();
                        }
                        let mut f = frame(u64::from(round) * 10 + d, imei, rows);
                        f.ext_records = (first..first + 5).map(|i| ext(record(i))).collect();
                        frames.push(f);
                    }
                    if t == 1 {
                        frames.reverse();
                    }
                    let receipt = store
                        .commit(&frames)
                        .unwrap_or_else(|e| panic!("{via:?}: thread {t} round {round}: {e}"));
                    stored += receipt.stats().records;
                    duplicates += receipt.stats().duplicates;
                    exts += receipt.stats().ext_records;
                    alarms += receipt.stats().alarms;
                }
                (stored, duplicates, exts, alarms)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let devices = IMEIS.len() as u64;
    let rounds = u64::from(ROUNDS);
    // Per device: indexes 0 .. 10 * (ROUNDS - 1) + 20, one alarm record per round, and
    // additional records 0 .. 10 * (ROUNDS - 1) + 5 (with gaps).
    let keys = devices * (10 * (rounds - 1) + 20 + rounds);
    let ext_keys = devices * rounds * 5;
    let sent = 2 * devices * rounds * (21 + 5);
    let stored: u64 = results.iter().map(|r| r.0).sum();
    let duplicates: u64 = results.iter().map(|r| r.1).sum();
    let exts: u64 = results.iter().map(|r| r.2).sum();
    let alarms: u64 = results.iter().map(|r| r.3).sum();
    assert_eq!(stored, keys);
    assert_eq!(exts, ext_keys);
    assert_eq!(alarms, devices * rounds);
    assert_eq!(stored + exts + duplicates, sent);
    assert_eq!(db.count("records"), i64::try_from(keys).unwrap());
    assert_eq!(db.count("ext_records"), i64::try_from(ext_keys).unwrap());
    assert_eq!(db.count("devices"), 3);
    assert_eq!(
        db.count("raw_frames"),
        i64::try_from(2 * devices * rounds).unwrap()
    );
}

#[test]
fn stores_opening_a_fresh_database_at_once_apply_the_migrations_once() {
    for _ in 0..3 {
        let db = Db::postgres();
        let url = db.store_url();
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut store = Store::open(&url, &options(Duration::from_secs(10)))
                        .unwrap_or_else(|e| panic!("open: {e}"));
                    store.schema_version().unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), latest_schema_version());
        }
        let versions: Vec<String> = (1..=latest_schema_version())
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            db.rows("SELECT version FROM schema_migrations ORDER BY version"),
            versions
        );
        assert_eq!(partitions(&db, "records").len(), 5);
    }
}

// ---------------------------------------------------------------------------------------------
// Failures.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_connection_killed_mid_commit_is_retryable_and_the_retry_stores_the_batch_once() {
    let db = Db::postgres();
    let mut store = db.open(Synchronous::Off);
    let _ = store.commit(&[frame(1, IMEI, archives(0..5))]).unwrap();
    slow_trigger(&db, 5.0);
    let Db::Postgres(pg) = &db else {
        unreachable!()
    };
    let name = pg.name().to_owned();
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let killed = svoi_testpg::shared()
                .psql(
                    "postgres",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE wait_event = 'PgSleep' AND datname = '{}'",
                        name
                    ),
                )
                .lines()
                .count();
            if killed > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    let batch = [frame(
        2,
        IMEI,
        vec![archive(record(5)), archive(record(999))],
    )];
    let started = Instant::now();
    let err = store.commit(&batch).unwrap_err();
    assert!(killer.join().unwrap(), "the commit never slept");
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");
    assert!(err.is_retryable(), "{err:?}");
    db.exec("DROP TRIGGER slow_999 ON records");

    let receipt = store.commit(&batch).unwrap();
    assert_eq!(
        (receipt.stats().records, receipt.stats().duplicates),
        (2, 0)
    );
    assert_eq!(receipt.batch(), 2, "the failed commit issued no receipt");
    assert_eq!(db.count("records"), 7);
    assert_eq!(db.count("raw_frames"), 2);
}

#[test]
fn an_idle_connection_killed_between_commits_is_reopened_with_nothing_lost_or_doubled() {
    for via in VIAS {
        idle_connection_killed(via);
    }
}

/// With either way of writing records (the `COPY` one keeps a session-local staging table,
/// which a new connection must make again).
fn idle_connection_killed(via: RecordsVia) {
    let db = Db::postgres();
    let mut store =
        Store::open(&db.store_url(), &options_via(Duration::from_secs(10), via)).unwrap();
    let mut committed = 0;
    for round in 0..3u32 {
        assert!(kill_connections(&db) >= 1, "the store holds a connection");
        let batch = [frame(
            u64::from(round),
            IMEI,
            archives(round * 10..round * 10 + 10),
        )];
        // The store may see the connection gone before it uses it (and reconnect at once),
        // or only when the commit fails: then the error is retryable and the retry stores it.
        let receipt = match store.commit(&batch) {
            Ok(receipt) => receipt,
            Err(e) => {
                assert!(e.is_retryable(), "{via:?}: {e:?}");
                store.commit(&batch).unwrap()
            }
        };
        committed += 1;
        assert_eq!(receipt.stats().records, 10);
        assert_eq!(db.count("records"), i64::from(round + 1) * 10);
        assert_eq!(db.count("raw_frames"), committed);
    }
}

#[test]
fn a_statement_timeout_is_a_retryable_error() {
    let db = Db::postgres();
    let mut store = Store::open(&db.store_url(), &options(Duration::from_millis(100))).unwrap();
    slow_trigger(&db, 0.5);
    let started = Instant::now();
    let err = store
        .commit(&[frame(1, IMEI, vec![archive(record(999))])])
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(450), "{err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(store.counts().unwrap().raw_frames, 0);
    // The same connection goes on.
    let receipt = store.commit(&[frame(2, IMEI, archives(0..3))]).unwrap();
    assert_eq!(receipt.stats().records, 3);
}

#[test]
fn an_invalid_batch_is_refused_before_touching_the_database() {
    let db = Db::postgres();
    let Db::Postgres(pg) = &db else {
        unreachable!()
    };
    let mut store = db.open(Synchronous::Off);
    let admin = |sql: &str| svoi_testpg::shared().psql("postgres", sql);
    // The database refuses connections, and the store's is gone: anything reaching the
    // server fails.
    admin(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
        pg.name()
    ));
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        pg.name()
    ));
    let mut orphan = frame(1, IMEI, archives(0..1));
    orphan.imei = None;
    let err = store.commit(&[orphan]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let mut wide = frame(3, IMEI, Vec::new());
    wide.conn_id = u64::MAX;
    let err = store.commit(&[wide]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");

    // A valid batch does reach for the server, and that failure is retryable.
    let batch = [frame(4, IMEI, archives(0..2))];
    let err = store.commit(&batch).unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    admin(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
        pg.name()
    ));
    let receipt = store.commit(&batch).unwrap();
    assert_eq!((receipt.batch(), receipt.stats().records), (1, 2));
}

#[test]
fn an_unreachable_server_is_a_retryable_error() {
    // Port 1 on the loopback: nothing listens, the connection is refused.
    let url: DbUrl = "postgres://postgres@127.0.0.1:1/svoi".parse().unwrap();
    let err = Store::open(&url, &options(Duration::from_secs(1))).unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(err, StoreError::Postgres(_)), "{err:?}");
}
