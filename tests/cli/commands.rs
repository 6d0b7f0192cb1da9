//! envs, diff, plan's repository side, usage errors, and the generated artefacts.

use serde::Deserialize;

use crate::harness::{Repo, deploy_in};

#[test]
fn envs_lists_every_environment() {
    let repo = Repo::base_unadopted();
    let run = repo.deploy(&["envs"]);
    run.code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "NAME        ACCOUNT       SCHEMA  TARGET                  PROTECTED  BRANCH  LAST DEPLOYMENT",
            "prod        222222222222  svc     dir targets/prod        yes        main    -",
            "validation  111111111111  svc     dir targets/validation  no         main    -",
        ]
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EnvRow {
    name: String,
    account: String,
    schema: String,
    target: String,
    target_kind: String,
    protected: bool,
    branch: Option<String>,
    after: Vec<String>,
    resources: usize,
    last_deployment: Option<LastDeployment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LastDeployment {
    time: String,
    action: String,
    outcome: String,
    commit: String,
    generation: Option<u64>,
}

#[test]
fn envs_json_parses_back_strictly() {
    let repo = Repo::base_unadopted();
    let run = repo.deploy(&["envs", "--format", "json"]);
    run.code(0);
    let rows: Vec<EnvRow> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].name, "prod");
    assert_eq!(rows[0].after, ["validation"]);
    assert!(rows[0].protected);
    assert_eq!(rows[1].target_kind, "dir");
    assert!(rows[1].last_deployment.is_none());
    // `envs` lets go of every environment's resources but still counts them.
    for row in &rows {
        let text =
            std::fs::read_to_string(repo.path().join(format!("environments/{}.toml", row.name)))
                .unwrap();
        let written = text.lines().filter(|l| l.starts_with("[settings.")).count();
        assert!(written > 0);
        assert_eq!(row.resources, written, "{}", row.name);
    }

    // After a deployment, its last log record.
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let rows: Vec<EnvRow> =
        serde_json::from_str(&repo.deploy(&["envs", "--format", "json"]).stdout).unwrap();
    let last = rows[1]
        .last_deployment
        .as_ref()
        .expect("validation was deployed");
    assert_eq!(
        (last.action.as_str(), last.outcome.as_str()),
        ("adopt", "applied")
    );
    assert_eq!(last.commit, head);
    assert_eq!(last.generation, Some(1));
    assert!(rows[0].last_deployment.is_none());
    repo.deploy(&["envs"])
        .code(0)
        .stdout_has("LAST DEPLOYMENT")
        .stdout_has(&format!("applied {}", &head[..12]));
}

#[test]
fn diff_shows_changed_added_and_removed_environments() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 32")],
    );
    repo.edit(
        "environments/_common.toml",
        &[("conformer-ctc", "whisper-large-v3")],
    );
    repo.remove("environments/validation.toml");
    repo.edit(
        "environments/prod.toml",
        &[("after = [\"validation\"]\n", "")],
    );
    repo.write(
        "environments/staging.toml",
        "[environment]\naccount = \"333333333333\"\nschema = \"svc\"\nextends = [\"_common\"]\n\
         [target]\nkind = \"dir\"\npath = \"targets/staging\"\n\
         [settings.worker]\nqueue = \"arn:aws:sqs:eu-west-1:333333333333:jobs\"\n",
    );
    repo.commit("change");
    let run = repo.deploy(&["diff", "HEAD~1", "HEAD"]);
    run.code(0)
        .stdout_has("~ prod (changed)")
        .stdout_has("-engine = \"conformer-ctc\"\n+engine = \"whisper-large-v3\"")
        .stdout_has("-threads = 16\n+threads = 32")
        .stdout_has("-after = [\"validation\"]")
        .stdout_has("+ staging (added)")
        .stdout_has("- validation (removed)")
        .stdout_has("3 of 3 environments differ");
    // The layer change reaches prod through `extends`: the diff is of resolved settings.
    assert!(run.stdout.contains("[settings.worker]"), "{}", run.stdout);
}

#[test]
fn diff_with_no_changes() {
    let repo = Repo::base();
    repo.commit("nothing");
    repo.deploy(&["diff", "HEAD~1", "HEAD"])
        .code(0)
        .stdout_has("0 of 2 environments differ");
}

#[test]
fn plan_refuses_a_leak_with_exit_3() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[("eu-west-1:222222222222:jobs", "eu-west-1:111111111111:jobs")],
    );
    repo.commit("leak");
    for name in ["prod", "validation"] {
        repo.deploy(&["plan", "--target", name])
            .code(3)
            .stderr_has("error[foreign-account]")
            .stderr_has("breaks the environment lock");
    }
}

#[test]
fn plan_with_invalid_environment_is_exit_1() {
    let repo = Repo::base();
    repo.edit("environments/prod.toml", &[("threads = 16", "threads = 0")]);
    repo.commit("bad threads");
    repo.deploy(&["plan", "--target", "prod"])
        .code(1)
        .stderr_has("settings.worker.threads: 0 is less than the minimum of 1")
        .stderr_has("environment `prod` is invalid");
}

#[test]
fn unknown_target_lists_valid_names() {
    let repo = Repo::base();
    repo.deploy(&["plan", "--target", "prdo"])
        .code(1)
        .stderr_has("error: unknown environment `prdo`")
        .stderr_has("hint: valid environments: prod, validation");
    repo.deploy(&["--target", "_common", "--yes"])
        .code(1)
        .stderr_has("`_common` is a shared layer");
}

#[test]
fn usage_errors_exit_64() {
    let repo = Repo::base();
    for args in [
        &[][..],
        &["--target"][..],
        &["plan"][..],
        &["--target", "prod", "--account", "222222222222"][..],
        &["--target", "prod", "--path", "/srv/x"][..],
        &["--target", "prod", "--set", "workers=1"][..],
        &["check", "--rev"][..],
        &["diff", "HEAD"][..],
        &["frobnicate"][..],
        &["check", "--format", "yaml"][..],
    ] {
        let run = repo.deploy(args);
        assert_eq!(run.code, 64, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
    repo.deploy(&["--help"]).code(0).stdout_has("Exit codes:");
}

#[test]
fn environment_schema_is_published_and_in_sync() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = deploy_in(root, &["schema"]);
    run.code(0);
    let copy =
        std::fs::read_to_string(root.join("schemas/envlock-environment.schema.json")).unwrap();
    assert_eq!(
        run.stdout, copy,
        "schemas/envlock-environment.schema.json is stale; copy `deploy schema` into it"
    );

    let schema: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in [
        root.join("environments"),
        root.join("tests/fixtures/base/environments"),
    ] {
        for e in std::fs::read_dir(dir).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    for f in &files {
        let value: toml::Value = toml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let json = serde_json::to_value(value).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
    // And it rejects what the parser rejects.
    for (bad, why) in [
        (
            "[environment]\naccount = \"1\"\nacount = \"2\"\n",
            "unknown key",
        ),
        (
            "[target]\nkind = \"dir\"\npath = \"x\"\nprefix = \"/a/\"\n",
            "key of another kind",
        ),
        ("[target]\nkind = \"ftp\"\n", "unknown kind"),
        ("[health]\ncommand = []\n", "empty command"),
    ] {
        let value: toml::Value = toml::from_str(bad).unwrap();
        let json = serde_json::to_value(value).unwrap();
        assert!(!validator.is_valid(&json), "schema accepted {why}: {bad}");
    }
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let repo = Repo::base();
    for shell in ["bash", "zsh", "fish"] {
        repo.deploy(&["completions", shell])
            .code(0)
            .stdout_has("--target");
    }
    repo.deploy(&["man"]).code(0).stdout_has(".TH deploy");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorJson {
    ok: bool,
    exit_code: u8,
    error: String,
    hint: Option<String>,
}

#[test]
fn json_format_prints_one_error_document_on_failure() {
    let repo = Repo::base();
    let run = repo.deploy(&["plan", "--target", "nope", "--format", "json"]);
    run.code(1);
    let doc: ErrorJson = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert!(!doc.ok);
    assert_eq!(doc.exit_code, 1);
    assert_eq!(doc.error, "unknown environment `nope`");
    assert_eq!(
        doc.hint.as_deref(),
        Some("valid environments: prod, validation")
    );

    // A refusal (a dirty tree refuses what writes; `plan` only warns, see status.rs).
    repo.write("environments/prod.toml", "edited");
    let run = repo.deploy(&["apply", "--target", "prod", "--yes", "--format", "json"]);
    run.code(3);
    let doc: ErrorJson = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(doc.exit_code, 3);
}

/// `--format json` asks for one document on stdout on every way out, a command line clap
/// refuses included.
#[test]
fn json_format_prints_one_document_for_usage_errors_too() {
    let repo = Repo::base();
    let cases: &[&[&str]] = &[
        &["--format", "json", "--target"],
        &["--format", "json", "--tagret", "prod"],
        &["--format=json", "plan"],
        &["log", "--bogus", "--format", "json"],
        &["--format", "json", "prod"],
        &["--format", "json", "--target", "prod", "status"],
        &["--format", "json"],
    ];
    for args in cases {
        let run = repo.deploy(args);
        run.code(64);
        let doc: ErrorJson = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}):\n{}", run.stdout));
        assert!(!doc.ok);
        assert_eq!(doc.exit_code, 64, "{args:?}");
        assert!(
            !doc.error.is_empty() && doc.hint.is_some(),
            "{args:?}: {doc:?}"
        );
        assert!(
            run.stderr.contains("error:"),
            "{args:?}: stderr:\n{}",
            run.stderr
        );
    }
    let run = repo.deploy(&["--format", "json", "--tagret", "prod"]);
    let doc: ErrorJson = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc.error, "unexpected argument '--tagret' found");
    assert_eq!(
        doc.hint.as_deref(),
        Some("a similar argument exists: '--target'")
    );
    // Text mode keeps stdout empty; a value that is not `json` is not JSON mode.
    for args in [&["--tagret", "prod"][..], &["--format", "jsn", "check"][..]] {
        let run = repo.deploy(args);
        run.code(64);
        assert_eq!(run.stdout, "", "{args:?}");
    }
    // --help and --version exit 0 with their text in the document.
    let run = repo.deploy(&["--format", "json", "--version"]);
    run.code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert!(doc["text"].as_str().unwrap().starts_with("deploy "));
    // Commands whose product is text put it inside the document.
    let run = repo.deploy(&["--format", "json", "completions", "bash"]);
    run.code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["text"].as_str().unwrap().contains("--target"));
    let run = repo.deploy(&["man", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["text"].as_str().unwrap().contains(".TH deploy"));
}

#[test]
fn a_missing_directory_after_dash_c_is_named() {
    let repo = Repo::base();
    let missing = repo.path().join("no-such-dir");
    deploy_in(&missing, &["check"])
        .code(64)
        .stderr_has(&format!(
            "cannot run in {}: it does not exist",
            missing.display()
        ))
        .stderr_has("hint: -C DIR names the directory to run in");
    let file = repo.path().join("environments/prod.toml");
    let run = deploy_in(&file, &["envs", "--format", "json"]);
    run.code(64);
    let doc: ErrorJson = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc.error.ends_with("it is not a directory"), "{doc:?}");
    // A directory that is not in a repository still says so.
    let outside = tempfile::tempdir().unwrap();
    deploy_in(outside.path(), &["check"])
        .code(1)
        .stderr_has("not inside a git repository");
}

#[test]
fn an_environment_named_as_a_command_suggests_target() {
    let repo = Repo::base();
    repo.deploy(&["prod"])
        .code(64)
        .stderr_has("unrecognized subcommand 'prod'")
        .stderr_has("tip: to deploy an environment, name it with --target: `deploy --target prod`");
    // A misspelt command keeps clap's own suggestion, without ours.
    let run = repo.deploy(&["stats"]);
    run.code(64)
        .stderr_has("a similar subcommand exists: 'status'");
    assert!(!run.stderr.contains("--target"), "{}", run.stderr);
}
