//! The one seam a shared state store varies on: items with versions, written by
//! compare-and-swap (several at once, all or nothing), and a lock with a lease.
//!
//! [`super::Shared`] builds envlock's state (stamp, journals, generations, log) on any
//! [`Backend`]; etcd and a protocol-2 provider are the two there are.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::target::{Holder, TargetError};

/// One stored item: its value and the version the backend gave its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: String,
    pub version: String,
}

/// What a write requires of the item's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The item must not exist (create-only).
    Absent,
    /// The item must be at this version.
    Version(String),
    /// No condition.
    Any,
}

/// One write of an atomic [`Backend::put`]: `value` `None` deletes the item.
#[derive(Clone, Debug)]
pub struct Write {
    pub key: String,
    pub value: Option<String>,
    pub expect: Expect,
}

impl Write {
    pub fn put(key: impl Into<String>, value: impl Into<String>, expect: Expect) -> Write {
        Write {
            key: key.into(),
            value: Some(value.into()),
            expect,
        }
    }

    pub fn delete(key: impl Into<String>, expect: Expect) -> Write {
        Write {
            key: key.into(),
            value: None,
            expect,
        }
    }
}

/// Why an atomic put wrote nothing.
#[derive(Debug)]
pub enum PutError {
    /// A condition did not hold; the message names the item.
    Conflict(String),
    /// The lock named as the fence is no longer held by this run.
    LockLost(String),
    /// The backend failed.
    Failed(TargetError),
}

impl From<TargetError> for PutError {
    fn from(e: TargetError) -> Self {
        PutError::Failed(e)
    }
}

/// The most writes one [`Backend::put`] carries (DynamoDB's transaction limit is 100; etcd's
/// default `--max-txn-ops` is 128).
pub const MAX_WRITES: usize = 25;

/// A store of versioned items and one leased lock.
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// For messages: `etcd http://… /envlock/cloud/`, `provider providers/aws-ssm/provider`.
    fn describe(&self) -> String;
    /// The largest value one item may hold, in bytes.
    fn max_value(&self) -> usize;
    /// The most bytes of values one [`Backend::put`] may carry.
    fn max_put(&self) -> usize;
    /// The items `keys`, in order (`None`: absent).
    fn get(&self, keys: &[&str]) -> Result<Vec<Option<Item>>, TargetError>;
    /// Items whose key starts with `prefix`, in key order (last first when `reverse`), after
    /// `after` in that order, at most `limit`; and whether there are more.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<(String, Item)>, bool), TargetError>;
    /// Every write or none, each under its condition, and (with `fence`) only while the lock
    /// is held by that token. The new versions of the items put.
    fn put(
        &self,
        writes: &[Write],
        fence: Option<&str>,
    ) -> Result<BTreeMap<String, String>, PutError>;
    /// Take the lock for `ttl`: `Ok(token)`, or `Err(holder)` when someone else holds it.
    fn lock(&self, holder: &Holder, ttl: Duration) -> Result<Result<String, Holder>, TargetError>;
    /// Extend the lease; false when the token no longer holds the lock.
    fn renew(&self, token: &str, ttl: Duration) -> Result<bool, TargetError>;
    /// Whether `token` still holds the lock, checked before a write that the backend cannot
    /// fence itself (a provider's resources); renewing it answers that where nothing cheaper
    /// does.
    fn holds(&self, token: &str, ttl: Duration) -> Result<bool, TargetError> {
        self.renew(token, ttl)
    }
    /// Release the lock if `token` holds it.
    fn unlock(&self, token: &str) -> Result<(), TargetError>;
    /// Who holds the lock now (a lapsed lease is nobody).
    fn holder(&self) -> Result<Option<Holder>, TargetError>;
}
