//! Notifications envlock delivers itself (`[notify] url`), in the formats on-call tools read:
//! the PagerDuty Events API v2, CloudEvents 1.0 (structured JSON) carrying CDEvents, and the
//! Prometheus Alertmanager API v2. One function per format builds its `Serialize` structs from a
//! [`Happening`]; [`deliver`] sends them with a per-attempt timeout and retries, all within
//! `[notify] timeout`.
//!
//! Invariants: a delivery never changes a deployment's outcome (it returns a [`Notified`] that
//! the caller reports and records); the token goes only into the request (PagerDuty's
//! `routing_key`, otherwise an `Authorization: Bearer` header), never into a message, and every
//! body is scrubbed of secret values like every other exit of the process.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Page, PageFormat};
use crate::log::Notified;

/// How long an alert fires in Alertmanager unless a later success resolves it first.
pub const ALERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest key ([`Happening::key`]): PagerDuty's limit for a `dedup_key`.
pub const MAX_KEY: usize = 255;
/// The CDEvents specification version of the events sent (CloudEvents `data.context.version`).
pub const CDEVENTS_VERSION: &str = "0.4.1";

/// What a deployment attempt came to: every format is built from this.
#[derive(Debug, Clone)]
pub struct Happening {
    pub environment: String,
    pub account: String,
    /// The target, as `deploy envs` describes it.
    pub target: String,
    pub protected: bool,
    /// `apply`, `adopt`, `rollback` or `verify` (as in the log).
    pub action: String,
    /// `applied`, `unchanged`, `rolled-back`, `failed` or `refused` (as in the log).
    pub outcome: String,
    pub commit: String,
    pub reason: Option<String>,
    pub generation: Option<u64>,
    pub operator: String,
    pub time: SystemTime,
}

/// How bad a happening is, for on-call: trouble pages (at a severity), a success resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl Happening {
    /// `None` for a success. A rollback, or a refusal in a protected environment, is critical
    /// (it pages); any other failure is an error; a refusal elsewhere a warning.
    pub fn severity(&self) -> Option<Severity> {
        match self.outcome.as_str() {
            "applied" | "unchanged" => None,
            "rolled-back" => Some(Severity::Critical),
            "refused" if self.protected => Some(Severity::Critical),
            "refused" => Some(Severity::Warning),
            _ => Some(Severity::Error),
        }
    }

    /// The same, with every registered secret value masked in its texts (a reason may quote a
    /// health check's output).
    pub fn scrubbed(mut self) -> Self {
        let clean = |s: &mut String| *s = crate::redact::scrub(s).into_owned();
        clean(&mut self.target);
        clean(&mut self.commit);
        clean(&mut self.operator);
        if let Some(r) = &mut self.reason {
            clean(r);
        }
        self
    }

    /// True when something was made live (a deployment or a rollback that succeeded).
    fn deployed(&self) -> bool {
        self.outcome == "applied"
    }

    /// `envlock/<environment>/<12 hex of SHA-256(account, target)>`: one key per environment
    /// and target, so a later success resolves what a failure opened. At most [`MAX_KEY`]
    /// bytes (PagerDuty's limit for a `dedup_key`): a longer environment name is cut, which
    /// keeps keys apart since no two environments share a target.
    pub fn key(&self) -> String {
        let hash =
            crate::target::sha256_hex(format!("{}\n{}", self.account, self.target).as_bytes());
        let room = MAX_KEY - "envlock//".len() - 12;
        let env = crate::source::floor_char(&self.environment, room.min(self.environment.len()));
        format!("envlock/{}/{}", &self.environment[..env], &hash[..12])
    }

    /// One line for people: what happened where, and why.
    pub fn summary(&self) -> String {
        let what = match self.outcome.as_str() {
            "applied" if self.action == "rollback" => "rolled back by `deploy rollback`",
            "applied" => "deployed",
            "unchanged" => "verified unchanged",
            "rolled-back" => "FAILED and was ROLLED BACK",
            "refused" => "REFUSED",
            _ => "FAILED",
        };
        let mut s = format!("envlock: `{}` {what}", self.environment);
        if let Some(r) = self.reason.as_deref().and_then(|r| r.lines().next()) {
            s.push_str(": ");
            s.push_str(r);
        }
        // PagerDuty's limit for a summary; cut on a character boundary.
        if s.len() > 1024 {
            let cut = crate::source::floor_char(&s, 1021);
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }

    fn time_rfc3339(&self) -> String {
        humantime::format_rfc3339_millis(self.time).to_string()
    }

    /// The facts every format carries in its free-form part.
    fn details(&self) -> Value {
        json!({
            "environment": self.environment,
            "account": self.account,
            "target": self.target,
            "action": self.action,
            "outcome": self.outcome,
            "commit": self.commit,
            "generation": self.generation,
            "reason": self.reason,
            "operator": self.operator,
        })
    }
}

/// One HTTP request of a delivery.
#[derive(Debug)]
pub struct Request {
    /// Appended to `url` (empty for CloudEvents, whose `url` is the endpoint itself).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: Value,
}

// ---------------------------------------------------------------------------------------------
// PagerDuty Events API v2

/// An alert event (`POST /v2/enqueue`).
#[derive(Debug, Serialize)]
pub struct PagerDutyEvent<'a> {
    pub routing_key: &'a str,
    /// `trigger` or `resolve`.
    pub event_action: &'static str,
    pub dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<PagerDutyPayload>,
    pub client: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PagerDutyPayload {
    pub summary: String,
    pub source: String,
    pub severity: Severity,
    pub timestamp: String,
    pub component: String,
    pub group: String,
    pub class: &'static str,
    pub custom_details: Value,
}

/// A change event (`POST /v2/change/enqueue`): a deployment, shown beside incidents.
#[derive(Debug, Serialize)]
pub struct PagerDutyChange<'a> {
    pub routing_key: &'a str,
    pub payload: PagerDutyChangePayload,
}

#[derive(Debug, Serialize)]
pub struct PagerDutyChangePayload {
    pub summary: String,
    pub source: String,
    pub timestamp: String,
    pub custom_details: Value,
}

/// Trouble triggers an incident under the environment's key; a success resolves that key, and a
/// deployment is also sent as a change event. An unchanged verify only resolves.
pub fn pagerduty(h: &Happening, routing_key: &str) -> Vec<Request> {
    let severity = h.severity();
    let event = PagerDutyEvent {
        routing_key,
        event_action: if severity.is_some() {
            "trigger"
        } else {
            "resolve"
        },
        dedup_key: h.key(),
        payload: severity.map(|severity| PagerDutyPayload {
            summary: h.summary(),
            source: h.target.clone(),
            severity,
            timestamp: h.time_rfc3339(),
            component: h.environment.clone(),
            group: h.account.clone(),
            class: "deployment",
            custom_details: h.details(),
        }),
        client: "envlock",
    };
    let mut requests = vec![Request {
        path: "/v2/enqueue",
        content_type: "application/json",
        body: serde_json::to_value(&event).unwrap_or_default(),
    }];
    if h.deployed() {
        let change = PagerDutyChange {
            routing_key,
            payload: PagerDutyChangePayload {
                summary: h.summary(),
                source: h.target.clone(),
                timestamp: h.time_rfc3339(),
                custom_details: h.details(),
            },
        };
        requests.push(Request {
            path: "/v2/change/enqueue",
            content_type: "application/json",
            body: serde_json::to_value(&change).unwrap_or_default(),
        });
    }
    requests
}

// ---------------------------------------------------------------------------------------------
// CloudEvents 1.0 (structured JSON) carrying CDEvents v0.4

/// A CloudEvent in structured mode (`application/cloudevents+json`).
#[derive(Debug, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: String,
    pub time: String,
    pub datacontenttype: &'static str,
    /// The CDEvent.
    pub data: Value,
}

/// The CDEvents type of a happening: `service.deployed` for a deployment, `service.rolledback`
/// for a rollback (automatic after a failure, or `deploy rollback`), `incident.detected` for a
/// refusal or failure; `None` for an unchanged verify (nothing happened to report).
pub fn cdevents_type(h: &Happening) -> Option<&'static str> {
    match h.outcome.as_str() {
        "unchanged" => None,
        "applied" if h.action == "rollback" => Some("dev.cdevents.service.rolledback.0.2.0"),
        "applied" => Some("dev.cdevents.service.deployed.0.2.0"),
        "rolled-back" => Some("dev.cdevents.service.rolledback.0.2.0"),
        _ => Some("dev.cdevents.incident.detected.0.2.0"),
    }
}

/// The CloudEvent of a happening (`None`: nothing to send), with a fresh random `id`.
pub fn cloudevent(h: &Happening, id: String) -> Option<CloudEvent> {
    let kind = cdevents_type(h)?;
    let source = format!("/{}", h.key());
    let time = h.time_rfc3339();
    let environment = json!({"id": h.environment, "source": source});
    let artifact = format!("pkg:generic/envlock/{}@{}", h.environment, h.commit);
    let subject = if kind.contains(".incident.") {
        json!({
            "id": format!("{}/{}", h.key(), id),
            "source": source,
            "type": "incident",
            "content": {
                "description": h.summary(),
                "environment": environment,
                "service": {"id": h.environment, "source": source},
                "artifactId": artifact,
            },
        })
    } else {
        json!({
            "id": h.environment,
            "source": source,
            "type": "service",
            "content": {"environment": environment, "artifactId": artifact},
        })
    };
    let data = json!({
        "context": {
            "version": CDEVENTS_VERSION,
            "id": id,
            "source": source,
            "type": kind,
            "timestamp": time,
        },
        "subject": subject,
        "customData": h.details(),
        "customDataContentType": "application/json",
    });
    Some(CloudEvent {
        specversion: "1.0",
        id,
        source,
        kind,
        subject: h.environment.clone(),
        time,
        datacontenttype: "application/json",
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// Prometheus Alertmanager API v2

/// One alert of `POST /api/v2/alerts`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: serde_json::Map<String, Value>,
    pub annotations: serde_json::Map<String, Value>,
    pub starts_at: String,
    pub ends_at: String,
}

/// The labels of an environment's alert at one severity.
fn alert_labels(h: &Happening, severity: Severity) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), "EnvlockDeploymentFailed".into());
    labels.insert("environment".into(), h.environment.clone().into());
    labels.insert("account".into(), h.account.clone().into());
    labels.insert("envlock_key".into(), h.key().into());
    labels.insert("severity".into(), severity.as_str().into());
    labels
}

/// Trouble fires one alert (ends in [`ALERT_LIFETIME`] unless resolved sooner); a success
/// resolves the environment's alert at every severity (ends now), since the one that fired is
/// not known here.
pub fn alertmanager(h: &Happening) -> Vec<Alert> {
    let now = h.time_rfc3339();
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), h.summary().into());
    for (k, v) in [
        ("description", h.reason.clone().unwrap_or_default()),
        ("outcome", h.outcome.clone()),
        ("action", h.action.clone()),
        ("commit", h.commit.clone()),
        ("target", h.target.clone()),
        ("operator", h.operator.clone()),
    ] {
        annotations.insert(k.into(), v.into());
    }
    match h.severity() {
        Some(severity) => vec![Alert {
            labels: alert_labels(h, severity),
            annotations,
            starts_at: now,
            ends_at: humantime::format_rfc3339_millis(h.time + ALERT_LIFETIME).to_string(),
        }],
        None => [Severity::Critical, Severity::Error, Severity::Warning]
            .into_iter()
            .map(|s| Alert {
                labels: alert_labels(h, s),
                annotations: annotations.clone(),
                starts_at: now.clone(),
                ends_at: now.clone(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery

/// The requests `page` sends for `h` (none for a CloudEvents unchanged verify).
pub fn requests(page: &Page, h: &Happening, token: Option<&str>) -> Vec<Request> {
    match page.format {
        PageFormat::PagerDuty => pagerduty(h, token.unwrap_or_default()),
        PageFormat::CloudEvents => cloudevent(h, random_id())
            .map(|e| Request {
                path: "",
                content_type: "application/cloudevents+json; charset=utf-8",
                body: serde_json::to_value(&e).unwrap_or_default(),
            })
            .into_iter()
            .collect(),
        PageFormat::Alertmanager => vec![Request {
            path: "/api/v2/alerts",
            content_type: "application/json",
            body: serde_json::to_value(alertmanager(h)).unwrap_or_default(),
        }],
    }
}

/// 32 random hex digits.
fn random_id() -> String {
    let bytes = crate::secret::random_key().unwrap_or_default();
    crate::secret::hex(&bytes[..bytes.len().min(16)])
}

/// Why `url` is not one envlock delivers to: https anywhere, http only to a loopback address
/// (a local receiver, tests); no credentials in it (they belong in `token`).
pub fn url_problem(url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("is not a URL (https://HOST/PATH)".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Some("holds credentials (`user:password@`)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => authority.split(':').next().unwrap_or_default().to_owned(),
    };
    if host.is_empty() {
        return Some("names no host".into());
    }
    if let Some(name) = credential_in_query(rest) {
        return Some(format!("holds a credential in its query (`{name}=`)"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => None,
        "http" if is_loopback(&host) => None,
        "http" => Some("is plain http to a host that is not this machine".into()),
        other => Some(format!("has scheme `{other}`, not https")),
    }
}

/// Why `url` cannot be the base URL of `format`, if it cannot: the API's own path written
/// out (`https://events.pagerduty.com/v2/enqueue`), to which envlock would append it again, so
/// that nothing would ever be delivered.
pub fn endpoint_problem(format: PageFormat, url: &str) -> Option<String> {
    let paths: &[&str] = match format {
        PageFormat::PagerDuty => &["/v2/enqueue", "/v2/change/enqueue"],
        PageFormat::Alertmanager => &["/api/v2/alerts", "/api/v1/alerts"],
        PageFormat::CloudEvents => &[],
    };
    let path = shown_url(url).trim_end_matches('/');
    let appended = match format {
        PageFormat::PagerDuty => "/v2/enqueue",
        _ => "/api/v2/alerts",
    };
    paths
        .iter()
        .find(|p| path.to_ascii_lowercase().ends_with(*p))
        .map(|p| {
            format!(
                "ends in `{p}`: it is the base URL, to which envlock appends `{appended}` itself"
            )
        })
}

/// A query parameter whose name says it is a credential (`?token=`, `?api_key=`...).
fn credential_in_query(rest: &str) -> Option<String> {
    let query = rest.split('#').next()?.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|p| p.split('=').next())
        .find(|name| {
            let n = name.to_ascii_lowercase();
            [
                "token",
                "key",
                "secret",
                "password",
                "passwd",
                "auth",
                "signature",
                "sig",
            ]
            .iter()
            // `apiKey`, `authToken`, `access-token`, `api%5Fkey`: a name that ends in one.
            .any(|c| n.ends_with(c))
        })
        .map(str::to_owned)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL without query or fragment, for messages.
pub fn shown_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The least time left worth one more attempt.
const LAST_ATTEMPT: Duration = Duration::from_millis(250);

enum Attempt {
    Retry(String),
    Fatal(String),
}

/// Send every request in order, each retried on connection errors, 429 and 5xx with backoff,
/// all within `timeout`; stop at the first that cannot be delivered.
pub fn deliver(
    page: &Page,
    token: Option<&str>,
    requests: &[Request],
    timeout: Duration,
) -> Notified {
    let deadline = Instant::now() + timeout;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let per_attempt = (timeout / 3).max(Duration::from_secs(1));
    let mut attempts = 0;
    for r in requests {
        if let Err(why) = send(&agent, page, token, r, deadline, per_attempt, &mut attempts) {
            return Notified {
                format: page.format.as_str().to_owned(),
                delivered: false,
                attempts,
                error: Some(crate::redact::scrub(&why).into_owned()),
            };
        }
    }
    Notified {
        format: page.format.as_str().to_owned(),
        delivered: true,
        attempts,
        error: None,
    }
}

fn send(
    agent: &ureq::Agent,
    page: &Page,
    token: Option<&str>,
    request: &Request,
    deadline: Instant,
    per_attempt: Duration,
    attempts: &mut u32,
) -> Result<(), String> {
    let url = format!("{}{}", page.url.value.trim_end_matches('/'), request.path);
    let url = if request.path.is_empty() {
        page.url.value.clone()
    } else {
        url
    };
    // Not scrubbed here: PagerDuty's body carries the routing key, itself a registered secret.
    // The texts that may quote a secret were scrubbed in the `Happening` (`Happening::scrubbed`).
    let body = serde_json::to_vec(&request.body).map_err(|e| e.to_string())?;
    let mut pause = Duration::from_millis(200);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{}: no answer within the timeout", shown_url(&url)));
        }
        *attempts += 1;
        match attempt(
            agent,
            page,
            token,
            &url,
            request,
            &body,
            left.min(per_attempt),
        ) {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(why)) => return Err(why),
            Err(Attempt::Retry(why)) => {
                // The last pause is cut short so that one more attempt fits in the timeout.
                let left = deadline.saturating_duration_since(Instant::now());
                if left < LAST_ATTEMPT {
                    return Err(format!(
                        "{why} (gave up at the timeout after {attempts} attempt{})",
                        if *attempts == 1 { "" } else { "s" }
                    ));
                }
                std::thread::sleep(pause.min(left - LAST_ATTEMPT));
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn attempt(
    agent: &ureq::Agent,
    page: &Page,
    token: Option<&str>,
    url: &str,
    request: &Request,
    body: &[u8],
    limit: Duration,
) -> Result<(), Attempt> {
    let shown = shown_url(url);
    let mut builder = agent
        .post(url)
        .config()
        .timeout_global(Some(limit))
        .build()
        .header("content-type", request.content_type);
    if let (Some(t), false) = (token, page.format == PageFormat::PagerDuty) {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    let mut response = builder.send(body).map_err(|e| match e {
        ureq::Error::Timeout(_) => Attempt::Retry(format!("{shown}: timed out")),
        ureq::Error::ConnectionFailed | ureq::Error::Io(_) | ureq::Error::HostNotFound => {
            Attempt::Retry(format!("{shown}: cannot connect ({e})"))
        }
        other => Attempt::Fatal(format!("{shown}: {other}")),
    })?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let first: String = text.trim().chars().take(200).collect();
    let why = format!("{shown}: HTTP {status} {first:?}");
    if status == 429 || status >= 500 {
        Err(Attempt::Retry(why))
    } else {
        Err(Attempt::Fatal(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http_without_credentials() {
        assert_eq!(url_problem("https://events.pagerduty.com"), None);
        assert_eq!(url_problem("http://127.0.0.1:9093/"), None);
        assert_eq!(url_problem("http://[::1]:80/x"), None);
        assert_eq!(url_problem("http://localhost"), None);
        assert!(url_problem("http://alerts.example.com").is_some());
        assert!(url_problem("https://user:pw@example.com").is_some());
        assert!(url_problem("ftp://example.com").is_some());
        assert!(url_problem("https://").is_some());
        assert!(url_problem("example.com").is_some());
        assert!(url_problem("https://hooks.example.com/x?token=abc").is_some());
        assert!(url_problem("https://hooks.example.com/x?a=1&api_key=abc").is_some());
        assert_eq!(url_problem("https://hooks.example.com/x?channel=ops"), None);
        for name in [
            "apiKey",
            "authToken",
            "X-Amz-Signature",
            "api%5Fkey",
            "accesstoken",
        ] {
            let url = format!("https://hooks.example.com/x?a=1&{name}=abc");
            assert!(url_problem(&url).is_some(), "{url}");
        }
    }

    fn happening(outcome: &str, reason: Option<String>) -> Happening {
        Happening {
            environment: "prod".into(),
            account: "222222222222".into(),
            target: "dir /srv/asr".into(),
            protected: true,
            action: "apply".into(),
            outcome: outcome.into(),
            commit: "c0ffee".into(),
            reason,
            generation: Some(3),
            operator: "ana@box".into(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    #[test]
    fn a_summary_fits_pagerduty_and_is_cut_on_a_character_boundary() {
        let h = happening("failed", Some("é".repeat(2000)));
        let s = h.summary();
        assert!(s.len() <= 1024, "{}", s.len());
        assert!(s.ends_with("..."));
    }

    #[test]
    fn the_key_depends_on_environment_account_and_target_only() {
        let a = happening("failed", Some("x".into()));
        let mut b = happening("applied", None);
        b.commit = "other".into();
        assert_eq!(a.key(), b.key());
        b.target = "dir /srv/other".into();
        assert_ne!(a.key(), b.key());
        assert!(a.key().starts_with("envlock/prod/"));
    }

    #[test]
    fn severity_follows_the_outcome() {
        let mut h = happening("refused", None);
        assert_eq!(h.severity(), Some(Severity::Critical));
        h.protected = false;
        assert_eq!(h.severity(), Some(Severity::Warning));
        h.outcome = "rolled-back".into();
        assert_eq!(h.severity(), Some(Severity::Critical));
        h.outcome = "failed".into();
        assert_eq!(h.severity(), Some(Severity::Error));
        for ok in ["applied", "unchanged"] {
            h.outcome = ok.into();
            assert_eq!(h.severity(), None);
        }
    }

    #[test]
    fn a_success_resolves_alertmanager_alerts_at_every_severity() {
        let alerts = alertmanager(&happening("applied", None));
        assert_eq!(alerts.len(), 3);
        assert!(alerts.iter().all(|a| a.starts_at == a.ends_at));
        let fired = alertmanager(&happening("rolled-back", None));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].labels["severity"], "critical");
        assert!(fired[0].ends_at > fired[0].starts_at);
    }
}
