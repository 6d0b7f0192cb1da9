//! What `deploy status` and the plan's heading tell: a deployment running in another terminal,
//! HEAD live but edited by hand, a dirty working tree, which clone and which target.

use std::path::Path;

use crate::harness::{Repo, wait_for_file};
use crate::lifecycle::status_json;

const PROD: &str = "environments/prod.toml";

/// A health check that says it started (`started`), then waits until `release` exists: the
/// deployment stays in its health check for as long as the test wants.
fn held_health(started: &Path, release: &Path) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done\"]\ntimeout = \"120s\"",
        started.display(),
        release.display()
    )
}

/// prod deployed once (generation 1), then a commit that changes it with a held health check.
fn prod_with_held_health(scratch: &Path) -> (Repo, String) {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let health = held_health(&scratch.join("started"), &scratch.join("release"));
    repo.edit(
        PROD,
        &[
            ("threads = 16", "threads = 17"),
            ("command = [\"true\"]\ntimeout = \"5s\"", health.as_str()),
        ],
    );
    let commit = repo.commit("prod: 17 threads, a slow health check");
    (repo, commit)
}

#[test]
fn status_during_a_deploy_held_in_its_health_check_says_it_is_in_progress() {
    let scratch = tempfile::tempdir().unwrap();
    let (repo, commit) = prod_with_held_health(scratch.path());
    let mut child = repo.spawn_deploy(&["--target", "prod", "--yes"], &[]);
    wait_for_file(&mut child, &scratch.path().join("started"));

    let run = repo.deploy(&["status", "--target", "prod"]);
    run.code(0)
        .stdout_has(&format!(
            "a deployment is in progress: apply of commit {} by ",
            &commit[..12]
        ))
        .stdout_has(&format!("(pid {})", child.id()))
        .stdout_has("now: health-checking generation 2, which is live but not verified yet")
        .stdout_has("NOT VERIFIED YET")
        .stdout_has("as things stand; a deployment is in progress");
    assert!(!run.stdout.contains("interrupted"), "{}", run.stdout);
    assert!(!run.stdout.contains("resolves it"), "{}", run.stdout);

    let s = status_json(&repo, "prod");
    let running = s.in_progress.expect("a deployment in progress");
    assert_eq!(running.pid, child.id());
    assert_eq!(running.phase, "verifying");
    assert_eq!(running.action.as_deref(), Some("apply"));
    assert_eq!(running.commit.as_deref(), Some(commit.as_str()));
    assert_eq!((running.previous, running.next), (Some(1), Some(2)));
    assert_eq!(s.interrupted, None);

    // A plan made meanwhile says so too, instead of calling it interrupted.
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("a deployment is in progress (apply of commit");

    std::fs::write(scratch.path().join("release"), "").unwrap();
    assert!(child.wait().unwrap().success());
    let s = status_json(&repo, "prod");
    assert!(s.in_progress.is_none());
    assert_eq!(s.interrupted, None);
    assert_eq!(s.live.map(|l| l.id), Some(2));

    // A rollback held in its health check is in progress too, and says so.
    std::fs::remove_file(scratch.path().join("started")).unwrap();
    std::fs::remove_file(scratch.path().join("release")).unwrap();
    let mut child = repo.spawn_deploy(&["rollback", "--target", "prod", "--yes"], &[]);
    wait_for_file(&mut child, &scratch.path().join("started"));
    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("a deployment is in progress: rollback of commit ")
        .stdout_has("now: health-checking generation 1, which is live but not verified yet");
    let running = status_json(&repo, "prod")
        .in_progress
        .expect("a rollback in progress");
    assert_eq!(running.action.as_deref(), Some("rollback"));
    assert_eq!((running.previous, running.next), (Some(2), Some(1)));
    std::fs::write(scratch.path().join("release"), "").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn status_after_a_deployer_was_killed_in_its_health_check_says_interrupted() {
    let scratch = tempfile::tempdir().unwrap();
    let (repo, _) = prod_with_held_health(scratch.path());
    let mut child = repo.spawn_deploy(&["--target", "prod", "--yes"], &[]);
    wait_for_file(&mut child, &scratch.path().join("started"));
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock file still names the dead holder; the kernel released its lock.
    let lock = repo.path().join("targets/prod/.envlock/lock");
    assert!(!std::fs::read(&lock).unwrap().is_empty());

    let run = repo.deploy(&["status", "--target", "prod"]);
    run.code(0)
        .stdout_has("an interrupted deployment (apply of commit")
        .stdout_has("the next deploy resolves it");
    assert!(!run.stdout.contains("in progress"), "{}", run.stdout);
    let s = status_json(&repo, "prod");
    assert!(s.in_progress.is_none());
    assert!(s.interrupted.is_some());
    // Let the orphaned health check go.
    std::fs::write(scratch.path().join("release"), "").unwrap();
}

#[test]
fn status_says_head_is_live_and_drifted_after_a_hand_edit() {
    let repo = Repo::ungated();
    let head = repo.git(&["rev-parse", "HEAD"]);
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let file = repo.path().join("targets/validation/current/worker.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("threads = 4", "threads = 40")).unwrap();

    let run = repo.deploy(&["status", "--target", "validation"]);
    run.code(0)
        .stdout_has(&format!(
            "HEAD {} — live (generation 1), but drifted: the live files differ from what envlock wrote (below)",
            &head[..12]
        ))
        .stdout_has("edited by hand: current/worker.toml");
    assert!(!run.stdout.contains("not deployed"), "{}", run.stdout);
    let s = status_json(&repo, "validation");
    assert!(s.head_is_live);
    assert_eq!(s.drift.edited, ["worker"]);

    // A commit that changes validation: not deployed, whatever the drift.
    repo.edit(
        "environments/validation.toml",
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 5\n")],
    );
    repo.commit("validation: 5 threads");
    repo.deploy(&["status", "--target", "validation"])
        .code(0)
        .stdout_has("not deployed: Plan: 0 to add, 1 to change, 0 to remove.");
    assert!(!status_json(&repo, "validation").head_is_live);
}

#[test]
fn read_only_commands_work_on_a_dirty_tree_and_name_the_files() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    repo.edit(PROD, &[("threads = 16", "threads = 32")]);
    repo.write("environments/staging.toml", "[environment]\n");
    for args in [
        &["status", "--target", "prod"][..],
        &["plan", "--target", "prod"][..],
        &["log", "--target", "prod"][..],
        &["envs"][..],
    ] {
        repo.deploy(args)
            .code(0)
            .stderr_has(
                "warning: the configuration has uncommitted changes (2 files); this shows commit",
            )
            .stderr_has("modified: environments/prod.toml")
            .stderr_has("untracked: environments/staging.toml");
    }
    // The plan is of the commit: nothing to change, whatever the edit says.
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stdout_has("Plan: 0 to add, 0 to change, 0 to remove.");
    let s = status_json(&repo, "prod");
    let dirty: Vec<(&str, &str)> = s
        .dirty
        .iter()
        .map(|f| (f.path.as_str(), f.status.as_str()))
        .collect();
    assert_eq!(
        dirty,
        [
            ("environments/prod.toml", "modified"),
            ("environments/staging.toml", "untracked")
        ]
    );
    // A saved plan is a plan of the commit too (applying it refuses a dirty tree).
    let out = repo.path().join("plan.json");
    repo.deploy(&["plan", "--target", "prod", "--out", out.to_str().unwrap()])
        .code(0)
        .stderr_has("uncommitted changes");
    // Whatever writes still refuses.
    for args in [
        &["--target", "prod", "--yes"][..],
        &["rollback", "--target", "prod", "--yes"][..],
        &[
            "apply",
            "--target",
            "prod",
            "--yes",
            "--plan",
            out.to_str().unwrap(),
        ][..],
    ] {
        repo.deploy(args)
            .code(3)
            .stderr_has("the configuration has uncommitted changes (2 files)");
    }
}

#[test]
fn the_heading_names_the_clone_and_its_remote_without_credentials() {
    let repo = Repo::ungated();
    repo.git(&[
        "remote",
        "add",
        "origin",
        "https://deployer:s3cr3t-token@git.example.com/acme/asr-config.git",
    ]);
    // As if fetched: `branch = "main"` now means `origin/main` (the pushed branch).
    repo.git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
    let clone = repo.path().canonicalize().unwrap();
    let want = format!(
        "{} (origin https://git.example.com/acme/asr-config.git)",
        clone.display()
    );
    let plan = repo.deploy(&["plan", "--target", "prod"]);
    plan.code(0)
        .stdout_has(&format!("  repository: {want}\n"))
        .stdout_has(&format!(
            "  target:     dir {}/targets/prod — ",
            clone.display()
        ));
    let deploy = repo.deploy(&["--target", "prod", "--yes"]);
    deploy
        .code(0)
        .stdout_has(&format!("  repository: {want}\n"));
    let status = repo.deploy(&["status", "--target", "prod"]);
    status
        .code(0)
        .stdout_has(&format!("  repository:  {want}\n"));
    for run in [&plan, &deploy, &status] {
        assert!(!run.stdout.contains("s3cr3t"), "{}", run.stdout);
    }
    let s = status_json(&repo, "prod");
    assert_eq!(s.repository.path, clone.display().to_string());
    assert_eq!(
        s.repository.remote.as_deref(),
        Some("origin https://git.example.com/acme/asr-config.git")
    );
}

#[test]
fn a_plan_that_reverts_a_hand_edit_says_so() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let current = repo.path().join("targets/validation/current");
    let file = current.join("worker.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("threads = 4", "threads = 40")).unwrap();

    let plan = repo.deploy(&["plan", "--target", "validation"]);
    plan.code(0)
        .stdout_has("Note: 1 resource was changed by hand since generation 1 was deployed; this plan reverts that change")
        .stdout_has("~ worker (change)  <- edited by hand since generation 1: this reverts the edit");
    let json = repo.deploy(&["plan", "--target", "validation", "--format", "json"]);
    json.code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        v["overwrites_drift"],
        serde_json::json!([{"resource": "worker", "drift": "edited", "generation": 1}])
    );

    // Removed by hand: the plan puts it back, and says so; the deployment too.
    std::fs::remove_file(&file).unwrap();
    repo.deploy(&["--target", "validation", "--yes"])
        .code(0)
        .stdout_has("+ worker (add)  <- removed by hand since generation 1: this puts it back");

    // A change that reverts nobody's edit is not marked.
    repo.edit(
        "environments/validation.toml",
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 5\n")],
    );
    repo.commit("validation: 5 threads");
    let plan = repo.deploy(&["plan", "--target", "validation"]);
    plan.code(0).stdout_has("~ worker (change)\n");
    assert!(!plan.stdout.contains("Note:"), "{}", plan.stdout);
}
