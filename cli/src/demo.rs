//! `cohort demo`: a whole federation on this machine, over real loopback mutual TLS.
//!
//! 1. A fresh federation PKI in the data directory.
//! 2. The breast-cancer data set split unevenly among three hospitals (50%, 30%, 20%); each keeps 20% held out.
//! 3. A coordinator and three client nodes as tasks of this process, talking gRPC over mutual TLS on 127.0.0.1.
//! 4. R rounds with a progress bar and a line of metrics per round; the final model is saved and summarized.

use crate::args::DemoArgs;
use anyhow::Context;
use cohort_core::config::{
    ClientConfig, ClientSecureAggregation, CoordinatorConfig, CoordinatorEndpoint, DataSection, ModelSection,
    PrivacySection, Schema, SecureAggregationMode, SecureAggregationSection, StrategyConfig, TlsSection,
    TrainingSection,
};
use cohort_core::model::{TaskKind, parameters_sha256, parameters_to_bytes};
use cohort_core::pki::{self, NodeFiles};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::Path;

/// The demo data set: scikit-learn's copy of the UCI Breast Cancer Wisconsin (Diagnostic) data, 569 × 30.
const BREAST_CANCER: &str = include_str!("../../examples/data/breast_cancer.csv");

/// The demo's hospitals and their shares of the rows.
const HOSPITALS: [(&str, f64); 3] = [("hospital-a", 0.5), ("hospital-b", 0.3), ("hospital-c", 0.2)];
/// The share of the published rows the coordinator keeps as its own test set: the gate judges it, since the
/// hospitals' DP evaluations are noisy on their small held-out splits.
const CENTRAL_SHARE: f64 = 0.15;

const FEDERATION: &str = "cohort-demo";

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => {
            tempfile::Builder::new().prefix("cohort-demo-").tempdir().context("creating a temporary directory")?.keep()
        }
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
    // Held for the whole run: the coordinator and the hospitals of this demo all live in this directory.
    let _lock = cohort_core::lock::DirLock::acquire(&data_dir)?;
    eprintln!("cohort demo: data directory {}", data_dir.display());

    if data_dir.join(cohort_coordinator::registry::DB_FILE).exists() {
        anyhow::bail!(
            "{} already holds a federation's registry; give `cohort demo --data-dir` a new directory",
            data_dir.display()
        );
    }
    let pki_dir = data_dir.join("pki");
    // The demo's own throwaway PKI: replacing one left by an earlier, unfinished demo here is intended.
    let coord_files = pki::local_federation(&pki_dir, FEDERATION)?;
    let (header, central, splits) = split_rows(BREAST_CANCER)?;
    let central_path = data_dir.join("data").join("central-test.csv");
    // The federation's declared range of every feature: the range of the published data set widened by 10% on
    // each side (a real federation takes these from its data dictionary).
    let published_path = data_dir.join("data").join("breast_cancer.csv");
    std::fs::create_dir_all(data_dir.join("data"))?;
    std::fs::write(&published_path, BREAST_CANCER)?;
    let features: Vec<String> = header.iter().filter(|h| *h != "malignant").cloned().collect();
    let unscaled = Schema {
        features: features.clone(),
        label: "malignant".into(),
        task: TaskKind::Binary,
        classes: None,
        bounds: None,
        label_bounds: None,
    };
    let published = cohort_core::data::load_csv(&published_path, &unscaled)?;
    std::fs::write(&central_path, format!("{}\n{}\n", header.join(","), central.join("\n")))?;
    let secure_mode = match args.secure_aggregation.as_str() {
        "none" => SecureAggregationMode::None,
        _ => SecureAggregationMode::ThresholdRlwe,
    };

    let coordinator_config = CoordinatorConfig {
        federation_id: FEDERATION.into(),
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.clone(),
        tls: tls_section(&coord_files),
        roster: HOSPITALS.iter().map(|(n, _)| (*n).to_owned()).collect(),
        schema: Schema {
            features,
            label: "malignant".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: Some(published.widened_ranges(0.1)),
            label_bounds: None,
        },
        model: ModelSection { name: "breast-cancer".into(), hidden: Vec::new() },
        training: TrainingSection {
            rounds: args.rounds,
            local_epochs: 1,
            // Chosen for DP-SGD (larger batches and steps carry the gradient over the noise); plain SGD
            // reaches the same accuracy with them.
            learning_rate: 1.0,
            batch_size: 32,
            min_clients: 2,
            round_deadline_secs: 120,
            clients_per_round: None,
            max_round_failures: 5,
        },
        strategy: StrategyConfig::Fedavg,
        secure_aggregation: SecureAggregationSection { mode: secure_mode, ..SecureAggregationSection::default() },
        gate: None,
        central_test_set: Some(central_path.clone()),
        admission: Default::default(),
        influence: Default::default(),
    };
    coordinator_config.validate()?;
    if let Some(seed) = args.insecure_seed {
        eprintln!("WARNING: --insecure-seed {seed}: DP noise is reproducible and this run gives NO privacy");
    }
    let coordinator_rng = args.insecure_seed.map(rand_chacha::ChaCha20Rng::seed_from_u64);
    let coordinator = cohort_coordinator::Coordinator::bind_with_rng(&coordinator_config, coordinator_rng).await?;
    let addr = coordinator.local_addr()?;
    write_toml(&data_dir.join("coordinator.toml"), &coordinator_config)?;

    let mut clients = Vec::new();
    for ((name, _), rows) in HOSPITALS.iter().zip(&splits) {
        let files = pki::local_client(&pki_dir, name)?;
        let csv_path = data_dir.join("data").join(format!("{name}.csv"));
        std::fs::create_dir_all(csv_path.parent().unwrap_or(&data_dir))?;
        std::fs::write(&csv_path, format!("{}\n{}\n", header.join(","), rows.join("\n")))?;
        let config = ClientConfig {
            name: (*name).to_owned(),
            federation_id: FEDERATION.into(),
            coordinator: CoordinatorEndpoint { url: format!("https://{addr}"), server_name: Some("localhost".into()) },
            tls: tls_section(&files),
            data: DataSection { path: csv_path, holdout_fraction: 0.2, split_seed: 0 },
            data_dir: data_dir.join(name),
            privacy: PrivacySection { enabled: !args.no_dp, epsilon_budget: args.epsilon, ..PrivacySection::default() },
            // The demo's hospitals accept what its coordinator runs: secure aggregation unless turned off.
            secure_aggregation: ClientSecureAggregation {
                required: secure_mode != SecureAggregationMode::None,
                ..ClientSecureAggregation::default()
            },
        };
        write_toml(&data_dir.join(format!("{name}.toml")), &config)?;
        clients.push(config);
    }

    let mut handles = Vec::new();
    for (i, config) in clients.into_iter().enumerate() {
        let seed = args.insecure_seed.map(|s| s.wrapping_add(i as u64));
        if let Some(seed) = seed {
            // The held-out split and fingerprints follow the node secret: seeded too, or nothing replays.
            cohort_core::secret::NodeSecret::create_insecure_seeded(&config.data_dir, seed)?;
        }
        handles.push(tokio::spawn(async move {
            if config.privacy.enabled {
                let mut work = cohort_client::privacy::PrivateWork::new(
                    &config.name,
                    config.data_dir.clone(),
                    config.privacy.clone(),
                );
                if let Some(seed) = seed {
                    work = work.with_insecure_seed(seed);
                }
                let result = cohort_client::node::run(&config, &mut work).await;
                (config.name, result, work.spent())
            } else {
                let result = cohort_client::node::run(&config, &mut cohort_client::work::TrainingWork::new()).await;
                (config.name, result, None)
            }
        }));
    }
    let report = crate::run::run_coordinator_bound(coordinator, args.rounds, false).await?;
    let mut epsilon = serde_json::Map::new();
    // Each hospital's exact evaluation of the final model, which stays on the hospital: the demo owns every
    // hospital's data, so it may pool them into the true held-out figures.
    let mut exact = Vec::new();
    for handle in handles {
        let (name, result, spent) = handle.await.context("a client task panicked")?;
        let node = result.with_context(|| format!("client {name} failed"))?;
        if let Some(metrics) = node.final_metrics {
            exact.push((name.clone(), metrics));
        }
        if let Some(spent) = spent {
            epsilon.insert(name, spent.into());
        }
    }
    let pooled = cohort_core::metrics::weighted_aggregate(&exact).ok();

    let model_dir = data_dir.join("models");
    std::fs::create_dir_all(&model_dir)?;
    let model_path = model_dir.join("final-model.f32");
    std::fs::write(&model_path, parameters_to_bytes(&report.global))?;
    let sha = parameters_sha256(&report.global);
    let last = report.history.last();
    let metric = |name: &str| pooled.as_ref().and_then(|m| m.get(name));
    let federated = |name: &str| last.and_then(|s| s.metrics.as_ref()).and_then(|m| m.get(name));
    let accuracy = metric("accuracy");
    let loss = metric("loss");
    eprintln!();
    eprintln!("federation finished after {} rounds with {} hospitals", report.history.len(), HOSPITALS.len());
    eprintln!("  final global model {}: {}", report.version, model_path.display());
    eprintln!("  sha256 {sha}");
    if let (Some(a), Some(l)) = (accuracy, loss) {
        eprintln!(
            "  held-out accuracy {a:.4}, loss {l:.4} (true figures pooled over the hospitals' held-out rows: the demo \
             owns all the data; a real coordinator never sees them)"
        );
    }
    if let (Some(a), false) = (federated("accuracy"), args.no_dp) {
        eprintln!(
            "  federated DP evaluation: accuracy {a:.4} (pooled from the hospitals' noisy, ledger-recorded releases)"
        );
    }
    let summary = serde_json::json!({
        "rounds": report.history.len(),
        "clients": HOSPITALS.len(),
        "accuracy": accuracy,
        "loss": loss,
        "auc": metric("auc"),
        "f1": metric("f1"),
        // What the federation itself measured: the hospitals' DP releases pooled (noisy), or exact without DP.
        "federated_accuracy": federated("accuracy"),
        "model_sha256": sha,
        "dp": !args.no_dp,
        "epsilon": epsilon,
        "epsilon_budget": if args.no_dp { None } else { Some(args.epsilon) },
        "delta": if args.no_dp { None } else { Some(1e-5) },
        "secure_aggregation": args.secure_aggregation,
        // Key holders that answered the decryption request (last round, and per round; null/empty without it).
        "key_holders_answered": last.and_then(|s| s.secure.as_ref()).map(|r| r.responders.len()),
        "key_holders_answered_per_round": report.history.iter().filter_map(|s| s.secure.as_ref().map(|r| r.responders.len())).collect::<Vec<_>>(),
        "model_version": report.recorded.last().map(|r| r.record.version.0),
        "stage": report.recorded.last().map(|r| r.record.stage.to_string()),
        "gate": report.recorded.last().map(|r| r.decision.reasons.clone()),
        "model_path": model_path,
        "data_dir": data_dir,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "final model {} sha256 {sha} accuracy {}",
            report.version,
            accuracy.map_or("n/a".into(), |a| format!("{a:.4}"))
        );
    }
    Ok(())
}

fn tls_section(files: &NodeFiles) -> TlsSection {
    TlsSection { ca_cert: files.ca_cert.clone(), cert: files.cert.clone(), key: files.key.clone() }
}

fn write_toml<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(value).context("serializing a config")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Shuffles the rows with a fixed seed (the demo split of a public data set, not a privacy mechanism) and
/// splits them by the hospitals' shares.
/// The header, the coordinator's test rows, and each hospital's rows.
type Split = (Vec<String>, Vec<String>, Vec<Vec<String>>);

fn split_rows(csv: &str) -> anyhow::Result<Split> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next().context("empty data set")?.split(',').map(str::to_owned).collect();
    let mut rows: Vec<String> = lines.map(str::to_owned).collect();
    rows.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2024));
    // The coordinator's own test set comes first; the hospitals share the rest.
    let central = rows.drain(..(rows.len() as f64 * CENTRAL_SHARE).round() as usize).collect();
    let mut splits = Vec::new();
    let mut start = 0;
    for (i, (_, share)) in HOSPITALS.iter().enumerate() {
        let end =
            if i + 1 == HOSPITALS.len() { rows.len() } else { start + (rows.len() as f64 * share).round() as usize };
        splits.push(rows[start..end].to_vec());
        start = end;
    }
    Ok((header, central, splits))
}
