//! The `etcd` target: resources as keys of a replicated store, applied in one transaction.
//!
//! Layout, for `prefix = "/asr/prod/"` (the state root is the prefix with its last `/`
//! replaced by `.envlock/`, so a service watching the prefix never sees envlock's keys):
//!
//! ```text
//! /asr/prod/<resource>                        the resource as compact JSON (what services read)
//! /asr/prod.envlock/stamp                     who the store's prefix belongs to (JSON)
//! /asr/prod.envlock/lock                      the deployment lock: the holder, bound to a lease
//! /asr/prod.envlock/current                   the live generation's id (decimal)
//! /asr/prod.envlock/gen/<id, 20 digits>       a generation's metadata and failure mark (JSON)
//! /asr/prod.envlock/genres/<id, 20 digits>    a generation's resources, exactly as written
//! /asr/prod.envlock/journal                   the crash journal of an unfinished deployment
//! /asr/prod.envlock/secret-key                the HMAC key secrets are compared with (hex)
//! /asr/prod.envlock/log/<seq, 20 digits>      one deployment-log record per key
//! /asr/prod.envlock/log-checkpoint            how many log records there were after this
//!                                             target's last append (written with it)
//! ```
//!
//! Invariants: an apply or a rollback is one transaction whose compares assert the stamp, the
//! lock's lease, the `mod_revision` of every key the plan read (absent keys:
//! `create_revision == 0`) and that no key under the prefix changed since the read; if any
//! compare fails nothing is written and the deploy is refused as stale, naming the key that
//! moved. A change that does not fit in one transaction (etcd's `--max-txn-ops`,
//! `--max-request-bytes`) is refused, never split. The lock is a key bound to a lease kept
//! alive by a thread while the deployment runs, so a deployer that dies releases it when the
//! lease's TTL runs out.
//!
//! Resources cross the [`Target`] trait as the canonical TOML every target diffs in; this
//! module stores them as compact JSON and reads them back to the same TOML (see
//! [`resource_toml_from_json`]).

pub mod client;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use self::client::{
    Client, EtcdError, Kv, Security, cmp_absent, cmp_created, cmp_mod, cmp_range_unmodified_since,
    cmp_value, op_delete, op_put, prefix_end,
};
use super::{
    Drift, GenerationId, GenerationInfo, Holder, Live, LockGuard, LogTail, Pruned, Stamp,
    StampState, StateItem, Target, TargetError,
};

/// How an `etcd` target is reached and bounded (from `[target]`).
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub timeout: Duration,
    pub lock_ttl: Duration,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// Generations kept for rollback (the live one and the newest others).
    pub keep: usize,
    pub security: Security,
}

/// The key (under the state root) of the log's checkpoint (see `log_untouched`).
const LOG_CHECKPOINT: &str = "log-checkpoint";

/// etcd's defaults for `--max-txn-ops` and `--max-request-bytes`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The state root of a prefix: `/asr/prod/` -> `/asr/prod.envlock/`.
pub fn state_root(prefix: &str) -> String {
    format!("{}.envlock/", prefix.trim_end_matches('/'))
}

/// What `live` read, for the apply's compares.
#[derive(Debug, Clone, Default)]
struct ReadSet {
    /// The store's revision of the read.
    revision: i64,
    /// Every key under the prefix and its `mod_revision`.
    keys: BTreeMap<Vec<u8>, i64>,
    /// The exact stored values, to know which keys an apply must write.
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `current`'s `mod_revision` (0: absent).
    current_rev: i64,
    /// The live generation the read saw.
    current_id: Option<GenerationId>,
}

/// Keys under the prefix by key, the store's revision, and `current` (id, `mod_revision`).
type Snapshot = (BTreeMap<Vec<u8>, Kv>, i64, Option<(GenerationId, i64)>);

/// The lock this process holds: its lease and the lock key's `create_revision`.
#[derive(Debug, Clone, Copy)]
struct Held {
    created: i64,
}

/// What the last apply wrote, so that a rollback right after it is guarded by those revisions.
#[derive(Debug, Clone)]
struct Written {
    revision: i64,
    generation: GenerationId,
    keys: Vec<Vec<u8>>,
}

/// (`Debug` shows where it is, never its cached reads.)
pub struct EtcdTarget {
    client: Arc<Client>,
    settings: EtcdSettings,
    prefix: Vec<u8>,
    root: Vec<u8>,
    read: Mutex<Option<ReadSet>>,
    held: Arc<Mutex<Option<Held>>>,
    stamp_seen: Mutex<Option<Vec<u8>>>,
    written: Mutex<Option<Written>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A resource's canonical TOML (as rendered for every target) as the compact JSON stored.
pub fn resource_json(toml_text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(toml_text).map_err(|e| format!("not UTF-8: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    serde_json::to_vec(&table).map_err(|e| e.to_string())
}

fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => {
            toml::Value::Array(items.iter().map(json_to_toml).collect::<Option<_>>()?)
        }
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// A JSON object as the canonical TOML text a plan diffs; `None` when it is not an object of
/// values TOML can hold (a `null`, say).
pub fn toml_text_of_json(v: &Value) -> Option<String> {
    match json_to_toml(v)? {
        toml::Value::Table(t) => toml::to_string(&t).ok(),
        _ => None,
    }
}

/// A stored value as the TOML a plan compares with the rendered resource. A value that is not
/// the compact JSON envlock writes (edited by hand or by another tool) still reads as TOML when
/// it can, with a comment line, so that the plan shows a change and the apply rewrites it.
pub fn resource_toml_from_json(stored: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(stored).ok();
    match parsed.as_ref().and_then(toml_text_of_json) {
        Some(text) => {
            let canonical = resource_json(text.as_bytes()).ok();
            if canonical.as_deref() == Some(stored) {
                text.into_bytes()
            } else {
                format!("# stored as JSON in another form; the next apply rewrites it\n{text}")
                    .into_bytes()
            }
        }
        None => {
            let mut out = b"# not a JSON object as envlock writes it:\n# ".to_vec();
            out.extend(
                String::from_utf8_lossy(stored)
                    .replace('\n', "\n# ")
                    .bytes(),
            );
            out.push(b'\n');
            out
        }
    }
}

fn gen_key_suffix(id: GenerationId) -> String {
    format!("{id:020}")
}

impl std::fmt::Debug for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTarget")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdTarget {
    pub fn new(settings: EtcdSettings) -> Result<Self, TargetError> {
        let client = Client::new(
            settings.endpoints.clone(),
            settings.timeout,
            settings.security.clone(),
        )
        .map_err(|e| TargetError::Refused(format!("cannot set up the etcd client: {e}")))?;
        Ok(EtcdTarget {
            client: Arc::new(client),
            prefix: settings.prefix.as_bytes().to_vec(),
            root: state_root(&settings.prefix).into_bytes(),
            settings,
            read: Mutex::new(None),
            held: Arc::new(Mutex::new(None)),
            stamp_seen: Mutex::new(None),
            written: Mutex::new(None),
        })
    }

    fn key(&self, suffix: &str) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(suffix.as_bytes());
        k
    }

    fn show(&self, key: &[u8]) -> String {
        String::from_utf8_lossy(key).into_owned()
    }

    fn remote(&self, what: &str, err: EtcdError) -> TargetError {
        TargetError::Remote(format!("could not {what}: {err}"))
    }

    fn resource_name(&self, key: &[u8]) -> String {
        String::from_utf8_lossy(&key[self.prefix.len()..]).into_owned()
    }

    fn resource_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(name.as_bytes());
        k
    }

    fn get(&self, key: &[u8], what: &str) -> Result<Option<Kv>, TargetError> {
        self.client.get(key).map_err(|e| self.remote(what, e))
    }

    fn read_json(&self, key: &[u8], what: &str) -> Result<Option<(Value, Kv)>, TargetError> {
        let Some(kv) = self.get(key, what)? else {
            return Ok(None);
        };
        let v = serde_json::from_slice(&kv.value).map_err(|e| {
            TargetError::Corrupt(format!("{} is not valid JSON: {e}", self.show(key)))
        })?;
        Ok(Some((v, kv)))
    }

    fn current(&self) -> Result<Option<(GenerationId, i64)>, TargetError> {
        let key = self.key("current");
        let Some(kv) = self.get(&key, "read the live generation")? else {
            return Ok(None);
        };
        Ok(Some((self.parse_current(&kv.value)?, kv.mod_revision)))
    }

    /// The keys under the prefix, the store's revision, and `current` (id, `mod_revision`),
    /// read at one revision in one request.
    fn snapshot(&self) -> Result<Snapshot, TargetError> {
        let ckey = self.key("current");
        let (mut reads, rev) = self
            .client
            .read_many(&[
                (&self.prefix, Some(&prefix_end(&self.prefix)), false),
                (&ckey, None, false),
            ])
            .map_err(|e| self.remote("read the resources", e))?;
        let current = match reads.pop().and_then(|kvs| kvs.into_iter().next()) {
            Some(kv) => Some((self.parse_current(&kv.value)?, kv.mod_revision)),
            None => None,
        };
        let now = reads
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        Ok((now, rev, current))
    }

    fn parse_current(&self, value: &[u8]) -> Result<GenerationId, TargetError> {
        let text = String::from_utf8_lossy(value);
        text.trim().parse::<GenerationId>().map_err(|_| {
            TargetError::Corrupt(format!(
                "{} holds {text:?}, not a generation number",
                self.show(&self.key("current"))
            ))
        })
    }

    /// The compares every write carries: the stamp as last read or written, and this
    /// process's lock.
    fn guards(&self) -> Result<Vec<Value>, TargetError> {
        let mut out = Vec::new();
        if let Some(stamp) = locked(&self.stamp_seen).clone() {
            out.push(cmp_value(&self.key("stamp"), &stamp));
        }
        match *locked(&self.held) {
            Some(h) => out.push(cmp_created(&self.key("lock"), h.created)),
            None => {
                return Err(TargetError::Refused(
                    "internal: an etcd write without the deployment lock".into(),
                ));
            }
        }
        Ok(out)
    }

    /// Why guards failed: the stamp changed or the lock lapsed.
    /// `ops` in one transaction guarded by the stamp and this process's lock.
    fn guarded(&self, what: &str, ops: Vec<Value>) -> Result<(), TargetError> {
        let r = self.send(what, self.guards()?, ops)?;
        if !r.succeeded {
            return Err(TargetError::Refused(
                self.guard_problem()?
                    .unwrap_or_else(|| format!("could not {what}")),
            ));
        }
        Ok(())
    }

    fn guard_problem(&self) -> Result<Option<String>, TargetError> {
        if let Some(h) = *locked(&self.held) {
            let lock = self.get(&self.key("lock"), "read the lock")?;
            if lock.as_ref().map(|kv| kv.create_revision) != Some(h.created) {
                return Ok(Some(format!(
                    "this deployment's lock on {} lapsed (its lease expired: was the deployer \
                     paused longer than the lock's TTL of {}s?) and nothing was written",
                    self.describe(),
                    self.settings.lock_ttl.as_secs()
                )));
            }
        }
        if let Some(seen) = locked(&self.stamp_seen).clone() {
            let now = self.get(&self.key("stamp"), "read the stamp")?;
            if now.as_ref().map(|kv| &kv.value) != Some(&seen) {
                return Ok(Some(format!(
                    "the stamp {} changed during the deployment; nothing was written",
                    self.show(&self.key("stamp"))
                )));
            }
        }
        Ok(None)
    }

    /// Check a transaction against etcd's limits before sending it.
    fn check_limits(
        &self,
        what: &str,
        compares: &[Value],
        ops: &[Value],
    ) -> Result<(), TargetError> {
        let ops_n = ops.len().max(compares.len());
        // The gateway's JSON carries keys and values as base64 (4/3 of the bytes); the server
        // counts the protobuf request, about the raw bytes plus a few per field.
        let bytes: usize = compares
            .iter()
            .chain(ops)
            .map(|v| v.to_string().len() * 3 / 4 + 16)
            .sum();
        let (max_ops, max_bytes) = (self.settings.max_txn_ops, self.settings.max_request_bytes);
        if ops_n > max_ops || bytes > max_bytes {
            return Err(TargetError::TooLarge(format!(
                "{what} does not fit in one etcd transaction: it needs {} operations and {} \
                 compares (the limit is {max_ops}) and about {bytes} bytes (the limit is \
                 {max_bytes}); envlock never splits a change into several transactions, \
                 because the store would be half-applied in between",
                ops.len(),
                compares.len(),
            )));
        }
        Ok(())
    }

    /// Send a guarded write; a failed compare is explained by `stale`.
    fn send(
        &self,
        what: &str,
        compares: Vec<Value>,
        ops: Vec<Value>,
    ) -> Result<client::TxnResult, TargetError> {
        self.check_limits(what, &compares, &ops)?;
        self.client
            .txn(compares, ops, vec![])
            .map_err(|e| match e.server_message() {
                Some(m) if m.contains("too many operations") || m.contains("too large") => {
                    TargetError::TooLarge(format!(
                        "{what} does not fit in one etcd transaction: etcd says \"{m}\", \
                         although it fits the limits in [target] (max_txn_ops = {}, \
                         max_request_bytes = {}): set them to the server's own; the transaction wrote nothing",
                        self.settings.max_txn_ops,
                        self.settings.max_request_bytes
                    ))
                }
                _ => self.remote(what, e),
            })
    }

    /// Keys under the prefix now, by key.
    fn read_prefix(&self) -> Result<(BTreeMap<Vec<u8>, Kv>, i64), TargetError> {
        let (kvs, rev) = self
            .client
            .range_prefix(&self.prefix)
            .map_err(|e| self.remote("read the resources", e))?;
        Ok((
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            rev,
        ))
    }

    fn generation_record(&self, id: GenerationId) -> Result<Option<(Value, Kv)>, TargetError> {
        self.read_json(
            &self.key(&format!("gen/{}", gen_key_suffix(id))),
            "read a generation",
        )
    }

    /// The stored values of a generation (`name -> compact JSON`).
    fn generation_values(
        &self,
        id: GenerationId,
    ) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        let key = self.key(&format!("genres/{}", gen_key_suffix(id)));
        let Some((v, _)) = self.read_json(&key, "read a generation's resources")? else {
            return Err(TargetError::NoGeneration(id));
        };
        let Some(map) = v.get("resources").and_then(Value::as_object) else {
            return Err(TargetError::Corrupt(format!(
                "{} has no `resources` object",
                self.show(&key)
            )));
        };
        map.iter()
            .map(|(name, value)| match value.as_str() {
                Some(s) => Ok((name.clone(), s.as_bytes().to_vec())),
                None => Err(TargetError::Corrupt(format!(
                    "{}: resource `{name}` is not a string",
                    self.show(&key)
                ))),
            })
            .collect()
    }

    fn generation_ids(&self) -> Result<Vec<GenerationId>, TargetError> {
        let start = self.key("gen/");
        let (mut reads, _) = self
            .client
            .read_many(&[(&start, Some(&prefix_end(&start)), true)])
            .map_err(|e| self.remote("list the generations", e))?;
        let kvs = reads.pop().unwrap_or_default();
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(&kv.key[self.key("gen/").len()..])
                    .ok()?
                    .parse()
                    .ok()
            })
            .collect())
    }

    /// The resources as the compact JSON stored under the prefix.
    fn stored_values(
        resources: &BTreeMap<String, Vec<u8>>,
    ) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        resources
            .iter()
            .map(|(name, toml_text)| {
                let json = resource_json(toml_text).map_err(|e| {
                    TargetError::Refused(format!("resource `{name}` cannot be stored as JSON: {e}"))
                })?;
                Ok((name.clone(), json))
            })
            .collect()
    }

    /// A generation's resources as kept for rollback (`genres/<id>`).
    fn stored_record(values: &BTreeMap<String, Vec<u8>>) -> Value {
        let map: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        json!({ "resources": map })
    }

    /// What an apply of `values` over `read` changes, as it was before: resource -> its exact
    /// stored bytes (a string, or `{"base64": …}` when not UTF-8), `null` for a key it creates.
    /// Kept in the generation record, so that an automatic rollback restores exactly these
    /// ([`Target::undo_apply`]), hand edits included.
    fn before(&self, read: &ReadSet, values: &BTreeMap<String, Vec<u8>>) -> Value {
        let mut out = serde_json::Map::new();
        for (key, was) in &read.values {
            let name = self.resource_name(key);
            if values.get(&name) != Some(was) {
                let v = match std::str::from_utf8(was) {
                    Ok(text) => Value::String(text.to_owned()),
                    Err(_) => json!({ "base64": client::b64(was) }),
                };
                out.insert(name, v);
            }
        }
        for name in values.keys() {
            if !read.values.contains_key(&self.resource_key(name)) {
                out.insert(name.clone(), Value::Null);
            }
        }
        Value::Object(out)
    }

    /// The apply transaction: compares (after `guards`), operations, and the keys it writes.
    fn build_apply(
        &self,
        read: &ReadSet,
        values: &BTreeMap<String, Vec<u8>>,
        id: GenerationId,
        record: &Value,
        stored: &Value,
        guards: Vec<Value>,
    ) -> (Vec<Value>, Vec<Value>, Vec<Vec<u8>>) {
        let mut compares = guards;
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for (key, rev) in &read.keys {
            compares.push(cmp_mod(key, *rev));
            let name = self.resource_name(key);
            match values.get(&name) {
                Some(v) if read.values.get(key) == Some(v) => {}
                Some(v) => {
                    ops.push(op_put(key, v));
                    written.push(key.clone());
                }
                None => ops.push(op_delete(key)),
            }
        }
        for (name, v) in values {
            let key = self.resource_key(name);
            if !read.keys.contains_key(&key) {
                compares.push(cmp_absent(&key));
                ops.push(op_put(&key, v));
                written.push(key);
            }
        }
        compares.push(cmp_range_unmodified_since(
            &self.prefix,
            &prefix_end(&self.prefix),
            read.revision,
        ));
        let ckey = self.key("current");
        compares.push(if read.current_rev == 0 {
            cmp_absent(&ckey)
        } else {
            cmp_mod(&ckey, read.current_rev)
        });
        let gen_key = self.key(&format!("gen/{}", gen_key_suffix(id)));
        let res_key = self.key(&format!("genres/{}", gen_key_suffix(id)));
        compares.push(cmp_absent(&gen_key));
        ops.push(op_put(&gen_key, record.to_string().as_bytes()));
        ops.push(op_put(&res_key, stored.to_string().as_bytes()));
        ops.push(op_put(&ckey, id.to_string().as_bytes()));
        written.push(ckey);
        (compares, ops, written)
    }

    /// One transaction: the resources, the generation, `current`, and (when given) the
    /// deployment's journal for the new generation.
    fn apply_txn(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
        journal: Option<&dyn Fn(GenerationId) -> Vec<u8>>,
    ) -> Result<GenerationId, TargetError> {
        let read = match locked(&self.read).clone() {
            Some(r) => r,
            None => {
                self.live()?;
                locked(&self.read).clone().unwrap_or_default()
            }
        };
        let values = Self::stored_values(resources)?;
        let ids = self.generation_ids()?;
        let newest = ids.iter().copied().max().unwrap_or(0);
        let id = newest.max(read.current_id.unwrap_or(0)) + 1;
        // Generations beyond `keep` go in the same transaction (never the live one).
        let mut old: Vec<GenerationId> = ids
            .into_iter()
            .filter(|g| Some(*g) != read.current_id)
            .collect();
        old.sort_unstable();
        let doomed: Vec<GenerationId> = old
            .iter()
            .copied()
            .take(
                old.len()
                    .saturating_sub(self.settings.keep.saturating_sub(2)),
            )
            .collect();
        let nonce = crate::secret::hex(&crate::target::random_bytes("the transaction id")?[..8]);
        let record = json!({
            "meta": meta,
            "txn": nonce,
            "private": private,
            "created": super::now_rfc3339(),
            "before": self.before(&read, &values),
        });
        let stored = Self::stored_record(&values);

        let (compares, mut ops, written) =
            self.build_apply(&read, &values, id, &record, &stored, self.guards()?);
        if let Some(journal) = journal {
            ops.push(op_put(&self.key("journal"), &journal(id)));
        }
        if ops.len() + 2 * doomed.len() <= self.settings.max_txn_ops {
            for g in &doomed {
                ops.push(op_delete(&self.key(&format!("gen/{}", gen_key_suffix(*g)))));
                ops.push(op_delete(
                    &self.key(&format!("genres/{}", gen_key_suffix(*g))),
                ));
            }
        }
        let what = format!("apply generation {id}");
        let committed = |this: &Self| -> Result<bool, TargetError> {
            // The answer was lost or the compares failed: did this very transaction commit
            // (a retry on another endpoint of one that had)?
            Ok(this
                .generation_record(id)?
                .is_some_and(|(v, _)| v.get("txn").and_then(Value::as_str) == Some(&nonce)))
        };
        let revision = match self.send(&what, compares, ops) {
            Ok(r) if r.succeeded => r.revision,
            Ok(_) => {
                if committed(self)? {
                    self.generation_record(id)?
                        .map(|(_, kv)| kv.mod_revision)
                        .unwrap_or_default()
                } else {
                    return Err(TargetError::Refused(format!(
                        "the plan is stale: {}; nothing was written",
                        self.what_moved(&read)?
                    )));
                }
            }
            Err(TargetError::Remote(why)) => match committed(self) {
                Ok(true) => self
                    .generation_record(id)?
                    .map(|(_, kv)| kv.mod_revision)
                    .unwrap_or_default(),
                _ => return Err(TargetError::Remote(why)),
            },
            Err(e) => return Err(e),
        };
        *locked(&self.written) = Some(Written {
            revision,
            generation: id,
            keys: written,
        });
        *locked(&self.read) = None;
        Ok(id)
    }

    /// Append one log record (its own key, never overwritten), and delete the journal in the
    /// same transaction when `clear_journal`.
    fn append_record(&self, line: &[u8], clear_journal: bool) -> Result<(), TargetError> {
        let seq = serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .ok_or_else(|| TargetError::Corrupt("a log record without `seq`".into()))?;
        let key = self.key(&format!("log/{seq:020}"));
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let start = self.key("log/");
        let count = self
            .client
            .count(&start, &prefix_end(&start))
            .map_err(|e| self.remote("count the deployment log's records", e))?;
        let mut compares = self.guards()?;
        compares.push(cmp_absent(&key));
        // The checkpoint is written at the record's revision: see `log_untouched`.
        let checkpoint = format!("{}\n", count + 1);
        let mut ops = vec![
            op_put(&key, line),
            op_put(&self.key(LOG_CHECKPOINT), checkpoint.as_bytes()),
        ];
        if clear_journal {
            ops.push(op_delete(&self.key("journal")));
        }
        let r = self.send("append to the deployment log", compares, ops)?;
        if !r.succeeded {
            return Err(TargetError::Refused(self.guard_problem()?.unwrap_or_else(
                || format!("log record {seq} exists already; nothing was appended"),
            )));
        }
        Ok(())
    }

    /// The log checkpoint (if any), how many log records there are, and the highest
    /// `mod_revision` among them, in one read that touches no record's value.
    fn log_summary(&self) -> Result<(Option<Kv>, i64, i64), TargetError> {
        let start = self.key("log/");
        self.client
            .key_and_range_summary(&self.key(LOG_CHECKPOINT), &start, &prefix_end(&start))
            .map_err(|e| self.remote("read the deployment log's checkpoint", e))
    }

    /// Explain a failed apply compare: which key moved since the plan read it.
    fn what_moved(&self, read: &ReadSet) -> Result<String, TargetError> {
        if let Some(problem) = self.guard_problem()? {
            return Ok(problem);
        }
        let (now, _) = self.read_prefix()?;
        for (key, rev) in &read.keys {
            match now.get(key) {
                None => {
                    return Ok(format!(
                        "`{}` was deleted after the plan read it",
                        self.show(key)
                    ));
                }
                Some(kv) if kv.mod_revision != *rev => {
                    return Ok(format!(
                        "`{}` was changed after the plan read it (mod_revision {rev} -> {})",
                        self.show(key),
                        kv.mod_revision
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((key, kv)) = now.iter().find(|(k, _)| !read.keys.contains_key(*k)) {
            return Ok(format!(
                "`{}` was created after the plan read the store (at revision {})",
                self.show(key),
                kv.create_revision
            ));
        }
        let current_rev = self.current()?.map(|(_, r)| r).unwrap_or(0);
        if current_rev != read.current_rev {
            return Ok(format!(
                "another deployment made a generation live ({} moved)",
                self.show(&self.key("current"))
            ));
        }
        Ok("the store changed after the plan read it".into())
    }

    /// Make the prefix hold exactly `values`, guarded by what was read at `read`, and make
    /// `current` say `id` (or delete it). One transaction.
    fn switch_to(
        &self,
        what: &str,
        values: &BTreeMap<String, Vec<u8>>,
        current: Option<GenerationId>,
        extra: Vec<Value>,
    ) -> Result<i64, TargetError> {
        let (now, rev, current_now) = self.snapshot()?;
        if let Some(w) = locked(&self.written).clone()
            && current_now.map(|(id, _)| id) == Some(w.generation)
        {
            // A rollback right after an apply: only over what that apply wrote.
            for key in &w.keys {
                let moved = now.get(key).is_none_or(|kv| kv.mod_revision != w.revision);
                if moved && key.starts_with(&self.prefix) {
                    return Err(TargetError::Refused(format!(
                        "`{}` was changed by someone else after the deployment wrote it \
                         (at revision {}); refusing to {what} over it",
                        self.show(key),
                        w.revision
                    )));
                }
            }
        }
        let mut compares = self.guards()?;
        let mut ops = extra;
        for (key, kv) in &now {
            compares.push(cmp_mod(key, kv.mod_revision));
            let name = self.resource_name(key);
            match values.get(&name) {
                Some(v) if *v == kv.value => {}
                Some(v) => ops.push(op_put(key, v)),
                None => ops.push(op_delete(key)),
            }
        }
        for (name, v) in values {
            let key = self.resource_key(name);
            if !now.contains_key(&key) {
                compares.push(cmp_absent(&key));
                ops.push(op_put(&key, v));
            }
        }
        compares.push(cmp_range_unmodified_since(
            &self.prefix,
            &prefix_end(&self.prefix),
            rev,
        ));
        let ckey = self.key("current");
        match current_now {
            Some((_, r)) => compares.push(cmp_mod(&ckey, r)),
            None => compares.push(cmp_absent(&ckey)),
        }
        match current {
            Some(id) => ops.push(op_put(&ckey, id.to_string().as_bytes())),
            None => ops.push(op_delete(&ckey)),
        }
        let result = self.send(what, compares, ops)?;
        if !result.succeeded {
            let read = ReadSet {
                revision: rev,
                keys: now
                    .iter()
                    .map(|(k, kv)| (k.clone(), kv.mod_revision))
                    .collect(),
                values: BTreeMap::new(),
                current_rev: current_now.map(|(_, r)| r).unwrap_or(0),
                current_id: current_now.map(|(id, _)| id),
            };
            return Err(TargetError::Refused(format!(
                "could not {what}: {}; nothing was written",
                self.what_moved(&read)?
            )));
        }
        *locked(&self.written) = None;
        Ok(result.revision)
    }
}

/// The lease-backed lock: a thread renews the lease every third of its TTL until dropped.
#[derive(Debug)]
struct EtcdLock {
    holder: Holder,
    renewal: Option<super::Renewal>,
    client: Arc<Client>,
    lease: i64,
    held: Arc<Mutex<Option<Held>>>,
}

impl LockGuard for EtcdLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        drop(self.renewal.take());
        *locked(&self.held) = None;
        // Revoking deletes the lock key; if it fails the lease lapses on its own.
        let _ = self.client.lease_revoke(self.lease);
    }
}

impl Target for EtcdTarget {
    fn describe(&self) -> String {
        format!(
            "etcd {} {}",
            self.settings.endpoints.join(","),
            self.settings.prefix
        )
    }

    fn live(&self) -> Result<Live, TargetError> {
        let (now, rev, current) = self.snapshot()?;
        let resources = now
            .iter()
            .map(|(k, kv)| (self.resource_name(k), resource_toml_from_json(&kv.value)))
            .collect();
        *locked(&self.read) = Some(ReadSet {
            revision: rev,
            keys: now
                .iter()
                .map(|(k, kv)| (k.clone(), kv.mod_revision))
                .collect(),
            values: now.into_iter().map(|(k, kv)| (k, kv.value)).collect(),
            current_rev: current.map(|(_, r)| r).unwrap_or(0),
            current_id: current.map(|(id, _)| id),
        });
        Ok(Live {
            generation: current.map(|(id, _)| id),
            resources,
        })
    }

    fn check_fits(&self, resources: &BTreeMap<String, Vec<u8>>) -> Result<(), TargetError> {
        let read = match locked(&self.read).clone() {
            Some(r) => r,
            None => {
                self.live()?;
                locked(&self.read).clone().unwrap_or_default()
            }
        };
        let values = Self::stored_values(resources)?;
        // The real record's size: metadata is small next to the resources.
        let record = json!({
            "meta": {},
            "txn": "0000000000000000",
            "private": [],
            "created": "",
            "before": self.before(&read, &values),
        });
        let stored = Self::stored_record(&values);
        let placeholder = vec![
            cmp_value(&self.key("stamp"), &[b'x'; 128]),
            cmp_created(&self.key("lock"), 1),
        ];
        let (compares, ops, _) = self.build_apply(&read, &values, 1, &record, &stored, placeholder);
        self.check_limits("this change", &compares, &ops)
    }

    fn apply(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<GenerationId, TargetError> {
        self.apply_txn(resources, private, meta, None)
    }

    fn atomic_bookkeeping(&self) -> bool {
        true
    }

    fn apply_journaled(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
        journal: &dyn Fn(GenerationId) -> Vec<u8>,
    ) -> Result<GenerationId, TargetError> {
        self.apply_txn(resources, private, meta, Some(journal))
    }

    fn log_append_clear_journal(&self, line: &[u8]) -> Result<(), TargetError> {
        self.append_record(line, true)
    }

    fn drift(&self) -> Result<Drift, TargetError> {
        let (now, _, current) = self.snapshot()?;
        let Some((id, _)) = current else {
            return Ok(Drift::default());
        };
        let written = self.generation_values(id)?;
        let mut drift = Drift {
            checked: true,
            ..Drift::default()
        };
        for (name, value) in &written {
            match now.get(&self.resource_key(name)) {
                None => drift.removed.push(name.clone()),
                Some(kv) if kv.value != *value => drift.edited.push(name.clone()),
                Some(_) => {}
            }
        }
        for key in now.keys() {
            let name = self.resource_name(key);
            if !written.contains_key(&name) {
                drift.added.push(name);
            }
        }
        Ok(drift)
    }

    fn activate(&self, id: GenerationId) -> Result<(), TargetError> {
        let values = self.generation_values(id)?;
        self.switch_to(
            &format!("make generation {id} live"),
            &values,
            Some(id),
            vec![],
        )?;
        Ok(())
    }

    fn undo_apply(
        &self,
        failed: GenerationId,
        previous: Option<GenerationId>,
    ) -> Result<(), TargetError> {
        let before = self
            .generation_record(failed)?
            .and_then(|(v, _)| v.get("before").and_then(Value::as_object).cloned());
        // A generation written before `before` was recorded: its predecessor's values.
        let Some(before) = before else {
            return match previous {
                Some(p) => self.activate(p),
                None => self.deactivate(),
            };
        };
        let wrote = self.generation_values(failed)?;
        let (now, _) = self.read_prefix()?;
        let mut values: BTreeMap<String, Vec<u8>> = now
            .into_iter()
            .map(|(k, kv)| (self.resource_name(&k), kv.value))
            .collect();
        for (name, was) in &before {
            // Only over what that apply wrote: a key changed since is someone else's.
            if values.get(name) != wrote.get(name) {
                return Err(TargetError::Refused(format!(
                    "`{}` was changed by someone else after generation {failed} wrote it; refusing to restore what was there before over it",
                    self.show(&self.resource_key(name))
                )));
            }
            match was {
                Value::Null => {
                    values.remove(name);
                }
                Value::String(text) => {
                    values.insert(name.clone(), text.as_bytes().to_vec());
                }
                other => {
                    let bytes = other
                        .get("base64")
                        .and_then(Value::as_str)
                        .and_then(client::unb64)
                        .ok_or_else(|| {
                            TargetError::Corrupt(format!(
                                "generation {failed}'s record keeps `{name}` in an unknown form"
                            ))
                        })?;
                    values.insert(name.clone(), bytes);
                }
            }
        }
        self.switch_to(
            &format!("restore what was live before generation {failed}"),
            &values,
            previous,
            vec![],
        )?;
        Ok(())
    }

    fn deactivate(&self) -> Result<(), TargetError> {
        self.switch_to("undo the first deployment", &BTreeMap::new(), None, vec![])?;
        Ok(())
    }
}

impl crate::target::store::StateStore for EtcdTarget {
    fn stamp(&self) -> Result<StampState, TargetError> {
        let key = self.key("stamp");
        if let Some(kv) = self.get(&key, "read the stamp")? {
            let stamp: Stamp = serde_json::from_slice(&kv.value).map_err(|e| {
                TargetError::Corrupt(format!("{} is not a valid stamp: {e}", self.show(&key)))
            })?;
            *locked(&self.stamp_seen) = Some(kv.value);
            return Ok(StampState::Stamped(stamp));
        }
        let (kvs, _, _) = self
            .client
            .range(&self.prefix, Some(&prefix_end(&self.prefix)), 0, false)
            .map_err(|e| self.remote("read the resources", e))?;
        if kvs.is_empty() {
            if self.current()?.is_some() {
                return Err(TargetError::Corrupt(format!(
                    "{} has generations but no stamp",
                    self.show(&self.root)
                )));
            }
            return Ok(StampState::Absent);
        }
        let total = kvs.len();
        let entries = kvs.iter().take(10).map(|kv| self.show(&kv.key)).collect();
        Ok(StampState::Unstamped { entries, total })
    }

    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError> {
        match self.stamp()? {
            StampState::Absent => {}
            StampState::Stamped(old) if old.same_owner(stamp) => return Ok(()),
            StampState::Stamped(old) => {
                return Err(TargetError::Refused(format!(
                    "{} is stamped for environment `{}` (account {}); refusing to re-stamp it \
                     for `{}` (account {})",
                    self.describe(),
                    old.environment,
                    old.account,
                    stamp.environment,
                    stamp.account
                )));
            }
            StampState::Unstamped { .. } => {
                return Err(TargetError::Refused(format!(
                    "{} already holds keys and has no stamp; refusing to adopt it",
                    self.describe()
                )));
            }
        }
        let key = self.key("stamp");
        let bytes = serde_json::to_vec(stamp)
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the stamp: {e}")))?;
        let mut compares = self.guards()?;
        compares.push(cmp_absent(&key));
        // Adopting an empty prefix: nothing may have appeared under it since it was read.
        let (_, rev) = self.read_prefix()?;
        compares.push(cmp_range_unmodified_since(
            &self.prefix,
            &prefix_end(&self.prefix),
            rev,
        ));
        let result = self.send("write the stamp", compares, vec![op_put(&key, &bytes)])?;
        if !result.succeeded {
            return Err(TargetError::Refused(format!(
                "{} changed while it was being adopted (a stamp or a key appeared); nothing \
                 was written",
                self.describe()
            )));
        }
        *locked(&self.stamp_seen) = Some(bytes);
        Ok(())
    }

    fn lock_holder(&self) -> Result<Option<Holder>, TargetError> {
        // The key is bound to the holder's lease: it exists exactly while the lock is held.
        let kv = self.get(&self.key("lock"), "read the deployment lock")?;
        Ok(kv.map(|kv| serde_json::from_slice(&kv.value).unwrap_or_else(|_| Holder::unknown())))
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError> {
        let ttl = self.settings.lock_ttl.as_secs().max(1) as i64;
        let value = serde_json::to_vec(holder)
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the lock holder: {e}")))?;
        let (lease, created) = match self
            .client
            .lease_lock(&self.key("lock"), &value, ttl)
            .map_err(|e| self.remote("take the deployment lock", e))?
        {
            Ok(taken) => taken,
            Err((other, _)) => {
                return Err(TargetError::Locked(
                    serde_json::from_slice(&other).unwrap_or_else(|_| Holder::unknown()),
                ));
            }
        };
        *locked(&self.held) = Some(Held { created });
        let client = Arc::clone(&self.client);
        let every = Duration::from_millis((ttl as u64 * 1000 / 3).max(200));
        // Expired, or etcd unreachable: every later write's lock compare fails and says so;
        // keep trying in case the cluster comes back in time.
        let renewal = super::Renewal::start(every, move || {
            let _ = client.lease_keepalive(lease);
            true
        });
        Ok(Box::new(EtcdLock {
            holder: holder.clone(),
            renewal: Some(renewal),
            client: Arc::clone(&self.client),
            lease,
            held: Arc::clone(&self.held),
        }))
    }

    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self
            .get(&self.key("journal"), "read the journal")?
            .map(|kv| kv.value))
    }

    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError> {
        self.guarded(
            "write the journal",
            vec![op_put(&self.key("journal"), bytes)],
        )
    }

    fn clear_journal(&self) -> Result<(), TargetError> {
        self.guarded("clear the journal", vec![op_delete(&self.key("journal"))])
    }

    fn state_location(&self, item: StateItem) -> String {
        let suffix = match item {
            StateItem::Stamp => "stamp",
            StateItem::Journal => "journal",
            StateItem::Log => "log/",
        };
        format!("etcd key {}{suffix}", String::from_utf8_lossy(&self.root))
    }

    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let key = self.key("secret-key");
        let Some(kv) = self.get(&key, "read the secret key")? else {
            return Ok(None);
        };
        crate::secret::unhex(&String::from_utf8_lossy(&kv.value))
            .map(Some)
            .ok_or_else(|| TargetError::Corrupt(format!("{} is not hex", self.show(&key))))
    }

    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError> {
        if let Some(k) = self.secret_key()? {
            return Ok(k);
        }
        let key = crate::target::random_bytes("the secret key")?;
        let name = self.key("secret-key");
        let mut compares = self.guards()?;
        compares.push(cmp_absent(&name));
        let r = self.send(
            "create the secret key",
            compares,
            vec![op_put(&name, crate::secret::hex(&key).as_bytes())],
        )?;
        if !r.succeeded {
            return self
                .secret_key()?
                .ok_or_else(|| TargetError::Refused("the secret key could not be created".into()));
        }
        Ok(key)
    }

    fn describe_state(&self) -> String {
        Target::describe(self)
    }

    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        let key = self.key(&format!("blob/{name}"));
        Ok(self.get(&key, "read envlock's state")?.map(|kv| kv.value))
    }

    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        let ops = vec![op_put(&self.key(&format!("blob/{name}")), bytes)];
        self.guarded("write envlock's state", ops)
    }

    fn clear_blob(&self, name: &str) -> Result<(), TargetError> {
        let ops = vec![op_delete(&self.key(&format!("blob/{name}")))];
        self.guarded("write envlock's state", ops)
    }
}

impl crate::target::store::GenerationStore for EtcdTarget {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        Ok(self.current()?.map(|(id, _)| id))
    }

    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        Ok(self
            .generation_values(id)?
            .into_iter()
            .map(|(k, v)| (k, resource_toml_from_json(&v)))
            .collect())
    }

    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError> {
        let gen_prefix = self.key("gen/");
        let ckey = self.key("current");
        let (mut reads, _) = self
            .client
            .read_many(&[
                (&gen_prefix, Some(&prefix_end(&gen_prefix)), false),
                (&ckey, None, false),
            ])
            .map_err(|e| self.remote("list the generations", e))?;
        let current = match reads.pop().and_then(|kvs| kvs.into_iter().next()) {
            Some(kv) => Some(self.parse_current(&kv.value)?),
            None => None,
        };
        let kvs = reads.pop().unwrap_or_default();
        let mut out = Vec::new();
        for kv in kvs {
            let Some(id) = std::str::from_utf8(&kv.key[gen_prefix.len()..])
                .ok()
                .and_then(|s| s.parse::<GenerationId>().ok())
            else {
                continue;
            };
            let v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
                TargetError::Corrupt(format!("{} is not valid JSON: {e}", self.show(&kv.key)))
            })?;
            let meta = v.get("meta").cloned().unwrap_or(Value::Null);
            let text = |m: &Value, key: &str| m.get(key).and_then(Value::as_str).map(str::to_owned);
            out.push(GenerationInfo {
                id,
                commit: text(&meta, "commit").unwrap_or_default(),
                created: text(&meta, "created")
                    .or_else(|| text(&v, "created"))
                    .unwrap_or_default(),
                live: current == Some(id),
                failed: text(&v, "failed"),
                meta,
            });
        }
        out.sort_by_key(|g| g.id);
        Ok(out)
    }

    fn prune(&self, keep: usize) -> Result<Pruned, TargetError> {
        let gens = self.generations()?;
        let n = gens.len();
        let doomed: Vec<GenerationId> = gens
            .iter()
            .enumerate()
            .filter(|(i, g)| !g.live && i + keep < n)
            .map(|(_, g)| g.id)
            .collect();
        let per_txn = (self.settings.max_txn_ops / 2).max(1);
        for chunk in doomed.chunks(per_txn) {
            let mut ops = Vec::new();
            for id in chunk {
                ops.push(op_delete(
                    &self.key(&format!("gen/{}", gen_key_suffix(*id))),
                ));
                ops.push(op_delete(
                    &self.key(&format!("genres/{}", gen_key_suffix(*id))),
                ));
            }
            // Pruning is not atomic across chunks and need not be: each generation goes whole.
            let result = self.send("prune old generations", self.guards()?, ops)?;
            if !result.succeeded {
                return Err(TargetError::Refused(format!(
                    "could not prune: {}",
                    self.guard_problem()?
                        .unwrap_or_else(|| "the store changed".into())
                )));
            }
        }
        Ok(Pruned {
            generations: doomed,
            leftovers: vec![],
        })
    }

    fn leftovers(&self) -> Result<Vec<String>, TargetError> {
        // Every write is one transaction: an interrupted one left nothing behind.
        Ok(vec![])
    }

    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError> {
        let key = self.key(&format!("gen/{}", gen_key_suffix(id)));
        let Some((mut v, kv)) = self.read_json(&key, "read a generation")? else {
            return Err(TargetError::NoGeneration(id));
        };
        v["failed"] = Value::String(reason.to_owned());
        let mut compares = self.guards()?;
        compares.push(cmp_mod(&key, kv.mod_revision));
        let r = self.send(
            "mark a generation failed",
            compares,
            vec![op_put(&key, v.to_string().as_bytes())],
        )?;
        if !r.succeeded {
            return Err(TargetError::Refused(format!(
                "could not mark generation {id} failed: {}",
                self.guard_problem()?
                    .unwrap_or_else(|| "it changed meanwhile".into())
            )));
        }
        Ok(())
    }

    fn discard(&self, id: GenerationId) -> Result<(), TargetError> {
        if self.current()?.map(|(c, _)| c) == Some(id) {
            return Err(TargetError::Refused(format!(
                "generation {id} is live; it cannot be discarded"
            )));
        }
        let mut compares = self.guards()?;
        let ckey = self.key("current");
        match self.current()? {
            Some((_, r)) => compares.push(cmp_mod(&ckey, r)),
            None => compares.push(cmp_absent(&ckey)),
        }
        let ops = vec![
            op_delete(&self.key(&format!("gen/{}", gen_key_suffix(id)))),
            op_delete(&self.key(&format!("genres/{}", gen_key_suffix(id)))),
        ];
        let r = self.send("discard a generation", compares, ops)?;
        if !r.succeeded {
            return Err(TargetError::Refused(format!(
                "could not discard generation {id}: the store changed meanwhile"
            )));
        }
        Ok(())
    }

    /// An etcd generation is written in the same transaction as its resources: recording one
    /// is applying it.
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<GenerationId, TargetError> {
        Target::apply(self, resources, private, meta)
    }

    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError> {
        match id {
            Some(id) => Target::activate(self, id),
            None => Target::deactivate(self),
        }
    }
}

impl crate::target::store::LogStore for EtcdTarget {
    fn log_tail(&self) -> Result<LogTail, TargetError> {
        let start = self.key("log/");
        let (kvs, _, _) = self
            .client
            .range(&start, Some(&prefix_end(&start)), 1, true)
            .map_err(|e| self.remote("read the deployment log", e))?;
        Ok(LogTail {
            last: kvs.into_iter().next().map(|kv| kv.value),
            complete_len: 0,
            incomplete: 0,
        })
    }

    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let (kvs, _) = self
            .client
            .range_prefix(&self.key("log/"))
            .map_err(|e| self.remote("read the deployment log", e))?;
        if kvs.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(kvs.iter().map(|kv| kv.value.len() + 1).sum());
        for kv in kvs {
            out.extend_from_slice(&kv.value);
            out.push(b'\n');
        }
        Ok(Some(out))
    }

    fn log_append(&self, line: &[u8]) -> Result<(), TargetError> {
        self.append_record(line, false)
    }

    fn log_cut(&self, _len: u64) -> Result<(), TargetError> {
        // Records are whole keys: there is never an incomplete one to cut.
        Ok(())
    }

    /// The log is as this target's last append left it when the checkpoint written with that
    /// append still counts every record, and no record was written after it: the highest
    /// `mod_revision` under `log/` is the checkpoint's own (one transaction wrote both). An
    /// edit, a deletion or an insertion of any record, or a rewritten checkpoint, breaks one
    /// of the two, and the whole log is verified.
    fn log_untouched(&self) -> Result<bool, TargetError> {
        let (checkpoint, count, newest) = self.log_summary()?;
        let Some(cp) = checkpoint else {
            return Ok(false);
        };
        let counted = std::str::from_utf8(&cp.value)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok());
        Ok(counted == Some(count) && count > 0 && newest == cp.mod_revision)
    }

    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        let (checkpoint, count, _) = self.log_summary()?;
        let was = checkpoint.and_then(|cp| {
            std::str::from_utf8(&cp.value)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
        });
        Ok(was.filter(|was| count < *was).map(|was| {
            format!("the log has {count} record keys, but it had {was} after the last append")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_root_is_beside_the_prefix() {
        assert_eq!(state_root("/asr/prod/"), "/asr/prod.envlock/");
        assert!(!state_root("/asr/prod/").starts_with("/asr/prod/"));
    }

    #[test]
    fn resources_round_trip_between_toml_and_json() {
        let toml_text = b"enabled = true\nname = \"x\"\nratio = 1.5\n\n[limits]\nmax = 3\n";
        let json = resource_json(toml_text).unwrap();
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"enabled":true,"limits":{"max":3},"name":"x","ratio":1.5}"#
        );
        let back = resource_toml_from_json(&json);
        assert_eq!(resource_json(&back).unwrap(), json);
    }

    #[test]
    fn a_value_stored_in_another_form_reads_as_a_change() {
        let back = resource_toml_from_json(br#"{ "name": "x" }"#);
        assert!(
            String::from_utf8(back)
                .unwrap()
                .starts_with("# stored as JSON")
        );
        let garbage = resource_toml_from_json(b"not json");
        assert!(
            String::from_utf8(garbage)
                .unwrap()
                .contains("# not a JSON object")
        );
    }
}
