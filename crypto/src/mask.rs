//! Common masks `a_{r,j}` expanded from the public round seed.
//!
//! Following the seeded-mask compression of Stevens et al. (USENIX Sec 2022) and the common
//! reference polynomial of Mouchet et al. (PoPETs 2021), every party expands the same uniform
//! polynomial per chunk `j` from a 32-byte public seed, so uploads need not carry it.
//!
//! Expansion: `key = SHA-256("cohort/secagg/mask/v2" ‖ round ‖ seed)`, and for chunk `j` and RNS
//! prime `i` a ChaCha20 stream keyed by `key` with stream id `j·2^8 + i` (domain separation by
//! chunk and prime), rejection-sampling `⌈log2 q_i⌉`-bit words below `q_i`, which is exactly
//! uniform on `Z_{q_i}`. The sampled vector is taken as the **NTT-domain** representation
//! `â_{j,i}`; the mask residue is `a_{j,i} = NTT^{-1}(â_{j,i})`, uniform because the NTT is a
//! bijection of `Z_{q_i}^N`; by the CRT the residues together form a uniform element of `R_Q`.
//! This saves one forward NTT per chunk and prime for every party.

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
        h.update(b"cohort/secagg/mask/v2");
        h.update(round.0.to_le_bytes());
        h.update(self.0);
        MaskExpander { key: h.finalize().into() }
    }
}

/// Deterministic expander of the masks of one round (random access by chunk).
#[derive(Clone, Debug)]
pub struct MaskExpander {
    key: [u8; 32],
}

impl MaskExpander {
    /// Writes `â_{j,i}`, the NTT-domain residue mod `q_i` of the mask of chunk `j`, into `out`
    /// (length `N`).
    ///
    /// # Panics
    /// If `out.len() != N` or `prime` is not a prime index (programming errors of the caller).
    pub fn expand_ntt(&self, ctx: &SecAggContext, chunk: usize, prime: usize, out: &mut [u64]) {
        assert_eq!(out.len(), ctx.polynomial_size(), "mask buffer length");
        let q = ctx.moduli()[prime];
        let shift = q.leading_zeros();
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(((chunk as u64) << 8) | prime as u64);
        for slot in out.iter_mut() {
            *slot = loop {
                let v = rng.next_u64() >> shift;
                if v < q {
                    break v;
                }
            };
        }
    }

    /// The coefficient-domain mask residue `a_{j,i}` (for tests and cross-checks).
    pub fn expand_coefficients(&self, ctx: &SecAggContext, chunk: usize, prime: usize) -> Vec<u64> {
        let mut a = vec![0u64; ctx.polynomial_size()];
        self.expand_ntt(ctx, chunk, prime, &mut a);
        ctx.plan(prime).inv(&mut a);
        ctx.plan(prime).normalize(&mut a);
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
        let buf = |e: &MaskExpander, j, i| {
            let mut a = vec![0; 64];
            e.expand_ntt(&ctx, j, i, &mut a);
            a
        };
        assert_eq!(buf(&e, 3, 0), buf(&e, 3, 0));
        assert_ne!(buf(&e, 3, 0), buf(&e, 4, 0));
        assert_ne!(buf(&e, 3, 0), buf(&e, 3, 1));
        assert_ne!(buf(&e, 3, 1), buf(&e, 3, 2));
        assert_ne!(buf(&e, 3, 0), buf(&seed.expander(RoundId(2)), 3, 0));
        for i in 0..3 {
            assert!(buf(&e, 3, i).iter().all(|&x| x < ctx.moduli()[i]));
            // Coefficient form round-trips through the forward NTT.
            let mut coeffs = e.expand_coefficients(&ctx, 3, i);
            ctx.plan(i).fwd(&mut coeffs);
            assert_eq!(coeffs, buf(&e, 3, i));
        }
    }
}
