//! Bytes sent to the model server, decoded as a KServe V2 `infer` body and as a TF Serving V1 `:predict` body.
//! Each must give a matrix of exactly rows × features values or a named error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let features: Vec<String> = ["age", "bp", "chol"].map(String::from).to_vec();
    if let Ok((_, m)) = cohort_serving::input::decode_v2(&features, bytes, 1024) {
        assert_eq!(m.values.len(), m.rows * features.len());
    }
    if let Ok(m) = cohort_serving::input::decode_v1(&features, bytes, 1024) {
        assert_eq!(m.values.len(), m.rows * features.len());
    }
});
