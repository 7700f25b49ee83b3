//! A federation fixture for end-to-end tests: a PKI made at test time, a coordinator on 127.0.0.1:0, and client
//! configs over the breast-cancer data split among hospitals.
#![allow(dead_code)]

use cohort_core::config::{
    ClientConfig, ClientSecureAggregation, CoordinatorConfig, CoordinatorEndpoint, DataSection, ModelSection,
    PrivacySection, Schema, SecureAggregationMode, SecureAggregationSection, StrategyConfig, TlsSection,
    TrainingSection,
};
use cohort_core::model::TaskKind;
use cohort_core::pki::{self, IssueRequest, NodeFiles, Role};
use std::path::{Path, PathBuf};

pub(crate) const FEDERATION: &str = "e2e";

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) coordinator: CoordinatorConfig,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<String>,
}

pub(crate) fn tls(files: &NodeFiles) -> TlsSection {
    TlsSection { ca_cert: files.ca_cert.clone(), cert: files.cert.clone(), key: files.key.clone() }
}

impl Fixture {
    /// A CA, a coordinator certificate and a coordinator config with `roster`.
    pub(crate) fn new(roster: &[&str], rounds: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        pki::init_ca(&ca, FEDERATION).unwrap();
        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let files = pki::issue(
            &ca,
            &IssueRequest::valid_for_days("coordinator", Role::Coordinator, &sans, 1),
            &dir.path().join("coordinator"),
        )
        .unwrap();
        let csv =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/breast_cancer.csv"))
                .unwrap();
        let mut lines = csv.lines();
        let header: Vec<String> = lines.next().unwrap().split(',').map(str::to_owned).collect();
        let rows: Vec<String> = lines.map(str::to_owned).collect();
        let features: Vec<String> = header.iter().filter(|h| *h != "malignant").cloned().collect();
        let coordinator = CoordinatorConfig {
            federation_id: FEDERATION.into(),
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("coordinator-data"),
            tls: tls(&files),
            roster: roster.iter().map(|s| (*s).to_owned()).collect(),
            schema: Schema {
                features,
                label: "malignant".into(),
                task: TaskKind::Binary,
                classes: None,
                bounds: None,
                label_bounds: None,
            },
            model: ModelSection { name: "bc".into(), hidden: Vec::new() },
            training: TrainingSection {
                rounds,
                local_epochs: 1,
                learning_rate: 0.1,
                batch_size: 16,
                min_clients: 1,
                round_deadline_secs: 30,
                clients_per_round: None,
                max_round_failures: 5,
            },
            strategy: StrategyConfig::Fedavg,
            secure_aggregation: SecureAggregationSection::default(),
            gate: None,
            central_test_set: None,
            admission: Default::default(),
            influence: Default::default(),
        };
        Self { dir, coordinator, header, rows }
    }

    /// Declares feature bounds in the schema (the published data's ranges, widened by 10%), as a federation
    /// must for DP-SGD: without them each node would standardize with its own exact statistics.
    pub(crate) fn declare_bounds(&mut self) {
        let unscaled = Schema { bounds: None, ..self.coordinator.schema.clone() };
        let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/breast_cancer.csv");
        self.coordinator.schema.bounds =
            Some(cohort_core::data::load_csv(&published, &unscaled).unwrap().widened_ranges(0.1));
    }

    pub(crate) fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issues a client certificate from this federation's CA.
    pub(crate) fn issue(&self, name: &str) -> NodeFiles {
        pki::issue(
            &self.ca_dir(),
            &IssueRequest::valid_for_days(name, Role::Client, &[], 1),
            &self.dir.path().join(name),
        )
        .unwrap()
    }

    /// Writes the rows `[from, to)` (interleaved selection `i % of == part`) as this client's CSV and returns its config.
    pub(crate) fn client(
        &self,
        name: &str,
        files: &NodeFiles,
        part: usize,
        of: usize,
        addr: std::net::SocketAddr,
    ) -> ClientConfig {
        let path = self.dir.path().join(format!("{name}.csv"));
        let rows: Vec<&String> = self.rows.iter().enumerate().filter(|(i, _)| i % of == part).map(|(_, r)| r).collect();
        let body: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
        std::fs::write(&path, format!("{}\n{}\n", self.header.join(","), body.join("\n"))).unwrap();
        ClientConfig {
            name: name.into(),
            federation_id: FEDERATION.into(),
            coordinator: CoordinatorEndpoint { url: format!("https://{addr}"), server_name: Some("localhost".into()) },
            tls: tls(files),
            data: DataSection { path, holdout_fraction: 0.2, split_seed: 1 },
            data_dir: self.dir.path().join(format!("{name}-data")),
            privacy: PrivacySection { enabled: false, ..PrivacySection::default() },
            // Nodes require secure aggregation exactly when this federation's coordinator runs it.
            secure_aggregation: ClientSecureAggregation {
                required: self.coordinator.secure_aggregation.mode != SecureAggregationMode::None,
                ..ClientSecureAggregation::default()
            },
        }
    }
}
