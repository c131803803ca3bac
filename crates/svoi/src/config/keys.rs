//! The configuration keys as one table: each key's name, default, value kind and secrecy, and
//! the field of `Config` it fills. The file, environment and flag layers are all driven by
//! this table, so adding a key is one `key!` line plus its field.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, LogFormat};

/// Builds a [`Key`] whose parser and printer are the [`Kind`] `$kind` and whose value lives in
/// the `Config` field path `$field`; the compiler checks that the kind's value type is the
/// field's type.
macro_rules! key {
    ($name:literal = $default:literal, $kind:ty => $($field:ident).+) => {
        Key {
            name: $name,
            default: $default,
            secret: <$kind as Kind>::SECRET,
            integer: <$kind as Kind>::INTEGER,
            set: |config, raw| {
                config.$($field).+ = <$kind as Kind>::parse(raw)?;
                Ok(())
            },
            get: |config| <$kind as Kind>::show(&config.$($field).+),
        }
    };
}

/// Every key, in the order `svoi config check` prints them. Names are an interface: runbooks,
/// scripts and `SVOI_*` variables use them, so they are never renamed once released.
pub(super) const KEYS: &[Key] = &[
    key!("db" = "sqlite:./data/svoi.db", DbUrl => db),
    key!("ingest.listen" = "0.0.0.0:5221", Addr => ingest.listen),
    key!("ingest.max_connections" = "10000", Count<1> => ingest.max_connections),
    key!("ingest.idle_timeout" = "10m", Positive => ingest.idle_timeout),
    key!("ingest.handshake_timeout" = "30s", Positive => ingest.handshake_timeout),
    key!("ingest.max_message_bytes" = "262144", Count<64> => ingest.max_message_bytes),
    key!("ingest.queue_capacity" = "4096", Count<1> => ingest.queue_capacity),
    key!("ingest.batch_max_records" = "5000", Count<1> => ingest.batch_max_records),
    key!("ingest.batch_max_delay" = "1ms", AnyDuration => ingest.batch_max_delay),
    key!("ingest.shutdown_grace" = "10s", Positive => ingest.shutdown_grace),
    key!("api.listen" = "127.0.0.1:8080", Addr => api.listen),
    key!("api.metrics_listen" = "", OptionalAddr => api.metrics_listen),
    key!("sqlite.synchronous" = "full", Synchronous => sqlite.synchronous),
    key!("sqlite.busy_timeout" = "5s", Positive => sqlite.busy_timeout),
    key!("postgres.pool_size" = "8", Count<1> => postgres.pool_size),
    key!("postgres.connect_timeout" = "5s", Positive => postgres.connect_timeout),
    key!("postgres.statement_timeout" = "30s", Positive => postgres.statement_timeout),
    key!("log.format" = "text", Format => log.format),
    key!("log.level" = "info", Filter => log.level),
    key!("log.file" = "", OptionalPath => log.file),
    key!("alerts.no_frames_after" = "10m", Positive => alerts.no_frames_after),
    key!("alerts.queue_depth" = "2048", Count<1> => alerts.queue_depth),
    key!("alerts.decode_error_ratio" = "0.05", Fraction => alerts.decode_error_ratio),
    key!("alerts.commit_p99" = "1s", Positive => alerts.commit_p99),
    key!("alerts.api_5xx_ratio" = "0.05", Fraction => alerts.api_5xx_ratio),
    key!("alerts.failed_auth_per_minute" = "30", Count<1> => alerts.failed_auth_per_minute),
    key!("alerts.disk_free_ratio" = "0.10", Fraction => alerts.disk_free_ratio),
    key!("alerts.cpu_ratio" = "0.90", Fraction => alerts.cpu_ratio),
    key!("alerts.memory_ratio" = "0.90", Fraction => alerts.memory_ratio),
    key!("alerts.backup_max_age" = "26h", Positive => alerts.backup_max_age),
    key!("backup.dir" = "./backups", Path => backup.dir),
    key!("backup.keep_days" = "90", Count<0> => backup.keep_days),
    key!("backup.keep_last" = "7", Count<1> => backup.keep_last),
    key!("backup.pg_bin_dir" = "", OptionalPath => backup.pg_bin_dir),
    key!("retention.raw_frames" = "0", Age => retention.raw_frames),
    key!("retention.records" = "0", Age => retention.records),
    key!("retention.logs" = "30d", Positive => retention.logs),
    key!("maintenance.default_duration" = "1h", Positive => maintenance.default_duration),
    key!("maintenance.webhook_url" = "", SecretText => maintenance.webhook_url),
    key!("maintenance.alertmanager_url" = "", HttpUrl => maintenance.alertmanager_url),
];

/// One configuration key.
pub(super) struct Key {
    /// Dotted name: `db`, `ingest.listen`; the TOML table is the part before the dot.
    pub(super) name: &'static str,
    /// The default, written as in an environment variable and parsed like one.
    pub(super) default: &'static str,
    /// Printed as `***` wherever the effective configuration is shown.
    pub(super) secret: bool,
    /// Written as a TOML integer in the file (otherwise a TOML string).
    pub(super) integer: bool,
    /// Parses a raw value and stores it; the error says what is wrong with the value.
    pub(super) set: fn(&mut Config, &str) -> Result<(), String>,
    /// The stored value in its canonical text form (before redaction).
    pub(super) get: fn(&Config) -> String,
}

impl Key {
    /// `SVOI_` + the name uppercased with `.` → `_`: `ingest.listen` → `SVOI_INGEST_LISTEN`.
    pub(super) fn env_var(&self) -> String {
        format!("SVOI_{}", self.name.replace('.', "_").to_ascii_uppercase())
    }

    /// The value as shown to people: `***` for secrets (an empty secret stays empty: there is
    /// nothing to hide, and `config check` output then loads back to the same configuration).
    pub(super) fn display(&self, config: &Config) -> String {
        let value = (self.get)(config);
        if self.secret && !value.is_empty() {
            "***".to_string()
        } else {
            value
        }
    }
}

/// The shape of a value: how it is parsed from text (environment, flags, defaults, and TOML
/// strings or integers turned into text) and printed back. One implementation per shape.
pub(super) trait Kind {
    /// The `Config` field type.
    type Value;
    /// The TOML file writes the value as an integer rather than a string.
    const INTEGER: bool = false;
    /// The value is a secret: redacted in `config check` output and in `Debug`.
    const SECRET: bool = false;
    /// Parses and validates; the error describes the problem, without repeating secrets.
    fn parse(raw: &str) -> Result<Self::Value, String>;
    /// Canonical text form, parsed back by `parse` to the same value.
    fn show(value: &Self::Value) -> String;
}

/// A database URL: `sqlite:PATH` or `postgres://...` (`postgresql://` also accepted).
pub(super) struct DbUrl;

const DB_SCHEMES: [&str; 3] = ["sqlite:", "postgres://", "postgresql://"];

impl Kind for DbUrl {
    type Value = String;

    fn parse(raw: &str) -> Result<String, String> {
        match DB_SCHEMES.iter().find(|s| raw.starts_with(**s)) {
            // The store's own parser: a URL refused here is refused at start, naming the line,
            // rather than when the server first connects. Its errors hide passwords.
            Some(scheme) if raw.len() > scheme.len() => raw
                .parse::<svoi_store::DbUrl>()
                .map(|_| raw.to_string())
                .map_err(|e| e.to_string()),
            Some(scheme) => Err(format!("database url {scheme:?} names no database")),
            // The URL is not echoed: a mistyped PostgreSQL URL may still carry a password.
            None => Err(
                "database url must start with \"sqlite:\", \"postgres://\" or \"postgresql://\""
                    .to_string(),
            ),
        }
    }

    fn show(value: &String) -> String {
        redact_url_password(value)
    }
}

/// `postgres://user:pass@host/db` → `postgres://user:***@host/db`; anything else unchanged.
/// A PostgreSQL URL is the one value today that can carry a secret.
pub(super) fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// An `IP:PORT` socket address (no host names: the listener binds what it is told).
pub(super) struct Addr;

impl Kind for Addr {
    type Value = SocketAddr;

    fn parse(raw: &str) -> Result<SocketAddr, String> {
        raw.parse().map_err(|_| {
            format!("invalid socket address {raw:?}, expected IP:PORT such as \"0.0.0.0:5221\"")
        })
    }

    fn show(value: &SocketAddr) -> String {
        value.to_string()
    }
}

/// An optional `IP:PORT`; the empty string means none.
pub(super) struct OptionalAddr;

impl Kind for OptionalAddr {
    type Value = Option<SocketAddr>;

    fn parse(raw: &str) -> Result<Option<SocketAddr>, String> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            Addr::parse(raw).map(Some)
        }
    }

    fn show(value: &Option<SocketAddr>) -> String {
        value.map(|a| a.to_string()).unwrap_or_default()
    }
}

/// A count of at least `MIN`.
pub(super) struct Count<const MIN: usize>;

impl<const MIN: usize> Kind for Count<MIN> {
    type Value = usize;
    const INTEGER: bool = true;

    fn parse(raw: &str) -> Result<usize, String> {
        match raw.parse::<usize>() {
            Ok(n) if n >= MIN => Ok(n),
            Ok(n) => Err(format!("must be at least {MIN}, got {n}")),
            Err(_) => Err(format!("expected an integer >= {MIN}, got {raw:?}")),
        }
    }

    fn show(value: &usize) -> String {
        value.to_string()
    }
}

/// A duration in humantime form (`"10m"`, `"30s"`, `"1h 30m"`, `"0ms"`).
pub(super) struct AnyDuration;

impl Kind for AnyDuration {
    type Value = Duration;

    fn parse(raw: &str) -> Result<Duration, String> {
        humantime::parse_duration(raw).map_err(|e| {
            format!("invalid duration {raw:?} ({e}), expected e.g. \"30s\" or \"10m\"")
        })
    }

    fn show(value: &Duration) -> String {
        humantime::format_duration(*value).to_string()
    }
}

/// A duration greater than zero: a zero timeout would close every connection at once.
pub(super) struct Positive;

impl Kind for Positive {
    type Value = Duration;

    fn parse(raw: &str) -> Result<Duration, String> {
        match AnyDuration::parse(raw)? {
            Duration::ZERO => Err(format!("duration must be greater than zero, got {raw:?}")),
            d => Ok(d),
        }
    }

    fn show(value: &Duration) -> String {
        AnyDuration::show(value)
    }
}

/// An optional file path; the empty string means none.
pub(super) struct OptionalPath;

impl Kind for OptionalPath {
    type Value = Option<std::path::PathBuf>;

    fn parse(raw: &str) -> Result<Self::Value, String> {
        Ok((!raw.trim().is_empty()).then(|| std::path::PathBuf::from(raw)))
    }

    fn show(value: &Self::Value) -> String {
        value
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// A file or directory path (not empty).
pub(super) struct Path;

impl Kind for Path {
    type Value = std::path::PathBuf;

    fn parse(raw: &str) -> Result<Self::Value, String> {
        if raw.trim().is_empty() {
            Err("path is empty".to_string())
        } else {
            Ok(std::path::PathBuf::from(raw))
        }
    }

    fn show(value: &Self::Value) -> String {
        value.display().to_string()
    }
}

/// A maximum age: a positive duration, or `0` (also `""`, `never`) for keeping forever.
pub(super) struct Age;

impl Kind for Age {
    type Value = Option<Duration>;

    fn parse(raw: &str) -> Result<Self::Value, String> {
        match raw.trim() {
            "" | "0" | "never" => Ok(None),
            text => match AnyDuration::parse(text)? {
                Duration::ZERO => Ok(None),
                d => Ok(Some(d)),
            },
        }
    }

    fn show(value: &Self::Value) -> String {
        match value {
            None => "0".to_string(),
            // Whole days as days: "180days", not humantime's "5months 27days 13h 30m 36s".
            Some(d) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => {
                format!("{}days", d.as_secs() / 86_400)
            }
            Some(d) => AnyDuration::show(d),
        }
    }
}

/// An optional `http://` or `https://` base URL; the empty string means none.
pub(super) struct HttpUrl;

impl Kind for HttpUrl {
    type Value = Option<String>;

    fn parse(raw: &str) -> Result<Self::Value, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .ok_or_else(|| format!("expected an http:// or https:// URL, got {raw:?}"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("URL {raw:?} names no host"));
        }
        Ok(Some(text.trim_end_matches('/').to_string()))
    }

    fn show(value: &Self::Value) -> String {
        value.clone().unwrap_or_default()
    }
}

/// A fraction from 0 to 1, written `0.05` or `5%`.
pub(super) struct Fraction;

impl Kind for Fraction {
    type Value = super::Ratio;

    fn parse(raw: &str) -> Result<super::Ratio, String> {
        let text = raw.trim();
        let (number, scale) = match text.strip_suffix('%') {
            Some(pct) => (pct.trim(), 100.0),
            None => (text, 1.0),
        };
        match number.parse::<f64>() {
            Ok(v) if (0.0..=scale).contains(&v) => Ok(super::Ratio::new(v / scale)),
            _ => Err(format!(
                "expected a fraction from 0 to 1 such as \"0.05\" or \"5%\", got {raw:?}"
            )),
        }
    }

    fn show(value: &super::Ratio) -> String {
        value.get().to_string()
    }
}

/// SQLite `PRAGMA synchronous`; stored lowercase.
pub(super) struct Synchronous;

impl Kind for Synchronous {
    type Value = String;

    fn parse(raw: &str) -> Result<String, String> {
        let lower = raw.to_ascii_lowercase();
        match lower.as_str() {
            "off" | "normal" | "full" | "extra" => Ok(lower),
            _ => Err(format!(
                "expected one of off, normal, full, extra, got {raw:?}"
            )),
        }
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// Log output format.
pub(super) struct Format;

impl Kind for Format {
    type Value = LogFormat;

    fn parse(raw: &str) -> Result<LogFormat, String> {
        match raw.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected text or json, got {raw:?}")),
        }
    }

    fn show(value: &LogFormat) -> String {
        match value {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
        .to_string()
    }
}

/// A `tracing` filter (`info`, `warn,svoi_ingest=debug`), checked with the same parser the
/// telemetry setup uses, so `config check` rejects what `serve` would.
pub(super) struct Filter;

impl Kind for Filter {
    type Value = String;

    fn parse(raw: &str) -> Result<String, String> {
        if raw.trim().is_empty() {
            return Err(
                "log filter is empty, expected e.g. \"info\" or \"warn,svoi_ingest=debug\"".into(),
            );
        }
        tracing_subscriber::EnvFilter::try_new(raw)
            .map(|_| raw.to_string())
            .map_err(|e| format!("invalid log filter {raw:?} ({e})"))
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A string that must not be shown: `Debug` prints `***`, and a key of this kind is redacted
/// in `svoi config check` (`maintenance.webhook_url`: a Slack webhook URL is a credential).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it (never for logging).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// No value was given.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The kind of secret string keys.
pub(super) struct SecretText;

impl Kind for SecretText {
    type Value = Secret;
    const SECRET: bool = true;

    fn parse(raw: &str) -> Result<Secret, String> {
        Ok(Secret(raw.to_string()))
    }

    fn show(value: &Secret) -> String {
        value.0.clone()
    }
}
