//! envlock's own state on a `dir` target, against someone else who can write files: modes that
//! do not depend on the deployer's umask, and state that other users could change refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::{Repo, snapshot};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Under umask 000 the state is still 0755 / 0644 (0600 for secrets, tested in secrets.rs):
/// nobody but the deployer can write it, and services can read the resources.
#[test]
fn state_modes_do_not_depend_on_the_umask() {
    let repo = Repo::base();
    repo.deploy_umask(0o000, &["--target", "validation", "--yes"])
        .code(0);
    let t = repo.path().join("targets/validation");
    for (rel, want) in [
        ("", 0o755),
        (".envlock", 0o755),
        (".envlock/stamp.json", 0o644),
        (".envlock/log.jsonl", 0o644),
        (".envlock/lock", 0o644),
        ("generations", 0o755),
        ("generations/00000001", 0o755),
        ("generations/00000001/worker.toml", 0o644),
        ("generations/00000001/.meta.json", 0o644),
    ] {
        assert_eq!(mode(&t.join(rel)), want, "mode of {rel} (want {want:o})");
    }
    // umask 077 does not hide the resources from the services that read them.
    let text = repo.read("environments/validation.toml");
    repo.write("environments/validation.toml", text + "threads = 5\n");
    repo.commit("validation: 5 threads");
    repo.deploy_umask(0o077, &["--target", "validation", "--yes"])
        .code(0);
    assert_eq!(mode(&t.join("generations/00000002/worker.toml")), 0o644);
}

/// A state directory or file that every user may write, or that another user owns, is refused
/// (exit 3) with the command that fixes it, and nothing is written.
#[test]
fn state_that_others_can_write_is_refused() {
    let repo = Repo::base();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let t = repo.path().join("targets/validation");
    let refused = |path: &Path, says: &str, hint: &str| {
        let before = snapshot(&t);
        repo.deploy(&["--target", "validation", "--yes"])
            .code(3)
            .stderr_has(&path.display().to_string())
            .stderr_has(says)
            .stderr_has(hint);
        assert_eq!(snapshot(&t), before, "the target was written");
    };
    for rel in [
        "",
        ".envlock",
        "generations",
        ".envlock/log.jsonl",
        ".envlock/stamp.json",
    ] {
        let path = if rel.is_empty() {
            t.clone()
        } else {
            t.join(rel)
        };
        let old = mode(&path);
        set_mode(&path, old | 0o002);
        refused(&path, "is writable by every user", "hint: `chmod o-w");
        set_mode(&path, old);
    }
    // Another user's state (as root, which CI runs as, any owner can be made).
    if rustix_free_euid() == 0 {
        let state = t.join(".envlock");
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        refused(&state, "is owned by uid 65534", "chown -R 0");
        std::os::unix::fs::chown(&state, Some(0), None).unwrap();
    }
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
}

/// This process's effective uid, read from what it owns.
fn rustix_free_euid() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::metadata(dir.path()).unwrap().uid()
}
