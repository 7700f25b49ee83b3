//! The files a simulation leaves in its output directory, and its summary for people and programs.
//!
//! - `metrics.csv`: one row per round × client, the client's exact metrics of that round's model.
//! - `summary.json`: the settings, the final figures and one entry per round.
//! - `partition.json`: each client's row indices into the data set (so that other tools can replay the same
//!   partition) and label counts; `partition.csv` the same counts as a table.
//! - `report.html`: one self-contained page with inline SVG charts.

use crate::report::chart::{Band, PALETTE, Series, heatmap, line_chart};
use crate::report::html::{CSS, esc};
use anyhow::Context;
use cohort_sim::{RoundRow, SimulationReport};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// Clients shown in the partition heatmap; the CSV and JSON have them all.
const HEATMAP_CLIENTS: usize = 100;

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes one run's files into `dir`.
pub(super) fn write(dir: &Path, r: &SimulationReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&dir.join("metrics.csv"), &metrics_csv(r))?;
    let mut summary = summary("", r);
    summary["rounds"] = serde_json::to_value(&r.rounds)?;
    write_file(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    write_file(&dir.join("partition.json"), &serde_json::to_string(&r.partitions)?)?;
    write_file(&dir.join("partition.csv"), &partition_csv(r))?;
    write_file(&dir.join("report.html"), &report_html(r))
}

/// Writes the overlay of several runs into `dir`: `report.html` and `summary.json`.
pub(super) fn write_comparison(dir: &Path, runs: &[(String, SimulationReport)]) -> anyhow::Result<()> {
    let summaries: Vec<serde_json::Value> = runs.iter().map(|(l, r)| summary(l, r)).collect();
    write_file(&dir.join("summary.json"), &serde_json::to_string_pretty(&serde_json::json!({ "runs": summaries }))?)?;
    write_file(&dir.join("report.html"), &comparison_html(runs))
}

/// The run's headline figures as JSON.
pub(super) fn summary(label: &str, r: &SimulationReport) -> serde_json::Value {
    let last = r.rounds.last();
    serde_json::json!({
        "label": if label.is_empty() { None } else { Some(label) },
        "settings": r.settings,
        "insecure_seed": r.insecure_seed,
        "primary_metric": r.primary_metric,
        r.primary_metric.clone(): r.final_score(),
        "loss": last.and_then(|l| l.exact.get("loss")),
        "federated": last.map(|l| &l.federated),
        "max_epsilon": r.max_epsilon(),
        "model_sha256": r.model_sha256,
        "model_version": r.model_version,
        "rounds_completed": r.rounds.len(),
        "wall_seconds": r.wall_seconds,
        "simulated_seconds": r.simulated_seconds,
        "dropped": r.dropped(),
        "late": r.late(),
        "failed_attempts": r.failed_attempts,
        "rounds": r.rounds.iter().map(|row| serde_json::json!({
            "round": row.round,
            "contributors": row.contributors,
            "dropped": row.dropped,
            "late": row.late,
            "simulated_seconds": row.simulated_seconds,
        })).collect::<Vec<_>>(),
        "work_dir": r.work_dir,
    })
}

/// The run's headline in one line.
pub(super) fn summary_line(label: &str, r: &SimulationReport) -> String {
    let score = r.final_score().map_or_else(|| "n/a".to_owned(), |s| format!("{s:.4}"));
    let epsilon = r.max_epsilon().map_or_else(|| "no DP".to_owned(), |e| format!("max ε {e:.3}"));
    let prefix = if label.is_empty() { String::new() } else { format!("{label}: ") };
    let simulated = r.simulated_seconds.map_or_else(String::new, |s| {
        let (dropped, late, failed) = (r.dropped(), r.late(), r.failed_attempts.len());
        format!(" ({} simulated; {dropped} dropouts, {late} late, {failed} failed attempts)", super::clock(s))
    });
    format!(
        "{prefix}{} clients, {} rounds in {:.1} s{simulated}: {} {score}, {epsilon}, model v{} sha256 {}{}",
        r.settings.clients,
        r.rounds.len(),
        r.wall_seconds,
        r.primary_metric,
        r.model_version,
        r.model_sha256,
        if r.insecure_seed { " (seeded: NOT private)" } else { "" }
    )
}

fn metric_names(r: &SimulationReport) -> Vec<String> {
    let names: BTreeSet<&String> = r.client_rounds.iter().flat_map(|c| c.metrics.keys()).collect();
    names.into_iter().cloned().collect()
}

fn metrics_csv(r: &SimulationReport) -> String {
    let names = metric_names(r);
    let mut s = format!("round,client,holdout_rows,epsilon,{}\n", names.join(","));
    for c in &r.client_rounds {
        let values: Vec<String> =
            names.iter().map(|n| c.metrics.get(n).map_or_else(String::new, |v| v.to_string())).collect();
        let epsilon = c.epsilon.map_or_else(String::new, |e| e.to_string());
        let _ = writeln!(s, "{},{},{},{epsilon},{}", c.round, c.client, c.holdout_rows, values.join(","));
    }
    s
}

fn partition_csv(r: &SimulationReport) -> String {
    let labels = r.partitions.iter().map(|p| p.labels.len()).max().unwrap_or(0);
    let columns: Vec<String> = (0..labels).map(|l| format!("label_{l}")).collect();
    let mut s = format!("client,train_rows,holdout_rows,{}\n", columns.join(","));
    for p in &r.partitions {
        let counts: Vec<String> = (0..labels).map(|l| p.labels.get(l).copied().unwrap_or(0).to_string()).collect();
        let _ = writeln!(s, "{},{},{},{}", p.name, p.train.len(), p.holdout.len(), counts.join(","));
    }
    s
}

fn points(rounds: &[RoundRow], value: impl Fn(&RoundRow) -> Option<f64>) -> Vec<(f64, f64)> {
    rounds.iter().map(|r| (r.round as f64, value(r).unwrap_or(f64::NAN))).collect()
}

/// The `q` quantile of sorted `values` (nearest rank).
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(title)
    )
}

fn insecure_banner(r: &SimulationReport) -> String {
    if r.insecure_seed {
        format!(
            "<p class=\"bad\">Seeded run (seed {}): DP noise and every other random choice are reproducible. These results \
             are NOT private and must not stand for a private run.</p>\n",
            r.settings.seed.unwrap_or_default()
        )
    } else {
        String::new()
    }
}

/// The virtual-time conditions in one line.
fn conditions_line(r: &SimulationReport) -> String {
    let c = &r.settings.conditions;
    format!(
        "compute {} examples/s (median, log-normal σ {}), bandwidth {} Mbit/s (σ {}), latency {} ms, dropout rate {}",
        c.compute.median,
        c.compute.sigma,
        c.bandwidth_mbps.median,
        c.bandwidth_mbps.sigma,
        c.latency_ms,
        c.dropout_rate
    )
}

fn report_html(r: &SimulationReport) -> String {
    let primary = &r.primary_metric;
    let mut s = String::from("<h1>Federation simulation</h1>\n");
    s.push_str(&insecure_banner(r));
    let set = &r.settings;
    let strategy = serde_json::to_value(&set.strategy)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let model = if set.hidden.is_empty() {
        "one layer".to_owned()
    } else {
        format!("MLP {}", set.hidden.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"))
    };
    let rows = [
        ("data set", set.dataset.clone()),
        ("clients", set.clients.to_string()),
        ("clients per round", set.clients_per_round.map_or_else(|| "all".to_owned(), |k| k.to_string())),
        ("rounds", format!("{} of {}", r.rounds.len(), set.rounds)),
        ("strategy", strategy),
        ("model", model),
        ("partition", set.partition.clone()),
        (
            "privacy",
            set.epsilon
                .map_or_else(|| "off (no DP)".to_owned(), |e| format!("DP-SGD, budget ε = {e} per client, δ = 1e-5")),
        ),
        ("secure aggregation", if set.secure_aggregation { "threshold RLWE" } else { "none" }.to_owned()),
        ("transport", format!("{:?}", set.transport).to_lowercase()),
        (
            primary.as_str(),
            r.final_score().map_or_else(
                || "n/a".to_owned(),
                |v| format!("{v:.4} (exact, pooled over every client's held-out rows)"),
            ),
        ),
        ("largest ε spent", r.max_epsilon().map_or_else(|| "n/a".to_owned(), |e| format!("{e:.4}"))),
        ("final model", format!("v{} sha256 {}", r.model_version, r.model_sha256)),
        ("wall time", format!("{:.2} s", r.wall_seconds)),
        (
            "simulated time",
            r.simulated_seconds.map_or_else(
                || "n/a (real time over mTLS)".to_owned(),
                |t| format!("{} for the whole federation, on the virtual clock", super::clock(t)),
            ),
        ),
        ("conditions", conditions_line(r)),
        (
            "rounds close",
            format!(
                "when every selected client answered, or at the {} s deadline with at least {} updates",
                set.round_deadline_secs, set.min_clients
            ),
        ),
        (
            "dropouts, stragglers",
            format!(
                "{} dropped out, {} late messages refused, {} failed round attempts (retried)",
                r.dropped(),
                r.late(),
                r.failed_attempts.len()
            ),
        ),
    ];
    s.push_str("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    s.push_str("</table>\n");
    let exact = Series {
        name: format!("{primary} (exact)"),
        colour: PALETTE[0],
        points: points(&r.rounds, |x| x.exact.get(primary).copied()),
        dashed: false,
    };
    let federated = Series {
        name: "as the federation measured it".into(),
        colour: PALETTE[1],
        points: points(&r.rounds, |x| x.federated.get(primary).copied()),
        dashed: true,
    };
    let _ = writeln!(
        s,
        "<h2>Global model</h2>\n<p class=\"muted\">Exact: pooled over every client's held-out rows (the simulator owns all the data). Dashed: the pooled evaluations the clients released to the coordinator (DP releases under DP, hence noisy).</p>"
    );
    s.push_str(&line_chart(&format!("global {primary}"), "round", primary, &[exact, federated], &[]));
    let loss = Series {
        name: "loss (exact)".into(),
        colour: PALETTE[0],
        points: points(&r.rounds, |x| x.exact.get("loss").copied()),
        dashed: false,
    };
    s.push_str(&line_chart("global loss", "round", "loss", &[loss], &[]));
    let band = |name: &str, lo: f64, hi: f64, opacity: f64| Band {
        name: name.to_owned(),
        colour: PALETTE[0],
        opacity,
        points: r
            .rounds
            .iter()
            .map(|x| (x.round as f64, quantile(&x.client_scores, lo), quantile(&x.client_scores, hi)))
            .collect(),
    };
    let median = Series {
        name: "median client".into(),
        colour: PALETTE[0],
        points: points(&r.rounds, |x| Some(quantile(&x.client_scores, 0.5))),
        dashed: false,
    };
    let _ = writeln!(s, "<h2>Spread over clients</h2>");
    s.push_str(&line_chart(
        &format!("per-client {primary}"),
        "round",
        primary,
        &[median],
        &[band("min–max", 0.0, 1.0, 0.15), band("quartiles", 0.25, 0.75, 0.3)],
    ));
    if r.max_epsilon().is_some() {
        let _ = writeln!(s, "<h2>Privacy</h2>");
        let spent = Series {
            name: "largest client ε".into(),
            colour: PALETTE[1],
            points: points(&r.rounds, |x| x.max_epsilon),
            dashed: false,
        };
        s.push_str(&line_chart("ε spent", "round", "ε", &[spent], &[]));
    }
    if r.simulated_seconds.is_some() {
        let _ = writeln!(
            s,
            "<h2>Virtual time</h2>\n<p class=\"muted\">When each round's model was aggregated on the simulated clock, and how many selected clients dropped out of it or answered after its deadline.</p>"
        );
        let at = Series {
            name: "simulated minutes".into(),
            colour: PALETTE[0],
            points: points(&r.rounds, |x| x.simulated_seconds.map(|t| t / 60.0)),
            dashed: false,
        };
        s.push_str(&line_chart("simulated time at aggregation", "round", "minutes", &[at], &[]));
        let count = |name: &str, colour, f: fn(&RoundRow) -> usize| Series {
            name: name.into(),
            colour,
            points: points(&r.rounds, |x| Some(f(x) as f64)),
            dashed: false,
        };
        let dropped = count("dropped out", PALETTE[1], |x| x.dropped);
        let late = count("late", PALETTE[2], |x| x.late);
        s.push_str(&line_chart("clients missing from each round", "round", "clients", &[dropped, late], &[]));
    }
    let _ = writeln!(s, "<h2>Partition</h2>");
    let shown = &r.partitions[..r.partitions.len().min(HEATMAP_CLIENTS)];
    if shown.len() < r.partitions.len() {
        let _ = writeln!(
            s,
            "<p class=\"muted\">The first {} of {} clients; partition.csv has them all.</p>",
            shown.len(),
            r.partitions.len()
        );
    }
    let labels = shown.iter().map(|p| p.labels.len()).max().unwrap_or(0);
    let names: Vec<String> = shown.iter().map(|p| p.name.clone()).collect();
    let columns: Vec<String> = (0..labels).map(|l| l.to_string()).collect();
    let values: Vec<Vec<f64>> =
        shown.iter().map(|p| (0..labels).map(|l| p.labels.get(l).copied().unwrap_or(0) as f64).collect()).collect();
    s.push_str(&heatmap("rows per label and client", &names, &columns, &values));
    page("Federation simulation", &s)
}

fn comparison_html(runs: &[(String, SimulationReport)]) -> String {
    let mut s = String::from("<h1>Federation simulations compared</h1>\n");
    if let Some((_, first)) = runs.first() {
        s.push_str(&insecure_banner(first));
    }
    s.push_str(
        "<table>\n<tr><th>run</th><th>score</th><th>largest ε</th><th>wall time</th><th>model sha256</th></tr>\n",
    );
    for (label, r) in runs {
        let _ = writeln!(
            s,
            "<tr><td><a href=\"{}/report.html\">{}</a></td><td>{} {}</td><td>{}</td><td>{:.2} s</td><td>{}</td></tr>",
            esc(&super::slug(label)),
            esc(label),
            esc(&r.primary_metric),
            r.final_score().map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}")),
            r.max_epsilon().map_or_else(|| "no DP".to_owned(), |e| format!("{e:.4}")),
            r.wall_seconds,
            esc(&r.model_sha256)
        );
    }
    s.push_str("</table>\n");
    let overlay = |value: &dyn Fn(&RoundRow) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .zip(PALETTE.iter().cycle())
            .map(|((label, r), colour)| Series {
                name: label.clone(),
                colour,
                points: points(&r.rounds, value),
                dashed: false,
            })
            .collect()
    };
    let primary = runs.first().map_or("accuracy", |(_, r)| r.primary_metric.as_str()).to_owned();
    s.push_str(&line_chart(
        &format!("global {primary} (exact)"),
        "round",
        &primary,
        &overlay(&|x| x.exact.get(&primary).copied()),
        &[],
    ));
    s.push_str(&line_chart("global loss (exact)", "round", "loss", &overlay(&|x| x.exact.get("loss").copied()), &[]));
    if runs.iter().any(|(_, r)| r.max_epsilon().is_some()) {
        s.push_str(&line_chart("largest client ε", "round", "ε", &overlay(&|x| x.max_epsilon), &[]));
    }
    page("Federation simulations compared", &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!((quantile(&v, 0.0), quantile(&v, 0.5), quantile(&v, 1.0)), (1.0, 3.0, 5.0));
        assert!(quantile(&[], 0.5).is_nan());
    }
}
