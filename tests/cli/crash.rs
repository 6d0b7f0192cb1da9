//! Crash safety of `deploy --target` on the `dir` target, with a real `kill -9`.
//!
//! The test build has the `failpoints` feature: `ENVLOCK_FAILPOINT=<name>` stops `deploy` at
//! that point (it prints `failpoint <name> reached`), and the test kills it there with SIGKILL.
//! Then, for every point: `current` resolves to one whole generation, byte-for-byte the old
//! files or the new ones (never a mix, never missing); the next run says what it found, resolves
//! it (exit 0, or 4 when the new generation fails its health check), leaves no journal, and the
//! run after that has nothing left to do.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::OnceLock;

use crate::harness::{Repo, wait_for_line};
use crate::lifecycle::{current_link, live_files};

/// `*.toml` file name -> bytes, as read through `current/`.
type Files = BTreeMap<String, Vec<u8>>;

const ENV: &str = "validation";

/// Resources of the generation live before the crash (and of generation 1, with other values).
const OLD_RESOURCES: [&str; 6] = ["worker", "r1", "r2", "r3", "r4", "r5"];
/// Resources of the new commit: one removed (`r5`), one added (`r6`), all others changed.
const NEW_RESOURCES: [&str; 6] = ["worker", "r1", "r2", "r3", "r4", "r6"];

/// `environments/validation.toml` with `threads = threads` in every resource, `keep = 2`
/// (so that a third generation prunes the first), and an optional `[health] command` (a TOML
/// array).
fn env_file(threads: u32, resources: &[&str], health: Option<&str>) -> String {
    let mut s = String::from(
        "[environment]\n\
         account = \"111111111111\"\n\
         schema = \"svc\"\n\
         branch = \"main\"\n\
         markers = [\"validation.example.com\"]\n\
         \n\
         [target]\n\
         kind = \"dir\"\n\
         path = \"targets/validation\"\n\
         keep = 2\n",
    );
    if let Some(command) = health {
        s.push_str(&format!(
            "\n[health]\ncommand = {command}\ntimeout = \"60s\"\n"
        ));
    }
    for name in resources {
        s.push_str(&format!(
            "\n[settings.{name}]\n\
             queue = \"arn:aws:sqs:eu-west-1:111111111111:jobs\"\n\
             engine = \"conformer-ctc\"\n\
             threads = {threads}\n"
        ));
    }
    s
}

/// The new commit's files as envlock writes them, from a deployment of its own.
fn new_files() -> &'static Files {
    static NEW: OnceLock<Files> = OnceLock::new();
    NEW.get_or_init(|| {
        let repo = Repo::base();
        repo.write(
            "environments/validation.toml",
            env_file(3, &NEW_RESOURCES, None),
        );
        repo.commit("new");
        repo.deploy(&["--target", ENV, "--yes"]).code(0);
        let files = live_files(&repo.path().join("targets/validation"));
        assert_eq!(files.len(), NEW_RESOURCES.len());
        files
    })
}

/// How the target looks before the deployment that is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Never deployed: the killed run is the first one (it adopts the target).
    Fresh,
    /// Generations 1 and 2 applied, 2 live; the killed run makes generation 3.
    Deployed,
}

/// What the new generation's health check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Passes,
    FailsOnNew,
}

/// What the target shows at the instant of the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    Old,
    New,
}

struct Scenario {
    repo: Repo,
    /// Live before the killed run (empty for [`Start::Fresh`]).
    old: Files,
    /// The generation the killed run creates.
    new_generation: u64,
    /// The commit the killed run deploys.
    commit: String,
}

impl Scenario {
    /// A repository at the new commit, its target as `start` says, with `health` (a TOML array)
    /// in every commit.
    fn new(start: Start, health: Option<&str>) -> Scenario {
        let repo = Repo::base();
        let mut old = Files::new();
        let mut new_generation = 1;
        if start == Start::Deployed {
            for threads in [1, 2] {
                repo.write(
                    "environments/validation.toml",
                    env_file(threads, &OLD_RESOURCES, health),
                );
                repo.commit(&format!("validation: {threads} threads"));
                repo.deploy(&["--target", ENV, "--yes"]).code(0);
            }
            let target = repo.path().join("targets/validation");
            assert_eq!(current_link(&target), "generations/00000002");
            old = live_files(&target);
            assert_eq!(old.len(), OLD_RESOURCES.len());
            new_generation = 3;
        }
        repo.write(
            "environments/validation.toml",
            env_file(3, &NEW_RESOURCES, health),
        );
        let commit = repo.commit("validation: 3 threads, r6 instead of r5");
        assert_ne!(&old, new_files());
        Scenario {
            repo,
            old,
            new_generation,
            commit,
        }
    }

    fn target(&self) -> PathBuf {
        self.repo.path().join("targets/validation")
    }
}

/// A running `deploy`, killed with SIGKILL when dropped (a failed assertion must not leave it
/// sleeping at its failpoint forever).
struct Running(Child);

impl Running {
    /// `kill -9` and reap it.
    fn kill9(mut self) -> ExitStatus {
        self.0.kill().expect("SIGKILL deploy");
        self.0.wait().expect("reap deploy")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The invariant: `current` is absent (only while nothing was ever live) or resolves to one
/// complete generation whose files are exactly `old` or exactly `new`. Returns which.
#[track_caller]
fn assert_whole_generation(target: &Path, old: &Files, new: &Files, when: &str) -> Live {
    let files = live_files(target);
    if files.is_empty() {
        assert!(
            old.is_empty(),
            "{when}: no files are live, but the old generation had {:?}",
            old.keys()
        );
        assert!(
            target.join("current").symlink_metadata().is_err(),
            "{when}: `current` exists but holds no resources"
        );
        return Live::Old;
    }
    let link = current_link(target);
    let id = link.strip_prefix("generations/").unwrap_or("");
    assert!(
        id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit()),
        "{when}: current -> {link}, not generations/<id>"
    );
    assert!(
        target.join("current/.meta.json").is_file(),
        "{when}: the live generation {link} has no .meta.json (incomplete)"
    );
    if files == *old {
        Live::Old
    } else if files == *new {
        Live::New
    } else {
        let names = |f: &Files| f.keys().cloned().collect::<Vec<_>>();
        let same_as_old: Vec<_> = files
            .iter()
            .filter(|(k, v)| old.get(*k) == Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        let same_as_new: Vec<_> = files
            .iter()
            .filter(|(k, v)| new.get(*k) == Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        panic!(
            "{when}: current -> {link} is neither the old nor the new generation\n\
             live: {:?}\nold: {:?}\nnew: {:?}\nequal to old: {same_as_old:?}\n\
             equal to new: {same_as_new:?}",
            names(&files),
            names(old),
            names(new)
        );
    }
}

/// Run `deploy ARGS` until it reaches `point`, then `kill -9` it.
/// Run deploy until it reaches `point`, kill it with SIGKILL; returns what it printed on
/// stderr until then.
fn kill_at(repo: &Repo, args: &[&str], point: &str) -> String {
    let mut child = Running(repo.spawn_deploy(args, &[("ENVLOCK_FAILPOINT", point)]));
    let seen = wait_for_line(&mut child.0, &format!("failpoint {point} reached"));
    let status = child.kill9();
    assert_eq!(
        status.signal(),
        Some(9),
        "{point}: deploy was not killed by SIGKILL: {status:?}"
    );
    seen
}

/// The log verifies and holds the killed attempt's outcome exactly once: recorded by the next
/// run when the killed one died before recording it, never twice.
#[track_caller]
fn assert_recorded_once(s: &Scenario, target: &Path, health: Health, when: &str) {
    let verify = s.repo.deploy(&["log", "verify", "--target", ENV]);
    assert_eq!(
        verify.code, 0,
        "{when}: the log does not verify\n{}{}",
        verify.stdout, verify.stderr
    );
    let log = std::fs::read_to_string(target.join(".envlock/log.jsonl")).unwrap_or_default();
    let count = |outcome: &str| {
        log.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a record is JSON"))
            .filter(|r| r["commit"] == s.commit.as_str() && r["outcome"] == outcome)
            .count()
    };
    let (applied, rolled_back) = match health {
        Health::Passes => (1, 0),
        Health::FailsOnNew => (0, 1),
    };
    assert_eq!(count("applied"), applied, "{when}: applied records\n{log}");
    assert_eq!(
        count("rolled-back"),
        rolled_back,
        "{when}: rolled-back records\n{log}"
    );
}

/// Points whose kill leaves a journal (the next run must say it found an interrupted
/// deployment).
const JOURNALED: &[&str] = &[
    "after-journal",
    "dir-write-half",
    "dir-before-generation-rename",
    "dir-before-switch",
    "dir-switch-before-rename",
    "after-switch",
    "after-journal-verifying",
    "before-record",
    "before-clear-journal",
    "before-rollback",
    "rollback-before-switch",
    "rollback-after-switch",
];

/// Kill `deploy --target validation --yes` at `point`, check the invariant, let the next run
/// resolve it, and check the end state.
fn crash_at(point: &str, start: Start, health: Health, live_at_kill: Live) {
    let health_cmd = match (health, start) {
        (Health::Passes, Start::Fresh) => None,
        (Health::Passes, Start::Deployed) => Some("['true']".to_owned()),
        (Health::FailsOnNew, Start::Fresh) => {
            Some("['sh', '-c', 'test \"$DEPLOY_GENERATION\" != 1']".to_owned())
        }
        (Health::FailsOnNew, Start::Deployed) => {
            Some("['sh', '-c', 'test \"$DEPLOY_GENERATION\" != 3']".to_owned())
        }
    };
    let s = Scenario::new(start, health_cmd.as_deref());
    let target = s.target();
    let new = new_files();
    let journal = target.join(".envlock/journal.json");
    let journaled = JOURNALED.contains(&point);

    kill_at(&s.repo, &["--target", ENV, "--yes"], point);

    // At the instant of the kill.
    let when = format!("killed at {point}");
    let live = assert_whole_generation(&target, &s.old, new, &when);
    assert_eq!(live, live_at_kill, "{when}: the wrong generation is live");
    assert_eq!(
        journal.exists(),
        journaled,
        "{when}: a journal should {}be left",
        if journaled { "" } else { "not " }
    );
    // `status` reads a crashed target and shows the journal.
    let status = s.repo.deploy(&["status", "--target", ENV]);
    assert_eq!(status.code, 0, "{when}: status failed:\n{}", status.stderr);
    if journaled {
        assert!(
            status.stdout.contains("journal:") && status.stdout.contains("interrupted"),
            "{when}: status does not show the journal:\n{}",
            status.stdout
        );
    }

    // The next run resolves it.
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    let when = format!("the run after a kill at {point}");
    let expected = match health {
        Health::Passes => 0,
        Health::FailsOnNew => 4,
    };
    assert_eq!(
        run.code, expected,
        "{when}: unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout, run.stderr
    );
    if journaled {
        assert!(
            run.stderr.contains("Found an interrupted apply"),
            "{when}: it does not say what it found\n{}",
            run.stderr
        );
    } else {
        assert!(
            !run.stderr.contains("interrupted"),
            "{when}: it reports an interruption that left no journal\n{}",
            run.stderr
        );
    }
    assert!(!journal.exists(), "{when}: the journal is still there");
    assert_recorded_once(&s, &target, health, &when);
    let live = assert_whole_generation(&target, &s.old, new, &when);
    match health {
        Health::Passes => {
            assert_eq!(live, Live::New, "{when}: the new configuration is not live");
            let again = s.repo.deploy(&["--target", ENV, "--yes"]);
            assert_eq!(again.code, 0, "{point}: third run failed\n{}", again.stderr);
            assert!(
                again.stderr.contains("No changes"),
                "{point}: the third run still had work to do\n{}{}",
                again.stdout,
                again.stderr
            );
            assert_eq!(live_files(&target), *new);
        }
        Health::FailsOnNew => {
            assert_eq!(live, Live::Old, "{when}: the old configuration is not live");
            // Killed before the health check's verdict was acted on: it runs again; killed
            // while rolling back: the rollback is finished.
            let n = s.new_generation;
            assert!(
                run.stderr
                    .contains(&format!("health check failed on generation {n}"))
                    || run.stderr.contains(&format!("generation {n} had failed")),
                "{when}: it does not say the new generation failed\n{}",
                run.stderr
            );
            if start == Start::Deployed {
                assert_eq!(current_link(&target), "generations/00000002");
                assert!(
                    run.stderr.contains("live again: generation 2"),
                    "{when}\n{}",
                    run.stderr
                );
            } else {
                assert!(
                    run.stderr.contains("live again: nothing"),
                    "{when}\n{}",
                    run.stderr
                );
            }
        }
    }
    assert!(!journal.exists());
}

macro_rules! crash_tests {
    ($($test:ident: $point:literal, $start:ident, $health:ident, $live:ident;)*) => {
        $(
            #[test]
            fn $test() {
                crash_at($point, Start::$start, Health::$health, Live::$live);
            }
        )*
        /// Every point of the apply path, in order (a test per point below).
        const APPLY_PATH: &[&str] = &[$($point),*];
    };
}

crash_tests! {
    // A second deployment: generation 2 (old) is live, the killed run makes generation 3 (new).
    kill_after_lock: "after-lock", Deployed, Passes, Old;
    kill_after_confirm: "after-confirm", Deployed, Passes, Old;
    kill_after_journal: "after-journal", Deployed, Passes, Old;
    kill_halfway_through_writing_the_generation: "dir-write-half", Deployed, Passes, Old;
    kill_before_the_generation_rename: "dir-before-generation-rename", Deployed, Passes, Old;
    kill_before_the_switch: "dir-before-switch", Deployed, Passes, Old;
    kill_between_symlink_and_rename: "dir-switch-before-rename", Deployed, Passes, Old;
    kill_after_the_switch: "after-switch", Deployed, Passes, New;
    kill_after_journal_says_verifying: "after-journal-verifying", Deployed, Passes, New;
    kill_before_the_outcome_is_recorded: "before-record", Deployed, Passes, New;
    kill_before_the_journal_is_cleared: "before-clear-journal", Deployed, Passes, New;
    kill_before_pruning: "before-prune", Deployed, Passes, New;
    kill_in_the_middle_of_pruning: "dir-prune-mid", Deployed, Passes, New;
    kill_before_rolling_back_a_failed_health_check: "before-rollback", Deployed, FailsOnNew, New;
    kill_before_the_rollback_switch: "rollback-before-switch", Deployed, FailsOnNew, New;
    kill_after_the_rollback_switch: "rollback-after-switch", Deployed, FailsOnNew, Old;

    // The first deployment: nothing live before, so "old" is no `current` at all.
    first_deploy_kill_after_lock: "after-lock", Fresh, Passes, Old;
    first_deploy_kill_after_confirm: "after-confirm", Fresh, Passes, Old;
    first_deploy_kill_after_adopt: "after-adopt", Fresh, Passes, Old;
    first_deploy_kill_after_journal: "after-journal", Fresh, Passes, Old;
    first_deploy_kill_halfway_through_writing: "dir-write-half", Fresh, Passes, Old;
    first_deploy_kill_before_the_generation_rename: "dir-before-generation-rename", Fresh, Passes, Old;
    first_deploy_kill_before_the_switch: "dir-before-switch", Fresh, Passes, Old;
    first_deploy_kill_between_symlink_and_rename: "dir-switch-before-rename", Fresh, Passes, Old;
    first_deploy_kill_after_the_switch: "after-switch", Fresh, Passes, New;
    first_deploy_kill_after_journal_says_verifying: "after-journal-verifying", Fresh, Passes, New;
    first_deploy_kill_before_the_outcome_is_recorded: "before-record", Fresh, Passes, New;
    first_deploy_kill_before_the_journal_is_cleared: "before-clear-journal", Fresh, Passes, New;
    first_deploy_kill_before_pruning: "before-prune", Fresh, Passes, New;
    first_deploy_kill_before_rolling_back: "before-rollback", Fresh, FailsOnNew, New;
    first_deploy_kill_before_the_rollback_switch: "rollback-before-switch", Fresh, FailsOnNew, New;
    first_deploy_kill_after_the_rollback_switch: "rollback-after-switch", Fresh, FailsOnNew, Old;
}

/// Every failpoint the source defines is killed at by a test above (a new point without a
/// test fails here).
#[test]
fn every_failpoint_in_the_source_has_a_crash_test() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = std::collections::BTreeSet::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split("failpoint::hit(\"").skip(1) {
                    found.insert(part.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    // Points inside one target kind are killed at by that kind's tests.
    const OTHER_SUITES: &[&str] = &[
        "exec-before-switch",  // tests/cli/exec.rs (and `exec-before-step-<n>`)
        "seal-after-lock",     // tests/cli/seal.rs (a seal killed holding the lock)
        "migrate-after-stamp", // tests/cli/attack19.rs (a migration killed at its commit point)
        "migrate-after-moved", // tests/cli/attack19.rs (killed before its migrate record)
        "rollout-after-locks", // tests/cli/rollout.rs (a fleet's rollout killed at each step)
        "rollout-before-target",
        "rollout-baking",
        "rollout-undoing",
    ];
    let tested: std::collections::BTreeSet<String> = APPLY_PATH
        .iter()
        .chain(OTHER_SUITES)
        .map(|p| (*p).to_owned())
        .collect();
    let untested: Vec<_> = found.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "failpoints without a crash test: {untested:?}"
    );
    let unknown: Vec<_> = tested.difference(&found).collect();
    assert!(
        unknown.is_empty(),
        "tests for failpoints the source lacks: {unknown:?}"
    );
}

/// `[health] command` (TOML) that passes for every generation but 3 once `state/healthy`
/// exists, fails once `state/unhealthy` exists, and otherwise blocks (writing its pid to
/// `state/started` first) until it is killed.
const BLOCKING_HEALTH: &str = "['sh', '-c', '''
if [ \"$DEPLOY_GENERATION\" != 3 ] || [ -e state/healthy ]; then exit 0; fi
if [ -e state/unhealthy ]; then exit 1; fi
echo $$ > state/started.tmp && mv state/started.tmp state/started
exec sleep 30
''']";

/// Kill `deploy` while generation 3's health check blocks; returns the scenario once the
/// health check's own process is gone too.
fn kill_during_health_check() -> Scenario {
    let s = Scenario::new(Start::Deployed, Some(BLOCKING_HEALTH));
    s.repo.write("state/.keep", "");
    let mut child = Running(s.repo.spawn_deploy(&["--target", ENV, "--yes"], &[]));
    wait_for_line(&mut child.0, "Generation 3 is live.");
    // The health check runs now; wait until it has really started (not a timing assertion:
    // the deadline only keeps a broken build from hanging the suite).
    let started = s.repo.path().join("state/started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the health check never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = child.kill9();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    // The health check's `sleep` outlives its parent; end it.
    let pid = s.repo.read("state/started");
    let _ = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status();

    let target = s.target();
    let live = assert_whole_generation(
        &target,
        &s.old,
        new_files(),
        "killed during the health check",
    );
    assert_eq!(live, Live::New);
    assert!(target.join(".envlock/journal.json").exists());
    s
}

#[test]
fn kill_during_the_health_check_then_healthy_keeps_the_new_generation() {
    let s = kill_during_health_check();
    let target = s.target();
    s.repo.write("state/healthy", "");
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    run.code(0)
        .stderr_has("Found an interrupted apply")
        .stderr_has("generation 3 was left live and unverified")
        .stderr_has("health check passed on generation 3")
        .stderr_has("so it stays live");
    assert_eq!(current_link(&target), "generations/00000003");
    assert_eq!(live_files(&target), *new_files());
    assert!(!target.join(".envlock/journal.json").exists());
    s.repo
        .deploy(&["--target", ENV, "--yes"])
        .code(0)
        .stderr_has("No changes");
    assert_eq!(current_link(&target), "generations/00000003");
}

#[test]
fn kill_during_the_health_check_then_unhealthy_rolls_back() {
    let s = kill_during_health_check();
    let target = s.target();
    s.repo.write("state/unhealthy", "");
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    run.code(4)
        .stderr_has("Found an interrupted apply")
        .stderr_has("generation 3 was live but never verified")
        .stderr_has("health check failed on generation 3")
        .stderr_has("live again: generation 2")
        .stderr_has("after the rollback: health check passed on generation 2");
    assert_eq!(current_link(&target), "generations/00000002");
    assert_eq!(live_files(&target), s.old);
    assert!(!target.join(".envlock/journal.json").exists());
}

// ---------------------------------------------------------------------------------------------
// A kill during the recovery, and a kill of `deploy rollback`.

#[test]
fn a_kill_during_the_recovery_of_a_failed_health_check_is_recovered_too() {
    let s = Scenario::new(
        Start::Deployed,
        Some("['sh', '-c', 'test \"$DEPLOY_GENERATION\" != 3']"),
    );
    let target = s.target();
    let new = new_files();
    kill_at(&s.repo, &["--target", ENV, "--yes"], "before-rollback");
    // The next run finds generation 3 unverified, checks it, fails, and is killed while
    // switching back.
    kill_at(
        &s.repo,
        &["--target", ENV, "--yes"],
        "rollback-before-switch",
    );
    assert_eq!(
        assert_whole_generation(&target, &s.old, new, "killed during the recovery"),
        Live::New
    );
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    run.code(4)
        .stderr_has("Found an interrupted apply")
        .stderr_has("finishing the rollback")
        .stderr_has("live again: generation 2");
    assert_eq!(live_files(&target), s.old);
    assert!(!target.join(".envlock/journal.json").exists());
}

#[test]
fn a_kill_while_pruning_after_a_recovery_leaves_the_new_generation_live() {
    let s = Scenario::new(Start::Deployed, Some("['true']"));
    let target = s.target();
    let new = new_files();
    // Generation 3 is complete but was never made live.
    kill_at(&s.repo, &["--target", ENV, "--yes"], "dir-before-switch");
    // The next run deletes that never-live generation, deploys again (generation 3), and is
    // killed while pruning (keep = 2 of 3 generations) after its success.
    let seen = kill_at(&s.repo, &["--target", ENV, "--yes"], "dir-prune-mid");
    assert!(
        seen.contains("deleted the generation it had written: 3"),
        "stderr:\n{seen}"
    );
    assert_eq!(
        assert_whole_generation(&target, &s.old, new, "killed while pruning"),
        Live::New
    );
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    run.code(0).stderr_has("No changes");
    assert_eq!(live_files(&target), *new);
    assert!(!target.join(".envlock/journal.json").exists());
}

#[test]
fn a_kill_of_rollback_before_its_switch_leaves_the_generation_live_and_is_resolved() {
    let s = Scenario::new(Start::Deployed, Some("['true']"));
    let target = s.target();
    s.repo.deploy(&["--target", ENV, "--yes"]).code(0);
    let new = new_files();
    assert_eq!(live_files(&target), *new);
    // Roll back from 3 (new) to 2 (old); killed just before `current` is renamed.
    kill_at(
        &s.repo,
        &["rollback", "--target", ENV, "--yes"],
        "dir-switch-before-rename",
    );
    assert_eq!(
        assert_whole_generation(&target, &s.old, new, "rollback killed before its switch"),
        Live::New
    );
    assert!(target.join(".envlock/journal.json").exists());
    // Running the rollback again resolves the journal and then rolls back.
    let run = s.repo.deploy(&["rollback", "--target", ENV, "--yes"]);
    run.code(0)
        .stderr_has("Found an interrupted rollback")
        .stderr_has("Rolled back:");
    assert_eq!(current_link(&target), "generations/00000002");
    assert_eq!(live_files(&target), s.old);
    assert!(!target.join(".envlock/journal.json").exists());
}

#[test]
fn a_kill_of_rollback_while_it_undoes_a_failed_health_check_is_resolved() {
    // Generation 2 fails its health check once generation 3 is live (the service moved on).
    let s = Scenario::new(
        Start::Deployed,
        Some("['sh', '-c', 'test \"$DEPLOY_GENERATION\" != 2 || test ! -e state/moved']"),
    );
    let target = s.target();
    s.repo.deploy(&["--target", ENV, "--yes"]).code(0);
    let new = new_files();
    s.repo.write("state/moved", "");
    // `rollback` makes 2 live, its health check fails, and it is killed once it has switched
    // back to 3.
    kill_at(
        &s.repo,
        &["rollback", "--target", ENV, "--yes"],
        "rollback-after-switch",
    );
    assert_eq!(
        assert_whole_generation(&target, &s.old, new, "rollback killed while undoing"),
        Live::New
    );
    let run = s.repo.deploy(&["--target", ENV, "--yes"]);
    run.code(4)
        .stderr_has("Found an interrupted rollback")
        .stderr_has("live again: generation 3");
    assert_eq!(current_link(&target), "generations/00000003");
    assert_eq!(live_files(&target), *new);
    assert!(!target.join(".envlock/journal.json").exists());
    s.repo
        .deploy(&["--target", ENV, "--yes"])
        .code(0)
        .stderr_has("No changes");
}

// ---------------------------------------------------------------------------------------------
// Found by these tests.

#[test]
fn rollback_after_a_recovered_crash_before_the_switch_restores_what_was_live() {
    let s = Scenario::new(Start::Deployed, Some("['true']"));
    let target = s.target();
    // Generation 3 is written completely, then the run dies before `current` moves.
    kill_at(&s.repo, &["--target", ENV, "--yes"], "dir-before-switch");
    assert_eq!(live_files(&target), s.old);
    // The next run resolves the journal and deploys the new commit.
    s.repo
        .deploy(&["--target", ENV, "--yes"])
        .code(0)
        .stderr_has("it stopped before switching");
    assert_eq!(live_files(&target), *new_files());
    // Rolling back must bring back what was live before the deployment: generation 2's files.
    s.repo
        .deploy(&["rollback", "--target", ENV, "--yes"])
        .code(0);
    assert!(
        live_files(&target) == s.old,
        "`deploy rollback` did not restore the configuration that was live before; \
         current -> {} (the new configuration: {}), generations: {:?}",
        current_link(&target),
        live_files(&target) == *new_files(),
        std::fs::read_dir(target.join("generations"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}
