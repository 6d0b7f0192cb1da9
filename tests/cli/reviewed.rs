//! `branch` means reviewed (issue 16, item 2): in a clone with a remote, `branch = "main"` is
//! checked against the remote-tracking branch (what was pushed), with a real bare remote.

use crate::forward::{Team, set_threads};
use crate::harness::{Repo, snapshot};

const PROD: &str = "environments/prod.toml";

#[test]
fn a_commit_only_on_the_local_main_is_refused_until_pushed() {
    let t = Team::new();
    t.a.deploy(&["--target", "prod", "--yes"]).code(0);
    let local = set_threads(&t.a, 17);
    // plan names the ref it used, and only warns.
    t.a.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("`branch = \"main\"` is checked against `origin/main`")
        .stderr_has("is on the local `main` but not on `origin/main`");
    let before = snapshot(&t.target());
    let run = t.a.deploy(&["--target", "prod", "--yes"]);
    run.code(3)
        .stderr_has(&format!(
            "commit {} is on the local `main` but not on `origin/main`",
            &local[..12]
        ))
        .stderr_has("never pushed")
        .stderr_has("hint: `git push` it");
    assert_eq!(snapshot(&t.target()), before, "{}", run.stderr);
    assert_eq!(t.take_event().unwrap()["outcome"], "refused");

    t.a.git(&["push", "-q"]);
    t.a.deploy(&["--target", "prod", "--yes"])
        .code(0)
        .stderr_has("Deployed:");
}

#[test]
fn the_upstream_of_main_is_the_remote_used() {
    let t = Team::new();
    t.b.git(&["remote", "rename", "origin", "corp"]);
    let local = set_threads(&t.b, 17);
    let before = snapshot(&t.target());
    t.b.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has(&format!(
            "commit {} is on the local `main` but not on `corp/main`",
            &local[..12]
        ));
    assert_eq!(snapshot(&t.target()), before);
    t.b.git(&["push", "-q", "corp", "main"]);
    t.b.deploy(&["--target", "prod", "--yes"]).code(0);
}

#[test]
fn without_a_remote_branch_keeps_its_local_meaning() {
    let repo = Repo::ungated();
    set_threads(&repo, 17);
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("`branch = \"main\"` is checked against `main` (this clone has no remote)");
    repo.deploy(&["--target", "prod", "--yes"])
        .code(0)
        .stderr_has("Deployed:");
}

#[test]
fn branch_origin_main_is_already_the_remote_tracking_branch() {
    let t = Team::new();
    t.a.edit(PROD, &[("branch = \"main\"", "branch = \"origin/main\"")]);
    t.a.commit("prod: branch = origin/main");
    t.a.git(&["push", "-q"]);
    t.a.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("`branch = \"origin/main\"` is checked against `origin/main`");
    t.a.deploy(&["--target", "prod", "--yes"]).code(0);
    let local = set_threads(&t.a, 17);
    let before = snapshot(&t.target());
    t.a.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has(&format!("commit {} is not on `origin/main`", &local[..12]));
    assert_eq!(snapshot(&t.target()), before);
}

#[test]
fn a_remote_without_that_branch_is_a_clear_refusal() {
    let t = Team::new();
    t.a.edit(PROD, &[("branch = \"main\"", "branch = \"release\"")]);
    t.a.commit("prod: deploys from release");
    t.a.git(&["push", "-q"]);
    let before = snapshot(&t.target());
    for branch in ["release", "origin/release"] {
        if branch == "origin/release" {
            t.a.edit(
                PROD,
                &[("branch = \"release\"", "branch = \"origin/release\"")],
            );
            t.a.commit("prod: deploys from origin/release");
            t.a.git(&["push", "-q"]);
        }
        t.a.deploy(&["--target", "prod", "--yes"])
            .code(3)
            .stderr_has("`origin/release`, and this clone has no such branch")
            .stderr_has("git fetch origin");
        assert_eq!(snapshot(&t.target()), before);
    }
}

#[test]
fn a_saved_plan_of_an_unpushed_commit_is_refused_until_pushed() {
    let t = Team::new();
    t.a.deploy(&["--target", "prod", "--yes"]).code(0);
    let local = set_threads(&t.a, 17);
    let plans = tempfile::tempdir().unwrap();
    let plan = plans.path().join("prod.json");
    let plan = plan.to_str().unwrap();
    t.a.deploy(&["plan", "--target", "prod", "--out", plan])
        .code(0)
        .stderr_has("not on `origin/main`");
    let apply = || {
        t.a.deploy(&["apply", "--target", "prod", "--plan", plan, "--yes"])
    };
    let before = snapshot(&t.target());
    apply()
        .code(3)
        .stderr_has(&format!(
            "commit {} is on the local `main` but not on `origin/main`",
            &local[..12]
        ))
        .stderr_has("`git push` it");
    assert_eq!(snapshot(&t.target()), before);
    t.a.git(&["push", "-q"]);
    apply().code(0).stderr_has("Deployed:");
}

#[test]
fn a_pruned_upstream_is_refused_not_replaced_by_another_remote_branch() {
    let t = Team::new();
    // main's upstream is the reviewed `release` branch, not `origin/main`.
    t.b.git(&["push", "-q", "origin", "main:release"]);
    t.b.git(&["branch", "-q", "--set-upstream-to=origin/release", "main"]);
    let local = set_threads(&t.b, 17);
    t.b.git(&["push", "-q", "origin", "main"]); // pushed, but not to `release`
    let before = snapshot(&t.target());
    t.b.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has(&format!(
            "commit {} is on the local `main` but not on `origin/release`",
            &local[..12]
        ));
    // `release` deleted on the remote and pruned here: not silently `origin/main` instead.
    t.b.git(&["push", "-q", "origin", "--delete", "release"]);
    t.b.git(&["remote", "prune", "origin"]);
    t.b.deploy(&["--target", "prod", "--yes"])
        .code(3)
        .stderr_has(
            "the pushed (reviewed) branch `origin/release`, and this clone has no such branch",
        )
        .stderr_has("hint: fetch it");
    assert_eq!(snapshot(&t.target()), before);
}
