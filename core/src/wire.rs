//! Helpers for the gRPC messages: the generated API, round references and chunked model transfer.
//!
//! Models travel as little-endian `f32` (or `u64` for encrypted bodies) in chunks of [`CHUNK_BYTES`], far below
//! gRPC's 4 MiB message limit, so no single message grows with the model.

use crate::ids::{ModelVersion, Round};

/// The generated protobuf types and tonic client and server for `cohort.v1`.
#[allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]
pub mod proto {
    tonic::include_proto!("cohort.v1");
}

/// Bytes per streamed chunk (1 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest message either side accepts (4 MiB: one chunk plus headroom for headers).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Builds a [`proto::RoundRef`].
pub fn round_ref(federation_id: &str, round: Round, version: ModelVersion) -> proto::RoundRef {
    proto::RoundRef { federation_id: federation_id.to_owned(), round: round.0, model_version: version.0 }
}

/// Splits bytes into transfer chunks of at most [`CHUNK_BYTES`].
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    bytes.chunks(CHUNK_BYTES).map(<[u8]>::to_vec)
}

/// Reassembles a chunked body while enforcing its declared size.
#[derive(Debug)]
pub struct BodyAssembler {
    expected: usize,
    bytes: Vec<u8>,
}

/// A body that does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More bytes arrived than the header declared.
    #[error("body exceeds its declared size of {expected} bytes")]
    TooLong {
        /// Declared size.
        expected: usize,
    },
    /// The stream ended early.
    #[error("body has {actual} bytes but its header declared {expected}")]
    TooShort {
        /// Declared size.
        expected: usize,
        /// Received size.
        actual: usize,
    },
}

impl BodyAssembler {
    /// Starts a body of exactly `expected` bytes. Memory is reserved as chunks arrive, never ahead of them, so a
    /// lying header cannot make the receiver allocate.
    pub fn new(expected: usize) -> Self {
        Self { expected, bytes: Vec::new() }
    }

    /// Appends a chunk.
    ///
    /// # Errors
    /// [`BodyError::TooLong`] when the chunk overflows the declared size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        if self.bytes.len() + chunk.len() > self.expected {
            return Err(BodyError::TooLong { expected: self.expected });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Returns the body.
    ///
    /// # Errors
    /// [`BodyError::TooShort`] when fewer bytes arrived than declared.
    pub fn finish(self) -> Result<Vec<u8>, BodyError> {
        if self.bytes.len() != self.expected {
            return Err(BodyError::TooShort { expected: self.expected, actual: self.bytes.len() });
        }
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunked_bodies_reassemble(len in 0usize..(3 * CHUNK_BYTES), extra in 1usize..10) {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut a = BodyAssembler::new(len);
            for c in chunks(&body) {
                prop_assert!(c.len() <= CHUNK_BYTES);
                a.push(&c).unwrap();
            }
            prop_assert_eq!(a.finish().unwrap(), body);
            let mut short = BodyAssembler::new(len + extra);
            short.push(&vec![0; len]).unwrap();
            let too_short = matches!(short.finish(), Err(BodyError::TooShort { .. }));
            prop_assert!(too_short);
            let mut long = BodyAssembler::new(len);
            let too_long = matches!(long.push(&vec![0; len + extra]), Err(BodyError::TooLong { .. }));
            prop_assert!(too_long);
        }
    }
}
