//! The compliance report as Markdown: tables per client, per client's ε series and per model version.

use super::{mechanism_name, verification_line};
use cohort_coordinator::audit::ComplianceReport;
use std::fmt::Write as _;

pub(super) fn markdown(d: &ComplianceReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Privacy compliance report\n");
    let _ = writeln!(s, "## Verification\n\n{}\n", verification_line(&d.verification));
    for w in &d.verification.warnings {
        let _ = writeln!(s, "- warning: {w}");
    }
    let _ = writeln!(s, "Accountant: {}  \nComposition: {}\n", d.accountant, d.composition_rule);
    let _ = writeln!(s, "## Clients\n");
    let _ = writeln!(
        s,
        "| Client | Budget ε | Spent ε | Recomputed ε | Remaining ε | δ | DP-SGD | Releases | Declined | Verified |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &d.clients {
        let _ = writeln!(
            s,
            "| {} | {} | {:.6} | {} | {:.6} | {:e} | {} | {} | {} | {} |",
            md_escape(&c.node),
            c.budget,
            c.spent,
            c.recomputed_spent.map_or_else(|| "-".to_owned(), |e| format!("{e:.6}")),
            c.remaining,
            c.delta,
            c.dp_sgd_records,
            c.releases,
            c.declined,
            if c.verified { "yes" } else { "no" }
        );
    }
    for c in &d.clients {
        let _ = writeln!(s, "\n### ε over rounds: {}\n", md_escape(&c.node));
        let _ = writeln!(s, "| Seq | Round | Mechanism | Cumulative ε |");
        let _ = writeln!(s, "|---|---|---|---|");
        for p in &c.series {
            let round = p.round.map_or_else(|| "-".to_owned(), |r| r.to_string());
            let _ = writeln!(s, "| {} | {round} | {} | {:.6} |", p.seq, mechanism_name(p.mechanism), p.epsilon);
        }
    }
    let _ = writeln!(s, "\n## Model versions\n");
    if d.versions.is_empty() {
        let _ = writeln!(s, "No model versions were given.");
    } else {
        let _ = writeln!(s, "| Model | Version | Round | Clients (cumulative ε) |");
        let _ = writeln!(s, "|---|---|---|---|");
        for v in &d.versions {
            let clients: Vec<String> = v.clients.iter().map(|(c, e)| format!("{} ({e:.6})", md_escape(c))).collect();
            let _ = writeln!(s, "| {} | {} | {} | {} |", md_escape(&v.name), v.version, v.round, clients.join(", "));
        }
    }
    s
}

pub(super) fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
