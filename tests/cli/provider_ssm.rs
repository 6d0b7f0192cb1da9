//! Protocol 1 (and protocol 2: the last test) conformance of `providers/aws-ssm/provider`, run directly (not through `deploy`)
//! against a local moto server. Parameters are checked and changed with boto3, as another writer
//! would. See docs/providers.md and providers/aws-ssm/README.md.

use serde_json::{Value, json};

use crate::moto::{Moto, REGION, provider_call, provider_call_env, provider_session};

const PATH: &str = "/asr/test/";

/// A request for `operation` with the common members and `extra` on top.
fn request(operation: &str, extra: Value) -> Value {
    let mut r = json!({
        "protocol": 1,
        "operation": operation,
        "environment": "cloud-test",
        "account": "000000000000",
        "options": { "path": PATH, "region": REGION },
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn apply(resource: &str, value: Value, secret: bool, expect: Option<&str>) -> Value {
    request(
        "apply",
        json!({ "resource": resource, "value": value, "secret": secret, "expect": expect }),
    )
}

fn delete(resource: &str, expect: Option<&str>) -> Value {
    request("delete", json!({ "resource": resource, "expect": expect }))
}

/// The error code of an error response (asserting exit status 1), and its message.
#[track_caller]
fn error(moto: &Moto, req: Value) -> (String, String) {
    let (code, out, stderr) = provider_call(moto, req);
    assert_eq!(
        code, 1,
        "expected an error response: {out}\n--- stderr\n{stderr}"
    );
    assert_eq!(out["protocol"], 1, "{out}");
    (
        out["error"]["code"].as_str().unwrap().to_owned(),
        out["error"]["message"].as_str().unwrap().to_owned(),
    )
}

/// A success response (asserting exit status 0).
#[track_caller]
fn ok(moto: &Moto, req: Value) -> Value {
    let (code, out, stderr) = provider_call(moto, req);
    assert_eq!(code, 0, "expected success: {out}\n--- stderr\n{stderr}");
    assert_eq!(out["protocol"], 1, "{out}");
    assert!(out.get("error").is_none(), "{out}");
    out
}

fn param(name: &str) -> String {
    format!("{PATH}{name}")
}

#[test]
fn identity_is_the_account_the_server_reports_never_the_requests() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Moto::start("111111111111"));
        let b = s.spawn(|| Moto::start("222222222222"));
        (a.join().unwrap(), b.join().unwrap())
    });
    for moto in [&a, &b] {
        let (code, out, stderr) = provider_call(moto, request("identity", json!({})));
        assert_eq!(code, 0, "{out}\n{stderr}");
        assert_eq!(out["account"], moto.account(), "{out}");
        assert_ne!(out["account"], "000000000000"); // the request's `account` proves nothing
        assert!(
            out["principal"].as_str().unwrap().contains(moto.account()),
            "{out}"
        );
        // One log line, naming the operation, the region and the endpoint override.
        assert!(stderr.contains("identity"), "{stderr}");
        assert!(stderr.contains(REGION), "{stderr}");
        assert!(stderr.contains(&moto.endpoint()), "{stderr}");
    }
}

#[test]
fn read_returns_every_parameter_directly_under_the_path() {
    let moto = Moto::start("123456789012");
    let out = ok(&moto, request("read", json!({})));
    assert_eq!(out["resources"], json!({}));

    // What others wrote, more than one page (10), and what is not in scope.
    let mut params: Vec<(String, String)> = (0..12)
        .map(|i| (param(&format!("r{i:02}")), format!(r#"{{"i":{i}}}"#)))
        .collect();
    params.push((param("plain"), "not json".into()));
    params.push((param("team/nested"), "{}".into())); // deeper: another hierarchy
    params.push(("/asr/testing/x".into(), "{}".into())); // a sibling path, not under it
    params.push(("/asr/other".into(), "{}".into()));
    let refs: Vec<(&str, &str, bool)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str(), false))
        .collect();
    moto.put_parameters(&refs);
    moto.put_parameter(&param("r03"), r#"{"b":[1,2],"a":"x"}"#, false);
    moto.put_parameter(&param("vault"), r#"{"password":"pw"}"#, true);

    let out = ok(&moto, request("read", json!({})));
    let resources = out["resources"].as_object().unwrap();
    let mut names: Vec<&str> = resources.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    expected.extend(["plain".into(), "vault".into()]);
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        resources["r00"],
        json!({ "value": { "i": 0 }, "version": "1", "secret": false })
    );
    assert_eq!(
        resources["r03"],
        json!({ "value": { "a": "x", "b": [1, 2] }, "version": "2", "secret": false })
    );
    // Not JSON: returned as a string.
    assert_eq!(resources["plain"]["value"], "not json");
    // SecureString: decrypted.
    assert_eq!(resources["vault"]["value"], json!({ "password": "pw" }));
    assert_eq!(resources["vault"]["secret"], json!(true));
}

#[test]
fn apply_with_expect_null_creates_and_never_overwrites() {
    let moto = Moto::start("123456789012");
    let value = json!({ "workers": 4, "queue": "jobs", "limits": { "b": 2, "a": 1 } });
    // The region is the one in `options`, whatever the environment says.
    let (code, out, stderr) = provider_call_env(
        &moto,
        apply("asr-worker", value, false, None),
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{stderr}");
    assert_eq!(out, json!({ "protocol": 1, "version": "1" }));
    let stored = r#"{"limits":{"a":1,"b":2},"queue":"jobs","workers":4}"#;
    assert_eq!(
        moto.get_parameter(&param("asr-worker")),
        Some((stored.into(), 1, "String".into()))
    );

    let (code, message) = error(
        &moto,
        apply("asr-worker", json!({"workers": 8}), false, None),
    );
    assert_eq!(code, "conflict");
    assert!(
        message.contains("asr-worker") && message.contains("version 1"),
        "{message}"
    );
    assert_eq!(
        moto.get_parameter(&param("asr-worker")),
        Some((stored.into(), 1, "String".into()))
    );
}

#[test]
fn apply_needs_the_current_version() {
    let moto = Moto::start("123456789012");
    ok(&moto, apply("w", json!({"n": 1}), false, None));
    let out = ok(&moto, apply("w", json!({"n": 2}), false, Some("1")));
    assert_eq!(out["version"], "2");
    assert_eq!(
        moto.get_parameter(&param("w")),
        Some((r#"{"n":2}"#.into(), 2, "String".into()))
    );

    // A stale or invented version changes nothing.
    for expect in ["1", "3", "abc"] {
        let (code, message) = error(&moto, apply("w", json!({"n": 9}), false, Some(expect)));
        assert_eq!(code, "conflict", "{message}");
        assert!(message.contains("version 2"), "{message}");
    }
    // Someone else writes: the version envlock read is no longer current.
    assert_eq!(moto.put_parameter(&param("w"), r#"{"n":7}"#, false), 3);
    let (code, _) = error(&moto, apply("w", json!({"n": 9}), false, Some("2")));
    assert_eq!(code, "conflict");
    // A resource that does not exist cannot be at a version.
    let (code, message) = error(&moto, apply("gone", json!({}), false, Some("1")));
    assert_eq!(code, "conflict");
    assert!(message.contains("absent"), "{message}");
    assert_eq!(
        moto.parameters_under(PATH).keys().collect::<Vec<_>>(),
        vec![&param("w")]
    );
    assert_eq!(
        moto.get_parameter(&param("w")),
        Some((r#"{"n":7}"#.into(), 3, "String".into()))
    );
}

#[test]
fn secrets_are_secure_strings_and_never_printed() {
    let moto = Moto::start("123456789012");
    let secret = "s3cr3t-Value-42";
    let (code, out, stderr) =
        provider_call(&moto, apply("db", json!({"password": secret}), true, None));
    assert_eq!((code, &out["version"]), (0, &json!("1")), "{out}\n{stderr}");
    assert!(!out.to_string().contains(secret) && !stderr.contains(secret));
    assert!(stderr.contains("SecureString"), "{stderr}");
    let (value, version, kind) = moto.get_parameter(&param("db")).unwrap();
    assert_eq!(
        (value.as_str(), version, kind.as_str()),
        (r#"{"password":"s3cr3t-Value-42"}"#, 1, "SecureString")
    );

    // envlock needs it in clear to compare: read decrypts.
    let out = ok(&moto, request("read", json!({})));
    assert_eq!(
        out["resources"]["db"],
        json!({ "value": { "password": secret }, "version": "1", "secret": true })
    );

    // Refused writes do not print the value they carried either.
    for req in [
        apply("db", json!({"password": "n3w-s3cret"}), true, None),
        apply("db", json!({"password": "n3w-s3cret"}), true, Some("7")),
    ] {
        let (code, out, stderr) = provider_call(&moto, req);
        assert_eq!(code, 1);
        assert!(!out.to_string().contains("n3w-s3cret") && !stderr.contains("n3w-s3cret"));
    }

    // With `kms_key_id`, and back to a plain String when the resource stops being secret.
    let mut req = apply("api", json!({"token": "t0ken-xyz"}), true, None);
    req["options"]["kms_key_id"] = json!("alias/envlock-test");
    let (code, out, stderr) = provider_call(&moto, req);
    assert_eq!(code, 0, "{out}\n{stderr}");
    assert!(!out.to_string().contains("t0ken-xyz") && !stderr.contains("t0ken-xyz"));
    assert_eq!(moto.get_parameter(&param("api")).unwrap().2, "SecureString");
    ok(
        &moto,
        apply("api", json!({"token": "public"}), false, Some("1")),
    );
    assert_eq!(
        moto.get_parameter(&param("api")),
        Some((r#"{"token":"public"}"#.into(), 2, "String".into()))
    );
}

#[test]
fn delete_needs_the_current_version() {
    let moto = Moto::start("123456789012");
    ok(&moto, apply("w", json!({"n": 1}), false, None));
    let (code, message) = error(&moto, delete("w", Some("2")));
    assert_eq!(code, "conflict");
    assert!(message.contains("version 1"), "{message}");
    assert!(moto.get_parameter(&param("w")).is_some());

    let out = ok(&moto, delete("w", Some("1")));
    assert_eq!(out, json!({ "protocol": 1 }));
    assert_eq!(moto.get_parameter(&param("w")), None);

    let (code, message) = error(&moto, delete("w", Some("1")));
    assert_eq!(code, "conflict");
    assert!(message.contains("absent"), "{message}");
    // `expect` is never null for a delete.
    let (code, _) = error(&moto, delete("w", None));
    assert_eq!(code, "invalid");
}

#[test]
fn unknown_operations_and_protocols_are_unsupported() {
    let moto = Moto::start("123456789012");
    for op in ["frobnicate", "state-get", "state-put"] {
        let (code, message) = error(&moto, request(op, json!({})));
        assert_eq!(code, "unsupported", "{op}: {message}");
        assert!(message.contains(op), "{message}");
    }
    let mut req = request("read", json!({}));
    req["protocol"] = json!(2);
    let (code, out, _) = provider_call(&moto, req);
    assert_eq!(code, 1);
    assert_eq!(out["error"]["code"], "unsupported", "{out}");
}

#[test]
fn bad_options_and_names_are_invalid() {
    let moto = Moto::start("123456789012");
    let bad_paths = [
        json!("asr/test/"),
        json!("/asr/test"),
        json!("/"),
        json!(""),
        json!("/asr//test/"),
        json!("/asr/te st/"),
        json!("/aws/test/"),
        json!(42),
    ];
    for path in bad_paths {
        let mut req = request("read", json!({}));
        req["options"]["path"] = path.clone();
        let (code, message) = error(&moto, req);
        assert_eq!(code, "invalid", "{path}: {message}");
        assert!(message.contains("path"), "{message}");
    }
    for (option, value) in [("region", json!("Europe")), ("regoin", json!("eu-west-1"))] {
        let mut req = request("read", json!({}));
        req["options"][option] = value;
        let (code, message) = error(&moto, req);
        assert_eq!(code, "invalid", "{message}");
        assert!(message.contains(option), "{message}");
    }
    for missing in ["path", "region"] {
        let mut req = request("identity", json!({}));
        req["options"].as_object_mut().unwrap().remove(missing);
        let (code, message) = error(&moto, req);
        assert_eq!(code, "invalid", "{message}");
        assert!(message.contains(missing), "{message}");
    }
    // A resource name that is not one level of the hierarchy.
    for name in ["team/worker", "", "a b"] {
        let (code, message) = error(&moto, apply(name, json!({}), false, None));
        assert_eq!(code, "invalid", "{name:?}: {message}");
    }
    assert!(moto.parameters_under("/").is_empty());
}

#[test]
fn a_write_between_the_version_check_and_the_put_is_a_conflict_that_says_so() {
    let moto = Moto::start("123456789012");
    ok(&moto, apply("w", json!({"n": 1}), false, None));
    // Another writer slips in right before the provider's PutParameter: SSM has no conditional
    // put, so the provider can only notice it from the version PutParameter returns.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sitecustomize.py"),
        r#"
import boto3.session
_client = boto3.session.Session.client
def client(self, name, **kw):
    c = _client(self, name, **kw)
    def sneak(params, **_):
        other = _client(self, name, **kw)
        other.put_parameter(Name=params["Name"], Value='{"n":"other"}', Type="String", Overwrite=True)
    c.meta.events.register("provide-client-params.ssm.PutParameter", sneak)
    return c
boto3.session.Session.client = client
"#,
    )
    .unwrap();
    let pythonpath = dir.path().to_str().unwrap();
    let (code, out, stderr) = provider_call_env(
        &moto,
        apply("w", json!({"n": 2}), false, Some("1")),
        &[("PYTHONPATH", pythonpath)],
    );
    assert_eq!(code, 1, "{out}\n{stderr}");
    assert_eq!(out["error"]["code"], "conflict", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("no conditional put"), "{message}");
    assert!(message.contains("live as version 3"), "{message}");
    assert!(message.contains("version 2 was overwritten"), "{message}");
    assert_eq!(
        moto.get_parameter(&param("w")),
        Some((r#"{"n":2}"#.into(), 3, "String".into()))
    );
}

#[test]
fn aws_errors_are_failures_that_name_the_call_and_never_the_value() {
    let moto = Moto::start("123456789012");
    ok(&moto, apply("w", json!({"n": 1}), false, None));
    // A real refusal: SSM keeps 100 versions and cannot drop a labelled one.
    moto.exhaust_versions(&param("w"));
    let (code, message) = error(&moto, apply("w", json!({"n": "v4lue"}), false, Some("100")));
    assert_eq!(code, "failed", "{message}");
    assert!(message.contains("SSM PutParameter"), "{message}");
    assert!(message.contains("/asr/test/w"), "{message}");
    assert!(
        message.contains("ParameterMaxVersionLimitExceeded"),
        "{message}"
    );
    assert!(!message.contains("v4lue"), "{message}");

    // Nothing listens: the call fails and names the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed}");
    let (code, out, _) = provider_call_env(
        &moto,
        request("read", json!({})),
        &[("AWS_ENDPOINT_URL", &url)],
    );
    assert_eq!(code, 1);
    assert_eq!(out["error"]["code"], "failed", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("SSM GetParametersByPath") && message.contains(&url),
        "{message}"
    );
}

#[test]
fn credentials_the_server_refuses_are_denied() {
    // moto checks credentials against its IAM once INITIAL_NO_AUTH_ACTION_COUNT requests have
    // been served; the tests' dummy keys are unknown to it.
    let moto = Moto::start_with_env("123456789012", &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    for op in ["identity", "read"] {
        let (code, message) = error(&moto, request(op, json!({})));
        assert_eq!(code, "denied", "{op}: {message}");
    }
}

#[test]
fn protocol_2_is_one_session_with_batches_that_stop_at_the_first_failure() {
    let moto = Moto::start("123456789012");
    let hello = json!({"id": 1, "operation": "hello", "protocols": [2], "environment": "cloud-test",
        "account": "000000000000", "options": {"path": PATH, "region": REGION}});
    // Twelve creations: the version checks take two GetParameters calls (10 names each).
    let items: Vec<Value> = (0..12)
        .map(|i| json!({"op": "put", "resource": format!("p{i:02}"), "value": {"n": i}, "secret": false, "expect": null}))
        .collect();
    let (code, out) = provider_session(
        &moto,
        &[
            hello.clone(),
            json!({"id": 2, "operation": "identity"}),
            json!({"id": 3, "operation": "apply", "items": items}),
            json!({"id": 4, "operation": "read"}),
        ],
    );
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0]["id"], 1);
    assert_eq!(out[0]["protocol"], 2);
    assert_eq!(out[0]["capabilities"]["batch"]["atomic"], false);
    assert_eq!(
        out[1],
        json!({"id": 2, "account": "123456789012", "principal": out[1]["principal"]})
    );
    let results = out[2]["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "{out:?}");
    assert!(
        results.iter().all(|r| r == &json!({"version": "1"})),
        "{results:?}"
    );
    assert_eq!(out[3]["resources"].as_object().unwrap().len(), 12);
    assert_eq!(out[3]["resources"]["p03"]["value"], json!({"n": 3}));

    // The second item is stale: the first lands, the second is a conflict, the third is not
    // tried.
    moto.put_parameter(&param("p01"), r#"{"n":"theirs"}"#, false);
    let batch = json!([
        {"op": "put", "resource": "p00", "value": {"n": 100}, "secret": false, "expect": "1"},
        {"op": "put", "resource": "p01", "value": {"n": 101}, "secret": false, "expect": "1"},
        {"op": "delete", "resource": "p02", "expect": "1"},
    ]);
    let (_, out) = provider_session(
        &moto,
        &[
            hello.clone(),
            json!({"id": 2, "operation": "apply", "items": batch}),
        ],
    );
    let results = out[1]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{out:?}");
    assert_eq!(results[0], json!({"version": "2"}));
    assert_eq!(results[1]["error"]["code"], "conflict");
    assert!(moto.get_parameter(&param("p02")).is_some());
    assert_eq!(moto.get_parameter(&param("p00")).unwrap().0, r#"{"n":100}"#);

    // No hello, or a hello without protocol 2: refused.
    let (_, out) = provider_session(&moto, &[json!({"id": 7, "operation": "read"})]);
    assert_eq!(out[0]["id"], 7);
    assert_eq!(out[0]["error"]["code"], "invalid");
    let mut old = hello;
    old["protocols"] = json!([1]);
    let (_, out) = provider_session(&moto, &[old]);
    assert_eq!(out[0]["error"]["code"], "unsupported");
}
