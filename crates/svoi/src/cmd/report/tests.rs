//! The report's arithmetic and rendering on figures made up here.

use svoi_store::{NewLogEntry, NewWindow};

use super::svg::tests::check_balanced;
use super::*;

/// 2024-03-10T12:00:00Z.
const NOW: i64 = 1_710_072_000;

fn today() -> i64 {
    day_floor(NOW)
}

fn figures(day: i64, records: i64) -> DailyFigures {
    DailyFigures {
        day_start: day,
        frames: records * 2,
        decode_errors: records / 10,
        records,
        devices_active: 3,
    }
}

fn hour(start: i64, frames: i64, p99: Option<f64>, db: Option<i64>) -> HourlyStats {
    HourlyStats {
        hour_start: start,
        instance: "h:5221".to_owned(),
        frames,
        records: frames,
        duplicates: 0,
        decode_errors: 0,
        acks: frames,
        ack_p50_ms: p99.map(|p| p / 4.0),
        ack_p95_ms: p99.map(|p| p / 2.0),
        ack_p99_ms: p99,
        devices_active: 1,
        connections_max: 1,
        db_bytes: db,
        updated_at_us: (start + 3599) * 1_000_000,
    }
}

#[test]
fn least_squares_fits_a_line() {
    let (slope, b) = least_squares(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
    assert!((slope - 2.0).abs() < 1e-12 && (b - 1.0).abs() < 1e-12);
    assert!(least_squares(&[(1.0, 1.0)]).is_none());
    assert!(least_squares(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
}

#[test]
fn forecast_fits_records_over_complete_days_and_size_growth() {
    let t = today();
    // 10 days of records growing by 100 a day, the first day 1000, then today partial (5).
    let mut daily: Vec<DailyFigures> = (0..10)
        .map(|i| figures(t - (10 - i) * DAY, 1000 + 100 * i))
        .collect();
    daily.push(figures(t, 5));
    // The database grows 1 MiB a day; two rows a day, the later one counts.
    let mib = 1 << 20;
    let mut hourly = Vec::new();
    for i in 0..10 {
        let day = t - (10 - i) * DAY;
        hourly.push(hour(day + 3600, 1, None, Some(i * mib - 12345)));
        hourly.push(hour(day + 23 * 3600, 1, None, Some(i * mib)));
    }
    let disk = crate::probe::Space {
        free: 100 * mib as u64,
        total: 1000 * mib as u64,
    };
    let c = forecast(NOW, &daily, &hourly, Some(disk));
    assert_eq!(c.days_fitted, 10);
    assert!(
        (c.records_growth_per_day.unwrap() - 100.0).abs() < 1e-9,
        "{c:?}"
    );
    assert!((c.records_per_day.unwrap() - 1900.0).abs() < 1e-9, "{c:?}");
    assert_eq!(c.db_bytes, Some(9 * mib));
    let g = c.db_growth_bytes_per_day.unwrap();
    assert!((g - mib as f64).abs() < 1e-6, "{g}");
    assert!((c.days_until_full.unwrap() - 100.0).abs() < 1e-6, "{c:?}");
    assert_eq!(c.disk_total_bytes, Some(1000 * mib as u64));

    // A day without data inside the span counts as zero records.
    let gap = vec![figures(t - 3 * DAY, 300), figures(t - DAY, 100)];
    let c = forecast(NOW, &gap, &[], None);
    assert_eq!(c.days_fitted, 3);
    // Points (0,300), (1,0), (2,100): slope -100.
    assert!(
        (c.records_growth_per_day.unwrap() + 100.0).abs() < 1e-9,
        "{c:?}"
    );
    assert_eq!(c.days_until_full, None);
}

#[test]
fn a_shrinking_or_flat_database_never_fills_the_disk() {
    let t = today();
    let hourly = vec![
        hour(t - 2 * DAY, 1, None, Some(2000)),
        hour(t - DAY, 1, None, Some(1000)),
    ];
    let disk = crate::probe::Space {
        free: 10,
        total: 100,
    };
    let c = forecast(NOW, &[], &hourly, Some(disk));
    assert!(c.db_growth_bytes_per_day.unwrap() < 0.0);
    assert_eq!(c.days_until_full, None);
    assert_eq!(c.records_per_day, None);
    assert_eq!(c.days_fitted, 0);
}

fn entry(at_us: i64, kind: &str, result: LogResult, summary: &str) -> LogEntry {
    LogEntry {
        id: at_us,
        entry: NewLogEntry {
            at_us,
            kind: kind.to_owned(),
            operator: "ops".to_owned(),
            duration_ms: 5,
            result,
            summary: summary.to_owned(),
            details: "{}".to_owned(),
        },
    }
}

fn inputs() -> Inputs {
    let t = today();
    let us = |s: i64| s * 1_000_000;
    Inputs {
        now_s: NOW,
        backend: "sqlite".to_owned(),
        database: "sqlite:/x/<svoi>.db".to_owned(),
        database_bytes: Some(4096),
        schema_version: Some(3),
        window: Some(Window {
            id: 1,
            window: NewWindow {
                started_at_us: us(NOW - 600),
                planned_end_us: us(NOW + 3000),
                reason: "upgrade <b>db</b> & \"more\"".to_owned(),
                operator: "ops".to_owned(),
                backup_id: Some("20240310T114000Z-pre-maintenance".to_owned()),
            },
            silence_id: None,
            ended_at_us: None,
            result: None,
        }),
        log: vec![
            // Before the weekly period: left out.
            entry(us(t - 8 * DAY), "backup", LogResult::Failed, "too old"),
            entry(us(t - 6 * DAY), "backup", LogResult::Ok, "b1"),
            entry(
                us(t - 2 * DAY),
                "backup",
                LogResult::Failed,
                "disk full <x>",
            ),
            entry(us(t - DAY), "verify", LogResult::Warning, "slow"),
            entry(us(t), "retention", LogResult::Ok, "r"),
        ],
        daily: vec![
            figures(t - 40 * DAY, 50),
            figures(t - 2 * DAY, 1000),
            DailyFigures {
                day_start: t,
                frames: 400,
                decode_errors: 4,
                records: 300,
                devices_active: 7,
            },
        ],
        hourly: vec![
            // Today: 100 frames at p99 10 ms, 300 at 30 ms: weighted 25 ms.
            hour(t, 100, Some(10.0), Some(1000)),
            hour(t + 3600, 300, Some(30.0), Some(3000)),
            // An hour without latency does not count.
            hour(t + 7200, 50, None, None),
            hour(t - 2 * DAY + 3600, 10, Some(8.0), Some(500)),
        ],
        backups: Backups {
            dir: "/b".to_owned(),
            count: 2,
            broken: 1,
            newest: Some(BackupDoc {
                id: "20240310T000000Z".to_owned(),
                kind: Some("manual".to_owned()),
                created_at: Some("2024-03-10T00:00:00Z".to_owned()),
                age_hours: Some(12.0),
                bytes: Some(2048),
                verified: Some(false),
                verified_at: Some("2024-03-10T01:00:00Z".to_owned()),
            }),
        },
        disk: None,
    }
}

#[test]
fn build_covers_each_day_of_the_period_and_weights_latency_by_frames() {
    let doc = build(Period::Weekly, &inputs());
    assert_eq!(doc.daily.len(), 7);
    assert_eq!(doc.daily[0].day_start, today() - 6 * DAY);
    assert_eq!(doc.daily[6].date, "2024-03-10");
    assert_eq!(doc.from, "2024-03-04T00:00:00Z");
    let d = &doc.daily[6];
    assert_eq!(d.records, 300);
    assert_eq!(d.frames, 400);
    assert_eq!(d.devices_active, 7);
    assert_eq!(d.decode_error_rate, Some(0.01));
    assert_eq!(d.ack_p99_ms, Some(25.0));
    assert_eq!(d.ack_p95_ms, Some(12.5));
    assert_eq!(d.ack_p50_ms, Some(6.25));
    assert_eq!(d.db_bytes, Some(3000));
    let two_ago = &doc.daily[4];
    assert_eq!(two_ago.records, 1000);
    assert_eq!(two_ago.ack_p99_ms, Some(8.0));
    // Days without anything are there, empty.
    assert_eq!(
        doc.daily[5],
        Day {
            date: "2024-03-09".to_owned(),
            day_start: today() - DAY,
            ..Day::default()
        }
    );
    assert_eq!(doc.totals.records, 1300);
    assert_eq!(doc.totals.frames, 2400);
    assert_eq!(doc.totals.decode_errors, 104);
    assert_eq!(doc.totals.devices_active_max, 7);
    assert_eq!(doc.totals.ack_p99_ms_max, Some(25.0));

    assert_eq!(doc.tasks.total, 4);
    assert_eq!(
        doc.tasks.by_kind["backup"],
        ResultCounts {
            ok: 1,
            warning: 0,
            failed: 1
        }
    );
    assert_eq!(doc.tasks.by_kind["verify"].warning, 1);
    let problems: Vec<&str> = doc
        .tasks
        .problems
        .iter()
        .map(|p| p.summary.as_str())
        .collect();
    assert_eq!(problems, ["disk full <x>", "slow"]);

    // The quarterly report reaches back to the 40-days-old figures.
    let q = build(Period::Quarterly, &inputs());
    assert_eq!(q.daily.len(), 90);
    assert_eq!(q.totals.records, 1350);
    assert_eq!(q.tasks.total, 5);
}

#[test]
fn markdown_lists_every_section() {
    let md = render::markdown(&build(Period::Weekly, &inputs()));
    for want in [
        "# SVOI weekly operations report",
        "## System status",
        "## Tasks done",
        "| backup | 1 | 0 | 1 |",
        "**failed** backup (ops): disk full <x>",
        "| 2024-03-10 | 300 | 400 | 7 | 4 | 1.000 % | 6.2 | 12.5 | 25.0 | 2.9 KiB |",
        "## Backup status",
        "FAILED (2024-03-10T01:00:00Z)",
        "(1 unreadable)",
        "## Capacity forecast",
        "open since",
    ] {
        assert!(md.contains(want), "{want:?} missing in\n{md}");
    }
}

#[test]
fn html_is_self_contained_balanced_and_escaped() {
    let html = render::html(&build(Period::Monthly, &inputs()));
    let names = check_balanced(&html).unwrap_or_else(|e| panic!("{e}\n{html}"));
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 4);
    assert!(names.iter().any(|n| n == "rect"));
    assert!(names.iter().any(|n| n == "polyline"));
    assert!(!html.contains("<script"), "no script");
    assert!(!html.contains("src="), "no external resource");
    assert!(!html.contains("href="), "no external resource");
    assert!(!html.contains("<b>db</b>"), "escaped");
    assert!(html.contains("upgrade &lt;b&gt;db&lt;/b&gt; &amp; &quot;more&quot;"));
    assert!(html.contains("disk full &lt;x&gt;"));
    assert!(html.contains("sqlite:/x/&lt;svoi&gt;.db"));
    assert!(html.contains("Records per day"));
}

#[test]
fn json_carries_every_figure() {
    let doc = build(Period::Weekly, &inputs());
    let v = serde_json::to_value(&doc).unwrap();
    assert_eq!(v["period"], "weekly");
    assert_eq!(v["daily"][6]["records"], 300);
    assert_eq!(v["daily"][6]["ack_p99_ms"], 25.0);
    assert_eq!(v["daily"][5]["ack_p99_ms"], serde_json::Value::Null);
    assert_eq!(v["tasks"]["by_kind"]["backup"]["failed"], 1);
    assert_eq!(v["backups"]["newest"]["verified"], false);
    assert_eq!(v["system"]["schema_version"], 3);
    assert!(v["capacity"].is_object());
}

#[test]
fn backups_are_read_from_manifests_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let write = |id: &str, file: &str, text: &str| {
        std::fs::create_dir_all(dir.path().join(id)).unwrap();
        std::fs::write(dir.path().join(id).join(file), text).unwrap();
    };
    write(
        "20240308T000000Z",
        "manifest.json",
        r#"{"id":"20240308T000000Z","kind":"manual","created_at":"2024-03-08T00:00:00Z","bytes":10}"#,
    );
    write(
        "20240309T060000Z-x",
        "manifest.json",
        r#"{"id":"20240309T060000Z-x","kind":"pre-maintenance","created_at":"2024-03-09T06:00:00Z","bytes":20}"#,
    );
    write(
        "20240309T060000Z-x",
        "verify.json",
        r#"{"ok":true,"finished_at":"2024-03-09T07:00:00Z"}"#,
    );
    write("20240310T000000Z", "manifest.json", "{not json");
    write(".tmp-20240310T010000Z", "manifest.json", "{}");
    let b = read_backups(dir.path(), NOW);
    assert_eq!((b.count, b.broken), (2, 1));
    let n = b.newest.unwrap();
    assert_eq!(n.id, "20240309T060000Z-x");
    assert_eq!(n.kind.as_deref(), Some("pre-maintenance"));
    assert_eq!(n.bytes, Some(20));
    assert_eq!(n.verified, Some(true));
    assert_eq!(n.verified_at.as_deref(), Some("2024-03-09T07:00:00Z"));
    assert_eq!(n.age_hours, Some(30.0));

    let none = read_backups(&dir.path().join("missing"), NOW);
    assert_eq!((none.count, none.broken), (0, 0));
    assert!(none.newest.is_none());
}
