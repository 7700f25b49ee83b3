//! The rule "nothing leaves a node outside its ledger" is enforced by the node loop, not by each `LocalWork`: a
//! work that forgets a release (here, one that reports its exact example count at join) stops a node whose config
//! promises privacy before the value is sent, naming the value.

mod support;

use cohort_client::data::LocalData;
use cohort_client::link::CoordinatorLink;
use cohort_client::node::{
    ClientError, JoinReleases, LocalWork, NodeReport, Participation, TrainOutcome, TrainSettings, run_session,
};
use cohort_client::outbound::Outbound;
use cohort_client::privacy::PrivateWork;
use cohort_coordinator::server::{self, Hosted};
use cohort_core::config::{FederationPlan, PrivacySection};
use cohort_core::metrics::EvalMetrics;
use cohort_core::protocol::{
    Decline, EvaluationReport, JoinRequest, JoinResponse, PartialHeader, RoundRef, ShareBundle, ShareSubmission,
    TaskHeader, UpdateHeader,
};
use cohort_core::tls::load_certs;
use cohort_core::{ModelVersion, Round};
use cohort_sim::MemoryLink;
use support::Fixture;

/// A DP node's work with one bug: its join figures are the exact count, not the recorded release.
struct ForgetfulWork(PrivateWork);

impl LocalWork for ForgetfulWork {
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        self.0.prepare(plan, data)
    }

    fn participate(&mut self, round: Round, settings: &TrainSettings) -> Result<Participation, ClientError> {
        self.0.participate(round, settings)
    }

    fn train(&mut self, round: Round, global: &[f32], settings: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        self.0.train(round, global, settings)
    }

    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError> {
        self.0.evaluate(params)
    }

    fn release_evaluation(
        &mut self,
        version: ModelVersion,
        model_sha256: &str,
        params: &[f32],
        exact: &EvalMetrics,
    ) -> Result<Outbound<EvalMetrics>, ClientError> {
        self.0.release_evaluation(version, model_sha256, params, exact)
    }

    fn public_keys(&self) -> (Vec<u8>, Vec<u8>) {
        self.0.public_keys()
    }

    fn join_releases(&mut self, data: &LocalData) -> Result<JoinReleases, ClientError> {
        let released = self.0.join_releases(data)?;
        Ok(JoinReleases { examples: Outbound::unprotected(data.train.rows() as f64), ..released })
    }
}

/// The memory link, counting the joins that carried a data report.
struct Watched {
    inner: MemoryLink,
    data_reports: usize,
}

impl CoordinatorLink for Watched {
    async fn join(&mut self, request: JoinRequest) -> Result<JoinResponse, ClientError> {
        self.data_reports += usize::from(request.data.is_some());
        self.inner.join(request).await
    }

    async fn fetch_task(&mut self, last_seen: RoundRef) -> Result<(TaskHeader, Vec<f32>), ClientError> {
        self.inner.fetch_task(last_seen).await
    }

    async fn upload(&mut self, header: UpdateHeader, body: Vec<u8>) -> Result<(), ClientError> {
        self.inner.upload(header, body).await
    }

    async fn decline(&mut self, decline: Decline) -> Result<(), ClientError> {
        self.inner.decline(decline).await
    }

    async fn report(&mut self, report: EvaluationReport) -> Result<(), ClientError> {
        self.inner.report(report).await
    }

    async fn submit_shares(&mut self, shares: ShareSubmission) -> Result<(), ClientError> {
        self.inner.submit_shares(shares).await
    }

    async fn fetch_shares(&mut self, round: RoundRef) -> Result<ShareBundle, ClientError> {
        self.inner.fetch_shares(round).await
    }

    async fn submit_partial(&mut self, header: PartialHeader, body: Vec<u8>) -> Result<(), ClientError> {
        self.inner.submit_partial(header, body).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_release_stops_a_private_node_before_anything_is_sent() {
    let name = "hospital-a";
    let mut fx = Fixture::new(&[name], 1);
    fx.declare_bounds();
    let Hosted { host, .. } = server::host(&fx.coordinator, None).expect("the core is hosted");
    let files = fx.issue(name);
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let mut config = fx.client(name, &files, 0, 1, unused);
    config.privacy = PrivacySection { enabled: true, ..PrivacySection::default() };
    let certificate = load_certs(&files.cert).expect("the certificate")[0].to_vec();
    let mut link = Watched { inner: MemoryLink::new(host, name, Some(certificate)), data_reports: 0 };
    let mut work = ForgetfulWork(PrivateWork::new(name, config.data_dir.clone(), config.privacy.clone()));
    let err = run_session(&mut link, &config, &mut work, &mut None, &mut NodeReport::default())
        .await
        .expect_err("the node must stop");
    assert!(matches!(err, ClientError::Policy(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("the join's example count") && text.contains("without a DP release"), "{text}");
    assert_eq!(link.data_reports, 0, "the exact count never left the node");

    // The same work on a node that promises no privacy sends what it computed.
    let mut plain = config.clone();
    plain.privacy.enabled = false;
    plain.data_dir = fx.dir.path().join("plain");
    let Hosted { host, .. } = server::host(&fx.coordinator, None).expect("the core is hosted");
    let certificate = load_certs(&files.cert).expect("the certificate")[0].to_vec();
    let mut link = Watched { inner: MemoryLink::new(host.clone(), name, Some(certificate)), data_reports: 0 };
    let mut work = ForgetfulWork(PrivateWork::new(name, plain.data_dir.clone(), plain.privacy.clone()));
    let (mut prepared, mut report) = (None, NodeReport::default());
    let session = run_session(&mut link, &plain, &mut work, &mut prepared, &mut report);
    let run = server::run_until_finished(&host, std::future::pending());
    let (session, ()) = tokio::time::timeout(std::time::Duration::from_secs(60), async { tokio::join!(session, run) })
        .await
        .expect("the one-round federation finishes");
    session.expect("a node without DP sends its exact count");
    assert_eq!(link.data_reports, 1);
}
