//! PostgreSQL migrations: the SQL files under `migrations/postgres/`, numbered like the SQLite
//! ones (the same version means the same tables and meaning), each applied in its own
//! transaction under an advisory lock, so servers starting together apply each once.

use tokio_postgres::Client;

use super::wait;
use crate::StoreError;

/// Every PostgreSQL migration, ascending; the same versions as the SQLite list.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_api.sql")),
    (
        3,
        include_str!("../../migrations/postgres/0003_operations.sql"),
    ),
];

/// Key of the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x0053_564f_496d_6967; // "SVOImig"

/// The highest applied version (0 for an empty database).
pub(crate) fn current_version(client: &Client) -> Result<u32, StoreError> {
    let exists =
        wait(client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]))?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = wait(client.query_one(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        &[],
    ))?;
    let version: i32 = row.get(0);
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version} out of range")))
}

/// Brings the schema up to the latest version; refuses a newer one.
pub(crate) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let known = crate::migrate::latest_version();
    debug_assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(known));
    wait(client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]))?;
    let result = apply(client, known);
    // Session locks end with the session anyway; a failed unlock leaves nothing behind.
    let _ = wait(client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]));
    result
}

fn apply(client: &mut Client, known: u32) -> Result<(), StoreError> {
    let found = current_version(client)?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for &(version, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let tx = wait(client.transaction())?;
        wait(tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        ))?;
        wait(tx.batch_execute(sql)).map_err(|cause| StoreError::PgMigration { version, cause })?;
        let v = i32::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("migration {version} out of range")))?;
        wait(tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&v]))?;
        wait(tx.commit())?;
    }
    Ok(())
}
