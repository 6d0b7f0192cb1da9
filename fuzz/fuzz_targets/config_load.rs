//! The environment-file loader with layers and schemas: any bytes, split into files, must load
//! into environments and diagnostics (rendered as text and JSON) without a panic, an abort,
//! a hang or runaway memory.
//!
//! Input: files separated by the byte 0x1E. The first is `schemas/svc.schema.json`, then
//! `environments/_common.toml`, `environments/prod.toml`, `environments/validation.toml`, and
//! any further ones `environments/_l0.toml`, `_l1`... (layers the others may extend).
#![no_main]

use envlock::config::{self, Input, InputFile};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [
    "schemas/svc.schema.json",
    "environments/_common.toml",
    "environments/prod.toml",
    "environments/validation.toml",
];
/// More files than this are one file (a bound on the work per input, not on what is tried).
const MAX_FILES: usize = 12;

fn input(data: &[u8]) -> Input {
    let mut input = Input {
        root: Some("/nonexistent-fuzz-root".into()),
        ..Input::default()
    };
    for (i, part) in data.splitn(MAX_FILES, |&b| b == 0x1e).enumerate() {
        let path = match NAMES.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("environments/_l{}.toml", i - NAMES.len()),
        };
        let file = InputFile {
            path,
            content: Ok(part.to_vec()),
        };
        if i == 0 {
            input.schemas.push(file);
        } else {
            input.environments.push(file);
        }
    }
    input.environments.sort_by(|a, b| a.path.cmp(&b.path));
    input
}

fuzz_target!(|data: &[u8]| {
    let config = config::load(input(data));
    let text = envlock::output::render_diagnostics(&config.sources, &config.diagnostics, false);
    let styled = envlock::output::render_diagnostics(&config.sources, &config.diagnostics, true);
    assert!(config.diagnostics.is_empty() || (!text.is_empty() && !styled.is_empty()));
    for d in &config.diagnostics {
        let json = serde_json::to_string(&d.to_json(&config.sources)).expect("serializes");
        assert!(!json.is_empty());
    }
    for env in &config.environments {
        let _ = envlock::render::environment_toml(env);
        let _ = envlock::plan::settings_sha256(env);
        let _ = env.target.describe();
    }
});
