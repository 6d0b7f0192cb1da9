//! `deploy plan --format markdown` and `deploy diff --format markdown`: a merge-request comment
//! body that fits GitHub's limit, masks secrets and keeps every diff fenced.

use crate::harness::{Repo, fixtures};

/// The most bytes a body may have (`markdown::BUDGET`); GitHub's limit is 65,536 characters.
const BUDGET: usize = 60_000;

/// Fences open and close in pairs and `<details>` blocks are closed, never nested, never cut by
/// a fence; returns the number of `<details>` blocks.
#[track_caller]
fn balanced(body: &str) -> usize {
    let mut fence: Option<usize> = None;
    let (mut open, mut blocks) = (false, 0);
    for line in body.lines() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match fence {
            Some(n) if ticks >= n && line.trim_end_matches('`').is_empty() => fence = None,
            Some(_) => {}
            None if ticks >= 3 => fence = Some(ticks),
            None if line.starts_with("<details>") => {
                assert!(!open, "nested <details>:\n{body}");
                (open, blocks) = (true, blocks + 1);
            }
            None if line == "</details>" => {
                assert!(open, "</details> without <details>:\n{body}");
                open = false;
            }
            None => {}
        }
    }
    assert!(fence.is_none() && !open, "unbalanced:\n{body}");
    blocks
}

#[test]
fn a_plan_is_a_comment_with_its_table_and_a_diff_per_resource() {
    let repo = Repo::ungated();
    let run = repo.deploy(&["plan", "--target", "prod", "--format", "markdown"]);
    run.code(0);
    let body = &run.stdout;
    assert!(
        body.starts_with("### envlock plan for <code>prod</code>\n\nCommit <code>"),
        "{body}"
    );
    assert!(body.contains("| Environment | Target | Live generation | Add | Change | Remove |\n"));
    let target = repo.path().join("targets/prod");
    assert!(body.contains(&format!(
        "| <code>prod</code> | <code>dir {}</code> | none (the first apply adopts the target) | 1 | 0 | 0 |\n",
        target.display()
    )), "{body}");
    assert!(body.contains("<details><summary><code>+ worker</code> (add)</summary>\n\n```diff\n--- live/worker.toml\n+++ desired/worker.toml\n"), "{body}");
    assert!(
        body.contains("+threads = 16\n```\n\n</details>\n"),
        "{body}"
    );
    assert!(
        body.ends_with("**Plan: 1 to add, 0 to change, 0 to remove.**\n"),
        "{body}"
    );
    // Only the comment on stdout: the text plan is not printed too.
    assert!(!body.contains("Plan for"), "{body}");
    assert_eq!(balanced(body), 1);

    // After an apply and a change: the live generation and a changed resource.
    repo.deploy(&["--target", "prod", "--yes"]).code(0);
    repo.edit(
        "environments/prod.toml",
        &[("threads = 16", "threads = 32")],
    );
    repo.commit("more threads");
    let run = repo.deploy(&[
        "plan",
        "--target",
        "prod",
        "--format",
        "markdown",
        "--detailed-exitcode",
    ]);
    run.code(2);
    assert!(
        run.stdout.contains(" | 1 | 0 | 1 | 0 |\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("-threads = 16\n+threads = 32\n```"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_secret_never_appears_and_is_masked_as_in_the_text_plan() {
    let repo = Repo::with_overlay(&fixtures().join("valid/secrets"));
    let value = "s3cret-db-password-for-prod";
    let env = [("PROD_DB_PASSWORD", value)];
    let md = repo.deploy_env(&["plan", "--target", "prod", "--format", "markdown"], &env);
    md.code(0);
    let text = repo.deploy_env(&["plan", "--target", "prod"], &env);
    text.code(0);
    for run in [&md, &text] {
        assert!(!run.stdout.contains(value) && !run.stderr.contains(value));
    }
    let masked = "+db_password = \"(secret, new)\"";
    assert!(text.stdout.contains(masked), "{}", text.stdout);
    assert!(md.stdout.contains(&format!("{masked}\n")), "{}", md.stdout);
    assert_eq!(balanced(&md.stdout), 1);
}

#[test]
fn a_large_plan_is_cut_between_resources_below_the_limit() {
    let repo = Repo::ungated();
    let mut toml = repo.read("environments/validation.toml");
    // One resource whose value alone is larger than a comment, then thousands of small ones.
    toml.push_str(&format!(
        "\n[settings.a-huge]\nqueue = \"arn:aws:sqs:eu-west-1:111111111111:huge\"\nengine = \"conformer-ctc\"\nthreads = 1\nendpoint = \"{}\"\n",
        "y".repeat(100_000)
    ));
    for i in 0..3000 {
        toml.push_str(&format!(
            "\n[settings.r-{i:04}]\nqueue = \"arn:aws:sqs:eu-west-1:111111111111:q\"\nengine = \"conformer-ctc\"\nthreads = 4\n"
        ));
    }
    repo.write("environments/validation.toml", toml);
    repo.commit("thousands of resources");
    let run = repo.deploy(&["plan", "--target", "validation", "--format", "markdown"]);
    run.code(0);
    let body = &run.stdout;
    assert!(
        body.len() <= BUDGET && body.chars().count() < 65_536,
        "{}",
        body.len()
    );
    let shown = balanced(body);
    // The huge one is described, the small ones shown until the budget ends.
    assert!(
        body.contains(
            "<details><summary><code>+ a-huge</code> (add)</summary>\n\nThis diff is 7 lines (100"
        ),
        "{}",
        &body[..2000]
    );
    assert!(body.contains(
        "too long for a comment: <code>deploy plan --target validation</code> shows it."
    ));
    assert!(!body.contains(&"y".repeat(1000)));
    let left = 3002 - shown;
    assert!(shown > 10 && left > 0, "{shown}");
    assert!(body.contains(&format!(
        "_{left} resources not shown here (a comment is limited to 60,000 characters): run <code>deploy plan --target validation</code> to see the whole plan._\n\n**Plan: 3002 to add, 0 to change, 0 to remove.**\n"
    )), "{}", &body[body.len() - 400..]);
}

#[test]
fn a_diff_between_commits_is_a_comment_with_fenced_resource_diffs() {
    let repo = Repo::base();
    let from = repo.git(&["rev-parse", "--short=12", "HEAD"]);
    repo.edit(
        "environments/prod.toml",
        &[
            ("threads = 16", "threads = 32"),
            // Backticks in a value: the fence must be longer than any run of them.
            (
                "https://prod.example.com/healthz",
                "https://prod.example.com/```healthz````",
            ),
        ],
    );
    repo.edit(
        "environments/validation.toml",
        &[("branch = \"main\"", "branch = \"release\"")],
    );
    repo.commit("more threads");
    let to = repo.git(&["rev-parse", "--short=12", "HEAD"]);
    let run = repo.deploy(&["diff", "HEAD~1", "HEAD", "--format", "markdown"]);
    run.code(0);
    let body = &run.stdout;
    assert!(body.starts_with(&format!(
        "### envlock diff <code>{from}</code> → <code>{to}</code>\n\n2 of 2 environments differ between <code>{from}</code> (<code>HEAD&#126;1</code>) and <code>{to}</code> (<code>HEAD</code>).\n"
    )), "{body}");
    assert!(body.contains("| <code>prod</code> | changed | 0 | 1 | 0 |\n| <code>validation</code> | changed | 0 | 1 | 0 |\n"), "{body}");
    assert!(body.contains(&format!(
        "<details><summary><code>&#126; worker</code> (change)</summary>\n\n`````diff\n--- worker @ {from}\n+++ worker @ {to}\n"
    )), "{body}");
    assert!(
        body.contains("+endpoint = \"https://prod.example.com/```healthz````\"\n"),
        "{body}"
    );
    assert!(
        body.contains("<code>&#126; (environment, target and checks)</code> (change)"),
        "{body}"
    );
    assert!(
        body.contains("-branch = \"main\"\n+branch = \"release\"\n"),
        "{body}"
    );
    assert!(
        body.ends_with("**0 to add, 2 to change, 0 to remove** in 2 environments.\n"),
        "{body}"
    );
    assert_eq!(balanced(body), 2);
}
