//! The compliance report as one self-contained HTML page (inline CSS and SVG, no scripts, no external assets).

use super::svg::svg_chart;
use super::verification_line;
use cohort_coordinator::audit::ComplianceReport;
use std::fmt::Write as _;

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:60em}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
th{background:#f3f3f3}.ok{color:#166534;font-weight:bold}.bad{color:#b91c1c;font-weight:bold}\
.muted{color:#666;font-size:.9em}svg{background:#fff;border:1px solid #ddd}";

pub(super) fn html(d: &ComplianceReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>Privacy compliance report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(s, "<h1>Privacy compliance report</h1>");
    let class = if d.verification.is_ok() { "ok" } else { "bad" };
    let _ = writeln!(s, "<h2>Verification</h2>\n<p class=\"{class}\">{}</p>", esc(&verification_line(&d.verification)));
    if !d.verification.warnings.is_empty() {
        let _ = writeln!(s, "<ul>");
        for w in &d.verification.warnings {
            let _ = writeln!(s, "<li>warning: {}</li>", esc(w));
        }
        let _ = writeln!(s, "</ul>");
    }
    let _ = writeln!(
        s,
        "<p class=\"muted\">Accountant: {}<br/>Composition: {}</p>",
        esc(&d.accountant),
        esc(&d.composition_rule)
    );
    let _ = writeln!(
        s,
        "<h2>Clients</h2>\n<table>\n<tr><th>Client</th><th>Budget ε</th><th>Spent ε</th><th>Recomputed ε</th><th>Remaining ε</th><th>δ</th><th>DP-SGD</th><th>Releases</th><th>Declined</th><th>Verified</th></tr>"
    );
    for c in &d.clients {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.6}</td><td>{}</td><td>{:.6}</td><td>{:e}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&c.node),
            c.budget,
            c.spent,
            c.recomputed_spent.map_or_else(|| "-".to_owned(), |e| format!("{e:.6}")),
            c.remaining,
            c.delta,
            c.dp_sgd_records,
            c.releases,
            c.declined,
            if c.verified { "ok" } else { "bad" },
            if c.verified { "yes" } else { "no" }
        );
    }
    let _ = writeln!(s, "</table>");
    for c in &d.clients {
        let _ = writeln!(s, "<h3>ε over rounds: {}</h3>", esc(&c.node));
        s.push_str(&svg_chart(c));
        s.push('\n');
    }
    let _ = writeln!(s, "<h2>Model versions</h2>");
    if d.versions.is_empty() {
        let _ = writeln!(s, "<p>No model versions were given.</p>");
    } else {
        let _ = writeln!(
            s,
            "<table>\n<tr><th>Model</th><th>Version</th><th>Round</th><th>Clients (cumulative ε)</th></tr>"
        );
        for v in &d.versions {
            let clients: Vec<String> = v.clients.iter().map(|(c, e)| format!("{} ({e:.6})", esc(c))).collect();
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.name),
                v.version,
                v.round,
                clients.join(", ")
            );
        }
        let _ = writeln!(s, "</table>");
    }
    s.push_str("</body>\n</html>\n");
    s
}
