//! The backup directory: one `<dir>/<ID>/` per backup with `manifest.json` and the data file,
//! written under `<dir>/.tmp-<ID>/` and renamed into place, so a listed backup is always
//! whole. IDs, manifests, listing and the files' sha256.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use svoi_store::RowCounts;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// The verification result's file name (written by `backup verify`; the manifest itself is
/// never rewritten).
pub const VERIFY: &str = "verify.json";

/// Why a backup was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// `svoi backup create` (by hand or a timer).
    Manual,
    /// Taken by `svoi maintenance start` before the window opens.
    PreMaintenance,
    /// Taken by `svoi backup restore` of the database about to be replaced.
    PreRestore,
}

impl BackupKind {
    /// `manual`, `pre-maintenance` or `pre-restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Manual => "manual",
            BackupKind::PreMaintenance => "pre-maintenance",
            BackupKind::PreRestore => "pre-restore",
        }
    }
}

/// `manifest.json`: what a backup holds and how to check it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `YYYYmmddTHHMMSSZ[-label][-N]`, the directory's name.
    pub id: String,
    /// The sanitised `--label`.
    pub label: Option<String>,
    /// Why it was taken.
    pub kind: BackupKind,
    /// When it started (RFC 3339, UTC).
    pub created_at: String,
    /// When it was complete.
    pub finished_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database backed up (a PostgreSQL password shows as `***`).
    pub source: String,
    /// The data file in the backup's directory: `svoi.sqlite.gz` or `svoi.pgdump`.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Rows per table, counted in the backed-up snapshot itself.
    pub row_counts: RowCounts,
    /// The schema version of the backed-up database.
    pub schema_version: u32,
    /// The database server (`sqlite 3.x`, `PostgreSQL 16.x`).
    pub server_version: String,
    /// The `svoi` that took it.
    pub svoi_version: String,
    /// Always `null`: verification results go to `verify.json` next to the manifest.
    pub verified: Option<serde_json::Value>,
}

impl Manifest {
    /// Reads `<dir>/<id>/manifest.json`.
    pub fn read(backup_dir: &Path) -> Result<Manifest> {
        let path = backup_dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a manifest", path.display()))
    }

    /// All rows together.
    pub fn total_rows(&self) -> i64 {
        self.row_counts.values().sum()
    }
}

/// One entry of the backup directory: a readable backup or a broken one.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A backup whose manifest reads.
    Backup(Box<Manifest>),
    /// A directory that should be a backup but whose manifest does not read.
    Broken {
        /// The directory's name.
        id: String,
        /// Why.
        error: String,
    },
}

/// Every entry of `dir`, newest first (by creation time, then ID; broken ones by ID, which
/// starts with the time). Hidden directories (`.tmp-*` of backups in progress, scratch
/// space) are not backups. A missing directory has none.
pub fn scan(dir: &Path) -> Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        entries.push(match Manifest::read(&entry.path()) {
            Ok(m) if m.id == name => Entry::Backup(Box::new(m)),
            Ok(m) => Entry::Broken {
                id: name,
                error: format!("the manifest names another backup ({})", m.id),
            },
            Err(e) => Entry::Broken {
                id: name,
                error: format!("{e:#}"),
            },
        });
    }
    entries.sort_by(|a, b| {
        let key = |e: &Entry| match e {
            Entry::Backup(m) => (m.created_at.clone(), m.id.clone()),
            Entry::Broken { id, .. } => (id.clone(), id.clone()),
        };
        key(b).cmp(&key(a))
    });
    Ok(entries)
}

/// The backup `id` in `dir`, `latest` meaning the newest readable one.
pub fn resolve(dir: &Path, id: &str) -> Result<Manifest> {
    if id == "latest" {
        return super::list(dir)?
            .into_iter()
            .next()
            .with_context(|| format!("no backups in {}", dir.display()));
    }
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        bail!("{id:?} is not a backup id");
    }
    let path = dir.join(id);
    if !path.is_dir() {
        bail!("no backup {id} in {}", dir.display());
    }
    Manifest::read(&path)
}

/// A new backup ID for a backup starting `at`: `YYYYmmddTHHMMSSZ`, `-<label>` when there is
/// one, `-2`, `-3`... when the ID is taken (also by a backup in progress).
pub fn new_id(dir: &Path, at: jiff::Timestamp, label: Option<&str>) -> String {
    let mut base = at.strftime("%Y%m%dT%H%M%SZ").to_string();
    if let Some(label) = label {
        base.push('-');
        base.push_str(label);
    }
    let taken = |id: &str| dir.join(id).exists() || dir.join(format!(".tmp-{id}")).exists();
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// A label as IDs carry it: lowercase ASCII letters, digits and single dashes, at most 40
/// characters; `None` when nothing is left.
pub fn sanitise_label(label: &str) -> Option<String> {
    let mut out = String::new();
    for c in label.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(40).collect();
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `bytes` to `path` through a temporary file renamed over it, synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Syncs a directory, so that renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A timestamp as manifests write it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_lowercase_letters_digits_and_single_dashes() {
        assert_eq!(
            sanitise_label("Before Upgrade!").as_deref(),
            Some("before-upgrade")
        );
        assert_eq!(sanitise_label("--a__b--").as_deref(), Some("a-b"));
        assert_eq!(sanitise_label("v1.2/x").as_deref(), Some("v1-2-x"));
        assert_eq!(sanitise_label("ÄÖ"), None);
        assert_eq!(sanitise_label("  "), None);
        let long = sanitise_label(&"ab-".repeat(30)).unwrap();
        assert!(long.len() <= 40 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn ids_are_utc_times_with_a_label_and_a_counter_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let at: jiff::Timestamp = "2026-11-25T14:05:12.7Z".parse().unwrap();
        assert_eq!(new_id(dir.path(), at, None), "20261125T140512Z");
        assert_eq!(new_id(dir.path(), at, Some("x")), "20261125T140512Z-x");
        std::fs::create_dir(dir.path().join("20261125T140512Z")).unwrap();
        std::fs::create_dir(dir.path().join(".tmp-20261125T140512Z-2")).unwrap();
        assert_eq!(new_id(dir.path(), at, None), "20261125T140512Z-3");
    }

    #[test]
    fn scan_lists_broken_entries_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("20260101T000000Z")).unwrap();
        std::fs::create_dir(dir.path().join(".tmp-20260102T000000Z")).unwrap();
        let entries = scan(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(matches!(&entries[0], Entry::Broken { id, .. } if id == "20260101T000000Z"));
        assert!(resolve(dir.path(), "latest").is_err());
        assert!(resolve(dir.path(), "../x").is_err());
        assert!(scan(&dir.path().join("missing")).unwrap().is_empty());
    }
}
