//! End-to-end refusals over real loopback mutual TLS: a certificate from another CA, a name outside the roster,
//! an expired certificate and no certificate at all are refused with actionable messages; malformed, stale,
//! oversized and wrongly shaped messages get typed errors; and the coordinator keeps serving the honest node.

mod support;

use cohort_client::node::ClientError;
use cohort_client::work::TrainingWork;
use cohort_core::pki::{self, IssueRequest, Role};
use cohort_core::protocol::RoundRef;
use cohort_core::protocol::proto::{self, federation_client::FederationClient};
use cohort_core::{ModelVersion, Round};
use std::time::Duration;
use support::Fixture;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

async fn run_client(config: cohort_core::config::ClientConfig) -> Result<cohort_client::node::NodeReport, ClientError> {
    let mut work = TrainingWork::new();
    cohort_client::node::run(&config, &mut work).await
}

async fn raw_channel(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
    }
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_and_messages_do_not_stop_the_federation() {
    let fx = {
        let mut fx = Fixture::new(&["hospital-a", "prober"], 2);
        fx.coordinator.training.round_deadline_secs = 2;
        fx
    };
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let server = tokio::spawn(coordinator.run(std::future::pending()));

    // 1. A certificate from another CA.
    let other_ca = fx.dir.path().join("other-ca");
    pki::init_ca(&other_ca, "other").unwrap();
    let mut files = pki::issue(
        &other_ca,
        &IssueRequest::valid_for_days("hospital-a", Role::Client, &[], 1),
        &fx.dir.path().join("rogue"),
    )
    .unwrap();
    files.ca_cert = fx.ca_dir().join(pki::CA_CERT_FILE); // it trusts the real coordinator
    let err = run_client(fx.client("hospital-a", &files, 0, 2, addr)).await.unwrap_err();
    assert!(matches!(err, ClientError::TlsRefused(_)), "{err}");
    assert!(err.to_string().contains("is not the federation CA"), "{err}");

    // 2. A valid certificate whose name is not in the roster: refused in the TLS handshake.
    let files = fx.issue("intruder");
    let err = run_client(fx.client("intruder", &files, 0, 2, addr)).await.unwrap_err();
    assert!(matches!(err, ClientError::TlsRefused(_)), "{err}");
    assert!(err.to_string().contains("not in the federation roster"), "{err}");

    // 3. An expired certificate.
    let now = time::OffsetDateTime::now_utc();
    let expired = IssueRequest {
        name: "hospital-a",
        role: Role::Client,
        sans: &[],
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let files = pki::issue(&fx.ca_dir(), &expired, &fx.dir.path().join("expired")).unwrap();
    let err = run_client(fx.client("hospital-a", &files, 0, 2, addr)).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    // 4. No client certificate at all.
    let ca_pem = fx.ca_dir().join(pki::CA_CERT_FILE);
    let outcome = match raw_channel(addr, &ca_pem, None).await {
        Ok(channel) => FederationClient::new(channel)
            .join(proto::JoinRequest { federation_id: support::FEDERATION.into(), ..Default::default() })
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(outcome.is_err(), "a node without a certificate was served");

    // 5. A legitimate prober sends malformed, stale, mismatched and oversized messages.
    let prober = fx.issue("prober");
    let mut raw =
        FederationClient::new(raw_channel(addr, &prober.ca_cert, Some((&prober.cert, &prober.key))).await.unwrap());
    let wrong_fed =
        raw.join(proto::JoinRequest { federation_id: "not-this-one".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(wrong_fed.code(), tonic::Code::InvalidArgument);
    assert!(wrong_fed.message().contains("federation"), "{}", wrong_fed.message());
    // A join with a data report (the first join without one only fetches the plan).
    let data = Some(proto::DataReport { reported_examples: 100.0, ..Default::default() });
    raw.join(proto::JoinRequest { federation_id: support::FEDERATION.into(), data, ..Default::default() })
        .await
        .unwrap();

    // The honest hospital starts; the round opens once both have joined.
    let honest = tokio::spawn(run_client(fx.client("hospital-a", &fx.issue("hospital-a"), 0, 2, addr)));
    let header = loop {
        let mut stream = raw.fetch_task(proto::TaskRequest { last_seen: None }).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let Some(proto::task_chunk::Body::Header(h)) = first.body else { panic!("no header") };
        if matches!(h.task, Some(proto::task_header::Task::Train(_))) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let current = header.round.clone().unwrap();
    let params = header.parameter_count;
    let upload = |round: proto::RoundRef, count: u64, body: Vec<u8>| {
        let mut raw = raw.clone();
        async move {
            let messages = vec![
                proto::UpdateChunk {
                    body: Some(proto::update_chunk::Body::Header(proto::UpdateHeader {
                        round: Some(round),
                        value_count: count,
                        train_loss: Some(0.1),
                        encoding: proto::BodyEncoding::F32Delta.into(),
                    })),
                },
                proto::UpdateChunk { body: Some(proto::update_chunk::Body::BodyChunk(body)) },
            ];
            raw.upload_update(tokio_stream::iter(messages)).await
        }
    };
    let stale = upload(
        RoundRef::new(support::FEDERATION, Round(current.round + 5), ModelVersion(current.model_version)).into(),
        params,
        vec![0; params as usize * 4],
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("round"), "{}", stale.message());
    let wrong_version = upload(
        RoundRef::new(support::FEDERATION, Round(current.round), ModelVersion(current.model_version + 1)).into(),
        params,
        vec![0; params as usize * 4],
    )
    .await
    .unwrap_err();
    assert_eq!(wrong_version.code(), tonic::Code::FailedPrecondition, "{wrong_version:?}");
    let wrong_shape = upload(current.clone(), params - 1, vec![0; (params as usize - 1) * 4]).await.unwrap_err();
    assert_eq!(wrong_shape.code(), tonic::Code::InvalidArgument, "{wrong_shape:?}");
    assert!(wrong_shape.message().contains("values but the model has"), "{}", wrong_shape.message());
    let too_long = upload(current.clone(), params, vec![0; params as usize * 4 + 8]).await.unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument, "{too_long:?}");
    let oversized = upload(current.clone(), params, vec![0; 5 << 20]).await.unwrap_err();
    assert!(
        matches!(
            oversized.code(),
            tonic::Code::ResourceExhausted
                | tonic::Code::OutOfRange
                | tonic::Code::InvalidArgument
                | tonic::Code::Internal
        ),
        "{oversized:?}"
    );
    let nan = upload(current.clone(), params, f32::NAN.to_le_bytes().repeat(params as usize)).await.unwrap_err();
    assert_eq!(nan.code(), tonic::Code::InvalidArgument, "{nan:?}");
    let no_header = raw
        .upload_update(tokio_stream::iter(vec![proto::UpdateChunk {
            body: Some(proto::update_chunk::Body::BodyChunk(vec![1, 2])),
        }]))
        .await
        .unwrap_err();
    assert_eq!(no_header.code(), tonic::Code::InvalidArgument);

    // The honest hospital still completes the federation.
    let report = tokio::time::timeout(Duration::from_secs(120), honest).await.unwrap().unwrap().unwrap();
    assert_eq!(report.rounds_trained.len(), 2);
    let run = server.await.unwrap().unwrap();
    assert_eq!(run.history.len(), 2);
    assert!(run.history.iter().all(|s| s.contributors.iter().all(|c| c.0 == "hospital-a")));
}
