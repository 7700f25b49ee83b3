//! End-to-end over loopback mutual TLS: a coordinator that deviates is refused by the honest clients.
//!
//! The malicious coordinator is the real one with a layer around its gRPC service ([`Coordinator::serve`]) that
//! rewrites what it sends, as a compromised coordinator host could: it substitutes one participant's secure-
//! aggregation keys in the round announcement with keys it holds. Without certificate-bound keys every client
//! would then encrypt a share of its round key to the coordinator, which could rebuild that participant's key
//! and decrypt its update.

mod support;

use cohort_client::ledger::Ledger;
use cohort_client::privacy::PrivateWork;
use cohort_client::work::TrainingWork;
use cohort_coordinator::Coordinator;
use cohort_coordinator::round::Event;
use cohort_coordinator::service::FederationService;
use cohort_core::config::{PrivacySection, SecureAggregationMode, SecureAggregationSection};
use cohort_core::ledger::Mechanism;
use cohort_core::protocol::proto::{self, federation_server::Federation};
use cohort_crypto::NodeIdentity;
use std::pin::Pin;
use std::time::Duration;
use support::Fixture;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The coordinator's own service, with every training announcement rewritten to carry `victim`'s keys
/// replaced by keys of the attacker's.
#[derive(Clone)]
struct SubstituteKeys {
    inner: FederationService,
    victim: String,
    attacker: cohort_crypto::NodePublicKeys,
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<proto::TaskChunk, Status>> + Send>>;

impl SubstituteKeys {
    fn tamper(&self, mut chunk: proto::TaskChunk) -> proto::TaskChunk {
        let Some(proto::task_chunk::Body::Header(header)) = chunk.body.as_mut() else { return chunk };
        let Some(proto::task_header::Task::Train(train)) = header.task.as_mut() else { return chunk };
        let announcement = train.secure.as_mut().and_then(|s| s.announcement.as_mut());
        for p in announcement.into_iter().flat_map(|a| a.participants.iter_mut()).filter(|p| p.name == self.victim) {
            p.x25519 = self.attacker.x25519.to_vec();
            p.ed25519 = self.attacker.ed25519.to_vec();
        }
        chunk
    }
}

#[tonic::async_trait]
impl Federation for SubstituteKeys {
    async fn join(&self, r: Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        self.inner.join(r).await
    }

    type FetchTaskStream = TaskStream;

    async fn fetch_task(&self, r: Request<proto::TaskRequest>) -> Result<Response<TaskStream>, Status> {
        let stream = self.inner.fetch_task(r).await?.into_inner();
        let this = self.clone();
        Ok(Response::new(Box::pin(stream.map(move |item| item.map(|chunk| this.tamper(chunk))))))
    }

    async fn upload_update(&self, r: Request<Streaming<proto::UpdateChunk>>) -> Result<Response<proto::Ack>, Status> {
        self.inner.upload_update(r).await
    }

    async fn decline(&self, r: Request<proto::DeclineRequest>) -> Result<Response<proto::Ack>, Status> {
        self.inner.decline(r).await
    }

    async fn report_evaluation(&self, r: Request<proto::EvaluationReport>) -> Result<Response<proto::Ack>, Status> {
        self.inner.report_evaluation(r).await
    }

    async fn submit_shares(&self, r: Request<proto::ShareSubmission>) -> Result<Response<proto::Ack>, Status> {
        self.inner.submit_shares(r).await
    }

    async fn fetch_shares(&self, r: Request<proto::ShareRequest>) -> Result<Response<proto::ShareBundle>, Status> {
        self.inner.fetch_shares(r).await
    }

    async fn submit_partial_decryption(
        &self,
        r: Request<Streaming<proto::PartialChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        self.inner.submit_partial_decryption(r).await
    }
}

/// Every honest client checks the victim's announced keys against its certificate, finds them substituted and
/// declines before it shares anything; the round fails cleanly: no key holder, no upload, no new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_that_substitutes_a_participants_keys_is_refused_by_every_honest_client() {
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut fx = Fixture::new(&names, 1);
    fx.coordinator.training.min_clients = 3;
    fx.coordinator.secure_aggregation =
        SecureAggregationSection { mode: SecureAggregationMode::ThresholdRlwe, ..SecureAggregationSection::default() };
    let coordinator = Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut events = coordinator.subscribe();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let config = fx.client(name, &fx.issue(name), i, names.len(), addr);
        clients.push(tokio::spawn(async move { cohort_client::node::run(&config, &mut TrainingWork::new()).await }));
    }
    let attacker = NodeIdentity::generate().public_keys();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator.serve(
        async move {
            let _ = stop_rx.await;
        },
        move |inner| SubstituteKeys { inner, victim: "hospital-b".into(), attacker },
    ));

    let mut declined = Vec::new();
    let mut seen = Vec::new();
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(event) = events.recv().await {
            if let Event::Declined { node, reason, .. } = &event {
                declined.push((node.0.clone(), reason.clone()));
            }
            let failed = matches!(event, Event::RoundFailed { .. });
            seen.push(event);
            if failed {
                return true;
            }
        }
        false
    })
    .await;
    let _ = stop_tx.send(());
    let report = server.await.unwrap().unwrap();
    for c in clients {
        c.abort();
    }
    assert_eq!(failed, Ok(true), "the round failed: {seen:?}");
    assert_eq!(declined.len(), 3, "every client declined: {declined:?}");
    for (node, reason) in &declined {
        assert!(reason.contains("keys announced for hospital-b are not its own"), "{node}: {reason}");
    }
    assert!(
        !seen.iter().any(|e| matches!(e, Event::KeyHoldersFixed { .. } | Event::UpdateAccepted { .. })),
        "{seen:?}"
    );
    assert!(report.history.is_empty() && report.recorded.is_empty(), "no version was produced");
}

/// A hospital that requires secure aggregation meets a coordinator that runs plaintext updates: it records the
/// refusal in its ledger and exits with a message naming secure aggregation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_requires_secure_aggregation_refuses_a_plaintext_coordinator() {
    let names = ["hospital-a"];
    let fx = Fixture::new(&names, 1);
    assert_eq!(fx.coordinator.secure_aggregation.mode, SecureAggregationMode::None);
    let coordinator = Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut config = fx.client("hospital-a", &fx.issue("hospital-a"), 0, 1, addr);
    config.secure_aggregation.required = true;
    config.privacy = PrivacySection { enabled: true, noise_multiplier: Some(1.0), ..PrivacySection::default() };
    let server = tokio::spawn(coordinator.run(tokio::time::sleep(Duration::from_secs(20))));
    let mut work = PrivateWork::new(&config.name, config.data_dir.clone(), config.privacy.clone());
    let err = cohort_client::node::run(&config, &mut work).await.expect_err("the client must refuse");
    server.abort();
    let text = err.to_string();
    assert!(matches!(err, cohort_client::node::ClientError::Policy(_)), "{err:?}");
    assert!(text.contains("requires secure aggregation") && text.contains("mode = \"none\""), "{text}");
    let ledger = Ledger::open(&config.data_dir).unwrap();
    let last = ledger.records().last().expect("the refusal is recorded");
    assert_eq!(last.body.mechanism, Mechanism::Decline);
    assert!(last.body.note.contains("requires secure aggregation"), "{}", last.body.note);
}
