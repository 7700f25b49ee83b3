//! Shared types of Cohort: identifiers, configuration, the typed federation protocol and its gRPC API, PKI and TLS setup, data-directory locks, model
//! specifications, local data sets read against the federation schema, evaluation metrics and the hash-chained
//! privacy ledger.
//!
//! The coordinator and the client share only this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod binding;
pub mod config;
pub mod data;
pub mod ids;
pub mod ledger;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod names;
pub mod pki;
pub mod protocol;
pub mod secret;
pub mod tls;
pub mod untrusted;

pub use ids::{ModelVersion, NodeName, Round};
