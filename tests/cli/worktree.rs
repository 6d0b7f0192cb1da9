//! Configuration comes from commits only: commands that write refuse a dirty tree (read-only
//! ones run and say so, see status.rs), --rev reads old commits.

use crate::harness::Repo;

#[test]
fn modified_tracked_file_is_refused_for_every_command_that_writes() {
    let repo = Repo::base();
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 32")],
    );
    let prod = repo.read("environments/prod.toml");
    for args in [
        &["rollback", "--target", "prod", "--yes"][..],
        &["apply", "--target", "prod", "--yes"][..],
        &["--target", "prod"][..],
        &["--target", "validation", "--yes"][..],
    ] {
        repo.deploy(args)
            .code(3)
            .stderr_has("the configuration has uncommitted changes (1 file)")
            .stderr_has("modified: environments/prod.toml")
            .stderr_has("hint: deploy reads configuration from commits only");
    }
    // The edit is still there: nothing was lost.
    assert_eq!(repo.read("environments/prod.toml"), prod);
}

#[test]
fn untracked_staged_and_deleted_files_are_listed() {
    let repo = Repo::base();
    repo.write("environments/staging.toml", "[environment]\n");
    repo.write("schemas/extra.schema.json", "{}");
    repo.git(&["add", "schemas/extra.schema.json"]);
    repo.remove("environments/_common.toml");
    repo.deploy(&["apply", "--target", "prod", "--yes"])
        .code(3)
        .stderr_has("(3 files)")
        .stderr_has("deleted: environments/_common.toml")
        .stderr_has("untracked: environments/staging.toml")
        .stderr_has("staged, not committed: schemas/extra.schema.json");
}

#[test]
fn changes_outside_config_and_ignored_files_do_not_count() {
    let repo = Repo::base();
    repo.write(".gitignore", "environments/*.swp\n");
    repo.commit("ignore swap files");
    repo.write("environments/.prod.toml.swp", "junk");
    repo.write("README.md", "edited");
    // Past the cleanliness check: the next step is the (not yet built) live side, exit 1.
    let run = repo.deploy(&["plan", "--target", "prod"]);
    assert_ne!(run.code, 3, "{}", run.stderr);
    assert!(!run.stderr.contains("uncommitted"), "{}", run.stderr);
}

#[test]
fn check_reads_head_not_the_working_tree() {
    let repo = Repo::base();
    // A broken working-tree edit does not affect check, which reads HEAD.
    repo.write("environments/prod.toml", "this is not toml");
    repo.deploy(&["check"]).code(0);
}

#[test]
fn rev_reads_an_older_commit_while_the_tree_differs() {
    let repo = Repo::base();
    let good = repo.git(&["rev-parse", "HEAD"]);
    repo.edit(
        "environments/prod.toml",
        &[("eu-west-1:222222222222:jobs", "eu-west-1:111111111111:jobs")],
    );
    repo.commit("leak validation's account into prod");
    repo.write("environments/validation.toml", "garbage = ");
    repo.deploy(&["check"])
        .code(1)
        .stderr_has("error[foreign-account]");
    repo.deploy(&["check", "--rev", "HEAD~1"])
        .code(0)
        .stdout_has(&format!("valid at {} (HEAD~1)", &good[..12]));
    repo.deploy(&["check", "--rev", &good]).code(0);
    repo.deploy(&["check", "--rev", "no-such-branch"])
        .code(1)
        .stderr_has("cannot resolve revision `no-such-branch`");
}

#[test]
fn dash_c_finds_the_repository_from_a_subdirectory() {
    let repo = Repo::base();
    let sub = repo.path().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    crate::harness::deploy_in(&sub, &["check"]).code(0);
}
