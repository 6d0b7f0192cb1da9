//! Parse-only baseline: `parse-only DIR` reads every `DIR/environments/*.toml` from the working
//! tree, parses each with `toml::from_str::<toml::Table>` and prints how many files it parsed.
//! This is the floor for `deploy check`, which must at least read and parse the same files.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: parse-only DIR");
        return ExitCode::from(64);
    };
    let envs = dir.join("environments");
    let entries = match std::fs::read_dir(&envs) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("parse-only: {}: {e}", envs.display());
            return ExitCode::FAILURE;
        }
    };
    let mut files = 0usize;
    let mut keys = 0usize;
    for entry in entries {
        let path = match entry {
            Ok(e) => e.path(),
            Err(e) => {
                eprintln!("parse-only: {}: {e}", envs.display());
                return ExitCode::FAILURE;
            }
        };
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("parse-only: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        match toml::from_str::<toml::Table>(&text) {
            Ok(table) => keys += table.len(),
            Err(e) => {
                eprintln!("parse-only: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        files += 1;
    }
    println!("{files}");
    // Keep the parsed result observable so nothing can be optimised away.
    std::hint::black_box(keys);
    ExitCode::SUCCESS
}
