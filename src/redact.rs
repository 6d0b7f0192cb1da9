//! The one redaction net every byte leaving the process passes through: once a secret value
//! has been read, stdout, stderr (`output::Printer`), the notifier's event
//! (`deploy::Deployment::notify`), the deployment log (`log::append`), saved plans
//! (`deploy::saved::SavedPlan::seal`) and provider requests other than `apply`
//! (`target::exec::provider`) show `(secret)` in its place.
//!
//! Process-wide because a secret is: once read, no exit may carry it, whichever module writes.
//! Diffs and messages mask secrets by construction; this catches what construction missed (a
//! health check that prints a secret, a plain setting that happens to hold the same value).

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a registered secret value is replaced with.
pub const REDACTED: &str = "(secret)";
/// Shorter values are not redacted: they would mangle ordinary text and reveal nothing.
pub const MIN_LEN: usize = 4;

/// The values never to let out, longest first (so a value containing another goes whole).
static VALUES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Never let these values out again (values shorter than [`MIN_LEN`] are ignored).
pub fn register(values: Vec<String>) {
    let mut list = VALUES.write().unwrap_or_else(PoisonError::into_inner);
    list.extend(values.into_iter().filter(|v| v.len() >= MIN_LEN));
    list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    list.dedup();
}

/// True when nothing is registered (the common case: no secrets), so callers can skip work.
pub fn is_empty() -> bool {
    VALUES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
}

/// `text` with every registered value replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let list = VALUES.read().unwrap_or_else(PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for v in list.iter() {
        if out.contains(v.as_str()) {
            out = Cow::Owned(out.replace(v.as_str(), REDACTED));
        }
    }
    out
}

/// Scrub every string (and object key) of a JSON value in place: the strings, not the JSON
/// text, whose escaping could hide a value.
pub fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(clean) = scrub(s) {
                *s = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(map) => {
            for (k, mut v) in std::mem::take(map) {
                scrub_json(&mut v);
                map.insert(scrub(&k).into_owned(), v);
            }
        }
        _ => {}
    }
}

/// `value` with every string it serializes scrubbed (a round trip through JSON; `value`
/// itself when nothing is registered or nothing changed).
pub fn scrubbed<T: Serialize + DeserializeOwned>(value: T) -> T {
    if is_empty() {
        return value;
    }
    let Ok(mut json) = serde_json::to_value(&value) else {
        return value;
    };
    let before = json.clone();
    scrub_json(&mut json);
    if json == before {
        return value;
    }
    serde_json::from_value(json).unwrap_or(value)
}

/// The JSON bytes of `value` with every string scrubbed.
pub fn to_json_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut json = serde_json::to_value(value)?;
    scrub_json(&mut json);
    serde_json::to_vec(&json)
}
