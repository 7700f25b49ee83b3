//! The Cohort client node: local data ([`data`], shared with the coordinator's central evaluation), local
//! training and evaluation ([`trainer`]), DP-SGD with the privacy budget it enforces itself ([`privacy`]), its
//! privacy ledger store ([`ledger`]), what may leave the node ([`outbound`]), the client side of secure aggregation ([`secure`]), the loop that talks to
//! the coordinator ([`node`]) and the link it talks over ([`link`]: the typed calls, and their gRPC
//! implementation).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use cohort_core::data;
pub mod journal;
pub mod ledger;
pub mod link;
pub mod node;
pub mod outbound;
pub mod privacy;
pub mod secure;
pub mod trainer;
pub mod work;
