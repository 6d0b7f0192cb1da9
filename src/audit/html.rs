//! `deploy log --format html`: one self-contained page (inline CSS, no script, no external
//! resource; a Content-Security-Policy forbids loading anything) for an auditor: per
//! environment its verification status, a timeline of records newest first, who signed each
//! and whether it verifies, and each deployed commit's configuration diff, embedded.
//!
//! Every string that comes from a record, a configuration or the repository goes through
//! [`escape`]: an operator, a reason or a resource name can hold markup.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Diff, Entry, EnvReport, Report, Signature};

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;color:#1d2330;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:2px solid #d7dce5;padding-bottom:.2em}
h3{font-size:1em;margin:1em 0 .3em}
code,pre,.mono{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:#4a5468}
nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5em}
nav a{display:inline-block;padding:.2em .7em;border-radius:1em;text-decoration:none;border:1px solid #c5ccd8;color:#1d2330}
.badge{display:inline-block;padding:.05em .55em;border-radius:.6em;font-weight:600;font-size:.85em}
.status-ok .badge,.badge.status-ok{background:#dcf5e3;color:#145a2a}
.status-sealed .badge,.badge.status-sealed{background:#fff1c7;color:#6b4e00}
.status-broken .badge,.badge.status-broken{background:#b3141d;color:#fff}
.status-empty .badge,.status-unreachable .badge,.status-foreign .badge,.badge.status-empty,.badge.status-unreachable,.badge.status-foreign{background:#e4e7ee;color:#333}
.verification{padding:.5em .8em;border-radius:.4em;border:1px solid #d7dce5;background:#f6f8fb}
.verification.status-broken{border-color:#b3141d;background:#fdecee}
.verification.status-sealed{border-color:#d8a800;background:#fffaeb}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{text-align:left;vertical-align:top;padding:.3em .5em;border-bottom:1px solid #e4e7ee}
th{background:#f0f2f6;font-weight:600;position:sticky;top:0}
tr.record td.outcome{font-weight:600}
tr.outcome-applied td.outcome{color:#145a2a}
tr.outcome-unchanged td.outcome{color:#4a5468}
tr.outcome-rolled-back{background:#fff0d9}tr.outcome-rolled-back td.outcome{color:#9a4a00}
tr.outcome-failed{background:#fde3e5}tr.outcome-failed td.outcome{color:#b3141d}
tr.outcome-refused{background:#efe5fb}tr.outcome-refused td.outcome{color:#5b2a9a}
tr.outcome-sealed{background:#fff6cf}
tr.record td.reason{color:#333;white-space:pre-wrap;word-break:break-word;min-width:18em}
td.time{white-space:nowrap}td.signature{max-width:16em}.signer{font-size:11px;word-break:break-all}
.sig-verified{color:#145a2a}.sig-unsigned{color:#6b7385}.sig-fails{color:#b3141d;font-weight:700}.sig-not-checked{color:#9a4a00}
.names{color:#4a5468}
section.diff{border:1px solid #d7dce5;border-radius:.4em;margin:.8em 0;overflow:hidden}
section.diff h3{margin:0;padding:.4em .8em;background:#f0f2f6}
section.diff pre{margin:0;padding:.5em .8em;overflow-x:auto}
section.diff p{margin:0;padding:.5em .8em}
.add{background:#e6f7ea;display:block}.del{background:#fde8ea;display:block}.hunk{color:#0b6b8a;display:block}
";

/// The whole page.
pub fn document(report: &Report) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        out,
        "<title>envlock deployment log, {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&report.generated)
    );
    out.push_str(&heading(report));
    for env in &report.environments {
        let diffs: Vec<&Diff> = report
            .diffs
            .iter()
            .filter(|d| d.environment == env.name)
            .collect();
        out.push_str(&env_section(env, &diffs));
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The title, when and from which commit, the filters, and one link per environment.
fn heading(report: &Report) -> String {
    let mut out = String::from("<header>\n<h1>Deployment log</h1>\n");
    let _ = writeln!(
        out,
        "<p class=\"meta\" id=\"generated\">Generated <time>{}</time> by <code>deploy log --format html</code> from commit <code class=\"commit\">{}</code> ({}). Records are listed <strong>newest first</strong>; each environment's verification status covers its whole log, whatever the filters show.</p>",
        escape(&report.generated),
        escape(&report.commit),
        escape(&report.summary)
    );
    let filters = if report.filters.is_empty() {
        "none: every record".to_owned()
    } else {
        report
            .filters
            .iter()
            .map(|f| format!("<code>{}</code>", escape(f)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\" id=\"filters\">Filters: {filters}</p>"
    );
    out.push_str("<nav><ul>\n");
    for env in &report.environments {
        let _ = writeln!(
            out,
            "<li class=\"status-{s}\"><a href=\"#env-{id}\">{name} <span class=\"badge\">{s}</span></a></li>",
            s = env.status,
            id = escape(&env.key()),
            name = escape(&env.title())
        );
    }
    out.push_str("</ul></nav>\n</header>\n");
    out
}

/// One environment: its status, its timeline, and the diffs its records link to.
fn env_section(env: &EnvReport, diffs: &[&Diff]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<section class=\"environment status-{}\" id=\"env-{}\">\n<h2>{} <span class=\"badge\">{}</span></h2>",
        env.status,
        escape(&env.key()),
        escape(&env.title()),
        env.status
    );
    out.push_str(&verification(env));
    let _ = writeln!(
        out,
        "<p class=\"meta\">Target <code>{}</code>; {} of {} record{} shown, newest first.</p>",
        escape(&env.target),
        env.entries.len(),
        env.total,
        if env.total == 1 { "" } else { "s" }
    );
    if !env.entries.is_empty() {
        out.push_str(&timeline(env));
    }
    if !diffs.is_empty() {
        let _ = writeln!(out, "<h3>Configuration deployed, as diffs</h3>");
        for d in diffs {
            out.push_str(&diff_section(d));
        }
    }
    out.push_str("</section>\n");
    out
}

/// The verification status of the whole log, at the top of its section.
fn verification(env: &EnvReport) -> String {
    let text = match env.status {
        "ok" => format!(
            "<strong>ok</strong>: every record's hash and link verifies; {}.",
            signatures(env)
        ),
        "sealed" => format!(
            "<strong>sealed</strong>: the log verifies around damage that <code>deploy log seal</code> set aside: {}",
            env.sealed
                .iter()
                .map(|s| format!(
                    "lines {}&ndash;{} ({}: {}), sealed by record {} ({}, {}: {})",
                    s.line,
                    s.seal_line.saturating_sub(1),
                    s.kind.as_str(),
                    escape(&s.problem),
                    s.seal_seq,
                    escape(&s.operator),
                    escape(&s.time),
                    escape(&s.reason)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        "broken" => {
            let p = env.problem.as_ref();
            format!(
                "<strong>BROKEN</strong>: the first record that does not verify is at line {}{}: {}",
                p.map_or(0, |p| p.line),
                p.and_then(|p| p.seq)
                    .map_or(String::new(), |s| format!(" (record {s})")),
                escape(p.map_or("", |p| p.message.as_str()))
            )
        }
        other => format!(
            "<strong>{other}</strong>: {}",
            escape(env.reason.as_deref().unwrap_or("not read"))
        ),
    };
    format!(
        "<p class=\"verification status-{}\" id=\"verification-{}\">Log verification: {text}</p>\n",
        env.status,
        escape(&env.key())
    )
}

/// What the signatures of a log that verifies say.
fn signatures(env: &EnvReport) -> String {
    match (env.signed, env.enforced) {
        (0, false) => {
            "no record is signed (the repository has no <code>allowed_signers</code>)".to_owned()
        }
        (n, true) => format!(
            "{n} signed record{} verif{} under <code>allowed_signers</code>",
            if n == 1 { "" } else { "s" },
            if n == 1 { "ies" } else { "y" }
        ),
        (n, false) => format!(
            "{n} signed record{} verif{} (no <code>allowed_signers</code> judged them)",
            if n == 1 { "" } else { "s" },
            if n == 1 { "ies" } else { "y" }
        ),
    }
}

/// The records shown, one row each.
fn timeline(env: &EnvReport) -> String {
    let mut out = String::from(
        "<table class=\"timeline\">\n<thead><tr><th>Time (UTC)</th><th>Seq</th><th>Action</th><th>Outcome</th><th>Commit</th><th>Operator</th><th>Generation</th><th>Resources</th><th>Signature</th><th>Reason</th></tr></thead>\n<tbody>\n",
    );
    let mut ids = HashSet::new();
    for e in &env.entries {
        let mut id = format!("rec-{}-{}", env.key(), e.record.seq);
        if !ids.insert(id.clone()) {
            id = format!("{id}-line{}", e.line);
        }
        out.push_str(&record_row(e, &id));
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn record_row(e: &Entry, id: &str) -> String {
    let r = &e.record;
    let short: String = r.commit.chars().take(12).collect();
    let commit = match (&e.diff, short.is_empty()) {
        (_, true) => "&ndash;".to_owned(),
        (Some(d), false) => format!(
            "<a class=\"mono\" href=\"#{}\" title=\"{}\">{}</a>",
            escape(d),
            escape(&r.commit),
            escape(&short)
        ),
        (None, false) => format!(
            "<span class=\"mono\" title=\"{0}\">{1}</span>",
            escape(&r.commit),
            escape(&short)
        ),
    };
    let generation = match (r.previous_generation, r.generation) {
        (Some(p), Some(g)) if p != g => format!("{p} &rarr; {g}"),
        (_, Some(g)) => g.to_string(),
        (_, None) => "&ndash;".to_owned(),
    };
    format!(
        "<tr id=\"{id}\" class=\"record outcome-{o} action-{a} sig-{w}\" data-line=\"{line}\"><td class=\"time mono\">{time}</td><td class=\"seq\">{seq}</td><td class=\"action\">{a}</td><td class=\"outcome\">{o}</td><td class=\"commit\">{commit}</td><td class=\"operator\">{op}</td><td class=\"generation\">{generation}</td><td class=\"resources\">{res}</td><td class=\"signature\">{sig}</td><td class=\"reason\">{reason}</td></tr>\n",
        id = escape(id),
        o = r.outcome.as_str(),
        a = r.action.as_str(),
        w = e.signature.word(),
        line = e.line,
        time = escape(&r.time),
        seq = r.seq,
        op = escape(&r.operator.display()),
        res = resources(r),
        sig = signature_cell(e),
        reason = escape(r.reason.as_deref().unwrap_or("")),
    )
}

/// `+a ~b -c` and the names.
fn resources(r: &crate::log::Record) -> String {
    let c = &r.changes;
    let mut out = format!("+{} ~{} -{}", c.add, c.change, c.remove);
    if let Some(res) = &r.resources {
        for (sign, names) in [("+", &res.add), ("~", &res.change), ("-", &res.remove)] {
            for n in names {
                let _ = write!(out, "<br><span class=\"names\">{sign} {}</span>", escape(n));
            }
        }
    }
    out
}

/// Who signed the record and whether it verifies.
fn signature_cell(e: &Entry) -> String {
    let who = match (&e.record.signer, &e.principal) {
        (Some(f), Some(p)) => format!(
            "<br><span class=\"signer mono\">{}</span><br><span class=\"principal\">{}</span>",
            escape(f),
            escape(p)
        ),
        (Some(f), None) => format!(
            "<br><span class=\"signer mono\">{}</span><br><span class=\"principal\">(not in allowed_signers)</span>",
            escape(f)
        ),
        (None, _) => String::new(),
    };
    let verdict = match &e.signature {
        Signature::Verified => "<span class=\"verdict\">verified</span>".to_owned(),
        Signature::Unsigned => "<span class=\"verdict\">unsigned</span>".to_owned(),
        Signature::Fails(why) => format!("<span class=\"verdict\">FAILS</span>: {}", escape(why)),
        Signature::NotChecked(why) => format!(
            "<span class=\"verdict\">not checked</span>: {}",
            escape(why)
        ),
    };
    format!("{verdict}{who}")
}

/// One embedded diff, `+`/`-` lines marked.
fn diff_section(d: &Diff) -> String {
    let from = d
        .from
        .as_deref()
        .map_or("nothing deployed before".to_owned(), |f| {
            f.chars().take(12).collect()
        });
    let to: String = d.to.chars().take(12).collect();
    let also = if d.also.is_empty() {
        String::new()
    } else {
        let shorts: Vec<String> = d
            .also
            .iter()
            .map(|c| {
                format!(
                    "<span class=\"mono\">{}</span>",
                    escape(&c.chars().take(12).collect::<String>())
                )
            })
            .collect();
        format!(" (and {}: the same configuration)", shorts.join(", "))
    };
    let mut out = format!(
        "<section class=\"diff\" id=\"{}\">\n<h3>{} <span class=\"mono\">{}</span> &rarr; <span class=\"mono\">{}</span>{also}</h3>\n",
        escape(&d.id),
        escape(&d.environment),
        escape(&from),
        escape(&to)
    );
    match &d.body {
        Ok(text) => {
            out.push_str("<pre>");
            for line in text.lines() {
                let class = if line.starts_with("+++") || line.starts_with("---") {
                    ""
                } else if line.starts_with('+') {
                    "add"
                } else if line.starts_with('-') {
                    "del"
                } else if line.starts_with("@@") {
                    "hunk"
                } else {
                    ""
                };
                if class.is_empty() {
                    let _ = writeln!(out, "{}", escape(line));
                } else {
                    let _ = write!(out, "<span class=\"{class}\">{}</span>", escape(line));
                }
            }
            out.push_str("</pre>\n");
        }
        Err(why) => {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(why));
        }
    }
    out.push_str("</section>\n");
    out
}

/// Text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_is_text() {
        assert_eq!(
            escape("<script>alert(1)</script> & \"'"),
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;&#39;"
        );
    }
}
