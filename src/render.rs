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
        TargetKind::Etcd { .. } => {
            crate::target::etcd::toml_text_of_json(&node.to_json()).unwrap_or_default()
        }
        _ => resource_toml(node),
    }
}

/// One resource as the TOML text a `dir` target stores and a plan diffs.
pub fn resource_toml(node: &Node) -> String {
    match to_toml(node) {
        toml::Value::Table(t) => toml::to_string(&t).unwrap_or_default(),
        other => other.to_string(),
    }
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
        TargetKind::Exec { command, options } => {
            t.insert("command".into(), strs(command));
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
        t.insert("command".into(), strs(&n.command));
        t.insert("timeout".into(), duration::format(n.timeout).into());
        root.insert("notify".into(), t.into());
    }
    let mut s = Table::new();
    for (name, res) in &env.settings {
        s.insert(name.clone(), to_toml(&res.node));
    }
    root.insert("settings".into(), s.into());
    toml::to_string(&root).unwrap_or_default()
}
