//! The environment lock, repository side: no environment may mention another's identity, share
//! its account or target, or be gated on an environment that does not exist.
//!
//! Invariant: the foreign-identity scan is one Aho-Corasick pass over each string (of an
//! environment whose resources are let go: over each file's text once, and over its few strings
//! not written as they are), plus one over the string with its digit groups joined when it has
//! any ([`spelling`]), so its cost is linear in the total size of all settings and identities,
//! whatever the number of environments. Identities match in any ASCII letter case.

use std::collections::{BTreeMap, HashMap, HashSet};

pub mod spelling;

use crate::config::node::{Node, Value};
use crate::config::{Environment, TargetKind};
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Loc, Sources};

/// Every cross-environment problem of `envs` (`names`: every environment, resolved or not).
/// An environment whose resources were not kept is scanned for foreign identities through
/// `reloaded`, which holds it again with its resources when [`suspects`] named it.
pub fn scan(
    envs: &[Environment],
    names: &[String],
    sources: &Sources,
    reloaded: &HashMap<usize, Environment>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    identity_clashes(envs, &mut diags);
    leaks(envs, sources, reloaded, &mut diags);
    // A fleet's targets clash with other environments' like any target (its own targets'
    // clashes among themselves are reported when it loads).
    let expanded = with_fleet_members(envs);
    let places = expanded.as_deref().unwrap_or(envs);
    targets(places, &mut diags);
    exec_targets(places, &mut diags);
    after(envs, names, &mut diags);
    diags
}

/// What the foreign-identity scan needs of an environment whose resources are let go, a
/// fraction of its tree: the files its strings are written in, for every string written there
/// as it is (a literal without escapes, a decimal integer), and the other strings themselves.
/// An identity inside a string written as it is, is in the file's text too.
#[derive(Debug, Default)]
pub struct Strings {
    files: Vec<FileId>,
    /// The strings not written as they are, one after the other.
    text: String,
    /// Where each of them ends in `text`.
    ends: Vec<usize>,
}

impl Strings {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.text[start..end];
            start = end;
            s
        })
    }
}

/// Whether `text` is written as it is at `loc`: a quoted literal without escapes, or the very
/// text (a decimal integer, a datetime).
fn written_as_is(sources: &Sources, loc: &Loc, text: &str) -> bool {
    let lit = sources.get(loc.file).text.get(loc.span.clone());
    lit == Some(text) || lit.is_some_and(|lit| quoted_as_is(lit, text))
}

/// Whether the literal `lit` is `text` between quotes, without escapes.
fn quoted_as_is(lit: &str, text: &str) -> bool {
    lit.len() == text.len() + 2 && lit.get(1..lit.len() - 1) == Some(text)
}

/// What the scan keeps of `env` (see [`Strings`]).
pub fn strings(env: &Environment, sources: &Sources) -> Strings {
    let mut out = Strings::default();
    visit_strings(env, &mut |text, loc, _| {
        if written_as_is(sources, loc, text) {
            if !out.files.contains(&loc.file) {
                out.files.push(loc.file);
            }
        } else {
            out.text.push_str(text);
            out.ends.push(out.text.len());
        }
    });
    out.text.shrink_to_fit();
    out.ends.shrink_to_fit();
    out
}

/// The environments whose resources were let go and that may hold a foreign identity: every
/// one [`scan`] would report a leak in, and some more (an identity in a comment or a key, or
/// in a file's text but inside one of the environment's own). `strings[i]` is `None` for an
/// environment whose resources are kept (scanned in full there). Each file is searched once.
pub fn suspects(
    envs: &[Environment],
    strings: &[Option<Strings>],
    sources: &Sources,
) -> Vec<usize> {
    let Some(idents) = Identities::new(envs) else {
        return Vec::new();
    };
    let mut files: Vec<FileId> = strings
        .iter()
        .flatten()
        .flat_map(|s| s.files.iter().copied())
        .collect();
    files.sort_unstable();
    files.dedup();
    // The environments whose identities each file's text holds.
    let holds: Vec<Vec<usize>> = crate::parallel::map(&files, |&file| {
        let mut owners: Vec<usize> = Vec::new();
        idents.matcher.find(&sources.get(file).text, |_, _, p| {
            owners.push(idents.owners[p].env)
        });
        owners.sort_unstable();
        owners.dedup();
        owners
    });
    let holds: HashMap<FileId, Vec<usize>> = files.into_iter().zip(holds).collect();
    let listed: Vec<(usize, &Strings)> = strings
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.as_ref()?)))
        .collect();
    let hit = crate::parallel::map(&listed, |&(a, strings)| {
        let in_files = strings
            .files
            .iter()
            .any(|f| holds.get(f).is_some_and(|o| o.iter().any(|&e| e != a)));
        let (mut own, mut foreign) = (Vec::new(), Vec::new());
        in_files
            || strings.iter().any(|text| {
                idents.foreign(a, text, &mut own, &mut foreign);
                !foreign.is_empty()
            })
    });
    listed
        .iter()
        .zip(hit)
        .filter_map(|(&(a, _), hit)| hit.then_some(a))
        .collect()
}

/// Every environment's account and markers, searched for in one pass.
struct Identities<'a> {
    matcher: spelling::Matcher,
    patterns: Vec<&'a str>,
    owners: Vec<Owner>,
}

impl<'a> Identities<'a> {
    fn new(envs: &'a [Environment]) -> Option<Self> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        for (i, env) in envs.iter().enumerate() {
            patterns.push(&env.account.value);
            owners.push(Owner {
                env: i,
                is_account: true,
            });
            for m in &env.markers {
                patterns.push(&m.value);
                owners.push(Owner {
                    env: i,
                    is_account: false,
                });
            }
        }
        let matcher = spelling::Matcher::new(
            patterns
                .iter()
                .zip(&owners)
                .map(|(p, o)| (*p, o.is_account)),
        )?;
        Some(Identities {
            matcher,
            patterns,
            owners,
        })
    }

    /// The identities of environments other than `a` in `text` (start, end, pattern), except
    /// those inside one of `a`'s own: a foreign marker inside one of this environment's own
    /// identifiers (prod's `asr.example.com` within validation's `validation.asr.example.com`)
    /// is not a leak.
    fn foreign(
        &self,
        a: usize,
        text: &str,
        own: &mut Vec<(usize, usize)>,
        foreign: &mut Vec<(usize, usize, usize)>,
    ) {
        own.clear();
        foreign.clear();
        self.matcher.find(text, |start, end, p| {
            if self.owners[p].env == a {
                own.push((start, end));
            } else {
                foreign.push((start, end, p));
            }
        });
        drop_inside(own, foreign);
    }
}

/// Drop from `foreign` every match inside one of `own` (a span `s..e` with `s <= start` and
/// `end <= e`), in O((own + foreign) log own): `own` sorted by start, with the furthest end
/// reached so far.
pub fn drop_inside<T>(own: &mut [(usize, usize)], foreign: &mut Vec<(usize, usize, T)>) {
    if own.is_empty() {
        return;
    }
    own.sort_unstable();
    let mut reach = Vec::with_capacity(own.len());
    let mut furthest = 0;
    for &(_, e) in own.iter() {
        furthest = furthest.max(e);
        reach.push(furthest);
    }
    foreign.retain(|&(start, end, _)| {
        // Own spans starting at or before `start`: the first `n` of them.
        let n = own.partition_point(|&(s, _)| s <= start);
        n == 0 || reach[n - 1] < end
    });
}

/// What an identity string is: an account or a marker of some environment.
#[derive(Clone, Copy)]
struct Owner {
    env: usize,
    is_account: bool,
}

/// Two environments with the same account, or a marker that is also another's account or marker.
fn identity_clashes(envs: &[Environment], diags: &mut Vec<Diagnostic>) {
    // Spelled as the scan reads them: in any letter case, an account's digit groups joined.
    let key = |value: &str, is_account: bool| {
        let folded = is_account
            .then(|| spelling::fold(value).map(|f| f.text))
            .flatten();
        folded.as_deref().unwrap_or(value).to_ascii_lowercase()
    };
    let mut seen: HashMap<String, (usize, &Loc, bool)> = HashMap::new();
    for (i, env) in envs.iter().enumerate() {
        let idents =
            std::iter::once((&env.account, true)).chain(env.markers.iter().map(|m| (m, false)));
        for (ident, is_account) in idents {
            let k = key(&ident.value, is_account);
            match seen.get(&k) {
                Some(&(j, first_loc, first_is_account)) if j != i => {
                    let other = &envs[j];
                    let (code, message, hint) = if is_account && first_is_account {
                        (
                            "duplicate-account",
                            format!(
                                "environments `{}` and `{}` have the same account `{}`",
                                other.name, env.name, ident.value
                            ),
                            "each environment is locked to its own account; two environments sharing one \
                             could receive each other's settings. Give each its own account"
                                .to_owned(),
                        )
                    } else {
                        (
                            "duplicate-identity",
                            format!(
                                "`{}` identifies both `{}` and `{}`",
                                ident.value, other.name, env.name
                            ),
                            "accounts and markers must each belong to exactly one environment"
                                .to_owned(),
                        )
                    };
                    diags.push(
                        Diagnostic::new(code, message)
                            .safety()
                            .env(&env.name)
                            .at(ident.loc.clone(), format!("also used by `{}`", other.name))
                            .also(
                                first_loc.clone(),
                                format!("`{}` defines it here", other.name),
                            )
                            .hint(hint),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(k, (i, &ident.loc, is_account));
                }
            }
        }
    }
}

/// A step in the path to a value, turned into text only when a problem is reported.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_text(root: &str, segs: &[Seg]) -> String {
    let mut s = root.to_owned();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Called with a string, where it is written, and a way to name its path (only when needed).
type Visitor<'v> = dyn FnMut(&str, &Loc, &dyn Fn() -> String) + 'v;

/// Every string of one environment to search, with where it is written and its path.
fn visit_strings(env: &Environment, f: &mut Visitor<'_>) {
    fn walk<'a>(node: &'a Node, segs: &mut Vec<Seg<'a>>, f: &mut Visitor<'_>) {
        match &node.value {
            Value::String(s) | Value::Datetime(s) => {
                f(s, &node.loc(), &|| path_text("settings", segs))
            }
            Value::Integer(i) => f(&i.to_string(), &node.loc(), &|| path_text("settings", segs)),
            // The reference as written (its value is scanned when it is read: `secret::resolve`).
            Value::Secret(r) => f(&r.text, &node.loc(), &|| path_text("settings", segs)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    segs.push(Seg::Index(i));
                    walk(item, segs, f);
                    segs.pop();
                }
            }
            Value::Table(map) => {
                for (k, m) in map {
                    segs.push(Seg::Key(k));
                    walk(&m.node, segs, f);
                    segs.pop();
                }
            }
            Value::Float(_) | Value::Boolean(_) => {}
        }
    }
    let mut segs = Vec::new();
    for (name, res) in &env.settings {
        segs.push(Seg::Key(name.as_str()));
        walk(&res.node, &mut segs, f);
        segs.pop();
    }
    match &env.target.kind {
        TargetKind::Dir { path, .. } => f(&path.value, &path.loc, &|| "target.path".into()),
        TargetKind::Etcd {
            endpoints, prefix, ..
        } => {
            for e in endpoints {
                f(&e.value, &e.loc, &|| "target.endpoints".into());
            }
            f(&prefix.value, &prefix.loc, &|| "target.prefix".into());
        }
        TargetKind::Exec { command, .. } => {
            for arg in command {
                f(arg, &env.target.loc, &|| "target.command".into());
            }
        }
    }
    let commands = [
        env.identity
            .as_ref()
            .map(|c| (&c.command, &c.command_loc, "identity.command")),
        env.health
            .as_ref()
            .map(|c| (&c.command, &c.command_loc, "health.command")),
        env.notify.as_ref().and_then(|c| {
            c.command
                .as_ref()
                .map(|a| (a, &c.command_loc, "notify.command"))
        }),
    ];
    if let Some(p) = env.notify.as_ref().and_then(|n| n.page.as_ref()) {
        f(&p.url.value, &p.url.loc, &|| "notify.url".into());
    }
    for (argv, loc, what) in commands.into_iter().flatten() {
        for arg in argv {
            f(arg, loc, &|| what.to_owned());
        }
    }
}

/// Narrow a string value's span to `start..end` of its content when the literal has no escapes.
fn sub_span(sources: &Sources, loc: &Loc, text: &str, start: usize, end: usize) -> Loc {
    let src = &sources.get(loc.file).text;
    if let Some(lit) = src.get(loc.span.clone())
        && quoted_as_is(lit, text)
    {
        let base = loc.span.start + 1;
        return Loc::new(loc.file, base + start..base + end);
    }
    loc.clone()
}

fn leaks(
    envs: &[Environment],
    sources: &Sources,
    reloaded: &HashMap<usize, Environment>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(idents) = Identities::new(envs) else {
        return;
    };
    for (a, env) in envs.iter().enumerate() {
        let env = match reloaded.get(&a) {
            Some(full) => full,
            None if env.settings.is_kept() => env,
            // Let go, and not a suspect: no string of it holds a foreign identity.
            None => continue,
        };
        let mut reported: HashSet<(usize, usize, usize)> = HashSet::new();
        let mut own: Vec<(usize, usize)> = Vec::new();
        let mut foreign: Vec<(usize, usize, usize)> = Vec::new();
        visit_strings(env, &mut |text, loc, path| {
            idents.foreign(a, text, &mut own, &mut foreign);
            for &(start, end, pid) in &foreign {
                let owner = idents.owners[pid];
                if !reported.insert((loc.span.start, loc.file, owner.env)) {
                    continue;
                }
                let other = &envs[owner.env];
                let what = if owner.is_account {
                    "account"
                } else {
                    "marker"
                };
                let ident = idents.patterns[pid];
                // Another spelling (letter case, digit groups) names what is written too.
                let written = text.get(start..end).unwrap_or(ident);
                let shown = if written == ident {
                    format!("`{ident}`")
                } else {
                    format!("`{written}` (`{ident}` spelled another way)")
                };
                let mut d = Diagnostic::new(
                    if owner.is_account { "foreign-account" } else { "foreign-marker" },
                    format!(
                        "{} of `{}` contains {shown}, the {what} of environment `{}`",
                        path(),
                        env.name,
                        other.name
                    ),
                )
                .safety()
                .env(&env.name)
                .at(sub_span(sources, loc, text, start, end), format!("belongs to `{}`", other.name))
                .hint(format!(
                    "this looks like `{}`'s configuration in `{}`; use `{}`'s own value (account `{}`)",
                    other.name, env.name, env.name, env.account.value
                ));
                let source_loc = if owner.is_account {
                    other.account.loc.clone()
                } else {
                    other
                        .markers
                        .iter()
                        .find(|m| m.value == ident)
                        .map_or_else(|| other.account.loc.clone(), |m| m.loc.clone())
                };
                d = d.also(source_loc, format!("{what} of `{}`", other.name));
                diags.push(d);
            }
        });
    }
}

fn normalize_endpoint(e: &str) -> String {
    e.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `envs` with each fleet replaced by one environment per target, or `None` without fleets.
fn with_fleet_members(envs: &[Environment]) -> Option<Vec<Environment>> {
    envs.iter().any(|e| e.fleet.is_some()).then(|| {
        envs.iter()
            .flat_map(|e| match &e.fleet {
                Some(f) => f.members.iter().map(|m| e.member(m)).collect(),
                None => vec![e.clone()],
            })
            .collect()
    })
}

/// Two environments writing to the same place (or one inside the other's).
fn targets(envs: &[Environment], diags: &mut Vec<Diagnostic>) {
    // Sorting dir paths makes every nesting an adjacent-or-prefix relation: O(n log n).
    let mut dirs: Vec<(&std::path::Path, usize, &str)> = envs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.target.kind {
            TargetKind::Dir {
                resolved, display, ..
            } => Some((resolved.as_path(), i, display.as_str())),
            // An exec target's state holds its stamp: shared, two environments share a target.
            TargetKind::Exec { store, .. } => store.dir().map(|(p, d)| (p, i, d)),
            TargetKind::Etcd { .. } => None,
        })
        .collect();
    dirs.sort();
    let mut stack: Vec<(&std::path::Path, usize)> = Vec::new();
    for (path, i, display) in dirs {
        while let Some(&(top, _)) = stack.last() {
            if path.starts_with(top) {
                break;
            }
            stack.pop();
        }
        if let Some(&(outer, j)) = stack.last()
            && envs[j].name != envs[i].name
        {
            let (a, b) = (&envs[j], &envs[i]);
            let same = outer == path;
            diags.push(target_clash(a, b, same, display));
        }
        stack.push((path, i));
    }

    let etcd: Vec<(usize, Vec<String>, &str)> = envs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.target.kind {
            TargetKind::Etcd {
                endpoints, prefix, ..
            } => Some((
                i,
                endpoints
                    .iter()
                    .map(|e| normalize_endpoint(&e.value))
                    .collect(),
                prefix.value.as_str(),
            )),
            // An exec target's state in etcd holds its stamp and lock: the same keys are the
            // same target.
            TargetKind::Exec {
                store:
                    crate::config::StateConfig::Etcd {
                        endpoints, prefix, ..
                    },
                ..
            } => Some((
                i,
                endpoints.iter().map(|e| normalize_endpoint(e)).collect(),
                prefix.as_str(),
            )),
            _ => None,
        })
        .collect();
    for (x, (i, eps_i, pre_i)) in etcd.iter().enumerate() {
        for (j, eps_j, pre_j) in &etcd[..x] {
            let same_cluster = eps_i.iter().any(|e| eps_j.contains(e));
            if same_cluster
                && envs[*i].name != envs[*j].name
                && (pre_i.starts_with(pre_j) || pre_j.starts_with(pre_i))
            {
                diags.push(target_clash(
                    &envs[*j],
                    &envs[*i],
                    pre_i == pre_j,
                    &format!("{} {}", eps_i.join(","), pre_i),
                ));
            }
        }
    }
}

/// Two `exec` targets with the same provider command and options reach the same resources.
fn exec_targets(envs: &[Environment], diags: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, e) in envs.iter().enumerate() {
        let TargetKind::Exec {
            command, options, ..
        } = &e.target.kind
        else {
            continue;
        };
        let key = (command.join("\u{0}"), canonical_json(options));
        if let Some(&j) = seen.get(&key) {
            diags.push(target_clash(
                &envs[j],
                e,
                true,
                &format!("{} with options {}", e.target.describe(), key.1),
            ));
        } else {
            seen.insert(key, i);
        }
    }
}

/// JSON text with every object's keys sorted, so that key order does not hide a duplicate.
fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            let members: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

fn target_clash(first: &Environment, second: &Environment, same: bool, place: &str) -> Diagnostic {
    let message = if same {
        format!(
            "environments `{}` and `{}` have the same target `{place}`",
            first.name, second.name
        )
    } else {
        format!(
            "the target of `{}` is inside the target of `{}` ({place})",
            second.name, first.name
        )
    };
    // Blamed on the copy: the environment whose target names the other environment (a path
    // copied from `prod` into `canary.toml` still says `prod`), else `second`. When the commit
    // changed only one of the two files, that one is blamed instead (`Diagnostic::other_side`).
    let first_copied = names(first, &second.name) && !names(second, &first.name);
    let (mut told, other) = (
        clash_told(second, first, same, &message, !same),
        clash_told(first, second, same, &message, false),
    );
    if first_copied {
        told.other_side = None;
        let mut other = other;
        other.other_side = Some(Box::new(told));
        return other;
    }
    told.other_side = Some(Box::new(other));
    told
}

/// True when the key that says where `env`'s target is mentions `name`.
fn names(env: &Environment, name: &str) -> bool {
    let place = match &env.target.kind {
        TargetKind::Dir { path, .. } => &path.value,
        TargetKind::Etcd { prefix, .. } => &prefix.value,
        TargetKind::Exec { state, .. } => &state.value,
    };
    place.contains(name)
}

/// A target clash blamed on `blamed` (`inner`: its target is inside `other`'s): the primary
/// marker on the key that says where its target is.
fn clash_told(
    blamed: &Environment,
    other: &Environment,
    same: bool,
    message: &str,
    inner: bool,
) -> Diagnostic {
    let label = match (same, inner) {
        (true, _) => format!("also the target of `{}`", other.name),
        (false, true) => format!("inside the target of `{}`", other.name),
        (false, false) => format!("contains the target of `{}`", other.name),
    };
    Diagnostic::new(
        if same {
            "duplicate-target"
        } else {
            "overlapping-target"
        },
        message,
    )
    .safety()
    .env(&blamed.name)
    .at(place_loc(blamed), label)
    .also(place_loc(other), format!("target of `{}`", other.name))
    .hint("each environment needs a target of its own, apart from every other environment's")
}

/// The key that says where an environment's target is: `path`, `prefix`, or `state`.
fn place_loc(env: &Environment) -> Loc {
    match &env.target.kind {
        TargetKind::Dir { path, .. } => path.loc.clone(),
        TargetKind::Etcd { prefix, .. } => prefix.loc.clone(),
        TargetKind::Exec { state, .. } => state.loc.clone(),
    }
}

/// `after` must name existing environments and must not form a cycle.
fn after(envs: &[Environment], names: &[String], diags: &mut Vec<Diagnostic>) {
    let index: HashMap<&str, usize> = envs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    for env in envs {
        for a in &env.after {
            if a.value == env.name {
                diags.push(
                    Diagnostic::new("after-cycle", format!("`{}` is gated on itself", env.name))
                        .env(&env.name)
                        .at(a.loc.clone(), "an environment cannot come after itself")
                        .hint("`after` names the environments a commit must be live and healthy in first"),
                );
            } else if !names.iter().any(|n| n == &a.value) {
                diags.push(
                    Diagnostic::new(
                        "unknown-environment",
                        format!("`after` names unknown environment `{}`", a.value),
                    )
                    .env(&env.name)
                    .at(a.loc.clone(), "no such environment")
                    .hint(format!("known environments: {}", names.join(", "))),
                );
            }
        }
    }
    // Depth-first search for cycles, reporting each at the edge that closes it.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; envs.len()];
    fn dfs(
        i: usize,
        envs: &[Environment],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        diags: &mut Vec<Diagnostic>,
    ) {
        marks[i] = Mark::Active;
        path.push(i);
        for a in &envs[i].after {
            let Some(&j) = index.get(a.value.as_str()) else {
                continue;
            };
            if j == i {
                continue;
            }
            match marks[j] {
                Mark::New => dfs(j, envs, index, marks, path, diags),
                Mark::Active => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..]
                        .iter()
                        .map(|&p| envs[p].name.as_str())
                        .collect();
                    cycle.push(&envs[j].name);
                    // `a after b` means b deploys first: show the order of promotion.
                    cycle.reverse();
                    diags.push(
                        Diagnostic::new("after-cycle", format!("`after` forms a cycle: {}", cycle.join(" -> ")))
                            .env(&envs[i].name)
                            .at(a.loc.clone(), "this closes the cycle")
                            .hint("promotion must flow one way (e.g. validation -> prod); remove one `after` entry"),
                    );
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
    }
    for i in 0..envs.len() {
        if marks[i] == Mark::New {
            dfs(i, envs, &index, &mut marks, &mut Vec::new(), diags);
        }
    }
}
