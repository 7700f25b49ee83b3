//! In-process federations: nodes and a coordinator in one process, through the same protocol core, strategies,
//! DP and secure aggregation as a deployment, with only the transport swapped.
//!
//! - [`MemoryLink`] is a [`CoordinatorLink`](cohort_client::link::CoordinatorLink) that hands each typed message
//!   to a coordinator's [`Host`](cohort_coordinator::host::Host) after encoding it to protobuf bytes and decoding
//!   it again, exactly as the gRPC transport does, so the two transports cannot drift apart.
//! - In a simulation, the memory transport runs in virtual time (the cost model is in [`conditions`]): each
//!   client's compute speed and link come from [`Conditions`], clients may drop out, rounds close by the
//!   deployment's own deadline logic on a virtual clock, and the report gives the federation's simulated
//!   wall-clock time. The order of every message is then fixed by virtual time, so a
//!   seeded run gives the same model at any thread count.
//! - [`Simulation`] builds a whole federation over one data set ([`Source`]) dealt out by a [`Partition`], runs
//!   it, and reports per round and per client ([`SimulationReport`]); `cohort simulate` is its command line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conditions;
pub mod dataset;
pub mod fuzzing;
mod link;
mod network;
pub mod partition;
mod report;
mod simulation;
mod threads;
mod work;

pub use conditions::{Conditions, Profile, Spread};
pub use dataset::{Builtin, Source};
pub use link::MemoryLink;
pub use partition::Partition;
pub use report::{ClientPartition, ClientRound, FailedAttempt, RoundRow, SimulationReport, SimulationSettings};
pub use simulation::{
    DEFAULT_ROUND_DEADLINE_SECS, FEDERATION, HOLDOUT_FRACTION, SimError, Simulation, Transport, Watch,
};
pub use work::Observation;
