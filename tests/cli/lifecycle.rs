//! `deploy status --target` and `deploy rollback --target` on the `dir` target: which generation
//! is live, drift from what envlock wrote, a repository that moved on, and making an earlier
//! generation live again under the same checks (exit 1 for bad requests, 3 for a foreign
//! target, 4 when the generation rolled back to fails its health check).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::harness::{Repo, snapshot};

/// The `*.toml` files readers see through `<target>/current/`: file name -> bytes. Empty when
/// there is no `current`.
pub(crate) fn live_files(target: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(target.join("current")) else {
        return out;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// Where `<target>/current` points (`generations/00000001`), as text.
pub(crate) fn current_link(target: &Path) -> String {
    std::fs::read_link(target.join("current"))
        .unwrap_or_else(|e| panic!("{}/current is not a symlink: {e}", target.display()))
        .display()
        .to_string()
}

fn head(repo: &Repo) -> String {
    repo.git(&["rev-parse", "HEAD"])
}

/// `deploy status --format json`, parsed with every field named: a renamed or added field
/// fails here, so programs reading it are not broken silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct StatusJson {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub target: String,
    pub repository: RepositoryJson,
    pub dirty: Vec<DirtyJson>,
    pub stamp: Option<StampJson>,
    pub live: Option<LiveJson>,
    pub head: String,
    pub head_is_live: bool,
    pub pending: CountsJson,
    pub pending_resources: Vec<String>,
    pub drift: DriftJson,
    pub backwards: Option<BackwardsJson>,
    pub generations: Vec<GenerationJson>,
    pub in_progress: Option<InProgressJson>,
    pub interrupted: Option<String>,
    pub leftovers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct BackwardsJson {
    pub relation: String,
    pub live_commit: String,
    pub live_by: Option<String>,
    pub live_since: String,
    pub commit: String,
    pub behind: usize,
    pub ahead: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RepositoryJson {
    pub path: String,
    pub remote: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirtyJson {
    pub path: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct InProgressJson {
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
    pub action: Option<String>,
    pub phase: String,
    pub commit: Option<String>,
    pub next: Option<u64>,
    pub previous: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct StampJson {
    environment: String,
    account: String,
    created: String,
    version: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct LiveJson {
    pub id: u64,
    pub commit: String,
    pub created: String,
    pub operator: Option<String>,
    pub config_sha256: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountsJson {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriftJson {
    pub checked: bool,
    pub edited: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct GenerationJson {
    id: u64,
    commit: String,
    created: String,
    live: bool,
    failed: Option<String>,
}

#[track_caller]
pub(crate) fn status_json(repo: &Repo, env: &str) -> StatusJson {
    let run = repo.deploy(&["status", "--target", env, "--format", "json"]);
    run.code(0);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.stdout))
}

// ---------------------------------------------------------------------------------------------
// status

#[test]
fn status_before_any_deploy_says_nothing_is_deployed_and_writes_nothing() {
    let repo = Repo::ungated_unadopted();
    let target = repo.path().join("targets/prod");
    let run = repo.deploy(&["status", "--target", "prod"]);
    run.code(0)
        .stdout_has("Status of `prod` (account 222222222222)")
        .stdout_has("empty: not adopted yet")
        .stdout_has("live:        nothing deployed")
        .stdout_has("not deployed: Plan: 1 to add, 0 to change, 0 to remove.")
        .stdout_has("drift:       -");
    assert!(
        target.symlink_metadata().is_err(),
        "status created {}",
        target.display()
    );

    let json = status_json(&repo, "prod");
    assert!(json.ok);
    assert!(json.stamp.is_none());
    assert!(json.live.is_none());
    assert!(json.generations.is_empty());
    assert_eq!(
        json.pending,
        CountsJson {
            add: 1,
            change: 0,
            remove: 0
        }
    );
    assert!(!json.drift.checked);
    assert!(target.symlink_metadata().is_err());
}

#[test]
fn status_after_deploy_shows_the_live_generation_and_no_drift() {
    let repo = Repo::ungated();
    let commit = head(&repo);
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let before = snapshot(&repo.path().join("targets/prod"));

    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("stamped for `prod` (account 222222222222)")
        .stdout_has(&format!(
            "live:        generation 1, commit {}",
            &commit[..12]
        ))
        .stdout_has(&format!("HEAD {} — up to date", &commit[..12]))
        .stdout_has("drift:       none")
        .stdout_has(&format!("*    1  {}", &commit[..12]));

    let json = status_json(&repo, "prod");
    let live = json.live.expect("a live generation");
    assert_eq!((live.id, live.commit.as_str()), (1, commit.as_str()));
    assert_eq!(json.head, commit);
    assert_eq!(json.environment, "prod");
    assert_eq!(json.account, "222222222222");
    let stamp = json.stamp.expect("stamped");
    assert_eq!(
        (stamp.environment.as_str(), stamp.account.as_str()),
        ("prod", "222222222222")
    );
    assert_eq!(
        json.pending,
        CountsJson {
            add: 0,
            change: 0,
            remove: 0
        }
    );
    assert!(json.pending_resources.is_empty());
    assert!(json.drift.checked);
    assert!(json.drift.edited.is_empty() && json.drift.added.is_empty());
    assert!(json.drift.removed.is_empty());
    assert_eq!(json.generations.len(), 1);
    assert!(json.generations[0].live);
    assert!(json.interrupted.is_none());

    // status reads only.
    assert_eq!(snapshot(&repo.path().join("targets/prod")), before);
}

#[test]
fn status_shows_a_repository_that_moved_on() {
    let repo = Repo::ungated();
    let deployed = head(&repo);
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 32")],
    );
    let moved = repo.commit("prod: more threads");

    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has(&format!(
            "live:        generation 1, commit {}",
            &deployed[..12]
        ))
        .stdout_has(&format!(
            "HEAD {} — not deployed: Plan: 0 to add, 1 to change, 0 to remove.",
            &moved[..12]
        ))
        .stdout_has("run `deploy plan --target prod` to see the diff")
        // The live files are still exactly what was written: that is not drift.
        .stdout_has("drift:       none");

    let json = status_json(&repo, "prod");
    assert_eq!(json.head, moved);
    assert_eq!(json.live.unwrap().commit, deployed);
    assert_eq!(
        json.pending,
        CountsJson {
            add: 0,
            change: 1,
            remove: 0
        }
    );
    assert_eq!(json.pending_resources, ["worker"]);
    assert!(json.drift.edited.is_empty());

    // A commit that changes nothing prod resolves to is "up to date", with a note.
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    repo.write("README.md", "docs only\n");
    let docs = repo.commit("docs");
    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has(&format!(
            "HEAD {} — up to date (the configuration is identical",
            &docs[..12]
        ));
}

#[test]
fn status_reports_files_edited_removed_and_added_by_hand() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let target = repo.path().join("targets/prod");
    let worker = target.join("current/worker.toml");
    let written = std::fs::read(&worker).unwrap();

    // Edited through `current/`: the generation's own file changes.
    let mut edited = written.clone();
    edited.extend_from_slice(b"\nthreads_override = 1\n");
    std::fs::write(&worker, &edited).unwrap();
    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("DRIFT: the live files differ from what envlock wrote")
        .stdout_has("edited by hand: current/worker.toml")
        .stdout_has("`deploy --target prod` replaces them with the reviewed configuration");
    let json = status_json(&repo, "prod");
    assert!(json.drift.checked);
    assert_eq!(json.drift.edited, ["worker"]);
    assert!(json.drift.added.is_empty() && json.drift.removed.is_empty());
    // The repository wants the reviewed bytes back.
    assert_eq!(json.pending.change, 1);

    // An extra file.
    std::fs::write(target.join("current/extra.toml"), "x = 1\n").unwrap();
    let run = repo.deploy(&["status", "--target", "prod"]);
    run.code(0)
        .stdout_has("edited by hand: current/worker.toml")
        .stdout_has("added by hand: current/extra.toml");
    let json = status_json(&repo, "prod");
    assert_eq!(json.drift.edited, ["worker"]);
    assert_eq!(json.drift.added, ["extra"]);
    assert!(json.drift.removed.is_empty());
    assert_eq!(
        json.pending,
        CountsJson {
            add: 0,
            change: 1,
            remove: 1
        }
    );

    // A removed file.
    std::fs::remove_file(&worker).unwrap();
    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("removed by hand: current/worker.toml")
        .stdout_has("added by hand: current/extra.toml");
    let json = status_json(&repo, "prod");
    assert!(json.drift.edited.is_empty());
    assert_eq!(json.drift.removed, ["worker"]);
    assert_eq!(json.drift.added, ["extra"]);
    assert_eq!(
        json.pending,
        CountsJson {
            add: 1,
            change: 0,
            remove: 1
        }
    );

    // Deploying puts the reviewed configuration back; the drift is gone.
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    assert_eq!(
        live_files(&target),
        BTreeMap::from([("worker.toml".to_owned(), written)])
    );
    repo.deploy(&["status", "--target", "prod"])
        .code(0)
        .stdout_has("live:        generation 2")
        .stdout_has("drift:       none");
}

#[test]
fn status_refuses_a_target_that_belongs_to_another_environment() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let validation = repo.path().join("targets/validation");

    // The same path for two environments is caught in the repository already.
    repo.edit(
        "environments/prod.toml",
        &[("path = \"targets/prod\"", "path = \"targets/validation\"")],
    );
    repo.commit("prod: copy-pasted path");
    let before = snapshot(&validation);
    repo.deploy(&["status", "--target", "prod"])
        .code(3)
        .stderr_has("error[duplicate-target]");
    assert_eq!(snapshot(&validation), before);

    // A copy of validation's target (stamp and all) at a path of prod's own is refused by
    // the stamp.
    let copy = repo.path().join("targets/copy");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&validation)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    repo.edit(
        "environments/prod.toml",
        &[("path = \"targets/validation\"", "path = \"targets/copy\"")],
    );
    repo.commit("prod: a copied target");
    let before_copy = snapshot(&copy);
    for format in ["text", "json"] {
        let run = repo.deploy(&["status", "--target", "prod", "--format", format]);
        run.code(3)
            .stderr_has("belongs to environment `validation` (account 111111111111), not to `prod` (account 222222222222)");
        assert!(
            !run.stdout.contains("worker"),
            "status showed a foreign target's content:\n{}",
            run.stdout
        );
    }
    assert_eq!(snapshot(&copy), before_copy);
    assert_eq!(snapshot(&validation), before);
}

// ---------------------------------------------------------------------------------------------
// rollback

/// `validation` deployed twice: generation 1 (threads = 4), generation 2 (threads = 8).
/// Returns the live files of each generation and their commits.
struct TwoGenerations {
    repo: Repo,
    gen1: BTreeMap<String, Vec<u8>>,
    gen2: BTreeMap<String, Vec<u8>>,
    commit1: String,
    commit2: String,
}

impl TwoGenerations {
    fn new() -> Self {
        let repo = Repo::ungated();
        let commit1 = head(&repo);
        repo.deploy(&["--target", "validation", "--yes"]).code(0);
        let target = repo.path().join("targets/validation");
        let gen1 = live_files(&target);
        repo.edit(
            "environments/validation.toml",
            &[(
                "endpoint = \"https://validation.example.com/healthz\"",
                "endpoint = \"https://validation.example.com/healthz\"\nthreads = 8",
            )],
        );
        let commit2 = repo.commit("validation: 8 threads");
        repo.deploy(&["--target", "validation", "--yes"]).code(0);
        let gen2 = live_files(&target);
        assert_ne!(gen1, gen2);
        assert_eq!(current_link(&target), "generations/00000002");
        TwoGenerations {
            repo,
            gen1,
            gen2,
            commit1,
            commit2,
        }
    }

    fn target(&self) -> std::path::PathBuf {
        self.repo.path().join("targets/validation")
    }
}

#[test]
fn rollback_makes_the_previous_generation_live_and_to_goes_forward_again() {
    let t = TwoGenerations::new();
    let target = t.target();

    t.repo
        .deploy(&["rollback", "--target", "validation", "--yes"])
        .code(0)
        .stdout_has(&format!(
            "from generation 2 (commit {}) to generation 1 (commit {}",
            &t.commit2[..12],
            &t.commit1[..12]
        ))
        .stderr_has("Rolled back:");
    assert_eq!(current_link(&target), "generations/00000001");
    assert_eq!(live_files(&target), t.gen1, "generation 1's bytes, exactly");
    assert!(!target.join(".envlock/journal.json").exists());

    // HEAD is generation 2's commit: status says so, and generation 1 is live.
    repo_status_has(
        &t.repo,
        &format!("live:        generation 1, commit {}", &t.commit1[..12]),
    );
    repo_status_has(
        &t.repo,
        "not deployed: Plan: 0 to add, 1 to change, 0 to remove.",
    );

    t.repo
        .deploy(&["rollback", "--target", "validation", "--to", "2", "--yes"])
        .code(0);
    assert_eq!(current_link(&target), "generations/00000002");
    assert_eq!(live_files(&target), t.gen2);

    // Rolling "back" to the live generation is a no-op.
    let before = snapshot(&target);
    t.repo
        .deploy(&["rollback", "--target", "validation", "--to", "2", "--yes"])
        .code(0)
        .stderr_has("Generation 2 is already live; nothing to do.");
    assert_eq!(snapshot(&target), before);

    // And the next deploy of HEAD is "no changes", not a new generation.
    t.repo
        .deploy(&["--target", "validation", "--yes"])
        .code(0)
        .stderr_has("No changes");
}

#[track_caller]
fn repo_status_has(repo: &Repo, needle: &str) {
    repo.deploy(&["status", "--target", "validation"])
        .code(0)
        .stdout_has(needle);
}

#[test]
fn rollback_to_a_generation_that_is_not_kept_lists_the_kept_ones() {
    let t = TwoGenerations::new();
    let target = t.target();
    let before = snapshot(&target);
    t.repo
        .deploy(&["rollback", "--target", "validation", "--to", "99", "--yes"])
        .code(1)
        .stderr_has("generation 99 is not kept on this target")
        .stderr_has("kept generations: 1, 2");
    assert_eq!(snapshot(&target), before);
}

#[test]
fn rollback_with_a_single_generation_has_nowhere_to_go() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let target = repo.path().join("targets/validation");
    let before = snapshot(&target);
    repo.deploy(&["rollback", "--target", "validation", "--yes"])
        .code(1)
        .stderr_has("there is nothing to roll back to");
    assert_eq!(snapshot(&target), before);
}

#[test]
fn rollback_of_a_target_never_deployed_is_an_error_and_writes_nothing() {
    let repo = Repo::ungated();
    repo.deploy(&["rollback", "--target", "validation", "--yes"])
        .code(1)
        .stderr_has("nothing to roll back");
    assert!(
        repo.path()
            .join("targets/validation")
            .symlink_metadata()
            .is_err()
    );
}

#[test]
fn rollback_without_yes_and_without_a_terminal_changes_nothing() {
    let t = TwoGenerations::new();
    let target = t.target();
    let before = snapshot(&target);
    t.repo
        .deploy(&["rollback", "--target", "validation"])
        .code(1)
        .stderr_has("nobody can confirm")
        .stderr_has("make generation 1 live again")
        .stderr_has("run `deploy rollback --target validation --to 1 --yes`");
    assert_eq!(snapshot(&target), before);
    assert_eq!(live_files(&target), t.gen2);
}

#[test]
fn rollback_refuses_a_target_that_belongs_to_another_environment() {
    let t = TwoGenerations::new();
    let validation = t.target();
    let copy = t.repo.path().join("targets/copy");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&validation)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    t.repo.edit(
        "environments/prod.toml",
        &[("path = \"targets/prod\"", "path = \"targets/copy\"")],
    );
    t.repo.commit("prod: a copied target");
    let (before_copy, before_validation) = (snapshot(&copy), snapshot(&validation));
    for args in [
        &["rollback", "--target", "prod", "--yes"][..],
        &["rollback", "--target", "prod", "--to", "1", "--yes"][..],
    ] {
        t.repo
            .deploy(args)
            .code(3)
            .stderr_has("belongs to environment `validation`");
    }
    assert_eq!(snapshot(&copy), before_copy);
    assert_eq!(snapshot(&validation), before_validation);
}

#[test]
fn rollback_whose_health_check_fails_is_rolled_back_again() {
    let repo = Repo::ungated();
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let target = repo.path().join("targets/prod");
    // Generation 2: more threads, and a health check that only generation 1 fails.
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 32"),
            (
                "command = [\"true\"]",
                "command = [\"sh\", \"-c\", \"test \\\"$DEPLOY_GENERATION\\\" != 1\"]",
            ),
        ],
    );
    repo.commit("prod: 32 threads, stricter health");
    repo.deploy(&["--target", "prod", "--yes"])
        .code(0)
        .stderr_has("health check passed on generation 2");
    let gen2 = live_files(&target);
    let run = repo.deploy(&["rollback", "--target", "prod", "--yes"]);
    run.code(4)
        .stderr_has("health check failed on generation 1")
        .stderr_has("live again: generation 2")
        .stderr_has("after the rollback: health check passed on generation 2");
    assert_eq!(current_link(&target), "generations/00000002");
    assert_eq!(live_files(&target), gen2);
    assert!(!target.join(".envlock/journal.json").exists());
    // Both generations are still kept.
    let json = {
        let run = repo.deploy(&["status", "--target", "prod", "--format", "json"]);
        run.code(0);
        serde_json::from_str::<StatusJson>(&run.stdout).unwrap()
    };
    let ids: Vec<_> = json.generations.iter().map(|g| (g.id, g.live)).collect();
    assert_eq!(ids, [(1, false), (2, true)]);
    assert!(json.drift.edited.is_empty());
}

#[test]
fn rollback_returns_to_what_was_live_before_not_to_a_generation_that_failed() {
    let repo = Repo::ungated();
    let target = repo.path().join("targets/prod");
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let good = live_files(&target);
    // Generation 2 fails its health check and is rolled back.
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 32"),
            (
                "command = [\"true\"]",
                "command = [\"sh\", \"-c\", \"test \\\"$DEPLOY_GENERATION\\\" != 2\"]",
            ),
        ],
    );
    repo.commit("prod: 32 threads (breaks the service)");
    repo.deploy(&["--target", "prod", "--yes"]).code(4);
    assert_eq!(live_files(&target), good);
    // Generation 3 fixes it.
    repo.edit(
        "environments/prod.toml",
        &[("threads = 32", "threads = 24")],
    );
    repo.commit("prod: 24 threads");
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    assert_eq!(current_link(&target), "generations/00000003");
    // "Roll back" means: what was live before generation 3, i.e. generation 1.
    let run = repo.deploy(&["rollback", "--target", "prod", "--yes"]);
    assert!(
        run.code == 0 && live_files(&target) == good,
        "rollback did not restore generation 1 (exit {}, current -> {})\n{}",
        run.code,
        current_link(&target),
        run.stderr
    );
}
