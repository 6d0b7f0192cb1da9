//! The environment file exactly as written: serde structs with `deny_unknown_fields` and spans.

use serde::Deserialize;
use toml::Spanned;

use super::node::Node;

/// One `environments/*.toml` file (an environment or a `_layer`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub environment: Option<Spanned<RawEnvironment>>,
    pub identity: Option<Spanned<RawIdentity>>,
    pub target: Option<Spanned<RawTarget>>,
    /// `[targets.NAME]`: a fleet (instead of `[target]`).
    pub targets: Option<Spanned<std::collections::BTreeMap<String, Spanned<RawTarget>>>>,
    pub rollout: Option<Spanned<RawRollout>>,
    pub health: Option<Spanned<RawHealth>>,
    pub notify: Option<Spanned<RawNotify>>,
    pub settings: Option<Node>,
}

pub type SString = Spanned<String>;
pub type SList = Spanned<Vec<SString>>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub account: Option<SString>,
    pub schema: Option<SString>,
    pub branch: Option<SString>,
    pub protected: Option<Spanned<bool>>,
    pub markers: Option<SList>,
    pub after: Option<SList>,
    pub extends: Option<SList>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub command: Option<SList>,
    pub timeout: Option<SString>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub command: Option<SList>,
    pub timeout: Option<SString>,
    pub retries: Option<Spanned<i64>>,
    pub interval: Option<SString>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub command: Option<SList>,
    pub timeout: Option<SString>,
    pub url: Option<SString>,
    pub format: Option<SString>,
    pub token: Option<Node>,
}

/// `[target]`: one flat table for every kind, checked per kind afterwards so that a key of the
/// wrong kind gets an error pointing at it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub kind: Option<SString>,
    // dir
    pub path: Option<SString>,
    pub keep: Option<Spanned<i64>>,
    // etcd
    pub endpoints: Option<SList>,
    pub prefix: Option<SString>,
    pub timeout: Option<SString>,
    pub ca: Option<SString>,
    pub cert: Option<SString>,
    pub key: Option<SString>,
    pub username: Option<Node>,
    pub password: Option<Node>,
    pub lock_ttl: Option<SString>,
    pub max_txn_ops: Option<Spanned<i64>>,
    pub max_request_bytes: Option<Spanned<i64>>,
    // exec
    pub command: Option<SList>,
    pub options: Option<Node>,
    pub state: Option<Node>,
    pub protocol: Option<Spanned<i64>>,
}

/// `[rollout]`: the waves of a fleet and the signals that verify each.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// How often the signals are read while a wave bakes.
    pub interval: Option<SString>,
    /// The longest one signal may take to answer.
    pub timeout: Option<SString>,
    pub wave: Option<Vec<Spanned<RawWave>>>,
    pub verify: Option<Vec<Spanned<RawVerify>>>,
}

/// `[[rollout.wave]]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWave {
    pub name: Option<SString>,
    pub targets: Option<SList>,
    pub bake: Option<SString>,
}

/// `[[rollout.verify]]`: an HTTP probe (`http`) or a Prometheus query (`prometheus`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub http: Option<SString>,
    pub status: Option<Spanned<i64>>,
    pub body: Option<SString>,
    pub prometheus: Option<SString>,
    pub query: Option<SString>,
    pub compare: Option<SString>,
}
