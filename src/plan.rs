//! Desired vs live resources -> a plan (pure: no I/O). Text diffs come from `similar`.
//!
//! Invariant: a plan is computed from exact bytes, so "no changes" means the live files are
//! byte-for-byte what this commit renders.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use similar::TextDiff;

use crate::config::Environment;
use crate::config::node::{Node, Seg, Value, parse_path, path_text};
use crate::config::schema::has_secret;
use crate::render;
use crate::secret::{self, Resolved};

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

impl Action {
    pub fn sign(self) -> char {
        match self {
            Action::Add => '+',
            Action::Change => '~',
            Action::Remove => '-',
        }
    }
}

/// One resource's change, with a unified diff of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub resource: String,
    pub action: Action,
    pub diff: String,
}

/// Everything that would change, and the complete desired state it leads to.
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// The new generation: its files, which of them hold secrets, and the secrets' hashes.
    pub desired: Desired,
}

/// One secret as a generation records it: where it is and a keyed hash of its value, never
/// the value. Stored in the generation's metadata, so later runs know which live paths to mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    pub resource: String,
    /// Dotted path inside the resource: `db_password`, `db.password`, `hosts[0]`.
    pub path: String,
    /// The reference as written: `env:ASR_DB_PASSWORD`.
    pub reference: String,
    /// HMAC-SHA256 of the value under the target's key, lowercase hex.
    pub hmac: String,
}

impl SecretUse {
    /// The `secrets` recorded in a generation's metadata (none when it has no such key).
    pub fn from_meta(meta: &serde_json::Value) -> Vec<SecretUse> {
        meta.get("secrets")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }
}

/// The desired state of a target: the bytes to write and what is secret in them.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Every resource of the new generation, as the bytes to write (secret values included).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Resources that hold a secret: written with mode 0600.
    pub private: BTreeSet<String>,
    pub secrets: Vec<SecretUse>,
    /// SHA-256 (hex) of the compact canonical JSON of all settings, each secret value replaced
    /// by `(secret hmac-sha256:<hex>)`: changes when a secret rotates, reveals nothing without
    /// the key.
    pub config_sha256: String,
}

impl Desired {
    /// A kept generation as a desired state (for `rollback`): its files and the secrets its
    /// metadata lists, hashed again under `key` from the stored values.
    pub fn stored(
        files: BTreeMap<String, Vec<u8>>,
        secrets: Vec<SecretUse>,
        key: &[u8],
        config_sha256: String,
    ) -> Desired {
        let mut parsed: BTreeMap<String, Option<toml::Table>> = BTreeMap::new();
        let secrets: Vec<SecretUse> = secrets
            .into_iter()
            .filter(|s| files.contains_key(&s.resource))
            .map(|mut s| {
                let table = parsed
                    .entry(s.resource.clone())
                    .or_insert_with(|| parse_toml(&files[&s.resource]));
                if let (Some(t), Some(path)) = (table.as_ref(), parse_path(&s.path))
                    && let Some(v) = lookup(t, &path)
                {
                    s.hmac = secret::hmac_hex(key, value_bytes(v).as_bytes());
                }
                s
            })
            .collect();
        Desired {
            private: secrets.iter().map(|s| s.resource.clone()).collect(),
            files,
            secrets,
            config_sha256,
        }
    }
}

/// A node serialized exactly as its [`Node::to_json`] copy would be, without making the copy.
struct Json<'a>(&'a Node);

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match &self.0.value {
            Value::String(v) | Value::Datetime(v) => s.serialize_str(v),
            Value::Integer(i) => s.serialize_i64(*i),
            // serde_json writes a non-finite float as null, as `to_json` makes it.
            Value::Float(f) => s.serialize_f64(*f),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for n in items {
                    seq.serialize_element(&Json(n))?;
                }
                seq.end()
            }
            Value::Table(t) => {
                let mut map = s.serialize_map(Some(t.len()))?;
                for (k, m) in t {
                    map.serialize_entry(k, &Json(&m.node))?;
                }
                map.end()
            }
            Value::Secret(r) => s.serialize_str(&format!("(secret {})", r.text)),
        }
    }
}

/// One resource in the canonical JSON that `config_sha256` hashes.
enum Hashed<'a> {
    Plain(Json<'a>),
    /// A resource with secrets, each replaced by its keyed hash.
    Masked(serde_json::Value),
}

impl Serialize for Hashed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Hashed::Plain(j) => j.serialize(s),
            Hashed::Masked(v) => v.serialize(s),
        }
    }
}

/// The canonical JSON of all resources: an object in name order.
struct Canonical<'a>(Vec<(&'a String, Hashed<'a>)>);

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Render an environment's resources as the files a target stores, with the secret values of
/// `resolved` in place, and hash each secret under `key`.
pub fn desired(env: &Environment, resolved: &Resolved, key: &[u8]) -> Desired {
    let mut out = Desired::default();
    let mut hashed = Vec::with_capacity(env.settings.len());
    let mut files = Vec::with_capacity(env.settings.len());
    for (name, res) in &env.settings {
        // Most resources hold no secret: rendered and hashed as they are, without copies
        // (rendered below).
        if !has_secret(&res.node) {
            hashed.push((name, Hashed::Plain(Json(&res.node))));
            continue;
        }
        let real = res.node.replace_secrets(&mut |path, r| {
            // `resolve` read every secret; a missing one cannot be rendered as its value.
            Value::String(
                resolved
                    .get(name, path)
                    .map_or_else(|| format!("(secret {} not read)", r.text), str::to_owned),
            )
        });
        let masked = res.node.replace_secrets(&mut |path, r| {
            let value = resolved.get(name, path).unwrap_or_default();
            let hmac = secret::hmac_hex(key, value.as_bytes());
            out.secrets.push(SecretUse {
                resource: name.clone(),
                path: path_text(path),
                reference: r.text.clone(),
                hmac: hmac.clone(),
            });
            out.private.insert(name.clone());
            Value::String(format!("(secret hmac-sha256:{hmac})"))
        });
        files.push((
            name.clone(),
            render::resource_text(&env.target.kind, &real).into_bytes(),
        ));
        hashed.push((name, Hashed::Masked(masked.to_json())));
    }
    // The hash of the canonical JSON and the rendering of the plain resources do not depend
    // on each other: side by side, on two cores.
    let config_sha256 = std::thread::scope(|s| {
        let hash = s.spawn(|| crate::hash::json_sha256_hex(&Canonical(hashed)));
        files.extend(
            env.settings
                .iter()
                .filter(|(_, res)| !has_secret(&res.node))
                .map(|(name, res)| {
                    let text = render::resource_text(&env.target.kind, &res.node);
                    (name.clone(), text.into_bytes())
                }),
        );
        hash.join().expect("hashing does not panic")
    });
    out.config_sha256 = config_sha256.expect("JSON of settings");
    out.files = files.into_iter().collect();
    out
}

/// The `config_sha256` that [`desired`] gives `env`, with each secret's keyed hash taken from
/// `known` (a live generation's metadata: same resource, path and reference) instead of
/// hashing a value read now. `None` when a secret of `env` is not in `known`: then its
/// configuration is not the one `known` describes. Used by the promotion gate, which compares
/// another environment's configuration at a commit with what is live there.
pub fn config_sha256_with(env: &Environment, known: &[SecretUse]) -> Option<String> {
    let mut complete = true;
    let mut hashed = Vec::with_capacity(env.settings.len());
    for (name, res) in &env.settings {
        if !has_secret(&res.node) {
            hashed.push((name, Hashed::Plain(Json(&res.node))));
            continue;
        }
        let masked = res.node.replace_secrets(&mut |path, r| {
            let at = path_text(path);
            match known
                .iter()
                .find(|s| s.resource == *name && s.path == at && s.reference == r.text)
            {
                Some(s) => Value::String(format!("(secret hmac-sha256:{})", s.hmac)),
                None => {
                    complete = false;
                    Value::String(String::new())
                }
            }
        });
        hashed.push((name, Hashed::Masked(masked.to_json())));
    }
    let hash = crate::hash::json_sha256_hex(&Canonical(hashed)).expect("JSON of settings");
    complete.then_some(hash)
}

/// Every resource as it is written, secrets as their references: the JSON of
/// [`Environment::settings_json`], serialized without making that copy.
struct Settings<'a>(&'a Environment);

impl Serialize for Settings<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.settings.len()))?;
        for (name, res) in &self.0.settings {
            map.serialize_entry(name, &Json(&res.node))?;
        }
        map.end()
    }
}

/// SHA-256 (hex) of the compact JSON of [`Environment::settings_json`] (each secret as
/// `(secret <reference>)`), streamed into the hash instead of built as a copy and a text.
pub fn settings_sha256(env: &Environment) -> String {
    crate::hash::json_sha256_hex(&Settings(env)).expect("JSON of settings")
}

/// A resource file as a TOML table; `None` when it is not valid TOML.
fn parse_toml(bytes: &[u8]) -> Option<toml::Table> {
    std::str::from_utf8(bytes).ok()?.parse::<toml::Table>().ok()
}

fn lookup<'a>(table: &'a toml::Table, path: &[Seg]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut v = table.get(k)?;
    for seg in rest {
        v = match (seg, v) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn lookup_mut<'a>(table: &'a mut toml::Table, path: &[Seg]) -> Option<&'a mut toml::Value> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut v = table.get_mut(k)?;
    for seg in rest {
        v = match (seg, v) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The text a live value is hashed as: a string's content, anything else as TOML text.
fn value_bytes(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a diff shows in place of a secret.
const UNCHANGED: &str = "(secret, unchanged)";
const CHANGED: &str = "(secret, changed)";
/// The live side of a changed secret (the two sides must differ for the diff to show it).
const PREVIOUS: &str = "(secret, previous)";
const NEW: &str = "(secret, new)";
const REMOVED: &str = "(secret, removed)";
/// A live file at a secret path that cannot be parsed is not shown at all.
const HIDDEN: &[u8] = b"# (not shown: this file is not valid TOML and may hold a secret)\n";

/// The two sides of one resource's diff with every secret masked.
fn masked_pair(
    name: &str,
    live: Option<&[u8]>,
    new: Option<&[u8]>,
    desired: &[SecretUse],
    live_secrets: &[SecretUse],
    key: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let ours: Vec<(Vec<Seg>, &str)> = desired
        .iter()
        .filter(|s| s.resource == name)
        .filter_map(|s| Some((parse_path(&s.path)?, s.hmac.as_str())))
        .collect();
    let theirs: Vec<Vec<Seg>> = live_secrets
        .iter()
        .filter(|s| s.resource == name)
        .filter_map(|s| parse_path(&s.path))
        .collect();
    let (live, new) = (live.unwrap_or_default(), new.unwrap_or_default());
    if ours.is_empty() && theirs.is_empty() {
        return (live.to_vec(), new.to_vec());
    }
    let mut old_t = if live.is_empty() {
        Some(toml::Table::new())
    } else {
        parse_toml(live)
    };
    let mut new_t = if new.is_empty() {
        Some(toml::Table::new())
    } else {
        parse_toml(new)
    };
    for (path, hmac) in &ours {
        let old_v = old_t.as_mut().and_then(|t| lookup_mut(t, path));
        let new_mark = match old_v {
            None => NEW,
            Some(v) if secret::hmac_hex(key, value_bytes(v).as_bytes()) == *hmac => {
                *v = toml::Value::String(UNCHANGED.into());
                UNCHANGED
            }
            Some(v) => {
                *v = toml::Value::String(PREVIOUS.into());
                CHANGED
            }
        };
        if let Some(v) = new_t.as_mut().and_then(|t| lookup_mut(t, path)) {
            *v = toml::Value::String(new_mark.into());
        }
    }
    for path in &theirs {
        if ours.iter().any(|(p, _)| p == path) {
            continue;
        }
        // The same value on both sides is the repository's own plain value: nothing to hide.
        let new_v = new_t
            .as_mut()
            .and_then(|t| lookup_mut(t, path))
            .map(|v| v.clone());
        let old_v = old_t.as_mut().and_then(|t| lookup_mut(t, path));
        if new_v.is_some() && old_v.as_deref() == new_v.as_ref() {
            continue;
        }
        if let Some(v) = old_t.as_mut().and_then(|t| lookup_mut(t, path)) {
            *v = toml::Value::String(REMOVED.into());
        }
    }
    let render = |t: Option<toml::Table>, empty: bool| -> Vec<u8> {
        match t {
            _ if empty => Vec::new(),
            Some(t) => toml::to_string(&t).unwrap_or_default().into_bytes(),
            None => HIDDEN.to_vec(),
        }
    };
    (
        render(old_t, live.is_empty()),
        render(new_t, new.is_empty()),
    )
}

/// Compare desired and live resources. Whether a resource is added, changed or removed is
/// decided by the real bytes; the diffs mask every secret of the desired state and every
/// path `live_secrets` (from the live generation's metadata) lists, comparing values by
/// HMAC under `key`.
pub fn compute(
    desired: Desired,
    live: &BTreeMap<String, Vec<u8>>,
    live_secrets: &[SecretUse],
    key: &[u8],
) -> Plan {
    let mut changes = Vec::new();
    let diff = |name: &str, old: Option<&Vec<u8>>, new: Option<&Vec<u8>>| {
        let (old, new) = masked_pair(
            name,
            old.map(Vec::as_slice),
            new.map(Vec::as_slice),
            &desired.secrets,
            live_secrets,
            key,
        );
        unified(name, &old, &new)
    };
    for (name, new) in &desired.files {
        match live.get(name) {
            None => changes.push(Change {
                resource: name.clone(),
                action: Action::Add,
                diff: diff(name, None, Some(new)),
            }),
            Some(old) if old != new => changes.push(Change {
                resource: name.clone(),
                action: Action::Change,
                diff: diff(name, Some(old), Some(new)),
            }),
            Some(_) => {}
        }
    }
    for (name, old) in live {
        if !desired.files.contains_key(name) {
            changes.push(Change {
                resource: name.clone(),
                action: Action::Remove,
                diff: diff(name, Some(old), None),
            });
        }
    }
    changes.sort_by(|a, b| a.resource.cmp(&b.resource));
    Plan { changes, desired }
}

fn unified(name: &str, old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("live/{name}.toml"),
            &format!("desired/{name}.toml"),
        )
        .to_string()
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `Plan: 1 to add, 2 to change, 0 to remove.`
    pub fn summary(&self) -> String {
        format!(
            "Plan: {} to add, {} to change, {} to remove.",
            self.count(Action::Add),
            self.count(Action::Change),
            self.count(Action::Remove)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn files(files: BTreeMap<String, Vec<u8>>) -> Desired {
        Desired {
            files,
            ..Desired::default()
        }
    }

    fn secret(resource: &str, path: &str, value: &str) -> SecretUse {
        SecretUse {
            resource: resource.into(),
            path: path.into(),
            reference: "env:X".into(),
            hmac: secret::hmac_hex(KEY, value.as_bytes()),
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A desired state holding `value` at `a.db.password` (a secret) next to a plain key.
    fn with_secret(value: &str) -> Desired {
        let mut d = files(map(&[(
            "a",
            &format!("x = 1\n\n[db]\npassword = \"{value}\"\n"),
        )]));
        d.secrets.push(secret("a", "db.password", value));
        d.private.insert("a".into());
        d
    }

    #[test]
    fn secrets_are_masked_on_both_sides_and_compared_by_hmac() {
        let (old, new) = ("hunter2-old-value", "hunter2-new-value");
        let added = compute(with_secret(new), &BTreeMap::new(), &[], KEY);
        assert_eq!(added.changes[0].action, Action::Add);
        assert!(
            added.changes[0]
                .diff
                .contains("+password = \"(secret, new)\"")
        );

        let live = with_secret(old).files;
        let changed = compute(
            with_secret(new),
            &live,
            &[secret("a", "db.password", old)],
            KEY,
        );
        let diff = &changed.changes[0].diff;
        assert_eq!(changed.changes[0].action, Action::Change);
        assert!(
            diff.contains("-password = \"(secret, previous)\""),
            "{diff}"
        );
        assert!(diff.contains("+password = \"(secret, changed)\""), "{diff}");
        assert!(!diff.contains("hunter2"), "{diff}");

        let same = compute(with_secret(old), &live, &[], KEY);
        assert!(same.is_empty());

        // Removed: the live generation's metadata says which paths were secret.
        let gone = compute(
            files(map(&[("a", "x = 1\n")])),
            &live,
            &[secret("a", "db.password", old)],
            KEY,
        );
        let diff = &gone.changes[0].diff;
        assert!(diff.contains("-password = \"(secret, removed)\""), "{diff}");
        assert!(!diff.contains("hunter2"), "{diff}");
        let removed = compute(
            Desired::default(),
            &live,
            &[secret("a", "db.password", old)],
            KEY,
        );
        assert!(!removed.changes[0].diff.contains("hunter2"));
    }

    #[test]
    fn a_stored_generation_is_hashed_again_from_its_files() {
        let stored = Desired::stored(
            with_secret("s3cr3t-value").files,
            vec![SecretUse {
                hmac: String::new(),
                ..secret("a", "db.password", "")
            }],
            KEY,
            String::new(),
        );
        assert_eq!(
            stored.secrets[0].hmac,
            secret::hmac_hex(KEY, b"s3cr3t-value")
        );
        assert!(stored.private.contains("a"));
    }

    #[test]
    fn the_canonical_json_is_the_json_copy_serialized() {
        let doc = r#"
            [a]
            x = 1
            y = -2
            f = 1.5
            big = 1e300
            n = nan
            i = -inf
            s = "caf\u00e9 \"q\" \\ \n"
            b = true
            arr = [1, "two", [3.0], { k = "v" }]
            [a.t]
            z = ""
            [b]
            pw = { secret = "env:X" }
            [c]
        "#;
        let mut node: Node = toml::from_str(doc).unwrap();
        assert!(node.lift_secrets(&|_| String::new()).is_empty());
        // A datetime (kept as its TOML text; the loader makes these, not `toml::from_str`).
        let at = |value| Node {
            file: 0,
            span: 0..0,
            value,
        };
        if let Value::Table(root) = &mut node.value
            && let Some(a) = root.get_mut("a")
            && let Value::Table(a) = &mut a.node.value
        {
            a.insert(
                "d".into(),
                crate::config::node::Member {
                    key_span: 0..0,
                    key_file: 0,
                    node: at(Value::Datetime("1979-05-27T07:32:00Z".into())),
                },
            );
        }
        let table = node.as_table().unwrap();
        assert!(has_secret(&table.get("b").unwrap().node));
        assert!(!has_secret(&table.get("a").unwrap().node));
        assert_eq!(
            serde_json::to_string(&Json(&node)).unwrap(),
            node.to_json().to_string()
        );
    }

    /// The configuration of one environment file `environments/t.toml` with an open schema.
    fn load_one(env_file: &str) -> crate::config::Config {
        use crate::config::{Input, InputFile};
        crate::config::load(Input {
            environments: vec![InputFile {
                path: "environments/t.toml".into(),
                content: Ok(env_file.as_bytes().to_vec()),
            }],
            schemas: vec![InputFile {
                path: "schemas/s.schema.json".into(),
                content: Ok(br#"{"type": "object"}"#.to_vec()),
            }],
            root: None,
        })
    }

    #[test]
    fn the_settings_hash_is_the_hash_of_the_settings_json_copy() {
        let env_file = r#"
            [environment]
            account = "123456789012"
            schema = "s"
            [target]
            kind = "dir"
            path = "/srv/t"
            [settings.b]
            pw = { secret = "env:X" }
            list = [1, "two", [3.0], { k = "v" }]
            [settings.a]
            x = 1
            f = 1.5
            n = nan
            s = "caf\u00e9 \"q\" \\ \n"
            [settings.a.t]
            z = ""
            [settings.c]
        "#;
        let config = load_one(env_file);
        let Some(env) = config.get("t") else {
            let messages: Vec<&str> = config
                .diagnostics
                .iter()
                .map(|d| d.message.as_str())
                .collect();
            panic!("the environment does not load: {messages:?}");
        };
        assert_eq!(env.settings.len(), 3);
        let copy = serde_json::to_vec(&env.settings_json()).unwrap();
        assert_eq!(settings_sha256(env), crate::target::sha256_hex(&copy));
    }

    #[test]
    fn the_gate_s_hash_from_known_secret_hashes_is_the_desired_one() {
        let env_file = r#"
            [environment]
            account = "123456789012"
            schema = "s"
            [target]
            kind = "dir"
            path = "/srv/t"
            [settings.b]
            pw = { secret = "env:X" }
            [settings.a]
            x = 1
        "#;
        let config = load_one(env_file);
        let env = config.get("t").expect("loads");
        let desired = desired(env, &Resolved::default(), KEY);
        assert_eq!(desired.secrets.len(), 1);
        assert_eq!(
            config_sha256_with(env, &desired.secrets).as_deref(),
            Some(desired.config_sha256.as_str())
        );
        // Another value (another keyed hash): another configuration.
        let mut other = desired.secrets.clone();
        other[0].hmac = secret::hmac_hex(KEY, b"another value");
        let got = config_sha256_with(env, &other).expect("complete");
        assert_ne!(got, desired.config_sha256);
        // Another reference, or no record of the secret: not the live configuration.
        other[0].reference = "env:Y".into();
        assert_eq!(config_sha256_with(env, &other), None);
        assert_eq!(config_sha256_with(env, &[]), None);
    }

    #[test]
    fn paths_round_trip() {
        for segs in [
            vec![Seg::Key("db".into()), Seg::Key("password".into())],
            vec![
                Seg::Key("a.b".into()),
                Seg::Index(3),
                Seg::Key("x y".into()),
            ],
            vec![Seg::Key("hosts".into()), Seg::Index(0)],
        ] {
            assert_eq!(parse_path(&path_text(&segs)), Some(segs));
        }
        assert_eq!(
            path_text(&[Seg::Key("db".into()), Seg::Key("password".into())]),
            "db.password"
        );
    }

    #[test]
    fn classifies_add_change_remove_and_ignores_equal() {
        let live = map(&[("a", "x = 1\n"), ("b", "y = 1\n"), ("c", "z = 1\n")]);
        let desired = map(&[("a", "x = 1\n"), ("b", "y = 2\n"), ("d", "w = 1\n")]);
        let plan = compute(files(desired), &live, &[], b"k");
        let got: Vec<(&str, Action)> = plan
            .changes
            .iter()
            .map(|c| (c.resource.as_str(), c.action))
            .collect();
        assert_eq!(
            got,
            [
                ("b", Action::Change),
                ("c", Action::Remove),
                ("d", Action::Add)
            ]
        );
        assert_eq!(plan.summary(), "Plan: 1 to add, 1 to change, 1 to remove.");
        assert!(plan.changes[0].diff.contains("-y = 1\n+y = 2\n"));
        assert_eq!(plan.desired.files.len(), 3);
    }

    #[test]
    fn identical_state_is_an_empty_plan() {
        let live = map(&[("a", "x = 1\n")]);
        let plan = compute(files(live.clone()), &live, &[], b"k");
        assert!(plan.is_empty());
        assert_eq!(plan.summary(), "Plan: 0 to add, 0 to change, 0 to remove.");
    }
}
