//! End-to-end encrypted, signed envelopes for Shamir key shares, relayed by the coordinator.
//!
//! Construction (an ECIES-style hybrid, cf. RFC 9180's DHKEM(X25519, HKDF-SHA256) +
//! ChaCha20-Poly1305, signed as in an authenticated "sign-then-encrypt-binding" transcript):
//! 1. the sender draws an ephemeral X25519 key `E` and computes `Z = X25519(e, R_pub)` with the
//!    recipient's long-term key (RFC 7748); all-zero (non-contributory) `Z` is rejected;
//! 2. `key = HKDF-SHA256(salt = E_pub ‖ R_pub, ikm = Z, info = AD)` (RFC 5869);
//! 3. `ct = ChaCha20-Poly1305(key, nonce = 0, share, AD)` (RFC 8439); the key is single-use, so
//!    the fixed nonce is safe;
//! 4. `sig = Ed25519(sender, "cohort/secagg/share-sig/v1" ‖ AD ‖ E_pub ‖ ct)` (RFC 8032).
//!
//! `AD` binds the federation id, round, announcement hash, sender id and recipient id, so an
//! envelope cannot be replayed into another federation, round, announcement (even one reusing the
//! round id) or pair. Share plaintexts are zeroized.

use crate::announce::AnnouncementHash;
use crate::ids::{ParticipantId, RoundId};
use crate::keys::{KeyError, NodeIdentity, NodePublicKeys, SecretRng};
use crate::params::SecAggContext;
use crate::shamir::{KeyShare, ShamirError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::Signature;
use hkdf::Hkdf;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Errors of sealing and opening share envelopes.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope belongs to another federation.
    #[error("envelope for federation {got:?}, expected {expected:?}")]
    WrongFederation {
        /// Expected federation id.
        expected: String,
        /// Received.
        got: String,
    },
    /// The envelope belongs to another round.
    #[error("envelope for {got}, expected {expected}")]
    WrongRound {
        /// Expected round.
        expected: RoundId,
        /// Received.
        got: RoundId,
    },
    /// The envelope is bound to another announcement (a replay from another announcement, even
    /// one with the same round id).
    #[error("envelope for announcement {got}, expected {expected}")]
    WrongAnnouncement {
        /// The announcement this recipient is in.
        expected: AnnouncementHash,
        /// The announcement the envelope names.
        got: AnnouncementHash,
    },
    /// The envelope is addressed to someone else.
    #[error("envelope addressed to {got}, expected {expected}")]
    WrongRecipient {
        /// This recipient.
        expected: ParticipantId,
        /// Addressee in the envelope.
        got: ParticipantId,
    },
    /// The envelope claims another sender than expected.
    #[error("envelope from {got}, expected {expected}")]
    WrongSender {
        /// Expected sender.
        expected: ParticipantId,
        /// Claimed sender.
        got: ParticipantId,
    },
    /// The signature does not verify under the sender's key (forgery or tampering).
    #[error("bad signature")]
    BadSignature,
    /// Authenticated decryption failed (tampered ciphertext or wrong key).
    #[error("ciphertext failed authentication")]
    Tampered,
    /// A structurally invalid envelope (lengths) or low-order public key.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// A bad public key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The decrypted share is malformed.
    #[error(transparent)]
    Share(#[from] ShamirError),
}

/// What an envelope is bound to (sent in clear, authenticated as associated data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareContext {
    /// Federation id.
    pub federation: String,
    /// Round.
    pub round: RoundId,
    /// Hash of the round's announcement ([`crate::RoundAnnouncement::hash`]).
    pub announcement: AnnouncementHash,
    /// Sender (owner of the shared round key).
    pub sender: ParticipantId,
    /// Recipient (key holder).
    pub recipient: ParticipantId,
}

impl ShareContext {
    fn associated_data(&self) -> Vec<u8> {
        let f = self.federation.as_bytes();
        let mut ad = Vec::with_capacity(80 + f.len());
        ad.extend_from_slice(b"cohort/secagg/share/v2");
        ad.extend_from_slice(&(f.len() as u64).to_le_bytes());
        ad.extend_from_slice(f);
        ad.extend_from_slice(&self.round.0.to_le_bytes());
        ad.extend_from_slice(&self.announcement.0);
        ad.extend_from_slice(&self.sender.get().to_le_bytes());
        ad.extend_from_slice(&self.recipient.get().to_le_bytes());
        ad
    }
}

/// An opaque sealed share, safe to relay through the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    /// Binding context (authenticated).
    pub context: ShareContext,
    /// Ephemeral X25519 public key.
    pub ephemeral_public: [u8; 32],
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}

fn transcript(ad: &[u8], eph: &[u8; 32], ct: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(32 + ad.len() + 32 + ct.len());
    t.extend_from_slice(b"cohort/secagg/share-sig/v1");
    t.extend_from_slice(ad);
    t.extend_from_slice(eph);
    t.extend_from_slice(ct);
    t
}

fn derive_key(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32], ad: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand(ad, key.as_mut());
    key
}

/// Seals `share` for `recipient` with an OS-seeded ephemeral key.
///
/// # Errors
/// [`EnvelopeError::Malformed`] for a low-order recipient key.
pub fn seal_share(
    sender: &NodeIdentity,
    recipient: &NodePublicKeys,
    context: &ShareContext,
    share: &KeyShare,
) -> Result<SealedShare, EnvelopeError> {
    seal_share_with(sender, recipient, context, share, &mut SecretRng::from_os())
}

/// Seals `share` for `recipient`, drawing the ephemeral key from `rng`.
///
/// # Errors
/// [`EnvelopeError::Malformed`] for a low-order recipient key.
///
/// # Example
/// ```
/// use cohort_crypto::*;
/// let (alice, bob) = (NodeIdentity::generate(), NodeIdentity::generate());
/// let ctx = ShareContext { federation: "fed".into(), round: RoundId(3),
///     announcement: AnnouncementHash([7; 32]), sender: ParticipantId::new(1).unwrap(), recipient: ParticipantId::new(2).unwrap() };
/// let share = KeyShare::from_values(vec![1, 2, 3], &[257]).unwrap();
/// let env = seal_share(&alice, &bob.public_keys(), &ctx, &share).unwrap();
/// let back = open_share(3, &[257], &bob, &alice.public_keys(), &ctx, &env).unwrap();
/// assert_eq!(back, share);
/// ```
pub fn seal_share_with<R: CryptoRng + ?Sized>(
    sender: &NodeIdentity,
    recipient: &NodePublicKeys,
    context: &ShareContext,
    share: &KeyShare,
    rng: &mut R,
) -> Result<SealedShare, EnvelopeError> {
    let mut eph_bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(eph_bytes.as_mut());
    let eph = StaticSecret::from(*eph_bytes);
    let eph_pub = XPublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&XPublicKey::from(recipient.x25519));
    if !shared.was_contributory() {
        return Err(EnvelopeError::Malformed("low-order recipient key"));
    }
    let ad = context.associated_data();
    let key = derive_key(shared.as_bytes(), &eph_pub, &recipient.x25519, &ad);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let plaintext = share.to_bytes();
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: &plaintext, aad: &ad })
        .map_err(|_| EnvelopeError::Malformed("plaintext too long"))?;
    let signature = sender.sign(&transcript(&ad, &eph_pub, &ciphertext)).to_vec();
    Ok(SealedShare { context: context.clone(), ephemeral_public: eph_pub, ciphertext, signature })
}

/// Opens an envelope addressed to `recipient`, checking binding, signature and authenticity, and
/// parses a share of `n` coefficients per RNS prime of `moduli` (`n·moduli.len()` residues).
///
/// # Errors
/// [`EnvelopeError::WrongFederation`], [`EnvelopeError::WrongRound`],
/// [`EnvelopeError::WrongAnnouncement`],
/// [`EnvelopeError::WrongRecipient`], [`EnvelopeError::WrongSender`] (binding),
/// [`EnvelopeError::BadSignature`], [`EnvelopeError::Tampered`], [`EnvelopeError::Malformed`],
/// [`EnvelopeError::Share`] (bad length or unreduced values), [`EnvelopeError::Key`].
pub fn open_share(
    n: usize,
    moduli: &[u64],
    recipient: &NodeIdentity,
    sender: &NodePublicKeys,
    expected: &ShareContext,
    envelope: &SealedShare,
) -> Result<KeyShare, EnvelopeError> {
    let got = &envelope.context;
    if got.federation != expected.federation {
        return Err(EnvelopeError::WrongFederation {
            expected: expected.federation.clone(),
            got: got.federation.clone(),
        });
    }
    if got.round != expected.round {
        return Err(EnvelopeError::WrongRound { expected: expected.round, got: got.round });
    }
    if got.announcement != expected.announcement {
        return Err(EnvelopeError::WrongAnnouncement { expected: expected.announcement, got: got.announcement });
    }
    if got.recipient != expected.recipient {
        return Err(EnvelopeError::WrongRecipient { expected: expected.recipient, got: got.recipient });
    }
    if got.sender != expected.sender {
        return Err(EnvelopeError::WrongSender { expected: expected.sender, got: got.sender });
    }
    if envelope.ciphertext.len() != 8 * n * moduli.len() + 16 {
        return Err(EnvelopeError::Malformed("ciphertext length does not match the share length"));
    }
    let sig_bytes: [u8; 64] =
        envelope.signature.as_slice().try_into().map_err(|_| EnvelopeError::Malformed("signature length"))?;
    let ad = expected.associated_data();
    sender
        .verifying_key()?
        .verify_strict(
            &transcript(&ad, &envelope.ephemeral_public, &envelope.ciphertext),
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| EnvelopeError::BadSignature)?;
    let shared = recipient.encryption_secret().diffie_hellman(&XPublicKey::from(envelope.ephemeral_public));
    if !shared.was_contributory() {
        return Err(EnvelopeError::Malformed("low-order ephemeral key"));
    }
    let my_pub = recipient.public_keys().x25519;
    let key = derive_key(shared.as_bytes(), &envelope.ephemeral_public, &my_pub, &ad);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: &envelope.ciphertext, aad: &ad })
            .map_err(|_| EnvelopeError::Tampered)?,
    );
    Ok(KeyShare::from_bytes(&plaintext, n, moduli)?)
}

/// [`open_share`] with `N` and the moduli taken from the parameter context.
///
/// # Errors
/// As [`open_share`].
pub fn open_share_for(
    ctx: &SecAggContext,
    recipient: &NodeIdentity,
    sender: &NodePublicKeys,
    expected: &ShareContext,
    envelope: &SealedShare,
) -> Result<KeyShare, EnvelopeError> {
    open_share(ctx.polynomial_size(), ctx.moduli(), recipient, sender, expected, envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const M: [u64; 3] = crate::params::DEFAULT_MODULI;

    fn setup() -> (NodeIdentity, NodeIdentity, ShareContext, KeyShare) {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let a = NodeIdentity::generate_with(&mut rng);
        let b = NodeIdentity::generate_with(&mut rng);
        let ctx = ShareContext {
            federation: "fed-a".into(),
            round: RoundId(7),
            announcement: AnnouncementHash([5; 32]),
            sender: ParticipantId::new(1).unwrap(),
            recipient: ParticipantId::new(2).unwrap(),
        };
        let share = KeyShare::from_values((0..48).map(|i| M[2] - 1 - i).collect(), &M).unwrap();
        (a, b, ctx, share)
    }

    #[test]
    fn round_trip() {
        let (a, b, ctx, share) = setup();
        let env = seal_share(&a, &b.public_keys(), &ctx, &share).unwrap();
        assert_eq!(open_share(16, &M, &b, &a.public_keys(), &ctx, &env).unwrap(), share);
        // The relay sees no plaintext.
        let pt = share.to_bytes();
        assert!(!env.ciphertext.windows(8).any(|w| w == &pt[..8]));
    }

    #[test]
    fn rejections_are_typed() {
        let (a, b, ctx, share) = setup();
        let env = seal_share(&a, &b.public_keys(), &ctx, &share).unwrap();
        let open = |e: &SealedShare, exp: &ShareContext| open_share(16, &M, &b, &a.public_keys(), exp, e);

        let mut t = env.clone();
        t.ciphertext[3] ^= 1;
        assert_eq!(open(&t, &ctx), Err(EnvelopeError::BadSignature));
        let mut t = env.clone();
        t.signature[0] ^= 1;
        assert_eq!(open(&t, &ctx), Err(EnvelopeError::BadSignature));
        let mut t = env.clone();
        t.signature.pop();
        assert!(matches!(open(&t, &ctx), Err(EnvelopeError::Malformed(_))));
        // Signed by someone else.
        let mallory = NodeIdentity::generate();
        let forged = seal_share(&mallory, &b.public_keys(), &ctx, &share).unwrap();
        assert_eq!(open(&forged, &ctx), Err(EnvelopeError::BadSignature));
        // Binding: relabelled context fails the comparison, or the signature if also expected.
        let wrong_round = ShareContext { round: RoundId(8), ..ctx.clone() };
        assert_eq!(open(&env, &wrong_round), Err(EnvelopeError::WrongRound { expected: RoundId(8), got: RoundId(7) }));
        let mut relabelled = env.clone();
        relabelled.context.round = RoundId(8);
        assert_eq!(open(&relabelled, &wrong_round), Err(EnvelopeError::BadSignature));
        let other = ShareContext { recipient: ParticipantId::new(3).unwrap(), ..ctx.clone() };
        assert!(matches!(open(&env, &other), Err(EnvelopeError::WrongRecipient { .. })));
        let other = ShareContext { federation: "fed-b".into(), ..ctx.clone() };
        assert!(matches!(open(&env, &other), Err(EnvelopeError::WrongFederation { .. })));
        let other = ShareContext { sender: ParticipantId::new(9).unwrap(), ..ctx.clone() };
        assert!(matches!(open(&env, &other), Err(EnvelopeError::WrongSender { .. })));
        // Another announcement with the same round id: refused by the binding, and a relabelled
        // context fails the signature (the hash is in the signed associated data).
        let other = ShareContext { announcement: AnnouncementHash([6; 32]), ..ctx.clone() };
        assert_eq!(
            open(&env, &other),
            Err(EnvelopeError::WrongAnnouncement {
                expected: AnnouncementHash([6; 32]),
                got: AnnouncementHash([5; 32])
            })
        );
        let mut relabelled = env.clone();
        relabelled.context.announcement = AnnouncementHash([6; 32]);
        assert_eq!(open(&relabelled, &other), Err(EnvelopeError::BadSignature));
        // Validly signed by the sender but encrypted to another key: AEAD rejects it.
        let c = NodeIdentity::generate();
        let misdirected = seal_share(&a, &c.public_keys(), &ctx, &share).unwrap();
        assert_eq!(open(&misdirected, &ctx), Err(EnvelopeError::Tampered));
        // Wrong share length for these parameters.
        assert!(matches!(open_share(32, &M, &b, &a.public_keys(), &ctx, &env), Err(EnvelopeError::Malformed(_))));
    }
}
