//! The Cohort coordinator: the round state machine ([`round`]), aggregation strategies ([`strategy`]), the
//! gRPC service ([`service`]) and process ([`server`]), the model registry ([`registry`]) with its validation
//! gate ([`gate`]), and the privacy audit ([`audit`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod central;
pub mod gate;
pub mod recorder;
pub mod registry;
pub mod round;
pub mod secure;
pub mod server;
pub mod service;
pub mod strategy;

pub use server::{Coordinator, CoordinatorError, RunReport};
