//! Secret values: read at deploy time from the deployer's environment variable or file, checked
//! against the schema and the environment lock, and compared by a keyed hash (HMAC-SHA256).
//!
//! Invariants: a value never enters a message, a diff, a plan or metadata; what is shown instead
//! is the reference (`env:NAME`), the settings path and where the reference is written. Values
//! are read only after the target's owner is proven (callers' order) and only here.

use std::path::Path;

use anyhow::Result;

use crate::config::Environment;
use crate::config::node::{SecretRef, SecretSource, Seg, Value, path_text};
use crate::config::schema::has_secret;
use crate::error::Failure;

/// Length of the key that a target keeps for [`hmac_hex`], in bytes.
pub const KEY_LEN: usize = 32;

/// One secret of an environment with its value.
#[derive(Clone)]
pub struct ResolvedSecret {
    pub resource: String,
    /// Path inside the resource's table.
    pub path: Vec<Seg>,
    /// The reference as written: `env:ASR_DB_PASSWORD`.
    pub reference: String,
    /// Where the reference is written: `environments/prod.toml:21:15`.
    pub at: String,
    value: String,
}

impl ResolvedSecret {
    /// The value itself: for rendering the resource file and hashing, never for messages.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for ResolvedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} = (secret {})",
            self.resource,
            path_text(&self.path),
            self.reference
        )
    }
}

/// Every secret value of one environment, read by [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub secrets: Vec<ResolvedSecret>,
}

impl Resolved {
    /// The value of the secret at `path` of `resource`.
    pub fn get(&self, resource: &str, path: &[Seg]) -> Option<&str> {
        self.secrets
            .iter()
            .find(|s| s.resource == resource && s.path == path)
            .map(ResolvedSecret::value)
    }

    /// The values, for the printer's redaction list ([`crate::output::Printer::redact`]).
    pub fn values(&self) -> Vec<String> {
        self.secrets.iter().map(|s| s.value.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl Resolved {
    /// Stand-ins for values that cannot be read (for `status`): each secret takes the value it
    /// has in the live resource files, so that only changes of everything else count; a secret
    /// with no live value gets a stand-in that never matches.
    pub fn assume_live(
        env: &Environment,
        live: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Resolved {
        let mut resolved = Resolved::default();
        // Most resources hold no secret: their live files need not be parsed.
        for (name, res) in env.settings.iter().filter(|(_, r)| has_secret(&r.node)) {
            let table = live
                .get(name)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|t| t.parse::<toml::Table>().ok());
            for (path, _, r) in res.node.secrets() {
                let value = table
                    .as_ref()
                    .and_then(|t| live_value(t, &path))
                    .unwrap_or_else(|| format!("(secret {} not available)", r.text));
                resolved.secrets.push(ResolvedSecret {
                    resource: name.clone(),
                    path,
                    reference: r.text.clone(),
                    at: r.at.clone(),
                    value,
                });
            }
        }
        resolved
    }
}

/// The string at `path` of a live resource table.
fn live_value(table: &toml::Table, path: &[Seg]) -> Option<String> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut v = table.get(first)?;
    for seg in rest {
        v = match (seg, v) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    v.as_str().map(str::to_owned)
}

/// `settings.asr-worker.db_password`.
fn settings_path(resource: &str, path: &[Seg]) -> String {
    let rest = path_text(path);
    if rest.starts_with('[') || rest.is_empty() {
        format!("settings.{resource}{rest}")
    } else {
        format!("settings.{resource}.{rest}")
    }
}

/// Read one value: `Err((why, hint))`.
/// The value of one reference: `Err((why, what to do))` when it cannot be read.
pub fn read(r: &SecretRef, root: &Path) -> Result<String, (String, String)> {
    match &r.source {
        SecretSource::Env(name) => match crate::sysenv::var_os(name) {
            None => Err((
                format!("the environment variable {name} is not set"),
                format!("export {name}=... before deploying"),
            )),
            Some(v) => v.into_string().map_err(|_| {
                (
                    format!("the environment variable {name} is not valid UTF-8"),
                    format!("set {name} to UTF-8 text"),
                )
            }),
        },
        SecretSource::File(path) => {
            let full = root.join(path);
            let bytes = std::fs::read(&full).map_err(|e| {
                (
                    format!("cannot read {}: {e}", full.display()),
                    format!(
                        "put the value in {} (relative paths start at the repository's root) before deploying",
                        full.display()
                    ),
                )
            })?;
            let mut text = String::from_utf8(bytes).map_err(|_| {
                (
                    format!("{} is not valid UTF-8", full.display()),
                    "secret files hold UTF-8 text".to_owned(),
                )
            })?;
            if text.ends_with("\r\n") {
                text.truncate(text.len() - 2);
            } else if text.ends_with('\n') {
                text.truncate(text.len() - 1);
            }
            Ok(text)
        }
    }
}

/// Read every secret value of `env` (files relative to `root`, the repository's working tree),
/// then check each value against the schema and the environment lock. A value that cannot be
/// read or fails the schema is exit 1; one that holds another environment's account or marker
/// is a refusal (exit 3). No message contains a value.
pub fn resolve(env: &Environment, root: &Path) -> Result<Resolved> {
    let mut resolved = Resolved::default();
    let mut problems: Vec<(String, String)> = Vec::new();
    // `Node::secrets` copies every key on its way; most resources have no secret to find.
    for (name, res) in env.settings.iter().filter(|(_, r)| has_secret(&r.node)) {
        for (path, _, r) in res.node.secrets() {
            match read(r, root) {
                Ok(value) => resolved.secrets.push(ResolvedSecret {
                    resource: name.clone(),
                    path,
                    reference: r.text.clone(),
                    at: r.at.clone(),
                    value,
                }),
                Err((why, hint)) => problems.push((
                    format!(
                        "secret `{}` for {} (written at {}): {why}",
                        r.text,
                        settings_path(name, &path),
                        r.at
                    ),
                    hint,
                )),
            }
        }
    }
    if !problems.is_empty() {
        let mut f = Failure::error(if problems.len() == 1 {
            problems[0].0.clone()
        } else {
            format!(
                "{} secrets of `{}` cannot be read; nothing was written",
                problems.len(),
                env.name
            )
        });
        if problems.len() > 1 {
            for (p, _) in &problems {
                f = f.detail(p.clone());
            }
        } else {
            f = f.detail("nothing was written");
        }
        let hints: Vec<&str> = problems.iter().map(|(_, h)| h.as_str()).collect();
        return Err(f.hint(hints.join("; ")).into());
    }
    check_schema(env, &resolved)?;
    check_lock(env, &resolved)?;
    Ok(resolved)
}

/// The schema at each secret's path, with the value in place. Messages name the keyword and
/// the rule, never the instance (jsonschema's own messages include it).
fn check_schema(env: &Environment, resolved: &Resolved) -> Result<()> {
    let Some(validator) = &env.secret_checks.validator else {
        return Ok(());
    };
    if resolved.is_empty() {
        return Ok(());
    }
    let json = serde_json::Value::Object(
        env.settings
            .iter()
            .map(|(name, res)| {
                let node = res.node.replace_secrets(&mut |path, r| {
                    Value::String(
                        resolved
                            .get(name, path)
                            .map_or_else(|| format!("(secret {})", r.text), str::to_owned),
                    )
                });
                (name.clone(), node.to_json())
            })
            .collect(),
    );
    let pointers = crate::config::schema::secret_pointers(env);
    let mut lines = Vec::new();
    for error in validator.iter_errors(&json) {
        let segments: Vec<String> = error
            .instance_path()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Some((_, _, reference)) = pointers.iter().find(|(p, _, _)| *p == segments) else {
            continue;
        };
        let Some(s) = resolved
            .secrets
            .iter()
            .find(|s| &s.reference == reference && pointer_of(s) == segments)
        else {
            continue;
        };
        let at = &s.at;
        lines.push(format!(
            "{} (secret `{}`, written at {at}) violates `{}` at {} in schemas/{}.schema.json",
            settings_path(&s.resource, &s.path),
            s.reference,
            error.kind().keyword(),
            error.schema_path().as_str(),
            env.schema.value
        ));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let mut f = Failure::error(if lines.len() == 1 {
        format!(
            "the value of a secret does not satisfy the schema: {}",
            lines[0]
        )
    } else {
        format!(
            "the values of {} secrets do not satisfy the schema",
            lines.len()
        )
    });
    if lines.len() > 1 {
        for l in lines {
            f = f.detail(l);
        }
    }
    Err(f
        .detail("nothing was written")
        .hint("set the secret to a value the schema accepts (the value is not shown)")
        .into())
}

fn pointer_of(s: &ResolvedSecret) -> Vec<String> {
    std::iter::once(s.resource.clone())
        .chain(s.path.iter().map(|seg| match seg {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        }))
        .collect()
}

/// The environment lock on values: no secret value may contain another environment's account
/// or marker (one inside this environment's own identifiers is not a leak, as in `safety`).
fn check_lock(env: &Environment, resolved: &Resolved) -> Result<()> {
    let ids = &env.secret_checks.identities;
    if resolved.is_empty() || ids.is_empty() {
        return Ok(());
    }
    // The same spellings as the repository-side scan: any letter case, digit groups joined.
    let matcher = crate::safety::spelling::Matcher::new(
        ids.iter()
            .map(|(_, text, is_account)| (text.as_str(), *is_account)),
    )
    .ok_or_else(|| Failure::error("cannot build the identity scan"))?;
    let mut f: Option<Failure> = None;
    for s in &resolved.secrets {
        let mut own = Vec::new();
        let mut foreign = Vec::new();
        matcher.find(s.value(), |start, end, p| {
            if ids[p].0 == env.name {
                own.push((start, end));
            } else {
                foreign.push((start, end, p));
            }
        });
        crate::safety::drop_inside(&mut own, &mut foreign);
        if let Some(&(_, _, pid)) = foreign.first() {
            let (owner, text, is_account) = &ids[pid];
            let at = &s.at;
            let line = format!(
                "the value of secret `{}` for {} (written at {at}) contains the {} of environment `{owner}` ({text})",
                s.reference,
                settings_path(&s.resource, &s.path),
                if *is_account { "account" } else { "marker" },
            );
            f = Some(match f {
                None => Failure::refused(format!("refusing to deploy `{}`: {line}", env.name)),
                Some(f) => f.detail(line),
            });
        }
    }
    match f {
        None => Ok(()),
        Some(f) => Err(f
            .hint(format!(
                "this looks like another environment's secret; set `{}`'s own value (nothing was written)",
                env.name
            ))
            .into()),
    }
}

/// HMAC-SHA256 of `value` under `key`, as lowercase hex.
pub fn hmac_hex(key: &[u8], value: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC accepts keys of any length");
    mac.update(value);
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of lowercase or uppercase hex (`None`: not hex).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// [`KEY_LEN`] random bytes from the kernel (`getrandom(2)`).
pub fn random_key() -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; KEY_LEN];
    let mut filled = 0;
    while filled < key.len() {
        let n = rustix::rand::getrandom(&mut key[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(std::io::Error::from)?;
        filled += n;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn random_keys_differ() {
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        assert_eq!(a.len(), KEY_LEN);
        assert_ne!(a, b);
    }
}
