//! A reader of stdout that goes away early (`deploy ... | head`, a pager that is quit): a real
//! pipe whose reading end is closed after a few bytes, then the target and its log are read.

use crate::harness::{Repo, deploy_into_short_reader, log_outcomes, snapshot};

/// The base fixture with 3000 more resources for `validation`: a plan of about 300 KB, far
/// larger than a pipe's buffer.
fn repo_with_a_large_plan() -> Repo {
    let repo = Repo::ungated_unadopted();
    let mut text = repo.read("environments/validation.toml");
    for i in 0..3000 {
        text.push_str(&format!(
            "\n[settings.r{i:04}]\nqueue = \"arn:aws:sqs:eu-west-1:111111111111:jobs\"\n\
             engine = \"conformer-ctc\"\nthreads = 4\n"
        ));
    }
    repo.write("environments/validation.toml", text);
    repo.commit("validation: 3000 resources");
    repo
}

#[test]
fn a_deployment_confirmed_with_yes_goes_on_when_stdout_closes() {
    let repo = repo_with_a_large_plan();
    let target = repo.path().join("targets/validation");
    let run = deploy_into_short_reader(repo.path(), &["--target", "validation", "--yes"], 100);
    run.code(0)
        .stderr_has("stdout was closed before the whole plan was written")
        .stderr_has("Deployed: `validation`");
    assert!(run.stdout.starts_with("Deploying `validation`"));
    assert!(target.join("current/r2999.toml").is_file());
    assert_eq!(
        log_outcomes(&repo, "validation"),
        vec![("applied".to_owned(), String::new())]
    );
}

#[test]
fn an_unconfirmed_deployment_refuses_when_stdout_closes() {
    let repo = repo_with_a_large_plan();
    let targets = repo.path().join("targets");
    let before = snapshot(&targets);
    let run = deploy_into_short_reader(repo.path(), &["--target", "validation"], 100);
    run.code(1)
        .stderr_has("not applying: stdout was closed before the whole plan was written")
        .stderr_has("nothing was changed")
        .stderr_has("hint:");
    assert_eq!(snapshot(&targets), before, "the target was written");
}

#[test]
fn a_read_only_command_treats_a_closed_stdout_as_success() {
    let repo = repo_with_a_large_plan();
    let run = deploy_into_short_reader(repo.path(), &["plan", "--target", "validation"], 100);
    run.code(0);
    assert!(!run.stderr.contains("error"), "stderr:\n{}", run.stderr);
    assert!(!repo.path().join("targets").exists());
}

#[test]
fn a_saved_plan_is_written_even_when_stdout_closes() {
    let repo = repo_with_a_large_plan();
    let out = repo.path().join("validation.plan.json");
    let out_arg = out.display().to_string();
    let run = deploy_into_short_reader(
        repo.path(),
        &["plan", "--target", "validation", "--out", &out_arg],
        100,
    );
    run.code(0).stderr_has("the plan file is still written");
    assert!(out.is_file(), "exit 0 without the plan file");
    // And it is a plan that applies.
    repo.deploy(&[
        "apply",
        "--target",
        "validation",
        "--plan",
        &out_arg,
        "--yes",
    ])
    .code(0);
}

#[test]
fn a_json_report_nobody_reads_keeps_the_exit_code_of_a_rollback() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 17"),
            ("[\"true\"]", "[\"false\"]"),
        ],
    );
    repo.commit("a change whose health check fails");
    // The reader closes before the report (written at the end) comes.
    let run = deploy_into_short_reader(
        repo.path(),
        &["--target", "prod", "--yes", "--format", "json"],
        0,
    );
    run.code(4).stderr_has("rolled back");
    let outcomes: Vec<String> = log_outcomes(&repo, "prod")
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    // The fixture's `adopt` record (outcome `applied`), the first deployment, the rollback.
    assert_eq!(outcomes, ["applied", "applied", "rolled-back"]);
}
