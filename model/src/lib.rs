//! Cohort's models, with no privacy, network or storage concern: what central evaluation, serving and the
//! DP-SGD of `cohort_dp` share.
//!
//! - [`spec`]: the model specification of a federation's plan ([`ModelSpec`], [`TaskKind`]).
//! - [`layout`]: the flat parameter layout every node, the registry and serving agree on, and the one
//!   initialization.
//! - [`loss`] and [`batch`]: the per-example losses, summed over a borrowed batch of examples.
//! - [`dense`]: the burn stack of dense layers ([`DenseStack`]): forward, prediction, burn's summed gradient, and
//!   the probed forward pass ghost clipping needs.
//! - [`linear`]: closed-form per-example gradients of one-layer models, weighted by the caller (1 for SGD, the
//!   clip factor for DP-SGD).
//! - [`train`]: ordinary minibatch SGD (with FedProx) and prediction through the flat vector.
//!
//! Every fallible function returns [`ModelError`] (or [`train::TrainError`] for training settings).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;
pub mod dense;
mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod spec;
pub mod train;

pub use batch::Batch;
pub use dense::{DenseStack, ProbedForward, features_tensor, inference_device, tensor_values, training_device};
pub use error::ModelError;
pub use layout::parameter_count;
pub use loss::Loss;
pub use spec::{ModelSpec, TaskKind};
