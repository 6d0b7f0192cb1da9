//! `deploy check --format sarif`: every document validates against the official SARIF 2.1.0
//! schema (vendored in tests/sarif/), and each result sits exactly where the text output
//! points.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::Value;

use crate::harness::{Repo, Run, fixtures};

/// The official SARIF 2.1.0 schema (draft-04), formats checked too (`uri`, `uri-reference`).
static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sarif/sarif-schema-2.1.0.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the SARIF schema compiles")
});

/// The run's stdout as one SARIF document, which must validate.
#[track_caller]
fn sarif(run: &Run) -> Value {
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", run.stdout));
    let errors: Vec<String> = SCHEMA
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "invalid SARIF:\n{}", errors.join("\n"));
    doc
}

fn results(doc: &Value) -> &Vec<Value> {
    doc["runs"][0]["results"].as_array().unwrap()
}

/// `(ruleId, uri, startLine, startColumn)` of each result.
fn places(doc: &Value) -> Vec<(String, String, u64, u64)> {
    results(doc)
        .iter()
        .map(|r| {
            let loc = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_owned(),
                loc["artifactLocation"]["uri"].as_str().unwrap().to_owned(),
                loc["region"]["startLine"].as_u64().unwrap(),
                loc["region"]["startColumn"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn fingerprints(doc: &Value) -> Vec<String> {
    results(doc)
        .iter()
        .map(|r| {
            r["partialFingerprints"]["envlockProblem/v1"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// What a fixture's blessed `expected.stderr` says: `error[CODE]` and the `--> file:line:col`
/// under it (`--> file (label)` for a whole file: line 1, column 1).
fn expected_places(stderr: &str) -> Vec<(String, String, u64, u64)> {
    let mut out = Vec::new();
    let mut code = None;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("error[") {
            code = Some(rest[..rest.find(']').unwrap()].to_owned());
        } else if let Some(at) = line.trim_start().strip_prefix("--> ")
            && let Some(code) = code.take()
        {
            let (file, line, col) = match at.split_once(' ') {
                Some((file, _)) => (file.to_owned(), 1, 1),
                None => {
                    let mut parts = at.rsplitn(3, ':');
                    let col = parts.next().unwrap().parse().unwrap();
                    let line = parts.next().unwrap().parse().unwrap();
                    (parts.next().unwrap().to_owned(), line, col)
                }
            };
            out.push((format!("envlock/{code}"), file, line, col));
        }
    }
    out
}

#[test]
fn every_invalid_fixture_is_valid_sarif_at_the_exact_places_of_its_errors() {
    let mut cases: Vec<_> = std::fs::read_dir(fixtures().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20);
    for case in cases {
        let repo = Repo::with_overlay(&case);
        let run = repo.deploy(&["check", "--format", "sarif"]);
        // A finding still fails the gate, with the same message as in text mode.
        run.code(1).stderr_has("error: 1 problem at");
        let doc = sarif(&run);
        let expected = std::fs::read_to_string(case.join("expected.stderr")).unwrap();
        let want = expected_places(&expected);
        assert!(!want.is_empty(), "{}", case.display());
        assert_eq!(places(&doc), want, "{}", case.display());
        // Every result names a rule of the driver by id and index.
        let rules = doc["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap();
        for r in results(&doc) {
            let i = usize::try_from(r["ruleIndex"].as_u64().unwrap()).unwrap();
            assert_eq!(rules[i]["id"], r["ruleId"]);
            assert_eq!(r["level"], "error");
            assert_eq!(
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"],
                "%SRCROOT%"
            );
        }
    }
}

#[test]
fn a_clean_repository_is_a_valid_log_with_no_results() {
    let repo = Repo::base();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let run = repo.deploy(&["check", "--format", "sarif"]);
    run.code(0);
    let doc = sarif(&run);
    assert_eq!(doc["version"], "2.1.0");
    let r = &doc["runs"][0];
    assert!(results(&doc).is_empty());
    assert_eq!(r["columnKind"], "unicodeCodePoints");
    assert_eq!(r["tool"]["driver"]["name"], "envlock");
    assert_eq!(r["tool"]["driver"]["version"], env!("CARGO_PKG_VERSION"));
    let ids: Vec<&str> = r["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for id in [
        "envlock/foreign-account",
        "envlock/foreign-marker",
        "envlock/duplicate-target",
        "envlock/schema",
        "envlock/syntax",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let vcs = &r["versionControlProvenance"][0];
    assert_eq!(vcs["revisionId"], head.as_str());
    assert_eq!(vcs["mappedTo"]["uriBaseId"], "%SRCROOT%");
    // No remote: the repository is its own working tree.
    let root = format!("file://{}/", repo.path().display());
    assert_eq!(vcs["repositoryUri"], root.as_str());
    assert_eq!(r["originalUriBaseIds"]["%SRCROOT%"]["uri"], root.as_str());
}

#[test]
fn columns_count_code_points_as_the_text_and_json_output_do() {
    let repo = Repo::base();
    // Three two-byte characters before the foreign account: byte columns would be 3 more.
    repo.edit(
        "environments/prod.toml",
        &[(
            "endpoint = \"https://prod.example.com/healthz\"",
            "endpoint = \"\u{e9}\u{e9}\u{e9} 111111111111\"",
        )],
    );
    repo.commit("a note with validation's account");
    let run = repo.deploy(&["check", "--format", "sarif"]);
    run.code(1);
    let doc = sarif(&run);
    let line = 1 + repo
        .read("environments/prod.toml")
        .lines()
        .position(|l| l.starts_with("endpoint = "))
        .unwrap() as u64;
    assert_eq!(
        places(&doc),
        [(
            "envlock/foreign-account".to_owned(),
            "environments/prod.toml".to_owned(),
            line,
            17
        )]
    );
    let region = &results(&doc)[0]["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        (&region["endLine"], &region["endColumn"]),
        (&line.into(), &29.into())
    );
    run.stderr_has(&format!("--> environments/prod.toml:{line}:17"));
    let json: Value =
        serde_json::from_str(&repo.deploy(&["check", "--format", "json"]).stdout).unwrap();
    assert_eq!(
        (&json["errors"][0]["line"], &json["errors"][0]["column"]),
        (&line.into(), &17.into())
    );
}

#[test]
fn fingerprints_hold_across_runs_and_line_moves_and_tell_problems_apart() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[
            ("eu-west-1:222222222222:jobs", "eu-west-1:111111111111:jobs"),
            ("threads = 16", "threads = 999"),
        ],
    );
    repo.commit("two problems");
    let first = sarif(&repo.deploy(&["check", "--format", "sarif"]));
    let again = sarif(&repo.deploy(&["check", "--format", "sarif"]));
    let prints = fingerprints(&first);
    assert_eq!(prints.len(), 2);
    assert_ne!(prints[0], prints[1]);
    assert_eq!(fingerprints(&again), prints);
    // Lines added above both problems: new lines, the same alerts.
    repo.edit(
        "environments/prod.toml",
        &[(
            "[target]\n",
            "# moved down\n# by three\n# lines\n[target]\n",
        )],
    );
    repo.commit("comments");
    let moved = sarif(&repo.deploy(&["check", "--format", "sarif"]));
    let lines = |doc: &Value| -> Vec<u64> { places(doc).iter().map(|p| p.2).collect() };
    assert_eq!(
        lines(&moved),
        lines(&first).iter().map(|l| l + 3).collect::<Vec<_>>()
    );
    assert_eq!(fingerprints(&moved), prints);
    // The same text at a second place in the same file is a second alert.
    repo.edit(
        "environments/prod.toml",
        &[(
            "endpoint = \"https://prod.example.com/healthz\"",
            "endpoint = \"https://prod.example.com/111111111111\"",
        )],
    );
    repo.commit("the same leak twice");
    let twice = fingerprints(&sarif(&repo.deploy(&["check", "--format", "sarif"])));
    assert_eq!(twice.len(), 3);
    let unique: std::collections::BTreeSet<&String> = twice.iter().collect();
    assert_eq!(unique.len(), 3, "{twice:?}");
}

#[test]
fn secret_values_and_remote_credentials_never_appear() {
    let repo = Repo::with_overlay(&fixtures().join("valid/secrets"));
    let secret = "hunter2-prod-db-password";
    repo.write("secrets/validation-db", "validation-db-s3cret-value");
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = \"sixteen\"")],
    );
    repo.commit("a schema violation next to a secret");
    repo.git(&[
        "remote",
        "add",
        "origin",
        "https://ci-bot:gh0-t0ken-value@git.example.com/team/config.git",
    ]);
    let run = repo.deploy_env(
        &["check", "--format", "sarif"],
        &[("PROD_DB_PASSWORD", secret)],
    );
    run.code(1);
    let doc = sarif(&run);
    assert_eq!(places(&doc)[0].0, "envlock/schema");
    assert_eq!(
        doc["runs"][0]["versionControlProvenance"][0]["repositoryUri"],
        "https://git.example.com/team/config.git"
    );
    for hidden in [
        secret,
        "validation-db-s3cret-value",
        "gh0-t0ken-value",
        "ci-bot",
    ] {
        assert!(!run.stdout.contains(hidden), "{hidden} in stdout");
        assert!(!run.stderr.contains(hidden), "{hidden} in stderr");
    }
}

/// A remote whose query or fragment carries a credential (`?private_token=`, a signed URL):
/// `repositoryUri` keeps the repository, not the query.
#[test]
fn a_remote_query_never_reaches_the_repository_uri() {
    let repo = Repo::base();
    repo.git(&["remote", "add", "origin", "https://git.example.com/x.git"]);
    for (remote, expected) in [
        (
            "https://git.example.com/team/config.git?private_token=gl-t0ken-value#frag",
            "https://git.example.com/team/config.git",
        ),
        (
            "git@git.example.com:team/config.git?sig=gl-t0ken-value",
            "ssh://git.example.com/team/config.git",
        ),
    ] {
        repo.git(&["remote", "set-url", "origin", remote]);
        let run = repo.deploy(&["check", "--format", "sarif"]);
        run.code(0);
        let doc = sarif(&run);
        assert_eq!(
            doc["runs"][0]["versionControlProvenance"][0]["repositoryUri"],
            expected
        );
        assert!(!run.stdout.contains("gl-t0ken-value"), "{}", run.stdout);
        assert!(!run.stderr.contains("gl-t0ken-value"), "{}", run.stderr);
    }
}

#[test]
fn uncommitted_files_are_notes_of_the_invocation() {
    let repo = Repo::base();
    repo.write("environments/prod.toml", "this is not toml");
    let run = repo.deploy(&["check", "--format", "sarif"]);
    run.code(0);
    let doc = sarif(&run);
    assert!(results(&doc).is_empty());
    let notes = &doc["runs"][0]["invocations"][0]["toolExecutionNotifications"];
    assert_eq!(notes[0]["level"], "note");
    assert_eq!(
        notes[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "environments/prod.toml"
    );
    assert_eq!(
        doc["runs"][0]["invocations"][0]["executionSuccessful"],
        true
    );
}

#[test]
fn formats_a_command_cannot_write_are_usage_errors() {
    let repo = Repo::base();
    for args in [
        &["envs", "--format", "sarif"][..],
        &["check", "--format", "markdown"],
        &["diff", "HEAD", "HEAD", "--format", "sarif"],
        &["status", "--target", "prod", "--format", "markdown"],
        &["--target", "prod", "--yes", "--format", "markdown"],
        &["log", "--format", "sarif"],
    ] {
        let run = repo.deploy(args);
        run.code(64).stderr_has("cannot write --format ");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    repo.deploy(&["check", "--format", "markdown"])
        .stderr_has("only `deploy diff REV1 REV2` and `deploy plan --target NAME` can");
}

#[test]
fn the_schema_check_rejects_what_it_should() {
    let repo = Repo::base();
    let doc = sarif(&repo.deploy(&["check", "--format", "sarif"]));
    let broken = |change: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        change(&mut d);
        !SCHEMA.is_valid(&d)
    };
    assert!(SCHEMA.is_valid(&doc));
    assert!(broken(&|d| d["runs"][0]["tool"]["driver"]
        .as_object_mut()
        .unwrap()
        .remove("name")
        .map(drop)
        .unwrap()));
    assert!(broken(&|d| d["runs"][0]["columnKind"] = "bytes".into()));
    assert!(broken(
        &|d| d["runs"][0]["versionControlProvenance"][0]["repositoryUri"] = "not a uri".into()
    ));
    assert!(broken(&|d| d["version"] = "2.0.0".into()));
}

#[test]
fn a_check_that_cannot_run_prints_no_log_that_would_close_alerts() {
    let repo = Repo::base();
    let run = repo.deploy(&["check", "--rev", "no-such-rev", "--format", "sarif"]);
    run.code(1).stderr_has("no-such-rev");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
