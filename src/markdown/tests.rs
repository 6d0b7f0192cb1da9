use super::*;

fn change(resource: &str, action: Action, diff: &str) -> Change {
    Change {
        resource: resource.into(),
        action,
        diff: diff.into(),
    }
}

fn input<'a>(changes: &'a [Change], drift: &'a [(String, String)]) -> PlanInput<'a> {
    PlanInput {
        environment: "prod",
        account: "222222222222",
        target: "dir targets/prod",
        commit: "0123456789abcdef0123456789abcdef01234567",
        live: Some(3),
        adopts: false,
        changes,
        drift,
    }
}

/// Check the structure a renderer sees: fences open and close in pairs (a closing fence is a
/// line of at least as many backticks and nothing else), `<details>` blocks are never nested
/// and always closed, and no fence is open across a `<details>` line. Returns how many
/// `<details>` blocks there are.
fn balanced(body: &str) -> usize {
    let mut fence: Option<usize> = None;
    let mut open = false;
    let mut blocks = 0;
    for line in body.lines() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match fence {
            Some(n) if ticks >= n && line.trim_end_matches('`').is_empty() => fence = None,
            Some(_) => {}
            None if ticks >= 3 => fence = Some(ticks),
            None if line.starts_with("<details>") => {
                assert!(!open, "nested <details>");
                open = true;
                blocks += 1;
            }
            None if line == "</details>" => {
                assert!(open, "</details> without <details>");
                open = false;
            }
            None => {}
        }
    }
    assert!(fence.is_none(), "a fence is left open");
    assert!(!open, "a <details> is left open");
    blocks
}

#[test]
fn a_small_plan_has_its_table_and_one_details_per_resource() {
    let changes = [
        change(
            "api",
            Action::Add,
            "--- live/api.toml\n+++ desired/api.toml\n@@ -0,0 +1 @@\n+x = 1\n",
        ),
        change(
            "worker",
            Action::Change,
            "--- live/worker.toml\n+++ desired/worker.toml\n@@ -1 +1 @@\n-threads = 4\n+threads = 8\n",
        ),
    ];
    let drift = [(
        "worker".to_owned(),
        "edited by hand since generation 3: this reverts the edit".to_owned(),
    )];
    let body = plan(&input(&changes, &drift), BUDGET);
    assert!(body.starts_with("### envlock plan for <code>prod</code>\n\nCommit <code>0123456789ab</code>, account <code>222222222222</code>.\n"), "{body}");
    assert!(
        body.contains(
            "| Environment | Target | Live generation | Add | Change | Remove |\n\
         | --- | --- | --- | ---: | ---: | ---: |\n\
         | <code>prod</code> | <code>dir targets/prod</code> | 3 | 1 | 1 | 0 |\n"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "<details><summary><code>+ api</code> (add)</summary>\n\n```diff\n--- live/api.toml\n"
        ),
        "{body}"
    );
    assert!(body.contains("<summary><code>&#126; worker</code> (change) <b>edited by hand since generation 3: this reverts the edit</b></summary>"), "{body}");
    assert!(body.contains("+threads = 8\n```\n\n</details>\n"), "{body}");
    assert!(
        body.ends_with("**Plan: 1 to add, 1 to change, 0 to remove.**\n"),
        "{body}"
    );
    assert!(!body.contains("not shown"), "{body}");
    assert_eq!(balanced(&body), 2);
}

#[test]
fn no_changes_says_so() {
    let body = plan(&input(&[], &[]), BUDGET);
    assert!(body.contains("| 3 | 0 | 0 | 0 |"), "{body}");
    assert!(body.ends_with("**No changes.** The live state is what this commit gives.\n"));
    assert_eq!(balanced(&body), 0);
}

#[test]
fn backticks_inside_stay_inside_a_longer_fence() {
    let diff = "--- live/doc.toml\n+++ desired/doc.toml\n@@ -1 +1,3 @@\n+text = '''\n+```\n+````\n</details>\n";
    let changes = [change("doc", Action::Add, diff)];
    let body = plan(&input(&changes, &[]), BUDGET);
    assert!(
        body.contains(&format!("`````diff\n{diff}`````\n\n</details>")),
        "{body}"
    );
    assert_eq!(balanced(&body), 1);
    assert_eq!(longest_backtick_run("a`b``c````"), 4);
    assert_eq!(longest_backtick_run("none"), 0);
}

#[test]
fn thousands_of_resources_are_cut_at_a_resource_and_counted() {
    let changes: Vec<Change> = (0..5000)
        .map(|i| {
            let name = format!("r-{i:05}");
            change(&name, Action::Add, &format!("--- live/{name}.toml\n+++ desired/{name}.toml\n@@ -0,0 +1,2 @@\n+queue = \"arn:aws:sqs:eu-west-1:222222222222:q-{i}\"\n+threads = 4\n"))
        })
        .collect();
    let body = plan(&input(&changes, &[]), BUDGET);
    assert!(body.len() <= BUDGET, "{}", body.len());
    assert!(
        body.len() > BUDGET - 1000,
        "the budget is wasted: {}",
        body.len()
    );
    let shown = balanced(&body);
    assert!(shown > 50 && shown < 5000, "{shown}");
    // Whole resources, in order, then the line that says what is missing and how to see it.
    let last = format!("r-{:05}", shown - 1);
    assert!(body.contains(&format!("<code>+ {last}</code>")));
    assert!(!body.contains(&format!("<code>+ r-{shown:05}</code>")));
    assert!(body.contains(&format!(
        "_{} resources not shown here (a comment is limited to 60,000 characters): run <code>deploy plan --target prod</code> to see the whole plan._\n\n**Plan: 5000 to add, 0 to change, 0 to remove.**\n",
        5000 - shown
    )), "{}", &body[body.len() - 400..]);
    // The summary counts everything, shown or not.
    assert!(body.contains("| 5000 | 0 | 0 |"));
}

#[test]
fn a_huge_value_is_described_not_shown_and_the_rest_still_fits() {
    let huge = format!(
        "--- live/big.toml\n+++ desired/big.toml\n@@ -0,0 +1 @@\n+blob = \"{}\"\n",
        "x".repeat(200_000)
    );
    let changes = [
        change("big", Action::Add, &huge),
        change(
            "small",
            Action::Change,
            "--- a\n+++ b\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
        ),
    ];
    let body = plan(&input(&changes, &[]), BUDGET);
    assert!(body.len() <= BUDGET);
    assert!(body.contains(&format!(
        "This diff is 4 lines ({} bytes), too long for a comment: <code>deploy plan --target prod</code> shows it.",
        huge.len()
    )), "{body}");
    assert!(body.contains("+a = 2\n```"), "{body}");
    assert_eq!(balanced(&body), 2);
    assert!(!body.contains("not shown here"));
}

#[test]
fn a_secret_in_a_plan_is_masked_as_in_the_text_plan() {
    use crate::plan::{Desired, SecretUse, compute};
    let key = b"0123456789abcdef0123456789abcdef";
    let value = "hunter2-very-secret-value";
    let mut desired = Desired::default();
    desired.files.insert(
        "db".into(),
        format!("password = \"{value}\"\nuser = \"app\"\n").into_bytes(),
    );
    desired.secrets.push(SecretUse {
        resource: "db".into(),
        path: "password".into(),
        reference: "env:DB_PASSWORD".into(),
        hmac: crate::secret::hmac_hex(key, value.as_bytes()),
    });
    desired.private.insert("db".into());
    let planned = compute(desired, &BTreeMap::new(), &[], key);
    let body = plan(&input(&planned.changes, &[]), BUDGET);
    assert!(!body.contains(value), "{body}");
    assert!(body.contains("+password = \"(secret, new)\""), "{body}");
}

#[test]
fn names_and_targets_are_escaped() {
    let changes = [change("a_b", Action::Remove, "-x\n")];
    let mut i = input(&changes, &[]);
    i.target = "exec ./p --flag='x|y' <z> `w`";
    let body = plan(&i, BUDGET);
    assert!(
        body.contains("<code>exec ./p --flag=&#39;x&#124;y&#39; &#60;z&#62; &#96;w&#96;</code>"),
        "{body}"
    );
    assert!(body.contains("<code>- a&#95;b</code> (remove)"), "{body}");
    assert_eq!(text("a\nb\u{7}c"), "a bc");
}

#[test]
fn a_diff_has_a_row_per_changed_environment_and_parts_in_order() {
    let old = vec![
        (
            crate::render::HEAD_PART.to_owned(),
            "[environment]\naccount = \"1\"\n".to_owned(),
        ),
        ("gone".to_owned(), "a = 1\n".to_owned()),
        ("same".to_owned(), "b = 1\n".to_owned()),
        ("worker".to_owned(), "threads = 4\n".to_owned()),
    ];
    let mut new = old.clone();
    new[0].1 = "[environment]\naccount = \"1\"\nbranch = \"main\"\n".to_owned();
    new.remove(1);
    new[2].1 = "threads = 8\n".to_owned();
    new.push(("added".to_owned(), "c = 1\n".to_owned()));
    let changes = changes_between(&old, &new, "aaaa", "bbbb");
    let got: Vec<(&str, Action)> = changes
        .iter()
        .map(|c| (c.resource.as_str(), c.action))
        .collect();
    assert_eq!(
        got,
        [
            (crate::render::HEAD_PART, Action::Change),
            ("added", Action::Add),
            ("gone", Action::Remove),
            ("worker", Action::Change),
        ]
    );
    assert!(
        changes[3]
            .diff
            .starts_with("--- worker @ aaaa\n+++ worker @ bbbb\n")
    );
    let envs = [
        EnvDiff {
            name: "prod".into(),
            change: "changed",
            changes,
        },
        EnvDiff {
            name: "validation".into(),
            change: "unchanged",
            changes: vec![],
        },
        EnvDiff {
            name: "beta".into(),
            change: "invalid",
            changes: vec![],
        },
    ];
    let body = diff(
        &DiffInput {
            from: ("main", "aaaa"),
            to: ("HEAD", "bbbb"),
            environments: &envs,
        },
        BUDGET,
    );
    assert!(body.starts_with("### envlock diff <code>aaaa</code> → <code>bbbb</code>\n\n2 of 3 environments differ between <code>aaaa</code> (<code>main</code>) and <code>bbbb</code> (<code>HEAD</code>). Unchanged: <code>validation</code>.\n"), "{body}");
    assert!(body.contains("| <code>prod</code> | changed | 1 | 2 | 1 |\n| <code>beta</code> | invalid | 0 | 0 | 0 |\n"), "{body}");
    assert!(body.contains("#### <code>beta</code> (invalid)\n\nDoes not resolve at one of the commits: <code>deploy check --rev main</code> and <code>deploy check --rev HEAD</code> say why."), "{body}");
    assert!(
        body.ends_with("**1 to add, 2 to change, 1 to remove** in 2 environments.\n"),
        "{body}"
    );
    assert_eq!(balanced(&body), 4);
}

#[test]
fn a_diff_of_many_environments_cuts_rows_and_blocks_and_names_the_command() {
    let envs: Vec<EnvDiff> = (0..3000)
        .map(|i| EnvDiff {
            name: format!("env-{i:04}"),
            change: "changed",
            changes: vec![change(
                "worker",
                Action::Change,
                "--- worker @ a\n+++ worker @ b\n@@ -1 +1 @@\n-threads = 4\n+threads = 8\n",
            )],
        })
        .collect();
    let body = diff(
        &DiffInput {
            from: ("HEAD~1", "a"),
            to: ("HEAD", "b"),
            environments: &envs,
        },
        BUDGET,
    );
    assert!(body.len() <= BUDGET, "{}", body.len());
    let shown = balanced(&body);
    assert!(shown > 0 && shown < 3000);
    // Half the room at most for the table: its rows stop before the blocks do.
    let rows = body
        .lines()
        .filter(|l| l.starts_with("| <code>env-"))
        .count();
    assert!(rows > shown && rows < 3000, "{rows} rows, {shown} blocks");
    assert!(body.contains(&format!(
        "_{} diffs of {} environments not shown here (a comment is limited to 60,000 characters): run <code>deploy diff HEAD&#126;1 HEAD</code> to see the whole diff._",
        3000 - shown, 3000 - shown
    )), "{}", &body[body.len() - 500..]);
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(60_000), "60,000");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
