//! `svoi backup restore`: a backup restored into the configured database, after a
//! `pre-restore` backup of what that database holds. Refuses while a server uses the database
//! unless forced; the store carries the operations rows over and bumps the restore epoch.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use svoi_store::backup::{self as store_backup, Carried, DATA_TABLES, PgTools};
use svoi_store::{DbUrl, LogResult, RowCounts};

use super::manifest::{self, BackupKind};
use super::verify::check_sha256;
use crate::cmd::smoke::report::Status;
use crate::config::Loaded;
use crate::oplog::Op;

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreOutcome {
    /// The backup restored (`latest` resolved).
    pub id: String,
    /// The database restored into (password redacted).
    pub target: String,
    /// The `pre-restore` backup taken of the database first, when it had data.
    pub pre_restore: Option<String>,
    /// The server that was using the database when `--force` overrode the refusal.
    pub forced_past: Option<String>,
    /// Operations rows carried over, and the new restore epoch.
    pub carried: Carried,
    /// Row counts of the database after the restore.
    pub counts: RowCounts,
    /// Data tables whose count differs from the manifest (`records: 10 restored, manifest
    /// 12`); empty when the restore is exact.
    pub mismatches: Vec<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl RestoreOutcome {
    /// Every data table has the manifest's row count.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// What `svoi backup restore` prints.
    pub fn text(&self) -> String {
        let mut out = format!("restored backup {} into {}\n", self.id, self.target);
        match &self.pre_restore {
            Some(id) => out.push_str(&format!("pre-restore backup: {id}\n")),
            None => out.push_str("pre-restore backup: none (the database had no data)\n"),
        }
        out.push_str(&format!(
            "carried over: {} log entries, {} windows, {} hourly rows; restore epoch {}\n",
            self.carried.log_entries,
            self.carried.windows,
            self.carried.hourly_stats,
            self.carried.epoch
        ));
        let data: i64 = DATA_TABLES.iter().filter_map(|t| self.counts.get(*t)).sum();
        if self.ok() {
            out.push_str(&format!(
                "row counts: {data} data rows, as in the manifest\n"
            ));
        } else {
            out.push_str(&format!(
                "ROW COUNTS DIFFER: {}\n",
                self.mismatches.join("; ")
            ));
        }
        out
    }

    /// The maintenance log's details.
    fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "target": self.target,
            "pre_restore": self.pre_restore,
            "forced_past": self.forced_past,
            "carried": {
                "log_entries": self.carried.log_entries,
                "windows": self.carried.windows,
                "hourly_stats": self.carried.hourly_stats,
            },
            "epoch": self.carried.epoch,
            "row_counts": self.counts,
            "mismatches": self.mismatches,
            "duration_ms": self.duration_ms,
        })
    }
}

/// Restores the backup `id` (`latest`: the newest) of `backup.dir` into the configured
/// database. Refuses, naming the server, while one uses the database, unless `force`; refuses
/// a backup whose sha256 does not match its manifest, or of the other backend. Takes a
/// `pre-restore` backup first when the database exists and has data (a failure aborts).
/// Appends a `restore` entry to the maintenance log (`failed` when it failed or the restored
/// counts differ from the manifest).
pub fn restore(loaded: &Loaded, id: &str, force: bool) -> Result<RestoreOutcome> {
    let op = Op::begin("restore");
    let result = restore_inner(loaded, id, force);
    match &result {
        Ok(o) => {
            let (level, word) = if o.ok() {
                (LogResult::Ok, "restored")
            } else {
                (LogResult::Failed, "restored with differing row counts")
            };
            op.finish(
                loaded,
                level,
                format!("backup {} {word} into {}", o.id, o.target),
                o.json(),
            );
        }
        Err(e) => {
            op.finish(
                loaded,
                LogResult::Failed,
                format!("restore of {id} failed: {e:#}"),
                json!({ "id": id, "force": force, "error": format!("{e:#}") }),
            );
        }
    }
    result
}

/// [`restore`] without the log entry.
fn restore_inner(loaded: &Loaded, id: &str, force: bool) -> Result<RestoreOutcome> {
    let clock = Instant::now();
    let (url, opts) = crate::cmd::store_options(loaded)?;
    let dir = &loaded.config.backup.dir;
    let manifest = manifest::resolve(dir, id)?;
    let backend = match url {
        DbUrl::Sqlite(_) => "sqlite",
        DbUrl::Postgres(_) => "postgres",
    };
    if manifest.backend != backend {
        bail!(
            "backup {} is of a {} database; the configured database {url} is {backend}",
            manifest.id,
            manifest.backend
        );
    }
    let forced_past = store_backup::server_using(&url, &opts)
        .with_context(|| format!("cannot tell whether a server is using {url}"))?;
    if let Some(who) = &forced_past {
        if !force {
            bail!(
                "refusing to restore into {url}: {who} is using it; stop the server first \
                 (or pass --force to restore under it)"
            );
        }
        eprintln!("svoi: warning: {who} is using {url}; restoring anyway (--force)");
    }
    let data = dir.join(&manifest.id).join(&manifest.file);
    let (status, detail) = check_sha256(&manifest, &data);
    if status != Status::Pass {
        bail!(
            "backup {} is damaged ({detail}); run svoi backup verify {}",
            manifest.id,
            manifest.id
        );
    }
    let live =
        store_backup::live_snapshot(&url, &opts).with_context(|| format!("cannot read {url}"))?;
    let pre_restore = match live {
        Some(snapshot) if snapshot.data_rows() > 0 => {
            eprintln!(
                "svoi: {url} holds {} data rows: taking a pre-restore backup first",
                snapshot.data_rows()
            );
            let taken = super::create(loaded, BackupKind::PreRestore, Some("pre-restore"))
                .context("the pre-restore backup failed, nothing was restored")?;
            Some(taken.id)
        }
        _ => None,
    };
    eprintln!("svoi: restoring backup {} into {url}", manifest.id);
    let carried = match &url {
        DbUrl::Sqlite(db) => {
            let scratch = tempfile::Builder::new()
                .prefix(".restore-")
                .tempdir_in(dir)
                .with_context(|| format!("cannot create scratch space in {}", dir.display()))?;
            let file = scratch.path().join("svoi.sqlite");
            super::gunzip(&data, &file)?;
            store_backup::restore_sqlite(&file, db, &opts)
                .with_context(|| format!("cannot restore into {}", db.display()))?
        }
        DbUrl::Postgres(pg) => {
            let tools = PgTools::find(loaded.config.backup.pg_bin_dir.as_deref())?;
            store_backup::restore_postgres(pg, &opts, &tools, &data)
                .with_context(|| format!("cannot restore into {url}"))?
        }
    };
    let after = store_backup::live_snapshot(&url, &opts)?
        .with_context(|| format!("{url} is missing after the restore"))?;
    let mismatches = DATA_TABLES
        .iter()
        .filter_map(|table| {
            let want = manifest.row_counts.get(*table);
            let got = after.counts.get(*table);
            (want != got).then(|| {
                let show = |n: Option<&i64>| n.map_or_else(|| "none".to_string(), i64::to_string);
                format!("{table}: {} restored, manifest {}", show(got), show(want))
            })
        })
        .collect();
    Ok(RestoreOutcome {
        id: manifest.id,
        target: url.to_string(),
        pre_restore,
        forced_past,
        carried,
        counts: after.counts,
        mismatches,
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
