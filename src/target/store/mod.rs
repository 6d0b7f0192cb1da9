//! Where envlock keeps its own state for a target: the stamp, the lock, the crash journals,
//! the generations and the deployment log, apart from where the resources land.
//!
//! Three traits, one per job, and [`Store`] for all three:
//! - [`StateStore`]: the stamp (written once), the lock (names its holder, dies with it), the
//!   journals and private blobs (compare-and-swap under the lock), the secret key;
//! - [`GenerationStore`]: the generations kept for rollback and which one is live;
//! - [`LogStore`]: the append-only deployment log, whose appends cannot fork.
//!
//! The stores: a directory ([`DirTarget`], one machine), and [`Shared`] over a
//! [`backend::Backend`] that offers compare-and-swap items and a leased lock: etcd
//! ([`etcd::EtcdBackend`]) or the provider itself ([`provider::ProviderBackend`], protocol 2).
//! An `exec` target keeps its state in any of them (`[target] state` or `[target.state]`).
//! A `dir` or `etcd` target keeps its own state where its resources are: their atomic switch
//! (one `rename(2)`, one transaction) writes the generation and the resources together.

pub mod backend;
pub mod etcd;
pub mod provider;
pub mod shared;

use std::collections::{BTreeMap, BTreeSet};

use super::{
    DirTarget, GenerationId, GenerationInfo, Holder, LockGuard, LogTail, Pruned, Stamp, StampState,
    StateItem, Target, TargetError,
};

pub use shared::Shared;

/// The stamp, the lock, the journals and the secret key.
pub trait StateStore: std::fmt::Debug + Send + Sync {
    /// Where the state is, for messages: `dir .deploy/cloud-state`, `etcd … /envlock/cloud/`.
    fn describe(&self) -> String;
    /// Who the state belongs to. `Absent`: never adopted.
    fn stamp(&self) -> Result<StampState, TargetError>;
    /// Write the stamp once; the same owner again is not an error, another is refused.
    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError>;
    /// Take the deployment lock without waiting; [`TargetError::Locked`] names the holder.
    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError>;
    /// Who holds the lock now; a holder that died (its lease ran out) no longer counts.
    fn lock_holder(&self) -> Result<Option<Holder>, TargetError>;
    /// Refused when this process took the lock and no longer holds it (its lease ran out and
    /// another deployer may hold it now): checked before each write the store cannot fence,
    /// such as a provider's resources. A store whose lock cannot be lost has nothing to check.
    fn check_lock(&self) -> Result<(), TargetError> {
        Ok(())
    }
    /// The deployment's crash journal.
    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError>;
    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError>;
    fn clear_journal(&self) -> Result<(), TargetError>;
    /// A private item of the target kind (an `exec` target's undo journal), readable by the
    /// deployer only where the store can tell; `None` when absent.
    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError>;
    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError>;
    fn clear_blob(&self, name: &str) -> Result<(), TargetError>;
    /// Where one item lives, for messages.
    fn state_location(&self, item: StateItem) -> String;
    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError>;
    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError>;
}

/// The generations kept for rollback: each the resources envlock wrote and the metadata.
pub trait GenerationStore {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError>;
    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError>;
    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError>;
    /// Whether a generation of `resources` can be recorded at all (a size limit per item);
    /// checked before anything is written.
    fn check_fits(&self, resources: &BTreeMap<String, Vec<u8>>) -> Result<(), TargetError> {
        let _ = resources;
        Ok(())
    }
    /// Record a new generation and make it live, in one atomic step. Returns its id.
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError>;
    /// Make a kept generation live (`None`: none).
    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError>;
    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError>;
    fn discard(&self, id: GenerationId) -> Result<(), TargetError>;
    fn prune(&self, keep: usize) -> Result<Pruned, TargetError>;
    fn leftovers(&self) -> Result<Vec<String>, TargetError>;
    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError>;
}

/// The append-only deployment log.
pub trait LogStore {
    fn log_tail(&self) -> Result<LogTail, TargetError>;
    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError>;
    /// Append one complete line; two appends of the same `seq` can never both succeed.
    fn log_append(&self, line: &[u8]) -> Result<(), TargetError>;
    fn log_cut(&self, len: u64) -> Result<(), TargetError>;
    fn log_untouched(&self) -> Result<bool, TargetError>;
    fn log_removed(&self) -> Result<Option<String>, TargetError>;
}

/// Everything a target's state needs.
pub trait Store: StateStore + GenerationStore + LogStore {}
impl<T: StateStore + GenerationStore + LogStore> Store for T {}

impl StateStore for DirTarget {
    fn describe(&self) -> String {
        Target::describe(self)
    }
    fn stamp(&self) -> Result<StampState, TargetError> {
        Target::stamp(self)
    }
    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError> {
        Target::write_stamp(self, stamp)
    }
    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError> {
        Target::lock(self, holder)
    }
    fn lock_holder(&self) -> Result<Option<Holder>, TargetError> {
        Target::lock_holder(self)
    }
    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError> {
        Target::read_journal(self)
    }
    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError> {
        Target::write_journal(self, bytes)
    }
    fn clear_journal(&self) -> Result<(), TargetError> {
        Target::clear_journal(self)
    }
    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        self.read_private(name)
    }
    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.write_private(name, bytes)
    }
    fn clear_blob(&self, name: &str) -> Result<(), TargetError> {
        self.remove_private(name)
    }
    fn state_location(&self, item: StateItem) -> String {
        Target::state_location(self, item)
    }
    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError> {
        Target::secret_key(self)
    }
    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError> {
        Target::create_secret_key(self)
    }
}

impl GenerationStore for DirTarget {
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        Target::live_generation(self)
    }
    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError> {
        Target::generations(self)
    }
    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
        Target::resources(self, id)
    }
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError> {
        Target::apply(self, resources, private, meta)
    }
    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError> {
        match id {
            Some(id) => Target::activate(self, id),
            None => Target::deactivate(self),
        }
    }
    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError> {
        Target::mark_failed(self, id, reason)
    }
    fn discard(&self, id: GenerationId) -> Result<(), TargetError> {
        Target::discard(self, id)
    }
    fn prune(&self, keep: usize) -> Result<Pruned, TargetError> {
        Target::prune(self, keep)
    }
    fn leftovers(&self) -> Result<Vec<String>, TargetError> {
        Target::leftovers(self)
    }
    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError> {
        Target::remove_leftovers(self)
    }
}

impl LogStore for DirTarget {
    fn log_tail(&self) -> Result<LogTail, TargetError> {
        Target::log_tail(self)
    }
    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError> {
        Target::log_read(self)
    }
    fn log_append(&self, line: &[u8]) -> Result<(), TargetError> {
        Target::log_append(self, line)
    }
    fn log_cut(&self, len: u64) -> Result<(), TargetError> {
        Target::log_cut(self, len)
    }
    fn log_untouched(&self) -> Result<bool, TargetError> {
        Target::log_untouched(self)
    }
    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        Target::log_removed(self)
    }
}
