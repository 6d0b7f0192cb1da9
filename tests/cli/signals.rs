//! `envlock::signal::evaluate` against a real Prometheus scraping a real exporter, and against
//! a real HTTP endpoint: every way a signal can lack evidence is a failure.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use envlock::signal::{Check, Reading, evaluate};

use crate::prometheus::{Exporter, Probe, Prometheus, free_port};

const RATE: &str = r#"rate(asr_jobs_completed_total{target="$TARGET"}[5s])"#;
const TIMEOUT: Duration = Duration::from_secs(5);
/// A target whose name needs encoding in a URL's query string.
const ODD: &str = "blue+green &#1=a/b?";

/// One exporter and one Prometheus shared by the tests running at the same time, stopped when
/// the last of them ends. Each test reads or changes only its own targets.
struct Stack {
    exporter: Exporter,
    prom: Prometheus,
}

fn stack() -> Arc<Stack> {
    static SHARED: Mutex<Weak<Stack>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(stack) = shared.upgrade() {
        return stack;
    }
    let exporter = Exporter::start(&["canary", "stalled", "gone", "nan", ODD]);
    let prom = Prometheus::start(&exporter);
    let stack = Arc::new(Stack { exporter, prom });
    *shared = Arc::downgrade(&stack);
    stack
}

fn prometheus(prom: &Prometheus, query: &str, compare: Option<&str>) -> Check {
    Check::Prometheus {
        url: prom.url(),
        query: query.to_owned(),
        compare: compare.map(|c| c.parse().unwrap()),
    }
}

/// `query` with `$TARGET` replaced, as the fixtures' own queries need it.
fn for_target(query: &str, target: &str) -> String {
    query.replace("$TARGET", &target.replace('"', "\\\""))
}

#[track_caller]
fn fails(reading: &Reading, value: &str) {
    assert!(!reading.ok, "passed: {reading:?}");
    assert_eq!(reading.value, value, "{reading:?}");
}

#[test]
fn a_growing_counter_passes() {
    let s = stack();
    for target in ["canary", ODD] {
        s.prom.wait_for_data(&for_target(RATE, target));
        let r = evaluate(&prometheus(&s.prom, RATE, Some("> 0")), target, TIMEOUT);
        assert!(r.ok, "{r:?}");
        assert!(r.value.ends_with(" (needs > 0)"), "{r:?}");
        assert_eq!(r.signal, format!("prometheus {}", for_target(RATE, target)));
    }
    // A query carrying its own comparison needs none.
    let own = r#"rate(asr_jobs_completed_total{target="$TARGET"}[5s]) > 0"#;
    let r = evaluate(&prometheus(&s.prom, own, None), "canary", TIMEOUT);
    assert!(r.ok, "{r:?}");
}

#[test]
fn a_stalled_counter_fails_with_zero_and_the_comparison() {
    let s = stack();
    let query = for_target(RATE, "stalled");
    s.prom.wait_for_data(&query);
    s.exporter.stall("stalled");
    s.prom.wait_for(&query, "a rate of 0", |v| v == [0.0]);
    let check = prometheus(&s.prom, RATE, Some("> 0"));
    fails(&evaluate(&check, "stalled", TIMEOUT), "0 (needs > 0)");
    // Its own comparison filters the series out: no data, still a failure.
    let own = r#"rate(asr_jobs_completed_total{target="$TARGET"}[5s]) > 0"#;
    fails(
        &evaluate(&prometheus(&s.prom, own, None), "stalled", TIMEOUT),
        "no data",
    );
    // Growing again, it passes again.
    s.exporter.resume("stalled");
    s.prom
        .wait_for(&query, "a rate above 0", |v| v.len() == 1 && v[0] > 0.0);
    assert!(evaluate(&check, "stalled", TIMEOUT).ok);
}

#[test]
fn an_absent_or_removed_series_is_no_data() {
    let s = stack();
    let check = prometheus(&s.prom, RATE, Some("> 0"));
    fails(&evaluate(&check, "nobody", TIMEOUT), "no data");
    // Without a comparison too: an empty vector never passes.
    let check = prometheus(&s.prom, RATE, None);
    fails(&evaluate(&check, "nobody", TIMEOUT), "no data");

    let query = for_target(RATE, "gone");
    s.prom.wait_for_data(&query);
    s.exporter.remove("gone");
    s.prom.wait_for(&query, "no data", <[f64]>::is_empty);
    fails(&evaluate(&check, "gone", TIMEOUT), "no data");
}

#[test]
fn nan_and_infinities_fail() {
    let s = stack();
    s.prom.wait_for_data(&for_target(
        "asr_jobs_completed_total{target=\"$TARGET\"} > 0",
        "nan",
    ));
    let cases = [
        (
            r#"asr_jobs_completed_total{target="$TARGET"} * 0 / 0"#,
            "NaN",
        ),
        (r#"asr_jobs_completed_total{target="$TARGET"} / 0"#, "+Inf"),
        (r#"-asr_jobs_completed_total{target="$TARGET"} / 0"#, "-Inf"),
    ];
    for (query, seen) in cases {
        let r = evaluate(&prometheus(&s.prom, query, None), "nan", TIMEOUT);
        fails(&r, seen);
        for compare in ["> 0", "!= 1", "< 0"] {
            let r = evaluate(&prometheus(&s.prom, query, Some(compare)), "nan", TIMEOUT);
            fails(&r, &format!("{seen} (needs {compare})"));
        }
    }
    // A scalar NaN too.
    fails(
        &evaluate(&prometheus(&s.prom, "0/0", None), "nan", TIMEOUT),
        "NaN",
    );
}

#[test]
fn a_query_prometheus_rejects_fails_with_its_error() {
    let s = stack();
    let broken = r#"rate(asr_jobs_completed_total{target="$TARGET"}[5s]"#;
    let r = evaluate(&prometheus(&s.prom, broken, Some("> 0")), "canary", TIMEOUT);
    assert!(!r.ok, "{r:?}");
    assert!(r.value.starts_with("bad_data: "), "{r:?}");
    assert!(r.value.contains("parse error"), "{r:?}");

    // A range vector is answered, but cannot be judged.
    let range = r#"asr_jobs_completed_total{target="$TARGET"}[5s]"#;
    let r = evaluate(&prometheus(&s.prom, range, Some("> 0")), "canary", TIMEOUT);
    assert!(!r.ok, "{r:?}");
    assert!(r.value.contains("use an instant vector"), "{r:?}");
}

#[test]
fn a_stopped_prometheus_fails_quickly() {
    let exporter = Exporter::start(&["canary"]);
    let mut prom = Prometheus::start(&exporter);
    let check = prometheus(&prom, RATE, Some("> 0"));
    prom.stop();
    let started = Instant::now();
    let r = evaluate(&check, "canary", Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(2), "{r:?}");
    fails(&r, "connection refused");
}

fn http(url: String, status: u16, body: Option<&str>) -> Check {
    Check::Http {
        url,
        status,
        body: body.map(str::to_owned),
    }
}

#[test]
fn an_http_probe_passes_only_with_the_status_and_the_body() {
    let probe = Probe::start();
    probe.set("/canary/healthz", 200, "{\"status\":\"ready canary\"}");
    probe.set("/down/healthz", 503, "down");
    probe.set("/other/healthz", 200, "starting other");
    let check = http(probe.url("/$TARGET/healthz"), 200, Some("ready $TARGET"));

    let r = evaluate(&check, "canary", TIMEOUT);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.value, "HTTP 200, body has \"ready canary\"");
    assert_eq!(r.signal, format!("GET {}", probe.url("/canary/healthz")));

    fails(
        &evaluate(&check, "down", TIMEOUT),
        "HTTP 503 \"down\" (needs 200)",
    );
    fails(
        &evaluate(&check, "other", TIMEOUT),
        "HTTP 200, body lacks \"ready other\": \"starting other\"",
    );
    // Every other path answers the default: 200 "ok".
    let status_only = http(probe.url("/$TARGET/healthz"), 200, None);
    let r = evaluate(&status_only, "anyone", TIMEOUT);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.value, "HTTP 200");
    // A redirect is not followed: the status judged is the URL's own.
    probe.set("/moved/healthz", 302, "");
    fails(
        &evaluate(&status_only, "moved", TIMEOUT),
        "HTTP 302 \"\" (needs 200)",
    );
    probe.set_default(500, "");
    fails(
        &evaluate(&status_only, "anyone", TIMEOUT),
        "HTTP 500 \"\" (needs 200)",
    );
}

#[test]
fn an_http_probe_fails_on_a_huge_body_when_it_must_read_it() {
    let probe = Probe::start();
    probe.set_default(200, &"ready ".repeat(400_000));
    let r = evaluate(&http(probe.url("/"), 200, Some("ready")), "x", TIMEOUT);
    assert!(!r.ok, "{r:?}");
    assert!(r.value.contains("body larger than 1048576 bytes"), "{r:?}");
    // The status alone is judged without reading it all.
    let r = evaluate(&http(probe.url("/"), 200, None), "x", TIMEOUT);
    assert!(r.ok, "{r:?}");
}

#[test]
fn an_http_probe_fails_when_nothing_answers() {
    let port = free_port();
    let check = http(format!("http://127.0.0.1:{port}/healthz"), 200, None);
    fails(&evaluate(&check, "x", TIMEOUT), "connection refused");

    // A server that accepts the connection and never answers: failed at the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let check = http(format!("http://127.0.0.1:{port}/healthz"), 200, None);
    let started = Instant::now();
    let r = evaluate(&check, "x", Duration::from_millis(500));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?} {r:?}");
    fails(&r, "timed out after 500ms");
}

/// A server answering 200 with a body that never ends: `chunk` after `chunk`, `pause` apart,
/// to the first `connections` clients.
fn endless(chunk: &'static [u8], pause: Duration, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = [0; 4096];
                let _ = stream.read(&mut head);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
                while stream.write_all(chunk).is_ok() {
                    std::thread::sleep(pause);
                }
            });
        }
    });
    url
}

#[test]
fn an_endless_answer_is_cut_at_the_limit_or_at_the_timeout() {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let url = endless(&CHUNK, Duration::ZERO, 2);
    // The status alone: read up to the limit, then the connection is dropped.
    let r = evaluate(&http(url.clone(), 200, None), "x", TIMEOUT);
    assert!(r.ok, "{r:?}");
    let r = evaluate(&http(url, 200, Some("ready")), "x", TIMEOUT);
    assert!(!r.ok, "{r:?}");
    assert!(r.value.contains("body larger than"), "{r:?}");

    // A trickle never ends within the timeout, which covers the whole answer.
    let url = endless(b"x", Duration::from_millis(20), 1);
    let started = Instant::now();
    let r = evaluate(&http(url, 200, None), "x", Duration::from_millis(500));
    assert!(started.elapsed() < Duration::from_secs(2), "{r:?}");
    fails(
        &r,
        "HTTP 200, reading the body failed: timed out after 500ms",
    );
}
