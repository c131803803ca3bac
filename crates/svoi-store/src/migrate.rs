//! Embedded schema migrations: the SQL files under `migrations/`, applied in order, each in
//! its own transaction, with the applied versions recorded in `schema_migrations`.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::StoreError;

/// Every migration this build knows, ascending by version. Versions are never reused and
/// released files are never edited: a change is a new file.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_api.sql")),
    (3, include_str!("../migrations/0003_operations.sql")),
];

/// The newest schema version this build embeds.
pub(crate) fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |&(version, _)| version)
}

/// The highest applied version (0 for an empty database).
pub(crate) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    let version: i64 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version} out of range")))
}

/// Brings the schema up to [`latest_version`]. Each pending migration runs in its own
/// `BEGIN IMMEDIATE` transaction that re-reads the version first, so two processes opening
/// the same new database apply each migration once.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = latest_version();
    let found = current_version(conn)?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for &(version, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TEXT NOT NULL
             )",
        )?;
        let now = current_version(&tx)?;
        if now > known {
            return Err(StoreError::SchemaTooNew { found: now, known });
        }
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration { version, source })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
            [version],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ascending_and_start_at_one() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|&(v, _)| v).collect();
        assert_eq!(versions.first(), Some(&1));
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }

    #[test]
    fn migrate_is_idempotent_and_refuses_newer_schemas() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(current_version(&conn).unwrap(), 0);
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        migrate(&mut conn).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, i64::from(latest_version()));

        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'later')",
            [latest_version() + 1],
        )
        .unwrap();
        match migrate(&mut conn) {
            Err(e @ StoreError::SchemaTooNew { .. }) => {
                assert!(e.to_string().contains("newer than this build"), "{e}");
                assert!(!e.is_retryable());
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}
