//! JSON Schemas (draft 2020-12) for environments' `[settings]`, and validation against them.

use std::collections::HashMap;
use std::sync::Arc;

use jsonschema::JsonType;
use jsonschema::error::{TypeKind, ValidationErrorKind};

use super::node::{Node, Seg, Value};
use crate::diagnostic::Diagnostic;
use crate::source::{Loc, Sources};

use super::{Environment, InputFile};

/// The schemas of `schemas/*.schema.json`, compiled once each.
#[derive(Default)]
pub struct Schemas {
    /// Schema name (`asr`) -> compiled validator, or `None` when the schema itself is broken.
    compiled: HashMap<String, Option<Arc<jsonschema::Validator>>>,
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
            match jsonschema::draft202012::new(&json) {
                Ok(v) => {
                    compiled.insert(name, Some(Arc::new(v)));
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
        self.compiled.get(name).cloned().flatten()
    }

    /// Validate an environment's settings; every violation becomes a diagnostic.
    pub fn validate(&self, env: &Environment, diags: &mut Vec<Diagnostic>) {
        let validator = match self.compiled.get(&env.schema.value) {
            Some(Some(v)) => v,
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
        let json = env.settings_json();
        // Where the secrets are matters only for an error; most environments have none.
        let mut secrets = None;
        for error in validator.iter_errors(&json) {
            let path = error.instance_path();
            let segments: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            if let Some((loc, text)) = secrets
                .get_or_insert_with(|| secret_pointers(env))
                .iter()
                .find_map(|(p, l, t)| (*p == segments).then_some((l, t)))
            {
                // The value is unknown until deploy time; only a schema that rejects every
                // string can be known to reject it now.
                if rejects_every_string(error.kind()) {
                    diags.push(
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
                    );
                }
                continue;
            }
            let (resource, rest) = match segments.split_first() {
                Some((r, rest)) => (Some(r.as_str()), rest),
                None => (None, &[][..]),
            };
            let (loc, key_path) = match resource
                .and_then(|r| env.settings.get(r).map(|res| (r, res)))
            {
                Some((r, res)) => {
                    let node = res
                        .node
                        .find(rest.iter().map(String::as_str))
                        .unwrap_or(&res.node);
                    let mut key = r.to_owned();
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
                    if let jsonschema::error::ValidationErrorKind::AdditionalProperties {
                        unexpected,
                    } = error.kind()
                        && let (Some(first), Some(table)) = (unexpected.first(), node.as_table())
                        && let Some(m) = table.get(first)
                    {
                        loc = Loc::new(m.key_file, m.key_span.clone());
                    }
                    (loc, key)
                }
                None => (Loc::new(env.file, 0..0), String::new()),
            };
            let where_ = if key_path.is_empty() {
                "settings".to_owned()
            } else {
                format!("settings.{key_path}")
            };
            diags.push(
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
            );
        }
    }
}

/// The JSON pointer segments of every secret of an environment, where it is written, and its
/// reference.
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
