//! Bytes decoded as every protobuf message either side accepts, and converted into the typed protocol.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    cohort_sim::fuzzing::decode_messages(bytes);
});
