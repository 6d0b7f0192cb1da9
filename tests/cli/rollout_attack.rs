//! Attacks on fleet rollouts: a tired operator's configuration and an attacker who can write
//! files in one target's state. The real `deploy` binary against real `dir` targets.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{Repo, Run, free_port, snapshot};

const ENV: &str = "fleet";
const FILE: &str = "environments/fleet.toml";
const DIRS: [&str; 2] = ["canary", "eu-1"];
const SECRET: &str = "hunter2-s3cr3t";

struct Fleet {
    repo: Repo,
    targets: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            repo: Repo::ungated(),
            targets: tempfile::Builder::new()
                .prefix("envlock-attack")
                .tempdir()
                .unwrap(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.targets.path().join(name)
    }

    fn commit(&self, threads: u32, extra: &str) -> String {
        let mut s = String::from(
            "[environment]\naccount = \"555555555555\"\nmarkers = [\"fleet.example.com\"]\n\
             extends = [\"_common\"]\n\n",
        );
        for d in DIRS {
            s.push_str(&format!(
                "[targets.{d}]\nkind = \"dir\"\npath = \"{}\"\n\n",
                self.dir(d).display()
            ));
        }
        s.push_str(
            "[rollout]\ninterval = \"1s\"\ntimeout = \"2s\"\n\n[[rollout.wave]]\nname = \"all\"\n\
             targets = [\"*\"]\nbake = \"0s\"\n",
        );
        s.push_str(extra);
        s.push_str(&format!(
            "\n[settings.worker]\nqueue = \"arn:aws:sqs:eu-west-1:555555555555:jobs\"\n\
             endpoint = \"https://fleet.example.com/healthz\"\nthreads = {threads}\n"
        ));
        self.repo.write(FILE, s);
        self.repo.commit(&format!("fleet, {threads} threads"))
    }

    fn deploy(&self, args: &[&str]) -> Run {
        // A subcommand first (`status`, `adopt`), then the target, then the rest.
        let sub = usize::from(args.first().is_some_and(|a| !a.starts_with('-')));
        let mut all = args[..sub].to_vec();
        all.extend_from_slice(&["--target", ENV]);
        all.extend_from_slice(&args[sub..]);
        self.repo.deploy(&all)
    }

    fn journal(&self, target: &str) -> PathBuf {
        self.dir(target).join(".envlock/rollout")
    }

    /// A rollout journal as a run of this fleet would write it, with `commit` and `version`,
    /// started now (as one left by a run killed a moment ago would say).
    fn forge(&self, target: &str, version: u32, commit: &str, changed: Value) {
        // Times are compared to the second: "now" is a second after the last record.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        self.forge_started(
            target,
            version,
            commit,
            changed,
            &envlock::target::now_rfc3339(),
        );
    }

    fn forge_started(
        &self,
        target: &str,
        version: u32,
        commit: &str,
        changed: Value,
        started: &str,
    ) {
        let j = serde_json::json!({
            "version": version,
            "environment": ENV,
            "account": "555555555555",
            "commit": commit,
            "holder": {
                "user": "mallory", "host": "nowhere", "pid": 4_000_000,
                "since": "2026-01-01T00:00:00Z", "environment": ENV
            },
            "started": started,
            "waves": ["all"],
            "wave": 0,
            "phase": "baking",
            "changed": changed,
        });
        std::fs::write(self.journal(target), serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    }

    fn everything(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        DIRS.iter().map(|d| snapshot(&self.dir(d))).collect()
    }
}

fn no_panic(r: &Run) {
    assert_ne!(r.code, 101, "panicked\n--- stderr\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// A signal URL with credentials (`http://user:pass@host/`) is read, but its password is never
/// printed, sent or recorded: not in the progress, not in the halt, not in the log.
#[test]
fn a_signal_url_with_credentials_never_shows_the_password() {
    let fleet = Fleet::new();
    let port = free_port();
    fleet.commit(
        4,
        &format!(
            "\n[[rollout.verify]]\nhttp = \"http://alice:{SECRET}@127.0.0.1:{port}/healthz\"\n"
        ),
    );
    let r = fleet.deploy(&["--yes"]);
    r.code(4).stderr_has("halted and undone");
    assert!(!r.stderr.contains(SECRET), "{}", r.stderr);
    assert!(!r.stdout.contains(SECRET), "{}", r.stdout);
    let json = fleet.deploy(&["--yes", "--format", "json"]);
    json.code(4);
    assert!(!json.stdout.contains(SECRET), "{}", json.stdout);
    assert!(!json.stderr.contains(SECRET), "{}", json.stderr);
    for d in fleet.everything() {
        for (path, content) in d {
            assert!(!content.contains(SECRET), "{path}: {content}");
        }
    }
}

/// A forged journal whose commit is not ASCII is shown (or refused), never a panic.
#[test]
fn a_forged_journal_with_a_non_ascii_commit_does_not_panic() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.forge("canary", 1, "aéééééééééééé", serde_json::json!([]));
    let status = fleet.deploy(&["status"]);
    no_panic(&status);
    status
        .code(0)
        .stdout_has("Rollout INTERRUPTED: commit aéééééééééé");
    let run = fleet.deploy(&["--yes"]);
    no_panic(&run);
}

/// A journal of another format version (a newer envlock's, or a forgery) is refused with a
/// clear message, and nothing is written.
#[test]
fn a_journal_of_another_version_is_refused() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.commit(5, "");
    fleet.forge(
        "canary",
        99,
        "0123456789abcdef0123456789abcdef01234567",
        serde_json::json!([{"target": "canary", "before": null, "after": 1}]),
    );
    let before = fleet.everything();
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.stderr_has("version 99");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fleet.everything(),
        before,
        "a journal of version 99 was acted on"
    );
}

/// A rollout journal that does not match what its targets hold (a stale one restored from a
/// backup, or one forged in another target's state) is refused before anything is undone: it
/// would otherwise make an old generation, or nothing, live on every target it names.
#[test]
fn a_journal_that_did_not_make_the_live_generations_is_refused() {
    let fleet = Fleet::new();
    let old = fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    let new = fleet.commit(5, "");
    fleet.deploy(&["--yes"]).code(0);
    let before = fleet.everything();

    // Written in the second target's state, naming the first: a rollout of the OLD commit
    // that deployed `canary` first. Generation 2 (the new commit) is live there.
    fleet.forge(
        "eu-1",
        1,
        &old,
        serde_json::json!([{"target": "canary", "before": null, "after": 1}]),
    );
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(3).stderr_has("target `canary`");
    std::fs::remove_file(fleet.journal("eu-1")).unwrap();
    assert_eq!(fleet.everything(), before, "a stale journal was acted on");

    // The live commit, but a generation to go back to that the target never had.
    fleet.forge(
        "canary",
        1,
        &new,
        serde_json::json!([{"target": "canary", "before": 999, "after": 2}]),
    );
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(3).stderr_has("generation 999");
    std::fs::remove_file(fleet.journal("canary")).unwrap();
    assert_eq!(
        fleet.everything(),
        before,
        "a journal naming no generation was acted on"
    );
}

/// A huge `bake` or `timeout` (a typo of a tired operator: "300000000000y") is either refused
/// by `deploy check` or honoured; never a panic half-way through a rollout.
#[test]
fn a_huge_bake_or_timeout_never_panics_mid_rollout() {
    let fleet = Fleet::new();
    let port = free_port();
    let verify = format!("\n[[rollout.verify]]\nhttp = \"http://127.0.0.1:{port}/healthz\"\n");
    for (from, to) in [
        ("bake = \"0s\"", "bake = \"300000000000y\""),
        ("timeout = \"2s\"", "timeout = \"300000000000y\""),
    ] {
        fleet.commit(4, &verify);
        fleet.repo.edit(FILE, &[(from, to)]);
        fleet.repo.commit(to);
        let before = fleet.everything();
        let r = fleet.deploy(&["--yes"]);
        no_panic(&r);
        r.code(1).stderr_has("is longer than a year");
        assert_eq!(fleet.everything(), before, "{to}: written");
        no_panic(
            fleet
                .repo
                .deploy(&["check"])
                .stderr_has("is longer than a year"),
        );
    }
}

/// A protected fleet with a member nobody adopted: refused before anything is written, on
/// every target (not the adopted ones deployed and the new one refused half-way).
#[test]
fn a_protected_fleet_with_an_unadopted_member_writes_nothing() {
    let fleet = Fleet::new();
    let protect = |f: &Fleet| {
        f.repo.edit(
            FILE,
            &[(
                "[environment]\n",
                "[environment]\nprotected = true\nbranch = \"main\"\n",
            )],
        );
        f.repo.commit("protected");
    };
    fleet.commit(4, "");
    protect(&fleet);
    fleet.deploy(&["adopt", "--yes"]).code(0);
    fleet.deploy(&["--yes"]).code(0);
    let third = fleet.dir("eu-2");
    fleet.commit(
        5,
        &format!(
            "\n[targets.eu-2]\nkind = \"dir\"\npath = \"{}\"\n",
            third.display()
        ),
    );
    protect(&fleet);
    let before = fleet.everything();
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(fleet.everything(), before, "{}", r.stderr);
    assert!(!third.join(".envlock").exists(), "{}", r.stderr);
}

/// A second `deploy --target fleet` while one bakes: exit 5, nothing written by it (the
/// running rollout's journal not taken for an interrupted one, nothing undone).
#[test]
fn a_second_rollout_while_one_bakes_is_refused_and_writes_nothing() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.commit(5, "");
    fleet.repo.edit(FILE, &[("bake = \"0s\"", "bake = \"6s\"")]);
    fleet.repo.commit("bake 6s");
    let mut first = fleet.repo.spawn_deploy(&["--target", ENV, "--yes"], &[]);
    crate::harness::wait_for_line(&mut first, "Deployed: `fleet` target `eu-1`");
    // Its journal says `baking` right after that line; then nothing is written for 6 s.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let during = fleet.everything();
    let second = fleet.deploy(&["--yes"]);
    no_panic(&second);
    second.code(5);
    assert!(fleet.everything() == during, "written: {}", second.stderr);
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!fleet.journal("canary").exists());
}

/// Without a terminal and without `--yes`, a fleet's rollout writes nothing; a saved plan
/// (`plan --out`) of a fleet is refused and no file is written.
#[test]
fn without_a_terminal_or_with_plan_out_a_fleet_writes_nothing() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.commit(5, "");
    let before = fleet.everything();
    let r = fleet.deploy(&[]);
    no_panic(&r);
    assert_ne!(r.code, 0, "{}", r.stderr);
    r.stderr_has("stdin is not a terminal");
    assert_eq!(fleet.everything(), before);
    let out = fleet.targets.path().join("plan.json");
    let out_s = out.display().to_string();
    let r = fleet.deploy(&["plan", "--out", &out_s]);
    no_panic(&r);
    r.code(3);
    assert!(!out.exists());
    assert_eq!(fleet.everything(), before);
}

/// An attacker who can write one target's state forges a journal of the live commit naming
/// another target as deployed first (`before: null`): that target's own log says what its
/// live generation replaced, so nothing is made dark.
#[test]
fn a_forged_journal_cannot_make_another_target_go_dark() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    let live = fleet.commit(5, "");
    fleet.deploy(&["--yes"]).code(0);
    let before = fleet.everything();
    fleet.forge(
        "eu-1",
        1,
        &live,
        serde_json::json!([{"target": "canary", "before": null, "after": 2}]),
    );
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(3)
        .stderr_has("that target's log says its live generation 2 replaced generation 1");
    std::fs::remove_file(fleet.journal("eu-1")).unwrap();
    assert!(fleet.everything() == before, "{}", r.stderr);

    // Exactly one step back, as the canary's own log tells it: a real journal is written
    // before its targets change, and this one says it started after generation 2 went live.
    fleet.forge(
        "eu-1",
        1,
        &live,
        serde_json::json!([{"target": "canary", "before": 1, "after": 2}]),
    );
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(3).stderr_has("went live at");
    std::fs::remove_file(fleet.journal("eu-1")).unwrap();
    assert!(fleet.everything() == before, "{}", r.stderr);

    // Started before generation 2 went live, then: the rollout of that commit has ended since
    // (its record), so the journal is stale: removed, nothing undone, the run goes on.
    fleet.forge_started(
        "eu-1",
        1,
        &live,
        serde_json::json!([{"target": "canary", "before": 1, "after": 2}]),
        "2026-01-01T00:00:00Z",
    );
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(0)
        .stderr_has("Removed the journal of a rollout of commit");
    assert!(!fleet.journal("eu-1").exists());
    for (d, b) in DIRS.iter().zip(&before) {
        assert_eq!(
            snapshot(&fleet.dir(d)).get("current"),
            b.get("current"),
            "{d}: {}",
            r.stderr
        );
    }
}

/// `deploy status` finds an interrupted rollout wherever `deploy` would (its journal in a
/// target that is no longer first, after the waves were reordered), instead of saying nothing
/// while the next `deploy` undoes it.
#[test]
fn status_shows_an_interrupted_rollout_in_any_target() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    let live = fleet.commit(5, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.forge(
        "eu-1",
        1,
        &live,
        serde_json::json!([{"target": "eu-1", "before": 1, "after": 2}]),
    );
    fleet
        .deploy(&["status"])
        .code(0)
        .stdout_has("Rollout INTERRUPTED");
    let json = fleet.deploy(&["status", "--format", "json"]);
    json.code(0);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["rollout"]["holder"]["user"], "mallory", "{v}");
    // Forged after eu-1's generation 2 went live: found, and not believed.
    fleet.deploy(&["--yes"]).code(3).stderr_has("went live at");
}

/// A rollout killed while it baked, whose journal was then removed (a tidy operator at night,
/// or an attacker who can write the first target's state): the next run must not take the
/// unwatched wave for a passed one. It cannot undo (nothing says what was live before), so it
/// bakes every wave again, whole, before it records the rollout.
#[test]
fn a_removed_journal_does_not_turn_an_unwatched_bake_into_a_pass() {
    let fleet = Fleet::new();
    fleet.commit(4, "");
    fleet.deploy(&["--yes"]).code(0);
    fleet.commit(5, "");
    fleet.repo.edit(FILE, &[("bake = \"0s\"", "bake = \"3s\"")]);
    fleet.repo.commit("bake 3s");
    let mut killed = fleet.repo.spawn_deploy(
        &["--target", ENV, "--yes"],
        &[("ENVLOCK_FAILPOINT", "rollout-baking")],
    );
    crate::harness::wait_for_line(&mut killed, "failpoint rollout-baking reached");
    killed.kill().unwrap();
    killed.wait().unwrap();
    std::fs::remove_file(fleet.journal("canary")).unwrap();
    let started = std::time::Instant::now();
    let r = fleet.deploy(&["--yes"]);
    no_panic(&r);
    r.code(0);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "the unwatched wave was taken for a passed one (no bake):\n{}",
        r.stderr
    );
    // Once watched, a run of the same commit has nothing to bake.
    let started = std::time::Instant::now();
    fleet.deploy(&["--yes"]).code(0);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
