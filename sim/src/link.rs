//! The in-memory transport.

use cohort_client::link::{CoordinatorLink, refusal, task_model};
use cohort_client::node::ClientError;
use cohort_coordinator::federation::{Peer, Refusal};
use cohort_coordinator::host::Host;
use cohort_coordinator::service::status_of;
use cohort_core::NodeName;
use cohort_core::protocol::codec::{self, Chunked, read_body, read_header, stream_messages};
use cohort_core::protocol::{
    Decline, EvaluationReport, JoinRequest, JoinResponse, PartialHeader, ProtocolError, RoundRef, ShareBundle,
    ShareSubmission, TaskHeader, UpdateHeader, proto,
};
use prost::Message;
use std::sync::Arc;

/// Where the in-memory coordinator "lives", for error messages.
const URL: &str = "memory://coordinator";

/// A node's link to a coordinator in the same process. The node is authenticated as `peer`, as mutual TLS would
/// authenticate it by its certificate.
#[derive(Debug, Clone)]
pub struct MemoryLink {
    host: Arc<Host>,
    peer: Peer,
}

impl MemoryLink {
    /// A link for node `name`, whose certificate (for its key binding) is `certificate_der`.
    pub fn new(host: Arc<Host>, name: &str, certificate_der: Option<Vec<u8>>) -> Self {
        Self { host, peer: Peer { name: NodeName::from(name), certificate_der } }
    }
}

/// A message after a trip through its protobuf encoding.
fn wire<P: Message + Default>(message: P) -> Result<P, ClientError> {
    P::decode(message.encode_to_vec().as_slice()).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// A coordinator's refusal as the node sees it over any transport.
fn refused(e: &Refusal) -> ClientError {
    refusal(&status_of(e), URL)
}

/// A message the coordinator cannot decode, as the node sees it over any transport.
fn undecodable(e: ProtocolError) -> ClientError {
    refusal(&tonic::Status::from(e), URL)
}

/// Reads a header and its body from `messages` after their trip through the wire.
async fn reassemble<C>(
    messages: Vec<C>,
    bytes_of: impl FnOnce(&C::Header) -> Result<usize, ClientError>,
) -> Result<(C::Header, Vec<u8>), ClientError>
where
    C: Chunked + Message + Default,
{
    let wired: Vec<Result<C, ClientError>> = messages.into_iter().map(wire).collect();
    let mut s = tokio_stream::iter(wired);
    let header = read_header(&mut s).await?;
    let bytes = bytes_of(&header)?;
    let body = read_body(&mut s, bytes).await?;
    Ok((header, body))
}

impl CoordinatorLink for MemoryLink {
    async fn join(&mut self, request: JoinRequest) -> Result<JoinResponse, ClientError> {
        let request = JoinRequest::try_from(wire(proto::JoinRequest::from(request))?).map_err(undecodable)?;
        let response = self.host.with_federation(|f| f.join(&self.peer, request)).map_err(|e| refused(&e))?;
        JoinResponse::try_from(wire(proto::JoinResponse::from(response))?)
            .map_err(|e| ClientError::Protocol(format!("unusable federation plan: {e}")))
    }

    async fn fetch_task(&mut self, last_seen: RoundRef) -> Result<(TaskHeader, Vec<f32>), ClientError> {
        let last_seen = RoundRef::from(wire(proto::RoundRef::from(last_seen))?);
        let (header, model) = self.host.next_task(&self.peer, Some(&last_seen)).await.map_err(|e| refused(&e))?;
        let messages = stream_messages::<proto::TaskChunk>(header.into(), &codec::f32s_to_le(&model));
        let mut decoded = None;
        let (_, body) = reassemble(messages, |h: &proto::TaskHeader| {
            let header = TaskHeader::try_from(h.clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let bytes =
                codec::body_bytes(header.parameter_count, 4).map_err(|e| ClientError::Protocol(e.to_string()))?;
            decoded = Some(header);
            Ok(bytes)
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("task stream without a header".into()))?;
        let model = task_model(&header, &body)?;
        Ok((header, model))
    }

    async fn upload(&mut self, header: UpdateHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::UpdateChunk>(header.into(), &body);
        let host = self.host.clone();
        let peer = self.peer.clone();
        let mut decoded = None;
        let (_, body) = reassemble(messages, |h: &proto::UpdateHeader| {
            let header = UpdateHeader::try_from(h.clone()).map_err(undecodable)?;
            let bytes = host.with_federation(|f| f.check_upload(&peer, &header)).map_err(|e| refused(&e))?;
            decoded = Some(header);
            Ok(bytes)
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("upload without a header".into()))?;
        self.host.with_federation(|f| f.upload(&self.peer, &header, &body)).map_err(|e| refused(&e))
    }

    async fn decline(&mut self, decline: Decline) -> Result<(), ClientError> {
        let decline = Decline::try_from(wire(proto::DeclineRequest::from(decline))?).map_err(undecodable)?;
        self.host.with_federation(|f| f.decline(&self.peer, decline)).map_err(|e| refused(&e))
    }

    async fn report(&mut self, report: EvaluationReport) -> Result<(), ClientError> {
        let report = EvaluationReport::try_from(wire(proto::EvaluationReport::from(report))?).map_err(undecodable)?;
        self.host.with_federation(|f| f.report(&self.peer, report)).map_err(|e| refused(&e))
    }

    async fn submit_shares(&mut self, shares: ShareSubmission) -> Result<(), ClientError> {
        let shares = ShareSubmission::try_from(wire(proto::ShareSubmission::from(shares))?).map_err(undecodable)?;
        self.host.with_federation(|f| f.submit_shares(&self.peer, shares)).map_err(|e| refused(&e))
    }

    async fn fetch_shares(&mut self, round: RoundRef) -> Result<ShareBundle, ClientError> {
        let round = RoundRef::from(wire(proto::RoundRef::from(round))?);
        let bundle = self.host.shares(&self.peer, &round).await.map_err(|e| refused(&e))?;
        Ok(ShareBundle::from(wire(bundle.into_proto(round))?))
    }

    async fn submit_partial(&mut self, header: PartialHeader, body: Vec<u8>) -> Result<(), ClientError> {
        let messages = stream_messages::<proto::PartialChunk>(header.into(), &body);
        let host = self.host.clone();
        let peer = self.peer.clone();
        let mut decoded = None;
        let (_, body) = reassemble(messages, |h: &proto::PartialHeader| {
            let header = PartialHeader::try_from(h.clone()).map_err(undecodable)?;
            let bytes = host.with_federation(|f| f.check_partial(&peer, &header)).map_err(|e| refused(&e))?;
            decoded = Some(header);
            Ok(bytes)
        })
        .await?;
        let header = decoded.ok_or_else(|| ClientError::Protocol("partial decryption without a header".into()))?;
        self.host.with_federation(|f| f.partial(&self.peer, &header, &body)).map_err(|e| refused(&e))
    }
}
