//! Parameter sets for secure aggregation: validation, the noise-flooding and headroom arithmetic,
//! the residue layout of bodies, partials and shares, and a record-friendly summary.
//!
//! # Ring and security
//! The ring is `R_Q = Z_Q[X]/(X^N + 1)` with `N = 8192` and `Q = q_0·q_1·q_2` a product of the
//! three largest primes below 2^62 with `q_i ≡ 1 (mod 2N = 16384)` ([`DEFAULT_MODULI`], found and
//! checked by the `default_moduli_are_the_largest_ntt_primes` test). Elements are kept in RNS form
//! (one residue polynomial per prime, CRT, each multiplied with tfhe-ntt's negacyclic
//! `prime64::Plan`). `log2 Q = Σ log2 q_i ≈ 186.0`. The Homomorphic Encryption Security Standard
//! (Albrecht et al., homomorphicencryption.org, 2018, Table 1, ternary secrets, σ ≈ 3.2, 128-bit
//! classical security) allows `log2 Q ≤ 218` at `N = 8192`; [`SecAggParams::validate`] enforces
//! `⌈log2 Q⌉` against that table unless the set is flagged as toy parameters. Secrets are uniform
//! ternary, errors centered binomial with `η = 21` (σ = √(η/2) ≈ 3.24).
//!
//! # Noise flooding (statistical distance ≤ 2^-40 over the whole model)
//! After summing the bodies of a set `S` and subtracting the partials of a responder set `T`, the
//! plaintext is `Δ·M + E − Σ_{k∈T} u_k` with `E = Σ_{i∈S} e_i`, `|E| ≤ B_e = n_max·η` per
//! coefficient, and `u_k` each holder's flooding noise, uniform on `[−2^b, 2^b)`. Simulation
//! argument (noise flooding, Asharov et al., EUROCRYPT 2012; threshold decryption with smudging,
//! Mouchet et al., PoPETs 2021, §4–5): given `M` alone, a simulator draws the partials of all but
//! one honest responder uniformly (they are masked by `a·λ_k·Σ share_i(k)` with fewer than `t`
//! shares known, hence uniform) and sets the last honest partial so that the combination yields
//! `Δ·M − u'` with a fresh uniform `u'`. The real and simulated views differ only in that the real
//! last partial carries `u_h − E` where the simulated one carries `u_h`; per coefficient the
//! statistical distance is `|E|/2^(b+1) ≤ B_e/2^(b+1)`, and over the at most `L_max =
//! max_coordinates` released coefficients (a coefficient packs several coordinates, so counting
//! coordinates over-counts) at most `L_max·B_e/2^(b+1)`. The smudging width `b` is **derived**: the
//! smallest integer with `log2(L_max·B_e) − b − 1 ≤ −λ`, λ = `flooding_bits` (≥ 40 unless toy).
//! Defaults: `B_e = 256·21 = 5376`, `L_max = 2^24`, `λ = 40` ⇒ `b = 76`.
//! [`SecAggContext::statistical_distance_log2`] gives the bound for a given length.
//!
//! # Correctness and packing budget
//! Each coefficient carries `k = slots` signed fixed-point values above Δ:
//! `coefficient = Δ·Σ_j m_j·2^(j·w) + noise`, `w = slot_bits`. With `n_max` clients and at most
//! `n_max` responders, `|noise| ≤ B = B_e + n_max·2^b` and `Δ = 2^delta_bits` is the smallest power
//! of two above `2B`. Each slot's sum obeys `|Σ m| ≤ M_s = n_max·(⌈W·max(R,1)·2^f⌉ + 1)`, and
//! [`SecAggParams::validate`] checks, exactly (big integers), that `M_s < 2^(w−1)` (slots unpack
//! without ambiguity, borrow-aware) and `Δ·M_s·Σ_{j<k} 2^(jw) + B ≤ (Q − 1)/2` (the centered lift
//! is exact). Defaults: `b = 76`, `Δ = 2^86`, `w = 32`, `k = 3`: `86 + 96 < 185`.
//!
//! # Layout of bodies and partials
//! A vector of `len` coordinates (model plus the weight coordinate) packs into
//! `C = ⌈len/k⌉` coefficients: coordinate `x` sits in coefficient `x / k`, slot `x % k`. The
//! coefficients are cut into chunks of `N` (one mask polynomial each; the last chunk is truncated).
//! The flat `Vec<u64>` of a body or a partial is chunk-major, then prime-major: chunk `j` with `c_j`
//! coefficients occupies `[j·N·p, j·N·p + c_j·p)` (`p` primes), its residues mod `q_i` at
//! `[off + i·c_j, off + (i+1)·c_j)`. A share is `p·N` residues, prime-major.

use crate::canon::Canon;
use crate::ring::{I192, inv_mod, pow_mod};
use num_bigint::BigUint;
use num_traits::One;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;
use tfhe_ntt::fastdiv::Div64;
use tfhe_ntt::prime::is_prime64;
use tfhe_ntt::prime64::Plan;
use thiserror::Error;

/// The default RNS moduli: the three largest primes below 2^62 with `q ≡ 1 (mod 2^14)`, so each
/// supports negacyclic NTTs up to `N = 8192`. `q_0 = 2^62 − 2^16 + 1`.
pub const DEFAULT_MODULI: [u64; 3] = [0x3fff_ffff_ffff_0001, 0x3fff_ffff_fffe_8001, 0x3fff_ffff_fff1_c001];

/// Largest number of RNS primes supported (the CRT value must fit in 192 bits).
pub const MAX_PRIMES: usize = 3;

/// Largest `log2 Q` allowed at 128-bit classical security for ternary secrets, by ring degree,
/// from the HE Security Standard (homomorphicencryption.org, 2018), Table 1.
const HE_STANDARD_MAX_LOG_Q: [(usize, u64); 6] =
    [(1024, 27), (2048, 54), (4096, 109), (8192, 218), (16384, 438), (32768, 881)];

/// Envelope overhead: ephemeral key (32), signature (64) and AEAD tag (16).
const ENVELOPE_OVERHEAD: usize = 32 + 64 + 16;

/// Errors from parameter validation.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum ParamsError {
    /// `N` must be a power of two between 16 and 32768.
    #[error("polynomial size {0} must be a power of two in [16, 32768]")]
    BadPolynomialSize(usize),
    /// A modulus is not a prime below 2^62 with `q ≡ 1 (mod 2N)`, or moduli repeat.
    #[error("modulus {modulus} is not a distinct NTT-friendly prime below 2^62 for N = {n}")]
    BadModulus {
        /// The rejected modulus.
        modulus: u64,
        /// The ring degree.
        n: usize,
    },
    /// Between 1 and [`MAX_PRIMES`] moduli are required.
    #[error("{0} moduli given, need 1 to 3")]
    BadModulusCount(usize),
    /// The ring is too small or the modulus too large for 128-bit security.
    #[error(
        "N = {n}, log2 Q = {log_q} is below 128-bit security (HE standard allows log2 Q <= {max_log_q}); use toy parameters only in tests"
    )]
    Insecure {
        /// The ring degree.
        n: usize,
        /// Bit length of Q.
        log_q: u64,
        /// Largest admissible bit length for that degree (0 if none).
        max_log_q: u64,
    },
    /// The error distribution is narrower than the HE standard's σ = 3.2.
    #[error("error eta {0} too small: centered binomial needs eta >= 21 (sigma >= 3.2)")]
    ErrorTooNarrow(u32),
    /// The flooding statistical security is below 40 bits.
    #[error("flooding_bits {0} is below 40: partial decryptions would not hide the noise")]
    FloodingTooWeak(u32),
    /// An encoding parameter is out of its documented range.
    #[error("invalid encoding parameter: {0}")]
    BadEncoding(&'static str),
    /// The messages and noise do not fit in `Q`, or slot sums do not fit their slots.
    #[error("headroom exceeded: {0}")]
    HeadroomExceeded(String),
}

/// A body, partial or share of the wrong shape.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// Wrong number of residues.
    #[error("{got} residues, expected {expected}")]
    WrongLength {
        /// Expected number of `u64` residues.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A residue is not reduced modulo its prime.
    #[error("residue {index} is not reduced modulo its prime")]
    Unreduced {
        /// Index of the first offending residue in the flat vector.
        index: usize,
    },
}

/// Secure aggregation parameters (plain data, serde). Build a [`SecAggContext`] with
/// [`SecAggParams::build`] to use them; building validates them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Ring degree `N` (coefficients per chunk / mask polynomial).
    pub polynomial_size: usize,
    /// RNS primes `q_i`, each below 2^62 with `q_i ≡ 1 mod 2N`; `Q = Π q_i`.
    pub moduli: Vec<u64>,
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
    /// Statistical security λ of the noise flooding: the partial decryptions of a round are
    /// within statistical distance `2^-λ` of a simulation from the sum alone.
    pub flooding_bits: u32,
    /// Largest vector length (model coordinates plus the weight coordinate) of a round; the
    /// flooding bound is stated over this many coordinates.
    pub max_coordinates: usize,
    /// Fixed-point values packed per ring coefficient.
    pub slots: u32,
    /// Bits per packed slot (signed, holds the sum of `max_clients` values).
    pub slot_bits: u32,
    /// Marks toy parameters (small `N`): **not secure**, for tests only. Skips the security checks.
    pub insecure_toy: bool,
}

impl Default for SecAggParams {
    /// The production set: N = 8192, three 62-bit primes (log2 Q ≈ 186), f = 16, R = 4, W = 16,
    /// 256 clients, η = 21, 40-bit flooding over 2^24 coordinates (b = 76, Δ = 2^86), 3 slots of
    /// 32 bits.
    fn default() -> Self {
        Self {
            polynomial_size: 8192,
            moduli: DEFAULT_MODULI.to_vec(),
            fraction_bits: 16,
            clip: 4.0,
            max_weight: 16.0,
            max_clients: 256,
            error_eta: 21,
            flooding_bits: 40,
            max_coordinates: 1 << 24,
            slots: 3,
            slot_bits: 32,
            insecure_toy: false,
        }
    }
}

/// Smallest `k` with `2^k ≥ x` (`x ≥ 1`).
fn ceil_log2(x: u128) -> u32 {
    if x <= 1 { 0 } else { 128 - (x - 1).leading_zeros() }
}

impl SecAggParams {
    /// Toy parameters, **not secure**: ring degree `n` (≥ 16, power of two), otherwise the
    /// default encoding, moduli and flooding. For fast tests of the algebra only.
    pub fn toy_insecure(n: usize) -> Self {
        Self { polynomial_size: n, insecure_toy: true, ..Self::default() }
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
            moduli,
            fraction_bits,
            clip,
            max_weight,
            max_clients,
            error_eta,
            flooding_bits,
            max_coordinates,
            slots,
            slot_bits,
            insecure_toy,
        } = self;
        c.usize(0x20, *polynomial_size).usize(0x21, moduli.len());
        for q in moduli {
            c.u64(0x22, *q);
        }
        c.u64(0x23, u64::from(*fraction_bits))
            .f64(0x24, *clip)
            .f64(0x25, *max_weight)
            .u64(0x26, u64::from(*max_clients))
            .u64(0x27, u64::from(*error_eta))
            .u64(0x28, u64::from(*flooding_bits))
            .usize(0x29, *max_coordinates)
            .u64(0x2a, u64::from(*slots))
            .u64(0x2b, u64::from(*slot_bits))
            .bool(0x2c, *insecure_toy);
    }

    /// Validates the parameters without building NTT plans, and derives Δ, the smudging width and
    /// the bounds (see the module docs for the arithmetic, all done exactly).
    ///
    /// # Errors
    /// Any [`ParamsError`] describing the first violated constraint.
    pub fn validate(&self) -> Result<Derived, ParamsError> {
        let n = self.polynomial_size;
        if !(16..=32768).contains(&n) || !n.is_power_of_two() {
            return Err(ParamsError::BadPolynomialSize(n));
        }
        if self.moduli.is_empty() || self.moduli.len() > MAX_PRIMES {
            return Err(ParamsError::BadModulusCount(self.moduli.len()));
        }
        let mut q_big = BigUint::one();
        for (i, &q) in self.moduli.iter().enumerate() {
            let bad = ParamsError::BadModulus { modulus: q, n };
            if !(3..1 << 62).contains(&q)
                || !(q - 1).is_multiple_of(2 * n as u64)
                || !is_prime64(q)
                || self.moduli[..i].contains(&q)
            {
                return Err(bad);
            }
            q_big *= q;
        }
        let log_q = q_big.bits();
        if !self.insecure_toy {
            let max_log_q = HE_STANDARD_MAX_LOG_Q.iter().find(|(deg, _)| *deg == n).map_or(0, |(_, b)| *b);
            if log_q > max_log_q {
                return Err(ParamsError::Insecure { n, log_q, max_log_q });
            }
            if self.error_eta < 21 {
                return Err(ParamsError::ErrorTooNarrow(self.error_eta));
            }
            if self.flooding_bits < 40 {
                return Err(ParamsError::FloodingTooWeak(self.flooding_bits));
            }
        }
        if self.error_eta == 0 || self.error_eta > 32 {
            return Err(ParamsError::BadEncoding("error_eta must be in [1, 32]"));
        }
        if self.flooding_bits == 0 || self.flooding_bits > 128 {
            return Err(ParamsError::BadEncoding("flooding_bits must be in [1, 128]"));
        }
        if self.fraction_bits > 40 {
            return Err(ParamsError::BadEncoding("fraction_bits must be <= 40"));
        }
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip <= 1e9) {
            return Err(ParamsError::BadEncoding("clip must be finite, > 0 and <= 1e9"));
        }
        if !(self.max_weight.is_finite() && self.max_weight > 0.0 && self.max_weight <= 1e9) {
            return Err(ParamsError::BadEncoding("max_weight must be finite, > 0 and <= 1e9"));
        }
        if self.max_clients == 0 {
            return Err(ParamsError::BadEncoding("max_clients must be >= 1"));
        }
        if self.max_coordinates == 0 || self.max_coordinates > 1 << 32 {
            return Err(ParamsError::BadEncoding("max_coordinates must be in [1, 2^32]"));
        }
        if self.slots == 0 || self.slot_bits < 2 || self.slot_bits > 63 || self.slots * self.slot_bits > 120 {
            return Err(ParamsError::BadEncoding("need slots >= 1, 2 <= slot_bits <= 63, slots * slot_bits <= 120"));
        }

        // Flooding: b = smallest integer with L·B_e ≤ 2^(b + 1 − λ).
        let clients = u128::from(self.max_clients);
        let error_bound = clients * u128::from(self.error_eta);
        let lb = self.max_coordinates as u128 * error_bound;
        let smudging_bits = (ceil_log2(lb) + self.flooding_bits).saturating_sub(1);
        let too_big = |what: &str| ParamsError::HeadroomExceeded(what.to_string());
        if smudging_bits > 100 {
            return Err(too_big("smudging width above 2^100"));
        }
        let noise_bound =
            (clients << smudging_bits).checked_add(error_bound).ok_or_else(|| too_big("noise bound overflows"))?;
        // Δ = 2^d, the smallest power of two above 2·noise_bound (so |noise| < Δ/2).
        let delta_bits = 128 - (2 * noise_bound).leading_zeros();
        if delta_bits > 126 {
            return Err(too_big("Δ above 2^126"));
        }

        // Messages: per-client bound and per-slot sum bound.
        let scale = f64::from(self.fraction_bits).exp2();
        let per_client_f = (self.max_weight * self.clip.max(1.0) * scale).ceil() + 1.0;
        if per_client_f >= 2f64.powi(52) {
            return Err(too_big("per-client message bound above 2^52"));
        }
        let per_client = per_client_f as u64;
        let message_bound = u128::from(per_client) * clients;
        let w = self.slot_bits;
        if message_bound >= 1u128 << (w - 1) {
            return Err(ParamsError::HeadroomExceeded(format!(
                "slot sums need {} bits (signed), slot_bits is {w}",
                129 - message_bound.leading_zeros()
            )));
        }
        // Δ·M_s·Σ_{j<k} 2^(jw) + B ≤ (Q − 1)/2, exactly.
        let mut packed = BigUint::from(0u32);
        for j in 0..self.slots {
            packed += BigUint::one() << (j * w);
        }
        let total = ((BigUint::from(message_bound) * packed) << delta_bits) + BigUint::from(noise_bound);
        let half_q = (&q_big - 1u32) >> 1;
        if total > half_q {
            return Err(ParamsError::HeadroomExceeded(format!(
                "Δ = 2^{delta_bits} times {} slots of {w} bits needs {} bits, Q has {log_q}",
                self.slots,
                total.bits() + 1
            )));
        }
        let log2_modulus = self.moduli.iter().map(|&q| (q as f64).log2()).sum();
        Ok(Derived {
            delta_bits,
            smudging_bits,
            per_client_bound: per_client,
            message_bound: message_bound as u64,
            error_bound: error_bound as u64,
            noise_bound,
            modulus_bits: log_q as u32,
            log2_modulus,
        })
    }

    /// Validates the parameters and builds the NTT plans (tfhe-ntt `prime64::Plan`, one per
    /// prime) and the RNS constants.
    ///
    /// # Errors
    /// Any [`ParamsError`]; [`ParamsError::BadModulus`] if a prime has no primitive `2N`-th root
    /// of unity.
    ///
    /// # Example
    /// ```
    /// use cohort_crypto::SecAggParams;
    /// let ctx = SecAggParams::default().build().unwrap();
    /// assert_eq!(ctx.polynomial_size(), 8192);
    /// assert_eq!(ctx.derived().delta_bits, 86);
    /// assert!(ctx.statistical_distance_log2(1 << 24) <= -40.0);
    /// ```
    pub fn build(&self) -> Result<SecAggContext, ParamsError> {
        let derived = self.validate()?;
        let n = self.polynomial_size;
        let plans = self
            .moduli
            .iter()
            .map(|&q| Plan::try_new(n, q).ok_or(ParamsError::BadModulus { modulus: q, n }))
            .collect::<Result<Vec<_>, _>>()?;
        let rns = Rns::new(&self.moduli, derived.delta_bits, self.slot_bits, self.slots)
            .ok_or(ParamsError::BadModulus { modulus: self.moduli[0], n })?;
        Ok(SecAggContext { params: self.clone(), derived, inner: Arc::new(Inner { plans, rns }) })
    }
}

/// Quantities derived from validated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// `log2 Δ`, the plaintext scale above the noise.
    pub delta_bits: u32,
    /// `b`: each holder's flooding noise is uniform on `[−2^b, 2^b)`.
    pub smudging_bits: u32,
    /// Largest `|m|` one client may contribute in one coordinate.
    pub per_client_bound: u64,
    /// Largest `|Σ m|` over `max_clients` clients in one coordinate (slot).
    pub message_bound: u64,
    /// `B_e = max_clients·η`: largest `|Σ e_i|` of an aggregate.
    pub error_bound: u64,
    /// Largest `|E − Σ u|` (errors plus flooding) in an aggregate: `B_e + max_clients·2^b`.
    pub noise_bound: u128,
    /// Bit length of `Q`.
    pub modulus_bits: u32,
    /// `log2 Q = Σ log2 q_i`.
    pub log2_modulus: f64,
}

/// Precomputed RNS constants: fast reducers, `Δ·2^(jw) mod q_i`, Garner inverses and `Q`.
#[derive(Debug)]
pub(crate) struct Rns {
    pub(crate) moduli: Vec<u64>,
    pub(crate) div: Vec<Div64>,
    /// `slot_scale[i][j] = Δ·2^(j·w) mod q_i`.
    pub(crate) slot_scale: Vec<Vec<u64>>,
    /// `garner[i][j] = q_j^{-1} mod q_i` for `j < i`.
    pub(crate) garner: Vec<Vec<u64>>,
    pub(crate) q: I192,
    pub(crate) half_q: I192,
}

impl Rns {
    fn new(moduli: &[u64], delta_bits: u32, slot_bits: u32, slots: u32) -> Option<Self> {
        let div = moduli.iter().map(|&q| Div64::new(q)).collect();
        let slot_scale = moduli
            .iter()
            .map(|&q| (0..slots).map(|j| pow_mod(2, u64::from(delta_bits + j * slot_bits), q)).collect())
            .collect();
        let garner = moduli
            .iter()
            .enumerate()
            .map(|(i, &qi)| moduli[..i].iter().map(|&qj| inv_mod(qj % qi, qi)).collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()?;
        let mut q = I192::from_u64(1);
        for &m in moduli {
            q = q.mul_add_u64(m, 0);
        }
        let half_q = q.wrapping_sub(I192::from_u64(1)).shr1();
        Some(Self { moduli: moduli.to_vec(), div, slot_scale, garner, q, half_q })
    }
}

#[derive(Debug)]
struct Inner {
    plans: Vec<Plan>,
    rns: Rns,
}

/// Validated parameters plus the NTT plans and RNS constants; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct SecAggContext {
    params: SecAggParams,
    derived: Derived,
    inner: Arc<Inner>,
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
    /// The RNS primes `q_i`.
    pub fn moduli(&self) -> &[u64] {
        &self.params.moduli
    }
    /// Number of RNS primes.
    pub fn num_primes(&self) -> usize {
        self.params.moduli.len()
    }
    /// Slots (coordinates) per ring coefficient.
    pub fn slots(&self) -> usize {
        self.params.slots as usize
    }
    /// The negacyclic NTT plan for `(N, q_i)`.
    pub fn plan(&self, prime: usize) -> &Plan {
        &self.inner.plans[prime]
    }
    pub(crate) fn rns(&self) -> &Rns {
        &self.inner.rns
    }
    /// Quantization step `2^-f` of the fixed-point encoding.
    pub fn quantization_step(&self) -> f64 {
        (-f64::from(self.params.fraction_bits)).exp2()
    }

    /// `log2` of the statistical-distance bound `len·B_e/2^(b+1)` between the partial
    /// decryptions of one round over `len` coordinates and their simulation from the sum alone
    /// (see the module docs). At most `−flooding_bits` for `len ≤ max_coordinates`.
    pub fn statistical_distance_log2(&self, len: usize) -> f64 {
        (len as f64 * self.derived.error_bound as f64).log2() - f64::from(self.derived.smudging_bits + 1)
    }

    /// Ring coefficients holding a vector of `len` coordinates: `⌈len / slots⌉`.
    pub fn coefficients(&self, len: usize) -> usize {
        len.div_ceil(self.slots())
    }
    /// Number of chunks (mask polynomials) for a vector of `len` coordinates.
    pub fn num_chunks(&self, len: usize) -> usize {
        self.coefficients(len).div_ceil(self.params.polynomial_size)
    }
    /// Coefficients `[start, end)` of chunk `j` of a vector of `len` coordinates (the last chunk
    /// is truncated).
    pub fn chunk_coefficients(&self, j: usize, len: usize) -> Range<usize> {
        let (n, c) = (self.params.polynomial_size, self.coefficients(len));
        let start = (j * n).min(c);
        start..(start + n).min(c)
    }
    /// Coordinates `[start, end)` packed into chunk `j` of a vector of `len` coordinates.
    pub fn chunk_coordinates(&self, j: usize, len: usize) -> Range<usize> {
        let per = self.params.polynomial_size * self.slots();
        let start = (j * per).min(len);
        start..(start + per).min(len)
    }
    /// The residues of chunk `j` in the flat layout of a vector of `len` coordinates.
    pub fn chunk_residues(&self, j: usize, len: usize) -> Range<usize> {
        let c = self.chunk_coefficients(j, len);
        let p = self.num_primes();
        c.start * p..c.end * p
    }
    /// Residues of a body or partial of a vector of `len` coordinates: `⌈len/slots⌉·primes`.
    pub fn residues_len(&self, len: usize) -> usize {
        self.coefficients(len) * self.num_primes()
    }
    /// Number of `u64` residues a client uploads for a model of `model_len` parameters (the
    /// weight coordinate included): `⌈(model_len + 1)/slots⌉ · primes`.
    pub fn body_len(&self, model_len: usize) -> usize {
        self.residues_len(model_len.saturating_add(1))
    }
    /// Number of `u64` residues of one partial decryption for a model of `model_len` parameters
    /// (same layout as a body).
    pub fn partial_len(&self, model_len: usize) -> usize {
        self.body_len(model_len)
    }
    /// Number of `u64` residues of one Shamir key share: `primes · N`.
    pub fn share_len(&self) -> usize {
        self.num_primes() * self.params.polynomial_size
    }
    /// Largest encoded share envelope ([`crate::announce::encode_sealed`]): ephemeral key,
    /// signature, `8·share_len()` bytes of share and the AEAD tag. Relays bound storage with it.
    pub fn max_sealed_len(&self) -> usize {
        ENVELOPE_OVERHEAD + 8 * self.share_len()
    }

    /// Checks that `values` has the layout of a vector of `len` coordinates (body, partial or
    /// aggregate): its length and that every residue is reduced modulo its prime.
    ///
    /// # Errors
    /// [`LayoutError::WrongLength`], [`LayoutError::Unreduced`].
    pub fn check_residues(&self, len: usize, values: &[u64]) -> Result<(), LayoutError> {
        let expected = self.residues_len(len);
        if values.len() != expected {
            return Err(LayoutError::WrongLength { expected, got: values.len() });
        }
        for j in 0..self.num_chunks(len) {
            let r = self.chunk_residues(j, len);
            self.check_chunk(&values[r.clone()]).map_err(|i| LayoutError::Unreduced { index: r.start + i })?;
        }
        Ok(())
    }

    /// Checks one chunk's residues (prime-major) are reduced; `Err(index)` of the first that is not.
    pub(crate) fn check_chunk(&self, chunk: &[u64]) -> Result<(), usize> {
        let c = chunk.len() / self.num_primes();
        for (i, &q) in self.moduli().iter().enumerate() {
            let block = &chunk[i * c..(i + 1) * c];
            if block.iter().fold(0u64, |m, &x| m.max(x)) >= q {
                let k = block.iter().position(|&x| x >= q).unwrap_or(0);
                return Err(i * c + k);
            }
        }
        Ok(())
    }

    /// [`check_residues`](Self::check_residues) for a client's body of a `model_len`-parameter
    /// model.
    ///
    /// # Errors
    /// As [`check_residues`](Self::check_residues).
    pub fn check_body(&self, model_len: usize, body: &[u64]) -> Result<(), LayoutError> {
        self.check_residues(model_len.saturating_add(1), body)
    }

    /// [`check_residues`](Self::check_residues) for a partial decryption of a `model_len`-parameter
    /// model.
    ///
    /// # Errors
    /// As [`check_residues`](Self::check_residues).
    pub fn check_partial(&self, model_len: usize, values: &[u64]) -> Result<(), LayoutError> {
        self.check_residues(model_len.saturating_add(1), values)
    }

    /// Checks a share's residues (`share_len()` of them, prime-major, each reduced).
    ///
    /// # Errors
    /// As [`check_residues`](Self::check_residues).
    pub fn check_share(&self, values: &[u64]) -> Result<(), LayoutError> {
        if values.len() != self.share_len() {
            return Err(LayoutError::WrongLength { expected: self.share_len(), got: values.len() });
        }
        self.check_chunk(values).map_err(|index| LayoutError::Unreduced { index })
    }

    /// A serializable record of the parameters, for every round record.
    pub fn summary(&self) -> ParamsSummary {
        let p = &self.params;
        let d = &self.derived;
        ParamsSummary {
            polynomial_size: p.polynomial_size,
            moduli: p.moduli.clone(),
            modulus_bits: d.modulus_bits,
            log2_modulus: d.log2_modulus,
            fraction_bits: p.fraction_bits,
            clip: p.clip,
            max_weight: p.max_weight,
            max_clients: p.max_clients,
            max_coordinates: p.max_coordinates,
            slots: p.slots,
            slot_bits: p.slot_bits,
            secret_distribution: "uniform ternary {-1,0,1}".into(),
            error_distribution: format!(
                "centered binomial eta={} (sigma={:.2})",
                p.error_eta,
                (f64::from(p.error_eta) / 2.0).sqrt()
            ),
            smudging_distribution: format!("uniform [-2^{0}, 2^{0}) per key holder", d.smudging_bits),
            delta_bits: d.delta_bits,
            smudging_bits: d.smudging_bits,
            flooding_bits: p.flooding_bits,
            statistical_distance_log2_at_max: self.statistical_distance_log2(p.max_coordinates),
            security: if p.insecure_toy {
                "TOY PARAMETERS, NOT SECURE".into()
            } else {
                "128-bit classical, HE Security Standard 2018 Table 1 (ternary secret)".into()
            },
            insecure_toy: p.insecure_toy,
        }
    }
}

/// Record-friendly description of a parameter set (N, Q, noise, flooding, packing, f, R, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsSummary {
    /// Ring degree N.
    pub polynomial_size: usize,
    /// RNS primes.
    pub moduli: Vec<u64>,
    /// Bit length of Q.
    pub modulus_bits: u32,
    /// log2 Q.
    pub log2_modulus: f64,
    /// Fixed-point fraction bits f.
    pub fraction_bits: u32,
    /// Clip range R.
    pub clip: f64,
    /// Maximum FedAvg weight W.
    pub max_weight: f64,
    /// Maximum clients per round.
    pub max_clients: u32,
    /// Maximum vector length (coordinates, weight included).
    pub max_coordinates: usize,
    /// Slots per coefficient.
    pub slots: u32,
    /// Bits per slot.
    pub slot_bits: u32,
    /// Secret key distribution.
    pub secret_distribution: String,
    /// Encryption error distribution.
    pub error_distribution: String,
    /// Partial-decryption smudging distribution.
    pub smudging_distribution: String,
    /// log2 Δ.
    pub delta_bits: u32,
    /// log2 of the smudging half-width.
    pub smudging_bits: u32,
    /// Statistical security λ of the flooding.
    pub flooding_bits: u32,
    /// log2 of the flooding statistical-distance bound at `max_coordinates`.
    pub statistical_distance_log2_at_max: f64,
    /// Security claim and its source.
    pub security: String,
    /// True for toy parameters.
    pub insecure_toy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfhe_ntt::prime::largest_prime_in_arithmetic_progression64;

    #[test]
    fn default_is_valid_and_fits() {
        let ctx = SecAggParams::default().build().unwrap();
        let d = ctx.derived();
        assert_eq!(d.smudging_bits, 76);
        assert_eq!(d.delta_bits, 86);
        assert_eq!(d.modulus_bits, 186);
        assert!(d.log2_modulus > 185.99 && d.log2_modulus < 186.0);
        assert_eq!(d.error_bound, 256 * 21);
        assert_eq!(d.noise_bound, (256u128 << 76) + 256 * 21);
        assert!(2 * d.noise_bound < 1u128 << d.delta_bits);
        assert_eq!(d.message_bound, 256 * (((16 * 4) << 16) + 1));
        assert!(u128::from(d.message_bound) < 1 << 31);
        // 1M parameters: well below 2^-40.
        assert!(ctx.statistical_distance_log2(1_000_001) < -44.0);
        assert_eq!(ctx.body_len(1_000_000), 1_000_001usize.div_ceil(3) * 3);
        assert_eq!(ctx.share_len(), 3 * 8192);
        assert!(ctx.summary().statistical_distance_log2_at_max <= -40.0);
    }

    /// The flooding width is the least that meets 2^-λ at max_coordinates: with b the bound is
    /// ≤ 2^-40, with b − 1 it is above (exact integer arithmetic).
    #[test]
    fn flooding_width_is_tight() {
        for (clients, coords, lambda) in
            [(256u32, 1usize << 24, 40u32), (10, 1 << 20, 40), (1, 1, 40), (256, 1 << 24, 64), (3, 1000, 41)]
        {
            let slots = if lambda > 40 { 2 } else { 3 };
            let p = SecAggParams {
                max_clients: clients,
                max_coordinates: coords,
                flooding_bits: lambda,
                slots,
                ..SecAggParams::default()
            };
            let d = p.validate().unwrap();
            let lb = coords as u128 * u128::from(clients) * 21;
            let b = d.smudging_bits;
            // L·B_e / 2^(b+1) ≤ 2^-λ  ⇔  L·B_e ≤ 2^(b+1−λ).
            assert!(lb <= 1u128 << (b + 1 - lambda), "{clients} {coords}");
            assert!(lb > 1u128 << (b - lambda), "{clients} {coords}: b − 1 would suffice");
            let ctx = p.build().unwrap();
            assert!(ctx.statistical_distance_log2(coords) <= -f64::from(lambda));
            assert!(ctx.statistical_distance_log2(coords) > -f64::from(lambda) - 1.0);
        }
        // The default: log2(2^24 · 5376) ≈ 36.39, b = 76; with 75 the bound would be ≈ 2^-39.6.
        let ctx = SecAggParams::default().build().unwrap();
        let at_max = ctx.statistical_distance_log2(1 << 24);
        assert!((at_max - (36.392_317 - 77.0)).abs() < 1e-3, "{at_max}");
        assert!(at_max + 1.0 > -40.0);
    }

    #[test]
    fn default_moduli_are_the_largest_ntt_primes() {
        // Search downward from 2^62 for primes ≡ 1 mod 2^14.
        let mut hi = (1u64 << 62) - 1;
        for &q in &DEFAULT_MODULI {
            let found = largest_prime_in_arithmetic_progression64(1 << 14, 1, 1 << 61, hi).unwrap();
            assert_eq!(found, q);
            assert!(is_prime64(q) && q % (1 << 14) == 1 && q < 1 << 62);
            assert!(Plan::try_new(8192, q).is_some());
            assert!(Plan::try_new(16, q).is_some());
            hi = q - 1;
        }
        assert_eq!(DEFAULT_MODULI[0], (1 << 62) - (1 << 16) + 1);
        assert!(Plan::try_new(8192, DEFAULT_MODULI[0] + 2).is_none());
    }

    #[test]
    fn rejects_insecure_and_bad() {
        let p = SecAggParams { polynomial_size: 4096, ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::Insecure { n: 4096, log_q: 186, max_log_q: 109 })));
        let p = SecAggParams { error_eta: 4, ..SecAggParams::default() };
        assert_eq!(p.validate(), Err(ParamsError::ErrorTooNarrow(4)));
        let p = SecAggParams { flooding_bits: 39, ..SecAggParams::default() };
        assert_eq!(p.validate(), Err(ParamsError::FloodingTooWeak(39)));
        let p = SecAggParams { polynomial_size: 3000, ..SecAggParams::default() };
        assert_eq!(p.validate(), Err(ParamsError::BadPolynomialSize(3000)));
        let p = SecAggParams { moduli: vec![(1 << 61) + 1], ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::BadModulus { .. })));
        let p = SecAggParams { moduli: vec![DEFAULT_MODULI[0]; 2], ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::BadModulus { .. })));
        let p = SecAggParams { moduli: vec![], ..SecAggParams::default() };
        assert_eq!(p.validate(), Err(ParamsError::BadModulusCount(0)));
        // Headroom: too many clients for 32-bit slots; 4 slots do not fit; 2 primes too small.
        let p = SecAggParams::default().with_max_clients(1 << 10);
        assert!(matches!(p.validate(), Err(ParamsError::HeadroomExceeded(_))));
        let p = SecAggParams { slots: 4, ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::BadEncoding(_))));
        let p = SecAggParams { slot_bits: 36, ..SecAggParams::default() }; // 86 + 3·36 > 185
        assert!(matches!(p.validate(), Err(ParamsError::HeadroomExceeded(_))));
        let p = SecAggParams { slots: 4, slot_bits: 24, max_clients: 2, ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::HeadroomExceeded(_)))); // slot sums need 24 bits
        let p = SecAggParams { moduli: DEFAULT_MODULI[..2].to_vec(), ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::HeadroomExceeded(_))));
        let p = SecAggParams { slot_bits: 31, ..SecAggParams::default() };
        assert!(matches!(p.validate(), Err(ParamsError::HeadroomExceeded(_))));
        let p = SecAggParams::default().with_encoding(16, f64::NAN, 1.0);
        assert!(matches!(p.validate(), Err(ParamsError::BadEncoding(_))));
        assert!(SecAggParams::toy_insecure(64).build().is_ok());
        assert!(SecAggParams { flooding_bits: 10, ..SecAggParams::toy_insecure(16) }.build().is_ok());
    }

    #[test]
    fn layout_helpers() {
        let ctx = SecAggParams::toy_insecure(16).build().unwrap();
        let len = 100; // 34 coefficients: chunks of 16, 16, 2
        assert_eq!(ctx.coefficients(len), 34);
        assert_eq!(ctx.num_chunks(len), 3);
        assert_eq!(ctx.chunk_coefficients(2, len), 32..34);
        assert_eq!(ctx.chunk_coordinates(2, len), 96..100);
        assert_eq!(ctx.chunk_residues(2, len), 96..102);
        assert_eq!(ctx.residues_len(len), 102);
        assert_eq!(ctx.body_len(99), 102);
        let mut v = vec![0u64; 102];
        assert_eq!(ctx.check_residues(len, &v), Ok(()));
        v[97] = DEFAULT_MODULI[0] - 1; // prime 0 of the last chunk (2 coefficients): fine
        assert_eq!(ctx.check_residues(len, &v), Ok(()));
        v[98] = DEFAULT_MODULI[0] - 1; // prime 1 block: q_0 − 1 ≥ q_1
        assert_eq!(ctx.check_residues(len, &v), Err(LayoutError::Unreduced { index: 98 }));
        assert_eq!(ctx.check_body(99, &v[..5]), Err(LayoutError::WrongLength { expected: 102, got: 5 }));
        assert_eq!(ctx.max_sealed_len(), 112 + 8 * 48);
        assert!(ctx.check_share(&[0; 48]).is_ok());
        assert!(ctx.check_share(&[0; 47]).is_err());
    }
}
