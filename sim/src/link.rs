//! The in-memory transport, in real time or in virtual time.

use crate::conditions::Profile;
use crate::network::Network;
use cohort_client::link::{CoordinatorLink, refusal, task_model};
use cohort_client::node::ClientError;
use cohort_coordinator::federation::{Federation, Peer, Refusal};
use cohort_coordinator::host::Host;
use cohort_coordinator::service::status_of;
use cohort_core::protocol::codec::{self, BodyError, Chunked, read_body, read_header, stream_messages};
use cohort_core::protocol::{
    Assignment, Decline, EvaluationReport, JoinRequest, JoinResponse, PartialHeader, ProtocolError, RoundRef,
    ShareBundle, ShareSubmission, TaskHeader, UpdateHeader, proto,
};
use cohort_core::{NodeName, Round};
use prost::Message;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the in-memory coordinator "lives", for error messages.
const URL: &str = "memory://coordinator";

/// The wire size of the small messages and answers that carry no model, update or shares.
const SMALL_MESSAGE_BYTES: usize = 256;

/// The longest DER encoding of an ECDSA P-256 signature (SEC 1 v2, C.5: two 33-byte integers in a sequence).
const ECDSA_P256_DER_MAX: usize = 72;

/// The bytes that make an ECDSA P-256 signature of `len` bytes as long as the longest one. ECDSA signs with a
/// random nonce, so its DER length varies (70 to 72 bytes); the cost model charges every signature at the
/// longest, so that simulated time does not depend on the nonces.
fn signature_padding(len: usize) -> usize {
    ECDSA_P256_DER_MAX.saturating_sub(len)
}

/// The longest serial number a certificate may have (RFC 5280, 4.1.2.2).
const SERIAL_MAX: usize = 20;

/// The bytes that make the certificate `der` as long as the longest of its kind: its serial number is a hash
/// of a random key, and its CA signature has a random nonce, so both vary in length from run to run (0 for
/// bytes that are not a certificate).
fn certificate_padding(der: &[u8]) -> usize {
    x509_parser::parse_x509_certificate(der).map_or(0, |(_, cert)| {
        SERIAL_MAX.saturating_sub(cert.tbs_certificate.raw_serial().len())
            + signature_padding(cert.signature_value.data.len())
    })
}

/// [`signature_padding`] for every ECDSA signature in a task `header`: a secure round's key bindings and their
/// certificates.
fn task_padding(header: &TaskHeader) -> usize {
    match &header.assignment {
        Assignment::Train(settings) => settings
            .secure
            .iter()
            .flat_map(|s| &s.bindings)
            .map(|b| signature_padding(b.signature.len()) + certificate_padding(&b.certificate_der))
            .sum(),
        _ => 0,
    }
}

/// A node's link to a coordinator in the same process. The node is authenticated as `peer`, as mutual TLS would
/// authenticate it by its certificate. In real time ([`MemoryLink::new`]) every call reaches the core at once
/// and long polls wait as over gRPC; in virtual time ([`MemoryLink::simulated`]) every call goes through a
/// [`Network`], which delivers it at the virtual time the node's [`Profile`] says it arrives.
#[derive(Debug)]
pub struct MemoryLink {
    host: Arc<Host>,
    peer: Peer,
    simulated: Option<SimulatedNode>,
}

impl MemoryLink {
    /// A real-time link for node `name`, whose certificate (for its key binding) is `certificate_der`.
    pub fn new(host: Arc<Host>, name: &str, certificate_der: Option<Vec<u8>>) -> Self {
        Self { host, peer: Peer { name: NodeName::from(name), certificate_der }, simulated: None }
    }

    /// A virtual-time link through `network`, on which this node is number `node`.
    pub(crate) fn simulated(
        host: Arc<Host>,
        name: &str,
        certificate_der: Option<Vec<u8>>,
        node: SimulatedNode,
    ) -> Self {
        Self { host, peer: Peer { name: NodeName::from(name), certificate_der }, simulated: Some(node) }
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        if let Some(node) = &self.simulated {
            node.network.leave(node.index);
        }
    }
}

/// What a simulated node's link did with a message the coordinator did not act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Missed {
    /// Lost: the node dropped out of the round.
    Dropped,
    /// Refused as late: the round (or its stage) had closed.
    Late,
}

/// Every simulated node's missed messages: the round, the node's index and what happened.
pub(crate) type Misses = Arc<Mutex<Vec<(Round, usize, Missed)>>>;

/// The kinds of message, for the cost model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Task,
    Upload,
    Decline,
    Report,
    Shares,
    FetchShares,
    Partial,
}

impl Kind {
    /// Whether the node sends it before its local work (a decline, or key shares: the node shares first, then
    /// trains), rather than after.
    fn before_work(self) -> bool {
        matches!(self, Self::Decline | Self::Shares)
    }
}

/// A node's place on the virtual network: its clock, its machine, and its dropout draws.
pub(crate) struct SimulatedNode {
    network: Arc<Network>,
    index: usize,
    profile: Profile,
    train_rows: usize,
    holdout_rows: usize,
    dropout_rate: f64,
    /// How long a dropped node stays offline: one round deadline.
    offline: Duration,
    rng: ChaCha20Rng,
    misses: Misses,
    /// The node's own virtual time: when its last answer reached it.
    clock: Duration,
    /// When its current local work is done.
    busy_until: Duration,
    /// The message at which the node drops out of the current round, if it does.
    drop_at: Option<(Round, Kind)>,
}

impl std::fmt::Debug for SimulatedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedNode").field("index", &self.index).field("clock", &self.clock).finish_non_exhaustive()
    }
}

impl SimulatedNode {
    /// A node on `network` that has done nothing yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        network: Arc<Network>,
        index: usize,
        profile: Profile,
        (train_rows, holdout_rows): (usize, usize),
        dropout_rate: f64,
        offline: Duration,
        rng: ChaCha20Rng,
        misses: Misses,
    ) -> Self {
        Self {
            network,
            index,
            profile,
            train_rows,
            holdout_rows,
            dropout_rate,
            offline,
            rng,
            misses,
            clock: Duration::ZERO,
            busy_until: Duration::ZERO,
            drop_at: None,
        }
    }

    /// The node got `header`: its local work starts now, and a training task may be one it drops out of.
    fn assigned(&mut self, header: &TaskHeader) {
        let work = match &header.assignment {
            Assignment::Train(settings) => {
                self.drop_at = None;
                if self.dropout_rate > 0.0 && self.rng.random_bool(self.dropout_rate) {
                    let secure = settings.secure.is_some();
                    let kind = if secure && self.rng.random_bool(0.5) { Kind::Partial } else { Kind::Upload };
                    self.drop_at = Some((header.round.round, kind));
                }
                self.profile.training(self.train_rows, settings.local_epochs)
            }
            Assignment::Evaluate => self.profile.evaluation(self.holdout_rows),
            Assignment::Wait | Assignment::Decrypt(_) | Assignment::Finished => Duration::ZERO,
        };
        self.busy_until = self.clock + work;
    }

    fn record(&self, round: Round, missed: Missed) {
        if let Ok(mut misses) = self.misses.lock() {
            misses.push((round, self.index, missed));
        }
    }

    /// Carries one message of `bytes` to the core at its virtual arrival time and brings the answer back.
    async fn deliver<T: Send + 'static>(
        &mut self,
        host: &Arc<Host>,
        (kind, round, bytes): (Kind, Round, usize),
        mut ask: impl FnMut(&mut Federation) -> Result<(T, bool), Refusal> + Send + 'static,
    ) -> Result<Result<T, Refusal>, ClientError> {
        let gone = |e: crate::network::Gone| ClientError::Unreachable { url: URL.into(), message: e.to_string() };
        let sent = if kind.before_work() { self.clock } else { self.clock.max(self.busy_until) };
        if self.drop_at == Some((round, kind)) {
            // Lost on the way: the node is offline until one deadline later, then comes back.
            self.drop_at = None;
            self.record(round, Missed::Dropped);
            let (_, back) = self.network.send(self.index, sent + self.offline, |_| Some(())).await.map_err(gone)?;
            // The network counts on the node's next message coming no sooner than a round trip after `back`.
            self.clock = back + self.profile.transfer(SMALL_MESSAGE_BYTES);
            return Err(ClientError::Late(format!("simulated dropout: offline for round {round}")));
        }
        let host = host.clone();
        let ask = move |_: &Host| match host.with_federation(&mut ask) {
            Ok((answer, true)) => Some(Ok(answer)),
            Ok((_, false)) => None,
            Err(refused) => Some(Err(refused)),
        };
        let at = sent + self.profile.transfer(bytes);
        let (answer, answered) = self.network.send(self.index, at, ask).await.map_err(gone)?;
        self.clock = answered + self.profile.transfer(SMALL_MESSAGE_BYTES);
        Ok(answer)
    }

    /// The node received `bytes` more than a small answer (a model, key shares).
    fn received(&mut self, bytes: usize) {
        self.clock += self.profile.transfer(bytes).saturating_sub(self.profile.latency);
    }
}

/// A message after a trip through its protobuf encoding, with its size on the wire.
fn wire<P: Message + Default>(message: P) -> Result<(P, usize), ClientError> {
    let bytes = message.encode_to_vec();
    let decoded = P::decode(bytes.as_slice()).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((decoded, bytes.len()))
}

/// A coordinator's refusal as the node sees it over any transport.
fn refused(e: &Refusal) -> ClientError {
    refusal(&status_of(e), URL)
}

/// A message the coordinator cannot decode, as the node sees it over any transport.
fn undecodable(e: ProtocolError) -> ClientError {
    refusal(&tonic::Status::from(e), URL)
}

/// Checks that `body` has the `expected` length the core worked out from its header, as a gRPC stream's
/// reassembly does.
fn exact_body(expected: usize, body: &[u8]) -> Result<(), BodyError> {
    match body.len() {
        n if n > expected => Err(BodyError::TooLong { expected }),
        n if n < expected => Err(BodyError::TooShort { expected, actual: n }),
        _ => Ok(()),
    }
}

/// Reads a header and its body from `messages` after their trip through the wire; with their wire size.
async fn reassemble<C>(
    messages: Vec<C>,
    bytes_of: impl FnOnce(&C::Header) -> Result<usize, ClientError>,
) -> Result<(C::Header, Vec<u8>, usize), ClientError>
where
    C: Chunked + Message + Default,
{
    let mut size = 0;
    let mut wired = Vec::with_capacity(messages.len());
    for message in messages {
        wired.push(wire(message).map(|(m, bytes)| {
            size += bytes;
            m
        }));
    }
    let mut s = tokio_stream::iter(wired);
    let header = read_header(&mut s).await?;
    let bytes = bytes_of(&header)?;
    let body = read_body(&mut s, bytes).await?;
    Ok((header, body, size))
}

impl MemoryLink {
    /// Carries a message (its kind, round and wire size) to the core, where `ask` answers it with whether the
    /// answer is final: a long poll asks again after each change while it is not.
    async fn deliver<T: Send + 'static>(
        &mut self,
        message: (Kind, Round, usize),
        ask: impl FnMut(&mut Federation) -> Result<(T, bool), Refusal> + Send + 'static,
    ) -> Result<T, ClientError> {
        let round = message.1;
        let answer = match &mut self.simulated {
            None => self.host.long_poll(ask).await,
            Some(node) => node.deliver(&self.host, message, ask).await?,
        };
        answer.map_err(|e| {
            let e = refused(&e);
            if let (ClientError::Late(_), Some(node)) = (&e, &self.simulated)
                && matches!(message.0, Kind::Upload | Kind::Partial | Kind::Shares)
            {
                node.record(round, Missed::Late);
            }
            e
        })
    }

    /// A one-shot call: the core's answer is final.
    async fn call<T: Send + 'static>(
        &mut self,
        message: (Kind, Round, usize),
        mut ask: impl FnMut(&mut Federation, &Peer) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, ClientError> {
        let peer = self.peer.clone();
        self.deliver(message, move |f| ask(f, &peer).map(|answer| (answer, true))).await
    }
}

impl CoordinatorLink for MemoryLink {
    async fn join(&mut self, request: JoinRequest) -> Result<JoinResponse, ClientError> {
        let padding = signature_padding(request.keys.binding_signature.len());
        let (wired, bytes) = wire(proto::JoinRequest::from(request))?;
        let (request, bytes) = (JoinRequest::try_from(wired).map_err(undecodable)?, bytes + padding);
        let response = self.call((Kind::Join, Round(0), bytes), move |f, peer| f.join(peer, request.clone())).await?;
        JoinResponse::try_from(wire(proto::JoinResponse::from(response))?.0)
            .map_err(|e| ClientError::Protocol(format!("unusable federation plan: {e}")))
    }

    async fn fetch_task(&mut self, last_seen: RoundRef) -> Result<(TaskHeader, Vec<f32>), ClientError> {
        let (wired, bytes) = wire(proto::RoundRef::from(last_seen))?;
        let last_seen = RoundRef::from(wired);
        let peer = self.peer.clone();
        let (header, model) = self
            .deliver((Kind::Task, last_seen.round, bytes), move |f| {
                let (header, model) = f.task(&peer, Some(&last_seen))?;
                let ready = header.assignment != Assignment::Wait;
                Ok(((header, model), ready))
            })
            .await?;
        let messages = stream_messages::<proto::TaskChunk>(header.into(), &codec::f32s_to_le(&model));
        let mut decoded = None;
        let (_, body, size) = reassemble(messages, |h: &proto::TaskHeader| {
            let header = TaskHeader::try_from(h.clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let bytes =
                codec::body_bytes(header.parameter_count, 4).map_err(|e| ClientError::Protocol(e.to_string()))?;
            decoded = Some(header);
            Ok(bytes)
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("task stream without a header".into()))?;
        let model = task_model(&header, &body)?;
        if let Some(node) = &mut self.simulated {
            node.received(size + task_padding(&header));
            node.assigned(&header);
        }
        Ok((header, model))
    }

    async fn upload(&mut self, header: UpdateHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::UpdateChunk>(header.into(), &body);
        let mut decoded = None;
        let (_, body, size) = reassemble(messages, |h: &proto::UpdateHeader| {
            decoded = Some(UpdateHeader::try_from(h.clone()).map_err(undecodable)?);
            Ok(body.len())
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("upload without a header".into()))?;
        let round = header.round.round;
        self.call((Kind::Upload, round, size), move |f, peer| {
            exact_body(f.check_upload(peer, &header)?, &body)?;
            f.upload(peer, &header, &body)
        })
        .await
    }

    async fn decline(&mut self, decline: Decline) -> Result<(), ClientError> {
        let (wired, bytes) = wire(proto::DeclineRequest::from(decline))?;
        let decline = Decline::try_from(wired).map_err(undecodable)?;
        let round = decline.round.round;
        self.call((Kind::Decline, round, bytes), move |f, peer| f.decline(peer, decline.clone())).await
    }

    async fn report(&mut self, report: EvaluationReport) -> Result<(), ClientError> {
        let (wired, bytes) = wire(proto::EvaluationReport::from(report))?;
        let report = EvaluationReport::try_from(wired).map_err(undecodable)?;
        let round = report.round.round;
        self.call((Kind::Report, round, bytes), move |f, peer| f.report(peer, report.clone())).await
    }

    async fn submit_shares(&mut self, shares: ShareSubmission) -> Result<(), ClientError> {
        let (wired, bytes) = wire(proto::ShareSubmission::from(shares))?;
        let shares = ShareSubmission::try_from(wired).map_err(undecodable)?;
        let round = shares.round.round;
        self.call((Kind::Shares, round, bytes), move |f, peer| f.submit_shares(peer, shares.clone())).await
    }

    async fn fetch_shares(&mut self, round: RoundRef) -> Result<ShareBundle, ClientError> {
        let (wired, bytes) = wire(proto::RoundRef::from(round))?;
        let round = RoundRef::from(wired);
        let peer = self.peer.clone();
        let asked = round.clone();
        let bundle = self
            .deliver((Kind::FetchShares, round.round, bytes), move |f| {
                let bundle = f.shares_for(&peer, &asked)?;
                let ready = bundle.ready;
                Ok((bundle, ready))
            })
            .await?;
        let (bundle, size) = wire(bundle.into_proto(round))?;
        if let Some(node) = &mut self.simulated {
            node.received(size);
        }
        Ok(ShareBundle::from(bundle))
    }

    async fn submit_partial(&mut self, header: PartialHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::PartialChunk>(header.into(), &body);
        let mut decoded = None;
        let (_, body, size) = reassemble(messages, |h: &proto::PartialHeader| {
            decoded = Some(PartialHeader::try_from(h.clone()).map_err(undecodable)?);
            Ok(body.len())
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("partial decryption without a header".into()))?;
        let round = header.round.round;
        self.call((Kind::Partial, round, size), move |f, peer| {
            exact_body(f.check_partial(peer, &header)?, &body)?;
            f.partial(peer, &header, &body)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_is_charged_at_its_longest_signature() {
        let dir = tempfile::tempdir().unwrap();
        cohort_core::pki::local_federation(dir.path(), "sizes").unwrap();
        let mut charged = std::collections::BTreeSet::new();
        let mut actual = std::collections::BTreeSet::new();
        for i in 10..34 {
            let files = cohort_core::pki::local_client(dir.path(), &format!("node-{i}")).unwrap();
            let der = cohort_core::tls::load_certs(&files.cert).unwrap().remove(0).to_vec();
            actual.insert(der.len());
            charged.insert(der.len() + certificate_padding(&der));
        }
        // Names of one length give certificates of one length but for the CA's signature.
        assert_eq!(charged.len(), 1, "charged {charged:?}, actual {actual:?}");
        assert!(actual.len() > 1, "24 signatures of one length: {actual:?}");
        assert!(actual.iter().all(|a| charged.first().is_some_and(|c| c - a <= 3)), "{charged:?} {actual:?}");
        assert_eq!(certificate_padding(b"not a certificate"), 0);
    }

    #[test]
    fn short_signatures_are_charged_as_long_ones() {
        assert_eq!(signature_padding(70), 2);
        assert_eq!(signature_padding(72), 0);
        assert_eq!(signature_padding(80), 0);
    }
}
