//! Commands inside the repository (`./hooks/health.sh`) run only as committed.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Repo, snapshot};

fn with_health_hook() -> Repo {
    let repo = Repo::ungated();
    repo.write("hooks/health.sh", "#!/bin/sh\nexit 0\n");
    let script = repo.path().join("hooks/health.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.edit(
        "environments/prod.toml",
        &[("command = [\"true\"]", "command = [\"./hooks/health.sh\"]")],
    );
    repo.commit("health hook");
    repo
}

#[test]
fn an_edited_or_uncommitted_hook_is_refused() {
    let repo = with_health_hook();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let target = repo.path().join("targets/prod");
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 17")],
    );
    repo.commit("a change to deploy");
    let before = snapshot(&target);

    repo.write(
        "hooks/health.sh",
        "#!/bin/sh\nexit 0 # edited, not reviewed\n",
    );
    repo.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has("modified: hooks/health.sh ([health] command)");
    repo.deploy(&["plan", "--target", "prod"]).code(3);
    assert_eq!(before, snapshot(&target));

    // Ignored by git: never reviewed either.
    repo.git(&["checkout", "--", "hooks/health.sh"]);
    repo.write(".gitignore", "/targets/\n/state/\n/hooks/\n");
    repo.git(&["rm", "-q", "--cached", "hooks/health.sh"]);
    repo.commit("stop tracking the hook");
    repo.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has("ignored by git, never committed: hooks/health.sh");
    assert_eq!(before, snapshot(&target));
}

#[test]
fn a_committed_hook_runs() {
    let repo = with_health_hook();
    repo.deploy(&["--target", "prod", "--yes"])
        .code(0)
        .stderr_has("health check passed on generation 1");
}
