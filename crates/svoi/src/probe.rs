//! What the operations commands (`alerts check`, `smoke`, `health`, `emergency`, `incident`)
//! read from a running server and from this host: the API over HTTP, the Prometheus text of
//! `/metrics`, the filesystem and memory figures, and the recent ERROR lines of the log file.
//! Nothing here prints or exits; each command decides what a figure means.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;

/// The API base URL: `--api` when given, else `http://` + `api.listen` with an unspecified
/// address (`0.0.0.0`, `::`) replaced by loopback.
pub fn api_base(config: &Config, flag: Option<&str>) -> String {
    match flag {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("http://{}", local(config.api.listen)),
    }
}

/// The device listener to dial: `--device` when given, else `ingest.listen` with an
/// unspecified address replaced by loopback.
pub fn device_addr(config: &Config, flag: Option<&str>) -> Result<SocketAddr> {
    match flag {
        Some(text) => text
            .parse()
            .with_context(|| format!("--device {text:?}: expected IP:PORT")),
        None => Ok(local(config.ingest.listen)),
    }
}

/// `0.0.0.0:P` → `127.0.0.1:P`, `[::]:P` → `[::1]:P`; other addresses unchanged.
pub fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Whether the API URL names this machine (loopback address or `localhost`): host figures
/// (CPU, memory, disk, log file) describe the server only then.
pub fn is_local(base: &str) -> bool {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An HTTP answer: status and body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON (an error names the path).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).context("the answer is not JSON")
    }
}

/// A small blocking HTTP client for the server's API: every status is an answer, only
/// transport failures (refused, timed out) are errors.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client for `base` (`http://127.0.0.1:8080`) whose requests give up after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET base + path`, with a bearer token when given.
    pub fn get(&self, path: &str, token: Option<&str>) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("GET {url}: reading the body"))?;
        Ok(Answer { status, body })
    }

    /// `GET /metrics`, parsed.
    pub fn scrape(&self) -> Result<Scrape> {
        let answer = self.get("/metrics", None)?;
        if answer.status != 200 {
            anyhow::bail!("GET {}/metrics answered {}", self.base, answer.status);
        }
        Ok(Scrape::parse(&answer.body))
    }
}

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (`svoi_http_requests_total`, `svoi_commit_duration_seconds_bucket`).
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every sample, in page order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text exposition format; comment lines and lines that do not parse are
    /// skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Scrape { samples }
    }

    /// The sum of every series of `name`; `None` when the page has none.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.sum(name, |_| true)
    }

    /// The sum of the series of `name` that `keep` accepts; `None` when none matches.
    pub fn sum(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == name && keep(s)) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// The server's data filesystem from its `svoi_disk_free_bytes` and `svoi_disk_size_bytes`
    /// gauges (for a server on another host); `None` when either is missing or not a size.
    pub fn disk_space(&self) -> Option<Space> {
        let bytes = |name: &str| {
            let v = self.value(name)?;
            // Byte counts are whole and non-negative; the guard checks it before the cast.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
        };
        Some(Space {
            free: bytes("svoi_disk_free_bytes")?,
            total: bytes("svoi_disk_size_bytes")?,
        })
    }

    /// The cumulative buckets of histogram `name` summed over its other labels, by upper
    /// bound in ascending order (the `+Inf` bucket last).
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<OrderedBound, f64> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == bucket) {
            if let Some(le) = s.label("le").and_then(parse_value) {
                *by_le.entry(OrderedBound(le)).or_insert(0.0) += s.value;
            }
        }
        by_le.into_iter().map(|(k, v)| (k.0, v)).collect()
    }
}

/// An `f64` bucket bound ordered by `total_cmp`, for the map key.
#[derive(Clone, Copy, Debug)]
struct OrderedBound(f64);

impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The differences `later - earlier` of two readings of the same cumulative buckets (a
/// bucket missing from `earlier` counts from 0).
pub fn bucket_increase(earlier: &[(f64, f64)], later: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|(le, n)| {
            let before = earlier
                .iter()
                .find(|(b, _)| b.total_cmp(le).is_eq())
                .map_or(0.0, |(_, v)| *v);
            (*le, (n - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does; `None` without observations. A quantile in the
/// `+Inf` bucket is the largest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, Vec::new(), rest)
        }
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(labels)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// The directory whose filesystem holds the data: the SQLite database's directory, or the
/// working directory on PostgreSQL (where logs and backups go).
pub fn data_dir(config: &Config) -> PathBuf {
    match config.db.parse::<svoi_store::DbUrl>() {
        Ok(svoi_store::DbUrl::Sqlite(path)) => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        },
        _ => PathBuf::from("."),
    }
}

/// Bytes in a GiB, for the figures people read.
pub const GIB: f64 = (1u64 << 30) as f64;

/// Free and total bytes of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to unprivileged users.
    pub free: u64,
    /// Size of the filesystem.
    pub total: u64,
}

impl Space {
    /// Free fraction, 0 to 1 (0 for an empty filesystem).
    pub fn free_ratio(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.free as f64 / self.total as f64
        }
    }
}

/// The filesystem holding `path` (the nearest existing ancestor when `path` does not exist
/// yet): the mounted disk with the longest mount point that is a prefix of it.
pub fn disk_space(path: &Path) -> Option<Space> {
    let mut existing = std::path::absolute(path).ok()?;
    while !existing.exists() {
        existing = existing.parent()?.to_path_buf();
    }
    let real = existing.canonicalize().ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| real.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| Space {
            free: d.available_space(),
            total: d.total_space(),
        })
}

/// Available and total memory of this host, bytes.
pub fn memory() -> Space {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    Space {
        free: system.available_memory(),
        total: system.total_memory(),
    }
}

/// The busy fraction of this host's CPUs over `interval` (blocks that long).
pub fn cpu_busy(interval: Duration) -> f64 {
    let mut system = sysinfo::System::new();
    system.refresh_cpu_usage();
    std::thread::sleep(interval.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
    system.refresh_cpu_usage();
    f64::from(system.global_cpu_usage()) / 100.0
}

/// How much of the log's end [`recent_errors`] reads.
const LOG_TAIL_BYTES: u64 = 4 << 20;

/// The last `limit` ERROR lines of the log file written within `within` of now (text or JSON
/// format; a line whose time cannot be read counts as recent). Reads only the file's last
/// 4 MiB.
pub fn recent_errors(path: &Path, within: Duration, limit: usize) -> Result<Vec<String>> {
    let text = tail(path, LOG_TAIL_BYTES)?;
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(within).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MIN);
    let mut errors: Vec<String> = text
        .lines()
        .filter(|line| is_error_line(line))
        .filter(|line| line_time(line).is_none_or(|t| t >= since))
        .map(str::to_string)
        .collect();
    let skip = errors.len().saturating_sub(limit);
    errors.drain(..skip);
    Ok(errors)
}

/// The last `bytes` of a file as text (from the first full line).
pub fn tail(path: &Path, bytes: u64) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    Ok(if start > 0 {
        text.split_once('\n')
            .map_or(String::new(), |(_, r)| r.to_string())
    } else {
        text
    })
}

/// A log line at level ERROR, in the text (`... ERROR target: ...`) or JSON
/// (`"level":"ERROR"`) format.
pub fn is_error_line(line: &str) -> bool {
    line.contains("\"level\":\"ERROR\"")
        || line.split_whitespace().take(3).any(|word| word == "ERROR")
}

/// The RFC 3339 time a log line starts with (text) or carries in `"timestamp"` (JSON).
fn line_time(line: &str) -> Option<jiff::Timestamp> {
    if let Some(at) = line.find("\"timestamp\":\"") {
        let rest = &line[at + 13..];
        return rest.split('"').next()?.parse().ok();
    }
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP svoi_queue_depth Frames waiting
# TYPE svoi_queue_depth gauge
svoi_queue_depth 7
svoi_http_requests_total{route="/api/v1/devices",method="GET",status="200"} 10
svoi_http_requests_total{route="/api/v1/devices",method="GET",status="503"} 3
svoi_http_requests_total{route="/ready",method="GET",status="503"} 5
svoi_commit_duration_seconds_bucket{le="0.1"} 2
svoi_commit_duration_seconds_bucket{le="1"} 8
svoi_commit_duration_seconds_bucket{le="+Inf"} 10
svoi_commit_duration_seconds_sum 9.5
svoi_commit_duration_seconds_count 10
weird{a="x\"y,z",b="2"} 1e3
"#;

    #[test]
    fn parses_values_labels_and_escapes() {
        let s = Scrape::parse(PAGE);
        assert_eq!(s.value("svoi_queue_depth"), Some(7.0));
        assert_eq!(s.value("svoi_http_requests_total"), Some(18.0));
        let api_5xx = s.sum("svoi_http_requests_total", |x| {
            x.label("status").is_some_and(|c| c.starts_with('5'))
                && x.label("route") != Some("/ready")
        });
        assert_eq!(api_5xx, Some(3.0));
        assert_eq!(s.value("missing"), None);
        assert_eq!(s.disk_space(), None);
        let disk = Scrape::parse("svoi_disk_free_bytes 25\nsvoi_disk_size_bytes 100\n");
        assert_eq!(
            disk.disk_space(),
            Some(Space {
                free: 25,
                total: 100
            })
        );
        let weird = s.samples.iter().find(|x| x.name == "weird").unwrap();
        assert_eq!(weird.label("a"), Some("x\"y,z"));
        assert_eq!(weird.label("b"), Some("2"));
        assert_eq!(weird.value, 1000.0);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let s = Scrape::parse(PAGE);
        let b = s.buckets("svoi_commit_duration_seconds");
        assert_eq!(b, vec![(0.1, 2.0), (1.0, 8.0), (f64::INFINITY, 10.0)]);
        // rank 5 of 10: 3 of the 6 observations in (0.1, 1].
        let median = quantile(0.5, &b).unwrap();
        assert!((median - 0.55).abs() < 1e-9, "{median}");
        // rank 9.9 falls in +Inf: the largest finite bound.
        assert_eq!(quantile(0.99, &b), Some(1.0));
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        let earlier = vec![(0.1, 2.0), (1.0, 2.0), (f64::INFINITY, 2.0)];
        let inc = bucket_increase(&earlier, &b);
        assert_eq!(inc, vec![(0.1, 0.0), (1.0, 6.0), (f64::INFINITY, 8.0)]);
        assert!(quantile(0.5, &inc).unwrap() > 0.1);
    }

    #[test]
    fn error_lines_in_both_formats_and_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svoi.log");
        let now = jiff::Timestamp::now();
        let old = now
            .checked_sub(jiff::SignedDuration::from_hours(2))
            .unwrap();
        let text = format!(
            "{old} ERROR svoi: old failure\n\
             {now}  INFO svoi: fine\n\
             {now} ERROR svoi_ingest::writer: commit failed\n\
             {{\"timestamp\":\"{now}\",\"level\":\"ERROR\",\"message\":\"json failure\"}}\n\
             {{\"timestamp\":\"{now}\",\"level\":\"WARN\",\"message\":\"ERROR in text only\"}}\n"
        );
        std::fs::write(&path, text).unwrap();
        let lines = recent_errors(&path, Duration::from_secs(900), 10).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("commit failed"));
        assert!(lines[1].contains("json failure"));
        let last = recent_errors(&path, Duration::from_secs(900), 1).unwrap();
        assert_eq!(last.len(), 1);
        assert!(last[0].contains("json failure"));
        let all = recent_errors(&path, Duration::from_secs(86_400), 10).unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn api_base_and_locality() {
        let mut config = crate::config::load(None, &[], &crate::config::Overrides::default())
            .unwrap()
            .config;
        config.api.listen = "0.0.0.0:9999".parse().unwrap();
        assert_eq!(api_base(&config, None), "http://127.0.0.1:9999");
        assert_eq!(api_base(&config, Some("http://h:1/")), "http://h:1");
        assert!(is_local("http://127.0.0.1:8080"));
        assert!(is_local("http://localhost:8080/x"));
        assert!(is_local("http://[::1]:8080"));
        assert!(!is_local("http://10.0.0.5:8080"));
        assert!(!is_local("https://svoi.example.org"));
    }

    #[test]
    fn disk_and_memory_figures_are_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let space = disk_space(&dir.path().join("not/yet/there.db")).unwrap();
        assert!(space.total > 0 && space.free <= space.total, "{space:?}");
        let mem = memory();
        assert!(mem.total > 0 && mem.free <= mem.total, "{mem:?}");
    }
}
