//! The `exec` target: resources live in a system only a provider program can reach (a cloud
//! account's parameter store), one conditional write at a time; envlock's own state (stamp, lock,
//! generations, journals, log, secret key) lives in a [`Store`]: a directory, etcd, or the
//! provider itself (`[target] state`, `[target.state]`).
//!
//! Atomic from the user's point of view: before the first write an undo journal
//! (the store's private item `exec-journal.json`; in a directory mode 0600: it holds previous
//! values) lists every step
//! with the value it replaces; each step records the version it produced; on the first failure,
//! a conflict, a failed health check (through [`Target::activate`]) or in the next run after a
//! crash ([`Target::settle`]), the applied steps are undone in reverse order, each guarded by the
//! version envlock's own write produced. A step whose undo fails is reported resource by
//! resource ([`TargetError::Partial`]) and its journal kept, so the next run tries again first.
//!
//! Invariants: every write carries the version it expects (a concurrent writer makes the run
//! stale, never overwritten); right before the first write the scope is read again and must be
//! exactly what the plan read; the generation in `state` is switched only after every step
//! succeeded, so "live generation" means "what the provider holds".

pub mod provider;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::provider::{CallError, Item, Provider, Remote};
use super::store::Store;
use super::{
    Drift, GenerationId, GenerationInfo, Holder, Live, LockGuard, LogTail, Pruned, Stamp,
    StampState, StateItem, Target, TargetError,
};

const EXEC_JOURNAL: &str = "exec-journal.json";
const EXEC_JOURNAL_VERSION: u32 = 1;
/// What the last convergence wrote, kept after it completed (mode 0600: it holds previous
/// values), so that an automatic rollback restores exactly what an apply replaced.
const EXEC_APPLIED: &str = "exec-applied.json";
/// How many names an [`StampState::Unstamped`] lists.
const MAX_LISTED: usize = 10;

/// An `exec` target: a provider for the resources, a [`Store`] for envlock's state.
#[derive(Debug)]
pub struct ExecTarget {
    provider: Arc<Provider>,
    state: Box<dyn Store>,
    /// The state directory as written in the environment, for messages.
    state_display: String,
    /// What the last `read` (or this process's own writes) left: the versions the next write
    /// must find.
    seen: Mutex<Option<BTreeMap<String, Remote>>>,
    /// Set once this run lost its lock half-way: why, and what it left (see `lock_lost`).
    lost: Mutex<Option<String>>,
}

/// One change to one resource, as the undo journal records it.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Step {
    resource: String,
    /// `put` or `delete`.
    op: StepOp,
    /// The value and version it replaces (`None`: the resource did not exist).
    before: Option<Before>,
    /// The value a `put` writes.
    after: Option<Value>,
    /// Whether the value written holds secrets.
    secret: bool,
    /// Whether an undo must treat the previous value as secret.
    before_secret: bool,
    /// The version the provider reported after the step succeeded.
    version: Option<String>,
    /// Set once the step succeeded; cleared again once it was undone.
    done: bool,
    undone: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StepOp {
    Put,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Before {
    value: Value,
    version: String,
}

/// The undo journal of one convergence (an apply, an activate, a deactivate).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct ExecJournal {
    version: u32,
    /// `apply`, `activate` or `deactivate`.
    action: String,
    /// The generation live in `state` when it started: another one live means it completed.
    from: Option<GenerationId>,
    steps: Vec<Step>,
}

/// A live resource as the canonical TOML every target diffs in; a secret that is not a JSON
/// object is shown only by its hash.
fn canonical_live(r: &Remote) -> Vec<u8> {
    match super::etcd::toml_text_of_json(&r.value) {
        Some(text) => text.into_bytes(),
        None if r.secret => format!(
            "# a secret value that is not a JSON object (not shown; SHA-256 {})\n",
            super::sha256_hex(
                serde_json::to_string(&r.value)
                    .unwrap_or_default()
                    .as_bytes()
            )
        )
        .into_bytes(),
        None => canonical(&r.value),
    }
}

/// A resource's settings as the canonical TOML every target diffs in.
fn canonical(value: &Value) -> Vec<u8> {
    match super::etcd::toml_text_of_json(value) {
        Some(text) => text.into_bytes(),
        None => {
            let shown = serde_json::to_string(value).unwrap_or_default();
            format!(
                "# not a JSON object as envlock writes it:\n# {}\n",
                shown.replace('\n', "\n# ")
            )
            .into_bytes()
        }
    }
}

/// The JSON a provider receives for a resource's canonical TOML.
fn wire_value(name: &str, toml_text: &[u8]) -> Result<Value, TargetError> {
    super::etcd::resource_json(toml_text)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| TargetError::Corrupt(format!("resource `{name}` cannot be sent: {e}")))
}

fn call_error(err: CallError) -> TargetError {
    match err {
        CallError::Conflict(m) | CallError::LockLost(m) => TargetError::Refused(m),
        CallError::Failed { message, log } => TargetError::Provider { message, log },
    }
}

/// Mark `step` done (at the live version) if `live` shows that its write happened although no
/// answer said so: a crash before the answer, or a provider that wrote and then answered an
/// error.
fn judge_in_flight(step: &mut Step, live: &BTreeMap<String, Remote>) {
    let now = live.get(&step.resource);
    let happened = match step.op {
        StepOp::Put => now.is_some_and(|r| {
            step.after.as_ref().map(canonical) == Some(canonical(&r.value))
                && step.before.as_ref().is_none_or(|b| b.version != r.version)
        }),
        StepOp::Delete => now.is_none(),
    };
    if happened {
        step.done = true;
        step.version = now.map(|r| r.version.clone());
    }
}

/// Record step `i` as done at `version` (`None`: deleted), and what the provider now holds.
fn mark_done(
    journal: &mut ExecJournal,
    i: usize,
    version: Option<String>,
    after: &mut BTreeMap<String, Remote>,
) {
    let step = &mut journal.steps[i];
    step.done = true;
    step.version.clone_from(&version);
    match (version, &step.after) {
        (Some(v), Some(value)) => {
            after.insert(
                step.resource.clone(),
                Remote {
                    value: value.clone(),
                    version: v,
                    secret: step.secret,
                },
            );
        }
        _ => {
            after.remove(&step.resource);
        }
    }
}

/// The batch item that performs `step`.
fn item_of(step: &Step) -> Item<'_> {
    let expect = step.before.as_ref().map(|b| b.version.as_str());
    match step.op {
        StepOp::Put => Item::Put {
            resource: &step.resource,
            value: step.after.as_ref().unwrap_or(&Value::Null),
            secret: step.secret,
            expect,
        },
        StepOp::Delete => Item::Delete {
            resource: &step.resource,
            expect: expect.unwrap_or_default(),
        },
    }
}

/// The resources named by a generation's `secrets` metadata.
fn secret_resources(meta: &Value) -> BTreeSet<String> {
    meta.get("secrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("resource").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

impl ExecTarget {
    pub fn new(provider: Arc<Provider>, state: Box<dyn Store>, state_display: String) -> Self {
        ExecTarget {
            provider,
            state,
            state_display,
            seen: Mutex::new(None),
            lost: Mutex::new(None),
        }
    }

    /// Refused with what [`Self::lock_lost`] said once this run lost its lock: every later
    /// write of the run (a rollback, a journal) says that, not a vaguer refusal.
    fn not_lost(&self) -> Result<(), TargetError> {
        match &*self.lost.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(message) => Err(TargetError::Partial(message.clone())),
            None => Ok(()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<String, Remote>>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> Result<BTreeMap<String, Remote>, TargetError> {
        self.provider.read().map_err(call_error)
    }

    /// Where the undo journal is, for messages.
    fn journal_location(&self) -> String {
        format!("{} item {EXEC_JOURNAL}", self.state.describe_state())
    }

    fn read_exec_journal(&self) -> Result<Option<ExecJournal>, TargetError> {
        let journal = match self.state.read_blob(EXEC_JOURNAL)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TargetError::Corrupt(format!("{} cannot be read: {e}", self.journal_location()))
            })?,
            None => return Ok(None),
        };
        self.check_names(&journal, &self.journal_location())?;
        Ok(Some(journal))
    }

    /// No resource `journal` (read back from the state store) names may lead out of the
    /// provider's scope (`..`, a leading `/`): an undo never writes where a hand-edited item
    /// points. (A journal may name resources envlock did not create, found at the provider.)
    fn check_names(&self, journal: &ExecJournal, item: &str) -> Result<(), TargetError> {
        let escapes = |name: &str| {
            name.is_empty()
                || name.starts_with('/')
                || name.contains('\0')
                || name.split(['/', '\\']).any(|part| part == "..")
        };
        let Some(name) = journal
            .steps
            .iter()
            .map(|s| &s.resource)
            .find(|n| escapes(n))
        else {
            return Ok(());
        };
        Err(TargetError::Refused(format!(
            "{item} names the resource `{name}`, which leads out of the provider's scope: \
             envlock never wrote that, so the item was changed by hand; refusing to undo \
             anything from it; nothing was written: find out who changed it, then remove the item"
        )))
    }

    /// Replace the undo journal durably (private: it holds previous values).
    fn write_exec_journal(&self, journal: &ExecJournal) -> Result<(), TargetError> {
        self.write_private(EXEC_JOURNAL, journal)
    }

    /// Record the steps done (or undone) so far. A store where rewriting the whole journal
    /// after every step costs a network round trip of its whole size (a shared store: the
    /// cost would grow with the square of the resources) keeps the journal written before the
    /// first step: recovery judges every step it does not mark done from a fresh read
    /// (`judge_in_flight`), which tells a write that landed, and one undone, by the live value.
    fn note_progress(&self, journal: &ExecJournal) -> Result<(), TargetError> {
        if self.state.rewrites_are_cheap() {
            self.write_exec_journal(journal)
        } else {
            Ok(())
        }
    }

    /// Replace the private item `name` with `value` as JSON.
    fn write_private(&self, name: &str, value: &impl Serialize) -> Result<(), TargetError> {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.state.write_blob(name, &bytes)
    }

    fn clear_exec_journal(&self) -> Result<(), TargetError> {
        self.state.clear_blob(EXEC_JOURNAL)
    }

    /// Read the scope again; it must be exactly what this process saw last (the plan's read, or
    /// its own writes). Returns the fresh read.
    fn require_seen(&self) -> Result<BTreeMap<String, Remote>, TargetError> {
        let now = self.read()?;
        let seen = self.seen().clone();
        let Some(seen) = seen else {
            return Ok(now);
        };
        let names: BTreeSet<&String> = seen.keys().chain(now.keys()).collect();
        for name in names {
            let moved = match (seen.get(name), now.get(name)) {
                (Some(a), Some(b)) if a.version == b.version => continue,
                (Some(a), Some(b)) => format!("changed (version {} -> {})", a.version, b.version),
                (Some(_), None) => "deleted".to_owned(),
                (None, Some(_)) => "created".to_owned(),
                (None, None) => continue,
            };
            return Err(TargetError::Refused(format!(
                "`{name}` was {moved} by someone else after envlock read it (provider `{}`); nothing was written",
                self.provider.name()
            )));
        }
        Ok(now)
    }

    /// The steps that turn `now` into `want` (canonical TOML per resource): puts in name order,
    /// then deletions in name order.
    fn steps(
        &self,
        now: &BTreeMap<String, Remote>,
        want: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        before_private: &BTreeSet<String>,
    ) -> Result<Vec<Step>, TargetError> {
        let mut steps = Vec::new();
        for (name, text) in want {
            let before = now.get(name);
            if before.is_some_and(|b| canonical(&b.value) == *text) {
                continue;
            }
            steps.push(Step {
                resource: name.clone(),
                op: StepOp::Put,
                before: before.map(|b| Before {
                    value: b.value.clone(),
                    version: b.version.clone(),
                }),
                after: Some(wire_value(name, text)?),
                secret: private.contains(name),
                before_secret: before_private.contains(name) || private.contains(name),
                version: None,
                done: false,
                undone: false,
            });
        }
        for (name, b) in now {
            if !want.contains_key(name) {
                steps.push(Step {
                    resource: name.clone(),
                    op: StepOp::Delete,
                    before: Some(Before {
                        value: b.value.clone(),
                        version: b.version.clone(),
                    }),
                    after: None,
                    secret: false,
                    before_secret: before_private.contains(name),
                    version: None,
                    done: false,
                    undone: false,
                });
            }
        }
        Ok(steps)
    }

    /// The resources of the live generation that hold secrets (from its metadata).
    fn live_private(&self) -> Result<BTreeSet<String>, TargetError> {
        let Some(id) = self.state.live_generation()? else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .state
            .generations()?
            .iter()
            .find(|g| g.id == id)
            .map(|g| secret_resources(&g.meta))
            .unwrap_or_default())
    }

    /// Make the provider hold exactly `want`, one step at a time (or one batch at a time, for a
    /// protocol-2 provider) under an undo journal, then `switch` the state's live generation.
    /// Any failure undoes the steps done so far.
    fn converge(
        &self,
        action: &str,
        want: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        switch: &dyn Fn() -> Result<GenerationId, TargetError>,
    ) -> Result<GenerationId, TargetError> {
        self.not_lost()?;
        // A journal left by an interrupted run is resolved before anything else is written.
        self.settle()?;
        let now = self.require_seen()?;
        let before_private = self.live_private()?;
        let steps = self.steps(&now, want, private, &before_private)?;
        let mut journal = ExecJournal {
            version: EXEC_JOURNAL_VERSION,
            action: action.to_owned(),
            from: self.state.live_generation()?,
            steps,
        };
        if !journal.steps.is_empty() {
            self.write_exec_journal(&journal)?;
        }
        let mut after = now;
        match self.provider.capabilities().map_err(call_error)? {
            Some(caps) if !journal.steps.is_empty() => {
                self.apply_in_batches(&mut journal, &mut after, caps.max)?;
            }
            _ => self.apply_one_by_one(&mut journal, &mut after)?,
        }
        // Before the switch: once the new generation is live, an automatic rollback finds what
        // this convergence replaced.
        let switched = self
            .write_private(EXEC_APPLIED, &journal)
            .map_err(|e| format!("recording what was replaced failed: {e}"))
            .and_then(|()| {
                crate::failpoint::hit("exec-before-switch");
                switch().map_err(|e| format!("recording the new state failed: {e}"))
            });
        let id = match switched {
            Ok(id) => id,
            Err(why) => {
                let failed = CallError::Failed {
                    message: why,
                    log: Vec::new(),
                };
                return Err(self.abort(&mut journal, failed, ""));
            }
        };
        *self.seen() = Some(after);
        self.clear_exec_journal()?;
        Ok(id)
    }

    /// Protocol 1: one provider call per step, the journal written after each.
    fn apply_one_by_one(
        &self,
        journal: &mut ExecJournal,
        after: &mut BTreeMap<String, Remote>,
    ) -> Result<(), TargetError> {
        for i in 0..journal.steps.len() {
            crate::failpoint::hit(&format!("exec-before-step-{}", i + 1));
            if let Err(lost) = self.state.check_lock() {
                return Err(self.lock_lost(journal, lost));
            }
            let step = &journal.steps[i];
            let expect = step.before.as_ref().map(|b| b.version.as_str());
            let result = match step.op {
                StepOp::Put => self
                    .provider
                    .put(
                        &step.resource,
                        step.after.as_ref().unwrap_or(&Value::Null),
                        step.secret,
                        expect,
                    )
                    .map(Some),
                StepOp::Delete => self
                    .provider
                    .delete(&step.resource, expect.unwrap_or_default())
                    .map(|()| None),
            };
            match result {
                Ok(version) => {
                    mark_done(journal, i, version, after);
                    self.record_steps(journal, i)?;
                }
                Err(err) => {
                    // The write may have landed despite the answer (SSM has no conditional
                    // put: a writer between its check and its put gets overwritten): look, so
                    // that the undo covers it too.
                    return Err(self.fail_pending(journal, i..i + 1, err, Some(i)));
                }
            }
        }
        Ok(())
    }

    /// Protocol 2: the steps in batches of at most `max` items, one `apply` request each, the
    /// journal written before the first and after each batch. After a failed batch the scope
    /// is read, and every step of the batch without a success answer is judged by what the
    /// provider holds, so the undo covers whatever landed (atomic provider or not).
    fn apply_in_batches(
        &self,
        journal: &mut ExecJournal,
        after: &mut BTreeMap<String, Remote>,
        max: usize,
    ) -> Result<(), TargetError> {
        let total = journal.steps.len();
        for (b, start) in (0..total).step_by(max.max(1)).enumerate() {
            let range = start..(start + max).min(total);
            crate::failpoint::hit(&format!("exec-before-batch-{}", b + 1));
            if let Err(lost) = self.state.check_lock() {
                return Err(self.lock_lost(journal, lost));
            }
            let items: Vec<Item<'_>> = journal.steps[range.clone()].iter().map(item_of).collect();
            let answer = self.provider.apply_batch(&items);
            crate::failpoint::hit(&format!("exec-after-batch-{}", b + 1));
            let results = match answer {
                Ok(results) => results,
                Err(err) => return Err(self.fail_pending(journal, range, err, None)),
            };
            let mut failure = None;
            for (i, result) in range.clone().zip(results) {
                match result {
                    Ok(version) => mark_done(journal, i, version, after),
                    Err(err) => failure = Some((err, i)),
                }
            }
            if let Some((err, i)) = failure {
                return Err(self.fail_pending(journal, range, err, Some(i)));
            }
            self.record_steps(journal, range.end - 1)?;
        }
        Ok(())
    }

    /// Write the journal after step `i` succeeded; a step it cannot record is undone now, while
    /// this process still knows it happened.
    fn record_steps(&self, journal: &mut ExecJournal, i: usize) -> Result<(), TargetError> {
        if let Err(e) = self.note_progress(journal) {
            let name = journal.steps[i].resource.clone();
            let failed = CallError::Failed {
                message: format!("recording the step of `{name}` failed: {e}"),
                log: Vec::new(),
            };
            return Err(self.abort(journal, failed, &name));
        }
        Ok(())
    }

    /// After `err` among the steps `range` (at step `failed`, when one item failed): judge each of them without an answer by a fresh
    /// read (its write may have landed all the same), then undo everything done.
    fn fail_pending(
        &self,
        journal: &mut ExecJournal,
        range: std::ops::Range<usize>,
        err: CallError,
        failed: Option<usize>,
    ) -> TargetError {
        // A step the provider answered `conflict` for did not write: its check failed first.
        // Whatever its resource holds now is another writer's, even a value equal to this
        // step's, and is never undone.
        let refused = failed.filter(|_| matches!(err, CallError::Conflict(_)));
        if let Ok(live) = self.provider.read() {
            for (i, step) in journal.steps[range.clone()].iter_mut().enumerate() {
                if !step.done && Some(range.start + i) != refused {
                    judge_in_flight(step, &live);
                }
            }
        }
        let name = failed.map_or_else(String::new, |i| journal.steps[i].resource.clone());
        self.abort(journal, err, &name)
    }

    /// What the last convergence wrote (see [`EXEC_APPLIED`]).
    fn read_applied(&self) -> Result<Option<ExecJournal>, TargetError> {
        let applied: Option<ExecJournal> = self
            .state
            .read_blob(EXEC_APPLIED)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(a) = &applied {
            let item = format!("{} item {EXEC_APPLIED}", self.state.describe_state());
            self.check_names(a, &item)?;
        }
        Ok(applied)
    }

    /// Put back, in reverse order, the values `applied`'s steps replaced, each only over the
    /// version that step wrote; a resource that already holds its previous value is left as
    /// it is, so running it again after an interruption finishes the job. A resource someone
    /// changed since the apply is not overwritten: refused, naming it.
    fn restore(&self, applied: &ExecJournal, failed: GenerationId) -> Result<(), TargetError> {
        let live = self.read()?;
        for step in applied.steps.iter().rev().filter(|s| s.done) {
            let now = live.get(&step.resource);
            let back = match (&step.before, now) {
                (Some(b), Some(r)) => r.value == b.value,
                (None, None) => true,
                _ => false,
            };
            if back {
                continue;
            }
            let ours = match (now, &step.version) {
                (Some(r), Some(v)) => r.version == *v,
                (None, _) => step.op == StepOp::Delete,
                _ => false,
            };
            if !ours {
                return Err(TargetError::Refused(format!(
                    "`{}` was changed by someone else after generation {failed} wrote it \
                     (provider `{}`); refusing to restore what was there before over it",
                    step.resource,
                    self.provider.name()
                )));
            }
            let version = step.version.as_deref();
            let result = match &step.before {
                Some(b) if now.is_some() => self
                    .provider
                    .put(&step.resource, &b.value, step.before_secret, version)
                    .map(drop),
                Some(b) => self
                    .provider
                    .put(&step.resource, &b.value, step.before_secret, None)
                    .map(drop),
                None => self
                    .provider
                    .delete(&step.resource, version.unwrap_or_default()),
            };
            result.map_err(call_error)?;
        }
        Ok(())
    }

    /// Undo the applied steps after `err` (on `failed`, empty for none) and describe the result.
    fn abort(&self, journal: &mut ExecJournal, err: CallError, failed: &str) -> TargetError {
        // Undoing is writing: a run that lost its lock leaves it to the one that holds it.
        if let Err(lost) = self.state.check_lock() {
            return self.lock_lost(journal, lost);
        }
        let applied = journal.steps.iter().filter(|s| s.done).count();
        let undo = self.undo(journal);
        *self.seen() = None;
        let at = if failed.is_empty() {
            String::new()
        } else {
            format!(" at `{failed}`")
        };
        match undo {
            Ok(()) => {
                let _ = self.clear_exec_journal();
                let undone = if applied == 0 {
                    "nothing had been changed".to_owned()
                } else {
                    format!(
                        "the {applied} change{} already made {} undone in reverse order, so every resource holds its previous value",
                        if applied == 1 { "" } else { "s" },
                        if applied == 1 { "was" } else { "were" },
                    )
                };
                match err {
                    CallError::Conflict(m) | CallError::LockLost(m) => {
                        TargetError::Refused(format!("{m}; {undone}"))
                    }
                    CallError::Failed { message, log } => TargetError::Provider {
                        message: format!("{message}; {undone}"),
                        log,
                    },
                }
            }
            Err(report) => TargetError::Partial(format!(
                "{} (while applying{at}); the changes already made could NOT all be undone:\n{report}\nenvlock kept its undo journal ({}) and tries the undo again first on the next run",
                err.message(),
                self.journal_location()
            )),
        }
    }

    /// This run lost its lock (`lost` says so) before its next write to the provider: it writes
    /// nothing more, not even an undo, since another deployment may be at work; the undo
    /// journal it recorded lets that one (or the next) undo what this run changed.
    fn lock_lost(&self, journal: &ExecJournal, lost: TargetError) -> TargetError {
        *self.seen() = None;
        let done: Vec<String> = journal
            .steps
            .iter()
            .filter(|s| s.done)
            .map(|s| format!("`{}`", s.resource))
            .collect();
        if done.is_empty() {
            return TargetError::Refused(format!("{lost}; it had changed nothing at the provider"));
        }
        let message = format!(
            "{lost}; it had changed {} at the provider, which it did not undo: the undo journal \
             it recorded ({}) makes the deployment that holds the lock now, or the next one, undo \
             that first; run `deploy --target {}` again once the lock is free",
            done.join(", "),
            self.journal_location(),
            self.provider.environment
        );
        *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
        TargetError::Partial(message)
    }

    /// Undo every done step in reverse order, each guarded by the version its write produced.
    /// Keeps going past a failed undo; `Err` lists every resource's state.
    fn undo(&self, journal: &mut ExecJournal) -> Result<(), String> {
        let mut failures: BTreeMap<String, String> = BTreeMap::new();
        for i in (0..journal.steps.len()).rev() {
            let step = journal.steps[i].clone();
            if !step.done {
                continue;
            }
            if let Err(e) = self.state.check_lock() {
                // Another deployer may own the resources now: undoing would overwrite its work.
                return Err(format!(
                    "{e}; the undo stopped before `{}`: the next run, from any machine, finishes it from the journal",
                    step.resource
                ));
            }
            let version = step.version.as_deref();
            let result = match (&step.op, &step.before) {
                (StepOp::Put, Some(b)) => self
                    .provider
                    .put(&step.resource, &b.value, step.before_secret, version)
                    .map(drop),
                (StepOp::Put, None) => self
                    .provider
                    .delete(&step.resource, version.unwrap_or_default()),
                (StepOp::Delete, Some(b)) => self
                    .provider
                    .put(&step.resource, &b.value, step.before_secret, None)
                    .map(drop),
                (StepOp::Delete, None) => Ok(()),
            };
            match result {
                Ok(()) => {
                    journal.steps[i].done = false;
                    journal.steps[i].undone = true;
                    let _ = self.note_progress(journal);
                }
                Err(e) => {
                    failures.insert(step.resource.clone(), e.message().to_owned());
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for step in &journal.steps {
            let state = if let Some(why) = failures.get(&step.resource) {
                match step.op {
                    StepOp::Put if step.before.is_some() => {
                        format!("STILL HOLDS THE NEW VALUE (its undo failed: {why})")
                    }
                    StepOp::Put => {
                        format!("STILL EXISTS, created by this deployment (its undo failed: {why})")
                    }
                    StepOp::Delete => format!("STILL DELETED (its undo failed: {why})"),
                }
            } else if step.undone {
                match (step.op, step.before.is_some()) {
                    (StepOp::Put, true) => "restored to its previous value".to_owned(),
                    (StepOp::Put, false) => {
                        "deleted again (this deployment had created it)".to_owned()
                    }
                    (StepOp::Delete, _) => "re-created with its previous value".to_owned(),
                }
            } else {
                "untouched (the deployment never changed it)".to_owned()
            };
            lines.push(format!("  `{}`: {state}", step.resource));
        }
        Err(lines.join("\n"))
    }
}

impl Target for ExecTarget {
    fn describe(&self) -> String {
        format!(
            "exec {} {} (state {})",
            self.provider.name(),
            self.provider.options,
            self.state_display
        )
    }

    fn account(&self) -> Result<Option<(String, Option<String>)>, TargetError> {
        self.provider.identity().map(Some).map_err(call_error)
    }

    fn unadopted_contents(&self) -> Result<Option<(Vec<String>, usize)>, TargetError> {
        // Never adopt a scope that already holds resources envlock did not write.
        let live = self.read()?;
        Ok((!live.is_empty())
            .then(|| (live.keys().take(MAX_LISTED).cloned().collect(), live.len())))
    }

    fn live(&self) -> Result<Live, TargetError> {
        let read = self.read()?;
        let resources = read
            .iter()
            .map(|(name, r)| (name.clone(), canonical_live(r)))
            .collect();
        *self.seen() = Some(read);
        Ok(Live {
            generation: self.state.live_generation()?,
            resources,
        })
    }

    fn secret_resources(&self) -> BTreeSet<String> {
        self.seen()
            .as_ref()
            .map(|seen| {
                seen.iter()
                    .filter(|(_, r)| r.secret)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn apply(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<GenerationId, TargetError> {
        self.converge("apply", resources, private, &|| {
            self.state.record(resources, private, meta)
        })
    }

    fn drift_of(&self, live: &Live, names: &BTreeSet<String>) -> Result<Drift, TargetError> {
        // `live` is the provider's answer just read: only the state's copy is read here.
        let Some(id) = live.generation else {
            return Ok(Drift::default());
        };
        let written = self.state.resources(id)?;
        Ok(Drift::between(
            &written,
            &live.resources,
            names,
            |w, bytes| w.as_slice() == bytes,
        ))
    }

    fn drift(&self) -> Result<Drift, TargetError> {
        let Some(id) = self.state.live_generation()? else {
            return Ok(Drift::default());
        };
        let written = self.state.resources(id)?;
        let live = self.read()?;
        let mut drift = Drift {
            checked: true,
            ..Drift::default()
        };
        for (name, r) in &live {
            match written.get(name) {
                Some(text) if *text == canonical_live(r) => {}
                Some(_) => drift.edited.push(name.clone()),
                None => drift.added.push(name.clone()),
            }
        }
        drift.removed = written
            .keys()
            .filter(|n| !live.contains_key(*n))
            .cloned()
            .collect();
        Ok(drift)
    }

    fn activate(&self, id: GenerationId) -> Result<(), TargetError> {
        let want = self.state.resources(id)?;
        let private = self
            .state
            .generations()?
            .iter()
            .find(|g| g.id == id)
            .map(|g| secret_resources(&g.meta))
            .unwrap_or_default();
        self.converge("activate", &want, &private, &|| {
            self.state.make_live(Some(id)).map(|()| id)
        })
        .map(drop)
    }

    fn undo_apply(
        &self,
        failed: GenerationId,
        previous: Option<GenerationId>,
    ) -> Result<(), TargetError> {
        let applied = self
            .read_applied()?
            .filter(|a| a.action == "apply" && a.from == previous);
        let Some(applied) =
            applied.filter(|_| self.state.live_generation().ok() == Some(Some(failed)))
        else {
            // Not the apply that made `failed` live: its predecessor's values.
            return match previous {
                Some(p) => self.activate(p),
                None => self.deactivate(),
            };
        };
        self.settle()?;
        *self.seen() = None;
        self.restore(&applied, failed)?;
        match previous {
            Some(p) => self.state.make_live(Some(p)),
            None => self.state.make_live(None),
        }
    }

    fn deactivate(&self) -> Result<(), TargetError> {
        self.converge("deactivate", &BTreeMap::new(), &BTreeSet::new(), &|| {
            self.state.make_live(None).map(|()| 0)
        })
        .map(drop)
    }

    fn settle(&self) -> Result<Option<String>, TargetError> {
        let Some(mut journal) = self.read_exec_journal()? else {
            return Ok(None);
        };
        if self.state.live_generation()? != journal.from {
            // Its last step, switching the state's generation, happened: nothing to undo.
            self.clear_exec_journal()?;
            return Ok(Some(format!(
                "its {} had reached the provider completely and was recorded",
                journal.action
            )));
        }
        // A step whose answer never arrived may have happened: the live value tells.
        // With batches, every step of the batch in flight may have happened, each on its own.
        let live = self.read()?;
        for step in journal.steps.iter_mut().filter(|s| !s.done && !s.undone) {
            judge_in_flight(step, &live);
        }
        let applied: Vec<String> = journal
            .steps
            .iter()
            .filter(|s| s.done)
            .map(|s| format!("`{}`", s.resource))
            .collect();
        *self.seen() = None;
        match self.undo(&mut journal) {
            Ok(()) => {
                self.clear_exec_journal()?;
                Ok(Some(if applied.is_empty() {
                    format!("its {} had not changed anything yet", journal.action)
                } else {
                    format!(
                        "its {} had changed {} of {} resources ({}); undid them in reverse order, so every resource holds its previous value",
                        journal.action,
                        applied.len(),
                        journal.steps.len(),
                        applied.join(", ")
                    )
                }))
            }
            Err(report) => Err(TargetError::Partial(format!(
                "an interrupted {} left changes that could NOT all be undone:\n{report}\nenvlock kept its undo journal ({}) and tries again on the next run",
                journal.action,
                self.journal_location()
            ))),
        }
    }
}

impl crate::target::store::StateStore for ExecTarget {
    fn stamp(&self) -> Result<StampState, TargetError> {
        self.state.stamp()
    }

    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError> {
        self.state.write_stamp(stamp)
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError> {
        self.state.lock(holder)
    }

    fn lock_holder(&self) -> Result<Option<Holder>, TargetError> {
        self.state.lock_holder()
    }

    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError> {
        self.state.read_journal()
    }

    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError> {
        self.not_lost()?;
        self.state.write_journal(bytes)
    }

    fn clear_journal(&self) -> Result<(), TargetError> {
        self.state.clear_journal()
    }

    fn state_location(&self, item: StateItem) -> String {
        self.state.state_location(item)
    }

    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        self.state.secret_key()
    }

    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError> {
        self.state.create_secret_key()
    }

    fn describe_state(&self) -> String {
        self.state.describe_state()
    }

    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        self.state.read_blob(name)
    }

    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.state.write_blob(name, bytes)
    }

    fn clear_blob(&self, name: &str) -> Result<(), TargetError> {
        self.state.clear_blob(name)
    }

    fn rewrites_are_cheap(&self) -> bool {
        self.state.rewrites_are_cheap()
    }

    fn check_lock(&self) -> Result<(), TargetError> {
        self.state.check_lock()
    }
}

impl crate::target::store::GenerationStore for ExecTarget {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        self.state.live_generation()
    }

    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        self.state.resources(id)
    }

    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError> {
        self.state.generations()
    }

    fn prune(&self, keep: usize) -> Result<Pruned, TargetError> {
        self.state.prune(keep)
    }

    fn leftovers(&self) -> Result<Vec<String>, TargetError> {
        self.state.leftovers()
    }

    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError> {
        self.state.remove_leftovers()
    }

    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError> {
        self.not_lost()?;
        self.state.mark_failed(id, reason)
    }

    fn discard(&self, id: GenerationId) -> Result<(), TargetError> {
        self.not_lost()?;
        self.state.discard(id)
    }

    /// Only the state's record: the resources are [`Target::apply`]'s.
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &Value,
    ) -> Result<GenerationId, TargetError> {
        self.state.record(resources, private, meta)
    }

    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError> {
        self.state.make_live(id)
    }
}

impl crate::target::store::LogStore for ExecTarget {
    fn log_tail(&self) -> Result<LogTail, TargetError> {
        self.state.log_tail()
    }

    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError> {
        self.state.log_read()
    }

    fn log_open(&self) -> Result<Option<Box<dyn std::io::Read + Send>>, TargetError> {
        self.state.log_open()
    }

    fn log_append(&self, line: &[u8]) -> Result<(), TargetError> {
        self.not_lost()?;
        self.state.log_append(line)
    }

    fn log_untouched(&self) -> Result<bool, TargetError> {
        self.state.log_untouched()
    }

    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        self.state.log_removed()
    }

    fn log_cut(&self, len: u64) -> Result<(), TargetError> {
        self.state.log_cut(len)
    }
}
