//! Dispatch of subcommands to the library crates.

use crate::args::{BenchCommand, Command, PkiCommand, RoleArg};
use anyhow::Context;
use cohort_core::config::{ClientConfig, CoordinatorConfig};
use cohort_core::lock::DirLock;
use cohort_core::pki::{self, IssueRequest, Overwrite, Role};

pub(crate) async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Simulate(args) => crate::simulate::run(*args).await,
        Command::Models(command) => crate::models::run(command),
        Command::Audit(command) => crate::audit::run(command),
        Command::Privacy(command) => crate::privacy::run(command),
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Predict(args) => crate::serve::predict(args).await,
        Command::Bench(BenchCommand::Serving { concurrency, requests, rows, json }) => {
            let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
            let report = crate::serve::bench(size(concurrency), size(requests), size(rows)).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "serving, {} requests of {} row(s) at concurrency {} (KServe V2 REST over loopback):",
                    report.requests, report.rows_per_request, report.concurrency
                );
                println!("  throughput      {:.0} requests/s", report.throughput_rps);
                println!("  latency         p50 {:.3} ms, p99 {:.3} ms", report.p50_ms, report.p99_ms);
                println!("  in process      p50 {:.1} µs per predict (same rows, no HTTP)", report.direct_p50_us);
                println!("  HTTP / direct   {:.1}x at p50", report.http_over_direct_p50);
                if report.failed > 0 {
                    println!("  FAILED          {} requests", report.failed);
                }
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Secagg { params, clients, max_colluders, json }) => {
            let report = tokio::task::spawn_blocking(move || {
                crate::secagg_bench::run_with_colluders(params, clients, max_colluders)
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "secure aggregation, {params} parameters × {clients} clients (threshold {}, sums of ≥ {} updates, safe against \
                     the coordinator plus {} colluding hospitals):",
                    report.threshold, report.min_participants, report.max_colluders
                );
                println!(
                    "  upload                {:.3} bytes/parameter (f32: {:.0})",
                    report.bytes_per_param, report.plaintext_bytes_per_param
                );
                println!("  client encryption     {:.1} M parameters/s", report.encrypt_params_per_sec / 1e6);
                println!("  coordinator aggregate {:.1} M parameters/s", report.aggregate_params_per_sec / 1e6);
                println!("  threshold decryption  {:.3} s", report.decrypt_seconds);
                println!(
                    "  max decode error      {:.3e} (quantization step {:.3e})",
                    report.max_abs_error, report.quantization_step
                );
                println!(
                    "  flooding              statistical distance ≤ 2^{:.1} over the model",
                    report.statistical_distance_log2
                );
                println!(
                    "  secure / plaintext round: {:.1}x compute, {:.2}x with 100 Mbit/s uploads",
                    report.secure_to_plaintext_round_ratio, report.secure_to_plaintext_round_ratio_with_upload
                );
            }
            Ok(())
        }
        Command::Pki(PkiCommand::Init { out, federation, force }) => {
            pki::init_ca_with(&out, &federation, overwrite(force))?;
            println!("created federation CA for {federation:?} in {}", out.display());
            println!("  certificate: {}", out.join(pki::CA_CERT_FILE).display());
            println!("  private key: {} (mode 0600; keep it offline)", out.join(pki::CA_KEY_FILE).display());
            Ok(())
        }
        Command::Pki(PkiCommand::Issue { ca, name, role, san, days, out, force }) => {
            let role = match role {
                RoleArg::Coordinator => Role::Coordinator,
                RoleArg::Client => Role::Client,
            };
            let request = IssueRequest::valid_for_days(&name, role, &san, days);
            let files = pki::issue_with(&ca, &request, &out, overwrite(force))?;
            println!("issued {} certificate for {name:?}, valid {days} days", role.as_str());
            println!("  certificate: {}", files.cert.display());
            println!("  private key: {} (mode 0600)", files.key.display());
            println!("  federation CA: {}", files.ca_cert.display());
            Ok(())
        }
        Command::Coordinator { config } => {
            let config = CoordinatorConfig::load(&config)?;
            let _lock = DirLock::acquire(&config.data_dir)?;
            let report = run_coordinator(&config, false).await?;
            let dir = config.data_dir.join("models");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{}-{}.f32", config.model.name, report.version));
            std::fs::write(&path, cohort_core::model::parameters_to_bytes(&report.global))
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "federation finished after {} rounds: global model {} saved to {} (sha256 {})",
                report.history.len(),
                report.version,
                path.display(),
                cohort_core::model::parameters_sha256(&report.global)
            );
            Ok(())
        }
        Command::Client { config } => {
            let config = ClientConfig::load(&config)?;
            let _lock = DirLock::acquire(&config.data_dir)?;
            let report = if config.privacy.enabled {
                let mut work = cohort_client::privacy::PrivateWork::new(
                    &config.name,
                    config.data_dir.clone(),
                    config.privacy.clone(),
                );
                let report = cohort_client::node::run(&config, &mut work).await?;
                if let Some(spent) = work.spent() {
                    println!(
                        "privacy: spent ε = {spent:.4} of {} at δ = {:e}",
                        config.privacy.epsilon_budget, config.privacy.delta
                    );
                }
                report
            } else {
                cohort_client::node::run(&config, &mut cohort_client::work::TrainingWork::new()).await?
            };
            let digest = cohort_core::model::parameters_sha256(&report.final_model);
            println!(
                "federation finished: trained {} rounds, declined {}; final model {} sha256 {digest}",
                report.rounds_trained.len(),
                report.rounds_declined.len(),
                report.final_version
            );
            Ok(())
        }
    }
}

fn overwrite(force: bool) -> Overwrite {
    if force { Overwrite::Replace } else { Overwrite::Refuse }
}

/// Runs a coordinator with a progress display until the federation finishes or Ctrl-C.
pub(crate) async fn run_coordinator(
    config: &CoordinatorConfig,
    quiet: bool,
) -> anyhow::Result<cohort_coordinator::RunReport> {
    let coordinator = cohort_coordinator::Coordinator::bind(config).await?;
    let addr = coordinator.local_addr().context("reading the bound address")?;
    if !quiet {
        eprintln!("coordinator for federation {:?} listening on {addr} (mutual TLS)", config.federation_id);
    }
    run_coordinator_bound(coordinator, config.training.rounds, quiet).await
}

/// Runs an already bound coordinator with a progress display until the federation finishes or Ctrl-C.
pub(crate) async fn run_coordinator_bound(
    coordinator: cohort_coordinator::Coordinator,
    rounds: u64,
    quiet: bool,
) -> anyhow::Result<cohort_coordinator::RunReport> {
    if let (Some(guarantee), false) = (coordinator.guarantee(), quiet) {
        eprintln!("{guarantee}");
    }
    let progress = tokio::spawn(crate::progress::follow(coordinator.subscribe(), rounds, quiet));
    let report = coordinator.run(interrupted()).await?;
    let _ = progress.await;
    if let Some(stopped) = &report.stopped {
        anyhow::bail!(
            "the federation stopped before its last round: {stopped}. Check that at least training.min_clients \
             nodes are online and willing to train (the log above names the nodes that declined or were absent), \
             then start the coordinator again: it resumes after round {}",
            report.history.last().map_or(report.resumed_after, |s| s.round)
        );
    }
    if !report.finished {
        return Err(Interrupted::of(&report).into());
    }
    Ok(report)
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A coordinator shut down by a signal before its last round: what the registry holds, and how to resume.
/// `main` exits with [`Interrupted::EXIT_CODE`] for it.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: the coordinator stopped on a signal during round {round}, which was abandoned (nothing of it was \
     saved). {saved} Start the coordinator again with the same config to resume after round {resume}; the clients \
     keep reconnecting for 2 minutes, so leave them running"
)]
pub(crate) struct Interrupted {
    round: u64,
    saved: String,
    resume: u64,
}

impl Interrupted {
    /// The exit code of an interrupted coordinator (128 + SIGINT, the shell's convention).
    pub(crate) const EXIT_CODE: u8 = 130;

    fn of(report: &cohort_coordinator::RunReport) -> Self {
        // A restart resumes after the last round the registry checkpointed: this run's last registered version, or
        // the round this run itself resumed after.
        let (resume, saved) = match report.recorded.last() {
            Some(r) => (
                r.record.round.0,
                format!("The registry holds version {} (round {}).", r.record.version, r.record.round),
            ),
            None if report.resumed_after.0 > 0 => (
                report.resumed_after.0,
                format!("This run registered nothing new after round {}.", report.resumed_after),
            ),
            None => (0, "No version was registered yet.".to_owned()),
        };
        Self { round: resume + 1, saved, resume }
    }
}
