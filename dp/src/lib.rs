//! Differential privacy for Cohort.
//!
//! - [`accountant`]: Rényi-DP (Mironov 2017; Mironov, Talwar, Zhang 2019) accounting of the
//!   Poisson-subsampled Gaussian mechanism, the Balle et al. 2020 conversion to (ε, δ), and noise calibration.
//! - [`clip`]: per-example clipping: in closed form for one-layer models (over `cohort_model::linear`), by ghost
//!   norms for deeper stacks (Li et al. 2022; Bu et al. 2023), and a reference path.
//! - [`noise`]: Gaussian noise from an AES-256-CTR CSPRNG with a floating-point-attack resistant sampler.
//! - [`sampling`]: Poisson sampling of batches (Abadi et al. 2016; Chua et al. 2024).
//! - [`sgd`]: the DP-SGD step and loop that tie them together, on `cohort_model`'s networks.
//! - [`releases`]: the small OpenDP releases a client makes besides its model (noisy count, label histogram,
//!   feature statistics).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod clip;
pub mod noise;
pub mod releases;
pub mod sampling;
pub mod sgd;
