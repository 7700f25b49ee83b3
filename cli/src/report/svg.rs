//! A client's cumulative ε as an inline SVG line chart.

use super::chart::Frame;
use super::html::esc;
use super::mechanism_name;
use cohort_coordinator::audit::ClientPrivacy;
use cohort_core::ledger::Mechanism;
use std::fmt::Write as _;

/// A line chart of cumulative ε over the client's records (x: round, or seq for records without one), with the
/// budget as a dashed line. Plain SVG 1.1: no scripts, no external references.
pub(super) fn svg_chart(c: &ClientPrivacy) -> String {
    const FRAME: Frame = Frame { w: 600.0, h: 240.0, l: 60.0, r: 20.0, t: 16.0, b: 40.0 };
    let (w, l, r) = (FRAME.w, FRAME.l, FRAME.r);
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
    let px = |x: f64| FRAME.px(x, (x0, x1));
    let py = |y: f64| FRAME.py(y.clamp(0.0, y1), (0.0, y1));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"cumulative epsilon of {}\">",
        FRAME.h,
        FRAME.h,
        esc(&c.node)
    );
    let _ = write!(s, "<title>Cumulative ε of {}</title>", esc(&c.node));
    FRAME.axes(&mut s, (x0, x1), (0.0, y1), "round", "ε");
    // Budget.
    if c.budget.is_finite() && c.budget > 0.0 {
        let y = py(c.budget);
        let _ = write!(
            s,
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#b91c1c\" stroke-dasharray=\"6 4\"/>",
            w - r
        );
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#b91c1c\" text-anchor=\"end\">budget ε = {}</text>",
            w - r - 4.0,
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
