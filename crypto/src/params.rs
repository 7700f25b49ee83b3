//! Parameter sets for secure aggregation, their validation and a record-friendly summary.
//!
//! # Security justification
//! The ring is `Z_q[X]/(X^N + 1)` with `N = 4096` and `q = 2^62 - 2^16 + 1` (prime, `q ≡ 1 mod 2^16`,
//! so it is NTT-friendly for every `N ≤ 2^15`). The Homomorphic Encryption Security Standard
//! (Albrecht et al., homomorphicencryption.org, 2018, Table 1: uniform and ternary secrets,
//! error σ ≈ 3.2, 128-bit classical security) allows `log2 q ≤ 109` at `N = 4096`; our
//! `log2 q ≈ 62` is far inside that bound. `N = 2048` would allow only 54 bits and is rejected.
//! Secrets are uniform ternary, errors are centered binomial with `η = 21` (σ = √(η/2) ≈ 3.24,
//! matching the standard's σ = 3.2). [`SecAggParams::validate`] enforces these bounds unless the
//! set is explicitly flagged as toy parameters.
//!
//! # Correctness budget
//! The aggregate plaintext is `Δ·M + E` with `M = Σ_i m_i` and `E = Σ_i e_i − Σ_k smudge_k`.
//! Decoding is exact iff `|E| < Δ/2` and `Δ·|M| + |E| < q/2`. With `n_max` clients and at most
//! `n_max` responding key holders: `|E| ≤ n_max·η + n_max·2^b` (b = smudging bits), and
//! `|m_i| ≤ W·max(R, 1)·2^f + 1` per coordinate (W = max weight, R = clip, f = fraction bits).
//! `Δ` is the smallest power of two above `2·|E|max`; validation checks the remaining headroom.

use crate::canon::Canon;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tfhe::core_crypto::commons::ciphertext_modulus::CiphertextModulus;
use tfhe_ntt::prime64::Plan;
use thiserror::Error;

/// The default modulus `q = 2^62 − 2^16 + 1`, a prime with `q ≡ 1 (mod 2^16)`.
pub const DEFAULT_MODULUS: u64 = (1u64 << 62) - (1u64 << 16) + 1;

/// Largest `log2 q` allowed at 128-bit classical security for ternary secrets, by ring degree,
/// from the HE Security Standard (homomorphicencryption.org, 2018), Table 1.
const HE_STANDARD_MAX_LOG_Q: [(usize, u32); 6] = [
    (1024, 27),
    (2048, 54),
    (4096, 109),
    (8192, 218),
    (16384, 438),
    (32768, 881),
];

/// Errors from parameter validation.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ParamsError {
    /// `N` must be a power of two between 16 and 32768.
    #[error("polynomial size {0} must be a power of two in [16, 32768]")]
    BadPolynomialSize(usize),
    /// `q` must be a prime below 2^62 with `q ≡ 1 (mod 2N)`.
    #[error("modulus {modulus} is not an NTT-friendly prime below 2^62 for N = {n}")]
    BadModulus {
        /// The rejected modulus.
        modulus: u64,
        /// The ring degree.
        n: usize,
    },
    /// The ring is too small or the modulus too large for 128-bit security.
    #[error(
        "N = {n}, log2 q = {log_q} is below 128-bit security (HE standard allows log2 q <= {max_log_q}); use toy parameters only in tests"
    )]
    Insecure {
        /// The ring degree.
        n: usize,
        /// Bit length of q.
        log_q: u32,
        /// Largest admissible bit length for that degree (0 if none).
        max_log_q: u32,
    },
    /// The error distribution is narrower than the HE standard's σ = 3.2.
    #[error("error eta {0} too small: centered binomial needs eta >= 21 (sigma >= 3.2)")]
    ErrorTooNarrow(u32),
    /// An encoding parameter is out of its documented range.
    #[error("invalid encoding parameter: {0}")]
    BadEncoding(&'static str),
    /// The message and noise do not fit in `q`: sums could wrap or noise could corrupt them.
    #[error(
        "headroom exceeded: messages need {message_bits} bits above a noise scale of {delta_bits} bits, q has {modulus_bits}"
    )]
    HeadroomExceeded {
        /// Bits of the largest possible aggregate message.
        message_bits: u32,
        /// log2 Δ.
        delta_bits: u32,
        /// Bit length of q.
        modulus_bits: u32,
    },
}

/// Secure aggregation parameters (plain data, serde). Build a [`SecAggContext`] with
/// [`SecAggParams::build`] to use them; building validates them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Ring degree `N` (coordinates per chunk / mask polynomial).
    pub polynomial_size: usize,
    /// Prime ciphertext modulus `q`, below 2^62, `q ≡ 1 mod 2N`.
    pub modulus: u64,
    /// Fixed-point fraction bits `f`: the quantization step is `2^-f`.
    pub fraction_bits: u32,
    /// Clip range `R`: each coordinate is clipped to `[-R, R]` before encoding.
    pub clip: f64,
    /// Largest FedAvg weight `W` a client may use (weights live in `[0, W]`).
    pub max_weight: f64,
    /// Largest number of clients (and of responding key holders) in one round.
    pub max_clients: u32,
    /// Centered binomial error parameter `η` (σ = √(η/2)).
    pub error_eta: u32,
    /// Smudging noise of a partial decryption is uniform on `[-2^b, 2^b)`, `b = smudging_bits`.
    pub smudging_bits: u32,
    /// Largest vector length (model coordinates plus the weight coordinate) a round may use.
    /// The statistical flooding bound is stated over this many coordinates.
    pub max_coordinates: usize,
    /// Marks toy parameters (small `N`): **not secure**, for tests only. Skips the security checks.
    pub insecure_toy: bool,
}

impl Default for SecAggParams {
    /// The production set: N = 4096, q = 2^62 − 2^16 + 1, f = 16, R = 4, W = 16, 256 clients,
    /// η = 21, smudging 2^20.
    fn default() -> Self {
        Self {
            polynomial_size: 4096,
            modulus: DEFAULT_MODULUS,
            fraction_bits: 16,
            clip: 4.0,
            max_weight: 16.0,
            max_clients: 256,
            error_eta: 21,
            smudging_bits: 20,
            max_coordinates: 1 << 24,
            insecure_toy: false,
        }
    }
}

impl SecAggParams {
    /// Toy parameters, **not secure**: ring degree `n` (≥ 16, power of two), otherwise the
    /// default encoding. For fast tests of the algebra only.
    pub fn toy_insecure(n: usize) -> Self {
        Self {
            polynomial_size: n,
            insecure_toy: true,
            ..Self::default()
        }
    }

    /// Builder-style setter for the encoding parameters.
    pub fn with_encoding(mut self, fraction_bits: u32, clip: f64, max_weight: f64) -> Self {
        self.fraction_bits = fraction_bits;
        self.clip = clip;
        self.max_weight = max_weight;
        self
    }

    /// Builder-style setter for the maximum number of clients.
    pub fn with_max_clients(mut self, max_clients: u32) -> Self {
        self.max_clients = max_clients;
        self
    }

    /// Writes every field, in declaration order, into a canonical transcript (announcement hash).
    pub(crate) fn write_canonical(&self, c: &mut Canon) {
        // Exhaustive destructuring: adding a field without hashing it does not compile.
        let Self {
            polynomial_size,
            modulus,
            fraction_bits,
            clip,
            max_weight,
            max_clients,
            error_eta,
            smudging_bits,
            max_coordinates,
            insecure_toy,
        } = self;
        c.usize(0x20, *polynomial_size)
            .u64(0x21, *modulus)
            .u64(0x22, u64::from(*fraction_bits))
            .f64(0x23, *clip)
            .f64(0x24, *max_weight)
            .u64(0x25, u64::from(*max_clients))
            .u64(0x26, u64::from(*error_eta))
            .u64(0x27, u64::from(*smudging_bits))
            .usize(0x28, *max_coordinates)
            .bool(0x29, *insecure_toy);
    }

    /// Validates the parameters without building an NTT plan.
    ///
    /// # Errors
    /// Any [`ParamsError`] describing the first violated constraint.
    pub fn validate(&self) -> Result<Derived, ParamsError> {
        let n = self.polynomial_size;
        if !(16..=32768).contains(&n) || !n.is_power_of_two() {
            return Err(ParamsError::BadPolynomialSize(n));
        }
        let q = self.modulus;
        let bad_modulus = ParamsError::BadModulus { modulus: q, n };
        if !(3..1 << 62).contains(&q) || !(q - 1).is_multiple_of(2 * n as u64) {
            return Err(bad_modulus);
        }
        // tfhe core_crypto's custom (non power-of-two) ciphertext modulus type.
        let tfhe_modulus =
            CiphertextModulus::<u64>::try_new(u128::from(q)).map_err(|_| bad_modulus.clone())?;
        if tfhe_modulus.is_power_of_two() {
            return Err(bad_modulus);
        }
        let log_q = 64 - q.leading_zeros();
        if !self.insecure_toy {
            let max_log_q = HE_STANDARD_MAX_LOG_Q
                .iter()
                .find(|(deg, _)| *deg == n)
                .map_or(0, |(_, b)| *b);
            if n < 4096 || log_q > max_log_q {
                return Err(ParamsError::Insecure {
                    n,
                    log_q,
                    max_log_q,
                });
            }
            if self.error_eta < 21 {
                return Err(ParamsError::ErrorTooNarrow(self.error_eta));
            }
        }
        if self.error_eta == 0 || self.error_eta > 32 {
            return Err(ParamsError::BadEncoding("error_eta must be in [1, 32]"));
        }
        if self.fraction_bits > 40 {
            return Err(ParamsError::BadEncoding("fraction_bits must be <= 40"));
        }
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip <= 1e9) {
            return Err(ParamsError::BadEncoding(
                "clip must be finite, > 0 and <= 1e9",
            ));
        }
        if !(self.max_weight.is_finite() && self.max_weight > 0.0 && self.max_weight <= 1e9) {
            return Err(ParamsError::BadEncoding(
                "max_weight must be finite, > 0 and <= 1e9",
            ));
        }
        if self.max_coordinates == 0 || self.max_coordinates > 1 << 32 {
            return Err(ParamsError::BadEncoding(
                "max_coordinates must be in [1, 2^32]",
            ));
        }
        if self.max_clients == 0 {
            return Err(ParamsError::BadEncoding("max_clients must be >= 1"));
        }
        if self.smudging_bits > 48 {
            return Err(ParamsError::BadEncoding("smudging_bits must be <= 48"));
        }
        let scale = f64::from(self.fraction_bits).exp2();
        let per_client_f = (self.max_weight * self.clip.max(1.0) * scale).ceil() + 1.0;
        if per_client_f >= 2f64.powi(62) {
            return Err(ParamsError::HeadroomExceeded {
                message_bits: 64,
                delta_bits: 0,
                modulus_bits: log_q,
            });
        }
        let per_client = per_client_f as u128;
        let clients = u128::from(self.max_clients);
        let message_bound = per_client * clients;
        let noise_bound =
            clients * u128::from(self.error_eta) + clients * (1u128 << self.smudging_bits);
        // Smallest power of two Δ with Δ > 2·noise_bound, i.e. |E| < Δ/2.
        let delta_bits = 128 - (2 * noise_bound).leading_zeros();
        let message_bits = 128 - message_bound.leading_zeros();
        let half_q = u128::from((q - 1) / 2);
        let fits = delta_bits < 63
            && message_bound
                .checked_shl(delta_bits)
                .and_then(|m| m.checked_add(noise_bound))
                .is_some_and(|total| {
                    total <= half_q && message_bound << delta_bits >> delta_bits == message_bound
                });
        if !fits {
            return Err(ParamsError::HeadroomExceeded {
                message_bits,
                delta_bits,
                modulus_bits: log_q,
            });
        }
        Ok(Derived {
            delta_bits,
            per_client_bound: per_client as u64,
            message_bound: message_bound as u64,
            noise_bound: noise_bound as u64,
        })
    }

    /// Validates the parameters and builds the NTT plan (tfhe-ntt `prime64::Plan`).
    ///
    /// # Errors
    /// Any [`ParamsError`]; [`ParamsError::BadModulus`] if `q` is not a prime with a primitive
    /// `2N`-th root of unity.
    ///
    /// # Example
    /// ```
    /// use cohort_crypto::SecAggParams;
    /// let ctx = SecAggParams::default().build().unwrap();
    /// assert_eq!(ctx.polynomial_size(), 4096);
    /// assert_eq!(ctx.delta(), 1 << 30);
    /// ```
    pub fn build(&self) -> Result<SecAggContext, ParamsError> {
        let derived = self.validate()?;
        let plan =
            Plan::try_new(self.polynomial_size, self.modulus).ok_or(ParamsError::BadModulus {
                modulus: self.modulus,
                n: self.polynomial_size,
            })?;
        Ok(SecAggContext {
            params: self.clone(),
            derived,
            plan: Arc::new(plan),
        })
    }
}

/// Quantities derived from validated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derived {
    /// `log2 Δ`, the plaintext scale above the noise.
    pub delta_bits: u32,
    /// Largest `|m|` one client may contribute in one coordinate.
    pub per_client_bound: u64,
    /// Largest `|Σ m|` over `max_clients` clients.
    pub message_bound: u64,
    /// Largest `|E|` (errors plus smudging) in an aggregate.
    pub noise_bound: u64,
}

/// Validated parameters plus the NTT plan; cheap to clone (the plan is shared).
#[derive(Clone, Debug)]
pub struct SecAggContext {
    params: SecAggParams,
    derived: Derived,
    plan: Arc<Plan>,
}

impl SecAggContext {
    /// The parameters this context was built from.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }
    /// Derived bounds.
    pub fn derived(&self) -> Derived {
        self.derived
    }
    /// Ring degree `N`.
    pub fn polynomial_size(&self) -> usize {
        self.params.polynomial_size
    }
    /// Modulus `q`.
    pub fn modulus(&self) -> u64 {
        self.params.modulus
    }
    /// Plaintext scale `Δ = 2^delta_bits`.
    pub fn delta(&self) -> u64 {
        1u64 << self.derived.delta_bits
    }
    /// The negacyclic NTT plan for `(N, q)`.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    /// Quantization step `2^-f` of the fixed-point encoding.
    pub fn quantization_step(&self) -> f64 {
        (-f64::from(self.params.fraction_bits)).exp2()
    }
    /// Number of chunks (mask polynomials) needed for `len` coordinates.
    pub fn num_chunks(&self, len: usize) -> usize {
        len.div_ceil(self.params.polynomial_size)
    }
    /// Coordinates `[start, end)` covered by chunk `j` of a vector of `len` coordinates.
    /// The last chunk is truncated (its remaining body coefficients are never sent).
    pub fn chunk_range(&self, j: usize, len: usize) -> std::ops::Range<usize> {
        let n = self.params.polynomial_size;
        let start = (j * n).min(len);
        start..(start + n).min(len)
    }
    /// A serializable record of the parameters, for every round record.
    pub fn summary(&self) -> ParamsSummary {
        let p = &self.params;
        ParamsSummary {
            polynomial_size: p.polynomial_size,
            modulus: p.modulus,
            modulus_bits: 64 - p.modulus.leading_zeros(),
            fraction_bits: p.fraction_bits,
            clip: p.clip,
            max_weight: p.max_weight,
            max_clients: p.max_clients,
            secret_distribution: "uniform ternary {-1,0,1}".into(),
            error_distribution: format!(
                "centered binomial eta={} (sigma={:.2})",
                p.error_eta,
                (f64::from(p.error_eta) / 2.0).sqrt()
            ),
            smudging_distribution: format!("uniform [-2^{0}, 2^{0})", p.smudging_bits),
            delta_bits: self.derived.delta_bits,
            security: if p.insecure_toy {
                "TOY PARAMETERS, NOT SECURE".into()
            } else {
                "128-bit classical, HE Security Standard 2018 Table 1 (ternary secret)".into()
            },
            insecure_toy: p.insecure_toy,
        }
    }
}

/// Record-friendly description of a parameter set (N, q, noise, f, R, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsSummary {
    /// Ring degree N.
    pub polynomial_size: usize,
    /// Modulus q.
    pub modulus: u64,
    /// Bit length of q.
    pub modulus_bits: u32,
    /// Fixed-point fraction bits f.
    pub fraction_bits: u32,
    /// Clip range R.
    pub clip: f64,
    /// Maximum FedAvg weight W.
    pub max_weight: f64,
    /// Maximum clients per round.
    pub max_clients: u32,
    /// Secret key distribution.
    pub secret_distribution: String,
    /// Encryption error distribution.
    pub error_distribution: String,
    /// Partial-decryption smudging distribution.
    pub smudging_distribution: String,
    /// log2 Δ.
    pub delta_bits: u32,
    /// Security claim and its source.
    pub security: String,
    /// True for toy parameters.
    pub insecure_toy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_fits() {
        let ctx = SecAggParams::default().build().unwrap();
        let d = ctx.derived();
        assert_eq!(d.delta_bits, 30);
        // Δ·M + E ≤ (q − 1)/2
        let total =
            u128::from(d.message_bound) * u128::from(ctx.delta()) + u128::from(d.noise_bound);
        assert!(total <= u128::from((ctx.modulus() - 1) / 2));
        assert!(2 * d.noise_bound < ctx.delta());
        assert_eq!(ctx.summary().modulus_bits, 62);
    }

    #[test]
    fn default_modulus_is_ntt_prime() {
        assert!(Plan::try_new(4096, DEFAULT_MODULUS).is_some());
        assert!(Plan::try_new(16, DEFAULT_MODULUS).is_some());
        assert!(Plan::try_new(4096, DEFAULT_MODULUS + 2).is_none());
    }

    #[test]
    fn rejects_insecure_and_bad() {
        let p = SecAggParams {
            polynomial_size: 2048,
            ..SecAggParams::default()
        };
        assert!(matches!(p.validate(), Err(ParamsError::Insecure { .. })));
        let p = SecAggParams {
            error_eta: 4,
            ..SecAggParams::default()
        };
        assert_eq!(p.validate(), Err(ParamsError::ErrorTooNarrow(4)));
        let p = SecAggParams {
            polynomial_size: 3000,
            ..SecAggParams::default()
        };
        assert_eq!(p.validate(), Err(ParamsError::BadPolynomialSize(3000)));
        let p = SecAggParams {
            modulus: (1 << 61) + 1,
            ..SecAggParams::default()
        };
        assert!(p.build().is_err());
        let p = SecAggParams::default().with_max_clients(1 << 20);
        assert!(matches!(
            p.validate(),
            Err(ParamsError::HeadroomExceeded { .. })
        ));
        let p = SecAggParams::default().with_encoding(16, f64::NAN, 1.0);
        assert!(matches!(p.validate(), Err(ParamsError::BadEncoding(_))));
        assert!(SecAggParams::toy_insecure(64).build().is_ok());
    }
}
