//! Test support: a real PostgreSQL server and fresh, empty databases on it.
//!
//! Tests call [`database`] for a database of their own on the process-wide [`shared`]
//! cluster, and [`Cluster::start`] when they need a server of their own to stop and start
//! again. With `SVOI_TEST_PG_URL` set (CI starts one server with `.ci/pg-cluster`), that server
//! is used; otherwise the first use starts a cluster in a temp directory from the installed
//! PostgreSQL binaries (`SVOI_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `pg_config --bindir`), and a watchdog process removes it after the test process exits,
//! even when it panicked or aborted.
//!
//! SQL goes through the `psql` command-line client, so the crate needs no PostgreSQL client
//! library and tests of any client can use it. Failures panic with what went wrong and the
//! tail of the server log: this is test support, and a clear panic is the right report.
//!
//! Suites that run every test on both SQLite and PostgreSQL take a fresh [`Db`] of either
//! [`Backend`], check what they stored through its backend-neutral helpers (`scalar`, `rows`,
//! `count`, `exec`), and generate the `sqlite::name` and `postgres::name` tests with
//! [`backends!`] or [`tokio_backends!`].
//!
//! ```no_run
//! let db = svoi_testpg::database();
//! db.psql("CREATE TABLE t (x int)");
//! db.psql("INSERT INTO t VALUES (1), (2)");
//! assert_eq!(db.psql("SELECT sum(x) FROM t"), "3");
//! // A client library connects to `db.url()`; the database is dropped with `db`.
//! ```

mod backend;
mod cluster;
mod host;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use backend::{Backend, Db, SQLITE_FILE};
pub use cluster::Cluster;

/// The environment variable naming an already running server to use instead of starting one.
pub const URL_VAR: &str = "SVOI_TEST_PG_URL";

/// The process-wide shared cluster. When `SVOI_TEST_PG_URL` is set (an admin URL such as
/// `postgres://postgres@127.0.0.1:5433/postgres` with trust auth), that server is used and
/// never stopped by us; otherwise a cluster is started on first use (see
/// [`Cluster::start`]) and a watchdog stops it and removes its directory when this test
/// process exits (even on panic or abort). Safe to call from many test threads at once.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cluster = match std::env::var(URL_VAR) {
            Ok(url) if !url.trim().is_empty() => Cluster::from_url(url.trim()),
            _ => Cluster::start(),
        };
        cluster.into_shared()
    })
}

/// A fresh, empty database on the shared cluster, named
/// `svoi_t_<pid>_<counter>_<random hex>`; dropped with the returned [`TestDb`].
pub fn database() -> TestDb {
    shared().database()
}

/// A database of one test; dropped (`DROP DATABASE ... WITH (FORCE)`) when this is.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    psql: PathBuf,
}

impl TestDb {
    pub(crate) fn new(name: String, url: String, admin_url: String, psql: PathBuf) -> TestDb {
        TestDb {
            name,
            url,
            admin_url,
            psql,
        }
    }

    /// The superuser URL of this database: `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs one SQL statement as superuser in this database and returns psql's unaligned,
    /// tuples-only (`-At`) output without its final newline. Panics with psql's error.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| {
            panic!(
                "svoi-testpg: in database {}: {e}\nstatement: {sql}",
                self.name
            )
        })
    }

    /// [`TestDb::psql`] returning psql's failure instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, PsqlError> {
        run_psql(&self.psql, &self.url, sql)
    }
}

impl Drop for TestDb {
    /// Best effort: a server already stopped or gone keeps the database, which dies with it.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = run_psql(&self.psql, &self.admin_url, &sql);
    }
}

/// A `psql` run that failed: it could not connect, or the statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsqlError {
    /// psql's exit code (2 when it could not connect, 3 when the statement failed); `None`
    /// when psql could not be run at all or was killed.
    pub code: Option<i32>,
    /// What psql printed on stderr, or why it could not be run.
    pub stderr: String,
}

impl fmt::Display for PsqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(
                f,
                "psql failed (exit code {code}): {}",
                self.stderr.trim_end()
            ),
            None => write!(f, "psql failed: {}", self.stderr.trim_end()),
        }
    }
}

impl std::error::Error for PsqlError {}

/// Runs `sql` with `psql` against the database at `url`: no psqlrc, stop on the first error,
/// unaligned tuples-only output, a bounded connect wait.
pub(crate) fn run_psql(psql: &Path, url: &str, sql: &str) -> Result<String, PsqlError> {
    let out = Command::new(psql)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PsqlError {
            code: None,
            stderr: format!(
                "cannot run {}: {e} (install postgresql-client)",
                psql.display()
            ),
        })?;
    if !out.status.success() {
        return Err(PsqlError {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.ends_with('\n') {
        stdout.pop();
    }
    Ok(stdout)
}
