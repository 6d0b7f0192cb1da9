//! The streaming loader: what it reports does not depend on which resources it keeps.

use super::*;

fn file(path: &str, text: &str) -> InputFile {
    InputFile {
        path: path.to_owned(),
        content: Ok(text.as_bytes().to_vec()),
    }
}

fn env_file(n: usize, extends: &str, settings: &str) -> InputFile {
    file(
        &format!("environments/env-{n:02}.toml"),
        &format!(
            "[environment]\naccount = \"1000000000{n:02}\"\nschema = \"s\"\n\
             markers = [\"env-{n:02}.example.com\"]\n{extends}\n\
             [target]\nkind = \"dir\"\npath = \"/srv/env-{n:02}\"\n\n{settings}"
        ),
    )
}

/// 30 environments (several batches on any machine), two layers, and problems of every stage
/// spread over the batches, most of them leaks whose environment is let go before the
/// environment it leaks from is even parsed.
fn input() -> Input {
    let mut environments = vec![
        file(
            "environments/_shared.toml",
            "[settings.shared]\nhost = \"env-11.example.com\"\n",
        ),
        file(
            "environments/_unused.toml",
            "[environment]\naccount = \"999999999999\"\n",
        ),
        file("environments/Bad-Name.toml", "x = 1\n"),
    ];
    for n in 0..30 {
        let (extends, settings) = match n {
            // The account of an environment parsed much later.
            5 => (
                "",
                "[settings.q]\narn = \"arn:aws:sqs:x:100000000022:q\"\n".to_owned(),
            ),
            // Through a layer: a leak for 10 and 12, their own marker for 11.
            10..=12 => ("extends = [\"_shared\"]", String::new()),
            // Another's account as an integer, and not as written: in hexadecimal, and
            // with an escape in a string.
            25 => ("", "[settings.q]\nid = 100000000002\n".to_owned()),
            3 => ("", "[settings.q]\nid = 0x174876e81a\n".to_owned()),
            4 => (
                "",
                "[settings.q]\nname = \"x-10000000002\\u0032\"\n".to_owned(),
            ),
            // Another's account in a comment only: no leak (the file is a suspect, reloaded).
            6 => (
                "",
                "# not 100000000009\n[settings.q]\nport = 6\n".to_owned(),
            ),
            // A marker of another inside one's own identifier is no leak.
            7 => (
                "",
                "[settings.q]\nurl = \"https://x.env-00.example.com\"\n".to_owned(),
            ),
            15 => ("", "[settings.q]\nport = \"not a number\"\n".to_owned()),
            18 => ("", "[settings.q\n".to_owned()),
            21 => ("after = [\"env-99\"]", String::new()),
            _ => (
                "",
                format!("[settings.q]\nport = {n}\nurl = \"https://env-{n:02}.example.com\"\n"),
            ),
        };
        environments.push(env_file(n, extends, &settings));
    }
    // env-07's own marker holds env-00's.
    environments[3 + 7] = file(
        "environments/env-07.toml",
        "[environment]\naccount = \"100000000007\"\nschema = \"s\"\n\
         markers = [\"x.env-00.example.com\"]\n[target]\nkind = \"dir\"\npath = \"/srv/env-07\"\n\
         [settings.q]\nurl = \"https://x.env-00.example.com\"\n",
    );
    Input {
        environments,
        schemas: vec![file(
            "schemas/s.schema.json",
            r#"{"type": "object", "additionalProperties": {"type": "object",
                "properties": {"port": {"type": "integer"}}}}"#,
        )],
        root: None,
    }
}

/// Every diagnostic with its locations as paths and spans, in order.
fn report(config: &Config) -> Vec<String> {
    let at = |(loc, label): &(Loc, String)| {
        format!(
            "{}:{:?} {label}",
            config.sources.get(loc.file).path,
            loc.span
        )
    };
    config
        .diagnostics
        .iter()
        .map(|d| {
            format!(
                "{} {:?} {:?} {} | {:?} | {:?} | {:?}",
                d.code,
                d.class,
                d.environment,
                d.message,
                d.primary.as_ref().map(at),
                d.secondary.iter().map(at).collect::<Vec<_>>(),
                d.hint
            )
        })
        .collect()
}

#[test]
fn what_is_reported_does_not_depend_on_what_is_kept() {
    let all = load_keeping(input(), Keep::All);
    let expected = report(&all);
    let codes: Vec<(&str, Option<&str>)> = all
        .diagnostics
        .iter()
        .map(|d| (d.code, d.environment.as_deref()))
        .collect();
    for wanted in [
        ("invalid-name", Some("Bad-Name")),
        ("foreign-account", Some("env-05")),
        ("foreign-marker", Some("env-10")),
        ("foreign-marker", Some("env-12")),
        ("foreign-account", Some("env-25")),
        ("foreign-account", Some("env-03")),
        ("foreign-account", Some("env-04")),
        ("unknown-environment", Some("env-21")),
    ] {
        assert!(codes.contains(&wanted), "{wanted:?} not in {codes:#?}");
    }
    for quiet in ["env-06", "env-07", "env-11"] {
        assert!(
            !codes.iter().any(|c| c.1 == Some(quiet)),
            "{quiet}: {codes:#?}"
        );
    }
    assert!(codes.iter().any(|c| c.1 == Some("env-15")), "{codes:#?}");
    assert!(all.broken.contains(&"env-18".to_owned()));
    assert!(all.environments.iter().all(|e| e.settings.is_kept()));

    let nothing = load_keeping(input(), Keep::Nothing);
    assert_eq!(report(&nothing), expected);
    assert!(nothing.environments.iter().all(|e| !e.settings.is_kept()));
    assert_eq!(
        nothing.get("env-05").map(|e| e.resource_count),
        Some(1),
        "the count of resources stays"
    );

    let one = load_keeping(input(), Keep::Only("env-12"));
    assert_eq!(report(&one), expected);
    let kept: Vec<&str> = one
        .environments
        .iter()
        .filter(|e| e.settings.is_kept())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(kept, ["env-12"]);
    assert_eq!(one.get("env-12").map(|e| e.settings.len()), Some(1));
    assert_eq!(one.names(), all.names());
}

#[test]
#[should_panic(expected = "keep them")]
fn resources_let_go_are_never_read_as_none() {
    let config = load_keeping(input(), Keep::Only("env-03"));
    let env = config.get("env-04").expect("env-04 loads");
    let _ = env.settings.len();
}
