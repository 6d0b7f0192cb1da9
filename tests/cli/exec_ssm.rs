//! `deploy` to AWS SSM Parameter Store through `providers/aws-ssm/provider`, against moto's
//! implementation of the AWS API on a loopback port (`moto_server`; `MOTO_ACCOUNT_ID` is the
//! account STS answers, so two servers stand for two accounts).
//!
//! Every assertion is on what the parameter store holds (value, version, type), read back with
//! boto3: all five parameters old or all five new, never a mix, whatever fails.

use std::collections::BTreeMap;

use crate::harness::{Paused, Repo, Run};
use crate::moto::{Moto, REGION, provider_path};

const ENV: &str = "cloud";
const ACCOUNT: &str = "123456789012";
const PATH: &str = "/asr/cloud/";
const NAMES: [&str; 5] = ["r1", "r2", "r3", "r4", "r5"];

struct Ssm {
    repo: Repo,
    moto: Moto,
    /// Extra `[target]` lines (`protocol = 2`).
    target: String,
}

impl Ssm {
    /// A repository whose `cloud` environment (account [`ACCOUNT`]) deploys five resources with
    /// `threads = <threads>` to `moto`.
    fn new(moto: Moto, threads: u32) -> Ssm {
        Ssm::with_target(moto, threads, "")
    }

    /// [`Ssm::new`] with `target` added to `[target]`.
    fn with_target(moto: Moto, threads: u32, target: &str) -> Ssm {
        let repo = Repo::empty();
        repo.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
        repo.write(".gitignore", "state/\nscratch/\n");
        std::fs::create_dir_all(repo.path().join("scratch")).unwrap();
        let target = target.to_owned();
        let ssm = Ssm { repo, moto, target };
        ssm.set(threads, "");
        ssm
    }

    fn set(&self, threads: u32, extra_settings: &str) {
        let mut s = format!(
            "[environment]\naccount = \"{ACCOUNT}\"\nschema = \"svc\"\n\n\
             [target]\nkind = \"exec\"\ncommand = [\"{}\"]\nstate = \"state\"\n{}\n\
             [target.options]\npath = \"{PATH}\"\nregion = \"{REGION}\"\n",
            provider_path().display(),
            self.target
        );
        for name in NAMES {
            s.push_str(&format!(
                "\n[settings.{name}]\nengine = \"conformer-ctc\"\nthreads = {threads}\n"
            ));
        }
        s.push_str(extra_settings);
        self.repo.write(&format!("environments/{ENV}.toml"), s);
        self.repo.commit(&format!("threads {threads}"));
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.repo.deploy_env(args, &env)
    }

    fn deploy(&self) -> Run {
        self.run(&["--target", ENV, "--yes"], &[])
    }

    fn paused(&self, point: &str, resume: Option<&std::path::Path>) -> Paused {
        Paused::start(
            self.repo.path(),
            &["--target", ENV, "--yes"],
            point,
            resume,
            &self.env(&[]),
        )
    }

    /// resource -> (value, version, type) of every parameter under [`PATH`].
    fn params(&self) -> BTreeMap<String, (String, i64, String)> {
        self.moto
            .parameters_under(PATH)
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(PATH).unwrap().to_owned(), v))
            .collect()
    }

    /// resource -> value only.
    fn values(&self) -> BTreeMap<String, String> {
        self.params().into_iter().map(|(k, v)| (k, v.0)).collect()
    }

    fn outcomes(&self) -> Vec<String> {
        crate::harness::log_outcomes(&self.repo, ENV)
            .into_iter()
            .map(|(o, _)| o)
            .collect()
    }
}

/// The compact JSON the provider stores for `{engine, threads}`.
fn stored(threads: u32) -> String {
    format!(r#"{{"engine":"conformer-ctc","threads":{threads}}}"#)
}

fn all_stored(threads: u32) -> BTreeMap<String, String> {
    NAMES
        .iter()
        .map(|n| (n.to_string(), stored(threads)))
        .collect()
}

#[test]
fn deploys_to_the_right_account_one_parameter_per_resource() {
    let ssm = Ssm::new(Moto::start(ACCOUNT), 4);
    let run = ssm.deploy();
    run.code(0)
        .stderr_has("Deployed: `cloud` (account 123456789012)");
    let params = ssm.params();
    assert_eq!(params.len(), 5, "{params:?}");
    for (name, (value, version, kind)) in &params {
        assert_eq!(value, &stored(4), "{name}");
        assert_eq!(*version, 1, "{name}");
        assert_eq!(kind, "String", "{name}");
    }
    // Nothing to change: no parameter is written again.
    ssm.deploy().code(0).stderr_has("No changes");
    assert_eq!(ssm.params(), params);
    // One change writes one parameter.
    ssm.set(4, "\n[settings.r6]\nthreads = 1\n");
    ssm.deploy().code(0);
    let after = ssm.params();
    assert_eq!(after["r6"].0, r#"{"threads":1}"#);
    assert_eq!(after["r1"], params["r1"]);
    // A hand edit shows in status.
    ssm.moto
        .put_parameter(&format!("{PATH}r2"), r#"{"threads":99}"#, false);
    let status = ssm.run(&["status", "--target", ENV], &[]);
    status.code(0).stdout_has("edited outside envlock: `r2`");
    assert_eq!(ssm.outcomes(), ["applied", "unchanged", "applied"]);
}

#[test]
fn credentials_that_reach_another_account_are_refused_before_any_write() {
    let right = Moto::start(ACCOUNT);
    let other = Moto::start("210987654321");
    // The environment says ACCOUNT; the credentials (the endpoint) reach the other account.
    let ssm = Ssm::new(other, 4);
    let run = ssm.deploy();
    run.code(3)
        .stderr_has("the target's credentials reach account 210987654321, not `cloud` (account 123456789012)")
        .stderr_has("credentials: arn:aws:");
    assert!(ssm.params().is_empty());
    assert!(right.parameters_under(PATH).is_empty());
    assert!(!ssm.repo.path().join("state").exists());
    ssm.run(&["plan", "--target", ENV], &[]).code(3);
}

#[test]
fn a_failure_on_the_third_of_five_parameters_is_rolled_back() {
    let ssm = Ssm::new(Moto::start(ACCOUNT), 4);
    ssm.deploy().code(0);
    // r3 cannot take another version: SSM refuses the third put for real.
    ssm.moto.exhaust_versions(&format!("{PATH}r3"));
    ssm.set(8, "");
    let run = ssm.deploy();
    run.code(4)
        .stderr_has("operation `apply` of `r3`")
        .stderr_has("ParameterMaxVersionLimitExceeded")
        .stderr_has("the 2 changes already made were undone in reverse order");
    assert_eq!(ssm.values(), all_stored(4));
    // r1 and r2 were written and put back: version 3, old value.
    let params = ssm.params();
    assert_eq!(params["r1"].1, 3);
    assert_eq!(params["r2"].1, 3);
    assert_eq!(params["r4"].1, 1);
    assert_eq!(ssm.outcomes(), ["applied", "failed"]);
}

#[test]
fn a_deploy_killed_mid_apply_is_rolled_back_by_the_next_run() {
    let ssm = Ssm::new(Moto::start(ACCOUNT), 4);
    ssm.deploy().code(0);
    ssm.set(8, "");
    ssm.paused("exec-before-step-3", None).kill9();
    let mut half = all_stored(4);
    half.insert("r1".into(), stored(8));
    half.insert("r2".into(), stored(8));
    assert_eq!(ssm.values(), half);

    // The next run undoes r2 then r1 before anything else; it is held at its own first write
    // so that the store can be seen rolled back, then goes on.
    let resume = ssm.repo.path().join("scratch/resume");
    let paused = ssm.paused("exec-before-step-1", Some(&resume));
    assert_eq!(ssm.values(), all_stored(4));
    assert!(
        paused
            .stderr()
            .contains("had changed 2 of 5 resources (`r1`, `r2`); undid them in reverse order"),
        "{}",
        paused.stderr()
    );
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ssm.values(), all_stored(8));
    assert_eq!(ssm.outcomes().len(), 3);
}

#[test]
fn a_concurrent_put_parameter_makes_the_deploy_stale() {
    let ssm = Ssm::new(Moto::start(ACCOUNT), 4);
    ssm.deploy().code(0);
    ssm.set(8, "");
    let resume = ssm.repo.path().join("scratch/resume");
    let paused = ssm.paused("after-confirm", Some(&resume));
    let theirs = r#"{"engine":"theirs","threads":77}"#;
    ssm.moto.put_parameter(&format!("{PATH}r4"), theirs, false);
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("`r4` was changed (version 1 -> 2) by someone else"),
        "{stderr}"
    );
    let mut want = all_stored(4);
    want.insert("r4".into(), theirs.into());
    assert_eq!(ssm.values(), want);
    assert_eq!(ssm.outcomes(), ["applied", "refused"]);
}

#[test]
fn secrets_are_secure_strings_and_never_printed() {
    let ssm = Ssm::new(Moto::start(ACCOUNT), 4);
    let secret = "s3cr3t-Hunter2-value";
    ssm.set(
        4,
        "\n[settings.db]\npassword = { secret = \"env:DB_PASSWORD\" }\nuser = \"asr\"\n",
    );
    let run = ssm.run(&["--target", ENV, "--yes"], &[("DB_PASSWORD", secret)]);
    run.code(0);
    let params = ssm.params();
    let (value, _, kind) = &params["db"];
    assert_eq!(kind, "SecureString");
    assert_eq!(value, &format!(r#"{{"password":"{secret}","user":"asr"}}"#));
    let mut seen = format!("{}{}", run.stdout, run.stderr);
    // Rotation: the diff is masked, and so are status, plan and the log.
    let rotated = "rotated-Secret-2";
    for args in [
        &["plan", "--target", ENV][..],
        &["--target", ENV, "--yes"],
        &["status", "--target", ENV],
        &["log", "--target", ENV, "--format", "json"],
    ] {
        let run = ssm.run(args, &[("DB_PASSWORD", rotated)]);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    // A SecureString someone else put under the path: the plan removes it without showing it.
    let theirs = "HANDMADE-token-0042";
    ssm.moto.put_parameter(
        &format!("{PATH}legacy"),
        &format!(r#"{{"token":"{theirs}"}}"#),
        true,
    );
    let run = ssm.run(&["plan", "--target", ENV], &[("DB_PASSWORD", rotated)]);
    run.code(0).stdout_has("- legacy");
    seen.push_str(&run.stdout);
    seen.push_str(&run.stderr);
    let run = ssm.run(&["--target", ENV, "--yes"], &[("DB_PASSWORD", rotated)]);
    run.code(0);
    seen.push_str(&run.stdout);
    seen.push_str(&run.stderr);
    assert!(!ssm.params().contains_key("legacy"));
    assert!(seen.contains("(secret"), "{seen}");
    assert!(!seen.contains(secret) && !seen.contains(rotated), "{seen}");
    assert!(!seen.contains(theirs), "{seen}");
    assert_eq!(
        ssm.params()["db"].0,
        format!(r#"{{"password":"{rotated}","user":"asr"}}"#)
    );
}

#[test]
fn protocol_2_deploys_and_rolls_back_through_one_session() {
    let ssm = Ssm::with_target(Moto::start(ACCOUNT), 4, "protocol = 2\n");
    ssm.deploy()
        .code(0)
        .stderr_has("Deployed: `cloud` (account 123456789012)");
    let params = ssm.params();
    assert_eq!(ssm.values(), all_stored(4));
    assert!(
        params.values().all(|(_, v, t)| *v == 1 && t == "String"),
        "{params:?}"
    );
    ssm.set(8, "\n[settings.r6]\nthreads = 1\n");
    ssm.deploy().code(0);
    let mut want = all_stored(8);
    want.insert("r6".into(), r#"{"threads":1}"#.into());
    assert_eq!(ssm.values(), want);
    ssm.run(&["rollback", "--target", ENV, "--to", "1", "--yes"], &[])
        .code(0);
    assert_eq!(ssm.values(), all_stored(4));
    assert_eq!(ssm.outcomes(), ["applied", "applied", "applied"]);
}

#[test]
fn protocol_2_a_failure_on_the_third_item_of_the_batch_is_rolled_back() {
    let ssm = Ssm::with_target(Moto::start(ACCOUNT), 4, "protocol = 2\n");
    ssm.deploy().code(0);
    ssm.moto.exhaust_versions(&format!("{PATH}r3"));
    ssm.set(8, "");
    ssm.deploy()
        .code(4)
        .stderr_has("operation `apply` of `r3`")
        .stderr_has("ParameterMaxVersionLimitExceeded")
        .stderr_has("the 2 changes already made were undone in reverse order");
    assert_eq!(ssm.values(), all_stored(4));
    let params = ssm.params();
    assert_eq!(params["r1"].1, 3);
    assert_eq!(params["r4"].1, 1);
    assert_eq!(ssm.outcomes(), ["applied", "failed"]);
}

#[test]
fn protocol_2_a_deploy_killed_after_its_batch_is_rolled_back_by_the_next_run() {
    let ssm = Ssm::with_target(Moto::start(ACCOUNT), 4, "protocol = 2\n");
    ssm.deploy().code(0);
    ssm.set(8, "");
    // The batch landed and was answered; the journal still says every step is pending.
    ssm.paused("exec-after-batch-1", None).kill9();
    assert_eq!(ssm.values(), all_stored(8));
    let resume = ssm.repo.path().join("scratch/resume");
    let paused = ssm.paused("exec-before-batch-1", Some(&resume));
    assert_eq!(ssm.values(), all_stored(4));
    assert!(
        paused
            .stderr()
            .contains("had changed 5 of 5 resources (`r1`, `r2`, `r3`, `r4`, `r5`); undid them"),
        "{}",
        paused.stderr()
    );
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ssm.values(), all_stored(8));
    assert_eq!(ssm.outcomes().len(), 3);
}
