//! Leak audit, end to end over loopback mutual TLS: every field of every message a client sends to the
//! coordinator during a DP run with secure aggregation is checked against the exact values that must stay on
//! the node (`privacy.md`, "nothing leaves a node outside its ledger").
//!
//! # Recording
//! The coordinator serves through [`Recording`], a [`Federation`] layer around its own [`FederationService`]
//! (the `wrap` hook of [`Coordinator::serve`]; nothing in the coordinator changes):
//! - unary RPCs (`Join`, `FetchTask`'s `TaskRequest`, `Decline`, `ReportEvaluation`, `SubmitShares`,
//!   `FetchShares`): the request message is re-encoded with prost and kept, then passed on unchanged;
//! - client-streaming RPCs (`UploadUpdate`, `SubmitPartialDecryption`): the layer drains the client's stream,
//!   keeps every chunk, and hands the inner service a replay of the same messages, framed as gRPC again
//!   (compressed flag, big-endian length, prost bytes) in a [`Streaming`] of `Streaming::new_request`, with the
//!   original metadata and extensions (so the peer certificate still names the node);
//! - `FetchTask` responses: the models in the stream are captured, so the test knows every model version each
//!   node was sent and can compute its exact metrics on that node's rows.
//!
//! gRPC request metadata (headers) are kept with the messages and checked too.
//!
//! # Checking
//! Messages are decoded again with descriptors compiled from `core/proto/cohort.proto` at test time (protox,
//! prost-reflect), so every field of the proto, including fields added later, is walked by name. The check is
//! semantic, not a byte search: numbers compare as numbers, JSON strings are walked, other strings are scanned for
//! whole decimal words, and bytes fields are searched for binary encodings only where they are not ciphertext. A
//! value the node released with DP (in its own ledger) is allowed: inside its release record, and, for a noisy
//! count or histogram bin that happens to equal an exact count, anywhere (see [`NodeSecrets::allows`]).
//! `LEAK_AUDIT_DUMP=1` prints every recorded message in protobuf text format.
//!
//! The exact values are recomputed after the run from each node's data directory (its node secret gives the same
//! split): training, held-out and total rows; q = B/n, ⌈epochs/q⌉ steps, σ calibrated at that q and the ε after
//! each round at that q (all functions of n); the metrics of every model version the node was sent, on its
//! held-out and training rows; unsalted fingerprints (SHA-256 of schema JSON ‖ rows as u64 LE) and SHA-256 of
//! the raw CSV.

mod support;

use cohort_client::ledger::Ledger;
use cohort_client::privacy::PrivateWork;
use cohort_coordinator::Coordinator;
use cohort_coordinator::service::FederationService;
use cohort_core::config::{
    ClientConfig, FederationPlan, PrivacySection, SecureAggregationMode, SecureAggregationSection,
};
use cohort_core::ledger::{LedgerRecord, Mechanism};
use cohort_core::protocol::codec::MAX_MESSAGE_BYTES;
use cohort_core::protocol::proto::{self, federation_server::Federation};
use cohort_core::secret::NodeSecret;
use cohort_dp::accountant::{self, PrivacyAccount, SampledGaussian};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use support::Fixture;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::Codec;
use tonic::{Request, Response, Status, Streaming};

// ---------------------------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------------------------

/// A gRPC metadata value a client sent.
#[derive(Debug, Clone)]
enum Meta {
    /// An ASCII header.
    Text(String),
    /// A `-bin` header.
    Binary(Vec<u8>),
}

/// One message a client sent (one per chunk of a client stream).
#[derive(Debug, Clone)]
struct Sent {
    /// The node, from its TLS certificate.
    node: String,
    /// The RPC.
    rpc: &'static str,
    /// Full protobuf name of the message type.
    message: &'static str,
    /// For client-streaming RPCs: the stream's id and the chunk's index in it.
    chunk: Option<(u64, usize)>,
    /// The message, encoded with prost.
    bytes: Vec<u8>,
    /// The request metadata (on unary messages and on the first chunk of a stream).
    metadata: Vec<(String, Meta)>,
}

/// A model the coordinator sent a node in a task.
#[derive(Debug, Clone, PartialEq)]
struct SentModel {
    version: u64,
    params: Vec<f32>,
}

/// Everything recorded during the run.
#[derive(Debug, Default)]
struct Log {
    sent: Vec<Sent>,
    /// The distinct models each node was sent, in order.
    models: BTreeMap<String, Vec<SentModel>>,
    /// Client streams seen so far (their ids).
    streams: u64,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The coordinator's own service, with every request recorded on the way in.
#[derive(Clone)]
struct Recording {
    inner: FederationService,
    log: Arc<Mutex<Log>>,
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<proto::TaskChunk, Status>> + Send>>;

/// The node a request comes from: the CN of its client certificate.
fn node_of<T>(request: &Request<T>) -> String {
    request
        .peer_certs()
        .and_then(|certs| cohort_core::tls::peer_identity(&certs).ok())
        .map_or_else(|| "<unidentified>".to_owned(), |(name, _)| name.0)
}

/// The request metadata as (key, value) pairs.
fn metadata_of(metadata: &tonic::metadata::MetadataMap) -> Vec<(String, Meta)> {
    use tonic::metadata::KeyAndValueRef;
    metadata
        .iter()
        .map(|entry| match entry {
            KeyAndValueRef::Ascii(k, v) => {
                (k.as_str().to_owned(), Meta::Text(v.to_str().map(str::to_owned).unwrap_or_default()))
            }
            KeyAndValueRef::Binary(k, v) => {
                (k.as_str().to_owned(), Meta::Binary(v.to_bytes().map(|b| b.to_vec()).unwrap_or_default()))
            }
        })
        .collect()
}

/// One gRPC length-prefixed message: uncompressed flag, big-endian length, the bytes.
fn grpc_frame(out: &mut Vec<u8>, message: &[u8]) {
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
}

impl Recording {
    /// Keeps a unary request.
    fn keep<T: prost::Message>(&self, request: &Request<T>, rpc: &'static str, message: &'static str) {
        let sent = Sent {
            node: node_of(request),
            rpc,
            message,
            chunk: None,
            bytes: request.get_ref().encode_to_vec(),
            metadata: metadata_of(request.metadata()),
        };
        lock(&self.log).sent.push(sent);
    }

    /// Drains a client stream, keeps every chunk, and returns a request that replays the same chunks (with the
    /// original metadata and extensions) for the inner service.
    async fn replay<T>(
        &self,
        request: Request<Streaming<T>>,
        rpc: &'static str,
        message: &'static str,
    ) -> Result<Request<Streaming<T>>, Status>
    where
        T: prost::Message + Default + Send + 'static,
    {
        let node = node_of(&request);
        let mut metadata = metadata_of(request.metadata());
        let id = {
            let mut log = lock(&self.log);
            log.streams += 1;
            log.streams
        };
        let (meta, extensions, mut stream) = request.into_parts();
        let mut framed = Vec::new();
        let mut index = 0;
        while let Some(chunk) = stream.message().await? {
            let bytes = chunk.encode_to_vec();
            grpc_frame(&mut framed, &bytes);
            let sent = Sent {
                node: node.clone(),
                rpc,
                message,
                chunk: Some((id, index)),
                bytes,
                metadata: std::mem::take(&mut metadata),
            };
            lock(&self.log).sent.push(sent);
            index += 1;
        }
        let body = http_body_util::Full::new(tonic::codegen::Bytes::from(framed));
        let decoder = tonic_prost::ProstCodec::<T, T>::default().decoder();
        let replay = Streaming::new_request(decoder, body, None, Some(MAX_MESSAGE_BYTES));
        Ok(Request::from_parts(meta, extensions, replay))
    }
}

/// Reassembles the model of a task stream and files it under the node it was sent to.
struct ModelCapture {
    node: String,
    log: Arc<Mutex<Log>>,
    version: u64,
    expected: usize,
    bytes: Vec<u8>,
}

impl ModelCapture {
    fn observe(&mut self, chunk: &proto::TaskChunk) {
        match &chunk.body {
            Some(proto::task_chunk::Body::Header(header)) => {
                self.version = header.round.as_ref().map_or(0, |r| r.model_version);
                self.expected = usize::try_from(header.parameter_count).unwrap_or(0).saturating_mul(4);
                self.bytes.clear();
            }
            Some(proto::task_chunk::Body::ModelChunk(bytes)) => {
                self.bytes.extend_from_slice(bytes);
                if self.expected > 0 && self.bytes.len() == self.expected {
                    let params = self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    let model = SentModel { version: self.version, params: params.collect() };
                    let mut log = lock(&self.log);
                    let models = log.models.entry(self.node.clone()).or_default();
                    if !models.contains(&model) {
                        models.push(model);
                    }
                }
            }
            None => {}
        }
    }
}

#[tonic::async_trait]
impl Federation for Recording {
    async fn join(&self, r: Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        self.keep(&r, "Join", "cohort.v2.JoinRequest");
        self.inner.join(r).await
    }

    type FetchTaskStream = TaskStream;

    async fn fetch_task(&self, r: Request<proto::TaskRequest>) -> Result<Response<TaskStream>, Status> {
        self.keep(&r, "FetchTask", "cohort.v2.TaskRequest");
        let mut capture =
            ModelCapture { node: node_of(&r), log: self.log.clone(), version: 0, expected: 0, bytes: Vec::new() };
        let stream = self.inner.fetch_task(r).await?.into_inner();
        Ok(Response::new(Box::pin(stream.map(move |item| {
            if let Ok(chunk) = &item {
                capture.observe(chunk);
            }
            item
        }))))
    }

    async fn upload_update(&self, r: Request<Streaming<proto::UpdateChunk>>) -> Result<Response<proto::Ack>, Status> {
        let r = self.replay(r, "UploadUpdate", "cohort.v2.UpdateChunk").await?;
        self.inner.upload_update(r).await
    }

    async fn decline(&self, r: Request<proto::DeclineRequest>) -> Result<Response<proto::Ack>, Status> {
        self.keep(&r, "Decline", "cohort.v2.DeclineRequest");
        self.inner.decline(r).await
    }

    async fn report_evaluation(&self, r: Request<proto::EvaluationReport>) -> Result<Response<proto::Ack>, Status> {
        self.keep(&r, "ReportEvaluation", "cohort.v2.EvaluationReport");
        self.inner.report_evaluation(r).await
    }

    async fn submit_shares(&self, r: Request<proto::ShareSubmission>) -> Result<Response<proto::Ack>, Status> {
        self.keep(&r, "SubmitShares", "cohort.v2.ShareSubmission");
        self.inner.submit_shares(r).await
    }

    async fn fetch_shares(&self, r: Request<proto::ShareRequest>) -> Result<Response<proto::ShareBundle>, Status> {
        self.keep(&r, "FetchShares", "cohort.v2.ShareRequest");
        self.inner.fetch_shares(r).await
    }

    async fn submit_partial_decryption(
        &self,
        r: Request<Streaming<proto::PartialChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        let r = self.replay(r, "SubmitPartialDecryption", "cohort.v2.PartialChunk").await?;
        self.inner.submit_partial_decryption(r).await
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What must not leave a node
// ---------------------------------------------------------------------------------------------------------------

/// An exact value computed from a node's records, with what it is.
#[derive(Debug, Clone)]
struct Secret {
    value: f64,
    meaning: String,
    /// Counts and step numbers: compared exactly, never to a rounding.
    integer: bool,
    /// The metric's name (`accuracy`, ...), for values too common to look for everywhere (see [`Secret::weak`]).
    key: Option<String>,
}

impl Secret {
    fn count(value: usize, meaning: impl Into<String>) -> Self {
        Self { value: value as f64, meaning: meaning.into(), integer: true, key: None }
    }

    fn float(value: f64, meaning: impl Into<String>) -> Self {
        Self { value, meaning: meaning.into(), integer: false, key: None }
    }

    fn metric(name: &str, value: f64, meaning: impl Into<String>) -> Self {
        Self { key: Some(name.to_owned()), ..Self::float(value, meaning) }
    }

    /// A metric with fewer than 4 significant digits (0, 1, 0.75: a precision of 1.0 on a small held-out split) is
    /// also a clip norm, a σ or a default; it is reported only under its own metric name. (A short q such as
    /// 16/160 = 0.1 is still looked for everywhere.)
    fn weak(&self) -> bool {
        self.key.is_some() && precision(&format!("{}", self.value)).0 < 4
    }
}

/// Everything the checker looks for at one node, and what it allows.
#[derive(Debug, Default)]
struct NodeSecrets {
    numbers: Vec<Secret>,
    /// SHA-256 digests (unsalted fingerprints, digests of the raw CSV), with what they are.
    digests: Vec<([u8; 32], String)>,
    /// Values the node released with DP and recorded in its own ledger, by mechanism (see [`NodeSecrets::allows`]).
    released: Vec<(Mechanism, f64)>,
}

impl NodeSecrets {
    /// Whether `x`, matching `secret` in the field at `path`, is one of the node's DP releases: a value inside the
    /// `note` of a release record (the released value itself), or a noisy count or histogram bin that happens to
    /// equal an exact count. A float that merely coincides with one of the many released feature statistics (a
    /// step count equal to a column's mean, a precision of 1.0) is not allowed outside its release record.
    fn allows(&self, secret: &Secret, path: &str, x: f64) -> bool {
        let in_note = path.ends_with(".note");
        let in_metrics = path.contains("metrics.");
        self.released.iter().any(|(mechanism, value)| {
            *value == x
                && (in_note
                    || (secret.integer && matches!(mechanism, Mechanism::OpenDpCount | Mechanism::OpenDpHistogram))
                    || (in_metrics && *mechanism == Mechanism::OpenDpEvaluation)
                    // The DP-SGD schedule (q, steps, σ) planned from the released noisy count: post-processing.
                    || *mechanism == Mechanism::DpSgd)
        })
    }
}

/// The declared per-feature bounds of a CSV (as `cohort demo` declares them): the observed range widened by 10%.
fn declared_bounds(header: &[String], rows: &[String]) -> Vec<[f64; 2]> {
    let features: Vec<usize> = (0..header.len()).filter(|&i| header[i] != "malignant").collect();
    let mut ranges = vec![[f64::INFINITY, f64::NEG_INFINITY]; features.len()];
    for line in rows {
        let cells: Vec<&str> = line.split(',').collect();
        for (range, &column) in ranges.iter_mut().zip(&features) {
            let value: f64 = cells[column].trim().parse().expect("numeric CSV");
            range[0] = range[0].min(value);
            range[1] = range[1].max(value);
        }
    }
    ranges.into_iter().map(|[lo, hi]| [lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)]).collect()
}

/// The old, unsalted fingerprint: SHA-256 of the schema as JSON followed by a row count as u64 little-endian.
fn unsalted_fingerprint(schema: &cohort_core::config::Schema, rows: usize) -> [u8; 32] {
    let mut what = serde_json::to_vec(schema).expect("schema serializes");
    what.extend_from_slice(&(rows as u64).to_le_bytes());
    Sha256::digest(&what).into()
}

/// Every number inside a JSON value.
fn json_numbers(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Number(n) => out.extend(n.as_f64()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_numbers(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_numbers(v, out)),
        _ => {}
    }
}

/// The values a node released with DP: the JSON after "released " in the notes of its ledger's release records,
/// and, for an evaluation release (a noisy confusion matrix), the metrics derived from it, which are
/// post-processing of the release and what the node reports.
fn released_values(records: &[LedgerRecord]) -> Vec<(Mechanism, f64)> {
    let mut out = Vec::new();
    for record in records {
        let json = record.body.note.strip_prefix("released ");
        if let Some(Ok(value)) = json.map(serde_json::from_str::<serde_json::Value>) {
            let mut numbers = Vec::new();
            json_numbers(&value, &mut numbers);
            out.extend(numbers.into_iter().map(|x| (record.body.mechanism, x)));
            let confusion: Option<Vec<i64>> =
                value.get("confusion").and_then(|c| serde_json::from_value(c.clone()).ok());
            if let (Mechanism::OpenDpEvaluation, Some(confusion)) = (record.body.mechanism, confusion) {
                let classes = (confusion.len() as f64).sqrt().round() as usize;
                if let Ok(derived) = cohort_core::metrics::from_confusion(&confusion, classes) {
                    out.extend(derived.values.values().map(|&x| (Mechanism::OpenDpEvaluation, x)));
                }
            }
        }
    }
    out
}

/// The ε after each DP-SGD record of `records`, recomputed with the schedule `exact` (at the exact q, a function of
/// the exact training rows), with the pure releases as recorded.
fn epsilons_at_q(records: &[LedgerRecord], exact: &SampledGaussian, delta: f64) -> Vec<f64> {
    let mut account = PrivacyAccount::new();
    let mut out = Vec::new();
    for record in records {
        match record.body.mechanism {
            Mechanism::DpSgd | Mechanism::DpSgdTuning => {
                account.add_sampled_gaussian(exact).expect("valid DP-SGD parameters");
                out.push(account.epsilon(delta).expect("an ε"));
            }
            Mechanism::OpenDpCount | Mechanism::OpenDpHistogram | Mechanism::OpenDpFeatureStats => {
                account.add_pure(record.body.epsilon_spent.unwrap_or(0.0)).expect("valid ε");
            }
            _ => {}
        }
    }
    out
}

/// The exact values of one node after the run: row counts, q, steps, σ and ε at the exact q, the metrics of every
/// model it was sent on its held-out and training rows, fingerprints and digests; and its DP releases.
fn node_secrets(
    config: &ClientConfig,
    plan: &FederationPlan,
    privacy: &PrivacySection,
    models: &[SentModel],
) -> NodeSecrets {
    let secret = NodeSecret::load_or_create(&config.data_dir).expect("the node secret");
    let local = cohort_client::data::prepare(
        &config.data.path,
        &plan.schema,
        config.data.holdout_fraction,
        config.data.split_seed,
        &secret,
    )
    .expect("the node's data");
    let (train, held) = (local.train.rows(), local.holdout.rows());
    let mut numbers = vec![
        Secret::count(train, "exact training rows"),
        Secret::count(held, "exact held-out rows"),
        Secret::count(train + held, "exact rows (training + held-out)"),
    ];
    let batch = plan.training.batch_size as f64;
    let q = (batch / train as f64).min(1.0);
    let steps = (f64::from(plan.training.local_epochs.max(1)) / q).ceil() as u64;
    numbers.push(Secret::float(q, "q = B / exact training rows"));
    numbers.push(Secret::float((batch / (train + held) as f64).min(1.0), "B / exact rows"));
    numbers.push(Secret::count(steps as usize, "DP-SGD steps ⌈epochs / q⌉ at the exact q"));
    let sigma = match (privacy.noise_multiplier, privacy.dp_sgd_target()) {
        (Some(sigma), _) => sigma,
        (None, Some(target)) => {
            let sigma =
                accountant::calibrate(target, privacy.delta, q, steps * plan.training.rounds).expect("σ calibrates");
            numbers.push(Secret::float(sigma, "σ calibrated at the exact q"));
            sigma
        }
        (None, None) => unreachable!("a target whenever σ is not fixed"),
    };
    let records = Ledger::open(&config.data_dir).expect("the node's ledger").records().to_vec();
    let exact = SampledGaussian { q, sigma, steps };
    for (i, epsilon) in epsilons_at_q(&records, &exact, privacy.delta).into_iter().enumerate() {
        numbers.push(Secret::float(epsilon, format!("ε after {} DP-SGD round(s) at the exact q", i + 1)));
    }
    for model in models {
        for (split, data) in [("held-out", &local.holdout), ("training", &local.train)] {
            let metrics = cohort_client::trainer::evaluate(&plan.model, &model.params, data).expect("metrics");
            for (name, value) in &metrics.values {
                let meaning = format!("exact {name} of model v{} on the {split} rows", model.version);
                numbers.push(Secret::metric(name, *value, meaning));
            }
        }
    }
    let mut digests = Vec::new();
    let bare = cohort_core::config::Schema { bounds: None, ..plan.schema.clone() };
    for (schema, which) in [(&plan.schema, "schema"), (&bare, "schema without bounds")] {
        for (rows, what) in [(train + held, "rows"), (train, "training rows"), (held, "held-out rows")] {
            let meaning = format!("unsalted fingerprint (SHA-256 of the {which} and the exact {what})");
            digests.push((unsalted_fingerprint(schema, rows), meaning));
        }
    }
    let csv = std::fs::read(&config.data.path).expect("the node's CSV");
    digests.push((Sha256::digest(&csv).into(), "SHA-256 of the raw CSV".to_owned()));
    if let Some(newline) = csv.iter().position(|b| *b == b'\n') {
        digests.push((Sha256::digest(&csv[newline + 1..]).into(), "SHA-256 of the raw CSV rows".to_owned()));
    }
    let mut released = released_values(&records);
    // What the node plans from its released noisy count is post-processing of that release: the schedule may
    // coincide with the exact one (a step count is coarse), and is allowed.
    let noisy = released.iter().find(|(m, _)| *m == Mechanism::OpenDpCount).map(|(_, n)| n.max(1.0));
    if let Some(noisy) = noisy {
        let q = (batch / noisy).min(1.0);
        let steps = (f64::from(plan.training.local_epochs.max(1)) / q).ceil() as u64;
        released.push((Mechanism::DpSgd, q));
        released.push((Mechanism::DpSgd, steps as f64));
        let sigma = match (privacy.noise_multiplier, privacy.dp_sgd_target()) {
            (Some(sigma), _) => sigma,
            (None, Some(target)) => {
                accountant::calibrate(target, privacy.delta, q, steps * plan.training.rounds).expect("σ calibrates")
            }
            (None, None) => unreachable!("a target whenever σ is not fixed"),
        };
        released.push((Mechanism::DpSgd, sigma));
        // And so is the ε the ledger accounts for those rounds (it equals the exact-q ε when the noisy count
        // happens to equal the exact one).
        let planned = SampledGaussian { q, sigma, steps };
        released.extend(epsilons_at_q(&records, &planned, privacy.delta).into_iter().map(|e| (Mechanism::DpSgd, e)));
    }
    NodeSecrets { numbers, digests, released }
}

// ---------------------------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------------------------

/// One value a client sent that equals a value that must stay on the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    node: String,
    rpc: String,
    path: String,
    value: String,
    meaning: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}.{} {} = {}", self.node, self.rpc, self.path, self.value, self.meaning)
    }
}

/// The result of an audit: leaks, and matches that were allowed because the node released the value with DP.
#[derive(Debug, Default)]
struct Audit {
    findings: Vec<Finding>,
    allowed: Vec<Finding>,
    /// Ciphertext fields skipped (`sealed`, RLWE body chunks, consent signatures).
    ciphertext_fields: usize,
    /// Fields inspected.
    fields: usize,
}

/// The descriptors of `cohort.v2`, compiled from the proto the crates are built from.
fn descriptors() -> DescriptorPool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/proto");
    protox::Compiler::new([&dir])
        .and_then(|mut c| c.include_imports(true).open_file("cohort.proto").map(|c| c.descriptor_pool()))
        .expect("cohort.proto compiles")
}

/// Significant digits of a decimal rendering (`"0.05263"` → 4) and the value of one unit in its last digit
/// (`1e-5`).
fn precision(repr: &str) -> (usize, f64) {
    let repr = repr.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match repr.find(['e', 'E']) {
        Some(i) => (&repr[..i], repr[i + 1..].parse::<i32>().unwrap_or(0)),
        None => (repr, 0),
    };
    let decimals = mantissa.find('.').map_or(0, |dot| mantissa.len() - dot - 1);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').len();
    (significant, 10f64.powi(exponent - i32::try_from(decimals).unwrap_or(i32::MAX)))
}

/// The decimal numbers written in `text` as whole words (`455`, `-0.25`, `1.5e-3`), with their renderings; never
/// digits inside hex or names (`ab455`, `v2`) or dotted versions (`0.14.9`).
fn numbers_in(text: &str) -> Vec<(&str, f64)> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let digit_at = |i: usize| i < b.len() && b[i].is_ascii_digit();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = digit_at(i) || (b[i] == b'-' && digit_at(i + 1));
        if !starts || (i > 0 && (word(b[i - 1]) || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        i += usize::from(b[i] == b'-');
        while digit_at(i) {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' && digit_at(i + 1) {
            i += 1;
            while digit_at(i) {
                i += 1;
            }
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            let mut j = i + 1;
            if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                j += 1;
            }
            if digit_at(j) {
                while digit_at(j) {
                    j += 1;
                }
                i = j;
            }
        }
        let continues = i < b.len() && (word(b[i]) || (b[i] == b'.' && digit_at(i + 1)));
        if continues {
            while i < b.len() && (word(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if let Ok(value) = text[start..i].parse::<f64>() {
            out.push((&text[start..i], value));
        }
    }
    out
}

/// Whether `x`, written as `repr`, equals `secret`: exactly for counts; for floats within 1e-9 relative, as the
/// same f32, or as a rendering of it with 4 or more significant digits (rounded or truncated). Returns how.
fn equals(secret: &Secret, repr: &str, x: f64) -> Option<&'static str> {
    let t = secret.value;
    if !x.is_finite() || !t.is_finite() {
        return None;
    }
    if secret.integer {
        return (x == t).then_some("");
    }
    if (x - t).abs() <= 1e-9 * t.abs().max(f64::MIN_POSITIVE) {
        return Some("");
    }
    if t != 0.0 && (x as f32) == (t as f32) {
        return Some(" (as f32)");
    }
    let (digits, unit) = precision(repr);
    (digits >= 4 && (x - t).abs() < unit).then_some(" (rounded)")
}

/// Fields whose bytes are ciphertext or signatures of secure aggregation, where a binary pattern means nothing.
/// Body chunks of an upload are ciphertext only in an `rlwe-bodies` stream; plaintext f32 deltas are checked.
fn is_ciphertext(field: &str, rlwe_stream: bool) -> bool {
    matches!(
        field,
        "cohort.v2.Envelope.sealed"
            | "cohort.v2.SenderEnvelope.sealed"
            | "cohort.v2.ShareSubmission.consent_signature"
            | "cohort.v2.PartialChunk.body_chunk"
    ) || (field == "cohort.v2.UpdateChunk.body_chunk" && rlwe_stream)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Walks one message's fields for one node's secrets.
struct Walk<'a> {
    secrets: &'a NodeSecrets,
    node: &'a str,
    rpc: &'static str,
    rlwe_stream: bool,
    audit: &'a mut Audit,
}

/// Several meanings of one value, the first three in full.
fn meanings(all: &[String]) -> String {
    match all.len() {
        0..=3 => all.join("; "),
        n => format!("{}; and {} more", all[..3].join("; "), n - 3),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

impl Walk<'_> {
    fn report(&mut self, path: &str, value: String, meaning: String, allowed: bool) {
        let finding =
            Finding { node: self.node.to_owned(), rpc: self.rpc.to_owned(), path: path.to_owned(), value, meaning };
        if allowed { self.audit.allowed.push(finding) } else { self.audit.findings.push(finding) }
    }

    fn message(&mut self, path: &str, message: &DynamicMessage) {
        for (field, value) in message.fields() {
            let here = join(path, field.name());
            if is_ciphertext(field.full_name(), self.rlwe_stream) {
                self.audit.ciphertext_fields += 1;
                continue;
            }
            self.value(&here, value);
        }
        for unknown in message.unknown_fields() {
            let meaning = "a field that is not in cohort.proto".to_owned();
            self.report(&join(path, &format!("#{}", unknown.number())), format!("{unknown:?}"), meaning, false);
        }
    }

    fn value(&mut self, path: &str, value: &Value) {
        self.audit.fields += 1;
        match value {
            Value::Bool(_) => {}
            Value::I32(v) => self.number(path, &v.to_string(), f64::from(*v)),
            Value::I64(v) => self.number(path, &v.to_string(), *v as f64),
            Value::U32(v) => self.number(path, &v.to_string(), f64::from(*v)),
            Value::U64(v) => self.number(path, &v.to_string(), *v as f64),
            Value::EnumNumber(v) => self.number(path, &v.to_string(), f64::from(*v)),
            Value::F32(v) => self.number(path, &v.to_string(), f64::from(*v)),
            Value::F64(v) => self.number(path, &v.to_string(), *v),
            Value::String(s) => self.text(path, s),
            Value::Bytes(b) => self.bytes(path, b),
            Value::Message(m) => self.message(path, m),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.value(&format!("{path}[{i}]"), item);
                }
            }
            Value::Map(map) => {
                for (key, item) in map {
                    let key = match key {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    self.value(&join(path, &key), item);
                }
            }
        }
    }

    /// A number written as `repr`: one finding per field, naming every exact value it equals.
    fn number(&mut self, path: &str, repr: &str, x: f64) {
        let last = path.rsplit(['.', '[']).next().unwrap_or(path);
        let secrets = self.secrets;
        let (mut leaks, mut allowed) = (Vec::new(), Vec::new());
        for secret in &secrets.numbers {
            if secret.weak() && secret.key.as_deref() != Some(last) {
                continue;
            }
            if let Some(how) = equals(secret, repr, x) {
                let meaning = format!("{}{how}", secret.meaning);
                if secrets.allows(secret, path, x) { allowed.push(meaning) } else { leaks.push(meaning) }
            }
        }
        if !leaks.is_empty() {
            self.report(path, repr.to_owned(), meanings(&leaks), false);
        }
        if !allowed.is_empty() {
            self.report(path, repr.to_owned(), meanings(&allowed), true);
        }
    }

    /// A string: walked as JSON (or JSON lines) when it parses, else scanned for decimal words; searched for the
    /// hex of every digest either way.
    fn text(&mut self, path: &str, text: &str) {
        let lower = text.to_ascii_lowercase();
        let secrets = self.secrets;
        for (digest, meaning) in &secrets.digests {
            if lower.contains(&hex::encode(digest)) {
                self.report(path, hex::encode(digest), meaning.clone(), false);
            }
        }
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
            return self.json(path, &json);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let parsed: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() > 1 && parsed.len() == lines.len() {
            for (i, json) in parsed.iter().enumerate() {
                self.json(&format!("{path}[line {i}]"), json);
            }
            return;
        }
        for (repr, x) in numbers_in(text) {
            self.number(path, repr, x);
        }
    }

    fn json(&mut self, path: &str, value: &serde_json::Value) {
        match value {
            serde_json::Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    self.number(path, &n.to_string(), x);
                }
            }
            serde_json::Value::String(s) => self.text(path, s),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.json(&format!("{path}[{i}]"), item);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    self.json(&join(path, key), item);
                }
            }
            serde_json::Value::Bool(_) | serde_json::Value::Null => {}
        }
    }

    /// Plaintext bytes: searched for every digest, and for the little-endian encodings of every number (u64, u32,
    /// f64, f32 of counts; f64, f32 of floats).
    fn bytes(&mut self, path: &str, bytes: &[u8]) {
        let secrets = self.secrets;
        for (digest, meaning) in &secrets.digests {
            if let Some(at) = find(bytes, digest) {
                self.report(path, format!("<32 bytes at offset {at}>"), meaning.clone(), false);
            }
        }
        for secret in secrets.numbers.iter().filter(|s| !s.weak()) {
            let v = secret.value;
            let mut encodings: Vec<(&str, Vec<u8>)> =
                vec![("f64 LE", v.to_le_bytes().to_vec()), ("f32 LE", (v as f32).to_le_bytes().to_vec())];
            if secret.integer {
                encodings.push(("u64 LE", (v as u64).to_le_bytes().to_vec()));
                encodings.push(("u32 LE", (v as u32).to_le_bytes().to_vec()));
            }
            for (encoding, needle) in encodings {
                if let Some(at) = find(bytes, &needle) {
                    self.report(path, format!("{v} as {encoding} at offset {at}"), secret.meaning.clone(), false);
                }
            }
        }
    }
}

/// Checks every recorded message against the secrets of the node that sent it.
fn audit(pool: &DescriptorPool, sent: &[Sent], secrets: &BTreeMap<String, NodeSecrets>) -> Audit {
    let mut audit = Audit::default();
    // Upload streams whose header declares encrypted bodies.
    let rlwe: BTreeSet<u64> = sent
        .iter()
        .filter(|s| s.rpc == "UploadUpdate")
        .filter_map(|s| {
            let chunk = proto::UpdateChunk::decode(s.bytes.as_slice()).ok()?;
            match chunk.body {
                Some(proto::update_chunk::Body::Header(h)) if h.encoding == proto::BodyEncoding::RlweBodies as i32 => {
                    s.chunk.map(|c| c.0)
                }
                _ => None,
            }
        })
        .collect();
    let none = NodeSecrets::default();
    for s in sent {
        let node_secrets = secrets.get(&s.node).unwrap_or(&none);
        let rlwe_stream = s.chunk.is_some_and(|(id, _)| rlwe.contains(&id));
        let rpc = s.rpc;
        let mut walk = Walk { secrets: node_secrets, node: &s.node, rpc, rlwe_stream, audit: &mut audit };
        let path = s.chunk.map_or_else(String::new, |(_, i)| format!("chunk[{i}]"));
        for (key, meta) in &s.metadata {
            let here = join(&join(&path, "metadata"), key);
            match meta {
                Meta::Text(text) => walk.text(&here, text),
                Meta::Binary(bytes) => walk.bytes(&here, bytes),
            }
        }
        let decoded = pool
            .get_message_by_name(s.message)
            .ok_or_else(|| format!("no message {} in cohort.proto", s.message))
            .and_then(|d| DynamicMessage::decode(d, s.bytes.as_slice()).map_err(|e| e.to_string()));
        match decoded {
            Ok(message) => walk.message(&path, &message),
            Err(e) => walk.report(&path, format!("<{} bytes>", s.bytes.len()), format!("undecodable: {e}"), false),
        }
    }
    for list in [&mut audit.findings, &mut audit.allowed] {
        list.sort();
        list.dedup();
    }
    audit
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

const NAMES: [&str; 3] = ["hospital-a", "hospital-b", "hospital-c"];
const ROUNDS: u64 = 3;

/// The privacy settings of every hospital: σ calibrated to a target (so σ is a function of q), a budget large
/// enough for three rounds, and DP feature statistics against the declared bounds.
fn privacy() -> PrivacySection {
    PrivacySection {
        enabled: true,
        epsilon_budget: 100.0,
        target_epsilon: Some(8.0),
        feature_stats_epsilon: Some(5.0),
        ..PrivacySection::default()
    }
}

/// Three hospitals, DP-SGD and threshold-RLWE secure aggregation, three rounds, every client message recorded;
/// then every recorded field is checked against each node's exact values. On the current tree this FAILS with
/// the list of leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_client_message_carries_an_exact_count_metric_or_fingerprint() {
    let mut fx = Fixture::new(&NAMES, ROUNDS);
    fx.coordinator.schema.bounds = Some(declared_bounds(&fx.header, &fx.rows));
    fx.coordinator.training.min_clients = 3;
    fx.coordinator.training.round_deadline_secs = 120;
    fx.coordinator.training.local_epochs = 2;
    fx.coordinator.training.batch_size = 16;
    fx.coordinator.secure_aggregation = SecureAggregationSection {
        mode: SecureAggregationMode::ThresholdRlwe,
        max_colluders: 1,
        threshold: None,
        min_participants: Some(3),
    };
    let plan = cohort_coordinator::server::plan_of(&fx.coordinator).expect("a plan");
    let coordinator = Coordinator::bind(&fx.coordinator).await.expect("the coordinator binds");
    let addr = coordinator.local_addr().expect("an address");
    let mut configs = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let mut config = fx.client(name, &fx.issue(name), i, NAMES.len(), addr);
        config.privacy = privacy();
        configs.push(config);
    }
    let mut clients = Vec::new();
    for config in configs.clone() {
        clients.push(tokio::spawn(async move {
            let mut work = PrivateWork::new(&config.name, config.data_dir.clone(), config.privacy.clone());
            cohort_client::node::run(&config, &mut work).await
        }));
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let recording = log.clone();
    let serve = coordinator.serve(std::future::pending(), move |inner| Recording { inner, log: recording });
    let report = tokio::time::timeout(Duration::from_secs(600), serve)
        .await
        .expect("the federation finishes in time")
        .expect("the coordinator runs");
    for client in clients {
        client.await.expect("the client task").expect("the client finishes");
    }
    assert_eq!(report.history.len() as u64, ROUNDS);
    assert!(report.history.iter().all(|r| r.contributors.len() == 3 && r.secure.is_some()), "{:?}", report.history);

    let log = lock(&log);
    let pool = descriptors();
    let mut secrets = BTreeMap::new();
    for config in &configs {
        let models = log.models.get(&config.name).cloned().unwrap_or_default();
        assert!(models.len() as u64 > ROUNDS, "{}: the initial and every round's model were sent", config.name);
        secrets.insert(config.name.clone(), node_secrets(config, &plan, &config.privacy, &models));
    }

    // Control: the recording saw every RPC of a secure DP round from every node.
    for name in NAMES {
        let rpcs: BTreeSet<&str> = log.sent.iter().filter(|s| s.node == name).map(|s| s.rpc).collect();
        let expected = ["Join", "FetchTask", "UploadUpdate", "SubmitShares", "FetchShares", "SubmitPartialDecryption"];
        for rpc in expected.into_iter().chain(["ReportEvaluation"]) {
            assert!(rpcs.contains(rpc), "{name}: no {rpc} recorded (saw {rpcs:?})");
        }
    }
    // Control: the checker finds this run's exact values when they are sent (a synthetic Join per node).
    for (name, node) in &secrets {
        let rows = node.numbers[0].value;
        let join = data_join(rows);
        let sent = [Sent {
            node: name.clone(),
            rpc: "Join",
            message: "cohort.v2.JoinRequest",
            chunk: None,
            bytes: join.encode_to_vec(),
            metadata: Vec::new(),
        }];
        let control = audit(&pool, &sent, &secrets);
        assert!(
            control.findings.iter().chain(&control.allowed).any(|f| f.meaning == "exact training rows"),
            "control: {control:?}"
        );
    }

    if std::env::var_os("LEAK_AUDIT_DUMP").is_some() {
        dump(&pool, &log.sent);
    }
    let result = audit(&pool, &log.sent, &secrets);
    print_summary(&log, &secrets, &result);
    let lines: Vec<String> = result.findings.iter().map(ToString::to_string).collect();
    assert!(
        result.findings.is_empty(),
        "{} value(s) computed from patient records left a node outside its ledger:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

/// Prints every recorded message in protobuf text format (`LEAK_AUDIT_DUMP=1`), body chunks by their size only.
fn dump(pool: &DescriptorPool, sent: &[Sent]) {
    for s in sent {
        let Some(descriptor) = pool.get_message_by_name(s.message) else { continue };
        let Ok(message) = DynamicMessage::decode(descriptor, s.bytes.as_slice()) else { continue };
        let body = message.get_field_by_name("body_chunk").filter(|_| message.has_field_by_name("body_chunk"));
        match body {
            Some(chunk) => println!(
                "{} {} {:?}: body_chunk <{} bytes>",
                s.node,
                s.rpc,
                s.chunk,
                chunk.as_bytes().map_or(0, |b| b.len())
            ),
            None => println!("{} {} {:?}: {message}", s.node, s.rpc, s.chunk),
        }
    }
}

/// What was recorded and looked for, for the log of a run.
fn print_summary(log: &Log, secrets: &BTreeMap<String, NodeSecrets>, result: &Audit) {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for s in &log.sent {
        *counts.entry((s.node.as_str(), s.rpc)).or_default() += 1;
    }
    println!("recorded messages (node, rpc, messages incl. stream chunks):");
    for ((node, rpc), n) in &counts {
        println!("  {node} {rpc} {n}");
    }
    for (node, s) in secrets {
        let models = log.models.get(node).map_or(0, Vec::len);
        println!(
            "{node}: {} exact values ({} models sent), {} digests, {} DP-released values",
            s.numbers.len(),
            models,
            s.digests.len(),
            s.released.len()
        );
        for secret in s.numbers.iter().take(7) {
            println!("  {} = {}", secret.meaning, secret.value);
        }
    }
    println!(
        "inspected {} fields, skipped {} ciphertext fields; {} allowed matches (DP releases):",
        result.fields,
        result.ciphertext_fields,
        result.allowed.len()
    );
    for a in &result.allowed {
        println!("  allowed: {a}");
    }
    println!("{} finding(s):", result.findings.len());
    for f in &result.findings {
        println!("  {f}");
    }
}

/// A join whose data report claims `examples` rows.
fn data_join(examples: f64) -> proto::JoinRequest {
    let data = proto::DataReport { reported_examples: examples, ..proto::DataReport::default() };
    proto::JoinRequest { data: Some(data), ..proto::JoinRequest::default() }
}

/// A synthetic node with known exact values, for the checker's own tests.
fn synthetic_secrets() -> BTreeMap<String, NodeSecrets> {
    let secrets = NodeSecrets {
        numbers: vec![
            Secret::count(455, "exact training rows"),
            Secret::count(38, "exact held-out rows"),
            Secret::float(16.0 / 455.0, "q = B / exact training rows"),
            Secret::count(57, "DP-SGD steps"),
            Secret::float(0.1, "q of another node = 16 / 160"),
            Secret::metric("accuracy", 0.973_684_210_526_315_8, "exact accuracy"),
            Secret::metric("precision", 1.0, "exact precision"),
        ],
        digests: vec![(Sha256::digest(b"schema and 455").into(), "unsalted fingerprint".to_owned())],
        released: vec![(Mechanism::OpenDpCount, 451.0), (Mechanism::OpenDpFeatureStats, 57.0)],
    };
    BTreeMap::from([("hospital-a".to_owned(), secrets)])
}

fn sent(rpc: &'static str, message: &'static str, chunk: Option<(u64, usize)>, bytes: Vec<u8>) -> Sent {
    Sent { node: "hospital-a".into(), rpc, message, chunk, bytes, metadata: Vec::new() }
}

/// Control: the checker reports each kind of leak in synthetic messages (exact counts in integer, float, JSON,
/// JSON-lines and text fields; a metric in full, rounded and as f32; q in plaintext bytes; the fingerprint in hex
/// and raw), and reports nothing in ciphertext fields, DP releases, hex digits or names.
#[test]
fn the_checker_reports_exact_values_in_every_encoding_and_nothing_else() {
    let secrets = synthetic_secrets();
    let digest: [u8; 32] = Sha256::digest(b"schema and 455").into();
    let q = 16.0f64 / 455.0;
    let join = proto::JoinRequest {
        data: Some(proto::DataReport {
            reported_examples: 455.0,
            data_fingerprint: hex::encode(digest),
            label_histogram: vec![451, 3],
        }),
        ledger_public_key: digest.to_vec(),
        ..proto::JoinRequest::default()
    };
    let record = |seq, note: &str| proto::LedgerRecord { seq, note: note.into(), ..proto::LedgerRecord::default() };
    let ledger = vec![
        proto::LedgerRecord { sample_rate: q, steps: 57, clip_norm: 1.0, ..record(0, "released [451]") },
        proto::LedgerRecord { prev_hash: "ab455cd0455e3f".into(), ..record(1, "node v2 of e2e, tonic/0.14.9") },
        proto::LedgerRecord { sample_rate: 0.1, ..record(2, "released {\"mean\":57.0}") },
    ];
    let metrics = [("examples", 38.0), ("accuracy", 0.9737), ("precision", 1.0), ("loss", 1.0)];
    let report = proto::EvaluationReport {
        round: Some(proto::RoundRef { federation_id: "e2e".into(), round: 1, model_version: 1 }),
        metrics: metrics.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ledger,
    };
    let decline = proto::DeclineRequest {
        reason: format!("only 455 rows; accuracy {} (f32)", 0.973_684_210_526_315_8f64 as f32),
        ..proto::DeclineRequest::default()
    };
    let header = |encoding: proto::BodyEncoding| proto::UpdateChunk {
        body: Some(proto::update_chunk::Body::Header(proto::UpdateHeader {
            encoding: encoding.into(),
            ..proto::UpdateHeader::default()
        })),
    };
    let body = proto::UpdateChunk { body: Some(proto::update_chunk::Body::BodyChunk(q.to_le_bytes().to_vec())) };
    let shares = proto::ShareSubmission {
        envelopes: vec![proto::Envelope { recipient: "hospital-b".into(), sealed: digest.to_vec() }],
        consent_signature: 455u64.to_le_bytes().to_vec(),
        ..proto::ShareSubmission::default()
    };
    let messages = vec![
        sent("Join", "cohort.v2.JoinRequest", None, join.encode_to_vec()),
        sent("ReportEvaluation", "cohort.v2.EvaluationReport", None, report.encode_to_vec()),
        sent("Decline", "cohort.v2.DeclineRequest", None, decline.encode_to_vec()),
        sent(
            "UploadUpdate",
            "cohort.v2.UpdateChunk",
            Some((1, 0)),
            header(proto::BodyEncoding::F32Delta).encode_to_vec(),
        ),
        sent("UploadUpdate", "cohort.v2.UpdateChunk", Some((1, 1)), body.encode_to_vec()),
        sent(
            "UploadUpdate",
            "cohort.v2.UpdateChunk",
            Some((2, 0)),
            header(proto::BodyEncoding::RlweBodies).encode_to_vec(),
        ),
        sent("UploadUpdate", "cohort.v2.UpdateChunk", Some((2, 1)), body.encode_to_vec()),
        sent("SubmitShares", "cohort.v2.ShareSubmission", None, shares.encode_to_vec()),
    ];
    let result = audit(&descriptors(), &messages, &secrets);
    let found: Vec<String> = result.findings.iter().map(ToString::to_string).collect();
    let mut expected: Vec<String> = [
        "hospital-a Decline.reason 0.9736842 = exact accuracy (as f32)",
        "hospital-a Decline.reason 455 = exact training rows",
        "hospital-a Join.data.reported_examples 455 = exact training rows",
        "hospital-a Join.ledger_public_key <32 bytes at offset 0> = unsalted fingerprint",
        "hospital-a ReportEvaluation.ledger[0].sample_rate 0.035164835164835165 = q = B / exact training rows",
        "hospital-a ReportEvaluation.ledger[0].steps 57 = DP-SGD steps",
        "hospital-a ReportEvaluation.ledger[2].sample_rate 0.1 = q of another node = 16 / 160",
        "hospital-a ReportEvaluation.metrics.accuracy 0.9737 = exact accuracy (rounded)",
        "hospital-a ReportEvaluation.metrics.examples 38 = exact held-out rows",
        "hospital-a ReportEvaluation.metrics.precision 1 = exact precision",
        "hospital-a UploadUpdate.chunk[1].body_chunk 0.035164835164835165 as f64 LE at offset 0 = q = B / exact training rows",
    ]
    .map(String::from)
    .to_vec();
    expected.push(format!("hospital-a Join.data.data_fingerprint {} = unsalted fingerprint", hex::encode(digest)));
    expected.sort();
    assert_eq!(found, expected, "findings:\n{}", found.join("\n"));
    // A released statistic equal to the exact step count is allowed in its own release record only: the steps
    // field above is still reported.
    let allowed: Vec<String> = result.allowed.iter().map(|f| format!("{}.{}", f.rpc, f.path)).collect();
    assert_eq!(allowed, ["ReportEvaluation.ledger[2].note"]);
    assert_eq!(result.ciphertext_fields, 3, "sealed, consent signature and the RLWE body chunk are skipped");
}

/// Control: a DP release that happens to equal an exact count is allowed, and reported as allowed.
#[test]
fn a_dp_release_equal_to_the_exact_count_is_allowed() {
    let mut secrets = synthetic_secrets();
    secrets.get_mut("hospital-a").expect("the node").released.push((Mechanism::OpenDpCount, 455.0));
    let join = data_join(455.0);
    let result = audit(&descriptors(), &[sent("Join", "cohort.v2.JoinRequest", None, join.encode_to_vec())], &secrets);
    assert!(result.findings.is_empty(), "{:?}", result.findings);
    assert_eq!(result.allowed.len(), 1, "{:?}", result.allowed);
}

/// The decimal scanner reads whole words only.
#[test]
fn numbers_are_read_as_whole_decimal_words() {
    let found: Vec<&str> =
        numbers_in("n=455, q 0.0351, e 1.5e-3; ab455 v2 0.14.9 x_12 -7 (38).").into_iter().map(|(r, _)| r).collect();
    assert_eq!(found, ["455", "0.0351", "1.5e-3", "-7", "38"]);
    assert_eq!(precision("0.05263").0, 4);
    assert!((precision("0.05263").1 - 1e-5).abs() < 1e-20);
    assert_eq!(precision("455").0, 3);
}
