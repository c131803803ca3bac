//! Retention on PostgreSQL: whole monthly partitions (`raw_frames_yYYYYmMM`,
//! `records_yYYYYmMM`) whose upper bound is at or before the cutoff are counted and dropped;
//! the older rows of the partition straddling the cutoff and of the `_default` partition are
//! deleted through the parent (partition pruning finds them). There are no foreign keys to
//! raw frames on PostgreSQL, so the dependent rows are handled explicitly, as on SQLite:
//! records' `frame` unset, decode errors, current states, alarm events and additional
//! records of the removed frames deleted, in the same transaction as their frames. A
//! partition whose lock is not granted within a short time (a backup is reading it) is not
//! dropped: its rows are deleted like the straddling partition's.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::{FRAME_DEPENDENTS, US};
use crate::pg::wait;
use crate::{RetentionPlan, RetentionReport, StoreError};

/// A monthly partition: its name and key range `[lo, hi)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    name: String,
    lo: i64,
    hi: i64,
}

/// The partition bound of a `FOR VALUES FROM ('lo') TO ('hi')` expression; `None` for the
/// default partition or anything else.
fn bounds(expr: &str) -> Option<(i64, i64)> {
    if expr.contains("DEFAULT") {
        return None;
    }
    let numbers: Vec<i64> = expr
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter_map(|t| t.parse().ok())
        .collect();
    match numbers.as_slice() {
        [lo, hi] => Some((*lo, *hi)),
        _ => None,
    }
}

/// Whether `name` is a monthly partition of `parent` as the store names them.
fn is_monthly(parent: &str, name: &str) -> bool {
    let Some(suffix) = name.strip_prefix(parent).and_then(|s| s.strip_prefix("_y")) else {
        return false;
    };
    let b = suffix.as_bytes();
    b.len() == 7
        && b[4] == b'm'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

/// The monthly partitions of `parent` wholly before `cutoff` (upper bound <= cutoff), oldest
/// first.
fn whole_before(
    client: &impl GenericClient,
    parent: &str,
    cutoff: i64,
) -> Result<Vec<Partition>, StoreError> {
    let rows = wait(client.query(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::text::regclass",
        &[&parent],
    ))?;
    let mut parts = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let expr: String = row.try_get(1)?;
        if !is_monthly(parent, &name) {
            continue;
        }
        if let Some((lo, hi)) = bounds(&expr)
            && hi <= cutoff
        {
            parts.push(Partition { name, lo, hi });
        }
    }
    parts.sort_by_key(|p| p.lo);
    Ok(parts)
}

fn count(client: &impl GenericClient, sql: &str, cutoff: i64) -> Result<i64, StoreError> {
    Ok(wait(client.query_one(sql, &[&cutoff]))?.try_get(0)?)
}

/// The rows of the table `name` (a partition [`whole_before`] found).
fn rows_of(client: &impl GenericClient, name: &str) -> Result<i64, StoreError> {
    Ok(wait(client.query_one(&format!("SELECT count(*) FROM \"{name}\""), &[]))?.try_get(0)?)
}

pub(crate) fn retention(
    client: &mut Client,
    plan: &RetentionPlan,
    dry_run: bool,
) -> Result<RetentionReport, StoreError> {
    if dry_run {
        return dry(client, plan);
    }
    let mut report = RetentionReport::default();
    if let Some(cutoff) = plan.records_before_s {
        let mut n = 0;
        for part in whole_before(client, "records", cutoff)? {
            let tx = wait(client.transaction())?;
            let rows = rows_of(&tx, &part.name)?;
            if drop_partition(&tx, &part.name)? {
                wait(tx.commit())?;
                n += rows;
                report.dropped_partitions.push(part.name);
            }
        }
        let tx = wait(client.transaction())?;
        n += wait(tx.execute("DELETE FROM records WHERE event_time < $1", &[&cutoff]))? as i64;
        n += wait(tx.execute(
            "DELETE FROM records WHERE event_time IS NULL AND received_at_us < $1",
            &[&cutoff.saturating_mul(US)],
        ))? as i64;
        wait(tx.commit())?;
        report.deleted.insert("records".to_owned(), n);
    }
    if let Some(cutoff) = plan.raw_frames_before_us {
        for table in ["raw_frames"].into_iter().chain(FRAME_DEPENDENTS) {
            report.deleted.insert(table.to_owned(), 0);
        }
        for part in whole_before(client, "raw_frames", cutoff)? {
            let tx = wait(client.transaction())?;
            let source = format!("SELECT id FROM \"{}\"", part.name);
            let dependents = remove_frames(&tx, &source)?;
            let rows = rows_of(&tx, &part.name)?;
            if drop_partition(&tx, &part.name)? {
                wait(tx.commit())?;
                for (table, n) in dependents {
                    add(&mut report, table, n);
                }
                add(&mut report, "raw_frames", rows);
                report.dropped_partitions.push(part.name);
            }
        }
        // What is left before the cutoff: the straddling partition, the default one, and any
        // partition that could not be dropped.
        let tx = wait(client.transaction())?;
        wait(tx.execute(
            "CREATE TEMP TABLE svoi_retention_frames ON COMMIT DROP AS
             SELECT id FROM raw_frames WHERE received_at_us < $1",
            &[&cutoff],
        ))?;
        let dependents = remove_frames(&tx, "SELECT id FROM svoi_retention_frames")?;
        let n = wait(tx.execute(
            "DELETE FROM raw_frames WHERE received_at_us < $1",
            &[&cutoff],
        ))? as i64;
        wait(tx.commit())?;
        for (table, n) in dependents {
            add(&mut report, table, n);
        }
        add(&mut report, "raw_frames", n);
    }
    Ok(report)
}

/// How long dropping a partition waits for its lock. `DROP TABLE` of a partition needs an
/// exclusive lock on the parent, which waits for every reader of the table (a `pg_dump`
/// running a backup holds one for the whole dump) while the server's inserts queue behind
/// it: better give up soon and delete the partition's rows instead.
const DROP_LOCK_TIMEOUT: &str = "2s";

/// Drops the partition `name` inside `tx`; `false` (the transaction rolled back, nothing
/// done) when its lock was not granted within [`DROP_LOCK_TIMEOUT`]: its rows are then
/// deleted with the straddling partition's.
fn drop_partition(tx: &Transaction<'_>, name: &str) -> Result<bool, StoreError> {
    wait(tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")))?;
    match wait(tx.batch_execute(&format!("DROP TABLE \"{name}\""))) {
        Ok(()) => {
            wait(tx.batch_execute("SET LOCAL lock_timeout = 0"))?;
            Ok(true)
        }
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn add(report: &mut RetentionReport, table: &str, n: i64) {
    *report.deleted.entry(table.to_owned()).or_default() += n;
}

/// Unsets `records.frame` and deletes the dependent rows of the frames whose ids `source`
/// (a query) selects; returns the rows deleted per table.
fn remove_frames(
    tx: &Transaction<'_>,
    source: &str,
) -> Result<Vec<(&'static str, i64)>, StoreError> {
    wait(tx.execute(
        &format!("UPDATE records SET frame = NULL WHERE frame IN ({source})"),
        &[],
    ))?;
    let mut deleted = Vec::with_capacity(FRAME_DEPENDENTS.len());
    for table in FRAME_DEPENDENTS {
        let n = wait(tx.execute(
            &format!("DELETE FROM {table} WHERE frame IN ({source})"),
            &[],
        ))? as i64;
        deleted.push((table, n));
    }
    Ok(deleted)
}

/// What a run would remove: the same counts, through the parents, in one snapshot.
fn dry(client: &mut Client, plan: &RetentionPlan) -> Result<RetentionReport, StoreError> {
    let tx = wait(
        client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start(),
    )?;
    let mut report = RetentionReport::default();
    if let Some(cutoff) = plan.records_before_s {
        for part in whole_before(&tx, "records", cutoff)? {
            report.dropped_partitions.push(part.name);
        }
        let row = wait(tx.query_one(
            "SELECT count(*) FROM records
             WHERE event_time < $1 OR (event_time IS NULL AND received_at_us < $2)",
            &[&cutoff, &cutoff.saturating_mul(US)],
        ))?;
        report.deleted.insert("records".to_owned(), row.try_get(0)?);
    }
    if let Some(cutoff) = plan.raw_frames_before_us {
        for part in whole_before(&tx, "raw_frames", cutoff)? {
            report.dropped_partitions.push(part.name);
        }
        let n = count(
            &tx,
            "SELECT count(*) FROM raw_frames WHERE received_at_us < $1",
            cutoff,
        )?;
        report.deleted.insert("raw_frames".to_owned(), n);
        for table in FRAME_DEPENDENTS {
            let n = count(
                &tx,
                &format!(
                    "SELECT count(*) FROM {table} WHERE frame IN
                     (SELECT id FROM raw_frames WHERE received_at_us < $1)"
                ),
                cutoff,
            )?;
            report.deleted.insert(table.to_owned(), n);
        }
    }
    wait(tx.commit())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_the_partition_expression() {
        assert_eq!(
            bounds("FOR VALUES FROM ('1698796800000000') TO ('1701388800000000')"),
            Some((1_698_796_800_000_000, 1_701_388_800_000_000))
        );
        assert_eq!(bounds("FOR VALUES FROM ('-10') TO ('5')"), Some((-10, 5)));
        assert_eq!(bounds("DEFAULT"), None);
    }

    #[test]
    fn only_monthly_partitions_of_the_parent_count() {
        assert!(is_monthly("records", "records_y2024m01"));
        assert!(is_monthly("raw_frames", "raw_frames_y1999m12"));
        assert!(!is_monthly("records", "records_default"));
        assert!(!is_monthly("records", "raw_frames_y2024m01"));
        assert!(!is_monthly("records", "records_y2024m1"));
        assert!(!is_monthly("records", "records_y2024x01"));
    }
}
