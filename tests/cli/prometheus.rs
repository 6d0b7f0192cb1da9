//! Fixtures for verification signals: a metrics `Exporter` whose counters can stall, an HTTP
//! `Probe` with settable answers, and a real `Prometheus` server scraping the exporter every
//! second, each on a free loopback port and stopped when dropped.
//!
//! Needs `prometheus` on PATH (Debian: `apt-get install prometheus`; `.ci/run` installs it).
//! Without it these tests fail and say so: they never pass silently.
//!
//! ```ignore
//! let exporter = Exporter::start(&["canary", "web-1"]);
//! let prom = Prometheus::start(&exporter);
//! prom.wait_for_data(r#"rate(asr_jobs_completed_total{target="canary"}[5s]) > 0"#);
//! exporter.stall("canary");
//! prom.wait_for(r#"rate(asr_jobs_completed_total{target="canary"}[5s])"#, "rate 0", |v| v == [0.0]);
//! let probe = Probe::start();
//! probe.set("/canary/healthz", 503, "down");
//! let url = probe.url("/$TARGET/healthz");
//! prom.stop(); // "Prometheus is down"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The counter the exporter serves, one series per target (label `target`).
pub const COUNTER: &str = "asr_jobs_completed_total";

/// How much a healthy target's counter grows per scrape.
pub const STEP: u64 = 5;

pub use crate::harness::free_port;

/// What a handler answers: status, content type, body.
type Reply = (u16, &'static str, String);

/// A minimal HTTP/1.1 server on a loopback port: one thread accepting, one per connection,
/// every answer `Connection: close`. Stops accepting when dropped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || answer(stream, &*handler));
            }
        });
        Server { port, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read one request's head, answer it, close.
fn answer(stream: TcpStream, handler: &(impl Fn(&str) -> Reply + ?Sized)) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // `GET /path?query HTTP/1.1`: the path without its query string.
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    let (status, content_type, body) = handler(&path);
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[derive(Clone, Copy)]
struct Series {
    count: u64,
    stalled: bool,
    present: bool,
}

/// Serves `/metrics` in the Prometheus text format: `asr_jobs_completed_total{target="NAME"}`
/// per target, growing by [`STEP`] on every scrape unless stalled (or absent once removed).
pub struct Exporter {
    series: Arc<Mutex<BTreeMap<String, Series>>>,
    server: Server,
}

impl Exporter {
    /// An exporter with a healthy counter for each of `targets`.
    pub fn start(targets: &[&str]) -> Exporter {
        let series: BTreeMap<String, Series> = targets
            .iter()
            .map(|t| {
                let s = Series {
                    count: 0,
                    stalled: false,
                    present: true,
                };
                (t.to_string(), s)
            })
            .collect();
        let series = Arc::new(Mutex::new(series));
        let shared = series.clone();
        let server = Server::start(move |path| {
            if path != "/metrics" {
                return (404, "text/plain", "not found\n".into());
            }
            (200, "text/plain; version=0.0.4", scrape(&shared))
        });
        Exporter { series, server }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The counter of `target` stops growing (the service runs but processes nothing).
    pub fn stall(&self, target: &str) {
        self.update(target, |s| s.stalled = true);
    }

    /// The counter of `target` grows again (served again after `remove`; a new target starts
    /// at 0).
    pub fn resume(&self, target: &str) {
        self.update(target, |s| {
            s.stalled = false;
            s.present = true;
        });
    }

    /// The series of `target` is no longer served at all.
    pub fn remove(&self, target: &str) {
        self.update(target, |s| s.present = false);
    }

    fn update(&self, target: &str, f: impl FnOnce(&mut Series)) {
        let mut series = self.series.lock().unwrap();
        let s = series.entry(target.to_owned()).or_insert(Series {
            count: 0,
            stalled: false,
            present: true,
        });
        f(s);
    }
}

/// One scrape: every present series, each healthy one grown by [`STEP`] first.
fn scrape(series: &Mutex<BTreeMap<String, Series>>) -> String {
    let mut series = series.lock().unwrap();
    let mut text = format!("# HELP {COUNTER} Jobs completed.\n# TYPE {COUNTER} counter\n");
    for (target, s) in series.iter_mut().filter(|(_, s)| s.present) {
        if !s.stalled {
            s.count += STEP;
        }
        text.push_str(&format!("{COUNTER}{{target=\"{target}\"}} {}\n", s.count));
    }
    text
}

/// An HTTP endpoint for HTTP checks: any path answers 200 "ok" unless set otherwise.
pub struct Probe {
    answers: Arc<Mutex<HashMap<String, (u16, String)>>>,
    default: Arc<Mutex<(u16, String)>>,
    server: Server,
}

impl Probe {
    pub fn start() -> Probe {
        let answers = Arc::new(Mutex::new(HashMap::<String, (u16, String)>::new()));
        let default = Arc::new(Mutex::new((200, "ok".to_owned())));
        let (a, d) = (answers.clone(), default.clone());
        let server = Server::start(move |path| {
            let (status, body) = a
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .unwrap_or_else(|| d.lock().unwrap().clone());
            (status, "text/plain", body)
        });
        Probe {
            answers,
            default,
            server,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:PORT{path}` (`path` may hold `$TARGET`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// What `path` (without query string) answers from now on.
    pub fn set(&self, path: &str, status: u16, body: &str) {
        let mut answers = self.answers.lock().unwrap();
        answers.insert(path.to_owned(), (status, body.to_owned()));
    }

    /// What every path not `set` answers from now on.
    pub fn set_default(&self, status: u16, body: &str) {
        *self.default.lock().unwrap() = (status, body.to_owned());
    }
}

fn require_prometheus() {
    crate::harness::require_tool(
        "prometheus",
        "--version",
        "these tests need a real Prometheus server (Debian: apt-get install prometheus; \
         .ci/run installs it)",
    );
}

/// A real Prometheus server on a loopback port scraping one exporter every second, with its
/// data in a temporary directory; killed and reaped when dropped.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus scraping `exporter` and wait until it is ready (~0.1 s). Data comes
    /// later: Prometheus 2.42 applies its scrape targets ~5 s after start, so a `rate(...[5s])`
    /// has a value after ~7 s (see [`Prometheus::wait_for_data`]).
    pub fn start(exporter: &Exporter) -> Prometheus {
        require_prometheus();
        let dir = tempfile::Builder::new()
            .prefix("envlock-prometheus")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: exporter\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{}']\n",
                exporter.port()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut prom = Prometheus {
            child: Some(child),
            port,
            dir,
        };
        prom.wait_ready();
        prom
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent = agent();
        loop {
            let ready = agent
                .get(format!("{}/-/ready", self.url()))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`, the URL a Prometheus check takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Prometheus wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The raw `/api/v1/query` answer to `query`.
    pub fn query(&self, query: &str) -> Value {
        let mut response = agent()
            .get(format!("{}/api/v1/query", self.url()))
            .query("query", query)
            .call()
            .unwrap_or_else(|e| panic!("querying prometheus for {query}: {e}"));
        let text = response.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The values of the instant vector `query` returns (empty for no data or an error).
    pub fn values(&self, query: &str) -> Vec<f64> {
        let answer = self.query(query);
        answer["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Poll `query` until its values satisfy `done` (`what` says what is awaited); panic with
    /// the last answer after 30 s.
    #[track_caller]
    pub fn wait_for(&self, query: &str, what: &str, done: impl Fn(&[f64]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if done(&self.values(query)) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited 30 s for {what} from {query}; the last answer: {}\n{}",
                    self.query(query),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Poll `query` until it returns a non-empty vector (the exporter has been scraped enough).
    #[track_caller]
    pub fn wait_for_data(&self, query: &str) {
        self.wait_for(query, "data", |v| !v.is_empty());
    }

    /// Kill the server (SIGKILL) and reap it: "Prometheus is down". Its port stays closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().unwrap();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An agent for the fixtures' own requests: short timeouts, no proxy.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}
