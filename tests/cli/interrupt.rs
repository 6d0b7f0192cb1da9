//! Ctrl-C in the middle of a deployment: a real SIGINT to a real `deploy` process.

use crate::harness::{Repo, snapshot, wait_for_file};

#[test]
fn ctrl_c_during_the_health_check_rolls_back() {
    let repo = Repo::ungated();
    repo.write("state/.keep", "");
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    let target = repo.path().join("targets/prod");
    let before = snapshot(&target.join("current/"));
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 17"),
            (
                "command = [\"true\"]",
                "command = [\"sh\", \"-c\", \"touch state/started; sleep 30\"]",
            ),
        ],
    );
    repo.commit("slow health check");

    let mut child = repo.spawn_deploy(&["--target", "prod", "--yes"], &[]);
    wait_for_file(&mut child, &repo.path().join("state/started"));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{stderr}");
    // Said plainly: the operator cancelled, what is live now, and that it was not checked;
    // not a failed check, not "fix the configuration".
    for line in [
        "error: you cancelled the deployment of `prod` (Ctrl-C) before its health check passed, so it was rolled back",
        "health check on generation 2 was stopped by Ctrl-C at attempt 1 before it passed",
        "live now: generation 1, as before this run; not health-checked again after the cancel",
        "hint: the check was stopped, not failed",
        "run `deploy --target prod` again and let the health check finish",
    ] {
        assert!(stderr.contains(line), "stderr lacks {line:?}:\n{stderr}");
    }
    assert!(
        !stderr.contains("fix the configuration"),
        "stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("After the rollback: health check"),
        "stderr:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_link(target.join("current")).unwrap(),
        std::path::Path::new("generations/00000001")
    );
    assert_eq!(before, snapshot(&target.join("current/")));
    assert!(!target.join(".envlock/journal.json").exists());
    let records = crate::harness::log_outcomes(&repo, "prod");
    let (outcome, reason) = records.last().unwrap();
    assert_eq!(outcome, "rolled-back");
    assert!(
        reason.starts_with(
            "cancelled by the operator (Ctrl-C) before the health check of generation 2 passed"
        ),
        "{reason}"
    );
}
