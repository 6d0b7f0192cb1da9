//! Rollback fitness (issue 16, item 6): `deploy rollback` never makes live a generation that
//! failed its health check, or one whose commit is not on the environment's reviewed `branch`;
//! `--to` such a generation is refused (exit 3), and the default choice skips it.

use crate::forward::{Team, refused_untouched, set_threads};
use crate::harness::{Repo, log_outcomes};

const VALIDATION: &str = "environments/validation.toml";

fn validation_threads(repo: &Repo, from: u32, to: u32) -> String {
    repo.edit(
        VALIDATION,
        &[(&format!("threads = {from}\n"), &format!("threads = {to}\n"))],
    );
    repo.commit(&format!("validation: {to} threads"))
}

#[test]
fn failed_generations_are_never_rolled_back_to() {
    let repo = Repo::ungated();
    // Healthy unless the file `unhealthy` exists in the repository's root.
    repo.edit(
        VALIDATION,
        &[(
            "[settings.worker]",
            "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e unhealthy\"]\ntimeout = \"5s\"\n\n[settings.worker]\nthreads = 4",
        )],
    );
    repo.commit("validation: a health check");
    let target = repo.path().join("targets/validation");
    let deploy = || repo.deploy(&["--target", "validation", "--yes"]);
    let rollback = |to: Option<&str>| {
        let mut args = vec!["rollback", "--target", "validation", "--yes"];
        args.extend(to.map(|id| ["--to", id]).into_iter().flatten());
        repo.deploy(&args)
    };

    repo.write("unhealthy", "");
    deploy().code(4); // generation 1: FAILED
    repo.remove("unhealthy");
    deploy().code(0); // generation 2, live
    // The only older generation failed: nothing is fit, and the rollback says why.
    refused_untouched(
        &target,
        &[
            "no generation older than the live one (2) is fit to be made live again",
            "generation 1: it FAILED its health check",
            "deploy --target validation",
        ],
        || rollback(None),
    );
    // The why is in the record and in `--format json` too, not only on the terminal.
    let (outcome, reason) = log_outcomes(&repo, "validation").pop().unwrap();
    assert_eq!(outcome, "refused");
    assert!(
        reason.contains("generation 1: it FAILED its health check"),
        "{reason}"
    );
    let run = repo.deploy(&[
        "rollback",
        "--target",
        "validation",
        "--yes",
        "--format",
        "json",
    ]);
    run.code(3);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("generation 1: it FAILED its health check"),
        "{error}"
    );

    validation_threads(&repo, 4, 8);
    repo.write("unhealthy", "");
    deploy().code(4); // generation 3: FAILED, 2 live again
    repo.remove("unhealthy");
    validation_threads(&repo, 8, 12);
    deploy().code(0); // generation 4, live

    refused_untouched(
        &target,
        &[
            "generation 3 of `validation` may not be made live again: it FAILED its health check",
            "`deploy status --target validation` lists the kept generations",
        ],
        || rollback(Some("3")),
    );
    let run = rollback(None);
    run.code(0)
        .stderr_has("Skipping generation 3: it FAILED its health check")
        .stderr_has("is live at generation 2");
    let live = std::fs::read_to_string(target.join("current/worker.toml")).unwrap();
    assert!(live.contains("threads = 4"), "{live}");
}

#[test]
fn generations_of_commits_not_on_the_reviewed_branch_are_never_rolled_back_to() {
    let t = Team::new();
    let deploy = || t.a.deploy(&["--target", "prod", "--yes"]);
    deploy().code(0); // generation 1
    let dropped = set_threads(&t.a, 17);
    t.a.git(&["push", "-q"]);
    deploy().code(0); // generation 2
    // main is rewritten without that commit (force-pushed): it is no longer reviewed history.
    t.a.git(&["reset", "-q", "--hard", "HEAD~1"]);
    set_threads(&t.a, 20);
    t.a.git(&["push", "-q", "--force"]);
    deploy().code(3).stderr_has("has diverged from it");
    t.a.deploy(&["rollback", "--target", "prod", "--to", "1", "--yes"])
        .code(0);
    deploy().code(0); // generation 3

    let why = format!(
        "its commit {} is not on `origin/main`, so it is not reviewed for `prod` (it was never pushed there, or was removed from it since)",
        &dropped[..12]
    );
    refused_untouched(
        &t.target(),
        &[
            &format!("generation 2 of `prod` may not be made live again: {why}"),
            "hint:",
        ],
        || {
            t.a.deploy(&["rollback", "--target", "prod", "--to", "2", "--yes"])
        },
    );
    assert_eq!(t.take_event().unwrap()["outcome"], "refused");
    t.a.deploy(&["rollback", "--target", "prod", "--yes"])
        .code(0)
        .stderr_has(&format!("Skipping generation 2: {why}"))
        .stderr_has("is live at generation 1");
}
