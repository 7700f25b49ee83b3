//! The gRPC adapter: authenticates each call by its client certificate, decodes it into the typed protocol,
//! hands it to the [`Federation`] core through its [`Host`], and encodes the answer. No round logic
//! and no policy live here.

use crate::federation::{Federation, Peer, Refusal};
use crate::host::Host;
use crate::round::RoundError;
use crate::secure::SecureError;
use cohort_core::admission::Admission;
use cohort_core::model::parameters_to_bytes;
use cohort_core::protocol::codec::{read_body, read_header, stream_messages};
use cohort_core::protocol::{
    Decline, EvaluationReport, JoinRequest, PartialHeader, ProtocolError, RoundRef, ShareSubmission, UpdateHeader,
    proto,
};
use cohort_core::tls::peer_identity;
use cohort_core::untrusted::UntrustedUpTo;

/// The most characters of an error text that quotes a peer's message, in a log line or a status.
const MAX_ERROR_CHARS: usize = 1000;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Maps a refused message to a gRPC status carrying the typed error's text.
/// The text is escaped and bounded ([`UntrustedUpTo`]): it may quote what the peer sent.
pub fn status_of(err: &Refusal) -> Status {
    let msg = UntrustedUpTo(&err.to_string(), MAX_ERROR_CHARS).to_string();
    let round = match err {
        Refusal::Round(round) => round,
        Refusal::Message(_) | Refusal::Binding(_) | Refusal::Ledger(_) => return Status::invalid_argument(msg),
    };
    match round {
        RoundError::NotInRoster(_) => Status::permission_denied(msg),
        RoundError::WrongFederation { .. } => Status::invalid_argument(msg),
        RoundError::NotJoined(_) => Status::unauthenticated(msg),
        RoundError::BadUpdate(_) | RoundError::BadReport(_) | RoundError::TooLarge(_) => Status::invalid_argument(msg),
        RoundError::Secure(
            SecureError::BadShares(_)
            | SecureError::BadBody(_)
            | SecureError::BadPartial(_)
            | SecureError::PlaintextRefused
            | SecureError::MissingKeys(_)
            | SecureError::BadConsent(_),
        ) => Status::invalid_argument(msg),
        RoundError::Secure(SecureError::Duplicate { .. }) | RoundError::Duplicate(_) => Status::already_exists(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct FederationService {
    host: Arc<Host>,
    /// The admission policy whose revocation list every call is checked against, so a certificate revoked while
    /// its connection is open is refused from its next call on (None: only the handshake checks).
    admission: Option<Arc<Admission>>,
    /// How long one streamed upload may take: the round deadline, so a stalled sender never holds a stream
    /// (or the coordinator's shutdown) longer than a round waits for it.
    stream_deadline: Duration,
}

fn ack() -> Response<proto::Ack> {
    Response::new(proto::Ack { accepted: true, message: String::new() })
}

impl FederationService {
    /// A service over the hosted core.
    pub fn new(host: Arc<Host>) -> Self {
        let secs = host.with_federation(|f| f.plan().training.round_deadline_secs);
        Self { host, admission: None, stream_deadline: Duration::from_secs(secs.max(1)) }
    }

    /// Checks every call's certificate against `admission`'s revocation list (re-read when its file changes).
    #[must_use]
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Reads a whole streamed message (header and body) within the stream deadline.
    async fn within<T>(
        &self,
        peer: &Peer,
        what: &str,
        read: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::time::timeout(self.stream_deadline, read).await.unwrap_or_else(|_| {
            tracing::warn!(node = %peer.name, "refused {what}: the stream stalled for {} s", self.stream_deadline.as_secs());
            Err(Status::deadline_exceeded(format!(
                "the {what} did not arrive complete within {} s (the round deadline)",
                self.stream_deadline.as_secs()
            )))
        })
    }

    /// The caller, from its verified certificate.
    fn peer<T>(&self, request: &Request<T>) -> Result<Peer, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::permission_denied("no client certificate: connect with mutual TLS"))?;
        let (name, _role) = peer_identity(&certs).map_err(|e| Status::permission_denied(e.to_string()))?;
        if let (Some(admission), Some(der)) = (&self.admission, certs.first())
            && let Some(entry) = admission.revocations().revokes(name.as_str(), der)
        {
            let said = format!("the certificate of {name} is revoked (revocation list entry {entry})");
            tracing::warn!(node = %name, "refused a call on an open connection: {said}");
            return Err(Status::permission_denied(said));
        }
        Ok(Peer { name, certificate_der: certs.first().map(|c| c.to_vec()) })
    }

    /// Calls the core for `peer`, logging and mapping a refusal.
    fn call<T>(
        &self,
        peer: &Peer,
        what: &str,
        f: impl FnOnce(&mut Federation) -> Result<T, Refusal>,
    ) -> Result<T, Status> {
        self.host.with_federation(f).map_err(|e| refused(peer, what, &e))
    }

    /// Decodes a message into the typed protocol.
    fn decode<P, T: TryFrom<P, Error = ProtocolError>>(&self, peer: &Peer, what: &str, p: P) -> Result<T, Status> {
        T::try_from(p).map_err(|e| {
            let text = UntrustedUpTo(&e.to_string(), MAX_ERROR_CHARS).to_string();
            tracing::warn!(node = %peer.name, "refused {what}: {text}");
            Status::invalid_argument(text)
        })
    }
}

/// Logs a refusal and maps it to its status.
fn refused(peer: &Peer, what: &str, e: &Refusal) -> Status {
    let status = status_of(e);
    tracing::warn!(node = %peer.name, "refused {what}: {}", status.message());
    status
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<proto::TaskChunk, Status>> + Send>>;

#[tonic::async_trait]
impl proto::federation_server::Federation for FederationService {
    async fn join(&self, request: Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        let peer = self.peer(&request)?;
        let join: JoinRequest = self.decode(&peer, "join", request.into_inner())?;
        let response = self.call(&peer, "join", |f| f.join(&peer, join))?;
        Ok(Response::new(response.into()))
    }

    type FetchTaskStream = TaskStream;

    async fn fetch_task(&self, request: Request<proto::TaskRequest>) -> Result<Response<TaskStream>, Status> {
        let peer = self.peer(&request)?;
        let last_seen: Option<RoundRef> = request.into_inner().last_seen.map(Into::into);
        let (header, model) =
            self.host.next_task(&peer, last_seen.as_ref()).await.map_err(|e| refused(&peer, "task request", &e))?;
        let messages = stream_messages::<proto::TaskChunk>(header.into(), &parameters_to_bytes(&model));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))))
    }

    async fn upload_update(
        &self,
        request: Request<Streaming<proto::UpdateChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        let peer = self.peer(&request)?;
        let mut stream = request.into_inner();
        let (header, body) = self
            .within(&peer, "update", async {
                let header: UpdateHeader = self.decode(&peer, "update", read_header(&mut stream).await?)?;
                // Refuse stale, duplicate or unselected uploads before reading the body.
                let bytes = self.call(&peer, "update", |f| f.check_upload(&peer, &header))?;
                Ok((header, read_body(&mut stream, bytes).await?))
            })
            .await?;
        self.call(&peer, "update", |f| f.upload(&peer, &header, &body))?;
        Ok(ack())
    }

    async fn decline(&self, request: Request<proto::DeclineRequest>) -> Result<Response<proto::Ack>, Status> {
        let peer = self.peer(&request)?;
        let decline: Decline = self.decode(&peer, "decline", request.into_inner())?;
        self.call(&peer, "decline", |f| f.decline(&peer, decline))?;
        Ok(ack())
    }

    async fn report_evaluation(
        &self,
        request: Request<proto::EvaluationReport>,
    ) -> Result<Response<proto::Ack>, Status> {
        let peer = self.peer(&request)?;
        let report: EvaluationReport = self.decode(&peer, "evaluation", request.into_inner())?;
        self.call(&peer, "evaluation", |f| f.report(&peer, report))?;
        Ok(ack())
    }

    async fn submit_shares(&self, request: Request<proto::ShareSubmission>) -> Result<Response<proto::Ack>, Status> {
        let peer = self.peer(&request)?;
        let shares: ShareSubmission = self.decode(&peer, "key shares", request.into_inner())?;
        self.call(&peer, "key shares", |f| f.submit_shares(&peer, shares))?;
        Ok(ack())
    }

    async fn fetch_shares(
        &self,
        request: Request<proto::ShareRequest>,
    ) -> Result<Response<proto::ShareBundle>, Status> {
        let peer = self.peer(&request)?;
        let round: RoundRef = request.into_inner().round.ok_or(ProtocolError::Missing("round reference"))?.into();
        let bundle = self.host.shares(&peer, &round).await.map_err(|e| refused(&peer, "share request", &e))?;
        Ok(Response::new(bundle.into_proto(round)))
    }

    async fn submit_partial_decryption(
        &self,
        request: Request<Streaming<proto::PartialChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        let peer = self.peer(&request)?;
        let mut stream = request.into_inner();
        let (header, body) = self
            .within(&peer, "partial decryption", async {
                let header: PartialHeader =
                    self.decode(&peer, "partial decryption", read_header(&mut stream).await?)?;
                let bytes = self.call(&peer, "partial decryption", |f| f.check_partial(&peer, &header))?;
                Ok((header, read_body(&mut stream, bytes).await?))
            })
            .await?;
        self.call(&peer, "partial decryption", |f| f.partial(&peer, &header, &body))?;
        Ok(ack())
    }
}
