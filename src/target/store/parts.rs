//! Values larger than one backend item (an undo journal of thousands of resources, a large
//! generation) are stored in parts: the parts first, each under a key named by the value's
//! SHA-256 (`parts/<key>/<sha256>/<n>`, so writing them again is harmless and they never
//! overwrite the parts of the value that is live), then the item itself, by the same
//! compare-and-swap as any write, as a small header naming them. The header is the commit
//! point: a reader sees the old value or the new one, never a mix. Parts no header names any
//! more are deleted afterwards.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::backend::{Backend, Expect, Item, MAX_WRITES, PutError, Write};
use crate::target::TargetError;

/// The member that marks a header.
const MARK: &str = "envlock-parts";
/// Keys whose values may be large; other items (stamp, live, log records) are never split,
/// and their writes cost no extra read.
const LARGE: [&str; 3] = ["journal", "blob/", "generation/"];
/// The most parts one value may have (at 346 KB a part, about 35 GB).
const MAX_PARTS: usize = 100_000;
/// Parts read per request.
const PARTS_PER_GET: usize = 8;

/// The most bytes of a value one part holds.
fn part_size(backend: &dyn Backend) -> usize {
    backend.max_value().saturating_sub(4096).max(1024)
}

fn may_be_large(key: &str) -> bool {
    LARGE.iter().any(|p| key.starts_with(p))
}

fn part_key(key: &str, sha: &str, n: usize) -> String {
    format!("parts/{key}/{sha}/{n:06}")
}

/// The parts a header names (`None`: the value is not a header).
fn header_parts(key: &str, value: &str) -> Option<(String, Vec<String>)> {
    if !value.starts_with("{\"envlock-parts\"") {
        return None;
    }
    let v: Value = serde_json::from_str(value).ok()?;
    let n = usize::try_from(v.get(MARK)?.as_u64()?).ok()?;
    // A header names at most what a value of its `bytes` needs: a forged count of parts never
    // makes envlock allocate in proportion to it.
    let bytes = usize::try_from(v.get("bytes")?.as_u64()?).ok()?;
    if n == 0 || n > bytes || n > MAX_PARTS {
        return None;
    }
    let sha = v.get("sha256")?.as_str()?.to_owned();
    let keys = (0..n).map(|i| part_key(key, &sha, i)).collect();
    Some((sha, keys))
}

/// Split `value` at character boundaries into parts of at most `size` bytes.
fn split(value: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = rest.len().min(size);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // A part smaller than one character: the character alone.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

/// An atomic put of `writes` in which any value too large for one item goes in parts.
pub fn put(
    backend: &dyn Backend,
    writes: &[Write],
    fence: Option<&str>,
) -> Result<BTreeMap<String, String>, PutError> {
    let size = part_size(backend);
    let per_put = (backend.max_put() / size).clamp(1, MAX_WRITES);
    let large: Vec<&str> = writes
        .iter()
        .map(|w| w.key.as_str())
        .filter(|k| may_be_large(k))
        .collect();
    if large.is_empty() {
        return backend.put(writes, fence);
    }
    // The parts the values being replaced use, to delete once nothing names them.
    let old: Vec<String> = backend
        .get(&large)?
        .into_iter()
        .zip(&large)
        .filter_map(|(item, key)| header_parts(key, &item?.value).map(|(_, parts)| parts))
        .flatten()
        .collect();
    let mut main = Vec::with_capacity(writes.len());
    let mut kept = BTreeSet::new();
    for w in writes {
        match &w.value {
            Some(value) if value.len() > size => {
                let sha = crate::target::sha256_hex(value.as_bytes());
                let parts = split(value, size);
                let part_writes: Vec<Write> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Write::put(part_key(&w.key, &sha, i), *p, Expect::Any))
                    .collect();
                for chunk in part_writes.chunks(per_put) {
                    backend.put(chunk, fence)?;
                }
                kept.extend(part_writes.into_iter().map(|p| p.key));
                // The mark first: a reader tells a header by its first bytes.
                let header = format!(
                    "{{\"{MARK}\":{},\"sha256\":\"{sha}\",\"bytes\":{}}}",
                    parts.len(),
                    value.len()
                );
                main.push(Write::put(w.key.clone(), header, w.expect.clone()));
            }
            _ => main.push(w.clone()),
        }
    }
    let versions = backend.put(&main, fence)?;
    // Best effort: a part left behind is only space, never read.
    let stale: Vec<Write> = old
        .into_iter()
        .filter(|k| !kept.contains(k))
        .map(|k| Write::delete(k, Expect::Any))
        .collect();
    for chunk in stale.chunks(MAX_WRITES) {
        let _ = backend.put(chunk, fence);
    }
    Ok(versions)
}

/// `item` as written: a header is replaced by the value its parts hold (checked against its
/// SHA-256).
pub fn expand(backend: &dyn Backend, key: &str, item: Item) -> Result<Item, TargetError> {
    let Some((sha, keys)) = header_parts(key, &item.value) else {
        return Ok(item);
    };
    let mut value = String::new();
    for chunk in keys.chunks(PARTS_PER_GET) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (k, part) in chunk.iter().zip(backend.get(&refs)?) {
            let part = part.ok_or_else(|| {
                TargetError::Corrupt(format!(
                    "envlock's state item `{key}` names its part `{k}`, which does not exist"
                ))
            })?;
            value.push_str(&part.value);
        }
    }
    if crate::target::sha256_hex(value.as_bytes()) != sha {
        return Err(TargetError::Corrupt(format!(
            "envlock's state item `{key}`: its parts do not add up to the value it names (SHA-256 differs)"
        )));
    }
    Ok(Item {
        value,
        version: item.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_characters_whole_and_joins_back() {
        let value = "aé€𝄞".repeat(100);
        for size in [1, 2, 3, 5, 7, 64] {
            let parts = split(&value, size);
            assert!(parts.iter().all(|p| p.len() <= size.max(4)));
            assert_eq!(parts.concat(), value);
        }
    }

    #[test]
    fn only_a_header_names_parts() {
        assert!(header_parts("journal", "{\"steps\": []}").is_none());
        let (sha, keys) = header_parts(
            "journal",
            "{\"envlock-parts\":2,\"sha256\":\"ab\",\"bytes\":9}",
        )
        .unwrap();
        assert_eq!(sha, "ab");
        assert_eq!(keys, ["parts/journal/ab/000000", "parts/journal/ab/000001"]);
        // A forged count of parts is no header: nothing is allocated in proportion to it.
        let forged = "{\"envlock-parts\":18446744073709551615,\"sha256\":\"ab\",\"bytes\":9}";
        assert!(header_parts("journal", forged).is_none());
    }
}
