//! `deploy check`: exit codes, JSON output parsed back strictly, every problem listed.

use serde::Deserialize;

use crate::harness::{Repo, deploy_in};

/// The `--format json` document of `deploy check`; unknown fields fail the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CheckJson {
    ok: bool,
    commit: String,
    rev: String,
    environments: Vec<EnvStatus>,
    errors: Vec<ErrorJson>,
    unchecked: Vec<UncheckedJson>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct UncheckedJson {
    path: String,
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvStatus {
    name: String,
    valid: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ErrorJson {
    code: String,
    class: String,
    environment: Option<String>,
    message: String,
    file: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    label: Option<String>,
    hint: Option<String>,
}

#[test]
fn base_fixture_is_valid() {
    let repo = Repo::base();
    let run = repo.deploy(&["check"]);
    run.code(0)
        .stdout_has("ok: 2 environments valid at")
        .stdout_has("prod, validation");
}

#[test]
fn json_output_parses_back_strictly() {
    let repo = Repo::base();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let run = repo.deploy(&["check", "--format", "json"]);
    run.code(0);
    let doc: CheckJson = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert!(doc.ok);
    assert_eq!(doc.commit, head);
    assert_eq!(doc.rev, "HEAD");
    let names: Vec<&str> = doc.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["prod", "validation"]);
    assert!(doc.environments.iter().all(|e| e.valid));
    assert!(doc.errors.is_empty());
}

#[test]
fn json_errors_carry_file_line_column() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[("eu-west-1:222222222222:jobs", "eu-west-1:111111111111:jobs")],
    );
    repo.commit("leak");
    let run = repo.deploy(&["check", "--format", "json"]);
    run.code(1);
    let doc: CheckJson = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert!(!doc.ok);
    let e = &doc.errors[0];
    assert_eq!(doc.errors.len(), 1, "{:?}", doc.errors);
    assert_eq!(e.code, "foreign-account");
    assert_eq!(e.class, "safety");
    assert_eq!(e.environment.as_deref(), Some("prod"));
    assert_eq!(e.file.as_deref(), Some("environments/prod.toml"));
    // queue = "arn:aws:sqs:eu-west-1:111111111111:jobs" is line 18; the account starts at col 32.
    assert_eq!((e.line, e.column), (Some(18), Some(32)));
    let prod_status = doc.environments.iter().find(|e| e.name == "prod").unwrap();
    assert!(!prod_status.valid);
    // Nothing but the document on stdout.
    assert!(run.stdout.trim_end().ends_with('}'));
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[
            ("eu-west-1:222222222222:jobs", "eu-west-1:111111111111:jobs"),
            ("threads = 16", "threads = 999"),
        ],
    );
    repo.edit(
        "environments/validation.toml",
        &[(
            "https://validation.example.com/healthz",
            "https://prod.example.com/healthz",
        )],
    );
    repo.commit("three problems");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has("error[foreign-account]")
        .stderr_has("error[schema]: settings.worker.threads: 999 is greater than the maximum of 64")
        .stderr_has("error[foreign-marker]: settings.worker.endpoint of `validation` contains `prod.example.com`")
        .stderr_has("error: 3 problems at");
}

#[test]
fn marker_inside_own_longer_marker_is_not_a_leak() {
    // prod's marker `example.com` appears inside validation's own `validation.example.com`.
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[(
            "markers = [\"prod.example.com\"]",
            "markers = [\"example.com\"]",
        )],
    );
    repo.commit("short marker");
    let run = repo.deploy(&["check"]);
    // validation's endpoint is inside its own marker: fine. prod's own endpoint is fine too.
    run.code(0);
    // But a bare `example.com` in validation (outside its own marker) is prod's.
    repo.edit(
        "environments/validation.toml",
        &[(
            "https://validation.example.com/healthz",
            "https://api.example.com/healthz",
        )],
    );
    repo.commit("bare marker");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("contains `example.com`, the marker of environment `prod`");
}

#[test]
fn project_repository_passes_its_own_check() {
    let run = deploy_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &["check"]);
    run.code(0).stdout_has("ok: 5 environments valid");
}

#[test]
fn check_without_environments_directory() {
    let repo = Repo::empty();
    repo.write("README", "nothing here");
    repo.commit("empty");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("has no `environments/` directory");
}

#[test]
fn check_outside_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    deploy_in(dir.path(), &["check"])
        .code(1)
        .stderr_has("is not inside a git repository")
        .stderr_has("hint:");
}

#[test]
fn repository_without_commits() {
    let repo = Repo::empty();
    repo.deploy(&["check"]).code(1).stderr_has("no commits");
}

#[test]
fn check_names_the_uncommitted_files_it_did_not_check() {
    let repo = Repo::base();
    // An invalid edit nobody committed, and a new schema: check reads HEAD, where all is well.
    repo.write("environments/prod.toml", "this is not toml");
    repo.write("schemas/extra.schema.json", "{}");
    repo.write("notes.txt", "not configuration");
    let run = repo.deploy(&["check"]);
    run.code(0)
        .stdout_has("ok: 2 environments valid at ")
        .stdout_has("note: not checked, because not committed (check reads commit ")
        .stdout_has("environments/prod.toml (modified), schemas/extra.schema.json (untracked)\n");
    assert!(!run.stdout.contains("notes.txt"), "{}", run.stdout);
    let json = repo.deploy(&["check", "--format", "json"]);
    json.code(0);
    let doc: CheckJson = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        doc.unchecked,
        [
            UncheckedJson {
                path: "environments/prod.toml".into(),
                status: "modified".into()
            },
            UncheckedJson {
                path: "schemas/extra.schema.json".into(),
                status: "untracked".into()
            }
        ]
    );

    // A clean tree: no note, an empty list.
    repo.git(&["checkout", "--", "environments"]);
    std::fs::remove_file(repo.path().join("schemas/extra.schema.json")).unwrap();
    let run = repo.deploy(&["check"]);
    run.code(0);
    assert!(!run.stdout.contains("not checked"), "{}", run.stdout);
    let json = repo.deploy(&["check", "--format", "json"]);
    let doc: CheckJson = serde_json::from_str(&json.stdout).unwrap();
    assert!(doc.unchecked.is_empty());
}

#[test]
fn a_target_clash_is_marked_on_the_file_the_commit_changed() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[("path = \"targets/prod\"", "path = \"targets/blue\"")],
    );
    repo.commit("prod moves to the blue directory");
    // A new environment copies prod's target. It sorts first, and its path names neither
    // environment: only the commit tells which file is the copy.
    repo.write(
        "environments/alpha.toml",
        "[environment]\naccount = \"333333333333\"\nextends = [\"_common\"]\n\n[target]\nkind = \"dir\"\npath = \"targets/blue\"\n\n[settings.worker]\nqueue = \"arn:aws:sqs:eu-west-1:333333333333:jobs\"\nendpoint = \"https://alpha.example.com/healthz\"\n",
    );
    repo.commit("add alpha");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has("error[duplicate-target]: environments `alpha` and `prod` have the same target `targets/blue`\n  --> environments/alpha.toml:7:8\n")
        .stderr_has("^^^^^^^^^^^^^^ also the target of `prod`")
        .stderr_has("  ::: environments/prod.toml:11:8")
        .stderr_has("invalid: alpha\n");
    let json = repo.deploy(&["check", "--format", "json"]);
    let doc: CheckJson = serde_json::from_str(&json.stdout).unwrap();
    let e = &doc.errors[0];
    assert_eq!(
        (e.file.as_deref(), e.line, e.environment.as_deref()),
        (Some("environments/alpha.toml"), Some(7), Some("alpha"))
    );
}
