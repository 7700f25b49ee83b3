//! The client's side of threshold-RLWE secure aggregation: its long-term identity, and the per-round
//! state machine (share the round key, open the shares addressed to it, encrypt the update, answer
//! one decryption request). No I/O except loading the identity file; the node loop moves the bytes.

use cohort_crypto::announce::{decode_sealed, encode_sealed};
use cohort_crypto::envelope::open_share_for;
use cohort_crypto::shamir::share_round_key;
use cohort_crypto::{
    DecryptionRequest, KeyHolder, KeyShare, NodeIdentity, ParticipantId, PartialDecryption, RoundAnnouncement,
    RoundSecretKey, SecAggContext, Weight, encrypt_update, seal_share,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeSet;
use std::path::Path;

/// File name of the node's secure-aggregation identity inside its data directory (mode 0600).
pub const IDENTITY_FILE: &str = "secagg-identity.key";

/// A secure-aggregation step this node refuses or cannot do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureClientError {
    /// The identity file is unusable.
    #[error("secure-aggregation identity {path}: {message}")]
    Identity {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The coordinator's announcement breaks the policy this node relies on.
    #[error("refusing the secure round: {0}")]
    Announcement(String),
    /// A share envelope did not open or verify.
    #[error("refusing key shares: {0}")]
    Shares(String),
    /// The update cannot be encrypted.
    #[error("cannot encrypt the update: {0}")]
    Encrypt(String),
    /// The decryption request is refused (for example a second request, or a set below min_participants).
    #[error("refusing the decryption request: {0}")]
    Decrypt(#[from] cohort_crypto::DecryptError),
    /// A step out of order.
    #[error("secure round step out of order: {0}")]
    OutOfOrder(&'static str),
}

/// Loads the node's long-term identity from `data_dir`, creating it (mode 0600) if absent.
///
/// # Errors
/// [`SecureClientError::Identity`] for an unreadable, unwritable or malformed file.
pub fn load_or_create_identity(data_dir: &Path) -> Result<NodeIdentity, SecureClientError> {
    let path = data_dir.join(IDENTITY_FILE);
    let err = |message: String| SecureClientError::Identity { path: path.display().to_string(), message };
    match std::fs::read(&path) {
        Ok(bytes) => NodeIdentity::from_secret_bytes(&zeroize_on_drop(bytes)).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
            let identity = NodeIdentity::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            use std::io::Write;
            let mut file = options.open(&path).map_err(|e| err(e.to_string()))?;
            file.write_all(&identity.to_secret_bytes()).and_then(|()| file.sync_all()).map_err(|e| err(e.to_string()))?;
            Ok(identity)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn zeroize_on_drop(bytes: Vec<u8>) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(bytes)
}

/// This node's state in one secure round.
#[derive(Debug)]
pub struct ClientRound {
    announcement: RoundAnnouncement,
    ctx: SecAggContext,
    me: ParticipantId,
    len: usize,
    key: Option<RoundSecretKey>,
    own_share: Option<KeyShare>,
    holder: Option<KeyHolder>,
}

impl ClientRound {
    /// Checks the announcement (secure parameters, `n/2 < t ≤ n`, `min_participants ≥ 2`, this node
    /// listed under its own keys) for a model of `model_len` parameters.
    ///
    /// # Errors
    /// [`SecureClientError::Announcement`] naming what is refused.
    pub fn new(announcement: RoundAnnouncement, federation: &str, me: &str, identity: &NodeIdentity, model_len: usize) -> Result<Self, SecureClientError> {
        let bad = |m: String| SecureClientError::Announcement(m);
        if announcement.params.insecure_toy {
            return Err(bad("the coordinator asked for insecure toy parameters".into()));
        }
        if announcement.federation != federation {
            return Err(bad(format!("announcement for federation {:?}", announcement.federation)));
        }
        let ctx = announcement.params.build().map_err(|e| bad(e.to_string()))?;
        announcement.validate().map_err(|e| bad(e.to_string()))?;
        let mine = announcement.participant(me).ok_or_else(|| bad(format!("{me} is not among the participants")))?;
        if mine.keys != identity.public_keys() {
            return Err(bad("the announced public keys of this node are not its own".into()));
        }
        let me = mine.id;
        Ok(Self { announcement, ctx, me, len: model_len + 1, key: None, own_share: None, holder: None })
    }

    /// The round number.
    pub fn round(&self) -> u64 {
        self.announcement.round.0
    }

    /// Samples the round key and Shamir-shares it to every participant; returns one sealed,
    /// signed envelope per other participant as `(recipient name, bytes)`. This node's own share
    /// stays here.
    ///
    /// # Errors
    /// [`SecureClientError::Shares`] if sharing or sealing fails; [`SecureClientError::OutOfOrder`]
    /// when called twice.
    pub fn seal_shares(&mut self, identity: &NodeIdentity) -> Result<Vec<(String, Vec<u8>)>, SecureClientError> {
        if self.key.is_some() {
            return Err(SecureClientError::OutOfOrder("shares were already sealed"));
        }
        let mut rng = ChaCha20Rng::from_os_rng();
        let key = RoundSecretKey::generate_with(&self.ctx, &mut rng);
        let ids: Vec<ParticipantId> = self.announcement.participants.iter().map(|p| p.id).collect();
        let shares = share_round_key(self.ctx.modulus(), &key, self.announcement.threshold, &ids, &mut rng)
            .map_err(|e| SecureClientError::Shares(e.to_string()))?;
        let mut out = Vec::with_capacity(ids.len());
        for (to, share) in shares {
            if to == self.me {
                self.own_share = Some(share);
                continue;
            }
            let p = self.announcement.by_id(to).ok_or(SecureClientError::OutOfOrder("unknown participant"))?;
            let sealed = seal_share(identity, &p.keys, &self.announcement.share_context(self.me, to), &share)
                .map_err(|e| SecureClientError::Shares(e.to_string()))?;
            out.push((p.name.clone(), encode_sealed(&sealed)));
        }
        self.key = Some(key);
        Ok(out)
    }

    /// Opens the envelopes addressed to this node and becomes a key holder for the round's key
    /// holders `holders`. Every holder other than this node must have sent exactly one envelope,
    /// and each must verify (signature, round and pair binding, AEAD).
    ///
    /// # Errors
    /// [`SecureClientError::Shares`] for a missing, extra or invalid envelope, or a holder set that
    /// cannot decrypt (fewer than t, or without this node).
    pub fn receive_shares(
        &mut self,
        identity: &NodeIdentity,
        holders: &[String],
        envelopes: &[(String, Vec<u8>)],
    ) -> Result<(), SecureClientError> {
        let bad = |m: String| SecureClientError::Shares(m);
        let own = self.own_share.take().ok_or(SecureClientError::OutOfOrder("shares were not sealed"))?;
        let holder_set: BTreeSet<&str> = holders.iter().map(String::as_str).collect();
        let ann = &self.announcement;
        if holder_set.len() < ann.threshold {
            return Err(bad(format!("{} key holders, below the threshold {}", holder_set.len(), ann.threshold)));
        }
        let my_name = ann.by_id(self.me).map(|p| p.name.as_str()).unwrap_or_default();
        if !holder_set.contains(my_name) {
            return Err(bad("this node is not among the key holders".into()));
        }
        let mut holder = KeyHolder::new(&self.ctx, ann.round, ann.seed, self.me, ann.threshold, ann.min_participants, self.len)?;
        holder.receive_share(self.me, own)?;
        let mut seen = BTreeSet::new();
        for (from, blob) in envelopes {
            let p = ann.participant(from).ok_or_else(|| bad(format!("envelope from {from}, who is not a participant")))?;
            if !holder_set.contains(from.as_str()) || !seen.insert(from.as_str()) {
                return Err(bad(format!("unexpected envelope from {from}")));
            }
            let context = ann.share_context(p.id, self.me);
            let sealed = decode_sealed(context.clone(), blob).map_err(|e| bad(format!("from {from}: {e}")))?;
            let share = open_share_for(&self.ctx, identity, &p.keys, &context, &sealed).map_err(|e| bad(format!("from {from}: {e}")))?;
            holder.receive_share(p.id, share)?;
        }
        if seen.len() + 1 != holder_set.len() {
            return Err(bad(format!("{} envelopes for {} other key holders", seen.len(), holder_set.len() - 1)));
        }
        self.holder = Some(holder);
        Ok(())
    }

    /// Encrypts `delta` with the FedAvg weight of `examples` (`min(n_i / n_ref, max_weight)`; the
    /// weight coordinate is appended) into one `u64` body per coordinate. The round key is
    /// dropped (zeroized) afterwards: a node encrypts once per round.
    ///
    /// # Errors
    /// [`SecureClientError::Encrypt`] for a non-finite delta or a wrong length;
    /// [`SecureClientError::OutOfOrder`] before the shares were received or a second time.
    pub fn encrypt(&mut self, delta: &[f32], examples: u64) -> Result<Vec<u64>, SecureClientError> {
        if self.holder.is_none() {
            return Err(SecureClientError::OutOfOrder("encrypting before receiving the key shares"));
        }
        let key = self.key.take().ok_or(SecureClientError::OutOfOrder("the round key was already used"))?;
        if delta.len() + 1 != self.len {
            return Err(SecureClientError::Encrypt(format!("update has {} values, the model {}", delta.len(), self.len - 1)));
        }
        let weight = Weight::new(&self.ctx, self.announcement.weight_for(examples)).map_err(|e| SecureClientError::Encrypt(e.to_string()))?;
        let mut out = vec![0u64; self.len];
        let ann = &self.announcement;
        encrypt_update(&mut out, &self.ctx, ann.round, &ann.seed, &key, delta, weight, &mut ChaCha20Rng::from_os_rng())
            .map_err(|e| SecureClientError::Encrypt(e.to_string()))?;
        Ok(out)
    }

    /// Answers the round's decryption request, at most once, and only for a participant set of at
    /// least `min_participants` (enforced by [`KeyHolder`]).
    ///
    /// # Errors
    /// [`SecureClientError::Decrypt`] for a refused request; [`SecureClientError::OutOfOrder`]
    /// when this node holds no shares.
    pub fn answer(&mut self, request: &DecryptionRequest) -> Result<PartialDecryption, SecureClientError> {
        let holder = self.holder.as_mut().ok_or(SecureClientError::OutOfOrder("no key shares held this round"))?;
        Ok(holder.partial_decrypt(request)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_crypto::{AnnouncedParticipant, Aggregator, MaskSeed, RoundId, SecAggParams, combine, DecryptError};

    fn announcement(identities: &[NodeIdentity]) -> RoundAnnouncement {
        RoundAnnouncement {
            federation: "f".into(),
            round: RoundId(7),
            seed: MaskSeed::generate(),
            params: SecAggParams::default(),
            threshold: 2,
            min_participants: 2,
            reference_examples: 10.0,
            participants: identities
                .iter()
                .enumerate()
                .map(|(i, id)| AnnouncedParticipant {
                    name: format!("n{i}"),
                    id: ParticipantId::new(i as u32 + 1).unwrap(),
                    keys: id.public_keys(),
                })
                .collect(),
        }
    }

    #[test]
    fn three_clients_share_encrypt_and_answer_once() {
        let ids: Vec<NodeIdentity> = (0..3).map(|_| NodeIdentity::generate()).collect();
        let ann = announcement(&ids);
        let mut rounds: Vec<ClientRound> =
            (0..3).map(|i| ClientRound::new(ann.clone(), "f", &format!("n{i}"), &ids[i], 2).unwrap()).collect();
        let mut mail: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); 3];
        for i in 0..3 {
            for (to, blob) in rounds[i].seal_shares(&ids[i]).unwrap() {
                let k: usize = to[1..].parse().unwrap();
                mail[k].push((format!("n{i}"), blob));
            }
        }
        let holders: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        // A tampered envelope is refused.
        let mut tampered = mail[0].clone();
        let last = tampered[0].1.len() - 1;
        tampered[0].1[last] ^= 1;
        let mut probe = ClientRound::new(ann.clone(), "f", "n0", &ids[0], 2).unwrap();
        probe.seal_shares(&ids[0]).unwrap();
        assert!(matches!(probe.receive_shares(&ids[0], &holders, &tampered), Err(SecureClientError::Shares(_))));
        for i in 0..3 {
            rounds[i].receive_shares(&ids[i], &holders, &mail[i]).unwrap();
        }
        let ctx = ann.params.build().unwrap();
        let mut agg = Aggregator::new(&ctx, 3);
        for (i, r) in rounds.iter_mut().enumerate() {
            let body = r.encrypt(&[0.5, -0.25 * i as f32], 10).unwrap();
            assert!(matches!(r.encrypt(&[0.0, 0.0], 10), Err(SecureClientError::OutOfOrder(_))));
            agg.add_client(ParticipantId::new(i as u32 + 1).unwrap(), &body).unwrap();
        }
        let agg = agg.finish().unwrap();
        let all: Vec<ParticipantId> = (1..=3).map(|i| ParticipantId::new(i).unwrap()).collect();
        let request = DecryptionRequest { round: RoundId(7), participants: all.clone(), responders: all[..2].to_vec(), len: 3 };
        let partials = vec![rounds[0].answer(&request).unwrap(), rounds[1].answer(&request).unwrap()];
        // A second request in the same round, and a set below min_participants, are refused.
        assert!(matches!(rounds[0].answer(&request), Err(SecureClientError::Decrypt(DecryptError::AlreadyAnswered))));
        let small = DecryptionRequest { participants: all[..1].to_vec(), ..request.clone() };
        assert!(matches!(rounds[2].answer(&small), Err(SecureClientError::Decrypt(DecryptError::TooFewParticipants { .. }))));
        let sums = combine(&ctx, &request, 2, &agg, &partials).unwrap();
        let mean = cohort_crypto::encoding::decode_weighted_mean(&sums).unwrap();
        assert!((mean[0] - 0.5).abs() <= ctx.quantization_step());
        assert!((mean[1] + 0.25).abs() <= ctx.quantization_step());
    }

    #[test]
    fn announcements_that_break_the_policy_are_refused() {
        let ids: Vec<NodeIdentity> = (0..3).map(|_| NodeIdentity::generate()).collect();
        let mut ann = announcement(&ids);
        ann.params = SecAggParams::toy_insecure(16);
        assert!(ClientRound::new(ann, "f", "n0", &ids[0], 2).is_err());
        let mut ann = announcement(&ids);
        ann.threshold = 1;
        assert!(ClientRound::new(ann, "f", "n0", &ids[0], 2).is_err());
        let ann = announcement(&ids);
        assert!(ClientRound::new(ann.clone(), "f", "n0", &ids[1], 2).is_err(), "keys of another node");
        assert!(ClientRound::new(ann, "other", "n0", &ids[0], 2).is_err());
    }

    #[test]
    fn identity_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public_keys(), b.public_keys());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(IDENTITY_FILE), [1, 2, 3]).unwrap();
        assert!(load_or_create_identity(dir.path()).is_err());
    }
}
