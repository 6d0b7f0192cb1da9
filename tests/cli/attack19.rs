//! Attacks on the shared state stores of an `exec` target (`[target.state]` of kind `etcd`
//! or `provider`) and on `deploy migrate`: an operator at night, someone who can write the
//! store's items, and two deployers racing. Each test failed before its fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::etcd::Cluster;
use crate::exec::example_provider;
use crate::harness::{Paused, Repo};

const ENV: &str = "environments/cloud.toml";
const ACCOUNT: &str = "123456789012";
const PREFIX: &str = "/envlock/cloud/";

fn repo() -> Repo {
    let repo = Repo::empty();
    repo.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
    repo.write(".gitignore", "store/\nstate/\nold/\n");
    std::fs::create_dir_all(repo.path().join("store")).unwrap();
    std::fs::write(repo.path().join("store/.account"), format!("{ACCOUNT}\n")).unwrap();
    repo
}

/// `cloud` through `provider` with `state` in `[target]`, two resources: `web` and `worker`.
fn set_with(repo: &Repo, provider: &Path, state: &str, web: u32, threads: u32) {
    repo.write(
        ENV,
        format!(
            "[environment]\naccount = \"{ACCOUNT}\"\nschema = \"svc\"\n\n[target]\nkind = \"exec\"\n\
             command = [\"{}\"]\n{state}\n[target.options]\ndir = \"store\"\n\n\
             [settings.web]\nport = {web}\n\n[settings.worker]\nthreads = {threads}\n",
            provider.display()
        ),
    );
    repo.commit(&format!("web {web} threads {threads}"));
}

fn set(repo: &Repo, state: &str, threads: u32) {
    set_with(repo, &example_provider(), state, 1, threads);
}

fn etcd_state(etcd: &Cluster, ttl: &str) -> String {
    format!(
        "\n[target.state]\nkind = \"etcd\"\nendpoints = {}\nprefix = \"{PREFIX}\"\nlock_ttl = \"{ttl}\"\n",
        etcd.endpoints_toml()
    )
}

fn endpoints(etcd: &Cluster) -> String {
    etcd.endpoints_toml()
        .trim_matches(['[', ']'])
        .replace(['"', ' '], "")
}

/// etcdctl against the cluster; its stdout.
fn ctl(etcd: &Cluster, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints(etcd)))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stored(repo: &Repo, name: &str) -> String {
    std::fs::read_to_string(repo.path().join(format!("store/{name}.json"))).unwrap_or_default()
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
}

/// Deployed `threads = 1..=n` with the state in etcd.
fn on_etcd(etcd: &Cluster, n: u32) -> Repo {
    let repo = repo();
    for threads in 1..=n {
        set(&repo, &etcd_state(etcd, "2s"), threads);
        repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    }
    repo
}

#[test]
fn a_forged_live_or_generation_id_at_the_largest_u64_is_refused_without_a_panic() {
    let etcd = Cluster::start(1);
    let repo = on_etcd(&etcd, 1);
    let before = stored(&repo, "worker");
    let live = format!("{PREFIX}live");
    ctl(
        &etcd,
        &["put", &live, "{\"generation\": 18446744073709551615}"],
    );
    set(&repo, &etcd_state(&etcd, "2s"), 2);
    let run = repo.deploy(&["--target", "cloud", "--yes"]);
    no_panic(&run.stderr);
    run.code(1).stderr_has("`live` cannot be read");
    assert_eq!(before, stored(&repo, "worker"), "nothing was deployed");

    // A forged generation item with the largest id: the next id cannot be made.
    ctl(&etcd, &["put", &live, "{\"generation\": 1}"]);
    let key = format!("{PREFIX}generation/18446744073709551615");
    ctl(&etcd, &["put", &key, "{\"id\": 1, \"resources\": {}}"]);
    let run = repo.deploy(&["--target", "cloud", "--yes"]);
    no_panic(&run.stderr);
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.stderr_has("the largest there can be");
    assert_eq!(
        before,
        stored(&repo, "worker"),
        "what was written was undone"
    );
}

/// Three deployments with the state in `<repo>/state`, then the configuration names etcd.
fn in_a_directory_then_etcd(etcd: &Cluster, generations: u32) -> Repo {
    let repo = repo();
    for threads in 1..=generations {
        set(&repo, "state = \"state\"", threads);
        repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    }
    set(&repo, &etcd_state(etcd, "2s"), generations);
    repo
}

fn migrate_args(from: &Path) -> Vec<String> {
    [
        "migrate",
        "--target",
        "cloud",
        "--from",
        from.to_str().unwrap(),
        "--yes",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn migrate_from(repo: &Repo, from: &Path) -> crate::harness::Run {
    let args = migrate_args(from);
    repo.deploy(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `deploy migrate` from `from`, killed -9 at failpoint `point`.
fn migrate_killed_at(repo: &Repo, from: &Path, point: &str) {
    let args = migrate_args(from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Paused::start(repo.path(), &args, point, None, &[]).kill9();
}

#[test]
fn a_migration_killed_after_its_stamp_is_finished_by_running_it_again() {
    let etcd = Cluster::start(1);
    let repo = in_a_directory_then_etcd(&etcd, 2);
    let state = repo.path().join("state");
    migrate_killed_at(&repo, &state, "migrate-after-stamp");
    assert!(
        etcd.value(&format!("{PREFIX}stamp")).is_some(),
        "killed after the stamp"
    );
    // Not without a confirmation.
    let from = state.to_str().unwrap();
    repo.deploy(&["migrate", "--target", "cloud", "--from", from])
        .code(1)
        .stderr_has("nobody can confirm");
    assert!(!state.join(".envlock/moved.json").exists());
    // Run again, as the operator would: it finishes the move instead of refusing for ever.
    until_unlocked(|| migrate_from(&repo, &state))
        .code(0)
        .stderr_has("Moved");
    repo.deploy(&["log", "verify", "--target", "cloud"])
        .code(0)
        .stdout_has("3 records, chain intact");
    // The old configuration is refused through the directory: no second history.
    set(&repo, "state = \"state\"", 9);
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("was moved to etcd");
    assert!(stored(&repo, "worker").contains("\"threads\": 2"));
}

#[test]
fn a_migration_killed_before_its_record_appends_it_when_run_again() {
    let etcd = Cluster::start(1);
    let repo = in_a_directory_then_etcd(&etcd, 2);
    let state = repo.path().join("state");
    migrate_killed_at(&repo, &state, "migrate-after-moved");
    assert!(
        state.join(".envlock/moved.json").exists(),
        "killed after marking"
    );
    until_unlocked(|| migrate_from(&repo, &state))
        .code(0)
        .stderr_has("append its `migrate` record");
    repo.deploy(&["log", "verify", "--target", "cloud"])
        .code(0)
        .stdout_has("3 records, chain intact");
    // Once only.
    migrate_from(&repo, &state).code(3);
}

/// `run` again while it exits 5 because a killed run's lease has not lapsed yet (10 s at most).
fn until_unlocked(run: impl Fn() -> crate::harness::Run) -> crate::harness::Run {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = run();
        if r.code != 5 || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A protocol-1 provider that writes `<operation> <resource>` per call to `<dir>/calls`, then
/// runs the example provider. Returns the script's path.
fn logging_provider(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("logging-provider");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport json, subprocess, sys\nreq = sys.stdin.buffer.read()\n\
             op = json.loads(req)\nwith open({calls:?}, 'a') as f:\n    \
             f.write(f\"{{op['operation']}} {{op.get('resource', '')}}\\n\")\n\
             out = subprocess.run([{real:?}], input=req, capture_output=True)\n\
             sys.stdout.buffer.write(out.stdout)\nsys.stderr.buffer.write(out.stderr)\n\
             sys.exit(out.returncode)\n",
            calls = dir.join("calls").to_str().unwrap(),
            real = example_provider().to_str().unwrap(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Revoke every lease of the cluster: the lock's holder lost it (a partition, a long pause).
fn revoke_leases(etcd: &Cluster) {
    for line in ctl(etcd, &["lease", "list"]).lines().skip(1) {
        let id = line.trim();
        if !id.is_empty() {
            ctl(etcd, &["lease", "revoke", id]);
        }
    }
}

#[test]
fn a_deployer_whose_lock_was_lost_mid_deploy_writes_nothing_more_to_the_provider() {
    let etcd = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let provider = logging_provider(tmp.path());
    let repo = repo();
    let state = etcd_state(&etcd, "2s");
    set_with(&repo, &provider, &state, 1, 1);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    // A changes `web` then `worker`, and stops before its second write.
    set_with(&repo, &provider, &state, 2, 2);
    let resume = tmp.path().join("resume");
    let a = Paused::start(
        repo.path(),
        &["--target", "cloud", "--yes"],
        "exec-before-step-2",
        Some(&resume),
        &[],
    );
    // A's lease is gone; B takes the lock and deploys a commit that changes only `web`.
    revoke_leases(&etcd);
    set_with(&repo, &provider, &state, 5, 1);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    let calls = tmp.path().join("calls");
    let before = std::fs::read_to_string(&calls).unwrap().lines().count();
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = a.finish();
    no_panic(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("lock on etcd"), "{stderr}");
    assert!(stderr.contains("was lost"), "{stderr}");
    assert!(
        stderr.contains("changed `web` at the provider, which it did not undo"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("nothing was read from or written"),
        "{stderr}"
    );
    let after: Vec<String> = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .filter(|l| !l.starts_with("read") && !l.starts_with("identity"))
        .collect();
    assert!(
        after.is_empty(),
        "A wrote after losing its lock: {after:?}\n{stderr}"
    );
    assert!(
        stored(&repo, "web").contains("\"port\": 5"),
        "B's deployment stays"
    );
    assert!(stored(&repo, "worker").contains("\"threads\": 1"));
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    assert!(stored(&repo, "web").contains("\"port\": 5"));
}

#[test]
fn a_lock_key_without_a_lease_is_named_with_how_to_remove_it_not_waited_for() {
    let etcd = Cluster::start(1);
    let repo = on_etcd(&etcd, 1);
    let lock = format!("{PREFIX}lock");
    let holder = r#"{"user":"m","host":"h","pid":1,"since":"x","environment":"cloud"}"#;
    ctl(&etcd, &["put", &lock, holder]);
    set(&repo, &etcd_state(&etcd, "2s"), 2);
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("is bound to no lease")
        .stderr_has(&format!("etcdctl del {lock}"));
    assert!(stored(&repo, "worker").contains("\"threads\": 1"));
    ctl(&etcd, &["del", &lock]);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    assert!(stored(&repo, "worker").contains("\"threads\": 2"));
}

fn provider2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/dir-example/provider2")
}

fn provider_state(ttl: &str) -> String {
    format!("protocol = 2\n\n[target.state]\nkind = \"provider\"\nlock_ttl = \"{ttl}\"\n")
}

fn item(repo: &Repo, key: &str) -> PathBuf {
    repo.path()
        .join("store/.envlock-state")
        .join(key.replace('/', "%2F"))
}

/// provider2 behind a proxy that takes `secs` seconds over every `apply`.
fn slow_provider2(dir: &Path, secs: f64) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("slow-provider2");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport json, subprocess, sys, time\n\
             real = subprocess.Popen([{real:?}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n\
             for line in sys.stdin:\n    if json.loads(line)['operation'] == 'apply':\n        time.sleep({secs})\n    \
             real.stdin.write(line)\n    real.stdin.flush()\n    sys.stdout.write(real.stdout.readline())\n    sys.stdout.flush()\n",
            real = provider2().to_str().unwrap(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_provider_lock_ttl_too_short_to_renew_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = slow_provider2(tmp.path(), 2.5);
    let repo = repo();
    set_with(&repo, &slow, &provider_state("1ms"), 1, 1);
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("`lock_ttl` = 1ms in [target.state] of environments/cloud.toml is too short")
        .stderr_has("make `lock_ttl` at least 2s");
    assert!(stored(&repo, "web").is_empty(), "nothing was deployed");
    assert!(!item(&repo, "stamp").exists(), "nothing was adopted");
    // At least one call long, the same slow provider deploys.
    set_with(&repo, &slow, &provider_state("10s"), 1, 2);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    assert!(stored(&repo, "worker").contains("\"threads\": 2"));
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn a_store_whose_stamp_was_removed_keeps_its_history_when_a_directory_is_migrated_into_it() {
    let etcd = Cluster::start(1);
    let repo = in_a_directory_then_etcd(&etcd, 2);
    // A second machine's copy of the directory, from before the move.
    copy_dir(&repo.path().join("state"), &repo.path().join("old"));
    migrate_from(&repo, &repo.path().join("state")).code(0);
    set(&repo, &etcd_state(&etcd, "2s"), 3);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    // The stamp item is deleted; the refusal suggests `deploy migrate`, from the copy.
    ctl(&etcd, &["del", &format!("{PREFIX}stamp")]);
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("deploy migrate");
    let before = etcd.keys(PREFIX);
    migrate_from(&repo, &repo.path().join("old"))
        .code(3)
        .stderr_has("holds a deployment log that is not the directory's (4 records)")
        .stderr_has("nothing was written");
    assert_eq!(
        before,
        etcd.keys(PREFIX),
        "the store's history is untouched"
    );
    assert!(!repo.path().join("old/.envlock/moved.json").exists());
}

/// provider2 behind a proxy whose `state-list` ignores `after` and always says more follow.
fn repeating_provider2(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("repeating-provider2");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport json, os, subprocess, sys\n\
             real = subprocess.Popen([{real:?}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n\
             for line in sys.stdin:\n    req = json.loads(line)\n    \
             bad = req['operation'] == 'state-list' and os.path.exists({flag:?})\n    \
             if bad:\n        req['after'] = None\n    \
             real.stdin.write(json.dumps(req) + '\\n')\n    real.stdin.flush()\n    \
             reply = json.loads(real.stdout.readline())\n    \
             if bad:\n        reply['more'] = True\n    \
             sys.stdout.write(json.dumps(reply) + '\\n')\n    sys.stdout.flush()\n",
            real = provider2().to_str().unwrap(),
            flag = dir.join("repeat").to_str().unwrap(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_store_that_repeats_a_page_of_its_listing_is_refused_not_read_for_ever() {
    let tmp = tempfile::tempdir().unwrap();
    let provider = repeating_provider2(tmp.path());
    let repo = repo();
    set_with(&repo, &provider, &provider_state("10s"), 1, 1);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    std::fs::write(tmp.path().join("repeat"), "").unwrap();
    let out = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_deploy"))
        .arg("-C")
        .arg(repo.path())
        .args(["log", "--target", "cloud"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("out of key order"), "{stderr}");
}

#[test]
fn resource_names_read_back_from_the_store_cannot_leave_the_providers_scope() {
    let etcd = Cluster::start(1);
    let repo = on_etcd(&etcd, 1);
    set(&repo, &etcd_state(&etcd, "2s"), 2);
    // A forged undo journal whose undo would re-create `../evil` at the provider.
    let journal = r#"{"version": 1, "action": "apply", "from": 1, "steps": [{"resource": "../evil",
        "op": "delete", "before": {"value": {"pwned": true}, "version": "x"}, "after": null,
        "secret": false, "before_secret": false, "version": null, "done": true, "undone": false}]}"#;
    let key = format!("{PREFIX}blob/exec-journal.json");
    ctl(&etcd, &["put", &key, journal]);
    let run = repo.deploy(&["--target", "cloud", "--yes"]);
    no_panic(&run.stderr);
    assert!(
        !repo.path().join("evil.json").exists(),
        "written outside the scope"
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.stderr_has("`../evil`");
    assert!(stored(&repo, "worker").contains("\"threads\": 1"));
    ctl(&etcd, &["del", &key]);

    // A forged generation with such a resource, then a rollback to it.
    let generation = format!("{PREFIX}generation/{:020}", 7);
    let body =
        r#"{"id": 7, "meta": {}, "resources": {"../evil": "pwned = true\n"}, "failed": null}"#;
    ctl(&etcd, &["put", &generation, body]);
    let run = repo.deploy(&["rollback", "--target", "cloud", "--to", "7", "--yes"]);
    no_panic(&run.stderr);
    assert!(
        !repo.path().join("evil.json").exists(),
        "written outside the scope"
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.stderr_has("`../evil`");
}

#[test]
fn a_directory_log_with_sealed_damage_moves_byte_for_byte_and_goes_on() {
    let etcd = Cluster::start(1);
    let repo = in_a_directory_then_etcd(&etcd, 2);
    let log = repo.path().join("state/.envlock/log.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, format!("{text}this line is damage\n")).unwrap();
    set(&repo, "state = \"state\"", 2);
    let seal = [
        "log",
        "seal",
        "--target",
        "cloud",
        "--reason",
        "a torn write",
        "--yes",
    ];
    repo.deploy(&seal).code(0);
    let sealed = std::fs::read(&log).unwrap();
    set(&repo, &etcd_state(&etcd, "2s"), 2);
    let run = migrate_from(&repo, &repo.path().join("state"));
    run.code(0);
    let moved = etcd.keys(&format!("{PREFIX}log/"));
    let mut joined: Vec<u8> = Vec::new();
    for (value, _) in moved.values() {
        joined.extend_from_slice(value.as_bytes());
        joined.push(b'\n');
    }
    assert!(
        joined.starts_with(&sealed),
        "the sealed log is carried byte for byte"
    );
    repo.deploy(&["log", "verify", "--target", "cloud"]).code(0);
    set(&repo, &etcd_state(&etcd, "2s"), 3);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    repo.deploy(&["log", "verify", "--target", "cloud"]).code(0);
}
