//! The saved-plan reader (`deploy apply --plan FILE`): any file must be read into a plan or
//! refused with a message, never a panic. The bytes go through a real file, as in `deploy`.
#![no_main]

use std::io::Write;

use envlock::deploy::saved::SavedPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FILE: tempfile::NamedTempFile = tempfile::NamedTempFile::new().expect("a temp file");
    }
    FILE.with(|f| {
        let mut file = f.reopen().expect("reopen");
        file.set_len(0).expect("truncate");
        file.write_all(data).expect("write");
        match SavedPlan::read(f.path()) {
            Ok(plan) => {
                let _ = plan.id();
                let _ = serde_json::to_vec(&plan).expect("a plan serializes");
            }
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
    });
});
