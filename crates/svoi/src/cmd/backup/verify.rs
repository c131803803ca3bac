//! `svoi backup verify`: a backup restored into scratch space and checked: the data file's
//! sha256, decompression, the database's integrity (SQLite `integrity_check` and
//! `foreign_key_check`; PostgreSQL `pg_restore --exit-on-error` into a scratch database), row
//! counts and schema version against the manifest. The result goes to `verify.json` next to
//! the manifest and to the maintenance log.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::backup::{self as store_backup, PgTools, Snapshot};
use svoi_store::{DbUrl, LogResult, RowCounts};

use super::manifest::{self, Manifest};
use crate::cmd::smoke::report::{Outcome, Report, Status, fail, pass, skip};
use crate::config::Loaded;
use crate::oplog::Op;

/// The outcome of verifying one backup.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The backup's ID (`latest` resolved).
    pub id: String,
    /// Every check passed.
    pub ok: bool,
    /// The checklist: `sha256`, `decompress` (SQLite), `integrity`, `row_counts`,
    /// `schema_version`.
    pub report: Report,
    /// When it was verified (RFC 3339).
    pub verified_at: String,
    /// How long it took.
    pub duration_ms: u64,
}

impl Verification {
    /// `verify.json` and the `--json` document: `{"id", "ok", "verified_at", "duration_ms",
    /// "checks": [...]}`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "ok": self.ok,
            "verified_at": self.verified_at,
            "duration_ms": self.duration_ms,
            "checks": self.report.json()["checks"],
        })
    }
}

/// Verifies the backup `id` (`latest`: the newest) of `backup.dir`, writes `verify.json` into
/// it and appends a `verify` entry to the maintenance log (`failed` when a check failed or
/// the verification could not run). Errors when the backup cannot be found or read.
pub fn verify(loaded: &Loaded, id: &str) -> Result<Verification> {
    let op = Op::begin("verify");
    let result = verify_inner(loaded, id);
    match &result {
        Ok(v) => {
            let word = if v.ok {
                "verified"
            } else {
                "FAILED verification"
            };
            op.finish(
                loaded,
                if v.ok {
                    LogResult::Ok
                } else {
                    LogResult::Failed
                },
                format!("backup {} {word}: {}", v.id, v.report.summary()),
                v.json(),
            );
        }
        Err(e) => {
            op.finish(
                loaded,
                LogResult::Failed,
                format!("verify {id} failed: {e:#}"),
                json!({ "id": id, "error": format!("{e:#}") }),
            );
        }
    }
    result
}

/// [`verify`] without the log entry.
fn verify_inner(loaded: &Loaded, id: &str) -> Result<Verification> {
    let clock = Instant::now();
    let dir = &loaded.config.backup.dir;
    let manifest = manifest::resolve(dir, id)?;
    let backup_dir = dir.join(&manifest.id);
    let data = backup_dir.join(&manifest.file);
    eprintln!("svoi: verifying backup {}", manifest.id);
    let mut report = Report::new("verify");
    report.run("sha256", || check_sha256(&manifest, &data));
    match manifest.backend.as_str() {
        "sqlite" => verify_sqlite(dir, &manifest, &data, &mut report)?,
        "postgres" => verify_postgres(loaded, &manifest, &data, &mut report),
        other => {
            report.push(
                "integrity",
                fail(format!("unknown backend {other:?} in the manifest")),
                0,
            );
        }
    }
    let verification = Verification {
        id: manifest.id.clone(),
        ok: report.ok(),
        report,
        verified_at: manifest::rfc3339(jiff::Timestamp::now()),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let text = serde_json::to_vec_pretty(&verification.json()).context("cannot encode")?;
    manifest::write_atomic(&backup_dir.join(manifest::VERIFY), &text)?;
    Ok(verification)
}

/// The data file's sha256 against the manifest's.
pub(super) fn check_sha256(manifest: &Manifest, data: &Path) -> Outcome {
    match manifest::sha256_file(data) {
        Ok(sum) if sum == manifest.sha256 => {
            pass(format!("{} matches the manifest", manifest.file))
        }
        Ok(sum) => fail(format!(
            "{} has sha256 {sum}, the manifest says {}",
            manifest.file, manifest.sha256
        )),
        Err(e) => fail(format!("{e:#}")),
    }
}

/// Decompression, integrity, counts and schema version of an SQLite backup, in a scratch
/// directory inside the backup directory (the copy may be large; `/tmp` may be small).
fn verify_sqlite(dir: &Path, manifest: &Manifest, data: &Path, report: &mut Report) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create scratch space in {}", dir.display()))?;
    let file = scratch.path().join("svoi.sqlite");
    let clock = Instant::now();
    let unpacked = match super::gunzip(data, &file) {
        Ok(n) => pass(format!("gzip ok, {n} bytes")),
        Err(e) => fail(format!("{e:#}")),
    };
    if report.push("decompress", unpacked, ms(clock)) != Status::Pass {
        skip_rest(report, "decompress");
        return Ok(());
    }
    let clock = Instant::now();
    match store_backup::check_sqlite(&file) {
        Ok(check) => {
            let outcome = if check.ok() {
                pass("integrity_check ok, foreign keys ok")
            } else if check.integrity != ["ok"] {
                fail(format!(
                    "integrity_check: {}",
                    check
                        .integrity
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            } else {
                fail(format!(
                    "foreign_key_check: {} problems, first: {}",
                    check.foreign_key_problems.len(),
                    check
                        .foreign_key_problems
                        .first()
                        .cloned()
                        .unwrap_or_default()
                ))
            };
            report.push("integrity", outcome, ms(clock));
            compare_with_manifest(report, manifest, &check.snapshot);
        }
        Err(e) => {
            report.push("integrity", fail(format!("{e:#}")), ms(clock));
            skip_rest(report, "integrity");
        }
    }
    Ok(())
}

/// The `row_counts` and `schema_version` items: what the scratch database holds against what
/// the manifest says.
fn compare_with_manifest(report: &mut Report, manifest: &Manifest, snapshot: &Snapshot) {
    report.run("row_counts", || {
        compare_counts(&manifest.row_counts, &snapshot.counts)
    });
    report.run("schema_version", || {
        compare_schema(manifest.schema_version, snapshot.schema_version)
    });
}

/// `pg_restore` into a scratch database on the configured PostgreSQL server, then counts and
/// schema version there.
fn verify_postgres(loaded: &Loaded, manifest: &Manifest, data: &Path, report: &mut Report) {
    let clock = Instant::now();
    let checked = (|| -> Result<_> {
        let (url, opts) = crate::cmd::store_options(loaded)?;
        let DbUrl::Postgres(pg) = url else {
            anyhow::bail!(
                "a postgresql backup is verified on a postgresql server: the configured \
                 database is {url} (set --db postgres://...)"
            );
        };
        let tools = PgTools::find(loaded.config.backup.pg_bin_dir.as_deref())?;
        Ok(store_backup::check_postgres(&pg, &opts, &tools, data)?)
    })();
    match checked {
        Ok(check) => {
            report.push(
                "integrity",
                pass(format!(
                    "pg_restore --exit-on-error into {} ok (dropped again)",
                    check.scratch_database
                )),
                ms(clock),
            );
            compare_with_manifest(report, manifest, &check.snapshot);
        }
        Err(e) => {
            report.push("integrity", fail(format!("{e:#}")), ms(clock));
            skip_rest(report, "integrity");
        }
    }
}

/// Skips the checks that need the one that failed.
fn skip_rest(report: &mut Report, failed: &str) {
    if failed == "decompress" {
        report.push("integrity", skip("skipped: decompress failed"), 0);
    }
    report.push("row_counts", skip(format!("skipped: {failed} failed")), 0);
    report.push(
        "schema_version",
        skip(format!("skipped: {failed} failed")),
        0,
    );
}

/// Counts found against the manifest's: every table equal, none missing or extra.
pub(super) fn compare_counts(expected: &RowCounts, found: &RowCounts) -> Outcome {
    let mut differences = Vec::new();
    for (table, want) in expected {
        match found.get(table) {
            Some(got) if got == want => {}
            Some(got) => differences.push(format!("{table}: {got} restored, manifest {want}")),
            None => differences.push(format!("{table}: missing, manifest {want}")),
        }
    }
    for (table, got) in found {
        if !expected.contains_key(table) {
            differences.push(format!("{table}: {got} restored, not in the manifest"));
        }
    }
    if differences.is_empty() {
        pass(format!(
            "{} tables, {} rows, as in the manifest",
            found.len(),
            found.values().sum::<i64>()
        ))
    } else {
        fail(differences.join("; "))
    }
}

/// The schema version found against the manifest's.
fn compare_schema(expected: u32, found: u32) -> Outcome {
    if expected == found {
        pass(format!("{found}, as in the manifest"))
    } else {
        fail(format!("{found} restored, manifest {expected}"))
    }
}

/// Milliseconds since `clock`.
fn ms(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> RowCounts {
        pairs.iter().map(|(t, n)| ((*t).to_string(), *n)).collect()
    }

    #[test]
    fn counts_must_match_table_by_table() {
        let want = counts(&[("devices", 2), ("records", 10)]);
        assert_eq!(compare_counts(&want, &want.clone()).0, Status::Pass);
        let (status, detail) = compare_counts(&want, &counts(&[("devices", 2), ("records", 9)]));
        assert_eq!(status, Status::Fail);
        assert_eq!(detail, "records: 9 restored, manifest 10");
        let (status, detail) = compare_counts(&want, &counts(&[("devices", 2)]));
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("records: missing"), "{detail}");
        let more = counts(&[("devices", 2), ("records", 10), ("layouts", 1)]);
        assert_eq!(compare_counts(&want, &more).0, Status::Fail);
    }
}
