//! The `etcd` target against real etcd servers started on free loopback ports (one member, or a
//! three-member cluster whose leader is killed with SIGKILL mid-deployment). The store is
//! inspected with the real `etcdctl`, as an operator would.
//!
//! Needs `etcd` and `etcdctl` on PATH (Debian: `etcd-server`, `etcd-client`; `.ci/run`
//! installs them). Without them these tests fail and say so: they never pass silently.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::harness::{Paused, Repo, Run};

const ENV: &str = "environments/edge.toml";
pub(crate) const PREFIX: &str = "/svc/edge/";
pub(crate) const STATE: &str = "/svc/edge.envlock/";

use crate::harness::free_port;

fn require_tools() {
    for (tool, arg) in [("etcd", "--version"), ("etcdctl", "version")] {
        crate::harness::require_tool(
            tool,
            arg,
            "these tests need a real etcd (Debian: apt-get install etcd-server etcd-client; \
             .ci/run installs them)",
        );
    }
}

struct Member {
    client: String,
    child: Option<Child>,
}

/// etcd members on loopback, each with its own data directory; killed when dropped.
pub(crate) struct Cluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    /// `user:password` for etcdctl once authentication is enabled.
    user: Option<String>,
}

impl Cluster {
    pub(crate) fn start(n: usize) -> Cluster {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("envlock-etcd")
            .tempdir()
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("t{}", ports[0].0)])
                .args(["--heartbeat-interval=10", "--election-timeout=100"])
                .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("etcd starts");
            members.push(Member {
                client: client_url,
                child: Some(child),
            });
        }
        let cluster = Cluster {
            members,
            dir,
            user: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = cluster
                .ctl_raw(&["endpoint", "health", "--cluster=false"])
                .expect("etcdctl runs");
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client URLs of the members still running.
    fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.clone())
            .collect()
    }

    /// Every member's client URL, as a TOML array.
    pub(crate) fn endpoints_toml(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("\"{}\"", m.client))
            .collect();
        format!("[{}]", eps.join(", "))
    }

    fn ctl_raw(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.live_endpoints().join(",")))
            .arg("--command-timeout=5s")
            .args(self.user.iter().map(|u| format!("--user={u}")))
            .args(args)
            .output()
    }

    /// Run etcdctl against the running members; its stdout.
    #[track_caller]
    fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_raw(args).expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// Every key under `prefix`: key -> (value, mod_revision).
    pub(crate) fn keys(&self, prefix: &str) -> BTreeMap<String, (String, i64)> {
        let out = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let text = |x: &Value| {
            String::from_utf8(B64.decode(x.as_str().unwrap_or_default()).unwrap()).unwrap()
        };
        v.get("kvs")
            .and_then(Value::as_array)
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            text(&kv["key"]),
                            (text(&kv["value"]), kv["mod_revision"].as_i64().unwrap()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn value(&self, key: &str) -> Option<String> {
        self.keys(key).remove(key).map(|(v, _)| v)
    }

    /// The index of the current leader.
    fn leader(&self) -> usize {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        for s in v.as_array().unwrap() {
            let header = &s["Status"]["header"];
            if header["member_id"].as_u64() == s["Status"]["leader"].as_u64() {
                let ep = s["Endpoint"].as_str().unwrap();
                return self.members.iter().position(|m| m.client == ep).unwrap();
            }
        }
        panic!("no leader among {out}");
    }

    /// SIGKILL one member.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The `edge` environment on `endpoints` (a TOML array), with `extra` lines in [target] and
/// `sections` after it; the worker runs `threads` threads.
pub(crate) fn edge_toml(endpoints: &str, extra: &str, sections: &str, threads: u32) -> String {
    format!(
        r#"[environment]
account = "444444444444"
markers = ["edge.example.com"]
extends = ["_common"]

[target]
kind = "etcd"
endpoints = {endpoints}
prefix = "{PREFIX}"
timeout = "5s"
lock_ttl = "1s"
{extra}
{sections}
[settings.worker]
queue = "arn:aws:sqs:eu-west-1:444444444444:jobs"
endpoint = "https://edge.example.com/healthz"
threads = {threads}
"#
    )
}

fn repo_with(toml: &str) -> Repo {
    let repo = Repo::ungated();
    repo.write(ENV, toml);
    repo.commit("edge on etcd");
    repo
}

fn worker_json(threads: u32) -> String {
    format!(
        r#"{{"endpoint":"https://edge.example.com/healthz","engine":"conformer-ctc","queue":"arn:aws:sqs:eu-west-1:444444444444:jobs","threads":{threads}}}"#
    )
}

fn deploy_yes(repo: &Repo) -> Run {
    repo.deploy(&["--target", "edge", "--yes"])
}

fn set_threads(repo: &Repo, from: u32, to: u32) {
    repo.edit(
        ENV,
        &[(&format!("threads = {from}\n"), &format!("threads = {to}\n"))],
    );
    repo.commit(&format!("threads {to}"));
}

/// The outcomes in `deploy log --target edge`, oldest first (the log verifies).
fn outcomes(repo: &Repo) -> Vec<(String, String)> {
    crate::harness::log_outcomes(repo, "edge")
}

#[test]
fn apply_writes_compact_json_and_a_no_op_moves_no_revision() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));

    deploy_yes(&repo).code(0).stdout_has("+ worker (add)");
    let keys = etcd.keys(PREFIX);
    // Services watching the prefix see their resources and nothing of envlock's.
    assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["/svc/edge/worker"]);
    assert_eq!(keys["/svc/edge/worker"].0, worker_json(4));
    let stamp: Value =
        serde_json::from_str(&etcd.value(&format!("{STATE}stamp")).unwrap()).unwrap();
    assert_eq!(stamp["environment"], "edge");
    assert_eq!(stamp["account"], "444444444444");
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("1"));

    // No changes: not one key under the prefix is written again.
    let before = etcd.keys(PREFIX);
    deploy_yes(&repo).code(0).stderr_has("No changes");
    assert_eq!(etcd.keys(PREFIX), before);

    set_threads(&repo, 4, 8);
    deploy_yes(&repo)
        .code(0)
        .stdout_has("~ worker (change)")
        .stdout_has("-threads = 4")
        .stdout_has("+threads = 8");
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(8));
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("2"));
    repo.deploy(&["log", "verify", "--target", "edge"])
        .code(0)
        .stdout_has("3 records, chain intact");
    let got: Vec<String> = outcomes(&repo).into_iter().map(|(o, _)| o).collect();
    assert_eq!(got, ["applied", "unchanged", "applied"]);

    // Drift: a hand edit and a key nobody manages.
    etcd.put("/svc/edge/worker", r#"{"threads":1}"#);
    etcd.put("/svc/edge/extra", "{}");
    repo.deploy(&["status", "--target", "edge"])
        .code(0)
        .stdout_has("edited outside envlock: /svc/edge/worker")
        .stdout_has("not managed by envlock: /svc/edge/extra");
    // The next deploy restores the reviewed configuration and removes the stray key.
    deploy_yes(&repo).code(0).stdout_has("- extra (remove)");
    assert_eq!(
        etcd.keys(PREFIX)
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect::<Vec<_>>(),
        vec![("/svc/edge/worker".to_owned(), worker_json(8))]
    );
    // `rollback` is one transaction back to generation 2's values.
    repo.deploy(&["rollback", "--target", "edge", "--to", "1", "--yes"])
        .code(0);
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
}

#[test]
fn a_write_between_plan_and_apply_makes_the_deploy_stale_and_nothing_is_written() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 8);

    // The deployer has read the store and computed its plan; another tool writes meanwhile.
    let resume = scratch.path().join("go");
    let paused = Paused::start(
        repo.path(),
        &["--target", "edge", "--yes"],
        "after-lock",
        Some(&resume),
        &[],
    );
    let other = r#"{"threads":2,"written_by":"another tool"}"#;
    etcd.put("/svc/edge/worker", other);
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("`/svc/edge/worker` was changed after the plan read it"),
        "{stderr}"
    );
    // The other writer's value stands; generation 1 is still live.
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), other);
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("1"));
    assert!(etcd.value(&format!("{STATE}journal")).is_none());
    let last = outcomes(&repo).pop().unwrap();
    assert_eq!(last.0, "refused");
    assert!(last.1.contains("/svc/edge/worker"), "{last:?}");
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);

    // The same guard for a saved plan: a write after `plan --out` refuses `apply --plan`.
    deploy_yes(&repo).code(0);
    set_threads(&repo, 8, 9);
    let plan = scratch.path().join("plan.json");
    repo.deploy(&["plan", "--target", "edge", "--out", plan.to_str().unwrap()])
        .code(0);
    etcd.put("/svc/edge/worker", other);
    repo.deploy(&[
        "apply",
        "--target",
        "edge",
        "--plan",
        plan.to_str().unwrap(),
        "--yes",
    ])
    .code(3)
    .stderr_has("stale");
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), other);
}

#[test]
fn a_failed_health_check_restores_the_previous_generation_in_a_second_transaction() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let unhealthy = scratch.path().join("unhealthy");
    let health = format!(
        "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e '{}'\"]\ntimeout = \"10s\"\n",
        unhealthy.display()
    );
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", &health, 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 8);
    std::fs::write(&unhealthy, "").unwrap();
    deploy_yes(&repo).code(4).stderr_has("rolled back");
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("1"));
    assert!(etcd.value(&format!("{STATE}journal")).is_none());
    let gen2: Value = serde_json::from_str(
        &etcd
            .value(&format!("{STATE}gen/00000000000000000002"))
            .unwrap(),
    )
    .unwrap();
    assert!(gen2["failed"].is_string(), "{gen2}");
    assert_eq!(outcomes(&repo).pop().unwrap().0, "rolled-back");
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
}

#[test]
fn a_second_deployer_exits_5_and_a_killed_deployers_lease_lapses() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));

    let holder = Paused::start(
        repo.path(),
        &["--target", "edge", "--yes"],
        "after-lock",
        None,
        &[],
    );
    let pid = holder.pid();
    deploy_yes(&repo)
        .code(5)
        .stderr_has("locked by")
        .stderr_has(&format!("(pid {pid}, deploying `edge`)"));

    holder.kill9();
    let lock = format!("{STATE}lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd.value(&lock).is_some() {
        assert!(
            Instant::now() < deadline,
            "the dead deployer's lock never lapsed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    deploy_yes(&repo).code(0);
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
    // A finished deployment revokes its lease: no lock is left behind.
    assert!(etcd.value(&lock).is_none());
}

#[test]
fn the_lock_is_kept_alive_through_a_health_check_longer_than_its_ttl() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let started = scratch.path().join("health-started");
    // lock_ttl is 1s: the health check outlives it three times over.
    let health = format!(
        "[health]\ncommand = [\"sh\", \"-c\", \"touch '{}'; sleep 3\"]\ntimeout = \"30s\"\n",
        started.display()
    );
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", &health, 4));
    let first = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("-C")
        .arg(repo.path())
        .args(["--target", "edge", "--yes"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the health check never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2500));
    // 2.5 s into the health check, well past the TTL: the lock is still held.
    deploy_yes(&repo).code(5).stderr_has("locked by");
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
    assert_eq!(outcomes(&repo).last().unwrap().0, "applied");
}

#[test]
fn a_deployer_killed_after_its_transaction_is_recovered_and_recorded_by_the_next_run() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 8);
    let killed = Paused::start(
        repo.path(),
        &["--target", "edge", "--yes"],
        "after-switch",
        None,
        &[],
    );
    killed.kill9();
    // Committed whole: the new values and the journal that says a health check was due.
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(8));
    assert!(etcd.value(&format!("{STATE}journal")).is_some());

    let lock = format!("{STATE}lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd.value(&lock).is_some() {
        assert!(
            Instant::now() < deadline,
            "the killed deployer's lock never lapsed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    deploy_yes(&repo).code(0).stderr_has("interrupted");
    assert!(etcd.value(&format!("{STATE}journal")).is_none());
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("2"));
    let got: Vec<String> = outcomes(&repo).into_iter().map(|(o, _)| o).collect();
    assert_eq!(got, ["applied", "applied", "unchanged"]);
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
}

#[test]
fn a_change_larger_than_one_transaction_is_refused_and_never_split() {
    let etcd = Cluster::start(1);
    let mut toml = edge_toml(&etcd.endpoints_toml(), "", "", 4);
    for i in 0..130 {
        toml.push_str(&format!(
            "\n[settings.r{i:03}]\nqueue = \"arn:aws:sqs:eu-west-1:444444444444:jobs\"\nengine = \"conformer-ctc\"\nthreads = 1\n"
        ));
    }
    let repo = repo_with(&toml);
    for args in [
        vec!["plan", "--target", "edge"],
        vec!["--target", "edge", "--yes"],
    ] {
        repo.deploy(&args)
            .code(1)
            .stderr_has("does not fit in one etcd transaction")
            .stderr_has("134 operations")
            .stderr_has("the limit is 128")
            .stderr_has("--max-txn-ops");
    }
    // Nothing at all was written: no resource, no stamp, no log.
    assert!(etcd.keys(PREFIX).is_empty());
    assert!(etcd.keys(STATE).is_empty());

    // A server configured for more: the same change fits once [target] says so, and a byte
    // limit is enforced the same way.
    repo.edit(
        ENV,
        &[(
            "lock_ttl = \"1s\"\n",
            "lock_ttl = \"1s\"\nmax_txn_ops = 1000\nmax_request_bytes = 4096\n",
        )],
    );
    repo.commit("a small byte limit");
    deploy_yes(&repo)
        .code(1)
        .stderr_has("bytes (the limit is 4096)")
        .stderr_has("--max-request-bytes");
    assert!(etcd.keys(STATE).is_empty());
}

#[test]
fn a_store_stamped_for_another_account_is_refused_before_anything_is_read_or_written() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    etcd.put(
        &format!("{STATE}stamp"),
        r#"{"environment":"edge","account":"999999999999","created":"2026-01-01T00:00:00Z","version":1}"#,
    );
    etcd.put("/svc/edge/worker", r#"{"threads":1}"#);
    let before = etcd.keys("/svc/");
    for args in [
        vec!["--target", "edge", "--yes"],
        vec!["plan", "--target", "edge"],
    ] {
        repo.deploy(&args).code(3).stderr_has("999999999999");
    }
    assert_eq!(etcd.keys("/svc/"), before);

    // An unstamped prefix that already holds keys is not adopted either.
    etcd.ctl(&["del", &format!("{STATE}stamp")]);
    deploy_yes(&repo).code(3).stderr_has("/svc/edge/worker");
    assert!(etcd.value(&format!("{STATE}stamp")).is_none());
}

#[test]
fn unreachable_endpoints_and_a_server_that_is_not_etcd_are_named() {
    require_tools();
    let closed = free_port();
    let repo = repo_with(&edge_toml(
        &format!("[\"http://127.0.0.1:{closed}\"]"),
        "",
        "",
        4,
    ));
    repo.edit(ENV, &[("timeout = \"5s\"", "timeout = \"1s\"")]);
    repo.commit("short timeout");
    repo.deploy(&["plan", "--target", "edge"])
        .code(1)
        .stderr_has(&format!("http://127.0.0.1:{closed}: cannot connect"));

    // Something else listens there: an HTTP server that is not etcd.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
    });
    repo.edit(
        ENV,
        &[(
            &format!("http://127.0.0.1:{closed}"),
            &format!("http://127.0.0.1:{port}"),
        )],
    );
    repo.commit("an endpoint that is not etcd");
    repo.deploy(&["plan", "--target", "edge"])
        .code(1)
        .stderr_has(&format!("http://127.0.0.1:{port} is not an etcd v3 server"));
}

#[test]
fn credentials_come_from_secret_references() {
    let mut etcd = Cluster::start(1);
    etcd.ctl(&["user", "add", "root:s3cret-pw"]);
    etcd.ctl(&["auth", "enable"]);
    etcd.user = Some("root:s3cret-pw".into());
    let creds = "username = { secret = \"env:ETCD_USER\" }\npassword = { secret = \"env:ETCD_PASSWORD\" }\n";
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), creds, "", 4));

    // Without credentials etcd refuses, and the message says so.
    repo.deploy(&["plan", "--target", "edge"])
        .code(1)
        .stderr_has("ETCD_USER");
    repo.deploy_env(
        &["--target", "edge", "--yes"],
        &[("ETCD_USER", "root"), ("ETCD_PASSWORD", "wrong")],
    )
    .code(1)
    .stderr_has("authentication failed");
    assert!(etcd.keys("/svc/").is_empty());

    let run = repo.deploy_env(
        &["--target", "edge", "--yes"],
        &[("ETCD_USER", "root"), ("ETCD_PASSWORD", "s3cret-pw")],
    );
    run.code(0);
    assert!(!run.stdout.contains("s3cret-pw") && !run.stderr.contains("s3cret-pw"));
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
    // The password is in no key envlock wrote.
    assert!(
        etcd.keys("/svc/")
            .values()
            .all(|(v, _)| !v.contains("s3cret-pw"))
    );
}

/// Kill the leader of a three-member cluster while a deployment is stopped at `point`, let it
/// go on, and check that the store holds all of the deployment or none of it, that the next
/// run reports what is live, and that it then finishes the job.
fn leader_killed_at(point: &str) -> (i32, String) {
    let mut etcd = Cluster::start(3);
    let scratch = tempfile::tempdir().unwrap();
    let mut toml = edge_toml(&etcd.endpoints_toml(), "", "", 4);
    for i in 0..20 {
        toml.push_str(&format!(
            "\n[settings.r{i:02}]\nqueue = \"arn:aws:sqs:eu-west-1:444444444444:jobs\"\nengine = \"conformer-ctc\"\nthreads = 4\n"
        ));
    }
    let repo = repo_with(&toml);
    deploy_yes(&repo).code(0);
    let old = etcd.keys(PREFIX);
    repo.edit(ENV, &[("threads = 4\n", "threads = 5\n")]);
    repo.commit("threads 5 everywhere");
    assert!(repo.read(ENV).matches("threads = 5").count() == 21);

    let resume = scratch.path().join("go");
    let paused = Paused::start(
        repo.path(),
        &["--target", "edge", "--yes"],
        point,
        Some(&resume),
        &[],
    );
    let leader = etcd.leader();
    etcd.kill(leader);
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();

    // All or nothing: every resource holds its old value, or every one its new value.
    let now = etcd.keys(PREFIX);
    let current = etcd.value(&format!("{STATE}current"));
    let all_new = now.values().all(|(v, _)| v.contains("\"threads\":5"));
    let all_old = now
        .iter()
        .all(|(k, (v, _))| old.get(k).is_some_and(|(o, _)| o == v));
    assert_eq!(now.len(), old.len());
    match current.as_deref() {
        Some("2") => assert!(all_new, "generation 2 is live but not every key is new"),
        Some("1") => assert!(all_old, "generation 1 is live but some key changed"),
        other => panic!("current is {other:?}\n{stderr}"),
    }
    // The next run reports the truth, then finishes the job on the surviving members.
    let status = repo.deploy(&["status", "--target", "edge"]);
    status.code(0).stdout_has(&format!(
        "live:        generation {}",
        current.as_deref().unwrap()
    ));
    deploy_yes(&repo).code(0);
    assert!(
        etcd.keys(PREFIX)
            .values()
            .all(|(v, _)| v.contains("\"threads\":5"))
    );
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
    (code, stderr)
}

#[test]
fn leader_killed_just_before_the_transaction_commits_all_or_nothing() {
    let (code, stderr) = leader_killed_at("after-journal");
    // The client waits for the new leader and the transaction then commits whole, or the
    // deploy fails with nothing written; it never half-applies.
    assert!(matches!(code, 0 | 1 | 4), "exit {code}\n{stderr}");
}

#[test]
fn leader_killed_after_the_transaction_keeps_the_deployment() {
    let (code, stderr) = leader_killed_at("after-switch");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_deployment_behind_the_live_commit_writes_nothing_but_its_refusal() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 8);
    set_threads(&repo, 8, 12);
    let live = repo.git(&["rev-parse", "HEAD"]);
    deploy_yes(&repo).code(0);
    // This clone goes back two commits, as a clone that did not pull is.
    repo.git(&["reset", "-q", "--hard", "HEAD~2"]);
    let before = etcd.keys("/svc/edge");
    repo.deploy(&["plan", "--target", "edge"])
        .code(0)
        .stderr_has("2 commits behind");
    deploy_yes(&repo)
        .code(3)
        .stderr_has(&format!("`edge` is live at {}", &live[..12]))
        .stderr_has("this clone is 2 commits behind it")
        .stderr_has("deploy rollback --target edge");
    let after = etcd.keys("/svc/edge");
    // The log's checkpoint follows the log (it counts the records after the refusal's).
    let checkpoint = format!("{STATE}log-checkpoint");
    for (k, v) in before.iter().filter(|(k, _)| **k != checkpoint) {
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
    assert_ne!(after.get(&checkpoint), before.get(&checkpoint));
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(added[0].starts_with(&format!("{STATE}log/")), "{added:?}");
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(12));
    let (outcome, reason) = outcomes(&repo).pop().unwrap();
    assert_eq!(outcome, "refused");
    assert!(reason.contains("2 commits behind"), "{reason}");
}

#[test]
fn status_during_a_deploy_held_in_its_health_check_says_it_is_in_progress() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let (started, release) = (
        scratch.path().join("started"),
        scratch.path().join("release"),
    );
    let health = format!(
        "[health]\ncommand = [\"sh\", \"-c\", \"touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done\"]\ntimeout = \"120s\"\n",
        started.display(),
        release.display()
    );
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    repo.write(ENV, edge_toml(&etcd.endpoints_toml(), "", &health, 5));
    let commit = repo.commit("threads 5, a slow health check");
    let mut child = repo.spawn_deploy(&["--target", "edge", "--yes"], &[]);
    crate::harness::wait_for_file(&mut child, &started);

    let run = repo.deploy(&["status", "--target", "edge"]);
    run.code(0)
        .stdout_has(&format!(
            "a deployment is in progress: apply of commit {} by ",
            &commit[..12]
        ))
        .stdout_has(&format!("(pid {})", child.id()))
        .stdout_has("now: health-checking generation 2, which is live but not verified yet")
        .stdout_has("NOT VERIFIED YET");
    assert!(!run.stdout.contains("interrupted"), "{}", run.stdout);
    let s = crate::lifecycle::status_json(&repo, "edge");
    let running = s.in_progress.expect("a deployment in progress");
    assert_eq!(
        (running.pid, running.phase.as_str(), running.next),
        (child.id(), "verifying", Some(2))
    );
    assert_eq!(s.interrupted, None);

    std::fs::write(&release, "").unwrap();
    assert!(child.wait().unwrap().success());
    let s = crate::lifecycle::status_json(&repo, "edge");
    assert!(s.in_progress.is_none() && s.interrupted.is_none());
}

/// Issue 16 item 7 on etcd: a log record edited by hand in the store refuses deployments
/// until `deploy log seal` sets it aside; the edited key stays as it is.
#[test]
fn a_damaged_log_is_refused_then_sealed_and_the_damaged_key_is_kept() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 6);
    deploy_yes(&repo).code(0);
    let first = format!("{STATE}log/00000000000000000001");
    let record = etcd.value(&first).unwrap();
    let edited = record.replacen("\"adopt\"", "\"adapt\"", 1);
    assert_ne!(edited, record);
    etcd.put(&first, &edited);
    let before = etcd.keys(STATE);

    set_threads(&repo, 6, 8);
    deploy_yes(&repo)
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it")
        .stderr_has("record 1 (line 1) was edited");
    let mut now = etcd.keys(STATE);
    now.remove(&format!("{STATE}lock"));
    assert_eq!(now, before, "a refusal writes nothing");
    repo.deploy(&["log", "seal", "--target", "edge", "--yes"])
        .code(3)
        .stderr_has("a seal needs a reason");

    repo.deploy(&[
        "log",
        "seal",
        "--target",
        "edge",
        "--reason",
        "edited in a test",
        "--yes",
    ])
    .code(0)
    .stderr_has("Sealed: record 3 of `edge`'s deployment log");
    let seal: Value = serde_json::from_str(
        &etcd
            .value(&format!("{STATE}log/00000000000000000003"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seal["action"], "seal");
    assert_eq!(seal["sealed"]["line"], 1);
    assert_eq!(
        etcd.value(&first).unwrap(),
        edited,
        "the damaged key is kept"
    );
    let run = repo.deploy(&["log", "verify", "--target", "edge", "--format", "json"]);
    run.code(0);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["environments"][0]["status"], "sealed");
    assert_eq!(doc["environments"][0]["sealed"][0]["seal_line"], 3);

    deploy_yes(&repo).code(0);
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(8));
    repo.deploy(&["log", "verify", "--target", "edge"])
        .code(0)
        .stdout_has("SEALED DAMAGE:");
    repo.deploy(&[
        "log", "seal", "--target", "edge", "--reason", "again", "--yes",
    ])
    .code(3)
    .stderr_has("nothing to seal");
}

const EXTRA: &str = "\n[settings.extra]\nqueue = \"arn:aws:sqs:eu-west-1:444444444444:jobs\"\nengine = \"conformer-ctc\"\nthreads = 2\n";
const CACHE: &str = "\n[settings.cache]\nqueue = \"arn:aws:sqs:eu-west-1:444444444444:jobs\"\nengine = \"whisper-large-v3\"\nthreads = 3\n";
/// A hand edit of `worker` after the last deployment (an emergency fix), in bytes envlock
/// never writes (spaces, another key order).
const HAND_EDIT: &str = r#"{ "threads": 1, "engine": "conformer-ctc", "queue": "arn:aws:sqs:eu-west-1:444444444444:jobs", "endpoint": "https://edge.example.com/healthz" }"#;

/// `edge` with `worker` and `extra` deployed (generation 1), `worker` then edited by hand, and
/// a commit that changes `worker`, removes `extra` and adds `cache`; the health check fails
/// while `unhealthy` exists.
fn hand_edited_then_changed(etcd: &Cluster, unhealthy: &std::path::Path) -> Repo {
    let health = format!(
        "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e '{}'\"]\ntimeout = \"10s\"\n",
        unhealthy.display()
    );
    let toml = edge_toml(&etcd.endpoints_toml(), "", &health, 4);
    let repo = repo_with(&format!("{toml}{EXTRA}"));
    deploy_yes(&repo).code(0);
    etcd.put("/svc/edge/worker", HAND_EDIT);
    repo.write(
        ENV,
        format!("{}{CACHE}", toml.replace("threads = 4\n", "threads = 8\n")),
    );
    repo.commit("worker 8 threads, no extra, a cache");
    repo
}

/// Every key under the prefix with its exact bytes.
fn resources(etcd: &Cluster) -> BTreeMap<String, String> {
    etcd.keys(PREFIX)
        .into_iter()
        .map(|(k, (v, _))| (k, v))
        .collect()
}

/// Issue 16 item 9: a failed health check restores exactly the bytes that were live before the
/// apply (the hand edit), removes the key it added and brings back the one it deleted.
#[test]
fn a_failed_health_check_restores_the_hand_edited_bytes_not_the_recorded_generation() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let unhealthy = scratch.path().join("unhealthy");
    let repo = hand_edited_then_changed(&etcd, &unhealthy);
    let before = resources(&etcd);
    assert_eq!(before["/svc/edge/worker"], HAND_EDIT);
    assert!(before.contains_key("/svc/edge/extra"));

    std::fs::write(&unhealthy, "").unwrap();
    deploy_yes(&repo).code(4).stderr_has("rolled back");
    assert_eq!(
        resources(&etcd),
        before,
        "exactly what was live before the apply"
    );
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("1"));
    assert!(etcd.value(&format!("{STATE}journal")).is_none());
    // The generation record kept what the apply replaced.
    let gen2: Value = serde_json::from_str(
        &etcd
            .value(&format!("{STATE}gen/00000000000000000002"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(gen2["before"]["worker"], HAND_EDIT, "{gen2}");
    assert!(gen2["before"]["cache"].is_null(), "{gen2}");
    assert!(gen2["before"]["extra"].is_string(), "{gen2}");
    // `deploy status` tells the truth: generation 1 is live, with `worker` edited by hand.
    repo.deploy(&["status", "--target", "edge"])
        .code(0)
        .stdout_has("worker");

    // An explicit rollback still makes a recorded generation live: healthy again, deploy,
    // then roll back to generation 1's recorded values.
    std::fs::remove_file(&unhealthy).unwrap();
    deploy_yes(&repo).code(0);
    repo.deploy(&["rollback", "--target", "edge", "--to", "1", "--yes"])
        .code(0);
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(4));
    assert!(etcd.value("/svc/edge/cache").is_none());
}

/// Issue 16 item 9, interrupted: killed (`kill -9`) after its transaction, before the health
/// check; the next run's health check fails and its rollback restores the hand edit.
#[cfg(feature = "failpoints")]
#[test]
fn a_killed_deployers_rollback_by_the_next_run_restores_the_hand_edited_bytes() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let unhealthy = scratch.path().join("unhealthy");
    let repo = hand_edited_then_changed(&etcd, &unhealthy);
    let before = resources(&etcd);
    Paused::start(
        repo.path(),
        &["--target", "edge", "--yes"],
        "after-switch",
        None,
        &[],
    )
    .kill9();
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), worker_json(8));
    let lock = format!("{STATE}lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd.value(&lock).is_some() {
        assert!(Instant::now() < deadline, "the lock never lapsed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&unhealthy, "").unwrap();
    deploy_yes(&repo)
        .code(4)
        .stderr_has("interrupted")
        .stderr_has("rolled back");
    assert_eq!(resources(&etcd), before);
    assert_eq!(etcd.value(&format!("{STATE}current")).as_deref(), Some("1"));
    assert!(etcd.value(&format!("{STATE}journal")).is_none());
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
}

/// A key changed by someone else between the apply and its rollback is not overwritten: the
/// rollback refuses, says which key, and the journal stays for the next run.
#[test]
fn a_rollback_never_restores_over_a_key_changed_after_the_apply() {
    let etcd = Cluster::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let edit = scratch.path().join("edit.sh");
    // The health check itself edits `worker` (someone else, mid-deployment), then fails.
    std::fs::write(
        &edit,
        format!(
            "etcdctl --endpoints={} put /svc/edge/worker '{{\"mid\":1}}' >/dev/null; exit 1\n",
            etcd.live_endpoints().join(",")
        ),
    )
    .unwrap();
    let health = format!(
        "[health]\ncommand = [\"sh\", \"{}\"]\ntimeout = \"10s\"\n",
        edit.display()
    );
    let toml = edge_toml(&etcd.endpoints_toml(), "", "", 4);
    let repo = repo_with(&toml);
    deploy_yes(&repo).code(0);
    repo.write(ENV, edge_toml(&etcd.endpoints_toml(), "", &health, 8));
    repo.commit("8 threads, a health check");
    deploy_yes(&repo)
        .code(1)
        .stderr_has("/svc/edge/worker")
        .stderr_has("changed by someone else")
        .stderr_has("wrote it; refusing to restore what was there before over it");
    assert_eq!(etcd.value("/svc/edge/worker").unwrap(), "{\"mid\":1}");
    assert!(etcd.value(&format!("{STATE}journal")).is_some());
}

/// The bytes an apply replaces are kept in its generation record, so they count against
/// etcd's request limit, in `plan` as in the apply: a large hand edit can make a small change
/// too large for one transaction, which is refused before anything is written.
#[test]
fn the_replaced_bytes_count_in_the_transaction_size_check() {
    let etcd = Cluster::start(1);
    let limit = "lock_ttl = \"1s\"\nmax_request_bytes = 65536\n";
    let toml = edge_toml(&etcd.endpoints_toml(), "", "", 4).replace("lock_ttl = \"1s\"\n", limit);
    let repo = repo_with(&toml);
    deploy_yes(&repo).code(0);
    let big = format!("{{\"note\":\"{}\"}}", "x".repeat(80_000));
    etcd.put("/svc/edge/worker", &big);
    repo.write(ENV, toml.replace("threads = 4\n", "threads = 8\n"));
    repo.commit("8 threads");
    let before = etcd.keys("/svc/");
    for args in [
        vec!["plan", "--target", "edge"],
        vec!["--target", "edge", "--yes"],
    ] {
        repo.deploy(&args)
            .code(1)
            .stderr_has("does not fit in one etcd transaction")
            .stderr_has("the limit is 65536");
    }
    assert_eq!(etcd.keys("/svc/"), before);
}

/// The log checkpoint makes a deployment read only the log's summary, and any change to a
/// record behind envlock's back (an edit, a deleted record, a rewritten checkpoint) still
/// makes the next deployment verify the whole log and refuse.
#[test]
fn the_log_checkpoint_notices_a_deleted_record_and_a_rewritten_checkpoint() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 6);
    deploy_yes(&repo).code(0);
    set_threads(&repo, 6, 8);
    deploy_yes(&repo).code(0);
    let checkpoint = format!("{STATE}log-checkpoint");
    assert_eq!(etcd.value(&checkpoint).as_deref(), Some("3\n"));
    let second = format!("{STATE}log/00000000000000000002");
    let record = etcd.value(&second).unwrap();

    // A record deleted, and the checkpoint rewritten to match the new count.
    etcd.ctl(&["del", &second]);
    etcd.put(&checkpoint, "2\n");
    set_threads(&repo, 8, 10);
    deploy_yes(&repo)
        .code(3)
        .stderr_has("does not verify")
        .stderr_has("record 3 (line 2) follows record 1: a record is missing");
    // Put back as it was (a new revision, but the same bytes): the chain verifies again, and
    // since the checkpoint no longer matches, it is verified whole and passes.
    etcd.put(&second, &record);
    deploy_yes(&repo).code(0);
    assert_eq!(etcd.value(&checkpoint).as_deref(), Some("4\n"));
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
}

/// A record deleted from the end of the log leaves a chain that verifies (a hash chain cannot
/// show its own end cut off), but the checkpoint counted it: the next deployment refuses
/// instead of reusing its `seq`, and a seal is the recorded way on.
#[test]
fn a_record_deleted_from_the_end_of_the_log_is_refused_then_sealed() {
    let etcd = Cluster::start(1);
    let repo = repo_with(&edge_toml(&etcd.endpoints_toml(), "", "", 4));
    deploy_yes(&repo).code(0);
    set_threads(&repo, 4, 6);
    deploy_yes(&repo).code(0);
    let last = format!("{STATE}log/00000000000000000002");
    etcd.ctl(&["del", &last]);
    set_threads(&repo, 6, 8);
    deploy_yes(&repo)
        .code(3)
        .stderr_has("does not verify")
        .stderr_has("records at the end of the log were removed")
        .stderr_has("it had 2 after the last append");
    assert_eq!(etcd.value(&last), None, "nothing was appended");
    repo.deploy(&["log", "verify", "--target", "edge"])
        .code(1)
        .stdout_has("records at the end of the log were removed");
    repo.deploy(&[
        "log", "seal", "--target", "edge", "--reason", "looked", "--yes",
    ])
    .code(0);
    assert!(etcd.value(&last).unwrap().contains("\"action\":\"seal\""));
    deploy_yes(&repo).code(0);
    repo.deploy(&["log", "verify", "--target", "edge"]).code(0);
}
