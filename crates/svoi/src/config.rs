//! Configuration loading: defaults < TOML file < `SVOI_*` environment < command-line flags,
//! validated once into a typed [`Config`], remembering where every value came from.
//!
//! All keys live in one table ([`keys::KEYS`]); the three layers are driven by it. Unknown keys
//! in the file are errors (a typo must not silently fall back to a default); unknown `SVOI_*`
//! variables are warnings, because the environment is shared with other tools. Every error
//! names its source: the file with line and column, the variable, or the flag.

mod keys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use toml::de::{DeTable, DeValue};

use keys::{KEYS, Key};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SVOI_CONFIG";

/// `SVOI_*` variables that are not configuration keys but are known, so not warned about.
const OTHER_KNOWN_ENV: &[&str] = &[CONFIG_ENV, "SVOI_TOKEN", "SVOI_OPERATOR"];

/// The effective configuration. `Debug` prints through the key table, so secrets show as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Database URL: `sqlite:PATH` or `postgres://...`.
    pub db: String,
    /// The device-facing TCP side.
    pub ingest: IngestConfig,
    /// The HTTP API and metrics listeners.
    pub api: ApiConfig,
    /// SQLite settings (ignored for PostgreSQL).
    pub sqlite: SqliteConfig,
    /// PostgreSQL settings (ignored for SQLite).
    pub postgres: PostgresConfig,
    /// Logging.
    pub log: LogConfig,
    /// Thresholds of `svoi alerts check` (the defaults are those of the Prometheus rules).
    pub alerts: AlertsConfig,
    /// Where backups go and how many are kept.
    pub backup: BackupConfig,
    /// How long data and logs are kept (`svoi retention run`).
    pub retention: RetentionConfig,
    /// Maintenance windows: notifications and alert silencing.
    pub maintenance: MaintenanceConfig,
}

/// `[backup]`: `svoi backup ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupConfig {
    /// Directory of the backups (`--backup-dir`).
    pub dir: PathBuf,
    /// `svoi backup prune` keeps backups younger than this many days...
    pub keep_days: usize,
    /// ... and at least this many of the newest, whatever their age.
    pub keep_last: usize,
    /// Where `pg_dump` and `pg_restore` are; `None` searches `PATH`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub pg_bin_dir: Option<PathBuf>,
}

/// `[retention]`: maximum ages; `None` keeps forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Raw frames (and the decode errors, current states, alarm events and additional records
    /// that came from them) older than this, by receive time, are deleted.
    pub raw_frames: Option<Duration>,
    /// Archive records older than this, by event time, are deleted.
    pub records: Option<Duration>,
    /// Rotated log files older than this are deleted.
    pub logs: Duration,
}

/// `[maintenance]`: windows opened by `svoi maintenance start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// How long a window lasts when `--duration` is not given (also the silence's length).
    pub default_duration: Duration,
    /// Slack-compatible incoming webhook (`{"text": ...}` is POSTed); empty for none.
    pub webhook_url: keys::Secret,
    /// Alertmanager base URL (`http://127.0.0.1:9093`) for silences; `None` for none.
    pub alertmanager_url: Option<String>,
}

/// `[alerts]`: the conditions `svoi alerts check` evaluates. The defaults are the thresholds
/// written in `ops/alerts/prometheus-rules.yml`; a test keeps the two equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsConfig {
    /// NoFrames: no device message for this long while devices are connected.
    pub no_frames_after: Duration,
    /// QueueDepthHigh: frames waiting for the writer above this.
    pub queue_depth: usize,
    /// DecodeErrorRateHigh: decode errors per message received above this.
    pub decode_error_ratio: Ratio,
    /// DatabaseCommitSlow: the 99th percentile of commit durations above this.
    pub commit_p99: Duration,
    /// ApiErrorRateHigh: 5xx answers per API request above this.
    pub api_5xx_ratio: Ratio,
    /// FailedAuthHigh: refused credentials per minute above this.
    pub failed_auth_per_minute: usize,
    /// DiskSpaceLow: free space of the data filesystem below this fraction.
    pub disk_free_ratio: Ratio,
    /// HighCpu: busy fraction of the host's CPUs above this.
    pub cpu_ratio: Ratio,
    /// HighMemory: used fraction of the host's memory above this.
    pub memory_ratio: Ratio,
    /// NoRecentBackup: the last successful backup older than this.
    pub backup_max_age: Duration,
}

/// A fraction from 0 to 1, kept in millionths so the configuration stays `Eq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ratio(u32);

impl Ratio {
    /// The nearest millionth of `v` (clamped to 0..=1).
    pub fn new(v: f64) -> Self {
        // Clamped to 0..=1 first, so the product fits in u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ratio((v.clamp(0.0, 1.0) * 1e6).round() as u32)
    }

    /// The fraction.
    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

/// `[ingest]`: the device-facing TCP listener, sessions and the batch writer — the ingest
/// crate's own settings type, filled from the key table.
pub use svoi_ingest::IngestConfig;

/// `[api]`: the HTTP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address of the HTTP API, `/health`, `/ready`, `/metrics` and `/docs`.
    pub listen: SocketAddr,
    /// A second listener serving only `/metrics` (for a scrape network apart from the API);
    /// `None` serves metrics on the API listener only.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[sqlite]`: settings of the embedded store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// `PRAGMA synchronous`: off, normal, full or extra (lowercase).
    pub synchronous: String,
    /// How long a writer waits for a lock before failing.
    pub busy_timeout: Duration,
}

/// `[postgres]`: connections to a PostgreSQL database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Read connections the HTTP API keeps (the writer has one more of its own).
    pub pool_size: usize,
    /// How long to wait for the server when connecting.
    pub connect_timeout: Duration,
    /// The longest any statement may run before the server cancels it.
    pub statement_timeout: Duration,
}

/// `[log]`: what the tracing subscriber prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Human-readable lines or one JSON object per event.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `warn,svoi_ingest=debug`.
    pub level: String,
    /// Append the log to this file instead of standard error (`svoi smoke`, `svoi emergency`
    /// and `svoi incident` read it back).
    pub file: Option<PathBuf>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (development, terminals).
    Text,
    /// One JSON object per event (production, log shippers).
    Json,
}

/// Where an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The config file, at this 1-based line.
    File {
        /// The file as named by `--config` or `SVOI_CONFIG`.
        path: PathBuf,
        /// Line of the key.
        line: usize,
    },
    /// This environment variable.
    Env(String),
    /// This command-line flag (`--listen`).
    Flag(String),
}

impl fmt::Display for Source {
    /// `default`, `file:PATH:LINE`, `env:SVOI_X` or `flag:--x`: the form `config check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "file:{}:{line}", path.display()),
            Source::Env(var) => write!(f, "env:{var}"),
            Source::Flag(flag) => write!(f, "flag:{flag}"),
        }
    }
}

/// Values from command-line flags, the top layer. The binary builds it from its clap flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `(key, value, flag)`: `("ingest.listen", "127.0.0.1:5221", "--listen")`. Later entries
    /// win over earlier ones for the same key.
    pub values: Vec<(&'static str, String, &'static str)>,
}

impl Overrides {
    /// Adds `key = value` from `flag` when the flag was given; `None` (flag absent) adds
    /// nothing, so lower layers apply.
    #[must_use]
    pub fn with(mut self, key: &'static str, flag: &'static str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.values.push((key, value.to_string(), flag));
        }
        self
    }
}

/// A loaded, validated configuration with the origin of each value.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The typed configuration the program runs with.
    pub config: Config,
    /// `(key, display value, source)` for every key in table order; secrets are `***`.
    pub sources: Vec<(&'static str, String, Source)>,
    /// Problems that do not stop the program (unknown `SVOI_*` variables); the binary logs
    /// them.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// One `key = value  # source` line per key, in table order, the `#` column aligned.
    ///
    /// Strings are quoted and integers bare, so the output is itself a valid config file
    /// (dotted keys at the top level) that loads to the same configuration.
    pub fn render(&self) -> String {
        let assignments: Vec<String> = self
            .sources
            .iter()
            .map(|(name, value, _)| format!("{name} = {}", toml_literal(name, value)))
            .collect();
        let width = assignments.iter().map(String::len).max().unwrap_or(0);
        let mut out = String::new();
        for (assignment, (_, _, source)) in assignments.iter().zip(&self.sources) {
            out.push_str(&format!("{assignment:<width$}  # {source}\n"));
        }
        out
    }
}

/// Whether `key` is written as a TOML integer (for printing values as numbers); `false` for
/// unknown keys.
pub fn is_integer_key(key: &str) -> bool {
    KEYS.iter().any(|k| k.name == key && k.integer)
}

/// `value` of `key` as a TOML literal: bare for integer keys, a quoted string otherwise.
fn toml_literal(key: &str, value: &str) -> String {
    if is_integer_key(key) {
        value.to_string()
    } else {
        toml::Value::String(value.to_string()).to_string()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for key in KEYS {
            map.entry(&key.name, &key.display(self));
        }
        map.finish()
    }
}

/// The `SVOI_*` variables of this process, for [`load`]. A value that is not UTF-8 is
/// converted lossily so that it fails validation naming its variable rather than vanishing.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("SVOI_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Loads the configuration: defaults, then the file (`config_path`, else `SVOI_CONFIG` from
/// `env`, else none), then `SVOI_*` variables from `env`, then `overrides`.
///
/// Every value is validated in the layer that supplies it, so a bad value in the file is an
/// error even when the environment overrides it. A named file that cannot be read is an
/// error. All errors name their source.
pub fn load(
    config_path: Option<&Path>,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Loaded> {
    load_with(KEYS, config_path, env, overrides)
}

/// [`load`] over any key table (tests use tables with secret keys).
fn load_with(
    keys: &[Key],
    config_path: Option<&Path>,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Loaded> {
    let mut config = placeholder();
    let mut sources = Vec::with_capacity(keys.len());
    for key in keys {
        (key.set)(&mut config, key.default)
            .map_err(|e| anyhow!("built-in default of {:?}: {e}", key.name))?;
        sources.push(Source::Default);
    }

    let env_file = env
        .iter()
        .rev()
        .find(|(k, v)| k == CONFIG_ENV && !v.is_empty())
        .map(|(_, v)| PathBuf::from(v));
    let file = match (config_path, &env_file) {
        (Some(path), _) => Some((path, "--config")),
        (None, Some(path)) => Some((path.as_path(), CONFIG_ENV)),
        (None, None) => None,
    };
    if let Some((path, named_by)) = file {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config file {} (from {named_by})",
                path.display()
            )
        })?;
        apply_file(keys, &mut config, &mut sources, path, &text)?;
    }

    for (i, key) in keys.iter().enumerate() {
        let var = key.env_var();
        if let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == var) {
            (key.set)(&mut config, value)
                .map_err(|e| anyhow!("environment variable {var}: key {:?}: {e}", key.name))?;
            sources[i] = Source::Env(var);
        }
    }
    let mut warnings: Vec<String> = env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("SVOI_") && !OTHER_KNOWN_ENV.contains(k))
        .filter(|k| !keys.iter().any(|key| key.env_var() == *k))
        .map(|k| {
            let known: Vec<String> = keys.iter().map(Key::env_var).collect();
            format!(
                "unknown environment variable {k}{}",
                did_you_mean(k, known.iter().map(String::as_str))
            )
        })
        .collect();
    warnings.sort();
    warnings.dedup();

    for (name, value, flag) in &overrides.values {
        let (i, key) = keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.name == *name)
            .ok_or_else(|| anyhow!("flag {flag}: unknown key {name:?}"))?;
        (key.set)(&mut config, value).map_err(|e| anyhow!("flag {flag}: key {name:?}: {e}"))?;
        sources[i] = Source::Flag((*flag).to_string());
    }

    let sources = keys
        .iter()
        .zip(sources)
        .map(|(key, source)| (key.name, key.display(&config), source))
        .collect();
    Ok(Loaded {
        config,
        sources,
        warnings,
    })
}

/// A value for every field, each overwritten by the key table's defaults before use.
fn placeholder() -> Config {
    Config {
        db: String::new(),
        ingest: IngestConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            max_connections: 0,
            idle_timeout: Duration::ZERO,
            handshake_timeout: Duration::ZERO,
            max_message_bytes: 0,
            queue_capacity: 0,
            batch_max_records: 0,
            batch_max_delay: Duration::ZERO,
            shutdown_grace: Duration::ZERO,
        },
        api: ApiConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            metrics_listen: None,
        },
        sqlite: SqliteConfig {
            synchronous: String::new(),
            busy_timeout: Duration::ZERO,
        },
        postgres: PostgresConfig {
            pool_size: 0,
            connect_timeout: Duration::ZERO,
            statement_timeout: Duration::ZERO,
        },
        log: LogConfig {
            format: LogFormat::Text,
            level: String::new(),
            file: None,
        },
        alerts: AlertsConfig {
            no_frames_after: Duration::ZERO,
            queue_depth: 0,
            decode_error_ratio: Ratio::default(),
            commit_p99: Duration::ZERO,
            api_5xx_ratio: Ratio::default(),
            failed_auth_per_minute: 0,
            disk_free_ratio: Ratio::default(),
            cpu_ratio: Ratio::default(),
            memory_ratio: Ratio::default(),
            backup_max_age: Duration::ZERO,
        },
        backup: BackupConfig {
            dir: PathBuf::new(),
            keep_days: 0,
            keep_last: 0,
            pg_bin_dir: None,
        },
        retention: RetentionConfig {
            raw_frames: None,
            records: None,
            logs: Duration::ZERO,
        },
        maintenance: MaintenanceConfig {
            default_duration: Duration::ZERO,
            webhook_url: keys::Secret::default(),
            alertmanager_url: None,
        },
    }
}

/// A problem in the file at a byte offset; the earliest one is reported.
struct FileProblem {
    offset: usize,
    message: String,
}

/// Parses the TOML text and applies every key it sets; the first problem by position becomes
/// `config PATH line L:C: ...`.
fn apply_file(
    keys: &[Key],
    config: &mut Config,
    sources: &mut [Source],
    path: &Path,
    text: &str,
) -> Result<()> {
    let at = |offset: usize, message: &str| {
        let (line, column) = line_column(text, offset);
        anyhow!("config {} line {line}:{column}: {message}", path.display())
    };
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => match e.span() {
            Some(span) => return Err(at(span.start, e.message())),
            None => bail!("config {}: {}", path.display(), e.message()),
        },
    };
    let mut problems = Vec::new();
    let mut walk = Walk {
        keys,
        config,
        sources,
        path,
        text,
        problems: &mut problems,
    };
    walk.table(doc.get_ref(), "");
    match problems.into_iter().min_by_key(|p| p.offset) {
        Some(p) => Err(at(p.offset, &p.message)),
        None => Ok(()),
    }
}

/// The state of one walk over a parsed file.
struct Walk<'a> {
    keys: &'a [Key],
    config: &'a mut Config,
    sources: &'a mut [Source],
    path: &'a Path,
    text: &'a str,
    problems: &'a mut Vec<FileProblem>,
}

impl Walk<'_> {
    /// Checks and applies every entry of `table`, whose dotted name is `prefix` ("" at the top).
    fn table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (name, value) in table {
            let full = if prefix.is_empty() {
                name.get_ref().to_string()
            } else {
                format!("{prefix}.{}", name.get_ref())
            };
            let key_at = name.span().start;
            let value_at = value.span().start;
            if let Some(i) = self.keys.iter().position(|k| k.name == full) {
                self.leaf(i, value.get_ref(), key_at, value_at);
            } else if self.is_table(&full) {
                match value.get_ref() {
                    DeValue::Table(inner) => self.table(inner, &full),
                    other => self.problem(
                        value_at,
                        format!("{full:?} is a table, found {}", article(other.type_str())),
                    ),
                }
            } else {
                let names = self.keys.iter().map(|k| k.name);
                let hint = did_you_mean(&full, names);
                self.problem(key_at, format!("unknown key {full:?}{hint}"));
            }
        }
    }

    /// Applies one value to key `i`.
    fn leaf(&mut self, i: usize, value: &DeValue<'_>, key_at: usize, value_at: usize) {
        let key = &self.keys[i];
        let raw = match (value, key.integer) {
            (DeValue::Integer(n), true) => i128::from_str_radix(n.as_str(), n.radix())
                .map_or_else(|_| n.as_str().to_string(), |n| n.to_string()),
            (DeValue::String(s), false) => s.to_string(),
            // `decode_error_ratio = 0.05`: the key's own parser judges the number.
            (DeValue::Float(f), false) => f.as_str().to_string(),
            (other, integer) => {
                let expected = if integer { "an integer" } else { "a string" };
                return self.problem(
                    value_at,
                    format!(
                        "key {:?}: expected {expected}, found {}",
                        key.name,
                        article(other.type_str())
                    ),
                );
            }
        };
        match (key.set)(self.config, &raw) {
            Ok(()) => {
                let (line, _) = line_column(self.text, key_at);
                self.sources[i] = Source::File {
                    path: self.path.to_path_buf(),
                    line,
                };
            }
            Err(e) => self.problem(value_at, format!("key {:?}: {e}", key.name)),
        }
    }

    /// `name` is a table of keys (`ingest`), not a key.
    fn is_table(&self, name: &str) -> bool {
        self.keys.iter().any(|k| {
            k.name
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    fn problem(&mut self, offset: usize, message: String) {
        self.problems.push(FileProblem { offset, message });
    }
}

/// "a string", "an integer", "a table": for "found ..." messages.
fn article(type_str: &str) -> String {
    match type_str.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// ` (did you mean "X"?)` for the closest candidate within a small edit distance, else "".
fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over bytes (key names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
