//! Foundation benchmarks, each reported next to a baseline measured in the same run:
//!
//! - `aggregate/fedavg_10x1M`: the coordinator's streaming FedAvg over 10 clients × 1M parameters, against the
//!   baseline `aggregate/plain_sum_10x1M` (a bare f32 → f64 accumulation loop of the same size).
//! - `round/mtls_loopback`: milliseconds per round of a tiny model over real loopback mutual TLS with two nodes
//!   that do no training, against `round/in_memory` (the same rounds driven through the state machine
//!   directly). Their ratio is the transport's overhead.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use cohort_client::data::LocalData;
use cohort_client::node::{ClientError, LocalWork, Participation, TrainOutcome, TrainSettings};
use cohort_client::outbound::Outbound;
use cohort_coordinator::round::{RoundMachine, RoundSettings};
use cohort_coordinator::strategy::{FedAvg, Strategy, WeightedSum};
use cohort_core::config::*;
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::TaskKind;
use cohort_core::pki::{self, IssueRequest, Role};
use cohort_core::{ModelVersion, NodeName, Round};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PARAMS: usize = 1_000_000;
const CLIENTS: usize = 10;

fn aggregation(c: &mut Criterion) {
    let updates: Vec<Vec<f32>> =
        (0..CLIENTS).map(|k| (0..PARAMS).map(|i| ((i + k) % 97) as f32 * 1e-3).collect()).collect();
    let global = vec![0.0f32; PARAMS];
    let mut group = c.benchmark_group("aggregate");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements((PARAMS * CLIENTS) as u64));
    group.bench_function(BenchmarkId::new("fedavg", "10x1M"), |b| {
        b.iter(|| {
            let mut sum = WeightedSum::new(PARAMS);
            for (k, u) in updates.iter().enumerate() {
                sum.add(u, (k + 1) as f64).unwrap();
            }
            black_box(FedAvg.aggregate(&global, &sum).unwrap())
        })
    });
    group.bench_function(BenchmarkId::new("plain_sum", "10x1M"), |b| {
        b.iter(|| {
            let mut acc = vec![0.0f64; PARAMS];
            for u in &updates {
                for (a, v) in acc.iter_mut().zip(u) {
                    *a += f64::from(*v);
                }
            }
            black_box(acc)
        })
    });
    group.finish();
}

/// A node that returns the global model unchanged: the round cost is pure protocol and transport.
struct Idle {
    rows: u64,
}

impl LocalWork for Idle {
    fn prepare(&mut self, _: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        self.rows = data.train.rows() as u64;
        Ok(())
    }
    fn participate(&mut self, _: Round, _: &TrainSettings) -> Result<Participation, ClientError> {
        Ok(Participation::Train)
    }
    fn train(&mut self, _: Round, global: &[f32], _: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        Ok(TrainOutcome {
            params: Outbound::unprotected(global.to_vec()),
            train_loss: Some(Outbound::data_free(0.0)),
            examples: Outbound::unprotected(self.rows),
        })
    }
    fn evaluate(&mut self, _: &[f32]) -> Result<EvalMetrics, ClientError> {
        Ok(EvalMetrics { examples: 1, values: [("accuracy".to_owned(), 1.0)].into() })
    }
}

const ROUNDS: u64 = 20;

fn federation_over_mtls(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> Duration {
    let ca = dir.join("ca");
    pki::init_ca(&ca, "bench").unwrap();
    let sans = vec!["localhost".to_owned()];
    let files =
        pki::issue(&ca, &IssueRequest::valid_for_days("coordinator", Role::Coordinator, &sans, 1), &dir.join("coord"))
            .unwrap();
    let csv = dir.join("d.csv");
    std::fs::write(&csv, "x,y\n0,0\n1,1\n2,0\n3,1\n4,0\n").unwrap();
    let tls = |f: &pki::NodeFiles| TlsSection { ca_cert: f.ca_cert.clone(), cert: f.cert.clone(), key: f.key.clone() };
    let config = CoordinatorConfig {
        federation_id: "bench".into(),
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("cd"),
        tls: tls(&files),
        roster: vec!["a".into(), "b".into()],
        schema: Schema {
            features: vec!["x".into()],
            label: "y".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: None,
            label_bounds: None,
        },
        model: ModelSection::default(),
        training: TrainingSection { rounds: ROUNDS, min_clients: 2, ..TrainingSection::default() },
        strategy: StrategyConfig::Fedavg,
        secure_aggregation: SecureAggregationSection::default(),
        gate: None,
        central_test_set: None,
        admission: Default::default(),
        influence: Default::default(),
    };
    runtime.block_on(async {
        let coordinator = cohort_coordinator::Coordinator::bind(&config).await.unwrap();
        let addr = coordinator.local_addr().unwrap();
        let mut nodes = Vec::new();
        for name in ["a", "b"] {
            let f =
                pki::issue(&ca, &IssueRequest::valid_for_days(name, Role::Client, &[], 1), &dir.join(name)).unwrap();
            let cc = ClientConfig {
                name: name.into(),
                federation_id: "bench".into(),
                coordinator: CoordinatorEndpoint {
                    url: format!("https://{addr}"),
                    server_name: Some("localhost".into()),
                },
                tls: tls(&f),
                data: DataSection { path: csv.clone(), holdout_fraction: 0.2, split_seed: 0 },
                data_dir: dir.join(format!("{name}-d")),
                privacy: PrivacySection { enabled: false, ..PrivacySection::default() },
                secure_aggregation: ClientSecureAggregation { required: false, ..ClientSecureAggregation::default() },
            };
            nodes.push(tokio::spawn(async move { cohort_client::node::run(&cc, &mut Idle { rows: 0 }).await }));
        }
        let mut events = coordinator.subscribe();
        let server = tokio::spawn(coordinator.run(std::future::pending()));
        // Time from the first round's start to the last round's evaluation, excluding setup and shutdown grace.
        let mut start = None;
        loop {
            match events.recv().await {
                Ok(cohort_coordinator::round::Event::RoundStarted { round: Round(1), .. }) => {
                    start = Some(Instant::now())
                }
                Ok(cohort_coordinator::round::Event::Finished { .. }) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
        for n in nodes {
            n.await.unwrap().unwrap();
        }
        server.await.unwrap().unwrap();
        elapsed
    })
}

fn in_memory_rounds() -> Duration {
    let settings = RoundSettings {
        rounds: ROUNDS,
        min_clients: 2,
        deadline: Duration::from_secs(60),
        clients_per_round: None,
        max_round_failures: 5,
        influence: InfluenceSection::default(),
    };
    let (a, b) = (NodeName::from("a"), NodeName::from("b"));
    let mut m = RoundMachine::new(
        "bench",
        [a.clone(), b.clone()],
        settings,
        Box::new(FedAvg),
        vec![0.0; 4],
        Round(0),
        ModelVersion(0),
    );
    let start = Instant::now();
    let now = Instant::now();
    m.join(&a, now).unwrap();
    m.join(&b, now).unwrap();
    for r in 1..=ROUNDS {
        let v = m.version();
        for n in [&a, &b] {
            m.submit_update(n, Round(r), v, &[0.0; 4], 0.0, now).unwrap();
        }
        for n in [&a, &b] {
            m.report_evaluation(n, Round(r), m.version(), EvalMetrics { examples: 1, values: Default::default() }, now)
                .unwrap();
        }
    }
    assert!(m.is_finished());
    start.elapsed()
}

fn round_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("round");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("mtls_loopback_per_round", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                total += federation_over_mtls(dir.path(), &runtime) / ROUNDS as u32;
            }
            total
        })
    });
    group.bench_function("in_memory_per_round", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| in_memory_rounds() / ROUNDS as u32).sum())
    });
    group.finish();
}

criterion_group!(benches, aggregation, round_overhead);
criterion_main!(benches);
