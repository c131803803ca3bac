//! Unit tests of the alert table against the rules file, and of the evaluation on synthetic scrapes.

use super::*;
use crate::config::{Overrides, load};

fn defaults() -> AlertsConfig {
    load(None, &[], &Overrides::default())
        .unwrap()
        .config
        .alerts
}

const RULES: &str = include_str!("../../../../../ops/alerts/prometheus-rules.yml");

/// `(name, block)` for each `- alert:` of the rules file, in order.
fn rule_blocks() -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in RULES.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            blocks.push((name.trim().to_string(), String::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// The value of `key: value` in a block (quotes removed).
fn field<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').trim_matches('\''))
    })
}

/// The expression's text: from `expr:` to the first `for:`, `labels:` or `annotations:`.
fn expr(block: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in block.lines() {
        let t = line.trim();
        if t.starts_with("expr:") {
            inside = true;
            out.push_str(t.trim_start_matches("expr:"));
            out.push(' ');
        } else if inside {
            if t.starts_with("for:") || t.starts_with("labels:") || t.starts_with("annotations:") {
                break;
            }
            out.push_str(t);
            out.push(' ');
        }
    }
    out
}

/// Every number compared against in an expression (`> 0.05`, `< 0.10`, `> 26 * 3600`).
fn thresholds(expr: &str) -> Vec<f64> {
    let mut found = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    for (i, c) in bytes.iter().enumerate() {
        if (*c == '>' || *c == '<') && bytes.get(i + 1) != Some(&'=') {
            let rest: String = bytes[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '*' | ' '))
                .collect();
            let product = rest
                .split('*')
                .map(|n| n.trim().parse::<f64>())
                .try_fold(1.0, |acc, n| n.map(|n| acc * n));
            if let Ok(v) = product
                && !rest.trim().is_empty()
            {
                found.push(v);
            }
        }
    }
    found
}

#[test]
fn the_rules_file_has_the_same_alerts_severities_and_runbooks() {
    let blocks = rule_blocks();
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    let ours: Vec<&str> = ALERTS.iter().map(|a| a.name).collect();
    assert_eq!(names, ours, "alert names and order");
    for ((name, block), alert) in blocks.iter().zip(ALERTS) {
        assert_eq!(
            field(block, "severity"),
            Some(alert.severity.as_str()),
            "{name} severity"
        );
        assert_eq!(
            field(block, "runbook_url"),
            Some(runbook_url(alert.runbook).as_str()),
            "{name} runbook_url"
        );
        let show = format!("svoi runbook show {}", alert.runbook);
        assert_eq!(
            field(block, "runbook"),
            Some(show.as_str()),
            "{name} runbook"
        );
        assert!(field(block, "summary").is_some(), "{name} has a summary");
        assert!(
            field(block, "description").is_some(),
            "{name} has a description"
        );
        assert!(
            crate::cmd::runbook::find(alert.runbook).is_some(),
            "{name}: runbook {} is embedded",
            alert.runbook
        );
        let silenced = expr(block).contains("svoi_maintenance_mode");
        assert_eq!(
            silenced,
            alert.severity == Severity::Warning,
            "{name}: warnings, and only they, are silenced during maintenance"
        );
    }
}

#[test]
fn the_rules_thresholds_are_the_configuration_defaults() {
    let t = defaults();
    let expected: &[(&str, f64)] = &[
        ("NoFrames", t.no_frames_after.as_secs_f64()),
        ("DecodeErrorRateHigh", t.decode_error_ratio.get()),
        ("QueueDepthHigh", t.queue_depth as f64),
        ("DatabaseCommitSlow", t.commit_p99.as_secs_f64()),
        ("ApiErrorRateHigh", t.api_5xx_ratio.get()),
        ("FailedAuthHigh", t.failed_auth_per_minute as f64),
        ("NoRecentBackup", t.backup_max_age.as_secs_f64()),
        ("DiskSpaceLow", t.disk_free_ratio.get()),
        ("HighCpu", t.cpu_ratio.get()),
        ("HighMemory", t.memory_ratio.get()),
    ];
    let blocks = rule_blocks();
    for (name, want) in expected {
        let (_, block) = blocks.iter().find(|(n, _)| n == name).unwrap();
        let found = thresholds(&expr(block));
        assert!(
            found.iter().any(|v| (v - want).abs() < 1e-9),
            "{name}: the rule compares against {found:?}, the [alerts] default is {want}"
        );
    }
}

#[test]
fn thresholds_are_read_from_expressions() {
    assert_eq!(thresholds("a > 0.05 and b > 0"), vec![0.05, 0.0]);
    assert_eq!(thresholds("time() - x > 26 * 3600"), vec![93_600.0]);
    assert_eq!(thresholds("x < 0.10 unless on() (m == 1)"), vec![0.1]);
    assert!(thresholds("x >= 3").is_empty());
}

/// A scrape page from `name value` pairs.
fn page(lines: &[&str]) -> Scrape {
    Scrape::parse(&lines.join("\n"))
}

fn inputs(before: &[&str], after: &[&str]) -> Inputs {
    Inputs {
        reachable: Ok(()),
        before: page(before),
        after: page(after),
        window: 10.0,
        now: 1_000_000.0,
        cpu_busy: Some(0.2),
        memory_used: Some(0.5),
    }
}

fn state(outcomes: &[Outcome], name: &str) -> State {
    outcomes
        .iter()
        .find(|o| o.alert.name == name)
        .unwrap()
        .state
        .clone()
}

const HEALTHY: &[&str] = &[
    "svoi_connections_open 3",
    "svoi_last_frame_timestamp_seconds 999990",
    "svoi_queue_depth 1",
    "svoi_messages_received_total{type=\"~A\"} 1000",
    "svoi_decode_errors_total{reason=\"crc\"} 1",
    "svoi_commit_duration_seconds_bucket{le=\"0.01\"} 100",
    "svoi_commit_duration_seconds_bucket{le=\"1\"} 100",
    "svoi_commit_duration_seconds_bucket{le=\"2.5\"} 100",
    "svoi_commit_duration_seconds_bucket{le=\"+Inf\"} 100",
    "svoi_http_requests_total{route=\"/api/v1/devices\",method=\"GET\",status=\"200\"} 100",
    "svoi_api_auth_failures_total{reason=\"unknown\"} 2",
    "svoi_disk_free_bytes 50",
    "svoi_disk_size_bytes 100",
    "svoi_maintenance_mode 0",
];

fn with(base: &[&str], changes: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = base
        .iter()
        .filter(|l| {
            let key = l.split(' ').next().unwrap();
            !changes.iter().any(|c| c.split(' ').next().unwrap() == key)
        })
        .map(|l| (*l).to_string())
        .collect();
    lines.extend(changes.iter().map(|c| (*c).to_string()));
    lines
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_healthy_server_fires_nothing() {
    let out = evaluate(&inputs(HEALTHY, HEALTHY), &defaults());
    for o in &out {
        assert_ne!(o.state, State::Firing, "{}: {}", o.alert.name, o.detail);
    }
    assert_eq!(state(&out, "NoRecentBackup"), State::NoData);
    assert_eq!(state(&out, "BackupFailed"), State::NoData);
    assert_eq!(state(&out, "DiskSpaceLow"), State::Ok);
}

#[test]
fn each_condition_fires_on_its_own_figures() {
    let t = defaults();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "NoFrames",
            &[],
            &["svoi_last_frame_timestamp_seconds 999000"],
        ),
        (
            "DecodeErrorRateHigh",
            &[],
            &[
                "svoi_messages_received_total{type=\"~A\"} 1100",
                "svoi_decode_errors_total{reason=\"crc\"} 11",
            ],
        ),
        (
            "QueueDepthHigh",
            &["svoi_queue_depth 3000"],
            &["svoi_queue_depth 2500"],
        ),
        (
            "DatabaseCommitSlow",
            &[],
            &[
                "svoi_commit_duration_seconds_bucket{le=\"0.01\"} 100",
                "svoi_commit_duration_seconds_bucket{le=\"1\"} 100",
                "svoi_commit_duration_seconds_bucket{le=\"2.5\"} 110",
                "svoi_commit_duration_seconds_bucket{le=\"+Inf\"} 110",
            ],
        ),
        (
            "ApiErrorRateHigh",
            &[],
            &[
                "svoi_http_requests_total{route=\"/api/v1/devices\",method=\"GET\",status=\"200\"} 110",
                "svoi_http_requests_total{route=\"/api/v1/devices\",method=\"GET\",status=\"503\"} 5",
            ],
        ),
        (
            "FailedAuthHigh",
            &[],
            &["svoi_api_auth_failures_total{reason=\"unknown\"} 20"],
        ),
        (
            "BackupFailed",
            &[],
            &[
                "svoi_backup_last_success_timestamp_seconds 999000",
                "svoi_backup_last_failure_timestamp_seconds 999500",
            ],
        ),
        (
            "NoRecentBackup",
            &[],
            &["svoi_backup_last_success_timestamp_seconds 800000"],
        ),
        ("DiskSpaceLow", &[], &["svoi_disk_free_bytes 5"]),
    ];
    for (name, before, after) in cases {
        let b = with(HEALTHY, before);
        let a = with(HEALTHY, after);
        let out = evaluate(&inputs(&refs(&b), &refs(&a)), &t);
        for o in &out {
            let want = if o.alert.name == *name {
                State::Firing
            } else {
                o.state.clone()
            };
            assert_eq!(o.state, want, "{name}: {} {}", o.alert.name, o.detail);
            if o.alert.name != *name {
                assert_ne!(o.state, State::Firing, "{name} also fired {}", o.alert.name);
            }
        }
    }
}

#[test]
fn no_frames_needs_open_connections_and_queue_depth_needs_both_scrapes() {
    let t = defaults();
    let quiet = with(
        HEALTHY,
        &[
            "svoi_connections_open 0",
            "svoi_last_frame_timestamp_seconds 1",
        ],
    );
    let out = evaluate(&inputs(&refs(&quiet), &refs(&quiet)), &t);
    assert_eq!(state(&out, "NoFrames"), State::Ok);
    let blip = with(HEALTHY, &["svoi_queue_depth 3000"]);
    let out = evaluate(&inputs(HEALTHY, &refs(&blip)), &t);
    assert_eq!(state(&out, "QueueDepthHigh"), State::Ok);
}

#[test]
fn the_ready_probe_is_not_an_api_error_and_host_figures_compare() {
    let mut t = defaults();
    let ready = with(
        HEALTHY,
        &["svoi_http_requests_total{route=\"/ready\",method=\"GET\",status=\"503\"} 50"],
    );
    let out = evaluate(&inputs(HEALTHY, &refs(&ready)), &t);
    assert_eq!(state(&out, "ApiErrorRateHigh"), State::Ok);
    t.cpu_ratio = crate::config::Ratio::new(0.1);
    t.memory_ratio = crate::config::Ratio::new(0.4);
    let out = evaluate(&inputs(HEALTHY, HEALTHY), &t);
    assert_eq!(state(&out, "HighCpu"), State::Firing);
    assert_eq!(state(&out, "HighMemory"), State::Firing);
    let mut remote = inputs(HEALTHY, HEALTHY);
    remote.cpu_busy = None;
    remote.memory_used = None;
    let out = evaluate(&remote, &t);
    assert_eq!(state(&out, "HighCpu"), State::NoData);
}

#[test]
fn maintenance_silences_warnings_only() {
    let t = defaults();
    let bad = with(
        HEALTHY,
        &[
            "svoi_queue_depth 3000",
            "svoi_disk_free_bytes 1",
            "svoi_maintenance_mode 1",
        ],
    );
    let out = evaluate(&inputs(&refs(&bad), &refs(&bad)), &t);
    assert_eq!(state(&out, "QueueDepthHigh"), State::Suppressed);
    assert_eq!(state(&out, "DiskSpaceLow"), State::Firing);
    let text = render("http://x", &out);
    assert!(
        text.contains("alerts: 1 firing (DiskSpaceLow), 1 silenced"),
        "{text}"
    );
    assert!(
        text.contains("runbook: svoi runbook show 04-db-slow"),
        "{text}"
    );
}

#[test]
fn an_unreachable_server_fires_server_down_only() {
    let mut i = inputs(HEALTHY, HEALTHY);
    i.reachable = Err("connection refused".into());
    let out = evaluate(&i, &defaults());
    assert_eq!(state(&out, "ServerDown"), State::Firing);
    assert!(
        out.iter()
            .filter(|o| o.alert.name != "ServerDown")
            .all(|o| o.state == State::NoData)
    );
}
