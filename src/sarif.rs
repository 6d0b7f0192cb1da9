//! `deploy check --format sarif`: the problems of one commit as a SARIF 2.1.0 log, for code
//! scanning (GitHub, GitLab...). Pure: built from the diagnostics and their sources.
//!
//! Invariants: one rule per kind of problem ([`crate::rules`]), ids `envlock/CODE`; locations
//! are repository-relative (`uriBaseId` `%SRCROOT%`) with the same line and column as the text
//! and JSON output (columns count Unicode code points); a result's fingerprint does not depend on
//! its line, so a problem that moves is the same alert.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::diagnostic::{Class, Diagnostic};
use crate::rules::{self, Rule};
use crate::source::{Loc, Sources, ceil_char, floor_char, line_col};

/// The schema a SARIF 2.1.0 log names (the OASIS standard, errata 01).
pub const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";
/// The `partialFingerprints` key of envlock's own fingerprint (see [`fingerprint`]).
pub const FINGERPRINT: &str = "envlockProblem/v1";
/// The base every artifact URI is relative to: the repository's root.
pub const SRCROOT: &str = "%SRCROOT%";

/// What a log is made from.
pub struct Input<'a> {
    /// The full id of the commit checked.
    pub commit: &'a str,
    /// The repository, as a URI ([`repository_uri`]).
    pub repository: String,
    /// The working tree as a `file:` URI ending in `/`, when there is one.
    pub root: Option<String>,
    pub sources: &'a Sources,
    pub diagnostics: &'a [Diagnostic],
    /// Uncommitted files under `environments/` and `schemas/`, which were not checked.
    pub unchecked: &'a [(String, &'static str)],
}

#[derive(Debug, Serialize)]
pub struct Log {
    #[serde(rename = "$schema")]
    pub schema: &'static str,
    pub version: &'static str,
    pub runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub tool: Tool,
    pub invocations: Vec<Invocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_uri_base_ids: Option<HashMap<&'static str, ArtifactLocation>>,
    pub version_control_provenance: Vec<VersionControl>,
    pub column_kind: &'static str,
    pub results: Vec<SarifResult>,
}

#[derive(Debug, Serialize)]
pub struct Tool {
    pub driver: Driver,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Driver {
    pub name: &'static str,
    pub version: &'static str,
    pub semantic_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub information_uri: Option<&'static str>,
    pub rules: Vec<RuleJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleJson {
    pub id: String,
    pub name: String,
    pub short_description: Text,
    pub full_description: Text,
    pub help: Text,
    pub default_configuration: Configuration,
    pub properties: RuleProperties,
}

#[derive(Debug, Serialize)]
pub struct Text {
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Configuration {
    pub level: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RuleProperties {
    /// `safety` (the environment lock) or `config`.
    pub class: Class,
    pub tags: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    /// True: the check ran (problems found are results, not a failure to run).
    pub execution_successful: bool,
    pub tool_execution_notifications: Vec<Notification>,
}

#[derive(Debug, Serialize)]
pub struct Notification {
    pub level: &'static str,
    pub message: Text,
    pub locations: Vec<Location>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionControl {
    pub repository_uri: String,
    pub revision_id: String,
    pub mapped_to: ArtifactLocation,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SarifResult {
    pub rule_id: String,
    pub rule_index: usize,
    pub level: &'static str,
    pub message: Text,
    pub locations: Vec<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related_locations: Vec<Location>,
    pub partial_fingerprints: HashMap<&'static str, String>,
    pub properties: ResultProperties,
}

#[derive(Debug, Serialize)]
pub struct ResultProperties {
    pub environment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<usize>,
    pub physical_location: PhysicalLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Text>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalLocation {
    pub artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_base_id: Option<&'static str>,
}

/// Lines and columns are 1-based; `end_column` is the column just after the region.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    pub start_line: usize,
    pub start_column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<usize>,
}

/// The SARIF log of one `deploy check`.
pub fn log(input: &Input<'_>) -> Log {
    let table = rule_table(input.diagnostics);
    let index = |code: &str| table.iter().position(|r| r.code == code).unwrap_or(0);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let results = input
        .diagnostics
        .iter()
        .map(|d| {
            let mut r = result(input.sources, d, index(d.code));
            // Equal problems in one file (same rule, same text) are told apart by their order.
            let n = seen
                .entry(r.partial_fingerprints[FINGERPRINT].clone())
                .or_default();
            if *n > 0 {
                let again = format!("{}:{n}", r.partial_fingerprints[FINGERPRINT]);
                r.partial_fingerprints.insert(FINGERPRINT, again);
            }
            *n += 1;
            r
        })
        .collect();
    Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: driver(table),
            },
            invocations: vec![invocation(input.unchecked, input.commit)],
            original_uri_base_ids: input.root.as_ref().map(|root| {
                HashMap::from([(
                    SRCROOT,
                    ArtifactLocation {
                        uri: Some(root.clone()),
                        uri_base_id: None,
                    },
                )])
            }),
            version_control_provenance: vec![VersionControl {
                repository_uri: input.repository.clone(),
                revision_id: input.commit.to_owned(),
                mapped_to: ArtifactLocation {
                    uri: None,
                    uri_base_id: Some(SRCROOT),
                },
            }],
            column_kind: "unicodeCodePoints",
            results,
        }],
    }
}

/// Every rule of the table, and (never expected) a plain one for each code missing from it.
fn rule_table(diagnostics: &[Diagnostic]) -> Vec<Rule> {
    let mut table: Vec<Rule> = rules::RULES.to_vec();
    for d in diagnostics {
        if !table.iter().any(|r| r.code == d.code) {
            table.push(rules::rule(d.code, d.class));
        }
    }
    table
}

fn driver(table: Vec<Rule>) -> Driver {
    let homepage = option_env!("CARGO_PKG_HOMEPAGE").filter(|h| !h.is_empty());
    let repository = option_env!("CARGO_PKG_REPOSITORY").filter(|r| !r.is_empty());
    Driver {
        name: "envlock",
        version: env!("CARGO_PKG_VERSION"),
        semantic_version: env!("CARGO_PKG_VERSION"),
        information_uri: homepage.or(repository),
        rules: table
            .into_iter()
            .map(|r| RuleJson {
                id: rules::id(r.code),
                name: rules::name(r.code),
                short_description: Text {
                    text: r.summary.to_owned(),
                },
                full_description: Text {
                    text: format!("{} {}", r.summary, r.help),
                },
                help: Text {
                    text: r.help.to_owned(),
                },
                default_configuration: Configuration { level: "error" },
                properties: RuleProperties {
                    class: r.class,
                    tags: match r.class {
                        Class::Safety => vec!["envlock", "security", "environment-lock"],
                        Class::Config => vec!["envlock", "configuration"],
                    },
                },
            })
            .collect(),
    }
}

/// The run itself succeeded; uncommitted files it did not read are notes.
fn invocation(unchecked: &[(String, &'static str)], commit: &str) -> Invocation {
    Invocation {
        execution_successful: true,
        tool_execution_notifications: unchecked
            .iter()
            .map(|(path, status)| Notification {
                level: "note",
                message: Text {
                    text: format!(
                        "not checked, because not committed ({status}): check reads commit {commit}"
                    ),
                },
                locations: vec![Location {
                    id: None,
                    physical_location: PhysicalLocation {
                        artifact_location: artifact(path),
                        region: None,
                    },
                    message: None,
                }],
            })
            .collect(),
    }
}

fn result(sources: &Sources, d: &Diagnostic, rule_index: usize) -> SarifResult {
    let mut text = d.message.clone();
    if let Some(h) = &d.hint {
        text.push_str("\nhint: ");
        text.push_str(h);
    }
    let place = |(i, (loc, label)): (usize, &(Loc, String))| Location {
        id: (i > 0).then_some(i),
        physical_location: physical(sources, loc),
        message: Some(Text {
            text: label.clone(),
        }),
    };
    let fingerprint = match &d.primary {
        Some((loc, _)) => fingerprint(d.code, sources, loc),
        None => fingerprint_of(d.code, "", &d.message),
    };
    SarifResult {
        rule_id: rules::id(d.code),
        rule_index,
        level: "error",
        message: Text { text },
        locations: d.primary.iter().map(|p| place((0, p))).collect(),
        related_locations: d
            .secondary
            .iter()
            .enumerate()
            .map(|(i, s)| place((i + 1, s)))
            .collect(),
        partial_fingerprints: HashMap::from([(FINGERPRINT, fingerprint)]),
        properties: ResultProperties {
            environment: d.environment.clone(),
        },
    }
}

fn artifact(path: &str) -> ArtifactLocation {
    ArtifactLocation {
        uri: Some(encode_path(path)),
        uri_base_id: Some(SRCROOT),
    }
}

/// A location in a file, lines and columns as [`Sources::line_col`] counts them.
fn physical(sources: &Sources, loc: &Loc) -> PhysicalLocation {
    let file = sources.get(loc.file);
    let (start_line, start_column) = line_col(&file.text, loc.span.start);
    let end = (loc.span.end > loc.span.start).then(|| line_col(&file.text, loc.span.end));
    PhysicalLocation {
        artifact_location: artifact(&file.path),
        region: Some(Region {
            start_line,
            start_column,
            end_line: end.map(|(l, _)| l),
            end_column: end.map(|(_, c)| c),
        }),
    }
}

/// SHA-256 of the rule, the file and the text the problem points at: the same when the file
/// is checked again or the problem moves to another line, different for another problem.
pub fn fingerprint(code: &str, sources: &Sources, loc: &Loc) -> String {
    let file = sources.get(loc.file);
    let start = floor_char(&file.text, loc.span.start);
    let end = ceil_char(&file.text, loc.span.end.max(start));
    fingerprint_of(code, &file.path, &file.text[start..end])
}

fn fingerprint_of(code: &str, path: &str, text: &str) -> String {
    crate::hash::json_sha256_hex(&(FINGERPRINT, rules::id(code), path, text))
        .expect("a tuple of strings serializes")
}

/// `path` (relative, `/`-separated) as a URI reference: every byte other than letters, digits,
/// `-._~` and `/` percent-encoded.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A directory as a `file:` URI ending in `/`.
pub fn file_uri(dir: &Path) -> String {
    let text = dir.to_string_lossy();
    let text = text.trim_end_matches('/');
    format!("file://{}/", encode_path(text))
}

/// The repository as a URI: its remote's URL (credentials removed; `git@host:path` as
/// `ssh://host/path`, a local path as `file:`), or else the `file:` URI of `root`.
pub fn repository_uri(remote: Option<&str>, root: &Path) -> String {
    let Some(url) = remote else {
        return file_uri(root);
    };
    let url = crate::repo::without_userinfo(url);
    // A query or fragment may carry a credential (`?private_token=`, a signed URL); neither
    // names the repository.
    let cut = |s: &str| s.split(['?', '#']).next().unwrap_or_default().to_owned();
    if let Some((scheme, rest)) = url.split_once("://")
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return format!("{scheme}://{}", encode_uri_rest(&cut(rest)));
    }
    // scp-like `[user@]host:path`: a colon before any slash.
    if let Some((host, path)) = url.split_once(':')
        && !host.contains('/')
        && !host.is_empty()
    {
        let host = host.rsplit('@').next().unwrap_or(host);
        let path = cut(path.trim_start_matches('/'));
        return format!("ssh://{}/{}", encode_path(host), encode_path(&path));
    }
    file_uri(&root.join(&url))
}

/// The part of a URL after `scheme://`, with what a URI may not contain percent-encoded.
fn encode_uri_rest(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    for b in rest.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=%?#[]".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_uris() {
        let root = Path::new("/work/my repo");
        assert_eq!(repository_uri(None, root), "file:///work/my%20repo/");
        assert_eq!(
            repository_uri(Some("https://user:tok3n@github.com/o/r.git"), root),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            repository_uri(Some("git@github.com:o/r.git"), root),
            "ssh://github.com/o/r.git"
        );
        assert_eq!(
            repository_uri(Some("/srv/git/conf"), root),
            "file:///srv/git/conf/"
        );
        assert_eq!(
            repository_uri(Some("../remote"), root),
            "file:///work/my%20repo/../remote/"
        );
        assert_eq!(
            encode_path("environments/caf\u{e9} x.toml"),
            "environments/caf%C3%A9%20x.toml"
        );
    }

    #[test]
    fn a_fingerprint_follows_the_text_not_the_line() {
        let mut sources = Sources::default();
        let a = sources.add("environments/prod.toml", "x = \"111111111111\"\n");
        let b = sources.add(
            "environments/prod.toml",
            "\n\n# moved\nx = \"111111111111\"\n",
        );
        let c = sources.add("environments/prod.toml", "x = \"111111111112\"\n");
        let at = |file, text: &str| {
            let start = sources.get(file).text.find(text).unwrap();
            Loc::new(file, start..start + text.len())
        };
        let fa = fingerprint("foreign-account", &sources, &at(a, "111111111111"));
        let fb = fingerprint("foreign-account", &sources, &at(b, "111111111111"));
        let fc = fingerprint("foreign-account", &sources, &at(c, "111111111112"));
        let other_rule = fingerprint("foreign-marker", &sources, &at(a, "111111111111"));
        assert_eq!(fa, fb);
        assert_ne!(fa, fc);
        assert_ne!(fa, other_rule);
    }
}
