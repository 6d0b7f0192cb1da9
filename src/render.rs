//! Canonical text forms of resolved configuration, used for diffs and (later) resource files.
//!
//! Invariant: the same resolved environment always renders to the same bytes (keys sorted), so
//! a diff shows only real changes.

use crate::config::node::{Node, Value};
use crate::config::{Environment, TargetKind, duration};

fn to_toml(node: &Node) -> toml::Value {
    match &node.value {
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Datetime(s) => s
            .parse::<toml::value::Datetime>()
            .map_or_else(|_| toml::Value::String(s.clone()), toml::Value::Datetime),
        Value::Integer(i) => toml::Value::Integer(*i),
        Value::Float(f) => toml::Value::Float(*f),
        Value::Boolean(b) => toml::Value::Boolean(*b),
        Value::Array(items) => toml::Value::Array(items.iter().map(to_toml).collect()),
        Value::Table(map) => toml::Value::Table(
            map.iter()
                .map(|(k, m)| (k.clone(), to_toml(&m.node)))
                .collect(),
        ),
        // The reference as written: resolved values are substituted before rendering a file.
        Value::Secret(r) => {
            let mut t = toml::Table::new();
            t.insert("secret".into(), toml::Value::String(r.text.clone()));
            toml::Value::Table(t)
        }
    }
}

/// One resource as the canonical TOML text every plan diffs, for `kind` of target: a `dir`
/// target stores it as is; an `etcd` target stores it as compact JSON, so it is rendered
/// through JSON (a datetime becomes a string, as it will be in the store) and the live JSON
/// reads back to exactly these bytes.
pub fn resource_text(kind: &TargetKind, node: &Node) -> String {
    match kind {
        // Stored as JSON: rendered through JSON so that both sides of a diff are the same bytes.
        TargetKind::Etcd { .. } | TargetKind::Exec { .. } => {
            crate::target::etcd::toml_text_of_json(&node.to_json()).unwrap_or_default()
        }
        _ => resource_toml(node),
    }
}

/// One resource as the TOML text a `dir` target stores and a plan diffs.
pub fn resource_toml(node: &Node) -> String {
    if let Some(text) = flat_toml(node) {
        return text;
    }
    match to_toml(node) {
        toml::Value::Table(t) => toml::to_string(&t).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// The common resource written directly, without building a `toml` tree: a table of bare keys
/// whose values are integers, booleans and strings of printable ASCII without quotes or
/// backslashes. `None` for anything else, which `toml` renders. Both give the same bytes (a
/// test compares them): keys in sorted order, one `key = value` line each, basic strings.
fn flat_toml(node: &Node) -> Option<String> {
    use std::fmt::Write;
    let Value::Table(table) = &node.value else {
        return None;
    };
    let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let plain = |b: u8| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\' | b'\'');
    // The text is kept for the whole deployment (a plan holds every resource's): size it to
    // fit, at most 20 bytes over for each integer.
    let len = table.iter().fold(0, |n, (key, member)| {
        n + key.len()
            + 4
            + match &member.node.value {
                Value::String(s) => s.len() + 2,
                _ => 20,
            }
    });
    let mut out = String::with_capacity(len);
    for (key, member) in table {
        if key.is_empty() || !key.bytes().all(bare) {
            return None;
        }
        out.push_str(key);
        out.push_str(" = ");
        match &member.node.value {
            Value::String(s) if s.bytes().all(plain) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            Value::Integer(i) => write!(out, "{i}").ok()?,
            Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            _ => return None,
        }
        out.push('\n');
    }
    Some(out)
}

fn strs(v: &[impl AsRef<str>]) -> toml::Value {
    toml::Value::Array(
        v.iter()
            .map(|s| toml::Value::String(s.as_ref().to_owned()))
            .collect(),
    )
}

/// The whole resolved environment (identity, target, checks and settings) as canonical TOML.
pub fn environment_toml(env: &Environment) -> String {
    let mut root = head_table(env);
    root.insert("settings".into(), settings_table(env).into());
    toml::to_string(&root).unwrap_or_default()
}

/// The name [`environment_parts`] gives everything of an environment but its settings.
pub const HEAD_PART: &str = "(environment, target and checks)";

/// The environment as the parts a review shows one by one: [`HEAD_PART`] (identity, target
/// and checks, as in [`environment_toml`]), then each resource (`[settings.NAME]`'s table as
/// canonical TOML), in name order. Secrets are their references, as written.
pub fn environment_parts(env: &Environment) -> Vec<(String, String)> {
    let head = toml::to_string(&head_table(env)).unwrap_or_default();
    std::iter::once((HEAD_PART.to_owned(), head))
        .chain(
            env.settings
                .iter()
                .map(|(name, res)| (name.clone(), resource_toml(&res.node))),
        )
        .collect()
}

fn settings_table(env: &Environment) -> toml::Table {
    let mut s = toml::Table::new();
    for (name, res) in &env.settings {
        s.insert(name.clone(), to_toml(&res.node));
    }
    s
}

/// Everything of [`environment_toml`] but `settings`.
fn head_table(env: &Environment) -> toml::Table {
    use toml::Table;
    let mut root = Table::new();
    let mut e = Table::new();
    e.insert("account".into(), env.account.value.clone().into());
    e.insert("schema".into(), env.schema.value.clone().into());
    if let Some(b) = &env.branch {
        e.insert("branch".into(), b.value.clone().into());
    }
    e.insert("protected".into(), env.protected.into());
    if !env.markers.is_empty() {
        let m: Vec<&str> = env.markers.iter().map(|m| m.value.as_str()).collect();
        e.insert("markers".into(), strs(&m));
    }
    if !env.after.is_empty() {
        let a: Vec<&str> = env.after.iter().map(|m| m.value.as_str()).collect();
        e.insert("after".into(), strs(&a));
    }
    root.insert("environment".into(), e.into());
    if let Some(id) = &env.identity {
        let mut t = Table::new();
        t.insert("command".into(), strs(&id.command));
        t.insert("timeout".into(), duration::format(id.timeout).into());
        root.insert("identity".into(), t.into());
    }
    let mut t = Table::new();
    t.insert("kind".into(), env.target.kind_name().into());
    match &env.target.kind {
        TargetKind::Dir { path, keep, .. } => {
            t.insert("path".into(), path.value.clone().into());
            t.insert("keep".into(), (*keep as i64).into());
        }
        TargetKind::Etcd {
            endpoints,
            prefix,
            timeout,
            ca,
            cert,
            key,
            username,
            password,
            lock_ttl,
            max_txn_ops,
            max_request_bytes,
            ..
        } => {
            let eps: Vec<&str> = endpoints.iter().map(|e| e.value.as_str()).collect();
            t.insert("endpoints".into(), strs(&eps));
            t.insert("prefix".into(), prefix.value.clone().into());
            t.insert("timeout".into(), duration::format(*timeout).into());
            for (k, v) in [("ca", ca), ("cert", cert), ("key", key)] {
                if let Some(v) = v {
                    t.insert(k.into(), v.clone().into());
                }
            }
            for (k, v) in [("username", username), ("password", password)] {
                if let Some(r) = v {
                    let mut s = Table::new();
                    s.insert("secret".into(), r.text.clone().into());
                    t.insert(k.into(), s.into());
                }
            }
            t.insert("lock_ttl".into(), duration::format(*lock_ttl).into());
            t.insert("max_txn_ops".into(), (*max_txn_ops as i64).into());
            t.insert(
                "max_request_bytes".into(),
                (*max_request_bytes as i64).into(),
            );
        }
        TargetKind::Exec {
            command,
            options,
            state,
            store,
            timeout,
            protocol,
            ..
        } => {
            t.insert("command".into(), strs(command));
            t.insert("state".into(), state_table(&state.value, store));
            t.insert("timeout".into(), duration::format(*timeout).into());
            if *protocol != 1 {
                t.insert(
                    "protocol".into(),
                    i64::try_from(*protocol).unwrap_or(2).into(),
                );
            }
            if let Ok(v) = toml::Value::try_from(options) {
                t.insert("options".into(), v);
            }
        }
    }
    root.insert("target".into(), t.into());
    if let Some(h) = &env.health {
        let mut t = Table::new();
        t.insert("command".into(), strs(&h.command));
        t.insert("timeout".into(), duration::format(h.timeout).into());
        t.insert("retries".into(), i64::from(h.retries).into());
        t.insert("interval".into(), duration::format(h.interval).into());
        root.insert("health".into(), t.into());
    }
    if let Some(n) = &env.notify {
        let mut t = Table::new();
        if let Some(c) = &n.command {
            t.insert("command".into(), strs(c));
        }
        t.insert("timeout".into(), duration::format(n.timeout).into());
        if let Some(p) = &n.page {
            t.insert("url".into(), p.url.value.clone().into());
            t.insert("format".into(), p.format.as_str().into());
            if let Some(r) = &p.token {
                let mut s = Table::new();
                s.insert("secret".into(), r.text.clone().into());
                t.insert("token".into(), s.into());
            }
        }
        root.insert("notify".into(), t.into());
    }
    root
}

/// An `exec` target's `state` as the environment wrote it: a directory, or a table.
fn state_table(written: &str, store: &crate::config::StateConfig) -> toml::Value {
    use crate::config::StateConfig;
    let mut t = toml::Table::new();
    match store {
        StateConfig::Dir { .. } => return written.to_owned().into(),
        StateConfig::Etcd {
            endpoints,
            prefix,
            timeout,
            lock_ttl,
        } => {
            t.insert("kind".into(), "etcd".into());
            t.insert("endpoints".into(), strs(endpoints));
            t.insert("prefix".into(), prefix.clone().into());
            t.insert("timeout".into(), duration::format(*timeout).into());
            t.insert("lock_ttl".into(), duration::format(*lock_ttl).into());
        }
        StateConfig::Provider { lock_ttl } => {
            t.insert("kind".into(), "provider".into());
            t.insert("lock_ttl".into(), duration::format(*lock_ttl).into());
        }
    }
    t.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `toml` itself writes: the reference for [`flat_toml`].
    fn reference(node: &Node) -> String {
        match to_toml(node) {
            toml::Value::Table(t) => toml::to_string(&t).unwrap_or_default(),
            other => other.to_string(),
        }
    }

    #[test]
    fn the_direct_rendering_is_byte_for_byte_what_toml_writes() {
        let mut strings: Vec<String> = (b' '..=b'~').map(|b| format!("a{}b", b as char)).collect();
        for s in [
            "",
            " ",
            "arn:aws:sqs:eu-west-1:543210987654:jobs-r-00100",
            "https://r-1.svc.example.com/healthz?x=1&y=2#frag",
            "registry.example.com/apply/worker-2:2.9.4",
            "it's",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "caf\u{e9}",
            "'''",
            "# not a comment",
        ] {
            strings.push(s.to_owned());
        }
        let mut direct = 0;
        for (i, s) in strings.iter().enumerate() {
            let n = i64::try_from(i).unwrap() - 40;
            let flat = format!(
                "a-key = {}\nb_key = {n}\nc = {}\nZ = -9223372036854775808\n",
                toml::Value::String(s.clone()),
                i % 2 == 0
            );
            // A quoted key is left to `toml`.
            let quoted = format!("{flat}\"q k\" = 1\n");
            for doc in [&flat, &quoted] {
                let node: Node = toml::from_str(doc).unwrap();
                let want = reference(&node);
                if let Some(text) = flat_toml(&node) {
                    direct += 1;
                    assert_eq!(text, want, "{doc}");
                }
                assert_eq!(resource_toml(&node), want, "{doc}");
            }
        }
        assert!(direct > 80, "the direct path rendered only {direct} tables");
        for doc in [
            "x = 1.5\n",
            "x = [1, 2]\n",
            "[x]\ny = 1\n",
            "x = { secret = \"env:X\" }\n",
            "",
        ] {
            let node: Node = toml::from_str(doc).unwrap();
            assert_eq!(flat_toml(&node).is_some(), doc.is_empty(), "{doc}");
            assert_eq!(resource_toml(&node), reference(&node), "{doc}");
        }
    }
}
