//! Every kind of problem `deploy check` can report, in one table: its code (the `error[CODE]`
//! of the text output, `code` in JSON, `envlock/CODE` as a SARIF rule), what it means, and
//! what to do about it.
//!
//! Invariant: every code a [`crate::diagnostic::Diagnostic`] is made with is listed here (a
//! test reads `src/` to hold it), so a code-scanning rule id never changes behind users' backs.

use crate::diagnostic::Class;

/// One kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The diagnostic's code, e.g. `foreign-account`.
    pub code: &'static str,
    /// `Safety` for the environment lock itself (deploying refuses it with exit 3).
    pub class: Class,
    /// One sentence: what the problem is.
    pub summary: &'static str,
    /// What to do about it, in general (each problem also carries its own hint).
    pub help: &'static str,
}

const fn safety(code: &'static str, summary: &'static str, help: &'static str) -> Rule {
    Rule {
        code,
        class: Class::Safety,
        summary,
        help,
    }
}

const fn config(code: &'static str, summary: &'static str, help: &'static str) -> Rule {
    Rule {
        code,
        class: Class::Config,
        summary,
        help,
    }
}

/// The table, safety problems first, then by the order the loader meets them.
pub const RULES: &[Rule] = &[
    safety(
        "foreign-account",
        "An environment's configuration contains the account of another environment.",
        "Use the environment's own account: this is usually a value copied from another environment's file.",
    ),
    safety(
        "foreign-marker",
        "An environment's configuration contains a marker (host name, URL...) of another environment.",
        "Use the environment's own value: this is usually a value copied from another environment's file.",
    ),
    safety(
        "duplicate-account",
        "Two environments are locked to the same account.",
        "Give each environment an account of its own.",
    ),
    safety(
        "duplicate-identity",
        "An account or marker identifies two environments.",
        "Accounts and markers must each belong to exactly one environment.",
    ),
    safety(
        "duplicate-target",
        "Two environments deploy to the same target.",
        "Give each environment a target of its own.",
    ),
    safety(
        "overlapping-target",
        "An environment's target is inside another environment's target.",
        "Give each environment a target apart from every other environment's.",
    ),
    safety(
        "symlinked-target",
        "A target path goes through a symlink committed in the repository.",
        "Write the real path: a committed symlink can lead a target into another environment's.",
    ),
    config(
        "syntax",
        "An environment file is not valid TOML.",
        "Fix the TOML syntax at the position shown.",
    ),
    config(
        "unknown-key",
        "A key that envlock does not know (often a typo).",
        "Remove or correct the key: unknown keys are errors so that a typo is never ignored.",
    ),
    config(
        "invalid-type",
        "A key has a value of the wrong type.",
        "See the environment file format in README.md (`deploy schema` prints it as a JSON Schema).",
    ),
    config(
        "missing-field",
        "A required key is missing.",
        "Add the key.",
    ),
    config(
        "invalid-utf8",
        "An environment file is not UTF-8 text.",
        "Re-save the file as UTF-8.",
    ),
    config(
        "file-too-large",
        "An environment file is larger than envlock reads.",
        "Split the settings into layers.",
    ),
    config(
        "empty-file",
        "An environment or layer file is empty.",
        "Give it settings, or delete it.",
    ),
    config(
        "invalid-name",
        "A file name is not a valid environment or layer name.",
        "Rename the file: lowercase letters, digits and `-` (layers start with `_`).",
    ),
    config(
        "invalid-secret",
        "A secret reference is malformed.",
        "Write `{ secret = \"env:NAME\" }` or `{ secret = \"file:PATH\" }`.",
    ),
    config(
        "extends-cycle",
        "Layers extend each other in a cycle.",
        "Remove one `extends` entry of the cycle.",
    ),
    config(
        "extends-too-deep",
        "Too many layers stack through `extends`.",
        "Flatten the chain: a layer may extend several layers side by side.",
    ),
    config(
        "unknown-layer",
        "`extends` names a layer that does not exist.",
        "Name an existing layer (`environments/_NAME.toml`), or add it.",
    ),
    config(
        "layer-identity",
        "A layer sets an environment's identity (account, markers or target).",
        "Move it into each environment's own file.",
    ),
    config(
        "invalid-account",
        "`account` is empty or has surrounding spaces.",
        "Write the environment's account exactly.",
    ),
    config(
        "protected-without-branch",
        "A protected environment has no `branch`.",
        "Add `branch = \"main\"`: a protected environment deploys only reviewed commits.",
    ),
    config(
        "invalid-branch",
        "`branch` is empty.",
        "Name the branch deployed commits must be reachable from.",
    ),
    config(
        "invalid-marker",
        "A marker is too short to identify an environment.",
        "Use a distinctive string such as a host name.",
    ),
    config(
        "invalid-number",
        "A number is out of range.",
        "Use a value within the range shown.",
    ),
    config(
        "invalid-duration",
        "A duration is zero or cannot be read.",
        "Write a duration such as \"30s\" or \"2m\".",
    ),
    config(
        "invalid-command",
        "A command is empty or written as a shell string.",
        "Write commands as argv arrays, e.g. [\"curl\", \"-fsS\", \"http://...\"].",
    ),
    config(
        "invalid-format",
        "`[notify] format` is not one envlock delivers, or `url` and `format` are not given together.",
        "Write `format = \"pagerduty\"`, `\"cloudevents\"` or `\"alertmanager\"` beside `url`.",
    ),
    config(
        "invalid-url",
        "`[notify] url` is not https (http only to loopback), or carries a credential.",
        "Use an https URL without user:password or a token in the query; put the token in `token = { secret = ... }`.",
    ),
    config(
        "invalid-retries",
        "`retries` is out of range.",
        "Use a value within the range shown.",
    ),
    config(
        "unknown-target-kind",
        "`[target] kind` names a kind envlock does not have.",
        "Use `dir`, `etcd` or `exec`.",
    ),
    config(
        "invalid-keep",
        "`keep` is out of range.",
        "Use a value within the range shown.",
    ),
    config(
        "invalid-path",
        "A target's `path` or `state` is empty.",
        "Name the directory.",
    ),
    config(
        "invalid-endpoints",
        "An etcd target has no endpoints.",
        "List the cluster's endpoints.",
    ),
    config(
        "invalid-prefix",
        "An etcd prefix does not start and end with `/`, or contains `.envlock/`.",
        "Use a prefix such as \"/asr/prod/\".",
    ),
    config(
        "invalid-options",
        "`[target] options` is not a table.",
        "Write the provider's options as a table.",
    ),
    config(
        "invalid-state",
        "An exec target's `state` is neither a directory nor a `[target.state]` table of kind `dir` (with `path`), `etcd` (with `endpoints` and a `prefix`) or `provider` (with `protocol = 2`).",
        "Name a directory, or a shared store that every deployer reaches.",
    ),
    config(
        "invalid-target",
        "An environment has both `[target]` and `[targets.NAME]`.",
        "An environment is one `[target]` or a fleet of `[targets.NAME]`; keep one of them.",
    ),
    config(
        "invalid-rollout",
        "A `[rollout]` wave names a target that does not exist or is already in an earlier wave, `\"*\"` is not in the last wave, a target is in no wave, or `[rollout]` is beside a single `[target]`.",
        "Name every `[targets.NAME]` in exactly one `[[rollout.wave]]`; end with `targets = [\"*\"]` for the rest.",
    ),
    config(
        "invalid-verify",
        "A `[[rollout.verify]]` signal is not exactly one of `http` (with `status`, `body`) and `prometheus` (with `query`, `compare`), or a URL or `compare` does not parse.",
        "Write `http = \"http://…\"`, or `prometheus = \"http://…:9090\"` with `query` and a `compare` such as \"> 0\".",
    ),
    config(
        "invalid-protocol",
        "An exec target's `protocol` is not 1 or 2.",
        "Use 1 (one provider process per call, the default) or 2 (one per run, batched writes; the provider must speak it).",
    ),
    config(
        "invalid-settings",
        "`settings` is not a table.",
        "Write one table per resource under [settings].",
    ),
    config(
        "invalid-resource-name",
        "A resource name cannot be used as a file name or key.",
        "Use letters, digits, `-`, `_` and `.`, e.g. `asr-worker`.",
    ),
    config(
        "invalid-resource",
        "A resource is not a table.",
        "Write one table per resource under [settings].",
    ),
    config(
        "invalid-schema",
        "A schema file is not a valid JSON Schema.",
        "Fix the schema file.",
    ),
    config(
        "unknown-schema",
        "`schema` names a schema that does not exist.",
        "Add `schemas/NAME.schema.json`, or name an existing one.",
    ),
    config(
        "schema",
        "The settings violate the environment's schema.",
        "Correct the value, or the schema.",
    ),
    config(
        "after-cycle",
        "`after` gates an environment on itself, or forms a cycle.",
        "Promotion must flow one way; remove one `after` entry.",
    ),
    config(
        "unknown-environment",
        "`after` names an environment that does not exist.",
        "Name an existing environment.",
    ),
];

/// The rule of `code`, if it is in the table.
pub fn find(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.code == code)
}

/// The rule of `code`, or a plain one for a code missing from the table (never expected: the
/// test below holds the table complete), so that a report is never lost.
pub fn rule(code: &'static str, class: Class) -> Rule {
    find(code).copied().unwrap_or(Rule {
        code,
        class,
        summary: "A problem in the configuration.",
        help: "See the message and its hint.",
    })
}

/// The stable code-scanning id of a code: `envlock/foreign-account`.
pub fn id(code: &str) -> String {
    format!("envlock/{code}")
}

/// `foreign-account` as `ForeignAccount` (SARIF's `name`).
pub fn name(code: &str) -> String {
    code.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.rs` file under `src/`, with its path.
    fn sources() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    out.push((p.display().to_string(), text));
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut out,
        );
        out
    }

    /// The literal a `Diagnostic::new(` call starts with, or what it starts with instead.
    fn first_argument(after: &str) -> Result<&str, &str> {
        let rest = after.trim_start();
        match rest.strip_prefix('"') {
            Some(lit) => Ok(&lit[..lit.find('"').unwrap()]),
            None => Err(&rest[..rest.find([',', '\n']).unwrap_or(rest.len())]),
        }
    }

    #[test]
    fn every_code_a_diagnostic_is_made_with_is_in_the_table() {
        let mut literal = 0;
        let mut computed = Vec::new();
        for (path, text) in sources() {
            if path.ends_with("rules.rs") || path.ends_with("diagnostic.rs") {
                continue;
            }
            for (at, _) in text.match_indices("Diagnostic::new(") {
                match first_argument(&text[at + "Diagnostic::new(".len()..]) {
                    Ok(code) => {
                        literal += 1;
                        assert!(find(code).is_some(), "{path}: `{code}` is not in RULES");
                    }
                    Err(expr) => computed.push(format!("{path}: {expr}")),
                }
            }
        }
        assert!(literal > 40, "only {literal} literal codes found");
        // A code computed elsewhere: each site's possible codes are listed here by hand (a new
        // site fails this test until it is).
        let by_hand: &[(&str, &str, &[&str])] = &[
            (
                "config/mod.rs",
                "code",
                &["unknown-key", "invalid-type", "missing-field", "syntax"],
            ),
            (
                "safety/mod.rs",
                "code",
                &["duplicate-account", "duplicate-identity"],
            ),
            (
                "safety/mod.rs",
                "if owner.is_account { \"foreign-account\" } else { \"foreign-marker\" }",
                &["foreign-account", "foreign-marker"],
            ),
            (
                "safety/mod.rs",
                "if same {",
                &["duplicate-target", "overlapping-target"],
            ),
        ];
        for site in &computed {
            assert!(
                by_hand
                    .iter()
                    .any(|(file, expr, _)| site.contains(file)
                        && site.ends_with(&format!(": {expr}"))),
                "a diagnostic's code is computed at {site}: list its codes in this test"
            );
        }
        for (_, _, codes) in by_hand {
            for code in *codes {
                assert!(find(code).is_some(), "`{code}` is not in RULES");
            }
        }
    }

    #[test]
    fn every_code_in_the_table_is_used_once_in_the_table_and_somewhere_in_src() {
        let all: String = sources()
            .into_iter()
            .filter(|(p, _)| !p.ends_with("rules.rs"))
            .map(|(_, t)| t)
            .collect();
        for (i, r) in RULES.iter().enumerate() {
            assert!(
                RULES[..i].iter().all(|o| o.code != r.code),
                "{} twice",
                r.code
            );
            assert!(
                all.contains(&format!("\"{}\"", r.code)),
                "`{}` is in RULES but no diagnostic uses it",
                r.code
            );
        }
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(id("foreign-account"), "envlock/foreign-account");
        assert_eq!(name("protected-without-branch"), "ProtectedWithoutBranch");
        assert_eq!(name("schema"), "Schema");
    }
}
