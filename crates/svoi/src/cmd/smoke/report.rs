//! The checklist `svoi smoke` and `svoi health` print: one item per check (pass, fail or skip
//! with a one-line detail and its duration), the summary line, the `--json` document and the
//! exit code. Nothing here runs a check.

use std::time::Instant;

use serde_json::json;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The check ran and found nothing wrong.
    Pass,
    /// The check ran and found a problem (or could not run for a reason of its own).
    Fail,
    /// The check did not run: not applicable here, or an earlier item it needs failed.
    Skip,
}

impl Status {
    /// `PASS`, `FAIL` or `SKIP`: the checklist's first column.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }

    /// `pass`, `fail` or `skip`: the JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// What a check function returns: its status and a one-line detail.
pub type Outcome = (Status, String);

/// A passing outcome.
pub fn pass(detail: impl Into<String>) -> Outcome {
    (Status::Pass, detail.into())
}

/// A failing outcome.
pub fn fail(detail: impl Into<String>) -> Outcome {
    (Status::Fail, detail.into())
}

/// A skipped outcome.
pub fn skip(detail: impl Into<String>) -> Outcome {
    (Status::Skip, detail.into())
}

/// One line of the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The check's stable name (`api.health`, `device.session`, ...).
    pub name: &'static str,
    /// Its outcome.
    pub status: Status,
    /// One line saying what was found.
    pub detail: String,
    /// How long the check took, milliseconds.
    pub ms: u64,
}

/// The items of one run, in the order they ran.
#[derive(Clone, Debug)]
pub struct Report {
    /// `smoke` or `health`: the summary line's first word.
    command: &'static str,
    items: Vec<Item>,
}

/// Width of the name column: the longest name plus two spaces.
const NAME_WIDTH: usize = 16;

/// Longest detail kept; a longer one (an HTTP body, a log line) is cut with `…`.
const DETAIL_MAX_CHARS: usize = 300;

impl Report {
    /// An empty report of `command`.
    pub fn new(command: &'static str) -> Self {
        Report {
            command,
            items: Vec::new(),
        }
    }

    /// Runs `check`, timing it, and appends its item.
    pub fn run(&mut self, name: &'static str, check: impl FnOnce() -> Outcome) -> Status {
        let started = Instant::now();
        let (status, detail) = check();
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.push(name, (status, detail), ms)
    }

    /// Appends an item with an outcome found elsewhere (a skip, say) and its duration.
    pub fn push(&mut self, name: &'static str, (status, detail): Outcome, ms: u64) -> Status {
        self.items.push(Item {
            name,
            status,
            detail: one_line(&detail, DETAIL_MAX_CHARS),
            ms,
        });
        status
    }

    /// No item failed (skips do not count against it).
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.status != Status::Fail)
    }

    /// The process exit code: 0 when no item failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.ok() { 0 } else { 1 }
    }

    /// The checklist: one `PASS  name  detail` line per item, then the summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&format!(
                "{}  {:<NAME_WIDTH$}{}\n",
                item.status.label(),
                item.name,
                item.detail
            ));
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `smoke: 8 passed, 1 failed (device.session), 0 skipped`.
    pub fn summary(&self) -> String {
        let count = |s: Status| self.items.iter().filter(|i| i.status == s).count();
        let failed: Vec<&str> = self
            .items
            .iter()
            .filter(|i| i.status == Status::Fail)
            .map(|i| i.name)
            .collect();
        let names = if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        };
        format!(
            "{}: {} passed, {} failed{names}, {} skipped",
            self.command,
            count(Status::Pass),
            failed.len(),
            count(Status::Skip)
        )
    }

    /// The `--json` document: `{"ok": bool, "checks": [{"name", "status", "detail", "ms"}]}`.
    pub fn json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "status": i.status.as_str(),
                    "detail": i.detail,
                    "ms": i.ms,
                })
            })
            .collect();
        json!({ "ok": self.ok(), "checks": checks })
    }
}

/// `text` on one line (line breaks and runs of whitespace become one space), at most `max`
/// characters (a longer text ends with `…`).
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("smoke");
        r.push("config", pass("defaults and environment"), 0);
        r.push("api.health", pass("/health answered 200 in 2 ms"), 2);
        r.push(
            "device.session",
            fail("connect to 127.0.0.1:1 failed: connection refused"),
            1,
        );
        r.push("api.readback", skip("skipped: device.session failed"), 0);
        r
    }

    #[test]
    fn checklist_lines_align_and_the_summary_names_failures() {
        let text = sample().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "PASS  api.health      /health answered 200 in 2 ms"
        );
        assert_eq!(
            lines[2],
            "FAIL  device.session  connect to 127.0.0.1:1 failed: connection refused"
        );
        assert_eq!(
            lines[3],
            "SKIP  api.readback    skipped: device.session failed"
        );
        assert_eq!(
            lines[4],
            "smoke: 2 passed, 1 failed (device.session), 1 skipped"
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn exit_code_is_one_when_anything_failed_and_skips_do_not_count() {
        assert_eq!(sample().exit_code(), 1);
        assert!(!sample().ok());

        let mut r = Report::new("health");
        r.push("api.health", pass("ok"), 1);
        r.push("disk", skip("not on this host"), 0);
        assert_eq!(r.exit_code(), 0);
        assert!(r.ok());
        assert_eq!(r.summary(), "health: 1 passed, 0 failed, 1 skipped");

        let empty = Report::new("smoke");
        assert_eq!(empty.exit_code(), 0);

        let mut two = Report::new("smoke");
        two.push("api.health", fail("down"), 0);
        two.push("api.ready", fail("down"), 0);
        assert_eq!(
            two.summary(),
            "smoke: 0 passed, 2 failed (api.health, api.ready), 0 skipped"
        );
    }

    #[test]
    fn json_document_has_the_documented_shape() {
        let v = sample().json();
        assert_eq!(v["ok"], false);
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 4);
        assert_eq!(checks[1]["name"], "api.health");
        assert_eq!(checks[1]["status"], "pass");
        assert_eq!(checks[1]["ms"], 2);
        assert_eq!(checks[2]["status"], "fail");
        assert_eq!(checks[3]["status"], "skip");
        assert_eq!(checks[3]["detail"], "skipped: device.session failed");
        for c in checks {
            let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 4, "{c}");
        }
    }

    #[test]
    fn run_times_the_check_and_details_stay_on_one_line() {
        let mut r = Report::new("smoke");
        let status = r.run("log", || fail("2 ERROR lines;\nlast:   boom\r\n"));
        assert_eq!(status, Status::Fail);
        assert_eq!(r.items[0].detail, "2 ERROR lines; last: boom");
        assert_eq!(r.items[0].name, "log");

        let long = "x".repeat(1000);
        let cut = one_line(&long, 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("short", 10), "short");
        // Cutting never splits a character.
        assert_eq!(one_line("ééééé", 3), "éé…");
    }
}
