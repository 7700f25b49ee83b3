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
use rand::{CryptoRng, SeedableRng};
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

/// The per-round secret `s_i ∈ Z_q[X]/(X^N+1)` with uniform ternary coefficients.
///
/// Formally: a vector of `N` residues mod `q`, each in `{q−1, 0, 1}`, plus its negacyclic NTT.
/// Both are zeroized on drop. Never serialized: it leaves the client only as Shamir shares.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RoundSecretKey {
    coefficients: Vec<u64>,
    ntt: Vec<u64>,
}

impl std::fmt::Debug for RoundSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundSecretKey")
            .field("n", &self.coefficients.len())
            .finish_non_exhaustive()
    }
}

impl RoundSecretKey {
    /// Samples a fresh key with an OS-seeded ChaCha20 CSPRNG.
    pub fn generate(ctx: &SecAggContext) -> Self {
        Self::generate_with(ctx, &mut ChaCha20Rng::from_os_rng())
    }

    /// Samples a fresh key from `rng` (uniform ternary by rejection of 2-bit draws).
    pub fn generate_with<R: CryptoRng + ?Sized>(ctx: &SecAggContext, rng: &mut R) -> Self {
        let q = ctx.modulus();
        let n = ctx.polynomial_size();
        let mut coefficients = Vec::with_capacity(n);
        let mut word = 0u64;
        let mut bits = 0u32;
        while coefficients.len() < n {
            if bits < 2 {
                word = rng.next_u64();
                bits = 64;
            }
            let v = word & 3;
            word >>= 2;
            bits -= 2;
            match v {
                0 => coefficients.push(0),
                1 => coefficients.push(1),
                2 => coefficients.push(q - 1),
                _ => {}
            }
        }
        word.zeroize();
        Self::from_coefficients(ctx, coefficients)
    }

    pub(crate) fn from_coefficients(ctx: &SecAggContext, coefficients: Vec<u64>) -> Self {
        let mut ntt = coefficients.clone();
        ctx.plan().fwd(&mut ntt);
        Self { coefficients, ntt }
    }

    /// The coefficients mod `q` (each in `{q−1, 0, 1}`); input to Shamir sharing.
    pub fn coefficients(&self) -> &[u64] {
        &self.coefficients
    }

    /// The forward negacyclic NTT of the key.
    pub(crate) fn ntt(&self) -> &[u64] {
        &self.ntt
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
        f.debug_struct("NodeIdentity")
            .field("public", &self.public_keys())
            .finish_non_exhaustive()
    }
}

/// Length of [`NodeIdentity::to_secret_bytes`]: X25519 secret then Ed25519 seed.
pub const NODE_SECRET_LEN: usize = 64;

impl NodeIdentity {
    /// A fresh identity from an OS-seeded ChaCha20 CSPRNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut ChaCha20Rng::from_os_rng())
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
        Self {
            encryption: StaticSecret::from(*x),
            signing: SigningKey::from_bytes(&e),
        }
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
            bytes.try_into().map_err(|_| KeyError::BadSecretLength {
                expected: NODE_SECRET_LEN,
                got: bytes.len(),
            })?;
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
    fn round_key_is_ternary_and_balanced() {
        let ctx = SecAggParams::default().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = RoundSecretKey::generate_with(&ctx, &mut rng);
        let q = ctx.modulus();
        assert!(k.coefficients().iter().all(|&c| c <= 1 || c == q - 1));
        let count = |v: u64| k.coefficients().iter().filter(|&&c| c == v).count();
        for v in [0, 1, q - 1] {
            let c = count(v);
            assert!((1100..1630).contains(&c), "{v}: {c}");
        }
        let mut back = k.ntt().to_vec();
        ctx.plan().inv(&mut back);
        ctx.plan().normalize(&mut back);
        assert_eq!(back, k.coefficients());
    }

    #[test]
    fn identity_round_trips_and_rejects_bad_length() {
        let id = NodeIdentity::generate_with(&mut ChaCha20Rng::seed_from_u64(2));
        let back = NodeIdentity::from_secret_bytes(&id.to_secret_bytes()).unwrap();
        assert_eq!(back.public_keys(), id.public_keys());
        assert!(id.public_keys().verifying_key().is_ok());
        assert_eq!(
            NodeIdentity::from_secret_bytes(&[0; 10]).unwrap_err(),
            KeyError::BadSecretLength {
                expected: 64,
                got: 10
            }
        );
        assert!(!format!("{id:?}").contains(&format!("{:?}", &id.to_secret_bytes()[..4])));
    }
}
