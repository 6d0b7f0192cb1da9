//! Fleet rollouts (`[targets.NAME]` + `[rollout]`) end to end: the real `deploy` binary rolls a
//! fleet of three `dir` targets and one `etcd` target (a real etcd) out in waves, baking each
//! wave on real signals: a real Prometheus scraping a metrics exporter whose counters can stall,
//! and an HTTP probe whose answers can be set. Every test asserts what is on disk, in etcd and
//! in the logs, not only exit codes.
//!
//! Needs `prometheus`, `etcd` and `etcdctl` on PATH (see `prometheus.rs`, `etcd.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::etcd::Cluster;
use crate::harness::{Repo, Run, snapshot, wait_for_line};
use crate::prometheus::{Exporter, Probe, Prometheus};

const ENV: &str = "fleet";
const FILE: &str = "environments/fleet.toml";
/// The etcd target's prefix and where envlock keeps its state beside it.
const PREFIX: &str = "/asr/fleet/shared/";
const DIRS: [&str; 3] = ["canary", "eu-1", "eu-2"];
const ALL: [&str; 4] = ["canary", "eu-1", "eu-2", "shared"];

/// Two waves: the canary (bake 3 s), then every other target (bake 2 s).
const TWO_WAVES: &str = r#"
[[rollout.wave]]
name = "canary"
targets = ["canary"]
bake = "3s"

[[rollout.wave]]
name = "rest"
targets = ["*"]
bake = "2s"
"#;

/// Three waves: the canary, then `eu-1` with the etcd target, then `eu-2`.
const THREE_WAVES: &str = r#"
[[rollout.wave]]
name = "canary"
targets = ["canary"]
bake = "2s"

[[rollout.wave]]
name = "eu"
targets = ["eu-1", "shared"]
bake = "2s"

[[rollout.wave]]
name = "last"
targets = ["*"]
bake = "1s"
"#;

fn rate(target: &str) -> String {
    format!(r#"rate(asr_jobs_completed_total{{target="{target}"}}[5s])"#)
}

fn prometheus_signal(url: &str) -> String {
    format!(
        "\n[[rollout.verify]]\nprometheus = \"{url}\"\n\
         query = 'rate(asr_jobs_completed_total{{target=\"$TARGET\"}}[5s])'\ncompare = \"> 0\"\n"
    )
}

fn http_signal(url: &str) -> String {
    format!("\n[[rollout.verify]]\nhttp = \"{url}\"\n")
}

/// A fleet environment in a real repository: its target directories, its etcd, and the files
/// its health check and notifier write.
struct Fleet {
    repo: Repo,
    targets: tempfile::TempDir,
    etcd: Cluster,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            repo: Repo::ungated(),
            targets: tempfile::Builder::new()
                .prefix("envlock-fleet")
                .tempdir()
                .unwrap(),
            etcd: Cluster::start(1),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.targets.path().join(name)
    }

    /// Where the health check appends `$DEPLOY_TARGET`, one line per check.
    fn health_log(&self) -> PathBuf {
        self.targets.path().join("health.log")
    }

    /// `TARGET COMMIT` written here makes the health check fail for that target at that
    /// commit (and only there: the generation before stays healthy).
    fn unhealthy(&self) -> PathBuf {
        self.targets.path().join("unhealthy")
    }

    /// Where the notifier appends each event (one JSON line each).
    fn notified(&self) -> PathBuf {
        self.targets.path().join("notified.jsonl")
    }

    fn toml(&self, threads: u32, waves: &str, verify: &str) -> String {
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
        s.push_str(&format!(
            "[targets.shared]\nkind = \"etcd\"\nendpoints = {}\nprefix = \"{PREFIX}\"\n\
             timeout = \"5s\"\nlock_ttl = \"1s\"\n\n",
            self.etcd.endpoints_toml()
        ));
        s.push_str(&format!(
            "[health]\ncommand = [\"sh\", \"-c\", \"echo \\\"$DEPLOY_TARGET\\\" >> '{}'; \
             [ \\\"$DEPLOY_TARGET $DEPLOY_COMMIT\\\" != \\\"$(cat '{}' 2>/dev/null)\\\" ]\"]\n\
             timeout = \"10s\"\n\n",
            self.health_log().display(),
            self.unhealthy().display()
        ));
        s.push_str(&format!(
            "[notify]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\n\n",
            self.notified().display()
        ));
        s.push_str("[rollout]\ninterval = \"1s\"\ntimeout = \"2s\"\n");
        s.push_str(waves);
        s.push_str(verify);
        s.push_str(&format!(
            "\n[settings.worker]\nqueue = \"arn:aws:sqs:eu-west-1:555555555555:jobs\"\n\
             endpoint = \"https://fleet.example.com/healthz\"\nthreads = {threads}\n"
        ));
        s
    }

    fn commit(&self, threads: u32, waves: &str, verify: &str) -> String {
        self.repo.write(FILE, self.toml(threads, waves, verify));
        self.repo.commit(&format!("fleet, {threads} threads"))
    }

    fn deploy(&self) -> Run {
        self.repo.deploy(&["--target", ENV, "--yes"])
    }

    /// Every target as it is now: each directory whole, byte for byte, and the etcd keys.
    fn world(&self) -> World {
        World {
            dirs: DIRS.iter().map(|d| (*d, snapshot(&self.dir(d)))).collect(),
            live: DIRS.iter().map(|d| (*d, live(&self.dir(d)))).collect(),
            etcd: self.etcd_values(),
        }
    }

    /// key -> value under the etcd target's prefix.
    fn etcd_values(&self) -> BTreeMap<String, String> {
        self.etcd
            .keys(PREFIX)
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect()
    }

    fn notified_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.notified())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// What the targets hold at one instant.
#[derive(Debug, PartialEq)]
struct World {
    /// Each target directory, all of it (`.envlock/` included).
    dirs: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Each target directory's live generation: where `current` points and every byte of it.
    live: BTreeMap<&'static str, (Option<PathBuf>, BTreeMap<String, String>)>,
    etcd: BTreeMap<String, String>,
}

/// Where `current` points and everything in it, byte for byte.
fn live(dir: &Path) -> (Option<PathBuf>, BTreeMap<String, String>) {
    let current = dir.join("current");
    (std::fs::read_link(&current).ok(), snapshot(&current))
}

/// The records of a `dir` target's own log, oldest first.
fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(".envlock/log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(action, outcome)` of each record of a `dir` target's log.
fn actions(dir: &Path) -> Vec<(String, String)> {
    records(dir)
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `(action, outcome)` of every log record anywhere in a `deploy log --format json` document.
fn collect_records(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(a)), Some(Value::String(o)), Some(_)) =
                (m.get("action"), m.get("outcome"), m.get("seq"))
            {
                out.push((a.clone(), o.clone()));
            }
            m.values().for_each(|x| collect_records(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_records(x, out)),
        _ => {}
    }
}

fn time_of(record: &Value) -> SystemTime {
    humantime::parse_rfc3339(record["time"].as_str().unwrap()).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The worker resource as the etcd target holds it.
fn worker_json(threads: u32) -> String {
    format!(
        r#"{{"endpoint":"https://fleet.example.com/healthz","engine":"conformer-ctc","queue":"arn:aws:sqs:eu-west-1:555555555555:jobs","threads":{threads}}}"#
    )
}

/// The bytes of the worker resource live in a `dir` target.
fn live_worker(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("current/worker.toml")).unwrap_or_default()
}

/// Signals a healthy fleet passes: a real Prometheus over a healthy exporter and a probe.
struct Signals {
    exporter: Exporter,
    prom: Prometheus,
    probe: Probe,
}

impl Signals {
    fn start(series: &[&str]) -> Signals {
        let exporter = Exporter::start(series);
        let prom = Prometheus::start(&exporter);
        for t in series {
            prom.wait_for(&rate(t), "a positive rate", |v| v.len() == 1 && v[0] > 0.0);
        }
        Signals {
            exporter,
            prom,
            probe: Probe::start(),
        }
    }

    fn verify(&self) -> String {
        prometheus_signal(&self.prom.url()) + &http_signal(&self.probe.url("/$TARGET/healthz"))
    }

    /// Stall `target`'s counter and wait until Prometheus sees its rate at 0.
    fn stall(&self, target: &str) {
        self.exporter.stall(target);
        self.prom
            .wait_for(&rate(target), "a rate of 0", |v| v == [0.0]);
    }
}

/// A first rollout of `threads` that must succeed; returns the world it leaves.
fn first_rollout(fleet: &Fleet, waves: &str, verify: &str, threads: u32) -> World {
    fleet.commit(threads, waves, verify);
    fleet.deploy().code(0).stderr_has("Rolled out:");
    for d in DIRS {
        assert!(
            live_worker(&fleet.dir(d)).contains(&format!("threads = {threads}")),
            "{d} is not at {threads} threads"
        );
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(threads))
    );
    fleet.world()
}

#[test]
fn a_healthy_rollout_reaches_every_target_wave_by_wave_and_honours_the_bake() {
    let signals = Signals::start(&ALL);
    let fleet = Fleet::new();
    fleet.commit(4, TWO_WAVES, &signals.verify());

    let run = fleet.deploy();
    run.code(0)
        .stderr_has("Wave `canary` baking")
        .stderr_has("Wave `rest` baking")
        .stderr_has("Rolled out:");

    // Every target at the new generation, byte for byte what the commit says.
    for d in DIRS {
        let dir = fleet.dir(d);
        assert!(
            live_worker(&dir).contains("threads = 4"),
            "{d}: {}",
            live_worker(&dir)
        );
        assert_eq!(
            std::fs::read_link(dir.join("current")).unwrap(),
            Path::new("generations/00000001")
        );
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(4))
    );

    // The health check ran once per target, in rollout order, told which target it checks.
    let health = std::fs::read_to_string(fleet.health_log()).unwrap();
    assert_eq!(health.lines().collect::<Vec<_>>(), ALL);

    // Each target's own log: its first deployment (an adoption); the first target's also the rollout's own record,
    // after its apply.
    assert_eq!(
        actions(&fleet.dir("canary")),
        pairs(&[("adopt", "applied"), ("rollout", "applied")])
    );
    for d in ["eu-1", "eu-2"] {
        assert_eq!(
            actions(&fleet.dir(d)),
            pairs(&[("adopt", "applied")]),
            "{d}"
        );
    }
    // `deploy log` over the fleet: every target's log verifies, and shows its records.
    fleet
        .repo
        .deploy(&["log", "verify", "--target", ENV])
        .code(0);
    let shown = fleet
        .repo
        .deploy(&["log", "--target", ENV, "--format", "json"]);
    shown.code(0);
    let mut found = Vec::new();
    collect_records(&serde_json::from_str(&shown.stdout).unwrap(), &mut found);
    found.sort();
    assert_eq!(
        found,
        pairs(&[
            ("adopt", "applied"),
            ("adopt", "applied"),
            ("adopt", "applied"),
            ("adopt", "applied"),
            ("rollout", "applied"),
        ]),
        "{}",
        shown.stdout
    );

    // The bake was honoured: wave 2 began at least the canary's bake (3 s) after the canary
    // was applied, and it baked its own 2 s before the rollout's record.
    let canary = records(&fleet.dir("canary"));
    let eu1 = &records(&fleet.dir("eu-1"))[0];
    let eu2 = &records(&fleet.dir("eu-2"))[0];
    let waited = time_of(eu1).duration_since(time_of(&canary[0])).unwrap();
    assert!(
        waited >= Duration::from_secs(3),
        "wave 2 began {waited:?} after the canary"
    );
    let baked = time_of(&canary[1]).duration_since(time_of(eu2)).unwrap();
    assert!(baked >= Duration::from_secs(2), "wave 2 baked {baked:?}");
    assert!(time_of(eu1) <= time_of(eu2));

    // Nothing was halted, nobody heard of a halt; no rollout is left in progress.
    assert!(
        fleet
            .notified_events()
            .iter()
            .all(|e| e["outcome"] != "rolled-back"),
        "{:?}",
        fleet.notified_events()
    );
    let status = fleet
        .repo
        .deploy(&["status", "--target", ENV, "--format", "json"]);
    status.code(0);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(v.get("rollout").is_none(), "{v}");
    let names: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);

    // Run again: nothing to do, nothing changes; the signals are read once, not baked.
    let before = fleet.world();
    let again = fleet.deploy();
    again
        .code(0)
        .stderr_has("No changes: all 4 targets of `fleet` already hold")
        .stderr_has("Wave `rest` baking, 0s left");
    assert!(!again.stderr.contains("1s left"), "{}", again.stderr);
    assert_eq!(fleet.world().live, before.live);
    assert_eq!(fleet.world().etcd, before.etcd);
}

#[test]
fn a_stalled_canary_halts_the_rollout_and_only_the_canary_was_ever_changed() {
    let signals = Signals::start(&ALL);
    let fleet = Fleet::new();
    let before = first_rollout(&fleet, TWO_WAVES, &signals.verify(), 4);
    let health_before = std::fs::read_to_string(fleet.health_log()).unwrap();

    signals.stall("canary");
    fleet.commit(8, TWO_WAVES, &signals.verify());
    let run = fleet.deploy();
    run.code(4)
        .stderr_has("the rollout of `fleet` was halted and undone: wave `canary` failed: target `canary`: prometheus rate(asr_jobs_completed_total{target=\"canary\"}[5s]) = 0 (needs > 0)")
        .stderr_has("restored target `canary`: generation 1 live");
    assert!(!run.stderr.contains("Wave `rest`"), "{}", run.stderr);

    let after = fleet.world();
    // The canary is live at its old generation again, byte for byte.
    assert_eq!(after.live["canary"], before.live["canary"]);
    assert!(live_worker(&fleet.dir("canary")).contains("threads = 4"));
    // The others were never touched: not one byte of their directories, not one etcd key.
    for d in ["eu-1", "eu-2"] {
        assert_eq!(after.dirs[d], before.dirs[d], "{d} changed");
    }
    assert_eq!(after.etcd, before.etcd);
    // Only the canary was checked: its new generation, then its old one once restored.
    let health = std::fs::read_to_string(fleet.health_log()).unwrap();
    assert_eq!(&health[health_before.len()..], "canary\ncanary\n");

    // The canary's log: its apply, then its rollback, then the rollout's record.
    assert_eq!(
        actions(&fleet.dir("canary")),
        pairs(&[
            ("adopt", "applied"),
            ("rollout", "applied"),
            ("apply", "applied"),
            ("rollback", "rolled-back"),
            ("rollout", "rolled-back"),
        ])
    );
    let last = records(&fleet.dir("canary")).pop().unwrap();
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("wave `canary` failed"),
        "{last}"
    );
}

#[test]
fn a_failure_in_wave_two_undoes_waves_one_and_two_and_the_etcd_target() {
    let signals = Signals::start(&ALL);
    let fleet = Fleet::new();
    let before = first_rollout(&fleet, THREE_WAVES, &signals.verify(), 4);
    let etcd_before = fleet.etcd_values();
    assert!(!etcd_before.is_empty());

    signals.stall("eu-1");
    fleet.commit(8, THREE_WAVES, &signals.verify());
    let run = fleet.deploy();
    run.code(4)
        .stderr_has("Wave `canary` baking")
        .stderr_has("wave `eu` failed: target `eu-1`: prometheus rate(asr_jobs_completed_total{target=\"eu-1\"}[5s]) = 0 (needs > 0)");

    let after = fleet.world();
    for d in ["canary", "eu-1"] {
        assert_eq!(after.live[d], before.live[d], "{d} not restored");
        assert!(live_worker(&fleet.dir(d)).contains("threads = 4"), "{d}");
    }
    // The etcd target (wave 2): every key and value as before.
    assert_eq!(fleet.etcd_values(), etcd_before);
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(4))
    );
    // Wave 3 was never reached.
    assert_eq!(after.dirs["eu-2"], before.dirs["eu-2"]);
    // The etcd target's own log (its state beside the prefix): adopted, applied, rolled back.
    let etcd_log: Vec<(String, String)> = fleet
        .etcd
        .keys("/asr/fleet/shared.envlock/log/")
        .values()
        .map(|(v, _)| {
            let r: Value = serde_json::from_str(v).unwrap();
            (
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        etcd_log,
        pairs(&[
            ("adopt", "applied"),
            ("apply", "applied"),
            ("rollback", "rolled-back")
        ])
    );

    // Restored last changed first: the etcd target, eu-1, then the canary.
    let order: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Restored target `"))
        .map(|l| l.split('`').next().unwrap())
        .collect();
    assert_eq!(order, ["shared", "eu-1", "canary"], "{}", run.stderr);
    assert_eq!(
        actions(&fleet.dir("eu-1")),
        pairs(&[
            ("adopt", "applied"),
            ("apply", "applied"),
            ("rollback", "rolled-back")
        ])
    );
}

#[test]
fn prometheus_down_fails_the_canary_wave() {
    let mut signals = Signals::start(&ALL);
    let fleet = Fleet::new();
    let before = first_rollout(&fleet, TWO_WAVES, &signals.verify(), 4);

    signals.prom.stop();
    fleet.commit(8, TWO_WAVES, &signals.verify());
    let run = fleet
        .repo
        .deploy(&["--target", ENV, "--yes", "--format", "json"]);
    run.code(4)
        .stderr_has("wave `canary` failed: target `canary`: prometheus ")
        .stderr_has("connection refused");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["outcome"], "halted", "{report}");
    assert_eq!(report["waves"][0]["result"], "failed");
    assert_eq!(report["waves"][0]["readings"], 0);
    assert_eq!(report["waves"][1]["result"], "not-reached");
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
}

#[test]
fn a_target_without_data_fails_the_wave_even_at_its_first_deployment() {
    // The exporter serves no series for eu-2: its query has no data.
    let signals = Signals::start(&["canary", "eu-1", "shared"]);
    let fleet = Fleet::new();
    fleet.commit(4, TWO_WAVES, &signals.verify());
    let run = fleet
        .repo
        .deploy(&["--target", ENV, "--yes", "--format", "json"]);
    run.code(4)
        .stderr_has("wave `rest` failed: target `eu-2`: prometheus rate(asr_jobs_completed_total{target=\"eu-2\"}[5s]) = no data");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["waves"][0]["result"], "passed", "{report}");
    assert_eq!(report["waves"][1]["result"], "failed");
    assert_eq!(report["waves"][1]["readings"], 0);
    let halt = &report["halt"];
    assert_eq!(halt["target"], "eu-2");
    assert!(
        halt["value"].as_str().unwrap().contains("no data"),
        "{halt}"
    );

    // Each target was deployed by this rollout first: each has nothing live again.
    for d in DIRS {
        let (link, files) = live(&fleet.dir(d));
        assert_eq!(link, None, "{d} still has a live generation");
        assert!(files.is_empty(), "{d}: {files:?}");
    }
    assert_eq!(fleet.etcd_values(), BTreeMap::new());
}

#[test]
fn an_http_probe_answering_503_halts_the_rollout() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, TWO_WAVES, &verify, 4);

    probe.set("/eu-2/healthz", 503, "draining");
    fleet.commit(8, TWO_WAVES, &verify);
    let run = fleet.deploy();
    run.code(4).stderr_has(&format!(
        "wave `rest` failed: target `eu-2`: GET {} = HTTP 503 \"draining\" (needs 200)",
        probe.url("/eu-2/healthz")
    ));
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
}

#[test]
fn the_notifier_hears_of_the_halt_with_the_signal() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    first_rollout(&fleet, TWO_WAVES, &verify, 4);
    let _ = std::fs::remove_file(fleet.notified());

    probe.set("/canary/healthz", 500, "boom");
    fleet.commit(8, TWO_WAVES, &verify);
    fleet.deploy().code(4);
    let events = fleet.notified_events();
    let halts: Vec<&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "rolled-back")
        .collect();
    assert_eq!(halts.len(), 1, "{events:?}");
    let reason = halts[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "wave `canary` failed: target `canary`: GET {} = HTTP 500 \"boom\" (needs 200)",
            probe.url("/canary/healthz")
        )),
        "{reason}"
    );
    assert_eq!(halts[0]["environment"], ENV);
    assert_eq!(halts[0]["exit_code"], 4);
}

#[test]
fn a_rollout_killed_while_baking_is_undone_by_the_next_run_never_completed() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, TWO_WAVES, &verify, 4);

    fleet.commit(8, TWO_WAVES, &verify);
    let mut child = fleet.repo.spawn_deploy(&["--target", ENV, "--yes"], &[]);
    // Wave 2 is baking: every target is at the new generation.
    wait_for_line(&mut child, "Wave `rest` baking");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(8))
    );

    // `deploy status` shows the rollout under way (or interrupted).
    fleet
        .repo
        .deploy(&["status", "--target", ENV])
        .code(0)
        .stdout_has("Rollout INTERRUPTED: commit ")
        .stdout_has("wave 2 of 2 (`rest`), baking");
    let status = fleet
        .repo
        .deploy(&["status", "--target", ENV, "--format", "json"]);
    status.code(0);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["rollout"]["phase"], "baking", "{v}");
    assert_eq!(v["rollout"]["changed"].as_array().unwrap().len(), 4, "{v}");

    // The lease of the etcd target's lock runs out (lock_ttl 1 s).
    std::thread::sleep(Duration::from_secs(3));
    let run = fleet.deploy();
    run.code(4)
        .stderr_has("an interrupted rollout of `fleet` was found and undone");
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
    assert!(
        actions(&fleet.dir("canary")).last() == Some(&("rollout".into(), "rolled-back".into())),
        "{:?}",
        actions(&fleet.dir("canary"))
    );
    let status = fleet
        .repo
        .deploy(&["status", "--target", ENV, "--format", "json"]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(v.get("rollout").is_none(), "{v}");

    // The run after that rolls out.
    fleet.deploy().code(0).stderr_has("Rolled out:");
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(8))
    );
}

/// A fleet file for `deploy check`: targets `canary` and `eu-1` (dirs, or as `targets` says),
/// then `rest` (waves and signals). Its etcd is never contacted.
fn check_toml(targets: &str, rest: &str) -> String {
    format!(
        "[environment]\naccount = \"555555555555\"\nmarkers = [\"fleet.example.com\"]\n\
         extends = [\"_common\"]\n\n{targets}\n{rest}\n\
         [settings.worker]\nqueue = \"arn:aws:sqs:eu-west-1:555555555555:jobs\"\n\
         endpoint = \"https://fleet.example.com/healthz\"\nthreads = 4\n"
    )
}

const CHECK_TARGETS: &str = "[targets.canary]\nkind = \"dir\"\npath = \"/srv/fleet/canary\"\n\n\
     [targets.eu-1]\nkind = \"dir\"\npath = \"/srv/fleet/eu-1\"\n";

const CHECK_VERIFY: &str = "\n[[rollout.verify]]\nhttp = \"http://127.0.0.1:1/$TARGET/healthz\"\n";

/// `environments/fleet.toml:LINE:COL` of the first `needle` in `text`.
fn place(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{FILE}:{line}:{col}")
}

#[test]
fn check_refuses_bad_fleets_at_their_place() {
    let waves = |first: &str, second: &str| {
        format!(
            "[rollout]\n\n[[rollout.wave]]\ntargets = {first}\n\n[[rollout.wave]]\ntargets = {second}\n"
        )
    };
    // The same directory, written another way: the place is compared, not the text.
    let two_paths = CHECK_TARGETS.replace("/srv/fleet/eu-1", "/srv/fleet/canary/.");
    // (what is wrong, the file, the text the diagnostic points at, the message)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a wave naming an unknown target",
            check_toml(
                CHECK_TARGETS,
                &(waves("[\"canary\"]", "[\"eu-1\", \"nowhere\"]") + CHECK_VERIFY),
            ),
            "\"nowhere\"",
            "no `[targets.nowhere]` in this file",
        ),
        (
            "a target in no wave",
            check_toml(
                CHECK_TARGETS,
                &("[rollout]\n\n[[rollout.wave]]\ntargets = [\"canary\"]\n".to_owned()
                    + CHECK_VERIFY),
            ),
            "[rollout]",
            "no wave deploys `eu-1`",
        ),
        (
            "`*` before the last wave",
            check_toml(
                CHECK_TARGETS,
                &(waves("[\"*\"]", "[\"canary\"]") + CHECK_VERIFY),
            ),
            "\"*\"",
            "may only be in the last wave",
        ),
        (
            "[rollout] with [target]",
            check_toml(
                "[target]\nkind = \"dir\"\npath = \"/srv/fleet/one\"\n",
                &(waves("[\"canary\"]", "[\"*\"]") + CHECK_VERIFY),
            ),
            "[rollout]",
            "[rollout] needs `[targets.NAME]`",
        ),
        (
            "a signal both http and prometheus",
            check_toml(
                CHECK_TARGETS,
                &(waves("[\"canary\"]", "[\"*\"]")
                    + "\n[[rollout.verify]]\nhttp = \"http://127.0.0.1:1/\"\n\
                       prometheus = \"http://127.0.0.1:9090\"\nquery = \"up\"\n"),
            ),
            "\"http://127.0.0.1:9090\"",
            "a signal is either `http` or `prometheus`, not both",
        ),
        (
            "a bad compare",
            check_toml(
                CHECK_TARGETS,
                &(waves("[\"canary\"]", "[\"*\"]")
                    + "\n[[rollout.verify]]\nprometheus = \"http://127.0.0.1:9090\"\n\
                       query = \"up\"\ncompare = \"=> 0\"\n"),
            ),
            "\"=> 0\"",
            "\"=> 0\" is not a comparison",
        ),
        (
            "two targets on one path",
            check_toml(
                &two_paths,
                &(waves("[\"canary\"]", "[\"*\"]") + CHECK_VERIFY),
            ),
            "\"/srv/fleet/canary/.\"",
            "targets `canary` and `eu-1` of `fleet` write to the same place",
        ),
    ];
    for (what, text, at, message) in cases {
        let repo = Repo::ungated();
        repo.write(FILE, &text);
        repo.commit(what);
        let run = repo.deploy(&["check"]);
        assert_eq!(
            run.code, 1,
            "{what}: exit {}\n{}{}",
            run.code, run.stdout, run.stderr
        );
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains(message), "{what}: no {message:?} in\n{all}");
        let at = place(&text, at);
        assert!(
            all.contains(&at),
            "{what}: no {at} in\n{all}\n--- file\n{text}"
        );
    }
}

#[test]
fn a_failed_health_check_in_wave_two_halts_and_undoes_every_changed_target() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, THREE_WAVES, &verify, 4);
    let health_before = std::fs::read_to_string(fleet.health_log()).unwrap();

    let commit = fleet.commit(8, THREE_WAVES, &verify);
    // eu-1 (wave 2, listed before the etcd target) is unhealthy at the new commit only.
    std::fs::write(fleet.unhealthy(), format!("eu-1 {commit}")).unwrap();
    let run = fleet.deploy();
    run.code(4)
        .stderr_has("Wave `canary` baking")
        .stderr_has("wave `eu` failed: target `eu-1`: [health] command = ");
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
    // The etcd target was never reached; eu-2 (wave 3) neither: byte for byte as before.
    assert_eq!(after.dirs["eu-2"], before.dirs["eu-2"]);
    // Checked, each told its name: the canary, eu-1 (failing), eu-1 rolled back, the canary
    // restored.
    let health = std::fs::read_to_string(fleet.health_log()).unwrap();
    assert_eq!(
        health[health_before.len()..].lines().collect::<Vec<_>>(),
        ["canary", "eu-1", "eu-1", "canary"]
    );
}

#[test]
fn a_rollout_killed_while_undoing_is_undone_by_the_next_run() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, TWO_WAVES, &verify, 4);

    probe.set("/eu-2/healthz", 503, "down");
    fleet.commit(8, TWO_WAVES, &verify);
    let paused = crate::harness::Paused::start(
        fleet.repo.path(),
        &["--target", ENV, "--yes"],
        "rollout-undoing",
        None,
        &[],
    );
    paused.kill9();
    // Killed before it undid anything: the whole fleet is at the new commit.
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
    fleet
        .repo
        .deploy(&["status", "--target", ENV])
        .code(0)
        .stdout_has("wave 2 of 2 (`rest`), undoing");

    std::thread::sleep(Duration::from_secs(3));
    probe.set("/eu-2/healthz", 200, "ok");
    fleet
        .deploy()
        .code(4)
        .stderr_has("an interrupted rollout of `fleet` was found and undone");
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
    fleet.deploy().code(0).stderr_has("Rolled out:");
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(8))
    );
}

/// Two waves with a long second bake, for acting on the world while it bakes.
const LONG_BAKE: &str = r#"
[[rollout.wave]]
name = "canary"
targets = ["canary"]
bake = "2s"

[[rollout.wave]]
name = "rest"
targets = ["*"]
bake = "8s"
"#;

/// Start `deploy --target fleet --yes` and wait until `line` is on its stderr.
fn spawn_until(fleet: &Fleet, line: &str) -> std::process::Child {
    let mut child = fleet.repo.spawn_deploy(&["--target", ENV, "--yes"], &[]);
    wait_for_line(&mut child, line);
    child
}

fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_later_bake_still_reads_the_targets_of_earlier_waves() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, LONG_BAKE, &verify, 4);

    fleet.commit(8, LONG_BAKE, &verify);
    let child = spawn_until(&fleet, "Wave `rest` baking");
    // The canary passed its own bake; now it goes bad while wave 2 bakes.
    probe.set("/canary/healthz", 503, "down");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "wave `rest` failed: target `canary`: GET {} = HTTP 503 \"down\" (needs 200)",
            probe.url("/canary/healthz")
        )),
        "{stderr}"
    );
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
}

#[test]
fn ctrl_c_while_a_wave_bakes_halts_and_undoes() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, LONG_BAKE, &verify, 4);

    fleet.commit(8, LONG_BAKE, &verify);
    let child = spawn_until(&fleet, "Wave `rest` baking");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "the rollout of `fleet` was halted and undone: cancelled by the operator (Ctrl-C) \
             in wave `rest`"
        ),
        "{stderr}"
    );
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
    assert_eq!(
        actions(&fleet.dir("canary")).last(),
        Some(&("rollout".to_owned(), "rolled-back".to_owned()))
    );
}

#[test]
fn a_second_rollout_while_one_bakes_is_refused_and_undoes_nothing() {
    let probe = Probe::start();
    let fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    first_rollout(&fleet, LONG_BAKE, &verify, 4);

    fleet.commit(8, LONG_BAKE, &verify);
    let child = spawn_until(&fleet, "Wave `canary` baking");
    // The journal of the rollout under way is not an interrupted rollout's: the second run
    // finds every lock held and leaves it alone.
    let second = fleet.deploy();
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert!(
        !second.stderr.contains("undone") && !second.stderr.contains("Restored"),
        "{}",
        second.stderr
    );
    assert!(live_worker(&fleet.dir("canary")).contains("threads = 8"));
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(8))
    );
    assert!(
        !actions(&fleet.dir("canary"))
            .iter()
            .any(|(a, _)| a == "rollback"),
        "{:?}",
        actions(&fleet.dir("canary"))
    );
}

/// Two waves that do not bake: for tests about crashes, not signals.
const NO_BAKE: &str = r#"
[[rollout.wave]]
name = "canary"
targets = ["canary"]
bake = "0s"

[[rollout.wave]]
name = "rest"
targets = ["*"]
bake = "0s"
"#;

#[test]
fn a_rollout_killed_at_any_step_of_the_canary_is_undone_never_completed() {
    let probe = Probe::start();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    // Before the canary is touched; after its `current` moved (before its health check); after
    // its health check passed (before its record); when its wave starts to bake.
    for (point, phase) in [
        ("rollout-before-target", "applying"),
        ("after-switch", "applying"),
        ("before-record", "applying"),
        ("rollout-baking", "baking"),
    ] {
        let fleet = Fleet::new();
        let before = first_rollout(&fleet, NO_BAKE, &verify, 4);
        fleet.commit(8, NO_BAKE, &verify);
        crate::harness::Paused::start(
            fleet.repo.path(),
            &["--target", ENV, "--yes"],
            point,
            None,
            &[],
        )
        .kill9();
        fleet
            .repo
            .deploy(&["status", "--target", ENV])
            .code(0)
            .stdout_has("Rollout INTERRUPTED: commit ")
            .stdout_has(&format!("wave 1 of 2 (`canary`), {phase}"));

        // The lease of the etcd target's lock runs out (lock_ttl 1 s).
        std::thread::sleep(Duration::from_secs(3));
        let run = fleet.deploy();
        run.code(4)
            .stderr_has("an interrupted rollout of `fleet` was found and undone");
        let after = fleet.world();
        assert_eq!(after.live, before.live, "{point}\n{}", run.stderr);
        assert_eq!(after.etcd, before.etcd, "{point}");
        for d in ["eu-1", "eu-2"] {
            assert_eq!(after.dirs[d], before.dirs[d], "{point}: {d} changed");
        }
        assert!(
            !fleet.dir("canary").join(".envlock/rollout").exists(),
            "{point}"
        );

        fleet.deploy().code(0).stderr_has("Rolled out:");
        for d in DIRS {
            assert!(
                live_worker(&fleet.dir(d)).contains("threads = 8"),
                "{point}: {d}"
            );
        }
    }
}

#[test]
fn an_unreachable_target_does_not_stop_the_others_from_being_restored() {
    let probe = Probe::start();
    let mut fleet = Fleet::new();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let before = first_rollout(&fleet, LONG_BAKE, &verify, 4);

    fleet.commit(8, LONG_BAKE, &verify);
    let child = spawn_until(&fleet, "Wave `canary` baking");
    // The etcd target (the last of wave 2) goes away while the canary bakes.
    fleet.etcd.kill(0);
    let (code, stderr) = finish(child);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("wave `rest` failed: target `shared`")
            && stderr.contains("could not restore target `shared`"),
        "{stderr}"
    );
    // Every target that can be reached is as before; the journal stays for the next run to
    // finish the undo once the etcd target is back.
    for d in DIRS {
        assert_eq!(
            live(&fleet.dir(d)),
            before.live[d],
            "{d} not restored\n{stderr}"
        );
    }
    assert!(fleet.dir("canary").join(".envlock/rollout").exists());
}

/// A `deploy` killed at `after-switch` of the canary, whose rollout journal the operator then
/// removed (as the hint of an unreadable one allows): only the canary's own journal is left.
fn canary_apply_interrupted_without_rollout_journal(fleet: &Fleet, verify: &str) -> String {
    first_rollout(fleet, NO_BAKE, verify, 4);
    let commit = fleet.commit(8, NO_BAKE, verify);
    crate::harness::Paused::start(
        fleet.repo.path(),
        &["--target", ENV, "--yes"],
        "after-switch",
        None,
        &[],
    )
    .kill9();
    std::fs::remove_file(fleet.dir("canary").join(".envlock/rollout")).unwrap();
    // The lease of the etcd target's lock runs out (lock_ttl 1 s).
    std::thread::sleep(Duration::from_secs(3));
    commit
}

#[test]
fn a_targets_own_interrupted_apply_is_resolved_without_locking_the_rollout_out() {
    let probe = Probe::start();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));

    // Healthy: the canary's apply is completed by its own recovery, and the rollout (which
    // holds the lock that recovery took, not a second one) goes on to every target.
    let fleet = Fleet::new();
    canary_apply_interrupted_without_rollout_journal(&fleet, &verify);
    let run = fleet.deploy();
    run.code(0)
        .stderr_has("Found an interrupted apply")
        .stderr_has("Rolled out:");
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
    assert_eq!(
        fleet.etcd.value(&format!("{PREFIX}worker")),
        Some(worker_json(8))
    );

    // Unhealthy at the new commit: the canary's recovery rolls it back, and the run, which
    // deployed nothing, does not end as a success.
    let fleet = Fleet::new();
    let commit = canary_apply_interrupted_without_rollout_journal(&fleet, &verify);
    std::fs::write(fleet.unhealthy(), format!("canary {commit}")).unwrap();
    let before_others: Vec<_> = ["eu-1", "eu-2"]
        .iter()
        .map(|d| snapshot(&fleet.dir(d)))
        .collect();
    let run = fleet.deploy();
    run.code(4)
        .stderr_has("Found an interrupted apply")
        .stderr_has("nothing was deployed by this run");
    assert!(live_worker(&fleet.dir("canary")).contains("threads = 4"));
    let after_others: Vec<_> = ["eu-1", "eu-2"]
        .iter()
        .map(|d| snapshot(&fleet.dir(d)))
        .collect();
    assert_eq!(after_others, before_others);
}

#[test]
fn a_rollout_killed_after_taking_its_locks_wrote_nothing_and_the_next_run_rolls_out() {
    let probe = Probe::start();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let fleet = Fleet::new();
    let before = first_rollout(&fleet, NO_BAKE, &verify, 4);
    fleet.commit(8, NO_BAKE, &verify);
    crate::harness::Paused::start(
        fleet.repo.path(),
        &["--target", ENV, "--yes"],
        "rollout-after-locks",
        None,
        &[],
    )
    .kill9();
    // Every lock was held, nothing else written: each target is byte-identical, no journal.
    let after = fleet.world();
    assert_eq!(after.live, before.live);
    assert_eq!(after.etcd, before.etcd);
    assert!(!fleet.dir("canary").join(".envlock/rollout").exists());
    let status = fleet.repo.deploy(&["status", "--target", ENV]);
    status.code(0);
    assert!(!status.stdout.contains("Rollout"), "{}", status.stdout);
    // The etcd target's lease runs out (lock_ttl 1 s); then the next run simply rolls out.
    std::thread::sleep(Duration::from_secs(3));
    fleet.deploy().code(0).stderr_has("Rolled out:");
    for d in DIRS {
        assert!(live_worker(&fleet.dir(d)).contains("threads = 8"), "{d}");
    }
}

#[test]
fn a_fleets_plan_shows_every_target_in_text_json_and_one_markdown_comment() {
    let probe = Probe::start();
    let verify = http_signal(&probe.url("/$TARGET/healthz"));
    let fleet = Fleet::new();
    first_rollout(&fleet, NO_BAKE, &verify, 4);
    fleet.commit(8, NO_BAKE, &verify);
    let before = fleet.world();

    let text = fleet.repo.deploy(&["plan", "--target", ENV]);
    text.code(0);
    for t in ALL {
        assert!(
            text.stdout
                .contains(&format!("Plan for `{ENV}` target `{t}`")),
            "{t}: {}",
            text.stdout
        );
    }
    let json = fleet
        .repo
        .deploy(&["plan", "--target", ENV, "--format", "json"]);
    json.code(0);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    let names: Vec<&str> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    assert!(
        doc["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["summary"]["change"] == 1)
    );
    let md = fleet
        .repo
        .deploy(&["plan", "--target", ENV, "--format", "markdown"]);
    md.code(0);
    assert_eq!(
        md.stdout.matches("envlock plan for").count(),
        ALL.len(),
        "{}",
        md.stdout
    );
    assert!(md.stdout.len() <= 60_000 + 1_000);
    // A plan writes nothing.
    assert_eq!(fleet.world().live, before.live);
    // `--detailed-exitcode`: changes pending on some target.
    fleet
        .repo
        .deploy(&["plan", "--target", ENV, "--detailed-exitcode"])
        .code(2);
}
