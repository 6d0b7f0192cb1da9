//! etcd as a [`Backend`]: an item is the key `<prefix><item>`, its version the key's
//! `mod_revision`; an atomic put is one transaction whose compares are the writes' conditions
//! and the fence (the lock key still created by this holder's lease); the lock is a key bound
//! to a lease, so it dies with a holder that stops renewing it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::backend::{Backend, Expect, Item, PutError, Write};
use crate::target::etcd::client::{
    self, Client, EtcdError, cmp_absent, cmp_created, cmp_mod, op_delete, op_put, prefix_end,
};
use crate::target::{Holder, TargetError};

const LOCK: &str = "lock";

/// envlock's state in etcd under one prefix.
#[derive(Debug)]
pub struct EtcdBackend {
    client: Arc<Client>,
    endpoints: String,
    prefix: String,
}

impl EtcdBackend {
    pub fn new(
        endpoints: Vec<String>,
        prefix: String,
        timeout: Duration,
    ) -> Result<Self, TargetError> {
        let shown = endpoints.join(",");
        let client = Client::new(endpoints, timeout, client::Security::default())
            .map_err(|e| TargetError::Refused(format!("cannot set up the etcd client: {e}")))?;
        Ok(EtcdBackend {
            client: Arc::new(client),
            endpoints: shown,
            prefix,
        })
    }

    fn key(&self, item: &str) -> Vec<u8> {
        format!("{}{item}", self.prefix).into_bytes()
    }

    fn remote(&self, what: &str, err: EtcdError) -> TargetError {
        TargetError::Remote(format!(
            "could not {what} in etcd {}: {err}",
            self.endpoints
        ))
    }

    fn item(&self, kv: client::Kv) -> Result<(String, Item), TargetError> {
        let key = String::from_utf8_lossy(&kv.key[self.prefix.len()..]).into_owned();
        let value = String::from_utf8(kv.value).map_err(|_| {
            TargetError::Corrupt(format!("etcd key {}{key} is not UTF-8", self.prefix))
        })?;
        Ok((
            key,
            Item {
                value,
                version: kv.mod_revision.to_string(),
            },
        ))
    }

    /// A lock key bound to no lease: envlock never writes one, and it never expires.
    fn unleased_lock(&self) -> TargetError {
        let key = format!("{}{LOCK}", self.prefix);
        TargetError::Refused(format!(
            "the lock key {key} in etcd {} is bound to no lease, so envlock did not write it and \
             it would never be released; if no deployment of this environment is under way, \
             delete it (`etcdctl del {key}`) and run again; nothing was written",
            self.endpoints
        ))
    }

    /// `lease:create_revision` of a token.
    fn parse_token(token: &str) -> Option<(i64, i64)> {
        let (lease, created) = token.split_once(':')?;
        Some((lease.parse().ok()?, created.parse().ok()?))
    }

    /// Why a transaction's compares failed: the fence, or the first write whose condition
    /// does not hold.
    fn why_not(&self, writes: &[Write], fence: Option<(i64, i64)>) -> PutError {
        if let Some((_, created)) = fence {
            match self.client.get(&self.key(LOCK)) {
                Ok(Some(kv)) if kv.create_revision == created => {}
                Ok(_) => return PutError::LockLost("etcd no longer holds this run's lock".into()),
                Err(e) => return PutError::Failed(self.remote("read the lock", e)),
            }
        }
        for w in writes {
            let now = match self.client.get(&self.key(&w.key)) {
                Ok(kv) => kv.map(|kv| kv.mod_revision.to_string()),
                Err(e) => return PutError::Failed(self.remote("read envlock's state", e)),
            };
            let holds = match &w.expect {
                Expect::Any => true,
                Expect::Absent => now.is_none(),
                Expect::Version(v) => now.as_deref() == Some(v),
            };
            if !holds {
                return PutError::Conflict(format!(
                    "`{}` is {} (expected {})",
                    w.key,
                    now.map_or("absent".into(), |v| format!("at revision {v}")),
                    match &w.expect {
                        Expect::Absent => "absent".to_owned(),
                        Expect::Version(v) => format!("revision {v}"),
                        Expect::Any => "anything".to_owned(),
                    }
                ));
            }
        }
        PutError::Conflict("the transaction's conditions did not hold".into())
    }
}

impl Backend for EtcdBackend {
    fn describe(&self) -> String {
        format!("etcd {} {}", self.endpoints, self.prefix)
    }

    fn max_value(&self) -> usize {
        512 * 1024
    }

    fn max_put(&self) -> usize {
        // etcd's default --max-request-bytes is 1.5 MiB; values travel in base64 (4/3).
        1024 * 1024
    }

    fn get(&self, keys: &[&str]) -> Result<Vec<Option<Item>>, TargetError> {
        keys.iter()
            .map(|k| {
                let kv = self
                    .client
                    .get(&self.key(k))
                    .map_err(|e| self.remote("read envlock's state", e))?;
                kv.map(|kv| self.item(kv).map(|(_, i)| i)).transpose()
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
        let full = self.key(prefix);
        let end = prefix_end(&full);
        let (start, end) = match (after, reverse) {
            (Some(a), false) => {
                let mut s = self.key(a);
                s.push(0);
                (s, end)
            }
            (Some(a), true) => (full, self.key(a)),
            (None, _) => (full, end),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (kvs, _, more) = self
            .client
            .range(&start, Some(&end), limit, reverse)
            .map_err(|e| self.remote("list envlock's state", e))?;
        let items = kvs
            .into_iter()
            .map(|kv| self.item(kv))
            .collect::<Result<_, _>>()?;
        Ok((items, more))
    }

    fn put(
        &self,
        writes: &[Write],
        fence: Option<&str>,
    ) -> Result<BTreeMap<String, String>, PutError> {
        let fence =
            match fence {
                Some(t) => Some(Self::parse_token(t).ok_or_else(|| {
                    PutError::LockLost(format!("`{t}` is not an etcd lock token"))
                })?),
                None => None,
            };
        let mut compares = Vec::new();
        if let Some((_, created)) = fence {
            compares.push(cmp_created(&self.key(LOCK), created));
        }
        let mut ops = Vec::new();
        for w in writes {
            let key = self.key(&w.key);
            match &w.expect {
                Expect::Absent => compares.push(cmp_absent(&key)),
                Expect::Version(v) => compares.push(cmp_mod(&key, v.parse().unwrap_or(-1))),
                Expect::Any => {}
            }
            ops.push(match &w.value {
                Some(v) => op_put(&key, v.as_bytes()),
                None => op_delete(&key),
            });
        }
        let result = self
            .client
            .txn(compares, ops, Vec::new())
            .map_err(|e| PutError::Failed(self.remote("write envlock's state", e)))?;
        if !result.succeeded {
            return Err(self.why_not(writes, fence));
        }
        Ok(writes
            .iter()
            .filter(|w| w.value.is_some())
            .map(|w| (w.key.clone(), result.revision.to_string()))
            .collect())
    }

    fn lock(&self, holder: &Holder, ttl: Duration) -> Result<Result<String, Holder>, TargetError> {
        let value = serde_json::to_vec(holder).unwrap_or_default();
        let taken = self
            .client
            .lease_lock(&self.key(LOCK), &value, ttl.as_secs().max(1) as i64)
            .map_err(|e| self.remote("take the deployment lock", e))?;
        match taken {
            Ok((lease, created)) => Ok(Ok(format!("{lease}:{created}"))),
            // A lock key bound to no lease never goes away by itself.
            Err((_, 0)) => Err(self.unleased_lock()),
            Err((other, _)) => Ok(Err(
                serde_json::from_slice(&other).unwrap_or_else(|_| Holder::unknown())
            )),
        }
    }

    fn renew(&self, token: &str, _ttl: Duration) -> Result<bool, TargetError> {
        let Some((lease, _)) = Self::parse_token(token) else {
            return Ok(false);
        };
        let left = self
            .client
            .lease_keepalive(lease)
            .map_err(|e| self.remote("renew the deployment lock", e))?;
        Ok(left > 0)
    }

    fn holds(&self, token: &str, _ttl: Duration) -> Result<bool, TargetError> {
        let Some((_, created)) = Self::parse_token(token) else {
            return Ok(false);
        };
        let kv = self
            .client
            .get(&self.key(LOCK))
            .map_err(|e| self.remote("read the deployment lock", e))?;
        Ok(kv.is_some_and(|kv| kv.create_revision == created))
    }

    fn unlock(&self, token: &str) -> Result<(), TargetError> {
        let Some((lease, _)) = Self::parse_token(token) else {
            return Ok(());
        };
        self.client
            .lease_revoke(lease)
            .map_err(|e| self.remote("release the deployment lock", e))
    }

    fn holder(&self) -> Result<Option<Holder>, TargetError> {
        let kv = self
            .client
            .get(&self.key(LOCK))
            .map_err(|e| self.remote("read the deployment lock", e))?;
        Ok(kv.map(|kv| {
            serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_else(Holder::unknown)
        }))
    }
}
