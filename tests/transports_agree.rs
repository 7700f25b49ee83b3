//! The two transports cannot drift apart: one seeded federation of five hospitals with DP-SGD and threshold-RLWE
//! secure aggregation, run once over the in-memory link and once over loopback mutual TLS, ends with
//! bit-identical global models, registry versions, gate decisions and ledger records (timestamps, and the hashes
//! and signatures that cover them, aside).

mod support;

use cohort_client::node::{NodeReport, run_session};
use cohort_client::privacy::PrivateWork;
use cohort_coordinator::server::{self, Hosted, RunReport};
use cohort_core::Round;
use cohort_core::config::{ClientConfig, PrivacySection, SecureAggregationMode, SecureAggregationSection};
use cohort_core::ledger::{LedgerRecord, read_jsonl};
use cohort_core::secret::NodeSecret;
use cohort_core::tls::load_certs;
use cohort_sim::MemoryLink;
use rand::SeedableRng;
use serde_json::Value;
use std::time::Duration;
use support::Fixture;

const NAMES: [&str; 5] = ["hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e"];
const ROUNDS: u64 = 2;
const SEED: u64 = 41;

/// Which transport a run uses.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Memory,
    MutualTls,
}

/// What a run leaves behind, with every field that depends on the wall clock or a directory path removed.
#[derive(Debug)]
struct Outcome {
    global: Vec<u32>,
    versions: Vec<Value>,
    decisions: Vec<Value>,
    ledgers: Vec<Vec<Value>>,
}

fn fixture() -> Fixture {
    let mut fx = Fixture::new(&NAMES, ROUNDS);
    fx.declare_bounds();
    fx.coordinator.training.min_clients = NAMES.len();
    fx.coordinator.secure_aggregation = SecureAggregationSection {
        mode: SecureAggregationMode::ThresholdRlwe,
        max_colluders: 1,
        threshold: None,
        min_participants: Some(NAMES.len()),
    };
    fx
}

/// Hospital `i`'s config, its node secret seeded so the held-out split and fingerprints replay.
fn hospital(fx: &Fixture, i: usize, addr: std::net::SocketAddr) -> (ClientConfig, Vec<u8>) {
    let files = fx.issue(NAMES[i]);
    let mut config = fx.client(NAMES[i], &files, i, NAMES.len(), addr);
    config.privacy =
        PrivacySection { enabled: true, epsilon_budget: 50.0, target_epsilon: Some(8.0), ..PrivacySection::default() };
    NodeSecret::create_insecure_seeded(&config.data_dir, SEED + i as u64).expect("the node secret is written");
    let certificate = load_certs(&files.cert).expect("the certificate loads")[0].to_vec();
    (config, certificate)
}

fn work(config: &ClientConfig, i: usize) -> PrivateWork {
    PrivateWork::new(&config.name, config.data_dir.clone(), config.privacy.clone()).with_insecure_seed(SEED + i as u64)
}

fn coordinator_rng() -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(SEED)
}

async fn run(transport: Transport) -> Outcome {
    let fx = fixture();
    let report = match transport {
        Transport::Memory => {
            let Hosted { host, .. } =
                server::host(&fx.coordinator, Some(coordinator_rng())).expect("the core is hosted");
            let unused: std::net::SocketAddr = "127.0.0.1:9".parse().expect("an address");
            let mut clients = Vec::new();
            for (i, name) in NAMES.iter().enumerate() {
                let (config, certificate) = hospital(&fx, i, unused);
                let mut link = MemoryLink::new(host.clone(), name, Some(certificate));
                clients.push(tokio::spawn(async move {
                    let mut report = NodeReport::default();
                    run_session(&mut link, &config, &mut work(&config, i), &mut None, &mut report).await
                }));
            }
            server::run_until_finished(&host, std::future::pending()).await;
            let report = server::run_report(&host, Round(0));
            for client in clients {
                client.await.expect("the node task").expect("the node finishes");
            }
            report
        }
        Transport::MutualTls => {
            let coordinator = cohort_coordinator::Coordinator::bind_with_rng(&fx.coordinator, Some(coordinator_rng()))
                .await
                .expect("the coordinator binds");
            let addr = coordinator.local_addr().expect("an address");
            let mut clients = Vec::new();
            for i in 0..NAMES.len() {
                let (config, _) = hospital(&fx, i, addr);
                clients
                    .push(tokio::spawn(async move { cohort_client::node::run(&config, &mut work(&config, i)).await }));
            }
            let report = coordinator.run(std::future::pending()).await.expect("the federation finishes");
            for client in clients {
                client.await.expect("the node task").expect("the node finishes");
            }
            report
        }
    };
    outcome(&fx, &report)
}

fn without(mut value: Value, keys: &[&str]) -> Value {
    if let Some(map) = value.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
    value
}

fn outcome(fx: &Fixture, report: &RunReport) -> Outcome {
    assert_eq!(report.history.len() as u64, ROUNDS);
    for summary in &report.history {
        assert_eq!(summary.contributors.len(), NAMES.len(), "round {}", summary.round);
        assert!(summary.secure.is_some(), "round {} ran in plaintext", summary.round);
    }
    let versions = report
        .recorded
        .iter()
        .map(|r| without(json(&r.record), &["created_at", "created_unix_ms", "config_hash", "secure_aggregation"]))
        .collect();
    let decisions = report.recorded.iter().map(|r| json(&r.decision)).collect();
    let ledgers = NAMES
        .iter()
        .map(|name| {
            let copy = fx.coordinator.data_dir.join("ledgers").join(format!("{name}.jsonl"));
            let file = std::fs::File::open(&copy).expect("a ledger copy");
            let records: Vec<LedgerRecord> = read_jsonl(std::io::BufReader::new(file)).expect("it reads");
            records.iter().map(|r| without(json(&r.body), &["timestamp_ms", "prev_hash"])).collect()
        })
        .collect();
    Outcome { global: report.global.iter().map(|v| v.to_bits()).collect(), versions, decisions, ledgers }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("the record serializes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_in_memory_link_and_mutual_tls_give_bit_identical_federations() {
    let limit = Duration::from_secs(600);
    let memory = tokio::time::timeout(limit, run(Transport::Memory)).await.expect("the in-memory run finishes");
    let tls = tokio::time::timeout(limit, run(Transport::MutualTls)).await.expect("the mTLS run finishes");
    assert!(!memory.versions.is_empty() && memory.ledgers.iter().all(|l| l.len() >= ROUNDS as usize));
    assert_eq!(memory.global, tls.global, "the global models differ");
    let mut differences = Vec::new();
    for (what, a, b) in [
        ("registry versions", json(&memory.versions), json(&tls.versions)),
        ("gate decisions", json(&memory.decisions), json(&tls.decisions)),
        ("ledger records", json(&memory.ledgers), json(&tls.ledgers)),
    ] {
        differing(&a, &b, what, &mut differences);
    }
    assert!(differences.is_empty(), "the two runs differ:\n{}", differences.join("\n"));
}

/// The paths at which `a` and `b` differ, with both values.
fn differing(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (l, r) = (x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null));
                differing(l, r, &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differing(l, r, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("  {path}: in memory {a}, over mTLS {b}")),
        _ => {}
    }
}
