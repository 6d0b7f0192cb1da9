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
