//! Printer: the only place that writes to the terminal.
//!
//! Text output is for people; `--format json` prints exactly one JSON document on stdout.
//! Colour is used only on a terminal and never when `NO_COLOR` is set.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use crate::diagnostic::Diagnostic;
use crate::source::{Loc, Sources};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Writes command output (stdout) and messages for people (stderr).
pub struct Printer {
    pub format: Format,
    color_err: bool,
    color_out: bool,
    /// Secret values never to print (see [`Printer::redact`]), longest first.
    redacted: Mutex<Vec<String>>,
}

/// What a registered secret value is printed as.
const REDACTED: &str = "(secret)";
/// Shorter values are not redacted: they would mangle ordinary text and reveal nothing.
const REDACT_MIN_LEN: usize = 4;

/// ANSI styles used in text output.
pub mod style {
    use anstyle::{AnsiColor, Effects, Style};
    pub const ERROR: Style = AnsiColor::BrightRed.on_default().effects(Effects::BOLD);
    pub const WARN: Style = AnsiColor::Yellow.on_default().effects(Effects::BOLD);
    pub const OK: Style = AnsiColor::Green.on_default().effects(Effects::BOLD);
    pub const ADD: Style = AnsiColor::Green.on_default();
    pub const REMOVE: Style = AnsiColor::Red.on_default();
    pub const CHANGE: Style = AnsiColor::Yellow.on_default();
    pub const HINT: Style = AnsiColor::Cyan.on_default().effects(Effects::BOLD);
    pub const BOLD: Style = Style::new().effects(Effects::BOLD);
    pub const DIM: Style = Style::new().effects(Effects::DIMMED);
}

impl Printer {
    pub fn new(format: Format) -> Self {
        let no_color = crate::sysenv::no_color();
        Printer {
            format,
            color_err: !no_color && io::stderr().is_terminal(),
            color_out: !no_color && io::stdout().is_terminal(),
            redacted: Mutex::new(Vec::new()),
        }
    }

    /// Never print these values: every later output (stdout and stderr, text and JSON) shows
    /// `(secret)` instead. A safety net; diffs and messages mask secrets by construction.
    pub fn redact(&self, values: Vec<String>) {
        let mut list = self.redacted.lock().unwrap_or_else(|e| e.into_inner());
        list.extend(values.into_iter().filter(|v| v.len() >= REDACT_MIN_LEN));
        list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        list.dedup();
    }

    /// `text` with every registered value replaced.
    fn scrub<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let list = self.redacted.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::borrow::Cow::Borrowed(text);
        for v in list.iter() {
            if out.contains(v.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(v.as_str(), REDACTED));
            }
        }
        out
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Apply a style to text for stderr (no-op without colour).
    pub fn paint(&self, s: anstyle::Style, text: &str) -> String {
        if self.color_err {
            format!("{s}{text}{s:#}")
        } else {
            text.to_owned()
        }
    }

    /// Apply a style to text for stdout (no-op without colour).
    pub fn paint_out(&self, s: anstyle::Style, text: &str) -> String {
        if self.color_out {
            format!("{s}{text}{s:#}")
        } else {
            text.to_owned()
        }
    }

    /// Write the command's product to stdout. A closed pipe is reported as `BrokenPipe`.
    pub fn out(&self, text: &str) -> io::Result<()> {
        let text = self.scrub(text);
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Write one JSON document to stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> io::Result<()> {
        let mut value = serde_json::to_value(value).map_err(io::Error::other)?;
        // Scrub the strings, not the JSON text, whose escaping could hide a value.
        self.scrub_json(&mut value);
        let mut text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
        text.push('\n');
        self.out(&text)
    }

    fn scrub_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let std::borrow::Cow::Owned(clean) = self.scrub(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            serde_json::Value::Object(map) => {
                for (k, mut v) in std::mem::take(map) {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// A message for people, on stderr.
    pub fn err(&self, text: &str) {
        let text = self.scrub(text);
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }

    /// `error: message`, with detail lines and a hint.
    pub fn error(&self, message: &str, details: &[String], hint: Option<&str>) {
        let mut s = format!("{} {message}\n", self.paint(style::ERROR, "error:"));
        for d in details {
            s.push_str(&format!("  {d}\n"));
        }
        if let Some(h) = hint {
            s.push_str(&format!("{} {h}\n", self.paint(style::HINT, "hint:")));
        }
        self.err(&s);
    }

    /// Render diagnostics with the offending source lines, to stderr.
    pub fn diagnostics(&self, sources: &Sources, diags: &[Diagnostic]) {
        self.err(&render_diagnostics(sources, diags, self.color_err));
    }
}

/// The text [`Printer::diagnostics`] prints (also what the fuzz targets render).
pub fn render_diagnostics(sources: &Sources, diags: &[Diagnostic], color: bool) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut s = String::new();
    for d in diags {
        s.push_str(&render_diagnostic(&renderer, sources, d, color));
        s.push_str("\n\n");
    }
    s
}

/// The lines of a file that `span` covers, clipped to the first line, and the span rebased.
fn excerpt<'a>(text: &'a str, loc: &Loc) -> Option<(&'a str, usize, std::ops::Range<usize>)> {
    if text.is_empty() || loc.span == (0..0) {
        return None;
    }
    // Spans come from parsers and from arithmetic on them; never slice inside a character.
    let start = crate::source::floor_char(text, loc.span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..line_start].bytes().filter(|&b| b == b'\n').count() + 1;
    let end = crate::source::ceil_char(text, loc.span.end.clamp(start, line_end));
    let end = if end == start {
        // An empty span marks the whole character at its start (if any on this line).
        crate::source::ceil_char(text, (start + 1).min(line_end))
    } else {
        end
    };
    Some((
        &text[line_start..line_end],
        line_no,
        start - line_start..end - line_start,
    ))
}

fn render_diagnostic(
    renderer: &Renderer,
    sources: &Sources,
    d: &Diagnostic,
    color: bool,
) -> String {
    let has_snippet = d
        .primary
        .iter()
        .chain(d.secondary.iter())
        .any(|(loc, _)| excerpt(&sources.get(loc.file).text, loc).is_some());
    if !has_snippet {
        // A problem with a whole file: no source line to show, just where.
        let paint = |st: anstyle::Style, t: &str| {
            if color {
                format!("{st}{t}{st:#}")
            } else {
                t.to_owned()
            }
        };
        let mut s = format!(
            "{}{} {}",
            paint(style::ERROR, &format!("error[{}]:", d.code)),
            "",
            paint(style::BOLD, &d.message)
        );
        for (loc, label) in d.primary.iter().chain(d.secondary.iter()) {
            s.push_str(&format!("\n  --> {} ({label})", sources.get(loc.file).path));
        }
        if let Some(h) = &d.hint {
            s.push_str(&format!("\n   = {} {h}", paint(style::HINT, "help:")));
        }
        return s;
    }
    let title = Level::ERROR.primary_title(d.message.as_str()).id(d.code);
    let mut elements: Vec<annotate_snippets::Element> = Vec::new();
    let mut file_only = Vec::new();
    for (i, (loc, label)) in d.primary.iter().chain(d.secondary.iter()).enumerate() {
        let file = sources.get(loc.file);
        let kind = if i == 0 {
            AnnotationKind::Primary
        } else {
            AnnotationKind::Context
        };
        match excerpt(&file.text, loc) {
            Some((line, line_no, span)) => elements.push(
                Snippet::source(line)
                    .line_start(line_no)
                    .path(file.path.as_str())
                    .annotation(kind.span(span).label(label.as_str()))
                    .into(),
            ),
            None => file_only.push(format!("{}: {label}", file.path)),
        }
    }
    for f in &file_only {
        elements.push(Level::NOTE.message(format!("in {f}")).into());
    }
    if let Some(h) = &d.hint {
        elements.push(Level::HELP.message(h.as_str()).into());
    }
    let group: Group = title.elements(elements);
    renderer.render(&[group])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_scrubbed_from_text_and_json_strings() {
        let p = Printer::new(Format::Json);
        p.redact(vec!["s3cret-value".into(), "abc".into(), "s3cret".into()]);
        assert_eq!(
            p.scrub("x=s3cret-value; y=s3cret; abc"),
            "x=(secret); y=(secret); abc"
        );
        let mut v = serde_json::json!({"a": ["s3cret-value\"q"], "s3cret": 1, "b": 2});
        p.scrub_json(&mut v);
        assert_eq!(v.to_string(), r#"{"a":["(secret)\"q"],"(secret)":1,"b":2}"#);
    }
}
