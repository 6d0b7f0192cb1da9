//! A protocol-2 provider as a [`Backend`]: envlock's state kept next to the resources, in the
//! same account (`[target.state] kind = "provider"`; docs/providers.md, "state operations").
//! Every call goes through the provider's one session; the provider does the atomicity
//! (`state-put` is all or nothing, conditional, fenced by the lock's token).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::backend::{Backend, Expect, Item, PutError, Write};
use crate::target::exec::provider::{CallError, Provider};
use crate::target::{Holder, TargetError};

/// The shortest lease a provider-kept lock may have.
const MIN_TTL: Duration = Duration::from_secs(2);

/// `ttl` in whole seconds, rounded up (a lease is never shorter than asked).
fn whole_seconds(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// envlock's state kept by the provider.
#[derive(Debug)]
pub struct ProviderBackend {
    provider: Arc<Provider>,
    /// A second session of the same provider for the lock alone, so that renewing the lease
    /// never waits behind a long request of the deployment (a batch of writes).
    lock_line: Provider,
}

fn failed(err: CallError) -> TargetError {
    match err {
        CallError::Conflict(m) | CallError::LockLost(m) => TargetError::Refused(m),
        CallError::Failed { message, log } => TargetError::Provider { message, log },
    }
}

fn members(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl ProviderBackend {
    /// The backend of `provider`; refused before anything is written when the provider does
    /// not keep state (its `hello` did not say `"state": true`).
    pub fn new(provider: Arc<Provider>) -> Result<Self, TargetError> {
        let caps = provider.capabilities().map_err(failed)?;
        if caps.and_then(|c| c.state).is_none() {
            return Err(TargetError::Refused(format!(
                "the provider `{}` does not keep envlock's state (its `hello` does not announce \
                 `\"state\": true`), but `[target.state] kind = \"provider\"` asks it to; nothing \
                 was written",
                provider.name()
            )));
        }
        let lock_line = Provider {
            argv: provider.argv.clone(),
            root: provider.root.clone(),
            options: provider.options.clone(),
            environment: provider.environment.clone(),
            account: provider.account.clone(),
            timeout: provider.timeout,
            protocol: provider.protocol,
            session: std::sync::Mutex::new(None),
        };
        Ok(ProviderBackend {
            provider,
            lock_line,
        })
    }

    fn call(&self, operation: &str, body: Value) -> Result<Map<String, Value>, CallError> {
        self.provider.state_call(operation, members(body))
    }

    /// A lock operation, on the lock's own session.
    fn lock_call(&self, operation: &str, body: Value) -> Result<Map<String, Value>, CallError> {
        self.lock_line.state_call(operation, members(body))
    }

    fn malformed(&self, operation: &str, why: &str) -> TargetError {
        TargetError::Provider {
            message: format!(
                "provider `{}`, operation `{operation}`: {why} (see docs/providers.md)",
                self.provider.name()
            ),
            log: Vec::new(),
        }
    }

    fn item(&self, operation: &str, v: &Value) -> Result<Item, TargetError> {
        match (v.get("value"), v.get("version")) {
            (Some(Value::String(value)), Some(Value::String(version))) => Ok(Item {
                value: value.clone(),
                version: version.clone(),
            }),
            _ => Err(self.malformed(operation, "an item without a string `value` and `version`")),
        }
    }

    /// The lease is renewed every third of it, each renewal one request on the lock's own
    /// session: a lease shorter than [`MIN_TTL`] would lapse on one slow answer.
    fn check_ttl(&self, ttl: Duration) -> Result<(), TargetError> {
        if ttl >= MIN_TTL {
            return Ok(());
        }
        Err(TargetError::Refused(format!(
            "`lock_ttl` = {ttl:?} in [target.state] of environments/{}.toml is too short for \
             the provider `{}`: its lease is renewed every third of it, one request each, and \
             would lapse on one slow answer; make `lock_ttl` at least {MIN_TTL:?}; nothing was \
             written",
            self.provider.environment,
            self.provider.name(),
        )))
    }

    fn holder_of(v: Option<&Value>) -> Option<Holder> {
        match v {
            None | Some(Value::Null) => None,
            Some(h) => {
                Some(serde_json::from_value(h.clone()).unwrap_or_else(|_| Holder::unknown()))
            }
        }
    }
}

impl Backend for ProviderBackend {
    fn describe(&self) -> String {
        format!(
            "provider {} {}",
            self.provider.name(),
            self.provider.options
        )
    }

    fn max_value(&self) -> usize {
        self.provider
            .capabilities()
            .ok()
            .flatten()
            .and_then(|c| c.state)
            .unwrap_or(64 * 1024)
    }

    fn max_put(&self) -> usize {
        // A DynamoDB transaction carries at most 4 MB.
        3 * 1024 * 1024
    }

    fn get(&self, keys: &[&str]) -> Result<Vec<Option<Item>>, TargetError> {
        let op = "state-get";
        let answer = self.call(op, json!({ "keys": keys })).map_err(failed)?;
        let Some(Value::Object(items)) = answer.get("items") else {
            return Err(self.malformed(op, "no `items` object"));
        };
        keys.iter()
            .map(|k| match items.get(*k) {
                None => Err(self.malformed(op, &format!("no answer for `{k}`"))),
                Some(Value::Null) => Ok(None),
                Some(v) => self.item(op, v).map(Some),
            })
            .collect()
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<(String, Item)>, bool), TargetError> {
        let op = "state-list";
        let body = json!({ "prefix": prefix, "after": after, "limit": limit, "reverse": reverse });
        let answer = self.call(op, body).map_err(failed)?;
        let Some(Value::Array(items)) = answer.get("items") else {
            return Err(self.malformed(op, "no `items` array"));
        };
        if items.len() > limit {
            return Err(self.malformed(op, "more items than `limit`"));
        }
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            let Some(Value::String(key)) = v.get("key") else {
                return Err(self.malformed(op, "an item without a string `key`"));
            };
            if !key.starts_with(prefix) {
                return Err(self.malformed(op, &format!("`{key}` does not start with `{prefix}`")));
            }
            out.push((key.clone(), self.item(op, v)?));
        }
        let more = answer.get("more").and_then(Value::as_bool).unwrap_or(false);
        Ok((out, more))
    }

    fn put(
        &self,
        writes: &[Write],
        fence: Option<&str>,
    ) -> Result<BTreeMap<String, String>, PutError> {
        let op = "state-put";
        let writes_json: Vec<Value> = writes
            .iter()
            .map(|w| {
                let expect = match &w.expect {
                    Expect::Absent => Value::Null,
                    Expect::Version(v) => v.clone().into(),
                    Expect::Any => "*".into(),
                };
                json!({ "key": w.key, "value": w.value, "expect": expect })
            })
            .collect();
        let answer = match self.call(op, json!({ "writes": writes_json, "lock": fence })) {
            Ok(a) => a,
            Err(CallError::Conflict(m)) => return Err(PutError::Conflict(m)),
            Err(CallError::LockLost(m)) => return Err(PutError::LockLost(m)),
            Err(e) => return Err(PutError::Failed(failed(e))),
        };
        let versions = match answer.get("versions") {
            Some(Value::Object(v)) => v,
            _ => return Err(PutError::Failed(self.malformed(op, "no `versions` object"))),
        };
        Ok(versions
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect())
    }

    fn lock(&self, holder: &Holder, ttl: Duration) -> Result<Result<String, Holder>, TargetError> {
        self.check_ttl(ttl)?;
        let op = "state-lock";
        let answer = self
            .lock_call(op, json!({ "holder": holder, "ttl": whole_seconds(ttl) }))
            .map_err(failed)?;
        if let Some(Value::String(token)) = answer.get("token") {
            return Ok(Ok(token.clone()));
        }
        match Self::holder_of(answer.get("holder")) {
            Some(h) => Ok(Err(h)),
            None => Err(self.malformed(op, "neither a `token` nor a `holder`")),
        }
    }

    fn renew(&self, token: &str, ttl: Duration) -> Result<bool, TargetError> {
        match self.lock_call(
            "state-renew",
            json!({ "token": token, "ttl": whole_seconds(ttl) }),
        ) {
            Ok(_) => Ok(true),
            Err(CallError::LockLost(_)) => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    fn unlock(&self, token: &str) -> Result<(), TargetError> {
        self.lock_call("state-unlock", json!({ "token": token }))
            .map(drop)
            .map_err(failed)
    }

    fn holder(&self) -> Result<Option<Holder>, TargetError> {
        let answer = self.lock_call("state-holder", json!({})).map_err(failed)?;
        Ok(Self::holder_of(answer.get("holder")))
    }
}
