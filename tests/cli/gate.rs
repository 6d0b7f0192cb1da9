//! The promotion gate means "live and healthy there now" (issue 16, item 8): `prod` takes a
//! commit while the configuration that commit gives `validation` is the one live on
//! `validation`, and its latest health verification there passed. Commit ids are not compared.

use crate::forward::refused_untouched;
use crate::harness::{Repo, Run};

const VALIDATION: &str = "environments/validation.toml";
const PROD: &str = "environments/prod.toml";

fn deploy(repo: &Repo, env: &str) -> Run {
    repo.deploy(&["--target", env, "--yes"])
}

fn prod_target(repo: &Repo) -> std::path::PathBuf {
    repo.path().join("targets/prod")
}

#[test]
fn a_commit_that_changes_only_prod_needs_no_new_verification_of_validation() {
    let repo = Repo::base();
    deploy(&repo, "validation").code(0);
    deploy(&repo, "prod").code(0);
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    repo.commit("prod: 17 threads");
    // validation's configuration at this commit is the one live and verified there.
    deploy(&repo, "prod").code(0).stderr_has("Deployed:");
}

#[test]
fn a_rolled_back_validation_closes_the_gate() {
    let repo = Repo::base();
    let first = repo.git(&["rev-parse", "HEAD"]);
    deploy(&repo, "validation").code(0); // generation 1
    repo.edit(
        VALIDATION,
        &[("[settings.worker]\n", "[settings.worker]\nthreads = 8\n")],
    );
    let x = repo.commit("validation: 8 threads");
    deploy(&repo, "validation").code(0); // generation 2: commit x, applied and healthy
    repo.deploy(&["rollback", "--target", "validation", "--yes"])
        .code(0);

    // x was verified on validation once, but validation no longer runs what x gives it.
    refused_untouched(
        &prod_target(&repo),
        &[
            "promotion gate: `prod` deploys a commit only while the configuration it gives `validation` is live and healthy there",
            &format!(
                "`validation` runs another configuration: generation 1 (commit {}) is live there, not what commit {} gives `validation`",
                &first[..12],
                &x[..12]
            ),
            &format!("deploy commit {} to `validation` first", &x[..12]),
        ],
        || deploy(&repo, "prod"),
    );
    // plan only warns.
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("warning: promotion gate");

    deploy(&repo, "validation").code(0).stderr_has("Deployed:");
    deploy(&repo, "prod").code(0).stderr_has("Deployed:");
}

#[test]
fn an_unhealthy_validation_closes_the_gate_until_it_passes_again() {
    let repo = Repo::base();
    repo.edit(
        VALIDATION,
        &[(
            "[settings.worker]",
            "[health]\ncommand = [\"sh\", \"-c\", \"test ! -e unhealthy\"]\ntimeout = \"5s\"\n\n[settings.worker]",
        )],
    );
    repo.commit("validation: a health check");
    deploy(&repo, "validation").code(0);
    deploy(&repo, "prod").code(0);

    // validation stops passing: a no-change run records the failed verification.
    repo.write("unhealthy", "");
    deploy(&repo, "validation")
        .code(1)
        .stderr_has("is unhealthy");
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    repo.commit("prod: 17 threads");
    refused_untouched(
        &prod_target(&repo),
        &["the latest check of `validation`'s live generation 1 did not pass"],
        || deploy(&repo, "prod"),
    );

    repo.remove("unhealthy");
    deploy(&repo, "validation").code(0).stderr_has("No changes");
    deploy(&repo, "prod").code(0).stderr_has("Deployed:");
}

#[test]
fn a_hand_edited_validation_closes_the_gate_until_it_is_deployed_again() {
    let repo = Repo::base();
    deploy(&repo, "validation").code(0);
    deploy(&repo, "prod").code(0);
    // An emergency fix on validation, by hand: what runs there is no longer what any commit
    // gives it, so its health proves nothing about the commit.
    let live = repo.path().join("targets/validation/current/worker.toml");
    let text = std::fs::read_to_string(&live).unwrap();
    std::fs::write(&live, format!("{text}threads = 99\n")).unwrap();
    repo.edit(PROD, &[("threads = 16", "threads = 17")]);
    repo.commit("prod: 17 threads");
    refused_untouched(
        &prod_target(&repo),
        &[
            "promotion gate",
            "`validation`'s live generation 1 was changed by hand since it was deployed (worker)",
            "deploy commit",
        ],
        || deploy(&repo, "prod"),
    );
    repo.deploy(&["plan", "--target", "prod"])
        .code(0)
        .stderr_has("changed by hand");
    // Deploying validation puts back what the commit gives it (and verifies it).
    deploy(&repo, "validation").code(0);
    deploy(&repo, "prod").code(0).stderr_has("Deployed:");
}
