//! PostgreSQL backups: `pg_dump` custom-format dumps taken on an exported snapshot, their
//! checks in a scratch database, and restores with `pg_restore`.
//!
//! The tools get the connection through the environment (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`), never on their command line, where every user of the host
//! could read the password.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::Client;
use tokio_postgres::config::Host;

use super::{BackupError, Carried, DATA_TABLES, OPS_TABLES, Snapshot};
use crate::ops::HOURLY_UPSERT;
use crate::pg::{connect, create_database, drop_database, wait};
use crate::{PgUrl, RowCounts, StoreError, StoreOptions};

/// Where `pg_dump` and `pg_restore` are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTools {
    /// `pg_dump`.
    pub pg_dump: PathBuf,
    /// `pg_restore`.
    pub pg_restore: PathBuf,
}

/// Where distributions install the PostgreSQL binaries, one directory per major version.
const DISTRO_DIR: &str = "/usr/lib/postgresql";

impl PgTools {
    /// Finds the tools: in `bin_dir` when given (both must be there), else on `PATH`, else
    /// in the newest `/usr/lib/postgresql/<version>/bin`. The error says what to install or
    /// configure.
    pub fn find(bin_dir: Option<&Path>) -> Result<PgTools, BackupError> {
        let in_dir = |dir: &Path| {
            let tools = PgTools {
                pg_dump: dir.join("pg_dump"),
                pg_restore: dir.join("pg_restore"),
            };
            (tools.pg_dump.is_file() && tools.pg_restore.is_file()).then_some(tools)
        };
        if let Some(dir) = bin_dir {
            return in_dir(dir).ok_or_else(|| {
                BackupError::ToolsMissing(format!(
                    "pg_dump and pg_restore are not both in {} (backup.pg_bin_dir): point it \
                     at the bin directory of the PostgreSQL client tools",
                    dir.display()
                ))
            });
        }
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        if let Some(tools) = path_dirs.iter().find_map(|d| in_dir(d)) {
            return Ok(tools);
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DISTRO_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, entry.path().join("bin")))
            })
            .collect();
        versions.sort();
        versions
            .iter()
            .rev()
            .find_map(|(_, dir)| in_dir(dir))
            .ok_or_else(|| {
                BackupError::ToolsMissing(format!(
                    "pg_dump and pg_restore not found on PATH nor in {DISTRO_DIR}/*/bin: \
                     install the PostgreSQL client tools (Debian/Ubuntu: postgresql-client, of \
                     the server's major version or newer) or set backup.pg_bin_dir"
                ))
            })
    }
}

/// What [`check_postgres`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgCheck {
    /// The scratch database the dump was restored into (dropped again).
    pub scratch_database: String,
    /// Counts, schema version and server version in the scratch database.
    pub snapshot: Snapshot,
}

/// Dumps the database at `url` into `dest` (custom format) while it keeps taking writes: a
/// `REPEATABLE READ` transaction exports its snapshot and counts the rows in it, and `pg_dump
/// --snapshot` dumps exactly that snapshot while the transaction is held, so the counts match
/// the dump.
pub fn dump_postgres(
    url: &PgUrl,
    opts: &StoreOptions,
    tools: &PgTools,
    dest: &Path,
) -> Result<Snapshot, BackupError> {
    let client = connect(url, opts)?;
    wait(client.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = 0",
    ))?;
    let id: String = wait(client.query_one("SELECT pg_export_snapshot()", &[]))?.get(0);
    let snapshot = snapshot_of(&client)?;
    let snapshot_arg = format!("--snapshot={id}");
    let file_arg = format!("--file={}", dest.display());
    run(
        &tools.pg_dump,
        &[
            "--format=custom",
            &snapshot_arg,
            "--no-owner",
            "--no-privileges",
            &file_arg,
        ],
        url,
    )?;
    wait(client.batch_execute("COMMIT"))?;
    Ok(snapshot)
}

/// Scratch databases of this process are numbered.
static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// Restores `dump` into a scratch database `svoi_verify_<pid>_<n>` on the server of `url`
/// (`pg_restore --exit-on-error`: any error fails the check), counts its rows and reads its
/// schema version, then drops it, also when something failed. Needs the CREATEDB privilege.
pub fn check_postgres(
    url: &PgUrl,
    opts: &StoreOptions,
    tools: &PgTools,
    dump: &Path,
) -> Result<PgCheck, BackupError> {
    let name = format!(
        "svoi_verify_{}_{}",
        std::process::id(),
        SCRATCH.fetch_add(1, Ordering::Relaxed)
    );
    let scratch = create_database(url, &name, opts)?;
    let result = (|| {
        let dump_arg = dump_path(dump)?;
        let db_arg = dbname_arg(&scratch)?;
        run(
            &tools.pg_restore,
            &["--exit-on-error", "--no-owner", &db_arg, &dump_arg],
            &scratch,
        )?;
        let client = connect(&scratch, opts)?;
        snapshot_of(&client)
    })();
    let dropped = drop_database(url, &name, opts);
    let snapshot = result?;
    dropped?;
    Ok(PgCheck {
        scratch_database: name,
        snapshot,
    })
}

/// Restores `dump` into the database at `url` (created when it does not exist): the tables,
/// views, sequences and functions the dump holds are dropped (with what depends on them, such
/// as partitions created after the backup) in one transaction, then `pg_restore
/// --single-transaction --exit-on-error --no-owner` creates and fills them; should that fail
/// the database lacks those objects (the caller's pre-restore backup has them). The live database's operations rows are read
/// before and carried over after: maintenance log entries whose ids the dump lacks,
/// maintenance windows (the live row replaces the dump's of the same id), hourly statistics
/// (likewise); the identity sequences are moved past the carried ids, and the restore epoch is
/// set one past the live one. Rows written between the read and the restore are not carried.
pub fn restore_postgres(
    url: &PgUrl,
    opts: &StoreOptions,
    tools: &PgTools,
    dump: &Path,
) -> Result<Carried, BackupError> {
    let saved = match connect(url, opts) {
        Ok(client) => Some(OpsRows::read(&client)?),
        Err(e) if is_missing_database(&e) => {
            let name = url
                .dbname()
                .ok_or_else(|| BackupError::Invalid(format!("{url} names no database")))?;
            create_database(&url.with_dbname("postgres"), &name, opts)?;
            None
        }
        Err(e) => return Err(e.into()),
    };
    let dump_arg = dump_path(dump)?;
    // `pg_restore --clean` cannot drop the constraints of attached partitions (it tries, and
    // fails), so the objects the dump holds are dropped here first, in one transaction, with
    // the partitions and everything else depending on them.
    let toc = run(&tools.pg_restore, &["--list", &dump_arg], url)?;
    let drops = drop_statements(&toc);
    if !drops.is_empty() {
        let mut client = connect(url, opts)?;
        let tx = wait(client.transaction())?;
        wait(tx.batch_execute(&drops.join(";\n")))?;
        wait(tx.commit())?;
    }
    let db_arg = dbname_arg(url)?;
    run(
        &tools.pg_restore,
        &[
            &db_arg,
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            &dump_arg,
        ],
        url,
    )
    .map_err(|e| {
        BackupError::Invalid(format!(
            "{e}; the database was emptied of the backup's tables before: restore the \
             pre-restore backup, or restore this one again once the cause is fixed"
        ))
    })?;
    let mut client = connect(url, opts)?;
    let tx = wait(client.transaction())?;
    let mut carried = Carried {
        live_existed: saved.is_some(),
        ..Carried::default()
    };
    let saved = saved.unwrap_or_default();
    if saved.has_tables {
        carried.log_entries = to_i64(wait(tx.execute(
            "INSERT INTO maintenance_log
             SELECT r.* FROM json_populate_recordset(NULL::maintenance_log, $1::text::json) r
             WHERE NOT EXISTS (SELECT 1 FROM maintenance_log m WHERE m.id = r.id)
             ORDER BY r.id",
            &[&saved.log],
        ))?);
        wait(tx.execute(
            "DELETE FROM maintenance_windows WHERE id IN
                 (SELECT id FROM json_populate_recordset(NULL::maintenance_windows, $1::text::json))",
            &[&saved.windows],
        ))?;
        // At most one window may be open; the live database's open window is the one.
        wait(tx.execute(
            "DELETE FROM maintenance_windows WHERE ended_at_us IS NULL AND EXISTS
                 (SELECT 1 FROM json_populate_recordset(NULL::maintenance_windows, $1::text::json)
                  WHERE ended_at_us IS NULL)",
            &[&saved.windows],
        ))?;
        carried.windows = to_i64(wait(tx.execute(
            "INSERT INTO maintenance_windows
             SELECT r.* FROM json_populate_recordset(NULL::maintenance_windows, $1::text::json) r
             ORDER BY r.id",
            &[&saved.windows],
        ))?);
        carried.hourly_stats = to_i64(wait(tx.execute(
            &format!(
                "INSERT INTO hourly_stats
             SELECT r.* FROM json_populate_recordset(NULL::hourly_stats, $1::text::json) r {HOURLY_UPSERT}"
            ),
            &[&saved.hourly],
        ))?);
    }
    // Ids carried over are past what the dump's sequences hand out next.
    wait(tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('maintenance_log', 'id'),
                       coalesce((SELECT max(id) FROM maintenance_log), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('maintenance_windows', 'id'),
                       coalesce((SELECT max(id) FROM maintenance_windows), 0) + 1, false)",
    ))?;
    let own: Option<i64> = wait(tx.query_opt(
        "SELECT value FROM svoi_state WHERE name = 'restore_epoch'",
        &[],
    ))?
    .map(|row| row.get(0));
    carried.epoch = own.unwrap_or(0).max(saved.epoch.unwrap_or(0)) + 1;
    wait(tx.execute(
        "INSERT INTO svoi_state (name, value) VALUES ('restore_epoch', $1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[&carried.epoch],
    ))?;
    wait(tx.commit())?;
    Ok(carried)
}

/// [`super::live_snapshot`] of a PostgreSQL database, in one `REPEATABLE READ` transaction.
pub(super) fn live_snapshot(
    url: &PgUrl,
    opts: &StoreOptions,
) -> Result<Option<Snapshot>, BackupError> {
    let client = match connect(url, opts) {
        Ok(client) => client,
        Err(e) if is_missing_database(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    wait(client.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = 0",
    ))?;
    let snapshot = snapshot_of(&client)?;
    wait(client.batch_execute("COMMIT"))?;
    Ok(Some(snapshot))
}

/// The operations rows of a live database, as JSON arrays.
#[derive(Debug, Default)]
struct OpsRows {
    /// The database has the operations tables (schema version 3 or later).
    has_tables: bool,
    log: String,
    windows: String,
    hourly: String,
    epoch: Option<i64>,
}

impl OpsRows {
    fn read(client: &Client) -> Result<OpsRows, BackupError> {
        let tables = existing_tables(client)?;
        if !OPS_TABLES.iter().all(|t| tables.iter().any(|e| e == t)) {
            return Ok(OpsRows::default());
        }
        let all = |table: &str| -> Result<String, BackupError> {
            Ok(wait(client.query_one(
                &format!("SELECT coalesce(json_agg(t), '[]')::text FROM {table} t"),
                &[],
            ))?
            .get(0))
        };
        let epoch = wait(client.query_opt(
            "SELECT value FROM svoi_state WHERE name = 'restore_epoch'",
            &[],
        ))?
        .map(|row| row.get(0));
        Ok(OpsRows {
            has_tables: true,
            log: all("maintenance_log")?,
            windows: all("maintenance_windows")?,
            hourly: all("hourly_stats")?,
            epoch,
        })
    }
}

/// The SVOI tables the connected database has.
fn existing_tables(client: &Client) -> Result<Vec<String>, BackupError> {
    let names: Vec<String> = DATA_TABLES
        .iter()
        .chain(OPS_TABLES)
        .map(|t| (*t).to_string())
        .collect();
    let rows = wait(client.query(
        "SELECT n FROM unnest($1::text[]) n WHERE to_regclass(n) IS NOT NULL",
        &[&names],
    ))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Counts, schema version and server version, in the connection's current transaction.
fn snapshot_of(client: &Client) -> Result<Snapshot, BackupError> {
    let mut counts = RowCounts::new();
    for table in existing_tables(client)? {
        let n: i64 = wait(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]))?.get(0);
        counts.insert(table, n);
    }
    let has_migrations: bool =
        wait(client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]))?.get(0);
    let version: i32 = if has_migrations {
        wait(client.query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        ))?
        .get(0)
    } else {
        0
    };
    let server_version: String = wait(client.query_one("SHOW server_version", &[]))?.get(0);
    Ok(Snapshot {
        counts,
        schema_version: u32::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {version} out of range")))?,
        server_version: format!("PostgreSQL {server_version}"),
    })
}

/// Runs a PostgreSQL tool against the database at `url`, the connection in the environment.
fn run(tool: &Path, args: &[&str], url: &PgUrl) -> Result<String, BackupError> {
    let mut command = Command::new(tool);
    command.args(args);
    for (name, value) in tool_env(url)? {
        command.env(name, value);
    }
    let output = command.output().map_err(super::io(tool))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    Err(BackupError::Tool {
        tool: tool.file_name().map_or_else(
            || tool.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
        status: output.status.to_string(),
        stderr: tail,
    })
}

/// The libpq environment naming the database at `url`: host(s), port(s), user, database,
/// password, application name and connect timeout.
fn tool_env(url: &PgUrl) -> Result<Vec<(&'static str, String)>, BackupError> {
    let config = url.config()?;
    let mut env = vec![("PGAPPNAME", "svoi backup".to_string())];
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        env.push(("PGHOST", hosts.join(",")));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        env.push(("PGPORT", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_string()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(timeout) = config.get_connect_timeout() {
        env.push(("PGCONNECT_TIMEOUT", timeout.as_secs().max(1).to_string()));
    }
    Ok(env)
}

/// `DROP ... IF EXISTS ... CASCADE` for every table, view, sequence and function in a dump's
/// table of contents (`pg_restore --list`: `ID; OID OID TYPE SCHEMA NAME OWNER`).
fn drop_statements(toc: &str) -> Vec<String> {
    let mut drops = Vec::new();
    for line in toc.lines().filter(|l| !l.starts_with(';')) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (Some(kind), Some(schema)) = (tokens.get(3), tokens.get(4)) else {
            continue;
        };
        let object = match *kind {
            "TABLE" | "VIEW" | "SEQUENCE" if tokens.len() == 7 => {
                format!("{}.{}", quote(schema), quote(tokens[5]))
            }
            "FUNCTION" => {
                let rest = tokens[5..].join(" ");
                let (Some(open), Some(close)) = (rest.find('('), rest.rfind(')')) else {
                    continue;
                };
                format!(
                    "{}.{}{}",
                    quote(schema),
                    quote(&rest[..open]),
                    &rest[open..=close]
                )
            }
            _ => continue,
        };
        // A view first: its tables' drops would take it along, a sequence last.
        let statement = format!("DROP {kind} IF EXISTS {object} CASCADE");
        match *kind {
            "VIEW" => drops.insert(0, statement),
            _ => drops.push(statement),
        }
    }
    drops
}

/// A quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `pg_restore`'s `--dbname`: a connection string naming only the database (quoted), the
/// rest of the connection coming from the environment ([`tool_env`]).
fn dbname_arg(url: &PgUrl) -> Result<String, BackupError> {
    let name = url
        .dbname()
        .ok_or_else(|| BackupError::Invalid(format!("{url} names no database")))?;
    let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
    Ok(format!("--dbname=dbname='{quoted}'"))
}

/// The dump file as `pg_restore`'s argument.
fn dump_path(dump: &Path) -> Result<String, BackupError> {
    if !dump.is_file() {
        return Err(BackupError::Invalid(format!(
            "{} does not exist",
            dump.display()
        )));
    }
    Ok(dump.display().to_string())
}

/// The error of connecting to a database that does not exist (SQLSTATE 3D000).
pub(crate) fn is_missing_database(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pg)
        if pg.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME))
}

/// A row count as stored.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_cover_tables_views_sequences_and_functions_of_the_toc() {
        let toc = "; Archive created at 2026-11-25\n\
            217; 1259 16391 SEQUENCE public devices_id_seq postgres\n\
            262; 1255 16540 FUNCTION public svoi_ensure_partition(text, text, bigint) postgres\n\
            216; 1259 16385 TABLE public devices postgres\n\
            3600; 0 0 TABLE ATTACH public raw_frames_default postgres\n\
            3601; 0 16385 TABLE DATA public devices postgres\n\
            3643; 0 0 SEQUENCE OWNED BY public raw_frames_id_seq postgres\n\
            235; 1259 16535 VIEW public v_records postgres\n\
            300; 2606 1 CONSTRAINT public devices devices_pkey postgres\n";
        assert_eq!(
            drop_statements(toc),
            [
                r#"DROP VIEW IF EXISTS "public"."v_records" CASCADE"#,
                r#"DROP SEQUENCE IF EXISTS "public"."devices_id_seq" CASCADE"#,
                r#"DROP FUNCTION IF EXISTS "public"."svoi_ensure_partition"(text, text, bigint) CASCADE"#,
                r#"DROP TABLE IF EXISTS "public"."devices" CASCADE"#,
            ]
        );
    }
}
