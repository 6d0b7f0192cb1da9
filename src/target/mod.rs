//! Where an environment's settings land: the [`Target`] trait and one module per kind.
//!
//! Every kind provides an identity stamp, a lock, the live state, an atomic apply, generations
//! to roll back to, and storage for the crash journal and the deployment log (SPEC section 3):
//! `dir` in files, `etcd` in keys beside its prefix, `exec` in a `dir` target at `[target] state`
//! while a provider program holds the resources.
//! Invariants: nothing here prints; every I/O error names what it was doing and the path; an
//! unsafe layout (a symlink that leaves the target, a foreign stamp) is [`TargetError::Refused`],
//! never silently worked around.

pub mod dir;
pub mod etcd;
pub mod exec;
pub mod paths;
pub mod perms;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Exit, Failure};

pub use dir::DirTarget;
pub use etcd::EtcdTarget;
pub use exec::ExecTarget;

/// The stamp format this build writes and understands.
pub const STAMP_VERSION: u32 = 1;

/// Who a target belongs to (written on first apply, checked on every later one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub environment: String,
    pub account: String,
    /// When the target was adopted, RFC 3339 UTC.
    pub created: String,
    /// Format version of the stamp ([`STAMP_VERSION`]).
    pub version: u32,
}

impl Stamp {
    /// A stamp for `environment` and `account`, created now.
    pub fn new(environment: impl Into<String>, account: impl Into<String>) -> Self {
        Stamp {
            environment: environment.into(),
            account: account.into(),
            created: now_rfc3339(),
            version: STAMP_VERSION,
        }
    }

    /// True when this stamp says the same environment and account as `other`.
    pub fn same_owner(&self, other: &Stamp) -> bool {
        self.environment == other.environment && self.account == other.account
    }
}

/// What a target says about its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StampState {
    /// The target is missing or empty: `deploy adopt` (or, unless the environment is
    /// protected, the first apply) adopts it.
    Absent,
    /// The target carries this stamp; the caller compares it with the environment.
    Stamped(Stamp),
    /// The target holds data but no stamp: never adopted, never written to.
    Unstamped {
        /// The first entries found (at most ten, sorted), for the message.
        entries: Vec<String>,
        /// How many entries there are in all.
        total: usize,
    },
}

/// Who holds a deployment lock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// When the lock was taken, RFC 3339 UTC.
    pub since: String,
    /// The environment being deployed by the holder.
    pub environment: String,
}

impl Holder {
    /// This process, deploying `environment`, from now on.
    pub fn this_process(environment: impl Into<String>) -> Self {
        let user = crate::sysenv::var("USER")
            .or_else(|| crate::sysenv::var("LOGNAME"))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(user_from_uid);
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        Holder {
            user,
            host,
            pid: std::process::id(),
            since: now_rfc3339(),
            environment: environment.into(),
        }
    }

    /// The holder to report when the lock file cannot be read (it is being written, or garbage).
    pub fn unknown() -> Self {
        Holder {
            user: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            since: "unknown".into(),
            environment: "unknown".into(),
        }
    }
}

/// The name of this process's user from `/etc/passwd`, or `uid N` (when `USER` is not set, as
/// under cron or in containers).
fn user_from_uid() -> String {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?;
            (id.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A generation's number: increases by one with every apply.
pub type GenerationId = u64;

/// The live resources of a target: resource name -> the exact bytes stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// The live generation; `None` when nothing was ever applied.
    pub generation: Option<GenerationId>,
    pub resources: BTreeMap<String, Vec<u8>>,
}

/// One generation a target keeps for rollback.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenerationInfo {
    pub id: GenerationId,
    /// The `commit` key of the apply's metadata (empty if it had none).
    pub commit: String,
    /// The `created` key of the apply's metadata, else when the generation was written.
    pub created: String,
    /// True for the generation readers see now.
    pub live: bool,
    /// Why it failed its health check, when it did (see [`store::GenerationStore::mark_failed`]).
    pub failed: Option<String>,
    /// The metadata given to [`Target::apply`], as stored.
    pub meta: serde_json::Value,
}

impl GenerationInfo {
    /// The `config_sha256` its metadata records (empty when it has none).
    pub fn config_sha256(&self) -> String {
        self.meta
            .get("config_sha256")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// Differences between the live resources and what envlock wrote into the live generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// False when there is nothing to compare with (no live generation, or one written
    /// without checksums).
    pub checked: bool,
    pub edited: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.edited.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }

    /// Keep only the resources in `names`.
    pub fn retain(&mut self, names: &BTreeSet<String>) {
        for list in [&mut self.edited, &mut self.added, &mut self.removed] {
            list.retain(|n| names.contains(n));
        }
    }

    /// The drift of `names` between what was written (`written`: resource -> what envlock
    /// stored, as `same` compares it) and `live`.
    pub fn between<W>(
        written: &BTreeMap<String, W>,
        live: &BTreeMap<String, Vec<u8>>,
        names: &BTreeSet<String>,
        same: impl Fn(&W, &[u8]) -> bool,
    ) -> Drift {
        let mut drift = Drift {
            checked: true,
            ..Drift::default()
        };
        for name in names {
            match (written.get(name), live.get(name)) {
                (Some(_), None) => drift.removed.push(name.clone()),
                (None, Some(_)) => drift.added.push(name.clone()),
                (Some(w), Some(bytes)) if !same(w, bytes) => drift.edited.push(name.clone()),
                _ => {}
            }
        }
        drift
    }
}

/// SHA-256 of some bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// What [`store::GenerationStore::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Generations deleted, oldest first.
    pub generations: Vec<GenerationId>,
    /// Leftovers of interrupted runs that were deleted (see [`store::GenerationStore::leftovers`]).
    pub leftovers: Vec<String>,
}

/// Why a target operation failed.
#[derive(thiserror::Error, Debug)]
pub enum TargetError {
    /// Another deployment holds the lock (exit 5).
    #[error(
        "the target is locked by {}@{} (pid {}, deploying `{}`) since {}",
        .0.user, .0.host, .0.pid, .0.environment, .0.since
    )]
    Locked(Holder),
    /// The target is in a state that is unsafe to read or write (exit 3).
    #[error("{0}")]
    Refused(String),
    /// envlock's state could be changed by someone else: another owner, or writable by every
    /// user (exit 3); `hint` says what to run.
    #[error("{message}")]
    Insecure { message: String, hint: String },
    /// An operating-system call failed.
    #[error("could not {what} {}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target's own files do not have the shape envlock writes.
    #[error("the target's state is corrupt: {0}")]
    Corrupt(String),
    /// A remote store did not answer or refused a request (exit 1); the message names it.
    #[error("{0}")]
    Remote(String),
    /// A change is larger than the target can apply atomically (exit 1).
    #[error("{0}")]
    TooLarge(String),
    /// An `exec` provider failed; `log` holds the last lines of its stderr (exit 1).
    #[error("{message}")]
    Provider { message: String, log: Vec<String> },
    /// Changes were made and could not all be undone; the message lists the state of every
    /// resource involved (exit 1, never 4: nothing was rolled back completely).
    #[error("{0}")]
    Partial(String),
    /// [`Target::activate`] was asked for a generation that the target does not keep.
    #[error("generation {0} does not exist on this target")]
    NoGeneration(GenerationId),
}

impl TargetError {
    /// The exit code of SPEC section 2 for this error.
    pub fn exit(&self) -> Exit {
        match self {
            TargetError::Locked(_) => Exit::Locked,
            TargetError::Refused(_) | TargetError::Insecure { .. } => Exit::Refused,
            TargetError::Io { .. }
            | TargetError::Corrupt(_)
            | TargetError::Remote(_)
            | TargetError::TooLarge(_)
            | TargetError::Provider { .. }
            | TargetError::Partial(_)
            | TargetError::NoGeneration(_) => Exit::Error,
        }
    }
}

impl From<TargetError> for Failure {
    fn from(err: TargetError) -> Failure {
        let failure = Failure::new(err.exit(), err.to_string());
        match &err {
            TargetError::Locked(_) => failure.hint(
                "wait for that deployment to finish; a holder that died releases the lock by itself",
            ),
            TargetError::Io { source, .. } => failure.detail(source.to_string()),
            TargetError::Insecure { hint, .. } => failure.hint(hint.clone()),
            TargetError::Provider { log, .. } => {
                log.iter().fold(failure, |f, line| f.detail(line.clone()))
            }
            _ => failure,
        }
    }
}

/// One kind of place where settings land: the resources (read, apply, undo). Its state (stamp,
/// lock, journals, generations, log) is the [`store::Store`] supertrait: `dir` and `etcd`
/// keep it with their resources (their atomic step writes both), an `exec` target in the
/// store its configuration names. Callers hold the lock for every call that writes.
pub trait Target: store::Store {
    /// A short human description, e.g. `dir /srv/asr`.
    fn describe(&self) -> String;
    /// The account the target's own credentials reach, and who they are (an `exec` provider's
    /// `identity`), for the owner check before anything is read; `None` when the target cannot
    /// tell.
    fn account(&self) -> Result<Option<(String, Option<String>)>, TargetError> {
        Ok(None)
    }
    /// For a target whose stamp is absent, called after the owner checks: what it already holds
    /// that envlock did not write (the first names, sorted, and how many in all), which refuses
    /// the adoption. `dir` and `etcd` report this through [`store::StateStore::stamp`] already.
    fn unadopted_contents(&self) -> Result<Option<(Vec<String>, usize)>, TargetError> {
        Ok(None)
    }
    /// Finish what an interrupted run left half-done inside the target itself (an `exec`
    /// target undoes the steps its undo journal lists), under the lock, before the deployment's
    /// own journal is resolved. Returns what it did, for the operator and the log.
    fn settle(&self) -> Result<Option<String>, TargetError> {
        Ok(None)
    }
    /// The live generation and its resources.
    fn live(&self) -> Result<Live, TargetError>;
    /// Resources of the last [`Target::live`] that the target itself stores as secret (an
    /// `exec` provider's `"secret": true`), whether or not envlock wrote them: their values are
    /// masked in every diff.
    fn secret_resources(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }
    /// Whether [`Target::apply`] of `resources` over the live state last read can be done
    /// atomically at all (an etcd transaction has limits); checked before anything is written.
    fn check_fits(&self, resources: &BTreeMap<String, Vec<u8>>) -> Result<(), TargetError> {
        let _ = resources;
        Ok(())
    }
    /// Write a complete new generation (durably) and make it live atomically. Returns its id.
    /// Resources named in `private` hold secrets: only the deploying user may read them.
    fn apply(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError>;
    /// True when the target writes bookkeeping atomically with its changes: the crash journal
    /// within [`Target::apply_journaled`], and the clearing of the journal within
    /// [`Target::log_append_clear_journal`]. Such a target needs no journal before an apply.
    fn atomic_bookkeeping(&self) -> bool {
        false
    }
    /// [`Target::apply`], writing `journal(id)` (the journal of the deployment, once the new
    /// generation `id` is live) in the same atomic step. Only called when
    /// [`Target::atomic_bookkeeping`] is true.
    fn apply_journaled(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
        journal: &dyn Fn(GenerationId) -> Vec<u8>,
    ) -> Result<GenerationId, TargetError> {
        let id = self.apply(resources, private, meta)?;
        self.write_journal(&journal(id))?;
        Ok(id)
    }
    /// Append a log line and remove the crash journal in one atomic step (when
    /// [`Target::atomic_bookkeeping`]; otherwise one after the other).
    fn log_append_clear_journal(&self, line: &[u8]) -> Result<(), TargetError> {
        self.log_append(line)?;
        self.clear_journal()
    }
    /// How the live resources differ from what was written into the live generation (hand
    /// edits, files added or removed behind envlock's back).
    fn drift(&self) -> Result<Drift, TargetError>;
    /// [`Target::drift`] of the resources `names` only, given `live`, what [`Target::live`]
    /// just read (a plan marks the changes that revert drift without reading the target again
    /// where the target can tell from `live`).
    fn drift_of(&self, live: &Live, names: &BTreeSet<String>) -> Result<Drift, TargetError> {
        let _ = live;
        let mut drift = self.drift()?;
        drift.retain(names);
        Ok(drift)
    }
    /// Make an existing generation live atomically.
    fn activate(&self, id: GenerationId) -> Result<(), TargetError>;
    /// Undo the apply that made `failed` live, for an automatic rollback (a failed apply or
    /// health check, an interrupted run resolved by the next one): every resource that apply
    /// touched gets back exactly the bytes that were live before it (a hand edit made since
    /// the last deployment included, or its absence), and `previous` is live again (`None`: no
    /// generation). An explicit `deploy rollback` uses [`Target::activate`] instead. By
    /// default that is the same thing: a `dir` generation is its files, hand edits included.
    fn undo_apply(
        &self,
        failed: GenerationId,
        previous: Option<GenerationId>,
    ) -> Result<(), TargetError> {
        let _ = failed;
        match previous {
            Some(p) => self.activate(p),
            None => self.deactivate(),
        }
    }
    /// Make no generation live (undo the very first apply). Generations are kept.
    fn deactivate(&self) -> Result<(), TargetError>;
}

/// The items of state every target keeps (see [`store::StateStore::state_location`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateItem {
    Stamp,
    Journal,
    Log,
}

/// The end of a deployment log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The last complete line, without its newline.
    pub last: Option<Vec<u8>>,
    /// The length of the log up to and including the last newline.
    pub complete_len: u64,
    /// Bytes after the last newline (an incomplete record).
    pub incomplete: usize,
}

/// A held deployment lock; dropping it releases the lock.
pub trait LockGuard: std::fmt::Debug {
    fn holder(&self) -> &Holder;
}

/// Random bytes from the kernel for `what` (a secret key, a transaction id).
pub fn random_bytes(what: &str) -> Result<Vec<u8>, TargetError> {
    crate::secret::random_key().map_err(|e| TargetError::Io {
        what: "read random bytes for".into(),
        path: what.into(),
        source: e,
    })
}

/// A thread that renews a lock's lease every `every` until dropped (then it is stopped and
/// joined). `renew` returns false when the lease is lost: renewing stops.
#[derive(Debug)]
pub struct Renewal {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Renewal {
    pub fn start(
        every: std::time::Duration,
        mut renew: impl FnMut() -> bool + Send + 'static,
    ) -> Renewal {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if !renew() {
                    return;
                }
            }
        });
        Renewal {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The current time as RFC 3339 UTC with seconds, e.g. `2026-11-21T20:25:30Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
