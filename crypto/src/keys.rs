//! Per-round RLWE secret keys and long-term node identity keys.
//!
//! * [`RoundSecretKey`]: the fresh per-round secret `s_i`, uniform ternary (the HE Security
//!   Standard's "ternary secret" column), kept in coefficient and NTT form, zeroized on drop.
//! * [`NodeIdentity`]: a node's long-term X25519 (share encryption) and Ed25519 (share
//!   signatures) keys (RFC 7748, RFC 8032 via the dalek crates), zeroized on drop.
//!
//! dalek 2 uses `rand_core` 0.6 while this crate uses `rand` 0.9, so keys are built from 32
//! random bytes with `from`/`from_bytes` rather than by mixing RNG traits.

use crate::params::SecAggContext;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Errors about key material.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A serialized secret had the wrong length.
    #[error("secret key material must be {expected} bytes, got {got}")]
    BadSecretLength {
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// A public key is not a valid curve point.
    #[error("invalid Ed25519 public key")]
    BadPublicKey,
}

/// An OS-seeded ChaCha20 CSPRNG for round secrets, their Shamir polynomials, smudging noise and
/// ephemeral keys, whose state is overwritten when dropped.
///
/// **Residual risk, stated honestly.** rand_chacha's `ChaCha20Rng` does not implement
/// `Zeroize`, and the RustCrypto `chacha20` crate's zeroizing RNG implements `rand_core` 0.10,
/// not the `rand` 0.9 traits this crate uses. So the 32-byte seed is drawn into a
/// `Zeroizing` buffer and the generator state (key, counter and buffered keystream, all stored
/// inline) is overwritten in place on drop with the state of a fixed all-zero seed, behind
/// `std::hint::black_box` so the store is not elided. What this cannot guarantee: `from_seed`
/// takes the seed by value, and moves of the generator may leave copies of the seed or state in
/// stack slots or registers that are not wiped. An attacker able to read this process's freed
/// stack memory could recover keystream and hence smudging noise or round secrets; that attacker
/// is outside the threat model of the design note (it can read live secrets too).
pub struct SecretRng {
    inner: ChaCha20Rng,
}

impl std::fmt::Debug for SecretRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretRng")
    }
}

impl SecretRng {
    /// A generator seeded from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `rand`'s `from_os_rng`).
    pub fn from_os() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        #[allow(clippy::expect_used)]
        OsRng.try_fill_bytes(seed.as_mut()).expect("operating system random source failed");
        Self { inner: ChaCha20Rng::from_seed(*seed) }
    }

    /// A generator seeded from `seed` (tests and reproducible simulations).
    pub fn from_seed_bytes(seed: &Zeroizing<[u8; 32]>) -> Self {
        Self { inner: ChaCha20Rng::from_seed(**seed) }
    }
}

impl Drop for SecretRng {
    fn drop(&mut self) {
        self.inner = ChaCha20Rng::from_seed([0u8; 32]);
        std::hint::black_box(&mut self.inner);
    }
}

impl RngCore for SecretRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst);
    }
}

impl CryptoRng for SecretRng {}

/// The per-round secret `s_i ∈ R_Q = Z_Q[X]/(X^N+1)` with uniform ternary coefficients, in RNS.
///
/// Formally: `N` ternary integers in `{−1, 0, 1}`, kept as their residues mod every prime `q_i`
/// (`primes·N` values, prime-major, each in `{q_i−1, 0, 1}`) plus the negacyclic NTT of each
/// residue polynomial. Both are zeroized on drop. Never serialized: it leaves the client only as
/// Shamir shares.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RoundSecretKey {
    residues: Vec<u64>,
    ntt: Vec<u64>,
    n: usize,
}

impl std::fmt::Debug for RoundSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundSecretKey").field("n", &self.n).finish_non_exhaustive()
    }
}

impl RoundSecretKey {
    /// Samples a fresh key with an OS-seeded [`SecretRng`].
    pub fn generate(ctx: &SecAggContext) -> Self {
        Self::generate_with(ctx, &mut SecretRng::from_os())
    }

    /// Samples a fresh key from `rng` (uniform ternary by rejection of 2-bit draws).
    pub fn generate_with<R: CryptoRng + ?Sized>(ctx: &SecAggContext, rng: &mut R) -> Self {
        let n = ctx.polynomial_size();
        let mut ternary = Zeroizing::new(Vec::with_capacity(n));
        let mut word = Zeroizing::new(0u64);
        let mut bits = 0u32;
        while ternary.len() < n {
            if bits < 2 {
                *word = rng.next_u64();
                bits = 64;
            }
            let v = *word & 3;
            *word >>= 2;
            bits -= 2;
            match v {
                0 => ternary.push(0i8),
                1 => ternary.push(1),
                2 => ternary.push(-1),
                _ => {}
            }
        }
        Self::from_ternary(ctx, &ternary)
    }

    /// The key with the given ternary coefficients (each in `{−1, 0, 1}`, length `N`).
    pub(crate) fn from_ternary(ctx: &SecAggContext, ternary: &[i8]) -> Self {
        let n = ctx.polynomial_size();
        let total = ctx.num_primes() * n;
        // Exact capacities: no reallocation leaves unwiped copies behind.
        let mut residues = Vec::with_capacity(total);
        for &q in ctx.moduli() {
            residues.extend(ternary.iter().map(|&t| match t {
                1 => 1,
                -1 => q - 1,
                _ => 0,
            }));
        }
        let mut ntt = Vec::with_capacity(total);
        ntt.extend_from_slice(&residues);
        for (i, block) in ntt.chunks_exact_mut(n).enumerate() {
            ctx.plan(i).fwd(block);
        }
        Self { residues, ntt, n }
    }

    /// The residues mod each prime, prime-major (`primes·N` values, each in `{q_i−1, 0, 1}`);
    /// input to Shamir sharing.
    pub fn residues(&self) -> &[u64] {
        &self.residues
    }

    /// The forward negacyclic NTT of the residue polynomial mod prime `i`.
    pub(crate) fn ntt(&self, prime: usize) -> &[u64] {
        &self.ntt[prime * self.n..(prime + 1) * self.n]
    }
}

/// A node's long-term identity: X25519 for share encryption, Ed25519 for share signatures.
/// Both secrets are zeroized on drop; `Debug` prints only the public keys.
pub struct NodeIdentity {
    encryption: StaticSecret,
    signing: SigningKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").field("public", &self.public_keys()).finish_non_exhaustive()
    }
}

/// Length of [`NodeIdentity::to_secret_bytes`]: X25519 secret then Ed25519 seed.
pub const NODE_SECRET_LEN: usize = 64;

impl NodeIdentity {
    /// A fresh identity from an OS-seeded [`SecretRng`].
    pub fn generate() -> Self {
        Self::generate_with(&mut SecretRng::from_os())
    }

    /// A fresh identity from `rng` (64 random bytes).
    pub fn generate_with<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; NODE_SECRET_LEN]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_array(&bytes)
    }

    fn from_secret_array(bytes: &[u8; NODE_SECRET_LEN]) -> Self {
        let mut x = Zeroizing::new([0u8; 32]);
        let mut e = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&bytes[..32]);
        e.copy_from_slice(&bytes[32..]);
        Self { encryption: StaticSecret::from(*x), signing: SigningKey::from_bytes(&e) }
    }

    /// Restores an identity from [`NodeIdentity::to_secret_bytes`] (the owner's local storage).
    ///
    /// # Errors
    /// [`KeyError::BadSecretLength`] unless `bytes` is exactly 64 bytes.
    ///
    /// # Example
    /// ```
    /// use cohort_crypto::NodeIdentity;
    /// let id = NodeIdentity::generate();
    /// let back = NodeIdentity::from_secret_bytes(id.to_secret_bytes().as_slice()).unwrap();
    /// assert_eq!(id.public_keys(), back.public_keys());
    /// ```
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; NODE_SECRET_LEN] =
            bytes.try_into().map_err(|_| KeyError::BadSecretLength { expected: NODE_SECRET_LEN, got: bytes.len() })?;
        Ok(Self::from_secret_array(arr))
    }

    /// The secret key material (X25519 secret ‖ Ed25519 seed), in a buffer zeroized on drop.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(NODE_SECRET_LEN));
        out.extend_from_slice(self.encryption.as_bytes());
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// The public halves, safe to publish.
    pub fn public_keys(&self) -> NodePublicKeys {
        NodePublicKeys {
            x25519: XPublicKey::from(&self.encryption).to_bytes(),
            ed25519: self.signing.verifying_key().to_bytes(),
        }
    }

    pub(crate) fn encryption_secret(&self) -> &StaticSecret {
        &self.encryption
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

/// A node's public keys: X25519 (encrypt shares to it) and Ed25519 (verify its shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodePublicKeys {
    /// X25519 public key (Montgomery u-coordinate).
    pub x25519: [u8; 32],
    /// Ed25519 verifying key (compressed Edwards point).
    pub ed25519: [u8; 32],
}

impl NodePublicKeys {
    /// The Ed25519 verifying key.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] if the bytes are not a valid point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&self.ed25519).map_err(|_| KeyError::BadPublicKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;

    #[test]
    fn round_key_is_ternary_balanced_and_consistent_across_primes() {
        let ctx = SecAggParams::default().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = RoundSecretKey::generate_with(&ctx, &mut rng);
        let n = ctx.polynomial_size();
        assert_eq!(k.residues().len(), 3 * n);
        let lift = |i: usize, c: usize| {
            let (q, v) = (ctx.moduli()[i], k.residues()[i * n + c]);
            match v {
                0 => 0i8,
                1 => 1,
                _ if v == q - 1 => -1,
                _ => panic!("not ternary"),
            }
        };
        let mut counts = [0usize; 3];
        for c in 0..n {
            let t = lift(0, c);
            assert_eq!(lift(1, c), t);
            assert_eq!(lift(2, c), t);
            counts[(t + 1) as usize] += 1;
        }
        for c in counts {
            assert!((2300..3160).contains(&c), "{counts:?}");
        }
        for i in 0..3 {
            let mut back = k.ntt(i).to_vec();
            ctx.plan(i).inv(&mut back);
            ctx.plan(i).normalize(&mut back);
            assert_eq!(back, &k.residues()[i * n..(i + 1) * n]);
        }
    }

    #[test]
    fn secret_rng_is_a_working_generator() {
        let mut a = SecretRng::from_seed_bytes(&Zeroizing::new([4; 32]));
        let mut b = SecretRng::from_seed_bytes(&Zeroizing::new([4; 32]));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut os = SecretRng::from_os();
        assert_ne!(os.next_u64(), a.next_u64());
        assert_eq!(format!("{os:?}"), "SecretRng");
    }

    #[test]
    fn identity_round_trips_and_rejects_bad_length() {
        let id = NodeIdentity::generate_with(&mut ChaCha20Rng::seed_from_u64(2));
        let back = NodeIdentity::from_secret_bytes(&id.to_secret_bytes()).unwrap();
        assert_eq!(back.public_keys(), id.public_keys());
        assert!(id.public_keys().verifying_key().is_ok());
        assert_eq!(
            NodeIdentity::from_secret_bytes(&[0; 10]).unwrap_err(),
            KeyError::BadSecretLength { expected: 64, got: 10 }
        );
        assert!(!format!("{id:?}").contains(&format!("{:?}", &id.to_secret_bytes()[..4])));
    }
}
