//! Error kinds and the exit codes of SPEC section 2.

use std::fmt;

/// The process exit codes that are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Error = 1,
    ChangesPending = 2,
    Refused = 3,
    RolledBack = 4,
    Locked = 5,
    Usage = 64,
}

/// A failure that carries its exit code, detail lines and a hint for the user.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    /// Extra lines shown under the message (the files that are dirty, what a command printed...).
    pub details: Vec<String>,
    pub hint: Option<String>,
    /// True when the command already printed its `--format json` document.
    pub json_printed: bool,
    /// False for an operator's own decision (a declined prompt, a missing `--yes`), which the
    /// environment's `[notify] command` is not told about.
    pub notify: bool,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            details: Vec::new(),
            hint: None,
            json_printed: false,
            notify: true,
        }
    }

    /// A refusal for safety: exit 3, the target is untouched.
    pub fn refused(message: impl Into<String>) -> Self {
        Failure::new(Exit::Refused, message)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Failure::new(Exit::Error, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }

    pub fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Not a failure of the deployment but the operator's choice: nobody is notified.
    pub fn not_notified(mut self) -> Self {
        self.notify = false;
        self
    }

    /// Mark that stdout already holds the command's JSON document.
    pub fn json_printed(mut self, printed: bool) -> Self {
        self.json_printed = printed;
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error: the first [`Failure`] in its chain decides, otherwise 1.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>().map(|f| f.exit))
        .unwrap_or(Exit::Error)
}
