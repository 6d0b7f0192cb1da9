//! Who may write envlock's own state on this machine.
//!
//! Invariants: every file and directory envlock creates has exactly the mode it asks for
//! ([`fix_umask`]: directories 0755, files 0644, secret files 0600), whatever umask the deployer
//! has; a state directory or file that every user may write is refused before it is read, and
//! one that a user other than this one and root owns before it is written (the stamp, the lock
//! and the log are only as trustworthy as the permissions that protect them).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::Mode;

use super::TargetError;

/// The umask envlock runs with: nothing it creates is writable by group or others.
const UMASK: u32 = 0o022;

/// Set the process umask to [`UMASK`], so that the modes envlock asks for are the modes it
/// gets (a deployer's umask 000 would otherwise make the state world-writable, and umask 077
/// would hide the resource files from the services that read them). Called once at start.
pub fn fix_umask() {
    rustix::process::umask(Mode::from_raw_mode(UMASK));
}

/// Refuse `path` (already `lstat`ed as `meta`, not a symlink) when a user other than this one
/// or root owns it. Checked before envlock writes (taking the lock): reading another user's
/// target (an auditor's `deploy log`) is fine, but root or anyone else must not write into
/// state a third user controls.
pub fn check_owner(path: &Path, meta: &Metadata) -> Result<(), TargetError> {
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    if owner == me || owner == 0 {
        return Ok(());
    }
    Err(TargetError::Insecure {
        message: format!(
            "{} is owned by uid {owner}, not by this user (uid {me}) or root: whoever owns it \
             can rewrite this target's stamp, lock and log",
            path.display()
        ),
        hint: format!(
            "deploy as the user that owns the target, or, if this user should own it, \
             `chown -R {me} {}`; nothing was written",
            path.display()
        ),
    })
}

/// Refuse `path` (already `lstat`ed as `meta`, not a symlink) when every user may write it.
pub fn check_mode(path: &Path, meta: &Metadata) -> Result<(), TargetError> {
    if meta.mode() & 0o002 == 0 {
        return Ok(());
    }
    Err(TargetError::Insecure {
        message: format!(
            "{} is writable by every user (mode {:04o}): anyone could rewrite this target's \
             stamp, lock and log",
            path.display(),
            meta.mode() & 0o7777
        ),
        hint: format!(
            "`chmod o-w {}` (envlock creates its state 0755 / 0644); nothing was read or written",
            path.display()
        ),
    })
}
