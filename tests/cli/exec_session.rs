//! The `exec` target in provider protocol 2 (`[target] protocol = 2`): one provider process per
//! run, JSON Lines, batched writes. The provider is `providers/dir-example/provider2` behind
//! `flaky2`, a real proxy process that logs every request and misbehaves as a test asks: it
//! answers `hello` wrongly, dies or stalls half-way through a batch, prints an endless line,
//! answers another id.
//!
//! What is checked is what lands in the provider's directory, byte for byte.

use std::path::{Path, PathBuf};

use crate::exec::{Cloud, all, all_stored, stored};

const ENV: &str = "cloud";

/// A proxy in front of `FLAKY_REAL` (a protocol-2 provider). `FLAKY_LOG` gets `start` per
/// process and `<operation>` per request (`apply <n items>`). `FLAKY_MODE`: `proto1` answers
/// `hello` with protocol 1, `huge` answers `read` with a line of 65 MiB, `wrong-id` answers
/// `read` with another id, `garbage` answers `read` with a line that is not JSON.
/// `FLAKY_MAX=<n>` announces batches of at most n. `FLAKY_DIE=apply#<n>:<k>`: the n-th `apply`
/// (counted in the log, across processes) forwards only its first k items, then the proxy dies.
/// `FLAKY_STALL` likewise, but it creates `FLAKY_STALLED` and waits until its deployer is gone.
const FLAKY2: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, time
log = os.environ.get("FLAKY_LOG")
def note(text):
    if log:
        with open(log, "a") as f:
            f.write(text + "\n")
def count(op):
    if not log or not os.path.exists(log):
        return 0
    with open(log) as f:
        return sum(1 for line in f if line.split(" ")[0] == op)
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
note("start")
mode = os.environ.get("FLAKY_MODE", "")
parent = os.getppid()
real = subprocess.Popen([os.environ["FLAKY_REAL"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def forward(req):
    real.stdin.write((json.dumps(req) + "\n").encode())
    real.stdin.flush()
    return json.loads(real.stdout.readline())
for line in sys.stdin:
    req = json.loads(line)
    op, items = req["operation"], req.get("items")
    n = count(op) + 1
    note(f"{op} {len(items)}" if items is not None else op)
    if op == "hello":
        answer = forward(req)
        if mode == "proto1":
            answer["protocol"] = 1
        if "FLAKY_MAX" in os.environ:
            answer["capabilities"]["batch"]["max"] = int(os.environ["FLAKY_MAX"])
        send(answer)
        continue
    if op == "read" and mode == "huge":
        chunk = "x" * (1 << 20)
        for _ in range(65):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        time.sleep(3600)
    if op == "read" and mode == "wrong-id":
        send({**forward(req), "id": req["id"] + 7})
        continue
    if op == "read" and mode == "garbage":
        print("Traceback (most recent call last): not JSON", flush=True)
        continue
    for var in ("FLAKY_DIE", "FLAKY_STALL"):
        rule = os.environ.get(var, "")
        if rule.startswith(f"{op}#{n}:"):
            forward({**req, "items": items[: int(rule.split(":")[1])]})
            print("provider: killed by the OOM killer", file=sys.stderr, flush=True)
            if var == "FLAKY_DIE":
                os._exit(9)
            open(os.environ["FLAKY_STALLED"], "w").close()
            while os.getppid() == parent:
                time.sleep(0.05)
            os._exit(9)
    send(forward(req))
"#;

fn provider2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("providers/dir-example/provider2")
}

/// A repository with `environments/cloud.toml` on an exec target in protocol 2 through
/// `flaky2`; the provider's directory is `<repo>/store`, the state `<repo>/state`.
fn cloud(values: &[(&str, u32)], extra: &str) -> Cloud {
    Cloud::with_provider(
        ("flaky2", FLAKY2),
        provider2(),
        "protocol = 2\n",
        values,
        extra,
    )
}

/// The outcome of every record in the log, oldest first; the log verifies.
fn outcomes(cloud: &Cloud) -> Vec<String> {
    crate::harness::log_outcomes(&cloud.repo, ENV)
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// Whether an undo journal was left for the next run.
fn journal_left(cloud: &Cloud) -> bool {
    cloud
        .repo
        .path()
        .join("state/.envlock/exec-journal.json")
        .exists()
}

#[test]
fn a_deployment_is_one_provider_process_and_one_batch() {
    let cloud = cloud(&all(4), "");
    cloud
        .deploy(&[])
        .code(0)
        .stderr_has("Adopted exec ./flaky2");
    assert_eq!(cloud.files(), all_stored(4));
    // identity, the emptiness check, the plan's read, the re-read under the lock, one batch.
    assert_eq!(
        cloud.take_calls(),
        [
            "start", "hello", "identity", "read", "read", "read", "apply 5"
        ]
    );
    cloud.deploy(&[]).code(0).stderr_has("No changes");
    assert_eq!(cloud.take_calls(), ["start", "hello", "identity", "read"]);

    // One changed, one removed, one added: one batch of three.
    cloud.set(&[("r1", 8), ("r2", 4), ("r3", 4), ("r4", 4), ("r6", 1)], "");
    cloud.deploy(&[]).code(0);
    let mut want = all_stored(4);
    want.insert("r1".into(), stored(8));
    want.remove("r5");
    want.insert("r6".into(), stored(1));
    assert_eq!(cloud.files(), want);
    assert_eq!(
        cloud.take_calls(),
        ["start", "hello", "identity", "read", "read", "apply 3"]
    );

    // A hand edit shows in status; rollback puts back exactly generation 1.
    std::fs::write(cloud.store().join("r2.json"), stored(99)).unwrap();
    cloud
        .run(&["status", "--target", ENV], &[])
        .code(0)
        .stdout_has("r2");
    std::fs::write(cloud.store().join("r2.json"), stored(4)).unwrap();
    cloud
        .run(&["rollback", "--target", ENV, "--to", "1", "--yes"], &[])
        .code(0);
    assert_eq!(cloud.files(), all_stored(4));
    assert_eq!(
        outcomes(&cloud),
        ["applied", "unchanged", "applied", "applied"]
    );
    assert!(!journal_left(&cloud));
}

#[test]
fn writes_go_in_batches_of_at_most_the_announced_size() {
    let cloud = cloud(&all(4), "");
    cloud.deploy(&[("FLAKY_MAX", "2")]).code(0);
    assert_eq!(cloud.files(), all_stored(4));
    let calls = cloud.take_calls();
    assert_eq!(calls[calls.len() - 3..], ["apply 2", "apply 2", "apply 1"]);
    assert_eq!(calls.iter().filter(|c| *c == "start").count(), 1);
}

#[test]
fn a_provider_that_does_not_answer_hello_in_protocol_2_is_refused_before_anything_is_written() {
    let cloud = cloud(&all(4), "timeout = \"5s\"\n");
    let run = cloud.deploy(&[("FLAKY_MODE", "proto1")]);
    run.code(3)
        .stderr_has("provider `./flaky2`, operation `hello`")
        .stderr_has("answered `hello` with protocol 1")
        .stderr_has("nothing was written");
    assert!(cloud.files().is_empty());
    assert!(!cloud.repo.path().join("state").exists());

    // A protocol-1 provider waits for the end of its input and never answers: the timeout
    // ends it, and the message says so.
    let run = cloud.deploy(&[(
        "FLAKY_REAL",
        &crate::exec::example_provider().display().to_string(),
    )]);
    run.code(3)
        .stderr_has("operation `hello`")
        .stderr_has("within 5s");
    assert!(cloud.files().is_empty());
    assert!(!cloud.repo.path().join("state").exists());
}

#[test]
fn a_provider_dying_mid_batch_is_rolled_back_and_the_target_is_unchanged() {
    let cloud = cloud(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    cloud.take_calls();
    // Two of the five items land, then the provider dies without answering.
    let run = cloud.deploy(&[("FLAKY_DIE", "apply#1:2")]);
    run.code(4)
        .stderr_has("operation `apply` of 5 resources (`r1` to `r5`)")
        .stderr_has("exited with status 9 while answering `apply`")
        .stderr_has("the 2 changes already made were undone in reverse order")
        .stderr_has("provider log: provider: killed by the OOM killer");
    assert_eq!(cloud.files(), all_stored(4));
    // The read that judges the batch and the undo run in a new process.
    assert_eq!(
        cloud.take_calls(),
        [
            "start", "hello", "identity", "read", "read", "apply 5", "start", "hello", "read",
            "apply 1", "apply 1"
        ]
    );
    assert!(!journal_left(&cloud));
    assert_eq!(outcomes(&cloud), ["applied", "failed"]);
    cloud.deploy(&[]).code(0);
    assert_eq!(cloud.files(), all_stored(8));
}

#[test]
fn a_conflict_on_one_item_stops_the_batch_and_the_earlier_items_are_undone() {
    let cloud = cloud(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    let resume = cloud.scratch("resume");
    let paused = cloud.paused("exec-before-batch-1", Some(&resume), &[]);
    std::fs::write(cloud.store().join("r4.json"), stored(55)).unwrap();
    std::fs::write(&resume, "").unwrap();
    let (code, stderr) = paused.finish();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("operation `apply` of `r4`"), "{stderr}");
    assert!(
        stderr.contains("the 3 changes already made were undone"),
        "{stderr}"
    );
    let mut want = all_stored(4);
    want.insert("r4".into(), stored(55));
    assert_eq!(cloud.files(), want);
    assert_eq!(outcomes(&cloud), ["applied", "refused"]);
}

#[test]
fn a_runaway_line_another_id_or_garbage_is_a_bounded_failure() {
    let cloud = cloud(&all(4), "timeout = \"20s\"\n");
    for (mode, needle) in [
        (
            "huge",
            "its response to `read` is longer than 64 MiB; it was killed",
        ),
        (
            "wrong-id",
            "it answered request 10 when request 3 (`read`) was due",
        ),
        (
            "garbage",
            "its response to `read` is not one JSON object on one line",
        ),
    ] {
        let started = std::time::Instant::now();
        let run = cloud.deploy(&[("FLAKY_MODE", mode)]);
        run.stderr_has("provider `./flaky2`, operation `read`")
            .stderr_has(needle);
        assert_ne!(run.code, 0, "{mode}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{mode}"
        );
        assert!(cloud.files().is_empty(), "{mode}");
        assert!(!cloud.repo.path().join("state/.envlock/stamp.json").exists());
    }
}

#[test]
fn a_deployer_killed_after_the_batch_landed_is_undone_by_the_next_run() {
    let cloud = cloud(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    // The provider applied and answered the whole batch; the journal still says "pending".
    cloud.paused("exec-after-batch-1", None, &[]).kill9();
    assert_eq!(cloud.files(), all_stored(8));
    assert!(journal_left(&cloud));

    let resume = cloud.scratch("resume");
    let paused = cloud.paused("exec-before-batch-1", Some(&resume), &[]);
    assert_eq!(cloud.files(), all_stored(4));
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
    assert_eq!(cloud.files(), all_stored(8));
    let outcomes = outcomes(&cloud);
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[test]
fn a_deployer_killed_mid_batch_is_undone_by_the_next_run_item_by_item() {
    let cloud = cloud(&all(4), "");
    cloud.deploy(&[]).code(0);
    cloud.set(&all(8), "");
    cloud.take_calls();
    let stalled = cloud.scratch("stalled");
    let env = cloud.env(&[
        ("FLAKY_STALL", "apply#1:3"),
        ("FLAKY_STALLED", stalled.to_str().unwrap()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = cloud.repo.spawn_deploy(&["--target", ENV, "--yes"], &env);
    crate::harness::wait_for_file(&mut child, &stalled);
    // Three of the five items landed; no answer ever came.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut half = all_stored(8);
    half.insert("r4".into(), stored(4));
    half.insert("r5".into(), stored(4));
    assert_eq!(cloud.files(), half);

    let run = cloud.deploy(&[]);
    run.code(0)
        .stderr_has("had changed 3 of 5 resources (`r1`, `r2`, `r3`); undid them in reverse order");
    assert_eq!(cloud.files(), all_stored(8));
    assert!(!journal_left(&cloud));
    assert_eq!(outcomes(&cloud).len(), 3);
}

#[test]
fn a_protocol_other_than_1_or_2_is_a_configuration_error_with_its_place() {
    let cloud = cloud(&all(4), "");
    let path = format!("environments/{ENV}.toml");
    cloud
        .repo
        .edit(&path, &[("protocol = 2\n", "protocol = 3\n")]);
    cloud.repo.commit("protocol 3");
    cloud
        .run(&["check"], &[])
        .code(1)
        .stderr_has("`protocol = 3` is not a provider protocol")
        .stderr_has(&format!("{path}:9:12"));
    cloud.deploy(&[]).code(1);
    assert!(cloud.take_calls().is_empty());
}

#[test]
fn the_provider_guide_shows_the_protocol_2_provider_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let provider = std::fs::read_to_string(provider2()).unwrap();
    let text = std::fs::read_to_string(root.join("docs/providers.md")).unwrap();
    assert!(
        text.contains(&format!("```python\n{provider}```")),
        "docs/providers.md does not show providers/dir-example/provider2 as it is"
    );
}
