//! The report's Markdown and HTML forms (JSON is the [`Document`] serialised). The HTML page
//! is self-contained: inline CSS and inline SVG charts, no script, no external resource, and
//! every piece of text from the database or the configuration escaped.

use std::fmt::Write as _;

use super::svg::{self, Chart, Kind, escape};
use super::{Day, Document};

/// Bytes for people: `512 B`, `3.4 MiB`, `1.20 GiB`.
pub fn bytes(b: f64) -> String {
    let a = b.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A missing figure.
const NONE: &str = "–";

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| NONE.to_owned(), f)
}

fn ms(v: Option<f64>) -> String {
    opt(v, |v| format!("{v:.1}"))
}

fn percent(v: Option<f64>) -> String {
    opt(v, |v| format!("{:.3} %", v * 100.0))
}

/// The capacity lines, shared by both forms: `(label, value)`.
fn capacity_rows(doc: &Document) -> Vec<(&'static str, String)> {
    let c = &doc.capacity;
    vec![
        ("Days fitted", c.days_fitted.to_string()),
        (
            "Records per day (trend)",
            opt(c.records_per_day, |v| format!("{v:.0}")),
        ),
        (
            "Records per day growth, per day",
            opt(c.records_growth_per_day, |v| format!("{v:+.1}")),
        ),
        ("Database size", opt(c.db_bytes, |v| bytes(v as f64))),
        (
            "Database growth per day",
            opt(c.db_growth_bytes_per_day, |v| format!("{}/day", bytes(v))),
        ),
        (
            "Disk free",
            match (c.disk_free_bytes, c.disk_total_bytes) {
                (Some(f), Some(t)) => format!("{} of {}", bytes(f as f64), bytes(t as f64)),
                _ => NONE.to_owned(),
            },
        ),
        (
            "Days until the disk is full",
            opt(c.days_until_full, |v| format!("{v:.0}"))
                .replace(NONE, "not growing (or no figures)"),
        ),
    ]
}

/// The system status lines: `(label, value)`.
fn system_rows(doc: &Document) -> Vec<(&'static str, String)> {
    let s = &doc.system;
    vec![
        ("Version", s.version.clone()),
        ("Database", format!("{} ({})", s.database, s.backend)),
        ("Database size", opt(s.database_bytes, |v| bytes(v as f64))),
        ("Schema version", opt(s.schema_version, |v| v.to_string())),
        (
            "Maintenance window",
            match &s.maintenance_window {
                Some(w) => format!(
                    "open since {} until {} by {}: {}",
                    w.since, w.planned_end, w.operator, w.reason
                ),
                None => "none open".to_owned(),
            },
        ),
    ]
}

/// The backup status lines.
fn backup_rows(doc: &Document) -> Vec<(&'static str, String)> {
    let b = &doc.backups;
    let mut rows = vec![
        ("Directory", b.dir.clone()),
        (
            "Backups",
            format!(
                "{}{}",
                b.count,
                if b.broken > 0 {
                    format!(" ({} unreadable)", b.broken)
                } else {
                    String::new()
                }
            ),
        ),
    ];
    match &b.newest {
        Some(n) => {
            rows.push(("Newest", n.id.clone()));
            rows.push((
                "Created",
                format!(
                    "{} ({} h ago)",
                    n.created_at.clone().unwrap_or_else(|| NONE.to_owned()),
                    opt(n.age_hours, |h| format!("{h:.1}"))
                ),
            ));
            rows.push(("Kind", n.kind.clone().unwrap_or_else(|| NONE.to_owned())));
            rows.push(("Size", opt(n.bytes, |v| bytes(v as f64))));
            rows.push((
                "Verified",
                match n.verified {
                    Some(true) => format!("ok ({})", n.verified_at.as_deref().unwrap_or(NONE)),
                    Some(false) => format!("FAILED ({})", n.verified_at.as_deref().unwrap_or(NONE)),
                    None => "never".to_owned(),
                },
            ));
        }
        None => rows.push(("Newest", "no backup".to_owned())),
    }
    rows
}

/// The daily table's header and one row of cells per day.
fn day_table(daily: &[Day]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "Day",
        "Records",
        "Frames",
        "Devices",
        "Decode errors",
        "Error rate",
        "Ack p50 ms",
        "Ack p95 ms",
        "Ack p99 ms",
        "DB size",
    ];
    let rows = daily
        .iter()
        .map(|d| {
            vec![
                d.date.clone(),
                d.records.to_string(),
                d.frames.to_string(),
                d.devices_active.to_string(),
                d.decode_errors.to_string(),
                percent(d.decode_error_rate),
                ms(d.ack_p50_ms),
                ms(d.ack_p95_ms),
                ms(d.ack_p99_ms),
                opt(d.db_bytes, |v| bytes(v as f64)),
            ]
        })
        .collect();
    (header, rows)
}

/// Markdown cell text: no line breaks, pipes escaped.
fn md_cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

fn md_pairs(out: &mut String, rows: &[(&str, String)]) {
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {} | {} |", md_cell(k), md_cell(v));
    }
    out.push('\n');
}

/// The report as Markdown.
pub fn markdown(doc: &Document) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# SVOI {} operations report\n\n{} days from {} to {}\n",
        doc.period, doc.days, doc.from, doc.generated_at
    );
    s.push_str("## System status\n\n");
    md_pairs(&mut s, &system_rows(doc));

    s.push_str("## Tasks done\n\n");
    if doc.tasks.total == 0 {
        s.push_str("No maintenance log entries in the period.\n\n");
    } else {
        s.push_str("| Kind | ok | warning | failed |\n|---|---:|---:|---:|\n");
        for (kind, c) in &doc.tasks.by_kind {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                md_cell(kind),
                c.ok,
                c.warning,
                c.failed
            );
        }
        s.push('\n');
        if !doc.tasks.problems.is_empty() {
            s.push_str("Entries that need a look:\n\n");
            for p in &doc.tasks.problems {
                let _ = writeln!(
                    s,
                    "- {} **{}** {} ({}): {}",
                    p.at,
                    md_cell(&p.result),
                    md_cell(&p.kind),
                    md_cell(&p.operator),
                    md_cell(&p.summary)
                );
            }
            s.push('\n');
        }
    }

    s.push_str("## Records, devices, decode errors, acknowledgement latency per day\n\n");
    let (header, rows) = day_table(&doc.daily);
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "|---|{}",
        header[1..].iter().map(|_| "---:|").collect::<String>()
    );
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    let t = &doc.totals;
    let _ = writeln!(
        s,
        "\nTotal: {} records, {} frames, {} decode errors (rate {}), at most {} devices a day, \
         highest daily ack p99 {} ms.\n",
        t.records,
        t.frames,
        t.decode_errors,
        percent(t.decode_error_rate),
        t.devices_active_max,
        ms(t.ack_p99_ms_max)
    );

    s.push_str("## Backup status\n\n");
    md_pairs(&mut s, &backup_rows(doc));
    s.push_str("## Capacity forecast (90 days)\n\n");
    md_pairs(&mut s, &capacity_rows(doc));
    s
}

fn html_pairs(out: &mut String, rows: &[(&str, String)]) {
    out.push_str("<table class=\"pairs\"><tbody>");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    out.push_str("</tbody></table>\n");
}

/// The charts of the HTML page.
fn charts(doc: &Document) -> Vec<String> {
    let label = |d: &Day| d.date.get(5..).unwrap_or(&d.date).to_owned();
    let series = |f: &dyn Fn(&Day) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        doc.daily.iter().map(|d| (label(d), f(d))).collect()
    };
    let records = series(&|d| Some(d.records as f64));
    let size = series(&|d| d.db_bytes.map(|b| b as f64 / (1024.0 * 1024.0)));
    let p99 = series(&|d| d.ack_p99_ms);
    let errors = series(&|d| d.decode_error_rate.map(|r| r * 100.0));
    let x = "day (UTC, MM-DD)";
    vec![
        svg::render(&Chart {
            title: "Records per day",
            x_label: x,
            y_label: "records",
            kind: Kind::Bar,
            points: &records,
        }),
        svg::render(&Chart {
            title: "Database size (last of each day)",
            x_label: x,
            y_label: "MiB",
            kind: Kind::Line,
            points: &size,
        }),
        svg::render(&Chart {
            title: "Acknowledgement latency p99",
            x_label: x,
            y_label: "ms",
            kind: Kind::Line,
            points: &p99,
        }),
        svg::render(&Chart {
            title: "Decode-error rate",
            x_label: x,
            y_label: "% of frames",
            kind: Kind::Bar,
            points: &errors,
        }),
    ]
}

/// The page's style sheet.
const CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
table.pairs th,table.pairs td{text-align:left}\
th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}\
svg.chart{display:block;margin:0.5em 0 1.5em;background:#fff}";

/// The report as one self-contained HTML page.
pub fn html(doc: &Document) -> String {
    let mut s = String::new();
    let title = escape(&format!("SVOI {} operations report", doc.period));
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{CSS}</style></head><body>\n<h1>{title}</h1>\n\
         <p>{} days from {} to {}</p>\n",
        doc.days,
        escape(&doc.from),
        escape(&doc.generated_at)
    );
    s.push_str("<h2>System status</h2>\n");
    html_pairs(&mut s, &system_rows(doc));

    s.push_str("<h2>Tasks done</h2>\n");
    if doc.tasks.total == 0 {
        s.push_str("<p>No maintenance log entries in the period.</p>\n");
    } else {
        s.push_str(
            "<table><thead><tr><th>Kind</th><th>ok</th><th>warning</th><th>failed</th></tr></thead><tbody>",
        );
        for (kind, c) in &doc.tasks.by_kind {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
                escape(kind),
                c.ok,
                c.warning,
                if c.failed > 0 { " class=\"bad\"" } else { "" },
                c.failed
            );
        }
        s.push_str("</tbody></table>\n");
        if !doc.tasks.problems.is_empty() {
            s.push_str("<p>Entries that need a look:</p><ul>");
            for p in &doc.tasks.problems {
                let _ = write!(
                    s,
                    "<li>{} <strong>{}</strong> {} ({}): {}</li>",
                    escape(&p.at),
                    escape(&p.result),
                    escape(&p.kind),
                    escape(&p.operator),
                    escape(&p.summary)
                );
            }
            s.push_str("</ul>\n");
        }
    }

    s.push_str("<h2>Charts</h2>\n");
    for chart in charts(doc) {
        s.push_str(&chart);
        s.push('\n');
    }

    s.push_str("<h2>Per day</h2>\n<table><thead><tr>");
    let (header, rows) = day_table(&doc.daily);
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", escape(&c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>\n");

    s.push_str("<h2>Backup status</h2>\n");
    html_pairs(&mut s, &backup_rows(doc));
    s.push_str("<h2>Capacity forecast (90 days)</h2>\n");
    html_pairs(&mut s, &capacity_rows(doc));
    s.push_str("</body></html>\n");
    s
}
