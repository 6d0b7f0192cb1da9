//! A missing target is not a new one (issue 16, item 4): a protected environment's target is
//! adopted only by `deploy adopt`; every writing path refuses an unadopted one before writing
//! anything; other environments are adopted by their first deployment, which says so. Real
//! directories, a real etcd, the example provider, and a pseudo-terminal for the prompt.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Repo, Run, log_outcomes, snapshot};

fn prod_target(repo: &Repo) -> PathBuf {
    repo.path().join("targets/prod")
}

/// `ungated_unadopted` with a `[notify]` on prod that writes each event to `notified.json`
/// in the repository (outside the target).
fn notified_repo() -> Repo {
    let repo = Repo::ungated_unadopted();
    let prod = repo.read("environments/prod.toml");
    repo.write(
        "environments/prod.toml",
        format!("{prod}\n[notify]\ncommand = [\"sh\", \"-c\", \"cat >> notified.json\"]\n"),
    );
    repo.write(".gitignore", "notified.json\ntargets/\nplan.json\n");
    repo.commit("prod notifies");
    repo
}

fn notified(repo: &Repo) -> String {
    std::fs::read_to_string(repo.path().join("notified.json")).unwrap_or_default()
}

#[track_caller]
fn refused_as_unadopted(run: &Run, how: &str) {
    run.code(3)
        .stderr_has(&format!("its target dir {}", how))
        .stderr_has("`prod` is protected")
        .stderr_has("a volume not mounted")
        .stderr_has("run `deploy adopt --target prod`")
        .stderr_has("nothing was written");
}

#[test]
fn a_protected_missing_directory_is_refused_on_every_writing_path_and_nothing_is_created() {
    let repo = notified_repo();
    let dir = prod_target(&repo);
    let shown = dir.display().to_string();
    // A file argument is relative to where deploy starts, not to -C.
    let plan = repo.path().join("plan.json").display().to_string();

    // The plan shows the finding, writes nothing.
    repo.deploy(&["plan", "--target", "prod", "--out", &plan])
        .code(0)
        .stderr_has("warning: refusing to deploy `prod`")
        .stderr_has("run `deploy adopt --target prod`");

    refused_as_unadopted(
        &repo.deploy(&["--target", "prod", "--yes"]),
        &format!(
            "{shown} does not exist, nor does {}",
            repo.path().join("targets").display()
        ),
    );
    refused_as_unadopted(
        &repo.deploy(&["apply", "--target", "prod", "--plan", &plan, "--yes"]),
        &format!("{shown} does not exist"),
    );
    refused_as_unadopted(
        &repo.deploy(&["rollback", "--target", "prod", "--yes"]),
        &format!("{shown} does not exist"),
    );
    assert!(!dir.exists(), "a refusal created the target directory");
    assert!(!repo.path().join("targets").exists());

    // Each refusal reached [notify], with what to do.
    let events: Vec<Value> = notified(&repo)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for e in &events {
        assert_eq!(e["outcome"], "refused");
        assert_eq!(e["exit_code"], 3);
        assert!(e["reason"].as_str().unwrap().contains("does not exist"));
    }

    // An existing, empty directory (a mount point with nothing mounted) is no different.
    std::fs::create_dir_all(&dir).unwrap();
    let before = snapshot(&dir);
    refused_as_unadopted(
        &repo.deploy(&["--target", "prod", "--yes"]),
        &format!("{shown} is empty and has no stamp"),
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "a refusal wrote into the empty target"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn adopt_then_deploy_works_and_the_log_verifies() {
    let repo = Repo::ungated_unadopted();
    let dir = prod_target(&repo);
    let run = repo.deploy(&["adopt", "--target", "prod", "--yes", "--format", "json"]);
    run.code(0)
        .stderr_has("does not exist")
        .stderr_has("environment `prod`, account 222222222222")
        .stderr_has("Adopted");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["outcome"], "adopted");
    assert_eq!(report["found"], "missing");
    assert_eq!(report["log"]["seq"], 1);
    let stamp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".envlock/stamp.json")).unwrap())
            .unwrap();
    assert_eq!(stamp["environment"], "prod");
    assert_eq!(stamp["account"], "222222222222");
    assert!(!dir.join("current").exists(), "adopt deployed something");

    let run = repo.deploy(&["--target", "prod", "--yes", "--format", "json"]);
    run.code(0).stderr_has("Generation 1 is live.");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["adopted"], false);
    assert_eq!(report["new_target"], Value::Null);

    let got: Vec<(String, String)> = log_outcomes(&repo, "prod");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "applied");
    assert!(got[0].1.contains("deploy adopt"), "{got:?}");
    repo.deploy(&["log", "verify", "--target", "prod"])
        .code(0)
        .stdout_has("2 records, chain intact");
    let log = std::fs::read_to_string(dir.join(".envlock/log.jsonl")).unwrap();
    assert!(log.lines().next().unwrap().contains("\"action\":\"adopt\""));
    assert!(log.lines().nth(1).unwrap().contains("\"action\":\"apply\""));
}

#[test]
fn an_adopted_target_is_left_alone_and_says_so() {
    let repo = Repo::ungated_unadopted();
    repo.adopt("prod");
    let dir = prod_target(&repo);
    let before = snapshot(&dir);
    let run = repo.deploy(&["adopt", "--target", "prod", "--yes", "--format", "json"]);
    run.code(0)
        .stderr_has("is already adopted for `prod`")
        .stderr_has("nothing was written");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["outcome"], "already-adopted");
    assert_eq!(report["found"], "stamped");
    assert_eq!(report["log"], Value::Null);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_foreign_or_non_empty_target_is_not_adopted() {
    let repo = Repo::ungated_unadopted();
    let dir = prod_target(&repo);

    // Holds data, no stamp.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("worker.toml"), "threads = 2\n").unwrap();
    let before = snapshot(&dir);
    repo.deploy(&["adopt", "--target", "prod", "--yes"])
        .code(3)
        .stderr_has("not empty and has no envlock stamp")
        .stderr_has("worker.toml");
    assert_eq!(snapshot(&dir), before);

    // Stamped for another environment (a copied directory).
    std::fs::remove_file(dir.join("worker.toml")).unwrap();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    std::fs::create_dir_all(dir.join(".envlock")).unwrap();
    std::fs::copy(
        repo.path().join("targets/validation/.envlock/stamp.json"),
        dir.join(".envlock/stamp.json"),
    )
    .unwrap();
    let before = snapshot(&dir);
    repo.deploy(&["adopt", "--target", "prod", "--yes"])
        .code(3)
        .stderr_has("belongs to environment `validation`");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn an_unprotected_first_deploy_says_it_adopts_a_new_target() {
    let repo = Repo::ungated_unadopted();
    let dir = repo.path().join("targets/validation");
    // `targets/` is missing too: the line names the highest missing directory.
    let line = format!(
        "new target: dir {} does not exist, nor does {} (adopting creates it); deploying adopts it for `validation` (account 111111111111) as a new, empty target",
        dir.display(),
        repo.path().join("targets").display()
    );
    repo.deploy(&["plan", "--target", "validation"])
        .code(0)
        .stderr_has(&line)
        .stdout_has("missing: not adopted yet");
    let run = repo.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0).stderr_has(&line);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["new_target"], "missing");
    assert_eq!(report["adopted"], true);
    assert_eq!(
        run.stderr.matches("new target:").count(),
        1,
        "one line: {}",
        run.stderr
    );

    // Once adopted, nothing more is said.
    let run = repo.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0);
    assert!(!run.stderr.contains("new target"), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["new_target"], Value::Null);

    // An empty directory is "empty", in text and JSON.
    let other = Repo::ungated_unadopted();
    let dir = other.path().join("targets/validation");
    std::fs::create_dir_all(&dir).unwrap();
    let run = other.deploy(&["--target", "validation", "--yes", "--format", "json"]);
    run.code(0).stderr_has(&format!(
        "new target: dir {} is empty and has no stamp",
        dir.display()
    ));
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["new_target"], "empty");
}

#[test]
fn a_saved_plan_is_refused_when_the_targets_adoption_changed() {
    // Planned against a new target, applied after someone adopted it.
    let repo = Repo::ungated_unadopted();
    let plan = repo.path().join("plan.json").display().to_string();
    repo.deploy(&["plan", "--target", "validation", "--out", &plan])
        .code(0);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(saved["new_target"], true);
    repo.adopt("validation");
    let dir = repo.path().join("targets/validation");
    repo.deploy(&["apply", "--target", "validation", "--plan", &plan, "--yes"])
        .code(3)
        .stderr_has("the saved plan is stale: it was made against a new target (no stamp)")
        .stderr_has("is stamped now");
    assert!(!dir.join("current").exists(), "a stale plan was applied");

    // Planned against an adopted target, applied when the directory is gone (unmounted).
    let repo = Repo::ungated_unadopted();
    repo.adopt("validation");
    let plan = repo.path().join("plan.json").display().to_string();
    repo.deploy(&["plan", "--target", "validation", "--out", &plan])
        .code(0);
    let saved = std::fs::read_to_string(&plan).unwrap();
    assert!(!saved.contains("new_target"), "{saved}");
    let dir = repo.path().join("targets/validation");
    std::fs::rename(&dir, repo.path().join("elsewhere")).unwrap();
    repo.deploy(&["apply", "--target", "validation", "--plan", &plan, "--yes"])
        .code(3)
        .stderr_has("it was made against an adopted target")
        .stderr_has("is now missing");
    assert!(!dir.exists(), "a refused plan created the target");
}

#[test]
fn adopt_on_a_terminal_wants_the_name_typed() {
    let repo = Repo::ungated_unadopted();
    let dir = prod_target(&repo);
    let cmd = |answer: &str| {
        crate::prompt::on_terminal(
            &format!(
                "{} -C {} adopt --target prod",
                env!("CARGO_BIN_EXE_deploy"),
                repo.path().display()
            ),
            answer,
        )
    };
    cmd("y\n")
        .code(1)
        .stdout_has("`prod` is protected. Type its name to adopt dir")
        .stdout_has("type `prod` exactly to confirm");
    assert!(!dir.exists(), "a wrong answer created the target");
    cmd("prod\n").code(0).stdout_has("Adopted");
    assert!(dir.join(".envlock/stamp.json").is_file());

    // Without a terminal, --yes is required.
    let repo = Repo::ungated_unadopted();
    repo.deploy(&["adopt", "--target", "prod"])
        .code(1)
        .stderr_has("deploy adopt --target prod --yes");
    assert!(!prod_target(&repo).exists());
}

#[test]
fn an_etcd_prefix_gets_the_same_refusal_and_adoption() {
    use crate::etcd::{Cluster, PREFIX, STATE, edge_toml};
    let etcd = Cluster::start(1);
    let repo = Repo::ungated_unadopted();
    let toml = edge_toml(&etcd.endpoints_toml(), "", "", 4).replacen(
        "[environment]\n",
        "[environment]\nprotected = true\nbranch = \"main\"\n",
        1,
    );
    repo.write("environments/edge.toml", toml);
    repo.commit("edge on etcd, protected");

    repo.deploy(&["--target", "edge", "--yes"])
        .code(3)
        .stderr_has(PREFIX)
        .stderr_has("is empty and has no stamp")
        .stderr_has("`edge` is protected")
        .stderr_has("check the etcd endpoints and prefix")
        .stderr_has("deploy adopt --target edge");
    assert!(etcd.keys("/svc/").is_empty(), "a refusal wrote to etcd");

    repo.deploy(&["adopt", "--target", "edge", "--yes"])
        .code(0)
        .stderr_has("Adopted");
    let stamp: Value =
        serde_json::from_str(&etcd.value(&format!("{STATE}stamp")).unwrap()).unwrap();
    assert_eq!(stamp["environment"], "edge");
    assert!(etcd.keys(PREFIX).is_empty(), "adopt wrote a resource");
    repo.deploy(&["--target", "edge", "--yes"])
        .code(0)
        .stderr_has("Generation 1 is live.");
    repo.deploy(&["log", "verify", "--target", "edge"])
        .code(0)
        .stdout_has("2 records, chain intact");
}

/// A repository whose protected `cloud` environment is on an exec target through the example
/// provider, whose directory is `<repo>/store` and whose state is `<repo>/state`.
fn exec_repo() -> Repo {
    let repo = Repo::empty();
    repo.write("schemas/svc.schema.json", r#"{"type": "object"}"#);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/dir-example/provider");
    let provider = std::fs::read(example).unwrap();
    repo.write("provider", provider);
    std::fs::set_permissions(
        repo.path().join("provider"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.write(".gitignore", "store/\nstate/\n");
    std::fs::create_dir_all(repo.path().join("store")).unwrap();
    std::fs::write(repo.path().join("store/.account"), "123456789012\n").unwrap();
    repo.write(
        "environments/cloud.toml",
        "[environment]\naccount = \"123456789012\"\nschema = \"svc\"\nbranch = \"main\"\n\
         protected = true\n\n[target]\nkind = \"exec\"\ncommand = [\"./provider\"]\n\
         state = \"state\"\n\n[target.options]\ndir = \"store\"\n\n\
         [settings.r1]\nthreads = 4\n",
    );
    repo.commit("cloud through the example provider");
    repo
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_exec_scope_gets_the_same_refusal_and_adoption() {
    let repo = exec_repo();
    let store = repo.path().join("store");
    let state = repo.path().join("state");
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(3)
        .stderr_has("is empty and has no stamp")
        .stderr_has("`cloud` is protected")
        .stderr_has("the provider's scope")
        .stderr_has("deploy adopt --target cloud");
    assert_eq!(
        listing(&store),
        [".account"],
        "a refusal wrote to the provider"
    );
    assert!(!state.exists(), "a refusal created the state directory");

    repo.deploy(&["adopt", "--target", "cloud", "--yes"])
        .code(0)
        .stderr_has("Adopted");
    assert!(state.join(".envlock/stamp.json").is_file());
    assert_eq!(listing(&store), [".account"], "adopt wrote a resource");
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(0)
        .stderr_has("Generation 1 is live.");
    assert_eq!(listing(&store), [".account", "r1.json"]);
}

/// The stamp of an exec target lives in its state directory, apart from the resources: a
/// provider pointed at another, empty scope of the same account (another region or profile)
/// looks adopted and empty. A protected environment does not write everything again there
/// under --yes; an unprotected one says what it is doing.
#[test]
fn a_stamped_target_that_holds_nothing_it_deployed_is_not_refilled_under_yes() {
    let repo = exec_repo();
    repo.deploy(&["adopt", "--target", "cloud", "--yes"])
        .code(0);
    repo.deploy(&["--target", "cloud", "--yes"]).code(0);
    // The scope the provider reaches now: the same account, none of the resources.
    let elsewhere = repo.path().join("store-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(".account"), "123456789012\n").unwrap();
    repo.write(".gitignore", "store/\nstate/\nstore-elsewhere/\n");
    repo.edit(
        "environments/cloud.toml",
        &[("dir = \"store\"", "dir = \"store-elsewhere\"")],
    );
    repo.commit("the provider reaches another scope");
    let state = repo.path().join("state");
    let before = crate::harness::snapshot(&state);
    repo.deploy(&["plan", "--target", "cloud"])
        .code(0)
        .stderr_has("holds none of the 1 resource that generation 1 of `cloud` deployed there");
    let run = repo.deploy(&["--target", "cloud", "--yes"]);
    run.code(3)
        .stderr_has("holds none of the 1 resource that generation 1 of `cloud` deployed there")
        .stderr_has("wrong region, profile, scope or prefix")
        .stderr_has("nothing was written");
    assert_eq!(
        listing(&elsewhere),
        [".account"],
        "a refusal wrote to the provider"
    );
    // Only the refusal's own log record is added to the state.
    let after = crate::harness::snapshot(&state);
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        changed.iter().all(|k| k.contains("log")),
        "a refusal changed {changed:?}"
    );

    // Unprotected: it goes on, and says so.
    repo.edit("environments/cloud.toml", &[("protected = true\n", "")]);
    repo.commit("cloud is not protected");
    repo.deploy(&["--target", "cloud", "--yes"])
        .code(0)
        .stderr_has("holds none of the 1 resource")
        .stderr_has("deploying writes every resource again");
    assert_eq!(listing(&elsewhere), [".account", "r1.json"]);
}
