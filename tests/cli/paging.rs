//! `[notify] url`: alerts in the formats on-call tools read, delivered by envlock itself (issue 22
//! item 4). A real Alertmanager (Debian's `prometheus-alertmanager`, started here on a loopback
//! port) shows a failed deployment's alert through its API until a later success resolves it; a
//! plain `TcpListener` receiver records every request so that the PagerDuty Events v2 and
//! CloudEvents/CDEvents payloads are checked field by field; a receiver that is down or answers
//! 500 changes no outcome but is reported on stderr and in the log record; a token written in
//! clear is refused at its `file:line:col` without being repeated.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Repo, Run};

const VALIDATION: &str = "environments/validation.toml";
const PROD: &str = "environments/prod.toml";
const COMMON: &str = "environments/_common.toml";

/// The health check every test's `validation` runs: healthy unless `state/unhealthy` exists.
const HEALTH: &str = "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e state/unhealthy\"]\n";

// ---------------------------------------------------------------------------------------------
// A receiver that records requests

/// One HTTP request as received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on a loopback port that answers every request with `status` and records it.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(r) = answer(stream, status) {
                    log.lock().unwrap().push(r);
                }
            }
        });
        Receiver { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests received since the last call.
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Read one request from `stream`, answer `status`, close.
fn answer(stream: TcpStream, status: u16) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    let mut stream = stream;
    let _ = stream.write_all(reply.as_bytes());
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// A loopback port that accepts connections and never answers (held open until the test ends).
fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// A real Alertmanager

struct Alertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// `prometheus-alertmanager` with a one-receiver route, its storage in a temporary
    /// directory, no clustering. Not installed is a failure, as for etcd.
    fn start() -> Alertmanager {
        let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "prometheus-alertmanager is not installed: this test needs a real Alertmanager \
                 (Debian: apt-get install prometheus-alertmanager; .ci/run installs it)",
            );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let port = dead_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager starts");
        let am = Alertmanager {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "alertmanager did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts Alertmanager holds as active (resolved ones are not listed by its API).
    fn active(&self) -> Vec<Value> {
        let (status, body) = http_get(self.port, "/api/v2/alerts?active=true").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a loopback port: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The repository

/// The base fixture without prod's gate, `validation` with [`HEALTH`] and `notify` (a
/// `[notify]` table) in `validation.toml`.
fn repo_with(notify: &str) -> Repo {
    let repo = Repo::ungated();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    let text = repo.read(VALIDATION);
    repo.write(VALIDATION, format!("{text}\n{HEALTH}\n{notify}"));
    repo.commit("validation: health check and notify");
    repo
}

/// Change validation's worker threads (the layer says 4) and commit.
fn set_threads(repo: &Repo, threads: u32) -> String {
    let text = repo.read(VALIDATION);
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("threads ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = kept.replace(
        "[settings.worker]\n",
        &format!("[settings.worker]\nthreads = {threads}\n"),
    );
    repo.write(VALIDATION, text);
    repo.commit(&format!("validation: {threads} threads"))
}

fn unhealthy(repo: &Repo, yes: bool) {
    let p = repo.path().join("state/unhealthy");
    if yes {
        std::fs::write(p, "").unwrap();
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Leave an uncommitted edit in `file`: `deploy` refuses it (exit 3).
fn dirty(repo: &Repo, file: &str) {
    let text = repo.read(file);
    repo.write(file, format!("{text}\n# uncommitted\n"));
}

fn clean(repo: &Repo, file: &str) {
    repo.git(&["checkout", "--", file]);
}

/// Every record of `env`'s log as JSON, oldest first (`deploy log verify` passes).
fn records(repo: &Repo, env: &str) -> Vec<Value> {
    repo.deploy(&["log", "verify", "--target", env]).code(0);
    let run = repo.deploy(&["log", "--target", env, "--format", "json"]);
    run.code(0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let mut records = v["records"].as_array().unwrap().clone();
    records.sort_by_key(|r| r["seq"].as_u64());
    records
}

fn last_record(repo: &Repo, env: &str) -> Value {
    records(repo, env).pop().expect("a record")
}

fn raw_log(repo: &Repo, env: &str) -> String {
    std::fs::read_to_string(
        repo.path()
            .join(format!("targets/{env}/.envlock/log.jsonl")),
    )
    .unwrap_or_default()
}

fn deploy(repo: &Repo, env: &str, envs: &[(&str, &str)]) -> Run {
    repo.deploy_env(&["--target", env, "--yes"], envs)
}

fn is_rfc3339(s: &str) -> bool {
    humantime::parse_rfc3339(s).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Alertmanager

#[test]
fn a_failed_deploy_fires_in_a_real_alertmanager_and_a_later_success_resolves_it() {
    let am = Alertmanager::start();
    // In the layer: both environments page the same Alertmanager.
    let repo = Repo::ungated();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    let common = repo.read(COMMON);
    repo.write(
        COMMON,
        format!(
            "{common}\n[notify]\nurl = \"{}\"\nformat = \"alertmanager\"\ntimeout = \"10s\"\n",
            am.url()
        ),
    );
    let text = repo.read(VALIDATION);
    repo.write(VALIDATION, format!("{text}\n{HEALTH}"));
    repo.commit("notify Alertmanager");

    deploy(&repo, "validation", &[]).code(0);
    assert_eq!(am.active(), Vec::<Value>::new(), "a success fires nothing");

    // A failed deployment, rolled back: an active alert, critical, until a success.
    unhealthy(&repo, true);
    let bad = set_threads(&repo, 5);
    let run = deploy(&repo, "validation", &[]);
    run.code(4).stderr_has("notified: alertmanager");
    let active = am.active();
    assert_eq!(active.len(), 1, "{active:#?}");
    let alert = &active[0];
    assert_eq!(alert["labels"]["alertname"], "EnvlockDeploymentFailed");
    assert_eq!(alert["labels"]["environment"], "validation");
    assert_eq!(alert["labels"]["account"], "111111111111");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["outcome"], "rolled-back");
    assert_eq!(alert["annotations"]["commit"], bad.as_str());
    assert_eq!(alert["status"]["state"], "active");
    let ends = humantime::parse_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
    assert!(ends > std::time::SystemTime::now() + Duration::from_secs(24 * 3600));
    let record = last_record(&repo, "validation");
    assert_eq!(record["outcome"], "rolled-back");
    assert_eq!(record["notify"]["format"], "alertmanager");
    assert_eq!(record["notify"]["delivered"], true);

    // A refusal in protected prod (an uncommitted edit, found before any target is read): its
    // own alert, critical, beside validation's.
    dirty(&repo, PROD);
    deploy(&repo, "prod", &[]).code(3);
    clean(&repo, PROD);
    let active = am.active();
    assert_eq!(active.len(), 2, "{active:#?}");
    let prod = active
        .iter()
        .find(|a| a["labels"]["environment"] == "prod")
        .expect("prod's alert");
    assert_eq!(prod["labels"]["severity"], "critical");
    assert_eq!(prod["annotations"]["outcome"], "refused");

    // validation deploys fine again: its alert is resolved, prod's stays.
    unhealthy(&repo, false);
    deploy(&repo, "validation", &[]).code(0);
    let active = am.active();
    assert_eq!(active.len(), 1, "{active:#?}");
    assert_eq!(active[0]["labels"]["environment"], "prod");
    assert_eq!(
        last_record(&repo, "validation")["notify"]["delivered"],
        true
    );

    // prod deploys: nothing is active any more.
    deploy(&repo, "prod", &[]).code(0);
    assert_eq!(am.active(), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// PagerDuty Events API v2

#[test]
fn pagerduty_events_trigger_and_resolve_one_dedup_key_and_send_change_events() {
    let pd = Receiver::start(202);
    let key = "R0UTINGKEY0000000000000000000042";
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
        pd.url()
    ));
    let envs = [("PD_ROUTING_KEY", key)];
    let first = repo.git(&["rev-parse", "HEAD"]);

    // A deployment: resolve (nothing open, harmless) and a change event.
    let run = deploy(&repo, "validation", &envs);
    run.code(0);
    let got = pd.take();
    assert_eq!(
        got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/v2/enqueue", "/v2/change/enqueue"]
    );
    let resolve = &got[0];
    assert_eq!(resolve.header("content-type"), Some("application/json"));
    assert_eq!(
        resolve.header("authorization"),
        None,
        "the key goes in the body"
    );
    assert_eq!(resolve.body["routing_key"], key);
    assert_eq!(resolve.body["event_action"], "resolve");
    let dedup = resolve.body["dedup_key"].as_str().unwrap().to_owned();
    assert!(dedup.starts_with("envlock/validation/"), "{dedup}");
    assert!(dedup.len() <= 255);
    let change = &got[1].body;
    assert_eq!(change["routing_key"], key);
    assert!(
        change["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("`validation` deployed")
    );
    assert!(
        change["payload"]["source"]
            .as_str()
            .unwrap()
            .contains("targets/validation")
    );
    assert!(is_rfc3339(change["payload"]["timestamp"].as_str().unwrap()));
    assert_eq!(
        change["payload"]["custom_details"]["commit"],
        first.as_str()
    );
    assert_eq!(change["payload"]["custom_details"]["outcome"], "applied");

    // A rollback: trigger, critical, under the same key.
    unhealthy(&repo, true);
    let bad = set_threads(&repo, 5);
    deploy(&repo, "validation", &envs).code(4);
    let got = pd.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    let t = &got[0].body;
    assert_eq!(got[0].path, "/v2/enqueue");
    assert_eq!(t["routing_key"], key);
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], dedup.as_str());
    assert_eq!(t["client"], "envlock");
    let p = &t["payload"];
    assert_eq!(p["severity"], "critical");
    assert!(
        p["summary"].as_str().unwrap().contains("ROLLED BACK"),
        "{p}"
    );
    assert!(p["summary"].as_str().unwrap().len() <= 1024);
    assert!(p["source"].as_str().unwrap().contains("targets/validation"));
    assert!(is_rfc3339(p["timestamp"].as_str().unwrap()));
    assert_eq!(p["component"], "validation");
    assert_eq!(p["group"], "111111111111");
    assert_eq!(p["class"], "deployment");
    assert_eq!(p["custom_details"]["commit"], bad.as_str());
    assert_eq!(p["custom_details"]["outcome"], "rolled-back");
    assert!(
        p["custom_details"]["reason"]
            .as_str()
            .unwrap()
            .contains("health check failed")
    );

    // A refusal in an unprotected environment: a warning, same key.
    dirty(&repo, VALIDATION);
    deploy(&repo, "validation", &envs).code(3);
    clean(&repo, VALIDATION);
    let got = pd.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["event_action"], "trigger");
    assert_eq!(got[0].body["dedup_key"], dedup.as_str());
    assert_eq!(got[0].body["payload"]["severity"], "warning");
    assert_eq!(
        got[0].body["payload"]["custom_details"]["outcome"],
        "refused"
    );

    // Healthy again: resolve the same key, and a change event.
    unhealthy(&repo, false);
    deploy(&repo, "validation", &envs).code(0);
    let got = pd.take();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].body["event_action"], "resolve");
    assert_eq!(got[0].body["dedup_key"], dedup.as_str());
    assert_eq!(got[0].body.get("payload"), None);
    assert_eq!(got[1].path, "/v2/change/enqueue");

    // An unchanged verify pages nobody and is not a change: only a resolve. The JSON report
    // says what became of the notification, as the record does.
    let run = repo.deploy_env(
        &["--target", "validation", "--yes", "--format", "json"],
        &envs,
    );
    run.code(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["notify"]["format"], "pagerduty");
    assert_eq!(report["notify"]["delivered"], true);
    assert_eq!(report["notify"]["attempts"], 1);
    let got = pd.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["event_action"], "resolve");
    assert_eq!(last_record(&repo, "validation")["action"], "verify");

    // The key never left the process except in `routing_key`.
    assert!(!raw_log(&repo, "validation").contains(key));
    for r in records(&repo, "validation") {
        assert_eq!(r["notify"]["delivered"], true, "{r}");
    }
}

#[test]
fn a_protected_refusal_is_critical_and_a_failure_elsewhere_is_an_error() {
    let pd = Receiver::start(202);
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
        pd.url()
    ));
    let prod = repo.read(PROD);
    repo.write(
        PROD,
        format!(
            "{prod}\n[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
            pd.url()
        ),
    );
    repo.commit("prod pages too");
    let envs = [("PD_ROUTING_KEY", "R0UTINGKEY0000000000000000000042")];
    dirty(&repo, PROD);
    deploy(&repo, "prod", &envs).code(3);
    clean(&repo, PROD);
    let got = pd.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["payload"]["severity"], "critical");
    assert!(
        got[0].body["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("envlock/prod/")
    );

    // Nothing to change, but unhealthy: a failed verify is an error (not critical).
    deploy(&repo, "validation", &envs).code(0);
    pd.take();
    unhealthy(&repo, true);
    deploy(&repo, "validation", &envs).code(1);
    let got = pd.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["event_action"], "trigger");
    assert_eq!(got[0].body["payload"]["severity"], "error");
    assert_eq!(got[0].body["payload"]["custom_details"]["action"], "verify");
}

// ---------------------------------------------------------------------------------------------
// CloudEvents 1.0 + CDEvents

#[test]
fn cloudevents_carry_cdevents_types_for_deployed_rolled_back_and_failed() {
    let ce = Receiver::start(200);
    let token = "ce-bearer-token-0123456789";
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{}/events\"\nformat = \"cloudevents\"\ntoken = {{ secret = \"file:state/ce-token\" }}\n",
        ce.url()
    ));
    std::fs::write(repo.path().join("state/ce-token"), format!("{token}\n")).unwrap();
    let first = repo.git(&["rev-parse", "HEAD"]);

    let run = deploy(&repo, "validation", &[]);
    run.code(0);
    let got = ce.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.path, "/events");
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/cloudevents+json")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let e = &r.body;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "dev.cdevents.service.deployed.0.2.0");
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let source = e["source"].as_str().unwrap().to_owned();
    assert!(source.starts_with("/envlock/validation/"), "{source}");
    assert_eq!(e["subject"], "validation");
    assert!(is_rfc3339(e["time"].as_str().unwrap()));
    assert_eq!(e["datacontenttype"], "application/json");
    // The CDEvent (v0.4) in `data`.
    let d = &e["data"];
    assert_eq!(d["context"]["version"], "0.4.1");
    assert_eq!(d["context"]["id"], id.as_str());
    assert_eq!(d["context"]["source"], source.as_str());
    assert_eq!(d["context"]["type"], e["type"]);
    assert_eq!(d["context"]["timestamp"], e["time"]);
    assert_eq!(d["subject"]["type"], "service");
    assert_eq!(d["subject"]["id"], "validation");
    assert_eq!(d["subject"]["content"]["environment"]["id"], "validation");
    assert_eq!(
        d["subject"]["content"]["artifactId"],
        format!("pkg:generic/envlock/validation@{first}").as_str()
    );
    assert_eq!(d["customData"]["outcome"], "applied");

    // A rollback: service.rolledback; a refusal: incident.detected; new ids each time.
    unhealthy(&repo, true);
    set_threads(&repo, 5);
    deploy(&repo, "validation", &[]).code(4);
    dirty(&repo, VALIDATION);
    deploy(&repo, "validation", &[]).code(3);
    clean(&repo, VALIDATION);
    let got = ce.take();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].body["type"], "dev.cdevents.service.rolledback.0.2.0");
    assert_eq!(got[0].body["data"]["customData"]["outcome"], "rolled-back");
    let incident = &got[1].body;
    assert_eq!(incident["type"], "dev.cdevents.incident.detected.0.2.0");
    assert_eq!(incident["data"]["subject"]["type"], "incident");
    assert_eq!(
        incident["data"]["subject"]["content"]["environment"]["id"],
        "validation"
    );
    assert!(
        incident["data"]["subject"]["content"]["description"]
            .as_str()
            .unwrap()
            .contains("REFUSED")
    );
    let ids: std::collections::BTreeSet<&str> = [
        id.as_str(),
        got[0].body["id"].as_str().unwrap(),
        got[1].body["id"].as_str().unwrap(),
    ]
    .into();
    assert_eq!(ids.len(), 3, "every event has its own id");

    // An unchanged verify: nothing was deployed, nothing is sent.
    unhealthy(&repo, false);
    deploy(&repo, "validation", &[]).code(0);
    assert_eq!(ce.take().len(), 1);
    deploy(&repo, "validation", &[]).code(0);
    assert_eq!(ce.take().len(), 0);
    assert!(!raw_log(&repo, "validation").contains(token));
}

// ---------------------------------------------------------------------------------------------
// Failed deliveries

#[test]
fn a_receiver_that_fails_or_is_down_changes_no_outcome_but_is_reported_and_recorded() {
    let failing = Receiver::start(500);
    let token = "PD-KEY-THAT-MUST-NOT-LEAK-77";
    let notify = |url: &str| {
        format!(
            "[notify]\nurl = \"{url}\"\nformat = \"pagerduty\"\ntimeout = \"2s\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n"
        )
    };
    let repo = repo_with(&notify(&failing.url()));
    let envs = [("PD_ROUTING_KEY", token)];

    // A receiver answering 500: retried with backoff, within the timeout; still exit 0.
    let started = Instant::now();
    let run = deploy(&repo, "validation", &envs);
    let took = started.elapsed();
    run.code(0)
        .stderr_has("NOT DELIVERED")
        .stderr_has("HTTP 500")
        .stderr_has("Deployed:");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let tries = failing.take().len();
    assert!(tries >= 2, "retried: {tries} requests");
    let record = last_record(&repo, "validation");
    assert_eq!(record["outcome"], "applied");
    assert_eq!(record["notify"]["format"], "pagerduty");
    assert_eq!(record["notify"]["delivered"], false);
    assert!(record["notify"]["attempts"].as_u64().unwrap() >= 2);
    assert!(
        record["notify"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );
    let log = repo.deploy(&["log", "--target", "validation"]);
    log.code(0)
        .stdout_has("pagerduty notification NOT delivered");

    // Nobody listening: a rollback stays exit 4, reported and recorded.
    let text = repo
        .read(VALIDATION)
        .replace(&failing.url(), &format!("http://127.0.0.1:{}", dead_port()));
    repo.write(VALIDATION, text);
    repo.commit("notify: a receiver that is down");
    unhealthy(&repo, true);
    set_threads(&repo, 5);
    let started = Instant::now();
    let run = deploy(&repo, "validation", &envs);
    let took = started.elapsed();
    run.code(4)
        .stderr_has("NOT DELIVERED")
        .stderr_has("cannot connect")
        .stderr_has("rolled back");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let record = last_record(&repo, "validation");
    assert_eq!(record["outcome"], "rolled-back");
    assert_eq!(record["notify"]["delivered"], false);

    // A refusal with no record (found before the target is read): stderr only, still exit 3.
    dirty(&repo, VALIDATION);
    deploy(&repo, "validation", &envs)
        .code(3)
        .stderr_has("NOT DELIVERED");
    clean(&repo, VALIDATION);

    // The token is in no output and no record.
    let all = [
        run.stdout.as_str(),
        run.stderr.as_str(),
        &raw_log(&repo, "validation"),
        &repo.deploy(&["log", "--format", "json"]).stdout,
    ]
    .concat();
    assert!(!all.contains(token));
}

#[test]
fn a_receiver_that_never_answers_is_given_up_at_the_timeout() {
    let url = format!("http://127.0.0.1:{}", silent_port());
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{url}\"\nformat = \"alertmanager\"\ntimeout = \"2s\"\n"
    ));
    let started = Instant::now();
    let run = deploy(&repo, "validation", &[]);
    let took = started.elapsed();
    run.code(0)
        .stderr_has("NOT DELIVERED")
        .stderr_has("timed out");
    // Two attempts of at most 1s each (a third of the timeout, at least 1s), then given up.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let record = last_record(&repo, "validation");
    assert_eq!(record["outcome"], "applied");
    assert_eq!(record["notify"]["delivered"], false);
}

#[test]
fn an_unreadable_token_refuses_before_anything_is_written() {
    let pd = Receiver::start(202);
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
        pd.url()
    ));
    let run = deploy(&repo, "validation", &[]);
    run.code(3)
        .stderr_has("[notify] token `env:PD_ROUTING_KEY`")
        .stderr_has("export PD_ROUTING_KEY=");
    assert!(!repo.path().join("targets/validation").exists());
    assert_eq!(pd.take().len(), 0, "nothing can be sent without the key");
    // `plan` sends nothing, so it needs no key (CI plans pull requests without one).
    repo.deploy(&["plan", "--target", "validation"]).code(0);
    assert_eq!(pd.take().len(), 0);
}

/// PagerDuty refuses a `dedup_key` over 255 characters: an environment whose name is near the
/// file-name limit still gets one that fits, the same in every run, so a success resolves it.
#[test]
fn a_long_environment_name_still_makes_a_dedup_key_pagerduty_accepts() {
    let pd = Receiver::start(202);
    let repo = Repo::ungated();
    let name = "v".repeat(240);
    let text = repo
        .read(VALIDATION)
        .replace("111111111111", "333333333333")
        .replace("validation.example.com", "long.example.com")
        .replace("targets/validation", "targets/long");
    repo.write(
        &format!("environments/{name}.toml"),
        format!(
            "{text}\n[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
            pd.url()
        ),
    );
    repo.commit("an environment with a long name");
    let key = [("PD_ROUTING_KEY", "routing-key-0123456789")];
    deploy(&repo, &name, &key).code(0);
    deploy(&repo, &name, &key).code(0);
    let keys: Vec<String> = pd
        .take()
        .iter()
        .filter(|r| r.path == "/v2/enqueue")
        .map(|r| r.body["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    assert!(
        keys[0].chars().count() <= 255,
        "{} characters",
        keys[0].len()
    );
    assert!(keys[0].starts_with("envlock/vvvv"), "{}", keys[0]);
}

/// A token that reads but cannot be used (empty, too short to be masked, a stray newline) pages
/// nobody: refused like an unreadable one, before anything is written, never quoted.
#[test]
fn an_empty_short_or_broken_token_refuses_before_anything_is_written() {
    let pd = Receiver::start(202);
    let repo = repo_with(&format!(
        "[notify]\nurl = \"{}\"\nformat = \"pagerduty\"\ntoken = {{ secret = \"env:PD_ROUTING_KEY\" }}\n",
        pd.url()
    ));
    for (value, why) in [
        ("", "is empty"),
        ("k3y", "is shorter than 4 bytes"),
        (
            "routing-key-0123456789\n",
            "whitespace or a control character",
        ),
    ] {
        let run = deploy(&repo, "validation", &[("PD_ROUTING_KEY", value)]);
        run.code(3)
            .stderr_has("[notify] token `env:PD_ROUTING_KEY`")
            .stderr_has(why);
        if !value.is_empty() {
            assert!(!run.stderr.contains(value.trim()), "{}", run.stderr);
        }
        assert!(!repo.path().join("targets/validation").exists());
        assert_eq!(pd.take().len(), 0, "{value:?}: nothing sent");
    }
    deploy(
        &repo,
        "validation",
        &[("PD_ROUTING_KEY", "routing-key-0123456789")],
    )
    .code(0);
    assert!(!pd.take().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn a_token_written_in_clear_is_refused_at_its_place_without_repeating_it() {
    let secret = "u+Xq9secretRoutingKeyInClear";
    let repo = repo_with(&format!(
        "[notify]\nurl = \"https://events.pagerduty.com\"\nformat = \"pagerduty\"\ntoken = \"{secret}\"\n"
    ));
    let line = repo
        .read(VALIDATION)
        .lines()
        .position(|l| l.starts_with("token ="))
        .unwrap()
        + 1;
    for args in [
        &["check"][..],
        &["check", "--format", "json"],
        &["--target", "validation", "--yes"],
    ] {
        let run = repo.deploy(args);
        run.code(1);
        let all = format!("{}{}", run.stdout, run.stderr).replace(": ", ":");
        assert!(!all.contains(secret), "the token was repeated:\n{all}");
        assert!(all.contains("invalid-secret"), "{all}");
        assert!(
            all.contains(&format!("environments/validation.toml:{line}:9"))
                || all.contains(&format!("\"line\":{line}")),
            "{all}"
        );
    }
    assert!(!repo.path().join("targets/validation").exists());
}

#[test]
fn notify_urls_are_https_or_loopback_and_complete() {
    for (notify, needle) in [
        (
            "url = \"http://alerts.example.com/hook\"\nformat = \"cloudevents\"\n",
            "plain http to a host that is not this machine",
        ),
        (
            "url = \"https://user:hunter2pass@alerts.example.com\"\nformat = \"cloudevents\"\n",
            "holds credentials",
        ),
        (
            "url = \"https://alerts.example.com\"\n",
            "`url` without a `format`",
        ),
        (
            "url = \"https://alerts.example.com\"\nformat = \"opsgenie\"\n",
            "unknown notify format `opsgenie`",
        ),
        (
            "url = \"https://events.pagerduty.com\"\nformat = \"pagerduty\"\n",
            "needs a `token`",
        ),
        (
            "url = \"https://alerts.example.com/hook?apiKey=hunter2pass\"\nformat = \"cloudevents\"\n",
            "holds a credential in its query (`apiKey=`)",
        ),
        (
            "url = \"https://alerts.example.com/hook?v=1&authToken=hunter2pass\"\nformat = \"cloudevents\"\n",
            "holds a credential in its query (`authToken=`)",
        ),
        (
            "url = \"https://events.pagerduty.com/v2/enqueue\"\nformat = \"pagerduty\"\ntoken = { secret = \"env:PD_ROUTING_KEY\" }\n",
            "ends in `/v2/enqueue`: it is the base URL",
        ),
        (
            "url = \"https://am.example.net/api/v2/alerts/\"\nformat = \"alertmanager\"\n",
            "ends in `/api/v2/alerts`: it is the base URL",
        ),
        ("timeout = \"5s\"\n", "[notify] has no `command`"),
        (
            "url = \"https://alerts.prod.example.com/hook\"\nformat = \"cloudevents\"\n",
            "foreign-marker",
        ),
    ] {
        let repo = repo_with(&format!("[notify]\n{notify}"));
        let run = repo.deploy(&["check"]);
        run.code(1)
            .stderr_has(needle)
            .stderr_has("environments/validation.toml:");
        assert!(!run.stderr.contains("hunter2pass"), "{}", run.stderr);
    }
}
