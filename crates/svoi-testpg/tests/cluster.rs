//! The crate against a real PostgreSQL: the shared cluster answers, databases are fresh,
//! distinct and dropped, and a cluster of its own stops, starts again with its data, and
//! leaves nothing behind when dropped.

use std::time::Instant;

use svoi_testpg::{Cluster, shared};

/// Whether database `name` exists on the shared cluster.
fn exists(name: &str) -> bool {
    let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    shared().psql("postgres", &sql) == "1"
}

#[test]
fn shared_cluster_answers() {
    let cluster = shared();
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
    assert!(
        cluster
            .psql("postgres", "SHOW server_version")
            .starts_with("15")
    );
    let url = cluster.url("postgres");
    assert!(
        url.ends_with(&format!(":{}/postgres", cluster.port())),
        "{url}"
    );
    // CI points the tests at its own server; locally the crate starts one.
    match std::env::var(svoi_testpg::URL_VAR) {
        Ok(given) if !given.is_empty() => {
            assert_eq!(url, given);
            assert!(cluster.dir().is_none());
        }
        _ => assert!(
            cluster
                .dir()
                .is_some_and(|d| d.join("data/PG_VERSION").is_file())
        ),
    }
}

#[test]
fn databases_are_fresh_distinct_and_dropped() {
    let a = svoi_testpg::database();
    let b = svoi_testpg::database();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    let prefix = format!("svoi_t_{}_", std::process::id());
    assert!(a.name().starts_with(&prefix), "{}", a.name());
    assert!(a.url().ends_with(&format!("/{}", a.name())), "{}", a.url());

    // Each is empty, usable, and sees only its own tables.
    for db in [&a, &b] {
        assert_eq!(db.psql("SELECT current_database()"), db.name());
        let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
        assert_eq!(db.psql(tables), "0");
    }
    a.psql("CREATE TABLE t (x int)");
    a.psql("INSERT INTO t VALUES (1), (2), (3)");
    assert_eq!(a.psql("SELECT x FROM t ORDER BY x"), "1\n2\n3");
    let err = b.try_psql("SELECT x FROM t").unwrap_err();
    assert!(err.stderr.contains("does not exist"), "{err}");

    // Dropped with their handles, even while a session is still connected.
    let (name_a, name_b) = (a.name().to_owned(), b.name().to_owned());
    assert!(exists(&name_a) && exists(&name_b));
    drop(a);
    assert!(!exists(&name_a));
    assert!(exists(&name_b));
    drop(b);
    assert!(!exists(&name_b));
}

#[test]
fn many_threads_share_one_cluster() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let db = svoi_testpg::database();
                db.psql(&format!("CREATE TABLE t AS SELECT {i} AS x"));
                (shared().port(), db.psql("SELECT x FROM t"))
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (port, x) = h.join().unwrap();
        assert_eq!(port, shared().port());
        assert_eq!(x, i.to_string());
    }
}

#[test]
fn own_cluster_stops_and_starts_again_with_its_data() {
    let started = Instant::now();
    let cluster = Cluster::start();
    eprintln!("Cluster::start took {:?}", started.elapsed());
    assert_ne!(cluster.port(), 0);
    assert_eq!(
        cluster.url("x"),
        format!("postgres://postgres@127.0.0.1:{}/x", cluster.port())
    );

    let db = cluster.database();
    db.psql("CREATE TABLE kept (v text)");
    db.psql("INSERT INTO kept VALUES ('before stop')");

    cluster.stop();
    let err = cluster.try_psql("postgres", "SELECT 1").unwrap_err();
    assert_eq!(err.code, Some(2), "{err}");
    assert!(err.stderr.contains("Connection refused"), "{err}");
    assert!(db.try_psql("SELECT 1").is_err());

    let started = Instant::now();
    cluster.start_again();
    eprintln!("Cluster::start_again took {:?}", started.elapsed());
    assert_eq!(db.psql("SELECT v FROM kept"), "before stop");
    assert_eq!(cluster.psql("postgres", "SHOW fsync"), "off");
    assert_eq!(cluster.psql("postgres", "SHOW max_connections"), "300");
}

#[test]
fn dropping_own_cluster_removes_its_directory() {
    let cluster = Cluster::start();
    let dir = cluster.dir().unwrap().to_owned();
    let port = cluster.port();
    assert!(dir.join("data/PG_VERSION").is_file());
    assert!(dir.join("server.log").is_file());
    drop(cluster);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    // Nothing listens on its port any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn shared_cluster_cannot_be_stopped() {
    let result = std::panic::catch_unwind(|| shared().stop());
    assert!(result.is_err());
    assert_eq!(shared().psql("postgres", "SELECT 1"), "1");
}
