//! An environment file's `[settings]` built straight from toml's parsed document, without
//! serde: the spanned deserialization of every value (`Spanned<Value>`, a map of three keys per
//! value) cost as much as parsing the text.
//!
//! [`from_str`] gives exactly what `toml::from_str::<RawFile>` gives, or `None` whenever it
//! might not (anything unusual, any error): the caller then takes that path, which has the
//! error messages.

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::node::{DATETIME_KEY, Member, Node, Table, Value};
use super::raw::RawFile;

/// `toml::from_str::<RawFile>(text)` when it succeeds, with `settings` converted directly;
/// `None` when the text does not parse, anything else in it does not deserialize, or the
/// settings hold something that the serde path treats specially (a datetime, an integer
/// beyond `i64`, a float that overflows, the key toml uses for datetimes).
pub fn from_str(text: &str) -> Option<RawFile> {
    let mut doc = DeTable::parse(text).ok()?;
    let settings = doc.get_mut().remove("settings");
    let mut raw = RawFile::deserialize(toml::de::Deserializer::from(doc)).ok()?;
    if raw.settings.is_some() {
        return None;
    }
    raw.settings = match settings {
        Some(value) => Some(node(value)?),
        None => None,
    };
    Some(raw)
}

/// One value as `Node::deserialize` makes it from toml's deserializer (file 0, the value's span).
fn node(value: Spanned<DeValue<'_>>) -> Option<Node> {
    let span = value.span();
    let value = match value.into_inner() {
        DeValue::String(s) => Value::String(s.into_owned()),
        DeValue::Integer(i) => Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => {
            // As toml's deserializer reads it: an overflow to infinity is an error there.
            let v: f64 = f.as_str().parse().ok()?;
            if v.is_infinite() && !f.as_str().contains("inf") {
                return None;
            }
            Value::Float(v)
        }
        DeValue::Boolean(b) => Value::Boolean(b),
        DeValue::Datetime(_) => return None,
        DeValue::Array(items) => Value::Array(items.into_iter().map(node).collect::<Option<_>>()?),
        DeValue::Table(t) => {
            let mut table = Table::with_capacity(t.len());
            for (key, value) in t {
                if key.get_ref() == DATETIME_KEY {
                    return None;
                }
                let key_span = key.span();
                table.push(
                    key.into_inner().into_owned(),
                    Member {
                        key_span,
                        key_file: 0,
                        node: node(value)?,
                    },
                );
            }
            table.finish();
            Value::Table(table)
        }
    };
    Some(Node {
        file: 0,
        span,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct result is the serde path's, to the last span.
    fn same_as_serde(text: &str) {
        let serde = toml::from_str::<RawFile>(text).expect("serde reads it");
        let direct = from_str(text).expect("the direct path reads it");
        assert_eq!(format!("{serde:?}"), format!("{direct:?}"), "{text}");
    }

    /// The direct path declines, so the caller takes the serde path (and its error, if any).
    fn declined(text: &str) {
        assert!(from_str(text).is_none(), "{text}");
    }

    #[test]
    fn settings_are_what_serde_makes_of_them() {
        for text in [
            "",
            "[environment]\naccount = \"1\"\n",
            "settings = 3\n",
            "[settings]\n",
            "settings = {}\n",
            "[target]\nusername = { secret = \"env:U\" }\n[settings.a]\nx = 1\n",
            r#"
            [environment]
            account = "123456789012"
            schema = "s"
            markers = ["a.example.com", "b"]
            [target]
            kind = "dir"
            path = "/srv/t"
            keep = 3
            [settings.b]
            pw = { secret = "env:X" }
            list = [1, "two", [3.0, -0.0], { k = "v" }, [], {}]
            [settings.a]
            x = 0x1F
            o = 0o17
            bin = 0b101
            neg = -9_223_372_036_854_775_808
            f = 1.5e3
            n = nan
            i = -inf
            s = "caf\u00e9 \"q\" \\ \n"
            lit = 'C:\x'
            ml = """
            two
            lines"""
            t.u.v = true
            [[settings.a.arr]]
            k = 1
            [[settings.a.arr]]
            k = 2
            [settings.c]
            "quoted key" = 1
            'x.y' = 2
            [settings."d.e"]
            "#,
        ] {
            same_as_serde(text);
        }
        for text in [
            // Everything the serde path rejects, or treats specially.
            "[settings.a]\nd = 1979-05-27T07:32:00Z\n",
            "[settings.a]\nd = [07:32:00]\n",
            "[settings.a]\nbig = 9_223_372_036_854_775_808\n",
            "[settings.a]\nbig = 0xFFFFFFFFFFFFFFFF\n",
            "[settings.a]\nhuge = 1e400\n",
            "[settings.a]\n\"$__toml_private_datetime\" = \"1979-05-27\"\n",
            "[settings.a]\nx = 1\nx = 2\n",
            "[settings.a]\nx = \n",
            "[environment]\nunknown = 1\n[settings.a]\nx = 1\n",
            "[target]\nkeep = \"3\"\n[settings.a]\nx = 1\n",
            "[zzz]\n[settings.a]\nx = 1\n",
        ] {
            declined(text);
        }
        // What the serde path accepts and the direct one declines: a table that looks like
        // toml's datetime.
        assert!(
            toml::from_str::<RawFile>(
                "[settings.a]\n\"$__toml_private_datetime\" = \"1979-05-27\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn the_repository_environments_are_what_serde_makes_of_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let direct = from_str(&text).expect("a valid environment file converts directly");
            let serde = toml::from_str::<RawFile>(&text).unwrap();
            assert_eq!(format!("{serde:?}"), format!("{direct:?}"));
            n += 1;
        }
        assert!(n >= 3);
    }
}
