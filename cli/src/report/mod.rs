//! Rendering of the privacy compliance report ([`ComplianceReport`], assembled and verified by
//! [`cohort_coordinator::audit`]) as HTML with inline SVG charts, Markdown, or JSON. Only the presentation lives
//! here; every figure comes from the audit.

pub(crate) mod chart;
pub(crate) mod html;
mod markdown;
mod svg;

use cohort_coordinator::audit::{AuditVerdict, ComplianceReport, VersionPrivacy};
use cohort_core::ledger::{LedgerRecord, Mechanism};
use std::collections::BTreeMap;

/// Output format of [`report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum ReportFormat {
    /// A self-contained HTML page with inline SVG charts.
    Html,
    /// Markdown.
    Markdown,
    /// Pretty-printed JSON of [`ComplianceReport`].
    Json,
}

/// Writes a compliance report: per client the budget, ε spent and remaining and a chart of ε over its records
/// (inline SVG in HTML, a table in Markdown, the points in JSON); per model version the clients and ε that went
/// into it; and the verification result. The three formats carry the same [`ComplianceReport`].
pub(crate) fn report(
    records: &[LedgerRecord],
    verdict: &AuditVerdict,
    budgets: &BTreeMap<String, f64>,
    versions: &[VersionPrivacy],
    format: ReportFormat,
) -> String {
    let data = ComplianceReport::new(records, verdict, budgets, versions);
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(&data).unwrap_or_default(),
        ReportFormat::Markdown => markdown::markdown(&data),
        ReportFormat::Html => html::html(&data),
    }
}

pub(super) fn verification_line(v: &AuditVerdict) -> String {
    match &v.failure {
        None => format!(
            "PASSED: {} records of {} node(s); every hash, link and signature is valid and every cumulative ε recomputes.",
            v.records,
            v.nodes.len()
        ),
        Some(f) => format!("FAILED: {f}"),
    }
}

pub(super) fn mechanism_name(m: Mechanism) -> String {
    serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{m:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_client::ledger::Ledger;
    use cohort_coordinator::audit::{cumulative_epsilon_after, verify_records};
    use cohort_core::ledger::RecordBody;
    use cohort_dp::accountant::{ACCOUNTANT_NAME, ACCOUNTANT_VERSION};

    /// A node's ledger written the way a client should: each cumulative ε by `cumulative_epsilon`.
    fn node_ledger(dir: &std::path::Path, node: &str, plan: &[Mechanism]) -> Vec<LedgerRecord> {
        let mut ledger = Ledger::open(&dir.join(node)).unwrap();
        for (round, &m) in plan.iter().enumerate() {
            let mut body = RecordBody {
                round: Some(round as u64 + 1),
                sample_rate: 0.01,
                noise_multiplier: 1.0,
                clip_norm: 1.0,
                steps: if m == Mechanism::Decline { 0 } else { 200 },
                delta: 1e-5,
                accountant: ACCOUNTANT_NAME.into(),
                accountant_version: ACCOUNTANT_VERSION.into(),
                epsilon_budget: 3.0,
                epsilon_spent: matches!(m, Mechanism::OpenDpCount | Mechanism::OpenDpHistogram).then_some(0.1),
                ..RecordBody::new(node, &"ab".repeat(32), m)
            };
            body.cumulative_epsilon = cumulative_epsilon_after(ledger.records(), &body).unwrap();
            ledger.append(body).unwrap();
        }
        ledger.records().to_vec()
    }

    fn two_nodes() -> (tempfile::TempDir, Vec<LedgerRecord>) {
        let dir = tempfile::tempdir().unwrap();
        let a = node_ledger(
            dir.path(),
            "hospital-a",
            &[Mechanism::OpenDpCount, Mechanism::DpSgd, Mechanism::DpSgd, Mechanism::Decline],
        );
        let b =
            node_ledger(dir.path(), "hospital-<b>", &[Mechanism::DpSgd, Mechanism::OpenDpHistogram, Mechanism::DpSgd]);
        // Interleave the two nodes, as in a coordinator's merged export.
        let mut all = Vec::new();
        for i in 0..a.len().max(b.len()) {
            all.extend(a.get(i).cloned());
            all.extend(b.get(i).cloned());
        }
        (dir, all)
    }

    /// Every opening tag has its closing tag, in order (void elements must be self-closed).
    fn balanced(html: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').ok_or("unterminated tag")? + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if open != name {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else {
                stack.push(tag.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
        if stack.is_empty() { Ok(()) } else { Err(format!("unclosed: {stack:?}")) }
    }

    #[test]
    fn reports_carry_the_same_data_in_every_format() {
        let (_dir, records) = two_nodes();
        let verdict = verify_records(&records);
        let budgets = BTreeMap::from([("hospital-a".to_owned(), 5.0)]);
        let versions = vec![VersionPrivacy {
            name: "sepsis".into(),
            version: 2,
            round: 3,
            clients: vec![("hospital-a".into(), 0.7), ("hospital-<b>".into(), 0.9)],
        }];
        let html = report(&records, &verdict, &budgets, &versions, ReportFormat::Html);
        balanced(&html).unwrap();
        assert_eq!(html.matches("<svg ").count(), 2);
        assert_eq!(html.matches("</svg>").count(), 2);
        assert!(html.contains("<polyline"));
        assert!(html.contains("PASSED"));
        assert!(html.contains("hospital-&lt;b&gt;") && !html.contains("hospital-<b>"));
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
        let json: serde_json::Value =
            serde_json::from_str(&report(&records, &verdict, &budgets, &versions, ReportFormat::Json)).unwrap();
        let client =
            |name: &str| json["clients"].as_array().unwrap().iter().find(|c| c["node"] == name).unwrap().clone();
        let a = client("hospital-a");
        assert_eq!(a["budget"], 5.0);
        assert_eq!(client("hospital-<b>")["budget"], 3.0); // from the ledger
        assert_eq!(a["series"].as_array().unwrap().len(), 4);
        let spent = a["spent"].as_f64().unwrap();
        assert!((a["remaining"].as_f64().unwrap() - (5.0 - spent)).abs() < 1e-12);
        assert_eq!(json["versions"][0]["clients"][1][0], "hospital-<b>");
        assert_eq!(json["verification"]["failure"], serde_json::Value::Null);
        let md = report(&records, &verdict, &budgets, &versions, ReportFormat::Markdown);
        assert!(md.contains("| hospital-a | 5 |") && md.contains("sepsis") && md.contains("PASSED"));
        // A failed verification shows in every format.
        let mut bad = records.clone();
        bad.remove(2); // hospital-a seq 1; its seq 2 is now line 4
        let verdict = verify_records(&bad);
        assert!(report(&bad, &verdict, &budgets, &versions, ReportFormat::Html).contains("FAILED"));
        assert!(report(&bad, &verdict, &budgets, &versions, ReportFormat::Markdown).contains("FAILED"));
        let json: serde_json::Value =
            serde_json::from_str(&report(&bad, &verdict, &budgets, &versions, ReportFormat::Json)).unwrap();
        assert_eq!(json["verification"]["failure"]["line"], 4, "{:?}", verdict.failure);
        assert_eq!(json["verification"]["failure"]["seq"], 2);
    }
}
