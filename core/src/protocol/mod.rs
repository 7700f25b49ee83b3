//! The typed federation protocol: the messages a node and the coordinator exchange, as Cohort's own types, and
//! the one place that converts them to and from the wire (`cohort.v2`, [`proto`]).
//!
//! Every other module works with these types. The gRPC adapters only move them across a connection, and an
//! in-memory transport runs them through the same encoding, so no two transports can disagree about the wire.
//! Decoding checks every field: a message with a missing part, a wrong length or an unknown enum value is a
//! typed [`ProtocolError`], never a panic.
//!
//! # Example
//! ```
//! use cohort_core::protocol::{proto, DataReport, JoinKeys, JoinRequest};
//! let join = JoinRequest {
//!     federation_id: "demo".into(),
//!     keys: JoinKeys::default(),
//!     data: Some(DataReport { fingerprint: "ab".into(), examples: 151.2, label_histogram: vec![60, 91] }),
//! };
//! let wire = proto::JoinRequest::from(join.clone());
//! assert_eq!(JoinRequest::try_from(wire).unwrap(), join);
//! ```

pub mod codec;
mod ledger;
mod messages;
mod plan;
mod secure;

pub use codec::{BodyEncoding, BodyError};
pub use messages::*;

/// The generated protobuf types and tonic client and server for `cohort.v2`.
#[allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]
pub mod proto {
    tonic::include_proto!("cohort.v2");
}

/// A message that does not decode into the typed protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A required part of a message is absent.
    #[error("the message has no {0}")]
    Missing(&'static str),
    /// A field holds a value this version does not accept.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A streamed body that does not match its header.
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl ProtocolError {
    fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid { field, reason: reason.to_string() }
    }
}

/// A `u64` from the wire as a `usize`.
fn usize_of(field: &'static str, v: u64) -> Result<usize, ProtocolError> {
    usize::try_from(v).map_err(|_| ProtocolError::invalid(field, format!("{v} does not fit this machine")))
}

/// Exactly `N` bytes from the wire.
fn array_of<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], ProtocolError> {
    <[u8; N]>::try_from(bytes)
        .map_err(|_| ProtocolError::invalid(field, format!("{} bytes, expected {N}", bytes.len())))
}

/// An enum field's value, refusing unknown and unspecified ones.
fn enum_of<E: TryFrom<i32>>(field: &'static str, v: i32) -> Result<E, ProtocolError> {
    E::try_from(v).map_err(|_| ProtocolError::invalid(field, format!("unknown value {v}")))
}

impl From<ProtocolError> for tonic::Status {
    /// A message that does not decode is the sender's fault: `INVALID_ARGUMENT`, with the reason.
    /// The text is escaped and bounded: it may quote the message.
    fn from(e: ProtocolError) -> Self {
        tonic::Status::invalid_argument(crate::untrusted::UntrustedUpTo(&e.to_string(), 1000).to_string())
    }
}

impl From<BodyError> for tonic::Status {
    /// A body that does not match its header is the sender's fault: `INVALID_ARGUMENT`, with the reason.
    fn from(e: BodyError) -> Self {
        tonic::Status::invalid_argument(crate::untrusted::UntrustedUpTo(&e.to_string(), 1000).to_string())
    }
}

#[cfg(test)]
mod tests;
