//! The model as the wire and the registry carry it: the specification types of `cohort_model`, re-exported
//! because the plan names them, and the byte format of a flat parameter vector (little-endian `f32`, in the
//! layout of `cohort_model::layout`).

use sha2::{Digest, Sha256};

pub use cohort_model::{ModelError, ModelSpec, TaskKind};

/// Model bytes whose length is not a whole number of `f32` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model bytes have length {0}, which is not a whole number of f32 values")]
pub struct RaggedBytes(pub usize);

/// Serializes parameters as little-endian `f32` bytes: the model's wire and artifact format.
pub fn parameters_to_bytes(params: &[f32]) -> Vec<u8> {
    crate::protocol::codec::f32s_to_le(params)
}

/// Parses little-endian `f32` bytes.
///
/// # Errors
/// [`RaggedBytes`] when the length is not a multiple of 4.
pub fn parameters_from_bytes(bytes: &[u8]) -> Result<Vec<f32>, RaggedBytes> {
    crate::protocol::codec::f32s_from_le(bytes).map_err(|_| RaggedBytes(bytes.len()))
}

/// SHA-256 of the serialized parameters, as lowercase hex.
pub fn parameters_sha256(params: &[f32]) -> String {
    hex::encode(Sha256::digest(parameters_to_bytes(params)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ragged_bytes_are_rejected() {
        assert_eq!(parameters_from_bytes(&[0, 1, 2]), Err(RaggedBytes(3)));
    }

    #[test]
    fn the_digest_is_of_the_little_endian_bytes() {
        assert_eq!(parameters_sha256(&[]), hex::encode(Sha256::digest([])));
        assert_eq!(parameters_to_bytes(&[1.0]), 1.0f32.to_le_bytes());
    }

    proptest! {
        #[test]
        fn bytes_round_trip(values in proptest::collection::vec(-1e6f32..1e6, 0..200)) {
            prop_assert_eq!(parameters_from_bytes(&parameters_to_bytes(&values)).unwrap(), values);
        }
    }
}
