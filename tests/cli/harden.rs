//! Hardening: inputs and failures that once panicked, crashed or wedged a target (issue 17).

use crate::harness::Repo;

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
