//! Fuzzing harnesses for everything that decodes bytes from the network, shared by the cargo-fuzz targets in
//! `fuzz/` and by the regression test CI runs over the kept corpus (`tests/fuzz_regression.rs`).
//!
//! - [`decode_messages`] decodes bytes as every protobuf message either side accepts and converts each into the
//!   typed protocol.
//! - [`CoreHarness::run`] reads bytes as a *script* of messages from four peers (three roster hospitals and an
//!   outsider) to a fresh coordinator core, through the same chunked-stream reassembly the gRPC adapter uses:
//!   joins, task requests, uploads (as chunk sequences, so truncated streams, huge lengths and wrong chunk order
//!   are reachable), declines, reports, key shares, partial decryptions and clock ticks. One op kind acts as an
//!   honest node, so scripts reach training, aggregation and evaluation.
//!
//! Neither may panic. After every op the core is checked: the global model stays finite, and a new version moves
//! it by at most the federation's `max_update_norm` (FedAvg of updates each within the bound).
//!
//! A script is a sequence of ops `[kind, peer, len_lo, len_hi, payload[len]]`; see [`Op`].

use cohort_coordinator::federation::{Clock, Federation, Peer, Refusal};
use cohort_coordinator::round::{RoundMachine, RoundSettings};
use cohort_coordinator::strategy::FedAvg;
use cohort_core::binding::{FederationTrust, UnixTime};
use cohort_core::config::{
    FederationPlan, InfluenceSection, Schema, SecureAggregationSection, StrategyConfig, TrainingSection,
};
use cohort_core::model::{ModelSpec, TaskKind};
use cohort_core::protocol::codec::{Chunked, f32s_to_le, read_body, read_header, stream_messages};
use cohort_core::protocol::{
    Assignment, DataReport, Decline, EvaluationReport, JoinKeys, JoinRequest, JoinResponse, PartialHeader,
    ProtocolError, RoundRef, ShareSubmission, TaskHeader, UpdateHeader, proto,
};
use cohort_core::{ModelVersion, NodeName, Round};
use prost::Message;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The federation every script talks to.
pub const FEDERATION: &str = "fuzz";
/// The peers a script's `peer` byte picks from (modulo 4): three roster hospitals, then an outsider.
pub const PEERS: [&str; 4] = ["hospital-a", "hospital-b", "hospital-c", "outsider"];
/// The federation's bound on an update's L2 norm, which also bounds how far one version moves the model.
pub const MAX_UPDATE_NORM: f64 = 1.0;
/// The most ops one script runs, so no input runs for long.
pub const MAX_OPS: usize = 256;

/// The kinds of op in a script (the `kind` byte modulo 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `proto::JoinRequest`.
    Join,
    /// `proto::TaskRequest`.
    Task,
    /// An upload stream: `proto::UpdateChunk`s, each prefixed by its `u16` length.
    Upload,
    /// `proto::DeclineRequest`.
    Decline,
    /// `proto::EvaluationReport`.
    Report,
    /// `proto::ShareSubmission`.
    Shares,
    /// `proto::ShareRequest`.
    FetchShares,
    /// A partial-decryption stream: `proto::PartialChunk`s, each prefixed by its `u16` length.
    Partial,
    /// Advance the clock by `payload[0]` seconds and tick the core.
    Tick,
    /// Act as an honest node: join, train (a small update made of the payload), or report an evaluation.
    Honest,
}

impl Op {
    fn of(byte: u8) -> Self {
        match byte % 10 {
            0 => Self::Join,
            1 => Self::Task,
            2 => Self::Upload,
            3 => Self::Decline,
            4 => Self::Report,
            5 => Self::Shares,
            6 => Self::FetchShares,
            7 => Self::Partial,
            8 => Self::Tick,
            _ => Self::Honest,
        }
    }

    /// The `kind` byte of this op.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// Appends one op to `script`.
pub fn push_op(script: &mut Vec<u8>, op: Op, peer: usize, payload: &[u8]) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    script.extend_from_slice(&[op.byte(), peer as u8]);
    script.extend_from_slice(&len.to_le_bytes());
    script.extend_from_slice(&payload[..usize::from(len)]);
}

/// `messages` as a stream payload: each encoded and prefixed by its `u16` length.
pub fn stream_payload<M: Message>(messages: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let bytes = m.encode_to_vec();
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}

/// Splits `bytes` into `[u16 length][bytes]` pieces (a last, short piece is taken as it is).
fn pieces(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        let end = (2 + len).min(bytes.len());
        out.push(&bytes[2..end]);
        bytes = &bytes[end..];
    }
    out
}

/// Reads the ops of `script`, at most [`MAX_OPS`].
fn ops(mut script: &[u8]) -> Vec<(Op, usize, &[u8])> {
    let mut out = Vec::new();
    while script.len() >= 4 && out.len() < MAX_OPS {
        let len = usize::from(u16::from_le_bytes([script[2], script[3]]));
        let end = (4 + len).min(script.len());
        out.push((Op::of(script[0]), usize::from(script[1]) % PEERS.len(), &script[4..end]));
        script = &script[end..];
    }
    out
}

/// Decodes `bytes` as every protobuf message the coordinator or a node accepts from the network, and converts
/// each that decodes into the typed protocol. Returns how many decoded and converted. Never panics.
pub fn decode_messages(bytes: &[u8]) -> usize {
    fn typed<P: Message + Default, T: TryFrom<P>>(bytes: &[u8]) -> usize {
        P::decode(bytes).ok().map(T::try_from).map_or(0, |t| usize::from(t.is_ok()))
    }
    let mut n = 0;
    n += typed::<proto::JoinRequest, JoinRequest>(bytes);
    n += typed::<proto::JoinResponse, JoinResponse>(bytes);
    n += typed::<proto::DeclineRequest, Decline>(bytes);
    n += typed::<proto::EvaluationReport, EvaluationReport>(bytes);
    n += typed::<proto::ShareSubmission, ShareSubmission>(bytes);
    n += typed::<proto::TaskHeader, TaskHeader>(bytes);
    n += typed::<proto::UpdateHeader, UpdateHeader>(bytes);
    n += typed::<proto::PartialHeader, PartialHeader>(bytes);
    n += typed::<proto::Plan, FederationPlan>(bytes);
    n += typed::<proto::RoundAnnouncement, cohort_crypto::RoundAnnouncement>(bytes);
    n += typed::<proto::DecryptionRequest, cohort_crypto::DecryptionRequest>(bytes);
    n += typed::<proto::LedgerRecord, cohort_core::ledger::LedgerRecord>(bytes);
    n += typed::<proto::KeyBinding, cohort_core::binding::SignedBinding>(bytes);
    if let Ok(bundle) = proto::ShareBundle::decode(bytes) {
        let _ = cohort_core::protocol::ShareBundle::from(bundle);
        n += 1;
    }
    n
}

/// What one script did: how many of its ops the core accepted and refused, and the versions it produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace {
    /// Ops the core accepted.
    pub accepted: usize,
    /// Ops the core refused (with a typed [`Refusal`]).
    pub refused: usize,
    /// The global model version at the end.
    pub version: u64,
}

/// A clock that moves only when a script ticks it.
#[derive(Clone)]
struct ScriptClock {
    start: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl Clock for ScriptClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    fn unix(&self) -> UnixTime {
        UnixTime::now()
    }
}

/// A fresh plaintext coordinator core per script, over a federation CA made once.
#[derive(Debug)]
pub struct CoreHarness {
    ca_cert: PathBuf,
}

/// The harness could not set up its federation CA.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the fuzzing CA in {dir}: {source}")]
pub struct SetupError {
    dir: PathBuf,
    source: cohort_core::pki::PkiError,
}

impl CoreHarness {
    /// A harness whose federation CA lives in `dir` (created there unless present).
    ///
    /// # Errors
    /// [`SetupError`] when the CA cannot be written.
    pub fn new(dir: &Path) -> Result<Self, SetupError> {
        let ca_cert = dir.join(cohort_core::pki::CA_CERT_FILE);
        if !ca_cert.exists() {
            cohort_core::pki::init_ca(dir, FEDERATION).map_err(|source| SetupError { dir: dir.to_owned(), source })?;
        }
        Ok(Self { ca_cert })
    }

    /// The plan every script's federation runs: logistic regression on two features, three rounds, FedAvg, all
    /// three hospitals needed per round, no secure aggregation, updates bounded by [`MAX_UPDATE_NORM`].
    pub fn plan() -> FederationPlan {
        let schema = Schema {
            features: vec!["x".into(), "z".into()],
            label: "y".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: Some(vec![[-1.0, 1.0], [-1.0, 1.0]]),
            label_bounds: None,
        };
        FederationPlan {
            federation_id: FEDERATION.into(),
            model_name: "m".into(),
            model: ModelSpec { layers: vec![2, 2], task: TaskKind::Binary },
            schema,
            training: TrainingSection {
                rounds: 3,
                min_clients: 3,
                round_deadline_secs: 10,
                ..TrainingSection::default()
            },
            strategy: StrategyConfig::Fedavg,
            secure_aggregation: SecureAggregationSection::default(),
            influence: InfluenceSection { max_update_norm: MAX_UPDATE_NORM, ..InfluenceSection::default() },
        }
    }

    /// Runs `script` against a fresh core and checks the core's invariants after every op.
    ///
    /// # Panics
    /// When the core panics or breaks an invariant: that is the finding.
    pub fn run(&self, script: &[u8]) -> Trace {
        let plan = Self::plan();
        let trust = FederationTrust::load(&self.ca_cert).expect("the harness CA loads");
        let roster = PEERS[..3].iter().map(|n| NodeName::from(*n));
        let machine = RoundMachine::new(
            FEDERATION,
            roster,
            RoundSettings::from_plan(&plan),
            Box::new(FedAvg),
            vec![0.0; plan.model.parameter_count()],
            Round(0),
            ModelVersion(0),
        )
        .with_rng(rand_chacha::ChaCha20Rng::seed_from_u64(0));
        let clock = ScriptClock { start: Instant::now(), offset_ms: Arc::default() };
        let mut core = Federation::new(machine, plan, trust, Box::new(clock.clone()), BTreeMap::new());
        let mut trace = Trace::default();
        for (op, peer, payload) in ops(script) {
            let before = (core.machine().version(), core.machine().global().to_vec());
            let peer = Peer { name: NodeName::from(PEERS[peer]), certificate_der: None };
            let result = step(&mut core, &clock, op, &peer, payload);
            match result {
                Ok(()) => trace.accepted += 1,
                Err(_) => trace.refused += 1,
            }
            core.drain_effects();
            check_invariants(&core, &before);
        }
        trace.version = core.machine().version().0;
        trace
    }
}

/// The global model is finite, and a new version moved it by at most the update bound.
fn check_invariants(core: &Federation, (version, global): &(ModelVersion, Vec<f32>)) {
    let now = core.machine().global();
    assert!(now.iter().all(|v| v.is_finite()), "the global model became non-finite");
    if core.machine().version() != *version {
        let moved: Vec<f32> = now.iter().zip(global).map(|(a, b)| a - b).collect();
        let norm = cohort_model::layout::l2_norm(&moved);
        assert!(norm <= MAX_UPDATE_NORM * (1.0 + 1e-3), "one version moved the model by {norm}");
    }
}

/// Polls a future that never waits (the in-memory streams below are always ready).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("an in-memory stream never waits"),
    }
}

/// Decodes one protobuf message; bytes that are not one are refused as the adapter refuses them.
fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Refusal> {
    M::decode(bytes).map_err(|e| Refusal::Message(ProtocolError::Invalid { field: "message", reason: e.to_string() }))
}

/// Decodes a chunk stream payload into messages; an undecodable chunk becomes a stream error, as tonic's would.
fn chunk_stream<M: Message + Default>(payload: &[u8]) -> Vec<Result<M, Refusal>> {
    pieces(payload).into_iter().map(decode).collect()
}

/// Decodes a protobuf message and converts it into the typed protocol.
fn decoded<P: Message + Default, T: TryFrom<P, Error = ProtocolError>>(payload: &[u8]) -> Result<T, Refusal> {
    Ok(T::try_from(decode::<P>(payload)?)?)
}

fn step(core: &mut Federation, clock: &ScriptClock, op: Op, peer: &Peer, payload: &[u8]) -> Result<(), Refusal> {
    match op {
        Op::Join => core.join(peer, decoded::<proto::JoinRequest, JoinRequest>(payload)?).map(drop),
        Op::Task => {
            let request = decode::<proto::TaskRequest>(payload)?;
            let last_seen = request.last_seen.map(RoundRef::from);
            core.task(peer, last_seen.as_ref()).map(drop)
        }
        Op::Upload => upload(core, peer, chunk_stream::<proto::UpdateChunk>(payload)),
        Op::Decline => core.decline(peer, decoded::<proto::DeclineRequest, Decline>(payload)?),
        Op::Report => core.report(peer, decoded::<proto::EvaluationReport, EvaluationReport>(payload)?),
        Op::Shares => core.submit_shares(peer, decoded::<proto::ShareSubmission, ShareSubmission>(payload)?),
        Op::FetchShares => {
            let request = decode::<proto::ShareRequest>(payload)?;
            let round = request
                .round
                .map(RoundRef::from)
                .unwrap_or_else(|| RoundRef::new(FEDERATION, Round(0), ModelVersion(0)));
            core.shares_for(peer, &round).map(drop)
        }
        Op::Partial => {
            let mut stream = tokio_stream::iter(chunk_stream::<proto::PartialChunk>(payload));
            let header: PartialHeader = ready(read_header(&mut stream))?.try_into()?;
            let bytes = core.check_partial(peer, &header)?;
            let body = ready(read_body(&mut stream, bytes))?;
            core.partial(peer, &header, &body)
        }
        Op::Tick => {
            let secs = payload.first().copied().unwrap_or(1);
            clock.offset_ms.fetch_add(u64::from(secs) * 1000, Ordering::Relaxed);
            core.tick();
            Ok(())
        }
        Op::Honest => honest(core, peer, payload),
    }
}

/// Reassembles an upload stream exactly as the gRPC adapter does: header, admission check, body, upload.
fn upload(core: &mut Federation, peer: &Peer, chunks: Vec<Result<proto::UpdateChunk, Refusal>>) -> Result<(), Refusal> {
    let mut stream = tokio_stream::iter(chunks);
    let header: UpdateHeader = ready(read_header(&mut stream))?.try_into()?;
    let bytes = core.check_upload(peer, &header)?;
    let body = ready(read_body(&mut stream, bytes))?;
    core.upload(peer, &header, &body)
}

/// One honest step of `peer`: join if it has not, else do its task with values taken from `payload`.
fn honest(core: &mut Federation, peer: &Peer, payload: &[u8]) -> Result<(), Refusal> {
    if !core.nodes().contains_key(&peer.name) {
        let data = DataReport { fingerprint: String::new(), examples: 100.0, label_histogram: Vec::new() };
        let join = JoinRequest { federation_id: FEDERATION.into(), keys: JoinKeys::default(), data: Some(data) };
        return core.join(peer, join).map(drop);
    }
    let (header, model) = core.task(peer, None)?;
    match header.assignment {
        Assignment::Train(_) => {
            let mut delta: Vec<f32> =
                (0..model.len()).map(|i| payload.get(i).map_or(0.01, |&b| (f32::from(b) - 128.0) / 256.0)).collect();
            cohort_model::layout::clip_to_norm(&mut delta, MAX_UPDATE_NORM);
            let update = UpdateHeader {
                round: header.round,
                value_count: delta.len() as u64,
                encoding: cohort_core::protocol::BodyEncoding::F32Delta,
                train_loss: None,
            };
            let chunks = stream_messages::<proto::UpdateChunk>(update.into(), &f32s_to_le(&delta));
            upload(core, peer, chunks.into_iter().map(Ok).collect())
        }
        Assignment::Evaluate => {
            let accuracy = f64::from(payload.first().copied().unwrap_or(200)) / 255.0;
            let report = EvaluationReport {
                round: header.round,
                metrics: [("accuracy".into(), accuracy)].into(),
                ledger: Vec::new(),
            };
            core.report(peer, report)
        }
        _ => Ok(()),
    }
}

/// Scripts that reach every phase: honest joins, a full round of honest training and evaluation, then the same
/// messages with lies and damage (a replayed upload, an outsider's upload, a huge length, a truncated stream,
/// chunks out of order, a non-finite update, an oversized update). Kept as the seed corpus.
pub fn seed_scripts() -> Vec<(&'static str, Vec<u8>)> {
    let honest_round = |script: &mut Vec<u8>, fill: u8| {
        for peer in 0..3 {
            push_op(script, Op::Honest, peer, &[fill; 6]);
        }
        for peer in 0..3 {
            push_op(script, Op::Honest, peer, &[230]);
        }
    };
    let mut joined = Vec::new();
    for peer in 0..3 {
        push_op(&mut joined, Op::Honest, peer, &[]);
    }
    let mut one_round = joined.clone();
    honest_round(&mut one_round, 140);
    let mut three_rounds = one_round.clone();
    honest_round(&mut three_rounds, 120);
    honest_round(&mut three_rounds, 250);

    let round1 = RoundRef::new(FEDERATION, Round(1), ModelVersion(0));
    let header = |count: u64| UpdateHeader {
        round: round1.clone(),
        value_count: count,
        encoding: cohort_core::protocol::BodyEncoding::F32Delta,
        train_loss: Some(0.5),
    };
    let update_stream = |values: &[f32]| {
        let messages = stream_messages::<proto::UpdateChunk>(header(values.len() as u64).into(), &f32s_to_le(values));
        stream_payload(&messages)
    };
    let with = |base: &[u8], op: Op, peer: usize, payload: &[u8]| {
        let mut s = base.to_vec();
        push_op(&mut s, op, peer, payload);
        s
    };
    let mut reordered = stream_messages::<proto::UpdateChunk>(header(6).into(), &f32s_to_le(&[0.1; 6]));
    reordered.reverse();
    let join = JoinRequest { federation_id: FEDERATION.into(), keys: JoinKeys::default(), data: None };
    let decline = Decline { round: round1.clone(), reason: "no\nINFO forged line".into(), record: None };
    let report = EvaluationReport {
        round: RoundRef::new(FEDERATION, Round(1), ModelVersion(1)),
        metrics: [("accuracy".into(), 1.0)].into(),
        ledger: Vec::new(),
    };
    vec![
        ("honest-three-rounds", three_rounds.clone()),
        ("outsider-upload", with(&joined, Op::Upload, 3, &update_stream(&[0.1; 6]))),
        ("replayed-upload", {
            let mut s = with(&joined, Op::Upload, 0, &update_stream(&[0.1; 6]));
            push_op(&mut s, Op::Upload, 0, &update_stream(&[0.1; 6]));
            s
        }),
        (
            "huge-length",
            with(
                &joined,
                Op::Upload,
                1,
                &stream_payload(&[<proto::UpdateChunk as Chunked>::header(header(u64::MAX).into())]),
            ),
        ),
        ("truncated-stream", with(&joined, Op::Upload, 1, &update_stream(&[0.1; 6])[..20])),
        ("chunks-out-of-order", with(&joined, Op::Upload, 2, &stream_payload(&reordered))),
        ("non-finite-update", with(&joined, Op::Upload, 0, &update_stream(&[f32::NAN; 6]))),
        ("oversized-update", with(&joined, Op::Upload, 0, &update_stream(&[100.0; 6]))),
        ("wrong-shape", with(&joined, Op::Upload, 0, &update_stream(&[0.1; 7]))),
        (
            "join-other-federation",
            with(
                &[],
                Op::Join,
                0,
                &proto::JoinRequest::from(JoinRequest { federation_id: "x".into(), ..join.clone() }).encode_to_vec(),
            ),
        ),
        ("forged-decline", with(&joined, Op::Decline, 1, &proto::DeclineRequest::from(decline).encode_to_vec())),
        ("fake-report", with(&one_round, Op::Report, 2, &proto::EvaluationReport::from(report).encode_to_vec())),
        ("ticks", {
            let mut s = with(&joined, Op::Tick, 0, &[255]);
            push_op(&mut s, Op::Tick, 0, &[255]);
            s
        }),
    ]
}
