//! Database maintenance on both backends: [`Store::optimize`](crate::Store::optimize) (SQLite
//! `PRAGMA optimize`, `integrity_check`, incremental vacuum and a WAL checkpoint; PostgreSQL
//! `VACUUM (ANALYZE)` per table) and [`Store::db_stats`](crate::Store::db_stats) (table and
//! index sizes, index usage, slow statements).

use std::collections::HashMap;
use std::time::Instant;

use rusqlite::Connection;
use tokio_postgres::Client;

use super::{DbStats, IndexUsage, OptimizeReport, SlowQuery, TABLES, TableSize};
use crate::StoreError;
use crate::pg::wait;

/// Problems of a failed integrity check shown in the report (the rest are counted).
const SHOWN_PROBLEMS: usize = 5;

/// Slow statements listed.
const SLOW_QUERIES: i64 = 10;

fn pragma_i64(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))?)
}

pub(crate) fn optimize_sqlite(conn: &Connection) -> Result<OptimizeReport, StoreError> {
    let mut report = OptimizeReport {
        integrity_ok: true,
        ..OptimizeReport::default()
    };
    conn.execute_batch("PRAGMA optimize")?;
    report
        .steps
        .push(("optimize".to_owned(), "done".to_owned()));

    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let outcome = if problems == ["ok"] {
        "ok".to_owned()
    } else {
        report.integrity_ok = false;
        let mut text = problems
            .iter()
            .take(SHOWN_PROBLEMS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > SHOWN_PROBLEMS {
            text.push_str(&format!(" (and {} more)", problems.len() - SHOWN_PROBLEMS));
        }
        format!("failed: {text}")
    };
    report.steps.push(("integrity_check".to_owned(), outcome));

    let free_before = pragma_i64(conn, "freelist_count")?;
    let page_size = pragma_i64(conn, "page_size")?;
    let outcome = match pragma_i64(conn, "auto_vacuum")? {
        2 => {
            // Each step of the statement frees one page: step it to the end.
            let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            drop(rows);
            drop(stmt);
            let free_after = pragma_i64(conn, "freelist_count")?;
            format!(
                "freed {} pages ({} bytes); {free_after} free pages left",
                free_before - free_after,
                (free_before - free_after) * page_size
            )
        }
        mode => format!(
            "nothing to do: auto_vacuum is {} (not incremental), so the {free_before} free \
             pages ({} bytes) stay in the file for reuse; VACUUM with the server stopped \
             returns them",
            if mode == 1 { "full" } else { "none" },
            free_before * page_size
        ),
    };
    report
        .steps
        .push(("incremental_vacuum".to_owned(), outcome));

    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let outcome = if busy == 0 {
        format!("truncated the wal ({done} of {log} frames copied)")
    } else {
        format!("busy: a reader or writer held the wal ({done} of {log} frames copied)")
    };
    report.steps.push(("wal_checkpoint".to_owned(), outcome));
    Ok(report)
}

/// Runs `work` with the session's statement timeout lifted (VACUUM of a big table, or
/// retention deleting a month of rows, outlasts the store's timeout), then puts the
/// session's value back.
pub(crate) fn without_statement_timeout<T>(
    client: &mut Client,
    work: impl FnOnce(&mut Client) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let timeout: String = wait(client.query_one("SHOW statement_timeout", &[]))?.try_get(0)?;
    wait(client.batch_execute("SET statement_timeout = 0"))?;
    let result = work(client);
    let restored = wait(client.batch_execute(&format!(
        "SET statement_timeout = '{}'",
        timeout.replace('\'', "")
    )));
    let value = result?;
    restored?;
    Ok(value)
}

pub(crate) fn optimize_pg(client: &mut Client) -> Result<OptimizeReport, StoreError> {
    without_statement_timeout(client, |client| {
        let mut report = OptimizeReport {
            integrity_ok: true,
            ..OptimizeReport::default()
        };
        for table in TABLES {
            let started = Instant::now();
            // Its own statement outside a transaction block, as VACUUM needs; a partitioned
            // table's partitions are vacuumed with it.
            wait(client.batch_execute(&format!("VACUUM (ANALYZE) {table}")))?;
            report.steps.push((
                format!("VACUUM ANALYZE {table}"),
                format!("done in {} ms", started.elapsed().as_millis()),
            ));
        }
        Ok(report)
    })
}

/// Page bytes per b-tree name from `dbstat`; `None` when this SQLite has no `dbstat`.
fn dbstat(conn: &Connection) -> Result<Option<HashMap<String, i64>>, StoreError> {
    let mut stmt = match conn.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name") {
        Ok(stmt) => stmt,
        Err(_) => return Ok(None),
    };
    let sizes = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(sizes))
}

pub(crate) fn db_stats_sqlite(conn: &Connection) -> Result<DbStats, StoreError> {
    let version: String = conn.query_row("SELECT sqlite_version()", [], |row| row.get(0))?;
    let database_bytes = pragma_i64(conn, "page_count")? * pragma_i64(conn, "page_size")?;
    let sizes = dbstat(conn)?;
    let size = |name: &str| sizes.as_ref().map(|s| s.get(name).copied().unwrap_or(0));

    let mut indexes = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' ORDER BY tbl_name, name",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
    for row in rows {
        let (name, table): (String, String) = row?;
        if !TABLES.contains(&table.as_str()) {
            continue;
        }
        indexes.push(IndexUsage {
            bytes: size(&name),
            name,
            table,
            scans: None,
        });
    }
    let mut tables = Vec::new();
    for table in TABLES {
        let rows: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        let index_bytes = sizes.as_ref().map(|_| {
            indexes
                .iter()
                .filter(|i| i.table == table)
                .filter_map(|i| i.bytes)
                .sum()
        });
        tables.push(TableSize {
            name: table.to_owned(),
            rows,
            table_bytes: size(table),
            index_bytes,
        });
    }
    sort(&mut tables, &mut indexes);
    Ok(DbStats {
        server_version: format!("sqlite {version}"),
        database_bytes,
        tables,
        indexes,
        slow_queries: Err(
            "SQLite keeps no statement statistics (pg_stat_statements is a \
                           PostgreSQL extension)"
                .to_owned(),
        ),
    })
}

/// Largest first, then by name.
fn sort(tables: &mut [TableSize], indexes: &mut [IndexUsage]) {
    tables.sort_by(|a, b| {
        let size = |t: &TableSize| t.table_bytes.unwrap_or(0) + t.index_bytes.unwrap_or(0);
        size(b)
            .cmp(&size(a))
            .then(b.rows.cmp(&a.rows))
            .then(a.name.cmp(&b.name))
    });
    indexes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
}

/// Sizes of one table summed over its partitions (a plain table is its own only one).
const PG_TABLE_SIZE: &str = "
    SELECT coalesce(sum(pg_total_relation_size(p.relid) - pg_indexes_size(p.relid)), 0)::bigint,
           coalesce(sum(pg_indexes_size(p.relid)), 0)::bigint
    FROM pg_partition_tree($1::text::regclass) p
    WHERE p.isleaf";

/// The indexes of the SVOI tables (of the parents, not of each partition), with their bytes
/// and scans summed over the partitions' indexes.
const PG_INDEXES: &str = "
    SELECT ix.relname::text, t.relname::text,
           (SELECT coalesce(sum(pg_relation_size(p.relid)), 0)
              FROM pg_partition_tree(ix.oid) p)::bigint,
           (SELECT sum(s.idx_scan) FROM pg_partition_tree(ix.oid) p
              JOIN pg_stat_user_indexes s ON s.indexrelid = p.relid)::bigint
    FROM pg_index i
    JOIN pg_class ix ON ix.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    WHERE t.relname = ANY($1) AND NOT t.relispartition
      AND t.relnamespace = to_regnamespace(current_schema())";

pub(crate) fn db_stats_pg(client: &Client) -> Result<DbStats, StoreError> {
    let version: String = wait(client.query_one("SHOW server_version", &[]))?.try_get(0)?;
    let database_bytes: i64 =
        wait(client.query_one("SELECT pg_database_size(current_database())", &[]))?.try_get(0)?;
    let counts = super::pg::table_counts(client)?;
    let mut tables = Vec::new();
    for table in TABLES {
        let row = wait(client.query_one(PG_TABLE_SIZE, &[&table]))?;
        tables.push(TableSize {
            name: table.to_owned(),
            rows: counts.get(table).copied().unwrap_or(0),
            table_bytes: Some(row.try_get(0)?),
            index_bytes: Some(row.try_get(1)?),
        });
    }
    let names: Vec<&str> = TABLES.to_vec();
    let mut indexes = Vec::new();
    for row in wait(client.query(PG_INDEXES, &[&names]))? {
        indexes.push(IndexUsage {
            name: row.try_get(0)?,
            table: row.try_get(1)?,
            bytes: Some(row.try_get(2)?),
            scans: row.try_get(3)?,
        });
    }
    sort(&mut tables, &mut indexes);
    Ok(DbStats {
        server_version: format!("PostgreSQL {version}"),
        database_bytes,
        tables,
        indexes,
        slow_queries: slow_queries(client)?,
    })
}

/// The slowest statements of this database by mean time, or why there are none to show.
fn slow_queries(client: &Client) -> Result<Result<Vec<SlowQuery>, String>, StoreError> {
    let installed = wait(client.query_opt(
        "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'",
        &[],
    ))?
    .is_some();
    if !installed {
        return Ok(Err(
            "pg_stat_statements is not installed in this database: add it to \
                       shared_preload_libraries, restart PostgreSQL and run CREATE EXTENSION \
                       pg_stat_statements"
                .to_owned(),
        ));
    }
    let rows = wait(client.query(
        "SELECT query, calls, mean_exec_time, total_exec_time FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY mean_exec_time DESC LIMIT $1",
        &[&SLOW_QUERIES],
    ));
    let rows = match rows {
        Ok(rows) => rows,
        // Installed but not loaded, or a version without these columns: say so, the rest of
        // the statistics stand.
        Err(e) => return Ok(Err(format!("pg_stat_statements: {}", StoreError::from(e)))),
    };
    let mut slow = Vec::with_capacity(rows.len());
    for row in rows {
        slow.push(SlowQuery {
            query: row.try_get(0)?,
            calls: row.try_get(1)?,
            mean_ms: row.try_get(2)?,
            total_ms: row.try_get(3)?,
        });
    }
    Ok(Ok(slow))
}
