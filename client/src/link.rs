//! The node's link to the coordinator: [`CoordinatorLink`], the calls of the federation protocol in typed
//! messages, and [`GrpcLink`], its implementation over gRPC and mutual TLS.
//!
//! The node's loop ([`crate::node`]) is generic over the link, so it runs unchanged over any transport that
//! carries the typed protocol.

use crate::node::ClientError;
use cohort_core::config::ClientConfig;
use cohort_core::model::parameters_sha256;
use cohort_core::protocol::codec::{self, MAX_MESSAGE_BYTES, read_body, read_header, stream_messages};
use cohort_core::protocol::{
    Decline, EvaluationReport, JoinRequest, JoinResponse, PartialHeader, RoundRef, ShareBundle, ShareSubmission,
    TaskHeader, UpdateHeader, proto,
};
use cohort_core::tls::{Preflight, client_tls, diagnose_client_failure, error_chain_text, preflight};
use proto::federation_client::FederationClient;
use std::future::Future;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The calls a node makes to its coordinator, in the typed protocol. Every call either completes or returns a
/// [`ClientError`] that says whose fault it was.
pub trait CoordinatorLink: Send {
    /// Joins (or re-joins) the federation.
    fn join(&mut self, request: JoinRequest) -> impl Future<Output = Result<JoinResponse, ClientError>> + Send;

    /// Fetches the next task and the model attached to it (empty when none is), checked against the header's
    /// parameter count and digest.
    fn fetch_task(
        &mut self,
        last_seen: RoundRef,
    ) -> impl Future<Output = Result<(TaskHeader, Vec<f32>), ClientError>> + Send;

    /// Uploads an update: its header and its encoded body.
    fn upload(&mut self, header: UpdateHeader, body: Vec<u8>) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Declines a round.
    fn decline(&mut self, decline: Decline) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Reports an evaluation.
    fn report(&mut self, report: EvaluationReport) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Sends sealed key shares and the consent to the round.
    fn submit_shares(&mut self, shares: ShareSubmission) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Fetches the key shares addressed to this node; not [`ShareBundle::ready`] while distribution is open.
    fn fetch_shares(&mut self, round: RoundRef) -> impl Future<Output = Result<ShareBundle, ClientError>> + Send;

    /// Sends a partial decryption: its header and its little-endian `u64` values.
    fn submit_partial(
        &mut self,
        header: PartialHeader,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// Decodes the model that follows a task header, checking its length and digest.
///
/// # Errors
/// [`ClientError::Protocol`] for a body that does not match its header.
pub fn task_model(header: &TaskHeader, bytes: &[u8]) -> Result<Vec<f32>, ClientError> {
    let model = codec::f32s_from_le(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if model.len() as u64 != header.parameter_count {
        return Err(ClientError::Protocol("model length does not match its header".into()));
    }
    if !model.is_empty() && parameters_sha256(&model) != header.model_sha256 {
        return Err(ClientError::Protocol("model digest does not match its header".into()));
    }
    Ok(model)
}

/// What a status from the coordinator at `url` means for the node, on any transport: refused (not in the
/// roster), no longer joined (the coordinator restarted), unreachable, or a protocol error naming the status code
/// (a round that moved on is `FailedPrecondition`).
pub fn refusal(status: &tonic::Status, url: &str) -> ClientError {
    match status.code() {
        tonic::Code::PermissionDenied => ClientError::Refused(status.message().to_owned()),
        tonic::Code::Unauthenticated => ClientError::NotJoined(status.message().to_owned()),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => ClientError::Late(status.message().to_owned()),
        tonic::Code::Unavailable => ClientError::Unreachable { url: url.to_owned(), message: error_chain_text(status) },
        _ => ClientError::Protocol(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn protocol_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// The longest pause between two attempts to reach the coordinator.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// A connection to the coordinator over gRPC and mutual TLS.
#[derive(Debug)]
pub struct GrpcLink {
    client: FederationClient<Channel>,
    config: ClientConfig,
}

impl GrpcLink {
    /// Connects over mutual TLS, retrying for up to `patience` while the coordinator is not listening yet.
    ///
    /// # Errors
    /// [`ClientError`] for unreadable TLS files or an unreachable coordinator.
    pub async fn connect(config: &ClientConfig, patience: Duration) -> Result<Self, ClientError> {
        config.coordinator.check_url().map_err(|e| ClientError::Local(e.to_string()))?;
        let tls = client_tls(&config.tls.files(), &config.coordinator.tls_name())
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let url = config.coordinator.url.clone();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Local(format!("invalid coordinator url {url:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| ClientError::Local(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30));
        let give_up = tokio::time::Instant::now() + patience;
        let authority = url.split("://").nth(1).unwrap_or(&url).split('/').next().unwrap_or_default().to_owned();
        // Said at once, then retried with a visible backoff (0.2 s doubling to 5 s) until `patience` runs out.
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            let err = match preflight(&authority, &config.coordinator.tls_name(), &config.tls.files())
                .await
                .map_err(|e| ClientError::Local(e.to_string()))?
            {
                Preflight::Accepted => break,
                // A TLS alert is the coordinator's answer to this node's certificate: final, and explained.
                Preflight::Refused(err) => match diagnose_client_failure(&err, &config.tls.cert, &config.tls.ca_cert) {
                    Some(msg) => return Err(ClientError::TlsRefused(msg)),
                    // A reset or a close without an alert is a coordinator that died or restarted mid-handshake
                    // (or a connection cap): retried like an unreachable one, and reported as such if it lasts.
                    None if tokio::time::Instant::now() >= give_up => {
                        return Err(ClientError::TlsRefused(format!(
                            "the coordinator closed the TLS connection: {err}"
                        )));
                    }
                    None => err,
                },
                Preflight::Unreachable(err) if tokio::time::Instant::now() >= give_up => {
                    return Err(ClientError::Unreachable { url, message: err.to_string() });
                }
                Preflight::Unreachable(err) => err,
            };
            attempt += 1;
            let left = give_up.saturating_duration_since(tokio::time::Instant::now()).as_secs();
            if attempt == 1 {
                tracing::warn!(node = %config.name, "cannot reach the coordinator at {url} ({err}); retrying for up to {left} s");
            } else if delay < MAX_CONNECT_BACKOFF || attempt.is_multiple_of(6) {
                tracing::info!(node = %config.name, attempt, "still cannot reach {url} ({err}); next try in {:.1} s, giving up in {left} s", delay.as_secs_f64());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_CONNECT_BACKOFF);
        }
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(err) => {
                    if let Some(msg) = diagnose_client_failure(&err, &config.tls.cert, &config.tls.ca_cert) {
                        return Err(ClientError::TlsRefused(msg));
                    }
                    if tokio::time::Instant::now() >= give_up {
                        return Err(ClientError::Unreachable { url, message: error_chain_text(&err) });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let client = FederationClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client, config: config.clone() })
    }

    fn map_status(&self, status: tonic::Status) -> ClientError {
        if let Some(msg) = diagnose_client_failure(&status, &self.config.tls.cert, &self.config.tls.ca_cert) {
            return ClientError::TlsRefused(msg);
        }
        refusal(&status, &self.config.coordinator.url)
    }
}

impl CoordinatorLink for GrpcLink {
    async fn join(&mut self, request: JoinRequest) -> Result<JoinResponse, ClientError> {
        let response = self.client.join(proto::JoinRequest::from(request)).await.map_err(|s| self.map_status(s))?;
        JoinResponse::try_from(response.into_inner())
            .map_err(|e| ClientError::Protocol(format!("unusable federation plan: {e}")))
    }

    async fn fetch_task(&mut self, last_seen: RoundRef) -> Result<(TaskHeader, Vec<f32>), ClientError> {
        let request = proto::TaskRequest { last_seen: Some(last_seen.into()) };
        let mut stream = self.client.fetch_task(request).await.map_err(|s| self.map_status(s))?.into_inner();
        let header = read_header(&mut stream).await.map_err(|s| self.map_status(s))?;
        let header = TaskHeader::try_from(header).map_err(protocol_error)?;
        let bytes = codec::body_bytes(header.parameter_count, 4).map_err(protocol_error)?;
        let body = read_body(&mut stream, bytes).await.map_err(|s| self.map_status(s))?;
        let model = task_model(&header, &body)?;
        Ok((header, model))
    }

    async fn upload(&mut self, header: UpdateHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::UpdateChunk>(header.into(), &body);
        self.client.upload_update(tokio_stream::iter(messages)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn decline(&mut self, decline: Decline) -> Result<(), ClientError> {
        self.client.decline(proto::DeclineRequest::from(decline)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn report(&mut self, report: EvaluationReport) -> Result<(), ClientError> {
        self.client.report_evaluation(proto::EvaluationReport::from(report)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn submit_shares(&mut self, shares: ShareSubmission) -> Result<(), ClientError> {
        self.client.submit_shares(proto::ShareSubmission::from(shares)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn fetch_shares(&mut self, round: RoundRef) -> Result<ShareBundle, ClientError> {
        let request = proto::ShareRequest { round: Some(round.into()) };
        let bundle = self.client.fetch_shares(request).await.map_err(|s| self.map_status(s))?;
        Ok(ShareBundle::from(bundle.into_inner()))
    }

    async fn submit_partial(&mut self, header: PartialHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::PartialChunk>(header.into(), &body);
        self.client.submit_partial_decryption(tokio_stream::iter(messages)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }
}
