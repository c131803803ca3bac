//! The both-backends fixture: each backend gives a working, empty database of its own per
//! test, the inspection helpers read the same text on both, and the macros name the tests
//! `sqlite::name` and `postgres::name` with a [`Db`] or a [`Backend`] as the function takes.

use svoi_testpg::{Backend, Db, backends};

/// The tables a test created in `db` (none in a fresh database).
fn tables(db: &Db) -> i64 {
    db.count(match db.backend() {
        Backend::Sqlite => "sqlite_master WHERE type = 'table'",
        Backend::Postgres => "pg_tables WHERE schemaname = 'public'",
    })
}

backends!(
    databases_are_empty_working_and_distinct,
    helpers_read_the_same_text_on_both,
    the_backend_is_what_was_asked_for,
);

fn databases_are_empty_working_and_distinct(db: Db) {
    let other = Db::new(db.backend());
    assert_ne!(db.url(), other.url());
    assert_eq!(tables(&db), 0);
    db.exec("CREATE TABLE t (x integer); INSERT INTO t VALUES (1), (2)");
    assert_eq!(tables(&db), 1);
    assert_eq!(db.count("t"), 2);
    // The other database saw nothing of it.
    assert_eq!(tables(&other), 0);
    let prefix = if db.is_postgres() {
        "postgres://"
    } else {
        "sqlite:/"
    };
    assert!(db.url().starts_with(prefix), "{}", db.url());
    if let Db::Sqlite(dir) = &db {
        assert_eq!(
            db.url(),
            format!(
                "sqlite:{}",
                dir.path().join(svoi_testpg::SQLITE_FILE).display()
            )
        );
    }
}

fn helpers_read_the_same_text_on_both(db: Db) {
    db.exec("CREATE TABLE t (x integer, s text, b bytea)");
    db.exec("INSERT INTO t VALUES (1, 'one', NULL), (2, NULL, NULL), (3, 'three', NULL)");
    let bytes = if db.is_postgres() {
        "convert_to(s, 'UTF8')"
    } else {
        "CAST(s AS blob)"
    };
    db.exec(&format!("UPDATE t SET b = {bytes} WHERE x = 1"));
    assert_eq!(db.scalar("SELECT sum(x) FROM t"), "6");
    assert_eq!(db.scalar("SELECT s FROM t WHERE x = 2"), "NULL");
    assert_eq!(db.scalar("SELECT max(s) FROM t"), "three");
    assert_eq!(
        db.scalar(&format!("SELECT {} FROM t WHERE x = 1", db.hex("b"))),
        "6f6e65"
    );
    assert_eq!(
        db.rows("SELECT x, coalesce(s, '-') FROM t ORDER BY x"),
        ["1|one", "2|-", "3|three"]
    );
    assert!(db.rows("SELECT x FROM t WHERE x > 3").is_empty());
    assert_eq!(db.count("t"), 3);
    assert_eq!(db.count("t WHERE s IS NULL"), 1);
    assert_eq!(db.count("SELECT count(*) FROM t WHERE x >= 2"), 2);
    assert_eq!(db.count("  select count(*) FROM t"), 3);
}

fn the_backend_is_what_was_asked_for(backend: Backend) {
    let db = Db::from(backend);
    assert_eq!(db.backend(), backend);
    assert_eq!(db.is_postgres(), backend == Backend::Postgres);
}

/// The `async` macro, in a module of its own so its `sqlite` and `postgres` modules do not
/// clash with the ones above.
mod on_tokio {
    use svoi_testpg::{Backend, Db, tokio_backends};

    tokio_backends!(
        async: [an_async_test_gets_a_fresh_database],
        sync: [a_sync_test_beside_it_gets_its_backend],
    );

    async fn an_async_test_gets_a_fresh_database(db: Db) {
        tokio::task::yield_now().await;
        db.exec("CREATE TABLE t (x integer)");
        assert_eq!(db.count("t"), 0);
    }

    fn a_sync_test_beside_it_gets_its_backend(backend: Backend) {
        assert_eq!(Db::new(backend).count("(SELECT 1 AS x) AS one"), 1);
    }
}
