//! Where envlock keeps its own state for a target: the stamp, the lock, the crash journals,
//! the generations and the deployment log, apart from where the resources land.
//!
//! Every [`super::Target`] is a [`Store`] (the supertrait): the target says where resources
//! land, the store what envlock keeps about them. Three traits, one per job, and [`Store`]
//! for all three:
//! - [`StateStore`]: the stamp (written once), the lock (names its holder, dies with it), the
//!   journals and private blobs (compare-and-swap under the lock), the secret key;
//! - [`GenerationStore`]: the generations kept for rollback and which one is live;
//! - [`LogStore`]: the append-only deployment log, whose appends cannot fork.
//!
//! The stores: a directory ([`super::DirTarget`], one machine), and [`Shared`] over a
//! [`backend::Backend`] that offers compare-and-swap items and a leased lock: etcd
//! ([`etcd::EtcdBackend`]) or the provider itself ([`provider::ProviderBackend`], protocol 2).
//! An `exec` target keeps its state in any of them (`[target] state` or `[target.state]`).
//! A `dir` or `etcd` target keeps its own state where its resources are: their atomic switch
//! (one `rename(2)`, one transaction) writes the generation and the resources together.

pub mod backend;
pub mod etcd;
pub mod parts;
pub mod provider;
pub mod shared;

use std::collections::{BTreeMap, BTreeSet};

use super::{
    GenerationId, GenerationInfo, Holder, LockGuard, LogTail, Pruned, Stamp, StampState, StateItem,
    TargetError,
};

pub use shared::Shared;

/// The stamp, the lock, the journals and the secret key.
pub trait StateStore: std::fmt::Debug + Send + Sync {
    /// Where the state is, for messages: `dir .deploy/cloud-state`, `etcd … /envlock/cloud/`.
    fn describe_state(&self) -> String;
    /// Who the target belongs to. Also refuses a layout that leaves the target (symlinks).
    /// `Absent`: never adopted.
    fn stamp(&self) -> Result<StampState, TargetError>;
    /// Adopt: write the stamp durably, once. Refuses to replace a stamp of another environment
    /// or account, and to stamp a non-empty unstamped target; the same owner again is not an
    /// error.
    fn write_stamp(&self, stamp: &Stamp) -> Result<(), TargetError>;
    /// Take the deployment lock without waiting; [`TargetError::Locked`] names the holder.
    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, TargetError>;
    /// Who holds the deployment lock now (`None`: nobody), found without taking it, so that a
    /// deployer's [`StateStore::lock`] is never made to wait or fail by the one who asks. A
    /// holder that died (its lease ran out) no longer counts.
    fn lock_holder(&self) -> Result<Option<Holder>, TargetError>;
    /// Refused when this process took the lock and no longer holds it (its lease ran out and
    /// another deployer may hold it now): checked before each write the store cannot fence,
    /// such as a provider's resources. A store whose lock cannot be lost has nothing to check.
    fn check_lock(&self) -> Result<(), TargetError> {
        Ok(())
    }
    /// The crash journal of an unfinished deployment, if one was left behind.
    fn read_journal(&self) -> Result<Option<Vec<u8>>, TargetError>;
    /// Replace the crash journal durably.
    fn write_journal(&self, bytes: &[u8]) -> Result<(), TargetError>;
    /// Remove the crash journal durably; no journal is not an error.
    fn clear_journal(&self) -> Result<(), TargetError>;
    /// A private item of the target kind (an `exec` target's undo journal), readable by the
    /// deployer only where the store can tell; `None` when absent.
    fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError>;
    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError>;
    fn clear_blob(&self, name: &str) -> Result<(), TargetError>;
    /// True when rewriting a blob after every step is cheap (a local file); false for a store
    /// across the network, where a target kind writes its journal once and recovers by
    /// reading what is live instead.
    fn rewrites_are_cheap(&self) -> bool {
        true
    }
    /// Where one item of the state lives, for messages: a path, a key.
    fn state_location(&self, item: StateItem) -> String;
    /// The key that secrets are hashed with (HMAC-SHA256); `None` when none was created yet.
    fn secret_key(&self) -> Result<Option<Vec<u8>>, TargetError>;
    /// Create the secret key durably if there is none (readable by its owner only), and return
    /// the key. Called under the deployment lock.
    fn create_secret_key(&self) -> Result<Vec<u8>, TargetError>;
}

/// The generations kept for rollback: each the resources envlock wrote and the metadata.
pub trait GenerationStore {
    /// Only the id of the live generation (cheap: no resource is read).
    fn live_generation(&self) -> Result<Option<GenerationId>, TargetError>;
    /// Every generation kept, oldest first.
    fn generations(&self) -> Result<Vec<GenerationInfo>, TargetError>;
    /// The generation `id`, `None` when it is not kept. By default, from all of them.
    fn generation(&self, id: GenerationId) -> Result<Option<GenerationInfo>, TargetError> {
        Ok(self.generations()?.into_iter().find(|g| g.id == id))
    }
    /// The highest generation id kept. By default, from all the generations.
    fn newest_generation(&self) -> Result<Option<GenerationId>, TargetError> {
        Ok(self.generations()?.iter().map(|g| g.id).max())
    }
    /// The resources of one kept generation, exactly as stored.
    fn resources(&self, id: GenerationId) -> Result<BTreeMap<String, Vec<u8>>, TargetError>;
    /// Record a new generation and make it live, in one atomic step. Returns its id.
    fn record(
        &self,
        resources: &BTreeMap<String, Vec<u8>>,
        private: &BTreeSet<String>,
        meta: &serde_json::Value,
    ) -> Result<GenerationId, TargetError>;
    /// Make a kept generation the live one in the state (`None`: none). Only the record: a
    /// [`super::Target`] makes its resources follow (`activate`).
    fn make_live(&self, id: Option<GenerationId>) -> Result<(), TargetError>;
    /// Record that a generation failed its health check, so that a rollback never picks it
    /// by default. Its resources stay as they were.
    fn mark_failed(&self, id: GenerationId, reason: &str) -> Result<(), TargetError>;
    /// Delete a generation that is not live (one an interrupted apply wrote but never made
    /// live). Deleting one that does not exist is not an error.
    fn discard(&self, id: GenerationId) -> Result<(), TargetError>;
    /// Keep the newest `keep` generations plus the live one, delete the rest and any leftovers.
    fn prune(&self, keep: usize) -> Result<Pruned, TargetError>;
    /// Leftovers of an interrupted apply or activate (nothing live refers to them), for the
    /// next run to report. [`GenerationStore::prune`] removes them.
    fn leftovers(&self) -> Result<Vec<String>, TargetError>;
    /// Remove those leftovers now; every run that takes the lock does, so work in progress of
    /// a run that was killed (a generation being pruned) never stays on disk. Returns them.
    fn remove_leftovers(&self) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }
}

/// The append-only deployment log.
pub trait LogStore {
    /// The end of the deployment log: its last complete line and any incomplete bytes after
    /// it. Reads only the end of the log, whatever its length.
    fn log_tail(&self) -> Result<LogTail, TargetError>;
    /// The whole deployment log (`None`: no record was ever written).
    fn log_read(&self) -> Result<Option<Vec<u8>>, TargetError>;
    /// The deployment log to read a part at a time (`None`: no record was ever written), so
    /// that verifying it holds a bounded part in memory. By default the whole log read at
    /// once; a `dir` log is its open file.
    fn log_open(&self) -> Result<Option<Box<dyn std::io::Read + Send>>, TargetError> {
        Ok(self
            .log_read()?
            .map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn std::io::Read + Send>))
    }
    /// Append one complete line durably (the caller holds the lock); two appends of the same
    /// `seq` can never both succeed.
    fn log_append(&self, line: &[u8]) -> Result<(), TargetError>;
    /// Cut the log back to `len` bytes durably (only to remove an incomplete last record
    /// during crash recovery).
    fn log_cut(&self, len: u64) -> Result<(), TargetError>;
    /// True when the log is exactly as this store's last append left it (nobody wrote it
    /// since), so only its tail needs reading before the next append; false when that cannot
    /// be told cheaply, and the whole log must be verified.
    fn log_untouched(&self) -> Result<bool, TargetError> {
        Ok(false)
    }
    /// When the log is shorter than this store's last append left it (a log only grows, so
    /// records at its end were removed, which no hash chain can show): what was and what is.
    /// `None` when it is not shorter, or when that cannot be told (no checkpoint).
    fn log_removed(&self) -> Result<Option<String>, TargetError> {
        Ok(None)
    }
}

/// Everything a target's state needs.
pub trait Store: StateStore + GenerationStore + LogStore {}
impl<T: StateStore + GenerationStore + LogStore> Store for T {}
