//! Inline SVG charts for the HTML report: one series per chart over days, as bars or as a
//! line, with both axes drawn and labelled. No script, no external resource, every text
//! escaped; empty elements are written self-closed so the markup is well formed as XML too.

use std::fmt::Write as _;

/// How the values are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One bar per point (counts per day).
    Bar,
    /// A line through the points, broken where a value is missing (levels and latencies).
    Line,
}

/// One chart: a title, the axes' labels and one value (or none) per x position.
#[derive(Clone, Debug)]
pub struct Chart<'a> {
    /// Shown above the plot.
    pub title: &'a str,
    /// The x axis' label (`day (UTC)`).
    pub x_label: &'a str,
    /// The y axis' label, with its unit (`records`, `MiB`, `ms`).
    pub y_label: &'a str,
    /// Bars or a line.
    pub kind: Kind,
    /// `(x tick label, value)` in x order; `None` draws nothing there.
    pub points: &'a [(String, Option<f64>)],
}

/// Width of the whole picture, pixels.
const WIDTH: f64 = 720.0;
/// Height of the whole picture, pixels.
const HEIGHT: f64 = 260.0;
/// Room left of the plot for the y ticks and the y label.
const LEFT: f64 = 78.0;
/// Room right of the plot.
const RIGHT: f64 = 16.0;
/// Room above the plot for the title.
const TOP: f64 = 30.0;
/// Room below the plot for the x ticks and the x label.
const BOTTOM: f64 = 48.0;
/// At most this many x tick labels (every n-th day is labelled on long periods).
const MAX_X_LABELS: usize = 12;
/// Horizontal grid lines (and y ticks) above zero.
const Y_TICKS: usize = 4;

/// Escapes text for HTML and XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest "nice" number (1, 2 or 5 times a power of ten) at or above `v`; 1 for
/// anything not positive.
pub fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|n| *n >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A tick value short enough for the axis: `1.5k`, `20M`, `0.25`.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled == scaled.trunc() {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// The chart as one `<svg>` element.
pub fn render(chart: &Chart<'_>) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max = chart
        .points
        .iter()
        .filter_map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = nice_ceiling(max);
    let n = chart.points.len().max(1);
    let step = plot_w / n as f64;
    let x_of = |i: usize| LEFT + step * (i as f64 + 0.5);
    let y_of = |v: f64| TOP + plot_h - (v.max(0.0) / top).min(1.0) * plot_h;
    let bottom = TOP + plot_h;

    let mut s = String::new();
    let title = escape(chart.title);
    // Writing to a String cannot fail; the results are ignored on purpose below.
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">"#
    );
    let _ = write!(s, "<title>{title}</title>");
    let _ = write!(
        s,
        r#"<text x="{x}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>"#,
        x = WIDTH / 2.0
    );
    // Grid and y ticks.
    for k in 0..=Y_TICKS {
        let v = top * k as f64 / Y_TICKS as f64;
        let y = y_of(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd" stroke-width="1"/>"##,
            x2 = LEFT + plot_w
        );
        let _ = write!(
            s,
            r#"<text x="{x}" y="{ty:.1}" text-anchor="end" font-size="11">{label}</text>"#,
            x = LEFT - 6.0,
            ty = y + 4.0,
            label = escape(&short_number(v))
        );
    }
    // The data.
    match chart.kind {
        Kind::Bar => {
            let w = (step * 0.7).max(1.0);
            for (i, (label, v)) in chart.points.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    continue;
                };
                let y = y_of(v);
                let _ = write!(
                    s,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#4e79a7"><title>{t}</title></rect>"##,
                    x = x_of(i) - w / 2.0,
                    h = bottom - y,
                    t = escape(&format!("{label}: {}", short_number(v)))
                );
            }
        }
        Kind::Line => {
            let mut run: Vec<(f64, f64)> = Vec::new();
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            for (i, (_, v)) in chart.points.iter().enumerate() {
                match v.filter(|v| v.is_finite()) {
                    Some(v) => run.push((x_of(i), y_of(v))),
                    None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
                    None => {}
                }
            }
            if !run.is_empty() {
                runs.push(run);
            }
            for run in runs {
                let points: Vec<String> =
                    run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = write!(
                    s,
                    r##"<polyline points="{}" fill="none" stroke="#e15759" stroke-width="2"/>"##,
                    points.join(" ")
                );
            }
            for (i, (label, v)) in chart.points.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    continue;
                };
                let _ = write!(
                    s,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#e15759"><title>{t}</title></circle>"##,
                    x = x_of(i),
                    y = y_of(v),
                    t = escape(&format!("{label}: {}", short_number(v)))
                );
            }
        }
    }
    // Axes.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333" stroke-width="1"/>"##
    );
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{x2}" y2="{bottom}" stroke="#333" stroke-width="1"/>"##,
        x2 = LEFT + plot_w
    );
    let every = chart.points.len().div_ceil(MAX_X_LABELS).max(1);
    for (i, (label, _)) in chart.points.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{y}" text-anchor="middle" font-size="11">{label}</text>"#,
            x = x_of(i),
            y = bottom + 16.0,
            label = escape(label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" text-anchor="middle" font-size="12">{label}</text>"#,
        x = LEFT + plot_w / 2.0,
        y = HEIGHT - 8.0,
        label = escape(chart.x_label)
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{y}" text-anchor="middle" font-size="12" transform="rotate(-90 16 {y})">{label}</text>"#,
        y = TOP + plot_h / 2.0,
        label = escape(chart.y_label)
    );
    if chart.points.iter().all(|(_, v)| v.is_none()) {
        let _ = write!(
            s,
            r##"<text x="{x}" y="{y}" text-anchor="middle" font-size="13" fill="#777">no data</text>"##,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks that every element opened in `markup` is closed in order (self-closed elements
    /// count as closed); returns the element names seen. HTML void elements and the doctype
    /// are allowed unclosed.
    pub(crate) fn check_balanced(markup: &str) -> Result<Vec<String>, String> {
        const VOID: &[&str] = &["meta", "br", "hr", "img", "link", "input", "col", "wbr"];
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = markup;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after
                .find('>')
                .ok_or_else(|| format!("unterminated tag at {:?}", &rest[open..]))?;
            let tag = &after[..close];
            rest = &after[close + 1..];
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim();
                match stack.pop() {
                    Some(top) if top == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if name.is_empty() {
                return Err(format!("bad tag <{tag}>"));
            }
            seen.push(name.clone());
            if tag.ends_with('/') || VOID.contains(&name.as_str()) {
                continue;
            }
            stack.push(name);
        }
        if stack.is_empty() {
            Ok(seen)
        } else {
            Err(format!("never closed: {stack:?}"))
        }
    }

    fn points(values: &[Option<f64>]) -> Vec<(String, Option<f64>)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("d{i}"), *v))
            .collect()
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(-3.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.01), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(0.03), 0.05);
        assert_eq!(nice_ceiling(12_345.0), 20_000.0);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(12.5), "12.5");
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(20_000_000.0), "20M");
        assert_eq!(short_number(3e9), "3G");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn bar_chart_draws_one_bar_per_value_with_axes_and_labels() {
        let pts = points(&[Some(10.0), None, Some(40.0), Some(0.0)]);
        let svg = render(&Chart {
            title: "Records <per> day",
            x_label: "day (UTC)",
            y_label: "records",
            kind: Kind::Bar,
            points: &pts,
        });
        let names = check_balanced(&svg).unwrap();
        assert_eq!(names.iter().filter(|n| *n == "rect").count(), 3, "{svg}");
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.contains("Records &lt;per&gt; day"), "{svg}");
        assert!(!svg.contains("<per>"), "{svg}");
        assert!(svg.contains(">day (UTC)</text>"), "{svg}");
        assert!(svg.contains(">records</text>"), "{svg}");
        // The axis tops out at the nice ceiling of the largest value (50 for 40).
        assert!(svg.contains(">50</text>"), "{svg}");
        // The 40 bar is 4/5 of the plot's height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let want = format!(r#"height="{:.1}""#, plot_h * 0.8);
        assert!(svg.contains(&want), "{want} in {svg}");
        assert!(!svg.contains("no data"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn line_chart_breaks_at_missing_values() {
        let pts = points(&[Some(1.0), Some(2.0), None, Some(3.0), Some(4.0), Some(5.0)]);
        let svg = render(&Chart {
            title: "p99",
            x_label: "day",
            y_label: "ms",
            kind: Kind::Line,
            points: &pts,
        });
        let names = check_balanced(&svg).unwrap();
        assert_eq!(
            names.iter().filter(|n| *n == "polyline").count(),
            2,
            "{svg}"
        );
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 5, "{svg}");
    }

    #[test]
    fn empty_chart_says_no_data() {
        let pts = points(&[None, None]);
        let svg = render(&Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            kind: Kind::Line,
            points: &pts,
        });
        check_balanced(&svg).unwrap();
        assert!(svg.contains("no data"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn long_periods_label_every_nth_day() {
        let pts = points(&vec![Some(1.0); 90]);
        let svg = render(&Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            kind: Kind::Bar,
            points: &pts,
        });
        let labels = (0..90)
            .filter(|i| svg.contains(&format!(">d{i}</text>")))
            .count();
        assert!((1..=MAX_X_LABELS).contains(&labels), "{labels}");
    }

    #[test]
    fn the_balance_checker_catches_an_unclosed_element() {
        assert!(check_balanced("<svg><g></svg>").is_err());
        assert!(check_balanced("<svg><rect/></svg>").is_ok());
        assert!(check_balanced("<svg><title>x</title>").is_err());
    }
}
