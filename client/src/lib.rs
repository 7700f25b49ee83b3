//! The Cohort client node: local data ([`data`]), local training and evaluation ([`trainer`]), the privacy budget
//! it enforces itself ([`budget`]), and the loop that talks to the coordinator ([`node`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod data;
pub mod node;
pub mod privacy;
pub mod secure;
pub mod trainer;
pub mod work;
