//! `DbUrl`: which database to open, parsed from the operator's `database.url` setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::StoreError;

/// A database location. Only SQLite exists today; PostgreSQL arrives with issue 5.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DbUrl {
    /// An SQLite database file (relative paths are relative to the working directory).
    Sqlite(PathBuf),
}

impl FromStr for DbUrl {
    type Err = StoreError;

    /// Accepts `sqlite:PATH` and `sqlite://PATH` (scheme case-insensitive), where PATH is
    /// relative or absolute: `sqlite:./data/svoi.db`, `sqlite:/var/lib/svoi/svoi.db`,
    /// `sqlite://data/svoi.db`, `sqlite:///var/lib/svoi/svoi.db`.
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
        if strip_scheme(text, "postgres:").is_some() || strip_scheme(text, "postgresql:").is_some()
        {
            // The URL may hold a password: do not echo it.
            return Err(StoreError::Unsupported(
                "the postgres backend is not available in this build (it arrives with issue 5): \
                 use sqlite:PATH"
                    .to_owned(),
            ));
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(s: &str) -> PathBuf {
        match s.parse::<DbUrl>() {
            Ok(DbUrl::Sqlite(p)) => p,
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
    fn postgres_is_unsupported_without_echoing_the_url() {
        for text in [
            "postgres://svoi:secret@db/svoi",
            "postgresql://svoi:secret@db/svoi",
            "POSTGRES://h/db",
        ] {
            match text.parse::<DbUrl>() {
                Err(e @ StoreError::Unsupported(_)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("postgres"), "{msg}");
                    assert!(msg.contains("issue 5"), "{msg}");
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
