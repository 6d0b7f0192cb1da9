//! `--format markdown` of `deploy plan` and `deploy diff`: a comment body for a merge request.
//! Pure: built from the same changes the text output shows (secrets masked the same way).
//!
//! Layout: a heading, a summary table (one row per environment), then one collapsible
//! `<details>` per resource with its unified diff in a fenced block, then the summary line.
//!
//! Invariants: the body is at most [`BUDGET`] bytes (so fewer characters, however a forge
//! counts them; GitHub's limit is 65,536); it is cut only between whole resources (never inside
//! a fence or a `<details>`), and then says what was left out and which command shows it; a
//! fence is longer than any run of backticks inside it; names are HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use similar::TextDiff;

use crate::plan::{Action, Change};

/// The most bytes a body may have: below GitHub's 65,536-character comment limit with room
/// to spare (a forge that adds a footer, a character counted twice in UTF-16).
pub const BUDGET: usize = 60_000;

/// A resource diff larger than this is summarized (lines, bytes) instead of shown, so that one
/// huge value does not push every other resource out of the comment.
pub const MAX_DIFF: usize = BUDGET / 4;

/// What `deploy plan --format markdown` shows.
pub struct PlanInput<'a> {
    pub environment: &'a str,
    pub account: &'a str,
    /// The target as the environment file says: `dir /srv/asr/prod`.
    pub target: &'a str,
    pub commit: &'a str,
    /// The live generation, `None` before the first apply.
    pub live: Option<u64>,
    /// True when the target is empty and the first apply adopts it.
    pub adopts: bool,
    /// The changes, diffs masked as in the text plan.
    pub changes: &'a [Change],
    /// Resources changed outside envlock that applying reverts, with what to say about each.
    pub drift: &'a [(String, String)],
}

/// One environment of `deploy diff --format markdown`.
pub struct EnvDiff {
    pub name: String,
    /// `added`, `removed`, `changed`, `unchanged` or `invalid`.
    pub change: &'static str,
    pub changes: Vec<Change>,
}

/// What `deploy diff --format markdown` shows.
pub struct DiffInput<'a> {
    /// The revisions as given, and the commits they name (short ids).
    pub from: (&'a str, &'a str),
    pub to: (&'a str, &'a str),
    pub environments: &'a [EnvDiff],
}

/// The body of `deploy plan --target NAME --format markdown`.
pub fn plan(input: &PlanInput<'_>, budget: usize) -> String {
    let env = input.environment;
    let head = plan_head(input);
    let live = match (input.live, input.adopts) {
        (Some(id), _) => id.to_string(),
        (None, true) => "none (the first apply adopts the target)".to_owned(),
        (None, false) => "none".to_owned(),
    };
    let counts = count(input.changes);
    let row = format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        code(env),
        code(input.target),
        text(&live),
        counts[0],
        counts[1],
        counts[2]
    );
    let blocks = input
        .changes
        .iter()
        .map(|c| {
            let mark = input
                .drift
                .iter()
                .find(|(r, _)| *r == c.resource)
                .map(|(_, note)| note.as_str());
            block(c, mark, &format!("deploy plan --target {env}"))
        })
        .collect();
    let footer = if input.changes.is_empty() {
        "**No changes.** The live state is what this commit gives.\n".to_owned()
    } else {
        format!(
            "**Plan: {} to add, {} to change, {} to remove.**\n",
            counts[0], counts[1], counts[2]
        )
    };
    let env_name = env.to_owned();
    assemble(
        &Page {
            head,
            table: "| Environment | Target | Live generation | Add | Change | Remove |\n\
                    | --- | --- | --- | ---: | ---: | ---: |\n",
            sections: vec![Section {
                row,
                heading: None,
                blocks,
            }],
            left_out: Box::new(move |resources, _| {
                format!(
                    "_{resources} resource{} not shown here (a comment is limited to {} \
                     characters): run {} to see the whole plan._\n\n",
                    plural(resources),
                    thousands(budget),
                    code(&format!("deploy plan --target {env_name}"))
                )
            }),
            footer,
        },
        budget,
    )
}

/// The heading of a plan, and a warning when it reverts changes made outside envlock.
fn plan_head(input: &PlanInput<'_>) -> String {
    let mut head = format!(
        "### envlock plan for {}\n\nCommit {}, account {}.\n\n",
        code(input.environment),
        code(short(input.commit)),
        code(input.account)
    );
    if !input.drift.is_empty() {
        let _ = write!(
            head,
            "**Warning:** {} resource{} changed outside envlock since the live generation; \
             this plan reverts {} (marked below).\n\n",
            input.drift.len(),
            plural(input.drift.len()),
            if input.drift.len() == 1 { "it" } else { "them" }
        );
    }
    head
}

/// The body of `deploy diff REV1 REV2 --format markdown`.
pub fn diff(input: &DiffInput<'_>, budget: usize) -> String {
    let (from, to) = (input.from, input.to);
    let differ: Vec<&EnvDiff> = input
        .environments
        .iter()
        .filter(|e| e.change != "unchanged")
        .collect();
    let unchanged: Vec<&str> = input
        .environments
        .iter()
        .filter(|e| e.change == "unchanged")
        .map(|e| e.name.as_str())
        .collect();
    let head = diff_head(input, differ.len(), &unchanged);
    let whole = format!("deploy diff {} {}", from.0, to.0);
    let sections = differ
        .iter()
        .map(|e| env_section(e, from.0, to.0, &whole))
        .collect();
    let totals = input.environments.iter().fold([0; 3], |t, e| {
        let c = count(&e.changes);
        [t[0] + c[0], t[1] + c[1], t[2] + c[2]]
    });
    let footer = format!(
        "**{} to add, {} to change, {} to remove** in {} environment{}.\n",
        totals[0],
        totals[1],
        totals[2],
        differ.len(),
        plural(differ.len())
    );
    assemble(
        &Page {
            head,
            table: "| Environment | Change | Add | Change | Remove |\n\
                    | --- | --- | ---: | ---: | ---: |\n",
            sections,
            left_out: Box::new(move |resources, envs| {
                format!(
                    "_{resources} diff{} of {envs} environment{} not shown here (a comment is \
                     limited to {} characters): run {} to see the whole diff._\n\n",
                    plural(resources),
                    plural(envs),
                    thousands(budget),
                    code(&whole)
                )
            }),
            footer,
        },
        budget,
    )
}

/// The heading of a diff: the two commits, how many environments differ, which do not.
fn diff_head(input: &DiffInput<'_>, differ: usize, unchanged: &[&str]) -> String {
    let (from, to, all) = (input.from, input.to, input.environments.len());
    let mut head = format!(
        "### envlock diff {} → {}\n\n{differ} of {all} environment{} differ{} between {} ({}) and \
         {} ({}).",
        code(from.1),
        code(to.1),
        plural(all),
        if all == 1 { "s" } else { "" },
        code(from.1),
        code(from.0),
        code(to.1),
        code(to.0)
    );
    if !unchanged.is_empty() {
        let shown: Vec<String> = unchanged.iter().take(20).map(|n| code(n)).collect();
        let more = unchanged.len() - shown.len();
        let _ = write!(head, " Unchanged: {}", shown.join(", "));
        if more > 0 {
            let _ = write!(head, " and {more} more");
        }
        head.push('.');
    }
    head.push_str("\n\n");
    head
}

/// One environment of a diff: its table row, a heading, a block per changed part.
fn env_section(e: &EnvDiff, from: &str, to: &str, whole: &str) -> Section {
    let c = count(&e.changes);
    let row = format!(
        "| {} | {} | {} | {} | {} |\n",
        code(&e.name),
        text(e.change),
        c[0],
        c[1],
        c[2]
    );
    let mut heading = format!("#### {} ({})\n\n", code(&e.name), text(e.change));
    if e.change == "invalid" {
        let _ = write!(
            heading,
            "Does not resolve at one of the commits: {} and {} say why.\n\n",
            code(&format!("deploy check --rev {from}")),
            code(&format!("deploy check --rev {to}"))
        );
    }
    Section {
        row,
        heading: Some(heading),
        blocks: e.changes.iter().map(|c| block(c, None, whole)).collect(),
    }
}

/// The changes between an environment's parts at two commits ([`crate::render::environment_parts`]),
/// each with a unified diff headed `NAME @ COMMIT`.
pub fn changes_between(
    old: &[(String, String)],
    new: &[(String, String)],
    from: &str,
    to: &str,
) -> Vec<Change> {
    let old: BTreeMap<&str, &str> = old.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let new: BTreeMap<&str, &str> = new.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let mut names: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    names.sort_by_key(|n| (*n != crate::render::HEAD_PART, *n));
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (old.get(name), new.get(name));
            let action = match (a, b) {
                (None, Some(_)) => Action::Add,
                (Some(_), None) => Action::Remove,
                (Some(a), Some(b)) if a != b => Action::Change,
                _ => return None,
            };
            let diff = TextDiff::from_lines(a.copied().unwrap_or(""), b.copied().unwrap_or(""))
                .unified_diff()
                .context_radius(3)
                .header(&format!("{name} @ {from}"), &format!("{name} @ {to}"))
                .to_string();
            Some(Change {
                resource: name.to_owned(),
                action,
                diff,
            })
        })
        .collect()
}

/// A body in pieces, put together by [`assemble`] within a budget.
struct Page {
    /// The heading and what comes before the table (always shown).
    head: String,
    table: &'static str,
    sections: Vec<Section>,
    /// The line saying how many resource blocks of how many environments were left out.
    left_out: Box<dyn Fn(usize, usize) -> String>,
    footer: String,
}

struct Section {
    row: String,
    /// Shown above the blocks (a diff's environment), when any of them is shown.
    heading: Option<String>,
    blocks: Vec<String>,
}

/// The page within `budget` bytes: the head, as many table rows as fit in half the room, then
/// whole blocks in order until one does not fit, then the left-out line (room for it is kept
/// from the start, at its longest) and the footer.
fn assemble(page: &Page, budget: usize) -> String {
    let total: usize = page.sections.iter().map(|s| s.blocks.len()).sum();
    let reserve = (page.left_out)(total, page.sections.len()).len() + page.footer.len();
    let room = budget.saturating_sub(reserve);
    let mut out = page.head.clone();
    let fits = |out: &String, more: usize| out.len() + more <= room;
    let mut rows = 0;
    let table_end = out.len() + room.saturating_sub(out.len()) / 2;
    if fits(&out, page.table.len() + 1) {
        out.push_str(page.table);
        for s in &page.sections {
            if !fits(&out, s.row.len() + 1) || out.len() + s.row.len() > table_end {
                break;
            }
            out.push_str(&s.row);
            rows += 1;
        }
    }
    out.push('\n');
    let mut shown = vec![0; page.sections.len()];
    'sections: for (i, s) in page.sections.iter().enumerate().take(rows) {
        if let Some(h) = &s.heading {
            let first = s.blocks.first().map_or(0, String::len);
            if !fits(&out, h.len() + first) {
                break;
            }
            out.push_str(h);
        }
        for b in &s.blocks {
            if !fits(&out, b.len()) {
                break 'sections;
            }
            out.push_str(b);
            shown[i] += 1;
        }
    }
    let left: usize = total - shown.iter().sum::<usize>();
    let envs = page
        .sections
        .iter()
        .zip(&shown)
        .enumerate()
        .filter(|(i, (s, n))| *i >= rows || **n < s.blocks.len())
        .count();
    if left > 0 || envs > 0 {
        out.push_str(&(page.left_out)(left, envs));
    }
    out.push_str(&page.footer);
    debug_assert!(out.len() <= budget || page.head.len() > room);
    out
}

/// One resource: `<details>` with its diff in a fence longer than any backtick run inside;
/// a diff over [`MAX_DIFF`] is described instead, with the command that shows it.
fn block(change: &Change, mark: Option<&str>, whole: &str) -> String {
    let word = match change.action {
        Action::Add => "add",
        Action::Change => "change",
        Action::Remove => "remove",
    };
    let mut out = format!(
        "<details><summary>{} ({word}){}</summary>\n\n",
        code(&format!("{} {}", change.action.sign(), change.resource)),
        mark.map(|m| format!(" <b>{}</b>", text(m)))
            .unwrap_or_default()
    );
    // Masked by construction; the process-wide net also runs here, before the size is taken,
    // so the budget holds for what is printed.
    let diff = crate::redact::scrub(&change.diff);
    if diff.len() > MAX_DIFF {
        let _ = write!(
            out,
            "This diff is {} lines ({} bytes), too long for a comment: {} shows it.\n\n",
            diff.lines().count(),
            diff.len(),
            code(whole)
        );
    } else {
        let fence = "`".repeat(longest_backtick_run(&diff).max(2) + 1);
        let _ = write!(out, "{fence}diff\n{diff}");
        if !diff.ends_with('\n') {
            out.push('\n');
        }
        let _ = write!(out, "{fence}\n\n");
    }
    out.push_str("</details>\n\n");
    out
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Adds, changes and removes.
fn count(changes: &[Change]) -> [usize; 3] {
    let n = |a| changes.iter().filter(|c| c.action == a).count();
    [n(Action::Add), n(Action::Change), n(Action::Remove)]
}

/// Text safe in markdown and in HTML (a table cell, a `<summary>`): every character that
/// means something in either is an entity, a line break a space.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' | '<' | '>' | '"' | '\'' | '|' | '`' | '*' | '_' | '[' | ']' | '\\' | '~' | '#'
            | '!' | '$' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `<code>` around [`text`].
pub fn code(s: &str) -> String {
    format!("<code>{}</code>", text(s))
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `60000` as `60,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
