//! In-process federations: nodes and a coordinator in one process, through the same protocol core, strategies,
//! DP and secure aggregation as a deployment, with only the transport swapped.
//!
//! [`MemoryLink`] is a [`CoordinatorLink`](cohort_client::link::CoordinatorLink) that hands each typed message to a
//! coordinator's [`Host`](cohort_coordinator::host::Host) after encoding it to protobuf bytes and decoding it
//! again, exactly as the gRPC transport does, so the two transports cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fuzzing;
mod link;

pub use link::MemoryLink;
