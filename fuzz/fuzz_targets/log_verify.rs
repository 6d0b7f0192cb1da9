//! The deployment log's verifier: any bytes must verify or name their first problem, without a
//! panic; and every line counted as verified must be a whole record that parses.
#![no_main]

use envlock::log;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = log::verify(data);
    let records = log::records(data);
    // Every line before the first problem verified, so each of them is a record `records`
    // parses (it skips only lines that are not records).
    assert!(
        records.len() >= v.records,
        "{} lines verified but only {} parse as records",
        v.records,
        records.len()
    );
    // Without a problem, the records verified are exactly those outside what seals set aside.
    if v.problem.is_none() {
        assert_eq!(log::trusted_records(data, &v).len(), v.records);
    }
});
