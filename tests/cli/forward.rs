//! Forward only (issue 16, item 1): two clones of one real bare remote deploy `prod` to one
//! shared target. A clone behind the live commit, diverged from it, or without it is refused
//! (exit 3), is told what to do, reaches `[notify]`, and leaves the target as it was except
//! for the one `refused` record SPEC section 4 asks for. `deploy rollback` is the way back.

use std::path::PathBuf;

use crate::harness::{Repo, Run, log_outcomes, snapshot};

const PROD: &str = "environments/prod.toml";
const LOG: &str = ".envlock/log.jsonl";

/// Clone `a` (which made the remote) and clone `b`, both deploying `prod` to `shared/prod`.
pub struct Team {
    pub _remote: Repo,
    pub shared: tempfile::TempDir,
    pub a: Repo,
    pub b: Repo,
}

impl Team {
    pub fn new() -> Team {
        let shared = tempfile::Builder::new()
            .prefix("envlock-shared")
            .tempdir()
            .unwrap();
        let a = Repo::ungated_unadopted();
        let target = shared.path().join("prod");
        let notify = format!(
            "[notify]\ncommand = [\"sh\", \"-c\", \"cat > {}/event.json\"]\n\n[settings.worker]",
            shared.path().display()
        );
        a.edit(
            PROD,
            &[
                (
                    "path = \"targets/prod\"",
                    &format!("path = \"{}\"", target.display()),
                ),
                ("[settings.worker]", &notify),
            ],
        );
        a.commit("prod: one target for every clone, and a notifier");
        let remote = Repo::bare();
        a.git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
        a.git(&["push", "-q", "-u", "origin", "main"]);
        // The shared target is adopted once, as an operator does for a protected environment.
        a.adopt("prod");
        let b = Repo::clone_of(&remote);
        Team {
            _remote: remote,
            shared,
            a,
            b,
        }
    }

    pub fn target(&self) -> PathBuf {
        self.shared.path().join("prod")
    }

    /// The event `[notify]` received last (and forget it).
    pub fn take_event(&self) -> Option<serde_json::Value> {
        let path = self.shared.path().join("event.json");
        let text = std::fs::read_to_string(&path).ok()?;
        std::fs::remove_file(&path).unwrap();
        Some(serde_json::from_str(&text).unwrap())
    }
}

/// Set prod's `threads` in `repo` and commit; returns the commit.
pub fn set_threads(repo: &Repo, threads: u32) -> String {
    let text: Vec<String> = repo
        .read(PROD)
        .lines()
        .map(|l| {
            if l.starts_with("threads = ") {
                format!("threads = {threads}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    repo.write(PROD, text.join("\n") + "\n");
    repo.commit(&format!("prod: {threads} threads"))
}

fn deploy(repo: &Repo) -> Run {
    repo.deploy(&["--target", "prod", "--yes"])
}

fn head(repo: &Repo) -> String {
    repo.git(&["rev-parse", "HEAD"])
}

/// Run `f`, which must be refused (exit 3) saying each of `says`; the target is byte-identical
/// but for one more `refused` record at the end of its log (a target without a log, never
/// adopted, stays exactly as it was).
#[track_caller]
pub fn refused_untouched(target: &std::path::Path, says: &[&str], f: impl FnOnce() -> Run) -> Run {
    let before = snapshot(target);
    let run = f();
    run.code(3);
    for s in says {
        run.stderr_has(s);
    }
    let after = snapshot(target);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{}",
        run.stderr
    );
    for (k, v) in &before {
        // The log's checkpoint follows the log (it records the file's size after the append).
        if k != LOG && k != ".envlock/log.checkpoint" {
            assert_eq!(after.get(k), Some(v), "{k} changed\n{}", run.stderr);
        }
    }
    let Some(old) = before.get(LOG) else {
        assert_eq!(after, before, "{}", run.stderr);
        return run;
    };
    let new = &after[LOG];
    assert!(new.starts_with(old.as_str()), "the log was rewritten");
    let added = &new[old.len()..];
    assert_eq!(added.lines().count(), 1, "one record added: {added}");
    assert!(added.contains("\"outcome\":\"refused\""), "{added}");
    run
}

#[test]
fn a_clone_one_commit_behind_is_refused_and_told_to_pull() {
    let t = Team::new();
    deploy(&t.a).code(0).stderr_has("Deployed:");
    let live = set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0).stderr_has("Deployed:");

    // b fetched, but its main is still at the first commit.
    t.b.git(&["fetch", "-q"]);
    let stale = head(&t.b);
    let run = refused_untouched(
        &t.target(),
        &[
            &format!("`prod` is live at {}", &live[..12]),
            "deployed by ",
            "this clone is 1 commit behind it",
            "pull, then deploy",
            "`deploy rollback --target prod`",
            &stale,
        ],
        || deploy(&t.b),
    );
    assert!(!run.stderr.contains("Deployed:"));
    let event = t.take_event().expect("the refusal was notified");
    assert_eq!(event["outcome"], "refused");
    assert_eq!(event["exit_code"], 3);
    assert!(event["reason"].as_str().unwrap().contains("behind"));
    let (outcome, reason) = log_outcomes(&t.a, "prod").pop().unwrap();
    assert_eq!(outcome, "refused");
    assert!(reason.contains("1 commit behind"), "{reason}");

    // Pulled: the same configuration as live, nothing to do.
    t.b.git(&["pull", "-q"]);
    deploy(&t.b).code(0).stderr_has("No changes");
}

#[test]
fn several_commits_behind_plan_and_status_say_so_too() {
    let t = Team::new();
    deploy(&t.a).code(0);
    for n in [17, 18, 19] {
        set_threads(&t.a, n);
    }
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0).stderr_has("Deployed:");
    t.b.git(&["fetch", "-q"]);

    refused_untouched(&t.target(), &["this clone is 3 commits behind it"], || {
        deploy(&t.b)
    });
    // plan: a warning before the plan, which is still shown; nothing written.
    let before = snapshot(&t.target());
    let run = t.b.deploy(&["plan", "--target", "prod"]);
    run.code(0)
        .stderr_has("warning: `prod` is live at")
        .stderr_has("3 commits behind")
        .stderr_has("`deploy apply` will refuse this plan")
        .stdout_has("-threads = 19");
    assert_eq!(snapshot(&t.target()), before);
    // status, text and JSON.
    t.b.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("BEHIND:")
        .stdout_has("3 commits behind");
    let run =
        t.b.deploy(&["status", "--target", "prod", "--format", "json"]);
    run.code(0);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["backwards"]["relation"], "behind");
    assert_eq!(v["backwards"]["behind"], 3);
    assert_eq!(v["backwards"]["live_commit"].as_str().unwrap(), head(&t.a));
    // The clone that deployed is not behind.
    let run =
        t.a.deploy(&["status", "--target", "prod", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(v["backwards"].is_null());
    assert_eq!(snapshot(&t.target()), before);
}

#[test]
fn a_clone_that_never_fetched_the_live_commit_is_refused() {
    let t = Team::new();
    deploy(&t.a).code(0);
    let live = set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0);
    let stale = head(&t.b);
    refused_untouched(
        &t.target(),
        &[
            &format!("`prod` is live at {}", &live[..12]),
            "a commit this clone does not have",
            "git fetch",
            &live,
            &stale,
        ],
        || deploy(&t.b),
    );
    assert_eq!(t.take_event().unwrap()["outcome"], "refused");
}

#[test]
fn a_diverged_clone_is_refused_and_told_to_merge() {
    let t = Team::new();
    deploy(&t.a).code(0);
    let live = set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0);
    // b has the live commit, but rewrote main without it and force-pushed.
    t.b.git(&["fetch", "-q"]);
    let other = set_threads(&t.b, 20);
    t.b.git(&["push", "-q", "--force", "origin", "main"]);
    refused_untouched(
        &t.target(),
        &[
            &format!("`prod` is live at {}", &live[..12]),
            &format!("this clone's commit {} has diverged from it", &other[..12]),
            "1 commit not live",
            "git pull",
            &live,
            &other,
        ],
        || deploy(&t.b),
    );
}

#[test]
fn a_plan_saved_in_a_stale_clone_is_refused_when_applied() {
    let t = Team::new();
    deploy(&t.a).code(0);
    set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0);
    t.b.git(&["fetch", "-q"]);
    let plans = tempfile::tempdir().unwrap();
    let plan = plans.path().join("prod.json");
    let plan = plan.to_str().unwrap();
    t.b.deploy(&["plan", "--target", "prod", "--out", plan])
        .code(0)
        .stderr_has("1 commit behind")
        .stderr_has("Saved the plan");
    // The live state is exactly what the plan saw: only the direction is wrong.
    refused_untouched(
        &t.target(),
        &["1 commit behind", "pull, then deploy"],
        || {
            t.b.deploy(&["apply", "--target", "prod", "--plan", plan, "--yes"])
        },
    );
}

#[test]
fn rollback_is_the_way_back_and_deploying_forward_again_works() {
    let t = Team::new();
    deploy(&t.a).code(0);
    set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy(&t.a).code(0);
    // Explicitly back to the first commit: not refused.
    t.a.deploy(&["rollback", "--target", "prod", "--yes"])
        .code(0)
        .stderr_has("Rolled back:");
    // b, at the commit now live, is not behind; a, one commit ahead, moves forward.
    deploy(&t.b).code(0).stderr_has("No changes");
    deploy(&t.a).code(0).stderr_has("Deployed:");
}

#[test]
fn a_live_generation_without_a_commit_id_is_warned_about_not_refused() {
    let t = Team::new();
    deploy(&t.a).code(0);
    let meta = t.target().join("generations/00000001/.meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let commit = head(&t.a);
    // Written by another tool: no fetch can bring `v1.2-legacy`, so a refusal has no way out.
    std::fs::write(&meta, text.replace(&commit, "v1.2-legacy")).unwrap();
    set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    t.a.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("live generation 1 records `v1.2-legacy`, not a commit id");
    deploy(&t.a)
        .code(0)
        .stderr_has("cannot be shown to move `prod` forward")
        .stderr_has("Deployed:");
    // No commit at all: the same warning, not silence.
    let meta = t.target().join("generations/00000002/.meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let commit = head(&t.a);
    std::fs::write(&meta, text.replace(&commit, "")).unwrap();
    set_threads(&t.a, 18);
    t.a.git(&["push", "-q"]);
    deploy(&t.a)
        .code(0)
        .stderr_has("live generation 2 records no commit")
        .stderr_has("Deployed:");
}

#[test]
fn a_shallow_clone_without_the_live_commit_is_told_to_unshallow() {
    let t = Team::new();
    deploy(&t.a).code(0);
    set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    // A CI checkout of depth 1: HEAD is ahead of the live commit, which it does not have.
    let ci = Repo::empty();
    let url = format!("file://{}", t._remote.path().display());
    ci.git(&[
        "fetch",
        "-q",
        "--depth",
        "1",
        &url,
        "main:refs/remotes/origin/main",
    ]);
    ci.git(&["remote", "add", "origin", &url]);
    ci.git(&["checkout", "-q", "origin/main"]);
    refused_untouched(
        &t.target(),
        &[
            "a commit this clone does not have",
            "`git fetch --unshallow`: this clone is shallow",
        ],
        || deploy(&ci),
    );
    let run = ci.deploy(&["status", "--target", "prod", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["backwards"]["relation"], "unknown");
    assert_eq!(v["backwards"]["shallow"], true);
    ci.git(&["fetch", "-q", "--unshallow", "origin"]);
    deploy(&ci).code(0).stderr_has("Deployed:");
}
