//! A TOML value tree in which every value keeps the file and span it was written at.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::source::{FileId, Loc};

/// A settings value with its location.
#[derive(Debug, Clone)]
pub struct Node {
    pub file: FileId,
    pub span: Range<usize>,
    pub value: Value,
}

/// A member of a table: the key's location and the value.
#[derive(Debug, Clone)]
pub struct Member {
    pub key_span: Range<usize>,
    pub key_file: FileId,
    pub node: Node,
}

/// A table's members sorted by key. A sorted `Vec` instead of a `BTreeMap`: settings tables are
/// small and built once, and this halves their memory and the time to build and free them.
#[derive(Debug, Clone, Default)]
pub struct Table {
    entries: Vec<(String, Member)>,
}

impl Table {
    /// Sort after pushing in document order (TOML itself rejects duplicate keys), and give
    /// back the room that growing left (a table of 5 keys would keep 8 slots): tables are
    /// kept for the whole run, and most of the loaded configuration's memory is theirs.
    pub(super) fn finish(&mut self) {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.entries.shrink_to_fit();
    }

    /// An empty table with room for `n` members.
    pub(super) fn with_capacity(n: usize) -> Self {
        Table {
            entries: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(&mut self, key: String, member: Member) {
        self.entries.push((key, member));
    }

    pub fn get(&self, key: &str) -> Option<&Member> {
        self.entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Member> {
        self.entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &mut self.entries[i].1)
    }

    /// Insert or replace, keeping the order.
    pub fn insert(&mut self, key: String, member: Member) {
        match self.entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.entries[i].1 = member,
            Err(i) => self.entries.insert(i, (key, member)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.entries.iter().map(|(k, m)| (k, m))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.entries.iter_mut().map(|(_, m)| m)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl IntoIterator for Table {
    type Item = (String, Member);
    type IntoIter = std::vec::IntoIter<(String, Member)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Table {
    type Item = (&'a String, &'a Member);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Member)>,
        fn(&'a (String, Member)) -> (&'a String, &'a Member),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, m)| (k, m))
    }
}

/// TOML values. Datetimes are kept as their TOML text, which is how they appear in JSON.
#[derive(Debug, Clone)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
    /// `{ secret = "env:NAME" }` or `{ secret = "file:PATH" }`: the value is read at deploy time.
    /// Boxed: a reference is three strings, and every value of every table would be that large.
    Secret(Box<SecretRef>),
}

/// Where a secret's value comes from, as reviewed and committed (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub source: SecretSource,
    /// The reference as written: `env:ASR_DB_PASSWORD`.
    pub text: String,
    /// `environments/prod.toml:21:15`, for messages that cannot reach the sources.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the deployer.
    Env(String),
    /// A file; relative paths are relative to the repository's working tree.
    File(String),
}

impl SecretRef {
    /// Parse `env:NAME` / `file:PATH`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<SecretSource, String> {
        if let Some(name) = text.strip_prefix("env:") {
            let mut chars = name.chars();
            let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            return if ok {
                Ok(SecretSource::Env(name.to_owned()))
            } else {
                Err(format!(
                    "`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
                ))
            };
        }
        if let Some(path) = text.strip_prefix("file:") {
            return if path.is_empty() {
                Err("`file:` needs a path".to_owned())
            } else if path.contains('\0') {
                Err("the path contains a NUL byte".to_owned())
            } else {
                Ok(SecretSource::File(path.to_owned()))
            };
        }
        Err("a secret reference is `env:NAME` or `file:PATH`".to_owned())
    }
}

/// One step of the path to a value inside a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Write a path inside a resource as dotted text: `db.password`, `hosts[0]`, `a."x.y"`.
/// Keys that are not bare TOML keys are quoted, so [`parse_path`] reads it back exactly.
pub fn path_text(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if bare {
                    s.push_str(k);
                } else {
                    s.push_str(&serde_json::Value::String(k.clone()).to_string());
                }
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Read back what [`path_text`] writes; `None` for anything else.
pub fn parse_path(text: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            segs.push(Seg::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
            first = false;
            continue;
        }
        if !first {
            rest = rest.strip_prefix('.')?;
        }
        first = false;
        if rest.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let key = de.next()?.ok()?;
            let used = de.byte_offset();
            segs.push(Seg::Key(key));
            rest = &rest[used..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            segs.push(Seg::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    Some(segs)
}

/// A malformed secret reference found by [`Node::lift_secrets`].
#[derive(Debug)]
pub struct SecretProblem {
    pub span: Range<usize>,
    pub message: String,
    pub label: String,
}

impl Node {
    pub fn loc(&self) -> Loc {
        Loc::new(self.file, self.span.clone())
    }

    /// Set the file of this node and all nodes below it (deserialization cannot know it).
    pub fn set_file(&mut self, file: FileId) {
        self.file = file;
        match &mut self.value {
            Value::Array(items) => items.iter_mut().for_each(|n| n.set_file(file)),
            Value::Table(map) => map.values_mut().for_each(|m| {
                m.key_file = file;
                m.node.set_file(file);
            }),
            _ => {}
        }
    }

    pub fn as_table(&self) -> Option<&Table> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
            Value::Secret(_) => "secret",
        }
    }

    /// Merge `over` on top of `self`: tables merge recursively, any other value replaces.
    pub fn merge(&mut self, over: Node) {
        match (&mut self.value, over.value) {
            (Value::Table(base), Value::Table(top)) => {
                self.file = over.file;
                self.span = over.span;
                // Both sides are sorted: one linear merge, whatever their sizes.
                let old = std::mem::take(&mut base.entries);
                let mut merged = Vec::with_capacity(old.len() + top.len());
                let mut old = old.into_iter().peekable();
                for (key, member) in top {
                    while old.peek().is_some_and(|(k, _)| *k < key) {
                        merged.extend(old.next());
                    }
                    match old.next_if(|(k, _)| *k == key) {
                        Some((_, mut existing))
                            if matches!(existing.node.value, Value::Table(_))
                                && matches!(member.node.value, Value::Table(_)) =>
                        {
                            // Point at the table as the later (more specific) file writes it.
                            existing.key_span = member.key_span;
                            existing.key_file = member.key_file;
                            existing.node.merge(member.node);
                            merged.push((key, existing));
                        }
                        _ => merged.push((key, member)),
                    }
                }
                merged.extend(old);
                // Room was made for both sides; keys they share left some of it unused.
                merged.shrink_to_fit();
                base.entries = merged;
            }
            (_, value) => {
                self.value = value;
                self.file = over.file;
                self.span = over.span;
            }
        }
    }

    /// The value as JSON, for schema validation and hashing.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::String(s) | Value::Datetime(s) => J::String(s.clone()),
            Value::Integer(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Boolean(b) => J::Bool(*b),
            Value::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Table(map) => J::Object(
                map.iter()
                    .map(|(k, m)| (k.clone(), m.node.to_json()))
                    .collect(),
            ),
            // The value is unknown here: a string stands in for it (a secret is always one).
            Value::Secret(r) => J::String(format!("(secret {})", r.text)),
        }
    }

    /// Turn every table whose only key is `secret` (below the top level, which holds resource
    /// tables) into a [`Value::Secret`]. `at` gives `file:line:col` of a byte offset.
    /// Malformed references are returned, and left as they were.
    pub fn lift_secrets(&mut self, at: &dyn Fn(usize) -> String) -> Vec<SecretProblem> {
        let mut problems = Vec::new();
        if let Value::Table(map) = &mut self.value {
            for m in map.values_mut() {
                if let Value::Table(res) = &mut m.node.value {
                    for m in res.values_mut() {
                        m.node.lift(at, &mut problems);
                    }
                }
            }
        }
        problems
    }

    fn lift(&mut self, at: &dyn Fn(usize) -> String, problems: &mut Vec<SecretProblem>) {
        match &mut self.value {
            Value::Array(items) => items.iter_mut().for_each(|n| n.lift(at, problems)),
            Value::Table(map) => {
                let Some(secret) = map.get("secret") else {
                    map.values_mut().for_each(|m| m.node.lift(at, problems));
                    return;
                };
                if let Some((key, other)) = map.iter().find(|(k, _)| *k != "secret") {
                    problems.push(SecretProblem {
                        span: other.key_span.clone(),
                        message: format!(
                            "a secret reference has only the key `secret`; this table also has `{key}`"
                        ),
                        label: "not allowed next to `secret`".to_owned(),
                    });
                    return;
                }
                let node = &secret.node;
                let Value::String(text) = &node.value else {
                    problems.push(SecretProblem {
                        span: node.span.clone(),
                        message: format!(
                            "`secret` must be a string such as \"env:NAME\", found {}",
                            node.type_name()
                        ),
                        label: "not a string".to_owned(),
                    });
                    return;
                };
                match SecretRef::parse(text) {
                    Ok(source) => {
                        self.value = Value::Secret(Box::new(SecretRef {
                            source,
                            text: text.clone(),
                            at: at(self.span.start),
                        }));
                    }
                    Err(why) => problems.push(SecretProblem {
                        span: node.span.clone(),
                        message: format!("invalid secret reference {text:?}: {why}"),
                        label: "malformed reference".to_owned(),
                    }),
                }
            }
            _ => {}
        }
    }

    /// A copy in which every secret is replaced by what `f` returns for its path (below the
    /// node) and reference.
    pub fn replace_secrets(&self, f: &mut dyn FnMut(&[Seg], &SecretRef) -> Value) -> Node {
        fn walk(
            node: &Node,
            segs: &mut Vec<Seg>,
            f: &mut dyn FnMut(&[Seg], &SecretRef) -> Value,
        ) -> Node {
            let value = match &node.value {
                Value::Secret(r) => f(segs, r),
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            segs.push(Seg::Index(i));
                            let n = walk(n, segs, f);
                            segs.pop();
                            n
                        })
                        .collect(),
                ),
                Value::Table(map) => {
                    let mut t = Table::default();
                    for (k, m) in map {
                        segs.push(Seg::Key(k.clone()));
                        let node = walk(&m.node, segs, f);
                        segs.pop();
                        t.entries.push((
                            k.clone(),
                            Member {
                                key_span: m.key_span.clone(),
                                key_file: m.key_file,
                                node,
                            },
                        ));
                    }
                    Value::Table(t)
                }
                other => other.clone(),
            };
            Node {
                file: node.file,
                span: node.span.clone(),
                value,
            }
        }
        walk(self, &mut Vec::new(), f)
    }

    /// Every secret below this node with its path, in key order.
    pub fn secrets(&self) -> Vec<(Vec<Seg>, &Node, &SecretRef)> {
        fn walk<'a>(
            node: &'a Node,
            segs: &mut Vec<Seg>,
            out: &mut Vec<(Vec<Seg>, &'a Node, &'a SecretRef)>,
        ) {
            match &node.value {
                Value::Secret(r) => out.push((segs.clone(), node, &**r)),
                Value::Array(items) => {
                    for (i, n) in items.iter().enumerate() {
                        segs.push(Seg::Index(i));
                        walk(n, segs, out);
                        segs.pop();
                    }
                }
                Value::Table(map) => {
                    for (k, m) in map {
                        segs.push(Seg::Key(k.clone()));
                        walk(&m.node, segs, out);
                        segs.pop();
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Follow a path of keys and array indices (as JSON pointer segments) to a node.
    pub fn find<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match &node.value {
                Value::Table(map) => &map.get(seg)?.node,
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        let span = spanned.span();
        Ok(Node {
            file: 0,
            span,
            value: spanned.into_inner(),
        })
    }
}

pub(super) const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Boolean(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v)
                    .map(Value::Integer)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = seq.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut table = Table::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.get_ref() == DATETIME_KEY {
                        return Ok(Value::Datetime(map.next_value::<String>()?));
                    }
                    let key_span = key.span();
                    let node = map.next_value::<Node>()?;
                    table.push(
                        key.into_inner(),
                        Member {
                            key_span,
                            key_file: 0,
                            node,
                        },
                    );
                }
                table.finish();
                Ok(Value::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, file: FileId) -> Node {
        let mut n: Node = toml::from_str(text).unwrap();
        n.set_file(file);
        n
    }

    #[test]
    fn merge_is_recursive_for_tables_and_replaces_values() {
        let mut base = parse("[a]\nx = 1\ny = [1, 2]\n[c]\nz = 1\n", 0);
        let over = parse("[a]\ny = [3]\nw = 2\n[b]\nv = 1\n", 1);
        base.merge(over);
        let json = base.to_json();
        assert_eq!(
            json.to_string(),
            r#"{"a":{"w":2,"x":1,"y":[3]},"b":{"v":1},"c":{"z":1}}"#
        );
        // The merged table `a` points at the later file; its untouched key at the earlier one.
        let a = base.as_table().unwrap().get("a").unwrap();
        assert_eq!(a.key_file, 1);
        assert_eq!(a.node.as_table().unwrap().get("x").unwrap().node.file, 0);
        assert_eq!(a.node.as_table().unwrap().get("y").unwrap().node.file, 1);
    }
}
