//! The other spellings of an identity that a copy-paste produces, found in one linear pass.
//!
//! - Letter case: markers (host names) and accounts match ASCII-case-insensitively
//!   (`API.VALIDATION.ASR.EXAMPLE.COM` is `validation.asr.example.com`).
//! - Digit groups: between two digits, a run of at most [`MAX_RUN`] separators (space, `-`, `.`,
//!   `_`, the Unicode spaces and dashes a console or a document puts there, and invisible
//!   characters such as U+200B) is dropped, and full-width digits read as ASCII ones, so
//!   `1111-1111-1111`, `1111 1111 1111` and `1111–1111–1111` are the account `111111111111`.
//!   Accounts are searched for in that folded text too; every match is mapped back to the bytes
//!   it covers in the text as written.
//!
//! Not folded (too noisy: they join numbers that are not one): `,` `:` `/`, tabs, line breaks,
//! and runs of more than [`MAX_RUN`] separators.
//!
//! Invariant: the automata are non-deterministic (contiguous NFA), whose construction is linear
//! in the patterns' total length (the DFA aho-corasick picks by default follows failure chains
//! for every state and byte class, quadratic in a pattern's length); a search is linear in the
//! text plus the matches reported.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// The most separator characters between two digits that still join them into one number.
pub const MAX_RUN: usize = 3;

/// Every account and marker, searched for as written and in the folded spellings above.
pub struct Matcher {
    exact: AhoCorasick,
    /// The accounts folded, and which pattern of `exact` each one is; `None` without accounts.
    folded: Option<(AhoCorasick, Vec<usize>)>,
}

impl Matcher {
    /// `patterns`: (text, is_account), in the order match ids refer to.
    pub fn new<'p>(patterns: impl IntoIterator<Item = (&'p str, bool)>) -> Option<Self> {
        let patterns: Vec<(&str, bool)> = patterns.into_iter().collect();
        if patterns.is_empty() {
            return None;
        }
        let exact = build(patterns.iter().map(|&(p, _)| p.to_owned()))?;
        let accounts: Vec<(usize, String)> = patterns
            .iter()
            .enumerate()
            .filter(|(_, (_, is_account))| *is_account)
            .map(|(i, (p, _))| (i, fold(p).map_or_else(|| (*p).to_owned(), |f| f.text)))
            .filter(|(_, folded)| !folded.is_empty())
            .collect();
        let folded = if accounts.is_empty() {
            None
        } else {
            let ac = build(accounts.iter().map(|(_, f)| f.clone()))?;
            Some((ac, accounts.into_iter().map(|(i, _)| i).collect()))
        };
        Some(Matcher { exact, folded })
    }

    /// Every match in `text` as `(start, end, pattern)`, in bytes of `text` as written. A match
    /// found both as written and folded may be reported twice.
    pub fn find(&self, text: &str, mut f: impl FnMut(usize, usize, usize)) {
        for m in self.exact.find_overlapping_iter(text) {
            f(m.start(), m.end(), m.pattern().as_usize());
        }
        let Some((ac, ids)) = &self.folded else {
            return;
        };
        let Some(folded) = fold(text) else {
            return;
        };
        for m in ac.find_overlapping_iter(&folded.text) {
            let (start, end) = folded.original(m.start(), m.end());
            f(start, end, ids[m.pattern().as_usize()]);
        }
    }
}

fn build(patterns: impl IntoIterator<Item = String>) -> Option<AhoCorasick> {
    AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(patterns)
        .ok()
}

/// A text with its digit groups joined, and where each of its bytes comes from.
pub struct Folded {
    pub text: String,
    /// For each byte of `text`: the start and the end of the character it comes from.
    from: Vec<(usize, usize)>,
}

impl Folded {
    /// The bytes of the original text that `start..end` of the folded text covers.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        (self.from[start].0, self.from[end - 1].1)
    }
}

/// A digit as a copy-paste may spell it (ASCII or full-width).
fn digit(c: char) -> Option<char> {
    match c {
        '0'..='9' => Some(c),
        '\u{FF10}'..='\u{FF19}' => char::from_digit(c as u32 - 0xFF10, 10),
        _ => None,
    }
}

/// What may stand between two digits of one number.
fn separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-'
            | '.'
            | '_'
            | '\u{00A0}' // no-break space
            | '\u{00AD}' // soft hyphen
            | '\u{2007}' // figure space
            | '\u{2009}' // thin space
            | '\u{202F}' // narrow no-break space
            | '\u{2010}'..='\u{2015}' // hyphen, non-breaking hyphen, figure dash, en dash, em dash, bar
            | '\u{2212}' // minus sign
            | '\u{FF0D}' // full-width hyphen-minus
            | '\u{200B}'..='\u{200D}' // zero-width space, non-joiner, joiner
            | '\u{2060}' // word joiner
            | '\u{FEFF}' // zero-width no-break space
    )
}

/// `text` with every short run of separators between two digits dropped and full-width digits
/// made ASCII; `None` when that changes nothing (the common case costs one scan, no copy).
pub fn fold(text: &str) -> Option<Folded> {
    if !needs_folding(text) {
        return None;
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Folded {
        text: String::with_capacity(text.len()),
        from: Vec::with_capacity(text.len()),
    };
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let end = chars.get(i + 1).map_or(text.len(), |&(b, _)| b);
        if let Some(d) = digit(c) {
            out.text.push(d);
            out.from.push((at, end));
            // Skip a short run of separators followed by a digit.
            let run = chars[i + 1..]
                .iter()
                .take(MAX_RUN + 1)
                .take_while(|&&(_, s)| separator(s))
                .count();
            if run > 0
                && run <= MAX_RUN
                && chars
                    .get(i + 1 + run)
                    .is_some_and(|&(_, n)| digit(n).is_some())
            {
                i += 1 + run;
            } else {
                i += 1;
            }
            continue;
        }
        out.text.push(c);
        for _ in 0..c.len_utf8() {
            out.from.push((at, end));
        }
        i += 1;
    }
    Some(out)
}

/// Whether [`fold`] would change `text`: a full-width digit, or a separator run between digits.
fn needs_folding(text: &str) -> bool {
    let mut prev_digit = false;
    let mut run = 0;
    for c in text.chars() {
        if digit(c).is_some() {
            if c != digit(c).unwrap_or(c) || (prev_digit && run > 0 && run <= MAX_RUN) {
                return true;
            }
            prev_digit = true;
            run = 0;
        } else if separator(c) && prev_digit {
            run += 1;
        } else {
            prev_digit = false;
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(patterns: &[(&str, bool)], text: &str) -> Vec<(usize, usize, usize)> {
        let m = Matcher::new(patterns.iter().copied()).unwrap();
        let mut out = Vec::new();
        m.find(text, |s, e, p| out.push((s, e, p)));
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn digit_groups_map_back_to_the_text_as_written() {
        let acct = [("111111111111", true)];
        assert_eq!(found(&acct, "x 1111-1111-1111 y"), vec![(2, 16, 0)]);
        assert_eq!(found(&acct, "1111 1111 1111"), vec![(0, 14, 0)]);
        assert_eq!(found(&acct, "1111.1111_1111"), vec![(0, 14, 0)]);
        let dash = "1111\u{2013}1111\u{2013}1111";
        assert_eq!(found(&acct, dash), vec![(0, dash.len(), 0)]);
        assert_eq!(found(&acct, "1111 - 1111 - 1111"), vec![(0, 18, 0)]);
        let wide = "１１１１１１１１１１１１";
        assert_eq!(found(&acct, wide), vec![(0, wide.len(), 0)]);
    }

    #[test]
    fn noisy_spellings_are_not_folded() {
        let acct = [("111111111111", true)];
        assert!(found(&acct, "1111,1111,1111").is_empty());
        assert!(found(&acct, "1111:1111:1111").is_empty());
        assert!(found(&acct, "1111    1111    1111").is_empty());
        assert!(found(&acct, "1111\n1111\n1111").is_empty());
    }

    #[test]
    fn markers_match_in_any_letter_case_but_are_not_folded() {
        let ids = [("validation.asr.example.com", false), ("10.0.0.1", false)];
        assert_eq!(
            found(&ids, "https://API.VALIDATION.ASR.EXAMPLE.COM/v1"),
            vec![(12, 38, 0)]
        );
        assert!(found(&ids, "10001").is_empty());
    }

    #[test]
    fn a_long_pattern_builds_an_automaton_without_following_failure_chains() {
        // The structure, not a timing: a contiguous NFA is what `build` asks for.
        let long = "1".repeat(10_000);
        let m = Matcher::new([(long.as_str(), true)]).unwrap();
        assert_eq!(m.exact.kind(), AhoCorasickKind::ContiguousNFA);
        let text = format!("{}-{}", &long[..5_000], &long[5_000..]);
        let mut n = 0;
        m.find(&text, |_, _, _| n += 1);
        assert_eq!(n, 1);
    }
}
