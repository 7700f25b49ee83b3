//! A client's cumulative ε as an inline SVG line chart.

use super::html::esc;
use super::mechanism_name;
use cohort_coordinator::audit::ClientPrivacy;
use cohort_core::ledger::Mechanism;
use std::fmt::Write as _;

/// A line chart of cumulative ε over the client's records (x: round, or seq for records without one), with the
/// budget as a dashed line. Plain SVG 1.1: no scripts, no external references.
pub(super) fn svg_chart(c: &ClientPrivacy) -> String {
    const W: f64 = 600.0;
    const H: f64 = 240.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 16.0;
    const B: f64 = 40.0;
    let xs: Vec<f64> = c.series.iter().map(|p| p.round.unwrap_or(p.seq) as f64).collect();
    let (x0, x1) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else if x0.is_finite() {
        (x0 - 1.0, x0 + 1.0)
    } else {
        (0.0, 1.0)
    };
    let top = c.series.iter().map(|p| p.epsilon).fold(c.budget, f64::max);
    let y1 = if top.is_finite() && top > 0.0 { top * 1.1 } else { 1.0 };
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y.clamp(0.0, y1) / y1) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"cumulative epsilon of {}\">",
        esc(&c.node)
    );
    let _ = write!(s, "<title>Cumulative ε of {}</title>", esc(&c.node));
    // Axes and grid.
    for i in 0..=4 {
        let v = y1 * f64::from(i) / 4.0;
        let y = py(v);
        let _ = write!(s, "<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>", W - R);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.2}</text>",
            L - 6.0,
            y + 4.0
        );
    }
    let _ = write!(s, "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{:.1}\" stroke=\"#333\"/>", H - B);
    let _ = write!(s, "<line x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>", H - B, W - R, H - B);
    let ticks = 6.min((x1 - x0).round() as u64).max(1);
    for i in 0..=ticks {
        let v = x0 + (x1 - x0) * i as f64 / ticks as f64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{v:.0}</text>",
            px(v),
            H - B + 16.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">round</text>",
        (L + W - R) / 2.0,
        H - 6.0
    );
    let _ = write!(
        s,
        "<text x=\"14\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">ε</text>",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    // Budget.
    if c.budget.is_finite() && c.budget > 0.0 {
        let y = py(c.budget);
        let _ = write!(
            s,
            "<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#b91c1c\" stroke-dasharray=\"6 4\"/>",
            W - R
        );
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#b91c1c\" text-anchor=\"end\">budget ε = {}</text>",
            W - R - 4.0,
            y - 4.0,
            c.budget
        );
    }
    // The curve.
    let points: Vec<String> =
        c.series.iter().zip(&xs).map(|(p, &x)| format!("{:.1},{:.1}", px(x), py(p.epsilon))).collect();
    let _ =
        write!(s, "<polyline fill=\"none\" stroke=\"#1d4ed8\" stroke-width=\"2\" points=\"{}\"/>", points.join(" "));
    for (p, &x) in c.series.iter().zip(&xs) {
        let colour = if p.mechanism == Mechanism::Decline { "#b91c1c" } else { "#1d4ed8" };
        let round = p.round.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>seq {} round {round} {}: ε = {:.6}</title></circle>",
            px(x),
            py(p.epsilon),
            p.seq,
            mechanism_name(p.mechanism),
            p.epsilon
        );
    }
    s.push_str("</svg>");
    s
}
