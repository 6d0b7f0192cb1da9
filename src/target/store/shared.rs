//! envlock's state on a shared [`Backend`]: what every deployer, on any machine, reads and
//! writes through compare-and-swap.
//!
//! Items (keys under the backend's scope):
//!
//! ```text
//! stamp                       JSON stamp, created once (create-only write)
//! live                        {"generation": N | null}, switched by compare-and-swap
//! generation/<20-digit id>    {"id", "meta", "resources": {name: TOML text}, "failed"}
//! journal                     the deployment's crash journal
//! blob/<name>                 a target kind's private item (an exec undo journal)
//! secret-key                  hex, created once
//! log/<20-digit seq>          one log record per item, created once: appends cannot fork
//! ```
//!
//! Invariants: every write made under the lock carries the lock's token as its fence, so a
//! deployer whose lease ran out (and whose lock someone else took) writes nothing more; a new
//! generation and the switch of `live` to it are one atomic put.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use super::backend::{Backend, Expect, Item, MAX_WRITES, PutError, Write};
use super::{GenerationStore, LogStore, StateStore};
use crate::target::{
    GenerationId, GenerationInfo, Holder, LockGuard, LogTail, Pruned, Renewal, Stamp, StampState,
    StateItem, TargetError,
};

const STAMP: &str = "stamp";
const LIVE: &str = "live";
const JOURNAL: &str = "journal";
const SECRET_KEY: &str = "secret-key";
const GENERATIONS: &str = "generation/";
const LOG: &str = "log/";
/// `{"seq": N}`: the last record appended, written with it (a record removed from the end of
/// the log leaves a chain that verifies; the checkpoint tells).
const LOG_CHECKPOINT: &str = "log-checkpoint";
/// Generation ids are below this: a larger one was not written by envlock.
const MAX_ID: GenerationId = 10_000_000_000_000_000_000;
/// Items read per `list` request.
const PAGE: usize = 1000;

/// State kept on a [`Backend`] shared by every deployer.
#[derive(Debug)]
pub struct Shared {
    backend: Arc<dyn Backend>,
    lock_ttl: Duration,
    /// The token of the lock this process holds: the fence of its writes.
    token: Arc<Mutex<Option<String>>>,
    /// When the lease was last taken or renewed.
    confirmed: Arc<Mutex<std::time::Instant>>,
}

fn generation_key(id: GenerationId) -> String {
    format!("{GENERATIONS}{id:020}")
}

fn log_key(seq: u64) -> String {
    format!("{LOG}{seq:020}")
}

/// The write of the log's checkpoint after record `seq`.
fn checkpoint(seq: u64) -> Write {
    Write::put(
        LOG_CHECKPOINT,
        json!({ "seq": seq }).to_string(),
        Expect::Any,
    )
}

fn corrupt(key: &str, why: impl std::fmt::Display) -> TargetError {
    TargetError::Corrupt(format!(
        "envlock's state item `{key}` cannot be read: {why}; it was not written by envlock \
         (changed by hand?): put back what envlock wrote before deploying again"
    ))
}

fn text(bytes: &[u8], what: &str) -> Result<String, TargetError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| TargetError::Refused(format!("{what} is not UTF-8; nothing was written")))
}

impl Shared {
    pub fn new(backend: Arc<dyn Backend>, lock_ttl: Duration) -> Self {
        Shared {
            backend,
            lock_ttl,
            token: Arc::new(Mutex::new(None)),
            confirmed: Arc::new(Mutex::new(std::time::Instant::now())),
        }
    }

    /// The lease is surely ours only while its last renewal is younger than two thirds of it:
    /// renewals come every third, so two missed (or a process frozen past them) means it may
    /// lapse before the next write lands. Checked locally, before asking the store.
    fn lease_too_old(&self) -> Option<TargetError> {
        let age = self
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        (age * 3 > self.lock_ttl * 2).then(|| {
            TargetError::Refused(format!(
                "the deployment lock on {} was lost (its lease: last renewed {:.1} s ago, against \
                 a lease of {} s): another deployment may hold it now; this run writes nothing more",
                self.backend.describe(),
                age.as_secs_f64(),
                self.lock_ttl.as_secs()
            ))
        })
    }

    fn fence(&self) -> Option<String> {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An atomic put, fenced by this process's lock when it holds one.
    fn put(&self, writes: &[Write]) -> Result<BTreeMap<String, String>, TargetError> {
        let fence = self.fence();
        super::parts::put(&*self.backend, writes, fence.as_deref())
            .map_err(|e| match e {
                PutError::Conflict(m) => TargetError::Refused(format!(
                    "{}: {m}: another deployment changed envlock's state meanwhile; this write was not made",
                    self.backend.describe()
                )),
                PutError::LockLost(m) => TargetError::Refused(format!(
                    "the deployment lock on {} was lost ({m}): its lease ran out before it was \
                     renewed, so another deployment may hold it now; nothing more was written",
                    self.backend.describe()
                )),
                PutError::Failed(e) => e,
            })
    }

    fn get(&self, key: &str) -> Result<Option<Item>, TargetError> {
        match self.backend.get(&[key])?.into_iter().next().flatten() {
            Some(item) => super::parts::expand(&*self.backend, key, item).map(Some),
            None => Ok(None),
        }
    }

    /// Every item under `prefix`, in key order, read page by page. Each page must go on after
    /// the last key read, so that a store that repeats a page cannot keep this reading (and
    /// holding) for ever.
    fn list_all(&self, prefix: &str) -> Result<Vec<(String, Item)>, TargetError> {
        let mut out: Vec<(String, Item)> = Vec::new();
        loop {
            let after = out.last().map(|(k, _)| k.clone());
            let (page, more) = self.backend.list(prefix, after.as_deref(), PAGE, false)?;
            let mut last = after;
            for (key, _) in &page {
                if let Some(before) = last.as_deref().filter(|b| key.as_str() <= *b) {
                    return Err(self.out_of_order(prefix, &format!("`{key}` after `{before}`")));
                }
                last = Some(key.clone());
            }
            if more && page.is_empty() {
                return Err(self.out_of_order(prefix, "an empty page that says more follow"));
            }
            for (key, item) in page {
                let item = super::parts::expand(&*self.backend, &key, item)?;
                out.push((key, item));
            }
            if !more {
                return Ok(out);
            }
        }
    }

    fn out_of_order(&self, prefix: &str, what: &str) -> TargetError {
        TargetError::Corrupt(format!(
            "{} listed its items under `{prefix}` out of key order ({what}): reading them page \
             by page would never end; the store (or its provider) must list each page after \
             the key it is given (docs/providers.md, `state-list`); nothing was written",
            self.backend.describe()
        ))
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Item)>, TargetError> {
        Ok(self
            .backend
            .list(prefix, None, 1, true)?
            .0
            .into_iter()
            .next())
    }

    /// The live pointer and the version it was read at (`None`: never written).
    fn live(&self) -> Result<(Option<GenerationId>, Option<String>), TargetError> {
        let Some(item) = self.get(LIVE)? else {
            return Ok((None, None));
        };
        let v: Value = serde_json::from_str(&item.value).map_err(|e| corrupt(LIVE, e))?;
        let id = match v.get("generation") {
            Some(Value::Null) | None => None,
            Some(n) => Some(
                n.as_u64()
                    .filter(|id| *id < MAX_ID)
                    .ok_or_else(|| corrupt(LIVE, format!("{n} is not a generation id")))?,
            ),
        };
        Ok((id, Some(item.version)))
    }

    fn live_write(&self, id: Option<GenerationId>, version: Option<String>) -> Write {
        Write::put(
            LIVE,
            json!({ "generation": id }).to_string(),
            version.map_or(Expect::Absent, Expect::Version),
        )
    }

    fn generation_item(&self, id: GenerationId) -> Result<Option<(Value, Item)>, TargetError> {
        let key = generation_key(id);
        let Some(item) = self.get(&key)? else {
            return Ok(None);
        };
        let v = serde_json::from_str(&item.value).map_err(|e| corrupt(&key, e))?;
        Ok(Some((v, item)))
    }

    fn generation_json(
        id: GenerationId,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<String, TargetError> {
        let mut res = serde_json::Map::new();
        for (name, bytes) in resources {
            res.insert(
                name.clone(),
                text(bytes, &format!("resource `{name}`"))?.into(),
            );
        }
        Ok(json!({
            "id": id,
            "meta": meta,
            "resources": res,
            "private": private,
            "failed": null,
            "written": crate::target::now_rfc3339(),
        })
        .to_string())
    }

    fn info(v: &Value, live: Option<GenerationId>) -> Option<GenerationInfo> {
        let id = v.get("id")?.as_u64()?;
        let meta = v.get("meta").cloned().unwrap_or(Value::Null);
        let field = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(GenerationInfo {
            id,
            commit: field("commit").unwrap_or_default(),
            created: field("created")
                .or_else(|| v.get("written").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
            live: live == Some(id),
            failed: v.get("failed").and_then(Value::as_str).map(str::to_owned),
            meta,
        })
    }

    fn item_of(&self, name: &str) -> String {
        format!("{} item `{name}`", self.backend.describe())
    }
}

/// What [`Shared::import`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub generations: usize,
    pub records: usize,
    pub live: Option<GenerationId>,
}

impl Shared {
    /// Copy the state kept in `from` (a directory) into this store, which must hold no stamp:
    /// the secret key, every generation with its id, metadata and failure, which one is live,
    /// and every log record byte for byte under its own `seq`. Items a migration that died
    /// half-way left are overwritten; the stamp is written last, by the caller, so a store is
    /// never stamped with half a history. The caller holds both locks.
    pub fn import(&self, from: &dyn super::Store) -> Result<Imported, TargetError> {
        if let StampState::Stamped(s) = self.stamp()? {
            return Err(TargetError::Refused(format!(
                "{} already has a stamp (environment `{}`, account {}, since {}); refusing to \
                 overwrite its state; nothing was written",
                self.backend.describe(),
                s.environment,
                s.account,
                s.created
            )));
        }
        self.refuse_other_history(from)?;
        let log = Self::log_items(&from.log_read()?.unwrap_or_default())?;
        if let Some(key) = from.secret_key()? {
            let hex = crate::secret::hex(&key);
            self.put(&[Write::put(SECRET_KEY, hex, Expect::Any)])?;
        }
        let mut imported = Imported::default();
        for g in from.generations()? {
            let resources = from.resources(g.id)?;
            let mut body: Value = serde_json::from_str(&Self::generation_json(
                g.id,
                &resources,
                &BTreeSet::new(),
                &g.meta,
            )?)
            .unwrap_or_default();
            body["failed"] = g.failed.clone().map_or(Value::Null, Value::from);
            body["written"] = g.created.clone().into();
            self.put(&[Write::put(
                generation_key(g.id),
                body.to_string(),
                Expect::Any,
            )])?;
            imported.generations += 1;
        }
        imported.live = from.live_generation()?;
        let (_, version) = self.live()?;
        let expect = version.map_or(Expect::Absent, Expect::Version);
        self.put(&[Write::put(
            LIVE,
            json!({ "generation": imported.live }).to_string(),
            expect,
        )])?;
        imported.records = self.import_log(log)?;
        Ok(imported)
    }

    /// An unstamped store may hold what a migration of `from` that died half-way copied (the
    /// start of its log), never another history: a store whose stamp was removed keeps its
    /// log, generations and live pointer, which a migration must not overwrite.
    fn refuse_other_history(&self, from: &dyn super::Store) -> Result<(), TargetError> {
        let ours = from.log_read()?.unwrap_or_default();
        let theirs = self.log_read()?.unwrap_or_default();
        if ours.starts_with(&theirs) {
            return Ok(());
        }
        let records = theirs
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        Err(TargetError::Refused(format!(
            "{} has no stamp but holds a deployment log that is not the directory's ({records} \
             records): its stamp item was removed, or another history lives there; refusing to \
             overwrite it: if it is this environment's history, put its `stamp` item back \
             instead of migrating; nothing was written",
            self.backend.describe()
        )))
    }

    /// Every record of `log` as the item of its own `seq`. Lines that are not records (damage
    /// a `seal` record set aside) go, byte for byte, into the item of the record after them,
    /// so that the log reads back the same; damage after the last record cannot be carried.
    /// Checked whole before anything is written.
    fn log_items(log: &[u8]) -> Result<Vec<(u64, String)>, TargetError> {
        let mut items = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for (n, line) in log.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let value = text(line, &format!("line {} of the log", n + 1))?;
            let seq = serde_json::from_str::<Value>(&value)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            match seq {
                Some(seq) => {
                    pending.push(value);
                    items.push((seq, std::mem::take(&mut pending).join("\n")));
                }
                None => pending.push(value),
            }
        }
        if !pending.is_empty() {
            return Err(TargetError::Refused(format!(
                "the directory's log ends with {} line(s) that are not records (damage no `seal` \
                 record set aside): run `deploy log verify` and `deploy log seal` through the \
                 directory first; nothing was written",
                pending.len()
            )));
        }
        Ok(items)
    }

    /// `items` (see [`Self::log_items`]), 25 per atomic put.
    fn import_log(&self, items: Vec<(u64, String)>) -> Result<usize, TargetError> {
        let count = items.len();
        let last = items.last().map(|(seq, _)| *seq);
        let writes: Vec<Write> = items
            .into_iter()
            .map(|(seq, value)| Write::put(log_key(seq), value, Expect::Any))
            .collect();
        let mut writes = writes;
        if let Some(last) = last {
            writes.push(checkpoint(last));
        }
        for chunk in writes.chunks(MAX_WRITES) {
            self.put(chunk)?;
        }
        Ok(count)
    }
}

impl StateStore for Shared {
    fn describe_state(&self) -> String {
        self.backend.describe()
    }

    fn stamp(&self) -> Result<StampState, TargetError> {
        let Some(item) = self.get(STAMP)? else {
            return Ok(StampState::Absent);
        };
        serde_json::from_str(&item.value)
            .map(StampState::Stamped)
            .map_err(|e| corrupt(STAMP, format!("not a valid stamp: {e}")))
    }

    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError> {
        let refuse = |old: &Stamp| {
            TargetError::Refused(format!(
                "{} is stamped for environment `{}` (account {}); refusing to re-stamp it for `{}` (account {})",
                self.item_of(STAMP),
                old.environment,
                old.account,
                stamp.environment,
                stamp.account
            ))
        };
        match self.stamp()? {
            StampState::Stamped(old) if old.same_owner(stamp) => return Ok(()),
            StampState::Stamped(old) => return Err(refuse(&old)),
            _ => {}
        }
        let bytes = serde_json::to_string(stamp)
            .map_err(|e| TargetError::Corrupt(format!("cannot serialise the stamp: {e}")))?;
        match self.put(&[Write::put(STAMP, bytes, Expect::Absent)]) {
            Ok(_) => Ok(()),
            Err(e) => match self.stamp()? {
                // Someone stamped it meanwhile: the same owner is fine.
                StampState::Stamped(old) if old.same_owner(stamp) => Ok(()),
                StampState::Stamped(old) => Err(refuse(&old)),
                _ => Err(e),
            },
        }
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError> {
        let token = match self.backend.lock(holder, self.lock_ttl)? {
            Ok(token) => token,
            Err(other) => return Err(TargetError::Locked(other)),
        };
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        *self
            .confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
        let backend = Arc::clone(&self.backend);
        let ttl = self.lock_ttl;
        let renewing = token.clone();
        let confirmed = Arc::clone(&self.confirmed);
        // Lost, or unreachable: `still_held` and the fenced writes that follow say so.
        let renewal = Renewal::start((ttl / 3).max(Duration::from_millis(200)), move || {
            let asked = std::time::Instant::now();
            match backend.renew(&renewing, ttl) {
                Ok(true) => {
                    *confirmed.lock().unwrap_or_else(PoisonError::into_inner) = asked;
                    true
                }
                Ok(false) => false,
                Err(_) => true,
            }
        });
        Ok(Box::new(SharedLock {
            holder: holder.clone(),
            token,
            backend: Arc::clone(&self.backend),
            slot: Arc::clone(&self.token),
            renewal: Some(renewal),
        }))
    }

    fn lock_holder(&self) -> Result<Option<Holder>, TargetError> {
        self.backend.holder()
    }

    fn check_lock(&self) -> Result<(), TargetError> {
        let Some(token) = self.fence() else {
            return Ok(());
        };
        if let Some(lost) = self.lease_too_old() {
            return Err(lost);
        }
        if self.backend.holds(&token, self.lock_ttl)? {
            return Ok(());
        }
        Err(TargetError::Refused(format!(
            "the deployment lock on {} was lost: its lease ran out before it was renewed (a \
             pause, a partition), so another deployment may hold it now; this run writes \
             nothing more",
            self.backend.describe()
        )))
    }

    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self.get(JOURNAL)?.map(|i| i.value.into_bytes()))
    }

    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError> {
        let value = text(bytes, "the journal")?;
        self.put(&[Write::put(JOURNAL, value, Expect::Any)])
            .map(drop)
    }

    fn clear_journal(&self) -> Result<(), TargetError> {
        self.put(&[Write::delete(JOURNAL, Expect::Any)]).map(drop)
    }

    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self
            .get(&format!("blob/{name}"))?
            .map(|i| i.value.into_bytes()))
    }

    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        let value = text(bytes, name)?;
        self.put(&[Write::put(format!("blob/{name}"), value, Expect::Any)])
            .map(drop)
    }

    fn clear_blob(&self, name: &str) -> Result<(), TargetError> {
        self.put(&[Write::delete(format!("blob/{name}"), Expect::Any)])
            .map(drop)
    }

    fn rewrites_are_cheap(&self) -> bool {
        false
    }

    fn state_location(&self, item: StateItem) -> String {
        self.item_of(match item {
            StateItem::Stamp => STAMP,
            StateItem::Journal => JOURNAL,
            StateItem::Log => "log/*",
        })
    }

    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let Some(item) = self.get(SECRET_KEY)? else {
            return Ok(None);
        };
        crate::secret::unhex(item.value.trim())
            .map(Some)
            .ok_or_else(|| corrupt(SECRET_KEY, "not hex"))
    }

    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError> {
        if let Some(k) = self.secret_key()? {
            return Ok(k);
        }
        let key = crate::target::random_bytes("the secret key")?;
        let hex = crate::secret::hex(&key);
        match self.put(&[Write::put(SECRET_KEY, hex, Expect::Absent)]) {
            Ok(_) => Ok(key),
            Err(e) => self.secret_key()?.ok_or(e),
        }
    }
}

impl GenerationStore for Shared {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        Ok(self.live()?.0)
    }

    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError> {
        let live = self.live()?.0;
        let mut out = Vec::new();
        for (key, item) in self.list_all(GENERATIONS)? {
            let v: Value = serde_json::from_str(&item.value).map_err(|e| corrupt(&key, e))?;
            out.push(Self::info(&v, live).ok_or_else(|| corrupt(&key, "no `id`"))?);
        }
        out.sort_by_key(|g| g.id);
        Ok(out)
    }

    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        let (v, _) = self
            .generation_item(id)?
            .ok_or(TargetError::NoGeneration(id))?;
        let Some(Value::Object(res)) = v.get("resources") else {
            return Err(corrupt(&generation_key(id), "no `resources`"));
        };
        res.iter()
            .map(|(k, t)| {
                if let Some(problem) = crate::config::resource_name_problem(k) {
                    return Err(corrupt(
                        &generation_key(id),
                        format!(
                            "it names the resource `{k}` ({problem}), which envlock never writes"
                        ),
                    ));
                }
                match t.as_str() {
                    Some(t) => Ok((k.clone(), t.as_bytes().to_vec())),
                    None => Err(corrupt(&generation_key(id), format!("`{k}` is not text"))),
                }
            })
            .collect()
    }

    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<GenerationId, TargetError> {
        let (live, version) = self.live()?;
        let newest = match self.last(GENERATIONS)? {
            Some((key, _)) => key[GENERATIONS.len()..]
                .parse::<GenerationId>()
                .map_err(|_| corrupt(&key, "not a generation id"))?,
            None => 0,
        };
        let id = newest
            .max(live.unwrap_or(0))
            .checked_add(1)
            .filter(|id| *id < MAX_ID)
            .ok_or_else(|| {
                corrupt(
                    &generation_key(newest),
                    "its id is the largest there can be, so no generation can follow it",
                )
            })?;
        let body = Self::generation_json(id, resources, private, meta)?;
        self.put(&[
            Write::put(generation_key(id), body, Expect::Absent),
            self.live_write(Some(id), version),
        ])?;
        Ok(id)
    }

    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError> {
        if let Some(id) = id
            && self.generation_item(id)?.is_none()
        {
            return Err(TargetError::NoGeneration(id));
        }
        let (_, version) = self.live()?;
        self.put(&[self.live_write(id, version)]).map(drop)
    }

    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError> {
        let (mut v, item) = self
            .generation_item(id)?
            .ok_or(TargetError::NoGeneration(id))?;
        v["failed"] = reason.into();
        self.put(&[Write::put(
            generation_key(id),
            v.to_string(),
            Expect::Version(item.version),
        )])
        .map(drop)
    }

    fn discard(&self, id: GenerationId) -> Result<(), TargetError> {
        if self.live()?.0 == Some(id) {
            return Err(TargetError::Refused(format!(
                "generation {id} is live; refusing to discard it"
            )));
        }
        self.put(&[Write::delete(generation_key(id), Expect::Any)])
            .map(drop)
    }

    fn prune(&self, keep: usize) -> Result<Pruned, TargetError> {
        let live = self.live()?.0;
        let ids: Vec<GenerationId> = self.generations()?.iter().map(|g| g.id).collect();
        let cut = ids.len().saturating_sub(keep);
        let doomed: Vec<GenerationId> = ids[..cut]
            .iter()
            .copied()
            .filter(|id| Some(*id) != live)
            .collect();
        for chunk in doomed.chunks(MAX_WRITES) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|id| Write::delete(generation_key(*id), Expect::Any))
                .collect();
            self.put(&writes)?;
        }
        Ok(Pruned {
            generations: doomed,
            leftovers: Vec::new(),
        })
    }

    fn leftovers(&self) -> Result<Vec<String>, TargetError> {
        // One atomic put writes a generation and makes it live: nothing is left half-done.
        Ok(Vec::new())
    }

    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }
}

impl LogStore for Shared {
    fn log_tail(&self) -> Result<LogTail, TargetError> {
        // An item's last line is its record (damage a seal set aside comes before it).
        let last = |value: String| match value.rfind('\n') {
            Some(at) => value.as_bytes()[at + 1..].to_vec(),
            None => value.into_bytes(),
        };
        Ok(LogTail {
            last: self.last(LOG)?.map(|(_, i)| last(i.value)),
            complete_len: 0,
            incomplete: 0,
        })
    }

    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let items = self.list_all(LOG)?;
        if items.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(items.iter().map(|(_, i)| i.value.len() + 1).sum());
        for (_, item) in items {
            out.extend_from_slice(item.value.as_bytes());
            out.push(b'\n');
        }
        Ok(Some(out))
    }

    fn log_append(&self, line: &[u8]) -> Result<(), TargetError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let value = text(line, "the log record")?;
        // The record's own `seq` names its item: two appends after the same record collide.
        let seq = match serde_json::from_str::<Value>(&value)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
        {
            Some(seq) => seq,
            None => match self.last(LOG)? {
                Some((key, _)) => key[LOG.len()..].parse::<u64>().unwrap_or(0) + 1,
                None => 1,
            },
        };
        self.put(&[
            Write::put(log_key(seq), value, Expect::Absent),
            checkpoint(seq),
        ])
        .map(drop)
    }

    fn log_cut(&self, _len: u64) -> Result<(), TargetError> {
        // Records are whole items: there is never an incomplete one to cut.
        Ok(())
    }

    fn log_untouched(&self) -> Result<bool, TargetError> {
        // No cheap proof that no record was edited: the whole log is verified.
        Ok(false)
    }

    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        let Some(item) = self.get(LOG_CHECKPOINT)? else {
            return Ok(None);
        };
        let appended = serde_json::from_str::<Value>(&item.value)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .ok_or_else(|| corrupt(LOG_CHECKPOINT, "no `seq`"))?;
        let last = match self.last(LOG)? {
            Some((key, _)) => key[LOG.len()..].parse::<u64>().unwrap_or(0),
            None => 0,
        };
        Ok((last < appended).then(|| {
            format!(
                "the log ends at record {last}, but record {appended} was appended (its checkpoint, {})",
                self.item_of(LOG_CHECKPOINT)
            )
        }))
    }
}

/// A held lock on a shared backend: a thread renews its lease until it is dropped.
#[derive(Debug)]
struct SharedLock {
    holder: Holder,
    token: String,
    backend: Arc<dyn Backend>,
    slot: Arc<Mutex<Option<String>>>,
    renewal: Option<Renewal>,
}

impl LockGuard for SharedLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        drop(self.renewal.take());
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // If this fails the lease lapses on its own.
        let _ = self.backend.unlock(&self.token);
    }
}
