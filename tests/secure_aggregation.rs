//! End-to-end secure aggregation (threshold RLWE) over real loopback mutual TLS.
//!
//! Local training is replaced by [`FixedWork`], which returns deterministic parameters per node, so an
//! encrypted run and a plaintext run see identical updates and their global models can be compared to
//! fixed-point precision.

mod support;

use cohort_client::data::LocalData;
use cohort_client::node::{ClientError, JoinReleases, LocalWork, Participation, TrainOutcome, TrainSettings};
use cohort_client::outbound::Outbound;
use cohort_client::work::TrainingWork;
use cohort_coordinator::round::Event;
use cohort_core::config::{FederationPlan, SecureAggregationMode, SecureAggregationSection};
use cohort_core::metrics::EvalMetrics;
use cohort_core::{NodeName, Round};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::Fixture;

/// Deterministic "training": node `index` returns the parameters `target(index, c)` whatever the global
/// model, with `10 · (index + 1)` examples; optionally after a delay. Evaluation is the real one.
struct FixedWork {
    index: usize,
    delay: Duration,
    inner: TrainingWork,
    /// The plaintext deltas this node computed (what it must never reveal individually).
    deltas: Arc<Mutex<Vec<Vec<f32>>>>,
}

fn target(index: usize, c: usize) -> f32 {
    1.0 + index as f32 * 0.123_457 + c as f32 * 0.001_371_7
}

impl LocalWork for FixedWork {
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        self.inner.prepare(plan, data)
    }

    fn participate(&mut self, _round: Round, _settings: &TrainSettings) -> Result<Participation, ClientError> {
        Ok(Participation::Train)
    }

    fn train(&mut self, _round: Round, global: &[f32], _settings: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        // Blocks this worker thread only; the tests run on enough workers.
        std::thread::sleep(self.delay);
        let params: Vec<f32> = (0..global.len()).map(|c| target(self.index, c)).collect();
        // The same f32 arithmetic as the node loop, so these are exactly the deltas it encrypts.
        let delta: Vec<f32> = params.iter().zip(global).map(|(w, g)| w - g).collect();
        self.deltas.lock().unwrap().push(delta);
        Ok(TrainOutcome {
            params: Outbound::unprotected(params),
            train_loss: Some(Outbound::unprotected(0.5)),
            examples: Outbound::unprotected(10 * (self.index as u64 + 1)),
        })
    }

    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError> {
        self.inner.evaluate(params)
    }

    /// The join count is the FedAvg weight in both modes: the same `10 · (index + 1)` as the updates carry.
    fn join_releases(&mut self, _data: &LocalData) -> Result<JoinReleases, ClientError> {
        Ok(JoinReleases {
            examples: Outbound::unprotected(10.0 * (self.index + 1) as f64),
            label_histogram: Outbound::data_free(Vec::new()),
        })
    }
}

struct Run {
    report: cohort_coordinator::RunReport,
    events: Vec<Event>,
    deltas: Vec<Vec<Vec<f32>>>,
    data_dir: std::path::PathBuf,
    _fixture: Fixture,
}

/// Runs one round with `n` nodes; node `drop` (if any) trains without delay and is killed as soon as its
/// update is accepted, before the decryption request (the others train for 600 ms).
async fn run(n: usize, mode: SecureAggregationMode, drop: Option<usize>) -> Run {
    let names: Vec<String> = (0..n).map(|i| format!("hospital-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fx = Fixture::new(&refs, 1);
    fx.coordinator.training.min_clients = 3;
    fx.coordinator.training.round_deadline_secs = 3;
    // The fixed targets are far from the (randomly initialized) global model: unclipped, the new model is their
    // weighted mean whatever the initialization, which is what the two modes are compared on.
    fx.coordinator.influence.max_update_norm = f64::INFINITY;
    fx.coordinator.secure_aggregation =
        SecureAggregationSection { mode, max_colluders: 1, threshold: None, min_participants: Some(3) };
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut events = coordinator.subscribe();
    let mut clients = Vec::new();
    let mut deltas = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let config = fx.client(name, &fx.issue(name), i, n, addr);
        let record = Arc::new(Mutex::new(Vec::new()));
        deltas.push(record.clone());
        let delay = if drop.is_some() && drop != Some(i) { Duration::from_millis(600) } else { Duration::ZERO };
        let mut work = FixedWork { index: i, delay, inner: TrainingWork::new(), deltas: record };
        clients.push(tokio::spawn(async move { cohort_client::node::run(&config, &mut work).await }));
    }
    let dropped = drop.map(|d| (NodeName(names[d].clone()), clients[d].abort_handle()));
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(event) = events.recv().await {
            if let (Event::UpdateAccepted { node, .. }, Some((name, handle))) = (&event, &dropped)
                && node == name
            {
                handle.abort();
            }
            let done = matches!(event, Event::Finished { .. });
            seen.push(event);
            if done {
                break;
            }
        }
        seen
    });
    let report = coordinator.run(std::future::pending()).await.unwrap();
    for (i, c) in clients.into_iter().enumerate() {
        match c.await {
            Ok(result) => {
                result.unwrap();
            }
            Err(e) => assert!(e.is_cancelled() && drop == Some(i), "client {i} failed: {e}"),
        }
    }
    let events = watcher.await.unwrap();
    let deltas = deltas.iter().map(|d| d.lock().unwrap().clone()).collect();
    let data_dir = fx.coordinator.data_dir.clone();
    Run { report, events, deltas, data_dir, _fixture: fx }
}

const QUANTIZATION_STEP: f64 = 1.0 / 65536.0; // 2^-f, f = 16 (SecAggParams::default)

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn five_clients_one_drops_after_upload_and_the_model_matches_plaintext() {
    capture_logs();
    let started = Instant::now();
    let secure = run(5, SecureAggregationMode::ThresholdRlwe, Some(4)).await;
    let plain = run(5, SecureAggregationMode::None, None).await;
    let summary = &secure.report.history[0];
    let record = summary.secure.as_ref().expect("a secure round record");
    // Five participants, safe against the coordinator plus one colluder: t = ⌊(5 + 1)/2⌋ + 1 = 4.
    assert_eq!(record.threshold, 4);
    assert_eq!(record.max_colluders, 1);
    assert_eq!(record.key_holders.len(), 5);
    assert_eq!(record.participants.len(), 5, "the dropped node's upload is in the sum");
    assert_eq!(record.responders.len(), 4);
    assert!(!record.responders.contains(&NodeName("hospital-4".into())), "the dropped node did not answer");
    assert!(
        secure
            .events
            .iter()
            .any(|e| matches!(e, Event::DecryptionRequested { responders, .. } if responders.len() == 4))
    );
    assert!(plain.report.history[0].secure.is_none());
    assert_eq!(summary.contributors.len(), 5);
    // The global models agree to one quantization step of the mean (plus f32 rounding).
    assert_eq!(secure.report.global.len(), plain.report.global.len());
    let worst = secure
        .report
        .global
        .iter()
        .zip(&plain.report.global)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    assert!(worst <= QUANTIZATION_STEP + 1e-6, "max deviation {worst}");
    // Both equal the example-weighted mean of the fixed targets.
    for (c, v) in plain.report.global.iter().enumerate() {
        let exact: f64 = (0..5).map(|i| f64::from(target(i, c)) * 10.0 * (i + 1) as f64).sum::<f64>() / 150.0;
        assert!((f64::from(*v) - exact).abs() < 1e-5, "coord {c}");
    }
    // The registry records the parameters and who answered.
    let registered = &secure.report.recorded.last().expect("a registered version").record;
    let sa = serde_json::to_value(registered).unwrap();
    let text = sa.to_string();
    assert!(text.contains("\"key_holders_answered\":4"), "{text}");
    assert!(text.contains("\"polynomial_size\":8192"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Every byte the coordinator stored (registry database, artifacts, checkpoints) and every line it
/// logged is searched for each client's plaintext delta: none may appear. As a control, the final
/// model's bytes must be found, so the search does reach the stored artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_coordinator_stores_and_logs_no_individual_update() {
    let logs = capture_logs();
    let secure = run(3, SecureAggregationMode::ThresholdRlwe, None).await;
    let mut stored = Vec::new();
    collect_files(&secure.data_dir, &mut stored);
    assert!(!stored.is_empty());
    let log = logs.lock().unwrap().clone();
    assert!(!log.is_empty(), "the coordinator logged something");
    let haystacks: Vec<(&str, &[u8])> = stored
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .chain(std::iter::once(("log", log.as_slice())))
        .collect();
    let contains =
        |needle: &[u8]| haystacks.iter().find(|(_, h)| h.windows(needle.len()).any(|w| w == needle)).map(|(p, _)| *p);
    let model: Vec<u8> = secure.report.global[..8].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(contains(&model).is_some(), "control: the final model is stored");
    for (i, rounds) in secure.deltas.iter().enumerate() {
        assert_eq!(rounds.len(), 1, "client {i} trained once");
        let delta = &rounds[0];
        let f32_bytes: Vec<u8> = delta[..4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64_bytes: Vec<u8> = delta[..2].iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect();
        assert_eq!(contains(&f32_bytes), None, "client {i}'s delta (f32) was stored or logged");
        assert_eq!(contains(&f64_bytes), None, "client {i}'s delta (f64) was stored or logged");
        for v in &delta[..4] {
            let text = format!("{v}");
            assert!(!String::from_utf8_lossy(&log).contains(&text), "client {i}'s delta {text} was logged");
        }
    }
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

/// Captures all tracing output of this test binary (the coordinator's crates at TRACE) in memory.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,cohort_coordinator=trace,cohort_core=trace,cohort_crypto=trace",
            ))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
