//! Verification signals: an HTTP probe or a Prometheus query, judged once per call.
//!
//! Signals fail closed: no data, an empty vector, NaN, ±Inf, a query error, a status other than
//! the expected one, an answer that does not parse, a timeout or an unreachable server is a
//! failure, never a pass. A canary that processes nothing must not look healthy.

use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

/// The most of an answer's body that is read; a larger answer is a failure.
pub const BODY_LIMIT: u64 = 1024 * 1024;

/// How much of a body a reading quotes.
const QUOTE: usize = 100;

/// What to look at to decide whether a target is healthy.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// GET url; passes when the status equals `status` and (if set) the body contains `body`.
    Http {
        url: String,
        status: u16,
        body: Option<String>,
    },
    /// GET `{url}/api/v1/query?query=…`; passes when the result is a non-empty instant vector
    /// (or a scalar) whose every value is finite and satisfies `compare` (when set).
    Prometheus {
        url: String,
        query: String,
        compare: Option<Compare>,
    },
}

/// A comparison operator of a [`Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A threshold every value must meet, written like `> 0` or `<= 0.05`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compare {
    pub op: Op,
    /// Always finite (parsing refuses NaN and infinities).
    pub value: f64,
}

impl Compare {
    /// Whether `x` meets the threshold; never for NaN or an infinity.
    pub fn holds(&self, x: f64) -> bool {
        x.is_finite()
            && match self.op {
                Op::Gt => x > self.value,
                Op::Ge => x >= self.value,
                Op::Lt => x < self.value,
                Op::Le => x <= self.value,
                Op::Eq => x == self.value,
                Op::Ne => x != self.value,
            }
    }

    /// How far `x` is on the passing side (negative: failing); ranks series, worst first.
    fn margin(&self, x: f64) -> f64 {
        match self.op {
            Op::Gt | Op::Ge => x - self.value,
            Op::Lt | Op::Le => self.value - x,
            Op::Eq => -(x - self.value).abs(),
            Op::Ne => (x - self.value).abs(),
        }
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

/// Why a comparison does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a comparison: write an operator (> >= < <= == !=) and a finite number, \
     like \"> 0\" or \"<= 0.05\""
)]
pub struct CompareError(pub String);

impl FromStr for Compare {
    type Err = CompareError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        // Two-character operators first, so `>=` is not read as `>` and `=0`.
        let ops = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let bad = || CompareError(s.to_owned());
        let (op, rest) = ops
            .iter()
            .find_map(|(sym, op)| text.strip_prefix(sym).map(|rest| (*op, rest)))
            .ok_or_else(bad)?;
        let number = rest.trim();
        // Rust also reads "inf", "NaN" and "infinity"; none is a threshold.
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !value.is_finite() || number.is_empty() {
            return Err(bad());
        }
        Ok(Compare { op, value })
    }
}

/// One evaluation of a check: whether it passed, what was seen, and which signal it was.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reading {
    pub ok: bool,
    /// What was seen, short, for a person: `0 (needs > 0)`, `no data`, `NaN`, `HTTP 503 "down"`,
    /// `connection refused`.
    pub value: String,
    /// One line naming the signal: `prometheus rate(...)` or `GET http://…`.
    pub signal: String,
}

/// Evaluate `check` for the fleet member `target` (`$TARGET` in the URL, the query and the
/// expected body is replaced by it), within `timeout` for connecting and the whole answer.
pub fn evaluate(check: &Check, target: &str, timeout: Duration) -> Reading {
    let fill = |s: &str| s.replace("$TARGET", target);
    // A URL's credentials never leave the process, whatever message quotes the URL.
    let (Check::Http { url, .. } | Check::Prometheus { url, .. }) = check;
    crate::redact::register(userinfo(&fill(url)).into_iter().collect());
    let (signal, judged) = match check {
        Check::Http { url, status, body } => {
            let url = fill(url);
            let body = body.as_deref().map(fill);
            // `user:password@` in the URL is used, never shown.
            let signal = format!(
                "GET {}",
                crate::repo::without_userinfo(crate::page::shown_url(&url))
            );
            (signal, http(&url, *status, body.as_deref(), timeout))
        }
        Check::Prometheus {
            url,
            query,
            compare,
        } => {
            let query = fill(query);
            let signal = format!("prometheus {}", one_line(&query));
            (
                signal,
                prometheus(&fill(url), &query, compare.as_ref(), timeout),
            )
        }
    };
    let (ok, value) = match judged {
        Ok(v) => (true, v),
        Err(v) => (false, v),
    };
    Reading {
        ok,
        value: crate::redact::scrub(&value).into_owned(),
        signal: crate::redact::scrub(&signal).into_owned(),
    }
}

/// The `user:password` (or token) of a URL's authority, if it has one.
fn userinfo(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let info = &authority[..authority.rfind('@')?];
    Some(
        info.split_once(':')
            .map_or(info, |(_, password)| password)
            .to_owned(),
    )
}

/// An agent for one check: the timeout covers connecting and reading the whole answer; no
/// redirect is followed (the status judged is the URL's own) and no proxy is used.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// An answer: its status and up to [`BODY_LIMIT`] bytes of its body (`whole`: nothing more).
struct Answer {
    status: u16,
    body: Vec<u8>,
    whole: bool,
}

fn get(
    request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    timeout: Duration,
) -> Result<Answer, String> {
    let timed_out = |why: String| {
        if why == TIMED_OUT {
            format!("{why} after {}", humantime::format_duration(timeout))
        } else {
            why
        }
    };
    let response = request.call().map_err(|e| timed_out(failure(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(BODY_LIMIT + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            let why = timed_out(io_failure(&e));
            format!("HTTP {status}, reading the body failed: {why}")
        })?;
    let whole = body.len() as u64 <= BODY_LIMIT;
    body.truncate(BODY_LIMIT as usize);
    Ok(Answer {
        status,
        body,
        whole,
    })
}

const TIMED_OUT: &str = "timed out";

/// A request that got no answer, in a few words.
fn failure(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => TIMED_OUT.to_owned(),
        ureq::Error::Io(io) => io_failure(io),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        other => other.to_string(),
    }
}

fn io_failure(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::TimedOut => TIMED_OUT.to_owned(),
        _ => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        {
            Some(inner) => failure(inner),
            None => e.to_string(),
        },
    }
}

fn http(url: &str, status: u16, body: Option<&str>, timeout: Duration) -> Result<String, String> {
    let answer = get(agent(timeout).get(url), timeout)?;
    let seen = answer.status;
    if seen != status {
        return Err(format!(
            "HTTP {seen} {} (needs {status})",
            quote(&answer.body)
        ));
    }
    let Some(wanted) = body else {
        return Ok(format!("HTTP {seen}"));
    };
    if !answer.whole {
        return Err(format!(
            "HTTP {seen}, body larger than {BODY_LIMIT} bytes (needs {wanted:?})"
        ));
    }
    if String::from_utf8_lossy(&answer.body).contains(wanted) {
        Ok(format!("HTTP {seen}, body has {wanted:?}"))
    } else {
        Err(format!(
            "HTTP {seen}, body lacks {wanted:?}: {}",
            quote(&answer.body)
        ))
    }
}

fn prometheus(
    url: &str,
    query: &str,
    compare: Option<&Compare>,
    timeout: Duration,
) -> Result<String, String> {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let request = agent(timeout)
        .get(&endpoint)
        .header("accept", "application/json")
        .query("query", query)
        // Prometheus gives up on the query at the same time as we do.
        .query("timeout", format!("{:.3}", timeout.as_secs_f64()));
    let answer = get(request, timeout)?;
    if !answer.whole {
        return Err(format!("answer larger than {BODY_LIMIT} bytes"));
    }
    // Errors come with 400, 422 or 503 and a JSON body that says why: show that if present.
    if answer.status != 200 {
        let doc = serde_json::from_slice::<Value>(&answer.body).ok();
        return Err(doc
            .as_ref()
            .and_then(error_text)
            .unwrap_or_else(|| format!("HTTP {} {}", answer.status, quote(&answer.body))));
    }
    judge_prometheus(&answer.body, compare)
}

/// `errorType: error` of an answer whose status is `error`.
fn error_text(doc: &Value) -> Option<String> {
    if doc.get("status").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let kind = doc.get("errorType").and_then(Value::as_str).unwrap_or("?");
    let error = doc.get("error").and_then(Value::as_str).unwrap_or("");
    Some(short(&format!("{kind}: {error}")))
}

/// Judge a Prometheus `/api/v1/query` answer: `Ok(what was seen)` when it passes,
/// `Err(what was seen)` otherwise. Pure, so every fail-closed case can be tested.
pub fn judge_prometheus(json: &[u8], compare: Option<&Compare>) -> Result<String, String> {
    let doc: Value = serde_json::from_slice(json)
        .map_err(|e| format!("unparseable answer ({e}): {}", quote(json)))?;
    if let Some(error) = error_text(&doc) {
        return Err(error);
    }
    if doc.get("status").and_then(Value::as_str) != Some("success") {
        return Err(format!("unparseable answer (no status): {}", quote(json)));
    }
    let data = doc.get("data");
    let kind = data
        .and_then(|d| d.get("resultType"))
        .and_then(Value::as_str);
    let result = data.and_then(|d| d.get("result"));
    let series = match (kind, result) {
        (Some("vector"), Some(Value::Array(items))) => items
            .iter()
            .map(|item| Ok((labels(item.get("metric")), sample(item.get("value"))?)))
            .collect::<Result<Vec<_>, String>>()?,
        (Some("scalar"), Some(value)) => vec![(String::new(), sample(Some(value))?)],
        (Some("matrix" | "string"), _) => {
            return Err(format!(
                "a {} result cannot be judged; use an instant vector",
                if kind == Some("matrix") {
                    "range (matrix)"
                } else {
                    "string"
                }
            ));
        }
        _ => return Err(format!("unparseable answer (no result): {}", quote(json))),
    };
    judge_series(&series, compare)
}

/// One sample's value as Prometheus wrote it (`"1.5"`, `"NaN"`, `"+Inf"`) and as a number.
fn sample(value: Option<&Value>) -> Result<(String, f64), String> {
    let text = value
        .and_then(Value::as_array)
        .and_then(|pair| pair.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| "unparseable answer (a sample has no value)".to_owned())?;
    let number = text
        .parse::<f64>()
        .map_err(|_| format!("unparseable value {}", short(&format!("{text:?}"))))?;
    Ok((short(text), number))
}

/// `{job="x", target="canary"}`, or the metric name with them; empty without labels.
fn labels(metric: Option<&Value>) -> String {
    let Some(Value::Object(map)) = metric else {
        return String::new();
    };
    let name = map.get("__name__").and_then(Value::as_str).unwrap_or("");
    let pairs: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", pairs.join(", "))
    }
}

/// Every series must be finite and meet `compare`; the reading shows the worst one.
fn judge_series(
    series: &[(String, (String, f64))],
    compare: Option<&Compare>,
) -> Result<String, String> {
    // Rank: not finite first, then the least margin; on a tie the first series is the worst.
    let rank = |x: f64| match (x.is_finite(), compare) {
        (false, _) => f64::NEG_INFINITY,
        (true, Some(c)) => c.margin(x),
        (true, None) => 0.0,
    };
    let worst = series
        .iter()
        .min_by(|a, b| rank(a.1.1).total_cmp(&rank(b.1.1)));
    let Some((worst_labels, (worst_text, _))) = worst else {
        return Err("no data".to_owned());
    };
    let passes = |x: f64| compare.map_or(x.is_finite(), |c| c.holds(x));
    let failing = series.iter().filter(|s| !passes(s.1.1)).count();
    let needs = compare.map(|c| format!(" (needs {c})")).unwrap_or_default();
    let seen = if series.len() == 1 {
        format!("{worst_text}{needs}")
    } else if failing > 0 {
        format!(
            "{worst_labels} {worst_text}{needs}; {failing} of {} series fail",
            series.len()
        )
    } else if compare.is_some() {
        format!("{} series, worst {worst_text}{needs}", series.len())
    } else {
        format!("{} series, all finite", series.len())
    };
    let seen = short(seen.trim_start());
    if failing == 0 { Ok(seen) } else { Err(seen) }
}

/// At most [`QUOTE`] characters of a body, quoted on one line.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = one_line(&text);
    let mut cut: String = text.chars().take(QUOTE).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Whitespace runs (newlines too) as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most 300 characters, so one reading stays one readable line.
fn short(text: &str) -> String {
    let text = one_line(text);
    if text.chars().count() <= 300 {
        return text;
    }
    let mut cut: String = text.chars().take(299).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(s: &str) -> Compare {
        s.parse().unwrap()
    }

    fn vector(values: &[(&str, &str)]) -> Vec<u8> {
        let items: Vec<String> = values
            .iter()
            .map(|(target, v)| {
                format!(r#"{{"metric":{{"target":"{target}"}},"value":[1700000000.5,"{v}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn comparisons_parse_with_or_without_spaces() {
        assert_eq!(
            cmp("> 0"),
            Compare {
                op: Op::Gt,
                value: 0.0
            }
        );
        assert_eq!(
            cmp(">= 0.5"),
            Compare {
                op: Op::Ge,
                value: 0.5
            }
        );
        assert_eq!(
            cmp("<1e-3"),
            Compare {
                op: Op::Lt,
                value: 1e-3
            }
        );
        assert_eq!(
            cmp("  <= -2 "),
            Compare {
                op: Op::Le,
                value: -2.0
            }
        );
        assert_eq!(
            cmp("== 1"),
            Compare {
                op: Op::Eq,
                value: 1.0
            }
        );
        assert_eq!(
            cmp("!=0"),
            Compare {
                op: Op::Ne,
                value: 0.0
            }
        );
        assert_eq!(cmp(">= 0.5").to_string(), ">= 0.5");
        assert_eq!(cmp("<1e-3").to_string(), "< 0.001");
    }

    #[test]
    fn bad_comparisons_say_what_is_expected() {
        for bad in [
            "",
            "0",
            "> ",
            "=> 1",
            "= 1",
            "> one",
            "> NaN",
            "> inf",
            ">= -infinity",
            "<> 1",
            "> 1 2",
            "≥ 1",
        ] {
            let err = bad.parse::<Compare>().unwrap_err().to_string();
            assert!(err.contains("is not a comparison"), "{bad}: {err}");
            assert!(err.contains("> >= < <= == !="), "{bad}: {err}");
        }
    }

    #[test]
    fn comparisons_never_hold_for_nan_or_infinities() {
        for c in ["> 0", "< 0", "!= 0", ">= -1e300", "<= 1e300"] {
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert!(!cmp(c).holds(x), "{c} {x}");
            }
        }
        assert!(cmp("== 1").holds(1.0));
        assert!(!cmp("== 1").holds(1.000001));
        assert!(cmp(">= 0.5").holds(0.5));
        assert!(!cmp("> 0.5").holds(0.5));
    }

    #[test]
    fn a_healthy_vector_passes() {
        let got = judge_prometheus(&vector(&[("canary", "1.5")]), Some(&cmp("> 0")));
        assert_eq!(got, Ok("1.5 (needs > 0)".to_owned()));
        // Without a comparison any finite value passes (the query compares by itself).
        assert_eq!(
            judge_prometheus(&vector(&[("canary", "0")]), None),
            Ok("0".to_owned())
        );
    }

    #[test]
    fn zero_traffic_fails_and_shows_the_threshold() {
        let got = judge_prometheus(&vector(&[("canary", "0")]), Some(&cmp("> 0")));
        assert_eq!(got, Err("0 (needs > 0)".to_owned()));
    }

    #[test]
    fn an_empty_vector_is_no_data() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(judge_prometheus(empty, None), Err("no data".to_owned()));
        assert_eq!(
            judge_prometheus(empty, Some(&cmp("< 1"))),
            Err("no data".to_owned())
        );
    }

    #[test]
    fn nan_and_infinities_fail_with_or_without_a_comparison() {
        for v in ["NaN", "+Inf", "-Inf"] {
            for c in [None, Some(cmp("> 0")), Some(cmp("!= 5")), Some(cmp("< 0"))] {
                let got = judge_prometheus(&vector(&[("canary", v)]), c.as_ref());
                let seen = got.expect_err(v);
                assert!(seen.starts_with(v), "{seen}");
            }
        }
    }

    #[test]
    fn every_series_must_pass_and_the_worst_is_named() {
        let doc = vector(&[("a", "3"), ("canary", "0"), ("c", "0.5")]);
        let got = judge_prometheus(&doc, Some(&cmp("> 0"))).unwrap_err();
        assert_eq!(
            got,
            r#"{target="canary"} 0 (needs > 0); 1 of 3 series fail"#
        );

        // A NaN beats any finite failure as the worst.
        let doc = vector(&[("a", "-5"), ("b", "NaN")]);
        let got = judge_prometheus(&doc, Some(&cmp("> 0"))).unwrap_err();
        assert_eq!(got, r#"{target="b"} NaN (needs > 0); 2 of 2 series fail"#);

        // Upper bounds: the largest value is the worst.
        let doc = vector(&[("a", "0.01"), ("b", "0.2"), ("c", "0.03")]);
        let got = judge_prometheus(&doc, Some(&cmp("<= 0.05"))).unwrap_err();
        assert!(got.starts_with(r#"{target="b"} 0.2"#), "{got}");

        let doc = vector(&[("a", "3"), ("b", "2")]);
        assert_eq!(
            judge_prometheus(&doc, Some(&cmp("> 0"))),
            Ok("2 series, worst 2 (needs > 0)".to_owned())
        );
        assert_eq!(
            judge_prometheus(&doc, None),
            Ok("2 series, all finite".to_owned())
        );
    }

    #[test]
    fn a_scalar_is_judged_like_one_series() {
        let doc =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}"#;
        assert_eq!(
            judge_prometheus(doc, Some(&cmp("== 1"))),
            Ok("1 (needs == 1)".to_owned())
        );
        let doc =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}"#;
        assert_eq!(judge_prometheus(doc, None), Err("NaN".to_owned()));
    }

    #[test]
    fn an_error_answer_fails_with_its_type_and_text() {
        let doc = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:6: parse error: unexpected \")\""}"#;
        assert_eq!(
            judge_prometheus(doc, None),
            Err(r#"bad_data: invalid parameter "query": 1:6: parse error: unexpected ")""#.into())
        );
    }

    #[test]
    fn range_and_string_results_cannot_be_judged() {
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        let got = judge_prometheus(matrix, Some(&cmp("> 0"))).unwrap_err();
        assert!(
            got.contains("range (matrix)") && got.contains("instant vector"),
            "{got}"
        );
        let string = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        let got = judge_prometheus(string, None).unwrap_err();
        assert!(got.contains("string result cannot be judged"), "{got}");
    }

    #[test]
    fn garbage_fails() {
        for doc in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"null",
            b"{}",
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,2]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"fast"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"histogram","result":[]}}"#,
            br#"{"status":"warning","data":{"resultType":"vector","result":[{"value":[1,"1"]}]}}"#,
        ] {
            let got = judge_prometheus(doc, None);
            assert!(got.is_err(), "{}: {got:?}", String::from_utf8_lossy(doc));
        }
        let got = judge_prometheus(b"<html>502 Bad Gateway</html>", None).unwrap_err();
        assert!(got.starts_with("unparseable answer"), "{got}");
        assert!(got.contains("502 Bad Gateway"), "{got}");
    }

    #[test]
    fn a_url_that_does_not_parse_fails_without_a_request() {
        let check = Check::Http {
            url: "not a url/$TARGET".into(),
            status: 200,
            body: None,
        };
        let r = evaluate(&check, "canary", Duration::from_secs(1));
        assert!(!r.ok, "{r:?}");
        assert_eq!(r.signal, "GET not a url/canary");
        let check = Check::Prometheus {
            url: "::".into(),
            query: "up".into(),
            compare: None,
        };
        let r = evaluate(&check, "canary", Duration::from_secs(1));
        assert!(!r.ok, "{r:?}");
        assert_eq!(r.signal, "prometheus up");
    }

    #[test]
    fn quotes_are_short_and_on_one_line() {
        let long = "x".repeat(500);
        let q = quote(format!("a\n  b {long}").as_bytes());
        assert!(q.starts_with("\"a b xxx") && q.ends_with("…\""), "{q}");
        assert_eq!(q.chars().count(), QUOTE + 3);
        assert!(short(&long).chars().count() <= 300);
    }
}
