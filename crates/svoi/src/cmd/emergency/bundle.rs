//! The bundle of `svoi emergency logs`: one tar.gz of `status.txt`, `status.json`,
//! `config.txt` (the effective configuration as `svoi config check` prints it, secrets `***`),
//! `metrics.txt`, `ready.json`, `log/svoi.log` (the last 20 MiB of the log), `log/svoi.out`
//! (the output file of `svoi service`, when there is one) and `system.txt`.
//!
//! **No database password ever leaves in it.** The configuration is the redacted rendering,
//! and in addition the password of the configured database URL (as written and
//! percent-decoded) is replaced by `***` in every entry, logs included, before it is written.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::snapshot::{self, rfc3339};
use crate::cmd::service::{self, human_bytes};
use crate::config::Loaded;
use crate::probe;

/// How much of the end of each log file goes into the bundle.
const LOG_BYTES: u64 = 20 << 20;

/// Collects the entries, writes the bundle and prints its path as the last line.
pub fn write(loaded: &Loaded, api_base: &str, output: Option<&Path>) -> Result<()> {
    let now = jiff::Timestamp::now();
    let path = match output {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(format!(
            "svoi-emergency-{}.tar.gz",
            now.strftime("%Y%m%dT%H%M%SZ")
        )),
    };
    let mut entries = entries(loaded, api_base);
    let secrets = secrets(&loaded.config.db);
    for (_, data) in &mut entries {
        for secret in &secrets {
            *data = scrub(data, secret.as_bytes());
        }
    }
    write_tar_gz(&path, &entries, now)?;
    for (name, data) in &entries {
        println!("{name:<16} {}", human_bytes(data.len() as u64));
    }
    let shown = std::path::absolute(&path).unwrap_or(path);
    println!("{}", shown.display());
    Ok(())
}

/// Every entry: name in the archive and contents.
fn entries(loaded: &Loaded, api_base: &str) -> Vec<(String, Vec<u8>)> {
    let (snap, raw) = snapshot::collect(loaded, api_base);
    let mut entries = vec![
        ("status.txt".to_string(), snap.to_string().into_bytes()),
        (
            "status.json".to_string(),
            serde_json::to_vec_pretty(&snap).unwrap_or_else(|e| format!("error: {e}\n").into()),
        ),
        ("config.txt".to_string(), loaded.render().into_bytes()),
        (
            "metrics.txt".to_string(),
            raw.metrics
                .unwrap_or_else(|e| format!("# /metrics could not be read: {e}\n"))
                .into_bytes(),
        ),
        (
            "ready.json".to_string(),
            raw.ready
                .unwrap_or_else(|e| {
                    serde_json::json!({ "error": format!("/ready could not be read: {e}") })
                        .to_string()
                })
                .into_bytes(),
        ),
    ];
    if let (Some(log), _) = snapshot::log_file(loaded) {
        entries.push(("log/svoi.log".to_string(), tail_or_note(&log)));
    }
    let out = service::service_dir(Path::new(service::DEFAULT_PID_FILE)).join("svoi.out");
    if out.is_file() {
        entries.push(("log/svoi.out".to_string(), tail_or_note(&out)));
    }
    entries.push(("system.txt".to_string(), system(loaded).into_bytes()));
    entries
}

/// The last [`LOG_BYTES`] of a file as bytes, or a note saying why it could not be read.
fn tail_or_note(path: &Path) -> Vec<u8> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_BYTES)))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(data)
    };
    read().unwrap_or_else(|e| format!("cannot read {}: {e}\n", path.display()).into_bytes())
}

/// Facts about this host.
fn system(loaded: &Loaded) -> String {
    use sysinfo::System;
    let mut system = System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let memory = probe::memory();
    let load = System::load_average();
    let dir = probe::data_dir(&loaded.config);
    let disk = probe::disk_space(&dir).map_or_else(
        || "unknown".to_string(),
        |s| {
            format!(
                "{} free of {}, {:.1} % free",
                human_bytes(s.free),
                human_bytes(s.total),
                100.0 * s.free_ratio()
            )
        },
    );
    let unknown = || "unknown".to_string();
    [
        format!("taken at:      {}", rfc3339(jiff::Timestamp::now())),
        format!(
            "host:          {}",
            System::host_name().unwrap_or_else(unknown)
        ),
        format!(
            "os:            {}",
            System::long_os_version().unwrap_or_else(unknown)
        ),
        format!("kernel:        {}", System::kernel_long_version()),
        format!("architecture:  {}", System::cpu_arch()),
        format!(
            "cpus:          {} logical, {} physical",
            system.cpus().len(),
            System::physical_core_count().map_or_else(unknown, |n| n.to_string())
        ),
        format!(
            "load average:  {:.2} {:.2} {:.2} (1, 5, 15 min)",
            load.one, load.five, load.fifteen
        ),
        format!(
            "memory:        {} available of {}",
            human_bytes(memory.free),
            human_bytes(memory.total)
        ),
        format!(
            "uptime:        {}",
            humantime::format_duration(std::time::Duration::from_secs(System::uptime()))
        ),
        format!("data dir:      {}: {disk}", dir.display()),
        format!(
            "svoi:          {} (this binary, {})",
            env!("CARGO_PKG_VERSION"),
            std::env::current_exe()
                .map_or_else(|_| "unknown path".to_string(), |p| p.display().to_string())
        ),
    ]
    .join("\n")
        + "\n"
}

/// The password of a `scheme://user:password@host/...` URL, as written and percent-decoded
/// (each once); none for other URLs.
fn secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    if password.is_empty() {
        return Vec::new();
    }
    let mut out = vec![password.to_string()];
    let decoded = percent_decode(password);
    if decoded != password && !decoded.is_empty() {
        out.push(decoded);
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `data` with every occurrence of `secret` replaced by `***`.
fn scrub(data: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || data.len() < secret.len() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(secret) {
            out.extend_from_slice(b"***");
            i += secret.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fn write_tar_gz(path: &Path, entries: &[(String, Vec<u8>)], now: jiff::Timestamp) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let file = File::create(path)?;
        let mut tar =
            tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::default()));
        let mtime = u64::try_from(now.as_second()).unwrap_or(0);
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(&mut header, name, data.as_slice())?;
        }
        let mut out = tar.into_inner()?.finish()?;
        out.flush()?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_bundle_finds_the_password_written_and_decoded() {
        assert_eq!(
            secrets("postgres://svoi:pa%40ss@db/svoi"),
            ["pa%40ss", "pa@ss"]
        );
        assert_eq!(secrets("postgres://svoi:pw@db:5432/svoi?x=1"), ["pw"]);
        assert!(secrets("postgres://svoi@db/svoi").is_empty());
        assert!(secrets("sqlite:./data/svoi.db").is_empty());
        assert!(secrets("postgres://svoi:@db/svoi").is_empty());
    }

    #[test]
    fn emergency_bundle_scrubs_every_occurrence() {
        assert_eq!(scrub(b"a pw b pwpw", b"pw"), b"a *** b ******");
        assert_eq!(scrub(b"p", b"pw"), b"p");
        assert_eq!(scrub(b"none", b"pw"), b"none");
    }
}
