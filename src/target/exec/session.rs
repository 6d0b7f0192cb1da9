//! The client side of provider protocol 2 (docs/providers.md): one provider process per run,
//! JSON Lines over its stdin and stdout, each request with an `id` its response echoes, a
//! `hello` first that negotiates the protocol and the batch capabilities.
//!
//! Invariants: a response line is read up to [`LINE_LIMIT`] bytes, never more (a runaway
//! provider is killed, it cannot eat memory); every request is answered within the target's
//! `timeout` or the provider is killed; a provider that dies, closes its stdout, answers another
//! id or prints something that is not one JSON object is killed and the call fails. A failed
//! session is never reused: the next call starts a new process and says `hello` again.

use std::io::{BufRead, BufReader, Write};
use std::process::ChildStdin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::process::{self, Ended, Spec};

/// The protocol version of a session.
pub const PROTOCOL: u64 = 2;

/// The longest response line read, newline excluded.
pub const LINE_LIMIT: usize = 64 * 1024 * 1024;

/// The largest batch a provider may announce.
pub const MAX_BATCH: u64 = 10_000;

/// How long a provider that closed its stdout is given to exit, so that its status is known.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// What the provider said it can do in its `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The most items one `apply` request may carry.
    pub max: usize,
    /// Whether the provider applies a batch all or nothing.
    pub atomic: bool,
    /// The provider keeps envlock's state (the `state-*` operations): the largest value one
    /// state item may hold. `None`: it does not.
    pub state: Option<usize>,
}

/// Why a session call failed: the provider answered an error for the request, or the
/// conversation itself broke (then the session is over).
#[derive(Debug)]
pub enum Failure {
    /// The response's `error` object.
    Answered(Map<String, Value>),
    /// Why the exchange failed, and the end of the provider's stderr.
    Broken(String),
}

/// What the line reader hands over.
enum Line {
    Text(Vec<u8>),
    TooLong,
    End,
}

/// A running provider in protocol 2.
#[derive(Debug)]
pub struct Session {
    process: process::Session,
    stdin: Option<ChildStdin>,
    lines: Receiver<LineMsg>,
    next_id: u64,
    timeout: Duration,
    pub capabilities: Capabilities,
}

/// [`Line`] through a channel (a `Debug` wrapper).
struct LineMsg(Line);

impl std::fmt::Debug for LineMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineMsg")
    }
}

impl Session {
    /// Start the provider and say `hello` with `common` (environment, account, options).
    /// Refused unless it answers protocol 2 with well-formed capabilities.
    pub fn open(
        spec: &Spec<'_>,
        common: &Map<String, Value>,
    ) -> Result<Session, (String, Vec<u8>)> {
        let (process, stdin, stdout) = process::start(spec).map_err(|e| {
            let hint = e.hint().unwrap_or_default();
            (format!("{e}"), hint.into_bytes())
        })?;
        let (tx, lines) = mpsc::sync_channel(0);
        let reader = std::thread::Builder::new()
            .name("provider-stdout".into())
            .spawn(move || read_lines(stdout, &tx));
        let mut session = Session {
            process,
            stdin: Some(stdin),
            lines,
            next_id: 0,
            timeout: spec.timeout,
            capabilities: Capabilities {
                max: 1,
                atomic: false,
                state: None,
            },
        };
        if let Err(e) = reader {
            return Err((format!("could not read the provider: {e}"), Vec::new()));
        }
        let mut hello = common.clone();
        hello.insert("protocols".into(), Value::from(vec![PROTOCOL]));
        let answer = session.call("hello", hello, false).map_err(|f| {
            let why = match f {
                Failure::Answered(e) => format!(
                    "it answered `hello` with an error ({}: {})",
                    e.get("code").and_then(Value::as_str).unwrap_or("failed"),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ),
                Failure::Broken(why) => why,
            };
            (why, session.stderr())
        })?;
        session.capabilities = capabilities(&answer).map_err(|why| (why, session.stderr()))?;
        Ok(session)
    }

    /// The end of the provider's stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.process.stderr()
    }

    /// Send one request and wait for its response (the members besides `id`). `plain`: the
    /// request carries values that must reach the provider (an `apply`); every other request
    /// is scrubbed of secrets like any output.
    pub fn call(
        &mut self,
        operation: &str,
        members: Map<String, Value>,
        plain: bool,
    ) -> Result<Map<String, Value>, Failure> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = Map::new();
        request.insert("id".into(), id.into());
        request.insert("operation".into(), operation.into());
        request.extend(members);
        let request = Value::Object(request);
        let mut line = if plain {
            serde_json::to_vec(&request)
        } else {
            crate::redact::to_json_vec(&request)
        }
        .unwrap_or_default();
        line.push(b'\n');
        self.send(line)?;
        let answer = self.receive(operation, id)?;
        match answer.get("error") {
            Some(Value::Object(error)) => Err(Failure::Answered(error.clone())),
            Some(_) => Err(Failure::Broken(format!(
                "the response to `{operation}` has an `error` that is not an object"
            ))),
            None => Ok(answer),
        }
    }

    /// Write a request line from a helper thread, so that a provider that does not read cannot
    /// block this one past the timeout.
    fn send(&mut self, line: Vec<u8>) -> Result<(), Failure> {
        let Some(mut stdin) = self.stdin.take() else {
            return Err(Failure::Broken("the session is closed".into()));
        };
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("provider-stdin".into())
            .spawn(move || {
                let ok = stdin.write_all(&line).and_then(|()| stdin.flush());
                let _ = tx.send(ok.map(|()| stdin));
            });
        if let Err(e) = writer {
            return Err(Failure::Broken(format!(
                "could not write to the provider: {e}"
            )));
        }
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(stdin)) => {
                self.stdin = Some(stdin);
                Ok(())
            }
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => Err(self.ended("reading requests")),
            Err(RecvTimeoutError::Timeout) => Err(self.timed_out("read its request")),
        }
    }

    /// The response to request `id`: one JSON object on one line that echoes `id`.
    fn receive(&mut self, operation: &str, id: u64) -> Result<Map<String, Value>, Failure> {
        let line = match self.lines.recv_timeout(self.timeout) {
            Ok(LineMsg(Line::Text(line))) => line,
            Ok(LineMsg(Line::TooLong)) => {
                return Err(Failure::Broken(format!(
                    "its response to `{operation}` is longer than {} MiB; it was killed",
                    LINE_LIMIT >> 20
                )));
            }
            Ok(LineMsg(Line::End)) | Err(RecvTimeoutError::Disconnected) => {
                return Err(self.ended(&format!("answering `{operation}`")));
            }
            Err(RecvTimeoutError::Timeout) => return Err(self.timed_out("answer")),
        };
        let answer = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                return Err(Failure::Broken(format!(
                    "its response to `{operation}` is not one JSON object on one line \
                     (protocol {PROTOCOL} is JSON Lines; logs go to stderr)"
                )));
            }
        };
        match answer.get("id").and_then(Value::as_u64) {
            Some(got) if got == id => Ok(answer),
            Some(got) => Err(Failure::Broken(format!(
                "it answered request {got} when request {id} (`{operation}`) was due"
            ))),
            None => Err(Failure::Broken(format!(
                "its response to `{operation}` has no numeric `id` (request {id})"
            ))),
        }
    }

    fn timed_out(&self, what: &str) -> Failure {
        Failure::Broken(format!(
            "it did not {what} within {} (`timeout` of [target]); it was killed",
            humantime::format_duration(self.timeout)
        ))
    }

    /// The provider stopped talking: how it ended, if it did.
    fn ended(&mut self, doing: &str) -> Failure {
        let how = match self.process.ended_within(EXIT_GRACE) {
            Some(Ended::Exited(code)) => format!("exited with status {code}"),
            Some(Ended::Signalled(signal)) => format!("was killed by signal {signal}"),
            Some(_) | None => "closed its stdout".to_owned(),
        };
        Failure::Broken(format!("the provider {how} while {doing}"))
    }
}

/// The capabilities a `hello` response announces; an error says what is wrong with it.
fn capabilities(answer: &Map<String, Value>) -> Result<Capabilities, String> {
    match answer.get("protocol") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL) => {}
        Some(other) => {
            return Err(format!(
                "it answered `hello` with protocol {other}, but `[target] protocol = {PROTOCOL}` \
                 needs a provider that speaks protocol {PROTOCOL}"
            ));
        }
        None => return Err("its `hello` response has no `protocol`".into()),
    }
    let caps = match answer.get("capabilities") {
        None => Map::new(),
        Some(Value::Object(caps)) => caps.clone(),
        Some(_) => return Err("its `capabilities` is not an object".into()),
    };
    let batch = match caps.get("batch") {
        None => Map::new(),
        Some(Value::Object(batch)) => batch.clone(),
        Some(_) => return Err("its `capabilities.batch` is not an object".into()),
    };
    let max = match batch.get("max") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_BATCH) => n,
            _ => {
                return Err(format!(
                    "its `capabilities.batch.max` is {v}, not a whole number from 1 to {MAX_BATCH}"
                ));
            }
        },
    };
    let atomic = match batch.get("atomic") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "its `capabilities.batch.atomic` is {v}, not a boolean"
            ));
        }
    };
    Ok(Capabilities {
        max: usize::try_from(max).unwrap_or(1),
        atomic,
        state: state_capability(answer, &caps)?,
    })
}

/// `"state": true` (in `capabilities` or beside it) with `"state_max_value": N`: the provider
/// keeps envlock's state.
fn state_capability(
    answer: &Map<String, Value>,
    caps: &Map<String, Value>,
) -> Result<Option<usize>, String> {
    let member = |k: &str| caps.get(k).or_else(|| answer.get(k));
    match member("state") {
        None | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => {}
        Some(v) => return Err(format!("its `state` is {v}, not a boolean")),
    }
    match member("state_max_value").map(Value::as_u64) {
        None => Ok(Some(64 * 1024)),
        Some(Some(n @ 1024..)) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(_) => Err("its `state_max_value` is not a whole number of at least 1024".into()),
    }
}

/// Read `stdout` line by line into `tx`, each line bounded by [`LINE_LIMIT`]; ends after the
/// end of the stream, a line too long, or when nobody listens any more.
fn read_lines(stdout: impl std::io::Read, tx: &SyncSender<LineMsg>) {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    loop {
        let mut line = Vec::new();
        let msg = loop {
            let chunk = match reader.fill_buf() {
                Ok([]) => break Line::End,
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break Line::End,
            };
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if line.len() + take > LINE_LIMIT {
                break Line::TooLong;
            }
            line.extend_from_slice(&chunk[..take]);
            reader.consume(take + usize::from(done));
            if done {
                break Line::Text(std::mem::take(&mut line));
            }
        };
        if let Line::Text(text) = &msg
            && text.iter().all(u8::is_ascii_whitespace)
        {
            continue;
        }
        let last = !matches!(msg, Line::Text(_));
        if tx.send(LineMsg(msg)).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(v: Value) -> Result<Capabilities, String> {
        capabilities(v.as_object().unwrap())
    }

    #[test]
    fn hello_capabilities_are_checked() {
        let ok = caps(
            serde_json::json!({"protocol": 2, "capabilities": {"batch": {"max": 50, "atomic": true}}}),
        );
        assert_eq!(
            ok,
            Ok(Capabilities {
                max: 50,
                atomic: true,
                state: None,
            })
        );
        // Absent: one item per request, not atomic.
        let bare = caps(serde_json::json!({"protocol": 2}));
        assert_eq!(
            bare,
            Ok(Capabilities {
                max: 1,
                atomic: false,
                state: None,
            })
        );
        for bad in [
            serde_json::json!({"protocol": 1}),
            serde_json::json!({"capabilities": {}}),
            serde_json::json!({"protocol": 2, "capabilities": {"batch": {"max": 0}}}),
            serde_json::json!({"protocol": 2, "capabilities": {"batch": {"max": 10001}}}),
            serde_json::json!({"protocol": 2, "capabilities": {"batch": {"max": "9"}}}),
            serde_json::json!({"protocol": 2, "capabilities": {"batch": {"atomic": "yes"}}}),
            serde_json::json!({"protocol": 2, "capabilities": []}),
        ] {
            assert!(caps(bad.clone()).is_err(), "{bad}");
        }
    }

    /// Every message `read_lines` hands over for `input`.
    fn lines_of(input: Vec<u8>) -> Vec<Line> {
        let (tx, rx) = mpsc::sync_channel(0);
        let reader = std::thread::spawn(move || read_lines(std::io::Cursor::new(input), &tx));
        let out: Vec<Line> = rx.iter().map(|LineMsg(l)| l).collect();
        reader.join().unwrap();
        out
    }

    #[test]
    fn lines_are_split_blank_lines_skipped_and_the_end_reported() {
        let out = lines_of(b"{\"id\":1}\n\n  \n{\"id\":2}\npartial".to_vec());
        let texts: Vec<String> = out
            .iter()
            .map(|l| match l {
                Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                Line::TooLong => "TOO LONG".into(),
                Line::End => "END".into(),
            })
            .collect();
        assert_eq!(texts, [r#"{"id":1}"#, r#"{"id":2}"#, "END"]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_off_not_kept() {
        let mut input = vec![b'x'; LINE_LIMIT + 1];
        input.push(b'\n');
        let out = lines_of(input);
        assert!(matches!(out.as_slice(), [Line::TooLong]));
        // Exactly the limit is still a line.
        let mut input = vec![b'x'; LINE_LIMIT];
        input.push(b'\n');
        let out = lines_of(input);
        assert!(matches!(out.as_slice(), [Line::Text(t), Line::End] if t.len() == LINE_LIMIT));
    }
}
