//! An `exec` target's state in a shared store (a real etcd on loopback): `deploy migrate` moves
//! it from a directory, keeping the generations and the log's chain byte for byte (a stamped
//! store, a damaged log and an interrupted deployment are refused with nothing written);
//! values larger than one item go in parts; configuration that cannot work is refused.

use std::collections::BTreeMap;

use crate::etcd::Cluster;
use crate::exec::example_provider;
use crate::harness::Repo;

const ENV: &str = "environments/cloud.toml";
const ACCOUNT: &str = "123456789012";

/// A repository whose `cloud` environment deploys `threads = N` through the example provider
/// into `<repo>/store`, its state in `<repo>/state`.
fn repo() -> Repo {
    let repo = Repo::empty();
    repo.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
    repo.write(".gitignore", "store/\nstate/\n");
    std::fs::create_dir_all(repo.path().join("store")).unwrap();
    std::fs::write(repo.path().join("store/.account"), format!("{ACCOUNT}\n")).unwrap();
    repo
}

fn set(repo: &Repo, state: &str, threads: u32) {
    let provider = example_provider();
    repo.write(
        ENV,
        format!(
            "[environment]\naccount = \"{ACCOUNT}\"\nschema = \"svc\"\n\n[target]\nkind = \"exec\"\n\
             command = [\"{}\"]\n{state}\n[target.options]\ndir = \"store\"\n\n\
             [settings.worker]\nthreads = {threads}\n",
            provider.display()
        ),
    );
    repo.commit(&format!("threads {threads}"));
}

fn etcd_state(etcd: &Cluster) -> String {
    format!(
        "\n[target.state]\nkind = \"etcd\"\nendpoints = {}\nprefix = \"/envlock/cloud/\"\nlock_ttl = \"2s\"\n",
        etcd.endpoints_toml()
    )
}

/// Three deployments with the state in `state/`, then the configuration names etcd.
fn deployed_then_moved(etcd: &Cluster) -> Repo {
    let repo = repo();
    for threads in 1..=3 {
        set(&repo, "state = \"state\"", threads);
        repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    }
    set(&repo, &etcd_state(etcd), 3);
    repo
}

/// `deploy migrate --target cloud --from <repo>/state --yes`.
fn migrate(repo: &Repo) -> crate::harness::Run {
    let from = repo.path().join("state");
    repo.deploy(&[
        "migrate",
        "--target",
        "cloud",
        "--from",
        from.to_str().unwrap(),
        "--yes",
    ])
}

fn state_keys(etcd: &Cluster) -> BTreeMap<String, (String, i64)> {
    etcd.keys("/envlock/cloud/")
}

#[test]
fn migrate_moves_generations_and_the_log_byte_for_byte_and_the_directory_refuses_after() {
    let etcd = Cluster::start(1);
    let repo = deployed_then_moved(&etcd);
    let old_log = std::fs::read(repo.path().join("state/.envlock/log.jsonl")).unwrap();
    // Before the move, the new store is empty and the scope is not: refused, and told how.
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("deploy migrate --target cloud --from DIR");
    assert!(state_keys(&etcd).is_empty(), "nothing was written");

    migrate(&repo)
        .code(0)
        .stderr_has("Moved: 3 generations and 3 log records");
    let moved = repo.deploy(&["log", "--target", "cloud", "--format", "json"]);
    moved.code(0);
    let verify = repo.deploy(&["log", "verify", "--target", "cloud"]);
    verify.code(0).stdout_has("4 records, chain intact");
    // The first three records are the directory's, byte for byte, under their own seq.
    for (i, line) in old_log
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let key = format!("/envlock/cloud/log/{:020}", i + 1);
        assert_eq!(
            etcd.value(&key).unwrap().as_bytes(),
            line,
            "record {} is copied exactly",
            i + 1
        );
    }
    let status = repo.deploy(&["status", "--target", "cloud"]);
    status.code(0).stdout_has("generation 3");
    // The generations came along: roll back to the first.
    repo.deploy(&["rollback", "--target", "cloud", "--to", "1", "--yes"])
        .code(0);
    let stored = std::fs::read_to_string(repo.path().join("store/worker.json")).unwrap();
    assert!(stored.contains("\"threads\": 1"), "{stored}");

    // The old directory is a record now: the old configuration is refused through it.
    set(&repo, "state = \"state\"", 4);
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("was moved to etcd");
    let stored_after = std::fs::read_to_string(repo.path().join("store/worker.json")).unwrap();
    assert_eq!(
        stored, stored_after,
        "nothing was deployed through the moved directory"
    );
}

#[test]
fn a_stamped_store_is_never_overwritten() {
    let etcd = Cluster::start(1);
    let repo = deployed_then_moved(&etcd);
    migrate(&repo).code(0);
    let before = state_keys(&etcd);
    // A second directory with the same environment's state (a second machine's copy).
    std::fs::remove_file(repo.path().join("state/.envlock/moved.json")).unwrap();
    migrate(&repo)
        .code(3)
        .stderr_has("already has a stamp")
        .stderr_has("nothing was written");
    assert_eq!(before, state_keys(&etcd), "the store is untouched");
}

#[test]
fn a_damaged_log_or_an_interrupted_deployment_is_not_carried_over() {
    let etcd = Cluster::start(1);
    let repo = deployed_then_moved(&etcd);
    let log = repo.path().join("state/.envlock/log.jsonl");
    let good = std::fs::read(&log).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    std::fs::write(&log, text.replacen("\"apply\"", "\"adopt\"", 1)).unwrap();
    migrate(&repo).code(3).stderr_has("does not verify");
    assert!(state_keys(&etcd).is_empty(), "nothing was written");

    std::fs::write(&log, &good).unwrap();
    std::fs::write(repo.path().join("state/.envlock/exec-journal.json"), "{}").unwrap();
    migrate(&repo).code(3).stderr_has("interrupted deployment");
    assert!(state_keys(&etcd).is_empty(), "nothing was written");
}

#[test]
fn another_environments_directory_is_refused() {
    let etcd = Cluster::start(1);
    let repo = deployed_then_moved(&etcd);
    let stamp = repo.path().join("state/.envlock/stamp.json");
    let text = std::fs::read_to_string(&stamp).unwrap();
    std::fs::write(&stamp, text.replace("\"cloud\"", "\"validation\"")).unwrap();
    migrate(&repo)
        .code(3)
        .stderr_has("belongs to environment `validation`");
    assert!(state_keys(&etcd).is_empty(), "nothing was written");
}

#[test]
fn a_state_store_that_cannot_work_is_a_configuration_error_at_its_place() {
    let repo = repo();
    let cases = [
        (
            "\n[target.state]\nkind = \"provider\"\n",
            "needs a protocol-2 provider",
        ),
        (
            "\n[target.state]\nkind = \"s3\"\n",
            "not one of \"dir\", \"etcd\", \"provider\"",
        ),
        (
            "\n[target.state]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\n",
            "needs `endpoints` (a list of URLs) and a `prefix`",
        ),
        (
            "\n[target.state]\nkind = \"provider\"\npath = \"x\"\n",
            "has no `path`",
        ),
        ("state = 7", "must be a directory or a table"),
    ];
    for (state, message) in cases {
        set(&repo, state, 1);
        repo.deploy(&["check"])
            .code(1)
            .stderr_has(message)
            .stderr_has("environments/cloud.toml:");
    }
    // A table of kind `dir` is the same as `state = "DIR"`.
    set(
        &repo,
        "\n[target.state]\nkind = \"dir\"\npath = \"state\"\n",
        1,
    );
    repo.deploy(&["check"]).code(0);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    assert!(repo.path().join("state/.envlock/stamp.json").exists());
}

#[test]
fn two_environments_with_one_etcd_state_prefix_are_refused_by_check() {
    let repo = repo();
    let state = "\n[target.state]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/envlock/shared/\"\n";
    set(&repo, state, 1);
    let other = repo
        .read(ENV)
        .replace(ACCOUNT, "210987654321")
        .replace("dir = \"store\"", "dir = \"store-b\"");
    repo.write("environments/other.toml", other);
    repo.commit("a second environment on the same state keys");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("duplicate-target");
}

#[test]
fn a_generation_larger_than_one_etcd_value_is_stored_in_parts_and_read_back_whole() {
    let etcd = Cluster::start(1);
    let repo = repo();
    // Three resources of about 200 KB each: one generation is larger than the 512 KiB the store
    // puts in one etcd value.
    let big = |fill: char| {
        let mut s = String::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            s.push_str(&format!(
                "\n[settings.{name}]\nblob = \"{}\"\n",
                fill.to_string().repeat(200_000 + i)
            ));
        }
        s
    };
    let write = |fill: char| {
        let provider = example_provider();
        repo.write(
            ENV,
            format!(
                "[environment]\naccount = \"{ACCOUNT}\"\nschema = \"svc\"\n\n[target]\n\
                 kind = \"exec\"\ncommand = [\"{}\"]\n{}\n[target.options]\ndir = \"store\"\n{}",
                provider.display(),
                etcd_state(&etcd),
                big(fill)
            ),
        );
        repo.commit(&format!("blob {fill}"));
    };
    write('x');
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    write('y');
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    let keys = state_keys(&etcd);
    let parts: Vec<&String> = keys.keys().filter(|k| k.contains("/parts/")).collect();
    assert!(
        !parts.is_empty(),
        "large values went in parts: {:?}",
        keys.keys()
    );
    assert!(
        keys.values().all(|(v, _)| v.len() <= 512 * 1024),
        "no etcd value is larger than the store's limit"
    );
    // Both generations read back whole: status compares them, rollback writes generation 1.
    repo.deploy(&["status", "--target", "cloud"])
        .code(0)
        .stdout_has("drift:       none");
    repo.deploy(&["rollback", "--target", "cloud", "--to", "1", "--yes"])
        .code(0);
    let a = std::fs::read_to_string(repo.path().join("store/a.json")).unwrap();
    assert!(
        a.contains(&"x".repeat(200_000)),
        "generation 1 came back whole"
    );
    // The undo journal's parts do not pile up: after three more deployments, the parts are
    // those of the kept generations and the last applied journal only.
    for fill in ['z', 'w', 'v'] {
        write(fill);
        repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    }
    let parts_now = state_keys(&etcd)
        .keys()
        .filter(|k| k.contains("/parts/"))
        .count();
    let generations = state_keys(&etcd)
        .keys()
        .filter(|k| k.contains("/generation/"))
        .count();
    assert!(
        parts_now <= 2 * (generations + 1),
        "{parts_now} parts for {generations} generations"
    );
}
