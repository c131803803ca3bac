//! Maintenance windows: `svoi maintenance start|end|status`.
//!
//! `start` changes nothing unless the system is healthy (the pre-check is `svoi health`) and
//! no window is open; then it takes the pre-maintenance backup, opens the window in the
//! database (the server turns maintenance mode on from it: gauge, `/ready`, `/api/v1/status`),
//! notifies and silences SVOI's warning alerts in Alertmanager. `end` runs the post-check (the
//! smoke test); when it fails it restores the pre-maintenance backup (the restore carries the
//! window row over) and checks again; then it closes the window, expires the silence and
//! notifies the result. Notifications and silences are best effort: a failure is a warning
//! and the log entry's result `warning`, never an abort. Each command appends one `window`
//! entry to the maintenance log.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use svoi_store::{LogResult, NewWindow, Window};

use super::log::{duration_text, time_text};
use super::notify::{Alertmanager, Notifier, Silence};
use crate::cmd::backup::{self, BackupKind};
use crate::cmd::smoke;
use crate::cmd::smoke::api_base;
use crate::config::Loaded;
use crate::oplog::{Op, now_us, operator};

/// The label of the pre-maintenance backup (its ID ends with it).
pub const BACKUP_LABEL: &str = "pre-maintenance";

/// Exit code 1: the window was not opened, or the post-check failed.
fn needs_a_person() -> ExitCode {
    ExitCode::from(1)
}

/// `svoi maintenance start`.
pub fn start(
    loaded: &Loaded,
    reason: &str,
    duration: Option<&str>,
    api: Option<&str>,
) -> Result<ExitCode> {
    let base = api_base(loaded, api)?;
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("--reason must say why (it is shown in notifications and the log)");
    }
    let length = match duration {
        Some(text) => humantime::parse_duration(text)
            .with_context(|| format!("--duration {text:?}: expected a duration such as 90m"))?,
        None => loaded.config.maintenance.default_duration,
    };
    if length.is_zero() {
        bail!("--duration must be longer than zero");
    }
    let op = Op::begin("window");
    let refuse = |op: Op, why: String, details: serde_json::Value| {
        eprintln!("svoi: maintenance start refused: {why}; nothing changed");
        op.finish(
            loaded,
            LogResult::Failed,
            format!("maintenance start refused: {why}"),
            details,
        );
        Ok(needs_a_person())
    };

    match current_window(loaded) {
        Err(e) => {
            let why = format!("cannot read the maintenance windows: {e:#}");
            return refuse(op, why, json!({ "reason": reason, "step": "window" }));
        }
        Ok(Some(w)) => {
            let why = format!(
                "window #{} ({}) is already open since {}; close it with `svoi maintenance end`",
                w.id,
                w.window.reason,
                time_text(w.window.started_at_us)
            );
            return refuse(
                op,
                why,
                json!({ "reason": reason, "step": "window", "open": w.id }),
            );
        }
        Ok(None) => {}
    }

    println!("pre-check (svoi health):");
    let check = smoke::health(loaded, Some(&base))?;
    print!("{}", check.text());
    if !check.ok() {
        let why = format!("the pre-check failed ({})", check.summary());
        return refuse(
            op,
            why,
            json!({ "reason": reason, "step": "pre-check", "pre_check": check.json() }),
        );
    }

    eprintln!("taking the pre-maintenance backup");
    let manifest = match backup::create(loaded, BackupKind::PreMaintenance, Some(BACKUP_LABEL)) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("the pre-maintenance backup failed: {e:#}");
            return refuse(op, why, json!({ "reason": reason, "step": "backup" }));
        }
    };

    let started_at_us = now_us();
    let length_us = i64::try_from(length.as_micros()).unwrap_or(i64::MAX);
    let new = NewWindow {
        started_at_us,
        planned_end_us: started_at_us.saturating_add(length_us),
        reason: reason.to_string(),
        operator: operator(),
        backup_id: Some(manifest.id.clone()),
    };
    let window = match crate::cmd::open_store(loaded).and_then(|mut s| Ok(s.open_window(&new)?)) {
        Ok(w) => w,
        Err(e) => {
            let why = format!(
                "cannot open the window: {e:#} (backup {} was taken)",
                manifest.id
            );
            return refuse(
                op,
                why,
                json!({ "reason": reason, "step": "open", "backup_id": manifest.id }),
            );
        }
    };

    let mut notifier = Notifier::new(&loaded.config.maintenance);
    notifier.send(&format!(
        "maintenance window #{} started by {}: {reason} (planned until {}, pre-maintenance \
         backup {})",
        window.id,
        new.operator,
        time_text(new.planned_end_us),
        manifest.id
    ));
    let silence = silence(loaded, &window, length);
    let silence_ok = !matches!(silence, SilenceStep::Failed(_));

    println!("maintenance window #{} open: {reason}", window.id);
    println!("  operator      {}", new.operator);
    println!("  since         {}", time_text(started_at_us));
    println!(
        "  planned end   {} ({})",
        time_text(new.planned_end_us),
        duration_text(length_us / 1000)
    );
    println!("  backup        {}", manifest.id);
    println!("  silence       {}", silence.describe());
    println!("  notification  {}", notification_text(&notifier));
    println!("close it with `svoi maintenance end` (it runs the smoke test; a failure rolls back)");

    let result = if notifier.all_delivered() && silence_ok {
        LogResult::Ok
    } else {
        LogResult::Warning
    };
    op.finish(
        loaded,
        result,
        format!("window #{} opened: {reason}", window.id),
        json!({
            "action": "start",
            "window": window.id,
            "reason": reason,
            "planned_end": time_text(new.planned_end_us),
            "backup_id": manifest.id,
            "pre_check": check.summary(),
            "silence": silence.json(),
            "notifications": notifier.details(),
        }),
    );
    Ok(ExitCode::SUCCESS)
}

/// The open window of the configured database.
fn current_window(loaded: &Loaded) -> Result<Option<Window>> {
    let mut store = crate::cmd::open_store(loaded)?;
    Ok(store.current_window()?)
}

/// What happened to the Alertmanager silence.
enum SilenceStep {
    /// `maintenance.alertmanager_url` is not set.
    NotConfigured,
    /// Created (or expired), with its ID.
    Done(String),
    /// The window has no silence to expire.
    None,
    /// A warning.
    Failed(String),
}

impl SilenceStep {
    fn describe(&self) -> String {
        match self {
            SilenceStep::NotConfigured => "none (maintenance.alertmanager_url not set)".into(),
            SilenceStep::Done(id) => id.clone(),
            SilenceStep::None => "none".into(),
            SilenceStep::Failed(e) => format!("FAILED: {e}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            SilenceStep::NotConfigured => json!({ "configured": false }),
            SilenceStep::Done(id) => json!({ "configured": true, "id": id, "ok": true }),
            SilenceStep::None => json!({ "configured": true, "id": null, "ok": true }),
            SilenceStep::Failed(e) => json!({ "configured": true, "ok": false, "error": e }),
        }
    }
}

/// Creates the window's silence and stores its ID on the window row.
fn silence(loaded: &Loaded, window: &Window, length: Duration) -> SilenceStep {
    let Some(url) = &loaded.config.maintenance.alertmanager_url else {
        return SilenceStep::NotConfigured;
    };
    let starts_at = jiff::Timestamp::now();
    let ends_at = jiff::SignedDuration::try_from(length)
        .ok()
        .and_then(|d| starts_at.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    let request = Silence {
        starts_at,
        ends_at,
        created_by: window.window.operator.clone(),
        comment: format!(
            "SVOI maintenance window #{}: {}",
            window.id, window.window.reason
        ),
    };
    let id = match Alertmanager::new(url).create_silence(&request) {
        Ok(id) => id,
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("svoi: warning: no Alertmanager silence: {e}");
            return SilenceStep::Failed(e);
        }
    };
    let stored =
        crate::cmd::open_store(loaded).and_then(|mut s| Ok(s.set_window_silence(window.id, &id)?));
    match stored {
        Ok(()) => SilenceStep::Done(id),
        Err(e) => {
            let e = format!(
                "silence {id} created but not recorded on the window ({e:#}); `maintenance end` \
                 will not expire it, it ends at the planned end"
            );
            eprintln!("svoi: warning: {e}");
            SilenceStep::Failed(e)
        }
    }
}

/// Expires the window's silence.
fn expire_silence(loaded: &Loaded, window: &Window) -> SilenceStep {
    let Some(id) = &window.silence_id else {
        return SilenceStep::None;
    };
    let Some(url) = &loaded.config.maintenance.alertmanager_url else {
        let e = format!(
            "silence {id} not expired: maintenance.alertmanager_url is no longer set (it ends at \
             the planned end)"
        );
        eprintln!("svoi: warning: {e}");
        return SilenceStep::Failed(e);
    };
    match Alertmanager::new(url).expire_silence(id) {
        Ok(()) => SilenceStep::Done(id.clone()),
        Err(e) => {
            let e = format!("silence {id} not expired: {e:#}");
            eprintln!("svoi: warning: {e}");
            SilenceStep::Failed(e)
        }
    }
}

/// `sent`, `not configured` or `FAILED (n of m)`.
fn notification_text(notifier: &Notifier) -> String {
    if !notifier.configured() {
        "none (maintenance.webhook_url not set)".into()
    } else if notifier.all_delivered() {
        "sent".into()
    } else {
        "FAILED (see the warnings above)".into()
    }
}

/// How a window ended, as stored on its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The post-check passed.
    Ok,
    /// The post-check failed and `--no-rollback` was given.
    Failed,
    /// The post-check failed, the backup was restored and the second check passed.
    RolledBack,
    /// The post-check failed and the restore or the second check failed too.
    RollbackFailed,
}

impl Ending {
    /// `ok`, `failed`, `rolled_back`, `rollback_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Ok => "ok",
            Ending::Failed => "failed",
            Ending::RolledBack => "rolled_back",
            Ending::RollbackFailed => "rollback_failed",
        }
    }
}

/// `svoi maintenance end`.
pub fn end(
    loaded: &Loaded,
    api: Option<&str>,
    device: Option<&str>,
    token: Option<&str>,
    no_rollback: bool,
) -> Result<ExitCode> {
    let base = api_base(loaded, api)?;
    let window = match current_window(loaded)? {
        Some(w) => w,
        None => {
            eprintln!("svoi: no maintenance window is open (`svoi maintenance status`)");
            return Ok(needs_a_person());
        }
    };
    let op = Op::begin("window");
    let mut notifier = Notifier::new(&loaded.config.maintenance);
    let reason = window.window.reason.clone();

    println!("post-check (svoi smoke):");
    let first = smoke::smoke(loaded, Some(&base), device, token)?;
    print!("{}", first.text());
    let mut second_summary = None;
    let mut rollback = serde_json::Value::Null;
    let ending = if first.ok() {
        Ending::Ok
    } else if no_rollback {
        notifier.send(&format!(
            "maintenance window #{}: post-check failed ({}); not rolled back (--no-rollback)",
            window.id,
            first.summary()
        ));
        Ending::Failed
    } else {
        let backup_id = window.window.backup_id.clone();
        notifier.send(&format!(
            "maintenance window #{}: post-check failed ({}), rolling back to backup {}",
            window.id,
            first.summary(),
            backup_id.as_deref().unwrap_or("(none)")
        ));
        let (ending, details, second) =
            roll_back(loaded, &base, device, token, backup_id.as_deref());
        rollback = details;
        second_summary = second;
        match ending {
            Ending::RolledBack => notifier.send(&format!(
                "maintenance window #{}: rolled back to backup {}; the post-check passes again",
                window.id,
                backup_id.as_deref().unwrap_or_default()
            )),
            _ => notifier.send(&format!(
                "maintenance window #{}: ROLLBACK FAILED ({}): a person must act now",
                window.id,
                rollback["error"].as_str().unwrap_or("see the log")
            )),
        };
        ending
    };

    let silence = expire_silence(loaded, &window);
    let ended_at_us = now_us();
    // After a restore the database is the backup's with the window row carried over: a new
    // connection sees it.
    let closed = crate::cmd::open_store(loaded)
        .and_then(|mut s| Ok(s.close_window(window.id, ended_at_us, ending.as_str())?));
    if let Err(e) = &closed {
        eprintln!(
            "svoi: warning: cannot close window #{} in the database: {e:#}",
            window.id
        );
    }
    let over = duration_text((ended_at_us - window.window.started_at_us) / 1000);
    notifier.send(&format!(
        "maintenance window #{} ended after {over}: {} ({reason})",
        window.id,
        ending.as_str()
    ));

    println!(
        "maintenance window #{} closed: {}",
        window.id,
        ending.as_str()
    );
    println!("  reason        {reason}");
    println!("  lasted        {over}");
    println!("  post-check    {}", first.summary());
    if let Some(s) = &second_summary {
        println!("  after restore {s}");
    }
    println!("  silence       {}", silence.describe());
    println!("  notification  {}", notification_text(&notifier));

    let clean =
        notifier.all_delivered() && !matches!(silence, SilenceStep::Failed(_)) && closed.is_ok();
    let result = match ending {
        Ending::Ok if clean => LogResult::Ok,
        Ending::Ok => LogResult::Warning,
        _ => LogResult::Failed,
    };
    op.finish(
        loaded,
        result,
        format!(
            "window #{} closed: {} ({reason})",
            window.id,
            ending.as_str()
        ),
        json!({
            "action": "end",
            "window": window.id,
            "reason": reason,
            "result": ending.as_str(),
            "backup_id": window.window.backup_id,
            "post_check": first.summary(),
            "post_check_after_rollback": second_summary,
            "rollback": rollback,
            "silence": silence.json(),
            "closed": closed.as_ref().map_or_else(|e| json!(format!("{e:#}")), |()| json!(true)),
            "notifications": notifier.details(),
        }),
    );
    Ok(if first.ok() {
        ExitCode::SUCCESS
    } else {
        needs_a_person()
    })
}

/// Restores `backup_id` (forcing past the running server, which keeps running) and runs the
/// post-check again: the ending, the rollback's details and the second check's summary.
fn roll_back(
    loaded: &Loaded,
    base: &str,
    device: Option<&str>,
    token: Option<&str>,
    backup_id: Option<&str>,
) -> (Ending, serde_json::Value, Option<String>) {
    let Some(id) = backup_id else {
        let error = "the window has no pre-maintenance backup";
        eprintln!("svoi: rollback impossible: {error}");
        return (Ending::RollbackFailed, json!({ "error": error }), None);
    };
    eprintln!("post-check failed: restoring the pre-maintenance backup {id}");
    let outcome = match backup::restore(loaded, id, true) {
        Ok(o) => o,
        Err(e) => {
            let error = format!("restore of {id} failed: {e:#}");
            eprintln!("svoi: {error}");
            return (
                Ending::RollbackFailed,
                json!({ "backup_id": id, "error": error }),
                None,
            );
        }
    };
    let mut details = json!({
        "backup_id": id,
        "pre_restore": outcome.pre_restore,
        "mismatches": outcome.mismatches,
        "rows": outcome.counts.values().sum::<i64>(),
    });
    println!("post-check after the rollback (svoi smoke):");
    let second = match smoke::smoke(loaded, Some(base), device, token) {
        Ok(r) => r,
        Err(e) => {
            details["error"] = json!(format!("the second post-check could not run: {e:#}"));
            return (Ending::RollbackFailed, details, None);
        }
    };
    print!("{}", second.text());
    let ending = if second.ok() && outcome.ok() {
        Ending::RolledBack
    } else {
        let error = if second.ok() {
            format!(
                "restored row counts differ: {}",
                outcome.mismatches.join("; ")
            )
        } else {
            format!("the post-check still fails ({})", second.summary())
        };
        details["error"] = json!(error);
        Ending::RollbackFailed
    };
    (ending, details, Some(second.summary()))
}

/// `svoi maintenance status`.
pub fn status(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let window = current_window(loaded)?;
    let now = now_us();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(window.as_ref(), now))?
        );
    } else {
        print!("{}", status_text(window.as_ref(), now));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--json` document of `status`.
pub fn status_json(window: Option<&Window>, now_us: i64) -> serde_json::Value {
    let Some(w) = window else {
        return json!({ "open": false });
    };
    json!({
        "open": true,
        "id": w.id,
        "reason": w.window.reason,
        "operator": w.window.operator,
        "since": time_text(w.window.started_at_us),
        "planned_end": time_text(w.window.planned_end_us),
        "overdue": now_us > w.window.planned_end_us,
        "backup_id": w.window.backup_id,
        "silence_id": w.silence_id,
    })
}

/// The text of `status`.
pub fn status_text(window: Option<&Window>, now_us: i64) -> String {
    let Some(w) = window else {
        return "no maintenance window open\n".to_string();
    };
    let ago = duration_text((now_us - w.window.started_at_us).max(0) / 1000);
    let end = if now_us > w.window.planned_end_us {
        format!(
            "OVERDUE by {}",
            duration_text((now_us - w.window.planned_end_us) / 1000)
        )
    } else {
        format!(
            "in {}",
            duration_text((w.window.planned_end_us - now_us) / 1000)
        )
    };
    format!(
        "maintenance window #{} open\n  reason       {}\n  operator     {}\n  since        {} \
         ({ago} ago)\n  planned end  {} ({end})\n  backup       {}\n  silence      {}\n",
        w.id,
        w.window.reason,
        w.window.operator,
        time_text(w.window.started_at_us),
        time_text(w.window.planned_end_us),
        w.window.backup_id.as_deref().unwrap_or("none"),
        w.silence_id.as_deref().unwrap_or("none"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn window(planned_end_us: i64) -> Window {
        Window {
            id: 7,
            window: NewWindow {
                started_at_us: 1_790_000_000_000_000,
                planned_end_us,
                reason: "upgrade".into(),
                operator: "alice".into(),
                backup_id: Some("20260921T141320Z-pre-maintenance".into()),
            },
            silence_id: Some("s-1".into()),
            ended_at_us: None,
            result: None,
        }
    }

    #[test]
    fn status_says_whether_the_window_is_overdue() {
        let start = 1_790_000_000_000_000;
        let w = window(start + 3_600_000_000);
        let in_time = status_text(Some(&w), start + 600_000_000);
        assert!(in_time.contains("#7 open"), "{in_time}");
        assert!(in_time.contains("(10m 00s ago)"), "{in_time}");
        assert!(in_time.contains("(in 50m 00s)"), "{in_time}");
        assert!(in_time.contains("backup       20260921T141320Z-pre-maintenance"));
        let late = status_text(Some(&w), start + 3_900_000_000);
        assert!(late.contains("OVERDUE by 5m 00s"), "{late}");
        assert_eq!(status_text(None, start), "no maintenance window open\n");

        let j = status_json(Some(&w), start + 3_900_000_000);
        assert_eq!(j["overdue"], true);
        assert_eq!(j["silence_id"], "s-1");
        assert_eq!(j["since"], "2026-09-21T14:13:20Z");
        assert_eq!(status_json(Some(&w), start)["overdue"], false);
        assert_eq!(status_json(None, start), json!({ "open": false }));
    }

    #[test]
    fn endings_have_their_stored_names() {
        let names: Vec<&str> = [
            Ending::Ok,
            Ending::Failed,
            Ending::RolledBack,
            Ending::RollbackFailed,
        ]
        .iter()
        .map(|e| e.as_str())
        .collect();
        assert_eq!(names, ["ok", "failed", "rolled_back", "rollback_failed"]);
    }
}
