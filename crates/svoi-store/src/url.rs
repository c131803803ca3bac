//! `DbUrl`: which database to open, parsed from the operator's `database.url` setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::StoreError;

/// A database location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DbUrl {
    /// An SQLite database file (relative paths are relative to the working directory).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgUrl),
}

/// A PostgreSQL connection URL (`postgres://user:password@host:port/dbname?options`), checked
/// when parsed. `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PgUrl(String);

impl PgUrl {
    /// The URL as given, password included: for connecting, never for printing.
    pub fn as_secret_str(&self) -> &str {
        &self.0
    }

    /// The connection settings.
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        self.0
            .parse()
            .map_err(|_| StoreError::BadUrl(self.to_string()))
    }
}

impl PgUrl {
    /// The same server, user and options, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let url = &self.0;
        let authority = url.find("://").map_or(0, |i| i + 3);
        let path = url[authority..]
            .find('/')
            .map_or(url.len(), |i| authority + i);
        let query = url[path..].find('?').map_or(url.len(), |i| path + i);
        PgUrl(format!("{}/{dbname}{}", &url[..path], &url[query..]))
    }

    /// The database name.
    pub fn dbname(&self) -> Option<String> {
        self.config().ok()?.get_dbname().map(str::to_owned)
    }
}

impl fmt::Display for PgUrl {
    /// The URL with its password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({:?})", redact(&self.0))
    }
}

/// `scheme://user:***@rest` for `scheme://user:password@rest`; other text unchanged, except that
/// a `password=` query parameter's value is hidden too.
fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.replace_range(auth_start + colon + 1..auth_start + at, "***");
        }
    }
    if let Some(start) = out.find("password=") {
        let value = start + "password=".len();
        let end = out[value..].find('&').map_or(out.len(), |e| value + e);
        out.replace_range(value..end, "***");
    }
    out
}

impl FromStr for DbUrl {
    type Err = StoreError;

    /// Accepts `sqlite:PATH` and `sqlite://PATH` (scheme case-insensitive), where PATH is
    /// relative or absolute: `sqlite:./data/svoi.db`, `sqlite:/var/lib/svoi/svoi.db`,
    /// `sqlite://data/svoi.db`, `sqlite:///var/lib/svoi/svoi.db`; and PostgreSQL URLs,
    /// `postgres://` or `postgresql://`, which must name a database.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if let Some(path) = strip_scheme(text, "sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::BadUrl(s.to_owned()));
            }
            if path == ":memory:" || path.starts_with("file:") {
                // An in-memory database forgets what it acknowledged; a nested URI would be
                // interpreted by SQLite, not by us.
                return Err(StoreError::BadUrl(s.to_owned()));
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if strip_scheme(text, "postgres://").is_some()
            || strip_scheme(text, "postgresql://").is_some()
        {
            let url = PgUrl(text.to_owned());
            // The error names the URL without its password.
            let config = url.config()?;
            if config.get_dbname().is_none() {
                return Err(StoreError::BadUrl(format!(
                    "{url} (name the database: postgres://user@host/DBNAME)"
                )));
            }
            return Ok(DbUrl::Postgres(url));
        }
        Err(StoreError::BadUrl(s.to_owned()))
    }
}

/// `text` without `scheme` when it starts with it, ignoring ASCII case.
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let head = text.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &text[scheme.len()..])
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DbUrl::Postgres(url) => url.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(s: &str) -> PathBuf {
        match s.parse::<DbUrl>() {
            Ok(DbUrl::Sqlite(p)) => p,
            Ok(other) => panic!("{s:?} gave {other:?}"),
            Err(e) => panic!("{s:?} rejected: {e}"),
        }
    }

    #[test]
    fn accepts_sqlite_forms() {
        assert_eq!(
            sqlite("sqlite:./data/svoi.db"),
            PathBuf::from("./data/svoi.db")
        );
        assert_eq!(sqlite("sqlite:/abs/path.db"), PathBuf::from("/abs/path.db"));
        assert_eq!(
            sqlite("sqlite://data/svoi.db"),
            PathBuf::from("data/svoi.db")
        );
        assert_eq!(
            sqlite("sqlite:///abs/path.db"),
            PathBuf::from("/abs/path.db")
        );
        assert_eq!(sqlite("SQLite:x.db"), PathBuf::from("x.db"));
        assert_eq!(sqlite("  sqlite:x.db\n"), PathBuf::from("x.db"));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "sqlite:./data/svoi.db",
            "sqlite:/abs/path.db",
            "sqlite:x.db",
        ] {
            let url: DbUrl = text.parse().unwrap();
            assert_eq!(url.to_string(), text);
            assert_eq!(url.to_string().parse::<DbUrl>().unwrap(), url);
        }
        let url: DbUrl = "sqlite:///abs/path.db".parse().unwrap();
        assert_eq!(url.to_string(), "sqlite:/abs/path.db");
    }

    #[test]
    fn accepts_postgres_urls_and_never_prints_the_password() {
        for text in [
            "postgres://svoi:secret@db/svoi",
            "postgresql://svoi:secret@db:5433/svoi?sslmode=disable",
            "postgres://svoi@127.0.0.1/svoi?password=secret&connect_timeout=3",
        ] {
            let url: DbUrl = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            let DbUrl::Postgres(pg) = &url else {
                panic!("{text} gave {url:?}")
            };
            assert_eq!(pg.as_secret_str(), text);
            for shown in [url.to_string(), format!("{url:?}")] {
                assert!(!shown.contains("secret"), "{shown}");
                assert!(shown.contains("***"), "{shown}");
                assert!(
                    shown.contains("db") || shown.contains("127.0.0.1"),
                    "{shown}"
                );
            }
        }
        assert_eq!(
            "postgres://a@h/d".parse::<DbUrl>().unwrap().to_string(),
            "postgres://a@h/d"
        );
    }

    #[test]
    fn with_dbname_swaps_only_the_database() {
        let url = |s: &str| match s.parse::<DbUrl>() {
            Ok(DbUrl::Postgres(u)) => u,
            other => panic!("{s}: {other:?}"),
        };
        let u = url("postgres://svoi:pw@db:5433/prod?sslmode=disable");
        assert_eq!(
            u.with_dbname("scratch").as_secret_str(),
            "postgres://svoi:pw@db:5433/scratch?sslmode=disable"
        );
        assert_eq!(
            u.with_dbname("scratch").dbname().as_deref(),
            Some("scratch")
        );
        assert_eq!(
            url("postgresql://h/x").with_dbname("y").as_secret_str(),
            "postgresql://h/y"
        );
    }

    #[test]
    fn refuses_postgres_urls_without_a_database_or_unparsable_without_the_password() {
        for text in [
            "postgres://svoi:secret@db",
            "postgres://svoi:secret@db:notaport/x",
        ] {
            match text.parse::<DbUrl>() {
                Err(e @ StoreError::BadUrl(_)) => {
                    let msg = e.to_string();
                    assert!(!msg.contains("secret"), "{msg}");
                    assert!(!e.is_retryable());
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_everything_else_naming_the_text() {
        for text in [
            "",
            "sqlite:",
            "sqlite://",
            "sqlite::memory:",
            "mysql://x",
            "./data/svoi.db",
            "sqlit:x.db",
            "sqlite:file:x.db",
        ] {
            match text.parse::<DbUrl>() {
                Err(e @ StoreError::BadUrl(_)) => {
                    assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
                    assert!(!e.is_retryable());
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }
}
