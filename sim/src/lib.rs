//! In-process federations: nodes and a coordinator in one process, through the same protocol core, strategies,
//! DP and secure aggregation as a deployment, with only the transport swapped.
//!
//! - [`MemoryLink`] is a [`CoordinatorLink`](cohort_client::link::CoordinatorLink) that hands each typed message
//!   to a coordinator's [`Host`](cohort_coordinator::host::Host) after encoding it to protobuf bytes and decoding
//!   it again, exactly as the gRPC transport does, so the two transports cannot drift apart.
//! - [`Simulation`] builds a whole federation over one data set ([`Source`]) dealt out by a [`Partition`], runs
//!   it, and reports per round and per client ([`SimulationReport`]); `cohort simulate` is its command line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dataset;
pub mod fuzzing;
mod link;
pub mod partition;
mod report;
mod simulation;
mod threads;
mod work;

pub use dataset::{Builtin, Source};
pub use link::MemoryLink;
pub use partition::Partition;
pub use report::{ClientPartition, ClientRound, RoundRow, SimulationReport, SimulationSettings};
pub use simulation::{FEDERATION, HOLDOUT_FRACTION, SimError, Simulation, Transport, Watch};
pub use work::Observation;
