//! `svoi backup` end to end, driving the built binary: a backup taken while `svoi serve`
//! ingests a simulated fleet verifies and restores (into a fresh database and over the original)
//! with the manifest's row counts, on SQLite and PostgreSQL; damaged backups fail verification
//! naming the check; a restore refuses while a server uses the database unless forced, and the
//! server goes on storing correctly after a forced one; prune keeps the newest and deletes
//! exactly what is older than the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use svoi_testpg::{Backend, Db};
use util::*;

/// `svoi --db DB --backup-dir DIR backup ARGS...`, no `SVOI_*` variables.
fn backup(db: &str, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["--db", db, "--backup-dir"])
        .arg(dir)
        .arg("backup")
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SVOI_OPERATOR", "backup-test");
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `backup create`: the ID on the last line of stdout.
fn create(db: &str, dir: &Path, label: Option<&str>) -> String {
    let mut args = vec!["create"];
    if let Some(l) = label {
        args.extend(["--label", l]);
    }
    let out = backup(db, dir, &args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

fn manifest(dir: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(id).join("manifest.json")).unwrap())
        .unwrap()
}

const DATA_TABLES: &[&str] = svoi_store::backup::DATA_TABLES;

/// The data tables' counts of `db` equal the manifest's.
fn assert_counts_match(db: &Db, manifest: &serde_json::Value, what: &str) {
    for table in DATA_TABLES {
        assert_eq!(
            db.count(table),
            manifest["row_counts"][table].as_i64().unwrap(),
            "{what}: {table}"
        );
    }
}

/// Polls until `check` holds; panics naming `what` after 30 s.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fleet sending in the background.
fn fleet(addr: std::net::SocketAddr, args: &[&str]) -> Child {
    sim(addr, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn round_trip_while_serving(backend: Backend) {
    let db = Db::new(backend);
    let url = db.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let addr = free_addr();
    let mut server = serve(
        work.path(),
        Some(&url),
        addr,
        &work.path().join("serve.log"),
    );
    let mut devices = fleet(
        addr,
        &[
            "--devices",
            "4",
            "--records",
            "3000",
            "--batch",
            "10",
            "--rate",
            "400",
        ],
    );
    wait_until("records stored", || db.count("records") > 100);

    let id = create(&url, &dir, Some("Round Trip"));
    assert!(id.ends_with("-round-trip"), "{id}");
    let taken = manifest(&dir, &id);
    let backed_up = taken["row_counts"]["records"].as_i64().unwrap();
    assert!(backed_up > 100, "{taken}");
    assert!(
        devices.try_wait().unwrap().is_none(),
        "the fleet was still sending during the backup"
    );
    let verify = backup(&url, &dir, &["verify", &id]);
    assert!(verify.status.success(), "{}", text(&verify));

    let status = wait_for(&mut devices, Duration::from_secs(120));
    assert!(status.success(), "the fleet failed");
    assert!(sigterm(&mut server).success());
    assert!(
        db.count("records") > backed_up,
        "ingest went on after the backup"
    );

    // Into a fresh database.
    let fresh = Db::new(backend);
    let out = backup(&fresh.url(), &dir, &["restore", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pre-restore backup: none"),
        "{}",
        text(&out)
    );
    assert_counts_match(&fresh, &taken, "fresh database");

    // Over the original, which has more by now: a pre-restore backup first.
    let out = backup(&url, &dir, &["restore", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_counts_match(&db, &taken, "original database");
    assert_eq!(
        db.scalar("SELECT value FROM svoi_state WHERE name = 'restore_epoch'"),
        "1"
    );
    let list = backup(&url, &dir, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("-pre-restore"), "{listed}");
    assert!(listed.contains("pre-restore "), "{listed}");

    // The log of the original holds what happened, the restore's own entry last.
    let kinds = db.rows("SELECT kind || ':' || result FROM maintenance_log ORDER BY id");
    for want in ["backup:ok", "verify:ok", "restore:ok"] {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
    assert_eq!(kinds.last().map(String::as_str), Some("restore:ok"));
}

#[test]
fn sqlite_backup_verify_restore_round_trip_while_the_server_ingests() {
    round_trip_while_serving(Backend::Sqlite);
}

#[test]
fn postgres_backup_verify_restore_round_trip_while_the_server_ingests() {
    round_trip_while_serving(Backend::Postgres);
}

/// A copy of backup `id` as `new_id` with `edit` applied to its manifest.
fn copy_backup(dir: &Path, id: &str, new_id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let to = dir.join(new_id);
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(dir.join(id)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let _ = std::fs::remove_file(to.join("verify.json"));
    let mut m = manifest(dir, id);
    m["id"] = serde_json::Value::from(new_id);
    edit(&mut m);
    std::fs::write(to.join("manifest.json"), m.to_string()).unwrap();
}

/// A small SQLite database with a few rows (API tokens), and a backup of it.
fn small_backup(work: &Path) -> (Db, std::path::PathBuf, String) {
    let db = Db::sqlite();
    for name in ["a", "b", "c"] {
        let _ = create_token(&db.url(), name);
    }
    let dir = work.join("backups");
    let id = create(&db.url(), &dir, None);
    (db, dir, id)
}

#[test]
fn damaged_backups_fail_verification_naming_the_check() {
    let work = tempfile::tempdir().unwrap();
    let (db, dir, id) = small_backup(work.path());
    let ok = backup(&db.url(), &dir, &["verify", &id]);
    assert!(ok.status.success(), "{}", text(&ok));

    // A byte flipped in the data file.
    copy_backup(&dir, &id, "20000101T000000Z-flipped", |_| {});
    let data = dir.join("20000101T000000Z-flipped/svoi.sqlite.gz");
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let out = backup(&db.url(), &dir, &["verify", "20000101T000000Z-flipped"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  sha256"), "{stdout}");
    assert!(stdout.contains("failed (sha256"), "{stdout}");

    // A row count edited in the manifest: the file is sound, the counts are not.
    copy_backup(&dir, &id, "20000101T000000Z-edited", |m| {
        m["row_counts"]["api_tokens"] = serde_json::Value::from(4);
    });
    let out = backup(
        &db.url(),
        &dir,
        &["verify", "20000101T000000Z-edited", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let status = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("sha256").as_deref(), Some("pass"));
    assert_eq!(status("integrity").as_deref(), Some("pass"));
    assert_eq!(status("row_counts").as_deref(), Some("fail"), "{doc}");
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("20000101T000000Z-edited/verify.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["ok"], false);

    assert_eq!(
        db.rows("SELECT result FROM maintenance_log WHERE kind = 'verify' ORDER BY id"),
        ["ok", "failed", "failed"]
    );
    // A damaged backup is not restored.
    let out = backup(&db.url(), &dir, &["restore", "20000101T000000Z-flipped"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        text(&out)
    );
}

#[test]
fn restore_refuses_while_a_server_runs_and_the_server_goes_on_after_a_forced_one() {
    let db = Db::sqlite();
    let url = db.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let addr = free_addr();
    let mut server = serve(
        work.path(),
        Some(&url),
        addr,
        &work.path().join("serve.log"),
    );
    let report = sim(
        addr,
        &[
            "--devices",
            "2",
            "--records",
            "200",
            "--imei-base",
            "861000000000000",
        ],
    )
    .output()
    .unwrap();
    assert!(report.status.success(), "{}", text(&report));
    let id = create(&url, &dir, None);

    let out = backup(&url, &dir, &["restore", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("svoi serve (pid {})", server.id())),
        "{stderr}"
    );
    assert_eq!(
        db.rows("SELECT result FROM maintenance_log WHERE kind = 'restore'"),
        ["failed"]
    );

    // Devices the backup does not know, then a forced restore under the running server: their
    // rows go, and the server's cached device ids with them.
    let report = sim(
        addr,
        &[
            "--devices",
            "2",
            "--records",
            "100",
            "--imei-base",
            "862000000000000",
        ],
    )
    .output()
    .unwrap();
    assert!(report.status.success(), "{}", text(&report));
    assert_eq!(db.count("devices"), 4);
    let out = backup(&url, &dir, &["restore", &id, "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("devices"), 2);
    assert_eq!(db.count("records"), 400);

    // The server keeps storing, each record on the device that sent it. A new device first
    // (it takes the next free id, which the server had cached for a device the restore
    // removed), then the removed devices again: a stale cache would file their records under
    // the new device.
    for (base, devices) in [("863000000000000", "1"), ("862000000000000", "2")] {
        let report = sim(
            addr,
            &["--devices", devices, "--records", "50", "--imei-base", base],
        )
        .output()
        .unwrap();
        assert!(report.status.success(), "{}", text(&report));
    }
    for imei in ["863000000000000", "862000000000000", "862000000000001"] {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM records r JOIN devices d ON d.id = r.device \
                 WHERE d.imei = '{imei}'"
            )),
            50,
            "{imei}"
        );
    }
    assert_eq!(db.count("devices"), 5);
    assert_eq!(db.count("records"), 550);
    assert!(db.rows("PRAGMA foreign_key_check").is_empty());
    assert!(sigterm(&mut server).success());
}

#[test]
fn prune_keeps_the_newest_and_deletes_exactly_what_is_older_than_the_limit() {
    let work = tempfile::tempdir().unwrap();
    let (db, dir, id) = small_backup(work.path());
    let now = jiff::Timestamp::now();
    let aged = |days: i64, minutes: i64| {
        let t = now - jiff::SignedDuration::from_secs(days * 86_400 + minutes * 60);
        (
            t.strftime("%Y%m%dT%H%M%SZ").to_string(),
            t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
    };
    // 89 days and 23 hours old (kept by age), 90 days and a minute, 200 days.
    let mut ids = Vec::new();
    for (days, minutes) in [(89, 23 * 60), (90, 1), (200, 0)] {
        let (new_id, created_at) = aged(days, minutes);
        copy_backup(&dir, &id, &new_id, |m| {
            m["created_at"] = serde_json::Value::from(created_at);
        });
        ids.push(new_id);
    }
    let out = backup(
        &db.url(),
        &dir,
        &[
            "prune",
            "--keep-days",
            "90",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join(&ids[1]).exists() && dir.join(&ids[2]).exists());
    let dry = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dry.contains(&format!("would delete {}", ids[1])), "{dry}");

    let out = backup(
        &db.url(),
        &dir,
        &["prune", "--keep-days", "90", "--keep-last", "1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join(&id).exists());
    assert!(dir.join(&ids[0]).exists(), "younger than 90 days");
    assert!(!dir.join(&ids[1]).exists());
    assert!(!dir.join(&ids[2]).exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 kept, 2 deleted"));

    // The newest N stay whatever their age.
    let out = backup(
        &db.url(),
        &dir,
        &["prune", "--keep-days", "0", "--keep-last", "2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join(&id).exists() && dir.join(&ids[0]).exists());
    let out = backup(
        &db.url(),
        &dir,
        &["prune", "--keep-days", "0", "--keep-last", "1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join(&id).exists() && !dir.join(&ids[0]).exists());
    assert_eq!(
        db.rows("SELECT result FROM maintenance_log WHERE kind = 'prune'"),
        ["ok", "ok", "ok"]
    );
}

#[test]
fn a_failed_backup_is_logged_as_failed() {
    let work = tempfile::tempdir().unwrap();
    let (db, _dir, _id) = small_backup(work.path());
    // A file where the backup directory should be: nothing can be written.
    let blocked = work.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let out = backup(&db.url(), &blocked, &["create"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        db.rows("SELECT kind || ':' || result FROM maintenance_log ORDER BY id"),
        ["backup:ok", "backup:failed"]
    );
}
