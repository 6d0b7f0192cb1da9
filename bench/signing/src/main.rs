//! envlock-bench-signing KEY_FILE APPENDS RECORDS
//!
//! 1. APPENDS records appended to a stamped `dir` target's log through `log::append`
//!    (write + fdatasync each, as a deployment does), unsigned, then signed with KEY_FILE (an
//!    unencrypted ssh-ed25519 key): the cost signing adds to one append.
//! 2. A signed log of RECORDS records (made in memory with `log::seal_signed`), verified as
//!    `deploy log verify` does (`log::verify`, then `log::verify_signatures`), against one bare
//!    SSHSIG verification (`PublicKey::verify`: SHA-512 of the message, one Ed25519 verify),
//!    measured on one core in the same run.
//!
//! Prints one JSON object.

use std::sync::Arc;
use std::time::Instant;

use envlock::log::{self, Action, Changes, Entry, Operator, Outcome, Policy, Record};
use envlock::signing::{self, AllowedSigners};
use envlock::target::{dir::DirTarget, Stamp, Target};

const ENV: &str = "bench";

fn entry(signing: Option<Arc<signing::Key>>, i: usize) -> Entry {
    Entry {
        environment: ENV.into(),
        account: "543210987654".into(),
        target: "dir /srv/bench".into(),
        action: Action::Apply,
        outcome: Outcome::Applied,
        commit: format!("{:040x}", i / 10 + 1),
        config_sha256: format!("{:064x}", i),
        operator: Operator {
            user: "ana".into(),
            host: "laptop-ana".into(),
            ci: Default::default(),
        },
        changes: Changes {
            add: 0,
            change: 1,
            remove: 0,
        },
        generation: Some(i as u64 + 1),
        previous_generation: Some(i as u64),
        reason: None,
        plan_sha256: None,
        notify: None,
        signing,
        resources: Some(log::Resources {
            add: vec![],
            change: vec!["worker".into()],
            remove: vec![],
        }),
    }
}

fn appends(dir: &std::path::Path, name: &str, n: usize, key: Option<Arc<signing::Key>>) -> f64 {
    let target = DirTarget::new(dir.join(name));
    target
        .write_stamp(&Stamp {
            environment: ENV.into(),
            account: "543210987654".into(),
            created: "2026-01-01T00:00:00Z".into(),
            version: envlock::target::STAMP_VERSION,
        })
        .expect("stamp");
    let start = Instant::now();
    for i in 0..n {
        log::append(&target, entry(key.clone(), i)).expect("append");
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn record(e: Entry, seq: u64, prev: String) -> Record {
    Record {
        seq,
        time: "2026-01-01T00:00:00.000Z".into(),
        environment: e.environment,
        account: e.account,
        target: e.target,
        action: e.action,
        outcome: e.outcome,
        commit: e.commit,
        config_sha256: e.config_sha256,
        operator: e.operator,
        changes: e.changes,
        generation: e.generation,
        previous_generation: e.previous_generation,
        reason: e.reason,
        plan_sha256: e.plan_sha256,
        notify: None,
        sealed: None,
        resources: e.resources,
        signers_commit: None,
        prev,
        hash: String::new(),
        signer: None,
        signature: None,
    }
}

/// CPU seconds used by this process so far, every thread (`/proc/self/stat` utime + stime).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat(5), counted from after the command name (field 3 is f[0]).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (key_file, n_appends, n_records) = match &args[..] {
        [_, k, a, r] => (k.clone(), a.parse().unwrap(), r.parse().unwrap()),
        _ => panic!("usage: envlock-bench-signing KEY_FILE APPENDS RECORDS"),
    };
    let public = std::fs::read_to_string(format!("{key_file}.pub")).expect("KEY_FILE.pub");
    let allowed = Arc::new(
        AllowedSigners::parse(&format!(
            "bench namespaces=\"envlock-log@{ENV}\" {}",
            public.trim()
        ))
        .expect("allowed_signers"),
    );
    std::env::set_var(signing::KEY_VARIABLE, &key_file);
    let key = Arc::new(signing::find_key(&allowed, ENV).expect("key"));

    let tmp = tempfile::tempdir().expect("tempdir");
    let unsigned_append = appends(tmp.path(), "unsigned", n_appends, None);
    let signed_append = appends(tmp.path(), "signed", n_appends, Some(Arc::clone(&key)));

    // A signed log of n_records, in memory.
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut prev = log::GENESIS.to_owned();
    for i in 0..n_records {
        let r = record(entry(None, i), i as u64 + 1, prev);
        let (line, r) = log::seal_signed(r, Some(&key)).expect("sign");
        bytes.extend(line);
        prev = r.hash;
    }
    let sign_only = start.elapsed().as_secs_f64() / n_records as f64;

    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let v = log::verify(&bytes);
    let chain = start.elapsed().as_secs_f64();
    let mut policy = |_: &str| Policy::Present(Arc::clone(&allowed));
    let sigs = log::verify_signatures(&bytes, &v, ENV, &mut policy);
    let total = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    assert!(v.problem.is_none() && sigs.problem.is_none());
    assert_eq!(sigs.signed, n_records);

    // One bare SSHSIG verification, on one core, of the last record's signature.
    let last: Record = serde_json::from_slice(
        bytes[..bytes.len() - 1]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap(),
    )
    .unwrap();
    let sig = ssh_key::SshSig::from_pem(last.signature.as_ref().unwrap()).unwrap();
    let pk = ssh_key::PublicKey::new(sig.public_key().clone(), "");
    let ns = signing::namespace(ENV);
    let reps = 2000;
    let start = Instant::now();
    for _ in 0..reps {
        pk.verify(&ns, last.hash.as_bytes(), &sig).unwrap();
    }
    let bare = start.elapsed().as_secs_f64() / reps as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_record = total / n_records as f64;
    println!(
        "{{\"appends\":{n_appends},\"unsigned_append_s\":{unsigned_append:.6},\"signed_append_s\":{signed_append:.6},\"signing_adds_s\":{:.6},\"signed_over_unsigned\":{:.3},\"sign_only_s\":{sign_only:.6},\"records\":{n_records},\"log_bytes\":{},\"cores\":{cores},\"verify_chain_s\":{chain:.3},\"verify_total_s\":{total:.3},\"verify_per_record_s\":{per_record:.9},\"verify_cpu_s\":{cpu:.2},\"verify_cpu_per_record_s\":{:.9},\"bare_sshsig_verify_s\":{bare:.9},\"per_record_over_bare\":{:.3},\"cpu_per_record_over_bare\":{:.3}}}",
        signed_append - unsigned_append,
        signed_append / unsigned_append,
        bytes.len(),
        cpu / n_records as f64,
        per_record / bare,
        cpu / n_records as f64 / bare,
    );
}
