//! The deployment log (`deploy log`, `deploy log verify`) and what builds on it: tampering
//! caught and named, the promotion gate, saved plans (`plan --out`, `apply --plan`) and
//! `plan --detailed-exitcode`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::harness::{Repo, Run, snapshot};

const VALIDATION: &str = "environments/validation.toml";
const PROD: &str = "environments/prod.toml";

fn target(repo: &Repo, env: &str) -> PathBuf {
    repo.path().join("targets").join(env)
}

fn log_file(repo: &Repo, env: &str) -> PathBuf {
    target(repo, env).join(".envlock/log.jsonl")
}

fn deploy_yes(repo: &Repo, env: &str) -> Run {
    repo.deploy(&["--target", env, "--yes"])
}

/// One record as `deploy log --format json` prints it (every field, nothing else).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Record {
    seq: u64,
    time: String,
    environment: String,
    account: String,
    target: String,
    action: String,
    outcome: String,
    commit: String,
    config_sha256: String,
    operator: Operator,
    changes: Changes,
    generation: Option<u64>,
    previous_generation: Option<u64>,
    reason: Option<String>,
    plan_sha256: Option<String>,
    /// Only when something changed: the names of the resources.
    #[serde(default)]
    resources: Option<Resources>,
    prev: String,
    hash: String,
    /// Only in signed records (an `allowed_signers` file at the commit).
    #[serde(default)]
    signer: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct Resources {
    add: Vec<String>,
    change: Vec<String>,
    remove: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Operator {
    user: String,
    host: String,
    ci: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct Changes {
    add: usize,
    change: usize,
    remove: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EnvLog {
    environment: String,
    target: String,
    status: String,
    reason: Option<String>,
    records: usize,
    head: Option<String>,
    problem: Option<ProblemJson>,
    /// Records signed, and whether `allowed_signers` judged any of them.
    signed: usize,
    signers_enforced: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ProblemJson {
    line: usize,
    seq: Option<u64>,
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LogDoc {
    ok: bool,
    records: Vec<Record>,
    environments: Vec<EnvLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyDoc {
    ok: bool,
    environments: Vec<EnvLog>,
}

#[track_caller]
fn parse<'a, T: Deserialize<'a>>(run: &'a Run) -> T {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "not the expected JSON document: {e}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        )
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Set validation's worker threads and commit; returns the commit id.
fn set_threads(repo: &Repo, threads: u32) -> String {
    let text = repo.read(VALIDATION);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("threads")).collect();
    let line = format!("threads = {threads}");
    lines.push(&line);
    repo.write(VALIDATION, lines.join("\n") + "\n");
    repo.commit(&format!("validation: {threads} threads"))
}

/// A repository where validation was deployed three times (three records).
fn three_records() -> Repo {
    // prod is never deployed to (nor adopted) in these tests.
    let repo = Repo::base_unadopted();
    deploy_yes(&repo, "validation").code(0);
    for threads in [5, 6] {
        set_threads(&repo, threads);
        deploy_yes(&repo, "validation").code(0);
    }
    assert_eq!(
        std::fs::read_to_string(log_file(&repo, "validation"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    repo
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_attempt_is_recorded_and_the_chain_verifies() {
    let repo = three_records();
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let run = repo.deploy(&["log", "--target", "validation", "--format", "json"]);
    run.code(0);
    let doc: LogDoc = parse(&run);
    assert!(doc.ok);
    let seqs: Vec<u64> = doc.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [3, 2, 1], "newest first");
    let first = &doc.records[2];
    assert_eq!(
        (first.action.as_str(), first.outcome.as_str()),
        ("adopt", "applied")
    );
    assert_eq!(first.prev, "0".repeat(64));
    assert_eq!(
        first.changes,
        Changes {
            add: 1,
            change: 0,
            remove: 0
        }
    );
    // The names of what changed, never the values.
    assert_eq!(
        first.resources,
        Some(Resources {
            add: vec!["worker".into()],
            change: vec![],
            remove: vec![],
        })
    );
    let last = &doc.records[0];
    assert_eq!(
        (last.action.as_str(), last.outcome.as_str()),
        ("apply", "applied")
    );
    assert_eq!(last.commit, head);
    assert_eq!(last.generation, Some(3));
    assert_eq!(last.previous_generation, Some(2));
    assert_eq!(last.account, "111111111111");
    assert_eq!(last.config_sha256.len(), 64);
    assert!(!last.operator.user.is_empty() && !last.operator.host.is_empty());
    // The chain: each record's prev is the previous record's hash, and the hash is the SHA-256
    // of the line without its hash member (checked here independently of envlock).
    for pair in doc.records.windows(2) {
        assert_eq!(pair[0].prev, pair[1].hash);
    }
    for line in lines(&log_file(&repo, "validation")) {
        let cut = line.rfind(",\"hash\":\"").unwrap();
        let canonical = format!("{}}}", &line[..cut]);
        let hash = &line[cut + 9..cut + 9 + 64];
        assert_eq!(sha256_hex(canonical.as_bytes()), hash);
    }

    let run = repo.deploy(&["log", "verify", "--target", "validation"]);
    run.code(0)
        .stdout_has("validation: 3 records, chain intact")
        .stdout_has(&doc.records[0].hash);

    // The text table, newest first, with prod named as never deployed.
    let run = repo.deploy(&["log"]);
    run.code(0)
        .stdout_has("TIME")
        .stdout_has("OUTCOME")
        .stderr_has("`prod`")
        .stderr_has("never deployed to");
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert!(rows[0].contains("validation") && rows[0].contains(" 3 "));
    assert!(rows[2].contains("adopt"));
}

#[test]
fn a_ci_run_records_the_ci_identity() {
    let repo = Repo::base();
    repo.deploy_env(
        &["--target", "validation", "--yes"],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "octo-deployer"),
            ("GITHUB_RUN_ID", "4242"),
            ("GITHUB_REPOSITORY", "acme/asr-config"),
        ],
    )
    .code(0);
    let doc: LogDoc = parse(&repo.deploy(&["log", "--format", "json"]));
    let ci = &doc.records[0].operator.ci;
    assert_eq!(ci["GITHUB_ACTOR"], "octo-deployer");
    assert_eq!(ci["GITHUB_RUN_ID"], "4242");
    assert_eq!(ci["GITHUB_REPOSITORY"], "acme/asr-config");
    repo.deploy(&["log"])
        .code(0)
        .stdout_has("(ci: octo-deployer)");
}

/// Run `log verify` on a tampered log: exit 1, naming the record and why.
#[track_caller]
fn broken(repo: &Repo, kind: &str, line: usize, seq: Option<u64>, says: &str) {
    let run = repo.deploy(&["log", "verify", "--target", "validation"]);
    run.code(1).stdout_has("BROKEN").stderr_has(says);
    let run = repo.deploy(&[
        "log",
        "verify",
        "--target",
        "validation",
        "--format",
        "json",
    ]);
    run.code(1);
    let doc: VerifyDoc = parse(&run);
    assert!(!doc.ok);
    let p = doc.environments[0].problem.as_ref().expect("a problem");
    assert_eq!(p.kind, kind, "{}", p.message);
    assert_eq!(p.line, line, "{}", p.message);
    assert_eq!(p.seq, seq, "{}", p.message);
    assert_eq!(doc.environments[0].records, line - 1);
    // `deploy log` still shows it, with a warning.
    repo.deploy(&["log", "--target", "validation"])
        .code(0)
        .stderr_has("does not verify");
}

#[test]
fn an_edited_byte_is_named() {
    let repo = three_records();
    let path = log_file(&repo, "validation");
    let mut l = lines(&path);
    l[1] = l[1].replacen("\"threads", "\"thread", 1);
    l[1] = l[1].replacen("\"add\":0", "\"add\":1", 1);
    write_lines(&path, &l);
    broken(&repo, "edited", 2, Some(2), "record 2 (line 2) was edited");
}

#[test]
fn a_dropped_record_is_named() {
    let repo = three_records();
    let path = log_file(&repo, "validation");
    let mut l = lines(&path);
    l.remove(1);
    write_lines(&path, &l);
    broken(&repo, "dropped", 2, Some(3), "a record is missing");
}

#[test]
fn swapped_records_are_named() {
    let repo = three_records();
    let path = log_file(&repo, "validation");
    let mut l = lines(&path);
    l.swap(1, 2);
    write_lines(&path, &l);
    broken(&repo, "reordered", 2, Some(3), "out of order");
}

#[test]
fn a_truncated_last_line_is_named_and_blocks_deploying() {
    let repo = three_records();
    let path = log_file(&repo, "validation");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    broken(
        &repo,
        "truncated",
        3,
        Some(3),
        "ends in the middle of a record",
    );

    // No deployment was in flight (no journal), so nothing may "repair" it: deploying refuses
    // (exit 3: a damaged log is never appended to) and writes nothing.
    set_threads(&repo, 9);
    let before = snapshot(&target(&repo, "validation"));
    deploy_yes(&repo, "validation")
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it")
        .stderr_has("ends in the middle of a record")
        .stderr_has("deploy log verify --target validation")
        .stderr_has("deploy log seal --target validation");
    assert_eq!(snapshot(&target(&repo, "validation")), before);
}

#[test]
fn a_forged_record_with_a_recomputed_hash_but_the_wrong_prev_is_named() {
    let repo = three_records();
    let path = log_file(&repo, "validation");
    let mut l = lines(&path);
    // A forger copies record 3, claims seq 4 and a clean outcome, and recomputes the hash,
    // but chains it to record 2 (the hash it could not know is the one it must point at).
    let mut forged: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&l[2]).unwrap();
    let record2: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    forged.insert("seq".into(), 4.into());
    forged.insert("prev".into(), record2["hash"].clone());
    forged.remove("hash");
    let canonical = serde_json::to_string(&forged).unwrap();
    let hash = sha256_hex(canonical.as_bytes());
    l.push(format!(
        "{},\"hash\":\"{hash}\"}}",
        &canonical[..canonical.len() - 1]
    ));
    write_lines(&path, &l);
    broken(&repo, "forged", 4, Some(4), "does not chain to record 3");
}

#[test]
fn a_killed_writer_s_incomplete_record_is_cut_by_the_recovery() {
    // A deployment in flight (its journal proves it) died while appending: the next run removes
    // the partial line and records the outcome once.
    let repo = three_records();
    let dir = target(&repo, "validation");
    let path = log_file(&repo, "validation");
    let good = std::fs::read(&path).unwrap();
    let live = std::fs::read_link(dir.join("current")).unwrap();
    let generation: u64 = live.to_string_lossy()[12..].parse().unwrap();
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let journal = serde_json::json!({
        "version": 1, "action": "apply", "phase": "verifying",
        "environment": "validation", "account": "111111111111", "commit": head,
        "previous": generation - 1, "next": generation, "newest": generation - 1,
        "holder": {"user": "ana", "host": "box", "pid": 1, "since": "2026-11-21T00:00:00Z",
                   "environment": "validation"},
        "log_seq": 3, "config_sha256": "", "changes": {"add": 0, "change": 1, "remove": 0},
        "plan_sha256": null, "adopted": false
    });
    std::fs::write(
        dir.join(".envlock/journal.json"),
        serde_json::to_vec(&journal).unwrap(),
    )
    .unwrap();
    let mut partial = good.clone();
    partial.extend_from_slice(b"{\"seq\":4,\"time\":\"2026-11-2");
    std::fs::write(&path, &partial).unwrap();

    let run = deploy_yes(&repo, "validation");
    run.code(0)
        .stderr_has("died while writing its log record")
        .stderr_has("stays live");
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0);
    let l = lines(&path);
    assert!(std::fs::read(&path).unwrap().starts_with(&good));
    let rec4: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
    assert_eq!(rec4["outcome"], "applied");
    assert!(
        rec4["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted run of ana@box")
    );
}

// ---------------------------------------------------------------------------------------------
// Promotion gate

#[test]
fn prod_waits_for_validation_to_prove_the_commit() {
    let repo = Repo::base();
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let short = &head[..12];

    // Nothing on validation yet: refused; nothing written but the refusal in the log of prod
    // (adopted by the fixture, so proven prod's target).
    let validation = repo.path().join("targets/validation");
    let before = snapshot(&validation);
    let run = deploy_yes(&repo, "prod");
    run.code(3)
        .stderr_has("promotion gate")
        .stderr_has("`validation` has never been deployed to")
        .stderr_has(&format!("deploy commit {short} to `validation` first"))
        .stderr_has("deploy --target validation");
    assert_eq!(snapshot(&validation), before);
    assert!(!repo.path().join("targets/prod/current").exists());
    let outcomes = crate::harness::log_outcomes(&repo, "prod");
    let (outcome, reason) = outcomes.last().unwrap();
    assert_eq!(outcome, "refused");
    assert!(reason.contains("promotion gate"), "{reason}");
    // A plan warns but is not refused.
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("promotion gate");

    deploy_yes(&repo, "validation").code(0);
    deploy_yes(&repo, "prod").code(0).stderr_has("Deployed:");

    // A new commit that changes only prod: what it gives validation is what is live and
    // verified there, so prod takes it (the gate compares configurations, not commit ids).
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    let next = repo.commit("prod: 17 threads");
    deploy_yes(&repo, "prod").code(0).stderr_has("Deployed:");

    deploy_yes(&repo, "validation")
        .code(0)
        .stderr_has("No changes");
    let doc: LogDoc = parse(&repo.deploy(&["log", "--target", "validation", "--format", "json"]));
    assert_eq!(
        (
            doc.records[0].action.as_str(),
            doc.records[0].outcome.as_str()
        ),
        ("verify", "unchanged")
    );
    assert_eq!(doc.records[0].commit, next);
}

#[test]
fn a_failed_validation_does_not_open_the_gate() {
    let repo = Repo::base();
    // validation's health check fails for this commit: it rolls back (exit 4), and the
    // rolled-back record proves nothing.
    let text = repo.read(VALIDATION);
    repo.write(
        VALIDATION,
        text.replace(
            "[settings.worker]",
            "[health]\ncommand = [\"false\"]\n\n[settings.worker]",
        ),
    );
    repo.commit("validation: a failing health check");
    deploy_yes(&repo, "validation").code(4);
    deploy_yes(&repo, "prod")
        .code(3)
        .stderr_has("nothing is live on `validation`");
}

#[test]
fn a_tampered_validation_log_does_not_open_the_gate() {
    let repo = Repo::base();
    deploy_yes(&repo, "validation").code(0);
    let path = log_file(&repo, "validation");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"user\":", "\"user\": ");
    std::fs::write(&path, text).unwrap();
    deploy_yes(&repo, "prod")
        .code(3)
        .stderr_has("`validation`'s deployment log does not verify");
}

// ---------------------------------------------------------------------------------------------
// Saved plans and --detailed-exitcode

/// The JSON `deploy plan --out` writes (every field).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SavedPlan {
    format: String,
    version: u32,
    environment: String,
    account: String,
    target: String,
    commit: String,
    config_sha256: String,
    live: LiveState,
    resources: std::collections::BTreeMap<String, String>,
    secrets_bound: bool,
    summary: Changes,
    changes: Vec<ChangeJson>,
    created: String,
    operator: String,
    checksum: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LiveState {
    generation: Option<u64>,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChangeJson {
    resource: String,
    action: String,
    diff: String,
}

#[test]
fn detailed_exitcode_says_whether_changes_are_pending() {
    let repo = Repo::base();
    repo.deploy(&["plan", "--target", "validation", "--detailed-exitcode"])
        .code(2)
        .stdout_has("Plan: 1 to add");
    repo.deploy(&["plan", "--target", "validation"]).code(0);
    deploy_yes(&repo, "validation").code(0);
    repo.deploy(&["plan", "--target", "validation", "--detailed-exitcode"])
        .code(0);
    // Errors keep their own codes.
    repo.deploy(&["plan", "--target", "nope", "--detailed-exitcode"])
        .code(1);
}

/// Plan on a pull-request branch, merge, then apply the saved plan on main.
#[test]
fn a_plan_reviewed_on_a_branch_is_applied_after_the_merge() {
    let repo = Repo::base();
    deploy_yes(&repo, "validation").code(0);
    let plans = tempfile::tempdir().unwrap();
    let plan = plans.path().join("validation.plan.json");
    let plan_arg = plan.to_str().unwrap();

    repo.git(&["checkout", "-q", "-b", "pr"]);
    let pr = set_threads(&repo, 8);
    let run = repo.deploy(&[
        "plan",
        "--target",
        "validation",
        "--detailed-exitcode",
        "--out",
        plan_arg,
    ]);
    run.code(2)
        .stdout_has("+threads = 8")
        .stderr_has("Saved the plan");
    let saved: SavedPlan = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(saved.format, "envlock-plan");
    assert_eq!(saved.commit, pr);
    assert_eq!(saved.environment, "validation");
    assert_eq!(saved.live.generation, Some(1));
    assert_eq!(saved.changes.len(), 1);
    assert_eq!(saved.checksum.len(), 64);
    assert!(saved.secrets_bound, "no secrets: nothing unbound");

    // Not merged yet: validation deploys only commits on `main`.
    repo.git(&["checkout", "-q", "main"]);
    repo.deploy(&[
        "apply",
        "--target",
        "validation",
        "--plan",
        plan_arg,
        "--yes",
    ])
    .code(3)
    .stderr_has("is not on `main`");
    // Merged (a merge commit keeps the reviewed commit reachable), then HEAD moves on.
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge pr", "pr"]);
    repo.write("README.md", "unrelated\n");
    repo.commit("docs");
    let run = repo.deploy(&[
        "apply",
        "--target",
        "validation",
        "--plan",
        plan_arg,
        "--yes",
    ]);
    run.code(0).stderr_has("Deployed:");
    let live =
        std::fs::read_to_string(target(&repo, "validation").join("current/worker.toml")).unwrap();
    assert!(live.contains("threads = 8"));
    let doc: LogDoc = parse(&repo.deploy(&["log", "--target", "validation", "--format", "json"]));
    assert_eq!(doc.records[0].commit, pr, "the plan's commit, not HEAD");
    assert_eq!(
        doc.records[0].plan_sha256.as_deref(),
        Some(saved.checksum.as_str())
    );
}

#[test]
fn saved_plan_refusals_leave_the_target_unchanged() {
    let repo = Repo::base();
    deploy_yes(&repo, "validation").code(0);
    deploy_yes(&repo, "prod").code(0);
    let plans = tempfile::tempdir().unwrap();
    let path = |name: &str| plans.path().join(name).to_str().unwrap().to_owned();

    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    set_threads(&repo, 8);
    let vplan = path("validation.json");
    let pplan = path("prod.json");
    repo.deploy(&["plan", "--target", "validation", "--out", &vplan])
        .code(0);
    repo.deploy(&["plan", "--target", "prod", "--out", &pplan])
        .code(0);
    let targets = repo.path().join("targets");

    // Resources and generations are never touched by a refusal; a refusal on a target proven
    // to be this environment's adds one `refused` record to its log.
    let refused = |args: &[&str], says: &str| {
        let before = snapshot(&targets);
        let run = repo.deploy(args);
        run.code(3)
            .stderr_has(says)
            .stderr_has("nothing was changed");
        let after = snapshot(&targets);
        for (k, v) in &before {
            if !k.ends_with("log.jsonl") && !k.ends_with("log.checkpoint") {
                assert_eq!(after.get(k), Some(v), "{k} changed\n{}", run.stderr);
            }
        }
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
    };

    // Another environment's plan.
    refused(
        &["apply", "--target", "prod", "--plan", &vplan, "--yes"],
        "is for environment `validation`",
    );

    // An edited plan: one byte of a diff changed.
    let edited = path("edited.json");
    let text = std::fs::read_to_string(&vplan).unwrap();
    std::fs::write(&edited, text.replacen("threads = 8", "threads = 9", 1)).unwrap();
    refused(
        &[
            "apply",
            "--target",
            "validation",
            "--plan",
            &edited,
            "--yes",
        ],
        "was edited after it was written",
    );

    // A plan whose commit is not on prod's branch (`main`).
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.edit(PROD, &[("threads = 17", "threads = 18")]);
    repo.commit("prod: unreviewed");
    let side = path("side.json");
    repo.deploy(&["plan", "--target", "prod", "--out", &side])
        .code(0)
        .stderr_has("not on `main`");
    repo.git(&["checkout", "-q", "main"]);
    refused(
        &["apply", "--target", "prod", "--plan", &side, "--yes"],
        "is not on `main`",
    );

    // Stale: the live state moved after the plan was made (validation deployed meanwhile).
    repo.deploy(&["apply", "--target", "validation", "--plan", &vplan, "--yes"])
        .code(0);
    refused(
        &["apply", "--target", "validation", "--plan", &vplan, "--yes"],
        "the saved plan is stale",
    );
    // Stale by a hand edit of a live file (same generation).
    let live = target(&repo, "prod").join("current/worker.toml");
    let text = std::fs::read_to_string(&live).unwrap();
    std::fs::write(&live, text.replace("threads = 16", "threads = 15")).unwrap();
    refused(
        &["apply", "--target", "prod", "--plan", &pplan, "--yes"],
        "changed by hand",
    );
    let doc: LogDoc = parse(&repo.deploy(&["log", "--target", "prod", "--format", "json"]));
    assert_eq!(doc.records[0].outcome, "refused");
}

/// Edit a saved plan with `edit` and seal it again, as anyone can: the checksum is a plain
/// SHA-256 of the compact JSON without it.
fn edit_and_reseal(path: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut doc);
    let map = doc.as_object_mut().unwrap();
    map.remove("checksum");
    let sum = sha256_hex(&serde_json::to_vec(&doc).unwrap());
    doc.as_object_mut()
        .unwrap()
        .insert("checksum".into(), sum.into());
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// What a reviewer reads in a plan (its changes and summary) is bound: an edited and resealed
/// plan is refused, naming what differs, and the target is left as it was.
#[test]
fn a_resealed_plan_whose_claims_were_edited_is_refused() {
    let repo = Repo::base();
    deploy_yes(&repo, "validation").code(0);
    set_threads(&repo, 8);
    let plans = tempfile::tempdir().unwrap();
    let reviewed = plans.path().join("reviewed.json");
    repo.deploy(&[
        "plan",
        "--target",
        "validation",
        "--out",
        reviewed.to_str().unwrap(),
    ])
    .code(0);
    let targets = repo.path().join("targets");
    let refused = |edit: &dyn Fn(&mut serde_json::Value), says: &str| {
        let path = plans.path().join("edited.json");
        std::fs::copy(&reviewed, &path).unwrap();
        edit_and_reseal(path.to_str().unwrap(), edit);
        let before = snapshot(&targets);
        let run = repo.deploy(&[
            "apply",
            "--target",
            "validation",
            "--plan",
            path.to_str().unwrap(),
            "--yes",
        ]);
        run.code(3)
            .stderr_has("the saved plan was edited")
            .stderr_has(says)
            .stderr_has("nothing was changed");
        let after = snapshot(&targets);
        for (k, v) in &before {
            if !k.ends_with("log.jsonl") && !k.ends_with("log.checkpoint") {
                assert_eq!(after.get(k), Some(v), "{k} changed\n{}", run.stderr);
            }
        }
    };
    // The diff a reviewer reads says 9 threads; the commit deploys 8.
    refused(
        &|doc| {
            let diff = doc["changes"][0]["diff"].as_str().unwrap().to_owned();
            assert!(diff.contains("threads = 8"), "{diff}");
            doc["changes"][0]["diff"] = diff.replace("threads = 8", "threads = 9").into();
        },
        "changes: `worker`: the diff in the plan is not the one the commit gives",
    );
    // The change is hidden from the reviewer altogether.
    refused(
        &|doc| {
            doc["changes"] = serde_json::json!([]);
            doc["summary"] = serde_json::json!({"add": 0, "change": 0, "remove": 0});
        },
        "the commit changes `worker`, which the plan does not show",
    );
    refused(
        &|doc| doc["summary"]["change"] = 0.into(),
        "summary: the plan says 0 to add, 0 to change, 0 to remove",
    );
    refused(
        &|doc| doc["config_sha256"] = "0".repeat(64).into(),
        "config_sha256: the plan says 0000",
    );
    // Claiming the secrets unbound would let any secret value through.
    refused(
        &|doc| doc["secrets_bound"] = false.into(),
        "secrets_bound: the plan says false",
    );
    // The plan as written still applies.
    repo.deploy(&[
        "apply",
        "--target",
        "validation",
        "--plan",
        reviewed.to_str().unwrap(),
        "--yes",
    ])
    .code(0);
}

/// `deploy -C repo ARGS` on a pseudo-terminal `cols` wide (script(1) merges the streams).
fn log_on_terminal(repo: &Repo, args: &str, cols: u16) -> String {
    let cmd = format!(
        "stty cols {cols}; {} -C {} {args}",
        env!("CARGO_BIN_EXE_deploy"),
        repo.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) runs (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

#[test]
fn log_reasons_fit_the_terminal_and_are_never_cut_elsewhere() {
    let repo = Repo::base();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    // A layer both environments extend: validation's configuration changes too.
    repo.edit(
        "environments/_common.toml",
        &[("threads = 4", "threads = 5")],
    );
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 17")],
    );
    let commit = repo.commit("threads 5 everywhere");
    // Refused by the promotion gate, and recorded with a long reason ending in the commit.
    repo.deploy(&["--target", "prod", "--yes"]).code(3);
    let tail = format!("not what commit {} gives `validation`", &commit[..12]);

    // Not a terminal (a file, a pipe, CI): the whole reason.
    repo.deploy(&["log", "--target", "prod"])
        .code(0)
        .stdout_has(&format!("{tail}\n"));
    let json = repo.deploy(&["log", "--target", "prod", "--format", "json"]);
    json.code(0).stdout_has(&tail);

    // A narrow terminal: cut to its width, marked with `…`.
    let narrow = log_on_terminal(&repo, "log --target prod", 70);
    let line = narrow
        .lines()
        .find(|l| l.contains("↳ promotion gate"))
        .unwrap_or_else(|| panic!("no reason line:\n{narrow}"));
    assert!(line.ends_with('…'), "{line}");
    assert_eq!(line.chars().count(), 70, "{line}");
    // A wide one: all of it.
    let wide = log_on_terminal(&repo, "log --target prod", 500);
    assert!(wide.contains(&format!("{tail}\n")), "{wide}");
}
