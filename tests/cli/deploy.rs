//! `deploy --target NAME` on the `dir` target: adoption, generations, every refusal (exit 3 with
//! the target byte-for-byte unchanged), the health check and its rollback (exit 4), the lock
//! (exit 5), the notifier, `plan` writing nothing, and the JSON report.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::harness::{Repo, Run, snapshot, wait_for_file, wait_for_line};

const PROD: &str = "environments/prod.toml";
const VALIDATION: &str = "environments/validation.toml";

/// Where an environment of the base fixture deploys to.
fn target(repo: &Repo, env: &str) -> PathBuf {
    repo.path().join("targets").join(env)
}

/// Every target of the repository (a refusal must leave all of them alone).
fn targets(repo: &Repo) -> PathBuf {
    repo.path().join("targets")
}

/// `deploy --target ENV --yes`.
fn deploy_yes(repo: &Repo, env: &str) -> Run {
    repo.deploy(&["--target", env, "--yes"])
}

/// Where `current` points, or `None` when there is no `current`.
fn current_link(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join("current"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The generation directories of a target, sorted.
fn generations(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir.join("generations")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Run `f` and assert that `dir` is byte-for-byte the same afterwards (a missing `dir` must
/// still be missing).
#[track_caller]
fn untouched(dir: &Path, f: impl FnOnce() -> Run) -> Run {
    let before = snapshot(dir);
    let run = f();
    assert_eq!(
        snapshot(dir),
        before,
        "{} changed\n--- stdout\n{}\n--- stderr\n{}",
        dir.display(),
        run.stdout,
        run.stderr
    );
    run
}

/// prod.toml of the base fixture with `sections` ([identity], [health], [notify]...) instead of
/// its `[health]`, and `threads` as the worker's thread count.
fn prod_toml(sections: &str, threads: u32) -> String {
    format!(
        r#"[environment]
account = "222222222222"
branch = "main"
protected = true
markers = ["prod.example.com"]
extends = ["_common"]

[target]
kind = "dir"
path = "targets/prod"

{sections}
[settings.worker]
queue = "arn:aws:sqs:eu-west-1:222222222222:jobs"
endpoint = "https://prod.example.com/healthz"
threads = {threads}
"#
    )
}

/// Write and commit prod.toml (see [`prod_toml`]); returns the commit id.
fn set_prod(repo: &Repo, sections: &str, threads: u32) -> String {
    repo.write(PROD, prod_toml(sections, threads));
    repo.commit(&format!("prod: {threads} threads"))
}

/// Set validation's worker threads (the layer says 4) and commit; returns the commit id.
fn set_validation_threads(repo: &Repo, threads: u32) -> String {
    let text = read(repo.path().join(VALIDATION));
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("threads")).collect();
    let line = format!("threads = {threads}");
    lines.push(&line);
    repo.write(VALIDATION, lines.join("\n") + "\n");
    repo.commit(&format!("validation: {threads} threads"))
}

/// The `+` lines of the diffs in a text plan, without the `+` (what the plan says will be live).
fn added_lines(stdout: &str) -> String {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("    +"))
        .filter(|l| !l.starts_with("++"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The same as `--format json` prints for `apply` and `plan` (src/deploy/apply.rs `Report`),
/// parsed strictly so that a renamed or added field is noticed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    ok: bool,
    environment: String,
    account: String,
    commit: String,
    target: String,
    repository: crate::lifecycle::RepositoryJson,
    outcome: String,
    adopted: bool,
    new_target: Option<String>,
    previous_generation: Option<u64>,
    generation: Option<u64>,
    summary: Counts,
    changes: Vec<ChangeJson>,
    overwrites_drift: Vec<OverwrittenJson>,
    health: Option<HealthJson>,
    rollback_health: Option<HealthJson>,
    recovered: Vec<String>,
    reason: Option<String>,
    config_sha256: String,
    log: Option<LogRef>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct OverwrittenJson {
    resource: String,
    drift: String,
    generation: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LogRef {
    seq: u64,
    hash: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Counts {
    add: usize,
    change: usize,
    remove: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeJson {
    resource: String,
    action: String,
    diff: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HealthJson {
    passed: bool,
    generation: Option<u64>,
    attempts: u32,
    result: String,
    output: Vec<String>,
    interrupted: bool,
}

/// The document `--format json` prints for a failure.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorJson {
    ok: bool,
    exit_code: u8,
    error: String,
    hint: Option<String>,
}

#[track_caller]
fn parse<'a, T: Deserialize<'a>>(run: &'a Run) -> T {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the expected JSON document: {e}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Adoption, generations, confirmation

#[test]
fn first_deploy_adopts_the_target_and_a_second_run_changes_nothing() {
    let repo = Repo::ungated();
    let dir = target(&repo, "validation");
    assert!(dir.symlink_metadata().is_err());

    let run = deploy_yes(&repo, "validation");
    run.code(0)
        .stdout_has("+ worker (add)")
        .stdout_has("Plan: 1 to add, 0 to change, 0 to remove.")
        .stderr_has("Adopted");

    let stamp: serde_json::Value =
        serde_json::from_str(&read(dir.join(".envlock/stamp.json"))).expect("the stamp is JSON");
    assert_eq!(stamp["environment"], "validation");
    assert_eq!(stamp["account"], "111111111111");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert_eq!(generations(&dir), ["00000001"]);

    // The live file is exactly what the plan showed, and only that.
    let live = read(dir.join("current/worker.toml"));
    assert_eq!(live, added_lines(&run.stdout));
    assert_eq!(
        live,
        "endpoint = \"https://validation.example.com/healthz\"\nengine = \"conformer-ctc\"\n\
         queue = \"arn:aws:sqs:eu-west-1:111111111111:jobs\"\nthreads = 4\n"
    );

    // The same commit again: nothing to do; only the verification is recorded in the log.
    let log = dir.join(".envlock/log.jsonl");
    let before = snapshot(&dir);
    let again = deploy_yes(&repo, "validation");
    again
        .code(0)
        .stdout_has("Plan: 0 to add, 0 to change, 0 to remove.")
        .stderr_has("No changes");
    let mut after = snapshot(&dir);
    let records = read(&log);
    after.insert(
        ".envlock/log.jsonl".into(),
        before[".envlock/log.jsonl"].clone(),
    );
    // The log's fstat after this append (see README "A damaged log is never appended to").
    after.insert(
        ".envlock/log.checkpoint".into(),
        before[".envlock/log.checkpoint"].clone(),
    );
    assert_eq!(
        after, before,
        "a no-change run wrote more than a log record"
    );
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 2, "{records}");
    assert!(lines[0].contains("\"action\":\"adopt\",\"outcome\":\"applied\""));
    assert!(lines[1].contains("\"action\":\"verify\",\"outcome\":\"unchanged\""));
    assert_eq!(generations(&dir), ["00000001"]);
}

#[test]
fn an_existing_empty_directory_is_adopted() {
    let repo = Repo::ungated();
    let dir = target(&repo, "validation");
    std::fs::create_dir_all(&dir).unwrap();
    deploy_yes(&repo, "validation")
        .code(0)
        .stderr_has("Adopted");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert!(dir.join(".envlock/stamp.json").is_file());
}

#[test]
fn a_change_becomes_a_new_generation_and_the_old_one_is_kept() {
    let repo = Repo::ungated();
    let dir = target(&repo, "validation");
    deploy_yes(&repo, "validation").code(0);
    let first = read(dir.join("current/worker.toml"));

    set_validation_threads(&repo, 8);
    let run = repo.deploy(&["apply", "--target", "validation", "--yes"]);
    run.code(0)
        .stdout_has("~ worker (change)")
        .stdout_has("    -threads = 4")
        .stdout_has("    +threads = 8")
        .stdout_has("Plan: 0 to add, 1 to change, 0 to remove.")
        .stderr_has("Generation 2 is live.");

    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000002"));
    assert_eq!(generations(&dir), ["00000001", "00000002"]);
    let live = read(dir.join("current/worker.toml"));
    assert!(live.contains("threads = 8\n"), "{live}");
    assert_eq!(live, first.replace("threads = 4", "threads = 8"));
    // Generation 1 is kept as it was, for rollback.
    assert_eq!(read(dir.join("generations/00000001/worker.toml")), first);
}

#[test]
fn without_yes_and_without_a_terminal_nothing_is_written() {
    let repo = Repo::ungated();
    let dir = target(&repo, "validation");

    // An absent target stays absent: not even the lock file or the stamp is written.
    for args in [
        &["--target", "validation"][..],
        &["apply", "--target", "validation"][..],
    ] {
        let run = untouched(&targets(&repo), || repo.deploy(args));
        run.code(1)
            .stdout_has("+ worker (add)")
            .stderr_has("not applying: nobody can confirm");
        assert!(dir.symlink_metadata().is_err(), "{} exists", dir.display());
    }

    // An existing target stays byte-for-byte the same.
    deploy_yes(&repo, "validation").code(0);
    set_validation_threads(&repo, 8);
    let run = untouched(&dir, || repo.deploy(&["--target", "validation"]));
    run.code(1)
        .stdout_has("~ worker (change)")
        .stderr_has("not applying: nobody can confirm")
        .stderr_has("--yes");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));

    // A protected environment is no different.
    let run = untouched(&targets(&repo), || repo.deploy(&["--target", "prod"]));
    run.code(1).stderr_has("nobody can confirm");
}

// ---------------------------------------------------------------------------------------------
// Refusals (exit 3, nothing touched)

#[test]
fn uncommitted_configuration_is_refused_and_listed() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);

    // An edit that was never committed.
    repo.edit(PROD, &[("threads = 16", "threads = 32")]);
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("uncommitted changes")
        .stderr_has("environments/prod.toml");
    repo.git(&["checkout", "--", PROD]);

    // A new environment file nobody added, even when deploying another environment.
    repo.write(
        "environments/staging.toml",
        "[environment]\naccount = \"333333333333\"\n",
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "validation"));
    run.code(3).stderr_has("environments/staging.toml");
    assert!(target(&repo, "validation").symlink_metadata().is_err());
    repo.remove("environments/staging.toml");

    // A staged but uncommitted edit, and a deleted environment file.
    repo.edit(PROD, &[("threads = 16", "threads = 32")]);
    repo.git(&["add", PROD]);
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("environments/prod.toml");
    repo.git(&["reset", "-q", "--hard"]);
    repo.remove(VALIDATION);
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("environments/validation.toml");
    repo.git(&["checkout", "--", VALIDATION]);

    // A schema edit.
    repo.edit(
        "schemas/svc.schema.json",
        &[("\"maximum\": 64", "\"maximum\": 65")],
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("schemas/svc.schema.json");
    repo.git(&["checkout", "--", "schemas"]);

    // Files elsewhere in the working tree do not matter.
    repo.write("notes.txt", "not configuration\n");
    deploy_yes(&repo, "validation").code(0);
}

#[test]
fn a_target_stamped_for_another_environment_is_refused() {
    let repo = Repo::ungated_unadopted();
    deploy_yes(&repo, "validation").code(0);
    let validation = target(&repo, "validation");
    let validation_before = snapshot(&validation);

    // A copy of validation's target where prod's should be (its stamp says `validation`).
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&validation)
        .arg(target(&repo, "prod"))
        .status()
        .unwrap();
    assert!(status.success());
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("belongs to environment `validation`")
        .stderr_has("111111111111");
    std::fs::remove_dir_all(target(&repo, "prod")).unwrap();

    // prod's path leads into validation's target through a symlinked parent directory, which
    // the repository-side check cannot see.
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    std::os::unix::fs::symlink("../targets", repo.path().join("state/alias")).unwrap();
    repo.edit(
        PROD,
        &[(
            "path = \"targets/prod\"",
            "path = \"state/alias/validation\"",
        )],
    );
    repo.commit("prod: a path that leads into validation's target");
    // Refused once the path is resolved, before the stamp is even read.
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("is the same directory as the target of `validation`");
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod"])
    });
    run.code(3)
        .stderr_has("is the same directory as the target of `validation`");
    assert_eq!(snapshot(&validation), validation_before);
}

#[test]
fn a_copy_pasted_target_path_is_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "validation").code(0);
    repo.edit(
        PROD,
        &[("path = \"targets/prod\"", "path = \"targets/validation\"")],
    );
    repo.commit("prod: copy-pasted path");
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("validation");
    assert_eq!(
        current_link(&target(&repo, "validation")).as_deref(),
        Some("generations/00000001")
    );
}

#[test]
fn a_target_stamped_with_another_account_is_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    repo.edit(
        PROD,
        &[
            ("account = \"222222222222\"", "account = \"333333333333\""),
            (":222222222222:jobs", ":333333333333:jobs"),
        ],
    );
    repo.commit("prod: move to a new account");
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("stamped for `prod` with account 222222222222")
        .stderr_has("333333333333");
}

#[test]
fn a_non_empty_unstamped_directory_is_refused_and_listed() {
    let repo = Repo::ungated();
    repo.write("targets/validation/app.conf", "written by someone else\n");
    repo.write("targets/validation/data/cache.bin", [0u8, 1, 2, 255]);
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "validation"));
    run.code(3)
        .stderr_has("not empty and has no envlock stamp")
        .stderr_has("app.conf")
        .stderr_has("data");
}

#[test]
fn a_target_path_that_is_a_file_is_refused() {
    let repo = Repo::ungated();
    repo.write("targets/validation", "not a directory\n");
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "validation"));
    run.code(3).stderr_has("not a directory");
}

#[test]
fn a_target_path_that_is_a_symlink_is_refused() {
    let repo = Repo::ungated_unadopted();
    deploy_yes(&repo, "validation").code(0);
    std::os::unix::fs::symlink("validation", target(&repo, "prod")).unwrap();
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("is a symlink");
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod"])
    });
    run.code(3).stderr_has("is a symlink");
}

// ---------------------------------------------------------------------------------------------
// Identity

/// An identity command that prints what the shell's "credentials" (`$TEST_ACCOUNT`) say.
const IDENTITY_FROM_ENV: &str =
    "[identity]\ncommand = [\"sh\", \"-c\", 'echo \"$TEST_ACCOUNT\"']\ntimeout = \"5s\"\n";

#[test]
fn identity_of_another_account_is_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);

    // The tired operator's shell holds validation's credentials.
    set_prod(&repo, IDENTITY_FROM_ENV, 17);
    let run = untouched(&targets(&repo), || {
        repo.deploy_env(
            &["--target", "prod", "--yes"],
            &[("TEST_ACCOUNT", "111111111111")],
        )
    });
    run.code(3)
        .stderr_has("111111111111")
        .stderr_has("not to `prod`")
        // The repository knows whose account that is, and says so.
        .stderr_has("111111111111 is `validation`'s account");
    // An account no environment names: nothing to say about its owner.
    let run = untouched(&targets(&repo), || {
        repo.deploy_env(
            &["--target", "prod", "--yes"],
            &[("TEST_ACCOUNT", "999999999999")],
        )
    });
    run.code(3).stderr_has("999999999999");
    assert!(!run.stderr.contains("'s account"), "{}", run.stderr);
    // Nothing was read for a diff either.
    assert!(!run.stdout.contains("worker"), "{}", run.stdout);
    let run = untouched(&targets(&repo), || {
        repo.deploy_env(
            &["plan", "--target", "prod"],
            &[("TEST_ACCOUNT", "111111111111")],
        )
    });
    run.code(3).stderr_has("111111111111");

    // Printing nothing is no proof either.
    let run = untouched(&targets(&repo), || {
        repo.deploy_env(&["--target", "prod", "--yes"], &[("TEST_ACCOUNT", "")])
    });
    run.code(3).stderr_has("nothing printed");

    // The literal account of another environment in the command: refused as well.
    set_prod(
        &repo,
        "[identity]\ncommand = [\"sh\", \"-c\", \"echo 111111111111\"]\n",
        17,
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("111111111111");
}

#[test]
fn a_stamp_with_another_environments_account_says_whose_it_is() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    // prod's stamp now says validation's account (a restored backup of the wrong target?).
    let stamp = target(&repo, "prod").join(".envlock/stamp.json");
    let text = read(&stamp);
    std::fs::write(&stamp, text.replace("222222222222", "111111111111")).unwrap();
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("is stamped for `prod` with account 111111111111")
        .stderr_has("111111111111 is `validation`'s account");
}

#[test]
fn identity_of_the_right_account_deploys() {
    let repo = Repo::ungated();
    set_prod(&repo, IDENTITY_FROM_ENV, 16);
    repo.deploy_env(
        &["--target", "prod", "--yes"],
        &[("TEST_ACCOUNT", "222222222222")],
    )
    .code(0)
    .stderr_has("Deployed");
    assert_eq!(
        current_link(&target(&repo, "prod")).as_deref(),
        Some("generations/00000001")
    );

    // Surrounding whitespace is trimmed.
    set_prod(&repo, IDENTITY_FROM_ENV, 17);
    repo.deploy_env(
        &["--target", "prod", "--yes"],
        &[("TEST_ACCOUNT", "  222222222222  ")],
    )
    .code(0);
    assert_eq!(
        current_link(&target(&repo, "prod")).as_deref(),
        Some("generations/00000002")
    );
}

#[test]
fn identity_failure_timeout_and_missing_program_are_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);

    // Expired credentials: a non-zero exit, and what it said is shown.
    set_prod(
        &repo,
        "[identity]\ncommand = [\"sh\", \"-c\", \"echo expired >&2; exit 2\"]\n",
        17,
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3)
        .stderr_has("expired")
        .stderr_has("exited with status 2");

    // A hanging identity command.
    set_prod(
        &repo,
        "[identity]\ncommand = [\"sleep\", \"30\"]\ntimeout = \"300ms\"\n",
        17,
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("timed out");

    // A tool that is not installed.
    set_prod(
        &repo,
        "[identity]\ncommand = [\"envlock-test-no-such-program\", \"whoami\"]\n",
        17,
    );
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("envlock-test-no-such-program");

    // The same refusal on a target that was never deployed: it must still not exist.
    std::fs::remove_dir_all(target(&repo, "prod")).unwrap();
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3);
    assert!(target(&repo, "prod").symlink_metadata().is_err());
}

// ---------------------------------------------------------------------------------------------
// Branch

#[test]
fn a_commit_not_on_the_branch_is_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    repo.commit("prod: unreviewed change");
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("not on `main`");
    // A plan may be made off the branch (for review), with a warning; it writes nothing.
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod"])
    });
    run.code(0)
        .stderr_has("warning:")
        .stderr_has("not on `main`")
        .stderr_has("`deploy apply` will refuse it");

    // Once merged, it deploys.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "feature"]);
    deploy_yes(&repo, "prod").code(0);
    assert_eq!(
        current_link(&target(&repo, "prod")).as_deref(),
        Some("generations/00000002")
    );
}

#[test]
fn a_branch_that_does_not_exist_is_refused() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    repo.edit(
        PROD,
        &[
            ("branch = \"main\"", "branch = \"release\""),
            ("threads = 16", "threads = 17"),
        ],
    );
    repo.commit("prod: deploy from release");
    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(3).stderr_has("release");
}

// ---------------------------------------------------------------------------------------------
// Health check and rollback

/// Records what every health check sees in `state/health.log`, and fails while the live worker
/// has 13 threads.
const HEALTH_SCRIPT: &str = r#"mkdir -p state
echo "env=$DEPLOY_ENVIRONMENT gen=$DEPLOY_GENERATION commit=$DEPLOY_COMMIT account=$DEPLOY_ACCOUNT dir=$DEPLOY_DIR pwd=$(pwd -P)" >> state/health.log
if grep -q 'threads = 13' "$DEPLOY_DIR/current/worker.toml"; then
    echo "worker has 13 threads: unhealthy" >&2
    exit 1
fi
echo "worker is healthy"
"#;

const HEALTH: &str = "[health]\ncommand = [\"sh\", \"hooks/health.sh\"]\ntimeout = \"5s\"\n";

/// One line of `state/health.log`, as key -> value.
fn health_calls(repo: &Repo) -> Vec<std::collections::BTreeMap<String, String>> {
    read(repo.path().join("state/health.log"))
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_failing_health_check_rolls_back_to_the_old_generation() {
    let repo = Repo::ungated();
    repo.write("hooks/health.sh", HEALTH_SCRIPT);
    let good = set_prod(&repo, HEALTH, 16);
    assert_eq!(good, repo.git(&["rev-parse", "HEAD"]));
    let dir = target(&repo, "prod");
    deploy_yes(&repo, "prod")
        .code(0)
        .stderr_has("health check passed on generation 1");

    // The health check ran in the repository with the deployment in its environment.
    let calls = health_calls(&repo);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["env"], "prod");
    assert_eq!(calls[0]["gen"], "1");
    assert_eq!(calls[0]["commit"], good);
    assert_eq!(calls[0]["account"], "222222222222");
    assert_eq!(Path::new(&calls[0]["dir"]), dir);
    assert_eq!(
        Path::new(&calls[0]["pwd"]),
        repo.path().canonicalize().unwrap()
    );

    let old = std::fs::read(dir.join("current/worker.toml")).unwrap();
    let bad = set_prod(&repo, HEALTH, 13);
    let run = deploy_yes(&repo, "prod");
    run.code(4)
        .stderr_has("Generation 2 is live.")
        .stderr_has("health check failed on generation 2")
        .stderr_has("unhealthy")
        .stderr_has("Rolling back")
        .stderr_has("health check passed on generation 1")
        .stderr_has("rolled back");

    // The old generation is live again, byte-for-byte; the failed one is kept for inspection.
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert_eq!(std::fs::read(dir.join("current/worker.toml")).unwrap(), old);
    assert_eq!(generations(&dir), ["00000001", "00000002"]);
    assert!(read(dir.join("generations/00000002/worker.toml")).contains("threads = 13"));

    // The failed generation was checked with the new commit, the restored one with its own.
    let calls = health_calls(&repo);
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!((calls[1]["gen"].as_str(), &calls[1]["commit"]), ("2", &bad));
    assert_eq!(
        (calls[2]["gen"].as_str(), &calls[2]["commit"]),
        ("1", &good)
    );

    // No journal is left behind: the next run is an ordinary one.
    assert!(!dir.join(".envlock/journal.json").exists());
    set_prod(&repo, HEALTH, 14);
    deploy_yes(&repo, "prod").code(0);
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000003"));
}

/// Fails the first two times it runs, then passes.
const FLAKY_SCRIPT: &str = r#"mkdir -p state
n=$(cat state/attempts 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > state/attempts
if [ "$n" -le 2 ]; then
    echo "attempt $n: not ready" >&2
    exit 1
fi
"#;

#[test]
fn health_retries_until_it_passes() {
    let repo = Repo::ungated();
    repo.write("hooks/flaky.sh", FLAKY_SCRIPT);
    set_prod(
        &repo,
        "[health]\ncommand = [\"sh\", \"hooks/flaky.sh\"]\nretries = 2\ninterval = \"10ms\"\n",
        16,
    );
    deploy_yes(&repo, "prod")
        .code(0)
        .stderr_has("health check passed on generation 1 (attempt 3)");
    assert_eq!(read(repo.path().join("state/attempts")), "3\n");
    assert_eq!(
        current_link(&target(&repo, "prod")).as_deref(),
        Some("generations/00000001")
    );
}

#[test]
fn health_that_keeps_failing_after_its_retries_rolls_back() {
    let repo = Repo::ungated();
    repo.write("hooks/flaky.sh", FLAKY_SCRIPT);
    deploy_yes(&repo, "prod").code(0);
    let dir = target(&repo, "prod");
    let before = read(dir.join("current/worker.toml"));
    set_prod(
        &repo,
        "[health]\ncommand = [\"sh\", \"hooks/flaky.sh\"]\nretries = 1\ninterval = \"10ms\"\n",
        17,
    );
    // Two attempts fail; the rollback's single check is the third run and passes.
    deploy_yes(&repo, "prod")
        .code(4)
        .stderr_has("health check failed on generation 2 after 2 attempts")
        .stderr_has("not ready")
        .stderr_has("health check passed on generation 1");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert_eq!(read(dir.join("current/worker.toml")), before);
}

#[test]
fn a_hanging_health_check_times_out_and_rolls_back() {
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    let dir = target(&repo, "prod");
    let before = snapshot(&dir.join("current/"));
    // The hang only happens on the new generation (17 threads), not on the restored one.
    set_prod(
        &repo,
        "[health]\ncommand = [\"sh\", \"-c\", 'if grep -q \"threads = 17\" \"$DEPLOY_DIR/current/worker.toml\"; then sleep 30; fi']\ntimeout = \"300ms\"\n",
        17,
    );
    deploy_yes(&repo, "prod")
        .code(4)
        .stderr_has("timed out after 300ms")
        .stderr_has("health check passed on generation 1");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert_eq!(snapshot(&dir.join("current/")), before);
}

#[test]
fn a_first_deploy_whose_health_fails_leaves_nothing_live() {
    let repo = Repo::ungated();
    set_prod(&repo, "[health]\ncommand = [\"false\"]\n", 16);
    let dir = target(&repo, "prod");
    deploy_yes(&repo, "prod")
        .code(4)
        .stderr_has("health check failed on generation 1")
        .stderr_has("live again: nothing");
    assert!(
        dir.join("current").symlink_metadata().is_err(),
        "{:?}",
        snapshot(&dir)
    );
    assert!(!dir.join(".envlock/journal.json").exists());
    // The next attempt starts again from nothing live.
    set_prod(&repo, "[health]\ncommand = [\"true\"]\n", 16);
    deploy_yes(&repo, "prod").code(0);
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000002"));
}

// ---------------------------------------------------------------------------------------------
// Lock

#[test]
fn a_second_deployment_is_locked_out_and_a_dead_holder_does_not_block() {
    let repo = Repo::ungated();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    // The health check blocks until the test releases it.
    set_prod(
        &repo,
        "[health]\ncommand = [\"sh\", \"-c\", \"touch state/started; while [ ! -e state/release ]; do sleep 0.02; done\"]\ntimeout = \"60s\"\n",
        16,
    );
    let mut first = repo.spawn_deploy(&["--target", "prod", "--yes"], &[]);
    // It holds the lock from before the switch until its health check ends.
    wait_for_line(&mut first, "Generation 1 is live.");
    wait_for_file(&mut first, &repo.path().join("state/started"));

    let run = untouched(&targets(&repo), || deploy_yes(&repo, "prod"));
    run.code(5)
        .stderr_has("locked by")
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has("since");
    // Also through `apply`; another environment's deployment is not blocked.
    repo.deploy(&["apply", "--target", "prod", "--yes"]).code(5);
    deploy_yes(&repo, "validation").code(0);

    // The holder dies (kill -9); the kernel releases its lock.
    first.kill().unwrap();
    first.wait().unwrap();
    std::fs::write(repo.path().join("state/release"), "").unwrap();

    let third = deploy_yes(&repo, "prod");
    assert!(
        matches!(third.code, 0 | 4),
        "the dead holder still blocks: {third:?}"
    );
    third.stderr_has("interrupted");
    assert!(!target(&repo, "prod").join(".envlock/journal.json").exists());
}

// ---------------------------------------------------------------------------------------------
// Notify

const NOTIFY_TO_FILE: &str = "[notify]\ncommand = [\"sh\", \"-c\", \"cat > state/event.json\"]\n";

fn take_event(repo: &Repo) -> Option<serde_json::Value> {
    let path = repo.path().join("state/event.json");
    let text = std::fs::read_to_string(&path).ok()?;
    std::fs::remove_file(&path).unwrap();
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("event is not JSON: {e}\n{text}")))
}

#[test]
fn notify_hears_of_refusals_and_rollbacks() {
    let repo = Repo::ungated();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    repo.write("hooks/health.sh", HEALTH_SCRIPT);
    let sections = format!("{IDENTITY_FROM_ENV}{HEALTH}{NOTIFY_TO_FILE}");
    let first = set_prod(&repo, &sections, 16);
    let right = [("TEST_ACCOUNT", "222222222222")];
    let wrong = [("TEST_ACCOUNT", "111111111111")];

    // A success is not an event.
    repo.deploy_env(&["--target", "prod", "--yes"], &right)
        .code(0);
    assert_eq!(take_event(&repo), None);

    // A refusal.
    let run = untouched(&targets(&repo), || {
        repo.deploy_env(&["--target", "prod", "--yes"], &wrong)
    });
    run.code(3);
    let event = take_event(&repo).expect("the refusal was notified");
    assert_eq!(event["outcome"], "refused");
    assert_eq!(event["environment"], "prod");
    assert_eq!(event["account"], "222222222222");
    assert_eq!(event["commit"], first.as_str());
    assert_eq!(event["exit_code"], 3);
    assert!(event["reason"].as_str().unwrap().contains("111111111111"));
    assert!(event["operator"].as_str().unwrap().contains('@'));
    assert!(event["target"].as_str().unwrap().contains("targets/prod"));
    assert!(event["time"].as_str().is_some());

    // Neither plan nor a missing --yes notifies.
    repo.deploy_env(&["plan", "--target", "prod"], &wrong)
        .code(3);
    assert_eq!(take_event(&repo), None);
    let bad = set_prod(&repo, &sections, 13);
    repo.deploy_env(&["--target", "prod"], &right).code(1);
    assert_eq!(take_event(&repo), None);

    // A rollback.
    repo.deploy_env(&["--target", "prod", "--yes"], &right)
        .code(4);
    let event = take_event(&repo).expect("the rollback was notified");
    assert_eq!(event["outcome"], "rolled-back");
    assert_eq!(event["exit_code"], 4);
    assert_eq!(event["commit"], bad.as_str());
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("health check failed")
    );
}

#[test]
fn a_failing_notifier_warns_and_keeps_the_exit_code() {
    let repo = Repo::ungated();
    repo.write("hooks/health.sh", HEALTH_SCRIPT);
    let sections = format!("{IDENTITY_FROM_ENV}{HEALTH}[notify]\ncommand = [\"false\"]\n");
    set_prod(&repo, &sections, 16);
    let right = [("TEST_ACCOUNT", "222222222222")];
    repo.deploy_env(&["--target", "prod", "--yes"], &right)
        .code(0);

    let run = untouched(&targets(&repo), || {
        repo.deploy_env(
            &["--target", "prod", "--yes"],
            &[("TEST_ACCOUNT", "111111111111")],
        )
    });
    run.code(3).stderr_has("warning").stderr_has("notifier");

    set_prod(&repo, &sections, 13);
    repo.deploy_env(&["--target", "prod", "--yes"], &right)
        .code(4)
        .stderr_has("warning")
        .stderr_has("notifier");
    assert_eq!(
        current_link(&target(&repo, "prod")).as_deref(),
        Some("generations/00000001")
    );
}

// ---------------------------------------------------------------------------------------------
// Plan

#[test]
fn plan_writes_nothing() {
    let repo = Repo::ungated_unadopted();
    let dir = target(&repo, "prod");

    // Absent target: planned (with the warning that the protected prod must be adopted
    // first), and still absent afterwards.
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod"])
    });
    run.code(0)
        .stdout_has("+ worker (add)")
        .stdout_has("Plan: 1 to add, 0 to change, 0 to remove.")
        .stderr_has("run `deploy adopt --target prod`");
    assert!(dir.symlink_metadata().is_err());

    // Deployed target with a pending change.
    repo.adopt("prod");
    deploy_yes(&repo, "prod").code(0);
    set_prod(&repo, "[health]\ncommand = [\"true\"]\n", 17);
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod"])
    });
    run.code(0)
        .stdout_has("~ worker (change)")
        .stdout_has("    --- live/worker.toml")
        .stdout_has("    +++ desired/worker.toml")
        .stdout_has("    -threads = 16")
        .stdout_has("    +threads = 17")
        .stdout_has("Plan: 0 to add, 1 to change, 0 to remove.");

    // The same as JSON: one document on stdout.
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "prod", "--format", "json"])
    });
    run.code(0);
    let report: Report = parse(&run);
    assert!(report.ok);
    assert_eq!(report.outcome, "planned");
    assert_eq!(report.environment, "prod");
    assert!(!report.adopted);
    assert_eq!(report.generation, Some(1));
    assert_eq!(report.changes.len(), 1);
    assert_eq!(report.changes[0].resource, "worker");
    assert_eq!(report.changes[0].action, "change");
    assert!(report.changes[0].diff.contains("+threads = 17"));
    assert_eq!(
        report.summary,
        Counts {
            add: 0,
            change: 1,
            remove: 0
        }
    );
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
}

#[test]
fn plan_shows_added_and_removed_resources() {
    let repo = Repo::ungated();
    repo.write(
        VALIDATION,
        read(repo.path().join(VALIDATION))
            + "\n[settings.batch]\nqueue = \"arn:aws:sqs:eu-west-1:111111111111:batch\"\nengine = \"conformer-ctc\"\nthreads = 2\n",
    );
    repo.commit("validation: a batch worker");
    deploy_yes(&repo, "validation").code(0);
    let dir = target(&repo, "validation");
    assert!(dir.join("current/batch.toml").exists());

    repo.git(&["revert", "--no-edit", "HEAD"]);
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "validation"])
    });
    run.code(0)
        .stdout_has("- batch (remove)")
        .stdout_has("Plan: 0 to add, 0 to change, 1 to remove.");
    deploy_yes(&repo, "validation").code(0);
    assert!(!dir.join("current/batch.toml").exists());
    assert!(dir.join("current/worker.toml").exists());
}

// ---------------------------------------------------------------------------------------------
// JSON report

#[test]
fn json_apply_report() {
    let repo = Repo::ungated();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let run = repo.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0);
    let report: Report = parse(&run);
    assert!(report.ok);
    assert_eq!(report.outcome, "applied");
    assert!(report.adopted);
    assert_eq!(report.environment, "validation");
    assert_eq!(report.account, "111111111111");
    assert_eq!(report.commit, head);
    assert_eq!(report.previous_generation, None);
    assert_eq!(report.generation, Some(1));
    assert_eq!(
        report.summary,
        Counts {
            add: 1,
            change: 0,
            remove: 0
        }
    );
    assert_eq!(report.changes[0].action, "add");

    let run = repo.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0);
    let report: Report = parse(&run);
    assert_eq!(report.outcome, "unchanged");
    assert!(!report.adopted);
    assert_eq!(report.generation, Some(1));

    set_validation_threads(&repo, 8);
    let run = repo.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0);
    let report: Report = parse(&run);
    assert_eq!(report.outcome, "applied");
    assert!(!report.adopted);
    assert_eq!(report.previous_generation, Some(1));
    assert_eq!(report.generation, Some(2));
}

#[test]
fn json_reports_a_rollback_and_a_refusal() {
    let repo = Repo::ungated();
    repo.write("hooks/health.sh", HEALTH_SCRIPT);
    set_prod(&repo, HEALTH, 16);
    deploy_yes(&repo, "prod").code(0);

    set_prod(&repo, HEALTH, 13);
    let run = repo.deploy(&["--target", "prod", "--yes", "--format", "json"]);
    run.code(4);
    let report: Report = parse(&run);
    assert!(!report.ok);
    assert_eq!(report.outcome, "rolled-back");
    assert_eq!(report.previous_generation, Some(1));
    assert_eq!(report.generation, Some(1));
    let health = report.health.expect("the failed health check");
    assert!(!health.passed);
    assert_eq!(health.generation, Some(2));
    let after = report.rollback_health.expect("the rollback's health check");
    assert!(after.passed);
    assert_eq!(after.generation, Some(1));
    assert!(report.reason.is_some());

    repo.edit(PROD, &[("threads = 13", "threads = 12")]);
    let run = untouched(&targets(&repo), || {
        repo.deploy(&["--target", "prod", "--yes", "--format", "json"])
    });
    run.code(3);
    let error: ErrorJson = parse(&run);
    assert!(!error.ok);
    assert_eq!(error.exit_code, 3);
    assert!(error.error.contains("uncommitted"), "{}", error.error);
    assert!(error.hint.is_some());
}

// ---------------------------------------------------------------------------------------------
// Drift

#[test]
fn a_hand_edit_to_a_live_file_shows_as_a_change_back() {
    let repo = Repo::ungated();
    let dir = target(&repo, "validation");
    deploy_yes(&repo, "validation").code(0);
    let file = dir.join("current/worker.toml").canonicalize().unwrap();
    assert!(file.ends_with("generations/00000001/worker.toml"));
    let text = read(&file);
    std::fs::write(&file, text.replace("threads = 4", "threads = 99")).unwrap();

    let run = untouched(&targets(&repo), || {
        repo.deploy(&["plan", "--target", "validation"])
    });
    run.code(0)
        .stdout_has("~ worker (change)")
        .stdout_has("    -threads = 99")
        .stdout_has("    +threads = 4")
        .stdout_has("Plan: 0 to add, 1 to change, 0 to remove.");

    deploy_yes(&repo, "validation").code(0);
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000002"));
    assert_eq!(read(dir.join("current/worker.toml")), text);
}

/// Issue 16.3: another letter case of a marker, or an account in digit groups, is a leak that
/// `deploy` refuses like the plain spelling, with the target left as it was.
#[test]
fn other_spellings_of_an_identity_are_refused_before_anything_is_written() {
    let repo = Repo::base();
    set_prod(&repo, "", 8);
    deploy_yes(&repo, "prod").code(0);
    let dir = target(&repo, "prod");
    for (written, found) in [
        (
            "https://API.VALIDATION.EXAMPLE.COM/v1",
            "`VALIDATION.EXAMPLE.COM`",
        ),
        (
            "https://prod.example.com/?billing=1111-1111-1111",
            "`1111-1111-1111`",
        ),
        (
            "https://prod.example.com/?billing=1111\u{2013}1111\u{2013}1111",
            "1111\u{2013}1111",
        ),
        (
            "https://prod.example.com/?billing=1111 1111 1111",
            "`1111 1111 1111`",
        ),
    ] {
        let text = prod_toml("", 8).replace("https://prod.example.com/healthz", written);
        repo.write(PROD, text);
        repo.commit("a copy-pasted identity");
        untouched(&dir, || deploy_yes(&repo, "prod"))
            .code(3)
            .stderr_has(found)
            .stderr_has("of environment `validation`")
            .stderr_has("environments/prod.toml:15:");
    }
}

/// Issue 16.5: a `[health]` or `[notify]` program that cannot start is found before anything is
/// written (exit 3, at the command's `file:line:col`), not after the switch.
#[test]
fn health_and_notify_programs_that_cannot_start_are_refused_before_anything_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::ungated();
    deploy_yes(&repo, "prod").code(0);
    repo.write("hooks/not-executable", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(
        repo.path().join("hooks/not-executable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    repo.commit("a hook without its x bit");
    let cases = [
        (
            "[health]\ncommand = [\"curll\", \"-fsS\", \"http://127.0.0.1:1/\"]\n",
            "[health] command cannot be started",
            "`curll` is not on PATH",
        ),
        (
            "[notify]\ncommand = [\"./hooks/page-oncall\"]\n",
            "[notify] command cannot be started",
            "does not exist",
        ),
        (
            "[notify]\ncommand = [\"hooks/not-executable\"]\n",
            "[notify] command cannot be started",
            "is not executable",
        ),
    ];
    for (sections, what, why) in cases {
        set_prod(&repo, sections, 17);
        for args in [
            &["--target", "prod", "--yes"][..],
            &["plan", "--target", "prod"],
            &["rollback", "--target", "prod", "--yes"],
        ] {
            untouched(&targets(&repo), || repo.deploy(args))
                .code(3)
                .stderr_has(what)
                .stderr_has(why)
                .stderr_has("environments/prod.toml:13:11")
                .stderr_has("nothing was written");
        }
    }
    // A target never deployed stays absent.
    std::fs::remove_dir_all(target(&repo, "prod")).unwrap();
    untouched(&targets(&repo), || deploy_yes(&repo, "prod")).code(3);
    assert!(target(&repo, "prod").symlink_metadata().is_err());
}

/// Issue 16.9 on `dir`: an automatic rollback restores exactly the bytes that were live before
/// the apply, a hand edit made after the last deploy included (the live generation's directory
/// is what `current` shows, and switching back to it brings the edit back untouched).
#[test]
fn a_failed_health_check_restores_a_hand_edited_live_file_exactly() {
    let repo = Repo::ungated();
    repo.write("hooks/health.sh", HEALTH_SCRIPT);
    set_prod(&repo, HEALTH, 16);
    let dir = target(&repo, "prod");
    deploy_yes(&repo, "prod").code(0);
    let live = dir.join("current/worker.toml");
    let mut edited = std::fs::read(&live).unwrap();
    edited.extend_from_slice(b"# emergency fix by hand\n");
    let mode = std::fs::metadata(&live).unwrap().permissions();
    let mut writable = mode.clone();
    #[allow(clippy::permissions_set_readonly_false)]
    writable.set_readonly(false);
    std::fs::set_permissions(&live, writable).unwrap();
    std::fs::write(&live, &edited).unwrap();
    std::fs::set_permissions(&live, mode).unwrap();

    set_prod(&repo, HEALTH, 13);
    deploy_yes(&repo, "prod")
        .code(4)
        .stderr_has("health check failed on generation 2")
        .stderr_has("rolled back");
    assert_eq!(current_link(&dir).as_deref(), Some("generations/00000001"));
    assert_eq!(std::fs::read(&live).unwrap(), edited);
}
