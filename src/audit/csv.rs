//! `deploy log --format csv`: one row per record, a header row, RFC 4180 quoting (CRLF line
//! ends; a field holding a comma, a quote, CR or LF is quoted, its quotes doubled).

use super::Entry;

/// The header row's columns, in order.
pub const COLUMNS: [&str; 18] = [
    "time",
    "environment",
    "seq",
    "action",
    "outcome",
    "commit",
    "operator",
    "generation",
    "previous_generation",
    "reason",
    "signer",
    "principal",
    "verified",
    "verification_note",
    "resources_added",
    "resources_changed",
    "resources_removed",
    "hash",
];

/// The document: the header, then `entries` in the order given.
pub fn document(entries: &[&Entry]) -> String {
    let mut out = row(COLUMNS.iter().map(|c| (*c).to_owned()));
    for e in entries {
        out.push_str(&row(fields(e)));
    }
    out
}

fn fields(e: &Entry) -> impl Iterator<Item = String> {
    let r = &e.record;
    let opt = |g: Option<u64>| g.map_or(String::new(), |g| g.to_string());
    let names = |pick: fn(&crate::log::Resources) -> &Vec<String>| {
        r.resources
            .as_ref()
            .map_or(String::new(), |res| pick(res).join(";"))
    };
    let note = match &e.signature {
        super::Signature::Fails(why) | super::Signature::NotChecked(why) => why.clone(),
        _ => String::new(),
    };
    [
        r.time.clone(),
        r.environment.clone(),
        r.seq.to_string(),
        r.action.as_str().to_owned(),
        r.outcome.as_str().to_owned(),
        r.commit.clone(),
        format!("{}@{}", r.operator.user, r.operator.host),
        opt(r.generation),
        opt(r.previous_generation),
        r.reason.clone().unwrap_or_default(),
        r.signer.clone().unwrap_or_default(),
        e.principal.clone().unwrap_or_default(),
        e.signature.word().to_owned(),
        note,
        names(|res| &res.add),
        names(|res| &res.change),
        names(|res| &res.remove),
        r.hash.clone(),
    ]
    .into_iter()
}

/// One row, CRLF-terminated.
fn row(cells: impl Iterator<Item = String>) -> String {
    let cells: Vec<String> = cells.map(|c| field(&c)).collect();
    let mut line = cells.join(",");
    line.push_str("\r\n");
    line
}

/// One field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
