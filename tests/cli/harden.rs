//! Hardening: inputs and failures that once panicked, crashed or wedged a target (issue 17).

use crate::harness::{Repo, Tmpfs};

#[test]
fn a_syntax_error_at_a_multibyte_character_is_reported_not_a_panic() {
    let repo = Repo::base();
    let prod = repo.read("environments/prod.toml");
    repo.write(
        "environments/prod.toml",
        format!("{prod}\n[settings.mix]\nmix é = 1\n"),
    );
    repo.commit("a bare key with a multi-byte character");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has("error[syntax]")
        .stderr_has("mix é = 1");
    let json = repo.deploy(&["check", "--format", "json"]);
    json.code(1);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let e = &doc["errors"][0];
    assert_eq!(e["file"], "environments/prod.toml");
    // Columns count characters: `é` is the 5th character of its line.
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(23), Some(5)),
        "{e}"
    );
}

#[test]
fn a_very_long_extends_chain_is_an_error_not_a_crash() {
    let repo = Repo::base();
    let depth = 1500;
    for i in 0..depth {
        let next = if i + 1 < depth {
            format!("[environment]\nextends = [\"_l{}\"]\n", i + 1)
        } else {
            String::new()
        };
        repo.write(&format!("environments/_l{i}.toml"), next);
    }
    repo.edit(
        "environments/validation.toml",
        &[(
            "extends = [\"_common\"]",
            "extends = [\"_common\", \"_l0\"]",
        )],
    );
    repo.commit("a chain of 1500 layers");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has("error[extends-too-deep]")
        .stderr_has("stacks more than 64 layers")
        .stderr_has("environments/_l63.toml:2:12");
}

/// The base repository with `validation`'s target on `fs`, deployed once.
fn validation_deployed_on(fs: &Tmpfs) -> (Repo, std::path::PathBuf) {
    let repo = Repo::base();
    let target = fs.path().join("validation");
    repo.edit(
        "environments/validation.toml",
        &[(
            "path = \"targets/validation\"",
            &format!("path = \"{}\"", target.display()),
        )],
    );
    repo.commit("validation on a small filesystem");
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    (repo, target)
}

#[test]
fn a_record_cut_by_a_full_disk_leaves_the_log_as_it_was() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let (repo, target) = validation_deployed_on(&fs);
    let log = target.join(".envlock/log.jsonl");
    // One page is left for the lock file's holder line (cleared when the lock is released).
    let filler = fs.fill(1);
    // No-change runs append `verify` records (without a journal) until one no longer fits in
    // the log's last page: that write stops part-way through the line.
    let mut failed = None;
    for _ in 0..20 {
        let before = std::fs::read(&log).unwrap();
        let run = repo.deploy(&["--target", "validation", "--yes"]);
        if run.code != 0 {
            failed = Some((before, run));
            break;
        }
    }
    let (before, run) = failed.expect("a full disk stops an append");
    assert_ne!(
        before.len() % 4096,
        0,
        "the failing write had room for part of its line"
    );
    run.code(1)
        .stderr_has("this run's record could not be written to the deployment log of `validation`")
        .stderr_has("No space left on device")
        .stderr_has("cut back");
    assert_eq!(std::fs::read(&log).unwrap(), before, "the log is as it was");
    std::fs::remove_file(filler).unwrap();
    // Nothing is wedged: the next run records, and the chain verifies.
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_failed_append_mid_line_is_cut_back() {
    let repo = Repo::base();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let log = repo.path().join("targets/validation/.envlock/log.jsonl");
    let before = std::fs::read(&log).unwrap();
    let run = repo.deploy_env(
        &["--target", "validation", "--yes"],
        &[("ENVLOCK_FAILPOINT", "log-append-enospc")],
    );
    run.code(1)
        .stderr_has("this run's record could not be written to the deployment log of `validation`")
        .stderr_has("cut back");
    assert_eq!(std::fs::read(&log).unwrap(), before);
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.deploy(&["log", "verify", "--target", "validation"])
        .code(0);
}

/// The names in `dir` that start with `.tmp-` (work in progress of a run).
fn tmp_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    names.sort();
    names
}

#[test]
fn an_apply_that_fills_the_disk_removes_its_partial_generation() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let (repo, target) = validation_deployed_on(&fs);
    // Pages for the lock's holder line and the journal; none for the new generation.
    let filler = fs.fill(2);
    let long = format!("https://validation.example.com/{}", "x".repeat(40_000));
    repo.edit(
        "environments/validation.toml",
        &[(
            "endpoint = \"https://validation.example.com/healthz\"",
            &format!("endpoint = \"{long}\""),
        )],
    );
    repo.commit("a resource larger than the space left");
    for attempt in 0..3 {
        let run = repo.deploy(&["--target", "validation", "--yes"]);
        assert_ne!(run.code, 0, "attempt {attempt}: {}", run.stderr);
        run.stderr_has("No space left on device");
        assert_eq!(
            tmp_entries(&target.join("generations")),
            Vec::<String>::new(),
            "attempt {attempt} left its partial generation"
        );
    }
    std::fs::remove_file(filler).unwrap();
    repo.deploy(&["--target", "validation", "--yes"])
        .code(0)
        .stderr_has("is live at generation 2");
}

#[cfg(feature = "failpoints")]
#[test]
fn a_prune_killed_midway_is_cleaned_up_by_the_next_run_of_any_kind() {
    use crate::harness::Paused;
    let repo = Repo::base();
    repo.edit(
        "environments/validation.toml",
        &[(
            "path = \"targets/validation\"",
            "path = \"targets/validation\"\nkeep = 2",
        )],
    );
    repo.commit("keep two generations");
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.edit(
        "environments/validation.toml",
        &[(
            "endpoint = \"https://validation.example.com/healthz\"",
            "endpoint = \"https://validation.example.com/ready\"",
        )],
    );
    repo.commit("a change");
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.edit(
        "environments/validation.toml",
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 8\n")],
    );
    repo.commit("another change");
    // Generation 3 is live and recorded; pruning generation 1 is killed half-way.
    Paused::start(
        repo.path(),
        &["--target", "validation", "--yes"],
        "dir-prune-mid",
        None,
        &[],
    )
    .kill9();
    let generations = repo.path().join("targets/validation/generations");
    let left = tmp_entries(&generations);
    assert!(
        left.len() == 1 && left[0].starts_with(".tmp-prune-1-"),
        "{left:?}"
    );
    // A run with nothing to change (no new generation, nothing to prune) removes it.
    repo.deploy(&["--target", "validation", "--yes"])
        .code(0)
        .stderr_has("No changes")
        .stderr_has("Removed leftover work files of an earlier run: generations/.tmp-prune-1-");
    assert_eq!(tmp_entries(&generations), Vec::<String>::new());
}

#[test]
fn a_deployment_refuses_to_append_to_a_damaged_log() {
    let repo = Repo::base();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let target = repo.path().join("targets/validation");
    let log = target.join(".envlock/log.jsonl");
    // One byte of the first record, edited by hand.
    let text = std::fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"adopt\"", "\"apply\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&log, &edited).unwrap();
    let before = crate::harness::snapshot(&target);
    for args in [
        &["--target", "validation", "--yes"][..],
        &["rollback", "--target", "validation", "--yes"][..],
    ] {
        repo.deploy(args)
            .code(3)
            .stderr_has(
                "the deployment log of `validation` does not verify, so nothing is appended to it",
            )
            .stderr_has("record 1 (line 1) was edited");
        assert_eq!(crate::harness::snapshot(&target), before, "{args:?}");
    }
}
