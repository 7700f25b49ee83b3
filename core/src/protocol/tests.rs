//! Round trips through the wire for every message, and decoding of arbitrary bytes.

use super::*;
use crate::binding::{BoundKeys, SignedBinding};
use crate::config::{
    FederationPlan, InfluenceSection, Schema, SecureAggregationMode, SecureAggregationSection, StrategyConfig,
    TrainingSection, Weighting,
};
use crate::ids::{ModelVersion, NodeName, Round};
use crate::ledger::{LedgerRecord, Mechanism, RecordBody};
use crate::model::{ModelSpec, TaskKind};
use cohort_crypto::{
    AnnouncedParticipant, AnnouncementHash, Consent, DecryptionRequest, MaskSeed, NodePublicKeys, ParticipantId,
    RoundAnnouncement, RoundId, SecAggParams,
};
use proptest::prelude::*;
use prost::Message;
use std::time::Duration;

fn round_ref() -> impl Strategy<Value = RoundRef> {
    ("[a-z]{1,8}", any::<u64>(), any::<u64>()).prop_map(|(f, r, v)| RoundRef {
        federation_id: f,
        round: Round(r),
        version: ModelVersion(v),
    })
}

fn plan() -> impl Strategy<Value = FederationPlan> {
    let task = prop_oneof![Just(TaskKind::Binary), Just(TaskKind::Multiclass), Just(TaskKind::Regression)];
    let strategy = prop_oneof![
        Just(StrategyConfig::Fedavg),
        (0.0..1.0f64).prop_map(|mu| StrategyConfig::Fedprox { mu }),
        (0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64)
            .prop_map(|(lr, beta1, beta2, tau)| StrategyConfig::Fedadam { lr, beta1, beta2, tau }),
        Just(StrategyConfig::Median),
        (0.0..0.5f64).prop_map(|trim| StrategyConfig::TrimmedMean { trim }),
    ];
    let mode = prop_oneof![Just(SecureAggregationMode::None), Just(SecureAggregationMode::ThresholdRlwe)];
    (
        task,
        1usize..5,
        proptest::collection::vec(1usize..40, 0..3),
        any::<bool>(),
        strategy,
        mode,
        (1u64..100, 1u32..5, 0.001..1.0f64, 1usize..64, 1usize..10, proptest::option::of(1usize..10)),
        (0usize..4, proptest::option::of(1usize..20), proptest::option::of(2usize..20)),
        (any::<bool>(), 1.0..1e9f64, 0.01..=1.0f64, prop_oneof![Just(f64::INFINITY), 0.001..1e3f64]),
    )
        .prop_map(|(task, features, hidden, bounded, strategy, mode, t, a, i)| {
            let classes = match task {
                TaskKind::Multiclass => Some(3),
                _ => None,
            };
            let schema = Schema {
                features: (0..features).map(|i| format!("f{i}")).collect(),
                label: "y".into(),
                task,
                classes,
                bounds: bounded.then(|| (0..features).map(|i| [-(i as f64) - 1.0, i as f64 + 0.5]).collect()),
                label_bounds: bounded.then_some([-2.0, 3.5]),
            };
            let outputs = schema.outputs();
            FederationPlan {
                federation_id: "fed".into(),
                model_name: "m".into(),
                model: ModelSpec::new(features, &hidden, outputs, task).expect("valid widths"),
                schema,
                training: TrainingSection {
                    rounds: t.0,
                    local_epochs: t.1,
                    learning_rate: t.2,
                    batch_size: t.3,
                    min_clients: t.4,
                    round_deadline_secs: 30,
                    clients_per_round: t.5,
                    max_round_failures: t.4 as u32 + 1,
                },
                strategy,
                secure_aggregation: SecureAggregationSection {
                    mode,
                    max_colluders: a.0,
                    threshold: a.1,
                    min_participants: a.2,
                },
                influence: InfluenceSection {
                    weighting: if i.0 { Weighting::Uniform } else { Weighting::Examples },
                    max_weight: i.1,
                    max_share: i.2,
                    max_update_norm: i.3,
                },
            }
        })
}

fn id(raw: u32) -> ParticipantId {
    ParticipantId::new(raw.max(1)).expect("non-zero")
}

fn announcement() -> impl Strategy<Value = RoundAnnouncement> {
    (
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        proptest::collection::vec((1u32..1000, any::<[u8; 32]>()), 0..5),
    )
        .prop_map(|(round, nonce, seed, people)| RoundAnnouncement {
            federation: "fed".into(),
            round: RoundId(round),
            nonce,
            model_sha256: seed,
            seed: MaskSeed(nonce),
            params: SecAggParams::default(),
            threshold: 2,
            min_participants: 3,
            max_colluders: 1,
            reference_examples: 123.5,
            weight_cap: 1000.0,
            model_len: 10,
            participants: people
                .into_iter()
                .map(|(i, k)| AnnouncedParticipant {
                    name: format!("n{i}"),
                    id: id(i),
                    keys: NodePublicKeys { x25519: k, ed25519: seed },
                })
                .collect(),
        })
}

fn request() -> impl Strategy<Value = DecryptionRequest> {
    (any::<u64>(), any::<[u8; 32]>(), proptest::collection::vec(1u32..100, 0..6), any::<u8>()).prop_map(
        |(round, hash, ids, b)| DecryptionRequest {
            round: RoundId(round),
            announcement: AnnouncementHash(hash),
            participants: ids.iter().map(|&i| id(i)).collect(),
            consents: ids.iter().map(|&i| Consent { participant: id(i), signature: [b; 64] }).collect(),
            responders: ids.iter().rev().map(|&i| id(i)).collect(),
            len: ids.len() * 7,
        },
    )
}

fn record() -> impl Strategy<Value = LedgerRecord> {
    (any::<u64>(), 0.0..1.0f64, proptest::option::of(0.0..5.0f64), proptest::option::of(any::<u64>()), "[ -~]{0,30}")
        .prop_map(|(seq, q, eps, round, note)| {
            let mechanism = if eps.is_some() { Mechanism::OpenDpEvaluation } else { Mechanism::DpSgd };
            LedgerRecord {
                body: RecordBody {
                    seq,
                    round,
                    sample_rate: q,
                    epsilon_spent: eps,
                    note,
                    steps: seq / 3,
                    timestamp_ms: seq ^ 0x5555,
                    ..RecordBody::new("node", "fp", mechanism)
                },
                hash: "ab".repeat(32),
                signer: "cd".repeat(32),
                signature: "ef".repeat(64),
            }
        })
}

fn binding() -> impl Strategy<Value = SignedBinding> {
    (any::<[u8; 32]>(), proptest::option::of(any::<[u8; 32]>()), proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(k, ledger, der)| SignedBinding {
            node: "n".into(),
            certificate_der: der.clone(),
            keys: BoundKeys { x25519: k, share_ed25519: k, ledger_ed25519: ledger },
            signature: der,
        })
}

/// Encodes to bytes and decodes back through the typed conversion.
fn through_wire<T, P>(value: T) -> Result<T, ProtocolError>
where
    P: From<T> + Message + Default,
    T: TryFrom<P, Error = ProtocolError>,
{
    let bytes = P::from(value).encode_to_vec();
    T::try_from(P::decode(bytes.as_slice()).expect("our own bytes decode"))
}

proptest! {
    #[test]
    fn plans_round_trip(plan in plan()) {
        let response = JoinResponse { federation_id: "fed".into(), plan, current_round: Round(4) };
        prop_assert_eq!(through_wire::<_, proto::JoinResponse>(response.clone())?, response);
    }

    #[test]
    fn train_tasks_round_trip(rref in round_ref(), a in announcement(), bindings in proptest::collection::vec(binding(), 0..3),
                              mu in proptest::option::of(0.0..1.0f64), secure in any::<bool>()) {
        let settings = TrainSettings {
            local_epochs: 2,
            learning_rate: 0.05,
            batch_size: 16,
            proximal_mu: mu,
            secure: secure.then_some(SecureRoundData { announcement: a, bindings }),
        };
        let header = TaskHeader {
            round: rref,
            retry_after: Duration::from_millis(200),
            parameter_count: 3,
            model_sha256: "01".repeat(32),
            assignment: Assignment::Train(Box::new(settings)),
        };
        prop_assert_eq!(through_wire::<_, proto::TaskHeader>(header.clone())?, header);
    }

    #[test]
    fn decrypt_tasks_round_trip(rref in round_ref(), request in request()) {
        let header = TaskHeader {
            round: rref,
            retry_after: Duration::from_millis(5),
            parameter_count: 0,
            model_sha256: String::new(),
            assignment: Assignment::Decrypt(request),
        };
        prop_assert_eq!(through_wire::<_, proto::TaskHeader>(header.clone())?, header);
    }

    #[test]
    fn reports_and_declines_round_trip(rref in round_ref(), records in proptest::collection::vec(record(), 0..4),
                                       accuracy in 0.0..1.0f64) {
        let report = EvaluationReport {
            round: rref.clone(),
            metrics: [("accuracy".to_owned(), accuracy)].into(),
            ledger: records.clone(),
        };
        prop_assert_eq!(through_wire::<_, proto::EvaluationReport>(report.clone())?, report);
        let decline = Decline { round: rref, reason: "over budget".into(), record: records.into_iter().next() };
        prop_assert_eq!(through_wire::<_, proto::DeclineRequest>(decline.clone())?, decline);
    }

    #[test]
    fn joins_uploads_and_shares_round_trip(rref in round_ref(), examples in 0.0..1e6f64, loss in proptest::option::of(0.0..9.0f64),
                                           sealed in proptest::collection::vec(any::<u8>(), 0..50)) {
        let join = JoinRequest {
            federation_id: "fed".into(),
            keys: JoinKeys { ledger: sealed.clone(), ..JoinKeys::default() },
            data: Some(DataReport { fingerprint: "aa".into(), examples, label_histogram: vec![3, -1] }),
        };
        prop_assert_eq!(through_wire::<_, proto::JoinRequest>(join.clone())?, join);
        for encoding in [BodyEncoding::F32Delta, BodyEncoding::RlweBodies] {
            let header = UpdateHeader { round: rref.clone(), value_count: 9, encoding, train_loss: loss };
            prop_assert_eq!(through_wire::<_, proto::UpdateHeader>(header.clone())?, header);
        }
        let shares = ShareSubmission {
            round: rref.clone(),
            envelopes: vec![(NodeName::from("b"), sealed.clone())],
            consent: sealed.clone(),
        };
        prop_assert_eq!(through_wire::<_, proto::ShareSubmission>(shares.clone())?, shares);
        let bundle = ShareBundle { ready: true, envelopes: vec![(NodeName::from("a"), sealed)], key_holders: vec![NodeName::from("a")] };
        prop_assert_eq!(ShareBundle::from(bundle.clone().into_proto(rref.clone())), bundle);
        let partial = PartialHeader { round: rref, value_count: 77 };
        prop_assert_eq!(through_wire::<_, proto::PartialHeader>(partial.clone())?, partial);
    }

    /// Arbitrary bytes either fail to decode as protobuf or decode into a typed message or a typed error; nothing
    /// panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = proto::TaskHeader::decode(bytes.as_slice()) { let _ = TaskHeader::try_from(m); }
        if let Ok(m) = proto::JoinResponse::decode(bytes.as_slice()) { let _ = JoinResponse::try_from(m); }
        if let Ok(m) = proto::JoinRequest::decode(bytes.as_slice()) { let _ = JoinRequest::try_from(m); }
        if let Ok(m) = proto::EvaluationReport::decode(bytes.as_slice()) { let _ = EvaluationReport::try_from(m); }
        if let Ok(m) = proto::UpdateHeader::decode(bytes.as_slice()) { let _ = UpdateHeader::try_from(m); }
        if let Ok(m) = proto::DeclineRequest::decode(bytes.as_slice()) { let _ = Decline::try_from(m); }
    }
}

#[test]
fn malformed_fields_are_typed_errors() {
    let mut wire = proto::TaskHeader::from(TaskHeader {
        round: RoundRef::new("f", Round(1), ModelVersion(0)),
        retry_after: Duration::ZERO,
        parameter_count: 0,
        model_sha256: String::new(),
        assignment: Assignment::Evaluate,
    });
    wire.model_sha256 = vec![1, 2, 3];
    assert_eq!(
        TaskHeader::try_from(wire.clone()),
        Err(ProtocolError::Invalid { field: "model_sha256", reason: "3 bytes, expected 32".into() })
    );
    wire.model_sha256.clear();
    wire.task = None;
    assert_eq!(TaskHeader::try_from(wire.clone()), Err(ProtocolError::Missing("task")));
    wire.task = Some(proto::task_header::Task::Evaluate(proto::EvaluateTask {}));
    wire.round = None;
    assert_eq!(TaskHeader::try_from(wire), Err(ProtocolError::Missing("round reference")));
    let header = proto::UpdateHeader { encoding: 99, ..proto::UpdateHeader::default() };
    assert!(matches!(UpdateHeader::try_from(header), Err(ProtocolError::Invalid { field: "encoding", .. })));
    let header = proto::UpdateHeader { round: Some(proto::RoundRef::default()), ..proto::UpdateHeader::default() };
    assert_eq!(UpdateHeader::try_from(header), Err(ProtocolError::Body(BodyError::UnknownEncoding)));
    let join = proto::JoinRequest {
        data: Some(proto::DataReport { reported_examples: f64::NAN, ..proto::DataReport::default() }),
        ..proto::JoinRequest::default()
    };
    assert!(matches!(JoinRequest::try_from(join), Err(ProtocolError::Invalid { field: "reported_examples", .. })));
    let request =
        proto::DecryptionRequest { announcement_hash: vec![0; 32], participants: vec![0], ..Default::default() };
    assert!(matches!(DecryptionRequest::try_from(request), Err(ProtocolError::Invalid { field: "participants", .. })));
    let record = proto::LedgerRecord::default();
    assert_eq!(LedgerRecord::try_from(record), Err(ProtocolError::Missing("ledger mechanism")));
}

#[test]
fn a_plan_with_an_invalid_schema_is_refused() {
    let mut wire = proto::Plan::from(&FederationPlan {
        federation_id: "f".into(),
        model_name: "m".into(),
        schema: Schema {
            features: vec!["x".into()],
            label: "y".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: None,
            label_bounds: None,
        },
        model: ModelSpec::new(1, &[], 2, TaskKind::Binary).expect("valid"),
        training: TrainingSection::default(),
        strategy: StrategyConfig::Fedavg,
        secure_aggregation: SecureAggregationSection::default(),
        influence: InfluenceSection::default(),
    });
    if let Some(s) = wire.schema.as_mut() {
        s.label = "x".into();
    }
    assert!(matches!(FederationPlan::try_from(wire), Err(ProtocolError::Invalid { field: "schema", .. })));
}
