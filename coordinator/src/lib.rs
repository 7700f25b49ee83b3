//! The Cohort coordinator: the round state machine ([`round`]) inside the sans-I/O protocol core
//! ([`federation`]), aggregation strategies ([`strategy`]), the gRPC adapter ([`service`]) and process
//! ([`server`]), the model registry ([`registry`], the `cohort-registry` crate) with its validation gate
//! ([`gate`]), and the privacy audit ([`audit`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod central;
pub mod federation;
pub mod host;
pub mod influence;
pub mod limits;
pub mod recorder;
pub mod round;
pub mod secure;
pub mod server;
pub mod service;
pub mod strategy;

/// The model registry, now its own crate ([`cohort_registry`]); re-exported so `cohort_coordinator::registry::..`
/// paths keep working.
pub use cohort_registry as registry;
/// The validation gate, which lives with the registry ([`cohort_registry::gate`]).
pub use cohort_registry::gate;

pub use server::{Coordinator, CoordinatorError, RunReport};
