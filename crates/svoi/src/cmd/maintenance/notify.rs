//! What a maintenance window tells the outside world: messages to a Slack-compatible incoming
//! webhook (`{"text": ...}` POSTed to `maintenance.webhook_url`) and a silence in Alertmanager
//! (its v2 API at `maintenance.alertmanager_url`) so that warnings do not page while the work
//! is under way. Both are best effort: a failure is returned to the caller, who reports it as
//! a warning and carries on; nothing here prints. The webhook URL is a secret (it carries the
//! token) and never appears in an error message.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::cmd::alerts::{ALERTS, Severity};
use crate::config::MaintenanceConfig;

/// The longest one notification or silence request may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking HTTP client that gives up after [`TIMEOUT`] and returns every status as an
/// answer.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The answer's body when its status is 2xx, else an error naming `what` and the status (and
/// the start of the body, which is where Alertmanager says what it did not like).
fn expect_success(mut response: ureq::http::Response<ureq::Body>, what: &str) -> Result<String> {
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        let body = crate::cmd::smoke::report::one_line(&body, 200);
        bail!("{what} answered {status}: {body}")
    }
}

/// POSTs `{"text": text}` to a Slack-compatible incoming webhook. An error when it cannot be
/// delivered or the receiver does not answer 2xx; the error does not contain the URL.
pub fn webhook(url: &str, text: &str) -> Result<()> {
    let body = json!({ "text": text }).to_string();
    let response = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.as_str())
        .map_err(|e| anyhow!("the webhook could not be reached: {e}"))?;
    expect_success(response, "the webhook").map(drop)
}

/// The silence a window asks Alertmanager for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Silence {
    /// From now.
    pub starts_at: jiff::Timestamp,
    /// To the window's planned end.
    pub ends_at: jiff::Timestamp,
    /// The operator.
    pub created_by: String,
    /// The window's reason.
    pub comment: String,
}

/// The names of the SVOI alerts of severity `warning`, as one anchored regular expression
/// (`WarnA|WarnB|...`; Alertmanager anchors matchers itself).
pub fn warning_alerts_regex() -> String {
    ALERTS
        .iter()
        .filter(|a| a.severity == Severity::Warning)
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join("|")
}

impl Silence {
    /// The body of `POST /api/v2/silences`: SVOI's warning alerts only (`severity="warning"`
    /// and `alertname` one of ours, so a shared Alertmanager keeps paging for other services);
    /// critical alerts (ServerDown, NoFrames, ...) must still page during maintenance.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "matchers": [
                {"name": "severity", "value": "warning", "isRegex": false, "isEqual": true},
                {"name": "alertname", "value": warning_alerts_regex(), "isRegex": true, "isEqual": true},
            ],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
        })
    }
}

/// `2026-11-25T14:05:12.345Z`: RFC 3339 in UTC with milliseconds, the form Alertmanager
/// accepts.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A client of Alertmanager's v2 API.
pub struct Alertmanager {
    base: String,
    agent: ureq::Agent,
}

impl Alertmanager {
    /// A client for `base` (`http://127.0.0.1:9093`).
    pub fn new(base: &str) -> Self {
        Alertmanager {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(),
        }
    }

    /// Creates the silence and returns its ID (`silenceID` of the answer).
    pub fn create_silence(&self, silence: &Silence) -> Result<String> {
        let url = format!("{}/api/v2/silences", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(silence.body().to_string().as_str())
            .with_context(|| format!("POST {url}"))?;
        let body = expect_success(response, &format!("POST {url}"))?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("POST {url}: the answer is not JSON"))?;
        match answer.get("silenceID").and_then(|v| v.as_str()) {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => bail!("POST {url}: no silenceID in the answer {answer}"),
        }
    }

    /// Expires the silence now (`DELETE /api/v2/silence/<id>`).
    pub fn expire_silence(&self, id: &str) -> Result<()> {
        let url = format!("{}/api/v2/silence/{id}", self.base);
        let response = self
            .agent
            .delete(&url)
            .call()
            .with_context(|| format!("DELETE {url}"))?;
        expect_success(response, &format!("DELETE {url}")).map(drop)
    }
}

/// The notifications of one command, each outcome remembered for its maintenance-log entry.
pub struct Notifier {
    webhook: Option<String>,
    host: String,
    sent: Vec<(String, Result<(), String>)>,
}

impl Notifier {
    /// Sends to `maintenance.webhook_url`, or nowhere when it is empty.
    pub fn new(config: &MaintenanceConfig) -> Self {
        let webhook = (!config.webhook_url.is_empty())
            .then(|| config.webhook_url.expose().trim().to_string());
        Notifier {
            webhook,
            host: sysinfo::System::host_name().unwrap_or_else(|| "unknown host".to_string()),
            sent: Vec::new(),
        }
    }

    /// Whether a webhook is configured.
    pub fn configured(&self) -> bool {
        self.webhook.is_some()
    }

    /// Sends `SVOI maintenance on <host>: <text>`. A failure is printed on standard error as
    /// a warning and remembered; returns whether it was delivered (`true` when no webhook is
    /// configured: there was nothing to deliver).
    pub fn send(&mut self, text: &str) -> bool {
        let Some(url) = &self.webhook else {
            return true;
        };
        let message = format!("SVOI maintenance on {}: {text}", self.host);
        let outcome = webhook(url, &message).map_err(|e| format!("{e:#}"));
        if let Err(e) = &outcome {
            eprintln!("svoi: warning: notification not delivered: {e}");
        }
        let ok = outcome.is_ok();
        self.sent.push((message, outcome));
        ok
    }

    /// Every notification attempted was delivered.
    pub fn all_delivered(&self) -> bool {
        self.sent.iter().all(|(_, r)| r.is_ok())
    }

    /// For the log entry: `{"webhook": bool, "sent": [{"text", "ok", "error"?}]}`.
    pub fn details(&self) -> serde_json::Value {
        let sent: Vec<serde_json::Value> = self
            .sent
            .iter()
            .map(|(text, r)| match r {
                Ok(()) => json!({ "text": text, "ok": true }),
                Err(e) => json!({ "text": text, "ok": false, "error": e }),
            })
            .collect();
        json!({ "webhook": self.configured(), "sent": sent })
    }
}

#[cfg(test)]
#[path = "../../../tests/util/maintenance.rs"]
mod receiver;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::receiver::Receiver;
    use super::*;

    fn config(webhook: &str) -> MaintenanceConfig {
        let env = vec![(
            "SVOI_MAINTENANCE_WEBHOOK_URL".to_string(),
            webhook.to_string(),
        )];
        crate::config::load(None, &env, &crate::config::Overrides::default())
            .unwrap()
            .config
            .maintenance
    }

    /// A port nothing listens on.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    #[test]
    fn webhook_posts_slack_json_and_reports_failures_without_the_url() {
        let r = Receiver::start("ok");
        webhook(
            &format!("{}/hooks/T0/B0/secret", r.url()),
            "hello \"world\"",
        )
        .unwrap();
        let got = r.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/hooks/T0/B0/secret");
        assert_eq!(got[0].json(), json!({ "text": "hello \"world\"" }));

        r.set_status(500);
        let e = webhook(&format!("{}/hooks/T0/B0/secret", r.url()), "x").unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("answered 500"), "{text}");
        assert!(!text.contains("secret"), "{text}");

        let e = webhook(&format!("{}/hooks/secret", closed_port()), "x").unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("could not be reached"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn silences_are_created_with_warning_matchers_and_expired_by_id() {
        let r = Receiver::start(r#"{"silenceID":"4f2b-silence"}"#);
        let am = Alertmanager::new(&format!("{}/", r.url()));
        let starts = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        let silence = Silence {
            starts_at: starts,
            ends_at: starts + jiff::SignedDuration::from_hours(1),
            created_by: "alice".into(),
            comment: "upgrade to 1.2".into(),
        };
        let id = am.create_silence(&silence).unwrap();
        assert_eq!(id, "4f2b-silence");
        am.expire_silence(&id).unwrap();

        let got = r.requests();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].method.as_str(), got[0].path.as_str()),
            ("POST", "/api/v2/silences")
        );
        let body = got[0].json();
        assert_eq!(body["startsAt"], "2026-09-21T14:13:20.000Z");
        assert_eq!(body["endsAt"], "2026-09-21T15:13:20.000Z");
        assert_eq!(body["createdBy"], "alice");
        assert_eq!(body["comment"], "upgrade to 1.2");
        let matchers = body["matchers"].as_array().unwrap();
        assert_eq!(
            matchers[0],
            json!({"name": "severity", "value": "warning", "isRegex": false, "isEqual": true})
        );
        let names = matchers[1]["value"].as_str().unwrap();
        assert!(names.contains("QueueDepthHigh"), "{names}");
        assert!(
            !names.contains("ServerDown"),
            "critical alerts must still page: {names}"
        );
        assert!(
            !names.contains("NoFrames"),
            "critical alerts must still page: {names}"
        );
        assert_eq!(
            (got[1].method.as_str(), got[1].path.as_str()),
            ("DELETE", "/api/v2/silence/4f2b-silence")
        );
    }

    #[test]
    fn silence_errors_name_the_status_and_a_missing_id() {
        let r = Receiver::start(r#"{"nope":1}"#);
        let am = Alertmanager::new(&r.url());
        let silence = Silence {
            starts_at: jiff::Timestamp::UNIX_EPOCH,
            ends_at: jiff::Timestamp::UNIX_EPOCH,
            created_by: "a".into(),
            comment: "b".into(),
        };
        let e = format!("{:#}", am.create_silence(&silence).unwrap_err());
        assert!(e.contains("no silenceID"), "{e}");
        r.set_status(400);
        r.set_body("bad matchers");
        let e = format!("{:#}", am.create_silence(&silence).unwrap_err());
        assert!(e.contains("answered 400: bad matchers"), "{e}");
        let e = format!("{:#}", am.expire_silence("x").unwrap_err());
        assert!(e.contains("answered 400"), "{e}");
        assert!(
            Alertmanager::new(&closed_port())
                .expire_silence("x")
                .is_err()
        );
    }

    #[test]
    fn the_notifier_prefixes_the_host_and_remembers_failures() {
        let r = Receiver::start("ok");
        let mut n = Notifier::new(&config(&format!("{}/hook", r.url())));
        assert!(n.configured());
        assert!(n.send("started"));
        r.set_status(500);
        assert!(!n.send("ended"));
        assert!(!n.all_delivered());
        let got = r.requests();
        assert_eq!(got.len(), 2);
        let text = got[0].json()["text"].as_str().unwrap().to_string();
        assert!(text.starts_with("SVOI maintenance on "), "{text}");
        assert!(text.ends_with(": started"), "{text}");
        let d = n.details();
        assert_eq!(d["webhook"], true);
        assert_eq!(d["sent"][0]["ok"], true);
        assert_eq!(d["sent"][1]["ok"], false);
        assert!(d["sent"][1]["error"].as_str().unwrap().contains("500"));

        let mut none = Notifier::new(&config(""));
        assert!(!none.configured());
        assert!(none.send("nothing to deliver"));
        assert!(none.all_delivered());
        assert_eq!(none.details()["sent"], json!([]));
    }
}
