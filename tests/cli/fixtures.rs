//! Every fixture in tests/fixtures/invalid/ is the base repository with some files replaced, and
//! `expected.stderr` holds the exact output `deploy check` must produce for it.
//! Run with ENVLOCK_BLESS=1 to rewrite the expected files after an intended change.

use std::path::Path;

use crate::harness::{Repo, fixtures};

fn cases(kind: &str) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[allow(clippy::disallowed_methods)] // test harness switch, not part of the tool
fn bless() -> bool {
    std::env::var_os("ENVLOCK_BLESS").is_some()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn invalid_fixtures_produce_their_exact_errors() {
    let mut failures = Vec::new();
    let all = cases("invalid");
    assert!(all.len() >= 20, "fixtures went missing: {}", all.len());
    for case in all {
        let repo = Repo::with_overlay(&case);
        let run = repo.deploy(&["check"]);
        let expected_path = case.join("expected.stderr");
        if bless() {
            std::fs::write(&expected_path, &run.stderr).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no expected.stderr", name(&case)));
        if run.code != 1 || run.stderr != expected || !run.stdout.is_empty() {
            failures.push(format!(
                "== {} (exit {})\n--- expected\n{expected}\n--- actual\n{}\n--- stdout\n{}",
                name(&case),
                run.code,
                run.stderr,
                run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_fixtures_pass() {
    let all = cases("valid");
    assert!(!all.is_empty());
    for case in all {
        let repo = Repo::with_overlay(&case);
        let run = repo.deploy(&["check"]);
        assert_eq!(run.code, 0, "{}: {}", name(&case), run.stderr);
        run.stdout_has("ok:");
    }
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let repo = Repo::base();
    let mut big = String::from("[environment]\naccount = \"333333333333\"\nschema = \"svc\"\n");
    while big.len() <= 4 * 1024 * 1024 {
        big.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    repo.write("environments/huge.toml", &big);
    repo.commit("huge");
    let run = repo.deploy(&["check"]);
    run.code(1)
        .stderr_has(&format!(
            "error[file-too-large]: environments/huge.toml is {} bytes; environment files are limited to 4194304 bytes",
            big.len()
        ))
        .stderr_has("split the settings into layers");
    // The other environments are still checked.
    assert!(!run.stderr.contains("prod.toml"), "{}", run.stderr);
}
