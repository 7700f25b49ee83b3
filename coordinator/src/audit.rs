//! The privacy audit: verify a ledger independently of whoever wrote it, and assemble a compliance report.
//!
//! [`verify_records`] first checks the hash chains and Ed25519 signatures ([`cohort_core::ledger::verify_chain`]),
//! then recomputes every recorded cumulative ε from the raw parameters alone and compares: it never trusts a
//! stored ε. [`ComplianceReport`] gathers the result for a compliance officer; the `cohort` CLI renders it as HTML
//! (inline SVG charts, no scripts, no external assets, so it opens offline), Markdown or JSON, all three from the
//! same [`ComplianceReport`].
//!
//! # Composition rule
//! [`cumulative_epsilon`] applies the one composition rule, [`cohort_dp::accountant::composition::cumulative_epsilon`]
//! (the rule the client enforces its budget with), to a node's ledger records, and is meant to be used by every
//! writer of ledger records. Over one node's records 0..=i, in order, with the accountant that record i names:
//!
//! - every record whose mechanism accounts as a sampled Gaussian (DP-SGD and DP-SGD tuning runs) is composed,
//!   `steps` steps at its (q, σ), and every pure ε-DP release (OpenDP counts, histograms, statistics) is
//!   composed as a pure mechanism, in one accountant: PLD (the default; Doroshenko et al., PETS 2022,
//!   connect-the-dots, pure releases as randomized response) or RDP (Mironov 2017; Mironov, Talwar and Zhang
//!   2019; pure releases as min(ε, αε²/2) at each order, Bun and Steinke 2016; Balle et al. 2020 conversion);
//! - ε_i is the smaller of that accountant's ε at δ_i and the basic bound ε_accountant(δ_i) + Σ ε_pure, both
//!   valid upper bounds; records of RDP version 1 used the basic bound alone and are checked under it;
//! - declined rounds add nothing; the cumulative δ is δ_i.
//!
//! A recorded ε passes if it is within [`RELATIVE_TOLERANCE`] of the recomputed one (relative).
//!
//! # Example
//! ```
//! use cohort_coordinator::audit::{cumulative_epsilon, cumulative_epsilon_after, verify_records};
//! use cohort_core::ledger::{GENESIS, Mechanism, NodeSigningKey, RecordBody};
//! let key = NodeSigningKey::from_bytes(&[7; 32]);
//! let draft = RecordBody { sample_rate: 0.01, noise_multiplier: 1.0, steps: 1000, delta: 1e-5,
//!     accountant: cohort_dp::accountant::ACCOUNTANT_NAME.into(), prev_hash: GENESIS.into(),
//!     ..RecordBody::new("hospital-a", &"ab".repeat(32), Mechanism::DpSgd) };
//! // The writer computes the cumulative ε with the same rule the auditor uses.
//! let eps = cumulative_epsilon_after(&[], &draft).unwrap();
//! assert!((eps - 1.8282).abs() < 1e-2); // dp-accounting 0.6.0 PLDAccountant
//! let records = [key.sign_body(RecordBody { cumulative_epsilon: eps, ..draft })];
//! assert!(verify_records(&records).is_ok());
//! assert_eq!(cumulative_epsilon(&records).unwrap(), eps);
//! ```

use cohort_core::ledger::{
    self, ADD_REMOVE, LedgerError, LedgerRecord, Mechanism, PrivacyEvent, RecordBody, verify_chain,
};
use cohort_dp::accountant::{
    ACCOUNTANT_NAME, ACCOUNTANT_VERSION, AccountantError, AccountantKind, SampledGaussian,
    composition::{self, Bound, SpendEvent},
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// Largest accepted relative difference between a recorded and a recomputed cumulative ε.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

/// The composition rule in words, as printed in reports.
pub const COMPOSITION_RULE: &str = "Per node, cumulative epsilon after record i = the epsilon at delta_i of all \
DP-SGD records 0..=i (Poisson-subsampled Gaussian) and all pure epsilon-DP releases 0..=i composed in the one \
accountant record i names: PLD (privacy loss distributions, connect-the-dots discretization, Doroshenko et al. 2022; \
the default) or RDP (Mironov 2017; Mironov, Talwar and Zhang 2019; pure releases folded as min(eps, alpha eps^2/2); \
conversion by Balle et al. 2020), capped by basic composition (that accountant's DP-SGD epsilon + the sum of the \
pure releases); declined rounds add nothing; cumulative delta = delta_i.";

/// Why a cumulative ε cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The accountant rejected a record's parameters.
    #[error("record seq {seq}: {source}")]
    Accountant {
        /// The record's seq.
        seq: u64,
        /// The accountant's complaint.
        source: AccountantError,
    },
    /// A record names an accountant this build cannot run.
    #[error("record seq {seq}: accountant {name:?} is not available to the auditor (it has {})", ACCOUNTANT_NAME)]
    UnknownAccountant {
        /// The record's seq.
        seq: u64,
        /// The recorded accountant name.
        name: String,
    },
    /// A record's neighbouring relation is not the accountant's.
    #[error("record seq {seq}: neighbouring relation {relation:?}; the accountant assumes {:?}", ADD_REMOVE)]
    Relation {
        /// The record's seq.
        seq: u64,
        /// The recorded relation.
        relation: String,
    },
    /// Records of several nodes were given where one node's were expected.
    #[error("records of nodes {0:?} and {1:?} mixed; cumulative ε is per node")]
    MixedNodes(String, String),
    /// A pure-ε record without a valid `epsilon_spent`.
    #[error("record seq {seq}: a pure ε-DP release needs a finite epsilon_spent ≥ 0")]
    PureEpsilon {
        /// The record's seq.
        seq: u64,
    },
}

/// A node's privacy events so far, fed from ledger records, and the accountant the latest record names.
///
/// Every record states its cumulative ε under the accountant (and version) it names, over all of the node's
/// events up to it; a node that moved from one accountant to another (an upgrade) has each record checked
/// under its own. Records of RDP version 1 were written under the earlier rule (ε_RDP + Σ ε_pure), which
/// [`Bound::Basic`] still computes.
#[derive(Debug, Clone, Default)]
struct NodeAccount {
    events: Vec<SpendEvent>,
    accountant: Option<(AccountantKind, Bound)>,
}

impl NodeAccount {
    fn add(&mut self, r: &LedgerRecord) -> Result<(), AuditError> {
        let seq = r.body.seq;
        if !r.body.accountant.is_empty() {
            let kind = r
                .body
                .accountant
                .parse::<AccountantKind>()
                .map_err(|_| AuditError::UnknownAccountant { seq, name: r.body.accountant.clone() })?;
            self.accountant = Some((kind, Bound::of_recorded(kind, &r.body.accountant_version)));
        }
        let Some(event) = r.privacy_event() else { return Ok(()) };
        if r.body.relation != ADD_REMOVE {
            return Err(AuditError::Relation { seq, relation: r.body.relation.clone() });
        }
        let event = match event {
            PrivacyEvent::SampledGaussian { q, sigma, steps } => {
                if r.body.accountant.is_empty() {
                    return Err(AuditError::UnknownAccountant { seq, name: String::new() });
                }
                let event = SampledGaussian { q, sigma, steps };
                event.validate().map_err(|source| AuditError::Accountant { seq, source })?;
                SpendEvent::SampledGaussian(event)
            }
            PrivacyEvent::PureEpsilon(e) if !(e.is_finite() && e >= 0.0) => {
                return Err(AuditError::PureEpsilon { seq });
            }
            PrivacyEvent::PureEpsilon(e) => SpendEvent::PureEpsilon(e),
        };
        self.events.push(event);
        Ok(())
    }

    fn epsilon(&self, seq: u64, delta: f64) -> Result<f64, AuditError> {
        let (kind, bound) = self.accountant.unwrap_or((AccountantKind::default(), Bound::Composed));
        composition::cumulative_epsilon(kind, bound, self.events.iter().copied(), delta)
            .map_err(|source| AuditError::Accountant { seq, source })
    }
}

/// The cumulative ε after the last of `records`, which must all belong to one node and be that node's records
/// from its first onwards, in chain order; evaluated at the δ of the last record. This is the composition rule
/// of the module docs, and the figure a ledger writer must record. An empty slice spends 0.
///
/// # Errors
/// [`AuditError`] for records of several nodes, parameters the accountant rejects (naming the record's seq), an
/// unknown accountant, a relation other than add/remove, or a pure-ε record without a valid ε.
pub fn cumulative_epsilon(records: &[LedgerRecord]) -> Result<f64, AuditError> {
    let Some(last) = records.last() else { return Ok(0.0) };
    let mut account = NodeAccount::default();
    for r in records {
        if r.body.node != last.body.node {
            return Err(AuditError::MixedNodes(r.body.node.clone(), last.body.node.clone()));
        }
        account.add(r)?;
    }
    account.epsilon(last.body.seq, last.body.delta)
}

/// The cumulative ε a node's next record `draft` must state, given the node's `records` so far: the
/// [`cumulative_epsilon`] of `records` followed by `draft` (at the draft's δ). This is what a ledger writer
/// calls before `cohort_client::ledger::Ledger::append`.
///
/// # Errors
/// As [`cumulative_epsilon`].
pub fn cumulative_epsilon_after(records: &[LedgerRecord], draft: &RecordBody) -> Result<f64, AuditError> {
    let mut account = NodeAccount::default();
    for r in records {
        if r.body.node != draft.node {
            return Err(AuditError::MixedNodes(r.body.node.clone(), draft.node.clone()));
        }
        account.add(r)?;
    }
    let next =
        LedgerRecord { body: draft.clone(), hash: String::new(), signer: String::new(), signature: String::new() };
    account.add(&next)?;
    account.epsilon(draft.seq, draft.delta)
}

/// What made verification fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureKind {
    /// A line is not a ledger record.
    Malformed,
    /// A hash, link, sequence number, signer or signature is wrong.
    Chain,
    /// A recorded cumulative ε does not recompute.
    Epsilon,
    /// A record's parameters cannot be accounted (rejected by the accountant, unknown accountant, wrong relation).
    Parameters,
    /// A node's chain ends before the spend the model registry recorded for it: records were removed from its
    /// end (which the chain alone cannot show).
    Truncated,
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditFailure {
    /// 1-based line in the file (position in the list).
    pub line: usize,
    /// The record's node (empty for a malformed line).
    pub node: String,
    /// The record's stated seq (0 for a malformed line).
    pub seq: u64,
    /// The kind of failure.
    pub kind: FailureKind,
    /// What is wrong, in words.
    pub reason: String,
}

impl std::fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.node.is_empty() {
            write!(f, "line {}: {}", self.line, self.reason)
        } else {
            write!(f, "record at line {} (node {}, seq {}): {}", self.line, self.node, self.seq, self.reason)
        }
    }
}

/// The audit result of one node's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAudit {
    /// The node.
    pub node: String,
    /// Its signer's public key (hex), from its first record.
    pub signer: String,
    /// How many records it has.
    pub records: usize,
    /// The cumulative ε its last record states.
    pub recorded_epsilon: f64,
    /// The cumulative ε recomputed up to the last record checked (all of them if the node verified).
    pub recomputed_epsilon: Option<f64>,
    /// δ of its last record.
    pub delta: f64,
    /// Whether every record of this node verified.
    pub verified: bool,
}

/// The verdict on a ledger: per-node results and the first bad record, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerdict {
    /// Records checked.
    pub records: usize,
    /// Per node, in name order.
    pub nodes: Vec<NodeAudit>,
    /// The first bad record in file order; `None` if the whole ledger verified.
    pub failure: Option<AuditFailure>,
    /// Observations that do not fail verification (for example another accountant version string).
    pub warnings: Vec<String>,
    /// The auditor's accountant, name and version.
    pub accountant: String,
}

impl AuditVerdict {
    /// Whether the whole ledger verified.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Verifies records as [`verify_records_with`] without a list of trusted signers (each node's chain must still
/// be signed by one key throughout).
pub fn verify_records(records: &[LedgerRecord]) -> AuditVerdict {
    verify_records_with(records, None)
}

/// Verifies a ledger: the chains and signatures of every node (signers must be in `trusted`, hex public keys,
/// when given), then every recorded cumulative ε against [`cumulative_epsilon`], in file order. Stops at the
/// first bad record and names it.
pub fn verify_records_with(records: &[LedgerRecord], trusted: Option<&[String]>) -> AuditVerdict {
    let mut failure = verify_chain(records, trusted).err().map(|e| AuditFailure {
        line: e.line,
        node: e.node,
        seq: e.seq,
        kind: FailureKind::Chain,
        reason: e.reason,
    });
    let mut warnings = Vec::new();
    // Per node: the running account, the last recomputed ε and how many records were checked.
    let mut accounts: BTreeMap<&str, (NodeAccount, Option<f64>, usize)> = BTreeMap::new();
    let checked = failure.as_ref().map_or(records.len(), |f| f.line.saturating_sub(1));
    for (i, r) in records.iter().enumerate().take(checked) {
        let fail = |kind, reason: String| AuditFailure {
            line: i + 1,
            node: r.body.node.clone(),
            seq: r.body.seq,
            kind,
            reason,
        };
        let (account, recomputed, count) = accounts.entry(r.body.node.as_str()).or_default();
        match account.add(r).and_then(|()| account.epsilon(r.body.seq, r.body.delta)) {
            Err(e) => {
                failure = Some(fail(FailureKind::Parameters, e.to_string()));
                break;
            }
            Ok(eps) => {
                let recorded = r.body.cumulative_epsilon;
                if (recorded - eps).abs() > RELATIVE_TOLERANCE * eps.abs().max(recorded.abs()) {
                    failure = Some(fail(
                        FailureKind::Epsilon,
                        format!(
                            "recorded cumulative ε {recorded} does not recompute: the raw parameters give {eps} \
                             (accountant {})",
                            account.accountant.map_or(ACCOUNTANT_NAME, |(k, _)| k.name())
                        ),
                    ));
                    break;
                }
                *recomputed = Some(eps);
                *count += 1;
            }
        }
        if r.privacy_event().is_some()
            && r.body.accountant == ACCOUNTANT_NAME
            && r.body.accountant_version != ACCOUNTANT_VERSION
        {
            let w = format!(
                "node {} records accountant version {:?}; the auditor has {ACCOUNTANT_VERSION:?}",
                r.body.node, r.body.accountant_version
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    let mut by_node: BTreeMap<&str, Vec<&LedgerRecord>> = BTreeMap::new();
    for r in records {
        by_node.entry(&r.body.node).or_default().push(r);
    }
    let nodes = by_node
        .into_iter()
        .filter_map(|(node, rs)| {
            let (first, last) = (rs.first()?, rs.last()?);
            let (recomputed, count) = accounts.get(node).map_or((None, 0), |(_, e, n)| (*e, *n));
            Some(NodeAudit {
                node: node.to_owned(),
                signer: first.signer.clone(),
                records: rs.len(),
                recorded_epsilon: last.body.cumulative_epsilon,
                recomputed_epsilon: recomputed,
                delta: last.body.delta,
                verified: count == rs.len(),
            })
        })
        .collect();
    AuditVerdict {
        records: records.len(),
        nodes,
        failure,
        warnings,
        accountant: format!("{ACCOUNTANT_NAME} {ACCOUNTANT_VERSION}"),
    }
}

/// Checks every node's chain against an anchor the ledger does not carry: the privacy spend the model registry
/// recorded for the node with each version. A chain whose last cumulative ε is below that spend was cut short
/// (hash chains cannot show records removed from their end). Records the first such node as the verdict's
/// failure, naming the seq that is missing, unless the verdict already failed.
pub fn check_against_registry(verdict: &mut AuditVerdict, records: &[LedgerRecord], versions: &[VersionPrivacy]) {
    if verdict.failure.is_some() {
        return;
    }
    // Per node, the largest spend any version recorded, with that version.
    let mut anchors: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    for v in versions {
        for (node, eps) in &v.clients {
            let entry = anchors.entry(node.as_str()).or_insert((*eps, v.version));
            if *eps > entry.0 {
                *entry = (*eps, v.version);
            }
        }
    }
    for (node, (anchored, version)) in anchors {
        let last = records.iter().enumerate().filter(|(_, r)| r.body.node == node).max_by_key(|(_, r)| r.body.seq);
        let (line, seq, recorded) = match last {
            Some((i, r)) => (i + 2, r.body.seq + 1, r.body.cumulative_epsilon),
            None => (records.len() + 1, 0, 0.0),
        };
        if recorded + RELATIVE_TOLERANCE * anchored.max(1.0) < anchored {
            verdict.failure = Some(AuditFailure {
                line,
                node: node.to_owned(),
                seq,
                kind: FailureKind::Truncated,
                reason: format!(
                    "records are missing from the end of this node's chain (from seq {seq}): it ends at cumulative \
                     ε {recorded}, but model version {version} recorded ε {anchored} for it"
                ),
            });
            if let Some(n) = verdict.nodes.iter_mut().find(|n| n.node == node) {
                n.verified = false;
            }
            return;
        }
    }
}

/// Reads JSON Lines and verifies them; a malformed line is reported as the failure (with its line number) and
/// the records before it are not trusted either. Returns the records read and the verdict.
pub fn verify_jsonl(reader: impl BufRead, trusted: Option<&[String]>) -> (Vec<LedgerRecord>, AuditVerdict) {
    match ledger::read_jsonl(reader) {
        Ok(records) => {
            let verdict = verify_records_with(&records, trusted);
            (records, verdict)
        }
        Err(e) => {
            let (line, reason) = match &e {
                LedgerError::Malformed { line, message } => (*line, format!("not a ledger record: {message}")),
                other => (0, other.to_string()),
            };
            let verdict = AuditVerdict {
                records: 0,
                nodes: Vec::new(),
                failure: Some(AuditFailure { line, node: String::new(), seq: 0, kind: FailureKind::Malformed, reason }),
                warnings: Vec::new(),
                accountant: format!("{ACCOUNTANT_NAME} {ACCOUNTANT_VERSION}"),
            };
            (Vec::new(), verdict)
        }
    }
}

/// The privacy that went into one model version: the clients that trained it and each one's cumulative ε at
/// that point. The registry provides these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPrivacy {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The round that produced it.
    pub round: u64,
    /// (client, cumulative ε) of each participating client.
    pub clients: Vec<(String, f64)>,
}

/// One point of a client's ε curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpsilonPoint {
    /// The record's seq.
    pub seq: u64,
    /// The round, if the record belongs to one.
    pub round: Option<u64>,
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Recorded cumulative ε after the record.
    pub epsilon: f64,
}

/// One client's privacy budget and spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientPrivacy {
    /// The client.
    pub node: String,
    /// Its signer's public key (hex).
    pub signer: String,
    /// Its ε budget.
    pub budget: f64,
    /// ε spent (last recorded cumulative ε).
    pub spent: f64,
    /// The auditor's recomputation of the spend, if it got that far.
    pub recomputed_spent: Option<f64>,
    /// Budget minus spent (never below 0).
    pub remaining: f64,
    /// δ of its guarantee.
    pub delta: f64,
    /// DP-SGD records (training and tuning).
    pub dp_sgd_records: usize,
    /// Pure ε-DP releases.
    pub releases: usize,
    /// Declined rounds.
    pub declined: usize,
    /// Whether its chain and every ε verified.
    pub verified: bool,
    /// Its ε over its records.
    pub series: Vec<EpsilonPoint>,
}

/// Everything a compliance report says; the JSON format is this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplianceReport {
    /// The auditor's accountant, name and version.
    pub accountant: String,
    /// The composition rule applied.
    pub composition_rule: String,
    /// Verification result.
    pub verification: AuditVerdict,
    /// Per client.
    pub clients: Vec<ClientPrivacy>,
    /// Per model version.
    pub versions: Vec<VersionPrivacy>,
}

impl ComplianceReport {
    /// Assembles the report. A client's budget comes from `budgets`, else from its last record.
    pub fn new(
        records: &[LedgerRecord],
        verdict: &AuditVerdict,
        budgets: &BTreeMap<String, f64>,
        versions: &[VersionPrivacy],
    ) -> Self {
        let mut by_node: BTreeMap<&str, Vec<&LedgerRecord>> = BTreeMap::new();
        for r in records {
            by_node.entry(&r.body.node).or_default().push(r);
        }
        let clients = by_node
            .into_iter()
            .filter_map(|(node, rs)| {
                let last = rs.last()?;
                let audit = verdict.nodes.iter().find(|n| n.node == node);
                let budget = budgets.get(node).copied().unwrap_or(last.body.epsilon_budget);
                let spent = last.body.cumulative_epsilon;
                let count = |f: fn(&LedgerRecord) -> bool| rs.iter().filter(|r| f(r)).count();
                Some(ClientPrivacy {
                    node: node.to_owned(),
                    signer: last.signer.clone(),
                    budget,
                    spent,
                    recomputed_spent: audit.and_then(|a| a.recomputed_epsilon),
                    remaining: (budget - spent).max(0.0),
                    delta: last.body.delta,
                    dp_sgd_records: count(|r| matches!(r.privacy_event(), Some(PrivacyEvent::SampledGaussian { .. }))),
                    releases: count(|r| matches!(r.privacy_event(), Some(PrivacyEvent::PureEpsilon(_)))),
                    declined: count(|r| r.body.mechanism == Mechanism::Decline),
                    verified: audit.is_some_and(|a| a.verified),
                    series: rs
                        .iter()
                        .map(|r| EpsilonPoint {
                            seq: r.body.seq,
                            round: r.body.round,
                            mechanism: r.body.mechanism,
                            epsilon: r.body.cumulative_epsilon,
                        })
                        .collect(),
                })
            })
            .collect();
        Self {
            accountant: verdict.accountant.clone(),
            composition_rule: COMPOSITION_RULE.to_owned(),
            verification: verdict.clone(),
            clients,
            versions: versions.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::ledger::{GENESIS, NodeSigningKey, RecordBody};
    use cohort_dp::accountant::PrivacyAccount;

    /// A node's chain, kept in memory and chained and signed as `cohort_client::ledger::Ledger::append` does.
    struct Chain {
        key: NodeSigningKey,
        records: Vec<LedgerRecord>,
    }

    impl Chain {
        fn new() -> Self {
            Self { key: NodeSigningKey::generate().unwrap(), records: Vec::new() }
        }

        fn records(&self) -> &[LedgerRecord] {
            &self.records
        }

        fn append(&mut self, mut body: RecordBody) {
            body.validate().unwrap();
            let head = self.records.iter().rev().find(|r| r.body.node == body.node);
            (body.seq, body.prev_hash) = head.map_or((0, GENESIS.to_owned()), |r| (r.body.seq + 1, r.hash.clone()));
            self.records.push(self.key.sign_body(body));
        }
    }

    /// A node's ledger written the way a client should: each cumulative ε by `cumulative_epsilon`.
    fn node_ledger(node: &str, plan: &[Mechanism]) -> Vec<LedgerRecord> {
        let mut ledger = Chain::new();
        for (round, &m) in plan.iter().enumerate() {
            let mut body = RecordBody {
                round: Some(round as u64 + 1),
                sample_rate: 0.01,
                noise_multiplier: 1.0,
                clip_norm: 1.0,
                steps: if m == Mechanism::Decline { 0 } else { 200 },
                delta: 1e-5,
                accountant: ACCOUNTANT_NAME.into(),
                accountant_version: ACCOUNTANT_VERSION.into(),
                epsilon_budget: 3.0,
                epsilon_spent: matches!(m, Mechanism::OpenDpCount | Mechanism::OpenDpHistogram).then_some(0.1),
                ..RecordBody::new(node, &"ab".repeat(32), m)
            };
            body.cumulative_epsilon = cumulative_epsilon_after(ledger.records(), &body).unwrap();
            ledger.append(body);
        }
        ledger.records
    }

    #[test]
    fn a_chain_cut_short_is_caught_by_the_registry_anchor() {
        let records = two_nodes();
        let last_eps = |node: &str, rs: &[LedgerRecord]| {
            rs.iter().rev().find(|r| r.body.node == node).unwrap().body.cumulative_epsilon
        };
        let anchors = |rs: &[LedgerRecord]| {
            vec![VersionPrivacy {
                name: "m".into(),
                version: 2,
                round: 2,
                clients: vec![
                    ("hospital-a".into(), last_eps("hospital-a", rs)),
                    ("hospital-<b>".into(), last_eps("hospital-<b>", rs)),
                ],
            }]
        };
        let versions = anchors(&records);
        let mut verdict = verify_records(&records);
        check_against_registry(&mut verdict, &records, &versions);
        assert!(verdict.is_ok(), "{:?}", verdict.failure);

        // Remove hospital-<b>'s last record (a DP-SGD round): the chain still links, the anchor does not.
        let cut_at = records.iter().rposition(|r| r.body.node == "hospital-<b>").unwrap();
        let mut cut = records.clone();
        let removed = cut.remove(cut_at);
        let mut verdict = verify_records(&cut);
        assert!(verdict.is_ok(), "the chain alone cannot see a cut end");
        check_against_registry(&mut verdict, &cut, &versions);
        let failure = verdict.failure.expect("the cut is caught");
        assert_eq!(
            (failure.kind, failure.node.as_str(), failure.seq),
            (FailureKind::Truncated, "hospital-<b>", removed.body.seq)
        );
        assert!(!verdict.nodes.iter().find(|n| n.node == "hospital-<b>").unwrap().verified);

        // A node the registry knows but the ledger lacks entirely.
        let only_a: Vec<LedgerRecord> = records.iter().filter(|r| r.body.node == "hospital-a").cloned().collect();
        let mut verdict = verify_records(&only_a);
        check_against_registry(&mut verdict, &only_a, &versions);
        assert_eq!(verdict.failure.unwrap().node, "hospital-<b>");
    }

    fn two_nodes() -> Vec<LedgerRecord> {
        let a = node_ledger(
            "hospital-a",
            &[Mechanism::OpenDpCount, Mechanism::DpSgd, Mechanism::DpSgd, Mechanism::Decline],
        );
        let b = node_ledger("hospital-<b>", &[Mechanism::DpSgd, Mechanism::OpenDpHistogram, Mechanism::DpSgd]);
        // Interleave the two nodes, as in a coordinator's merged export.
        let mut all = Vec::new();
        for i in 0..a.len().max(b.len()) {
            all.extend(a.get(i).cloned());
            all.extend(b.get(i).cloned());
        }
        all
    }

    #[test]
    fn the_rule_matches_the_accountant_exactly() {
        let records = two_nodes();
        let a: Vec<LedgerRecord> = records.iter().filter(|r| r.body.node == "hospital-a").cloned().collect();
        // Two DP-SGD records of 200 steps compose like one of 400, with the count (ε = 0.1) as a pure mechanism:
        // exactly the composition rule's account, and at most basic composition.
        let mut account = PrivacyAccount::with_accountant(AccountantKind::default());
        account.add_pure(0.1).unwrap();
        account.add_sampled_gaussian(&SampledGaussian { q: 0.01, sigma: 1.0, steps: 400 }).unwrap();
        let composed = account.epsilon(1e-5).unwrap();
        assert_eq!(cumulative_epsilon(&a).unwrap(), composed);
        let basic = cohort_dp::accountant::epsilon(&[SampledGaussian { q: 0.01, sigma: 1.0, steps: 200 }; 2], 1e-5)
            .unwrap()
            + 0.1;
        assert!(composed <= basic && composed > basic - 0.1, "{composed} vs {basic}");
        // A lone pure release at δ > 0 costs a hair less than its ε under PLD (randomized response's PLD).
        let alone = cumulative_epsilon(&a[..1]).unwrap();
        assert!(alone <= 0.1 && alone > 0.0999, "{alone}");
        assert_eq!(cumulative_epsilon(&[]).unwrap(), 0.0);
        // The decline restates the spend.
        assert_eq!(a[3].body.cumulative_epsilon, a[2].body.cumulative_epsilon);
        assert!(matches!(cumulative_epsilon(&records), Err(AuditError::MixedNodes(..))));
    }

    #[test]
    fn a_good_ledger_verifies() {
        let records = two_nodes();
        let verdict = verify_records(&records);
        assert!(verdict.is_ok(), "{:?}", verdict.failure);
        assert_eq!(verdict.records, 7);
        assert_eq!(verdict.nodes.len(), 2);
        for n in &verdict.nodes {
            assert!(n.verified);
            assert_eq!(n.recomputed_epsilon, Some(n.recorded_epsilon));
        }
        let text = records.iter().map(LedgerRecord::to_json_line).collect::<Vec<_>>().join("\n");
        let (back, verdict) = verify_jsonl(text.as_bytes(), None);
        assert!(verdict.is_ok());
        assert_eq!(back, records);
    }

    #[test]
    fn an_epsilon_that_does_not_recompute_is_named() {
        let mut ledger = Chain::new();
        let good = node_ledger("n", &[Mechanism::DpSgd]);
        // A writer that under-reports its second round, with a valid chain and signature.
        let body = good[0].body.clone();
        ledger.append(body.clone());
        // Claims the second round was free (its parameters say otherwise).
        ledger.append(body);
        let verdict = verify_records(ledger.records());
        let failure = verdict.failure.unwrap();
        assert_eq!((failure.line, failure.seq, failure.kind), (2, 1, FailureKind::Epsilon));
        assert!(failure.reason.contains("does not recompute"), "{}", failure.reason);
        assert!(!verdict.nodes[0].verified);
    }

    #[test]
    fn tampering_is_named_by_the_audit() {
        let records = two_nodes();
        // A changed ε: the hash no longer matches.
        let mut edited = records.clone();
        edited[4].body.cumulative_epsilon = 0.0;
        let f = verify_records(&edited).failure.unwrap();
        assert_eq!((f.line, f.kind), (5, FailureKind::Chain));
        // A swapped pair of one node's lines.
        let mut swapped = records.clone();
        swapped.swap(2, 4);
        assert_eq!(verify_records(&swapped).failure.unwrap().line, 3);
        // A malformed line.
        let mut lines: Vec<String> = records.iter().map(LedgerRecord::to_json_line).collect();
        lines[1] = "{\"seq\": 1".into();
        let (_, verdict) = verify_jsonl(lines.join("\n").as_bytes(), None);
        let f = verdict.failure.unwrap();
        assert_eq!((f.line, f.kind), (2, FailureKind::Malformed));
    }

    #[test]
    fn unaccountable_parameters_are_named() {
        let mut ledger = Chain::new();
        let mut body = node_ledger("n", &[Mechanism::DpSgd])[0].body.clone();
        body.accountant = "moments-accountant".into();
        ledger.append(body);
        let f = verify_records(ledger.records()).failure.unwrap();
        assert_eq!((f.line, f.kind), (1, FailureKind::Parameters));
        assert!(f.reason.contains("moments-accountant"));
    }
}
