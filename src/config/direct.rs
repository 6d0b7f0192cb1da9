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

/// From this size on, a file is parsed in pieces of about [`PIECE`] bytes.
const PIECES_FROM: usize = 256 * 1024;
const PIECE: usize = 64 * 1024;

/// `toml::from_str::<RawFile>(text)` when it succeeds, with `settings` converted directly;
/// `None` when the text does not parse, anything else in it does not deserialize, or the
/// settings hold something that the serde path treats specially (a datetime, an integer
/// beyond `i64`, a float that overflows, the key toml uses for datetimes).
///
/// A large file is parsed in pieces when it can be (see [`in_pieces`]): toml keeps every token
/// and parser event of a document before building it, about 16 times the text.
pub fn from_str(text: &str) -> Option<RawFile> {
    if text.len() >= PIECES_FROM
        && let Some(raw) = in_pieces(text, PIECE)
    {
        return Some(raw);
    }
    whole(text)
}

fn whole(text: &str) -> Option<RawFile> {
    let (mut raw, settings) = without_settings(text)?;
    raw.settings = match settings {
        Some((_, value)) => Some(node(value, 0)?),
        None => None,
    };
    Some(raw)
}

/// A parsed `settings` entry: its key and its value.
type Entry<'a> = (Spanned<toml::de::DeString<'a>>, Spanned<DeValue<'a>>);

/// `text` deserialized into a `RawFile` without its `[settings]`, which comes back as parsed.
fn without_settings(text: &str) -> Option<(RawFile, Option<Entry<'_>>)> {
    let mut doc = DeTable::parse(text).ok()?;
    let settings = doc.get_mut().remove_entry("settings");
    let raw = RawFile::deserialize(toml::de::Deserializer::from(doc)).ok()?;
    raw.settings.is_none().then_some((raw, settings))
}

/// Where the text may be cut: the start of a line that opens a resource's table
/// ([`opens_resource`]), at least `piece` bytes after the previous cut. The first cut is 0.
fn cuts(text: &str, piece: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let mut from = piece;
    while from < text.len() {
        let Some(i) = text.as_bytes()[from - 1..]
            .windows(2)
            .position(|w| w == b"\n[")
        else {
            break;
        };
        let at = from + i;
        if !opens_resource(&text[at..]) {
            from = at + 1;
            continue;
        }
        cuts.push(at);
        from = at + piece;
    }
    cuts
}

/// Whether `text` starts with the header of a resource's own table, `[settings.NAME]` with a
/// bare key `NAME`: where one resource's tables end and the next one's begin.
fn opens_resource(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("[settings.") else {
        return false;
    };
    let name = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    name > 0
        && rest[name..]
            .trim_start_matches([' ', '\t'])
            .starts_with(']')
}

/// Whether every line of `piece` that starts with `[` (after blanks) opens a header
/// `[settings.…]`, spelled with the bare key `settings`.
fn only_resource_headers(piece: &str) -> bool {
    piece.lines().all(|line| {
        let line = line.trim_start_matches([' ', '\t']);
        let Some(rest) = line.strip_prefix('[') else {
            return true;
        };
        rest.trim_start_matches([' ', '\t'])
            .strip_prefix("settings")
            .is_some_and(|r| r.trim_start_matches([' ', '\t']).starts_with('.'))
    })
}

/// `whole(text)`, parsed in pieces cut at table headers, or `None` when that cannot be shown
/// to mean the same (the caller then parses the whole text).
///
/// Why the pieces mean what the whole does, when this returns a result:
/// - every piece parses: a cut inside a multi-line string, array or inline table would leave
///   the piece before it unterminated, which does not parse; so every cut is at the start of a
///   line that opens a table header in the whole document too;
/// - the first piece holds everything but resources; every other piece holds only headers
///   `[settings.NAME…]` (checked on its text) and so only tables of resources;
/// - in the first piece, `settings` was made by a header, not by an inline table or a dotted
///   key, which later headers could not extend;
/// - no resource is in two pieces, so no table is defined twice across pieces.
///
/// Spans are shifted by each piece's offset, so the result is the whole parse's, span for span.
/// The pieces parse on all cores (a large file is most of a single-environment command's
/// load); the result does not depend on how they were spread.
fn in_pieces(text: &str, piece: usize) -> Option<RawFile> {
    let cuts = cuts(text, piece);
    if cuts.len() < 2 {
        return None;
    }
    let ends = cuts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(text.len()));
    let bounds: Vec<(usize, usize)> = cuts.iter().copied().zip(ends).collect();
    let parsed = crate::parallel::map(&bounds, |&(start, end)| {
        let piece = &text[start..end];
        if start == 0 {
            head_piece(piece).map(|(raw, settings)| (Some(raw), settings))
        } else {
            resource_piece(piece, start).map(|settings| (None, Some(settings)))
        }
    });
    let mut raw = None;
    let mut span = None;
    let mut members = Vec::new();
    for part in parsed {
        let (head, settings) = part?;
        if head.is_some() {
            raw = head;
        }
        if let Some((value_span, piece_members)) = settings {
            span.get_or_insert(value_span);
            members.extend(piece_members);
        }
    }
    let (mut raw, span) = (raw?, span?);
    members.sort_by(|a, b| a.0.cmp(&b.0));
    if members.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut table = Table::with_capacity(members.len());
    for (key, member) in members {
        table.push(key, member);
    }
    table.finish();
    raw.settings = Some(Node {
        file: 0,
        span,
        value: Value::Table(table),
    });
    Some(raw)
}

/// The members of one piece's `settings` table, and that table's span, shifted by `offset`.
type PieceSettings = (std::ops::Range<usize>, Vec<(String, Member)>);

/// The first piece: everything but resources, and the first resources if `settings` was made
/// by a header (not by an inline table or a dotted key, which later headers could not extend).
fn head_piece(head: &str) -> Option<(RawFile, Option<PieceSettings>)> {
    let (raw, settings) = without_settings(head)?;
    let Some((key, value)) = settings else {
        return Some((raw, None));
    };
    let line_start = head[..key.span().start].rfind('\n').map_or(0, |i| i + 1);
    if !head[line_start..]
        .trim_start_matches([' ', '\t'])
        .starts_with('[')
    {
        return None;
    }
    Some((raw, Some(settings_members(value, 0)?)))
}

/// A later piece, at `offset` in the text: only tables of resources.
fn resource_piece(piece: &str, offset: usize) -> Option<PieceSettings> {
    if !only_resource_headers(piece) {
        return None;
    }
    let doc = DeTable::parse(piece).ok()?.into_inner();
    if doc.len() != 1 {
        return None;
    }
    let (key, value) = doc.into_iter().next()?;
    if key.get_ref() != "settings" {
        return None;
    }
    settings_members(value, offset)
}

fn settings_members(value: Spanned<DeValue<'_>>, offset: usize) -> Option<PieceSettings> {
    let value_span = value.span();
    let DeValue::Table(t) = value.into_inner() else {
        return None;
    };
    let members = t
        .into_iter()
        .map(|entry| member(entry, offset))
        .collect::<Option<Vec<_>>>()?;
    Some((value_span.start + offset..value_span.end + offset, members))
}

/// One table member, its spans shifted by `offset`.
fn member((key, value): Entry<'_>, offset: usize) -> Option<(String, Member)> {
    if key.get_ref() == DATETIME_KEY {
        return None;
    }
    let key_span = key.span();
    Some((
        key.into_inner().into_owned(),
        Member {
            key_span: key_span.start + offset..key_span.end + offset,
            key_file: 0,
            node: node(value, offset)?,
        },
    ))
}

/// One value as `Node::deserialize` makes it from toml's deserializer (file 0, the value's span
/// shifted by `offset`).
fn node(value: Spanned<DeValue<'_>>, offset: usize) -> Option<Node> {
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
        DeValue::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| node(v, offset))
                .collect::<Option<_>>()?,
        ),
        DeValue::Table(t) => {
            let mut table = Table::with_capacity(t.len());
            for entry in t {
                let (key, member) = member(entry, offset)?;
                table.push(key, member);
            }
            table.finish();
            Value::Table(table)
        }
    };
    Some(Node {
        file: 0,
        span: span.start + offset..span.end + offset,
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

    /// A file of `n` resources after an `[environment]` and a `[target]`, each resource with
    /// nested tables, arrays, dotted keys, comments, escapes and multi-line strings.
    fn large(n: usize) -> String {
        let mut text = String::from(
            "# comment\n[environment]\naccount = \"123456789012\"\nschema = \"s\"\n\
             [target]\nkind = \"dir\"\npath = \"/srv/t\"\n",
        );
        for i in 0..n {
            text.push_str(&format!(
                "\n[settings.r-{i:04}]  # resource {i}\nname = \"caf\\u00e9 {i}\"\n\
                 list = [\n  1,\n  \"[not a header]\",\n]\nml = \"\"\"\nnot [settings.fake]\n\"\"\"\n\
                 a.b.c = {i}\ninline = {{ k = \"v\", n = [1, 2] }}\n\
                 [settings.r-{i:04}.sub]\nx = 0x{i:x}\n[ settings . \"r-{i:04}\" . sub2 ]\ny = 'lit'\n"
            ));
        }
        text
    }

    #[test]
    fn pieces_are_what_the_whole_parse_makes() {
        let text = large(300);
        let serde = toml::from_str::<RawFile>(&text).expect("serde reads it");
        for piece in [1, 100, 700, 4096, PIECE] {
            let cut = cuts(&text, piece);
            let pieces = in_pieces(&text, piece).expect("the pieces are accepted");
            assert_eq!(
                format!("{serde:?}"),
                format!("{pieces:?}"),
                "pieces of {piece}: {cut:?}"
            );
        }
        // Really in pieces, through the public entry too.
        assert!(cuts(&text, 4096).len() > 5);
        let big = large(2000);
        assert!(big.len() > PIECES_FROM);
        assert_eq!(
            format!("{:?}", toml::from_str::<RawFile>(&big).unwrap()),
            format!("{:?}", from_str(&big).unwrap())
        );
    }

    #[test]
    fn pieces_decline_what_they_cannot_show_to_mean_the_same() {
        let base = large(3);
        let head = "[environment]\naccount = \"1\"\n";
        for (text, why) in [
            // Errors only the whole sees: a table defined twice in two pieces.
            (
                format!("{base}[settings.r-0000]\nz = 1\n"),
                "resource in two pieces",
            ),
            (
                format!("[settings]\nq = 1\n{base}[settings]\nz = 1\n"),
                "[settings] twice",
            ),
            (
                format!("settings = {{ a = {{}} }}\n{base}"),
                "inline settings extended",
            ),
            (
                format!("\"\\u0073ettings\" = {{ a = {{}} }}\n{base}"),
                "escaped key",
            ),
            (format!("settings.a.x = 1\n{base}"), "dotted settings"),
            // Not only resources after the cut.
            (format!("{base}[target2]\nx = 1\n"), "another table"),
            (
                format!("{base}[[settings.arr]]\nx = 1\n"),
                "array of tables",
            ),
            // A cut inside a multi-line string or array.
            (
                format!("{head}s = \"\"\"\n[settings.a]\n\"\"\"\n{base}"),
                "in a string",
            ),
            (format!("{head}s = [\n[1]\n]\n{base}"), "in an array"),
            // Errors in a piece.
            (format!("{base}[settings.bad]\nx = \n"), "bad value"),
        ] {
            assert!(in_pieces(&text, 1).is_none(), "{why}: {text}");
            // The whole parse has the last word (an error, or what it means).
            assert_eq!(
                format!("{:?}", toml::from_str::<RawFile>(&text).ok()),
                format!("{:?}", from_str(&text)),
                "{why}"
            );
        }
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
