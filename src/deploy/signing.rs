//! Who may deploy where: before a run writes anything, the key that will sign its records must
//! be one that `allowed_signers` at the deployed commit allows for the environment (exit 3
//! otherwise). Without the file, records stay unsigned, as before.

use std::sync::Arc;

use anyhow::Result;

use super::Deployment;
use crate::error::Failure;
use crate::log::Policy;
use crate::repo::Repo;
use crate::signing::{self, ALLOWED_SIGNERS, AllowedSigners, Verdict};

/// `allowed_signers` as of `commit`.
pub fn policy_at(repo: &Repo, commit: &str) -> Policy {
    let short: String = commit.chars().take(12).collect();
    if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Policy::Missing(format!(
            "`{short}` is not a commit id, so no {ALLOWED_SIGNERS} can judge it"
        ));
    }
    match repo.root_file(commit, ALLOWED_SIGNERS) {
        Ok(None) => Policy::Absent,
        Ok(Some(bytes)) => match parse(&bytes) {
            Ok(a) => Policy::Present(Arc::new(a)),
            Err(e) => Policy::Unreadable(format!("{ALLOWED_SIGNERS} at commit {short}: {e}")),
        },
        Err(e) => Policy::Missing(format!(
            "{ALLOWED_SIGNERS} at commit {short} cannot be read ({e}); fetch that commit"
        )),
    }
}

/// Parse the file's bytes.
pub fn parse(bytes: &[u8]) -> Result<AllowedSigners, signing::ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| signing::ParseError {
        line: 1,
        col: 1,
        message: format!("not UTF-8: {e}"),
    })?;
    AllowedSigners::parse(text)
}

/// The key this run signs with: `None` when the commit has no `allowed_signers`; a refusal
/// (exit 3) when there is no key, or the key is not allowed for the environment.
pub fn authorize(d: &Deployment<'_>) -> Result<Option<Arc<signing::Key>>> {
    let env = &d.env.name;
    let short = d.commit.short();
    let allowed = match policy_at(d.repo, &d.commit.id.to_string()) {
        Policy::Absent => return Ok(None),
        Policy::Present(a) => a,
        Policy::Unreadable(why) | Policy::Missing(why) => {
            return Err(
                Failure::refused(format!("who may deploy `{env}` cannot be read: {why}"))
                    .hint("`deploy check` shows the problem; nothing was written")
                    .into(),
            );
        }
    };
    let key = signing::find_key(&allowed, env).map_err(|e| {
        Failure::refused(format!(
            "`{env}` is deployed only with a key that {ALLOWED_SIGNERS} (commit {short}) allows, and {e}"
        ))
        .hint(format!(
            "load your key into the ssh-agent (`ssh-add`), or set {} to a private key file (CI: from its secret store); nothing was written",
            signing::KEY_VARIABLE
        ))
    })?;
    let fp = key.fingerprint().to_owned();
    let from = key.source();
    let ns = signing::namespace(env);
    match allowed.verdict(key.public(), env) {
        Verdict::Allowed(_) => Ok(Some(Arc::new(key.allowed_at(&d.commit.id.to_string())))),
        Verdict::NotForEnvironment(who) => Err(Failure::refused(format!(
            "key {fp} ({who}, from {from}) may not deploy `{env}`: its line in {ALLOWED_SIGNERS} at commit {short} does not list namespace `{ns}`"
        ))
        .hint(format!(
            "add `{ns}` to that line's namespaces=\"…\" in a reviewed commit, or deploy with a key that is allowed for `{env}`; nothing was written"
        ))
        .into()),
        Verdict::Unknown => Err(Failure::refused(format!(
            "key {fp} (from {from}) may not deploy `{env}`: {ALLOWED_SIGNERS} at commit {short} does not list it"
        ))
        .hint(format!(
            "to allow it, add `you@example.com namespaces=\"{ns}\" {}` to {ALLOWED_SIGNERS} in a reviewed commit; nothing was written",
            key.public().to_openssh().unwrap_or_default()
        ))
        .into()),
    }
}
