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
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
    assert_eq!(
        std::fs::read_link(target.join("current")).unwrap(),
        std::path::Path::new("generations/00000001")
    );
    assert_eq!(before, snapshot(&target.join("current/")));
    assert!(!target.join(".envlock/journal.json").exists());
}
