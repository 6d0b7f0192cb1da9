//! Issue 19: an `exec` target's state (stamp, lock, journals, generations, log) kept in a shared
//! store, so that any machine with a clone and the account's credentials deploys what another
//! deployed, meets its lock and resolves its crashes.
//!
//! Every scenario runs on two (or three) state-less "machines": clones of one bare remote, each
//! with its own HOME and `USER`, sharing nothing but the account (the provider's scope) and the
//! store. Each scenario runs twice:
//! - `etcd_*`: `[target.state] kind = "etcd"` on a real etcd, the resources through
//!   `providers/dir-example/provider` (protocol 1). A machine's "credentials" are its git-ignored
//!   symlink `account` to an account's directory (whose `.account` file names the account).
//! - `provider_*`: `[target.state] kind = "provider"` through `providers/aws-ssm/provider`
//!   (protocol 2) against moto servers, one per account: the state in the account's DynamoDB
//!   table. A machine's credentials are its `AWS_*` environment. The provider is wrapped so that
//!   its `hello` announces batches of 2, so a deployer killed between batches leaves the
//!   parameters half-changed.
//!
//! What is asserted is what the account and the store hold, read without envlock (the files,
//! etcdctl, boto3), besides exit codes and messages.
//!
//! Scenarios: 1 a fresh machine plans, deploys, rolls back and logs in one chain; 2 one lock,
//! renewed while held; 3 a deployer killed mid-apply is undone by another machine (3b: killed
//! after its switch, recorded exactly once); 4 a dead holder's lease lapses; 5 another account's
//! credentials and 6 another environment's configuration are refused with nothing written;
//! 7 a deployer frozen past its lease; 8 secrets and the shared key; 9 a stale saved plan;
//! 10 a rollback killed half-way; 11 the log only grows; 12 a conflicted step is not undone;
//! 13 the lease outlives a long provider call. The tests marked `ignore = "BUG: ..."` fail
//! today and say why.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::etcd::Cluster;
use crate::harness::{Paused, Repo, Run};
use crate::moto::{Moto, REGION};

const PROD: &str = "prod";
const VALIDATION: &str = "validation";
const PROD_ACCOUNT: &str = "222222222222";
const VALIDATION_ACCOUNT: &str = "111111111111";
const NAMES: [&str; 5] = ["r1", "r2", "r3", "r4", "r5"];
/// The etcd prefix of prod's state.
const STATE_PREFIX: &str = "/envlock/prod/";
/// The SSM path of prod's parameters (and its partition of the state table).
const SSM_PATH: &str = "/asr/prod/";
const TABLE: &str = "envlock-state";
/// The lease of the deployment lock, in seconds.
const LOCK_TTL: u64 = 2;
/// A lease long enough that a run started right after its holder died still finds it held,
/// whatever the provider's start-up costs (a Python process importing boto3, per run).
const LONG_LOCK_TTL: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Etcd,
    Provider,
}

/// Wraps a protocol-2 provider (its path is the first argument) and rewrites its `hello` to
/// announce batches of at most 2 items; every other line passes through unchanged. With
/// `SLOW_APPLY=<seconds>`, each `apply` request is held that long first (a slow batch).
const BATCH2: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, threading, time
real = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
slow = float(os.environ.get("SLOW_APPLY", "0"))
def forward():
    for line in sys.stdin.buffer:
        if slow and json.loads(line).get("operation") == "apply":
            time.sleep(slow)
        real.stdin.write(line)
        real.stdin.flush()
    real.stdin.close()
threading.Thread(target=forward, daemon=True).start()
for line in real.stdout:
    try:
        v = json.loads(line)
        batch = v.get("capabilities", {}).get("batch") if isinstance(v, dict) else None
        if isinstance(batch, dict):
            batch["max"] = 2
            line = (json.dumps(v) + "\n").encode()
    except ValueError:
        pass
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
sys.exit(real.wait())
"#;

/// The accounts, the store, and the configuration's remote.
struct World {
    kind: Kind,
    /// `[target.state] lock_ttl`, in seconds.
    lock_ttl: u64,
    remote: Repo,
    /// The accounts' directories (etcd) and the batch wrapper (provider).
    dir: TempDir,
    etcd: Option<Cluster>,
    /// prod's and validation's accounts (provider).
    /// The moto servers of the accounts (provider): prod's, and validation's when a test needs
    /// it.
    moto: Vec<(&'static str, Moto)>,
}

/// One machine: a clone, a HOME, a user, credentials for one account.
struct Machine {
    repo: Repo,
    home: TempDir,
    user: &'static str,
    /// Credentials (provider: the `AWS_*` variables of one moto server).
    env: Vec<(String, String)>,
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

impl World {
    fn new(kind: Kind) -> World {
        World::with(kind, LOCK_TTL, false)
    }

    /// With `both_accounts`, validation's account has a moto server too (provider; the etcd
    /// world always has both accounts' directories).
    fn with(kind: Kind, lock_ttl: u64, both_accounts: bool) -> World {
        let dir = tempfile::Builder::new()
            .prefix("envlock-accounts")
            .tempdir()
            .unwrap();
        let (etcd, moto) = match kind {
            Kind::Etcd => {
                for (name, account) in [(PROD, PROD_ACCOUNT), (VALIDATION, VALIDATION_ACCOUNT)] {
                    let scope = dir.path().join(name);
                    std::fs::create_dir_all(&scope).unwrap();
                    std::fs::write(scope.join(".account"), format!("{account}\n")).unwrap();
                }
                (Some(Cluster::start(1)), Vec::new())
            }
            Kind::Provider => {
                let wrapper = dir.path().join("batch2");
                std::fs::write(&wrapper, BATCH2).unwrap();
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
                let mut motos = vec![(PROD, Moto::start(PROD_ACCOUNT))];
                if both_accounts {
                    motos.push((VALIDATION, Moto::start(VALIDATION_ACCOUNT)));
                }
                for (_, m) in &motos {
                    create_table(m);
                }
                (None, motos)
            }
        };
        let world = World {
            kind,
            lock_ttl,
            remote: Repo::bare(),
            dir,
            etcd,
            moto,
        };
        // The first commit, pushed from a developer's clone.
        let dev = Repo::clone_of(&world.remote);
        dev.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
        dev.write(".gitignore", "account\n");
        dev.write(
            &format!("environments/{PROD}.toml"),
            world.env_toml(PROD_ACCOUNT, 4),
        );
        dev.commit("prod, threads 4");
        dev.git(&["push", "-q", "origin", "main"]);
        world
    }

    fn etcd(&self) -> &Cluster {
        self.etcd.as_ref().unwrap()
    }

    fn scope(&self, account_of: &str) -> PathBuf {
        self.dir.path().join(account_of)
    }

    fn moto(&self, account_of: &str) -> &Moto {
        &self
            .moto
            .iter()
            .find(|(name, _)| *name == account_of)
            .unwrap_or_else(|| panic!("no moto server for {account_of}'s account"))
            .1
    }

    /// The environment file of `env` (account `account`) with every resource at `threads`,
    /// its state in prod's store.
    fn env_toml(&self, account: &str, threads: u32) -> String {
        let mut s = format!("[environment]\naccount = \"{account}\"\nschema = \"svc\"\n\n");
        match self.kind {
            Kind::Etcd => s.push_str(&format!(
                "[target]\nkind = \"exec\"\ncommand = [\"{}\"]\n\n\
                 [target.options]\ndir = \"account\"\n\n\
                 [target.state]\nkind = \"etcd\"\nendpoints = {}\nprefix = \"{STATE_PREFIX}\"\n\
                 lock_ttl = \"{}s\"\n",
                crate::exec::example_provider().display(),
                self.etcd().endpoints_toml(),
                self.lock_ttl
            )),
            Kind::Provider => s.push_str(&format!(
                "[target]\nkind = \"exec\"\ncommand = [\"{}\", \"{}\"]\nprotocol = 2\n\n\
                 [target.options]\npath = \"{SSM_PATH}\"\nregion = \"{REGION}\"\n\
                 state_table = \"{TABLE}\"\n\n\
                 [target.state]\nkind = \"provider\"\nlock_ttl = \"{}s\"\n",
                self.dir.path().join("batch2").display(),
                crate::moto::provider_path().display(),
                self.lock_ttl
            )),
        }
        for name in NAMES {
            s.push_str(&format!(
                "\n[settings.{name}]\nengine = \"conformer-ctc\"\nthreads = {threads}\n"
            ));
        }
        s
    }

    /// A fresh clone of the remote, with its own HOME, as `user`, holding the credentials of
    /// `account_of`'s account.
    fn machine(&self, user: &'static str, account_of: &str) -> Machine {
        self.machine_of(&self.remote, user, account_of)
    }

    fn machine_of(&self, remote: &Repo, user: &'static str, account_of: &str) -> Machine {
        let repo = Repo::clone_of(remote);
        let home = tempfile::Builder::new()
            .prefix("envlock-home")
            .tempdir()
            .unwrap();
        let env = match self.kind {
            Kind::Etcd => {
                std::os::unix::fs::symlink(self.scope(account_of), repo.path().join("account"))
                    .unwrap();
                Vec::new()
            }
            Kind::Provider => self.moto(account_of).env(),
        };
        Machine {
            repo,
            home,
            user,
            env,
        }
    }

    /// The JSON text the provider stores for `{engine, threads}`.
    fn stored(&self, threads: u32) -> String {
        match self.kind {
            Kind::Etcd => crate::exec::stored(threads),
            Kind::Provider => format!(r#"{{"engine":"conformer-ctc","threads":{threads}}}"#),
        }
    }

    fn all_stored(&self, threads: u32) -> BTreeMap<String, String> {
        NAMES
            .iter()
            .map(|n| (n.to_string(), self.stored(threads)))
            .collect()
    }

    /// r1 and r2 at `new`, the others at `old`: a deployment stopped between its second and
    /// third write.
    fn half(&self, old: u32, new: u32) -> BTreeMap<String, String> {
        let mut want = self.all_stored(old);
        for n in ["r1", "r2"] {
            want.insert(n.into(), self.stored(new));
        }
        want
    }

    /// Where a deployment is stopped after its first two writes, before its third.
    fn mid_apply(&self) -> &'static str {
        match self.kind {
            Kind::Etcd => "exec-before-step-3",
            Kind::Provider => "exec-before-batch-2",
        }
    }

    /// prod's resources, as the account holds them: name -> value.
    fn resources(&self) -> BTreeMap<String, String> {
        match self.kind {
            Kind::Etcd => {
                let mut out = BTreeMap::new();
                for entry in std::fs::read_dir(self.scope(PROD)).unwrap() {
                    let entry = entry.unwrap();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(stem) = name.strip_suffix(".json") {
                        out.insert(
                            stem.to_owned(),
                            std::fs::read_to_string(entry.path()).unwrap(),
                        );
                    }
                }
                out
            }
            Kind::Provider => self
                .moto(PROD)
                .parameters_under(SSM_PATH)
                .into_iter()
                .map(|(k, v)| (k.strip_prefix(SSM_PATH).unwrap().to_owned(), v.0))
                .collect(),
        }
    }

    /// Everything both accounts and the store hold, with versions and revisions: equal
    /// snapshots mean nothing was written.
    fn everything(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.kind {
            Kind::Etcd => {
                for name in [PROD, VALIDATION] {
                    for (k, v) in crate::harness::snapshot(&self.scope(name)) {
                        out.insert(format!("{name}:{k}"), v);
                    }
                }
                for (k, (v, rev)) in self.etcd().keys("/") {
                    out.insert(format!("etcd:{k}"), format!("{v} @{rev}"));
                }
            }
            Kind::Provider => {
                for (name, m) in &self.moto {
                    for (k, v) in m.parameters_under("/") {
                        out.insert(format!("{name}:ssm:{k}"), format!("{v:?}"));
                    }
                    for item in table_items(m) {
                        let key = format!(
                            "{name}:dynamodb:{}|{}",
                            item["pk"]["S"].as_str().unwrap(),
                            item["sk"]["S"].as_str().unwrap()
                        );
                        out.insert(key, item.to_string());
                    }
                }
            }
        }
        out
    }

    /// [`World::everything`] but the lock's own item, whose lease its holder renews.
    fn everything_but_the_lock(&self) -> BTreeMap<String, String> {
        let mut all = self.everything();
        all.retain(|k, _| !k.ends_with("/lock") && !k.ends_with("|lock"));
        all
    }

    /// The keys of prod's state in the store (without their values).
    fn state_keys(&self) -> Vec<String> {
        match self.kind {
            Kind::Etcd => self
                .etcd()
                .keys(STATE_PREFIX)
                .into_keys()
                .map(|k| k[STATE_PREFIX.len()..].to_owned())
                .collect(),
            Kind::Provider => table_items(self.moto(PROD))
                .iter()
                .filter(|i| i["pk"]["S"] == SSM_PATH)
                .map(|i| i["sk"]["S"].as_str().unwrap().to_owned())
                .collect(),
        }
    }

    /// The stamp in prod's store.
    fn stamp(&self) -> Option<Value> {
        let text = match self.kind {
            Kind::Etcd => self.etcd().value(&format!("{STATE_PREFIX}stamp"))?,
            Kind::Provider => table_items(self.moto(PROD))
                .into_iter()
                .find(|i| i["pk"]["S"] == SSM_PATH && i["sk"]["S"] == "stamp")?["value"]["S"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        Some(serde_json::from_str(&text).unwrap())
    }
}

/// Run `script` (Python, with `ddb` a boto3 DynamoDB client for `moto`) and parse what it
/// prints as JSON.
#[track_caller]
fn dynamodb(moto: &Moto, script: &str) -> Value {
    let prelude = format!(
        "import json, boto3\nddb = boto3.session.Session(region_name='{REGION}').client('dynamodb')\n"
    );
    let out = moto
        .command("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "boto3 (dynamodb) failed:\n{}\n--- moto\n{}",
        String::from_utf8_lossy(&out.stderr),
        moto.log_tail()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The state table as providers/aws-ssm/README.md says to create it.
fn create_table(moto: &Moto) {
    dynamodb(
        moto,
        &format!(
            "ddb.create_table(TableName='{TABLE}',\n    \
                 AttributeDefinitions=[{{'AttributeName': 'pk', 'AttributeType': 'S'}},\n        \
                     {{'AttributeName': 'sk', 'AttributeType': 'S'}}],\n    \
                 KeySchema=[{{'AttributeName': 'pk', 'KeyType': 'HASH'}},\n        \
                     {{'AttributeName': 'sk', 'KeyType': 'RANGE'}}],\n    \
                 BillingMode='PAY_PER_REQUEST')\n\
             print('null')"
        ),
    );
}

/// Every item of the state table, in (pk, sk) order, as DynamoDB's JSON.
fn table_items(moto: &Moto) -> Vec<Value> {
    let v = dynamodb(
        moto,
        &format!(
            "items = []\n\
             for page in ddb.get_paginator('scan').paginate(TableName='{TABLE}', ConsistentRead=True):\n    \
                 items.extend(page['Items'])\n\
             items.sort(key=lambda i: (i['pk']['S'], i['sk']['S']))\n\
             print(json.dumps(items))"
        ),
    );
    v.as_array().unwrap().clone()
}

impl Machine {
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOME".to_owned(), self.home.path().display().to_string()),
            ("USER".to_owned(), self.user.to_owned()),
            ("LOGNAME".to_owned(), self.user.to_owned()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }

    fn run(&self, args: &[&str]) -> Run {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.repo.deploy_env(args, &env)
    }

    fn deploy(&self, target: &str) -> Run {
        self.run(&["--target", target, "--yes"])
    }

    /// `deploy --target prod --yes`, stopped at `point` (going on once `resume` exists).
    fn paused(&self, point: &str, resume: Option<&Path>) -> Paused {
        Paused::start(
            self.repo.path(),
            &["--target", PROD, "--yes"],
            point,
            resume,
            &self.env(),
        )
    }

    /// Commit prod at `threads` and push it.
    fn push_threads(&self, world: &World, threads: u32) {
        self.push_toml(
            world.env_toml(PROD_ACCOUNT, threads),
            &format!("prod, threads {threads}"),
        );
    }

    /// Commit `toml` as prod's environment file and push it.
    fn push_toml(&self, toml: String, message: &str) {
        self.repo.write(&format!("environments/{PROD}.toml"), toml);
        self.repo.commit(message);
        self.repo.git(&["push", "-q", "origin", "main"]);
    }

    fn pull(&self) {
        self.repo
            .git(&["pull", "-q", "--ff-only", "origin", "main"]);
    }

    /// `deploy --target prod --yes` until it is not refused for the lock (exit 5) any more,
    /// each refusal naming `holder`; the first run that is not refused, and how many were.
    fn deploy_once_unlocked(&self, world: &World, holder: &str) -> (Run, usize) {
        let deadline = Instant::now() + Duration::from_secs(60 + world.lock_ttl);
        let mut refused = 0;
        loop {
            let run = self.deploy(PROD);
            if run.code != 5 {
                return (run, refused);
            }
            run.stderr_has(holder);
            refused += 1;
            assert!(
                Instant::now() < deadline,
                "still locked long after its lease (lock_ttl is {}s) lapsed:\n{}",
                world.lock_ttl,
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The records of prod's log as this machine reads it, oldest first; the log verifies.
    fn records(&self) -> Vec<Value> {
        self.run(&["log", "verify", "--target", PROD])
            .code(0)
            .stdout_has("chain intact");
        let run = self.run(&["log", "--target", PROD, "--format", "json"]);
        run.code(0);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let mut records = v["records"].as_array().unwrap().clone();
        records.sort_by_key(|r| r["seq"].as_u64().unwrap());
        records
    }
}

/// `(user, action, outcome)` of each record.
fn who_did_what(records: &[Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["operator"]["user"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn own(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// `#[test]`s `NAME::etcd` and `NAME::provider`: the scenario `NAME` on each shared store.
macro_rules! on_both_stores {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn etcd() {
                super::$scenario(super::Kind::Etcd);
            }

            #[test]
            fn provider() {
                super::$scenario(super::Kind::Provider);
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// 1. A fresh machine deploys, rolls back and logs what another deployed.

fn a_fresh_machine_continues_another_machines_history(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0).stderr_has("Adopted");
    assert_eq!(world.resources(), world.all_stored(4));
    let stamp = world.stamp().expect("the store holds the stamp");
    assert_eq!(stamp["environment"], PROD);
    assert_eq!(stamp["account"], PROD_ACCOUNT);

    // B: a fresh clone, a fresh HOME, nothing on disk of A's.
    let b = world.machine("bob", PROD);
    assert!(!b.repo.path().join(".envlock").exists());
    b.run(&["plan", "--target", PROD])
        .code(0)
        .stdout_has("generation 1 live")
        .stdout_has("Plan: 0 to add, 0 to change, 0 to remove.");
    b.run(&["status", "--target", PROD]).code(0);

    b.push_threads(&world, 8);
    b.deploy(PROD).code(0).stdout_has("~ r1");
    assert_eq!(world.resources(), world.all_stored(8));

    b.run(&["rollback", "--target", PROD, "--to", "1", "--yes"])
        .code(0);
    assert_eq!(world.resources(), world.all_stored(4));

    // One chain, read from either machine: A's adoption, B's apply and rollback.
    let records = b.records();
    assert_eq!(
        who_did_what(&records),
        own(&[
            ("alice", "adopt", "applied"),
            ("bob", "apply", "applied"),
            ("bob", "rollback", "applied"),
        ]),
        "{records:#?}"
    );
    b.run(&["log", "verify", "--target", PROD])
        .code(0)
        .stdout_has("3 records, chain intact");
    let logged: Vec<String> = world
        .state_keys()
        .into_iter()
        .filter(|k| k.starts_with("log/"))
        .collect();
    assert_eq!(
        logged,
        [
            "log/00000000000000000001",
            "log/00000000000000000002",
            "log/00000000000000000003"
        ],
        "one store item per record"
    );
    a.run(&["log", "--target", PROD])
        .code(0)
        .stdout_has("alice")
        .stdout_has("bob");
    assert_eq!(a.records(), records);
    // Nothing of envlock's on either machine: the store holds it all.
    for m in [&a, &b] {
        assert!(!m.repo.path().join(".envlock").exists());
        assert!(
            crate::harness::snapshot(m.home.path())
                .keys()
                .all(|k| k == "."),
            "HOME is untouched"
        );
    }
}

on_both_stores!(a_fresh_machine_continues_another_machines_history);

// ---------------------------------------------------------------------------------------------
// 2. One lock for every machine, renewed while held.

fn a_deployer_stopped_mid_apply_locks_out_another_machine(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let b = world.machine("bob", PROD);

    let resume = a.home.path().join("resume");
    let paused = a.paused(world.mid_apply(), Some(&resume));
    let reached = Instant::now();
    assert_eq!(world.resources(), world.half(4, 8));
    let holder = format!("locked by alice@{} (pid {}", this_host(), paused.pid());
    let before = world.everything_but_the_lock();
    b.deploy(PROD)
        .code(5)
        .stderr_has(&holder)
        .stderr_has("deploying `prod`");
    // Still held after twice its lease: A renews it while it runs.
    std::thread::sleep(
        (reached + Duration::from_secs(2 * world.lock_ttl))
            .saturating_duration_since(Instant::now()),
    );
    b.deploy(PROD).code(5).stderr_has(&holder);
    b.run(&["rollback", "--target", PROD, "--to", "1", "--yes"])
        .code(5)
        .stderr_has(&holder);
    assert_eq!(world.resources(), world.half(4, 8));
    assert_eq!(
        world.everything_but_the_lock(),
        before,
        "a refused run writes nothing"
    );

    // A goes on and finishes: its fenced writes still hold the lock.
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(world.resources(), world.all_stored(8));
    let records = b.records();
    assert_eq!(
        who_did_what(&records),
        own(&[("alice", "adopt", "applied"), ("alice", "apply", "applied")]),
        "{records:#?}"
    );
    // The lock was released: B is not refused any more.
    b.deploy(PROD).code(0).stderr_has("No changes");
}

on_both_stores!(a_deployer_stopped_mid_apply_locks_out_another_machine);

// ---------------------------------------------------------------------------------------------
// 3. A deployer killed mid-apply is resolved by another machine, from the shared journal.

fn a_deployer_killed_mid_apply_is_undone_by_another_machine(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    // B clones now: it is at the live commit (threads 4), A goes on to threads 8.
    let b = world.machine("bob", PROD);
    a.push_threads(&world, 8);
    let paused = a.paused(world.mid_apply(), None);
    let pid = paused.pid();
    paused.kill9();
    assert_eq!(world.resources(), world.half(4, 8));
    let keys = world.state_keys();
    assert!(
        keys.contains(&"blob/exec-journal.json".to_owned()),
        "{keys:?}"
    );
    assert!(keys.contains(&"journal".to_owned()), "{keys:?}");

    // B waits out A's lease, then undoes A's two writes before anything else (README: "the next
    // run, from any machine, undoes what an interrupted deployment had written and records
    // it"); its own commit then has nothing to change.
    let holder = format!("alice@{} (pid {pid}", this_host());
    let (run, _) = b.deploy_once_unlocked(&world, &holder);
    run.code(0)
        .stderr_has("Found an interrupted")
        .stderr_has("had changed 2 of 5 resources (`r1`, `r2`); undid them in reverse order")
        .stderr_has("No changes");
    assert_eq!(world.resources(), world.all_stored(4));
    let keys = world.state_keys();
    assert!(
        !keys.contains(&"blob/exec-journal.json".to_owned()),
        "{keys:?}"
    );
    assert!(!keys.contains(&"journal".to_owned()), "{keys:?}");

    // No record lost: A's adoption, the interrupted run as B resolved it, B's verification.
    let records = b.records();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[0]["operator"]["user"], "alice");
    let reason = records[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("interrupted run of {holder}"))
            && reason.contains("resolved by the next run"),
        "{records:#?}"
    );
    assert_eq!(records[2]["operator"]["user"], "bob");
    assert_eq!(records[2]["outcome"], "unchanged");

    // And A's commit deploys from B once pulled.
    b.pull();
    b.deploy(PROD).code(0);
    assert_eq!(world.resources(), world.all_stored(8));
    assert_eq!(b.records().len(), 4);
}

on_both_stores!(a_deployer_killed_mid_apply_is_undone_by_another_machine);

// 3b. A deployer killed after its switch is recorded exactly once, by another machine.

/// A killed after its new generation went live but before its log record (`before-record`), or
/// after its record but before clearing its journal (`before-clear-journal`): B, from its own
/// clone, finds the journal in the store and records A's deployment exactly once.
fn a_deployer_killed_after_its_switch_is_recorded_once_by_another_machine(kind: Kind, point: &str) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let paused = a.paused(point, None);
    let pid = paused.pid();
    paused.kill9();
    assert_eq!(world.resources(), world.all_stored(8));
    assert!(world.state_keys().contains(&"journal".to_owned()));

    let b = world.machine("bob", PROD);
    let holder = format!("alice@{} (pid {pid}", this_host());
    let (run, _) = b.deploy_once_unlocked(&world, &holder);
    run.code(0)
        .stderr_has("Found an interrupted")
        .stderr_has("No changes");
    assert_eq!(world.resources(), world.all_stored(8));
    assert!(!world.state_keys().contains(&"journal".to_owned()));
    let records = b.records();
    let got = who_did_what(&records);
    if point == "before-record" {
        run.stderr_has("generation 2 was left live and unverified");
        // A's apply, recorded by B for A; then B's verification.
        assert_eq!(
            got,
            own(&[
                ("alice", "adopt", "applied"),
                ("bob", "apply", "applied"),
                ("bob", "verify", "unchanged"),
            ]),
            "{records:#?}"
        );
        let reason = records[1]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("interrupted run of {holder}")),
            "{records:#?}"
        );
    } else {
        run.stderr_has("it had finished and recorded its outcome (log record 2)");
        assert_eq!(
            got,
            own(&[
                ("alice", "adopt", "applied"),
                ("alice", "apply", "applied"),
                ("bob", "verify", "unchanged"),
            ]),
            "{records:#?}"
        );
    }
    assert_eq!(records[1]["generation"], 2, "{records:#?}");
}

#[test]
fn etcd_a_deployer_killed_before_its_record_is_recorded_by_another_machine() {
    a_deployer_killed_after_its_switch_is_recorded_once_by_another_machine(
        Kind::Etcd,
        "before-record",
    );
}

#[test]
fn provider_a_deployer_killed_before_its_record_is_recorded_by_another_machine() {
    a_deployer_killed_after_its_switch_is_recorded_once_by_another_machine(
        Kind::Provider,
        "before-record",
    );
}

#[test]
fn etcd_a_deployer_killed_after_its_record_is_not_recorded_twice() {
    a_deployer_killed_after_its_switch_is_recorded_once_by_another_machine(
        Kind::Etcd,
        "before-clear-journal",
    );
}

#[test]
fn provider_a_deployer_killed_after_its_record_is_not_recorded_twice() {
    a_deployer_killed_after_its_switch_is_recorded_once_by_another_machine(
        Kind::Provider,
        "before-clear-journal",
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A holder that died stops blocking once its lease lapses.

fn a_killed_holder_blocks_only_until_its_lease_lapses(kind: Kind) {
    let world = World::with(kind, LONG_LOCK_TTL, false);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let b = world.machine("bob", PROD);
    let resume = a.home.path().join("resume");
    let paused = a.paused("after-lock", Some(&resume));
    let pid = paused.pid();
    let holder = format!("locked by alice@{} (pid {pid}", this_host());
    // While A lives, B is refused.
    b.deploy(PROD).code(5).stderr_has(&holder);
    paused.kill9();
    // Right after A died, its lease still runs.
    let (run, refused) = b.deploy_once_unlocked(&world, &holder);
    assert!(refused >= 1, "B was never refused after A died");
    run.code(0).stdout_has("~ r1");
    assert_eq!(world.resources(), world.all_stored(8));
    let records = b.records();
    assert_eq!(
        who_did_what(&records),
        own(&[("alice", "adopt", "applied"), ("bob", "apply", "applied")]),
        "{records:#?}"
    );
}

on_both_stores!(a_killed_holder_blocks_only_until_its_lease_lapses);

// ---------------------------------------------------------------------------------------------
// 5. Another account's credentials are refused before anything is written.

fn another_accounts_credentials_are_refused_before_any_write(kind: Kind) {
    let world = World::with(kind, LOCK_TTL, true);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    // B's credentials reach validation's account.
    let b = world.machine("bob", VALIDATION);
    let before = world.everything();
    for args in [
        &["--target", PROD, "--yes"][..],
        &["plan", "--target", PROD],
        &["rollback", "--target", PROD, "--to", "1", "--yes"],
    ] {
        b.run(args)
            .code(3)
            .stderr_has(&format!(
                "the target's credentials reach account {VALIDATION_ACCOUNT}, not `prod` (account {PROD_ACCOUNT})"
            ));
        assert_eq!(world.everything(), before, "{args:?} wrote something");
    }
    assert_eq!(world.resources(), world.all_stored(4));
}

on_both_stores!(another_accounts_credentials_are_refused_before_any_write);

// ---------------------------------------------------------------------------------------------
// 6. Another environment's configuration pointed at prod's state meets prod's stamp.

fn another_environment_pointed_at_prods_state_meets_its_stamp(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    // Another team's configuration repository (in one repository `deploy check` already
    // refuses two environments with one state: tests/cli/migrate.rs): its `validation`
    // environment's state names prod's store.
    let other = Repo::bare();
    let dev = Repo::clone_of(&other);
    dev.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
    dev.write(".gitignore", "account\n");
    // etcd: validation's own account and resources, prod's state prefix. provider: the scope
    // of the state is the provider's options, so validation names prod's path in prod's
    // account (one account, two environments).
    let (account, credentials) = match kind {
        Kind::Etcd => (VALIDATION_ACCOUNT, VALIDATION),
        Kind::Provider => (PROD_ACCOUNT, PROD),
    };
    dev.write(
        &format!("environments/{VALIDATION}.toml"),
        world.env_toml(account, 8),
    );
    dev.commit("validation");
    dev.git(&["push", "-q", "origin", "main"]);
    let c = world.machine_of(&other, "carol", credentials);
    c.run(&["check"]).code(0);

    let before = world.everything();
    for args in [
        &["--target", VALIDATION, "--yes"][..],
        &["adopt", "--target", VALIDATION, "--yes"],
    ] {
        c.run(args)
            .code(3)
            .stderr_has(&format!(
                "belongs to environment `prod` (account {PROD_ACCOUNT}), not to `validation` (account {account})"
            ))
            .stderr_has("nothing was read or written");
        assert_eq!(world.everything(), before, "{args:?} wrote something");
    }
    assert_eq!(world.stamp().unwrap()["environment"], PROD);
    assert_eq!(world.resources(), world.all_stored(4));
}

on_both_stores!(another_environment_pointed_at_prods_state_meets_its_stamp);

// ---------------------------------------------------------------------------------------------
// 7. A deployer frozen past its lease (a laptop gone to sleep) writes nothing more: README, "a
// deployer whose lease lapsed while someone else took the lock writes nothing more", and "a
// writer that changed a resource meanwhile gets a conflict, never an overwrite".

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A stops mid-apply (r1 and r2 written) and is frozen (SIGSTOP: its lease is no longer
/// renewed); B waits out the lease, resolves A's half-done apply and deploys `b_threads`
/// (B's own commit, or A's when 8); then A wakes up. Whatever A does then, it must not touch
/// what B deployed, nor the store.
fn a_deployer_frozen_past_its_lease_writes_nothing_more(kind: Kind, b_threads: u32) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let resume = a.home.path().join("resume");
    let paused = a.paused(world.mid_apply(), Some(&resume));
    let pid = paused.pid();
    signal(pid, "-STOP");
    assert_eq!(world.resources(), world.half(4, 8));

    let b = world.machine("bob", PROD);
    if b_threads != 8 {
        b.push_threads(&world, b_threads);
    }
    let holder = format!("alice@{} (pid {pid}", this_host());
    let (run, _) = b.deploy_once_unlocked(&world, &holder);
    run.code(0)
        .stderr_has("had changed 2 of 5 resources (`r1`, `r2`); undid them in reverse order")
        .stderr_has("Deployed: `prod`");
    assert_eq!(world.resources(), world.all_stored(b_threads));
    let deployed_by_b = world.everything();

    std::fs::write(&resume, "").unwrap();
    signal(pid, "-CONT");
    let (code, stderr) = paused.finish();
    // Exit 1, not 3: it had changed resources before it froze, and leaves them to the journal.
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the deployment lock on ") && stderr.contains(" was lost ("),
        "{stderr}"
    );
    assert!(stderr.contains("which it did not undo"), "{stderr}");
    assert_eq!(
        world.resources(),
        world.all_stored(b_threads),
        "A, woken after its lease, changed what B deployed:\n{stderr}"
    );
    assert_eq!(world.everything(), deployed_by_b, "{stderr}");
    let records = b.records();
    assert_eq!(
        who_did_what(&records),
        own(&[
            ("alice", "adopt", "applied"),
            // A's interrupted apply, as B resolved and recorded it.
            ("bob", "apply", "failed"),
            ("bob", "apply", "applied"),
        ]),
        "{records:#?}"
    );
    b.run(&["status", "--target", PROD])
        .code(0)
        .stdout_has("generation 2");
}

#[test]
fn etcd_a_deployer_frozen_past_its_lease_writes_nothing_over_a_newer_deployment() {
    a_deployer_frozen_past_its_lease_writes_nothing_more(Kind::Etcd, 16);
}

#[test]
fn provider_a_deployer_frozen_past_its_lease_writes_nothing_over_a_newer_deployment() {
    a_deployer_frozen_past_its_lease_writes_nothing_more(Kind::Provider, 16);
}

#[test]
fn etcd_a_deployer_frozen_past_its_lease_does_not_undo_the_same_commit_deployed_by_another() {
    a_deployer_frozen_past_its_lease_writes_nothing_more(Kind::Etcd, 8);
}

#[test]
fn provider_a_deployer_frozen_past_its_lease_does_not_undo_the_same_commit_deployed_by_another() {
    a_deployer_frozen_past_its_lease_writes_nothing_more(Kind::Provider, 8);
}

// ---------------------------------------------------------------------------------------------
// 8. Secrets: the key that decides whether a secret changed is in the store, so a fresh machine
// sees A's secret as unchanged, and no output shows a value.

fn a_fresh_machine_compares_secrets_with_the_shared_key(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    let with_secret = format!(
        "{}\n[settings.db]\npassword = {{ secret = \"env:DB_PASSWORD\" }}\n",
        world.env_toml(PROD_ACCOUNT, 4)
    );
    a.push_toml(with_secret, "prod with a secret");
    let first = "Hunter2-first-SECRET";
    let rotated = "Rotated-second-SECRET";
    let mut seen = String::new();
    let mut run = |m: &Machine, args: &[&str], password: &str| -> Run {
        let env = m.env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("DB_PASSWORD", password));
        let r = m.repo.deploy_env(args, &env);
        seen.push_str(&r.stdout);
        seen.push_str(&r.stderr);
        r
    };
    run(&a, &["--target", PROD, "--yes"], first).code(0);
    assert!(world.state_keys().contains(&"secret-key".to_owned()));

    let b = world.machine("bob", PROD);
    run(&b, &["plan", "--target", PROD], first)
        .code(0)
        .stdout_has("Plan: 0 to add, 0 to change, 0 to remove.");
    run(&b, &["--target", PROD, "--yes"], first)
        .code(0)
        .stderr_has("No changes");
    run(&b, &["plan", "--target", PROD], rotated)
        .code(0)
        .stdout_has("(secret, changed)");
    run(&b, &["--target", PROD, "--yes"], rotated).code(0);
    run(&b, &["status", "--target", PROD], rotated).code(0);
    run(&b, &["log", "--target", PROD, "--format", "json"], rotated).code(0);
    // A, with the old value, sees it changed: one key for both machines.
    a.pull();
    run(&a, &["plan", "--target", PROD], first)
        .code(0)
        .stdout_has("(secret, changed)");
    assert!(!seen.contains(first) && !seen.contains(rotated), "{seen}");
    let db = world.resources().remove("db").unwrap();
    assert!(db.contains(rotated), "{db}");
    assert_eq!(b.records().len(), 3);
}

on_both_stores!(a_fresh_machine_compares_secrets_with_the_shared_key);

// ---------------------------------------------------------------------------------------------
// 9. A plan saved on one machine is stale once another machine deployed (README: "if he made a
// plan before her deployment and applies it after (`apply --plan`), it is refused as stale").

fn a_plan_saved_before_another_machines_deployment_is_stale(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let b = world.machine("bob", PROD);
    let plan = b.home.path().join("plan.json");
    let plan = plan.to_str().unwrap();
    b.run(&["plan", "--target", PROD, "--out", plan])
        .code(0)
        .stdout_has("~ r1");
    a.deploy(PROD).code(0);
    let before = world.everything();
    b.run(&["apply", "--target", PROD, "--plan", plan, "--yes"])
        .code(3)
        .stderr_has("the saved plan is stale");
    // Nothing written but the refusal's own log record.
    let mut after = world.everything();
    let refusal: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(refusal.len(), 1, "{refusal:?}");
    assert!(
        refusal[0].ends_with("log/00000000000000000003"),
        "{refusal:?}"
    );
    after.remove(&refusal[0]);
    // ... and the log's checkpoint, written with every record.
    let checkpoint = |m: &mut BTreeMap<String, String>| {
        m.retain(|k, _| !k.ends_with("log-checkpoint"));
    };
    let mut before = before;
    checkpoint(&mut before);
    checkpoint(&mut after);
    assert!(
        after == before,
        "the refused apply wrote more than its log record"
    );
    assert_eq!(world.resources(), world.all_stored(8));
    let records = b.records();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[2]["operator"]["user"], "bob");
    assert_eq!(records[2]["outcome"], "refused");
}

on_both_stores!(a_plan_saved_before_another_machines_deployment_is_stale);

// ---------------------------------------------------------------------------------------------
// 10. A rollback killed half-way is resolved by another machine, from the shared journal.

fn a_rollback_killed_half_way_is_resolved_by_another_machine(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    a.deploy(PROD).code(0);
    let b = world.machine("bob", PROD);
    let args = ["rollback", "--target", PROD, "--to", "1", "--yes"];
    let env = a.env();
    let paused = Paused::start(a.repo.path(), &args, world.mid_apply(), None, &env);
    let pid = paused.pid();
    paused.kill9();
    assert_eq!(world.resources(), world.half(8, 4));

    let holder = format!("alice@{} (pid {pid}", this_host());
    let (run, _) = b.deploy_once_unlocked(&world, &holder);
    // Its two writes undone: generation 2 (threads 8) is live and whole again.
    run.code(0)
        .stderr_has("Found an interrupted rollback")
        .stderr_has("its activate had changed 2 of 5 resources (`r1`, `r2`); undid them")
        .stderr_has("No changes: generation 2");
    assert_eq!(world.resources(), world.all_stored(8));
    let records = b.records();
    assert_eq!(
        who_did_what(&records),
        own(&[
            ("alice", "adopt", "applied"),
            ("alice", "apply", "applied"),
            ("bob", "rollback", "failed"),
            ("bob", "verify", "unchanged"),
        ]),
        "{records:#?}"
    );
    let reason = records[2]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("interrupted run of {holder}")),
        "{records:#?}"
    );
    // The rollback, run again from B, goes through.
    b.run(&args).code(0);
    assert_eq!(world.resources(), world.all_stored(4));
}

on_both_stores!(a_rollback_killed_half_way_is_resolved_by_another_machine);

// ---------------------------------------------------------------------------------------------
// 11. The log only grows: its last record removed from the store is damage (README, "A log only
// grows, so one that is shorter than the checkpoint says ... is damage too", as on `dir` and
// `etcd` targets).

impl World {
    /// Delete one item of prod's state behind envlock's back.
    fn delete_state_item(&self, key: &str) {
        match self.kind {
            Kind::Etcd => {
                let toml = self.etcd().endpoints_toml();
                let endpoints = toml
                    .trim_matches(|c| c == '[' || c == ']')
                    .replace(['"', ' '], "");
                let out = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoints}"))
                    .args(["del", &format!("{STATE_PREFIX}{key}")])
                    .output()
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
            }
            Kind::Provider => {
                dynamodb(
                    self.moto(PROD),
                    &format!(
                        "ddb.delete_item(TableName='{TABLE}', Key={{'pk': {{'S': '{SSM_PATH}'}}, \
                         'sk': {{'S': '{key}'}}}})\nprint('null')"
                    ),
                );
            }
        }
    }
}

fn the_last_log_record_removed_from_the_store_is_damage(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    a.deploy(PROD).code(0);
    let b = world.machine("bob", PROD);
    b.push_threads(&world, 16);
    b.deploy(PROD).code(0);
    assert_eq!(b.records().len(), 3);
    // B's record (of generation 3, live) disappears; what is left verifies as a chain of two.
    world.delete_state_item("log/00000000000000000003");
    a.run(&["log", "verify", "--target", PROD])
        .code(1)
        .stdout_has("BROKEN");
    let before = world.everything();
    a.pull();
    a.push_threads(&world, 32);
    a.deploy(PROD)
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it");
    assert_eq!(world.everything(), before);
}

on_both_stores!(the_last_log_record_removed_from_the_store_is_damage);

// ---------------------------------------------------------------------------------------------
// 12. The root of the bug in 7, without any lease: a conflict answered for a step is taken for
// that step having landed when the resource holds the value the step meant to write, so the
// undo overwrites another writer's change (README: "A writer that changed a resource meanwhile
// gets a `conflict`, never an overwrite").

impl World {
    /// Another writer (not envlock) sets prod's resource `name` to `threads`.
    fn write_by_hand(&self, name: &str, threads: u32) {
        match self.kind {
            Kind::Etcd => {
                std::fs::write(
                    self.scope(PROD).join(format!("{name}.json")),
                    self.stored(threads),
                )
                .unwrap();
            }
            Kind::Provider => {
                self.moto(PROD).put_parameter(
                    &format!("{SSM_PATH}{name}"),
                    &self.stored(threads),
                    false,
                );
            }
        }
    }
}

fn another_writers_change_equal_to_the_deployments_is_never_undone(kind: Kind) {
    let world = World::new(kind);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    let resume = a.home.path().join("resume");
    let paused = a.paused(world.mid_apply(), Some(&resume));
    // Between A's second and third write, someone else sets r3 to the value A is about to write.
    world.write_by_hand("r3", 8);
    let theirs = world
        .everything()
        .into_iter()
        .filter(|(k, _)| k.contains("r3"))
        .collect::<BTreeMap<_, _>>();
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("`r3`"), "{stderr}");
    // r1 and r2 undone; r3 is theirs, untouched (same value and version).
    let mut want = world.all_stored(4);
    want.insert("r3".into(), world.stored(8));
    assert_eq!(world.resources(), want, "{stderr}");
    let now = world
        .everything()
        .into_iter()
        .filter(|(k, _)| k.contains("r3"))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(now, theirs, "{stderr}");
}

on_both_stores!(another_writers_change_equal_to_the_deployments_is_never_undone);

// ---------------------------------------------------------------------------------------------
// 13. The lease is renewed while one provider call runs longer than it (README: "while it is
// held, a thread renews it every third of `lock_ttl`"): with the state kept by the provider,
// the renewal goes through the same provider session as the resource writes.

#[test]
fn provider_a_provider_call_longer_than_the_lease_keeps_the_lock() {
    let world = World::new(Kind::Provider);
    let a = world.machine("alice", PROD);
    a.deploy(PROD).code(0);
    a.push_threads(&world, 8);
    // Each batch takes 2.5 lock_ttl; nobody else deploys.
    let slow = format!("{}", LOCK_TTL as f64 * 2.5);
    let env = a.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("SLOW_APPLY", &slow));
    let run = a.repo.deploy_env(&["--target", PROD, "--yes"], &env);
    run.code(0);
    assert_eq!(world.resources(), world.all_stored(8));
    let records = a.records();
    assert_eq!(
        who_did_what(&records),
        own(&[("alice", "adopt", "applied"), ("alice", "apply", "applied")]),
        "{records:#?}"
    );
}
