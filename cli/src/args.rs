//! Command-line arguments. Each subcommand is declared once, with its help text and an example.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit codes, as `main` returns them (kept in `cohort --help`).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: an error, a refusal (a certificate, an existing CA or node key, a data directory in use by another
     process, a key file readable by others) or a privacy ledger that does not verify (`audit verify`, and
     `audit report`, which still writes its report); the message says what to do
  2  usage error: an unknown option, or a missing or invalid argument
  130  a coordinator interrupted by Ctrl-C or SIGTERM: the round in progress is abandoned, the message says which
     version the registry holds, and running it again resumes";

/// Privacy-preserving federated learning: DP-SGD at each hospital, secure aggregation, mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// More logs (-v info, -vv debug). COHORT_LOG overrides, e.g. COHORT_LOG=cohort=debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a whole federation on this machine: a coordinator and three hospitals over loopback mutual TLS, on
    /// the breast-cancer data set.
    ///
    /// Example: cohort demo --rounds 10 --json
    Demo(DemoArgs),
    /// Simulate a federation of many clients on this machine, through the real protocol core, DP and secure
    /// aggregation, with a report (metrics.csv, summary.json, report.html) in --out.
    ///
    /// Example: cohort simulate --dataset digits --clients 100 --rounds 20 --partition dirichlet:0.5 --no-dp --seed 7
    Simulate(Box<SimulateArgs>),
    /// Manage the federation's certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run the coordinator.
    ///
    /// Example: cohort coordinator --config examples/coordinator.toml
    Coordinator {
        /// Coordinator config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Differential-privacy accounting.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// Inspect and manage the versioned model registry.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Export, verify and report the privacy ledger.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the registry's models: KServe V2 (Open Inference Protocol) and TF Serving V1 REST, with a new
    /// production version picked up without a restart, and an inference log in the data directory.
    ///
    /// Example: cohort serve --data-dir demo-data --listen 127.0.0.1:8080
    Serve(ServeArgs),
    /// Ask a model server for one prediction per row of a CSV file (columns named after the model's features;
    /// other columns are ignored).
    ///
    /// Example: cohort predict --server http://127.0.0.1:8080 --model breast-cancer --input rows.csv --json
    Predict(PredictArgs),
    /// Run a client node.
    ///
    /// Example: cohort client --config examples/client.toml
    Client {
        /// Client config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The data directory whose registry is served (a coordinator's, or `cohort demo --data-dir`'s).
    #[arg(long)]
    pub(crate) data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// How often to re-read the registry for new versions and promotions, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) poll_ms: u64,
    /// A file holding a bearer token that every request except the health checks must carry.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// The most rows one request may carry.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_rows: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PredictArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) server: String,
    /// NAME, or NAME:VERSION (without a version, the production version answers).
    #[arg(long)]
    pub(crate) model: String,
    /// CSV file with a header row; the columns named after the model's features are sent, in its order.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// One JSON object per line: `row`, `class` and `probabilities` (or `value` for regression), `model`,
    /// `version`.
    #[arg(long)]
    pub(crate) json: bool,
    /// A file holding the server's bearer token.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Directory for the PKI, configs, data splits and results (default: a new temporary directory, kept).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Number of rounds (at least 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rounds: u64,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Turn differential privacy off (by default each hospital runs DP-SGD within its own budget).
    #[arg(long)]
    pub(crate) no_dp: bool,
    /// Each hospital's ε budget for the whole run (δ = 1e-5).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) epsilon: f64,
    /// INSECURE: seed every random choice (DP noise and sampling, the releases, the node secrets, the
    /// coordinator's initial model and selections) for a run that replays bit for bit (same `model_sha256`).
    /// The run then gives no privacy.
    #[arg(long)]
    pub(crate) insecure_seed: Option<u64>,
    /// Secure aggregation: `threshold-rlwe` (the coordinator sees only the sum of the updates) or `none`.
    #[arg(long, default_value = "threshold-rlwe", value_parser = ["none", "threshold-rlwe"])]
    pub(crate) secure_aggregation: String,
}

/// `cohort simulate`: every setting may come from `--config` (TOML, the same names with `_` for `-`) and be
/// overridden by its flag.
#[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SimulateArgs {
    /// A TOML file of settings (keys: dataset, synthetic, label, clients, rounds, clients_per_round, strategy,
    /// model, partition, dp_epsilon, no_dp, secure_aggregation, seed, transport, local_epochs, learning_rate,
    /// batch_size, dropout_rate, compute, bandwidth, latency_ms, round_deadline, min_clients, threads, out,
    /// keep_federation); flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// The data set: breast_cancer, digits, diabetes, or PATH.csv (default: breast_cancer).
    #[arg(long)]
    pub(crate) dataset: Option<String>,
    /// Synthetic data instead: ROWS_PER_CLIENT,FEATURES,CLASSES (CLASSES 0 for regression), e.g. 1000,50,2.
    #[arg(long, conflicts_with = "dataset")]
    pub(crate) synthetic: Option<String>,
    /// The label column of a CSV data set (default: its last column).
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// Clients (default 10; a column partition makes one per value).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) clients: Option<u64>,
    /// Rounds (default 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rounds: Option<u64>,
    /// Clients sampled per round for training, and again for evaluation (default: all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) clients_per_round: Option<u64>,
    /// fedavg, fedprox, fedadam, median or trimmed-mean (default fedavg; the robust median and trimmed mean
    /// need plaintext updates).
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// logistic (one layer: logistic, softmax or linear regression) or mlp:W1,W2,... (default logistic).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// iid, dirichlet:ALPHA, shards:K, quantity:POWER or column:NAME (default iid).
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// Each client's ε budget for DP-SGD and its releases, at δ = 1e-5 (default 3).
    #[arg(long, conflicts_with = "no_dp")]
    pub(crate) dp_epsilon: Option<f64>,
    /// No differential privacy.
    #[arg(long)]
    pub(crate) no_dp: bool,
    /// threshold-rlwe or none (default none).
    #[arg(long, value_parser = ["none", "threshold-rlwe"])]
    pub(crate) secure_aggregation: Option<String>,
    /// INSECURE: seed every random choice (the partition, the data, DP noise, selections) for a run that replays
    /// bit for bit at any thread count. The run then gives no privacy. Without it randomness comes from the OS.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// memory (default) or mtls (the same run over loopback mutual TLS).
    #[arg(long, value_parser = ["memory", "mtls"])]
    pub(crate) transport: Option<String>,
    /// Local epochs per round (default 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) local_epochs: Option<u32>,
    /// Local learning rate (default 0.5).
    #[arg(long)]
    pub(crate) learning_rate: Option<f64>,
    /// Local batch size (default 32).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch_size: Option<u64>,
    /// The probability that a client selected for a round drops out of it, in virtual time (default 0). A
    /// dropped client goes silent for one round deadline: its update (or, in a secure round, its partial
    /// decryption) is lost.
    #[arg(long)]
    pub(crate) dropout_rate: Option<f64>,
    /// Each client's training speed in examples per second, log-normal across clients: MEDIAN or MEDIAN,SIGMA
    /// (default 2000,0.5).
    #[arg(long)]
    pub(crate) compute: Option<String>,
    /// Each client's link bandwidth in Mbit/s, log-normal across clients: MEDIAN or MEDIAN,SIGMA (default 20,1).
    #[arg(long)]
    pub(crate) bandwidth: Option<String>,
    /// One-way latency between a client and the coordinator, in milliseconds (default 40).
    #[arg(long)]
    pub(crate) latency_ms: Option<f64>,
    /// Seconds a round (and each stage of a secure round) waits for stragglers (default 120, a deployment's
    /// default); measured on the virtual clock.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) round_deadline: Option<u64>,
    /// The fewest updates a round can be aggregated from (default: half of each round's sample, rounded up).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) min_clients: Option<u64>,
    /// Threads the clients run on (default: one per core); results are the same for any number.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) threads: Option<u64>,
    /// Sweep one setting and overlay the runs: FIELD=A,B,... with FIELD one of strategy, partition,
    /// dp-epsilon, clients-per-round, dropout-rate, e.g. --compare dp-epsilon=1,3,8.
    #[arg(long)]
    pub(crate) compare: Option<String>,
    /// Output directory (default: a new temporary directory, kept). It gets metrics.csv, summary.json,
    /// report.html, partition.json and partition.csv.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Keep the federation's own files (PKI, ledgers, registry) in OUT/federation, for `cohort audit` and
    /// `cohort models`; by default they live in a temporary, memory-backed directory and are removed.
    #[arg(long)]
    pub(crate) keep_federation: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Create a federation CA.
    ///
    /// Example: cohort pki init --out pki/ca --federation st-mary-network
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Federation name.
        #[arg(long)]
        federation: String,
        /// Replace an existing CA in --out. Every certificate it issued then stops working.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate signed by the federation CA.
    ///
    /// Example: cohort pki issue --ca pki/ca --name hospital-a --role client --out pki/hospital-a
    Issue {
        /// CA directory made by `cohort pki init`.
        #[arg(long)]
        ca: PathBuf,
        /// Node name (the certificate's CN; the coordinator's roster lists client names).
        #[arg(long)]
        name: String,
        /// Node role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Extra subject alternative names (DNS names or IPs) the node is reached at.
        #[arg(long)]
        san: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing certificate and key in --out.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RoleArg {
    Coordinator,
    Client,
}

/// Subcommands of `cohort models`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// List versions with lineage and stage.
    ///
    /// Example: cohort models list --data-dir /tmp/cohort-demo --json
    List {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this model.
        #[arg(long)]
        name: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one version with its stage history and gate decisions.
    ///
    /// Example: cohort models show --data-dir D --version 3
    Show {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Model name (default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// Version ("3" or "v3").
        #[arg(long, value_parser = crate::models::parse_version)]
        version: cohort_coordinator::registry::Version,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Compare two versions: metrics, slices, hyperparameters, clients.
    ///
    /// Example: cohort models diff --data-dir D 2 5
    Diff {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Model name (default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// First version.
        #[arg(value_parser = crate::models::parse_version)]
        a: cohort_coordinator::registry::Version,
        /// Second version.
        #[arg(value_parser = crate::models::parse_version)]
        b: cohort_coordinator::registry::Version,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Promote a version to production by hand (recorded with who and why).
    ///
    /// Example: cohort models promote --data-dir D --version 4 --reason "validated offline"
    Promote {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Model name (default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// Version to promote.
        #[arg(long, value_parser = crate::models::parse_version)]
        version: cohort_coordinator::registry::Version,
        /// Who, recorded in the registry (default: $USER, else $LOGNAME; without any of them the command is
        /// refused).
        #[arg(long)]
        actor: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Restore the previous production version (recorded with who and why).
    ///
    /// Example: cohort models rollback --data-dir D --reason "regression at hospital-b"
    Rollback {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Model name (default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// Who, recorded in the registry (default: $USER, else $LOGNAME; without any of them the command is
        /// refused).
        #[arg(long)]
        actor: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Export a version as one self-describing JSON file: weights, preprocessing, schema, lineage.
    ///
    /// Example: cohort models export --data-dir D --out model.json
    Export {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Model name (default: the only one).
        #[arg(long)]
        name: Option<String>,
        /// Version (default: production, else the latest).
        #[arg(long, value_parser = crate::models::parse_version)]
        version: Option<cohort_coordinator::registry::Version>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

impl ModelsCommand {
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        match self {
            Self::List { data_dir, .. }
            | Self::Show { data_dir, .. }
            | Self::Diff { data_dir, .. }
            | Self::Promote { data_dir, .. }
            | Self::Rollback { data_dir, .. }
            | Self::Export { data_dir, .. } => data_dir,
        }
    }
}

/// Subcommands of `cohort bench`.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// One secure-aggregation round in memory (encrypt, aggregate, threshold-decrypt), measured against
    /// plaintext f32 FedAvg of the same size in the same run.
    ///
    /// Example: cohort bench secagg --params 1000000 --clients 10 --json
    Secagg {
        /// Parameters per client.
        #[arg(long, default_value_t = 1_000_000)]
        params: usize,
        /// Number of clients (all are key holders).
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Hospitals assumed to collude with the coordinator: the threshold is ⌊(clients + c)/2⌋ + 1 and the
        /// smallest decryptable set c + 2.
        #[arg(long, default_value_t = 1)]
        max_colluders: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The model server under load: plaintext KServe V2 REST latency (p50, p99) and throughput at a fixed
    /// concurrency, over loopback, for a 30-feature logistic model, against the same predictions made in
    /// process in the same run.
    ///
    /// Example: cohort bench serving --concurrency 8 --requests 20000 --json
    Serving {
        /// Requests in flight at once (one keep-alive connection each).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
        concurrency: u64,
        /// Requests in all.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        requests: u64,
        /// Rows per request.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        rows: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Subcommands of `cohort privacy`.
#[derive(Debug, Subcommand)]
pub(crate) enum PrivacyCommand {
    /// ε of DP-SGD with Poisson sampling (PLD accountant by default; RDP with --accountant rdp).
    ///
    /// Example: cohort privacy epsilon --sample-rate 0.01 --noise-multiplier 1.0 --steps 1000 --delta 1e-5
    Epsilon {
        /// Poisson sampling rate q.
        #[arg(long)]
        sample_rate: f64,
        /// Noise multiplier σ.
        #[arg(long)]
        noise_multiplier: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        /// δ.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Accountant.
        #[arg(long, value_enum, default_value_t = AccountantArg::Pld)]
        accountant: AccountantArg,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The smallest noise multiplier that meets a target ε (errs on the safe side).
    ///
    /// Example: cohort privacy calibrate --target-epsilon 3 --sample-rate 0.01 --steps 1000 --delta 1e-5
    Calibrate {
        /// Target ε.
        #[arg(long)]
        target_epsilon: f64,
        /// Poisson sampling rate q.
        #[arg(long)]
        sample_rate: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        /// δ.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Accountant.
        #[arg(long, value_enum, default_value_t = AccountantArg::Pld)]
        accountant: AccountantArg,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A client node's privacy budget: spent and remaining, from its verified ledger.
    ///
    /// Example: cohort privacy budget --config examples/client.toml
    Budget {
        /// Client config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Which accountant computes ε.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AccountantArg {
    /// Rényi DP (Mironov 2017; Balle et al. 2020 conversion).
    Rdp,
    /// Privacy loss distributions (connect-the-dots, Doroshenko et al. 2022); the default, and the tighter.
    Pld,
}

impl AccountantArg {
    /// The accountant kind.
    pub(crate) fn kind(self) -> cohort_dp::accountant::AccountantKind {
        match self {
            Self::Rdp => cohort_dp::accountant::AccountantKind::Rdp,
            Self::Pld => cohort_dp::accountant::AccountantKind::Pld,
        }
    }
}

/// Subcommands of `cohort audit`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Write the ledger of a data directory as JSON Lines, one record per line.
    ///
    /// Example: cohort audit export --data-dir /var/lib/cohort --out ledger.jsonl
    Export {
        /// A coordinator's data directory (its copy of every node's ledger) or a client node's (its own).
        #[arg(long)]
        data_dir: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the hash chains and signatures, then recompute every cumulative ε with the accountant. Exits
    /// non-zero and names the first bad record on any mismatch.
    ///
    /// Example: cohort audit verify ledger.jsonl --data-dir /var/lib/cohort
    Verify {
        /// An exported ledger (JSON Lines).
        #[arg(required_unless_present = "data_dir")]
        file: Option<PathBuf>,
        /// Verify the ledger of this data directory (without FILE), and check every chain's end against its
        /// model registry, which records each client's spend per version (records removed from the end of a
        /// chain are invisible to the chain alone). With FILE, only the registry check uses it.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The federation CA certificate: with --data-dir of a coordinator, every chain must be signed by the
        /// ledger key that its node bound to a certificate of this CA (the bindings the coordinator keeps in
        /// `ledgers/*.binding.json`). Without it, each chain's first signer is trusted.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Print the verdict as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A compliance report: per client budget, spent, remaining and ε over rounds; per model version the
    /// clients and ε that went into it; and the verification result.
    ///
    /// Example: cohort audit report --data-dir /var/lib/cohort --format html --out privacy.html
    Report {
        /// A coordinator's or a client node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormatArg::Html)]
        format: ReportFormatArg,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Format of `cohort audit report`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ReportFormatArg {
    /// Self-contained HTML with inline SVG charts.
    Html,
    /// Markdown.
    Md,
    /// JSON.
    Json,
}
