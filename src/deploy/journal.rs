//! The crash journal: what a deployment is about to do, written before it does it.
//!
//! A deployment writes the journal (durably, in the target's state area) before its first
//! change and updates it at each phase; it removes it when the deployment is finished, whether
//! it succeeded or rolled back. A journal found by the next run, under the lock, therefore means
//! the previous run died (`kill -9`, power loss, a second Ctrl-C) and says where.

use serde::{Deserialize, Serialize};

use crate::log::Changes;
use crate::target::{GenerationId, Holder};

/// The journal format this build writes and understands.
pub const JOURNAL_VERSION: u32 = 1;

/// Where an interrupted deployment was.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Writing the new generation and switching to it; `previous` is live until the switch.
    Switching,
    /// `next` is live and its health check is running.
    Verifying,
    /// `next` failed; `previous` is being made live again.
    RollingBack,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Journal {
    pub version: u32,
    /// `apply` or `rollback`.
    pub action: String,
    pub phase: Phase,
    pub environment: String,
    pub account: String,
    /// The commit being deployed (for `rollback`, the commit of the generation made live).
    pub commit: String,
    /// The generation that was live before (`None`: nothing was).
    pub previous: Option<GenerationId>,
    /// The generation being made live, once known.
    pub next: Option<GenerationId>,
    /// The newest generation that existed before this deployment: any newer one that is not
    /// live was written by it and never made live.
    #[serde(default)]
    pub newest: Option<GenerationId>,
    pub holder: Holder,
    /// The `seq` of the deployment log's last record when the deployment started: a later
    /// record means the outcome was recorded before the run died.
    #[serde(default)]
    pub log_seq: Option<u64>,
    /// What the log record of this deployment will say.
    #[serde(default)]
    pub config_sha256: String,
    #[serde(default)]
    pub changes: Changes,
    #[serde(default)]
    pub plan_sha256: Option<String>,
    /// True when this deployment adopted (stamped) the target.
    #[serde(default)]
    pub adopted: bool,
}

impl Journal {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Journal, String> {
        let journal: Journal = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if journal.version > JOURNAL_VERSION {
            return Err(format!(
                "format version {} is newer than this envlock understands ({JOURNAL_VERSION})",
                journal.version
            ));
        }
        Ok(journal)
    }

    /// `apply of commit abc123456789 by alice@host (pid 42) since 2026-…`.
    pub fn describe(&self) -> String {
        format!(
            "{} of commit {} by {}@{} (pid {}, started {})",
            self.action,
            &self.commit[..self.commit.len().min(12)],
            self.holder.user,
            self.holder.host,
            self.holder.pid,
            self.holder.since
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_newer_versions() {
        let j = Journal {
            version: JOURNAL_VERSION,
            action: "apply".into(),
            phase: Phase::Verifying,
            environment: "prod".into(),
            account: "222222222222".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            previous: Some(3),
            next: Some(4),
            newest: Some(4),
            holder: Holder::this_process("prod"),
            log_seq: Some(7),
            config_sha256: "a".repeat(64),
            changes: Changes::default(),
            plan_sha256: None,
            adopted: false,
        };
        assert_eq!(Journal::from_bytes(&j.to_bytes()).unwrap(), j);
        assert!(
            String::from_utf8(j.to_bytes())
                .unwrap()
                .contains("\"phase\": \"verifying\"")
        );
        let newer = Journal {
            version: JOURNAL_VERSION + 1,
            ..j
        };
        let err = Journal::from_bytes(&newer.to_bytes()).unwrap_err();
        assert!(err.contains("newer"), "{err}");
    }
}
