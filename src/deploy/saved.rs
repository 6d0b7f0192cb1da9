//! Saved plans (SPEC section 5): `deploy plan --out FILE` writes one; `deploy apply --plan FILE`
//! applies exactly it or refuses.
//!
//! A plan binds the environment, its account and target, the commit, `config_sha256`, a hash
//! of the live state it was computed from, the SHA-256 of every resource file it would write,
//! and the changes shown for review; `checksum` is the SHA-256 of the document's canonical JSON
//! without `checksum`. Applying re-renders the commit's configuration and writes it only if it
//! is byte-for-byte what the plan hashed, against the very live state it was computed from.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::Environment;
use crate::error::Failure;
use crate::hash::{self, Sha256Writer};
use crate::log::Changes;
use crate::plan::{Change, Desired};
use crate::target::{GenerationId, Live, sha256_hex};

/// What `format` says in every saved plan.
pub const FORMAT: &str = "envlock-plan";
/// The plan format this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    pub format: String,
    pub version: u32,
    pub environment: String,
    pub account: String,
    /// The target as the environment file says (`dir targets/prod`).
    pub target: String,
    pub commit: String,
    pub config_sha256: String,
    /// What was live when the plan was computed.
    pub live: LiveState,
    /// Resource -> SHA-256 of the exact file the apply writes (for a file that holds a
    /// secret: `hmac-sha256:` and its keyed hash, so the plan cannot be used to guess it).
    pub resources: BTreeMap<String, String>,
    /// False when the plan was made before the target had a secret key: the secrets' values
    /// are then read when the plan is applied, not bound by it.
    pub secrets_bound: bool,
    /// True when the target had no stamp when the plan was made (applying it adopts a new,
    /// empty target); absent from plans of adopted targets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_target: bool,
    pub summary: Changes,
    pub changes: Vec<Change>,
    pub created: String,
    pub operator: String,
    /// SHA-256 of this document's canonical JSON without `checksum`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LiveState {
    pub generation: Option<GenerationId>,
    /// See [`live_sha256`].
    pub sha256: String,
}

/// A hash of a live state: the live generation and the SHA-256 of each live resource file.
pub fn live_sha256(live: &Live) -> String {
    use std::io::Write;
    // The hash of the text `generation <id>\n` and `<name> <sha256 hex>\n` per resource,
    // streamed (no text, no `String` per resource).
    let mut w = Sha256Writer::default();
    let _ = match live.generation {
        Some(g) => writeln!(w, "generation {g}"),
        None => writeln!(w, "generation none"),
    };
    for (name, bytes) in &live.resources {
        let _ = w.write_all(name.as_bytes());
        let _ = w.write_all(b" ");
        let _ = w.write_all(&hash::sha256_hex_bytes(bytes));
        let _ = w.write_all(b"\n");
    }
    w.hex()
}

/// Resource -> SHA-256 of its file, or the keyed hash of a file that holds a secret.
pub fn resource_hashes(desired: &Desired, key: &[u8]) -> BTreeMap<String, String> {
    desired
        .files
        .iter()
        .map(|(k, v)| {
            let hash = if desired.private.contains(k) {
                format!("hmac-sha256:{}", crate::secret::hmac_hex(key, v))
            } else {
                sha256_hex(v)
            };
            (k.clone(), hash)
        })
        .collect()
}

/// The changes as a saved plan shows them (scrubbed of secret values, as [`SavedPlan::seal`]
/// writes them), and as `apply --plan` recomputes them to compare.
pub fn reviewed_changes(changes: &[Change]) -> Vec<Change> {
    crate::redact::scrubbed(changes.to_vec())
}

impl SavedPlan {
    fn computed_checksum(&self) -> String {
        // Without `checksum` (an empty one is not serialized): no copy needed when it is empty.
        let sum = if self.checksum.is_empty() {
            hash::json_sha256_hex(self)
        } else {
            let mut doc = self.clone();
            doc.checksum.clear();
            hash::json_sha256_hex(&doc)
        };
        sum.expect("a plan serializes")
    }

    /// Scrub every registered secret value ([`crate::redact`]), then fill in `checksum`.
    pub fn seal(self) -> Self {
        let mut s = crate::redact::scrubbed(self);
        s.checksum = s.computed_checksum();
        s
    }

    /// The checksum recorded in the log when this plan is applied.
    pub fn id(&self) -> &str {
        &self.checksum
    }

    /// Write the plan to `path` (atomically: a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or_else(|| "plan".to_owned(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let fail = |what: &str, e: std::io::Error| {
            Failure::error(format!("cannot {what} {}: {e}", path.display()))
                .hint("--out names the file to write the plan to; its directory must exist")
        };
        std::fs::write(&tmp, &bytes).map_err(|e| fail("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail("write", e)
        })?;
        Ok(())
    }

    /// Read and check a plan file: readable, a plan, this format, and not edited.
    pub fn read(path: &Path) -> Result<SavedPlan> {
        let bytes = std::fs::read(path).map_err(|e| {
            Failure::error(format!("cannot read the plan {}: {e}", path.display()))
                .hint("`deploy plan --target NAME --out FILE` writes one")
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::refused(format!(
                "{} is not a saved plan: it is not JSON ({e})",
                path.display()
            ))
            .hint("`deploy plan --target NAME --out FILE` writes one; nothing was changed")
        })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(Failure::refused(format!(
                "{} is not a saved envlock plan (no `\"format\": \"{FORMAT}\"`)",
                path.display()
            ))
            .hint("`deploy plan --target NAME --out FILE` writes one; nothing was changed")
            .into());
        }
        if let Some(v) = value.get("version").and_then(|v| v.as_u64())
            && v > u64::from(VERSION)
        {
            return Err(Failure::refused(format!(
                "{} is a plan of format version {v}, newer than this envlock understands ({VERSION})",
                path.display()
            ))
            .hint("apply it with the envlock version that wrote it, or plan again")
            .into());
        }
        let plan: SavedPlan = serde_json::from_value(value).map_err(|e| {
            Failure::refused(format!(
                "the plan {} was edited: it does not have the fields envlock writes ({e})",
                path.display()
            ))
            .hint("plan again with `deploy plan --target NAME --out FILE`; nothing was changed")
        })?;
        let expected = plan.computed_checksum();
        if plan.checksum != expected {
            return Err(Failure::refused(format!(
                "the plan {} was edited after it was written: its checksum does not match its content",
                path.display()
            ))
            .detail(format!("checksum in the file: {}", plan.checksum))
            .detail(format!("checksum of the content: {expected}"))
            .hint("a reviewed plan must be applied as written; plan again with `deploy plan --target NAME --out FILE`; nothing was changed")
            .into());
        }
        Ok(plan)
    }

    /// The plan must be for this environment, its account and its target (exit 3 otherwise).
    pub fn check_owner(&self, env: &Environment, path: &Path) -> Result<()> {
        let foreign = |what: String| -> anyhow::Error {
            Failure::refused(format!(
                "the plan {} is for {what}, not for `{}` (account {})",
                path.display(),
                env.name,
                env.account.value
            ))
            .hint(format!(
                "apply each environment's own plan (`deploy plan --target {} --out FILE`); nothing was changed",
                env.name
            ))
            .into()
        };
        if self.environment != env.name {
            return Err(foreign(format!(
                "environment `{}` (account {})",
                self.environment, self.account
            )));
        }
        if self.account != env.account.value {
            return Err(foreign(format!("account {}", self.account)));
        }
        if self.target != env.target.describe() {
            return Err(foreign(format!("target {}", self.target)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the live state was hashed before it was streamed: the text, then its hash.
    fn live_sha256_of_text(live: &Live) -> String {
        let mut text = format!(
            "generation {}\n",
            live.generation.map_or("none".to_owned(), |g| g.to_string())
        );
        for (name, bytes) in &live.resources {
            text.push_str(&format!("{name} {}\n", sha256_hex(bytes)));
        }
        sha256_hex(text.as_bytes())
    }

    #[test]
    fn the_live_hash_is_the_hash_of_its_text() {
        let resources: BTreeMap<String, Vec<u8>> = (0..3000)
            .map(|i| (format!("r-{i:05}"), format!("x = {i}\n").into_bytes()))
            .chain([("empty".to_owned(), Vec::new())])
            .collect();
        for generation in [None, Some(1), Some(12345)] {
            let live = Live {
                generation,
                resources: resources.clone(),
            };
            assert_eq!(live_sha256(&live), live_sha256_of_text(&live));
        }
        let empty = Live {
            generation: None,
            resources: BTreeMap::new(),
        };
        assert_eq!(live_sha256(&empty), live_sha256_of_text(&empty));
    }

    #[test]
    fn the_checksum_is_the_hash_of_the_json_without_it() {
        let plan = SavedPlan {
            format: FORMAT.to_owned(),
            version: VERSION,
            environment: "prod".into(),
            account: "123456789012".into(),
            target: "dir /srv/prod".into(),
            commit: "c".repeat(40),
            config_sha256: "a".repeat(64),
            live: LiveState {
                generation: Some(3),
                sha256: "b".repeat(64),
            },
            resources: [("r".to_owned(), "d".repeat(64))].into(),
            secrets_bound: true,
            new_target: false,
            summary: Changes::default(),
            changes: Vec::new(),
            created: "2026-11-22T00:00:00Z".into(),
            operator: "me@host".into(),
            checksum: String::new(),
        };
        let want = sha256_hex(&serde_json::to_vec(&plan).unwrap());
        let sealed = plan.seal();
        assert_eq!(sealed.checksum, want);
        assert_eq!(sealed.computed_checksum(), want);
    }
}
