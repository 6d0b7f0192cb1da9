//! `deploy log seal`: the explicit, recorded way out of a damaged deployment log (issue 16,
//! item 7). A deployment refuses to append to a log that does not verify; once a person has
//! looked, a seal record sets the damage aside (byte for byte kept) and deployments go on.

use std::path::{Path, PathBuf};

use crate::harness::{Repo, Run, snapshot};

const VALIDATION: &str = "environments/validation.toml";
const NOTIFY: &str = "[notify]\ncommand = [\"sh\", \"-c\", \"cat > state/event.json\"]\n";
const REASON: &str = "record 1 edited by hand during incident 42; compared with the backup";

fn take_event(repo: &Repo) -> Option<serde_json::Value> {
    let path = repo.path().join("state/event.json");
    let text = std::fs::read_to_string(&path).ok()?;
    std::fs::remove_file(&path).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn target(repo: &Repo) -> PathBuf {
    repo.path().join("targets/validation")
}

fn log_file(repo: &Repo) -> PathBuf {
    target(repo).join(".envlock/log.jsonl")
}

fn deploy_yes(repo: &Repo) -> Run {
    repo.deploy(&["--target", "validation", "--yes"])
}

fn seal(repo: &Repo, reason: &str) -> Run {
    repo.deploy(&[
        "log",
        "seal",
        "--target",
        "validation",
        "--reason",
        reason,
        "--yes",
    ])
}

fn set_threads(repo: &Repo, threads: u32) {
    let text = repo.read(VALIDATION);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("threads")).collect();
    let line = format!("threads = {threads}");
    lines.push(&line);
    repo.write(VALIDATION, lines.join("\n") + "\n");
    repo.commit(&format!("validation: {threads} threads"));
}

/// `validation` (with a notifier) deployed twice; its log's first record then edited by hand
/// (one byte: `adopt` -> `adapt`). Returns the repository and the damaged log's bytes.
fn damaged() -> (Repo, Vec<u8>) {
    let repo = Repo::base();
    std::fs::create_dir_all(repo.path().join("state")).unwrap();
    let text = repo.read(VALIDATION);
    let (head, settings) = text.split_once("[settings.worker]").unwrap();
    repo.write(
        VALIDATION,
        format!("{head}{NOTIFY}\n[settings.worker]{settings}"),
    );
    repo.commit("validation: notify");
    deploy_yes(&repo).code(0);
    set_threads(&repo, 6);
    deploy_yes(&repo).code(0);
    let bytes = std::fs::read(log_file(&repo)).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"\"adopt\"")
        .expect("the first record adopts");
    let mut edited = bytes.clone();
    edited[at + 3] = b'a';
    std::fs::write(log_file(&repo), &edited).unwrap();
    (repo, edited)
}

#[track_caller]
fn verify_json(repo: &Repo) -> serde_json::Value {
    let run = repo.deploy(&[
        "log",
        "verify",
        "--target",
        "validation",
        "--format",
        "json",
    ]);
    run.code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn a_sealed_damage_lets_deployments_go_on_and_stays_in_the_log_byte_for_byte() {
    let (repo, edited) = damaged();
    let before = snapshot(&target(&repo));

    // Refused and notified; nothing written.
    deploy_yes(&repo)
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it")
        .stderr_has("record 1 (line 1) was edited");
    let event = take_event(&repo).expect("the refusal was notified");
    assert_eq!(event["outcome"], "refused");
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{event}"
    );
    assert_eq!(snapshot(&target(&repo)), before);

    // Without a reason (or a blank one): refused, nothing written.
    repo.deploy(&["log", "seal", "--target", "validation", "--yes"])
        .code(3)
        .stderr_has("a seal needs a reason");
    seal(&repo, "   ")
        .code(3)
        .stderr_has("a seal needs a reason");
    assert_eq!(snapshot(&target(&repo)), before);
    // Without a terminal and without --yes: nobody confirmed, nothing written.
    repo.deploy(&["log", "seal", "--target", "validation", "--reason", REASON])
        .code(1)
        .stderr_has("nobody can confirm");
    assert_eq!(snapshot(&target(&repo)), before);

    seal(&repo, REASON)
        .code(0)
        .stderr_has("record 1 (line 1) was edited")
        .stderr_has(
            "Sealed: record 3 of `validation`'s deployment log sets aside the damage at line 1",
        );
    let event = take_event(&repo).expect("the seal was notified");
    assert_eq!(event["outcome"], "sealed");

    // Not a byte of the damaged log was rewritten: the seal was appended after it.
    let now = std::fs::read(log_file(&repo)).unwrap();
    assert!(now.starts_with(&edited), "the damaged bytes were changed");
    let seal_line = String::from_utf8(now[edited.len()..].to_vec()).unwrap();
    assert_eq!(seal_line.lines().count(), 1, "{seal_line}");
    let record: serde_json::Value = serde_json::from_str(&seal_line).unwrap();
    assert_eq!(record["action"], "seal");
    assert_eq!(record["outcome"], "sealed");
    assert_eq!(record["reason"], REASON);
    assert_eq!(record["sealed"]["line"], 1);
    assert_eq!(record["sealed"]["kind"], "edited");
    assert_eq!(record["sealed"]["records"], 0);
    assert_eq!(record["sealed"]["head"], "0".repeat(64));
    assert_eq!(record["prev"], "0".repeat(64));
    assert_eq!(
        record["sealed"]["damaged_bytes"].as_u64(),
        Some(edited.len() as u64)
    );

    // Verified, loudly, with the sealed damage.
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("validation: 1 record, chain intact")
        .stdout_has("SEALED DAMAGE:")
        .stdout_has("sealed damage at line 1 (edited")
        .stdout_has("the bytes of lines 1-2 are set aside")
        .stdout_has(REASON);
    let doc = verify_json(&repo);
    assert_eq!(doc["ok"], true);
    let env = &doc["environments"][0];
    assert_eq!(env["status"], "sealed");
    assert_eq!(env["sealed"][0]["line"], 1);
    assert_eq!(env["sealed"][0]["seal_line"], 3);
    assert_eq!(env["sealed"][0]["kind"], "edited");
    assert_eq!(env["sealed"][0]["reason"], REASON);
    repo.deploy(&["log", "--target", "validation"])
        .code(0)
        .stdout_has("seal")
        .stderr_has("sealed damage at line 1");

    // Deployments go on, chained to the seal.
    set_threads(&repo, 8);
    deploy_yes(&repo).code(0);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0)
        .stdout_has("validation: 2 records, chain intact");
    assert!(std::fs::read(log_file(&repo)).unwrap().starts_with(&edited));

    // A second seal has nothing to seal.
    let sealed = snapshot(&target(&repo));
    seal(&repo, REASON).code(3).stderr_has(
        "verifies (with 1 sealed damage, which stays sealed): there is nothing to seal",
    );
    assert_eq!(snapshot(&target(&repo)), sealed);
}

#[test]
fn damage_after_a_seal_and_a_change_to_the_sealed_bytes_are_found_again() {
    let (repo, edited) = damaged();
    seal(&repo, REASON).code(0);
    set_threads(&repo, 8);
    deploy_yes(&repo).code(0);
    let sealed = std::fs::read(log_file(&repo)).unwrap();

    // The bytes set aside are bound by the seal: editing them again is damage.
    let mut again = sealed.clone();
    let at = edited.len() / 2;
    again[at] = if again[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(log_file(&repo), &again).unwrap();
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has("BROKEN:");
    deploy_yes(&repo).code(3).stderr_has("does not verify");

    // A record after the seal edited: found, refused, and sealed in its turn.
    std::fs::write(log_file(&repo), &sealed).unwrap();
    let text = String::from_utf8(sealed.clone()).unwrap();
    let last = text.lines().last().unwrap();
    let edited_last = last.replacen("\"applied\"", "\"failed\"", 1);
    assert_ne!(edited_last, last);
    let damaged2 = text.replacen(last, &edited_last, 1);
    std::fs::write(log_file(&repo), &damaged2).unwrap();
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(1)
        .stdout_has("record 4 (line 4) was edited");
    deploy_yes(&repo)
        .code(3)
        .stderr_has("record 4 (line 4) was edited");
    seal(&repo, "record 4 edited in a test").code(0);
    let doc = verify_json(&repo);
    let env = &doc["environments"][0];
    assert_eq!(env["status"], "sealed");
    assert_eq!(env["sealed"].as_array().unwrap().len(), 2, "{env}");
    assert_eq!(env["sealed"][1]["line"], 4);
    assert!(
        std::fs::read(log_file(&repo))
            .unwrap()
            .starts_with(damaged2.as_bytes())
    );
    set_threads(&repo, 10);
    deploy_yes(&repo).code(0);
}

#[test]
fn a_seal_on_a_log_that_verifies_is_refused_and_writes_nothing() {
    let repo = Repo::base();
    deploy_yes(&repo).code(0);
    let before = snapshot(&target(&repo));
    seal(&repo, REASON)
        .code(3)
        .stderr_has("the deployment log of `validation` verifies: there is nothing to seal")
        .stderr_has("nothing was written");
    assert_eq!(snapshot(&target(&repo)), before);
    // A target never adopted has no log to seal.
    let repo = Repo::base_unadopted();
    repo.deploy(&[
        "log", "seal", "--target", "prod", "--reason", REASON, "--yes",
    ])
    .code(3)
    .stderr_has("has never been deployed to");
    assert!(!repo.path().join("targets/prod").exists());
}

#[test]
fn a_log_cut_in_the_middle_of_a_record_is_sealed_by_appending_only() {
    let repo = Repo::base();
    deploy_yes(&repo).code(0);
    set_threads(&repo, 6);
    deploy_yes(&repo).code(0);
    let bytes = std::fs::read(log_file(&repo)).unwrap();
    // Cut in the middle of the last record (no journal: nobody was writing).
    let cut = bytes[..bytes.len() - 40].to_vec();
    std::fs::write(log_file(&repo), &cut).unwrap();
    set_threads(&repo, 8);
    deploy_yes(&repo).code(3);
    seal(&repo, "the disk filled up during a copy; checked").code(0);
    let now = std::fs::read(log_file(&repo)).unwrap();
    assert!(now.starts_with(&cut));
    assert_eq!(now[cut.len()], b'\n', "the cut line is ended, not removed");
    let doc = verify_json(&repo);
    assert_eq!(doc["environments"][0]["sealed"][0]["line"], 2);
    assert_eq!(doc["environments"][0]["sealed"][0]["kind"], "truncated");
    deploy_yes(&repo).code(0);
    verify_json(&repo);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_seal_while_another_holds_the_lock_exits_5_and_writes_nothing() {
    use crate::harness::Paused;
    let (repo, _) = damaged();
    let holder = Paused::start(
        repo.path(),
        &[
            "log",
            "seal",
            "--target",
            "validation",
            "--reason",
            REASON,
            "--yes",
        ],
        "seal-after-lock",
        None,
        &[],
    );
    let before = snapshot(&target(&repo));
    seal(&repo, REASON)
        .code(5)
        .stderr_has("locked by")
        .stderr_has(&format!("pid {}", holder.pid()));
    assert_eq!(snapshot(&target(&repo)), before);
    holder.kill9();
    seal(&repo, REASON).code(0);
    verify_json(&repo);
}

/// Old logs (no `sealed` field anywhere) keep verifying: the format only grew.
#[test]
fn a_log_written_before_seals_existed_still_verifies() {
    let repo = Repo::base();
    deploy_yes(&repo).code(0);
    let text = std::fs::read_to_string(log_file(&repo)).unwrap();
    assert!(!text.contains("sealed"), "{text}");
    let doc = verify_json(&repo);
    assert_eq!(doc["environments"][0]["status"], "ok");
    assert!(doc["environments"][0].get("sealed").is_none());
}

/// The README's verifier (for auditors without envlock) agrees with `deploy log verify` on a
/// sealed log, and refuses the damaged log before it was sealed.
#[test]
fn the_readmes_python_verifier_agrees_on_a_sealed_log() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python\n#!/usr/bin/env python3\n# verify_log.py")
        .expect("README shows verify_log.py");
    let code = &readme[start + "```python\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify_log.py");
    std::fs::write(&script, code).unwrap();
    let python = |log: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(log)
            .output()
            .unwrap()
    };

    let (repo, _) = damaged();
    let out = python(&log_file(&repo));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: edited"));
    seal(&repo, REASON).code(0);
    set_threads(&repo, 8);
    deploy_yes(&repo).code(0);
    let head = verify_json(&repo)["environments"][0]["head"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = python(&log_file(&repo));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sealed damage at line 1 (edited)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("2 records, chain intact; head {head}")),
        "{stdout}"
    );
}

/// A deployment killed after its switch leaves a journal; if the log is damaged meanwhile, the
/// next run does not append its recovery record to it (and so never hides the damage behind a
/// fresh checkpoint): it refuses, and once the damage is sealed, recovers.
#[cfg(feature = "failpoints")]
#[test]
fn recovery_does_not_append_to_a_damaged_log() {
    use crate::harness::Paused;
    let (repo, _) = damaged();
    // Sealed once, so that a deployment can run and be killed mid-way.
    seal(&repo, REASON).code(0);
    set_threads(&repo, 8);
    Paused::start(
        repo.path(),
        &["--target", "validation", "--yes"],
        "after-switch",
        None,
        &[],
    )
    .kill9();
    assert!(target(&repo).join(".envlock/journal.json").exists());
    // The seal record itself edited: the seal no longer counts, so the first damage is back.
    let text = std::fs::read_to_string(log_file(&repo)).unwrap();
    let last = text.lines().last().unwrap();
    let damaged = text.replacen(last, &last.replacen("\"sealed\"", "\"applied\"", 1), 1);
    assert_ne!(damaged, text);
    std::fs::write(log_file(&repo), &damaged).unwrap();
    let before = std::fs::read(log_file(&repo)).unwrap();
    deploy_yes(&repo)
        .code(3)
        .stderr_has("does not verify, so nothing is appended to it")
        .stderr_has("record 1 (line 1) was edited");
    assert_eq!(std::fs::read(log_file(&repo)).unwrap(), before);
    assert!(target(&repo).join(".envlock/journal.json").exists());
    seal(&repo, "the seal record edited in a test").code(0);
    deploy_yes(&repo).code(0).stderr_has("interrupted");
    verify_json(&repo);
}

/// On a terminal the environment's name must be typed (even for an unprotected one): `y`
/// is not enough, and a declined seal writes nothing.
#[test]
fn on_a_terminal_the_environments_name_is_typed() {
    let (repo, _) = damaged();
    let before = snapshot(&target(&repo));
    let cmd = |answer: &str| {
        crate::prompt::on_terminal(
            &format!(
                "{} -C {} log seal --target validation --reason 'looked at it'",
                env!("CARGO_BIN_EXE_deploy"),
                repo.path().display()
            ),
            answer,
        )
    };
    cmd("y\n")
        .code(1)
        .stdout_has("Type the environment's name (`validation`) to seal the damage at line 1 of its deployment log")
        .stdout_has("cancelled: nothing was changed");
    assert_eq!(snapshot(&target(&repo)), before);
    cmd("validation\n").code(0).stdout_has("Sealed: record 3");
    verify_json(&repo);
}

/// A log cut after a whole record (its last records removed, or emptied, or deleted) still
/// verifies as a chain; the checkpoint of the last append knows it was longer. The next
/// deployment refuses, writes nothing, and a seal is the recorded way on.
#[test]
fn records_removed_from_the_end_of_the_log_are_refused_then_sealed() {
    let repo = Repo::base();
    deploy_yes(&repo).code(0);
    set_threads(&repo, 6);
    deploy_yes(&repo).code(0);
    let full = std::fs::read(log_file(&repo)).unwrap();
    let first_line = full.iter().position(|&b| b == b'\n').unwrap() + 1;
    set_threads(&repo, 8);
    for cut in [&full[..first_line], &b""[..]] {
        std::fs::write(log_file(&repo), cut).unwrap();
        let before = snapshot(&target(&repo));
        deploy_yes(&repo)
            .code(3)
            .stderr_has("records at the end of the log were removed")
            .stderr_has(&format!(
                "it was {} bytes after the last append",
                full.len()
            ));
        assert_eq!(snapshot(&target(&repo)), before);
        // `deploy log verify`, which the refusal points to, says the same.
        repo.deploy(&["log", "verify", "--target", "validation"])
            .code(1)
            .stdout_has("records at the end of the log were removed");
        assert_eq!(snapshot(&target(&repo)), before);
    }
    std::fs::remove_file(log_file(&repo)).unwrap();
    deploy_yes(&repo)
        .code(3)
        .stderr_has("the log file is 0 bytes");
    assert!(!log_file(&repo).exists(), "nothing was appended");

    std::fs::write(log_file(&repo), &full[..first_line]).unwrap();
    seal(&repo, REASON).code(0).stderr_has("Sealed");
    deploy_yes(&repo).code(0);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0);
}

/// A seal's reason is shown on one line, and a terminal escape in it is shown, not obeyed: a
/// reason cannot fake another line of `deploy log verify` or clear the operator's screen.
#[test]
fn a_seals_reason_cannot_fake_lines_or_drive_the_terminal() {
    let (repo, _) = damaged();
    seal(&repo, "looked\nvalidation: 9 records, chain intact\x1b[2J").code(0);
    let verify = repo.deploy(&["log", "verify", "--target", "validation"]);
    let log = repo.deploy(&["log", "--target", "validation"]);
    for (what, text) in [
        ("verify stdout", &verify.stdout),
        ("log stdout", &log.stdout),
        ("log stderr", &log.stderr),
    ] {
        assert!(
            !text.contains('\x1b'),
            "{what} passes an escape on: {text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("validation: 9 records")),
            "{what} shows a faked line: {text}"
        );
    }
    assert!(
        verify
            .stdout
            .contains("looked validation: 9 records, chain intact\u{fffd}[2J")
    );
}

/// The promotion gate reads `validation`'s latest check from its log: a log whose last record
/// (a failed check) was removed still verifies as a chain, but the checkpoint knows it was
/// longer, so the gate stays closed instead of trusting the check before it.
#[test]
fn the_promotion_gate_does_not_trust_a_log_whose_latest_check_was_removed() {
    let repo = Repo::base();
    let scratch = tempfile::tempdir().unwrap();
    let unhealthy = scratch.path().join("unhealthy");
    let text = repo.read(VALIDATION);
    repo.write(
        VALIDATION,
        format!(
            "{text}\n[health]\ncommand = [\"sh\", \"-c\", \"test ! -e '{}'\"]\ntimeout = \"5s\"\n",
            unhealthy.display()
        ),
    );
    repo.commit("validation: a health check");
    deploy_yes(&repo).code(0);
    std::fs::write(&unhealthy, "").unwrap();
    deploy_yes(&repo).stderr_has("fails its health check");
    std::fs::remove_file(&unhealthy).unwrap();
    let prod = ["--target", "prod", "--yes"];
    repo.deploy(&prod).code(3).stderr_has("did not pass");

    let full = std::fs::read(log_file(&repo)).unwrap();
    let first_line = full.iter().position(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(log_file(&repo), &full[..first_line]).unwrap();
    repo.deploy(&prod)
        .code(3)
        .stderr_has("promotion gate")
        .stderr_has("records at the end of the log were removed");
    assert!(
        !repo.path().join("targets/prod/current").exists(),
        "nothing was deployed to prod"
    );
}

/// `deploy --target validation --yes`, killed and failed if it has not ended within 30 s.
fn deploy_within_30s(repo: &Repo) -> std::process::ExitStatus {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("-C")
        .arg(repo.path())
        .args(["--target", "validation", "--yes"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the deployment hung on the log checkpoint");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The log checkpoint is the target's own small file: one replaced by a FIFO or by a symlink
/// to an endless device hangs nothing, and one replaced by a symlink is never written
/// through (the checkpoint is written as a new file in its place).
#[test]
fn a_log_checkpoint_replaced_by_a_fifo_or_a_symlink_neither_hangs_nor_is_written_through() {
    let repo = Repo::base();
    deploy_yes(&repo).code(0);
    let checkpoint = target(&repo).join(".envlock/log.checkpoint");
    let scratch = tempfile::tempdir().unwrap();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();

    std::fs::remove_file(&checkpoint).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&checkpoint)
        .status()
        .unwrap();
    assert!(made.success());
    set_threads(&repo, 6);
    assert!(deploy_within_30s(&repo).success());

    for (to, threads) in [(Path::new("/dev/zero"), 7), (victim.as_path(), 8)] {
        std::fs::remove_file(&checkpoint).unwrap();
        std::os::unix::fs::symlink(to, &checkpoint).unwrap();
        set_threads(&repo, threads);
        assert!(deploy_within_30s(&repo).success());
        assert!(!checkpoint.is_symlink(), "the checkpoint is a file again");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0);
}
