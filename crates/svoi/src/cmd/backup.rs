//! `svoi backup create|list|verify|restore|prune`: verified backups in `backup.dir`
//! (`--backup-dir`).
//!
//! A backup is a directory `<dir>/<ID>/` holding `manifest.json` and one data file: the gzip of
//! an SQLite `VACUUM INTO` copy (`svoi.sqlite.gz`) or a `pg_dump` custom-format dump
//! (`svoi.pgdump`), both consistent while the server keeps ingesting. The primitives are in
//! `svoi_store::backup`; this module names files, writes manifests, prints, and appends one
//! maintenance-log entry per operation (kinds `backup`, `verify`, `restore`, `prune`), failures
//! included: the `BackupFailed` alert reads the failed `backup` entries.

mod manifest;
mod prune;
mod restore;
mod verify;

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use svoi_store::backup::{self as store_backup, PgTools, Snapshot};
use svoi_store::{DbUrl, LogResult};

use crate::config::Loaded;
use crate::oplog::Op;
pub use manifest::{BackupKind, Entry, Manifest, scan};
pub use prune::{PruneOutcome, prune};
pub use restore::{RestoreOutcome, restore};
pub use verify::{Verification, verify};

/// The data file of an SQLite backup.
pub const SQLITE_FILE: &str = "svoi.sqlite.gz";

/// The data file of a PostgreSQL backup.
pub const PG_FILE: &str = "svoi.pgdump";

/// `svoi backup ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a consistent online backup (the server may keep running); the new backup's ID is
    /// the last line of standard output.
    Create {
        /// A word to remember it by, appended to the ID (`20261125T140512Z-before-upgrade`).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// List the backups, newest first.
    List {
        /// One JSON array of manifests instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a scratch database, check its integrity and compare its row counts
    /// with the manifest. Exit 0 when it verifies, 1 when it does not.
    Verify {
        /// Backup ID, or `latest`.
        #[arg(default_value = "latest", value_name = "ID|latest")]
        id: String,
        /// One JSON document instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the configured database (a backup of that database is taken
    /// first when it exists).
    Restore {
        /// Backup ID, or `latest`.
        #[arg(value_name = "ID|latest")]
        id: String,
        /// Restore even while a server is using the database.
        #[arg(long)]
        force: bool,
    },
    /// Delete backups older than `--keep-days`, always keeping the newest `--keep-last`.
    Prune {
        /// Keep backups younger than this many days (config `backup.keep_days`, default 90).
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<usize>,
        /// Keep at least this many of the newest backups (config `backup.keep_last`, default 7).
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a backup command.
pub fn run(command: &BackupCommand, loaded: &Loaded) -> Result<ExitCode> {
    match command {
        BackupCommand::Create { label } => {
            let manifest = create(loaded, BackupKind::Manual, label.as_deref())?;
            println!("{}", manifest.id);
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::List { json } => list_command(&loaded.config.backup.dir, *json),
        BackupCommand::Verify { id, json } => {
            let verification: Verification = verify(loaded, id)?;
            if *json {
                println!("{}", verification.json());
            } else {
                println!("backup {}", verification.id);
                print!("{}", verification.report.text());
            }
            Ok(ExitCode::from(if verification.ok { 0 } else { 1 }))
        }
        BackupCommand::Restore { id, force } => {
            let outcome: RestoreOutcome = restore(loaded, id, *force)?;
            print!("{}", outcome.text());
            Ok(ExitCode::from(if outcome.ok() { 0 } else { 1 }))
        }
        BackupCommand::Prune {
            keep_days,
            keep_last,
            dry_run,
        } => {
            let outcome: PruneOutcome = prune(
                loaded,
                keep_days.unwrap_or(loaded.config.backup.keep_days),
                keep_last.unwrap_or(loaded.config.backup.keep_last),
                *dry_run,
            )?;
            print!("{}", outcome.text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Takes a backup of the configured database into `backup.dir` and returns its manifest.
/// Progress goes to standard error. Appends a `backup` entry to the maintenance log, `ok` or
/// `failed` (a failure is logged too, unless the SQLite database does not exist: logging would
/// create it).
pub fn create(loaded: &Loaded, kind: BackupKind, label: Option<&str>) -> Result<Manifest> {
    let op = Op::begin("backup");
    let label = label.and_then(manifest::sanitise_label);
    let result = create_inner(loaded, kind, label.as_deref());
    match &result {
        Ok(m) => {
            op.finish(
                loaded,
                LogResult::Ok,
                format!(
                    "backup {} ({}, {} rows, {})",
                    m.id,
                    m.kind.as_str(),
                    m.total_rows(),
                    human_bytes(m.bytes)
                ),
                json!({
                    "id": m.id,
                    "kind": m.kind,
                    "file": m.file,
                    "bytes": m.bytes,
                    "sha256": m.sha256,
                    "row_counts": m.row_counts,
                    "dir": loaded.config.backup.dir,
                }),
            );
        }
        Err(e) => {
            if database_exists(loaded) {
                op.finish(
                    loaded,
                    LogResult::Failed,
                    format!("backup failed: {e:#}"),
                    json!({ "kind": kind, "label": label, "error": format!("{e:#}") }),
                );
            }
        }
    }
    result
}

/// [`create`] without the log entry.
fn create_inner(loaded: &Loaded, kind: BackupKind, label: Option<&str>) -> Result<Manifest> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let (url, opts) = crate::cmd::store_options(loaded)?;
    let dir = &loaded.config.backup.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    let id = manifest::new_id(dir, started, label);
    let tmp = dir.join(format!(".tmp-{id}"));
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    eprintln!("svoi: backing up {url} into {}", dir.join(&id).display());
    let (file, snapshot, backend) = match &url {
        DbUrl::Sqlite(db) => {
            let raw = tmp.join("svoi.sqlite");
            let snapshot = store_backup::snapshot_sqlite(db, &opts, &raw)
                .with_context(|| format!("cannot copy {}", db.display()))?;
            eprintln!(
                "svoi: snapshot taken ({} rows), compressing",
                snapshot.counts.values().sum::<i64>()
            );
            gzip(&raw, &tmp.join(SQLITE_FILE))?;
            std::fs::remove_file(&raw)
                .with_context(|| format!("cannot remove {}", raw.display()))?;
            (SQLITE_FILE, snapshot, "sqlite")
        }
        DbUrl::Postgres(pg) => {
            let tools = PgTools::find(loaded.config.backup.pg_bin_dir.as_deref())?;
            eprintln!("svoi: dumping with {}", tools.pg_dump.display());
            let snapshot = store_backup::dump_postgres(pg, &opts, &tools, &tmp.join(PG_FILE))
                .with_context(|| format!("cannot dump {url}"))?;
            (PG_FILE, snapshot, "postgres")
        }
    };
    let data = tmp.join(file);
    std::fs::File::open(&data)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", data.display()))?;
    let bytes = std::fs::metadata(&data)
        .with_context(|| format!("cannot read {}", data.display()))?
        .len();
    let sha256 = manifest::sha256_file(&data)?;
    let Snapshot {
        counts,
        schema_version,
        server_version,
    } = snapshot;
    let manifest = Manifest {
        id: id.clone(),
        label: label.map(str::to_string),
        kind,
        created_at: manifest::rfc3339(started),
        finished_at: manifest::rfc3339(jiff::Timestamp::now()),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        backend: backend.to_string(),
        source: url.to_string(),
        file: file.to_string(),
        bytes,
        sha256,
        row_counts: counts,
        schema_version,
        server_version,
        svoi_version: env!("CARGO_PKG_VERSION").to_string(),
        verified: None,
    };
    let text = serde_json::to_vec_pretty(&manifest).context("cannot encode the manifest")?;
    manifest::write_atomic(&tmp.join(manifest::MANIFEST), &text)?;
    manifest::sync_dir(&tmp)?;
    let done = dir.join(&id);
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), done.display()))?;
    guard.disarm();
    manifest::sync_dir(dir)?;
    eprintln!(
        "svoi: backup {id} done in {} ms: {}, {} rows, sha256 {}",
        manifest.duration_ms,
        human_bytes(manifest.bytes),
        manifest.total_rows(),
        manifest.sha256
    );
    Ok(manifest)
}

/// Whether the configured database exists (PostgreSQL: assumed; connecting says otherwise).
fn database_exists(loaded: &Loaded) -> bool {
    match crate::cmd::store_options(loaded) {
        Ok((DbUrl::Sqlite(path), _)) => path.is_file(),
        Ok((DbUrl::Postgres(_), _)) => true,
        Err(_) => false,
    }
}

/// Every readable backup in `dir`, newest first. A directory whose manifest does not read is
/// not returned but named on standard error (`svoi backup list` shows it as broken).
pub fn list(dir: &Path) -> Result<Vec<Manifest>> {
    Ok(scan(dir)?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Backup(m) => Some(*m),
            Entry::Broken { id, error } => {
                eprintln!("svoi: warning: backup {id} is broken: {error}");
                None
            }
        })
        .collect())
}

/// The stored verification result of a backup (`verify.json`), if any.
pub fn verification_of(dir: &Path, id: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(id).join(manifest::VERIFY)).ok()?;
    serde_json::from_str(&text).ok()
}

/// `svoi backup list`: exit 1 when an entry is broken.
fn list_command(dir: &Path, json: bool) -> Result<ExitCode> {
    let entries = scan(dir)?;
    let broken = entries
        .iter()
        .filter(|e| matches!(e, Entry::Broken { .. }))
        .count();
    if json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Backup(m) => {
                    let mut v = serde_json::to_value(m).unwrap_or_default();
                    v["verification"] = verification_of(dir, &m.id).unwrap_or_default();
                    v
                }
                Entry::Broken { id, error } => json!({ "id": id, "broken": error }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else if entries.is_empty() {
        println!("no backups in {}", dir.display());
    } else {
        println!(
            "{:<40} {:<16} {:<9} {:>10} {:>12}  VERIFIED",
            "ID", "KIND", "BACKEND", "SIZE", "ROWS"
        );
        for e in &entries {
            match e {
                Entry::Backup(m) => {
                    let verified = match verification_of(dir, &m.id) {
                        Some(v) if v["ok"] == true => {
                            format!("ok {}", v["verified_at"].as_str().unwrap_or(""))
                        }
                        Some(v) => {
                            format!("FAILED {}", v["verified_at"].as_str().unwrap_or(""))
                        }
                        None => "-".to_string(),
                    };
                    println!(
                        "{:<40} {:<16} {:<9} {:>10} {:>12}  {verified}",
                        m.id,
                        m.kind.as_str(),
                        m.backend,
                        human_bytes(m.bytes),
                        m.total_rows()
                    );
                }
                Entry::Broken { id, error } => println!("{id:<40} BROKEN: {error}"),
            }
        }
    }
    Ok(ExitCode::from(if broken > 0 { 1 } else { 0 }))
}

/// Compresses `from` into `to` (gzip).
fn gzip(from: &Path, to: &Path) -> Result<()> {
    let input =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let output =
        std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut encoder =
        flate2::write::GzEncoder::new(BufWriter::new(output), flate2::Compression::default());
    std::io::copy(&mut BufReader::new(input), &mut encoder)
        .with_context(|| format!("cannot write {}", to.display()))?;
    encoder
        .finish()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("cannot write {}", to.display()))?;
    Ok(())
}

/// Decompresses the gzip file `from` into `to`; fails on any gzip error (a bad CRC
/// included) and returns the decompressed size.
fn gunzip(from: &Path, to: &Path) -> Result<u64> {
    let input =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let output =
        std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut decoder = flate2::read::GzDecoder::new(BufReader::new(input));
    let mut writer = BufWriter::new(output);
    let n = std::io::copy(&mut decoder, &mut writer)
        .with_context(|| format!("cannot decompress {}", from.display()))?;
    writer
        .flush()
        .with_context(|| format!("cannot write {}", to.display()))?;
    Ok(n)
}

/// `12.3 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Removes a directory when dropped, unless disarmed: a failed backup leaves no `.tmp-*`.
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_a_flipped_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a");
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&plain, &data).unwrap();
        gzip(&plain, &dir.path().join("a.gz")).unwrap();
        let back = dir.path().join("b");
        assert_eq!(
            gunzip(&dir.path().join("a.gz"), &back).unwrap(),
            data.len() as u64
        );
        assert_eq!(std::fs::read(&back).unwrap(), data);

        let mut gz = std::fs::read(dir.path().join("a.gz")).unwrap();
        let at = gz.len() / 2;
        gz[at] ^= 0x40;
        std::fs::write(dir.path().join("c.gz"), &gz).unwrap();
        assert!(gunzip(&dir.path().join("c.gz"), &dir.path().join("c")).is_err());
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
