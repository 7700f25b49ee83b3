//! The human-readable forms of `cohort models list`, `show` and `diff` (the JSON forms, with `--json`, are the
//! registry's own types serialized).

use cohort_coordinator::registry::{MetricDelta, VersionDetails, VersionDiff, VersionRecord};
use cohort_core::metrics::EvalMetrics;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A figure, or `-` when absent.
fn figure(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

/// The largest ε any client had spent when the version was registered, as `ε ≤ x`, or `-`.
fn spend(r: &VersionRecord) -> String {
    r.privacy.values().map(|p| p.epsilon).reduce(f64::max).map_or_else(|| "-".to_owned(), |e| format!("ε ≤ {e:.2}"))
}

/// One line of `models list`.
pub(crate) fn line(r: &VersionRecord) -> String {
    let metric =
        r.metrics.as_ref().and_then(|m| m.primary()).map_or_else(|| "-".to_owned(), |(n, v)| format!("{n} {v:.4}"));
    format!(
        "{:<20} {:>5}  {:<10} round {:>3}  parent {:<5} {:<18} {:<10} clients {}  sha256 {}…",
        r.name,
        r.version.to_string(),
        r.stage.to_string(),
        r.round.0,
        r.parent.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        metric,
        spend(r),
        r.clients.len(),
        &r.sha256[..12.min(r.sha256.len())]
    )
}

/// `name  value  name  value …` of a metrics map.
fn values(m: &EvalMetrics) -> String {
    m.values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join("  ")
}

/// `models show`: the version, its metrics, slices and spend, then its stage history and gate decisions.
pub(crate) fn show(d: &VersionDetails) -> String {
    let r = &d.record;
    let mut out = String::new();
    let parent = r.parent.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let _ = writeln!(out, "{} {}  {}  round {}  parent {parent}", r.name, r.version, r.stage, r.round);
    let _ = writeln!(out, "  sha256     {} ({} bytes)", r.sha256, r.size_bytes);
    let _ = writeln!(out, "  registered {}  strategy {}", r.created_at, r.strategy);
    let _ = writeln!(out, "  clients    {}", r.clients.join(", "));
    let _ = writeln!(out, "metrics");
    let mut row = |label: String, text: String| {
        let _ = writeln!(out, "  {label:<46} {text}");
    };
    row(
        "federated (pooled from the clients' reports)".into(),
        r.metrics.as_ref().map_or_else(|| "none reported".to_owned(), values),
    );
    if let Some(central) = &r.central {
        row(format!("central test set ({} rows)", central.examples), values(central));
    }
    for (client, m) in &r.slices {
        row(format!("{client} (its own report)"), values(m));
    }
    if !r.privacy.is_empty() {
        let _ = writeln!(out, "privacy spend when registered");
        for (client, p) in &r.privacy {
            let _ = writeln!(out, "  {client:<20} ε {:.4}  δ {:e}", p.epsilon, p.delta);
        }
    }
    let _ = writeln!(out, "stage history");
    for e in &d.stage_events {
        let from = e.from.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let _ = writeln!(out, "  {}  {:<8} {from} → {}  by {}: {}", e.at, e.action, e.to, e.actor, e.reason);
    }
    if !d.gate_decisions.is_empty() {
        let _ = writeln!(out, "gate decisions");
        for g in &d.gate_decisions {
            let verdict = if g.decision.promote { "promote" } else { "keep out" };
            let against =
                g.compared_with.map_or_else(|| "no production version".to_owned(), |v| format!("against {v}"));
            let _ = writeln!(out, "  {}  {verdict} ({against}): {}", g.at, g.decision.summary());
        }
    }
    out
}

/// Rows `metric  a  b  change` of metric deltas, indented by `indent`.
fn delta_rows(out: &mut String, deltas: &BTreeMap<String, MetricDelta>, indent: &str) {
    for (name, d) in deltas {
        let change = d.delta.map_or_else(|| "-".to_owned(), |c| format!("{c:+.4}"));
        let _ = writeln!(out, "{indent}{name:<12} {:>10} {:>10} {change:>10}", figure(d.a), figure(d.b));
    }
}

/// `models diff`: metric changes, then what else differs.
pub(crate) fn diff(d: &VersionDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} → {}", d.a, d.b);
    let _ = writeln!(out, "  {:<12} {:>10} {:>10} {:>10}", "metric", "a", "b", "change");
    delta_rows(&mut out, &d.metrics, "  ");
    for (client, deltas) in &d.slices {
        let _ = writeln!(out, "  slice {client}");
        delta_rows(&mut out, deltas, "    ");
    }
    match &d.strategy {
        Some((a, b)) => {
            let _ = writeln!(out, "strategy {a} → {b}");
        }
        None => {
            let _ = writeln!(out, "strategy unchanged");
        }
    }
    for c in &d.hyperparameters {
        let show = |v: &Option<serde_json::Value>| v.as_ref().map_or_else(|| "absent".to_owned(), |v| v.to_string());
        let _ = writeln!(out, "hyperparameter {}: {} → {}", c.path, show(&c.a), show(&c.b));
    }
    if !d.clients_added.is_empty() {
        let _ = writeln!(out, "clients added: {}", d.clients_added.join(", "));
    }
    if !d.clients_removed.is_empty() {
        let _ = writeln!(out, "clients removed: {}", d.clients_removed.join(", "));
    }
    for (client, (a, b)) in &d.privacy {
        let eps = |p: &Option<cohort_coordinator::registry::PrivacySpend>| figure(p.as_ref().map(|p| p.epsilon));
        let _ = writeln!(out, "privacy spend of {client}: ε {} → {}", eps(a), eps(b));
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ =
        writeln!(out, "weights changed: {}  config changed: {}", yes(d.weights_changed), yes(d.config_hash_changed));
    out
}
