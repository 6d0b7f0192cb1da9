//! A small blocking client for etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//! `/v3/auth/authenticate`), over `ureq`.
//!
//! Why the gateway and not the `etcd-client` crate: that crate needs `protoc` at build time, and
//! the project must build on a bare machine with `cargo` alone. The gateway is part of every
//! etcd v3 server and is documented (keys and values are base64, 64-bit integers are strings).
//!
//! Invariants: every request names the endpoint it went to in its errors; a request that fails
//! on one endpoint (refused, timed out, no leader) is retried on the next, round robin, until
//! the configured timeout has passed, so a cluster that loses its leader is waited for instead
//! of failing the deployment. Retrying a transaction is safe because every transaction envlock
//! sends is guarded by compares: a retry of one that did commit fails its compares, and the
//! caller checks what is live (see `EtcdTarget::apply`).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// How a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (refused, timed out, not etcd); one line per endpoint.
    #[error("no etcd endpoint answered: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// etcd answered with an error for this request.
    #[error("etcd at {endpoint} refused the request: {message}")]
    Server { endpoint: String, message: String },
}

impl EtcdError {
    /// etcd's message, when the server answered.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            EtcdError::Server { message, .. } => Some(message),
            EtcdError::Unreachable(_) => None,
        }
    }
}

/// TLS and authentication settings of a client.
#[derive(Debug, Default, Clone)]
pub struct Security {
    /// PEM bytes of the CA that signed the servers' certificates.
    pub ca: Option<Vec<u8>>,
    /// PEM bytes of the client certificate chain and its key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// User name and password for etcd's authentication.
    pub credentials: Option<(String, String)>,
}

/// One key as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// One range to read: `(key, range_end, keys_only)`.
pub type RangeSpec<'a> = (&'a [u8], Option<&'a [u8]>, bool);

/// The outcome of a transaction.
#[derive(Debug, Clone)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The responses of the branch that ran, as the gateway returned them.
    pub responses: Vec<Value>,
}

/// A client bound to a cluster's endpoints.
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    timeout: Duration,
    credentials: Option<(String, String)>,
    token: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Base64 of bytes, as the gateway wants keys and values.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The bytes of a base64 string (`None` when it is not base64).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// The end of the range of every key that starts with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes(v: Option<&Value>) -> Vec<u8> {
    v.and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// The keys of a range response (`kvs`).
pub fn kvs(response: &Value) -> Vec<Kv> {
    response
        .get("kvs")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|kv| Kv {
                    key: bytes(kv.get("key")),
                    value: bytes(kv.get("value")),
                    create_revision: int(kv.get("create_revision")),
                    mod_revision: int(kv.get("mod_revision")),
                    lease: int(kv.get("lease")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A compare: `key`'s `mod_revision` equals `rev` (0 for "the key does not exist" is better
/// written with [`cmp_absent`]).
pub fn cmp_mod(key: &[u8], rev: i64) -> Value {
    json!({"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
}

/// A compare: `key` does not exist (`create_revision == 0`).
pub fn cmp_absent(key: &[u8]) -> Value {
    json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
}

/// A compare: `key` was created at revision `rev` (the same incarnation of the key).
pub fn cmp_created(key: &[u8], rev: i64) -> Value {
    json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": rev.to_string()})
}

/// A compare: `key` holds exactly `value`.
pub fn cmp_value(key: &[u8], value: &[u8]) -> Value {
    json!({"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)})
}

/// A compare: no key in `[start, end)` was modified after revision `rev`.
pub fn cmp_range_unmodified_since(start: &[u8], end: &[u8], rev: i64) -> Value {
    json!({"key": b64(start), "range_end": b64(end), "target": "MOD", "result": "LESS",
           "mod_revision": (rev + 1).to_string()})
}

pub fn op_put(key: &[u8], value: &[u8]) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

pub fn op_put_leased(key: &[u8], value: &[u8], lease: i64) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value), "lease": lease.to_string()}})
}

pub fn op_delete(key: &[u8]) -> Value {
    json!({"request_delete_range": {"key": b64(key)}})
}

pub fn op_get(key: &[u8]) -> Value {
    json!({"request_range": {"key": b64(key)}})
}

/// Why one attempt on one endpoint failed, and whether another endpoint may do better.
enum Attempt {
    /// Try the next endpoint (transport failure, no leader, not etcd).
    Retry(String),
    /// etcd answered with an error that another endpoint would repeat.
    Fatal(String),
    /// Something that is not etcd answered: never ask this endpoint again.
    NotEtcd(String),
}

/// Messages of etcd errors that mean "ask again, maybe elsewhere".
const TRANSIENT: &[&str] = &[
    "no leader",
    "leader changed",
    "request timed out",
    "too many requests",
    "not capable",
    "stopped",
    "unavailable",
    "timed out",
];

impl Client {
    /// A client for `endpoints` (URLs like `http://10.0.0.1:2379`); every request gives up
    /// after `timeout` across all endpoints.
    pub fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        security: Security,
    ) -> Result<Client, String> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &security.ca {
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err("the `ca` file holds no PEM certificate".into());
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let Some((cert, key)) = &security.identity {
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(cert)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err("the `cert` file holds no PEM certificate".into());
            }
            let key = PrivateKey::from_pem(key)
                .map_err(|e| format!("the `key` file holds no PEM private key: {e}"))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(2))))
            .tls_config(tls.build())
            .build();
        Ok(Client {
            agent: config.into(),
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            timeout,
            credentials: security.credentials,
            token: std::sync::Mutex::new(None),
        })
    }

    /// The endpoints, as configured.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn post_once(&self, endpoint: &str, path: &str, body: &str) -> Result<Value, Attempt> {
        let url = format!("{endpoint}{path}");
        let mut request = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        let token = self.token.lock().map(|t| t.clone()).unwrap_or_default();
        if let Some(token) = &token {
            request = request.header("authorization", token);
        }
        let mut response = request.send(body).map_err(|e| {
            Attempt::Retry(match e {
                ureq::Error::Timeout(_) => format!("{endpoint}: timed out"),
                ureq::Error::ConnectionFailed | ureq::Error::Io(_) => {
                    format!("{endpoint}: cannot connect ({e})")
                }
                ureq::Error::HostNotFound => format!("{endpoint}: host not found"),
                other => format!("{endpoint}: {other}"),
            })
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Attempt::Retry(format!("{endpoint}: reading the answer failed: {e}")))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let not_etcd = || {
            let first: String = text.chars().take(80).collect();
            Attempt::NotEtcd(format!(
                "{endpoint} is not an etcd v3 server (HTTP {status} to POST {path}: {:?})",
                first.trim()
            ))
        };
        let Some(value) = parsed else {
            return Err(not_etcd());
        };
        if status == 200 {
            if value.get("header").is_some() || value.get("result").is_some() {
                return Ok(value);
            }
            return Err(not_etcd());
        }
        let message = value
            .get("message")
            .or_else(|| value.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(message) = message else {
            return Err(not_etcd());
        };
        if TRANSIENT.iter().any(|t| message.contains(t)) {
            Err(Attempt::Retry(format!("{endpoint}: {message}")))
        } else {
            Err(Attempt::Fatal(message))
        }
    }

    /// POST `body` to `path`, trying every endpoint in turn until one answers or the timeout
    /// has passed.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let text = body.to_string();
        let deadline = Instant::now() + self.timeout;
        let mut failures: Vec<String> = Vec::new();
        let mut pause = Duration::from_millis(20);
        let mut authenticated = false;
        let mut dead = vec![false; self.endpoints.len()];
        loop {
            for (i, endpoint) in self.endpoints.iter().enumerate() {
                if dead[i] {
                    continue;
                }
                if self.credentials.is_some()
                    && self.token.lock().map(|t| t.is_none()).unwrap_or(true)
                {
                    match self.authenticate(endpoint) {
                        Ok(()) => {}
                        Err(Attempt::Retry(why)) => {
                            failures.push(why);
                            continue;
                        }
                        Err(Attempt::NotEtcd(why)) => {
                            dead[i] = true;
                            failures.push(why);
                            continue;
                        }
                        Err(Attempt::Fatal(message)) => {
                            return Err(EtcdError::Server {
                                endpoint: endpoint.clone(),
                                message: format!("authentication failed: {message}"),
                            });
                        }
                    }
                }
                match self.post_once(endpoint, path, &text) {
                    Ok(v) => return Ok(v),
                    Err(Attempt::Retry(why)) => failures.push(why),
                    Err(Attempt::NotEtcd(why)) => {
                        dead[i] = true;
                        failures.push(why);
                    }
                    Err(Attempt::Fatal(message)) => {
                        let expired = message.contains("invalid auth token")
                            || message.contains("user name is empty");
                        if expired && self.credentials.is_some() && !authenticated {
                            // Tokens expire; authenticate once more and retry.
                            authenticated = true;
                            if let Ok(mut t) = self.token.lock() {
                                *t = None;
                            }
                            continue;
                        }
                        return Err(EtcdError::Server {
                            endpoint: endpoint.clone(),
                            message,
                        });
                    }
                }
            }
            if dead.iter().all(|d| *d) || Instant::now() + pause >= deadline {
                failures.dedup();
                let keep = failures.len().saturating_sub(self.endpoints.len());
                return Err(EtcdError::Unreachable(failures.split_off(keep)));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn authenticate(&self, endpoint: &str) -> Result<(), Attempt> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        let body = json!({"name": name, "password": password}).to_string();
        let answer = self.post_once(endpoint, "/v3/auth/authenticate", &body)?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Attempt::Fatal("etcd returned no token".into()))?;
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.to_owned());
        }
        Ok(())
    }

    /// The keys in `[key, range_end)` (just `key` without `range_end`), and the store's
    /// revision the read saw. `limit` 0 is no limit; `descending` sorts by key, last first.
    pub fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        limit: i64,
        descending: bool,
    ) -> Result<(Vec<Kv>, i64, bool), EtcdError> {
        let mut body = json!({"key": b64(key)});
        if let Some(end) = range_end {
            body["range_end"] = b64(end).into();
        }
        if limit > 0 {
            body["limit"] = limit.to_string().into();
        }
        if descending {
            body["sort_order"] = "DESCEND".into();
            body["sort_target"] = "KEY".into();
        }
        let answer = self.call("/v3/kv/range", &body)?;
        let revision = int(answer.get("header").and_then(|h| h.get("revision")));
        let more = answer.get("more").and_then(Value::as_bool).unwrap_or(false);
        Ok((kvs(&answer), revision, more))
    }

    /// Every key that starts with `prefix`, read in pages at one revision.
    pub fn range_prefix(&self, prefix: &[u8]) -> Result<(Vec<Kv>, i64), EtcdError> {
        const PAGE: i64 = 5000;
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.to_vec();
        let mut at: Option<i64> = None;
        loop {
            let mut body =
                json!({"key": b64(&start), "range_end": b64(&end), "limit": PAGE.to_string()});
            if let Some(rev) = at {
                body["revision"] = rev.to_string().into();
            }
            let answer = self.call("/v3/kv/range", &body)?;
            let revision = int(answer.get("header").and_then(|h| h.get("revision")));
            let at_rev = *at.get_or_insert(revision);
            let page = kvs(&answer);
            let more = answer.get("more").and_then(Value::as_bool).unwrap_or(false);
            let next = page.last().map(|kv| {
                let mut k = kv.key.clone();
                k.push(0);
                k
            });
            out.extend(page);
            match next {
                Some(k) if more => start = k,
                _ => return Ok((out, at_rev)),
            }
        }
    }

    /// Several ranges read at one revision, in one request (a transaction without compares):
    /// `(key, range_end, keys_only)` each; the keys of each, and the revision.
    pub fn read_many(&self, ranges: &[RangeSpec<'_>]) -> Result<(Vec<Vec<Kv>>, i64), EtcdError> {
        let ops: Vec<Value> = ranges
            .iter()
            .map(|(key, end, keys_only)| {
                let mut r = json!({"key": b64(key)});
                if let Some(end) = end {
                    r["range_end"] = b64(end).into();
                }
                if *keys_only {
                    r["keys_only"] = true.into();
                }
                json!({ "request_range": r })
            })
            .collect();
        let result = self.txn(vec![], ops, vec![])?;
        let out = result
            .responses
            .iter()
            .map(|r| r.get("response_range").map(kvs).unwrap_or_default())
            .collect();
        Ok((out, result.revision))
    }

    /// At one revision: the key `single` (if it exists), how many keys `[start, end)` holds,
    /// and the highest `mod_revision` among them (0 when there are none). Two ranges in one
    /// request; no value under `start` is read.
    pub fn key_and_range_summary(
        &self,
        single: &[u8],
        start: &[u8],
        end: &[u8],
    ) -> Result<(Option<Kv>, i64, i64), EtcdError> {
        let newest = json!({
            "key": b64(start),
            "range_end": b64(end),
            "limit": "1",
            "sort_order": "DESCEND",
            "sort_target": "MOD",
            "keys_only": true,
        });
        let ops = vec![
            json!({ "request_range": { "key": b64(single) } }),
            json!({ "request_range": newest }),
        ];
        let result = self.txn(vec![], ops, vec![])?;
        let range = |i: usize| {
            result
                .responses
                .get(i)
                .and_then(|r| r.get("response_range"))
        };
        let one = range(0).map(kvs).unwrap_or_default().into_iter().next();
        let count = int(range(1).and_then(|r| r.get("count")));
        let max = range(1)
            .map(kvs)
            .unwrap_or_default()
            .first()
            .map_or(0, |kv| kv.mod_revision);
        Ok((one, count, max))
    }

    /// How many keys `[start, end)` holds (etcd counts its index; no value is read).
    pub fn count(&self, start: &[u8], end: &[u8]) -> Result<i64, EtcdError> {
        let body = json!({"key": b64(start), "range_end": b64(end), "count_only": true});
        let answer = self.call("/v3/kv/range", &body)?;
        Ok(int(answer.get("count")))
    }

    /// One key, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<Kv>, EtcdError> {
        Ok(self.range(key, None, 0, false)?.0.into_iter().next())
    }

    /// A transaction: if every compare holds, run `success`, else `failure`.
    pub fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<TxnResult, EtcdError> {
        let answer = self.call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success, "failure": failure}),
        )?;
        Ok(TxnResult {
            succeeded: answer
                .get("succeeded")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            revision: int(answer.get("header").and_then(|h| h.get("revision"))),
            responses: answer
                .get("responses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Take the lock `key` for `ttl` seconds: a key bound to a new lease, written only if
    /// absent. `Ok((lease, create_revision))`, or `Err((value, lease))`: the value of the key
    /// someone else holds and its lease (0: none); the new lease is revoked again.
    #[allow(clippy::type_complexity)]
    pub fn lease_lock(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: i64,
    ) -> Result<Result<(i64, i64), (Vec<u8>, i64)>, EtcdError> {
        let lease = self.lease_grant(ttl)?;
        let result = self.txn(
            vec![cmp_absent(key)],
            vec![op_put_leased(key, value, lease), op_get(key)],
            vec![op_get(key)],
        )?;
        let kv = result
            .responses
            .iter()
            .find_map(|r| r.get("response_range"))
            .map(kvs)
            .and_then(|k| k.into_iter().next());
        if !result.succeeded {
            let _ = self.lease_revoke(lease);
            return Ok(Err(kv.map(|kv| (kv.value, kv.lease)).unwrap_or_default()));
        }
        Ok(Ok((
            lease,
            kv.map_or(result.revision, |kv| kv.create_revision),
        )))
    }

    /// A new lease of `ttl` seconds; its id.
    pub fn lease_grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        Ok(int(answer.get("ID")))
    }

    /// Renew a lease; its remaining TTL in seconds (0: the lease has expired).
    pub fn lease_keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/lease/keepalive", &json!({"ID": id.to_string()}))?;
        Ok(int(answer.get("result").and_then(|r| r.get("TTL"))))
    }

    /// Revoke a lease: every key bound to it is deleted.
    pub fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self.call("/v3/lease/revoke", &json!({"ID": id.to_string()})) {
            Ok(_) => Ok(()),
            Err(e) if e.server_message().is_some_and(|m| m.contains("not found")) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/asr/prod/"), b"/asr/prod0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn kvs_decode_base64_and_string_integers() {
        let v = json!({"kvs": [{"key": b64(b"k"), "value": b64(b"v"), "create_revision": "3",
                                "mod_revision": "5", "lease": "7"}]});
        assert_eq!(
            kvs(&v),
            vec![Kv {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                create_revision: 3,
                mod_revision: 5,
                lease: 7
            }]
        );
    }
}
