//! Common masks `a_{r,j}` expanded from the public round seed.
//!
//! Following the seeded-mask compression of Stevens et al. (USENIX Sec 2022) and the common
//! reference polynomial of Mouchet et al. (PoPETs 2021), every party expands the same uniform
//! polynomial per chunk `j` from a 32-byte public seed, so uploads need not carry it.
//!
//! Expansion: `key = SHA-256("cohort/secagg/mask/v1" ‖ round ‖ seed)`, a ChaCha20 stream keyed
//! by `key` with stream id `j`, and rejection sampling of `⌈log2 q⌉`-bit words below `q`, which is
//! exactly uniform on `Z_q`. The sampled vector is taken as the **NTT-domain** representation
//! `â_j`; the mask is `a_j = NTT^{-1}(â_j)`, which is uniform because the NTT is a bijection of
//! `Z_q^N`. This saves one forward NTT per chunk for every party.

use crate::ids::RoundId;
use crate::params::SecAggContext;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The public 32-byte seed of a round's masks, published by the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MaskSeed(pub [u8; 32]);

impl MaskSeed {
    /// A fresh seed from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut rng = ChaCha20Rng::from_os_rng();
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Self(s)
    }

    /// The per-round expander of this seed.
    pub fn expander(&self, round: RoundId) -> MaskExpander {
        let mut h = Sha256::new();
        h.update(b"cohort/secagg/mask/v1");
        h.update(round.0.to_le_bytes());
        h.update(self.0);
        MaskExpander {
            key: h.finalize().into(),
        }
    }
}

/// Deterministic expander of the masks of one round (random access by chunk).
#[derive(Clone, Debug)]
pub struct MaskExpander {
    key: [u8; 32],
}

impl MaskExpander {
    /// Writes `â_j`, the NTT-domain mask of chunk `j`, into `out` (length `N`).
    ///
    /// # Panics
    /// If `out.len() != N` (a programming error of the caller).
    pub fn expand_ntt(&self, ctx: &SecAggContext, chunk: usize, out: &mut [u64]) {
        assert_eq!(out.len(), ctx.polynomial_size(), "mask buffer length");
        let q = ctx.modulus();
        let shift = q.leading_zeros();
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(chunk as u64);
        for slot in out.iter_mut() {
            *slot = loop {
                let v = rng.next_u64() >> shift;
                if v < q {
                    break v;
                }
            };
        }
    }

    /// The coefficient-domain mask `a_j` (for tests and cross-checks).
    pub fn expand_coefficients(&self, ctx: &SecAggContext, chunk: usize) -> Vec<u64> {
        let mut a = vec![0u64; ctx.polynomial_size()];
        self.expand_ntt(ctx, chunk, &mut a);
        ctx.plan().inv(&mut a);
        ctx.plan().normalize(&mut a);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;

    #[test]
    fn deterministic_distinct_and_reduced() {
        let ctx = SecAggParams::toy_insecure(64).build().unwrap();
        let seed = MaskSeed([7; 32]);
        let e = seed.expander(RoundId(1));
        let (mut a, mut b, mut c) = (vec![0; 64], vec![0; 64], vec![0; 64]);
        e.expand_ntt(&ctx, 3, &mut a);
        e.expand_ntt(&ctx, 3, &mut b);
        e.expand_ntt(&ctx, 4, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut d = vec![0; 64];
        seed.expander(RoundId(2)).expand_ntt(&ctx, 3, &mut d);
        assert_ne!(a, d);
        assert!(a.iter().all(|&x| x < ctx.modulus()));
        // Coefficient form round-trips through the forward NTT.
        let mut coeffs = e.expand_coefficients(&ctx, 3);
        ctx.plan().fwd(&mut coeffs);
        assert_eq!(coeffs, a);
    }
}
