//! JSON Schemas (draft 2020-12) for environments' `[settings]`, and validation against them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::json::{self, Array, Json, Node as JsonNode, NodeIdentity, Object};
use jsonschema::{Draft, JsonType};

use super::node::{Node, Seg, Table, Value};
use crate::diagnostic::Diagnostic;
use crate::source::{Loc, Sources};

use super::{Environment, InputFile, Resource};

/// Schema violations listed per environment; the rest are counted in one more diagnostic, so
/// that a rule every resource breaks does not flood the output.
pub const MAX_SCHEMA_ERRORS: usize = 100;
/// How much of an instance (values, plus the bytes of its strings) a violation may copy as the
/// instance it reports; a larger one is reported by a summary (`(a table of 5000 keys)`), so no
/// error holds a copy of a whole large table and memory stays linear in the settings.
const REPORT_BUDGET: usize = 1024;

/// One schema compiled for the two representations it validates.
struct Compiled {
    /// For `serde_json` values (secret values checked at deploy time).
    json: Arc<jsonschema::Validator>,
    /// For an environment's settings as loaded ([`SettingsJson`]).
    settings: jsonschema::Validator<SettingsJson>,
}

/// The schemas of `schemas/*.schema.json`, compiled once each.
#[derive(Default)]
pub struct Schemas {
    /// Schema name (`asr`) -> compiled validator, or `None` when the schema itself is broken.
    compiled: HashMap<String, Option<Compiled>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.compiled.keys()).finish()
    }
}

/// Byte offset of 1-based `line` and `column` in `text` (as serde_json reports them).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.len());
        }
        offset += l.len();
    }
    text.len()
}

impl Schemas {
    /// Parse and compile every schema file; problems become diagnostics.
    pub fn load(files: Vec<InputFile>, sources: &mut Sources, diags: &mut Vec<Diagnostic>) -> Self {
        let mut compiled = HashMap::new();
        for file in files {
            let Some(name) = file
                .path
                .strip_prefix("schemas/")
                .and_then(|n| n.strip_suffix(".schema.json"))
            else {
                continue;
            };
            let name = name.to_owned();
            let text = match file.content.map(String::from_utf8) {
                Ok(Ok(t)) => t,
                Ok(Err(_)) | Err(_) => {
                    let id = sources.add(file.path.clone(), "");
                    diags.push(
                        Diagnostic::new(
                            "invalid-schema",
                            format!("{} is not readable UTF-8 text of at most 4 MiB", file.path),
                        )
                        .at(Loc::file(id), "unreadable schema")
                        .hint("schemas are JSON files"),
                    );
                    compiled.insert(name, None);
                    continue;
                }
            };
            let id = sources.add(file.path.clone(), text);
            let text = &sources.get(id).text;
            let json: serde_json::Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    let at = offset_of(text, e.line(), e.column());
                    diags.push(
                        Diagnostic::new(
                            "invalid-schema",
                            format!("{} is not valid JSON: {e}", file.path),
                        )
                        .at(Loc::new(id, at..at), "JSON error here")
                        .hint("fix the JSON syntax of the schema"),
                    );
                    compiled.insert(name, None);
                    continue;
                }
            };
            // The same options as `draft202012::new`, for the settings tree.
            let both = jsonschema::draft202012::new(&json).and_then(|v| {
                let settings = jsonschema::options_for::<SettingsJson>()
                    .with_draft(Draft::Draft202012)
                    .build(&json)?;
                Ok(Compiled {
                    json: Arc::new(v),
                    settings,
                })
            });
            match both {
                Ok(c) => {
                    compiled.insert(name, Some(c));
                }
                Err(e) => {
                    diags.push(
                        Diagnostic::new(
                            "invalid-schema",
                            format!("{} is not a valid JSON Schema: {e}", file.path),
                        )
                        .at(Loc::file(id), "invalid schema")
                        .hint("schemas follow JSON Schema draft 2020-12"),
                    );
                    compiled.insert(name, None);
                }
            }
        }
        Schemas { compiled }
    }

    /// The compiled schema `name`, when it exists and compiled.
    pub fn get(&self, name: &str) -> Option<Arc<jsonschema::Validator>> {
        self.compiled.get(name)?.as_ref().map(|c| c.json.clone())
    }

    /// Validate an environment's settings; every violation becomes a diagnostic.
    pub fn validate(&self, env: &Environment, diags: &mut Vec<Diagnostic>) {
        let validator = match self.compiled.get(&env.schema.value) {
            Some(Some(c)) => &c.settings,
            Some(None) => {
                diags.push(
                    Diagnostic::new(
                        "invalid-schema",
                        format!(
                            "schema `{}` is broken, so `{}` cannot be validated",
                            env.schema.value, env.name
                        ),
                    )
                    .env(&env.name)
                    .at(env.schema.loc.clone(), "uses the broken schema")
                    .hint(format!(
                        "fix schemas/{}.schema.json (see its own error)",
                        env.schema.value
                    )),
                );
                return;
            }
            None => {
                let mut known: Vec<&str> = self.compiled.keys().map(String::as_str).collect();
                known.sort();
                diags.push(
                    Diagnostic::new(
                        "unknown-schema",
                        format!("schema `{}` does not exist", env.schema.value),
                    )
                    .env(&env.name)
                    .at(
                        env.schema.loc.clone(),
                        format!("no schemas/{}.schema.json", env.schema.value),
                    )
                    .hint(if known.is_empty() {
                        "there are no schemas; add schemas/NAME.schema.json".to_owned()
                    } else {
                        format!("known schemas: {}", known.join(", "))
                    }),
                );
                return;
            }
        };
        // Where the secrets are matters only for an error; most environments have none.
        let mut secrets = None;
        let mut more = 0usize;
        let mut diags_of_env = 0usize;
        for error in validator.iter_errors(Instance::Settings(&env.settings)) {
            if diags_of_env >= MAX_SCHEMA_ERRORS {
                more += 1;
                continue;
            }
            if let Some(d) = error_diagnostic(env, &error, &mut secrets) {
                diags.push(d);
                diags_of_env += 1;
            }
        }
        if more > 0 {
            diags.push(
                Diagnostic::new(
                    "schema",
                    format!(
                        "settings: {more} more schema violations in `{}` are not listed (the first {MAX_SCHEMA_ERRORS} are)",
                        env.name
                    ),
                )
                .env(&env.name)
                .at(env.schema.loc.clone(), format!("validated by schemas/{}.schema.json", env.schema.value))
                .hint("fix the violations listed, then run `deploy check` again to see the rest"),
            );
        }
    }
}

/// The diagnostic for one schema violation; `None` for a violation at a secret that its value
/// (unknown until deploy time) may satisfy. `secrets`: the secrets' places, found once.
fn error_diagnostic(
    env: &Environment,
    error: &jsonschema::ValidationError<'_>,
    secrets: &mut Option<Vec<(Vec<String>, Loc, String)>>,
) -> Option<Diagnostic> {
    let segments: Vec<String> = error
        .instance_path()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some((loc, text)) = secrets
        .get_or_insert_with(|| secret_pointers(env))
        .iter()
        .find_map(|(p, l, t)| (*p == segments).then_some((l, t)))
    {
        return secret_diagnostic(env, error, &segments, loc, text);
    }
    let (loc, key_path) = violation_location(env, error, &segments);
    let where_ = if key_path.is_empty() {
        "settings".to_owned()
    } else {
        format!("settings.{key_path}")
    };
    Some(
        Diagnostic::new("schema", format!("{where_}: {error}"))
            .env(&env.name)
            .at(
                loc,
                format!("violates schemas/{}.schema.json", env.schema.value),
            )
            .hint(format!(
                "the schema rule is at {} in schemas/{}.schema.json",
                error.schema_path().as_str(),
                env.schema.value
            )),
    )
}

/// A violation at a secret reference: its value is unknown until deploy time, so only a schema
/// that rejects every string can be known to reject it now.
fn secret_diagnostic(
    env: &Environment,
    error: &jsonschema::ValidationError<'_>,
    segments: &[String],
    loc: &Loc,
    text: &str,
) -> Option<Diagnostic> {
    if !rejects_every_string(error.kind()) {
        return None;
    }
    Some(
        Diagnostic::new(
            "schema",
            format!(
                "settings.{}: a secret is always a string, but the schema does not accept a string here (`{}`)",
                segments.join("."),
                error.kind().keyword()
            ),
        )
        .env(&env.name)
        .at(loc.clone(), format!("secret `{text}`"))
        .hint(format!(
            "the schema rule is at {} in schemas/{}.schema.json; use a plain value, or allow a string",
            error.schema_path().as_str(),
            env.schema.value
        )),
    )
}

/// Where in the environment's files a violation at `segments` (resource, then keys) is shown,
/// and its dotted key path.
fn violation_location(
    env: &Environment,
    error: &jsonschema::ValidationError<'_>,
    segments: &[String],
) -> (Loc, String) {
    let Some((r, rest)) = segments.split_first() else {
        return (Loc::new(env.file, 0..0), String::new());
    };
    let Some(res) = env.settings.get(r.as_str()) else {
        return (Loc::new(env.file, 0..0), String::new());
    };
    let node = res
        .node
        .find(rest.iter().map(String::as_str))
        .unwrap_or(&res.node);
    let mut key = r.clone();
    for seg in rest {
        key.push('.');
        key.push_str(seg);
    }
    let mut loc = if rest.is_empty() {
        res.name_loc.clone()
    } else {
        node.loc()
    };
    // An unexpected key is best shown at the key itself.
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
        error.kind()
        && let (Some(first), Some(table)) = (unexpected.first(), node.as_table())
        && let Some(m) = table.get(first)
    {
        loc = Loc::new(m.key_file, m.key_span.clone());
    }
    (loc, key)
}

pub(crate) fn secret_pointers(env: &Environment) -> Vec<(Vec<String>, Loc, String)> {
    let mut out = Vec::new();
    // `Node::secrets` copies every key on its way; most resources have no secret to find.
    for (name, res) in env.settings.iter().filter(|(_, r)| has_secret(&r.node)) {
        for (segs, node, r) in res.node.secrets() {
            let mut p = vec![name.clone()];
            p.extend(segs.iter().map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Index(i) => i.to_string(),
            }));
            out.push((p, node.loc(), r.text.clone()));
        }
    }
    out
}

/// True when a secret reference is anywhere below `node` (a walk that allocates nothing).
pub(crate) fn has_secret(node: &Node) -> bool {
    match &node.value {
        Value::Secret(_) => true,
        Value::Array(items) => items.iter().any(has_secret),
        Value::Table(map) => map.iter().any(|(_, m)| has_secret(&m.node)),
        _ => false,
    }
}

/// True when no string at all could satisfy the keyword that failed.
fn rejects_every_string(kind: &ValidationErrorKind) -> bool {
    match kind {
        ValidationErrorKind::Type { kind } => match kind {
            TypeKind::Single(t) => *t != JsonType::String,
            TypeKind::Multiple(set) => !set.contains(JsonType::String),
        },
        ValidationErrorKind::Enum { options } => options
            .as_array()
            .is_some_and(|o| !o.iter().any(serde_json::Value::is_string)),
        ValidationErrorKind::Constant { expected_value } => !expected_value.is_string(),
        ValidationErrorKind::FalseSchema => true,
        _ => false,
    }
}

/// True when `node` costs at most `budget` (one per value, plus the bytes of strings); spends it.
fn fits(node: &Node, budget: &mut usize) -> bool {
    let cost = match &node.value {
        Value::String(s) | Value::Datetime(s) => 1 + s.len(),
        _ => 1,
    };
    if cost > *budget {
        return false;
    }
    *budget -= cost;
    match &node.value {
        Value::Array(items) => items.iter().all(|n| fits(n, budget)),
        Value::Table(t) => t.iter().all(|(k, m)| {
            *budget = budget.saturating_sub(k.len());
            fits(&m.node, budget)
        }),
        _ => true,
    }
}

impl Instance<'_> {
    /// What a violation reports instead of a large instance.
    fn summary(&self) -> String {
        match *self {
            Instance::Settings(s) => format!("(the settings: {} resources)", s.len()),
            Instance::Node(n) => match &n.value {
                Value::Table(t) => format!("(a table of {} keys)", t.len()),
                Value::Array(items) => format!("(an array of {} items)", items.len()),
                Value::String(s) | Value::Datetime(s) => format!("(a string of {} bytes)", s.len()),
                _ => "(a value)".to_owned(),
            },
            Instance::Name(s) => format!("(a name of {} bytes)", s.len()),
        }
    }
}

/// The settings of an environment as jsonschema reads them, straight from the [`Node`] tree:
/// the same JSON as [`Environment::settings_json`] (and [`Node::to_json`]) without making that
/// copy. Datetimes are strings, a secret is the string `(secret <reference>)`, a float that is
/// not finite is `null`, and integers and floats are the numbers `to_json` makes.
pub struct SettingsJson;

/// One value of the settings (or a property name, for `propertyNames`).
#[derive(Clone, Copy)]
pub enum Instance<'a> {
    /// The whole settings: resource name -> table.
    Settings(&'a BTreeMap<String, Resource>),
    Node(&'a Node),
    Name(&'a str),
}

#[derive(Clone, Copy)]
pub enum Members<'a> {
    Settings(&'a BTreeMap<String, Resource>),
    Table(&'a Table),
}

pub enum MembersIter<'a> {
    Settings(std::collections::btree_map::Iter<'a, String, Resource>),
    Table(<&'a Table as IntoIterator>::IntoIter),
}

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, Instance<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MembersIter::Settings(it) => it
                .next()
                .map(|(k, r)| (k.as_str(), Instance::Node(&r.node))),
            MembersIter::Table(it) => it
                .next()
                .map(|(k, m)| (k.as_str(), Instance::Node(&m.node))),
        }
    }
}

impl Json for SettingsJson {
    type Node<'a> = Instance<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // Lookups are binary searches, as in serde_json's `BTreeMap`.
    const KEYS_PER_LOOKUP: usize = 2;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(_: &mut (), string: &str, f: impl FnOnce(Instance<'_>) -> T) -> T {
        f(Instance::Name(string))
    }
}

impl<'a> JsonNode<'a, SettingsJson> for Instance<'a> {
    type Object = Members<'a>;
    type Array = &'a [Node];
    type Number = serde_json::Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match *self {
            Instance::Settings(s) => Some(Members::Settings(s)),
            Instance::Node(Node {
                value: Value::Table(t),
                ..
            }) => Some(Members::Table(t)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&'a [Node]> {
        match *self {
            Instance::Node(Node {
                value: Value::Array(items),
                ..
            }) => Some(items),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match *self {
            Instance::Node(n) => match &n.value {
                Value::String(s) | Value::Datetime(s) => Some(Cow::Borrowed(s)),
                Value::Secret(r) => Some(Cow::Owned(format!("(secret {})", r.text))),
                _ => None,
            },
            Instance::Name(s) => Some(Cow::Borrowed(s)),
            Instance::Settings(_) => None,
        }
    }

    fn as_number(&self) -> Option<serde_json::Number> {
        match *self {
            Instance::Node(n) => match n.value {
                Value::Integer(i) => Some(serde_json::Number::from(i)),
                Value::Float(f) => serde_json::Number::from_f64(f),
                _ => None,
            },
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match *self {
            Instance::Node(Node {
                value: Value::Boolean(b),
                ..
            }) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(*self, Instance::Node(Node { value: Value::Float(f), .. }) if !f.is_finite())
    }

    fn json_type(&self) -> JsonType {
        match *self {
            Instance::Settings(_) => JsonType::Object,
            Instance::Name(_) => JsonType::String,
            Instance::Node(n) => match &n.value {
                Value::String(_) | Value::Datetime(_) | Value::Secret(_) => JsonType::String,
                Value::Integer(_) => JsonType::Number,
                Value::Float(f) if f.is_finite() => JsonType::Number,
                Value::Float(_) => JsonType::Null,
                Value::Boolean(_) => JsonType::Boolean,
                Value::Array(_) => JsonType::Array,
                Value::Table(_) => JsonType::Object,
            },
        }
    }

    /// Scalars compare without building a `serde_json::Value` (`enum` and `const` run once per
    /// value); containers as jsonschema's own comparison of the copies.
    fn equals_value(&self, expected: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (*self, expected) {
            (Instance::Node(n), _) => match (&n.value, expected) {
                (Value::String(s) | Value::Datetime(s), J::String(e)) => s == e,
                (Value::String(_) | Value::Datetime(_), _) => false,
                (Value::Boolean(b), J::Bool(e)) => b == e,
                (Value::Boolean(_), _) => false,
                (Value::Integer(i), J::Number(e)) => {
                    json::cmp::equal_numbers(&serde_json::Number::from(*i), e)
                }
                (Value::Integer(_), _) => false,
                _ => json::cmp::equal(&self.to_value(), expected),
            },
            (Instance::Name(s), J::String(e)) => s == e,
            (Instance::Name(_), _) => false,
            (Instance::Settings(_), _) => json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, serde_json::Value> {
        Cow::Owned(match *self {
            Instance::Settings(s) => serde_json::Value::Object(
                s.iter()
                    .map(|(k, r)| (k.clone(), r.node.to_json()))
                    .collect(),
            ),
            Instance::Node(n) => n.to_json(),
            Instance::Name(s) => serde_json::Value::String(s.to_owned()),
        })
    }

    /// The instance a violation reports: a copy when it is small, else a summary (see
    /// [`REPORT_BUDGET`]); jsonschema's default copies the whole instance for every error.
    fn lazy_value(&self) -> jsonschema_value::LazyInstance<'a> {
        let mut budget = REPORT_BUDGET;
        let small = match *self {
            Instance::Settings(s) => s.values().all(|r| fits(&r.node, &mut budget)),
            Instance::Node(n) => fits(n, &mut budget),
            Instance::Name(s) => s.len() <= REPORT_BUDGET,
        };
        jsonschema_value::LazyInstance::Ready(if small {
            self.to_value()
        } else {
            Cow::Owned(serde_json::Value::String(self.summary()))
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match *self {
            Instance::Settings(s) => Some(NodeIdentity::new(std::ptr::from_ref(s) as usize)),
            Instance::Node(n) => Some(NodeIdentity::new(std::ptr::from_ref(n) as usize)),
            Instance::Name(_) => None,
        }
    }
}

impl<'a> Object<'a, SettingsJson> for Members<'a> {
    type Node = Instance<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        match *self {
            Members::Settings(s) => s.len(),
            Members::Table(t) => t.len(),
        }
    }

    fn get(&self, key: &String) -> Option<Instance<'a>> {
        match *self {
            Members::Settings(s) => s.get(key.as_str()).map(|r| Instance::Node(&r.node)),
            Members::Table(t) => t.get(key).map(|m| Instance::Node(&m.node)),
        }
    }

    fn members(&self) -> MembersIter<'a> {
        match *self {
            Members::Settings(s) => MembersIter::Settings(s.iter()),
            Members::Table(t) => MembersIter::Table(t.into_iter()),
        }
    }
}

impl<'a> Array<'a, SettingsJson> for &'a [Node] {
    type Node = Instance<'a>;
    type ElementsIter = std::iter::Map<std::slice::Iter<'a, Node>, fn(&'a Node) -> Instance<'a>>;

    fn len(&self) -> usize {
        <[Node]>::len(self)
    }

    fn elements(&self) -> Self::ElementsIter {
        self.iter().map(Instance::Node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Input;

    /// Every error of `validator` on `instance`: where, which rule, and the message.
    fn errors<'i>(errors: impl Iterator<Item = jsonschema::ValidationError<'i>>) -> Vec<String> {
        errors
            .map(|e| format!("{} | {} | {e}", e.instance_path(), e.schema_path().as_str()))
            .collect()
    }

    #[test]
    fn a_violation_reports_a_large_instance_by_a_summary_not_a_copy() {
        let schema =
            serde_json::json!({"propertyNames": {"pattern": "^zz"}, "minProperties": 9999});
        let mut env_file = "[environment]\naccount = \"123456789012\"\nschema = \"s\"\n\
                            [target]\nkind = \"dir\"\npath = \"/srv/t\"\n"
            .to_owned();
        for i in 0..500 {
            env_file.push_str(&format!("[settings.res-{i}]\nkey = {i}\n"));
        }
        let config = crate::config::load(Input {
            environments: vec![InputFile {
                path: "environments/t.toml".into(),
                content: Ok(env_file.into_bytes()),
            }],
            schemas: vec![InputFile {
                path: "schemas/s.schema.json".into(),
                content: Ok(schema.to_string().into_bytes()),
            }],
            root: None,
        });
        // Listed up to the cap, the rest counted.
        let listed = config
            .diagnostics
            .iter()
            .filter(|d| d.code == "schema")
            .count();
        assert_eq!(listed, MAX_SCHEMA_ERRORS + 1);
        assert!(
            config
                .diagnostics
                .iter()
                .any(|d| d.message.contains("401 more schema violations")),
            "{:?}",
            config.diagnostics.last()
        );
        // Each error of the 501 holds a summary of the settings, not a copy of them.
        let env = config.get("t").expect("the environment resolves");
        let tree = jsonschema::options_for::<SettingsJson>()
            .with_draft(Draft::Draft202012)
            .build(&schema)
            .unwrap();
        let errors: Vec<_> = tree
            .iter_errors(Instance::Settings(&env.settings))
            .collect();
        assert_eq!(errors.len(), 501);
        for e in &errors {
            assert!(e.instance().to_string().len() < 100, "{}", e.instance());
        }
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("(the settings: 500 resources)"))
        );
    }

    #[test]
    fn the_settings_tree_validates_exactly_as_its_json_copy() {
        let schema = serde_json::json!({
            "type": "object",
            "minProperties": 5,
            "propertyNames": {"pattern": "^[a-z][a-z0-9-]*$", "maxLength": 12},
            "properties": {
                "strict": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["port", "name", "mode", "ratio", "tags", "db", "missing"],
                    "properties": {
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "multipleOf": 2},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 3},
                        "mode": {"enum": ["a", "b", 3, 2.5, true, null, [1, 2], {"k": "v"}]},
                        "ratio": {"type": "number", "exclusiveMaximum": 1.0},
                        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true,
                                 "maxItems": 3, "contains": {"const": "x"}},
                        "db": {"type": "object", "properties": {"password": {"type": "integer"},
                               "user": {"const": "root"}}, "dependentRequired": {"user": ["host"]}},
                        "flag": {"type": "boolean"},
                        "any": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "all": {"allOf": [{"minimum": 5}, {"maximum": 3}]},
                        "not": {"not": {"type": "integer"}},
                        "ifthen": {"if": {"type": "integer"}, "then": {"minimum": 10},
                                   "else": {"type": "string"}},
                        "f": {"type": "integer"},
                        "same": {"enum": [1, 2.0, "1", false]},
                        "list": {"const": [1, "two", {"k": [3.5]}]}
                    }
                }
            },
            "additionalProperties": {"type": "object", "maxProperties": 2,
                                     "patternProperties": {"^n": {"type": "number"}}}
        });
        let env_file = r#"
            [environment]
            account = "123456789012"
            schema = "s"
            [target]
            kind = "dir"
            path = "/srv/t"
            [settings.strict]
            port = 70001
            name = "AB"
            mode = "c"
            ratio = 1.5
            tags = ["y", "y", 3, "z"]
            extra = 1
            flag = "yes"
            any = 1.5
            all = 4
            not = 7
            ifthen = 3
            f = 1.0
            same = 2
            list = [1, "two", { k = [3.5] }]
            [settings.strict.db]
            password = { secret = "env:DB_PW" }
            user = "admin"
            [settings.Bad_Name_Way_Too_Long]
            x = 1
            [settings.other]
            n1 = "s"
            n2 = nan
            n3 = -inf
        "#;
        let config = crate::config::load(Input {
            environments: vec![InputFile {
                path: "environments/t.toml".into(),
                content: Ok(env_file.as_bytes().to_vec()),
            }],
            schemas: vec![InputFile {
                path: "schemas/s.schema.json".into(),
                content: Ok(schema.to_string().into_bytes()),
            }],
            root: None,
        });
        let env = config.get("t").expect("the environment resolves");
        let tree = jsonschema::options_for::<SettingsJson>()
            .with_draft(Draft::Draft202012)
            .build(&schema)
            .unwrap();
        let copy = jsonschema::draft202012::new(&schema).unwrap();
        let json = env.settings_json();
        let from_tree = errors(tree.iter_errors(Instance::Settings(&env.settings)));
        let from_copy = errors(copy.iter_errors(&json));
        assert!(from_copy.len() > 20, "{from_copy:#?}");
        assert_eq!(from_tree, from_copy);
        assert_eq!(
            tree.is_valid(Instance::Settings(&env.settings)),
            copy.is_valid(&json)
        );
        // And each resource on its own, valid or not.
        for (name, res) in &env.settings {
            let sub = &schema["additionalProperties"];
            let tree = jsonschema::options_for::<SettingsJson>()
                .with_draft(Draft::Draft202012)
                .build(sub)
                .unwrap();
            let copy = jsonschema::draft202012::new(sub).unwrap();
            let json = res.node.to_json();
            assert_eq!(
                errors(tree.iter_errors(Instance::Node(&res.node))),
                errors(copy.iter_errors(&json)),
                "{name}"
            );
        }
    }
}
