//! The example CI pipelines (examples/ci, issue 22 item 3) cannot rot: both pass their linters,
//! and the step scripts they call run here, against a real repository with a bare remote and
//! `dir` targets, with the binary under test (`DEPLOY` selects it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Repo, Run, snapshot};

const STEPS: [&str; 4] = ["check.sh", "diff.sh", "plan.sh", "apply.sh"];
const GITHUB: &str = "examples/ci/github/envlock.yml";
const ACTIONLINT_CONFIG: &str = "examples/ci/github/actionlint.yaml";
const GITLAB: &str = "examples/ci/gitlab/.gitlab-ci.yml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A linter's command; fails the test, saying how to install it, when it is not installed.
#[track_caller]
fn linter(program: &str, install: &str) -> Command {
    let found = Command::new(program).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`{program}` is not installed (or does not run): {install} (.ci/run installs it)"
    );
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

const PIP: &str = "run `python3 -m pip install -r tests/requirements.txt`";

fn actionlint() -> Command {
    let mut cmd = linter("actionlint", PIP);
    cmd.args(["-config-file", ACTIONLINT_CONFIG]);
    cmd
}

fn schema_check(schema: &str) -> Command {
    let mut cmd = linter("check-jsonschema", PIP);
    cmd.args(["--builtin-schema", schema]);
    cmd
}

#[track_caller]
fn passes(cmd: &mut Command, file: &Path) {
    let out = cmd.arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} fails on {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The linter finds `says` in a copy of `file` with `from` replaced by `to`: it really reads
/// the file, so a passing run means something.
#[track_caller]
fn catches(cmd: &mut Command, file: &str, (from, to): (&str, &str), says: &str) {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    let dir = tempfile::tempdir().unwrap();
    let name = Path::new(file).file_name().unwrap();
    let broken = dir.path().join(name);
    std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
    let out = cmd.arg(&broken).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && said.contains(says),
        "{cmd:?} did not report {says:?} for {from:?} -> {to:?}:\n{said}"
    );
}

#[test]
fn the_github_workflow_passes_actionlint_and_the_workflow_schema() {
    passes(&mut actionlint(), Path::new(GITHUB));
    passes(
        &mut schema_check("vendor.github-workflows"),
        Path::new(GITHUB),
    );
    catches(
        &mut actionlint(),
        GITHUB,
        ("needs: [plan-prod, apply-validation]", "needs: [plan-prd]"),
        "plan-prd",
    );
    catches(
        &mut schema_check("vendor.github-workflows"),
        GITHUB,
        ("runs-on: ubuntu-latest", "runs-onn: ubuntu-latest"),
        "runs-onn",
    );
}

#[test]
fn the_gitlab_pipeline_passes_the_gitlab_ci_schema() {
    passes(&mut schema_check("vendor.gitlab-ci"), Path::new(GITLAB));
    catches(
        &mut schema_check("vendor.gitlab-ci"),
        GITLAB,
        ("when: manual", "when: approved"),
        "'approved' is not one of",
    );
}

/// The approval is wired as the README says (checked with a schema of our own per pipeline,
/// tests/examples/*-approval.schema.json): `prod` is applied only by the job behind the approval,
/// after validation, with plan-prod's hash; a pull request's job is not on the deploy runner.
#[test]
fn the_pipelines_apply_prod_only_behind_the_approval() {
    let policy = |pipeline: &str| {
        let mut cmd = linter("check-jsonschema", PIP);
        cmd.arg("--schemafile")
            .arg(root().join(format!("tests/examples/{pipeline}-approval.schema.json")));
        cmd
    };
    passes(&mut policy("github"), Path::new(GITHUB));
    passes(&mut policy("gitlab"), Path::new(GITLAB));
    catches(
        &mut policy("github"),
        GITHUB,
        (
            "environment: prod # required",
            "environment: production # required",
        ),
        "'prod' was expected",
    );
    catches(
        &mut policy("github"),
        GITHUB,
        (
            "runs-on: ubuntu-latest",
            "runs-on: [self-hosted, asr-deploy]",
        ),
        "'ubuntu-latest' was expected",
    );
    catches(
        &mut policy("gitlab"),
        GITLAB,
        ("when: manual", "when: on_success"),
        "'manual' was expected",
    );
    catches(
        &mut policy("gitlab"),
        GITLAB,
        ("allow_failure: false", "allow_failure: true"),
        "False was expected",
    );
}

#[test]
fn the_step_scripts_pass_shellcheck_and_both_pipelines_call_each_of_them() {
    let mut cmd = linter(
        "shellcheck",
        "install it (`apt-get install shellcheck`; actionlint uses it too)",
    );
    let steps: Vec<PathBuf> = STEPS.iter().map(|s| step(s)).collect();
    let out = cmd.args(&steps).output().unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for pipeline in [GITHUB, GITLAB] {
        let text = std::fs::read_to_string(root().join(pipeline)).unwrap();
        for s in STEPS {
            assert!(
                text.contains(&format!("examples/ci/steps/{s} ")),
                "{pipeline} does not call {s}"
            );
        }
    }
}

fn step(name: &str) -> PathBuf {
    root().join("examples/ci/steps").join(name)
}

/// Run a step script as a pipeline does: in the checkout, with `DEPLOY` naming the binary under
/// test and `envs` (what the pipeline hands the job) added.
fn run_step(checkout: &Repo, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    run_step_in(checkout.path(), name, args, envs)
}

fn run_step_in(dir: &Path, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let out = Command::new(step(name))
        .args(args)
        .current_dir(dir)
        .env("DEPLOY", env!("CARGO_BIN_EXE_deploy"))
        .env("NO_COLOR", "1")
        .env_remove("PLAN_SHA256")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the step runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The base fixture pushed to a bare remote, with `dir` targets at absolute paths outside any
/// clone (as on the deploy runner): each job is a fresh clone of the remote.
struct Pipeline {
    remote: Repo,
    dev: Repo,
    targets: tempfile::TempDir,
}

impl Pipeline {
    fn new() -> Pipeline {
        let targets = tempfile::tempdir().unwrap();
        let dev = Repo::base();
        for env in ["validation", "prod"] {
            let path = targets.path().join(env);
            dev.edit(
                &format!("environments/{env}.toml"),
                &[(
                    &format!("path = \"targets/{env}\""),
                    &format!("path = \"{}\"", path.display()),
                )],
            );
        }
        dev.commit("targets on the deploy runner");
        let remote = Repo::bare();
        dev.git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
        dev.git(&["push", "-q", "-u", "origin", "main"]);
        Pipeline {
            remote,
            dev,
            targets,
        }
    }

    /// A job's checkout: a fresh clone of the remote.
    fn job(&self) -> Repo {
        Repo::clone_of(&self.remote)
    }

    fn target(&self, env: &str) -> PathBuf {
        self.targets.path().join(env)
    }
}

/// The SARIF file a check step wrote: JSON, valid against the official SARIF 2.1.0 schema
/// (vendored in tests/sarif/).
#[track_caller]
fn sarif_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} is not readable: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()));
    let schema = root().join("tests/sarif/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
    let validator = jsonschema::draft4::options().build(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "invalid SARIF: {errors:?}\n{text}");
    assert_eq!(doc["version"], "2.1.0");
    doc
}

#[test]
fn the_check_step_writes_sarif_with_the_problems_and_fails() {
    let p = Pipeline::new();
    let job = p.job();
    run_step(&job, "check.sh", &[], &[]).code(0);
    let clean = sarif_file(&job.path().join("envlock.sarif"));
    assert_eq!(clean["runs"][0]["results"], serde_json::json!([]));

    // A pull request that puts prod's account into validation's settings.
    p.dev.edit(
        "environments/validation.toml",
        &[("eu-west-1:111111111111:jobs", "eu-west-1:222222222222:jobs")],
    );
    p.dev.commit("validation: prod's queue");
    p.dev.git(&["push", "-q", "origin", "main:pr"]);
    let job = p.job();
    job.git(&["checkout", "-q", "pr"]);
    let run = run_step(&job, "check.sh", &["out.sarif"], &[]);
    run.code(1).stdout_has("SARIF written to out.sarif");
    let sarif = sarif_file(&job.path().join("out.sarif"));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results.iter().any(|r| {
            r["ruleId"] == "envlock/foreign-account"
                && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    == "environments/validation.toml"
        }),
        "no foreign-account result in environments/validation.toml: {sarif:#}"
    );

    // A check that cannot run (not a repository) leaves no log to upload, not an empty one.
    let elsewhere = tempfile::tempdir().unwrap();
    run_step_in(elsewhere.path(), "check.sh", &[], &[])
        .code(1)
        .stderr_has("not inside a git repository")
        .stderr_has("there is no SARIF log");
    assert!(!elsewhere.path().join("envlock.sarif").exists());
}

#[test]
fn the_diff_step_writes_the_markdown_comment_of_the_change() {
    let p = Pipeline::new();
    p.dev.git(&["checkout", "-q", "-b", "pr"]);
    crate::forward::set_threads(&p.dev, 24);
    p.dev.git(&["push", "-q", "origin", "pr"]);
    let job = p.job();
    job.git(&["checkout", "-q", "pr"]);
    run_step(&job, "diff.sh", &["origin/main"], &[]).code(0);
    let md = job.read("envlock-diff.md");
    for line in [
        "| <code>prod</code> | changed | 0 | 1 | 0 |",
        "-threads = 16",
        "+threads = 24",
    ] {
        assert!(md.lines().any(|l| l == line), "no line {line:?}:\n{md}");
    }
    assert!(md.contains("Unchanged: <code>validation</code>"), "{md}");
    run_step(&job, "diff.sh", &[], &[])
        .code(64)
        .stderr_has("usage: diff.sh BASE");
}

/// The sha256 a plan job handed on (its `.plan.env`).
fn handed_on(job: &Repo, env: &str) -> String {
    let dotenv = job.read(&format!("{env}.plan.env"));
    let sha = dotenv.trim().strip_prefix("PLAN_SHA256=").unwrap();
    assert_eq!(sha.len(), 64, "{dotenv}");
    sha.to_owned()
}

/// Hand a plan job's artifact to an apply job's checkout.
fn download(plan_job: &Repo, apply_job: &Repo, env: &str) {
    let file = format!("{env}.plan.json");
    std::fs::copy(plan_job.path().join(&file), apply_job.path().join(&file)).unwrap();
}

#[test]
fn plan_then_apply_deploys_validation_then_prod_only_with_the_approved_plan() {
    let p = Pipeline::new();
    // The push to main: the plan jobs.
    let plan_job = p.job();
    run_step(&plan_job, "plan.sh", &["validation"], &[])
        .code(0)
        .stdout_has("validation: changes pending");
    run_step(&plan_job, "plan.sh", &["prod"], &[])
        .code(0)
        .stdout_has("prod: changes pending");
    let validation_sha = handed_on(&plan_job, "validation");
    let prod_sha = handed_on(&plan_job, "prod");
    // What the approver reads: the plan as Markdown, ending with the hash handed on.
    let shown = plan_job.read("prod.plan.md");
    assert!(
        shown.contains("| <code>prod</code> |")
            && shown.contains("+queue = \"arn:aws:sqs:eu-west-1:222222222222:jobs\"")
            && shown.ends_with(&format!(
                "Saved plan `prod.plan.json`: sha256 `{prod_sha}`\n"
            )),
        "{shown}"
    );
    assert!(!p.target("validation").exists() && !p.target("prod").exists());

    // apply-validation, in its own checkout, from the artifact.
    let apply_job = p.job();
    download(&plan_job, &apply_job, "validation");
    run_step(
        &apply_job,
        "apply.sh",
        &["validation"],
        &[("PLAN_SHA256", &validation_sha)],
    )
    .code(0);
    let worker = std::fs::read_to_string(p.target("validation").join("current/worker.toml"))
        .expect("validation's worker resource is deployed");
    assert!(worker.contains("111111111111"), "{worker}");

    // apply-prod: refused without the approved plan's hash, or with another one.
    let prod_job = p.job();
    download(&plan_job, &prod_job, "prod");
    let before = snapshot(&p.target("prod"));
    for (envs, says) in [
        (vec![], "PLAN_SHA256 is not set"),
        (vec![("PLAN_SHA256", "")], "PLAN_SHA256 is not set"),
        (
            vec![("PLAN_SHA256", validation_sha.as_str())],
            "it is not the plan that was approved",
        ),
    ] {
        run_step(&prod_job, "apply.sh", &["prod"], &envs)
            .code(3)
            .stderr_has(says)
            .stderr_has("nothing was deployed");
        assert_eq!(snapshot(&p.target("prod")), before);
    }
    // The artifact was not downloaded: refused too.
    run_step(
        &p.job(),
        "apply.sh",
        &["prod"],
        &[("PLAN_SHA256", &prod_sha)],
    )
    .code(3)
    .stderr_has("prod.plan.json does not exist");
    assert_eq!(snapshot(&p.target("prod")), before);

    // The approved job.
    run_step(
        &prod_job,
        "apply.sh",
        &["prod"],
        &[("PLAN_SHA256", &prod_sha)],
    )
    .code(0)
    .stderr_has("Deployed:")
    .stdout_has("prod: 1 record, chain intact");
    let worker = std::fs::read_to_string(p.target("prod").join("current/worker.toml")).unwrap();
    assert!(worker.contains("222222222222"), "{worker}");

    // The next push with nothing new for validation: its plan passes, and applying it records
    // the verification.
    let next = p.job();
    run_step(&next, "plan.sh", &["validation"], &[])
        .code(0)
        .stdout_has("validation: no changes");
    let sha = handed_on(&next, "validation");
    run_step(&next, "apply.sh", &["validation"], &[("PLAN_SHA256", &sha)])
        .code(0)
        .stdout_has("validation: 2 records, chain intact");
}

#[test]
fn a_plan_step_that_is_refused_fails_the_job_and_hands_nothing_on() {
    let p = Pipeline::new();
    p.dev.git(&["checkout", "-q", "-b", "pr"]);
    crate::forward::set_threads(&p.dev, 24);
    p.dev.git(&["push", "-q", "origin", "pr"]);
    // A job on a commit that was never merged: plan only warns, so plan.sh succeeds, but the
    // apply job refuses the plan (it is not on `main`).
    let job = p.job();
    job.git(&["checkout", "-q", "pr"]);
    run_step(&job, "plan.sh", &["prod"], &[]).code(0);
    let sha = handed_on(&job, "prod");
    run_step(&job, "apply.sh", &["prod"], &[("PLAN_SHA256", &sha)])
        .code(3)
        .stderr_has("not on `origin/main`");
    assert!(!p.target("prod").join("current").exists());
    // An environment that does not exist: plan.sh fails with deploy's code, writes no dotenv.
    let run = run_step(&job, "plan.sh", &["staging"], &[]);
    assert!(![0, 2].contains(&run.code), "{run:?}");
    assert!(!job.path().join("staging.plan.env").exists());
}

#[test]
fn an_approved_plan_that_went_stale_is_refused_and_the_pipeline_runs_again() {
    let p = Pipeline::new();
    // Two pipelines plan validation; the later one deploys first.
    let first = p.job();
    run_step(&first, "plan.sh", &["validation"], &[]).code(0);
    let second = p.job();
    run_step(&second, "plan.sh", &["validation"], &[]).code(0);
    let sha = handed_on(&second, "validation");
    run_step(
        &second,
        "apply.sh",
        &["validation"],
        &[("PLAN_SHA256", &sha)],
    )
    .code(0);
    // The first pipeline's plan is its own approved one, but no longer what is live: refused,
    // and only the log changes (it records the refusal).
    let deployed = || {
        let mut files = snapshot(&p.target("validation"));
        files.retain(|path, _| !path.starts_with(".envlock/log"));
        files
    };
    let before = deployed();
    let sha = handed_on(&first, "validation");
    run_step(
        &first,
        "apply.sh",
        &["validation"],
        &[("PLAN_SHA256", &sha)],
    )
    .code(3)
    .stderr_has("the saved plan is stale");
    assert_eq!(deployed(), before);
    let outcomes = crate::harness::log_outcomes(&second, "validation");
    assert_eq!(outcomes.last().unwrap().0, "refused", "{outcomes:?}");
    // Running the pipeline again plans from what is live.
    let again = p.job();
    run_step(&again, "plan.sh", &["validation"], &[])
        .code(0)
        .stdout_has("validation: no changes");
}
