//! Printer: the only place that writes to the terminal.
//!
//! Text output is for people; `--format json` prints exactly one JSON document on stdout.
//! Colour is used only on a terminal and never when `NO_COLOR` is set.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::diagnostic::Diagnostic;
use crate::progress::{self, Progress, Task};
use crate::source::{Loc, Sources};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// SARIF 2.1.0 on stdout (`check`); messages for people on stderr as in text mode.
    Sarif,
    /// A markdown document on stdout (`diff`, `plan`); messages on stderr as in text mode.
    Markdown,
    /// A CSV document on stdout (`log`); messages on stderr as in text mode.
    Csv,
    /// One HTML page on stdout (`log`); messages on stderr as in text mode.
    Html,
}

/// Writes command output (stdout) and messages for people (stderr).
pub struct Printer {
    pub format: Format,
    color_err: bool,
    color_out: bool,
    /// Set when a write to stdout found its reader gone (see [`Printer::out`]).
    stdout_closed: AtomicBool,
    /// A spinner on a terminal, plain lines otherwise (see [`crate::progress::Progress`]).
    progress: Mutex<Option<Shown>>,
    /// Whether progress is drawn as a spinner: stderr is a terminal and the format is text.
    spinner: bool,
}

/// The long wait being shown.
struct Shown {
    task: Task,
    bar: Option<ProgressBar>,
    /// Plain mode, a wait without attempts: a thread that says "still waiting" now and then.
    ticker: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// Plain mode: the first "still waiting" line after this long, then one every `TICK_EVERY`.
const TICK_FIRST: Duration = Duration::from_secs(5);
const TICK_EVERY: Duration = Duration::from_secs(15);
/// On a terminal, a single wait's spinner appears after this long.
const SPINNER_DELAY: Duration = Duration::from_millis(300);

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
            stdout_closed: AtomicBool::new(false),
            progress: Mutex::new(None),
            spinner: format == Format::Text && io::stderr().is_terminal(),
        }
    }

    /// Never print these values: every later output (stdout and stderr, text and JSON), and
    /// every other exit of the process, shows `(secret)` instead ([`crate::redact`]). A safety
    /// net; diffs and messages mask secrets by construction.
    pub fn redact(&self, values: Vec<String>) {
        crate::redact::register(values);
    }

    /// `text` with every registered value replaced.
    fn scrub<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        crate::redact::scrub(text)
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// True for text output, the default: the commands' own stdout for people.
    pub fn is_text(&self) -> bool {
        self.format == Format::Text
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

    /// The width of the terminal stdout is, in columns; `None` when stdout is not a terminal
    /// (or the terminal does not say), where nothing should be cut to fit.
    pub fn out_width(&self) -> Option<usize> {
        let stdout = io::stdout();
        if self.format != Format::Text || !stdout.is_terminal() {
            return None;
        }
        let size = rustix::termios::tcgetwinsize(&stdout).ok()?;
        (size.ws_col > 0).then_some(usize::from(size.ws_col))
    }

    /// Write the command's product to stdout. A closed pipe is reported as `BrokenPipe` once;
    /// after that stdout is gone and later writes do nothing (a deployment that goes on
    /// without its reader reports on stderr and by its exit code).
    pub fn out(&self, text: &str) -> io::Result<()> {
        if self.stdout_closed() {
            return Ok(());
        }
        let text = self.scrub(text);
        let mut out = io::stdout().lock();
        let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        if let Err(e) = &written
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.stdout_closed.store(true, Ordering::Relaxed);
        }
        written
    }

    /// True once a write found stdout's reader gone (`| head` exited, a pager was quit).
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed.load(Ordering::Relaxed)
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
        crate::redact::scrub_json(value);
    }

    /// A message for people, on stderr (above a spinner, if one is shown).
    pub fn err(&self, text: &str) {
        let text = self.scrub(text);
        let write = || {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        };
        let shown = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        match shown.as_ref().and_then(|s| s.bar.as_ref()) {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// One plain progress line on stderr (no spinner: logs, JSON mode).
    fn progress_line(&self, text: &str) {
        let text = self.scrub(text);
        let _ = io::stderr()
            .lock()
            .write_all(format!("{text}\n").as_bytes());
    }

    /// A spinner line cut to the terminal's width. A single wait appears only once it has
    /// lasted [`SPINNER_DELAY`] (most are over at once); attempts show at once.
    fn spinner_for(&self, task: &Task) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(self.scrub(&waiting_line(task, Duration::ZERO)).into_owned());
        if task.attempts > 0 {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// Show a hidden spinner after [`SPINNER_DELAY`], unless told to stop first.
    fn reveal_later(bar: &ProgressBar) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (stop, stopped) = mpsc::channel::<()>();
        let bar = bar.clone();
        let handle = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SPINNER_DELAY) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        });
        (stop, handle)
    }

    /// Plain mode: say "still waiting" after [`TICK_FIRST`], then every [`TICK_EVERY`], until
    /// told to stop.
    fn ticker_for(&self, task: &Task) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (stop, stopped) = mpsc::channel::<()>();
        let task = task.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut wait = TICK_FIRST;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                let line = format!("still {}", waiting_line(&task, started.elapsed()));
                let line = crate::redact::scrub(&line);
                let _ = io::stderr()
                    .lock()
                    .write_all(format!("{line}\n").as_bytes());
                wait = TICK_EVERY;
            }
        });
        (stop, handle)
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

/// `waiting for X (12s so far, up to 1m left); Ctrl-C …: `command``
fn waiting_line(task: &Task, elapsed: Duration) -> String {
    let mut line = format!("waiting for {}", task.what);
    let mut when = Vec::new();
    if !elapsed.is_zero() {
        when.push(format!("{} so far", progress::short(elapsed)));
    }
    if let Some(limit) = task.limit {
        when.push(format!(
            "up to {} left",
            progress::short(limit.saturating_sub(elapsed))
        ));
    }
    if !when.is_empty() {
        line.push_str(&format!(" ({})", when.join(", ")));
    }
    with_tail(line, task)
}

/// `health check of generation 3: attempt 2 of 4, up to 1m8s left; Ctrl-C … (attempt 1:
/// exited with status 1): command`, most important first (a narrow terminal cuts the end)
fn attempt_line(task: &Task, n: u32, left: Duration, previous: Option<&str>) -> String {
    let mut line = format!(
        "{}: attempt {n} of {}, up to {} left",
        task.what,
        task.attempts,
        progress::short(left)
    );
    if !task.ctrl_c.is_empty() {
        line.push_str(&format!("; {}", task.ctrl_c));
    }
    if let Some(p) = previous {
        line.push_str(&format!(" (attempt {}: {p})", n.saturating_sub(1)));
    }
    if let Some(d) = &task.detail {
        line.push_str(&format!(": {d}"));
    }
    line
}

/// What Ctrl-C does, then the detail (the command), which a narrow terminal may cut.
fn with_tail(mut line: String, task: &Task) -> String {
    if !task.ctrl_c.is_empty() {
        line.push_str(&format!("; {}", task.ctrl_c));
    }
    if let Some(d) = &task.detail {
        line.push_str(&format!(": {d}"));
    }
    line
}

impl Progress for Printer {
    fn start(&self, task: Task) {
        self.finish();
        let (bar, ticker) = if self.spinner {
            let bar = self.spinner_for(&task);
            let ticker = (task.attempts == 0).then(|| Self::reveal_later(&bar));
            (Some(bar), ticker)
        } else if task.attempts == 0 {
            (None, Some(self.ticker_for(&task)))
        } else {
            (None, None)
        };
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Shown { task, bar, ticker });
    }

    fn attempt(&self, n: u32, left: Duration, previous: Option<&str>) {
        let shown = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let Some(shown) = shown.as_ref() else {
            return;
        };
        let line = attempt_line(&shown.task, n, left, previous);
        match &shown.bar {
            Some(bar) => bar.set_message(self.scrub(&line).into_owned()),
            None => self.progress_line(&line),
        }
    }

    fn finish(&self) {
        let shown = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(shown) = shown else {
            return;
        };
        if let Some((stop, handle)) = shown.ticker {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(bar) = shown.bar {
            bar.finish_and_clear();
        }
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

/// `line` with the text at `span` replaced by a mask of the same width, at most 8 stars: what a
/// concealed diagnostic shows instead of a credential written in clear.
fn mask(
    line: &str,
    span: std::ops::Range<usize>,
) -> (std::borrow::Cow<'_, str>, std::ops::Range<usize>) {
    let stars = "*".repeat(line[span.clone()].chars().count().clamp(1, 8));
    let masked = format!("{}{stars}{}", &line[..span.start], &line[span.end..]);
    (masked.into(), span.start..span.start + stars.len())
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
            Some((line, line_no, span)) => {
                let (line, span) = if i == 0 && d.conceal {
                    mask(line, span)
                } else {
                    (std::borrow::Cow::Borrowed(line), span)
                };
                elements.push(
                    Snippet::source(line)
                        .line_start(line_no)
                        .path(file.path.as_str())
                        .annotation(kind.span(span).label(label.as_str()))
                        .into(),
                )
            }
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
