//! The client's side of threshold-RLWE secure aggregation: its long-term identity, and the per-round
//! state machine (share the round key, open the shares addressed to it, encrypt the update, answer
//! one decryption request). No I/O except loading the identity file; the node loop moves the bytes.

use crate::journal::SqliteJournal;
use cohort_core::binding::{FederationTrust, SignedBinding, UnixTime};
use cohort_core::config::ClientSecureAggregation;
use cohort_core::pki::Role;
use cohort_crypto::announce::{decode_sealed, encode_sealed};
use cohort_crypto::envelope::open_share_for;
use cohort_crypto::shamir::share_round_key;
use cohort_crypto::{
    AnswerJournal, Consent, DecryptionRequest, KeyHolder, KeyShare, NodeIdentity, PartialDecryption, ParticipantId,
    RoundAnnouncement, RoundId, RoundSecretKey, SecAggContext, SecretRng, Weight, encrypt_update, seal_share,
    sign_consent,
};
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
    /// The coordinator's announcement is malformed or not for this node.
    #[error("refusing the secure round: {0}")]
    Announcement(String),
    /// The announced round is weaker than this node's `[secure_aggregation]` floor.
    #[error("refusing the secure round: weaker than this node's secure-aggregation floor: {0}")]
    BelowFloor(String),
    /// A participant's announced keys are not bound to its certificate by the federation CA.
    #[error("refusing the secure round: the keys announced for {node} are not its own ({reason})")]
    KeySubstitution {
        /// The participant.
        node: String,
        /// What failed.
        reason: String,
    },
    /// The model sent for training is not the one the announcement names.
    #[error("refusing the secure round: the model sent differs from the announced model hash")]
    ModelMismatch,
    /// The round id was answered before (a replayed or reused round).
    #[error("refusing the secure round: round id {0:016x} was already answered by this node")]
    Replay(u64),
    /// The answer journal failed.
    #[error("secure-aggregation journal: {0}")]
    Journal(cohort_crypto::JournalError),
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
            cohort_core::secret::create_private_file(&path, &identity.to_secret_bytes())
                .map_err(|e| err(e.to_string()))?;
            Ok(identity)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn zeroize_on_drop(bytes: Vec<u8>) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(bytes)
}

/// What this node checks an announcement against before it shares anything: its own floor, the federation CA,
/// and the model it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    /// The federation this node belongs to.
    pub federation: &'a str,
    /// This node's name.
    pub me: &'a str,
    /// This node's floor for secure aggregation.
    pub policy: &'a ClientSecureAggregation,
    /// The federation CA, to check every participant's key binding.
    pub trust: &'a FederationTrust,
    /// The time at which certificates must be valid.
    pub now: UnixTime,
}

impl Verifier<'_> {
    /// Checks `announcement` (with the participants' `bindings`) for training `model`, in this order: the
    /// federation, the parameters (no toy sets, and flooding at least as strong as this node's floor), the
    /// announcement's own rules, this node's collusion floor, the model hash, every participant's key binding
    /// up to the CA, and this node's own listing.
    ///
    /// # Errors
    /// [`SecureClientError::Announcement`], [`SecureClientError::BelowFloor`],
    /// [`SecureClientError::ModelMismatch`] or [`SecureClientError::KeySubstitution`].
    pub fn check(
        &self,
        announcement: &RoundAnnouncement,
        bindings: &[SignedBinding],
        identity: &NodeIdentity,
        model: &[f32],
    ) -> Result<SecAggContext, SecureClientError> {
        let bad = |m: String| SecureClientError::Announcement(m);
        let floor = |m: String| SecureClientError::BelowFloor(m);
        let ann = announcement;
        if ann.federation != self.federation {
            return Err(bad(format!("announcement for federation {:?}", ann.federation)));
        }
        if ann.params.insecure_toy {
            return Err(floor("the coordinator asked for insecure toy parameters".into()));
        }
        let ctx = ann.params.build().map_err(|e| floor(e.to_string()))?;
        ann.validate().map_err(|e| floor(e.to_string()))?;
        let p = self.policy;
        let n = ann.participants.len();
        if ann.max_colluders < p.max_colluders || 2 * ann.threshold <= n + p.max_colluders {
            return Err(floor(format!(
                "threshold {} of {n} is not safe against {} colluding hospitals (this node's max_colluders; the \
                 announcement claims {})",
                ann.threshold, p.max_colluders, ann.max_colluders
            )));
        }
        if ann.threshold < p.min_threshold {
            return Err(floor(format!(
                "threshold {} is below this node's min_threshold {}",
                ann.threshold, p.min_threshold
            )));
        }
        if ann.min_participants < p.min_participants {
            return Err(floor(format!(
                "min_participants {} is below this node's floor of {}",
                ann.min_participants, p.min_participants
            )));
        }
        let distance = ctx.statistical_distance_log2(ann.model_len + 1);
        if distance > -f64::from(p.min_statistical_security) {
            return Err(floor(format!(
                "the flooding noise hides partial decryptions only to 2^{distance:.1}, this node requires 2^-{}",
                p.min_statistical_security
            )));
        }
        if ann.model_len != model.len() || ann.model_sha256 != model_digest(model) {
            return Err(SecureClientError::ModelMismatch);
        }
        for participant in &ann.participants {
            let substituted =
                |reason: String| SecureClientError::KeySubstitution { node: participant.name.clone(), reason };
            let binding = bindings
                .iter()
                .find(|b| b.node == participant.name)
                .ok_or_else(|| substituted("no certificate-bound keys were relayed".into()))?;
            self.trust
                .verify_binding(binding, self.federation, &participant.name, Role::Client, self.now)
                .map_err(|e| substituted(e.to_string()))?;
            if binding.keys.x25519 != participant.keys.x25519 || binding.keys.share_ed25519 != participant.keys.ed25519
            {
                return Err(substituted("the announced keys are not the keys its certificate bound".into()));
            }
        }
        let mine = ann.participant(self.me).ok_or_else(|| bad(format!("{} is not among the participants", self.me)))?;
        if mine.keys != identity.public_keys() {
            return Err(SecureClientError::KeySubstitution {
                node: self.me.to_owned(),
                reason: "the announced keys of this node are not its own".into(),
            });
        }
        Ok(ctx)
    }
}

/// SHA-256 of the model's little-endian f32 bytes, as announced.
pub fn model_digest(model: &[f32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(cohort_core::model::parameters_to_bytes(model)).into()
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
    /// Starts this node's part in `announcement`, checked by `verifier` (see [`Verifier::check`]), for training
    /// `model`. A round id this node has answered before, under any announcement, is refused: the coordinator
    /// never reuses one, so seeing one again means a replay.
    ///
    /// # Errors
    /// As [`Verifier::check`]; [`SecureClientError::Replay`] for an answered round id;
    /// [`SecureClientError::Journal`] when the journal cannot be read.
    pub fn new(
        announcement: RoundAnnouncement,
        bindings: &[SignedBinding],
        verifier: &Verifier<'_>,
        identity: &NodeIdentity,
        model: &[f32],
        journal: &SqliteJournal,
    ) -> Result<Self, SecureClientError> {
        let ctx = verifier.check(&announcement, bindings, identity, model)?;
        if journal.has_answered(announcement.round).map_err(SecureClientError::Journal)? {
            return Err(SecureClientError::Replay(announcement.round.0));
        }
        let me = announcement
            .participant(verifier.me)
            .map(|p| p.id)
            .ok_or(SecureClientError::OutOfOrder("not a participant"))?;
        let len = model.len() + 1;
        Ok(Self { announcement, ctx, me, len, key: None, own_share: None, holder: None })
    }

    /// The announcement's round id.
    pub fn round_id(&self) -> RoundId {
        self.announcement.round
    }

    /// This node's consent: its signature over the announcement's hash. Key holders decrypt only sets whose
    /// every member consented to the same announcement.
    pub fn consent(&self, identity: &NodeIdentity) -> Consent {
        sign_consent(identity, self.me, &self.announcement.hash())
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
        // Round secrets come from an OS-seeded generator whose state is scrubbed when it drops.
        let mut rng = SecretRng::from_os();
        let key = RoundSecretKey::generate_with(&self.ctx, &mut rng);
        let ids: Vec<ParticipantId> = self.announcement.participants.iter().map(|p| p.id).collect();
        let shares = share_round_key(&self.ctx, &key, self.announcement.threshold, &ids, &mut rng)
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
        let mut holder = KeyHolder::new(&self.ctx, ann, self.me)?;
        holder.receive_share(self.me, own)?;
        let mut seen = BTreeSet::new();
        for (from, blob) in envelopes {
            let p =
                ann.participant(from).ok_or_else(|| bad(format!("envelope from {from}, who is not a participant")))?;
            if !holder_set.contains(from.as_str()) || !seen.insert(from.as_str()) {
                return Err(bad(format!("unexpected envelope from {from}")));
            }
            let context = ann.share_context(p.id, self.me);
            let sealed = decode_sealed(context.clone(), blob).map_err(|e| bad(format!("from {from}: {e}")))?;
            let share = open_share_for(&self.ctx, identity, &p.keys, &context, &sealed)
                .map_err(|e| bad(format!("from {from}: {e}")))?;
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
            return Err(SecureClientError::Encrypt(format!(
                "update has {} values, the model {}",
                delta.len(),
                self.len - 1
            )));
        }
        let body_len = self.ctx.body_len(delta.len());
        let weight = Weight::new(&self.ctx, self.announcement.weight_for(examples))
            .map_err(|e| SecureClientError::Encrypt(e.to_string()))?;
        let mut out = vec![0u64; body_len];
        let ann = &self.announcement;
        encrypt_update(&mut out, &self.ctx, ann.round, &ann.seed, &key, delta, weight, &mut SecretRng::from_os())
            .map_err(|e| SecureClientError::Encrypt(e.to_string()))?;
        Ok(out)
    }

    /// Answers the round's decryption request, at most once per round id, and only for a set of at least
    /// `min_participants` members who all consented to this announcement (enforced by [`KeyHolder`]). The
    /// answer is written to `journal` before the partial is returned.
    ///
    /// # Errors
    /// [`SecureClientError::Decrypt`] for a refused request; [`SecureClientError::OutOfOrder`]
    /// when this node holds no shares.
    pub fn answer(
        &mut self,
        request: &DecryptionRequest,
        journal: &mut dyn AnswerJournal,
    ) -> Result<PartialDecryption, SecureClientError> {
        let holder = self.holder.as_mut().ok_or(SecureClientError::OutOfOrder("no key shares held this round"))?;
        Ok(holder.partial_decrypt(request, journal)?)
    }
}

#[cfg(test)]
// The tests index several per-node arrays (identities, journals, rounds, mailboxes) in step.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use cohort_core::binding::{BoundKeys, CertSigner};
    use cohort_core::pki::{IssueRequest, init_ca, issue};
    use cohort_crypto::announce::collusion_policy;
    use cohort_crypto::{Aggregator, AnnouncedParticipant, DecryptError, MaskSeed, SecAggParams, combine};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    /// A federation of `n` client nodes with real certificates from a test CA and keys bound to them.
    struct Federation {
        dir: tempfile::TempDir,
        trust: FederationTrust,
        identities: Vec<NodeIdentity>,
        bindings: Vec<SignedBinding>,
    }

    fn federation(n: usize) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "f").unwrap();
        let trust = FederationTrust::load(&ca.join(cohort_core::pki::CA_CERT_FILE)).unwrap();
        let (mut identities, mut bindings) = (Vec::new(), Vec::new());
        for i in 0..n {
            let name = format!("n{i}");
            let files = issue(&ca, &IssueRequest::valid_for_days(&name, Role::Client, &[], 2), &dir.path().join(&name))
                .unwrap();
            let identity = NodeIdentity::generate();
            let k = identity.public_keys();
            let keys = BoundKeys { x25519: k.x25519, share_ed25519: k.ed25519, ledger_ed25519: None };
            let signature = CertSigner::load(&files.key).unwrap().sign("f", &name, Role::Client, &keys).unwrap();
            let certificate_der = CertificateDer::from_pem_file(&files.cert).unwrap().to_vec();
            bindings.push(SignedBinding { node: name, certificate_der, keys, signature });
            identities.push(identity);
        }
        Federation { dir, trust, identities, bindings }
    }

    const MODEL: [f32; 2] = [0.25, -0.5];

    fn announcement(fed: &Federation, c: usize) -> RoundAnnouncement {
        let (threshold, min_participants) = collusion_policy(fed.identities.len(), c).unwrap();
        RoundAnnouncement {
            federation: "f".into(),
            round: RoundId(rand::random()),
            nonce: rand::random(),
            model_sha256: model_digest(&MODEL),
            seed: MaskSeed::generate(),
            params: SecAggParams::default(),
            threshold,
            min_participants,
            max_colluders: c,
            reference_examples: 10.0,
            weight_cap: 1e6,
            model_len: MODEL.len(),
            participants: fed
                .identities
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

    fn verifier<'a>(fed: &'a Federation, me: &'a str, policy: &'a ClientSecureAggregation) -> Verifier<'a> {
        Verifier { federation: "f", me, policy, trust: &fed.trust, now: UnixTime::now() }
    }

    fn journal(fed: &Federation, i: usize) -> SqliteJournal {
        SqliteJournal::open(&fed.dir.path().join(format!("n{i}-data")), "f").unwrap()
    }

    /// Node n0 starts its part in `ann` with the relayed `bindings` under `policy`, training [`MODEL`].
    fn start_n0(
        fed: &Federation,
        ann: RoundAnnouncement,
        bindings: &[SignedBinding],
        policy: &ClientSecureAggregation,
    ) -> Result<ClientRound, SecureClientError> {
        ClientRound::new(ann, bindings, &verifier(fed, "n0", policy), &fed.identities[0], &MODEL, &journal(fed, 0))
    }

    /// Three nodes share, encrypt and answer once; the sum decodes; a restarted key holder refuses the round.
    #[test]
    fn three_clients_share_encrypt_and_answer_once_even_across_a_restart() {
        let fed = federation(3);
        let ann = announcement(&fed, 1);
        let policy = ClientSecureAggregation::default();
        let names = ["n0", "n1", "n2"];
        let mut journals: Vec<SqliteJournal> = (0..3).map(|i| journal(&fed, i)).collect();
        let mut rounds: Vec<ClientRound> = (0..3)
            .map(|i| {
                ClientRound::new(
                    ann.clone(),
                    &fed.bindings,
                    &verifier(&fed, names[i], &policy),
                    &fed.identities[i],
                    &MODEL,
                    &journals[i],
                )
                .unwrap()
            })
            .collect();
        let mut mail: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); 3];
        for i in 0..3 {
            for (to, blob) in rounds[i].seal_shares(&fed.identities[i]).unwrap() {
                let k: usize = to[1..].parse().unwrap();
                mail[k].push((format!("n{i}"), blob));
            }
        }
        let holders: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        for i in 0..3 {
            rounds[i].receive_shares(&fed.identities[i], &holders, &mail[i]).unwrap();
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
        let consents = rounds.iter().zip(&fed.identities).map(|(r, id)| r.consent(id)).collect();
        let request = DecryptionRequest {
            round: ann.round,
            announcement: ann.hash(),
            participants: all.clone(),
            consents,
            responders: all.clone(),
            len: 3,
        };
        let mut partials = Vec::new();
        for i in 0..3 {
            partials.push(rounds[i].answer(&request, &mut journals[i]).unwrap());
        }
        assert!(matches!(
            rounds[0].answer(&request, &mut journals[0]),
            Err(SecureClientError::Decrypt(DecryptError::AlreadyAnswered))
        ));
        let sums = combine(&ctx, &request, 3, &agg, &partials).unwrap();
        let mean = cohort_crypto::encoding::decode_weighted_mean(&sums).unwrap();
        assert!((mean[0] - 0.5).abs() <= ctx.quantization_step());
        assert!((mean[1] + 0.25).abs() <= ctx.quantization_step());

        // After a restart, node 0 reopens its journal: the round id is refused before anything is shared.
        drop(journals);
        let reopened = journal(&fed, 0);
        let again = ClientRound::new(
            ann.clone(),
            &fed.bindings,
            &verifier(&fed, "n0", &policy),
            &fed.identities[0],
            &MODEL,
            &reopened,
        );
        assert!(matches!(again, Err(SecureClientError::Replay(id)) if id == ann.round.0));
    }

    /// The coordinator announces keys of its own for n1: every node refuses, naming n1.
    #[test]
    fn a_substituted_key_is_refused_by_every_node() {
        let fed = federation(3);
        let policy = ClientSecureAggregation::default();
        let mut ann = announcement(&fed, 1);
        ann.participants[1].keys = NodeIdentity::generate().public_keys();
        for i in 0..3 {
            let me = format!("n{i}");
            let err = ClientRound::new(
                ann.clone(),
                &fed.bindings,
                &verifier(&fed, &me, &policy),
                &fed.identities[i],
                &MODEL,
                &journal(&fed, i),
            )
            .unwrap_err();
            assert!(matches!(&err, SecureClientError::KeySubstitution { node, .. } if node == "n1"), "{me}: {err}");
        }
        // Substituting the binding too does not help: the coordinator cannot sign for n1's certificate.
        let mut bindings = fed.bindings.clone();
        let k = ann.participants[1].keys;
        bindings[1].keys = BoundKeys { x25519: k.x25519, share_ed25519: k.ed25519, ledger_ed25519: None };
        let err = start_n0(&fed, ann.clone(), &bindings, &policy).unwrap_err();
        assert!(
            matches!(&err, SecureClientError::KeySubstitution { node, reason } if node == "n1" && reason.contains("not signed")),
            "{err}"
        );
        // Nor does relaying n2's certificate for n1, or dropping n1's binding.
        let ann = announcement(&fed, 1);
        let mut swapped = fed.bindings.clone();
        swapped[1] = SignedBinding { node: "n1".into(), ..fed.bindings[2].clone() };
        let err = start_n0(&fed, ann.clone(), &swapped, &policy).unwrap_err();
        assert!(matches!(&err, SecureClientError::KeySubstitution { node, .. } if node == "n1"), "{err}");
        let err = start_n0(&fed, ann, &fed.bindings[..1], &policy).unwrap_err();
        assert!(matches!(&err, SecureClientError::KeySubstitution { .. }), "{err}");
    }

    /// Announcements below the node's floor are refused: toy parameters, a threshold that allows a split
    /// with this node's colluder count, a smaller minimum set, or a threshold below the floor.
    #[test]
    fn a_downgrade_to_weaker_parameters_is_refused() {
        let fed = federation(5);
        let policy = ClientSecureAggregation::default();
        let check = |ann: RoundAnnouncement| start_n0(&fed, ann, &fed.bindings, &policy);
        let mut ann = announcement(&fed, 1);
        ann.params = SecAggParams::toy_insecure(16);
        assert!(matches!(check(ann), Err(SecureClientError::BelowFloor(_))));
        // c = 0 gives t = 3 of 5: one colluder could split the honest holders. This node assumes c = 1.
        let weak = announcement(&fed, 0);
        assert_eq!(weak.threshold, 3);
        assert!(matches!(check(weak), Err(SecureClientError::BelowFloor(m)) if m.contains("colluding")));
        let mut ann = announcement(&fed, 1);
        ann.min_participants = 2;
        assert!(matches!(check(ann), Err(SecureClientError::BelowFloor(_))));
        let strict = ClientSecureAggregation { min_threshold: 5, ..ClientSecureAggregation::default() };
        let err = start_n0(&fed, announcement(&fed, 1), &fed.bindings, &strict).unwrap_err();
        assert!(matches!(err, SecureClientError::BelowFloor(m) if m.contains("min_threshold")));
        let strong = ClientSecureAggregation { min_statistical_security: 200, ..ClientSecureAggregation::default() };
        let err = start_n0(&fed, announcement(&fed, 1), &fed.bindings, &strong).unwrap_err();
        assert!(matches!(err, SecureClientError::BelowFloor(m) if m.contains("flooding")));
        // The honest announcement passes.
        check(announcement(&fed, 1)).unwrap();
    }

    /// A model that differs from the announced hash (Pasquini et al.'s model-inconsistency attack) is refused.
    #[test]
    fn a_model_that_differs_from_the_announced_hash_is_refused() {
        let fed = federation(3);
        let policy = ClientSecureAggregation::default();
        let ann = announcement(&fed, 1);
        let other = [0.25, 0.5];
        let err = ClientRound::new(
            ann,
            &fed.bindings,
            &verifier(&fed, "n0", &policy),
            &fed.identities[0],
            &other,
            &journal(&fed, 0),
        )
        .unwrap_err();
        assert!(matches!(err, SecureClientError::ModelMismatch), "{err}");
    }

    /// A decryption request whose set holds a node that never consented, or that names another announcement,
    /// is refused by the key holder and consumes nothing.
    #[test]
    fn a_decryption_set_with_non_signers_or_another_announcement_is_refused() {
        let fed = federation(4);
        let policy = ClientSecureAggregation::default();
        let ann = announcement(&fed, 1);
        let names = ["n0", "n1", "n2", "n3"];
        let mut rounds: Vec<ClientRound> = (0..4)
            .map(|i| {
                ClientRound::new(
                    ann.clone(),
                    &fed.bindings,
                    &verifier(&fed, names[i], &policy),
                    &fed.identities[i],
                    &MODEL,
                    &journal(&fed, i),
                )
                .unwrap()
            })
            .collect();
        let mut mail: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); 4];
        for i in 0..4 {
            for (to, blob) in rounds[i].seal_shares(&fed.identities[i]).unwrap() {
                mail[to[1..].parse::<usize>().unwrap()].push((format!("n{i}"), blob));
            }
        }
        let holders: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        for i in 0..4 {
            rounds[i].receive_shares(&fed.identities[i], &holders, &mail[i]).unwrap();
        }
        let ids: Vec<ParticipantId> = (1..=4).map(|i| ParticipantId::new(i).unwrap()).collect();
        let consents: Vec<Consent> = rounds.iter().zip(&fed.identities).map(|(r, id)| r.consent(id)).collect();
        let mut j = journal(&fed, 0);
        let base = DecryptionRequest {
            round: ann.round,
            announcement: ann.hash(),
            participants: ids[..3].to_vec(),
            consents: consents[..3].to_vec(),
            responders: ids[..ann.threshold].to_vec(),
            len: 3,
        };
        let non_signer = DecryptionRequest { consents: consents[..2].to_vec(), ..base.clone() };
        assert!(matches!(
            rounds[0].answer(&non_signer, &mut j),
            Err(SecureClientError::Decrypt(DecryptError::MissingConsent(_)))
        ));
        let forged = DecryptionRequest {
            consents: vec![consents[0], consents[1], Consent { participant: ids[2], ..consents[3] }],
            ..base.clone()
        };
        assert!(matches!(
            rounds[0].answer(&forged, &mut j),
            Err(SecureClientError::Decrypt(DecryptError::BadConsent(_)))
        ));
        let elsewhere = DecryptionRequest { announcement: cohort_crypto::AnnouncementHash([7; 32]), ..base.clone() };
        assert!(matches!(
            rounds[0].answer(&elsewhere, &mut j),
            Err(SecureClientError::Decrypt(DecryptError::WrongAnnouncement { .. }))
        ));
        // None of the refusals consumed the round: the honest request is answered.
        rounds[0].answer(&base, &mut j).unwrap();
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
