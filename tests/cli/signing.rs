//! Signed records and who may deploy where (issue 20, items 1-3): real keys made by
//! `ssh-keygen`, a real `ssh-agent`, and real `ssh-keygen -Y sign/verify` both ways.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::harness::{Repo, Run, snapshot};

const VALIDATION: &str = "environments/validation.toml";
const PROD: &str = "environments/prod.toml";

/// A key made by `ssh-keygen -t ed25519 -N ''` in the repository's parent temp dir.
pub(crate) struct Key {
    pub(crate) private: PathBuf,
    pub(crate) public: String,
    pub(crate) fingerprint: String,
}

pub(crate) fn keygen(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(private.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(out.stdout).unwrap();
    Key {
        private,
        public: public.trim().to_owned(),
        fingerprint: fingerprint.split_whitespace().nth(1).unwrap().to_owned(),
    }
}

fn keys_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("envlock-keys")
        .tempdir()
        .unwrap()
}

/// `allowed_signers`, one `(principal, namespaces, key)` per line, committed.
fn allow(repo: &Repo, lines: &[(&str, &str, &Key)]) -> String {
    let text: String = lines
        .iter()
        .map(|(who, ns, k)| format!("{who} namespaces=\"{ns}\" {}\n", k.public))
        .collect();
    repo.write("allowed_signers", text);
    repo.commit("allowed_signers")
}

/// `deploy ARGS` signing with `key` (a key file; no agent), or with no key at all.
fn deploy_as(repo: &Repo, key: Option<&Key>, args: &[&str]) -> Run {
    let path = key.map_or(String::new(), |k| k.private.display().to_string());
    repo.deploy_env(
        args,
        &[("ENVLOCK_SIGNING_KEY", &path), ("SSH_AUTH_SOCK", "")],
    )
}

fn deploy(repo: &Repo, key: &Key, env: &str) -> Run {
    deploy_as(repo, Some(key), &["--target", env, "--yes"])
}

fn log_file(repo: &Repo, env: &str) -> PathBuf {
    repo.path()
        .join(format!("targets/{env}/.envlock/log.jsonl"))
}

fn records(repo: &Repo, env: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log_file(repo, env))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The line of a record as `deploy` writes it: canonical JSON without `hash`, `signer`,
/// `signature`, then those spliced in before the closing brace.
fn line_of(record: &serde_json::Value) -> String {
    let mut r = record.as_object().unwrap().clone();
    let signer = r.remove("signer");
    let signature = r.remove("signature");
    r.remove("hash");
    let canonical = serde_json::to_string(&r).unwrap();
    let hash = sha256_hex(canonical.as_bytes());
    let mut line = format!("{},\"hash\":\"{hash}\"", &canonical[..canonical.len() - 1]);
    if let (Some(s), Some(sig)) = (signer, signature) {
        line.push_str(&format!(",\"signer\":{s},\"signature\":{sig}"));
    }
    line.push('}');
    line
}

/// Rewrite the whole chain from `records`, recomputing every `prev` and `hash`, as a forger
/// who can write the file would.
fn rewrite_chain(path: &Path, records: &mut [serde_json::Value]) {
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for r in records.iter_mut() {
        r["prev"] = prev.clone().into();
        let line = line_of(r);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        prev = parsed["hash"].as_str().unwrap().to_owned();
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn ssh_keygen_verify(
    dir: &Path,
    repo: &Repo,
    principal: &str,
    env: &str,
    record: &serde_json::Value,
) -> bool {
    let sig = dir.join("record.sig");
    std::fs::write(&sig, record["signature"].as_str().unwrap()).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(repo.path().join("allowed_signers"))
        .args(["-I", principal, "-n", &format!("envlock-log@{env}"), "-s"])
        .arg(&sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(record["hash"].as_str().unwrap().as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

#[test]
fn records_are_signed_and_ssh_keygen_verifies_them() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    allow(
        &repo,
        &[(
            "ana@example.com",
            "envlock-log@validation,envlock-log@prod",
            &ana,
        )],
    );
    deploy(&repo, &ana, "validation").code(0);
    let r = records(&repo, "validation").pop().unwrap();
    assert_eq!(r["signer"], ana.fingerprint.as_str());
    assert!(
        r["signature"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN SSH SIGNATURE-----\n")
    );
    // Real OpenSSH accepts it, for this environment only.
    assert!(ssh_keygen_verify(
        keys.path(),
        &repo,
        "ana@example.com",
        "validation",
        &r
    ));
    assert!(!ssh_keygen_verify(
        keys.path(),
        &repo,
        "ana@example.com",
        "prod",
        &r
    ));
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("chain intact, all signatures verify");
}

#[test]
fn a_record_signed_by_ssh_keygen_verifies_and_one_for_another_environment_does_not() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    allow(
        &repo,
        &[(
            "ana@example.com",
            "envlock-log@validation,envlock-log@prod",
            &ana,
        )],
    );
    deploy(&repo, &ana, "validation").code(0);
    let path = log_file(&repo, "validation");
    let mut all = records(&repo, "validation");
    let hash = all.last().unwrap()["hash"].as_str().unwrap().to_owned();
    let sign = |ns: &str| {
        let msg = keys.path().join("message");
        std::fs::write(&msg, &hash).unwrap();
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", ns, "-f"])
            .arg(&ana.private)
            .arg(&msg)
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::read_to_string(msg.with_extension("sig")).unwrap()
    };
    let by_openssh = sign("envlock-log@validation");
    all.last_mut().unwrap()["signature"] = by_openssh.into();
    rewrite_chain(&path, &mut all);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("all signatures verify");

    let _ = std::fs::remove_file(keys.path().join("message.sig"));
    let for_prod = sign("envlock-log@prod");
    all.last_mut().unwrap()["signature"] = for_prod.into();
    rewrite_chain(&path, &mut all);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has("BROKEN")
        .stdout_has("not `envlock-log@validation`");
}

#[test]
fn a_chain_rewritten_after_changing_the_operator_is_detected() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let mallory = keygen(keys.path(), "mallory");
    let repo = Repo::base();
    allow(
        &repo,
        &[("ana@example.com", "envlock-log@validation", &ana)],
    );
    deploy(&repo, &ana, "validation").code(0);
    repo.edit(
        VALIDATION,
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 8\n")],
    );
    repo.commit("validation: 8 threads");
    deploy(&repo, &ana, "validation").code(0);
    let path = log_file(&repo, "validation");
    let good = std::fs::read(&path).unwrap();

    // The signatures kept: the hashes changed, so they no longer match.
    let mut all = records(&repo, "validation");
    all[0]["operator"]["user"] = "mallory".into();
    rewrite_chain(&path, &mut all);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has("record 1 (line 1): its signature by key")
        .stdout_has("does not match the record");

    // The signatures dropped: unsigned records while allowed_signers is in force.
    std::fs::write(&path, &good).unwrap();
    let mut all = records(&repo, "validation");
    for r in &mut all {
        let o = r.as_object_mut().unwrap();
        o.remove("signer");
        o.remove("signature");
    }
    all[1]["operator"]["user"] = "mallory".into();
    rewrite_chain(&path, &mut all);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has("it is not signed, although allowed_signers was in force");

    // Signed again by the forger's own key: a key allowed_signers does not list.
    std::fs::write(&path, &good).unwrap();
    let mut all = records(&repo, "validation");
    all[1]["operator"]["user"] = "mallory".into();
    let hash = {
        let mut r = all[1].clone();
        r["prev"] = records(&repo, "validation")[0]["hash"].clone();
        let line = line_of(&r);
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["hash"].clone()
    };
    let msg = keys.path().join("forged");
    std::fs::write(&msg, hash.as_str().unwrap()).unwrap();
    Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "envlock-log@validation", "-f"])
        .arg(&mallory.private)
        .arg(&msg)
        .status()
        .unwrap();
    all[1]["signature"] = std::fs::read_to_string(msg.with_extension("sig"))
        .unwrap()
        .into();
    all[1]["signer"] = mallory.fingerprint.clone().into();
    rewrite_chain(&path, &mut all);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has(&format!(
            "signed by key {}, which allowed_signers does not list",
            mallory.fingerprint
        ));
}

#[test]
fn a_forged_gate_record_in_validation_no_longer_opens_prod() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    repo.edit(
        VALIDATION,
        &[(
            "[settings.worker]",
            "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e unhealthy\"]\ntimeout = \"5s\"\n\n[settings.worker]",
        )],
    );
    repo.commit("validation: a health check");
    allow(
        &repo,
        &[(
            "ana@example.com",
            "envlock-log@validation,envlock-log@prod",
            &ana,
        )],
    );
    deploy(&repo, &ana, "validation").code(0);
    deploy(&repo, &ana, "prod").code(0);
    repo.write("unhealthy", "");
    deploy(&repo, &ana, "validation").code(1);
    repo.remove("unhealthy");
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    repo.commit("prod: 17 threads");

    // A forger appends a passed verification, chained correctly (unsigned: no key).
    let path = log_file(&repo, "validation");
    let mut all = records(&repo, "validation");
    let mut forged = all.last().unwrap().clone();
    forged["seq"] = (forged["seq"].as_u64().unwrap() + 1).into();
    forged["outcome"] = "unchanged".into();
    forged["reason"] = serde_json::Value::Null;
    let o = forged.as_object_mut().unwrap();
    o.remove("signer");
    o.remove("signature");
    all.push(forged);
    rewrite_chain(&path, &mut all);
    // The gate refuses (and records the refusal, signed); nothing is deployed.
    crate::forward::refused_untouched(
        &repo.path().join("targets/prod"),
        &[
            "promotion gate: a signature in `validation`'s deployment log does not verify",
            "it is not signed",
        ],
        || deploy(&repo, &ana, "prod"),
    );
}

#[test]
fn a_deployer_whose_key_is_not_allowed_is_refused_with_nothing_written() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let bob = keygen(keys.path(), "bob");
    let repo = Repo::base();
    allow(
        &repo,
        &[("ana@example.com", "envlock-log@validation", &ana)],
    );
    deploy(&repo, &ana, "validation").code(0);
    let prod = repo.path().join("targets/prod");
    let validation = repo.path().join("targets/validation");
    let (before_prod, before_validation) = (snapshot(&prod), snapshot(&validation));

    deploy(&repo, &ana, "prod")
        .code(3)
        .stderr_has(&format!("key {} (ana@example.com, from", ana.fingerprint))
        .stderr_has("may not deploy `prod`: its line in allowed_signers at commit")
        .stderr_has("does not list namespace `envlock-log@prod`")
        .stderr_has("nothing was written");
    deploy(&repo, &bob, "validation")
        .code(3)
        .stderr_has(&format!("key {} (from", bob.fingerprint))
        .stderr_has("allowed_signers at commit")
        .stderr_has("does not list it")
        .stderr_has(&format!(
            "namespaces=\"envlock-log@validation\" {}",
            bob.public.rsplit_once(' ').unwrap().0
        ));
    deploy_as(&repo, None, &["--target", "validation", "--yes"])
        .code(3)
        .stderr_has("no signing key");
    deploy_as(
        &repo,
        Some(&bob),
        &["rollback", "--target", "validation", "--yes"],
    )
    .code(3);
    assert_eq!(snapshot(&prod), before_prod);
    assert_eq!(snapshot(&validation), before_validation);
}

#[test]
fn key_rotation_keeps_old_records_valid() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let bob = keygen(keys.path(), "bob");
    let repo = Repo::base();
    allow(
        &repo,
        &[("ana@example.com", "envlock-log@validation", &ana)],
    );
    deploy(&repo, &ana, "validation").code(0);
    // ana leaves; bob takes over. ana's records stay judged by the file of their commit.
    allow(
        &repo,
        &[("bob@example.com", "envlock-log@validation", &bob)],
    );
    deploy(&repo, &ana, "validation")
        .code(3)
        .stderr_has("does not list it");
    deploy(&repo, &bob, "validation").code(0);
    let all = records(&repo, "validation");
    assert_eq!(all[0]["signer"], ana.fingerprint.as_str());
    assert_eq!(all.last().unwrap()["signer"], bob.fingerprint.as_str());
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("all signatures verify");
}

#[test]
fn a_rollback_by_a_newer_deployer_is_judged_by_the_file_it_ran_from() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let bob = keygen(keys.path(), "bob");
    let repo = Repo::base();
    allow(
        &repo,
        &[("ana@example.com", "envlock-log@validation", &ana)],
    );
    deploy(&repo, &ana, "validation").code(0);
    let first = repo.git(&["rev-parse", "HEAD"]);
    repo.edit(
        VALIDATION,
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 8\n")],
    );
    repo.commit("validation: 8 threads");
    deploy(&repo, &ana, "validation").code(0);
    // bob joins; the commit rolled back to (generation 1) lists only ana.
    let joined = allow(
        &repo,
        &[
            ("ana@example.com", "envlock-log@validation", &ana),
            ("bob@example.com", "envlock-log@validation", &bob),
        ],
    );
    deploy_as(
        &repo,
        Some(&bob),
        &["rollback", "--target", "validation", "--yes"],
    )
    .code(0);
    let r = records(&repo, "validation").pop().unwrap();
    assert_eq!(
        (r["action"].as_str(), r["commit"].as_str()),
        (Some("rollback"), Some(first.trim()))
    );
    assert_eq!(r["signers_commit"], joined.trim());
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("all signatures verify");
}

#[test]
fn the_ssh_agent_signs_when_no_key_file_is_named() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    allow(
        &repo,
        &[("ana@example.com", "envlock-log@validation", &ana)],
    );
    let socket = keys.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg("-q")
        .arg(&ana.private)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let sock = socket.display().to_string();
    let run = repo.deploy_env(
        &["--target", "validation", "--yes"],
        &[("ENVLOCK_SIGNING_KEY", ""), ("SSH_AUTH_SOCK", &sock)],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(added.success());
    run.code(0);
    let r = records(&repo, "validation").pop().unwrap();
    assert_eq!(r["signer"], ana.fingerprint.as_str());
    assert!(ssh_keygen_verify(
        keys.path(),
        &repo,
        "ana@example.com",
        "validation",
        &r
    ));
}

#[test]
fn without_allowed_signers_records_stay_unsigned_and_verify_says_so() {
    let repo = Repo::base();
    repo.deploy_env(
        &["--target", "validation", "--yes"],
        &[("ENVLOCK_SIGNING_KEY", ""), ("SSH_AUTH_SOCK", "")],
    )
    .code(0);
    assert!(records(&repo, "validation")[0].get("signature").is_none());
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("warning: the records of `validation` are not signed");
}

#[test]
fn check_points_at_a_bad_allowed_signers_line() {
    let keys = keys_dir();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    repo.write(
        "allowed_signers",
        format!(
            "# who deploys\nana@example.com valid-before=\"20300101\" {}\n",
            ana.public
        ),
    );
    repo.commit("a bad allowed_signers");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("allowed_signers:2:17: option `valid-before` is not supported");
}
