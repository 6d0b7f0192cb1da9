//! Environments as the repository defines them at one commit: parsing, layering, validation.
//!
//! Invariants: every value of a resolved [`Environment`] carries the file and span it came from;
//! an environment that has any error is not returned as resolved (it is named in
//! [`Config::broken`]); loading never stops at the first problem.

mod direct;
pub mod duration;
pub mod fleet;
pub mod node;
pub mod raw;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Loc, Located, Sources};
use node::{Node, SecretRef, Value};
use raw::{RawFile, SList, SString};

/// Environment files larger than this are refused before they are parsed.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Resource names longer than this are refused (they become file names and keys).
pub const MAX_RESOURCE_NAME: usize = 128;
/// Generations kept by a `dir` target unless `keep` says otherwise.
pub const DEFAULT_KEEP: usize = 10;
/// How long one call of an `exec` target's provider may take unless `timeout` says otherwise.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);

/// A file handed to the loader, as read from the commit.
#[derive(Debug)]
pub struct InputFile {
    /// Path relative to the repository root (`environments/prod.toml`).
    pub path: String,
    /// The content, or the size when the file is too large to read.
    pub content: Result<Vec<u8>, u64>,
}

/// What the loader reads: the files of `environments/` and `schemas/` at one commit.
#[derive(Debug, Default)]
pub struct Input {
    pub environments: Vec<InputFile>,
    pub schemas: Vec<InputFile>,
    /// The repository's working directory, used to make relative `dir` paths absolute.
    pub root: Option<PathBuf>,
}

/// The loaded configuration: every environment that resolved, and every problem found.
#[derive(Debug)]
pub struct Config {
    pub sources: Sources,
    pub environments: Vec<Environment>,
    /// Names of environments whose files exist but did not resolve.
    pub broken: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    pub fn get(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// Every environment name defined by a file, resolved or not, sorted.
    pub fn names(&self) -> Vec<String> {
        sorted_names(&self.environments, &self.broken)
    }

    /// Which environments name each account (for messages that meet an account).
    pub fn accounts(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
        for e in &self.environments {
            out.entry(e.account.value.clone())
                .or_default()
                .push(e.name.clone());
        }
        out
    }
}

fn sorted_names(environments: &[Environment], broken: &[String]) -> Vec<String> {
    let mut names: Vec<String> = environments
        .iter()
        .map(|e| e.name.clone())
        .chain(broken.iter().cloned())
        .collect();
    names.sort();
    names
}

/// One deployable environment, fully resolved.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub file: FileId,
    pub account: Located<String>,
    pub schema: Located<String>,
    pub branch: Option<Located<String>>,
    pub protected: bool,
    pub markers: Vec<Located<String>>,
    pub after: Vec<Located<String>>,
    pub extends: Vec<Located<String>>,
    pub identity: Option<Identity>,
    /// The one target, or a fleet's first (its canary): see [`Environment::fleet`].
    pub target: Target,
    /// `[targets.NAME]` and `[rollout]`: several targets deployed in waves.
    pub fleet: Option<fleet::Fleet>,
    pub health: Option<Health>,
    pub notify: Option<Notify>,
    /// Resource name -> its table (as a [`Node`] of kind table); absent when the configuration
    /// was loaded without this environment's resources (see [`Keep`]).
    pub settings: Settings,
    /// How many resources the environment has (also when `settings` was not kept).
    pub resource_count: usize,
    /// What checking secret values at deploy time needs (filled by [`load`]).
    pub secret_checks: SecretChecks,
    /// The variables this environment's `env:` secret references name (settings and etcd
    /// credentials), sorted: no command envlock runs inherits them (`process::withhold`).
    pub secret_vars: Vec<String>,
}

/// An environment's resources, or nothing when the configuration was loaded for another
/// environment ([`Keep`]): validated, then let go, so that `check` of hundreds of environments
/// holds one environment's tree at a time.
///
/// Reading resources that were not kept is a bug in the caller: it panics rather than give an
/// empty set, which would plan to remove every resource.
#[derive(Debug, Clone, Default)]
pub struct Settings(Option<BTreeMap<String, Resource>>);

impl Settings {
    /// Whether the resources are here (see [`Keep`]).
    pub fn is_kept(&self) -> bool {
        self.0.is_some()
    }
}

impl std::ops::Deref for Settings {
    type Target = BTreeMap<String, Resource>;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect(
            "an environment's resources are read only when the loader was told to keep them",
        )
    }
}

impl<'a> IntoIterator for &'a Settings {
    type Item = (&'a String, &'a Resource);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Resource>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The variables named by `env:` references in `settings`, an etcd target's credentials and
/// the `[notify] token`.
fn secret_vars(
    settings: Option<&BTreeMap<String, Resource>>,
    target: Option<&Target>,
    page_token: Option<&SecretRef>,
) -> Vec<String> {
    let mut refs: Vec<&SecretRef> = settings
        .into_iter()
        .flat_map(|s| s.values())
        .filter(|r| schema::has_secret(&r.node))
        .flat_map(|r| r.node.secrets().into_iter().map(|(_, _, r)| r))
        .collect();
    if let Some(Target {
        kind: TargetKind::Etcd {
            username, password, ..
        },
        ..
    }) = target
    {
        refs.extend(username.iter().chain(password.iter()).map(|b| &**b));
    }
    refs.extend(page_token);
    let mut names: Vec<String> = refs
        .into_iter()
        .filter_map(|r| match &r.source {
            node::SecretSource::Env(name) => Some(name.clone()),
            node::SecretSource::File(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Which environments' resources [`load_keeping`] keeps after validating them. Every
/// environment is always loaded, validated and checked against every other; what is not kept
/// is only the tree of its resources.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    All,
    /// The one environment a command works on.
    Only(&'a str),
    /// None (`deploy check`, `deploy envs`, `deploy log`).
    Nothing,
}

impl Keep<'_> {
    fn keeps(&self, name: &str) -> bool {
        match self {
            Keep::All => true,
            Keep::Only(n) => *n == name,
            Keep::Nothing => false,
        }
    }
}

/// The schema and the identities of every environment, kept with an environment so that
/// `secret::resolve` can check values that are only known at deploy time.
#[derive(Clone, Default)]
pub struct SecretChecks {
    pub validator: Option<Arc<jsonschema::Validator>>,
    /// Every environment's account and markers: (environment, text, is_account).
    pub identities: Arc<Vec<(String, String, bool)>>,
}

impl std::fmt::Debug for SecretChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretChecks")
            .field("validator", &self.validator.is_some())
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// One resource of an environment's desired state.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name_loc: Loc,
    pub node: Node,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub command: Vec<String>,
    pub command_loc: Loc,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub command: Vec<String>,
    pub command_loc: Loc,
    /// `file:line:col` of the command, for messages at deploy time.
    pub command_at: String,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Notify {
    /// Receives the raw JSON event on stdin; `None` when only `url` is set.
    pub command: Option<Vec<String>>,
    pub command_loc: Loc,
    /// `file:line:col` of the command, for messages at deploy time.
    pub command_at: String,
    /// For `command`, the most it may run; for `url`, every attempt and retry together.
    pub timeout: Duration,
    /// Delivered by envlock itself (`url`, `format`, `token`); see `crate::page`.
    pub page: Option<Page>,
}

/// `[notify] url`: where envlock itself delivers events, and in which format.
#[derive(Debug, Clone)]
pub struct Page {
    /// https, or http to a loopback address.
    pub url: Located<String>,
    pub format: PageFormat,
    /// The routing key or bearer token, as a reference (never the value).
    pub token: Option<SecretRef>,
}

/// The formats `[notify] format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFormat {
    PagerDuty,
    CloudEvents,
    Alertmanager,
}

impl PageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PageFormat::PagerDuty => "pagerduty",
            PageFormat::CloudEvents => "cloudevents",
            PageFormat::Alertmanager => "alertmanager",
        }
    }
}

/// Where an environment's settings land.
#[derive(Debug, Clone)]
pub struct Target {
    pub loc: Loc,
    pub kind: TargetKind,
}

#[derive(Debug, Clone)]
pub enum TargetKind {
    Dir {
        /// As written.
        path: Located<String>,
        /// Absolute and lexically normalised (relative paths are relative to the repository).
        resolved: PathBuf,
        /// `resolved` relative to the repository when inside it, for messages.
        display: String,
        keep: usize,
    },
    Etcd {
        endpoints: Vec<Located<String>>,
        prefix: Located<String>,
        timeout: Duration,
        ca: Option<String>,
        cert: Option<String>,
        key: Option<String>,
        /// etcd authentication, read from secret references when deploying.
        username: Option<Box<SecretRef>>,
        password: Option<Box<SecretRef>>,
        /// The lease TTL of the deployment lock.
        lock_ttl: Duration,
        /// The server's `--max-txn-ops` and `--max-request-bytes`.
        max_txn_ops: usize,
        max_request_bytes: usize,
        /// The repository's working tree: relative `ca`, `cert`, `key` and `file:` secrets
        /// start here.
        root: PathBuf,
    },
    Exec {
        /// The provider's argv; a relative program path starts at `root`.
        command: Vec<String>,
        /// `[target.options]`, passed to the provider in every request.
        options: serde_json::Value,
        /// Where envlock keeps the target's stamp, lock, generations, journal and log: the
        /// directory as written, or the `[target.state]` table's `kind` (for messages and
        /// clashes), and the store itself.
        state: Located<String>,
        store: StateConfig,
        /// The longest one provider call may take.
        timeout: Duration,
        /// The provider protocol: 1 (one process per call) or 2 (one session per run).
        protocol: u64,
        /// The repository's working tree: the provider's working directory.
        root: PathBuf,
    },
}

/// Where an `exec` target's state lives (`[target] state = "DIR"` or `[target.state]`).
#[derive(Debug, Clone)]
pub enum StateConfig {
    /// A directory on this machine: absolute and normalised, and for messages.
    Dir { resolved: PathBuf, display: String },
    /// Keys under `prefix` in an etcd cluster.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        timeout: Duration,
        lock_ttl: Duration,
    },
    /// The provider itself, in the account it reaches (protocol 2 `state-*` operations).
    Provider { lock_ttl: Duration },
}

impl StateConfig {
    /// The directory of a `dir` state.
    pub fn dir(&self) -> Option<(&Path, &str)> {
        match self {
            StateConfig::Dir { resolved, display } => Some((resolved, display)),
            _ => None,
        }
    }
}

impl Target {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TargetKind::Dir { .. } => "dir",
            TargetKind::Etcd { .. } => "etcd",
            TargetKind::Exec { .. } => "exec",
        }
    }

    /// A short human description: `dir /srv/asr`, `etcd http://a:2379 /asr/prod/`.
    pub fn describe(&self) -> String {
        match &self.kind {
            TargetKind::Dir { path, .. } => format!("dir {}", path.value),
            TargetKind::Etcd {
                endpoints, prefix, ..
            } => {
                let eps: Vec<&str> = endpoints.iter().map(|e| e.value.as_str()).collect();
                format!("etcd {} {}", eps.join(","), prefix.value)
            }
            TargetKind::Exec { command, .. } => {
                format!("exec {}", crate::process::display_argv(command))
            }
        }
    }
}

impl Environment {
    /// This fleet environment with `member`'s target as its one target (no fleet): what one
    /// target of a rollout deploys.
    pub fn member(&self, member: &fleet::Member) -> Environment {
        Environment {
            target: member.target.clone(),
            fleet: None,
            ..self.clone()
        }
    }

    /// What notifications and pages name as the target: the one target, or every target of a
    /// fleet (`fleet of 3: canary, eu-1, eu-2`), as configured.
    pub fn target_label(&self) -> String {
        match &self.fleet {
            Some(f) => format!(
                "fleet of {}: {}",
                f.members.len(),
                f.members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => self.target.describe(),
        }
    }

    /// Resolved settings as one JSON object (resource -> table), keys sorted.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.settings
                .iter()
                .map(|(k, r)| (k.clone(), r.node.to_json()))
                .collect(),
        )
    }
}

/// True for names an environment or layer may have: `[a-z0-9][a-z0-9-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Why a resource name cannot be used, if it cannot. Resource names become file names of `dir`
/// targets and keys of etcd ones, so nothing that could escape a directory is allowed.
pub fn resource_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("resource names cannot be empty".into());
    }
    if name.len() > MAX_RESOURCE_NAME {
        return Some(format!(
            "resource name is {} bytes long; the limit is {MAX_RESOURCE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a resource name"));
    }
    if name.starts_with('.') {
        return Some("resource names cannot start with `.`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "resource names may only contain letters, digits, `-`, `_` and `.`; found {c:?}"
        ));
    }
    None
}

/// A file parsed, before layering.
struct Parsed {
    file: FileId,
    raw: RawFile,
    /// False when a secret reference in `[settings]` is malformed (already reported).
    secrets_ok: bool,
}

/// The merged, still unvalidated view of an environment and its layers.
#[derive(Default, Clone)]
struct Partial {
    account: Option<Located<String>>,
    schema: Option<Located<String>>,
    branch: Option<Located<String>>,
    protected: Option<Located<bool>>,
    markers: Option<Vec<Located<String>>>,
    after: Option<Vec<Located<String>>>,
    identity: Option<Loc>,
    identity_command: Option<Located<Vec<String>>>,
    identity_timeout: Option<Located<String>>,
    health: Option<Loc>,
    health_command: Option<Located<Vec<String>>>,
    health_timeout: Option<Located<String>>,
    health_retries: Option<Located<i64>>,
    health_interval: Option<Located<String>>,
    notify: Option<Loc>,
    notify_command: Option<Located<Vec<String>>>,
    notify_timeout: Option<Located<String>>,
    notify_url: Option<Located<String>>,
    notify_format: Option<Located<String>>,
    /// Its `file` is the file that wrote it (set when parsed).
    notify_token: Option<Node>,
    settings: Option<Node>,
}

fn loc_of<T>(file: FileId, s: &Spanned<T>) -> Loc {
    Loc::new(file, s.span())
}

/// The string member `key` of `table`, with its place.
fn table_text(file: FileId, table: &node::Table, key: &str) -> Option<Located<String>> {
    let m = table.get(key)?;
    match &m.node.value {
        Value::String(v) => Some(Located::new(v.clone(), Loc::new(file, m.node.span.clone()))),
        _ => None,
    }
}

fn lstr(file: FileId, s: SString) -> Located<String> {
    let loc = loc_of(file, &s);
    Located::new(s.into_inner(), loc)
}

fn llist(file: FileId, s: SList) -> Vec<Located<String>> {
    s.into_inner().into_iter().map(|x| lstr(file, x)).collect()
}

fn largv(file: FileId, s: SList) -> Located<Vec<String>> {
    let loc = loc_of(file, &s);
    Located::new(
        s.into_inner()
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        loc,
    )
}

fn lval<T>(file: FileId, s: Spanned<T>) -> Located<T> {
    let loc = loc_of(file, &s);
    Located::new(s.into_inner(), loc)
}

impl Partial {
    /// Take everything a file sets; callers take `extends` and `[target]` out first.
    fn from_raw(file: FileId, raw: &mut RawFile) -> Partial {
        let mut p = Partial::default();
        if let Some(env) = raw.environment.take() {
            let env = env.into_inner();
            p.account = env.account.map(|s| lstr(file, s));
            p.schema = env.schema.map(|s| lstr(file, s));
            p.branch = env.branch.map(|s| lstr(file, s));
            p.protected = env.protected.map(|s| lval(file, s));
            p.markers = env.markers.map(|s| llist(file, s));
            p.after = env.after.map(|s| llist(file, s));
        }
        if let Some(id) = raw.identity.take() {
            p.identity = Some(loc_of(file, &id));
            let id = id.into_inner();
            p.identity_command = id.command.map(|s| largv(file, s));
            p.identity_timeout = id.timeout.map(|s| lstr(file, s));
        }
        if let Some(h) = raw.health.take() {
            p.health = Some(loc_of(file, &h));
            let h = h.into_inner();
            p.health_command = h.command.map(|s| largv(file, s));
            p.health_timeout = h.timeout.map(|s| lstr(file, s));
            p.health_retries = h.retries.map(|s| lval(file, s));
            p.health_interval = h.interval.map(|s| lstr(file, s));
        }
        if let Some(n) = raw.notify.take() {
            p.notify = Some(loc_of(file, &n));
            let n = n.into_inner();
            p.notify_command = n.command.map(|s| largv(file, s));
            p.notify_timeout = n.timeout.map(|s| lstr(file, s));
            p.notify_url = n.url.map(|s| lstr(file, s));
            p.notify_format = n.format.map(|s| lstr(file, s));
            p.notify_token = n.token.map(|mut t| {
                t.set_file(file);
                t
            });
        }
        if let Some(mut s) = raw.settings.take() {
            s.set_file(file);
            p.settings = Some(s);
        }
        p
    }

    /// Put `over` on top of `self`: values set in `over` win, settings tables merge.
    fn overlay(&mut self, over: Partial) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            account,
            schema,
            branch,
            protected,
            markers,
            after,
            identity,
            identity_command,
            identity_timeout,
            health,
            health_command,
            health_timeout,
            health_retries,
            health_interval,
            notify,
            notify_command,
            notify_timeout,
            notify_url,
            notify_format,
            notify_token
        );
        match (&mut self.settings, over.settings) {
            (Some(base), Some(top)) => base.merge(top),
            (None, Some(top)) => self.settings = Some(top),
            _ => {}
        }
    }
}

/// A file decoded and deserialized, before it is registered: done in parallel. The text of
/// `Empty`, `Parsed` and `Invalid` is filled in afterwards, moved out of the input file.
enum PreParsed {
    TooLarge(u64),
    NotUtf8 {
        lossy: String,
        start: usize,
        byte: u8,
    },
    Empty(String),
    Parsed(String, Box<RawFile>),
    Invalid(String, toml::de::Error),
}

/// [`pre_parse`] of the files at `idx`, on every core.
fn pre_parse_each(files: &[InputFile], idx: &[usize]) -> Vec<PreParsed> {
    let batch: Vec<&InputFile> = idx.iter().map(|&i| &files[i]).collect();
    crate::parallel::map(&batch, |f| pre_parse(f))
}

fn pre_parse(file: &InputFile) -> PreParsed {
    let bytes = match &file.content {
        Ok(b) => b,
        Err(size) => return PreParsed::TooLarge(*size),
    };
    match std::str::from_utf8(bytes) {
        Err(e) => {
            let start = e.valid_up_to();
            // Keep the valid prefix (and a little more) so the diagnostic can show the line.
            let end = bytes.len().min(start + 64);
            PreParsed::NotUtf8 {
                lossy: String::from_utf8_lossy(&bytes[..end]).into_owned(),
                start,
                byte: bytes[start],
            }
        }
        Ok(text) if text.trim().is_empty() => PreParsed::Empty(String::new()),
        Ok(text) => {
            match direct::from_str(text).map_or_else(|| toml::from_str::<RawFile>(text), Ok) {
                Ok(raw) => PreParsed::Parsed(String::new(), Box::new(raw)),
                Err(e) => PreParsed::Invalid(String::new(), e),
            }
        }
    }
}

struct Loader<'a> {
    sources: Sources,
    diagnostics: Vec<Diagnostic>,
    /// Parsed layers by name (`_common`); `None` when the layer failed to parse.
    layers: HashMap<String, Option<Parsed>>,
    /// Layer name -> already-merged partial (memoised), `None` if it is broken.
    resolved_layers: HashMap<String, Option<Partial>>,
    schemas: schema::Schemas,
    root: Option<&'a Path>,
}

/// Load and validate every environment of `input`, keeping every environment's resources.
pub fn load(input: Input) -> Config {
    load_keeping(input, Keep::All)
}

/// What one input file is, by its path.
enum FileKind {
    Layer(String),
    Env(String),
    /// Not a valid name: reported after the file is parsed (`is_layer`, the file stem).
    Misnamed(String, bool),
}

fn file_kind(path: &str) -> Option<FileKind> {
    let stem = path.strip_prefix("environments/")?.strip_suffix(".toml")?;
    let (is_layer, name) = match stem.strip_prefix('_') {
        Some(rest) => (true, rest),
        None => (false, stem),
    };
    Some(if !valid_name(name) {
        FileKind::Misnamed(stem.to_owned(), is_layer)
    } else if is_layer {
        FileKind::Layer(stem.to_owned())
    } else {
        FileKind::Env(stem.to_owned())
    })
}

/// Load and validate every environment of `input`; keep the resources of those `keep` names.
///
/// Environments stream through in batches: a batch is parsed (on every core), resolved against
/// its layers, validated against its schema (on every core), and its strings are kept for the
/// cross-environment lock; then the resources of environments not kept are let go. So memory
/// holds one batch of trees at a time, not the whole repository. Diagnostics come out in the
/// same order as if every file had been parsed first: parse problems in file order, then
/// each environment's, then schema problems, then the cross-environment lock's.
pub fn load_keeping(input: Input, keep: Keep) -> Config {
    let Input {
        environments: mut files,
        schemas,
        root,
    } = input;
    let mut loader = Loader {
        sources: Sources::default(),
        diagnostics: Vec::new(),
        layers: HashMap::new(),
        resolved_layers: HashMap::new(),
        schemas: schema::Schemas::default(),
        root: root.as_deref(),
    };
    let mut kinds: Vec<Option<FileKind>> = files.iter().map(|f| file_kind(&f.path)).collect();
    // Layers (and misnamed files) first, so that layers are there whatever the order; then the
    // environments in batches of a few per core.
    let (first, envs_idx): (Vec<usize>, Vec<usize>) = (0..files.len())
        .filter(|&i| kinds[i].is_some())
        .partition(|&i| !matches!(kinds[i], Some(FileKind::Env(_))));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch = (4 * threads).max(1);
    let mut batches = envs_idx.chunks(batch);
    let first_batch = batches.next().unwrap_or(&[]);

    // The schemas compile on another core while the layers and the first batch parse, into
    // sources and diagnostics of their own that come first, as when compiled before.
    let (pre_first, pre_batch, compiled) = std::thread::scope(|s| {
        let compiled = s.spawn(|| {
            let (mut sources, mut diagnostics) = (Sources::default(), Vec::new());
            let schemas = schema::Schemas::load(schemas, &mut sources, &mut diagnostics);
            (schemas, sources, diagnostics)
        });
        let pre_first = pre_parse_each(&files, &first);
        let pre_batch = pre_parse_each(&files, first_batch);
        (
            pre_first,
            pre_batch,
            compiled.join().expect("compiling schemas does not panic"),
        )
    });
    (loader.schemas, loader.sources, loader.diagnostics) = compiled;
    let compile_diags = std::mem::take(&mut loader.diagnostics);

    // Problems found while parsing (and naming) each file, by input index.
    let mut file_diags: Vec<Vec<Diagnostic>> = (0..files.len()).map(|_| Vec::new()).collect();
    let mut resolve_diags = Vec::new();
    let mut schema_diags = Vec::new();
    let mut broken = Vec::new();
    let mut environments: Vec<Environment> = Vec::new();
    // The strings of each environment whose resources were let go, for the lock's scan.
    let mut strings: Vec<Option<crate::safety::Strings>> = Vec::new();

    for (&i, pre) in first.iter().zip(pre_first) {
        let parsed = loader.register(&mut files[i], pre);
        match kinds[i].take() {
            Some(FileKind::Layer(stem)) => {
                loader.layers.insert(stem, parsed);
            }
            Some(FileKind::Misnamed(stem, is_layer)) => {
                loader.misnamed(&files[i], parsed.as_ref(), &stem, is_layer);
                if !is_layer {
                    broken.push(stem);
                }
            }
            Some(FileKind::Env(_)) | None => {}
        }
        file_diags[i] = std::mem::take(&mut loader.diagnostics);
    }

    let mut batch_idx = first_batch;
    let mut pre_batch = pre_batch;
    loop {
        let mut parsed_envs = Vec::new();
        for (&i, pre) in batch_idx.iter().zip(pre_batch) {
            let parsed = loader.register(&mut files[i], pre);
            file_diags[i] = std::mem::take(&mut loader.diagnostics);
            let Some(FileKind::Env(stem)) = kinds[i].take() else {
                continue;
            };
            match parsed {
                Some(p) => parsed_envs.push((stem, p)),
                None => broken.push(stem),
            }
        }
        let mut resolved = Vec::new();
        for (name, parsed) in parsed_envs {
            match loader.resolve_env(&name, parsed) {
                Some(env) => resolved.push(env),
                None => broken.push(name),
            }
        }
        resolve_diags.append(&mut loader.diagnostics);
        // Validate the batch against its schemas, and keep the strings of what is let go.
        let (schemas, sources) = (&loader.schemas, &loader.sources);
        let checked = crate::parallel::map(&resolved, |env| {
            let mut diags = Vec::new();
            schemas.validate(env, &mut diags);
            let kept = keep.keeps(&env.name);
            (diags, (!kept).then(|| crate::safety::strings(env, sources)))
        });
        for (mut env, (diags, env_strings)) in resolved.into_iter().zip(checked) {
            schema_diags.extend(diags);
            if env_strings.is_some() {
                env.settings = Settings(None);
            }
            strings.push(env_strings);
            environments.push(env);
        }
        let Some(next) = batches.next() else {
            break;
        };
        batch_idx = next;
        pre_batch = pre_parse_each(&files, next);
    }

    // Layers no environment uses are still checked (a cycle or a forbidden key is a bug waiting).
    let mut unused: Vec<String> = loader
        .layers
        .keys()
        .filter(|l| !loader.resolved_layers.contains_key(*l))
        .cloned()
        .collect();
    unused.sort();
    for layer in unused {
        if let Some(Some(p)) = loader.layers.get(&layer) {
            let at = Loc::file(p.file);
            loader.resolve_layer(&layer, &at, &mut Vec::new());
        }
    }
    let unused_diags = std::mem::take(&mut loader.diagnostics);
    broken.sort();

    // The cross-environment lock works on everything that resolved, schema-valid or not. An
    // environment whose resources were let go is loaded again only when its strings hold a
    // foreign identity, to report where.
    let names = sorted_names(&environments, &broken);
    let reloaded: HashMap<usize, Environment> =
        crate::safety::suspects(&environments, &strings, &loader.sources)
            .into_iter()
            .filter_map(|i| Some((i, loader.reload(&environments[i])?)))
            .collect();
    let safety = crate::safety::scan(&environments, &names, &loader.sources, &reloaded);
    let identities: Arc<Vec<(String, String, bool)>> = Arc::new(
        environments
            .iter()
            .flat_map(|e| {
                std::iter::once((e.name.clone(), e.account.value.clone(), true)).chain(
                    e.markers
                        .iter()
                        .map(|m| (e.name.clone(), m.value.clone(), false)),
                )
            })
            .collect(),
    );
    for env in &mut environments {
        env.secret_checks = SecretChecks {
            validator: loader.schemas.get(&env.schema.value),
            identities: identities.clone(),
        };
    }
    let mut diagnostics = compile_diags;
    diagnostics.extend(file_diags.into_iter().flatten());
    diagnostics.extend(resolve_diags);
    diagnostics.extend(unused_diags);
    diagnostics.extend(schema_diags);
    diagnostics.extend(safety);
    Config {
        sources: loader.sources,
        environments,
        broken,
        diagnostics,
    }
}

impl Loader<'_> {
    /// Register one pre-parsed input file, its text moved (not copied) into the sources.
    fn register(&mut self, file: &mut InputFile, mut pre: PreParsed) -> Option<Parsed> {
        if let (
            Ok(bytes),
            PreParsed::Empty(text) | PreParsed::Parsed(text, _) | PreParsed::Invalid(text, _),
        ) = (&mut file.content, &mut pre)
        {
            // It is UTF-8: `pre_parse` said so.
            *text = String::from_utf8(std::mem::take(bytes)).unwrap_or_default();
        }
        self.parse_file(file, pre)
    }

    /// Report a file whose name is not a valid environment or layer name.
    fn misnamed(&mut self, file: &InputFile, parsed: Option<&Parsed>, stem: &str, is_layer: bool) {
        let id = parsed
            .map(|p| p.file)
            .unwrap_or_else(|| self.sources.add(file.path.clone(), ""));
        self.diagnostics.push(
            Diagnostic::new(
                "invalid-name",
                format!(
                    "`{}` is not a valid {} name",
                    stem,
                    if is_layer { "layer" } else { "environment" }
                ),
            )
            .env(stem.to_owned())
            .at(Loc::file(id), "file name")
            .hint(
                "names are lowercase letters, digits and `-`, starting with a letter or digit \
                 (layers add a leading `_`); rename the file",
            ),
        );
    }

    /// Load an environment again from its registered text, resources included, for a report
    /// that needs them after they were let go. Its problems were reported the first time.
    fn reload(&mut self, env: &Environment) -> Option<Environment> {
        let source = self.sources.get(env.file);
        let file = InputFile {
            path: source.path.clone(),
            content: Ok(source.text.as_bytes().to_vec()),
        };
        let reported = self.diagnostics.len();
        let parsed = match pre_parse(&file) {
            PreParsed::Parsed(_, raw) => Some(self.parsed(env.file, &file.path, *raw)),
            _ => None,
        };
        let env = parsed.and_then(|p| self.resolve_env(&env.name, p));
        self.diagnostics.truncate(reported);
        env
    }

    /// Register one pre-parsed file; every problem becomes a diagnostic.
    fn parse_file(&mut self, file: &InputFile, pre: PreParsed) -> Option<Parsed> {
        match pre {
            PreParsed::TooLarge(size) => {
                let id = self.sources.add(file.path.clone(), "");
                self.diagnostics.push(
                    Diagnostic::new(
                        "file-too-large",
                        format!(
                            "{} is {} bytes; environment files are limited to {} bytes",
                            file.path, size, MAX_FILE_BYTES
                        ),
                    )
                    .env(stem_of(&file.path))
                    .at(Loc::file(id), "file too large")
                    .hint(
                        "split the settings into layers, or move bulk data out of the repository",
                    ),
                );
                None
            }
            PreParsed::NotUtf8 { lossy, start, byte } => {
                let id = self.sources.add(file.path.clone(), lossy);
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-utf8",
                        format!(
                            "{} is not valid UTF-8 (byte 0x{byte:02x} at offset {start})",
                            file.path
                        ),
                    )
                    .env(stem_of(&file.path))
                    .at(
                        Loc::new(id, start..start + '\u{FFFD}'.len_utf8()),
                        "not UTF-8",
                    )
                    .hint("environment files must be UTF-8 text; re-save the file as UTF-8"),
                );
                None
            }
            PreParsed::Empty(text) => {
                let id = self.sources.add(file.path.clone(), text);
                self.diagnostics.push(
                    Diagnostic::new("empty-file", format!("{} is empty", file.path))
                        .env(stem_of(&file.path))
                        .at(Loc::file(id), "empty file")
                        .hint(if file.path.contains("/_") {
                            "delete the layer, or give it settings"
                        } else {
                            "an environment needs at least [environment] account and schema, and a [target]"
                        }),
                );
                None
            }
            PreParsed::Parsed(text, raw) => {
                let id = self.sources.add(file.path.clone(), text);
                Some(self.parsed(id, &file.path, *raw))
            }
            PreParsed::Invalid(text, e) => {
                let id = self.sources.add(file.path.clone(), text);
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim().to_owned();
                let (code, message, label, hint) = toml_error_parts(&message);
                self.diagnostics.push(
                    Diagnostic::new(code, message)
                        .env(stem_of(&file.path))
                        .at(Loc::new(id, span), label)
                        .hint(hint),
                );
                None
            }
        }
    }

    /// A file that parsed, registered as `id`: its secret references checked.
    fn parsed(&mut self, id: FileId, path: &str, mut raw: RawFile) -> Parsed {
        let mut secrets_ok = true;
        if let Some(settings) = raw.settings.as_mut() {
            let sources = &self.sources;
            let at = |offset: usize| {
                let (l, c) = sources.line_col(&Loc::new(id, offset..offset));
                format!("{path}:{l}:{c}")
            };
            for p in settings.lift_secrets(&at) {
                secrets_ok = false;
                self.diagnostics.push(
                    Diagnostic::new("invalid-secret", p.message)
                        .env(stem_of(path))
                        .at(Loc::new(id, p.span), p.label)
                        .hint(
                            "write `{ secret = \"env:NAME\" }` or `{ secret = \"file:PATH\" }`; \
                             the value is read when deploying and never shown",
                        ),
                );
            }
        }
        Parsed {
            file: id,
            raw,
            secrets_ok,
        }
    }

    /// Merge a layer with the layers it extends. `stack` detects cycles and bounds the depth
    /// (the walk recurses once per layer).
    fn resolve_layer(
        &mut self,
        name: &str,
        from: &Loc,
        stack: &mut Vec<String>,
    ) -> Option<Partial> {
        if let Some(done) = self.resolved_layers.get(name) {
            return done.clone();
        }
        if stack.len() > MAX_EXTENDS_DEPTH {
            self.diagnostics.push(extends_too_deep(stack, from));
            return None;
        }
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut cycle: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
            cycle.push(name);
            self.diagnostics.push(
                Diagnostic::new(
                    "extends-cycle",
                    format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
                )
                .env(stack[0].clone())
                .at(from.clone(), "this brings the cycle back")
                .hint("remove one of the `extends` entries so that layers form a tree"),
            );
            return None;
        }
        let Some(entry) = self.layers.get_mut(name) else {
            let mut known: Vec<&String> = self.layers.keys().collect();
            known.sort();
            let known = if known.is_empty() {
                "there are no layers".to_owned()
            } else {
                format!(
                    "known layers: {}",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let hint = if name.starts_with('_') {
                format!("create environments/{name}.toml, or fix the name ({known})")
            } else {
                format!("layer names start with `_` (environments/_{name}.toml); {known}")
            };
            self.diagnostics.push(
                Diagnostic::new("unknown-layer", format!("layer `{name}` does not exist"))
                    .env(stack.first().cloned().unwrap_or_default())
                    .at(from.clone(), "no such layer")
                    .hint(hint),
            );
            return None;
        };
        let Some(mut parsed) = entry.take() else {
            // Broken layer: its own diagnostic was already reported.
            return None;
        };
        let file = parsed.file;
        let mut ok = parsed.secrets_ok;
        // A layer must not carry an environment's identity or location.
        if let Some(env) = &parsed.raw.environment {
            let e = env.get_ref();
            for (field, span) in [
                ("account", e.account.as_ref().map(Spanned::span)),
                ("markers", e.markers.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    ok = false;
                    self.diagnostics
                        .push(layer_forbidden(name, file, span, field));
                }
            }
        }
        if let Some(t) = &parsed.raw.target {
            ok = false;
            self.diagnostics
                .push(layer_forbidden(name, file, t.span(), "[target]"));
        }
        if let Some(t) = &parsed.raw.targets {
            ok = false;
            self.diagnostics
                .push(layer_forbidden(name, file, t.span(), "[targets]"));
        }
        if let Some(r) = &parsed.raw.rollout {
            ok = false;
            self.diagnostics
                .push(layer_forbidden(name, file, r.span(), "[rollout]"));
        }
        stack.push(name.to_owned());
        let extends = parsed
            .raw
            .environment
            .as_mut()
            .and_then(|e| e.get_mut().extends.take());
        let mut base = Partial::default();
        if let Some(list) = extends {
            for l in llist(file, list) {
                match self.resolve_layer(&l.value, &l.loc, stack) {
                    Some(p) => base.overlay(p),
                    None => ok = false,
                }
            }
        }
        stack.pop();
        base.overlay(Partial::from_raw(file, &mut parsed.raw));
        let result = ok.then_some(base);
        self.resolved_layers.insert(name.to_owned(), result.clone());
        result
    }

    fn resolve_env(&mut self, name: &str, mut parsed: Parsed) -> Option<Environment> {
        let file = parsed.file;
        let diags_before = self.diagnostics.len();
        let secrets_ok = parsed.secrets_ok;
        let extends = parsed
            .raw
            .environment
            .as_mut()
            .and_then(|e| e.get_mut().extends.take())
            .map(|l| llist(file, l))
            .unwrap_or_default();
        let raw_target = parsed.raw.target.take();
        let raw_targets = parsed.raw.targets.take();
        let raw_rollout = parsed.raw.rollout.take();
        let env_section = parsed.raw.environment.as_ref().map(|e| loc_of(file, e));
        let mut merged = Partial::default();
        let mut stack = vec![name.to_owned()];
        let mut layers_ok = true;
        for layer in &extends {
            if layer.value == name {
                self.diagnostics.push(
                    Diagnostic::new(
                        "extends-cycle",
                        format!("`extends` forms a cycle: {name} -> {name}"),
                    )
                    .env(name)
                    .at(layer.loc.clone(), "an environment cannot extend itself")
                    .hint("`extends` names shared layers such as \"_common\""),
                );
                continue;
            }
            match self.resolve_layer(&layer.value, &layer.loc, &mut stack) {
                Some(p) => merged.overlay(p),
                None => layers_ok = false,
            }
        }
        if !layers_ok {
            // The layer's own error says what is wrong; requirements it would have met are moot.
            return None;
        }
        merged.overlay(Partial::from_raw(file, &mut parsed.raw));

        let whole = Loc::file(file);
        let section = env_section.clone().unwrap_or_else(|| whole.clone());
        let missing = |field: &str, at: &Loc, hint: &str| {
            Diagnostic::new("missing-field", format!("missing `{field}`"))
                .env(name)
                .at(at.clone(), format!("`{field}` is required"))
                .hint(hint.to_owned())
        };
        let account = match merged.account.clone() {
            Some(a) if a.value.trim().is_empty() => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-account", "`account` is empty")
                        .env(name)
                        .at(a.loc.clone(), "empty account")
                        .hint("set the one account this environment may be applied to"),
                );
                None
            }
            Some(a) if a.value.trim() != a.value => {
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-account",
                        "`account` has leading or trailing spaces",
                    )
                    .env(name)
                    .at(a.loc.clone(), "remove the spaces")
                    .hint("the account is compared byte for byte with what the target reports"),
                );
                None
            }
            Some(a) => Some(a),
            None => {
                self.diagnostics.push(missing(
                    "account",
                    &section,
                    "add `account = \"...\"` under [environment]: the one account this environment may be applied to",
                ));
                None
            }
        };
        let schema_name = match merged.schema.clone() {
            Some(s) => Some(s),
            None => {
                self.diagnostics.push(missing(
                    "schema",
                    &section,
                    "add `schema = \"NAME\"` under [environment]; schemas/NAME.schema.json validates [settings]",
                ));
                None
            }
        };
        let protected = merged.protected.clone();
        if let Some(p) = &protected
            && p.value
            && merged.branch.is_none()
        {
            self.diagnostics.push(
                Diagnostic::new(
                    "protected-without-branch",
                    "`protected = true` needs a `branch`",
                )
                .env(name)
                .at(p.loc.clone(), "protected here")
                .hint("add `branch = \"main\"`: a protected environment deploys only reviewed commits"),
            );
        }
        if let Some(b) = &merged.branch
            && b.value.trim().is_empty()
        {
            self.diagnostics.push(
                Diagnostic::new("invalid-branch", "`branch` is empty")
                    .env(name)
                    .at(b.loc.clone(), "empty branch")
                    .hint("name the git revision deployed commits must be reachable from, e.g. \"main\""),
            );
        }
        let markers = merged.markers.clone().unwrap_or_default();
        for m in &markers {
            if m.value.chars().count() < 4 {
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-marker",
                        format!("marker `{}` is too short to identify an environment", m.value),
                    )
                    .env(name)
                    .at(m.loc.clone(), "fewer than 4 characters")
                    .hint("markers are searched for inside every other environment's settings; use a distinctive string such as a host name"),
                );
            }
        }
        let after = merged.after.clone().unwrap_or_default();
        let identity = self.identity(name, &merged);
        let health = self.health(name, &merged);
        let notify = self.notify(name, &merged);
        let (target, fleet) =
            self.target_or_fleet(name, file, raw_target, raw_targets, raw_rollout);
        let settings = self.settings(name, merged.settings.take());

        if self.diagnostics.len() > diags_before || !layers_ok || !secrets_ok {
            return None;
        }
        let page_token = notify
            .as_ref()
            .and_then(|n| n.as_ref())
            .and_then(|n| n.page.as_ref())
            .and_then(|p| p.token.as_ref());
        let secret_vars = secret_vars(settings.as_ref(), target.as_ref(), page_token);
        Some(Environment {
            name: name.to_owned(),
            file,
            account: account?,
            schema: schema_name?,
            branch: merged.branch,
            protected: protected.is_some_and(|p| p.value),
            markers,
            after,
            extends,
            identity: identity?,
            target: target?,
            fleet,
            health: health?,
            notify: notify?,
            resource_count: settings.as_ref().map_or(0, BTreeMap::len),
            secret_vars,
            settings: Settings(Some(settings?)),
            secret_checks: SecretChecks::default(),
        })
    }

    /// `[target]`, or `[targets.NAME]` with an optional `[rollout]` (then the target is the
    /// fleet's first). Exactly one of the two.
    fn target_or_fleet(
        &mut self,
        name: &str,
        file: FileId,
        target: Option<Spanned<raw::RawTarget>>,
        targets: Option<Spanned<BTreeMap<String, Spanned<raw::RawTarget>>>>,
        rollout: Option<Spanned<raw::RawRollout>>,
    ) -> (Option<Target>, Option<fleet::Fleet>) {
        let whole = Loc::file(file);
        match (target, targets) {
            (Some(t), None) => {
                if let Some(r) = rollout {
                    self.diagnostics.push(
                        Diagnostic::new("invalid-rollout", "[rollout] needs `[targets.NAME]`")
                            .env(name)
                            .at(loc_of(file, &r), "a rollout of one [target]")
                            .hint("name the targets of a fleet as [targets.NAME] tables (one is enough) instead of [target]"),
                    );
                    return (None, None);
                }
                (self.target(name, file, t), None)
            }
            (None, Some(ts)) => match self.fleet(name, file, ts, rollout) {
                Some(f) => (Some(f.members[0].target.clone()), Some(f)),
                None => (None, None),
            },
            (Some(t), Some(_)) => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-target", "both [target] and [targets] are set")
                        .env(name)
                        .at(loc_of(file, &t), "one target here")
                        .hint("an environment is one [target] or a fleet of [targets.NAME]; keep one of them"),
                );
                (None, None)
            }
            (None, None) => {
                self.diagnostics.push(
                    Diagnostic::new("missing-field", "missing `[target]`")
                        .env(name)
                        .at(whole, "`[target]` is required")
                        .hint(
                            "add a [target] table, e.g. `kind = \"dir\"` and `path = \"/srv/asr\"`",
                        ),
                );
                (None, None)
            }
        }
    }

    /// An integer setting within `range` (`default` when absent).
    fn positive(
        &mut self,
        name: &str,
        file: FileId,
        field: &str,
        v: Option<Spanned<i64>>,
        default: usize,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<usize> {
        let Some(v) = v else {
            return Some(default);
        };
        if range.contains(v.get_ref()) {
            return usize::try_from(*v.get_ref()).ok();
        }
        self.diagnostics.push(
            Diagnostic::new(
                "invalid-number",
                format!("`{field} = {}` is out of range", v.get_ref()),
            )
            .env(name)
            .at(
                loc_of(file, &v),
                format!("must be between {} and {}", range.start(), range.end()),
            )
            .hint(format!(
                "set `{field}` to the etcd server's own setting (default {default})"
            )),
        );
        None
    }

    /// An `exec` target's `protocol`: 1 (the default) or 2.
    /// An `exec` target's `state`: a directory (`state = "DIR"`), or a `[target.state]` table
    /// naming a store (`kind = "dir" | "etcd" | "provider"`).
    fn exec_state(
        &mut self,
        name: &str,
        file: FileId,
        node: Node,
    ) -> Option<(Located<String>, StateConfig)> {
        let at = Loc::new(file, node.span.clone());
        match node.value {
            Value::String(dir) => self.dir_state(name, Located::new(dir, at)),
            Value::Table(table) => self.state_table(name, file, at, &table),
            other => {
                let found = Node {
                    file,
                    span: node.span,
                    value: other,
                }
                .type_name();
                self.state_problem(
                    name,
                    at,
                    format!("`state` must be a directory or a table, not {found}"),
                    "neither",
                    "write `state = \"/var/lib/envlock/<environment>\"`, or a [target.state] table with `kind = \"dir\"`, `\"etcd\"` or `\"provider\"`",
                )
            }
        }
    }

    /// An `invalid-state` problem at `loc`; `None`, for the caller to return.
    fn state_problem<T>(
        &mut self,
        name: &str,
        loc: Loc,
        message: String,
        label: &str,
        hint: &str,
    ) -> Option<T> {
        self.diagnostics.push(
            Diagnostic::new("invalid-state", message)
                .env(name)
                .at(loc, label)
                .hint(hint),
        );
        None
    }

    /// A `[target.state]` table: its `kind` and the keys that kind has.
    fn state_table(
        &mut self,
        name: &str,
        file: FileId,
        at: Loc,
        table: &node::Table,
    ) -> Option<(Located<String>, StateConfig)> {
        let kind = table_text(file, table, "kind")
            .map(|k| k.value)
            .unwrap_or_default();
        let allowed: &[&str] = match kind.as_str() {
            "dir" => &["kind", "path"],
            "etcd" => &["kind", "endpoints", "prefix", "timeout", "lock_ttl"],
            "provider" => &["kind", "lock_ttl"],
            _ => {
                return self.state_problem(
                    name,
                    at,
                    format!(
                        "[target.state] `kind` is {kind:?}, not one of \"dir\", \"etcd\", \"provider\""
                    ),
                    "unknown store",
                    "write `kind = \"dir\"` (with `path`), `kind = \"etcd\"` (with `endpoints` and `prefix`) or `kind = \"provider\"`",
                );
            }
        };
        if let Some((key, m)) = table.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return self.state_problem(
                name,
                Loc::new(file, m.key_span.clone()),
                format!("[target.state] of kind `{kind}` has no `{key}`"),
                "unknown key",
                &format!("the keys of a `{kind}` state are: {}", allowed.join(", ")),
            );
        }
        let lock_ttl = self.duration(
            name,
            "lock_ttl",
            table_text(file, table, "lock_ttl").as_ref(),
            Duration::from_secs(30),
        );
        match kind.as_str() {
            "dir" => match table_text(file, table, "path") {
                Some(path) => self.dir_state(name, path),
                None => self.state_problem(
                    name,
                    at,
                    "[target.state] of kind `dir` needs `path`".into(),
                    "no `path`",
                    "add `path = \"/var/lib/envlock/<environment>\"`",
                ),
            },
            "provider" => Some((
                Located::new(kind, at),
                StateConfig::Provider {
                    lock_ttl: lock_ttl?,
                },
            )),
            _ => self.etcd_state(name, file, at, table, lock_ttl?),
        }
    }

    /// A `[target.state]` of kind `etcd`: endpoints, a prefix like an etcd target's, a timeout.
    fn etcd_state(
        &mut self,
        name: &str,
        file: FileId,
        at: Loc,
        table: &node::Table,
        lock_ttl: Duration,
    ) -> Option<(Located<String>, StateConfig)> {
        let endpoints: Vec<String> = match table.get("endpoints").map(|m| &m.node.value) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|n| match &n.value {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let prefix = table_text(file, table, "prefix")
            .map(|p| p.value)
            .unwrap_or_default();
        if endpoints.is_empty() || !prefix.starts_with('/') || !prefix.ends_with('/') {
            return self.state_problem(
                name,
                at,
                "[target.state] of kind `etcd` needs `endpoints` (a list of URLs) and a `prefix` that starts and ends with `/`".into(),
                "incomplete etcd store",
                "e.g. `endpoints = [\"http://10.0.0.1:2379\"]` and `prefix = \"/envlock/prod/\"`",
            );
        }
        let timeout = self.duration(
            name,
            "timeout",
            table_text(file, table, "timeout").as_ref(),
            Duration::from_secs(5),
        );
        Some((
            Located::new(format!("etcd {prefix}"), at),
            StateConfig::Etcd {
                endpoints,
                prefix,
                timeout: timeout?,
                lock_ttl,
            },
        ))
    }

    /// A directory state: not empty, resolved like a `dir` target's path.
    fn dir_state(
        &mut self,
        name: &str,
        path: Located<String>,
    ) -> Option<(Located<String>, StateConfig)> {
        if path.value.trim().is_empty() {
            self.diagnostics.push(
                Diagnostic::new("invalid-path", "`state` is empty")
                    .env(name)
                    .at(path.loc.clone(), "empty path")
                    .hint("name the directory where envlock keeps this target's stamp, lock, generations and log"),
            );
            return None;
        }
        let (resolved, display) = self.resolve_path(&path.value);
        Some((path, StateConfig::Dir { resolved, display }))
    }

    fn protocol(&mut self, name: &str, file: FileId, v: Option<Spanned<i64>>) -> Option<u64> {
        let Some(v) = v else {
            return Some(1);
        };
        if let n @ (1 | 2) = *v.get_ref() {
            return u64::try_from(n).ok();
        }
        self.diagnostics.push(
            Diagnostic::new(
                "invalid-protocol",
                format!("`protocol = {}` is not a provider protocol", v.get_ref()),
            )
            .env(name)
            .at(loc_of(file, &v), "must be 1 or 2")
            .hint(
                "1: one provider process per call (the default); 2: one process per run, \
                 batched writes (the provider must speak it; see docs/providers.md)",
            ),
        );
        None
    }

    /// A field that must be a secret reference, `{ secret = "env:NAME" }`, never a value.
    fn secret_field(
        &mut self,
        name: &str,
        file: FileId,
        field: &str,
        node: Option<Node>,
        variable: &str,
    ) -> Option<Option<SecretRef>> {
        let Some(node) = node else {
            return Some(None);
        };
        let reference = match &node.value {
            Value::Table(map) if map.len() == 1 => {
                map.get("secret").and_then(|m| match &m.node.value {
                    Value::String(text) => Some(text.clone()),
                    _ => None,
                })
            }
            _ => None,
        };
        let problem = match reference.as_deref().map(SecretRef::parse) {
            Some(Ok(source)) => {
                let (l, c) = self.sources.line_col(&Loc::new(file, node.span.clone()));
                let at = format!("{}:{l}:{c}", self.sources.get(file).path);
                return Some(Some(SecretRef {
                    source,
                    text: reference.unwrap_or_default(),
                    at,
                }));
            }
            Some(Err(why)) => format!("invalid secret reference: {why}"),
            None => format!("`{field}` must be a secret reference, not a value in the repository"),
        };
        self.diagnostics.push(
            Diagnostic::new("invalid-secret", problem)
                .env(name)
                .at(Loc::new(file, node.span.clone()), "not a secret reference")
                // The line may hold the credential itself: it is not shown.
                .concealed()
                .hint(format!(
                    "write `{field} = {{ secret = \"env:{variable}\" }}` or `{{ secret = \"file:PATH\" }}`"
                )),
        );
        None
    }

    /// A directory as written in an environment file: absolute and normalised (relative paths
    /// start at the repository root), and for messages (relative when written relative).
    fn resolve_path(&self, written: &str) -> (PathBuf, String) {
        let resolved = normalize(self.root, Path::new(written));
        let display = match self
            .root
            .and_then(|r| resolved.strip_prefix(normalize(None, r)).ok())
        {
            Some(rel) if !Path::new(written).is_absolute() => rel.display().to_string(),
            _ => resolved.display().to_string(),
        };
        (resolved, display)
    }

    fn duration(
        &mut self,
        name: &str,
        field: &str,
        v: Option<&Located<String>>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(v) = v else {
            return Some(default);
        };
        match duration::parse(&v.value) {
            Ok(d) if d.is_zero() => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-duration", format!("`{field}` cannot be zero"))
                        .env(name)
                        .at(v.loc.clone(), "zero duration")
                        .hint("write a positive duration such as \"500ms\", \"10s\" or \"2m\""),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-duration", format!("`{field}`: {e}"))
                        .env(name)
                        .at(v.loc.clone(), "not a duration")
                        .hint("durations are strings such as \"500ms\", \"10s\", \"2m\" or \"1h 30m\""),
                );
                None
            }
        }
    }

    fn argv(
        &mut self,
        name: &str,
        section: &str,
        cmd: Option<&Located<Vec<String>>>,
        at: &Loc,
    ) -> Option<Vec<String>> {
        match cmd {
            None => {
                self.diagnostics.push(
                    Diagnostic::new("missing-field", format!("[{section}] has no `command`"))
                        .env(name)
                        .at(at.clone(), "`command` is required here")
                        .hint("commands are argv arrays, e.g. command = [\"curl\", \"-fsS\", \"http://127.0.0.1:8080/healthz\"]"),
                );
                None
            }
            Some(c) if c.value.is_empty() || c.value[0].trim().is_empty() => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-command", format!("[{section}] `command` is empty"))
                        .env(name)
                        .at(c.loc.clone(), "no program to run")
                        .hint("the first element is the program, the rest its arguments; no shell is involved"),
                );
                None
            }
            Some(c) if c.value.len() == 1 && c.value[0].contains(' ') => {
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-command",
                        format!("[{section}] `command` looks like a shell string"),
                    )
                    .env(name)
                    .at(c.loc.clone(), "one element containing spaces")
                    .hint(format!(
                        "commands are argv arrays and never go through a shell: write {:?}",
                        c.value[0].split_whitespace().collect::<Vec<_>>()
                    )),
                );
                None
            }
            Some(c) => Some(c.value.clone()),
        }
    }

    fn identity(&mut self, name: &str, p: &Partial) -> Option<Option<Identity>> {
        let Some(at) = &p.identity else {
            return Some(None);
        };
        let command = self.argv(name, "identity", p.identity_command.as_ref(), at);
        let command_loc = p
            .identity_command
            .as_ref()
            .map_or(at.clone(), |c| c.loc.clone());
        let timeout = self.duration(
            name,
            "timeout",
            p.identity_timeout.as_ref(),
            Duration::from_secs(10),
        );
        Some(Some(Identity {
            command: command?,
            command_loc,
            timeout: timeout?,
        }))
    }

    fn health(&mut self, name: &str, p: &Partial) -> Option<Option<Health>> {
        let Some(at) = &p.health else {
            return Some(None);
        };
        let command = self.argv(name, "health", p.health_command.as_ref(), at);
        let command_loc = p
            .health_command
            .as_ref()
            .map_or(at.clone(), |c| c.loc.clone());
        let timeout = self.duration(
            name,
            "timeout",
            p.health_timeout.as_ref(),
            Duration::from_secs(10),
        );
        let interval = self.duration(
            name,
            "interval",
            p.health_interval.as_ref(),
            Duration::from_secs(1),
        );
        let retries = match &p.health_retries {
            None => Some(0),
            Some(r) if (0..=100).contains(&r.value) => Some(r.value as u32),
            Some(r) => {
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-retries",
                        format!("`retries = {}` is out of range", r.value),
                    )
                    .env(name)
                    .at(r.loc.clone(), "must be between 0 and 100")
                    .hint("`retries` is how many more times a failing health check is tried"),
                );
                None
            }
        };
        Some(Some(Health {
            command: command?,
            command_at: self.place(&command_loc),
            command_loc,
            timeout: timeout?,
            retries: retries?,
            interval: interval?,
        }))
    }

    /// `file:line:col` of `loc`.
    fn place(&self, loc: &Loc) -> String {
        let (l, c) = self.sources.line_col(loc);
        format!("{}:{l}:{c}", self.sources.get(loc.file).path)
    }

    fn notify(&mut self, name: &str, p: &Partial) -> Option<Option<Notify>> {
        let Some(at) = &p.notify else {
            return Some(None);
        };
        // `command`, `url`, or both (each is told; see README "Paging").
        let command = match (&p.notify_command, &p.notify_url) {
            (None, Some(_)) => Some(None),
            _ => self
                .argv(name, "notify", p.notify_command.as_ref(), at)
                .map(Some),
        };
        let command_loc = p
            .notify_command
            .as_ref()
            .map_or(at.clone(), |c| c.loc.clone());
        let timeout = self.duration(
            name,
            "timeout",
            p.notify_timeout.as_ref(),
            Duration::from_secs(10),
        );
        let page = self.page(name, p, at);
        Some(Some(Notify {
            command: command?,
            command_at: self.place(&command_loc),
            command_loc,
            timeout: timeout?,
            page: page?,
        }))
    }

    /// `[notify] url`, `format` and `token`: all present together (token optional but for
    /// pagerduty), the URL https or loopback http, the token a secret reference.
    fn page(&mut self, name: &str, p: &Partial, at: &Loc) -> Option<Option<Page>> {
        let token = match p.notify_token.clone() {
            Some(node) => self.secret_field(name, node.file, "token", Some(node), "NOTIFY_TOKEN"),
            None => Some(None),
        };
        let (url, format) = match self.page_fields(name, p)? {
            Some(pair) => pair,
            None => return Some(None),
        };
        let format = self.page_format(name, format);
        let url_ok = self.page_url(name, url);
        if format == Some(PageFormat::PagerDuty) && p.notify_token.is_none() {
            self.diagnostics.push(
                Diagnostic::new("missing-field", "[notify] `format = \"pagerduty\"` needs a `token`")
                    .env(name)
                    .at(at.clone(), "no routing key")
                    .hint("add `token = { secret = \"env:PAGERDUTY_ROUTING_KEY\" }`: the integration key of the PagerDuty service, read when deploying"),
            );
            return None;
        }
        let (format, token) = (format?, token?);
        if let (true, Some(problem)) = (url_ok, crate::page::endpoint_problem(format, &url.value)) {
            self.diagnostics.push(
                Diagnostic::new("invalid-url", format!("[notify] `url` {problem}"))
                    .env(name)
                    .at(url.loc.clone(), "the API's path is added by envlock")
                    .hint("write the base URL only, e.g. `url = \"https://events.pagerduty.com\"` or `url = \"https://alertmanager.example.net\"`"),
            );
            return None;
        }
        url_ok.then(|| {
            Some(Page {
                url: url.clone(),
                format,
                token,
            })
        })
    }

    /// `url` and `format` of `[notify]`, which come together: `Some(None)` when neither is
    /// given (nor a `token`), `None` after a diagnostic.
    fn page_fields<'p>(
        &mut self,
        name: &str,
        p: &'p Partial,
    ) -> Option<Option<(&'p Located<String>, &'p Located<String>)>> {
        match (&p.notify_url, &p.notify_format) {
            (None, None) => {
                if let Some(t) = &p.notify_token {
                    self.diagnostics.push(
                        Diagnostic::new("missing-field", "[notify] `token` without a `url`")
                            .env(name)
                            .at(Loc::new(t.file, t.span.clone()), "used only with `url`")
                            .concealed()
                            .hint("add `url` and `format`, or remove `token`"),
                    );
                    return None;
                }
                Some(None)
            }
            (Some(u), None) => {
                self.diagnostics.push(
                    Diagnostic::new("missing-field", "[notify] `url` without a `format`")
                        .env(name)
                        .at(u.loc.clone(), "in which format?")
                        .hint(
                            "add `format = \"pagerduty\"`, `\"cloudevents\"` or `\"alertmanager\"`",
                        ),
                );
                None
            }
            (None, Some(f)) => {
                self.diagnostics.push(
                    Diagnostic::new("missing-field", "[notify] `format` without a `url`")
                        .env(name)
                        .at(f.loc.clone(), "delivered where?")
                        .hint("add the `url` envlock delivers the event to"),
                );
                None
            }
            (Some(u), Some(f)) => Some(Some((u, f))),
        }
    }

    /// The `[notify] format`, or `None` after a diagnostic.
    fn page_format(&mut self, name: &str, format: &Located<String>) -> Option<PageFormat> {
        match format.value.as_str() {
            "pagerduty" => Some(PageFormat::PagerDuty),
            "cloudevents" => Some(PageFormat::CloudEvents),
            "alertmanager" => Some(PageFormat::Alertmanager),
            other => {
                self.diagnostics.push(
                    Diagnostic::new("invalid-format", format!("unknown notify format `{other}`"))
                        .env(name)
                        .at(format.loc.clone(), "unknown format")
                        .hint("format is one of \"pagerduty\", \"cloudevents\", \"alertmanager\""),
                );
                None
            }
        }
    }

    /// Whether `[notify] url` is one envlock delivers to (a diagnostic when not).
    fn page_url(&mut self, name: &str, url: &Located<String>) -> bool {
        let Some(problem) = crate::page::url_problem(&url.value) else {
            return true;
        };
        let mut d = Diagnostic::new("invalid-url", format!("[notify] `url` {problem}"))
            .env(name)
            .at(url.loc.clone(), "not an address envlock delivers to")
            .hint("write https://HOST[:PORT]/PATH (http only to 127.0.0.1, localhost or [::1]); credentials go in `token`, as a secret reference");
        if url.value.contains('@') || url.value.contains('?') {
            // It may hold credentials: the line is not shown.
            d = d.concealed();
        }
        self.diagnostics.push(d);
        false
    }

    fn target(&mut self, name: &str, file: FileId, t: Spanned<raw::RawTarget>) -> Option<Target> {
        let loc = loc_of(file, &t);
        let t = t.into_inner();
        let Some(kind) = t.kind.as_ref() else {
            self.diagnostics.push(
                Diagnostic::new("missing-field", "[target] has no `kind`")
                    .env(name)
                    .at(loc, "`kind` is required")
                    .hint("kind is one of \"dir\", \"etcd\", \"exec\""),
            );
            return None;
        };
        let kind_name = kind.get_ref().as_str();
        // Keys that belong to another kind are errors pointing at the key's value.
        let present: [(&str, Option<std::ops::Range<usize>>); 17] = [
            ("path", t.path.as_ref().map(Spanned::span)),
            ("keep", t.keep.as_ref().map(Spanned::span)),
            ("endpoints", t.endpoints.as_ref().map(Spanned::span)),
            ("prefix", t.prefix.as_ref().map(Spanned::span)),
            ("timeout", t.timeout.as_ref().map(Spanned::span)),
            ("ca", t.ca.as_ref().map(Spanned::span)),
            ("cert", t.cert.as_ref().map(Spanned::span)),
            ("key", t.key.as_ref().map(Spanned::span)),
            ("username", t.username.as_ref().map(|n| n.span.clone())),
            ("password", t.password.as_ref().map(|n| n.span.clone())),
            ("lock_ttl", t.lock_ttl.as_ref().map(Spanned::span)),
            ("max_txn_ops", t.max_txn_ops.as_ref().map(Spanned::span)),
            (
                "max_request_bytes",
                t.max_request_bytes.as_ref().map(Spanned::span),
            ),
            ("command", t.command.as_ref().map(Spanned::span)),
            ("options", t.options.as_ref().map(|n| n.span.clone())),
            ("state", t.state.as_ref().map(|n| n.span.clone())),
            ("protocol", t.protocol.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind_name {
            "dir" => &["path", "keep"],
            "etcd" => &[
                "endpoints",
                "prefix",
                "timeout",
                "ca",
                "cert",
                "key",
                "username",
                "password",
                "lock_ttl",
                "max_txn_ops",
                "max_request_bytes",
            ],
            "exec" => &["command", "options", "state", "timeout", "protocol"],
            other => {
                self.diagnostics.push(
                    Diagnostic::new(
                        "unknown-target-kind",
                        format!("unknown target kind `{other}`"),
                    )
                    .env(name)
                    .at(loc_of(file, kind), "unknown kind")
                    .hint("kind is one of \"dir\", \"etcd\", \"exec\""),
                );
                return None;
            }
        };
        let mut ok = true;
        for (key, span) in present {
            if let Some(span) = span
                && !allowed.contains(&key)
            {
                ok = false;
                self.diagnostics.push(
                    Diagnostic::new(
                        "unknown-key",
                        format!("`{key}` does not apply to a `{kind_name}` target"),
                    )
                    .env(name)
                    .at(Loc::new(file, span), format!("not a `{kind_name}` key"))
                    .hint(format!(
                        "a `{kind_name}` target takes: {}",
                        allowed.join(", ")
                    )),
                );
            }
        }
        let need = |this: &mut Self, key: &str, example: &str| {
            this.diagnostics.push(
                Diagnostic::new(
                    "missing-field",
                    format!(
                        "{} `{kind_name}` target needs `{key}`",
                        if kind_name == "exec" { "an" } else { "a" }
                    ),
                )
                .env(name)
                .at(loc.clone(), format!("`{key}` is required"))
                .hint(format!("add e.g. `{key} = {example}`")),
            );
        };
        let kind = match kind_name {
            "dir" => {
                let keep = match &t.keep {
                    None => Some(DEFAULT_KEEP),
                    Some(k) if (2..=1000).contains(k.get_ref()) => Some(*k.get_ref() as usize),
                    Some(k) => {
                        self.diagnostics.push(
                            Diagnostic::new(
                                "invalid-keep",
                                format!("`keep = {}` is out of range", k.get_ref()),
                            )
                            .env(name)
                            .at(loc_of(file, k), "must be between 2 and 1000")
                            .hint("`keep` is how many generations stay available for rollback"),
                        );
                        None
                    }
                };
                let path = match t.path {
                    Some(p) if p.get_ref().trim().is_empty() => {
                        self.diagnostics.push(
                            Diagnostic::new("invalid-path", "`path` is empty")
                                .env(name)
                                .at(loc_of(file, &p), "empty path")
                                .hint("name the directory the settings are written to"),
                        );
                        None
                    }
                    Some(p) => Some(lstr(file, p)),
                    None => {
                        need(self, "path", "\"/srv/asr\"");
                        None
                    }
                };
                let (path, keep) = (path?, keep?);
                if !ok {
                    return None;
                }
                let (resolved, display) = self.resolve_path(&path.value);
                TargetKind::Dir {
                    path,
                    resolved,
                    display,
                    keep,
                }
            }
            "etcd" => {
                let endpoints = match t.endpoints {
                    Some(e) if e.get_ref().is_empty() => {
                        self.diagnostics.push(
                            Diagnostic::new("invalid-endpoints", "`endpoints` is empty")
                                .env(name)
                                .at(loc_of(file, &e), "no endpoint")
                                .hint("list the etcd client URLs, e.g. [\"http://10.0.0.1:2379\"]"),
                        );
                        None
                    }
                    Some(e) => Some(llist(file, e)),
                    None => {
                        need(self, "endpoints", "[\"http://127.0.0.1:2379\"]");
                        None
                    }
                };
                let prefix = match t.prefix {
                    Some(p)
                        if !p.get_ref().starts_with('/')
                            || !p.get_ref().ends_with('/')
                            || p.get_ref().len() < 3
                            || p.get_ref().contains(".envlock/") =>
                    {
                        let why = if p.get_ref().contains(".envlock/") {
                            "must not contain `.envlock/` (envlock keeps its own keys under `<prefix>.envlock/`)"
                        } else {
                            "must start and end with `/`"
                        };
                        self.diagnostics.push(
                            Diagnostic::new("invalid-prefix", format!("etcd prefix `{}` {why}", p.get_ref()))
                                .env(name)
                                .at(loc_of(file, &p), "e.g. \"/asr/prod/\"")
                                .hint("a prefix like \"/asr/prod/\" keeps this environment's keys apart from every other's"),
                        );
                        None
                    }
                    Some(p) => Some(lstr(file, p)),
                    None => {
                        need(self, "prefix", "\"/asr/prod/\"");
                        None
                    }
                };
                let timeout = self.duration(
                    name,
                    "timeout",
                    t.timeout.map(|s| lstr(file, s)).as_ref(),
                    Duration::from_secs(5),
                );
                let lock_ttl = self.duration(
                    name,
                    "lock_ttl",
                    t.lock_ttl.map(|s| lstr(file, s)).as_ref(),
                    Duration::from_secs(15),
                );
                let max_txn_ops =
                    self.positive(name, file, "max_txn_ops", t.max_txn_ops, 128, 3..=1_000_000);
                let max_request_bytes = self.positive(
                    name,
                    file,
                    "max_request_bytes",
                    t.max_request_bytes,
                    1536 * 1024,
                    1024..=(1 << 31),
                );
                let username =
                    self.secret_field(name, file, "username", t.username, "ETCD_USERNAME");
                let password =
                    self.secret_field(name, file, "password", t.password, "ETCD_PASSWORD");
                if let (Some(u), Some(p)) = (&username, &password)
                    && u.is_some() != p.is_some()
                {
                    self.diagnostics.push(
                        Diagnostic::new(
                            "missing-field",
                            "etcd `username` and `password` go together",
                        )
                        .env(name)
                        .at(loc.clone(), "only one of them is set")
                        .hint("set both, each as a secret reference, or neither"),
                    );
                    return None;
                }
                if !ok {
                    return None;
                }
                TargetKind::Etcd {
                    endpoints: endpoints?,
                    prefix: prefix?,
                    timeout: timeout?,
                    ca: t.ca.map(Spanned::into_inner),
                    cert: t.cert.map(Spanned::into_inner),
                    key: t.key.map(Spanned::into_inner),
                    username: username?.map(Box::new),
                    password: password?.map(Box::new),
                    lock_ttl: lock_ttl?,
                    max_txn_ops: max_txn_ops?,
                    max_request_bytes: max_request_bytes?,
                    root: self
                        .root
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
                }
            }
            _ => {
                let at = loc.clone();
                let command = self.argv(
                    name,
                    "target",
                    t.command.map(|c| largv(file, c)).as_ref(),
                    &at,
                );
                let options = match t.options {
                    None => Some(serde_json::Value::Object(Default::default())),
                    Some(n) if n.as_table().is_some() => Some(n.to_json()),
                    Some(n) => {
                        self.diagnostics.push(
                            Diagnostic::new(
                                "invalid-options",
                                "[target] `options` must be a table",
                            )
                            .env(name)
                            .at(
                                Loc::new(file, n.span.clone()),
                                format!("found {}", n.type_name()),
                            )
                            .hint("write [target.options] with the provider's keys"),
                        );
                        None
                    }
                };
                let state = match t.state {
                    Some(node) => self.exec_state(name, file, node),
                    None => {
                        need(self, "state", "\"/var/lib/envlock/<environment>\"");
                        None
                    }
                };
                let timeout = self.duration(
                    name,
                    "timeout",
                    t.timeout.map(|s| lstr(file, s)).as_ref(),
                    DEFAULT_PROVIDER_TIMEOUT,
                );
                let protocol = self.protocol(name, file, t.protocol);
                if !ok {
                    return None;
                }
                let (state, store) = state?;
                if matches!(store, StateConfig::Provider { .. }) && protocol? != 2 {
                    self.diagnostics.push(
                        Diagnostic::new(
                            "invalid-state",
                            "`[target.state] kind = \"provider\"` needs a protocol-2 provider",
                        )
                        .env(name)
                        .at(state.loc.clone(), "the provider keeps the state")
                        .hint("add `protocol = 2` to [target] (the state operations are part of protocol 2)"),
                    );
                    return None;
                }
                TargetKind::Exec {
                    command: command?,
                    options: options?,
                    state,
                    store,
                    timeout: timeout?,
                    protocol: protocol?,
                    root: self
                        .root
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
                }
            }
        };
        Some(Target { loc, kind })
    }

    fn settings(&mut self, name: &str, node: Option<Node>) -> Option<BTreeMap<String, Resource>> {
        let Some(node) = node else {
            return Some(BTreeMap::new());
        };
        let Value::Table(map) = node.value else {
            self.diagnostics.push(
                Diagnostic::new("invalid-settings", "`settings` must be a table")
                    .env(name)
                    .at(node.loc(), format!("found {}", node.type_name()))
                    .hint("write one table per resource: [settings.asr-worker]"),
            );
            return None;
        };
        // Gathered in key order, then built in one go: full B-tree nodes, unlike inserting.
        let mut out = Vec::with_capacity(map.len());
        let mut ok = true;
        for (key, member) in map {
            let key_loc = Loc::new(member.key_file, member.key_span.clone());
            if let Some(problem) = resource_name_problem(&key) {
                ok = false;
                self.diagnostics.push(
                    Diagnostic::new("invalid-resource-name", format!("invalid resource name {key:?}: {problem}"))
                        .env(name)
                        .at(key_loc.clone(), "resource name")
                        .hint("resource names become file names and keys on the target; use e.g. `asr-worker`"),
                );
                continue;
            }
            if member.node.as_table().is_none() {
                ok = false;
                self.diagnostics.push(
                    Diagnostic::new(
                        "invalid-resource",
                        format!("`settings.{key}` must be a table (one table per resource)"),
                    )
                    .env(name)
                    .at(
                        member.node.loc(),
                        format!("found {}", member.node.type_name()),
                    )
                    .hint(format!("write [settings.{key}] followed by its keys")),
                );
                continue;
            }
            out.push((
                key,
                Resource {
                    name_loc: key_loc,
                    node: member.node,
                },
            ));
        }
        ok.then(|| out.into_iter().collect())
    }
}

/// How many layers an `extends` chain may stack: far more than any real repository uses, and
/// far fewer than would exhaust the stack of the recursive walk.
pub const MAX_EXTENDS_DEPTH: usize = 64;

/// The diagnostic for a chain deeper than [`MAX_EXTENDS_DEPTH`], at the entry that goes too deep.
fn extends_too_deep(stack: &[String], from: &Loc) -> Diagnostic {
    let shown = if stack.len() > 6 {
        format!(
            "{} -> ... -> {}",
            stack[..3].join(" -> "),
            stack[stack.len() - 2..].join(" -> ")
        )
    } else {
        stack.join(" -> ")
    };
    Diagnostic::new(
        "extends-too-deep",
        format!("`extends` stacks more than {MAX_EXTENDS_DEPTH} layers: {shown} -> ..."),
    )
    .env(stack[0].clone())
    .at(from.clone(), "this layer is one too many")
    .hint(format!(
        "flatten the chain: a layer may extend several layers side by side, and at most {MAX_EXTENDS_DEPTH} may stack"
    ))
}

fn layer_forbidden(
    layer: &str,
    file: FileId,
    span: std::ops::Range<usize>,
    field: &str,
) -> Diagnostic {
    Diagnostic::new(
        "layer-identity",
        format!("layer `{layer}` sets `{field}`, which only an environment's own file may set"),
    )
    .env(layer)
    .at(Loc::new(file, span), "not allowed in a layer")
    .hint(
        "account, markers and [target] say which account and place an environment is locked to; \
         a shared layer would give several environments the same identity. Move it into each \
         environment's file",
    )
}

fn stem_of(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".toml")
        .to_owned()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

/// Classify a toml/serde error message: code, message, label and a hint.
fn toml_error_parts(message: &str) -> (&'static str, String, String, String) {
    let first = first_line(message);
    if let Some(rest) = first.strip_prefix("unknown field ") {
        let (key, expected) = match rest.split_once(", expected ") {
            Some((k, e)) => (k.to_owned(), format!("expected {e}")),
            None => (rest.to_owned(), String::new()),
        };
        (
            "unknown-key",
            format!("unknown key {key}"),
            "unknown key".to_owned(),
            format!(
                "{expected}{}unknown keys are errors so that a typo is never silently ignored",
                if expected.is_empty() { "" } else { "; " }
            ),
        )
    } else if first.starts_with("invalid type") {
        (
            "invalid-type",
            first.clone(),
            "wrong type".to_owned(),
            "see the environment file format in README.md (`deploy schema` prints it as a JSON Schema)".to_owned(),
        )
    } else if first.starts_with("missing field") {
        (
            "missing-field",
            first.clone(),
            "missing key".to_owned(),
            "add the missing key".to_owned(),
        )
    } else {
        (
            "syntax",
            format!("invalid TOML: {first}"),
            "here".to_owned(),
            "fix the TOML syntax at this position".to_owned(),
        )
    }
}

/// Make `path` absolute (relative to `root`) and remove `.` and `..` lexically.
pub fn normalize(root: Option<&Path>, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.unwrap_or(Path::new("/")).join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
