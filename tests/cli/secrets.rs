//! Secrets: `{ secret = "env:NAME" }` / `{ secret = "file:PATH" }` are read at deploy time,
//! written into the target (mode 0600), and never shown: every output of every command and
//! every state file is searched for the values.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{Repo, Run, snapshot};

const PROD: &str = "environments/prod.toml";
const SCHEMA: &str = "schemas/svc.schema.json";
const VAR: &str = "PROD_DB_PASSWORD";

/// Distinctive values, so that finding one anywhere is never a coincidence.
const DB_1: &str = "Zq8-first-db-password-7731-xyzzy";
const DB_2: &str = "Wk3-rotated-db-password-4410-plugh";
const TLS: &str = "tls-key-material-5f0e9c2b-frobozz";

/// prod.toml of the base fixture with two secrets in `worker` and a resource without any.
fn prod_toml(threads: u32) -> String {
    format!(
        r#"[environment]
account = "222222222222"
branch = "main"
protected = true
markers = ["prod.example.com"]
# no promotion gate here (log.rs tests it)
extends = ["_common"]

[target]
kind = "dir"
path = "targets/prod"

[settings.worker]
queue = "arn:aws:sqs:eu-west-1:222222222222:jobs"
endpoint = "https://prod.example.com/healthz"
threads = {threads}
db_password = {{ secret = "env:{VAR}" }}
tls_key = {{ secret = "file:secrets/tls.key" }}

[settings.api]
queue = "arn:aws:sqs:eu-west-1:222222222222:api"
engine = "conformer-ctc"
threads = 2
"#
    )
}

/// Where `db_password = { secret = ... }` is written in [`prod_toml`].
const DB_AT: &str = "environments/prod.toml:17:15";

/// The base fixture with a schema that knows the secret keys, prod as in [`prod_toml`], and
/// the secret file (ignored by git) in place.
fn repo() -> Repo {
    let repo = Repo::ungated();
    repo.edit(
        SCHEMA,
        &[(
            r#""endpoint": { "type": "string" }"#,
            r#""endpoint": { "type": "string" },
      "db_password": { "type": "string", "minLength": 12 },
      "tls_key": { "type": "string" }"#,
        )],
    );
    repo.write(".gitignore", "secrets/\ntargets/\n");
    repo.write(PROD, prod_toml(16));
    repo.commit("prod: secrets");
    repo.write("secrets/tls.key", format!("{TLS}\n"));
    repo
}

fn target(repo: &Repo) -> PathBuf {
    repo.path().join("targets/prod")
}

/// Every output of a test, searched for secret values at the end.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn run(&mut self, repo: &Repo, args: &[&str], db: Option<&str>) -> Run {
        let envs: Vec<(&str, &str)> = db.map(|v| (VAR, v)).into_iter().collect();
        let run = repo.deploy_env(args, &envs);
        self.0.push((
            format!("deploy {}", args.join(" ")),
            format!("{}\n{}", run.stdout, run.stderr),
        ));
        run
    }

    /// No output and no file under the target except the resource files holds a value.
    #[track_caller]
    fn assert_no_value(&self, target: &Path) {
        let mut places = self.0.clone();
        for (rel, content) in snapshot(target) {
            let is_resource = rel.starts_with("generations/0") && rel.ends_with(".toml");
            if !is_resource {
                places.push((rel, content));
            }
        }
        assert!(!places.is_empty(), "nothing was searched");
        for (place, text) in &places {
            for value in [DB_1, DB_2, TLS] {
                assert!(
                    !text.contains(value),
                    "{place} shows a secret value:\n{text}"
                );
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// This process's umask (the default mode of new files is 0666 without it).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

#[test]
fn secrets_are_deployed_with_mode_0600_compared_by_hash_and_never_shown() {
    let repo = repo();
    let dir = target(&repo);
    // prod is adopted (its stamp and `adopt` record): nothing else may appear.
    let adopted = snapshot(&dir);
    let mut out = Outputs::default();

    // CI has no secret values: `check` does not need them.
    out.run(&repo, &["check"], None).code(0);
    out.run(&repo, &["check", "--format", "json"], None).code(0);

    // A plan writes nothing, not even the key.
    let plan = out.run(&repo, &["plan", "--target", "prod"], Some(DB_1));
    plan.code(0)
        .stdout_has("+db_password = \"(secret, new)\"")
        .stdout_has("+tls_key = \"(secret, new)\"");
    assert!(snapshot(&dir) == adopted, "plan wrote to the target");
    out.run(
        &repo,
        &["plan", "--target", "prod", "--format", "json"],
        Some(DB_1),
    )
    .code(0)
    .stdout_has("(secret, new)");

    // Apply: the files hold the values; only the ones with secrets are private.
    out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
        .code(0)
        .stdout_has("(secret, new)");
    let worker = std::fs::read_to_string(dir.join("current/worker.toml")).unwrap();
    assert!(
        worker.contains(&format!("db_password = \"{DB_1}\"")),
        "{worker}"
    );
    assert!(worker.contains(&format!("tls_key = \"{TLS}\"")), "{worker}");
    assert_eq!(mode(&dir.join("current/worker.toml")), 0o600);
    assert_eq!(mode(&dir.join("current/api.toml")), 0o666 & !umask());
    assert_eq!(mode(&dir.join(".envlock/secret.key")), 0o600);
    let meta = std::fs::read_to_string(dir.join("generations/00000001/.meta.json")).unwrap();
    assert!(
        meta.contains("\"reference\": \"env:PROD_DB_PASSWORD\""),
        "{meta}"
    );
    assert!(meta.contains("\"path\": \"db_password\""), "{meta}");

    // The same values again: nothing to change.
    out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
        .code(0)
        .stdout_has("Plan: 0 to add, 0 to change, 0 to remove.")
        .stderr_has("No changes");

    // A plain change next to an unchanged secret shows the secret as unchanged.
    repo.write(PROD, prod_toml(17));
    repo.commit("prod: 17 threads");
    out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
        .code(0)
        .stdout_has("+threads = 17")
        .stdout_has(" tls_key = \"(secret, unchanged)\"");

    // Rotating a value is a change, shown without either value.
    out.run(
        &repo,
        &["plan", "--target", "prod", "--format", "json"],
        Some(DB_2),
    )
    .code(0)
    .stdout_has("(secret, changed)");
    let rotated = out.run(&repo, &["--target", "prod", "--yes"], Some(DB_2));
    rotated
        .code(0)
        .stdout_has("-db_password = \"(secret, previous)\"")
        .stdout_has("+db_password = \"(secret, changed)\"")
        .stdout_has("Plan: 0 to add, 1 to change, 0 to remove.");
    let worker = std::fs::read_to_string(dir.join("current/worker.toml")).unwrap();
    assert!(worker.contains(DB_2), "{worker}");
    out.run(
        &repo,
        &["--target", "prod", "--yes", "--format", "json"],
        Some(DB_2),
    )
    .code(0);

    // status, and a rollback whose diff is between two generations' secrets.
    out.run(&repo, &["status", "--target", "prod"], Some(DB_2))
        .code(0);
    out.run(
        &repo,
        &["status", "--target", "prod", "--format", "json"],
        Some(DB_2),
    )
    .code(0);
    let back = out.run(&repo, &["rollback", "--target", "prod", "--yes"], None);
    back.code(0)
        .stdout_has("-db_password = \"(secret, previous)\"")
        .stdout_has("+db_password = \"(secret, changed)\"");
    let worker = std::fs::read_to_string(dir.join("current/worker.toml")).unwrap();
    assert!(worker.contains(DB_1), "{worker}");
    assert_eq!(mode(&dir.join("current/worker.toml")), 0o600);
    out.run(
        &repo,
        &[
            "rollback", "--target", "prod", "--to", "3", "--yes", "--format", "json",
        ],
        None,
    )
    .code(0);

    // `status` works without the values: secrets count as unchanged, and it says so.
    out.run(&repo, &["status", "--target", "prod"], None)
        .code(0)
        .stdout_has("up to date")
        .stderr_has("warning: secret `env:PROD_DB_PASSWORD`")
        .stderr_has("changes to secret values are not counted");

    // Removing a secret shows it as removed, not its value.
    repo.write(
        PROD,
        prod_toml(17).replace("db_password = { secret = \"env:PROD_DB_PASSWORD\" }\n", ""),
    );
    repo.commit("prod: no database password");
    out.run(&repo, &["plan", "--target", "prod"], None)
        .code(0)
        .stdout_has("-db_password = \"(secret, removed)\"");
    out.run(&repo, &["--target", "prod", "--yes"], None).code(0);
    let worker = std::fs::read_to_string(dir.join("current/worker.toml")).unwrap();
    assert!(!worker.contains("db_password"), "{worker}");

    out.assert_no_value(&dir);
}

#[test]
fn a_missing_secret_refuses_before_anything_is_written() {
    let repo = repo();
    let dir = target(&repo);
    let mut out = Outputs::default();
    // Nothing deployed yet, and a deployed target: both stay as they are.
    for _ in 0..2 {
        let before = snapshot(&dir);
        let run = out.run(&repo, &["--target", "prod", "--yes"], None);
        run.code(1)
            .stderr_has(&format!(
                "secret `env:{VAR}` for settings.worker.db_password (written at {DB_AT}): the environment variable {VAR} is not set"
            ))
            .stderr_has(&format!("hint: export {VAR}=... before deploying"));
        assert_eq!(snapshot(&dir), before);
        out.run(&repo, &["plan", "--target", "prod"], None)
            .code(1)
            .stderr_has(DB_AT);
        out.run(
            &repo,
            &["--target", "prod", "--yes", "--format", "json"],
            None,
        )
        .code(1)
        .stdout_has("env:PROD_DB_PASSWORD");
        assert_eq!(snapshot(&dir), before);
        out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
            .code(0);
    }
    // A missing file names the file.
    std::fs::remove_file(repo.path().join("secrets/tls.key")).unwrap();
    let before = snapshot(&dir);
    out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
        .code(1)
        .stderr_has("secret `file:secrets/tls.key` for settings.worker.tls_key (written at environments/prod.toml:18:11)")
        .stderr_has("secrets/tls.key");
    assert_eq!(snapshot(&dir), before);
    out.assert_no_value(&dir);
}

#[test]
fn a_secret_holding_another_environments_account_is_refused() {
    let repo = repo();
    let dir = target(&repo);
    // prod is adopted (its stamp and `adopt` record): nothing else may appear.
    let adopted = snapshot(&dir);
    let mut out = Outputs::default();
    let foreign = format!("{DB_1}-arn:aws:sqs:eu-west-1:111111111111:jobs");
    let run = out.run(&repo, &["--target", "prod", "--yes"], Some(&foreign));
    run.code(3)
        .stderr_has("secret `env:PROD_DB_PASSWORD` for settings.worker.db_password")
        .stderr_has("the account of environment `validation`");
    let marker = format!("{DB_1}.validation.example.com");
    out.run(&repo, &["plan", "--target", "prod"], Some(&marker))
        .code(3)
        .stderr_has("the marker of environment `validation`");
    assert!(snapshot(&dir) == adopted);
    for (_, text) in &out.0 {
        assert!(
            !text.contains(&foreign) && !text.contains(&marker),
            "{text}"
        );
    }
    out.assert_no_value(&dir);
}

#[test]
fn a_secret_value_that_violates_the_schema_is_an_error_without_the_value() {
    let repo = repo();
    let dir = target(&repo);
    // prod is adopted (its stamp and `adopt` record): nothing else may appear.
    let adopted = snapshot(&dir);
    let mut out = Outputs::default();
    // Shorter than `minLength` 12; long enough to be searched for.
    let short = "sh0rt-pw";
    let run = out.run(&repo, &["--target", "prod", "--yes"], Some(short));
    run.code(1)
        .stderr_has("settings.worker.db_password (secret `env:PROD_DB_PASSWORD`")
        .stderr_has("violates `minLength`");
    assert!(!run.stderr.contains(short) && !run.stdout.contains(short));
    assert!(snapshot(&dir) == adopted);
    out.assert_no_value(&dir);
}

#[test]
fn malformed_references_are_configuration_errors_at_their_place() {
    let repo = Repo::ungated();
    repo.write(
        "environments/_common.toml",
        "[environment]\nschema = \"svc\"\n\n[settings.worker]\nengine = \"conformer-ctc\"\nthreads = 4\nendpoint = { secret = \"vault:x\" }\n",
    );
    repo.edit(
        PROD,
        &[(
            "threads = 16",
            "threads = 16\nqueue2 = { secret = \"env:1BAD\" }\nx = { secret = 42 }\ny = { secret = \"env:OK\", also = 1 }\nz = { secret = \"file:\" }",
        )],
    );
    repo.commit("malformed");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has("error[invalid-secret]: invalid secret reference \"vault:x\"")
        .stderr_has("--> environments/_common.toml:7:23")
        .stderr_has(
            "invalid secret reference \"env:1BAD\": `1BAD` is not an environment variable name",
        )
        .stderr_has("--> environments/prod.toml:21:21")
        .stderr_has("`secret` must be a string such as \"env:NAME\", found integer")
        .stderr_has("--> environments/prod.toml:22:16")
        .stderr_has("a secret reference has only the key `secret`; this table also has `also`")
        .stderr_has("--> environments/prod.toml:23:26")
        .stderr_has("invalid secret reference \"file:\": `file:` needs a path")
        .stderr_has("--> environments/prod.toml:24:16");
}

#[test]
fn check_rejects_a_secret_where_the_schema_cannot_take_a_string() {
    let repo = Repo::ungated();
    repo.edit(
        PROD,
        &[("threads = 16", "threads = { secret = \"env:THREADS\" }")],
    );
    repo.commit("threads from a secret");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("settings.worker.threads: a secret is always a string, but the schema does not accept a string here (`type`)")
        .stderr_has("--> environments/prod.toml:20:11");
    // A string-valued key may hold a secret whatever its pattern: the value is unknown here.
    let repo = Repo::ungated();
    repo.edit(
        PROD,
        &[(
            "queue = \"arn:aws:sqs:eu-west-1:222222222222:jobs\"",
            "queue = { secret = \"env:QUEUE\" }",
        )],
    );
    repo.commit("queue from a secret");
    repo.deploy(&["check"]).code(0);
}

#[test]
fn saved_plans_and_the_log_never_hold_a_secret_value() {
    let repo = repo();
    let dir = target(&repo);
    let plans = tempfile::tempdir().unwrap();
    let first = plans.path().join("first.json");
    let second = plans.path().join("second.json");
    let mut out = Outputs::default();

    // The target has no secret key yet: the plan cannot bind the values (it says so), and the
    // apply reads them then.
    out.run(
        &repo,
        &["plan", "--target", "prod", "--out", first.to_str().unwrap()],
        Some(DB_1),
    )
    .code(0);
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(plan["secrets_bound"], false);
    assert!(
        plan["resources"]["worker"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    out.run(
        &repo,
        &[
            "apply",
            "--target",
            "prod",
            "--plan",
            first.to_str().unwrap(),
            "--yes",
        ],
        Some(DB_1),
    )
    .code(0);
    assert!(
        std::fs::read_to_string(dir.join("current/worker.toml"))
            .unwrap()
            .contains(DB_1)
    );

    // Rotated: now bound by the target's key; `(secret, changed)` is all the plan shows.
    repo.write(PROD, prod_toml(17));
    repo.commit("prod: 17 threads");
    let run = out.run(
        &repo,
        &[
            "plan",
            "--target",
            "prod",
            "--out",
            second.to_str().unwrap(),
            "--format",
            "json",
        ],
        Some(DB_2),
    );
    run.code(0).stdout_has("(secret, changed)");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(plan["secrets_bound"], true);
    // Applying it with another value than the one planned is refused: the plan bound it.
    out.run(
        &repo,
        &[
            "apply",
            "--target",
            "prod",
            "--plan",
            second.to_str().unwrap(),
            "--yes",
        ],
        Some(DB_1),
    )
    .code(3)
    .stderr_has("a secret's value is not the one the saved plan was made with")
    .stderr_has("env:PROD_DB_PASSWORD");
    out.run(
        &repo,
        &[
            "apply",
            "--target",
            "prod",
            "--plan",
            second.to_str().unwrap(),
            "--yes",
        ],
        Some(DB_2),
    )
    .code(0);
    out.run(&repo, &["log", "--format", "json"], None).code(0);
    out.run(&repo, &["log", "verify"], None).code(0);
    for file in [&first, &second] {
        out.0.push((
            file.display().to_string(),
            std::fs::read_to_string(file).unwrap(),
        ));
    }
    out.assert_no_value(&dir);
}

/// Every exit of the process is scrubbed, not only the terminal: a health check that prints a
/// secret reaches the notifier's stdin and the log as `(secret)`, and a plain setting that holds
/// the same value is `(secret)` in a saved plan.
#[test]
fn no_exit_of_the_process_carries_a_secret_value() {
    let repo = repo();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    let prod = prod_toml(16)
        .replace(
            "[target]",
            "[health]\ncommand = [\"sh\", \"-c\", \"cat \\\"$DEPLOY_DIR/current/worker.toml\\\"; exit 1\"]\n\n\
             [notify]\ncommand = [\"sh\", \"-c\", \"cat > state/event.json\"]\n\n[target]",
        )
        .replace(
            "engine = \"conformer-ctc\"\n",
            &format!("engine = \"conformer-ctc\"\nendpoint = \"{DB_1}\"\n"),
        );
    repo.write(PROD, prod);
    repo.commit("prod: a health check that prints the secret");
    let mut out = Outputs::default();
    let plans = tempfile::tempdir().unwrap();
    let plan = plans.path().join("plan.json");
    out.run(
        &repo,
        &["plan", "--target", "prod", "--out", plan.to_str().unwrap()],
        Some(DB_1),
    )
    .code(0);
    let saved = std::fs::read_to_string(&plan).unwrap();
    assert!(saved.contains("(secret)"), "{saved}");
    out.0.push(("the saved plan".into(), saved));

    out.run(
        &repo,
        &["--target", "prod", "--yes", "--format", "json"],
        Some(DB_1),
    )
    .code(4)
    .stderr_has("(secret)");
    let event = std::fs::read_to_string(repo.path().join("state/event.json")).unwrap();
    assert!(event.contains("rolled-back"), "{event}");
    assert!(event.contains("(secret)"), "{event}");
    out.0.push(("the notifier's stdin".into(), event));
    out.run(&repo, &["log", "--format", "json"], None).code(0);
    out.assert_no_value(&target(&repo));
}

/// The identity, health and notify commands do not inherit the variables that `env:` secret
/// references name (there is no way to pass one through).
#[test]
fn commands_do_not_inherit_the_variables_secrets_are_read_from() {
    let repo = repo();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    let dump = |what: &str, then: &str| {
        format!("command = [\"sh\", \"-c\", \"env > state/{what}.env; {then}\"]\n")
    };
    let prod = prod_toml(16).replace(
        "[target]",
        &format!(
            "[identity]\n{}\n[health]\n{}\n[notify]\n{}\n[target]",
            dump("identity", "echo 222222222222"),
            dump("health", "exit 1"),
            dump("notify", "cat > /dev/null"),
        ),
    );
    repo.write(PROD, prod);
    repo.commit("prod: commands that show their environment");
    let mut out = Outputs::default();
    out.run(&repo, &["--target", "prod", "--yes"], Some(DB_1))
        .code(4);
    for what in ["identity", "health", "notify"] {
        let env = std::fs::read_to_string(repo.path().join(format!("state/{what}.env")))
            .unwrap_or_else(|e| panic!("the {what} command did not run: {e}"));
        assert!(env.contains("DEPLOY_ENVIRONMENT=prod"), "{what}: {env}");
        assert!(
            !env.contains(VAR) && !env.contains(DB_1),
            "the {what} command inherited {VAR}:\n{env}"
        );
    }
}

#[test]
fn a_secret_holding_another_spelling_of_an_identity_is_refused() {
    let repo = repo();
    let dir = target(&repo);
    // prod is adopted (its stamp and `adopt` record): nothing else may appear.
    let adopted = snapshot(&dir);
    let mut out = Outputs::default();
    for (value, what) in [
        (
            format!("{DB_1} acct 1111 1111 1111"),
            "the account of environment `validation`",
        ),
        (
            format!("{DB_1}@API.Validation.Example.COM"),
            "the marker of environment `validation`",
        ),
    ] {
        out.run(&repo, &["--target", "prod", "--yes"], Some(&value))
            .code(3)
            .stderr_has("secret `env:PROD_DB_PASSWORD` for settings.worker.db_password")
            .stderr_has(what);
        assert!(snapshot(&dir) == adopted);
        for (_, text) in &out.0 {
            assert!(!text.contains(&value), "{text}");
        }
    }
    out.assert_no_value(&dir);
}
