//! `[notify] url`: the deployment's side of [`crate::page`]. Every log record is preceded by its
//! notification, so the record says whether it was delivered (`notify`); a failure that leaves no
//! record (refused before the target was proven) is delivered when the command ends, unless
//! this run's last notification already told of trouble. Nothing here changes an outcome.

use std::sync::atomic::Ordering;

use super::Deployment;
use crate::error::Failure;
use crate::log::{Entry, Notified, Operator};
use crate::page::{self, Happening};
use crate::progress as progress_mod;

impl Deployment<'_> {
    /// Read `[notify] token` (registered for scrubbing): `Ok(None)` without one; the error names
    /// the reference and says what to do, never the value.
    pub fn page_token(&self) -> Result<Option<String>, Failure> {
        let Some(r) = self
            .env
            .notify
            .as_ref()
            .and_then(|n| n.page.as_ref())
            .and_then(|p| p.token.as_ref())
        else {
            return Ok(None);
        };
        let value = crate::secret::read(r, &self.root).map_err(|(why, hint)| {
            Failure::refused(format!(
                "refusing to deploy {}: the [notify] token `{}` (written at {}) cannot be read: {why}",
                self.who(),
                r.text,
                r.at
            ))
            .hint(format!(
                "{hint}; without it a failure would page nobody, so nothing was written"
            ))
        })?;
        if let Some(why) = token_problem(&value) {
            return Err(Failure::refused(format!(
                "refusing to deploy {}: the [notify] token `{}` (written at {}) {why}",
                self.who(),
                r.text,
                r.at
            ))
            .hint(
                "set it to the routing key or token itself; without a usable one a failure \
                 would page nobody, so nothing was written",
            ));
        }
        crate::redact::register(vec![value.clone()]);
        Ok(Some(value))
    }

    /// Deliver the notification of the record `entry` will be, and note the result in it.
    pub fn page(&self, mut entry: Entry) -> Entry {
        if !self.pages {
            return entry;
        }
        let h = Happening {
            environment: entry.environment.clone(),
            account: entry.account.clone(),
            // As configured (not as resolved): the same in every run, so is the key built on it.
            target: self.env.target_label(),
            protected: self.env.protected,
            action: entry.action.as_str().to_owned(),
            outcome: entry.outcome.as_str().to_owned(),
            commit: entry.commit.clone(),
            reason: entry.reason.clone(),
            generation: entry.generation,
            operator: entry.operator.display(),
            time: std::time::SystemTime::now(),
        };
        entry.notify = self.deliver_page(&h);
        entry
    }

    /// At the end of a command that failed: deliver the failure unless the last notification of
    /// this run already told of trouble (a recorded failure, refusal or rollback). A failure
    /// after a recorded success (the record of a healthy apply could not be written) is sent.
    pub fn page_unrecorded(&self, action: &str, outcome: &str, reason: &str) {
        if self.paged.load(Ordering::Relaxed) {
            return;
        }
        let h = Happening {
            environment: self.env.name.clone(),
            account: self.env.account.value.clone(),
            target: self.env.target_label(),
            protected: self.env.protected,
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            commit: self.commit.id.to_string(),
            reason: Some(reason.to_owned()),
            generation: None,
            operator: Operator::current().display(),
            time: std::time::SystemTime::now(),
        };
        self.deliver_page(&h);
    }

    /// Send `h` to `[notify] url` and say on stderr what became of it: loudly when it failed.
    fn deliver_page(&self, h: &Happening) -> Option<Notified> {
        let notify = self.env.notify.as_ref()?;
        let page = notify.page.as_ref()?;
        // What the command's end needs to know: whether on-call last heard of trouble.
        self.paged.store(h.severity().is_some(), Ordering::Relaxed);
        let shown = page::shown_url(&page.url.value).to_owned();
        let format = page.format.as_str();
        let token = match self.page_token() {
            Ok(t) => t,
            Err(f) => {
                return Some(self.page_failed(format, &shown, 0, f.message));
            }
        };
        let h = h.clone().scrubbed();
        let requests = page::requests(page, &h, token.as_deref());
        if requests.is_empty() {
            return None;
        }
        let task = self.wait_task(format!("{format} at {shown}"), Some(notify.timeout));
        let result = progress_mod::during(self.progress, task, || {
            page::deliver(page, token.as_deref(), &requests, notify.timeout)
        });
        if result.delivered {
            let what = match h.severity() {
                Some(s) => format!("{}, {}", h.outcome, s.as_str()),
                None => h.outcome.clone(),
            };
            self.say(&format!("notified: {format} at {shown} ({what})"));
            return Some(result);
        }
        let why = result.error.clone().unwrap_or_default();
        Some(self.page_failed(format, &shown, result.attempts, why))
    }

    fn page_failed(&self, format: &str, shown: &str, attempts: u32, why: String) -> Notified {
        self.warn(&format!(
            "{} the {format} notification to {shown} failed ({attempts} attempt{}), so nobody may have been paged: {why}",
            self.printer.paint(crate::output::style::ERROR, "NOT DELIVERED:"),
            if attempts == 1 { "" } else { "s" },
        ));
        Notified {
            format: format.to_owned(),
            delivered: false,
            attempts,
            error: Some(crate::redact::scrub(&why).into_owned()),
        }
    }
}

/// Why a token read from its reference cannot be used, if it cannot: an empty one is refused
/// by every receiver; one shorter than [`crate::redact::MIN_LEN`] could not be masked in what
/// envlock prints; whitespace or a control character makes no valid HTTP header, and is most
/// often a stray newline. Never quotes the value.
fn token_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".into());
    }
    if value.len() < crate::redact::MIN_LEN {
        return Some(format!(
            "is shorter than {} bytes, too short to be a real key (and to be masked)",
            crate::redact::MIN_LEN
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("holds whitespace or a control character (a stray newline?)".into());
    }
    None
}
