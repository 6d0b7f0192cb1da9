//! The auditor's view of the deployment logs (`deploy log` filters, `--format csv` and
//! `--format html`): which records to show, what is known about each record's signature, and
//! the two documents, rendered without I/O.
//!
//! Invariant: filters only select the records shown; an environment's verification status is
//! always that of its whole log, so a filtered view never makes a broken log look fine.

pub mod csv;
pub mod html;

use std::time::{Duration, SystemTime};

use crate::log::{Outcome, Problem, Record, SealedDamage};

/// What `--since`, `--until`, `--operator` and `--outcome` select (all of them must match).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Records at or after this instant.
    pub since: Option<SystemTime>,
    /// Records before this instant, or at it when `.1` (a timestamp, not a date) is true.
    pub until: Option<(SystemTime, bool)>,
    /// The operator's user, or `user@host`.
    pub operator: Option<String>,
    /// Any of these outcomes (all when empty).
    pub outcomes: Vec<Outcome>,
}

/// An example of each accepted form, for messages.
pub const TIME_EXAMPLE: &str = "2026-11-21, 2026-11-21T14:30:00Z or 2026-11-21T15:30:00+01:00";

impl Filter {
    /// Whether `r` is selected. A record whose time does not parse is not within any bound.
    pub fn matches(&self, r: &Record) -> bool {
        if !self.outcomes.is_empty() && !self.outcomes.contains(&r.outcome) {
            return false;
        }
        if let Some(op) = &self.operator
            && *op != r.operator.user
            && *op != format!("{}@{}", r.operator.user, r.operator.host)
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(t) = humantime::parse_rfc3339(&r.time) else {
            return false;
        };
        let after = self.since.is_none_or(|s| t >= s);
        let before = self
            .until
            .is_none_or(|(u, inclusive)| t < u || (inclusive && t == u));
        after && before
    }

    /// True when some record might be left out.
    pub fn is_active(&self) -> bool {
        self.since.is_some()
            || self.until.is_some()
            || self.operator.is_some()
            || !self.outcomes.is_empty()
    }
}

/// `--since`/`--until`: an RFC 3339 timestamp (`Z` or an offset), or a date `YYYY-MM-DD`
/// (its start; with `end_of_day`, the start of the next day, exclusive). Returns the instant
/// and whether it is inclusive.
pub fn parse_time(s: &str, end_of_day: bool) -> Result<(SystemTime, bool), String> {
    let s = s.trim();
    let bad = |why: &str| format!("`{s}` is not a date or an RFC 3339 timestamp: {why}");
    if s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' {
        let t =
            humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|e| bad(&e.to_string()))?;
        return Ok(if end_of_day {
            (t + Duration::from_secs(86_400), false)
        } else {
            (t, true)
        });
    }
    let upper = s.to_ascii_uppercase();
    if upper.ends_with('Z') {
        let t = humantime::parse_rfc3339(&upper).map_err(|e| bad(&e.to_string()))?;
        return Ok((t, true));
    }
    let (base, offset) =
        split_offset(&upper).ok_or_else(|| bad("no time zone (`Z` or `+HH:MM`)"))?;
    let t = humantime::parse_rfc3339(&format!("{base}Z")).map_err(|e| bad(&e.to_string()))?;
    // Local time = UTC + offset, so UTC = local - offset.
    let t = if offset >= 0 {
        t.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        t.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    t.map(|t| (t, true)).ok_or_else(|| bad("out of range"))
}

/// `…+HH:MM` → (`…`, the offset in seconds).
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let at = s.len().checked_sub(6)?;
    let tail = s.get(at..)?.as_bytes();
    let sign = match tail[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |a: u8, b: u8| -> Option<i64> {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
    };
    let (h, m) = (digits(tail[1], tail[2])?, digits(tail[4], tail[5])?);
    (tail[3] == b':' && h < 24 && m < 60).then(|| (&s[..at], sign * (h * 3600 + m * 60)))
}

/// `--outcome`: one of [`Outcome::ALL`], or a message listing them.
pub fn parse_outcome(s: &str) -> Result<Outcome, String> {
    Outcome::parse(s).ok_or_else(|| {
        let valid: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        format!("`{s}` is not an outcome: use one of {}", valid.join(", "))
    })
}

/// What is known about one record's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Signed, and the signature verifies (under the `allowed_signers` in force, if any).
    Verified,
    /// No signature, and none was required.
    Unsigned,
    /// The first record of its log that does not verify, and why.
    Fails(String),
    /// Not judged: after the first record that does not verify, or set aside by a seal.
    NotChecked(String),
}

impl Signature {
    /// One word: `verified`, `unsigned`, `fails`, `not-checked`.
    pub fn word(&self) -> &'static str {
        match self {
            Signature::Verified => "verified",
            Signature::Unsigned => "unsigned",
            Signature::Fails(_) => "fails",
            Signature::NotChecked(_) => "not-checked",
        }
    }

    /// The status of the record at `line` of a log whose whole verification found `problem`
    /// first and set aside `sealed`.
    pub fn of(
        line: usize,
        signed: bool,
        problem: Option<&Problem>,
        sealed: &[SealedDamage],
    ) -> Signature {
        if let Some(s) = sealed
            .iter()
            .find(|s| (s.line..s.seal_line).contains(&line))
        {
            return Signature::NotChecked(format!(
                "set aside by seal record {} (line {})",
                s.seal_seq, s.seal_line
            ));
        }
        match problem {
            Some(p) if line == p.line => return Signature::Fails(p.message.clone()),
            Some(p) if line > p.line => {
                return Signature::NotChecked(format!(
                    "after line {}, the first record that does not verify",
                    p.line
                ));
            }
            _ => {}
        }
        if signed {
            Signature::Verified
        } else {
            Signature::Unsigned
        }
    }
}

/// One record as the auditor sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub record: Record,
    /// 1-based line in its log.
    pub line: usize,
    pub signature: Signature,
    /// The `allowed_signers` principal of the record's signer, when known.
    pub principal: Option<String>,
    /// The in-page anchor of the diff of its configuration (HTML), when one was made.
    pub diff: Option<String>,
}

impl EnvReport {
    /// Unique in a report: `prod`, or `prod-canary` for one target of a fleet.
    pub fn key(&self) -> String {
        match &self.member {
            Some(m) => format!("{}-{m}", self.name),
            None => self.name.clone(),
        }
    }

    /// `prod`, or `prod target canary`.
    pub fn title(&self) -> String {
        match &self.member {
            Some(m) => format!("{} target {m}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One environment's log: its whole verification, and the records the filters selected.
#[derive(Clone, Debug)]
pub struct EnvReport {
    pub name: String,
    /// The target's name, for one target of a fleet (each keeps its own log).
    pub member: Option<String>,
    pub target: String,
    /// `ok`, `sealed`, `broken`, `empty`, `unreachable`, `foreign` (as `deploy log --format
    /// json` says).
    pub status: &'static str,
    pub reason: Option<String>,
    pub problem: Option<Problem>,
    pub sealed: Vec<SealedDamage>,
    /// Records signed (of those that verify), and whether `allowed_signers` judged any.
    pub signed: usize,
    pub enforced: bool,
    /// Records in the whole log, and the records shown, newest first.
    pub total: usize,
    pub entries: Vec<Entry>,
}

/// The change of an environment's resolved configuration between two commits, embedded once
/// per pair and linked from each record that deployed it.
#[derive(Clone, Debug)]
pub struct Diff {
    /// The in-page anchor.
    pub id: String,
    pub environment: String,
    /// The previous deployed commit (`None`: the first deployment in the log).
    pub from: Option<String>,
    pub to: String,
    /// Other commits deployed after `from` that resolve the environment exactly as `to` does
    /// (their records link here too).
    pub also: Vec<String>,
    /// A unified diff, or why there is none (a commit not in the repository, no change).
    pub body: Result<String, String>,
}

/// Everything the HTML report shows.
#[derive(Clone, Debug)]
pub struct Report {
    /// When and from which commit it was made (UTC RFC 3339, full commit id, its summary).
    pub generated: String,
    pub commit: String,
    pub summary: String,
    /// The filters as given, for the heading (empty: every record).
    pub filters: Vec<String>,
    pub environments: Vec<EnvReport>,
    pub diffs: Vec<Diff>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn times_dates_and_offsets() {
        assert_eq!(
            parse_time("2026-11-21", false),
            Ok((at("2026-11-21T00:00:00Z"), true))
        );
        assert_eq!(
            parse_time("2026-11-21", true),
            Ok((at("2026-11-22T00:00:00Z"), false))
        );
        assert_eq!(
            parse_time("2026-11-21T15:30:00+01:00", false),
            Ok((at("2026-11-21T14:30:00Z"), true))
        );
        assert_eq!(
            parse_time("2026-11-21T13:30:00.5-01:00", false),
            Ok((at("2026-11-21T14:30:00.5Z"), true))
        );
        for garbage in [
            "yesterday",
            "2026-13-01",
            "2026-11-21T14:30:00",
            "",
            "2026-11-21T25:00:00Z",
        ] {
            assert!(parse_time(garbage, false).is_err(), "{garbage}");
        }
    }

    #[test]
    fn outcomes_are_named_as_in_the_log() {
        assert_eq!(parse_outcome("rolled-back"), Ok(Outcome::RolledBack));
        let e = parse_outcome("rolledback").unwrap_err();
        assert!(
            e.contains("applied, unchanged, rolled-back, failed, refused, sealed"),
            "{e}"
        );
    }
}
