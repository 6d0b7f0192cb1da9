//! Where a `dir` target's path (or an `exec` target's state) really leads on this machine.
//!
//! A symlink in an intermediate directory is followed by every system call, so the lexical path
//! the configuration names is not where writes land: `links/x/b` with a committed
//! `links/x -> ../targets/a/current` is inside `a`'s live generation. A legitimate symlink
//! (`/srv -> /data/srv` on an operator's machine) is allowed; the target is opened at its
//! resolved path, and that path is refused (exit 3) when it lies inside an envlock target (an
//! ancestor holds `.envlock/`: another environment's target or generation) or when it is, holds
//! or lies inside another environment's resolved target.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::TargetError;

/// `path` with every symlink of its parent directories resolved (the last component is left
/// alone: a target path that is itself a symlink is refused where the target is opened). The
/// part that does not exist yet is appended as written; a dangling symlink on the way is refused.
pub fn real_path(path: &Path) -> Result<PathBuf, TargetError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path.to_path_buf());
    };
    let mut existing = parent.to_path_buf();
    let mut missing = Vec::new();
    loop {
        match fs::canonicalize(&existing) {
            Ok(mut real) => {
                real.extend(missing.iter().rev());
                real.push(name);
                return Ok(real);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(&existing).is_ok() {
                    return Err(TargetError::Refused(format!(
                        "{} is a symlink that leads nowhere, on the way to the target path {}",
                        existing.display(),
                        path.display()
                    )));
                }
                let Some(last) = existing.file_name().map(ToOwned::to_owned) else {
                    return Ok(path.to_path_buf());
                };
                missing.push(last);
                existing.pop();
            }
            Err(e) => {
                return Err(TargetError::Io {
                    what: "resolve".into(),
                    path: existing,
                    source: e,
                });
            }
        }
    }
}

/// Refuse a resolved target path that lies inside an envlock target: a proper ancestor of it
/// holds `.envlock/` (another target, or one of its generations).
pub fn refuse_inside_a_target(path: &Path, real: &Path) -> Result<(), TargetError> {
    for ancestor in real.ancestors().skip(1) {
        if fs::symlink_metadata(ancestor.join(".envlock")).is_ok() {
            return Err(TargetError::Refused(format!(
                "the target path {} leads to {}, inside the envlock target {}: following it \
                 would write this environment's state into another target (or its generation)",
                path.display(),
                real.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// How two resolved target paths overlap: the same directory, or one inside the other.
pub fn overlap(a: &Path, b: &Path) -> Option<&'static str> {
    if a == b {
        Some("is the same directory as")
    } else if a.starts_with(b) {
        Some("lies inside")
    } else if b.starts_with(a) {
        Some("contains")
    } else {
        None
    }
}
