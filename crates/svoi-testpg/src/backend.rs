//! One fixture for the suites that run every test on both database backends: [`Backend`], a
//! fresh database of either ([`Db`]) with backend-neutral helpers for checking what a test
//! stored, and the [`backends!`](crate::backends) and [`tokio_backends!`](crate::tokio_backends)
//! macros that run a test once per backend as `sqlite::name` and `postgres::name`.
//!
//! Nothing here knows SVOI: a suite parses [`Db::url`] into its own URL type and opens its
//! store itself. The checks go through connections of the test's own (`rusqlite` for SQLite,
//! `psql` for PostgreSQL), never through the code under test.
//!
//! ```no_run
//! use svoi_testpg::Db;
//!
//! fn stores_two_rows(db: Db) {
//!     db.exec("CREATE TABLE t (x integer)");
//!     db.exec("INSERT INTO t VALUES (1), (2)");
//!     assert_eq!(db.count("t"), 2);
//!     assert_eq!(db.scalar("SELECT sum(x) FROM t"), "3");
//! }
//!
//! svoi_testpg::backends!(stores_two_rows);
//! # fn main() {}
//! ```

use std::path::PathBuf;

use rusqlite::types::Value;
use tempfile::TempDir;

use crate::TestDb;

/// The file name of the SQLite database in a [`Db::Sqlite`] directory.
pub const SQLITE_FILE: &str = "svoi.db";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file of its own.
    Sqlite,
    /// A database of its own on the test PostgreSQL cluster ([`crate::shared`]).
    Postgres,
}

/// A fresh, empty database of either backend, removed when dropped.
#[derive(Debug)]
pub enum Db {
    /// An SQLite database, [`SQLITE_FILE`] in a temporary directory (the file is created by
    /// whoever opens it first).
    Sqlite(TempDir),
    /// A database of its own on the test PostgreSQL cluster (see [`crate::database`]).
    Postgres(TestDb),
}

impl Db {
    /// A fresh database of `backend`.
    pub fn new(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => Db::sqlite(),
            Backend::Postgres => Db::postgres(),
        }
    }

    /// A fresh SQLite database.
    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap_or_else(|e| panic!("svoi-testpg: tempdir: {e}")))
    }

    /// A fresh PostgreSQL database.
    pub fn postgres() -> Db {
        Db::Postgres(crate::database())
    }

    /// Its backend.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// Its URL: `sqlite:/tmp/.../svoi.db`, or `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite:{}", sqlite_path(dir).display()),
            Db::Postgres(db) => db.url().to_owned(),
        }
    }

    /// The value of a one-row, one-column query, as text (`NULL` for a null): for checking
    /// what is stored, through a connection of the test's own. Panics on SQLite when the
    /// query returns no row; PostgreSQL gives `NULL` then.
    pub fn scalar(&self, sql: &str) -> String {
        match self {
            Db::Sqlite(dir) => {
                let v: Value = connect(dir)
                    .query_row(sql, [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                text(v)
            }
            Db::Postgres(db) => {
                let out = db.psql(&format!("SELECT coalesce(({sql})::text, 'NULL')"));
                out.trim_end_matches('\n').to_owned()
            }
        }
    }

    /// Every row of a query, columns joined by `|`, as text. Nulls are `NULL` on SQLite and
    /// empty on PostgreSQL, and each backend renders booleans and reals its own way: render
    /// them in the query (`coalesce`, `CASE`, casts) where a test compares them.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        match self {
            Db::Sqlite(dir) => {
                let conn = connect(dir);
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    let mut cols = Vec::with_capacity(n);
                    for i in 0..n {
                        cols.push(text(r.get(i)?));
                    }
                    Ok(cols.join("|"))
                })
                .and_then(Iterator::collect)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Db::Postgres(db) => db
                .psql(sql)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The rows of `what`: a table or view (`"records"`, or with a condition,
    /// `"records WHERE imei = '1'"`) counted with `SELECT count(*) FROM {what}`, or a whole
    /// counting query (one starting with `SELECT`) run as it is.
    pub fn count(&self, what: &str) -> i64 {
        let is_query = what
            .trim_start()
            .get(..6)
            .is_some_and(|head| head.eq_ignore_ascii_case("select"));
        let sql = if is_query {
            what.to_owned()
        } else {
            format!("SELECT count(*) FROM {what}")
        };
        self.scalar(&sql)
            .parse()
            .unwrap_or_else(|e| panic!("count {what}: {e}"))
    }

    /// Runs `sql` (one or several statements, no result) through a connection of the test's
    /// own: schema for a test of its own, triggers and other fault injection.
    pub fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(dir) => connect(dir)
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Db::Postgres(db) => {
                let _ = db.psql(sql);
            }
        }
    }

    /// SQL rendering the blob `expr` as lowercase hex on either backend.
    pub fn hex(&self, expr: &str) -> String {
        match self {
            Db::Sqlite(_) => format!("lower(hex({expr}))"),
            Db::Postgres(_) => format!("encode({expr}, 'hex')"),
        }
    }
}

/// A fresh database of the backend: what lets the macros hand a test function either the
/// [`Backend`] or the [`Db`], whichever it takes.
impl From<Backend> for Db {
    fn from(backend: Backend) -> Db {
        Db::new(backend)
    }
}

/// The SQLite file in `dir`.
fn sqlite_path(dir: &TempDir) -> PathBuf {
    dir.path().join(SQLITE_FILE)
}

/// A connection of the test's own to the SQLite file in `dir`.
fn connect(dir: &TempDir) -> rusqlite::Connection {
    let path = sqlite_path(dir);
    rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// An SQLite value as the helpers show it: `NULL`, the number, the text, or a blob's bytes.
fn text(v: Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t,
        Value::Blob(b) => format!("{b:?}"),
    }
}

/// Runs each named test function once per backend, as `#[test]`s `sqlite::name` and
/// `postgres::name` (modules of the invoking one). Each calls `super::name` with a fresh
/// [`Db`] of its backend or with just the [`Backend`], whichever the function takes:
/// `fn name(db: Db)` or `fn name(backend: Backend)`.
///
/// ```no_run
/// fn opens(db: svoi_testpg::Db) {
///     assert_eq!(db.scalar("SELECT 1"), "1");
/// }
/// svoi_testpg::backends!(opens);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        $crate::__backend_module!(sqlite, Sqlite, [], [$($name),*]);
        $crate::__backend_module!(postgres, Postgres, [], [$($name),*]);
    };
}

/// [`backends!`](crate::backends) for `async` test functions: `#[tokio::test]`s (the invoking
/// crate depends on `tokio` with `macros`), each awaiting `super::name(Backend or Db)`. With
/// `async: [...], sync: [...]`, the `sync` names become `#[test]`s in the same `sqlite` and
/// `postgres` modules.
///
/// ```no_run
/// use svoi_testpg::{Backend, Db};
///
/// async fn serves(db: Db) {
///     db.exec("CREATE TABLE t (x integer)");
/// }
/// fn counts(backend: Backend) {
///     assert_eq!(Db::new(backend).count("(SELECT 1 AS x) AS one"), 1);
/// }
/// svoi_testpg::tokio_backends!(async: [serves], sync: [counts]);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! tokio_backends {
    (async: [$($a:ident),* $(,)?], sync: [$($s:ident),* $(,)?] $(,)?) => {
        $crate::__backend_module!(sqlite, Sqlite, [$($a),*], [$($s),*]);
        $crate::__backend_module!(postgres, Postgres, [$($a),*], [$($s),*]);
    };
    ($($a:ident),* $(,)?) => {
        $crate::tokio_backends!(async: [$($a),*], sync: []);
    };
}

/// The module of one backend's tests for [`backends!`](crate::backends) and
/// [`tokio_backends!`](crate::tokio_backends).
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_module {
    ($module:ident, $backend:ident, [$($a:ident),*], [$($s:ident),*]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $a() {
                    super::$a(::core::convert::From::from($crate::Backend::$backend)).await
                }
            )*
            $(
                #[test]
                fn $s() {
                    super::$s(::core::convert::From::from($crate::Backend::$backend))
                }
            )*
        }
    };
}
