//! The Cohort coordinator: the round state machine ([`round`]) inside the sans-I/O protocol core
//! ([`federation`]), aggregation strategies ([`strategy`]), the gRPC adapter ([`service`]) and process
//! ([`server`]), the model registry ([`registry`]) with its validation
//! gate ([`gate`]), and the privacy audit ([`audit`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod central;
pub mod federation;
pub mod gate;
pub mod host;
pub mod recorder;
pub mod registry;
pub mod round;
pub mod secure;
pub mod server;
pub mod service;
pub mod strategy;

pub use server::{Coordinator, CoordinatorError, RunReport};
