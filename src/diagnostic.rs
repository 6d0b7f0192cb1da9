//! Problems found in a configuration repository, each pointing at the source that causes it.

use serde::Serialize;

use crate::source::{Loc, Sources};

/// What kind of problem a diagnostic reports.
///
/// `Safety` problems are the environment lock itself (a foreign account, a shared target...):
/// commands that act on a target refuse them with exit 3. Everything else is `Config` (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Config,
    Safety,
}

/// One problem in the configuration.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable identifier, e.g. `foreign-account`.
    pub code: &'static str,
    pub class: Class,
    /// The environment (or layer) the problem belongs to, when there is one.
    pub environment: Option<String>,
    /// One sentence: what is wrong.
    pub message: String,
    /// Where, and a short label shown under the source line.
    pub primary: Option<(Loc, String)>,
    /// Other places worth showing (where a clashing value is defined...).
    pub secondary: Vec<(Loc, String)>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The same problem told from the other file's side (a clash between two files): shown
    /// instead when only that file changed in the commit (see [`prefer_changed`]).
    pub other_side: Option<Box<Diagnostic>>,
    /// The primary location's text may be a credential: the source line is shown with it
    /// masked (see [`Diagnostic::concealed`]).
    pub conceal: bool,
}

impl Diagnostic {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            class: Class::Config,
            environment: None,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            hint: None,
            other_side: None,
            conceal: false,
        }
    }

    /// Mask the primary location's text when the source line is shown: it may be a secret
    /// written in clear (a token, a password), which no message may repeat.
    pub fn concealed(mut self) -> Self {
        self.conceal = true;
        self
    }

    pub fn safety(mut self) -> Self {
        self.class = Class::Safety;
        self
    }

    pub fn env(mut self, name: impl Into<String>) -> Self {
        self.environment = Some(name.into());
        self
    }

    pub fn at(mut self, loc: Loc, label: impl Into<String>) -> Self {
        self.primary = Some((loc, label.into()));
        self
    }

    pub fn also(mut self, loc: Loc, label: impl Into<String>) -> Self {
        self.secondary.push((loc, label.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The JSON form, with the location resolved to file, line and column.
    pub fn to_json(&self, sources: &Sources) -> DiagnosticJson {
        let (file, line, column) = match &self.primary {
            Some((loc, _)) => {
                let (l, c) = sources.line_col(loc);
                (Some(sources.get(loc.file).path.clone()), Some(l), Some(c))
            }
            None => (None, None, None),
        };
        DiagnosticJson {
            code: self.code,
            class: self.class,
            environment: self.environment.clone(),
            message: self.message.clone(),
            file,
            line,
            column,
            label: self.primary.as_ref().map(|(_, l)| l.clone()),
            hint: self.hint.clone(),
        }
    }
}

/// A diagnostic as it appears in `--format json` output.
#[derive(Debug, Serialize)]
pub struct DiagnosticJson {
    pub code: &'static str,
    pub class: Class,
    pub environment: Option<String>,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub label: Option<String>,
    pub hint: Option<String>,
}

/// Tell each clash between two files from the side of the file the commit changed: when
/// `changed(file)` holds for the other side's primary file and not for this one's, the other
/// side replaces it (a new environment copying a target is blamed, not the one it copied).
pub fn prefer_changed(diags: &mut [Diagnostic], sources: &Sources, changed: &dyn Fn(&str) -> bool) {
    let file_changed = |d: &Diagnostic| {
        d.primary
            .as_ref()
            .is_some_and(|(loc, _)| changed(&sources.get(loc.file).path))
    };
    for d in diags.iter_mut() {
        let Some(other) = d.other_side.take() else {
            continue;
        };
        if file_changed(&other) && !file_changed(d) {
            *d = *other;
        } else {
            d.other_side = Some(other);
        }
    }
}
