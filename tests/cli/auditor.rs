//! The auditor's view (issue 20, item 4): `deploy log` filters, `--format csv` read back by a
//! real CSV parser, and `--format html` rendered by a real headless Chromium.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Repo, Run};

const VALIDATION: &str = "environments/validation.toml";

use crate::signing::{Key, keygen};

/// A repository with three environments and logs holding what an auditor looks for: a
/// refusal (prod's promotion gate), a rollback (validation's failing health check), records
/// of three operators, and records signed by `ana@example.com` (after `allowed_signers` was
/// committed). Returns the repository, the keys' directory and ana's key.
fn history() -> (Repo, tempfile::TempDir, Key) {
    let keys = tempfile::Builder::new()
        .prefix("envlock-keys")
        .tempdir()
        .unwrap();
    let ana = keygen(keys.path(), "ana");
    let repo = Repo::base();
    let staging = repo
        .read(VALIDATION)
        .replace("111111111111", "333333333333")
        .replace("validation", "staging");
    repo.write("environments/staging.toml", staging);
    repo.write(
        "allowed_signers",
        format!(
            "ana@example.com namespaces=\"envlock-log@*\" {}\n",
            ana.public
        ),
    );
    repo.commit("staging; allowed_signers");
    let as_user = |user: &str, env: &str| {
        let key = ana.private.display().to_string();
        repo.deploy_env(
            &["--target", env, "--yes"],
            &[
                ("USER", user),
                ("ENVLOCK_SIGNING_KEY", &key),
                ("SSH_AUTH_SOCK", ""),
            ],
        )
    };
    as_user("bob", "prod").code(3); // the promotion gate: refused
    as_user("ana", "validation").code(0);
    as_user("ana", "staging").code(0);
    repo.edit(
        VALIDATION,
        &[("[settings.worker]", "[settings.worker]\nthreads = 6")],
    );
    repo.commit("validation: 6 threads");
    as_user("carol", "validation").code(0);
    let text = repo.read(VALIDATION);
    repo.write(
        VALIDATION,
        text.replace("threads = 6", "threads = 7").replace(
            "[settings.worker]",
            "[health]\ncommand = [\"false\"]\n\n[settings.worker]",
        ),
    );
    repo.commit("validation: a failing health check");
    as_user("carol", "validation").code(4); // rolled back
    repo.write(VALIDATION, text.replace("threads = 6", "threads = 8"));
    repo.commit("validation: 8 threads, health check fixed");
    as_user("ana", "validation").code(0);
    as_user("ana", "prod").code(0);
    (repo, keys, ana)
}

/// `(environment, seq, outcome, operator user, time)` of one record.
type Row = (String, u64, String, String, String);

/// `(environment, seq, outcome, operator user, time)` of every record `deploy log ARGS
/// --format json` prints, in its order.
fn shown(repo: &Repo, args: &[&str]) -> Vec<Row> {
    let mut all = vec!["log", "--format", "json"];
    all.extend(args);
    let run = repo.deploy(&all);
    run.code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["environment"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["operator"]["user"].as_str().unwrap().to_owned(),
                r["time"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn keys_of(rows: &[Row]) -> BTreeSet<(String, u64)> {
    rows.iter().map(|r| (r.0.clone(), r.1)).collect()
}

#[test]
fn each_filter_and_their_combinations_select_exactly_the_expected_records() {
    let (repo, _keys, _) = history();
    let all = shown(&repo, &[]);
    assert_eq!(all.len(), 8, "{all:#?}");
    let expect = |pick: &dyn Fn(&Row) -> bool| {
        keys_of(&all.iter().filter(|r| pick(r)).cloned().collect::<Vec<_>>())
    };
    let got = |args: &[&str]| keys_of(&shown(&repo, args));

    assert_eq!(
        got(&["--environment", "validation"]),
        expect(&|r| r.0 == "validation")
    );
    assert_eq!(
        got(&["--target", "validation"]),
        expect(&|r| r.0 == "validation")
    );
    assert_eq!(
        got(&["--environment", "validation", "--environment", "staging"]),
        expect(&|r| r.0 == "validation" || r.0 == "staging")
    );
    assert_eq!(got(&["--operator", "carol"]), expect(&|r| r.3 == "carol"));
    let host = repo.deploy(&["log", "--format", "json"]).stdout;
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    let host = host["records"][0]["operator"]["host"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        got(&["--operator", &format!("bob@{host}")]),
        expect(&|r| r.3 == "bob")
    );
    assert!(got(&["--operator", "bob@elsewhere"]).is_empty());
    assert_eq!(
        got(&["--outcome", "rolled-back"]),
        expect(&|r| r.2 == "rolled-back")
    );
    assert_eq!(got(&["--outcome", "rolled-back"]).len(), 1);
    assert_eq!(
        got(&["--outcome", "refused", "--outcome", "rolled-back"]),
        expect(&|r| r.2 == "refused" || r.2 == "rolled-back")
    );
    // Times: a record's own time is inside both bounds (timestamps are inclusive).
    let mut times: Vec<&str> = all.iter().map(|r| r.4.as_str()).collect();
    times.sort();
    let mid = times[times.len() / 2];
    assert_eq!(got(&["--since", mid]), expect(&|r| r.4.as_str() >= mid));
    assert_eq!(got(&["--until", mid]), expect(&|r| r.4.as_str() <= mid));
    assert_eq!(
        got(&["--since", mid, "--until", mid]),
        expect(&|r| r.4 == mid)
    );
    // Dates: `--until` a date is through the end of that day.
    let today = &mid[..10];
    assert_eq!(got(&["--since", today, "--until", today]), keys_of(&all));
    assert!(got(&["--until", "2000-01-01"]).is_empty());
    assert!(got(&["--since", "2999-12-31"]).is_empty());
    // Combinations: every filter must match.
    assert_eq!(
        got(&[
            "--environment",
            "validation",
            "--operator",
            "carol",
            "--outcome",
            "applied",
            "--since",
            today
        ]),
        expect(&|r| r.0 == "validation" && r.3 == "carol" && r.2 == "applied")
    );
    // Text output is filtered the same way.
    let text = repo.deploy(&["log", "--outcome", "rolled-back"]);
    text.code(0).stdout_has("rolled-back");
    assert_eq!(
        text.stdout.lines().count(),
        3,
        "header, record, reason:\n{}",
        text.stdout
    );
}

#[test]
fn filters_that_do_not_parse_and_formats_elsewhere_are_usage_errors() {
    let repo = Repo::base();
    for (flag, value) in [
        ("--since", "yesterday"),
        ("--until", "2026-13-40"),
        ("--since", "2026-11-21T14:30:00"),
    ] {
        repo.deploy(&["log", flag, value])
            .code(64)
            .stderr_has(&format!("`{value}` is not a date or an RFC 3339 timestamp"))
            .stderr_has("e.g.")
            .stderr_has("2026-11-21T14:30:00Z");
    }
    repo.deploy(&["log", "--outcome", "rolledback"])
        .code(64)
        .stderr_has("applied, unchanged, rolled-back, failed, refused, sealed");
    repo.deploy(&["log", "verify", "--outcome", "failed"])
        .code(64);
    for format in ["csv", "html"] {
        repo.deploy(&["envs", "--format", format])
            .code(64)
            .stderr_has(&format!(
                "cannot write --format {format}: only `deploy log` can"
            ));
        repo.deploy(&["log", "verify", "--format", format]).code(64);
        repo.deploy(&["check", "--format", format]).code(64);
    }
    repo.deploy(&["log", "--environment", "nosuch"]).code(1);
}

/// RFC 4180 read back with the `csv` crate: the header, then one row per record with the
/// values `--format json` gives.
#[test]
fn csv_parses_back_into_the_records() {
    let (repo, _keys, ana) = history();
    let run = repo.deploy(&["log", "--format", "csv"]);
    run.code(0);
    let mut reader = csv::Reader::from_reader(run.stdout.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    for column in [
        "time",
        "environment",
        "seq",
        "action",
        "outcome",
        "commit",
        "operator",
        "generation",
        "previous_generation",
        "reason",
        "signer",
        "verified",
        "resources_added",
        "resources_changed",
        "resources_removed",
    ] {
        assert!(header.iter().any(|h| h == column), "{column} in {header:?}");
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let json = repo.deploy(&["log", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(rows.len(), records.len());
    for (row, r) in rows.iter().zip(records) {
        assert_eq!(&row[col("environment")], r["environment"].as_str().unwrap());
        assert_eq!(
            row[col("seq")].parse::<u64>().unwrap(),
            r["seq"].as_u64().unwrap()
        );
        assert_eq!(&row[col("time")], r["time"].as_str().unwrap());
        assert_eq!(&row[col("outcome")], r["outcome"].as_str().unwrap());
        assert_eq!(&row[col("commit")], r["commit"].as_str().unwrap());
        assert_eq!(&row[col("reason")], r["reason"].as_str().unwrap_or(""));
        let user = r["operator"]["user"].as_str().unwrap();
        assert!(row[col("operator")].starts_with(&format!("{user}@")));
        let gen_of = |v: &serde_json::Value| v.as_u64().map_or(String::new(), |g| g.to_string());
        assert_eq!(row[col("generation")], gen_of(&r["generation"]));
        assert_eq!(
            row[col("previous_generation")],
            gen_of(&r["previous_generation"])
        );
        let names = |k: &str| {
            r["resources"][k].as_array().map_or(String::new(), |a| {
                a.iter()
                    .map(|n| n.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(";")
            })
        };
        assert_eq!(row[col("resources_added")], names("add"));
        assert_eq!(row[col("resources_changed")], names("change"));
        assert_eq!(row[col("resources_removed")], names("remove"));
        let (signer, verified) = match r["signer"].as_str() {
            Some(s) => (s, "verified"),
            None => ("", "unsigned"),
        };
        assert_eq!(&row[col("signer")], signer);
        assert_eq!(&row[col("verified")], verified);
    }
    // ana signed the last prod record, and the principal is named.
    let prod = rows
        .iter()
        .find(|r| &r[col("environment")] == "prod")
        .unwrap();
    assert_eq!(&prod[col("signer")], ana.fingerprint.as_str());
    assert_eq!(&prod[col("principal")], "ana@example.com");
    // Filtered like the other formats.
    let one = repo.deploy(&["log", "--format", "csv", "--outcome", "refused"]);
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(one.stdout.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][col("outcome")], "refused");
    assert!(rows[0][col("reason")].contains("promotion gate"));
}

#[test]
fn a_broken_log_shows_broken_even_when_the_filter_hides_the_bad_record() {
    let (repo, _keys, _) = history();
    // Record 1 of validation is edited; the filter shows only the rollback (record 3).
    let path = repo.path().join("targets/validation/.envlock/log.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    let edited = first.replacen("\"user\":\"ana\"", "\"user\":\"eve\"", 1);
    assert_ne!(first, edited);
    std::fs::write(&path, text.replacen(first, &edited, 1)).unwrap();
    let filter = ["--environment", "validation", "--outcome", "rolled-back"];

    let run = repo.deploy(&[&["log", "--format", "json"][..], &filter[..]].concat());
    run.code(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["records"].as_array().unwrap().len(), 1);
    assert_eq!(doc["records"][0]["outcome"], "rolled-back");
    assert_eq!(doc["environments"][0]["status"], "broken");
    assert_eq!(doc["environments"][0]["problem"]["line"], 1);

    let run = repo.deploy(&[&["log"][..], &filter[..]].concat());
    run.code(0)
        .stderr_has("the log of `validation` does not verify");

    let html = repo.deploy(&[&["log", "--format", "html"][..], &filter[..]].concat());
    html.code(0)
        .stdout_has("class=\"verification status-broken\"")
        .stdout_has(
            "BROKEN</strong>: the first record that does not verify is at line 1 (record 1)",
        );
    let dom = chromium_dom(&html.stdout);
    assert!(dom.contains("status-broken"), "{dom}");
    // Records after the bad one are shown, but not as verified.
    let row = row_of(&dom, "rec-validation-3");
    assert!(row.contains("sig-not-checked"), "{row}");

    let csv = repo.deploy(&[&["log", "--format", "csv"][..], &filter[..]].concat());
    csv.code(0).stderr_has("does not verify");
    assert!(csv.stdout.contains(",not-checked,"), "{}", csv.stdout);
}

/// The HTML page as Chromium renders it: every record, the rollback highlighted, signer and
/// verdict of a signed record, each record's commit linked to its diff in the page, and not a
/// single resource from the network.
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let (repo, _keys, ana) = history();
    let run = repo.deploy(&["log", "--format", "html"]);
    run.code(0);
    let html = &run.stdout;
    no_network(html);
    let dom = chromium_dom(html);
    let json = repo.deploy(&["log", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    for r in doc["records"].as_array().unwrap() {
        let id = format!("rec-{}-{}", r["environment"].as_str().unwrap(), r["seq"]);
        let row = row_of(&dom, &id);
        let outcome = r["outcome"].as_str().unwrap();
        assert!(row.contains(&format!("outcome-{outcome}")), "{row}");
        // The commit links to a diff embedded in the page.
        let href = row
            .split("href=\"#")
            .nth(1)
            .map(|s| &s[..s.find('"').unwrap()]);
        let href = href.unwrap_or_else(|| panic!("no diff link in {row}"));
        assert!(
            dom.contains(&format!("id=\"{href}\"")),
            "{href} is not in the page"
        );
    }
    let rolled = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "rolled-back")
        .unwrap();
    let row = row_of(&dom, &format!("rec-validation-{}", rolled["seq"]));
    assert!(row.contains("class=\"record outcome-rolled-back"), "{row}");
    let refused = row_of(&dom, "rec-prod-2");
    assert!(refused.contains("outcome-refused"), "{refused}");
    assert!(refused.contains("promotion gate"), "{refused}");
    // The last prod record: signed by ana, verified.
    let signed = row_of(&dom, "rec-prod-3");
    assert!(signed.contains(&ana.fingerprint), "{signed}");
    assert!(signed.contains("ana@example.com"), "{signed}");
    assert!(
        signed.contains("<span class=\"verdict\">verified</span>"),
        "{signed}"
    );
    assert!(signed.contains("sig-verified"), "{signed}");
    // The adopt record before allowed_signers existed is unsigned.
    assert!(row_of(&dom, "rec-prod-1").contains("sig-unsigned"));
    for env in ["prod", "staging", "validation"] {
        assert!(
            dom.contains(&format!(
                "class=\"verification status-ok\" id=\"verification-{env}\""
            )),
            "{env}"
        );
    }
    assert!(dom.contains("newest first"));
    assert!(dom.contains(repo.git(&["rev-parse", "HEAD"]).trim()));
    // The diff of the rolled-back commit shows the health check it added.
    assert!(dom.contains("+command = [\"false\"]"), "{dom}");

    let png = screenshot(html);
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // `ENVLOCK_REPORT_DIR=DIR` keeps the page and its picture (for the README's).
    #[allow(clippy::disallowed_methods)] // a test's switch, not part of the tool
    if let Some(dir) = std::env::var_os("ENVLOCK_REPORT_DIR") {
        std::fs::write(Path::new(&dir).join("report.html"), html).unwrap();
        std::fs::write(Path::new(&dir).join("report.png"), &png).unwrap();
    }
}

#[test]
fn markup_in_a_reason_is_shown_as_text() {
    let repo = Repo::base();
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    let path = repo.path().join("targets/validation/.envlock/log.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("not a record\n");
    std::fs::write(&path, text).unwrap();
    repo.deploy(&[
        "log",
        "seal",
        "--target",
        "validation",
        "--reason",
        "<script>alert(1)</script>",
        "--yes",
    ])
    .code(0);
    let run = repo.deploy_env(
        &["log", "--format", "html"],
        &[("USER", "<img src=x onerror=alert(2)>")],
    );
    run.code(0);
    assert!(!run.stdout.contains("<script"), "{}", run.stdout);
    no_network(&run.stdout);
    let dom = chromium_dom(&run.stdout);
    let seal = row_of(&dom, "rec-validation-3");
    assert!(
        seal.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{seal}"
    );
    assert!(seal.contains("outcome-sealed"), "{seal}");
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("class=\"verification status-sealed\""));
}

/// No `src=`/`href=` reaches outside the page: only in-page anchors.
fn no_network(html: &str) {
    for attr in ["src=", "href="] {
        for (at, _) in html.match_indices(attr) {
            let value = &html[at + attr.len()..];
            assert!(
                value.starts_with("\"#"),
                "{attr} that is not an in-page anchor: {}",
                &value[..value.len().min(80)]
            );
        }
    }
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
}

/// The `<tr>` with this id, as Chromium serialized it.
#[track_caller]
fn row_of<'d>(dom: &'d str, id: &str) -> &'d str {
    let at = dom
        .find(&format!("<tr id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row {id} in the page:\n{dom}"));
    let end = dom[at..].find("</tr>").unwrap();
    &dom[at..at + end]
}

/// The page written to a temp file, and the path of the Chromium binary (which must exist).
fn page(html: &str) -> (tempfile::TempDir, PathBuf, &'static str) {
    let chromium = "/usr/bin/chromium";
    assert!(
        Path::new(chromium).exists(),
        "headless Chromium is needed for the HTML report's tests: install it (`apt-get install -y chromium`; .ci/run does)"
    );
    let dir = tempfile::Builder::new()
        .prefix("envlock-report")
        .tempdir()
        .unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, html).unwrap();
    (dir, file, chromium)
}

fn chromium(dir: &Path, chromium: &str, args: &[String]) -> Run {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .output()
        .expect("chromium runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.code(0);
    run
}

/// `chromium --headless --dump-dom`: the DOM after rendering.
fn chromium_dom(html: &str) -> String {
    let (dir, file, bin) = page(html);
    let url = format!("file://{}", file.display());
    chromium(dir.path(), bin, &["--dump-dom".into(), url]).stdout
}

/// `chromium --headless --screenshot`: the PNG's bytes.
fn screenshot(html: &str) -> Vec<u8> {
    let (dir, file, bin) = page(html);
    let png = dir.path().join("report.png");
    let args = [
        format!("--screenshot={}", png.display()),
        "--window-size=1280,900".into(),
        format!("file://{}", file.display()),
    ];
    chromium(dir.path(), bin, &args);
    std::fs::read(&png).unwrap()
}

#[test]
fn a_commit_missing_from_the_repository_is_said_to_be_missing() {
    let repo = Repo::base();
    repo.edit(
        VALIDATION,
        &[("[settings.worker]", "[settings.worker]\nthreads = 6")],
    );
    let gone = repo.commit("validation: 6 threads");
    repo.deploy(&["--target", "validation", "--yes"]).code(0);
    // The deployed commit is rewritten away, as after a force-push and a gc.
    repo.git(&[
        "commit",
        "-q",
        "--amend",
        "-m",
        "validation: 6 threads (reworded)",
    ]);
    repo.git(&["reflog", "expire", "--expire=now", "--all"]);
    repo.git(&["gc", "-q", "--prune=now"]);
    let run = repo.deploy(&["log", "--format", "html", "--environment", "validation"]);
    run.code(0);
    let short = &gone.trim()[..12];
    run.stdout_has(&format!(
        "commit {short} is not in this repository, so its configuration cannot be shown"
    ));
    let dom = chromium_dom(&run.stdout);
    assert!(row_of(&dom, "rec-validation-1").contains("outcome-applied"));
}
