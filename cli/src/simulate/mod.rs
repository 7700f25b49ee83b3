//! `cohort simulate`: settings from a TOML file and flags, one run or a `--compare` sweep, a progress bar, and
//! the outputs (`metrics.csv`, `summary.json`, `report.html`, `partition.csv`) in `--out`.

mod output;

pub(crate) use output::quantile;

use crate::args::SimulateArgs;
use anyhow::{Context, bail};
use cohort_core::config::StrategyConfig;
use cohort_sim::{Partition, Simulation, Source, Transport, Watch};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::Path;

pub(crate) async fn run(flags: SimulateArgs) -> anyhow::Result<()> {
    let args = match &flags.config {
        Some(path) => merge(load(path)?, flags),
        None => flags,
    };
    let base = simulation(&args)?;
    let variants = match &args.compare {
        Some(spec) => sweep(&base, spec)?,
        None => vec![(String::new(), base)],
    };
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            tempfile::Builder::new().prefix("cohort-sim-").tempdir().context("creating an output directory")?.keep()
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize().unwrap_or(out);
    let _lock = cohort_core::lock::DirLock::acquire(&out)?;
    if let Some(seed) = args.seed {
        eprintln!(
            "WARNING: --seed {seed}: DP noise, the partition and every other random choice are reproducible; this run \
             is NOT private and its results must not stand for a private one"
        );
    }
    eprintln!("cohort simulate: output in {}", out.display());
    let mut reports = Vec::new();
    for (label, simulation) in variants {
        let dir = if label.is_empty() { out.clone() } else { out.join(slug(&label)) };
        let rounds = simulation.rounds;
        let name = if label.is_empty() { String::new() } else { format!("{label}: ") };
        let simulation = if args.keep_federation { simulation.work_dir(dir.join("federation")) } else { simulation };
        let mut progress = None;
        let report = simulation
            .run_observed(|watch| progress = Some(tokio::spawn(follow(watch, rounds, name))))
            .await
            .with_context(|| {
                if label.is_empty() {
                    "the simulation failed".to_owned()
                } else {
                    format!("the simulation {label} failed")
                }
            })?;
        if let Some(progress) = progress {
            let _ = progress.await;
        }
        output::write(&dir, &report)?;
        reports.push((label, report));
    }
    if reports.len() > 1 {
        output::write_comparison(&out, &reports)?;
    }
    if args.json {
        let summaries: Vec<serde_json::Value> = reports.iter().map(|(l, r)| output::summary(l, r)).collect();
        match &summaries[..] {
            [one] => println!("{one}"),
            _ => println!("{}", serde_json::json!({ "runs": summaries, "out": out })),
        }
    } else {
        for (label, r) in &reports {
            println!("{}", output::summary_line(label, r));
        }
        println!("report: {}", out.join("report.html").display());
    }
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<SimulateArgs> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: not a simulation config", path.display()))
}

/// The file's settings with every flag given on the command line in their place.
fn merge(file: SimulateArgs, flags: SimulateArgs) -> SimulateArgs {
    SimulateArgs {
        config: flags.config,
        dataset: flags.dataset.or(file.dataset),
        synthetic: flags.synthetic.or(file.synthetic),
        label: flags.label.or(file.label),
        clients: flags.clients.or(file.clients),
        rounds: flags.rounds.or(file.rounds),
        clients_per_round: flags.clients_per_round.or(file.clients_per_round),
        strategy: flags.strategy.or(file.strategy),
        model: flags.model.or(file.model),
        partition: flags.partition.or(file.partition),
        dp_epsilon: flags.dp_epsilon.or(file.dp_epsilon),
        no_dp: flags.no_dp || (file.no_dp && flags.dp_epsilon.is_none()),
        secure_aggregation: flags.secure_aggregation.or(file.secure_aggregation),
        seed: flags.seed.or(file.seed),
        transport: flags.transport.or(file.transport),
        local_epochs: flags.local_epochs.or(file.local_epochs),
        learning_rate: flags.learning_rate.or(file.learning_rate),
        batch_size: flags.batch_size.or(file.batch_size),
        dropout_rate: flags.dropout_rate.or(file.dropout_rate),
        compute: flags.compute.or(file.compute),
        bandwidth: flags.bandwidth.or(file.bandwidth),
        latency_ms: flags.latency_ms.or(file.latency_ms),
        round_deadline: flags.round_deadline.or(file.round_deadline),
        min_clients: flags.min_clients.or(file.min_clients),
        threads: flags.threads.or(file.threads),
        compare: flags.compare.or(file.compare),
        out: flags.out.or(file.out),
        keep_federation: flags.keep_federation || file.keep_federation,
        json: flags.json || file.json,
    }
}

fn simulation(args: &SimulateArgs) -> anyhow::Result<Simulation> {
    let source = match (&args.synthetic, &args.dataset) {
        (Some(spec), None) => Source::synthetic(spec)?,
        (Some(_), Some(_)) => bail!("give either dataset or synthetic, not both"),
        (None, dataset) => match dataset.as_deref().unwrap_or("breast_cancer").parse::<Source>()? {
            Source::Csv { path, .. } => Source::Csv { path, label: args.label.clone() },
            other => other,
        },
    };
    let mut s = Simulation::new(source);
    if let Some(n) = args.clients {
        s = s.clients(usize::try_from(n)?);
    }
    if let Some(r) = args.rounds {
        s = s.rounds(r);
    }
    if let Some(k) = args.clients_per_round {
        s = s.clients_per_round(usize::try_from(k)?);
    }
    if let Some(name) = &args.strategy {
        s = s.strategy(strategy(name)?);
    }
    if let Some(model) = &args.model {
        s = s.hidden(hidden(model)?);
    }
    if let Some(p) = &args.partition {
        s = s.partition(p.parse::<Partition>()?);
    }
    s = match (args.no_dp, args.dp_epsilon) {
        (true, _) => s.no_dp(),
        (false, Some(e)) if e.is_finite() && e > 0.0 => s.dp_epsilon(e),
        (false, Some(e)) => bail!("dp-epsilon must be a positive number, not {e}"),
        (false, None) => s,
    };
    s = s.secure_aggregation(args.secure_aggregation.as_deref() == Some("threshold-rlwe"));
    if let Some(seed) = args.seed {
        s = s.insecure_seed(seed);
    }
    s = s.transport(match args.transport.as_deref() {
        Some("mtls") => Transport::Mtls,
        Some("memory") | None => Transport::Memory,
        Some(other) => bail!("unknown transport {other:?}: expected memory or mtls"),
    });
    let mut conditions = s.conditions;
    if let Some(rate) = args.dropout_rate {
        conditions.dropout_rate = rate;
    }
    if let Some(spec) = &args.compute {
        conditions.compute = spec.parse().context("--compute")?;
    }
    if let Some(spec) = &args.bandwidth {
        conditions.bandwidth_mbps = spec.parse().context("--bandwidth")?;
    }
    if let Some(ms) = args.latency_ms {
        conditions.latency_ms = ms;
    }
    conditions.validate()?;
    s = s.conditions(conditions);
    if let Some(seconds) = args.round_deadline {
        s = s.round_deadline(seconds);
    }
    if let Some(min) = args.min_clients {
        s = s.min_clients(usize::try_from(min)?);
    }
    if let Some(threads) = args.threads {
        s = s.threads(usize::try_from(threads)?);
    }
    let epochs = args.local_epochs.unwrap_or(s.local_epochs);
    let lr = args.learning_rate.unwrap_or(s.learning_rate);
    let batch = args.batch_size.map_or(Ok(s.batch_size), usize::try_from)?;
    if !(lr.is_finite() && lr > 0.0) {
        bail!("learning-rate must be a positive number, not {lr}");
    }
    Ok(s.local_training(epochs, lr, batch))
}

fn strategy(name: &str) -> anyhow::Result<StrategyConfig> {
    match name {
        "fedavg" | "fedprox" | "fedadam" | "median" | "trimmed-mean" => {
            Ok(serde_json::from_value(serde_json::json!({ "name": name }))?)
        }
        other => bail!("unknown strategy {other:?}: expected fedavg, fedprox, fedadam, median or trimmed-mean"),
    }
}

/// `logistic` (no hidden layer) or `mlp:W1,W2,...`.
fn hidden(model: &str) -> anyhow::Result<Vec<usize>> {
    let bad = || anyhow::anyhow!("unknown model {model:?}: expected logistic or mlp:W1,W2,... such as mlp:64,64");
    match model.split_once(':') {
        None if model == "logistic" => Ok(Vec::new()),
        Some(("mlp", widths)) => {
            let widths: Vec<usize> =
                widths.split(',').map(|w| w.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
            if widths.is_empty() || widths.contains(&0) {
                return Err(bad());
            }
            Ok(widths)
        }
        _ => Err(bad()),
    }
}

/// The runs of `--compare FIELD=A,B,...`: `base` with FIELD set to each value, labelled `FIELD=value`.
fn sweep(base: &Simulation, spec: &str) -> anyhow::Result<Vec<(String, Simulation)>> {
    let (field, values) = spec.split_once('=').context(
        "--compare takes FIELD=A,B,... with FIELD one of strategy, partition, dp-epsilon, clients-per-round, \
         dropout-rate",
    )?;
    let values: Vec<&str> = values.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
    if values.len() < 2 {
        bail!("--compare {spec}: give at least two values to compare");
    }
    values
        .into_iter()
        .map(|v| {
            let s = base.clone();
            let s = match field.trim() {
                "strategy" => s.strategy(strategy(v)?),
                "partition" => s.partition(v.parse::<Partition>()?),
                "dp-epsilon" => match v {
                    "none" | "off" => s.no_dp(),
                    _ => s.dp_epsilon(
                        v.parse::<f64>()
                            .ok()
                            .filter(|e| e.is_finite() && *e > 0.0)
                            .with_context(|| format!("--compare: ε {v:?} is not a positive number (or none)"))?,
                    ),
                },
                "clients-per-round" => {
                    s.clients_per_round(v.parse().with_context(|| format!("--compare: {v:?} is not a client count"))?)
                }
                "dropout-rate" => {
                    let rate = v.parse().with_context(|| format!("--compare: {v:?} is not a dropout rate"))?;
                    let conditions = cohort_sim::Conditions { dropout_rate: rate, ..s.conditions };
                    conditions.validate()?;
                    s.conditions(conditions)
                }
                other => bail!(
                    "--compare: cannot sweep {other:?}; sweep strategy, partition, dp-epsilon, clients-per-round or \
                     dropout-rate"
                ),
            };
            Ok((format!("{}={v}", field.trim()), s))
        })
        .collect()
}

/// A directory name for a sweep label.
fn slug(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// The progress bar of one run: the round, the clients done in it, the federation's accuracy and the largest ε.
async fn follow(mut watch: Watch, rounds: u64, label: String) {
    use cohort_coordinator::round::Event;
    use tokio::sync::broadcast::error::RecvError;
    let bar = ProgressBar::with_draw_target(Some(rounds), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix}round {pos}/{len} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let (mut selected, mut done) = (0usize, 0usize);
    let (mut accuracy, mut epsilon) = ("-".to_owned(), "off".to_owned());
    loop {
        match watch.events.recv().await {
            Ok(Event::RoundStarted { selected: s, .. }) => (selected, done) = (s.len(), 0),
            Ok(Event::UpdateAccepted { .. }) => done += 1,
            Ok(Event::Aggregated { contributors, .. }) => done = contributors.len(),
            Ok(Event::Evaluated(summary)) => {
                bar.set_position(summary.round.0);
                accuracy = summary
                    .metrics
                    .as_ref()
                    .and_then(|m| m.get("accuracy").or_else(|| m.get("r2")))
                    .map_or_else(|| "-".to_owned(), |a| format!("{a:.4}"));
                if let Some(e) = watch.max_epsilon() {
                    epsilon = format!("{e:.3}");
                }
            }
            Ok(Event::Finished { .. }) | Err(RecvError::Closed) => {
                bar.finish_and_clear();
                return;
            }
            Ok(Event::Stopped(stopped)) => {
                bar.abandon_with_message(format!("stopped: {stopped}"));
                return;
            }
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
        }
        let simulated = watch.simulated_seconds().map_or_else(String::new, |s| format!("  simulated {}", clock(s)));
        bar.set_message(format!(
            "clients {done}/{selected} of {}  federated accuracy {accuracy}  max ε {epsilon}{simulated}",
            watch.clients
        ));
    }
}

/// Simulated seconds as `1h02m03s`, `2m03s` or `3.4s`.
pub(crate) fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    match (whole / 3600, whole % 3600 / 60, whole % 60) {
        (0, 0, _) => format!("{seconds:.1}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn simulated_time_reads_as_a_clock() {
        assert_eq!(super::clock(3.44), "3.4s");
        assert_eq!(super::clock(123.0), "2m03s");
        assert_eq!(super::clock(3723.2), "1h02m03s");
    }
}
