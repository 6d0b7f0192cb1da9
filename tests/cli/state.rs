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

const PROD: &str = "environments/prod.toml";

/// prod's `path` set to `path` (line 11, column 8 of prod.toml), committed.
fn set_prod_path(repo: &Repo, path: &str) {
    let text = repo.read(PROD);
    let old = text
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap()
        .to_owned();
    repo.edit(PROD, &[(old.as_str(), &format!("path = \"{path}\""))]);
    repo.commit("prod: another path");
}

/// A committed `links/x -> ../targets/validation/current` would make `prod` (at `links/x/b`)
/// write its state into validation's live generation: `check` reports it where `path` is
/// written, and the deployment is refused with validation's target untouched.
#[test]
fn a_target_path_through_a_committed_symlink_is_refused() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    std::fs::create_dir_all(repo.path().join("links")).unwrap();
    std::os::unix::fs::symlink("../targets/validation/current", repo.path().join("links/x"))
        .unwrap();
    repo.git(&["add", "links/x"]);
    set_prod_path(&repo, "links/x/b");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("environments/prod.toml:11:8")
        .stderr_has("goes through `links/x`, a symlink committed in the repository")
        .stderr_has("help: a target path must be made of real directories");
    let validation = repo.path().join("targets/validation");
    let before = snapshot(&validation);
    repo.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has("goes through `links/x`");
    assert_eq!(
        snapshot(&validation),
        before,
        "validation's target was written"
    );
}

/// The same through a symlink that is not in the repository (on this machine only): refused
/// when the target is opened, whether the other target exists yet or not, and whether it is
/// this repository's or another's.
#[test]
fn a_target_path_through_a_local_symlink_into_another_target_is_refused() {
    let repo = Repo::ungated();
    let other = Repo::ungated();
    other.deploy(&["--target", "validation", "--yes"]).code(0);
    let elsewhere = tempfile::tempdir().unwrap();
    let into_targets = elsewhere.path().join("y");
    let into_live = elsewhere.path().join("x");
    std::fs::create_dir_all(repo.path().join("targets")).unwrap();
    std::os::unix::fs::symlink(repo.path().join("targets"), &into_targets).unwrap();
    std::os::unix::fs::symlink(other.path().join("targets/validation/current"), &into_live)
        .unwrap();

    // Validation not deployed yet: prod's path is validation's target under another name, and
    // neither may be deployed while the configuration says so.
    set_prod_path(&repo, &format!("{}/validation", into_targets.display()));
    for env in ["prod", "validation"] {
        repo.deploy(&["--target", env, "--yes"])
            .code(3)
            .stderr_has("is the same directory as the target of")
            .stderr_has("hint:");
    }
    assert!(!repo.path().join("targets/validation").exists());

    // Into another repository's live generation.
    let theirs = other.path().join("targets/validation");
    let before = snapshot(&theirs);
    set_prod_path(&repo, &format!("{}/b", into_live.display()));
    repo.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has("inside the envlock target")
        .stderr_has("hint:");
    repo.deploy(&["plan", "--target", "prod"]).code(3);
    assert_eq!(snapshot(&theirs), before, "the other target was written");
}

/// A symlink that leads to a place of its own (`/srv -> /data/srv` on an operator's machine) is
/// fine: the target is used where it really is.
#[test]
fn a_target_path_through_a_harmless_symlink_is_used() {
    let repo = Repo::ungated();
    let machine = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(machine.path().join("data/srv")).unwrap();
    std::os::unix::fs::symlink(machine.path().join("data/srv"), machine.path().join("srv"))
        .unwrap();
    set_prod_path(&repo, &format!("{}/srv/prod", machine.path().display()));
    repo.adopt("prod");
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    assert!(
        machine
            .path()
            .join("data/srv/prod/current/worker.toml")
            .exists()
    );
}
