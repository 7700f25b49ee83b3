//! End-to-end: a federation of three hospitals over real loopback mutual TLS trains to the accuracy of the same
//! data trained centrally, and every node ends with the same global model.

mod support;

use cohort_client::work::TrainingWork;
use cohort_core::model::parameters_sha256;
use support::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hospitals_train_to_high_accuracy_over_mutual_tls() {
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let fx = Fixture::new(&names, 8);
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let files = fx.issue(name);
        let config = fx.client(name, &files, i, names.len(), addr);
        clients.push(tokio::spawn(async move {
            let mut work = TrainingWork::new();
            cohort_client::node::run(&config, &mut work).await
        }));
    }
    let report = coordinator.run(std::future::pending()).await.unwrap();
    let mut digests = Vec::new();
    for c in clients {
        let node = c.await.unwrap().unwrap();
        assert_eq!(node.rounds_trained.len(), 8);
        digests.push(parameters_sha256(&node.final_model));
    }
    assert_eq!(report.history.len(), 8);
    let final_metrics = report.history.last().unwrap().metrics.clone().unwrap();
    let accuracy = final_metrics.get("accuracy").unwrap();
    assert!(accuracy >= 0.93, "federated accuracy {accuracy}");
    // Three slices, one per hospital, each evaluated on its own held-out rows.
    assert_eq!(report.history.last().unwrap().slices.len(), 3);
    // Every node holds exactly the coordinator's final model.
    let expected = parameters_sha256(&report.global);
    assert!(digests.iter().all(|d| *d == expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlp_regression_federation_with_fedprox_learns_the_diabetes_target() {
    use cohort_core::config::{Schema, StrategyConfig};
    use cohort_core::model::TaskKind;
    let names = ["clinic-a", "clinic-b"];
    let mut fx = Fixture::new(&names, 12);
    let csv =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/diabetes.csv"))
            .unwrap();
    let mut lines = csv.lines();
    fx.header = lines.next().unwrap().split(',').map(str::to_owned).collect();
    // Scale the target to unit range so plain SGD is well conditioned.
    let target = fx.header.iter().position(|h| h == "progression").unwrap();
    fx.rows = lines
        .map(|l| {
            let mut cells: Vec<String> = l.split(',').map(str::to_owned).collect();
            cells[target] = (cells[target].parse::<f64>().unwrap() / 100.0).to_string();
            cells.join(",")
        })
        .collect();
    fx.coordinator.schema = Schema {
        features: fx.header.iter().filter(|h| *h != "progression").cloned().collect(),
        label: "progression".into(),
        task: TaskKind::Regression,
        classes: None,
        bounds: None,
        label_bounds: None,
    };
    fx.coordinator.model.hidden = vec![16];
    fx.coordinator.training.learning_rate = 0.02;
    fx.coordinator.training.local_epochs = 2;
    fx.coordinator.strategy = StrategyConfig::Fedprox { mu: 0.01 };
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let config = fx.client(name, &fx.issue(name), i, names.len(), addr);
        clients.push(tokio::spawn(async move { cohort_client::node::run(&config, &mut TrainingWork::new()).await }));
    }
    let report = coordinator.run(std::future::pending()).await.unwrap();
    for c in clients {
        c.await.unwrap().unwrap();
    }
    let first = report.history.first().unwrap().metrics.clone().unwrap();
    let last = report.history.last().unwrap().metrics.clone().unwrap();
    let r2 = last.get("r2").unwrap();
    // A linear model reaches R² ≈ 0.5 on this data and predicting the mean scores 0. On the ~90 held-out rows
    // the federated MLP scored 0.17–0.53 over 13 runs (training draws from the OS, and each node's held-out rows
    // depend on its fresh node secret); it must learn a real signal.
    assert!(r2 > 0.1, "final R² {r2}");
    assert!(last.get("mse").unwrap() < first.get("mse").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_evaluates_every_version_on_its_own_test_set() {
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let mut fx = Fixture::new(&names, 3);
    // The hospitals hold rows i % 4 = 0, 1, 2; the coordinator's test set is rows i % 4 = 3.
    let test_rows: Vec<&str> =
        fx.rows.iter().enumerate().filter(|(i, _)| i % 4 == 3).map(|(_, r)| r.as_str()).collect();
    let test_path = fx.dir.path().join("central-test.csv");
    std::fs::write(&test_path, format!("{}\n{}\n", fx.header.join(","), test_rows.join("\n"))).unwrap();
    fx.coordinator.central_test_set = Some(test_path);
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let config = fx.client(name, &fx.issue(name), i, 4, addr);
        clients.push(tokio::spawn(async move { cohort_client::node::run(&config, &mut TrainingWork::new()).await }));
    }
    let report = coordinator.run(std::future::pending()).await.unwrap();
    for c in clients {
        c.await.unwrap().unwrap();
    }
    let registry = cohort_coordinator::registry::Registry::open(&fx.coordinator.data_dir).unwrap();
    let versions = registry.list(None).unwrap();
    assert_eq!(versions.len(), 3);
    for v in &versions {
        let central = v.central.as_ref().expect("central metrics on every version");
        // Central metrics are kept apart from the hospitals' slices and their weighted aggregate.
        assert_eq!(central.examples, test_rows.len() as u64);
        assert_eq!(v.slices.len(), 3);
    }
    let last = versions.last().unwrap().central.clone().unwrap();
    assert!(last.get("accuracy").unwrap() >= 0.9, "central accuracy {:?}", last.get("accuracy"));
    assert_eq!(report.history.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_test_set_that_does_not_fit_the_schema_is_a_clear_error() {
    let mut fx = Fixture::new(&["hospital-a"], 1);
    let path = fx.dir.path().join("bad-test.csv");
    std::fs::write(&path, "mean_radius,malignant\n1.0,0\n").unwrap();
    fx.coordinator.central_test_set = Some(path);
    let err = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap_err().to_string();
    assert!(err.contains("central test set") && err.contains("mean_texture"), "{err}");
}
