//! The privacy ledger: one record per run of a DP mechanism, hash-chained with SHA-256 and signed with the
//! node's Ed25519 key (RFC 8032), and exported as JSON Lines. The node's append-only SQLite store of its records
//! is `cohort_client::ledger::Ledger`; this module has the records, their chain and their canonical bytes.
//!
//! # Records and the chain
//! A [`LedgerRecord`] is a [`RecordBody`] (everything that is hashed) plus its `hash`, the `signer`'s public key
//! and the `signature`. The hash is SHA-256 (FIPS 180-4) of the body's *canonical bytes*: the compact JSON of the
//! body's fields in declaration order, with floats in their shortest round-trip form (serde_json/ryu) and
//! `epsilon_spent` omitted when absent (see [`canonical_bytes`]). The signature is Ed25519 over the 32 raw bytes
//! of the hash. Each record carries the hash of the node's previous record ([`GENESIS`] for the first) and its
//! position `seq` (from 0), so editing, removing, inserting or reordering a line breaks the chain and
//! [`verify_chain`] names the first bad record. The chain is per node: a file may interleave several nodes'
//! records, and each node's records are checked in file order against that node's own chain.
//!
//! Removing records from the *end* of a chain leaves a shorter chain that is still valid on its own; that is
//! detected only against a head known from elsewhere (the coordinator's copy, see [`chain_heads`]).
//!
//! # Composition rule (what `cumulative_epsilon` means)
//! Records keep the raw mechanism parameters (q, σ, C, steps, δ, ε of pure releases), so an auditor recomputes
//! every cumulative ε instead of trusting the stored one. For a node, the cumulative ε recorded in its record *i*
//! is, over that node's records 0..=i:
//!
//! ```text
//! ε_i = ε_RDP(δ_i) + Σ ε_pure
//! ```
//!
//! - ε_RDP(δ_i): every record whose mechanism accounts as [`Accounting::SampledGaussian`] (DP-SGD, DP-SGD
//!   tuning runs) contributes `steps` steps of the Poisson-subsampled Gaussian with its (q, σ); these compose in
//!   one Rényi-DP accountant (orders summed in record order; Mironov 2017) and are converted to ε at the δ of
//!   record *i* with Balle et al. 2020 (`cohort_dp::accountant`).
//! - Σ ε_pure: the `epsilon_spent` of every [`Accounting::PureEpsilon`] record (OpenDP releases) adds by basic
//!   sequential composition (Dwork and Roth 2014, Theorem 3.16); pure ε-DP releases add no δ.
//! - [`Accounting::Nothing`] records (declined rounds) add nothing; they restate the spend so far.
//!
//! The cumulative δ is therefore the record's `delta`. Basic composition of the two parts is valid (an (ε₁, δ)
//! mechanism followed by ε₂-DP releases is (ε₁ + ε₂, δ)-DP) but not tight. The writer of a record must compute
//! `cumulative_epsilon` with exactly this rule; `cohort_coordinator::audit::cumulative_epsilon` is the reference
//! implementation that `cohort audit verify` checks against.
//!
//! # Example
//! ```
//! use cohort_core::ledger::{GENESIS, Mechanism, NodeSigningKey, RecordBody, read_jsonl, verify_chain};
//! let key = NodeSigningKey::from_bytes(&[7; 32]);
//! let draft = RecordBody { sample_rate: 0.01, noise_multiplier: 1.0, steps: 100, cumulative_epsilon: 0.5,
//!     prev_hash: GENESIS.into(), ..RecordBody::new("hospital-a", &"ab".repeat(32), Mechanism::DpSgd) };
//! let record = key.sign_body(draft);
//! assert_eq!(record.body.seq, 0);
//! let back = read_jsonl(record.to_json_line().as_bytes()).unwrap();
//! verify_chain(&back, Some(&[key.public_key_hex()])).unwrap();
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// File name of a node's SQLite ledger inside its data directory (the store is `cohort_client::ledger::Ledger`).
pub const LEDGER_DB_FILE: &str = "ledger.sqlite";
/// File name of a JSON Lines ledger (the export format; also the store of earlier versions, imported by
/// `cohort_client::ledger::Ledger::open`).
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// File name of a node's ledger signing key inside its data directory.
pub const SIGNING_KEY_FILE: &str = "ledger-signing.key";
/// The hash of "no previous record".
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The neighbouring relation every Cohort accountant assumes: add or remove one record.
pub const ADD_REMOVE: &str = "add/remove";

/// What a record accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mechanism {
    /// A round of DP-SGD (Poisson-subsampled Gaussian, `steps` steps at rate q and noise multiplier σ).
    DpSgd,
    /// A DP-SGD run made to tune hyperparameters; it counts against the budget exactly like [`Mechanism::DpSgd`].
    DpSgdTuning,
    /// An OpenDP counting query, pure ε-DP (`epsilon_spent`).
    OpenDpCount,
    /// An OpenDP histogram, pure ε-DP (`epsilon_spent`).
    OpenDpHistogram,
    /// OpenDP feature statistics (means, variances, bounds), pure ε-DP in total (`epsilon_spent`).
    OpenDpFeatureStats,
    /// A DP evaluation of one global model version on the held-out split: a noisy confusion matrix (OpenDP),
    /// pure ε-DP (`epsilon_spent`); `round` holds the model version.
    OpenDpEvaluation,
    /// A round the node declined because it would exceed its budget; ε is unchanged.
    Decline,
}

/// How a mechanism enters the composition rule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accounting {
    /// Composed in the RDP accountant of the Poisson-subsampled Gaussian from (q, σ, steps).
    SampledGaussian,
    /// Adds its `epsilon_spent` by basic composition.
    PureEpsilon,
    /// Spends nothing.
    Nothing,
}

impl Mechanism {
    /// How this mechanism is accounted.
    pub fn accounting(self) -> Accounting {
        match self {
            Self::DpSgd | Self::DpSgdTuning => Accounting::SampledGaussian,
            Self::OpenDpCount | Self::OpenDpHistogram | Self::OpenDpFeatureStats | Self::OpenDpEvaluation => {
                Accounting::PureEpsilon
            }
            Self::Decline => Accounting::Nothing,
        }
    }
}

/// The body of a record: everything that is hashed, in canonical field order.
///
/// Fields that do not apply to a mechanism are 0 (for example σ of an OpenDP release).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordBody {
    /// Position in the node's chain, from 0 (set by `cohort_client::ledger::Ledger::append`).
    pub seq: u64,
    /// Hash of the node's previous record ([`GENESIS`] for the first; set by `cohort_client::ledger::Ledger::append`).
    pub prev_hash: String,
    /// The node that ran the mechanism.
    pub node: String,
    /// SHA-256 (hex) of the data set's schema and row count, never the data.
    pub dataset_fingerprint: String,
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The federation round, if any.
    pub round: Option<u64>,
    /// Poisson sampling rate q.
    pub sample_rate: f64,
    /// Noise multiplier σ (noise standard deviation / clipping norm).
    pub noise_multiplier: f64,
    /// Clipping norm C.
    pub clip_norm: f64,
    /// DP-SGD steps run.
    pub steps: u64,
    /// δ of the node's guarantee; also the cumulative δ after this record.
    pub delta: f64,
    /// ε of a pure ε-DP release ([`Accounting::PureEpsilon`] mechanisms only; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_spent: Option<f64>,
    /// Neighbouring relation ([`ADD_REMOVE`]).
    pub relation: String,
    /// Accountant name (e.g. `cohort_dp::accountant::ACCOUNTANT_NAME`).
    pub accountant: String,
    /// Accountant version string.
    pub accountant_version: String,
    /// Cumulative ε of the node after this record, by the composition rule of the module docs.
    pub cumulative_epsilon: f64,
    /// The node's ε budget.
    pub epsilon_budget: f64,
    /// Free text (for example why a round was declined).
    pub note: String,
    /// Unix time in milliseconds (set by `cohort_client::ledger::Ledger::append`).
    pub timestamp_ms: u64,
}

impl RecordBody {
    /// A draft for `node` with every numeric field 0, no round, relation [`ADD_REMOVE`] and empty texts; fill in
    /// the rest with struct update syntax (`RecordBody { steps: 10, ..RecordBody::new(..) }`).
    pub fn new(node: &str, dataset_fingerprint: &str, mechanism: Mechanism) -> Self {
        Self {
            seq: 0,
            prev_hash: String::new(),
            node: node.to_owned(),
            dataset_fingerprint: dataset_fingerprint.to_owned(),
            mechanism,
            round: None,
            sample_rate: 0.0,
            noise_multiplier: 0.0,
            clip_norm: 0.0,
            steps: 0,
            delta: 0.0,
            epsilon_spent: None,
            relation: ADD_REMOVE.to_owned(),
            accountant: String::new(),
            accountant_version: String::new(),
            cumulative_epsilon: 0.0,
            epsilon_budget: 0.0,
            note: String::new(),
            timestamp_ms: 0,
        }
    }

    /// Checks what `cohort_client::ledger::Ledger::append` requires of a draft: a node name, finite non-negative numbers (so the
    /// record survives JSON exactly), q in [0, 1], δ in [0, 1), and `epsilon_spent` present exactly for
    /// pure-ε mechanisms.
    ///
    /// # Errors
    /// [`LedgerError::Invalid`] saying which field is wrong.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let invalid = |m: String| Err(LedgerError::Invalid(m));
        if self.node.is_empty() {
            return invalid("the node name is empty".into());
        }
        let numbers = [
            ("sample_rate", self.sample_rate),
            ("noise_multiplier", self.noise_multiplier),
            ("clip_norm", self.clip_norm),
            ("delta", self.delta),
            ("cumulative_epsilon", self.cumulative_epsilon),
            ("epsilon_budget", self.epsilon_budget),
            ("epsilon_spent", self.epsilon_spent.unwrap_or(0.0)),
        ];
        if let Some((name, v)) = numbers.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return invalid(format!("{name} = {v} must be a finite number ≥ 0"));
        }
        if self.sample_rate > 1.0 {
            return invalid(format!("sample_rate = {} must be at most 1", self.sample_rate));
        }
        if self.delta >= 1.0 {
            return invalid(format!("delta = {} must be below 1", self.delta));
        }
        match (self.mechanism.accounting(), self.epsilon_spent) {
            (Accounting::PureEpsilon, None) => invalid(format!("{:?} needs epsilon_spent", self.mechanism)),
            (Accounting::SampledGaussian | Accounting::Nothing, Some(_)) => {
                invalid(format!("{:?} must not carry epsilon_spent", self.mechanism))
            }
            _ => Ok(()),
        }
    }
}

/// One privacy-loss event of a record, as the composition rule sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PrivacyEvent {
    /// `steps` steps of the Poisson-subsampled Gaussian at rate `q` with noise multiplier `sigma`.
    SampledGaussian {
        /// Sampling rate.
        q: f64,
        /// Noise multiplier.
        sigma: f64,
        /// Steps.
        steps: u64,
    },
    /// A pure ε-DP release.
    PureEpsilon(f64),
}

/// A signed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// The hashed body.
    #[serde(flatten)]
    pub body: RecordBody,
    /// SHA-256 of [`canonical_bytes`] of `body`, hex.
    pub hash: String,
    /// The signer's Ed25519 public key, hex.
    pub signer: String,
    /// Ed25519 signature over the 32 hash bytes, hex.
    pub signature: String,
}

impl LedgerRecord {
    /// What this record spends under the composition rule (None for a declined round). A pure-ε mechanism
    /// without `epsilon_spent` (which [`RecordBody::validate`] rejects) counts as spending infinitely much.
    pub fn privacy_event(&self) -> Option<PrivacyEvent> {
        let b = &self.body;
        match b.mechanism.accounting() {
            Accounting::SampledGaussian => {
                Some(PrivacyEvent::SampledGaussian { q: b.sample_rate, sigma: b.noise_multiplier, steps: b.steps })
            }
            Accounting::PureEpsilon => Some(PrivacyEvent::PureEpsilon(b.epsilon_spent.unwrap_or(f64::INFINITY))),
            Accounting::Nothing => None,
        }
    }

    /// The cumulative δ after this record (the record's δ; pure-ε releases add none).
    pub fn cumulative_delta(&self) -> f64 {
        self.body.delta
    }

    /// The record as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A ledger problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A line is not a record.
    #[error("line {line}: not a ledger record: {message}")]
    Malformed {
        /// 1-based line (or row, for the SQLite store).
        line: usize,
        /// Parser message.
        message: String,
    },
    /// The chain is broken.
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// A key file is unusable.
    #[error("signing key {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The SQLite store failed.
    #[error("ledger database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A draft record is not acceptable.
    #[error("invalid ledger record: {0}")]
    Invalid(String),
}

/// The first bad record of a chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("record at line {line} (node {node}, seq {seq}): {reason}")]
pub struct ChainError {
    /// 1-based line in the file or position in the list.
    pub line: usize,
    /// The node of the record.
    pub node: String,
    /// The record's stated sequence number.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// The canonical bytes of a body, the input of its hash: compact JSON of the fields in declaration order.
pub fn canonical_bytes(body: &RecordBody) -> Vec<u8> {
    // Serializing a struct of strings, integers and floats cannot fail; non-finite floats (which would
    // serialize as null) are rejected by `RecordBody::validate` before anything is hashed.
    serde_json::to_vec(body).unwrap_or_default()
}

/// SHA-256 (hex) of [`canonical_bytes`] of a body.
pub fn body_hash(body: &RecordBody) -> String {
    hex::encode(Sha256::digest(canonical_bytes(body)))
}

/// Checks every record, per node, in list order: the hash recomputes from the body, `seq` continues the node's
/// chain (0, 1, 2, …), `prev_hash` is the hash of the node's previous record, all of a node's records share one
/// signer, the signer is in `trusted` (hex public keys) when given, and the Ed25519 signature over the hash is
/// valid (strict verification, RFC 8032 §5.1.7 with small-order keys rejected).
///
/// # Errors
/// [`ChainError`] naming the first bad record: its 1-based position, node, stated seq and what is wrong.
pub fn verify_chain(records: &[LedgerRecord], trusted: Option<&[String]>) -> Result<(), ChainError> {
    let mut heads: BTreeMap<&str, (u64, &str, &str)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let bad = |reason: String| ChainError { line: i + 1, node: r.body.node.clone(), seq: r.body.seq, reason };
        if body_hash(&r.body) != r.hash {
            return Err(bad("its hash does not match its contents (a field or the hash was edited)".into()));
        }
        let (expected_seq, expected_prev, signer) = match heads.get(r.body.node.as_str()) {
            Some(&(seq, hash, signer)) => (seq.saturating_add(1), hash, Some(signer)),
            None => (0, GENESIS, None),
        };
        if r.body.seq != expected_seq {
            return Err(bad(format!(
                "sequence number {} where {expected_seq} was expected (a record was removed, inserted or moved)",
                r.body.seq
            )));
        }
        if r.body.prev_hash != expected_prev {
            return Err(bad(
                "prev_hash does not link to the node's previous record (a record was removed, inserted or moved)"
                    .into(),
            ));
        }
        if signer.is_some_and(|s| s != r.signer) {
            return Err(bad("it is signed by a different key than the rest of the node's chain".into()));
        }
        if trusted.is_some_and(|t| !t.contains(&r.signer)) {
            return Err(bad(format!("signer {} is not a trusted key", r.signer)));
        }
        verify_signature(r).map_err(|e| bad(format!("bad signature: {e}")))?;
        heads.insert(&r.body.node, (r.body.seq, &r.hash, &r.signer));
    }
    Ok(())
}

/// Each node's last record in list order: node → (seq, hash). Compare with a head known from elsewhere to
/// detect records removed from the end of a chain.
pub fn chain_heads(records: &[LedgerRecord]) -> BTreeMap<String, (u64, String)> {
    records.iter().map(|r| (r.body.node.clone(), (r.body.seq, r.hash.clone()))).collect()
}

fn verify_signature(r: &LedgerRecord) -> Result<(), String> {
    let key: [u8; 32] = hex::decode(&r.signer)
        .map_err(|e| format!("signer is not hex: {e}"))?
        .try_into()
        .map_err(|_| "signer is not a 32-byte key".to_owned())?;
    let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("signer is not a valid key: {e}"))?;
    let sig: [u8; 64] = hex::decode(&r.signature)
        .map_err(|e| format!("signature is not hex: {e}"))?
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_owned())?;
    let hash = hex::decode(&r.hash).map_err(|e| format!("hash is not hex: {e}"))?;
    key.verify_strict(&hash, &Signature::from_bytes(&sig)).map_err(|e| e.to_string())
}

/// Parses JSON Lines into records; blank lines are skipped.
///
/// # Errors
/// [`LedgerError::Malformed`] naming the 1-based line that is not valid UTF-8 or not a record.
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<LedgerRecord>, LedgerError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| LedgerError::Malformed { line: i + 1, message: e.to_string() })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| LedgerError::Malformed { line: i + 1, message: e.to_string() })?,
        );
    }
    Ok(out)
}

/// Writes records as JSON Lines (one record per line, each ending in `\n`) and returns how many were written.
///
/// # Errors
/// [`io::Error`] from the writer.
pub fn write_jsonl(records: &[LedgerRecord], mut writer: impl Write) -> io::Result<usize> {
    for r in records {
        writer.write_all(r.to_json_line().as_bytes())?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(records.len())
}

/// A node's Ed25519 ledger signing key. The secret is zeroized on drop (ed25519-dalek's `zeroize` feature).
pub struct NodeSigningKey(SigningKey);

impl std::fmt::Debug for NodeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigningKey").field("public", &self.public_key_hex()).finish_non_exhaustive()
    }
}

impl NodeSigningKey {
    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`LedgerError::Key`] if the OS random source fails.
    pub fn generate() -> Result<Self, LedgerError> {
        use rand::TryRngCore;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut *secret)
            .map_err(|e| LedgerError::Key { path: PathBuf::new(), message: format!("OS random source: {e}") })?;
        Ok(Self(SigningKey::from_bytes(&secret)))
    }

    /// The key with these 32 secret bytes (RFC 8032 seed).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// Loads the key from `path` (exactly 32 raw bytes), or creates a new random one there with mode 0600 on
    /// unix. Creation is atomic: a temporary file is written and synced, then hard-linked into place, so a crash
    /// never leaves a partial key and two racing processes end up with the same key.
    ///
    /// # Errors
    /// [`LedgerError::Key`] for an unreadable key file, one that is not 32 bytes, or one that cannot be written.
    pub fn load_or_create(path: &Path) -> Result<Self, LedgerError> {
        let key_err = |message: String| LedgerError::Key { path: path.to_owned(), message };
        match fs::read(path).map(Zeroizing::new) {
            Ok(bytes) => Self::from_file_bytes(path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|e| key_err(e.to_string()))?;
                }
                let tmp = path.with_extension(format!("tmp-{}-{:016x}", std::process::id(), rand::random::<u64>()));
                let written = write_private(&tmp, key.0.as_bytes()).and_then(|()| fs::hard_link(&tmp, path));
                let _ = fs::remove_file(&tmp);
                match written {
                    Ok(()) => Ok(key),
                    // Another process created the key first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let bytes = Zeroizing::new(fs::read(path).map_err(|e| key_err(e.to_string()))?);
                        Self::from_file_bytes(path, &bytes)
                    }
                    Err(e) => Err(key_err(e.to_string())),
                }
            }
            Err(e) => Err(key_err(e.to_string())),
        }
    }

    fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, LedgerError> {
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.try_into().map_err(|_| LedgerError::Key {
            path: path.to_owned(),
            message: format!("expected 32 bytes, found {}", bytes.len()),
        })?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "ledger signing key is readable by other users; chmod 600 it");
            }
        }
        Ok(Self(SigningKey::from_bytes(&secret)))
    }

    /// The public key, hex (the form records carry in `signer`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    /// The public key bytes.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// Signs `body`: returns the complete record with its hash, signer and signature. Does not validate or chain
    /// it (that is `cohort_client::ledger::Ledger::append`'s job).
    pub fn sign_body(&self, body: RecordBody) -> LedgerRecord {
        let digest = Sha256::digest(canonical_bytes(&body));
        let signature = hex::encode(self.0.sign(&digest).to_bytes());
        LedgerRecord { body, hash: hex::encode(digest), signer: self.public_key_hex(), signature }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [1u8; 31]).unwrap();
        assert!(matches!(NodeSigningKey::load_or_create(&path), Err(LedgerError::Key { .. })));
        let created = NodeSigningKey::load_or_create(&dir.path().join("sub/k2")).unwrap();
        let loaded = NodeSigningKey::load_or_create(&dir.path().join("sub/k2")).unwrap();
        assert_eq!(created.public_key_hex(), loaded.public_key_hex());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any finite parameters survive JSON export and re-verification bit for bit (this needs serde_json's
        /// exact float parsing).
        #[test]
        fn arbitrary_numbers_roundtrip_through_jsonl(q in 0.0f64..=1.0, sigma in 0.0f64..100.0, eps in 0.0f64..1e3,
                                                     delta in 0.0f64..1.0, steps in 0u64..1_000_000) {
            let key = NodeSigningKey::from_bytes(&[7; 32]);
            let body = RecordBody { sample_rate: q, noise_multiplier: sigma, cumulative_epsilon: eps, delta, steps,
                prev_hash: GENESIS.into(), ..RecordBody::new("n", "ab", Mechanism::DpSgd) };
            let record = key.sign_body(body);
            let back = read_jsonl(record.to_json_line().as_bytes()).unwrap();
            prop_assert_eq!(&back[0], &record);
            prop_assert!(verify_chain(&back, None).is_ok());
        }
    }
}
