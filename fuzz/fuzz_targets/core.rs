//! Scripts of messages from four peers (three roster hospitals and an outsider) against a fresh coordinator core.
//! See `cohort_sim::fuzzing` for the script format and the invariants checked after every op.
#![no_main]

use cohort_sim::fuzzing::CoreHarness;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn harness() -> &'static CoreHarness {
    static HARNESS: OnceLock<CoreHarness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join("cohort-fuzz-ca");
        std::fs::create_dir_all(&dir).expect("a directory for the fuzzing CA");
        CoreHarness::new(&dir).expect("the fuzzing CA")
    })
}

fuzz_target!(|script: &[u8]| {
    harness().run(script);
});
