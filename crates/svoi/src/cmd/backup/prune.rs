//! `svoi backup prune`: backups older than `keep_days` deleted, the newest `keep_last` always
//! kept whatever their age. Broken entries are never deleted (a person should look at them).

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::LogResult;

use super::manifest::{self, Entry};
use crate::config::Loaded;
use crate::oplog::Op;

/// What a prune did (or would do, on a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Backups kept, newest first.
    pub kept: Vec<String>,
    /// Backups deleted (on a dry run: that would be), newest first.
    pub deleted: Vec<String>,
    /// Entries whose manifest does not read, left alone.
    pub broken: Vec<String>,
    /// Bytes of data files deleted.
    pub freed_bytes: u64,
    /// Nothing was deleted.
    pub dry_run: bool,
}

impl PruneOutcome {
    /// What `svoi backup prune` prints.
    pub fn text(&self) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut out = String::new();
        for id in &self.deleted {
            out.push_str(&format!("{verb} {id}\n"));
        }
        for id in &self.broken {
            out.push_str(&format!("left broken entry {id} alone\n"));
        }
        out.push_str(&format!(
            "prune: {} kept, {} {verb} ({} bytes)\n",
            self.kept.len(),
            self.deleted.len(),
            self.freed_bytes
        ));
        out
    }
}

/// Deletes the backups of `backup.dir` created more than `keep_days` days ago, except the
/// newest `keep_last` (which are kept whatever their age). A dry run deletes nothing and says
/// what would go. A real run appends a `prune` entry to the maintenance log.
pub fn prune(
    loaded: &Loaded,
    keep_days: usize,
    keep_last: usize,
    dry_run: bool,
) -> Result<PruneOutcome> {
    let op = Op::begin("prune");
    let result = prune_inner(loaded, keep_days, keep_last, dry_run);
    if !dry_run {
        match &result {
            Ok(o) => {
                op.finish(
                    loaded,
                    LogResult::Ok,
                    format!(
                        "pruned backups: {} deleted, {} kept",
                        o.deleted.len(),
                        o.kept.len()
                    ),
                    json!({
                        "keep_days": keep_days,
                        "keep_last": keep_last,
                        "deleted": o.deleted,
                        "kept": o.kept,
                        "broken": o.broken,
                        "freed_bytes": o.freed_bytes,
                    }),
                );
            }
            Err(e) => {
                op.finish(
                    loaded,
                    LogResult::Failed,
                    format!("prune failed: {e:#}"),
                    json!({ "error": format!("{e:#}") }),
                );
            }
        }
    }
    result
}

/// [`prune`] without the log entry.
fn prune_inner(
    loaded: &Loaded,
    keep_days: usize,
    keep_last: usize,
    dry_run: bool,
) -> Result<PruneOutcome> {
    let dir = &loaded.config.backup.dir;
    let days = i64::try_from(keep_days).unwrap_or(i64::MAX / 86_400);
    let cutoff = jiff::Timestamp::now()
        .as_second()
        .saturating_sub(days.saturating_mul(86_400));
    let mut outcome = PruneOutcome {
        dry_run,
        ..PruneOutcome::default()
    };
    let mut newest = 0;
    for entry in manifest::scan(dir)? {
        let m = match entry {
            Entry::Backup(m) => *m,
            Entry::Broken { id, .. } => {
                outcome.broken.push(id);
                continue;
            }
        };
        newest += 1;
        let created = m
            .created_at
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .ok();
        // An unreadable time is no reason to delete.
        let old = created.is_some_and(|t| t < cutoff);
        if newest <= keep_last || !old {
            outcome.kept.push(m.id);
            continue;
        }
        if !dry_run {
            let path = dir.join(&m.id);
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot delete {}", path.display()))?;
        }
        outcome.freed_bytes += m.bytes;
        outcome.deleted.push(m.id);
    }
    Ok(outcome)
}
