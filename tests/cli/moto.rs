//! A local moto server standing in for AWS (SSM Parameter Store and STS), for the tests of the
//! `aws-ssm` provider and of `exec` targets that use it. The tests inspect and change parameters
//! with python3 + boto3, as another writer would, never through the provider.
//!
//! Needs `moto_server` on PATH and boto3 for `python3`: `python3 -m pip install -r
//! tests/requirements.txt` (`.ci/run` installs them). Without them these tests fail and say so:
//! they never pass silently.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The region every test uses: moto keeps each region's parameters apart, so the provider's
/// `region` option and the helpers below must agree.
pub const REGION: &str = "eu-west-1";

const INSTALL: &str = "python3 -m pip install -r tests/requirements.txt";

use crate::harness::free_port;

/// Whether an HTTP server answers on `port`.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 8];
    s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

fn require_moto() {
    crate::harness::require_tool(
        "moto_server",
        "--help",
        &format!(
            "these tests run the aws-ssm provider against a local moto server ({INSTALL}; \
             .ci/run installs it)"
        ),
    );
}

/// The provider: `providers/aws-ssm/provider` in this repository.
pub fn provider_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("providers/aws-ssm/provider")
}

/// A moto server on a free loopback port, answering as AWS account `account`; killed when
/// dropped.
pub struct Moto {
    child: Child,
    port: u16,
    account: String,
    dir: tempfile::TempDir,
}

impl Moto {
    pub fn start(account: &str) -> Moto {
        Moto::start_with_env(account, &[])
    }

    /// [`Moto::start`] with extra variables for moto itself (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`
    /// to make it check credentials).
    pub fn start_with_env(account: &str, extra: &[(&str, &str)]) -> Moto {
        require_moto();
        let dir = tempfile::Builder::new()
            .prefix("envlock-moto")
            .tempdir()
            .unwrap();
        let log_path = dir.path().join("moto.log");
        // Another test may take the port between free_port() and moto's bind: then moto exits
        // and it is tried again on another port.
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_ACCOUNT_ID", account)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .envs(extra.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("moto_server does not start ({e}): {INSTALL}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let bound = format!("Running on http://127.0.0.1:{port}");
            loop {
                // Its own log says it bound the port, so whatever answers there is this server.
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains(&bound) && answers(port) {
                    return Moto {
                        child,
                        port,
                        account: account.to_owned(),
                        dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // exited: most likely the port was taken; try another
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "moto_server did not answer on port {port} within 20 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "moto_server exited three times before answering:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// The account STS reports (`MOTO_ACCOUNT_ID`).
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points boto3 (the provider, the helpers) at this server with dummy
    /// credentials, and keeps it away from ~/.aws and the instance metadata service. Apply it
    /// on top of an environment without other `AWS_*` variables (see [`Moto::command`]).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `program` with every inherited `AWS_*` variable removed (a developer's `AWS_PROFILE`
    /// or session token must not leak in) and [`Moto::env`] set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env());
        cmd
    }

    /// Run `script` (Python, with `ssm` a boto3 SSM client for this server and `arg` the
    /// decoded `arg`) and return what it prints as JSON.
    #[track_caller]
    fn boto(&self, script: &str, arg: Value) -> Value {
        let prelude = "import json, sys, boto3\n\
                       ssm = boto3.session.Session(region_name=sys.argv[1]).client('ssm')\n\
                       arg = json.loads(sys.argv[2])\n";
        let out = self
            .command("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .arg(REGION)
            .arg(arg.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("python3 does not run ({e}): {INSTALL}"));
        assert!(
            out.status.success(),
            "boto3 helper failed ({INSTALL} if boto3 is missing):\n{}\n--- moto\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Write parameters as another writer would (`Overwrite`), in one python run: each is
    /// (name, value, secure). Their new versions, in order.
    #[track_caller]
    pub fn put_parameters(&self, params: &[(&str, &str, bool)]) -> Vec<i64> {
        let script = "out = []\n\
                      for name, value, secure in arg:\n    \
                          kind = 'SecureString' if secure else 'String'\n    \
                          r = ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)\n    \
                          out.append(r['Version'])\n\
                      print(json.dumps(out))";
        let v = self.boto(script, json!(params));
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    }

    /// Write one parameter (`Overwrite`); its new version.
    #[track_caller]
    pub fn put_parameter(&self, name: &str, value: &str, secure: bool) -> i64 {
        self.put_parameters(&[(name, value, secure)])[0]
    }

    /// (value, decrypted; version; type) of a parameter, or None when it does not exist.
    #[track_caller]
    pub fn get_parameter(&self, name: &str) -> Option<(String, i64, String)> {
        let script = "try:\n    \
                          p = ssm.get_parameter(Name=arg, WithDecryption=True)['Parameter']\n    \
                          print(json.dumps([p['Value'], p['Version'], p['Type']]))\n\
                      except ssm.exceptions.ParameterNotFound:\n    \
                          print('null')";
        let v = self.boto(script, json!(name));
        (!v.is_null()).then(|| triple(&v))
    }

    /// Every parameter under `path` at any depth: full name -> (value, decrypted; version;
    /// type).
    #[track_caller]
    pub fn parameters_under(&self, path: &str) -> BTreeMap<String, (String, i64, String)> {
        let script = "out = {}\n\
                      for page in ssm.get_paginator('get_parameters_by_path').paginate(\n        \
                          Path=arg, Recursive=True, WithDecryption=True):\n    \
                          for p in page['Parameters']:\n        \
                              out[p['Name']] = [p['Value'], p['Version'], p['Type']]\n\
                      print(json.dumps(out))";
        let v = self.boto(script, json!(path));
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), triple(v)))
            .collect()
    }

    /// Make the next write of an existing parameter fail for real: label its oldest version and
    /// overwrite it (with its current value and type) up to SSM's limit of 100 versions, so
    /// that one more `PutParameter` is refused with `ParameterMaxVersionLimitExceeded` (the
    /// labelled version cannot be dropped). Reads and `DeleteParameter` still work. Takes a few
    /// seconds (up to 100 requests).
    #[track_caller]
    pub fn exhaust_versions(&self, name: &str) {
        let script = "p = ssm.get_parameter(Name=arg, WithDecryption=True)['Parameter']\n\
                      oldest = ssm.get_parameter_history(Name=arg, MaxResults=1)['Parameters'][0]\n\
                      ssm.label_parameter_version(Name=arg, ParameterVersion=oldest['Version'],\n    \
                          Labels=['envlock-test-pinned'])\n\
                      v = p['Version']\n\
                      while v < 100:\n    \
                          v = ssm.put_parameter(Name=arg, Value=p['Value'], Type=p['Type'],\n        \
                              Overwrite=True)['Version']\n\
                      print(json.dumps(v))";
        assert_eq!(self.boto(script, json!(name)), json!(100));
    }

    /// The last lines of the server's own log (requests, errors), for a failing test's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn triple(v: &Value) -> (String, i64, String) {
    (
        v[0].as_str().unwrap().to_owned(),
        v[1].as_i64().unwrap(),
        v[2].as_str().unwrap().to_owned(),
    )
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the aws-ssm provider once, from the repository root as envlock does, with `request` on
/// stdin and `moto`'s environment: (exit code, stdout parsed as JSON, stderr).
#[track_caller]
pub fn provider_call(moto: &Moto, request: Value) -> (i32, Value, String) {
    provider_call_env(moto, request, &[])
}

/// [`provider_call`] with extra environment variables.
#[track_caller]
pub fn provider_call_env(
    moto: &Moto,
    request: Value,
    extra: &[(&str, &str)],
) -> (i32, Value, String) {
    let mut child = moto
        .command(provider_path())
        .envs(extra.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", provider_path().display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let parsed = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the provider's stdout is not one JSON value ({e}):\n{stdout}\n--- stderr\n{stderr}\n\
             --- moto\n{}",
            moto.log_tail()
        )
    });
    (out.status.code().unwrap_or(-1), parsed, stderr)
}

/// Run the aws-ssm provider as one protocol-2 session (`ENVLOCK_PROVIDER_PROTOCOL=2`): each of
/// `requests` is written as one line, then stdin is closed. The response lines, parsed, and
/// the exit code.
#[track_caller]
pub fn provider_session(moto: &Moto, requests: &[Value]) -> (i32, Vec<Value>) {
    let mut child = moto
        .command(provider_path())
        .env("ENVLOCK_PROVIDER_PROTOCOL", "2")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", provider_path().display()));
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        stdin.write_all(format!("{r}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "a response line is not JSON ({e}): {l}\n--- stderr\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}
