//! The `exec` target through the README's smallest provider (`providers/dir-example/provider`,
//! one JSON file per resource in a directory) and `flaky`, a wrapper around it that fails the
//! calls a test names, prints garbage, hangs or crashes: a real provider process every time.
//!
//! What is checked is what lands in the provider's directory, byte for byte: a deployment is
//! all or nothing there, whatever fails, and a refusal writes nothing at all.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{Paused, Repo, Run};

pub(crate) const ENV: &str = "cloud";
const ACCOUNT: &str = "123456789012";
const NAMES: [&str; 5] = ["r1", "r2", "r3", "r4", "r5"];

/// Wraps the example provider. `FLAKY_LOG`: a file that gets `<operation> <resource>` per
/// call. `FLAKY_FAIL`: comma-separated `<operation>#<n>` (the n-th call of that operation, in
/// this log, fails). `FLAKY_MODE`: `garbage`, `hang`, `crash` or `proto2` for every call.
/// `FLAKY_SEEN`: a file that gets `<operation>` per call, and whether `DB_PASSWORD` was set.
const FLAKY: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, time
req = sys.stdin.read()
op = json.loads(req)
name = f"{op['operation']} {op.get('resource', '')}".strip()
log = os.environ.get("FLAKY_LOG")
n = 1
if log:
    if os.path.exists(log):
        with open(log) as f:
            n += sum(1 for line in f if line.split(" ")[0] == op["operation"])
    with open(log, "a") as f:
        f.write(name + "\n")
seen = os.environ.get("FLAKY_SEEN")
if seen:
    with open(seen, "a") as f:
        f.write(op["operation"] + (" inherited DB_PASSWORD" if "DB_PASSWORD" in os.environ else "") + "\n")
mode = os.environ.get("FLAKY_MODE", "")
if mode == "garbage":
    print("Traceback: this is not JSON")
    sys.exit(0)
if mode == "hang":
    time.sleep(3600)
if mode == "crash":
    print("provider: segfault in the SDK", file=sys.stderr)
    sys.exit(2)
if mode == "proto2":
    print(json.dumps({"protocol": 2, "account": "123456789012"}))
    sys.exit(0)
if f"{op['operation']}#{n}" in os.environ.get("FLAKY_FAIL", "").split(","):
    print(f"provider: throttled while writing {op.get('resource')}", file=sys.stderr)
    print(json.dumps({"protocol": 1, "error": {"code": "failed", "message": "ThrottlingException: Rate exceeded"}}))
    sys.exit(1)
here = os.path.dirname(os.path.abspath(__file__))
real = os.path.join(os.environ["FLAKY_REAL"])
out = subprocess.run([real], input=req.encode(), capture_output=True)
sys.stdout.buffer.write(out.stdout)
sys.stderr.buffer.write(out.stderr)
sys.exit(out.returncode)
"#;

pub(crate) fn example_provider() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/dir-example/provider")
}

/// A repository with `environments/cloud.toml` on an exec target through `flaky`, whose
/// provider directory is `<repo>/store` (its `.account` says [`ACCOUNT`]) and whose state is
/// `<repo>/state`.
pub(crate) struct Cloud {
    pub repo: Repo,
    /// The provider script's file name in the repository (it wraps `real`, logging each call).
    provider: &'static str,
    real: PathBuf,
    /// Lines added to `[target]`, e.g. `protocol = 2`.
    target_lines: &'static str,
}

impl Cloud {
    fn new(values: &[(&str, u32)], extra: &str) -> Cloud {
        Cloud::with_provider(("flaky", FLAKY), example_provider(), "", values, extra)
    }

    /// A repository whose provider is the script `(name, text)` around the provider `real`.
    pub(crate) fn with_provider(
        (provider, script): (&'static str, &str),
        real: PathBuf,
        target_lines: &'static str,
        values: &[(&str, u32)],
        extra: &str,
    ) -> Cloud {
        let repo = Repo::empty();
        repo.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
        repo.write(provider, script);
        let flaky = repo.path().join(provider);
        std::fs::set_permissions(&flaky, std::fs::Permissions::from_mode(0o755)).unwrap();
        repo.write(".gitignore", "store/\nstate/\nscratch/\n");
        std::fs::create_dir_all(repo.path().join("store")).unwrap();
        std::fs::create_dir_all(repo.path().join("scratch")).unwrap();
        std::fs::write(repo.path().join("store/.account"), format!("{ACCOUNT}\n")).unwrap();
        let cloud = Cloud {
            repo,
            provider,
            real,
            target_lines,
        };
        cloud.set(values, extra);
        cloud
    }

    /// Commit an environment file whose resources hold `threads = <n>`.
    pub(crate) fn set(&self, values: &[(&str, u32)], extra: &str) {
        let mut s = format!(
            "[environment]\naccount = \"{ACCOUNT}\"\nschema = \"svc\"\n\n\
             [target]\nkind = \"exec\"\ncommand = [\"./{}\"]\nstate = \"state\"\n{}{extra}\n\
             [target.options]\ndir = \"store\"\n",
            self.provider, self.target_lines
        );
        for (name, threads) in values {
            s.push_str(&format!(
                "\n[settings.{name}]\nengine = \"conformer-ctc\"\nthreads = {threads}\n"
            ));
        }
        self.repo.write(&format!("environments/{ENV}.toml"), s);
        self.repo.commit("cloud");
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.repo.path().join("store")
    }

    /// A file in the repository's git-ignored `scratch/`.
    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        self.repo.path().join("scratch").join(name)
    }

    /// The provider's directory: resource -> JSON text.
    pub(crate) fn files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(self.store()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                out.insert(
                    stem.to_owned(),
                    std::fs::read_to_string(entry.path()).unwrap(),
                );
            }
        }
        out
    }

    /// The provider calls logged since the last [`Cloud::take_calls`].
    pub(crate) fn take_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.scratch("calls")).unwrap_or_default();
        let _ = std::fs::remove_file(self.scratch("calls"));
        text.lines().map(str::to_owned).collect()
    }

    pub(crate) fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "FLAKY_LOG".to_owned(),
                self.scratch("calls").display().to_string(),
            ),
            ("FLAKY_REAL".to_owned(), self.real.display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    pub(crate) fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.repo.deploy_env(args, &env)
    }

    pub(crate) fn deploy(&self, extra: &[(&str, &str)]) -> Run {
        self.run(&["--target", ENV, "--yes"], extra)
    }

    /// `(outcome, reason)` of every record in the log, oldest first; the log verifies.
    pub(crate) fn outcomes(&self) -> Vec<(String, String)> {
        crate::harness::log_outcomes(&self.repo, ENV)
    }

    /// Start `deploy --target cloud --yes` stopped at failpoint `point` (going on once `resume`
    /// exists, if given).
    pub(crate) fn paused(
        &self,
        point: &str,
        resume: Option<&Path>,
        extra: &[(&str, &str)],
    ) -> Paused {
        Paused::start(
            self.repo.path(),
            &["--target", ENV, "--yes"],
            point,
            resume,
            &self.env(extra),
        )
    }
}

/// The JSON the example provider stores for `{engine, threads}`.
pub(crate) fn stored(threads: u32) -> String {
    format!(r#"{{"engine": "conformer-ctc", "threads": {threads}}}"#)
}

pub(crate) fn all(threads: u32) -> Vec<(&'static str, u32)> {
    NAMES.iter().map(|n| (*n, threads)).collect()
}

pub(crate) fn all_stored(threads: u32) -> BTreeMap<String, String> {
    NAMES
        .iter()
        .map(|n| (n.to_string(), stored(threads)))
        .collect()
}

#[test]
fn deploys_change_status_and_rollback_through_the_example_provider() {
    let cloud = Cloud::new(&all(4), "");
    let run = cloud.deploy(&[]);
    run.code(0).stderr_has("Adopted exec ./flaky");
    assert_eq!(cloud.files(), all_stored(4));
    // identity, the emptiness check, the plan's read, the re-read under the lock, 5 puts.
    let calls = cloud.take_calls();
    assert_eq!(
        calls,
        [
            "identity", "read", "read", "read", "apply r1", "apply r2", "apply r3", "apply r4",
            "apply r5"
        ]
    );

    // Nothing to do: identity and one read, no write.
    cloud.deploy(&[]).code(0).stderr_has("No changes");
    assert_eq!(cloud.take_calls(), ["identity", "read"]);

    // One changed, one removed, one added.
    cloud.set(&[("r1", 8), ("r2", 4), ("r3", 4), ("r4", 4), ("r6", 1)], "");
    let run = cloud.deploy(&[]);
    run.code(0)
        .stdout_has("~ r1")
        .stdout_has("- r5")
        .stdout_has("+ r6");
    let mut want = all_stored(4);
    want.insert("r1".into(), stored(8));
    want.remove("r5");
    want.insert("r6".into(), stored(1));
    assert_eq!(cloud.files(), want);
    assert_eq!(
        cloud.take_calls(),
        [
            "identity",
            "read",
            "read",
            "apply r1",
            "apply r6",
            "delete r5"
        ]
    );

    // A hand edit behind envlock's back, and a stray resource, show in status.
    std::fs::write(cloud.store().join("r2.json"), stored(99)).unwrap();
    std::fs::write(cloud.store().join("stray.json"), "{}").unwrap();
    let status = cloud.run(&["status", "--target", ENV], &[]);
    status.code(0);
    assert!(
        status.stdout.contains("r2") && status.stdout.contains("stray"),
        "{}",
        status.stdout
    );
    // A plan that reverts them says so.
    let plan = cloud.run(&["plan", "--target", ENV], &[]);
    plan.code(0)
        .stdout_has("Note: 2 resources were changed outside envlock since generation ")
        .stdout_has("~ r2 (change)  <- edited outside envlock since generation ")
        .stdout_has("- stray (remove)  <- added outside envlock since generation ");

    // Rollback to generation 1 puts back exactly what generation 1 wrote.
    std::fs::remove_file(cloud.store().join("stray.json")).unwrap();
    std::fs::write(cloud.store().join("r2.json"), stored(4)).unwrap();
    cloud.take_calls();
    cloud
        .run(&["rollback", "--target", ENV, "--to", "1", "--yes"], &[])
        .code(0);
    assert_eq!(cloud.files(), all_stored(4));
    let outcomes: Vec<String> = cloud.outcomes().into_iter().map(|(o, _)| o).collect();
    assert_eq!(outcomes, ["applied", "unchanged", "applied", "applied"]);
}

#[test]
fn credentials_of_another_account_are_refused_before_anything_is_read() {
    let cloud = Cloud::new(&all(4), "");
    std::fs::write(cloud.store().join(".account"), "999999999999\n").unwrap();
    let run = cloud.deploy(&[]);
    run.code(3).stderr_has(
        "the target's credentials reach account 999999999999, not `cloud` (account 123456789012)",
    );
    assert_eq!(cloud.take_calls(), ["identity"]);
    assert!(cloud.files().is_empty());
    assert!(!cloud.repo.path().join("state").exists());
    // `plan` and `status` refuse the same way.
    cloud.run(&["plan", "--target", ENV], &[]).code(3);
    cloud.run(&["status", "--target", ENV], &[]).code(3);
    assert_eq!(cloud.take_calls(), ["identity", "identity"]);
}

#[test]
fn a_scope_holding_resources_envlock_did_not_write_is_not_adopted() {
    let cloud = Cloud::new(&all(4), "");
    std::fs::write(cloud.store().join("legacy.json"), r#"{"a": 1}"#).unwrap();
    let before = crate::harness::snapshot(&cloud.store());
    cloud
        .deploy(&[])
        .code(3)
        .stderr_has("not empty and has no envlock stamp")
        .stderr_has("legacy")
        .stderr_has("adopts only a scope that holds nothing yet");
    assert_eq!(crate::harness::snapshot(&cloud.store()), before);
    assert!(!cloud.repo.path().join("state/.envlock/stamp.json").exists());
}

#[test]
fn a_failure_on_the_third_of_five_is_undone_in_reverse_order() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    cloud.take_calls();
    let run = cloud.deploy(&[("FLAKY_FAIL", "apply#3")]);
    run.code(4)
        .stderr_has("operation `apply` of `r3`: failed: ThrottlingException: Rate exceeded")
        .stderr_has("the 2 changes already made were undone in reverse order")
        .stderr_has("provider log: provider: throttled while writing r3");
    assert_eq!(cloud.files(), all_stored(4));
    assert_eq!(
        cloud.take_calls(),
        // After the failure one read checks whether r3 was written all the same.
        [
            "identity", "read", "read", "apply r1", "apply r2", "apply r3", "read", "apply r2",
            "apply r1"
        ]
    );
    assert!(
        !cloud
            .repo
            .path()
            .join("state/.envlock/exec-journal.json")
            .exists()
    );
    assert!(
        !cloud
            .repo
            .path()
            .join("state/.envlock/journal.json")
            .exists()
    );
    let outcomes = cloud.outcomes();
    assert_eq!(outcomes.last().unwrap().0, "failed");
    // The next run applies everything.
    cloud.deploy(&[]).code(0);
    assert_eq!(cloud.files(), all_stored(8));
}

#[test]
fn an_undo_that_fails_is_reported_resource_by_resource_and_finished_by_the_next_run() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    // The 3rd put fails, and so does the first undo (of r2); the undo of r1 succeeds.
    cloud.take_calls();
    let run = cloud.deploy(&[("FLAKY_FAIL", "apply#3,apply#4")]);
    run.code(1)
        .stderr_has("the apply FAILED half-way")
        .stderr_has("could NOT all be undone")
        .stderr_has("`r1`: restored to its previous value")
        .stderr_has("`r2`: STILL HOLDS THE NEW VALUE")
        .stderr_has("`r4`: untouched");
    let mut want = all_stored(4);
    want.insert("r2".into(), stored(8));
    assert_eq!(cloud.files(), want);
    assert!(
        cloud
            .repo
            .path()
            .join("state/.envlock/exec-journal.json")
            .exists()
    );
    // Never success while the undo is unfinished: the next run finishes it first, then deploys.
    let run = cloud.deploy(&[]);
    run.code(0).stderr_has("undid them in reverse order");
    assert_eq!(cloud.files(), all_stored(8));
    assert!(
        !cloud
            .repo
            .path()
            .join("state/.envlock/exec-journal.json")
            .exists()
    );
}

#[test]
fn a_concurrent_write_makes_the_deploy_stale_and_is_never_overwritten() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");

    // Between the plan and the writes: refused before the first write.
    let resume = cloud.repo.path().join("scratch/resume1");
    let paused = cloud.paused("after-confirm", Some(&resume), &[]);
    std::fs::write(cloud.store().join("r4.json"), stored(77)).unwrap();
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("`r4` was changed (version"), "{stderr}");
    let mut want = all_stored(4);
    want.insert("r4".into(), stored(77));
    assert_eq!(cloud.files(), want);

    // Between two writes: the conflicting step is refused and the others are undone.
    std::fs::write(cloud.store().join("r4.json"), stored(4)).unwrap();
    let resume = cloud.repo.path().join("scratch/resume2");
    let paused = cloud.paused("exec-before-step-3", Some(&resume), &[]);
    std::fs::write(cloud.store().join("r4.json"), stored(55)).unwrap();
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("operation `apply` of `r4`"), "{stderr}");
    assert!(
        stderr.contains("the 3 changes already made were undone"),
        "{stderr}"
    );
    let mut want = all_stored(4);
    want.insert("r4".into(), stored(55));
    assert_eq!(cloud.files(), want);
    let outcomes = cloud.outcomes();
    assert_eq!(outcomes.last().unwrap().0, "refused");
}

#[test]
fn a_deployer_killed_mid_apply_is_undone_by_the_next_run() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    cloud.paused("exec-before-step-3", None, &[]).kill9();
    let mut half = all_stored(4);
    half.insert("r1".into(), stored(8));
    half.insert("r2".into(), stored(8));
    assert_eq!(cloud.files(), half);

    // The next run undoes the two writes before anything else (it stops right after, at its
    // own first step, so the undo can be seen), then deploys.
    let resume = cloud.repo.path().join("scratch/resume");
    let paused = cloud.paused("exec-before-step-1", Some(&resume), &[]);
    assert_eq!(cloud.files(), all_stored(4));
    assert!(
        paused
            .stderr()
            .contains("had changed 2 of 5 resources (`r1`, `r2`); undid them in reverse order"),
        "{}",
        paused.stderr()
    );
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(cloud.files(), all_stored(8));
    let outcomes = cloud.outcomes();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        outcomes[1].1.contains("resolved by the next run"),
        "{outcomes:?}"
    );
}

#[test]
fn a_deployer_killed_after_its_last_step_is_undone_by_the_next_run() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    // Every resource holds the new value, but the new generation was never recorded.
    cloud.paused("exec-before-switch", None, &[]).kill9();
    assert_eq!(cloud.files(), all_stored(8));
    let resume = cloud.repo.path().join("scratch/resume");
    let paused = cloud.paused("exec-before-step-1", Some(&resume), &[]);
    assert_eq!(cloud.files(), all_stored(4));
    assert!(
        paused
            .stderr()
            .contains("had changed 5 of 5 resources (`r1`, `r2`, `r3`, `r4`, `r5`); undid them"),
        "{}",
        paused.stderr()
    );
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(cloud.files(), all_stored(8));
}

#[test]
fn a_failed_health_check_restores_every_resource() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    let health = "\n[health]\ncommand = [\"false\"]\ntimeout = \"5s\"\n";
    let mut env = cloud.repo.read(&format!("environments/{ENV}.toml"));
    env = env.replace("threads = 4", "threads = 8");
    env.push_str(health);
    cloud.repo.write(&format!("environments/{ENV}.toml"), env);
    cloud.repo.commit("unhealthy");
    cloud.deploy(&[]).code(4).stderr_has("Rolling back");
    assert_eq!(cloud.files(), all_stored(4));
    assert_eq!(cloud.outcomes().last().unwrap().0, "rolled-back");
}

#[test]
fn a_provider_that_misbehaves_is_named_and_nothing_is_written() {
    // Long enough for a Python provider to answer on a loaded 2-core CI machine (1s was not).
    let cloud = Cloud::new(&all(4), "timeout = \"5s\"\n");
    for (mode, code, needle) in [
        ("garbage", 3, "printed output that is not one JSON object"),
        ("hang", 3, "no answer within 5s"),
        ("crash", 3, "exited with status 2 without an error response"),
        (
            "proto2",
            3,
            "the provider speaks protocol 2; this envlock speaks protocol 1",
        ),
    ] {
        let run = cloud.deploy(&[("FLAKY_MODE", mode)]);
        run.code(code)
            .stderr_has("provider `./flaky`, operation `identity`")
            .stderr_has(needle);
        assert!(cloud.files().is_empty(), "{mode}");
        assert!(!cloud.repo.path().join("state").exists(), "{mode}");
    }
    let run = cloud.deploy(&[("FLAKY_MODE", "crash")]);
    run.stderr_has("provider log: provider: segfault in the SDK");
}

#[test]
fn secret_values_are_sent_as_secret_and_never_printed() {
    let cloud = Cloud::new(&all(4), "");
    let mut env = cloud.repo.read(&format!("environments/{ENV}.toml"));
    env.push_str("\n[settings.db]\npassword = { secret = \"env:DB_PASSWORD\" }\n");
    cloud.repo.write(&format!("environments/{ENV}.toml"), env);
    cloud.repo.commit("db");
    let seen = cloud.repo.path().join("scratch/seen");
    let run = cloud.deploy(&[
        ("DB_PASSWORD", "hunter2-very-secret"),
        ("FLAKY_SEEN", seen.to_str().unwrap()),
    ]);
    run.code(0);
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
    // The provider gets the value in the `apply` of its resource, never from the environment.
    let seen = std::fs::read_to_string(&seen).unwrap();
    assert!(seen.contains("apply"), "{seen}");
    assert!(!seen.contains("inherited"), "{seen}");
    let db = cloud.store().join("db.json");
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        r#"{"password": "hunter2-very-secret"}"#
    );
    // The example provider stores a secret readable by its owner only.
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Rotating it fails, and the value is put back; no output shows either value.
    cloud.take_calls();
    let run = cloud.deploy(&[
        ("DB_PASSWORD", "rotated-value-2"),
        ("FLAKY_FAIL", "apply#1"),
    ]);
    run.code(4);
    assert!(!run.stdout.contains("rotated-value-2") && !run.stderr.contains("rotated-value-2"));
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        r#"{"password": "hunter2-very-secret"}"#
    );
}

#[test]
fn the_readme_shows_the_provider_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let provider = std::fs::read_to_string(example_provider()).unwrap();
    for doc in ["README.md", "docs/providers.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        assert!(
            text.contains(&format!("```python\n{provider}```")),
            "{doc} does not show providers/dir-example/provider as it is"
        );
    }
}

#[test]
fn an_exec_target_without_state_is_a_configuration_error_with_its_place() {
    let cloud = Cloud::new(&all(4), "");
    let path = format!("environments/{ENV}.toml");
    cloud.repo.edit(&path, &[("state = \"state\"\n", "")]);
    cloud.repo.commit("no state");
    cloud
        .run(&["check"], &[])
        .code(1)
        .stderr_has("an `exec` target needs `state`")
        .stderr_has(&format!("{path}:5:1"));
    // Nothing ran: not even `identity`.
    cloud.deploy(&[]).code(1);
    assert!(cloud.take_calls().is_empty());
}

#[test]
fn a_deployment_behind_the_live_commit_writes_nothing_to_the_provider() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    cloud.deploy(&[]).code(0);
    // This clone goes back one commit, as a clone that did not pull is.
    cloud.repo.git(&["reset", "-q", "--hard", "HEAD~1"]);
    cloud.take_calls();
    let state = cloud.repo.path().join("state");
    crate::forward::refused_untouched(
        &state,
        &["`cloud` is live at", "1 commit behind", "pull, then deploy"],
        || cloud.deploy(&[]),
    );
    assert_eq!(cloud.files(), all_stored(8));
    assert!(
        cloud.take_calls().iter().all(|c| !c.starts_with("apply")),
        "nothing was written through the provider"
    );
}

/// Issue 16 item 7 on `exec`: the log in the state directory is sealed like a `dir` target's,
/// after the provider's identity; the provider's resources are not touched by the seal.
#[test]
fn a_damaged_log_in_the_state_directory_is_refused_then_sealed() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    let log = cloud.repo.path().join("state/.envlock/log.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"adopt\"", "\"adapt\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&log, &edited).unwrap();
    let files = cloud.files();
    cloud.set(&all(6), "");
    cloud
        .deploy(&[])
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it");
    assert_eq!(cloud.files(), files);
    cloud
        .run(
            &[
                "log",
                "seal",
                "--target",
                ENV,
                "--reason",
                "edited in a test",
                "--yes",
            ],
            &[],
        )
        .code(0)
        .stderr_has("Sealed: record 2");
    assert_eq!(
        cloud.files(),
        files,
        "a seal writes nothing to the provider"
    );
    assert!(std::fs::read_to_string(&log).unwrap().starts_with(&edited));
    cloud.deploy(&[]).code(0);
    assert_eq!(cloud.files(), all_stored(6));
    cloud
        .run(&["log", "verify", "--target", ENV], &[])
        .code(0)
        .stdout_has("SEALED DAMAGE:");
}

/// Issue 16 item 9 on `exec`: a value edited by hand after the last deployment (in the
/// provider's store) comes back byte for byte when the next deployment's health check fails;
/// a resource the apply created is deleted and one it deleted comes back.
#[test]
fn a_failed_health_check_restores_a_hand_edit_made_after_the_last_deployment() {
    let cloud = Cloud::new(&all(4), "");
    cloud.deploy(&[]).code(0);
    let hand = r#"{"engine": "whisper-large-v3", "threads": 1}"#;
    std::fs::write(cloud.store().join("r2.json"), hand).unwrap();
    let before = cloud.files();
    assert_eq!(before["r2"], hand);

    // Every resource to 8 threads, r5 removed, r6 added, and a health check that fails.
    let mut values: Vec<(&str, u32)> = NAMES[..4].iter().map(|n| (*n, 8)).collect();
    values.push(("r6", 8));
    cloud.set(&values, "");
    let mut env = cloud.repo.read(&format!("environments/{ENV}.toml"));
    env.push_str("\n[health]\ncommand = [\"false\"]\ntimeout = \"5s\"\n");
    cloud.repo.write(&format!("environments/{ENV}.toml"), env);
    cloud.repo.commit("unhealthy");
    cloud.deploy(&[]).code(4).stderr_has("Rolling back");
    assert_eq!(
        cloud.files(),
        before,
        "exactly what was there before the apply"
    );
    assert_eq!(cloud.outcomes().last().unwrap().0, "rolled-back");
    // The previous generation is live again in the state, and `status` shows the hand edit
    // as drift from it.
    cloud
        .run(&["status", "--target", ENV], &[])
        .code(0)
        .stdout_has("r2");
}
