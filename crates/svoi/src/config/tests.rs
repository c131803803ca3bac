//! Unit tests of configuration loading: layer precedence for every key, every error path with
//! its position, warnings, rendering and redaction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;

use super::keys::{Key, Kind, Secret, SecretText, redact_url_password};
use super::*;

/// A config file in its own temporary directory (kept alive by the returned guard).
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(text: &str) -> File {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svoi.toml");
    fs::write(&path, text).unwrap();
    File { _dir: dir, path }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn no_flags() -> Overrides {
    Overrides::default()
}

/// Loads `text` as the config file with no environment or flags.
fn load_text(text: &str) -> (File, Result<Loaded>) {
    let f = file(text);
    let loaded = load(Some(&f.path), &[], &no_flags());
    (f, loaded)
}

/// The error of loading `text`, with the temporary path replaced by `PATH`.
fn file_error(text: &str) -> String {
    let (f, loaded) = load_text(text);
    let err = loaded.expect_err("the file must be rejected");
    format!("{err:#}").replace(&f.path.display().to_string(), "PATH")
}

fn source_of(loaded: &Loaded, key: &str) -> (String, Source) {
    let (_, value, source) = loaded
        .sources
        .iter()
        .find(|(k, _, _)| *k == key)
        .unwrap_or_else(|| panic!("no source for {key}"));
    (value.clone(), source.clone())
}

#[test]
fn defaults_are_the_documented_ones() {
    let loaded = load(None, &[], &no_flags()).unwrap();
    let c = &loaded.config;
    assert_eq!(c.db, "sqlite:./data/svoi.db");
    assert_eq!(c.ingest.listen, "0.0.0.0:5221".parse().unwrap());
    assert_eq!(c.ingest.max_connections, 10_000);
    assert_eq!(c.ingest.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.ingest.handshake_timeout, Duration::from_secs(30));
    assert_eq!(c.ingest.max_message_bytes, 262_144);
    assert_eq!(c.ingest.queue_capacity, 4096);
    assert_eq!(c.ingest.batch_max_records, 5_000);
    assert_eq!(c.ingest.batch_max_delay, Duration::from_millis(1));
    assert_eq!(c.ingest.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.api.metrics_listen, None);
    assert_eq!(c.sqlite.synchronous, "full");
    assert_eq!(c.sqlite.busy_timeout, Duration::from_secs(5));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.file, None);
    assert_eq!(c.alerts.no_frames_after, Duration::from_secs(600));
    assert_eq!(c.alerts.queue_depth, 2048);
    assert_eq!(c.alerts.decode_error_ratio.get(), 0.05);
    assert_eq!(c.alerts.commit_p99, Duration::from_secs(1));
    assert_eq!(c.alerts.api_5xx_ratio.get(), 0.05);
    assert_eq!(c.alerts.failed_auth_per_minute, 30);
    assert_eq!(c.alerts.disk_free_ratio.get(), 0.1);
    assert_eq!(c.alerts.cpu_ratio.get(), 0.9);
    assert_eq!(c.alerts.memory_ratio.get(), 0.9);
    assert_eq!(c.alerts.backup_max_age, Duration::from_secs(26 * 3600));
    assert!(loaded.sources.iter().all(|(_, _, s)| *s == Source::Default));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn key_names_and_variables_are_the_documented_interface() {
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    assert_eq!(
        names,
        [
            "db",
            "ingest.listen",
            "ingest.max_connections",
            "ingest.idle_timeout",
            "ingest.handshake_timeout",
            "ingest.max_message_bytes",
            "ingest.queue_capacity",
            "ingest.batch_max_records",
            "ingest.batch_max_delay",
            "ingest.shutdown_grace",
            "api.listen",
            "api.metrics_listen",
            "sqlite.synchronous",
            "sqlite.busy_timeout",
            "postgres.pool_size",
            "postgres.connect_timeout",
            "postgres.statement_timeout",
            "log.format",
            "log.level",
            "log.file",
            "alerts.no_frames_after",
            "alerts.queue_depth",
            "alerts.decode_error_ratio",
            "alerts.commit_p99",
            "alerts.api_5xx_ratio",
            "alerts.failed_auth_per_minute",
            "alerts.disk_free_ratio",
            "alerts.cpu_ratio",
            "alerts.memory_ratio",
            "alerts.backup_max_age",
            "backup.dir",
            "backup.keep_days",
            "backup.keep_last",
            "backup.pg_bin_dir",
            "retention.raw_frames",
            "retention.records",
            "retention.logs",
            "maintenance.default_duration",
            "maintenance.webhook_url",
            "maintenance.alertmanager_url",
        ]
    );
    let vars: Vec<String> = KEYS.iter().map(Key::env_var).collect();
    assert_eq!(vars[1], "SVOI_INGEST_LISTEN");
    assert_eq!(vars[2], "SVOI_INGEST_MAX_CONNECTIONS");
    let mut unique = vars.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), vars.len(), "two keys share a variable");
    for other in OTHER_KNOWN_ENV {
        assert!(!vars.iter().any(|v| v == other), "{other} is not a key");
    }
}

/// Three distinct valid values per key, in canonical form: for the file, the environment and
/// the flags. Integer keys are written bare in the file.
const SAMPLES: &[(&str, [&str; 3])] = &[
    (
        "db",
        ["sqlite:/f.db", "postgres://h/env", "postgresql://h/flag"],
    ),
    ("ingest.listen", ["127.0.0.1:1", "127.0.0.2:2", "[::1]:3"]),
    ("ingest.max_connections", ["11", "12", "13"]),
    ("ingest.idle_timeout", ["1m", "2m", "3h"]),
    ("ingest.handshake_timeout", ["1s", "2s", "3s"]),
    ("ingest.max_message_bytes", ["64", "65", "66"]),
    ("ingest.queue_capacity", ["1", "2", "3"]),
    ("ingest.batch_max_records", ["100", "200", "300"]),
    ("ingest.batch_max_delay", ["0s", "5ms", "1s 500ms"]),
    ("ingest.shutdown_grace", ["1s", "1m", "1h"]),
    ("api.listen", ["127.0.0.1:8081", "0.0.0.0:80", "[::1]:8082"]),
    (
        "api.metrics_listen",
        ["127.0.0.1:9100", "0.0.0.0:9101", "[::1]:9102"],
    ),
    ("sqlite.synchronous", ["off", "normal", "extra"]),
    ("sqlite.busy_timeout", ["1s", "2s", "3s"]),
    ("postgres.pool_size", ["1", "2", "3"]),
    ("postgres.connect_timeout", ["1s", "2s", "3s"]),
    ("postgres.statement_timeout", ["1s", "2s", "3s"]),
    ("log.format", ["json", "text", "json"]),
    ("log.level", ["debug", "warn", "svoi=trace"]),
    ("log.file", ["/var/log/a.log", "b.log", "logs/c.log"]),
    ("alerts.no_frames_after", ["1m", "2m", "3h"]),
    ("alerts.queue_depth", ["1", "2", "3"]),
    ("alerts.decode_error_ratio", ["0.1", "0.2", "0"]),
    ("alerts.commit_p99", ["1s", "2s", "500ms"]),
    ("alerts.api_5xx_ratio", ["0.1", "0.2", "1"]),
    ("alerts.failed_auth_per_minute", ["1", "2", "3"]),
    ("alerts.disk_free_ratio", ["0.05", "0.2", "0.3"]),
    ("alerts.cpu_ratio", ["0.5", "0.6", "0.7"]),
    ("alerts.memory_ratio", ["0.5", "0.6", "0.75"]),
    ("alerts.backup_max_age", ["1h", "2days", "30m"]),
    ("backup.dir", ["/var/backups/svoi", "b", "./c"]),
    ("backup.keep_days", ["0", "30", "365"]),
    ("backup.keep_last", ["1", "2", "3"]),
    (
        "backup.pg_bin_dir",
        ["/usr/lib/postgresql/15/bin", "/opt/pg", "bin"],
    ),
    ("retention.raw_frames", ["90days", "0", "400days"]),
    ("retention.records", ["730days", "30days", "0"]),
    ("retention.logs", ["30days", "7days", "1day"]),
    ("maintenance.default_duration", ["1h", "30m", "2h"]),
    (
        "maintenance.webhook_url",
        [
            "https://hooks.example/a",
            "http://127.0.0.1:9/b",
            "https://h/c",
        ],
    ),
    (
        "maintenance.alertmanager_url",
        [
            "http://127.0.0.1:9093",
            "https://am.local",
            "http://[::1]:9093",
        ],
    ),
];

#[test]
fn every_key_takes_each_layer_in_precedence_order() {
    assert_eq!(
        SAMPLES.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        KEYS.iter().map(|k| k.name).collect::<Vec<_>>(),
        "every key has samples"
    );
    // One dotted assignment per line, so key i is on line i + 1.
    let text: String = SAMPLES
        .iter()
        .map(|(k, v)| format!("{k} = {}\n", toml_literal(k, v[0])))
        .collect();
    let f = file(&text);
    let env_all: Vec<(String, String)> = KEYS
        .iter()
        .zip(SAMPLES)
        .map(|(key, (_, v))| (key.env_var(), v[1].to_string()))
        .collect();
    let flags = Overrides {
        values: SAMPLES
            .iter()
            .map(|(k, v)| (*k, v[2].to_string(), "--test-flag"))
            .collect(),
    };

    let from_file = load(Some(&f.path), &[], &no_flags()).unwrap();
    let from_env = load(Some(&f.path), &env_all, &no_flags()).unwrap();
    let from_flags = load(Some(&f.path), &env_all, &flags).unwrap();
    for (i, (key, values)) in SAMPLES.iter().enumerate() {
        // Secrets are shown as *** whatever their value.
        let shown = |v: &str| {
            if KEYS[i].secret {
                "***".into()
            } else {
                v.to_string()
            }
        };
        let expected_file = Source::File {
            path: f.path.clone(),
            line: i + 1,
        };
        assert_eq!(
            source_of(&from_file, key),
            (shown(values[0]), expected_file)
        );
        let var = KEYS[i].env_var();
        assert_eq!(
            source_of(&from_env, key),
            (shown(values[1]), Source::Env(var))
        );
        let flag = Source::Flag("--test-flag".into());
        assert_eq!(source_of(&from_flags, key), (shown(values[2]), flag));
    }
    assert_eq!(
        from_flags.config.maintenance.webhook_url.expose(),
        "https://h/c"
    );
    assert_eq!(
        from_file.config.retention.raw_frames,
        Some(Duration::from_secs(90 * 86_400))
    );
    assert_eq!(
        from_env.config.retention.raw_frames, None,
        "0 keeps forever"
    );
    assert_eq!(from_flags.config.ingest.listen, "[::1]:3".parse().unwrap());
    assert_eq!(from_env.config.log.format, LogFormat::Text);
    assert_eq!(from_file.config.ingest.batch_max_delay, Duration::ZERO);
}

#[test]
fn tables_set_their_keys_and_record_the_key_line() {
    let (f, loaded) = load_text(
        "# svoi\ndb = \"sqlite:x.db\"\n\n[ingest]\nlisten = \"127.0.0.1:6000\"\n\
         max_connections = 5\n\n[sqlite]\nsynchronous = \"NORMAL\"\n[log]\nformat = \"json\"\n",
    );
    let loaded = loaded.unwrap();
    let at = |line| Source::File {
        path: f.path.clone(),
        line,
    };
    assert_eq!(source_of(&loaded, "db"), ("sqlite:x.db".into(), at(2)));
    assert_eq!(
        source_of(&loaded, "ingest.listen"),
        ("127.0.0.1:6000".into(), at(5))
    );
    assert_eq!(source_of(&loaded, "ingest.max_connections").1, at(6));
    assert_eq!(
        source_of(&loaded, "sqlite.synchronous"),
        ("normal".into(), at(9))
    );
    assert_eq!(source_of(&loaded, "log.format").1, at(11));
    assert_eq!(source_of(&loaded, "log.level").1, Source::Default);
    assert_eq!(loaded.config.sqlite.synchronous, "normal");
    assert_eq!(loaded.config.ingest.max_connections, 5);
}

#[test]
fn unknown_top_level_key_names_line_and_key() {
    assert_eq!(
        file_error("db = \"sqlite:x.db\"\n\nlisten = \"0.0.0.0:1\"\n"),
        "config PATH line 3:1: unknown key \"listen\""
    );
}

#[test]
fn unknown_key_inside_a_table_names_line_column_and_dotted_key() {
    let text =
        "db = \"sqlite:x.db\"\n\n[ingest]\nmax_connections = 3\n\n\n  lisen = \"0.0.0.0:1\"\n";
    assert_eq!(
        file_error(text),
        "config PATH line 7:3: unknown key \"ingest.lisen\" (did you mean \"ingest.listen\"?)"
    );
}

#[test]
fn unknown_table_is_an_unknown_key() {
    assert_eq!(
        file_error("[ingset]\nlisten = \"0.0.0.0:1\"\n"),
        "config PATH line 1:2: unknown key \"ingset\""
    );
    assert_eq!(
        file_error("[ingest.extra]\nx = 1\n"),
        "config PATH line 1:9: unknown key \"ingest.extra\""
    );
}

#[test]
fn the_earliest_problem_is_reported() {
    assert_eq!(
        file_error("zzz = 1\n[ingest]\nlisten = \"x\"\n"),
        "config PATH line 1:1: unknown key \"zzz\""
    );
    assert_eq!(
        file_error("[log]\nformat = \"xml\"\n[ingest]\naaa = 1\n"),
        "config PATH line 2:10: key \"log.format\": expected text or json, got \"xml\""
    );
}

#[test]
fn bad_duration_names_line_key_and_value() {
    let err = file_error("[ingest]\nidle_timeout = \"10x\"\n");
    assert!(
        err.starts_with(
            "config PATH line 2:16: key \"ingest.idle_timeout\": invalid duration \"10x\""
        ),
        "{err}"
    );
    let err = file_error("[ingest]\nidle_timeout = \"10\"\n");
    assert!(
        err.contains("line 2:16") && err.contains("invalid duration \"10\""),
        "{err}"
    );
}

#[test]
fn zero_is_a_valid_batch_delay_but_not_a_timeout() {
    let (_f, loaded) = load_text("[ingest]\nbatch_max_delay = \"0ms\"\n");
    assert_eq!(
        loaded.unwrap().config.ingest.batch_max_delay,
        Duration::ZERO
    );
    assert_eq!(
        file_error("[ingest]\nidle_timeout = \"0s\"\n"),
        "config PATH line 2:16: key \"ingest.idle_timeout\": duration must be greater than zero, got \"0s\""
    );
}

#[test]
fn bad_socket_address_names_line_and_key() {
    assert_eq!(
        file_error("[ingest]\nlisten = \"localhost:5221\"\n"),
        "config PATH line 2:10: key \"ingest.listen\": invalid socket address \"localhost:5221\", \
         expected IP:PORT such as \"0.0.0.0:5221\""
    );
}

#[test]
fn wrong_toml_type_names_expected_and_found() {
    assert_eq!(
        file_error("[ingest]\nmax_connections = \"10\"\n"),
        "config PATH line 2:19: key \"ingest.max_connections\": expected an integer, found a string"
    );
    assert_eq!(
        file_error("[ingest]\nidle_timeout = 10\n"),
        "config PATH line 2:16: key \"ingest.idle_timeout\": expected a string, found an integer"
    );
    assert_eq!(
        file_error("db = true\n"),
        "config PATH line 1:6: key \"db\": expected a string, found a boolean"
    );
    assert_eq!(
        file_error("ingest = 5\n"),
        "config PATH line 1:10: \"ingest\" is a table, found an integer"
    );
}

#[test]
fn integers_below_the_minimum_are_rejected() {
    assert_eq!(
        file_error("[ingest]\nmax_message_bytes = 63\n"),
        "config PATH line 2:21: key \"ingest.max_message_bytes\": must be at least 64, got 63"
    );
    assert_eq!(
        file_error("[ingest]\nqueue_capacity = -1\n"),
        "config PATH line 2:18: key \"ingest.queue_capacity\": expected an integer >= 1, got \"-1\""
    );
    let (_f, loaded) = load_text("[ingest]\nqueue_capacity = 0x10\n");
    assert_eq!(loaded.unwrap().config.ingest.queue_capacity, 16);
}

#[test]
fn bad_synchronous_value_lists_the_choices() {
    assert_eq!(
        file_error("[sqlite]\nsynchronous = \"fast\"\n"),
        "config PATH line 2:15: key \"sqlite.synchronous\": \
         expected one of off, normal, full, extra, got \"fast\""
    );
}

#[test]
fn bad_database_url_is_rejected_without_echoing_it() {
    let err = file_error("db = \"mysql://root:hunter2@h/db\"\n");
    assert!(err.starts_with("config PATH line 1:6: key \"db\": database url must start with"));
    assert!(!err.contains("hunter2"), "{err}");
    assert!(file_error("db = \"sqlite:\"\n").contains("names no database"));
    // A PostgreSQL URL is checked by the store's parser at load time, without its password.
    for bad in ["postgres://u:pw@host", "postgres://u:pw@host:99999/x"] {
        let e = file_error(&format!("\ndb = \"{bad}\"\n"));
        assert!(e.contains("line 2:6"), "{e}");
        assert!(e.contains("bad database url"), "{e}");
        assert!(!e.contains("pw"), "{e}");
    }
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let err = file_error("[ingest]\nlisten = \n");
    assert!(err.starts_with("config PATH line 2:"), "{err}");
    let err = file_error("db = \"sqlite:a\"\ndb = \"sqlite:b\"\n");
    assert!(err.starts_with("config PATH line 2:"), "{err}");
}

#[test]
fn env_bad_value_names_the_variable() {
    let err = load(
        None,
        &env(&[("SVOI_INGEST_IDLE_TIMEOUT", "soon")]),
        &no_flags(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "environment variable SVOI_INGEST_IDLE_TIMEOUT: key \"ingest.idle_timeout\": \
             invalid duration \"soon\""
        ),
        "{err}"
    );
    let err = load(
        None,
        &env(&[("SVOI_INGEST_MAX_CONNECTIONS", "0")]),
        &no_flags(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "environment variable SVOI_INGEST_MAX_CONNECTIONS: key \"ingest.max_connections\": \
         must be at least 1, got 0"
    );
}

#[test]
fn log_level_is_checked_as_a_tracing_filter() {
    let err = file_error("[log]\nlevel = \"svoi=loud\"\n");
    assert!(
        err.starts_with(
            "config PATH line 2:9: key \"log.level\": invalid log filter \"svoi=loud\""
        ),
        "{err}"
    );
    assert!(file_error("[log]\nlevel = \" \"\n").contains("log filter is empty"));
    let (_f, loaded) = load_text("[log]\nlevel = \"warn,svoi_ingest=debug\"\n");
    assert_eq!(loaded.unwrap().config.log.level, "warn,svoi_ingest=debug");
}

#[test]
fn env_integers_are_strings() {
    let loaded = load(
        None,
        &env(&[("SVOI_INGEST_QUEUE_CAPACITY", "7")]),
        &no_flags(),
    )
    .unwrap();
    assert_eq!(loaded.config.ingest.queue_capacity, 7);
}

#[test]
fn a_bad_file_value_is_an_error_even_when_env_overrides_it() {
    let f = file("[ingest]\nlisten = \"nope\"\n");
    let vars = env(&[("SVOI_INGEST_LISTEN", "127.0.0.1:1")]);
    let err = load(Some(&f.path), &vars, &no_flags()).unwrap_err();
    assert!(err.to_string().contains("line 2:10"), "{err}");
}

#[test]
fn flag_overrides_env_and_bad_flag_names_the_flag() {
    let vars = env(&[("SVOI_DB", "sqlite:env.db"), ("SVOI_LOG_FORMAT", "json")]);
    let flags = Overrides::default()
        .with("db", "--db", Some("sqlite:flag.db"))
        .with("log.format", "--log-format", None);
    let loaded = load(None, &vars, &flags).unwrap();
    assert_eq!(loaded.config.db, "sqlite:flag.db");
    assert_eq!(source_of(&loaded, "db").1, Source::Flag("--db".into()));
    assert_eq!(
        loaded.config.log.format,
        LogFormat::Json,
        "absent flag leaves env"
    );
    assert_eq!(
        source_of(&loaded, "log.format").1,
        Source::Env("SVOI_LOG_FORMAT".into())
    );

    let flags = Overrides::default().with("ingest.listen", "--listen", Some("5221"));
    let err = load(None, &vars, &flags).unwrap_err().to_string();
    assert!(
        err.starts_with("flag --listen: key \"ingest.listen\": invalid socket address \"5221\""),
        "{err}"
    );
    let flags = Overrides::default().with("nope", "--nope", Some("1"));
    let err = load(None, &[], &flags).unwrap_err().to_string();
    assert_eq!(err, "flag --nope: unknown key \"nope\"");
}

#[test]
fn svoi_config_names_the_file_unless_config_path_is_given() {
    let a = file("db = \"sqlite:a.db\"\n");
    let b = file("db = \"sqlite:b.db\"\n");
    let vars = env(&[(CONFIG_ENV, a.path.to_str().unwrap())]);
    let loaded = load(None, &vars, &no_flags()).unwrap();
    assert_eq!(loaded.config.db, "sqlite:a.db");
    assert_eq!(
        source_of(&loaded, "db").1,
        Source::File {
            path: a.path.clone(),
            line: 1
        }
    );
    let loaded = load(Some(&b.path), &vars, &no_flags()).unwrap();
    assert_eq!(loaded.config.db, "sqlite:b.db");
    let loaded = load(None, &env(&[(CONFIG_ENV, "")]), &no_flags()).unwrap();
    assert_eq!(
        source_of(&loaded, "db").1,
        Source::Default,
        "empty means unset"
    );
}

#[test]
fn missing_file_is_an_error_naming_file_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let err = load(Some(&missing), &[], &no_flags()).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!(
            "cannot read config file {} (from --config): ",
            missing.display()
        )),
        "{text}"
    );
    let vars = env(&[(CONFIG_ENV, missing.to_str().unwrap())]);
    let err = load(None, &vars, &no_flags()).unwrap_err();
    assert!(format!("{err:#}").contains("(from SVOI_CONFIG)"), "{err:#}");
}

#[test]
fn unknown_svoi_variables_are_warnings_except_config_and_token() {
    let vars = env(&[
        ("SVOI_INGEST_LISEN", "x"),
        ("SVOI_TOKEN", "secret"),
        ("SVOI_CONFIG", ""),
        ("SVOI_ZZZ", "1"),
        ("PATH", "/bin"),
        ("svoi_db", "x"),
    ]);
    let loaded = load(None, &vars, &no_flags()).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "unknown environment variable SVOI_INGEST_LISEN (did you mean \"SVOI_INGEST_LISTEN\"?)",
            "unknown environment variable SVOI_ZZZ",
        ]
    );
}

#[test]
fn render_shows_values_and_sources_aligned_in_table_order() {
    let f = file("[ingest]\nlisten = \"127.0.0.1:7000\"\n");
    let vars = env(&[("SVOI_INGEST_MAX_CONNECTIONS", "42")]);
    let flags = Overrides::default().with("log.format", "--log-format", Some("json"));
    let loaded = load(Some(&f.path), &vars, &flags).unwrap();
    let text = loaded.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), KEYS.len());
    assert!(
        lines[0].starts_with("db = \"sqlite:./data/svoi.db\" "),
        "{text}"
    );
    assert!(lines[0].ends_with("  # default"), "{text}");
    assert!(
        lines[1].starts_with("ingest.listen = \"127.0.0.1:7000\" "),
        "{text}"
    );
    assert!(
        lines[1].ends_with(&format!("  # file:{}:2", f.path.display())),
        "{text}"
    );
    assert!(
        lines[2].starts_with("ingest.max_connections = 42 "),
        "{text}"
    );
    assert!(
        lines[2].ends_with("  # env:SVOI_INGEST_MAX_CONNECTIONS"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("ingest.idle_timeout = \"10m\" "),
        "{text}"
    );
    assert!(lines[17].starts_with("log.format = \"json\" "), "{text}");
    assert!(lines[17].ends_with("  # flag:--log-format"), "{text}");
    let columns: Vec<usize> = lines.iter().map(|l| l.find("  # ").unwrap()).collect();
    assert!(columns.iter().all(|c| *c == columns[0]), "aligned: {text}");
}

#[test]
fn render_output_is_a_config_file_that_loads_to_the_same_config() {
    let vars = env(&[
        ("SVOI_INGEST_BATCH_MAX_DELAY", "1s 500ms"),
        (
            "SVOI_LOG_LEVEL",
            "warn,svoi[session{imei=\"86\\\\x\"}]=debug",
        ),
        ("SVOI_SQLITE_SYNCHRONOUS", "EXTRA"),
    ]);
    let loaded = load(None, &vars, &no_flags()).unwrap();
    let f = file(&loaded.render());
    let again = load(Some(&f.path), &[], &no_flags()).unwrap();
    assert_eq!(again.config, loaded.config);
}

/// A key table with one secret key, to test redaction before any real key is secret.
fn with_secret() -> Vec<Key> {
    fn secret_key() -> Key {
        Key {
            name: "api.token",
            default: "hunter2",
            secret: <SecretText as Kind>::SECRET,
            integer: false,
            set: |_, raw| SecretText::parse(raw).map(drop),
            get: |_| "hunter2".to_string(),
        }
    }
    let mut keys: Vec<Key> = KEYS
        .iter()
        .map(|k| Key {
            name: k.name,
            default: k.default,
            secret: k.secret,
            integer: k.integer,
            set: k.set,
            get: k.get,
        })
        .collect();
    keys.push(secret_key());
    keys
}

#[test]
fn secret_keys_are_redacted_in_sources_render_and_debug() {
    let secret: Vec<&str> = KEYS.iter().filter(|k| k.secret).map(|k| k.name).collect();
    assert_eq!(secret, ["maintenance.webhook_url"]);
    let keys = with_secret();
    let f = file("[api]\ntoken = \"hunter3\"\n");
    let loaded = load_with(&keys, Some(&f.path), &[], &no_flags()).unwrap();
    let (value, source) = source_of(&loaded, "api.token");
    assert_eq!(value, "***");
    assert_eq!(
        source,
        Source::File {
            path: f.path.clone(),
            line: 2
        }
    );
    assert!(loaded.render().contains("api.token = \"***\""));
    assert!(!loaded.render().contains("hunter"));
    assert!(!format!("{loaded:?}").contains("hunter"));
    let secret = SecretText::parse("hunter2").unwrap();
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(secret.expose(), "hunter2");
    assert_eq!(format!("{:?}", Secret::default()), "***");
}

#[test]
fn database_passwords_are_redacted_everywhere_they_are_shown() {
    assert_eq!(
        redact_url_password("postgres://svoi:s3cret@db.local:5432/svoi?sslmode=require"),
        "postgres://svoi:***@db.local:5432/svoi?sslmode=require"
    );
    assert_eq!(
        redact_url_password("postgres://svoi@h/db"),
        "postgres://svoi@h/db"
    );
    assert_eq!(
        redact_url_password("sqlite:./a@b:c.db"),
        "sqlite:./a@b:c.db"
    );
    let vars = env(&[("SVOI_DB", "postgresql://u:pw@h/db")]);
    let loaded = load(None, &vars, &no_flags()).unwrap();
    assert_eq!(
        loaded.config.db, "postgresql://u:pw@h/db",
        "the program gets the real url"
    );
    assert_eq!(source_of(&loaded, "db").0, "postgresql://u:***@h/db");
    assert!(!format!("{:?}", loaded.config).contains(":pw@"));
    assert!(!loaded.render().contains(":pw@"));
}

#[test]
fn edit_distance_and_suggestions() {
    assert_eq!(edit_distance("listen", "lisen"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(
        did_you_mean("lgo.level", KEYS.iter().map(|k| k.name)),
        " (did you mean \"log.level\"?)"
    );
    assert_eq!(did_you_mean("completely", KEYS.iter().map(|k| k.name)), "");
}

#[test]
fn line_column_counts_characters() {
    let text = "a\nпривет = 1\n";
    let offset = text.find('=').unwrap();
    assert_eq!(line_column(text, offset), (2, 8));
    assert_eq!(line_column(text, 0), (1, 1));
}

#[test]
fn is_integer_key_follows_the_table() {
    assert!(is_integer_key("ingest.max_connections"));
    assert!(!is_integer_key("ingest.listen"));
    assert!(!is_integer_key("nope"));
}

#[test]
fn operations_keys_refuse_bad_values_naming_the_line() {
    for (text, wanted) in [
        ("[retention]\nrecords = \"soon\"\n", "line 2"),
        (
            "[maintenance]\nalertmanager_url = \"am:9093\"\n",
            "http:// or https://",
        ),
        (
            "[maintenance]\nalertmanager_url = \"http://\"\n",
            "names no host",
        ),
        ("[backup]\ndir = \"\"\n", "path is empty"),
        ("[backup]\nkeep_last = 0\n", "at least 1"),
        ("[retention]\nlogs = \"0s\"\n", "greater than zero"),
    ] {
        let f = file(text);
        let e = load(Some(&f.path), &[], &no_flags()).unwrap_err();
        assert!(format!("{e:#}").contains(wanted), "{text:?}: {e:#}");
    }
    let (_f, loaded) = load_text(
        "[retention]\nrecords = \"never\"\nraw_frames = \"180days\"\n\
         [maintenance]\nalertmanager_url = \"http://127.0.0.1:9093/\"\n",
    );
    let loaded = loaded.unwrap();
    let c = &loaded.config;
    assert_eq!(c.retention.records, None);
    assert_eq!(
        c.retention.raw_frames,
        Some(Duration::from_secs(180 * 86_400))
    );
    assert_eq!(
        c.maintenance.alertmanager_url.as_deref(),
        Some("http://127.0.0.1:9093"),
        "trailing slash trimmed"
    );
    assert_eq!(c.backup.dir, PathBuf::from("./backups"));
    assert_eq!(c.retention.logs, Duration::from_secs(30 * 86_400));
    assert!(c.maintenance.webhook_url.is_empty());
    assert_eq!(
        source_of(&loaded, "maintenance.webhook_url").0,
        "",
        "an empty secret has nothing to hide"
    );
}
