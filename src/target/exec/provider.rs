//! The client side of the provider protocol (docs/providers.md). Protocol 1: one process per
//! operation, one JSON request on stdin, one JSON object on stdout, stderr as the provider's log.
//! Protocol 2 (`[target] protocol = 2`): one process per run, requests and responses as JSON
//! Lines through a [`Session`], writes in batches ([`Provider::apply_batch`]).
//!
//! Invariants: every failure names the provider, the operation and the resource; a provider that
//! crashes, hangs, prints garbage or speaks another protocol version is an error, never a
//! guess; values never enter a message (only names, versions and the provider's own words).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};

use super::session::{self, Capabilities, Session};
use crate::process::{self, Ended, Spec};

/// The protocol version this build speaks.
pub const PROTOCOL: u64 = 1;

/// The most bytes of a response that are read (a `read` of many resources is large).
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;

/// How many lines of the provider's stderr a failure shows.
const LOG_LINES: usize = 8;

/// A provider program and what every request carries.
#[derive(Debug)]
pub struct Provider {
    pub argv: Vec<String>,
    /// The repository root: the provider's working directory.
    pub root: PathBuf,
    pub options: Value,
    pub environment: String,
    pub account: String,
    pub timeout: Duration,
    /// 1: one process per call; 2: one session per run.
    pub protocol: u64,
    /// The running protocol-2 session, once started (a broken one is dropped: the next call
    /// starts a new one).
    pub session: Mutex<Option<Session>>,
}

/// One write of a batch (protocol 2 `apply`).
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// Put `value` if the resource is at `expect` (`None`: absent).
    Put {
        resource: &'a str,
        value: &'a Value,
        secret: bool,
        expect: Option<&'a str>,
    },
    /// Delete the resource if it is at `expect`.
    Delete { resource: &'a str, expect: &'a str },
}

impl Item<'_> {
    fn resource(&self) -> &str {
        match self {
            Item::Put { resource, .. } | Item::Delete { resource, .. } => resource,
        }
    }

    fn to_json(self) -> Value {
        let mut m = Map::new();
        match self {
            Item::Put {
                resource,
                value,
                secret,
                expect,
            } => {
                m.insert("op".into(), "put".into());
                m.insert("resource".into(), resource.into());
                m.insert("value".into(), value.clone());
                m.insert("secret".into(), secret.into());
                m.insert("expect".into(), expect.map_or(Value::Null, Value::from));
            }
            Item::Delete { resource, expect } => {
                m.insert("op".into(), "delete".into());
                m.insert("resource".into(), resource.into());
                m.insert("expect".into(), expect.into());
            }
        }
        Value::Object(m)
    }
}

/// What one item of a batch did: the version a put produced (`None` for a delete), or why it
/// failed.
pub type ItemResult = Result<Option<String>, CallError>;

/// One live resource as `read` returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub value: Value,
    pub version: String,
    /// The provider says the stored value is secret (`"secret": true` in `read`).
    pub secret: bool,
}

/// Why a provider call did not succeed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The provider answered `conflict`: the resource is not at the expected version.
    Conflict(String),
    /// The provider answered `lock-lost` to a fenced `state-put`: the lock's lease ran out.
    LockLost(String),
    /// Anything else; the message names the provider, operation and resource, and `log` holds
    /// the last lines of its stderr.
    Failed { message: String, log: Vec<String> },
}

impl CallError {
    pub fn message(&self) -> &str {
        match self {
            CallError::Conflict(m)
            | CallError::LockLost(m)
            | CallError::Failed { message: m, .. } => m,
        }
    }
}

impl Provider {
    /// The provider as messages name it: its argv.
    pub fn name(&self) -> String {
        process::display_argv(&self.argv)
    }

    /// `identity`: the account (and principal, when told) the provider's credentials reach.
    pub fn identity(&self) -> Result<(String, Option<String>), CallError> {
        let answer = self.call("identity", None, Map::new())?;
        let account = match answer.get("account") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(self.malformed("identity", None, "no `account` string")),
        };
        let principal = answer
            .get("principal")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((account, principal))
    }

    /// `read`: every live resource in the environment's scope.
    pub fn read(&self) -> Result<BTreeMap<String, Remote>, CallError> {
        let answer = self.call("read", None, Map::new())?;
        let Some(Value::Object(resources)) = answer.get("resources") else {
            return Err(self.malformed("read", None, "no `resources` object"));
        };
        let mut out = BTreeMap::new();
        for (name, entry) in resources {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(self.malformed(
                    "read",
                    None,
                    &format!("the resource name {name:?} is empty or holds control characters"),
                ));
            }
            let (Some(value), Some(version)) = (entry.get("value"), version_of(entry)) else {
                return Err(self.malformed(
                    "read",
                    Some(name),
                    "each resource needs `value` and a string `version`",
                ));
            };
            out.insert(
                name.clone(),
                Remote {
                    value: value.clone(),
                    version,
                    secret: entry.get("secret") == Some(&Value::Bool(true)),
                },
            );
        }
        Ok(out)
    }

    /// `apply`: put one resource if it is at `expect` (`None`: absent). Returns its new version.
    pub fn put(
        &self,
        resource: &str,
        value: &Value,
        secret: bool,
        expect: Option<&str>,
    ) -> Result<String, CallError> {
        let mut extra = Map::new();
        extra.insert("resource".into(), resource.into());
        extra.insert("value".into(), value.clone());
        extra.insert("secret".into(), secret.into());
        extra.insert("expect".into(), expect.map_or(Value::Null, Value::from));
        if self.protocol == session::PROTOCOL {
            let item = Item::Put {
                resource,
                value,
                secret,
                expect,
            };
            return self.apply_one(item).map(Option::unwrap_or_default);
        }
        let answer = self.call("apply", Some(resource), extra)?;
        version_of(&Value::Object(answer))
            .ok_or_else(|| self.malformed("apply", Some(resource), "no string `version`"))
    }

    /// `delete`: remove one resource if it is at `expect`.
    pub fn delete(&self, resource: &str, expect: &str) -> Result<(), CallError> {
        let mut extra = Map::new();
        extra.insert("resource".into(), resource.into());
        extra.insert("expect".into(), expect.into());
        if self.protocol == session::PROTOCOL {
            return self.apply_one(Item::Delete { resource, expect }).map(drop);
        }
        self.call("delete", Some(resource), extra).map(drop)
    }

    /// A batch of one item, its result.
    fn apply_one(&self, item: Item<'_>) -> ItemResult {
        let mut results = self.apply_batch(&[item])?;
        results.pop().unwrap_or_else(|| {
            Err(self.malformed("apply", Some(item.resource()), "no result for the item"))
        })
    }

    /// The batch capabilities of a protocol-2 provider (its session is started if needed);
    /// `None` for protocol 1.
    pub fn capabilities(&self) -> Result<Option<Capabilities>, CallError> {
        if self.protocol != session::PROTOCOL {
            return Ok(None);
        }
        let mut slot = self.session_slot();
        let session = self.open_session(&mut slot)?;
        Ok(Some(session.capabilities))
    }

    /// Protocol 2 `apply`: the items in order, all in one request. The results are in item
    /// order and stop after the first failed item (the items after it were not tried). A
    /// failure of the request as a whole is `Err`: then no item's fate is known.
    pub fn apply_batch(&self, items: &[Item<'_>]) -> Result<Vec<ItemResult>, CallError> {
        let what = match items {
            [one] => self.what("apply", Some(one.resource())),
            _ => format!(
                "{} of {} resources (`{}` to `{}`)",
                self.what("apply", None),
                items.len(),
                items.first().map_or("", Item::resource),
                items.last().map_or("", Item::resource),
            ),
        };
        let mut extra = Map::new();
        extra.insert(
            "items".into(),
            Value::Array(items.iter().map(|i| i.to_json()).collect()),
        );
        let answer = self.call_session("apply", &what, extra)?;
        let Some(Value::Array(results)) = answer.get("results") else {
            return Err(self.malformed("apply", None, "no `results` array"));
        };
        if results.len() > items.len() {
            return Err(self.malformed("apply", None, "more `results` than items"));
        }
        let mut out = Vec::with_capacity(results.len());
        for (item, result) in items.iter().zip(results) {
            let failed = result.get("error").is_some();
            out.push(self.item_result(item, result));
            if failed {
                return Ok(out);
            }
        }
        if out.len() < items.len() {
            return Err(self.malformed(
                "apply",
                None,
                "fewer `results` than items, and the last one is not an error",
            ));
        }
        Ok(out)
    }

    /// One entry of an `apply` response's `results`.
    fn item_result(&self, item: &Item<'_>, result: &Value) -> ItemResult {
        let resource = item.resource();
        if let Some(error) = result.get("error") {
            let what = self.what("apply", Some(resource));
            return Err(answered_error(&what, error, Vec::new()));
        }
        match item {
            Item::Delete { .. } => Ok(None),
            Item::Put { .. } => version_of(result)
                .map(Some)
                .ok_or_else(|| self.malformed("apply", Some(resource), "no string `version`")),
        }
    }

    fn session_slot(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The running session, started (with its `hello`) if there is none.
    fn open_session<'s>(
        &self,
        slot: &'s mut Option<Session>,
    ) -> Result<&'s mut Session, CallError> {
        if slot.is_none() {
            let mut common = Map::new();
            common.insert("environment".into(), self.environment.clone().into());
            common.insert("account".into(), self.account.clone().into());
            common.insert("options".into(), self.options.clone());
            let session = Session::open(&self.spec(None), &common).map_err(|(why, log)| {
                CallError::Failed {
                    message: format!(
                        "{}: {why}; nothing was written (see docs/providers.md, protocol {})",
                        self.what("hello", None),
                        session::PROTOCOL
                    ),
                    log: stderr_tail(&log),
                }
            })?;
            *slot = Some(session);
        }
        slot.as_mut().ok_or_else(|| CallError::Failed {
            message: self.what("hello", None),
            log: Vec::new(),
        })
    }

    /// One request of the session; a broken exchange ends the session.
    fn call_session(
        &self,
        operation: &str,
        what: &str,
        extra: Map<String, Value>,
    ) -> Result<Map<String, Value>, CallError> {
        let mut slot = self.session_slot();
        let session = self.open_session(&mut slot)?;
        // A write carries values that must reach the provider as they are.
        let plain = operation == "apply" || operation == "state-put";
        match session.call(operation, extra, plain) {
            Ok(answer) => Ok(answer),
            Err(session::Failure::Answered(error)) => Err(answered_error(
                what,
                &Value::Object(error),
                stderr_tail(&session.stderr()),
            )),
            Err(session::Failure::Broken(why)) => {
                let log = stderr_tail(&session.stderr());
                *slot = None;
                Err(CallError::Failed {
                    message: format!("{what}: {why}"),
                    log,
                })
            }
        }
    }

    /// A protocol-2 `state-*` request (see `target::store::provider`): its answer, or the
    /// provider's error (`code`, `message`) as [`CallError::Failed`]/[`CallError::Conflict`].
    pub fn state_call(
        &self,
        operation: &str,
        members: Map<String, Value>,
    ) -> Result<Map<String, Value>, CallError> {
        let what = self.what(operation, None);
        self.call_session(operation, &what, members)
    }

    /// The process of this provider, with `stdin` as its input (protocol 1) or none.
    fn spec(&self, stdin: Option<Vec<u8>>) -> Spec<'_> {
        Spec {
            argv: &self.argv,
            cwd: &self.root,
            env: vec![
                ("DEPLOY_ENVIRONMENT".into(), self.environment.clone()),
                (
                    "ENVLOCK_PROVIDER_PROTOCOL".into(),
                    self.protocol.to_string(),
                ),
            ],
            stdin,
            timeout: self.timeout,
            cancel: None,
            stdout_limit: RESPONSE_LIMIT,
        }
    }

    fn what(&self, operation: &str, resource: Option<&str>) -> String {
        match resource {
            Some(r) => format!(
                "provider `{}`, operation `{operation}` of `{r}`",
                self.name()
            ),
            None => format!("provider `{}`, operation `{operation}`", self.name()),
        }
    }

    fn malformed(&self, operation: &str, resource: Option<&str>, why: &str) -> CallError {
        CallError::Failed {
            message: format!(
                "{}: the response is not what protocol {} requires: {why} (see docs/providers.md)",
                self.what(operation, resource),
                self.protocol
            ),
            log: Vec::new(),
        }
    }

    /// Run one operation; the response's members on success.
    fn call(
        &self,
        operation: &str,
        resource: Option<&str>,
        extra: Map<String, Value>,
    ) -> Result<Map<String, Value>, CallError> {
        if self.protocol == session::PROTOCOL {
            return self.call_session(operation, &self.what(operation, resource), extra);
        }
        let mut request = Map::new();
        request.insert("protocol".into(), PROTOCOL.into());
        request.insert("operation".into(), operation.into());
        request.insert("environment".into(), self.environment.clone().into());
        request.insert("account".into(), self.account.clone().into());
        request.insert("options".into(), self.options.clone());
        request.extend(extra);
        // Only an `apply` carries values, and its value is the resource itself (a secret's own
        // apply must carry the secret); every other request is scrubbed like any exit.
        let request = Value::Object(request);
        let stdin = if operation == "apply" {
            serde_json::to_vec(&request)
        } else {
            crate::redact::to_json_vec(&request)
        }
        .unwrap_or_default();
        let what = self.what(operation, resource);
        let spec = self.spec(Some(stdin));
        let outcome = process::run(&spec).map_err(|e| CallError::Failed {
            message: format!("{what}: {e}"),
            log: e.hint().into_iter().collect(),
        })?;
        let log = stderr_tail(&outcome.stderr);
        let fail = |why: String| CallError::Failed {
            message: format!("{what}: {why}"),
            log: log.clone(),
        };
        match outcome.ended {
            Ended::TimedOut(after) => {
                return Err(fail(format!(
                    "no answer within {} (`timeout` of [target]); it was killed",
                    humantime::format_duration(after)
                )));
            }
            Ended::Signalled(_) | Ended::Cancelled => {
                return Err(fail(format!("the provider {}", outcome.describe())));
            }
            Ended::Exited(_) => {}
        }
        if outcome.stdout.len() >= RESPONSE_LIMIT {
            return Err(fail(format!(
                "the response is larger than {} MiB",
                RESPONSE_LIMIT >> 20
            )));
        }
        let parsed: Result<Value, _> = serde_json::from_slice(&outcome.stdout);
        let answer = match parsed {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) if !outcome.success() => {
                return Err(fail(format!(
                    "the provider {} without an error response",
                    outcome.describe()
                )));
            }
            Ok(other) => {
                return Err(fail(format!(
                    "the response is a JSON {}, not one JSON object",
                    json_type(&other)
                )));
            }
            Err(e) => {
                let shown = if outcome.stdout.iter().all(u8::is_ascii_whitespace) {
                    "nothing".to_owned()
                } else {
                    format!("output that is not one JSON object ({e})")
                };
                return Err(fail(format!("the provider printed {shown} on stdout")));
            }
        };
        match answer.get("protocol") {
            Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL) => {}
            Some(other) => {
                return Err(fail(format!(
                    "the provider speaks protocol {other}; this envlock speaks protocol {PROTOCOL} \
                     (see docs/providers.md)"
                )));
            }
            None => {
                return Err(fail(format!(
                    "the response has no `protocol` member (protocol {PROTOCOL} requires `\"protocol\": {PROTOCOL}`)"
                )));
            }
        }
        if let Some(error) = answer.get("error") {
            return Err(answered_error(&what, error, log));
        }
        if !outcome.success() {
            return Err(fail(format!(
                "the provider {} after a response without `error`",
                outcome.describe()
            )));
        }
        Ok(answer)
    }
}

/// The error a provider answered (`{"code", "message"}`) for the call `what`.
fn answered_error(what: &str, error: &Value, log: Vec<String>) -> CallError {
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("failed");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    let message = match code {
        "conflict" => return CallError::Conflict(format!("{what}: {message}")),
        "lock-lost" => return CallError::LockLost(format!("{what}: {message}")),
        "unsupported" => format!("{what}: the provider does not support it: {message}"),
        _ => format!("{what}: {code}: {message}"),
    };
    CallError::Failed { message, log }
}

/// A response's `version`: a string, or a number taken as its decimal text.
fn version_of(v: &Value) -> Option<String> {
    match v.get("version")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The last lines of the provider's log, for a failure's details.
fn stderr_tail(stderr: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let clean: String = l
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(200)
                .collect();
            format!("provider log: {clean}")
        })
        .collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].to_vec()
}
