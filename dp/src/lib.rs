//! Differential privacy for Cohort.
//!
//! - [`accountant`]: Rényi-DP (Mironov 2017; Mironov, Talwar, Zhang 2019) accounting of the
//!   Poisson-subsampled Gaussian mechanism, the Balle et al. 2020 conversion to (ε, δ), and noise calibration.
//! - [`dense`]: a stack of dense layers in burn whose forward pass exposes the per-layer activations and
//!   output-gradient probes needed for ghost clipping.
//! - [`linear`]: closed-form per-example gradients of logistic and linear regression (no autodiff).
//! - [`clip`]: per-example clipping, fast (ghost norms, Li et al. 2022; Bu et al. 2023) and reference paths.
//! - [`noise`]: Gaussian noise from an AES-256-CTR CSPRNG with a floating-point-attack resistant sampler.
//! - [`sampling`]: Poisson sampling of batches (Abadi et al. 2016; Chua et al. 2024).
//! - [`sgd`]: the DP-SGD step that ties them together.
//! - [`releases`]: the small OpenDP releases a client makes besides its model (noisy count, label histogram,
//!   feature statistics).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod clip;
pub mod dense;
pub mod linear;
pub mod noise;
pub mod releases;
pub mod sampling;
pub mod sgd;
