//! `cohort privacy`: ε of a DP-SGD schedule, noise calibration, and a node's budget.

use crate::args::PrivacyCommand;
use cohort_core::ledger::Mechanism;
use cohort_dp::accountant::{self, Delta, NoiseMultiplier, SampleRate, SampledGaussian};

pub(crate) fn run(command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Epsilon { sample_rate, noise_multiplier, steps, delta, accountant: kind, json } => {
            let kind = kind.kind();
            let epsilon = accountant::epsilon_for(
                SampleRate::new(sample_rate)?,
                NoiseMultiplier::new(noise_multiplier)?,
                steps,
                Delta::new(delta)?,
                kind,
            )?
            .get();
            if json {
                let out = serde_json::json!({
                    "epsilon": epsilon,
                    "delta": delta,
                    "accountant": kind.short_name(),
                    "accountant_version": kind.version(),
                    "sample_rate": sample_rate,
                    "noise_multiplier": noise_multiplier,
                    "steps": steps,
                });
                println!("{out}");
            } else {
                let name = kind.short_name().to_uppercase();
                println!(
                    "ε = {epsilon:.4} at δ = {delta:e} ({name}; q = {sample_rate}, σ = {noise_multiplier}, {steps} steps)"
                );
            }
        }
        PrivacyCommand::Calibrate { target_epsilon, sample_rate, steps, delta, accountant: kind, json } => {
            let kind = kind.kind();
            let sigma = accountant::calibrate_with(kind, target_epsilon, delta, sample_rate, steps)?;
            let achieved = accountant::epsilon_with(kind, &[SampledGaussian { q: sample_rate, sigma, steps }], delta)?;
            if json {
                let out = serde_json::json!({
                    "noise_multiplier": sigma,
                    "epsilon": achieved,
                    "target_epsilon": target_epsilon,
                    "delta": delta,
                    "sample_rate": sample_rate,
                    "steps": steps,
                    "accountant": kind.short_name(),
                    "accountant_version": kind.version(),
                });
                println!("{out}");
            } else {
                let name = kind.short_name().to_uppercase();
                println!(
                    "σ = {sigma:.4} gives ε = {achieved:.4} ≤ {target_epsilon} at δ = {delta:e} ({name}; q = {sample_rate}, {steps} steps)"
                );
            }
        }
        PrivacyCommand::Budget { config, json } => {
            let config = cohort_core::config::ClientConfig::load(&config)?;
            let ledger = cohort_client::ledger::Ledger::open(&config.data_dir)?;
            let spent = cohort_client::privacy::cumulative_epsilon(ledger.records(), None, config.privacy.delta)?;
            let budget = config.privacy.epsilon_budget;
            let count = |m: Mechanism| ledger.records().iter().filter(|r| r.body.mechanism == m).count();
            let (rounds, declines) = (count(Mechanism::DpSgd), count(Mechanism::Decline));
            let releases = count(Mechanism::OpenDpCount)
                + count(Mechanism::OpenDpHistogram)
                + count(Mechanism::OpenDpFeatureStats)
                + count(Mechanism::OpenDpEvaluation);
            if json {
                let out = serde_json::json!({
                    "node": config.name, "epsilon_budget": budget, "epsilon_spent": spent,
                    "epsilon_remaining": (budget - spent).max(0.0), "delta": config.privacy.delta,
                    "dp_sgd_rounds": rounds, "declined_rounds": declines, "opendp_releases": releases, "ledger_records": ledger.records().len(),
                    "accountant": accountant::ACCOUNTANT_NAME,
                });
                println!("{out}");
            } else {
                println!(
                    "node {}: spent ε = {spent:.4} of {budget} (remaining {:.4}) at δ = {:e}",
                    config.name,
                    (budget - spent).max(0.0),
                    config.privacy.delta
                );
                println!(
                    "  {rounds} DP-SGD rounds, {declines} declined, {releases} OpenDP releases; ledger verified ({} records)",
                    ledger.records().len()
                );
            }
        }
    }
    Ok(())
}
