//! Progress during long waits: the health check's attempts as plain lines without a terminal,
//! and as a spinner line on a pseudo-terminal (`script(1)`, as the prompt tests use).

use crate::harness::Repo;
use crate::prompt::on_terminal;

/// prod with a health check that fails `failures` times (counted in `state/count`), then
/// passes; `interval` between attempts. Deployed once (generation 1) before the change.
fn repo_with_a_flaky_health_check(failures: u32, retries: u32) -> Repo {
    let repo = Repo::ungated();
    repo.write("state/.keep", "");
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let check = format!(
        "command = [\"sh\", \"-c\", \"n=$(cat state/count 2>/dev/null || echo 0); echo $((n+1)) > state/count; [ $n -ge {failures} ]\"]\nretries = {retries}\ninterval = \"100ms\""
    );
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 17"),
            ("command = [\"true\"]", check.as_str()),
        ],
    );
    repo.commit("prod: 17 threads, a health check that needs three attempts");
    repo
}

#[test]
fn without_a_terminal_each_attempt_is_one_plain_line() {
    let repo = repo_with_a_flaky_health_check(2, 3);
    let run = repo.deploy(&["--target", "prod", "--yes"]);
    run.code(0);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("health check of generation 2: attempt"))
        .collect();
    assert_eq!(lines.len(), 3, "stderr:\n{}", run.stderr);
    assert!(lines[0].starts_with("health check of generation 2: attempt 1 of 4, up to "));
    assert!(
        lines[0].contains(" left; Ctrl-C rolls back: sh -c "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("attempt 2 of 4")
            && lines[1].contains("(attempt 1: exited with status 1)"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("attempt 3 of 4"), "{}", lines[2]);
    run.stderr_has("health check passed on generation 2 (attempt 3)");
    // No spinner without a terminal: no carriage returns, no escape sequences.
    assert!(!run.stderr.contains('\r') && !run.stderr.contains('\x1b'));
}

#[test]
fn on_a_terminal_the_attempts_are_one_spinner_line() {
    let repo = repo_with_a_flaky_health_check(1, 1);
    let cmd = format!(
        "{} -C {} --target prod --yes",
        env!("CARGO_BIN_EXE_deploy"),
        repo.path().display()
    );
    let run = on_terminal(&cmd, "");
    run.code(0)
        .stdout_has("Generation 2 is live.")
        .stdout_has("health check passed on generation 2 (attempt 2)");
    // The spinner's line ([elapsed] then the message), redrawn in place: erased with `ESC [2K`.
    run.stdout_has("] health check of generation 2: attempt 1 of 2, up to ")
        .stdout_has("\x1b[2K");
    assert!(
        !run.stdout
            .contains("\nhealth check of generation 2: attempt"),
        "a plain line on a terminal:\n{}",
        run.stdout
    );
}

#[test]
fn json_mode_keeps_stdout_one_document_and_reports_attempts_on_stderr() {
    let repo = repo_with_a_flaky_health_check(1, 1);
    let run = repo.deploy(&["--target", "prod", "--yes", "--format", "json"]);
    run.code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("one document");
    assert_eq!(doc["outcome"], "applied");
    run.stderr_has("health check of generation 2: attempt 2 of 2");
}

#[test]
fn a_slow_command_without_a_terminal_says_it_is_still_waiting() {
    let repo = Repo::ungated();
    // An identity command that takes longer than the first "still waiting" line (5 s).
    repo.edit(
        "environments/prod.toml",
        &[(
            "[target]",
            "[identity]\ncommand = [\"sh\", \"-c\", \"sleep 6; echo 222222222222\"]\ntimeout = \"30s\"\n\n[target]",
        )],
    );
    repo.commit("prod: a slow identity command");
    let run = repo.deploy(&["plan", "--target", "prod"]);
    run.code(0)
        .stderr_has(
            "still waiting for the identity command `sh -c 'sleep 6; echo 222222222222'` (5s so far, up to 2",
        )
        .stderr_has("s left); Ctrl-C stops deploy\n");
}
