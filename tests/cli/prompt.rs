//! The confirmation prompt on a real terminal: `script(1)` gives `deploy` a pseudo-terminal and
//! feeds it the operator's answer.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{Repo, Run, snapshot};

/// Run `deploy -C repo ARGS` on a pseudo-terminal, typing `answer`.
fn deploy_on_terminal(repo: &Repo, args: &str, answer: &str) -> Run {
    let cmd = format!(
        "{} -C {} {args}",
        env!("CARGO_BIN_EXE_deploy"),
        repo.path().display()
    );
    on_terminal(&cmd, answer)
}

/// Run the shell command `cmd` on a pseudo-terminal, typing `answer`.
pub(crate) fn on_terminal(cmd: &str, answer: &str) -> Run {
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) runs (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        // script(1) merges both streams into the terminal's output.
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

#[test]
fn unprotected_environment_asks_yes_or_no() {
    let repo = Repo::ungated();
    let target = repo.path().join("targets/validation");
    deploy_on_terminal(&repo, "--target validation", "n\n")
        .code(1)
        .stdout_has("[y/N]")
        .stdout_has("cancelled: nothing was changed");
    assert!(
        snapshot(&target).is_empty(),
        "a declined deploy wrote to the target"
    );

    deploy_on_terminal(&repo, "--target validation", "y\n")
        .code(0)
        .stdout_has("Generation 1 is live.");
    assert!(target.join("current/worker.toml").is_file());
}

#[test]
fn protected_environment_wants_its_name_typed() {
    let repo = Repo::ungated();
    let target = repo.path().join("targets/prod");
    // Adopted by the fixture: its stamp and `adopt` record, nothing else.
    let adopted = snapshot(&target);
    deploy_on_terminal(&repo, "--target prod", "y\n")
        .code(1)
        .stdout_has("`prod` is protected. Type its name")
        .stdout_has("type `prod` exactly to confirm");
    assert_eq!(
        snapshot(&target),
        adopted,
        "a wrong answer wrote to the target"
    );

    deploy_on_terminal(&repo, "--target prod", "prod\n")
        .code(0)
        .stdout_has("Deployed:");
    assert!(target.join("current/worker.toml").is_file());
}

#[test]
fn yes_skips_the_prompt_but_not_a_refusal() {
    let repo = Repo::ungated();
    // The stamp of `validation`'s target, under prod's path: --yes must still refuse.
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    repo.edit(
        "environments/prod.toml",
        &[("path = \"targets/prod\"", "path = \"targets/validation\"")],
    );
    repo.commit("prod points at validation's target");
    let before = snapshot(&repo.path().join("targets/validation"));
    let run = deploy_on_terminal(&repo, "--target prod --yes", "");
    // The repository side catches the shared path first; either way, exit 3 and untouched.
    run.code(3);
    assert_eq!(before, snapshot(&repo.path().join("targets/validation")));
}

#[test]
fn a_plan_cut_short_before_the_prompt_is_not_confirmed() {
    let repo = Repo::ungated_unadopted();
    let mut text = repo.read("environments/validation.toml");
    for i in 0..3000 {
        text.push_str(&format!(
            "\n[settings.r{i:04}]\nqueue = \"arn:aws:sqs:eu-west-1:111111111111:jobs\"\n\
             engine = \"conformer-ctc\"\nthreads = 4\n"
        ));
    }
    repo.write("environments/validation.toml", text);
    repo.commit("validation: 3000 resources");
    // On a terminal (stdin and stderr), stdout a pipe into a reader that stops early; the
    // operator would answer `y` to a prompt.
    let cmd = format!(
        "{{ {} -C {} --target validation; echo \"deploy exited $?\" >&2; }} | head -c 100",
        env!("CARGO_BIN_EXE_deploy"),
        repo.path().display()
    );
    let run = on_terminal(&cmd, "y\n");
    run.stdout_has("not applying: stdout was closed before the whole plan was written")
        .stdout_has("deploy exited 1");
    assert!(!run.stdout.contains("[y/N]"), "prompted:\n{}", run.stdout);
    assert!(
        !repo.path().join("targets").exists(),
        "the target was written"
    );
}

#[test]
fn ctrl_d_at_the_prompt_cancels_on_a_line_of_its_own() {
    let repo = Repo::ungated_unadopted();
    // No answer at all: the terminal sees end of input (Ctrl-D).
    let run = deploy_on_terminal(&repo, "--target validation", "");
    run.code(1).stdout_has(
        "[y/N] \r\nerror: cancelled: no answer (end of input at the prompt); nothing was changed",
    );
    assert!(
        !repo.path().join("targets").exists(),
        "the target was written"
    );
}
