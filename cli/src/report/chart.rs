//! Plain SVG 1.1 charts for the HTML reports: line charts with optional bands, and heatmaps. No scripts and no
//! external references, so a report is one self-contained file that renders anywhere.

use super::html::esc;
use std::fmt::Write as _;

/// The plotting area of a chart: its size and its margins (left, right, top, bottom).
pub(super) struct Frame {
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) l: f64,
    pub(super) r: f64,
    pub(super) t: f64,
    pub(super) b: f64,
}

impl Frame {
    /// The x pixel of `x` on the axis `[x0, x1]`.
    pub(super) fn px(&self, x: f64, (x0, x1): (f64, f64)) -> f64 {
        self.l + (x - x0) / (x1 - x0) * (self.w - self.l - self.r)
    }

    /// The y pixel of `y` on the axis `[y0, y1]`.
    pub(super) fn py(&self, y: f64, (y0, y1): (f64, f64)) -> f64 {
        self.h - self.b - (y - y0) / (y1 - y0) * (self.h - self.t - self.b)
    }

    /// The grid, the two axes with their ticks, and the axis labels, for the ranges `xs` and `ys`.
    pub(super) fn axes(&self, s: &mut String, xs: (f64, f64), ys: (f64, f64), x_label: &str, y_label: &str) {
        let Self { w, h, l, r, t, b } = *self;
        let (y_ticks, y_decimals) = nice_ticks(ys, 5);
        for v in y_ticks {
            let y = self.py(v, ys);
            let _ = write!(s, "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>", w - r);
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.y_decimals$}</text>",
                l - 6.0,
                y + 4.0
            );
        }
        let _ = write!(s, "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{:.1}\" stroke=\"#333\"/>", h - b);
        let _ =
            write!(s, "<line x1=\"{l}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>", h - b, w - r, h - b);
        let (x_ticks, x_decimals) = nice_ticks(xs, 7);
        for v in x_ticks {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{v:.x_decimals$}</text>",
                self.px(v, xs),
                h - b + 16.0
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            (l + w - r) / 2.0,
            h - 6.0,
            esc(x_label)
        );
        let mid = (t + h - b) / 2.0;
        let _ = write!(
            s,
            "<text x=\"14\" y=\"{mid:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {mid:.1})\">{}</text>",
            esc(y_label)
        );
    }
}

/// The frame of [`line_chart`]: room on the right for the legend.
const FRAME: Frame = Frame { w: 640.0, h: 260.0, l: 64.0, r: 150.0, t: 28.0, b: 40.0 };
const W: f64 = FRAME.w;
const H: f64 = FRAME.h;
const L: f64 = FRAME.l;
const R: f64 = FRAME.r;
const T: f64 = FRAME.t;

/// Colours for overlaid series, in order.
pub(crate) const PALETTE: [&str; 8] =
    ["#1d4ed8", "#b91c1c", "#15803d", "#a16207", "#7e22ce", "#0e7490", "#be185d", "#374151"];

/// One line of a chart: `(x, y)` points, drawn in `colour`, dashed if asked; non-finite points are skipped.
pub(crate) struct Series {
    /// The legend's name.
    pub(crate) name: String,
    /// An SVG colour.
    pub(crate) colour: &'static str,
    /// The points.
    pub(crate) points: Vec<(f64, f64)>,
    /// Dashed (for a secondary measure of the same thing).
    pub(crate) dashed: bool,
}

/// A shaded band `(x, low, high)` behind the lines (a spread).
pub(crate) struct Band {
    /// The legend's name.
    pub(crate) name: String,
    /// An SVG colour.
    pub(crate) colour: &'static str,
    /// Opacity of the fill.
    pub(crate) opacity: f64,
    /// The band.
    pub(crate) points: Vec<(f64, f64, f64)>,
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    match (lo.is_finite(), hi > lo) {
        (true, true) => (lo, hi),
        (true, false) => (lo - 1.0, lo + 1.0),
        _ => (0.0, 1.0),
    }
}

/// A line chart titled `title`, with `bands` shaded under `series`, and a legend on the right.
pub(crate) fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], bands: &[Band]) -> String {
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(bands.iter().flat_map(|b| b.points.iter().map(|p| p.0)));
    let (x0, x1) = range(xs);
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(bands.iter().flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2])));
    let (y0, y1) = range(ys);
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| FRAME.px(x, (x0, x1));
    let py = |y: f64| FRAME.py(y, (y0, y1));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(title),
        esc(title)
    );
    let _ = write!(s, "<text x=\"{L}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>", esc(title));
    FRAME.axes(&mut s, (x0, x1), (y0, y1), x_label, y_label);
    let mut legend = 0.0;
    let mut entry = |s: &mut String, name: &str, colour: &str, dashed: bool| {
        let y = T + 8.0 + legend * 16.0;
        let dash = if dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"3\"{dash}/>",
            W - R + 10.0,
            W - R + 28.0
        );
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>", W - R + 32.0, y + 4.0, esc(name));
        legend += 1.0;
    };
    for band in bands {
        let top: Vec<String> = band
            .points
            .iter()
            .filter(|p| p.1.is_finite() && p.2.is_finite())
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.2)))
            .collect();
        let bottom: Vec<String> = band
            .points
            .iter()
            .rev()
            .filter(|p| p.1.is_finite() && p.2.is_finite())
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = write!(
            s,
            "<polygon fill=\"{}\" fill-opacity=\"{}\" stroke=\"none\" points=\"{} {}\"/>",
            band.colour,
            band.opacity,
            top.join(" "),
            bottom.join(" ")
        );
        entry(&mut s, &band.name, band.colour, false);
    }
    for line in series {
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if line.dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            line.colour,
            points.join(" ")
        );
        for &(x, y) in line.points.iter().filter(|p| p.1.is_finite()) {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{}: {} = {y:.4}</title></circle>",
                px(x),
                py(y),
                line.colour,
                esc(&line.name),
                tick(x, 1.0)
            );
        }
        entry(&mut s, &line.name, line.colour, line.dashed);
    }
    s.push_str("</svg>");
    s
}

/// A tick label with as many decimals as the axis' span needs.
/// Round-number ticks within `[lo, hi]`: multiples of a step of 1, 2 or 5 × 10^k, at most `most` of them, and
/// the decimals their labels need (so rounds 1–10 get 2 4 6 8 10, not 1 2.5 4 5.5).
fn nice_ticks((lo, hi): (f64, f64), most: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return (vec![lo], 0);
    }
    let raw = (hi - lo) / most.max(2).saturating_sub(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, (-step.log10().floor()).max(0.0) as usize)
}

pub(super) fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// A heatmap of `values` (rows × columns), darker for larger values relative to the largest, with a row's total
/// at its end.
pub(crate) fn heatmap(title: &str, rows: &[String], columns: &[String], values: &[Vec<f64>]) -> String {
    const CELL: f64 = 14.0;
    const LEFT: f64 = 110.0;
    const TOP: f64 = 44.0;
    let width = LEFT + CELL * columns.len() as f64 + 80.0;
    let height = TOP + CELL * rows.len() as f64 + 10.0;
    let max = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(title),
        esc(title)
    );
    let _ = write!(s, "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>", esc(title));
    for (c, name) in columns.iter().enumerate() {
        let x = LEFT + CELL * c as f64 + CELL / 2.0;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
            TOP - 4.0,
            esc(name)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">rows</text>",
        LEFT + CELL * columns.len() as f64 + 6.0,
        TOP - 4.0
    );
    for (r, (name, row)) in rows.iter().zip(values).enumerate() {
        let y = TOP + CELL * r as f64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y + CELL - 3.0,
            esc(name)
        );
        for (c, &v) in row.iter().enumerate() {
            let shade = (v / max).clamp(0.0, 1.0);
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"#1d4ed8\" fill-opacity=\"{:.3}\" stroke=\"#fff\"><title>{} / {}: {v}</title></rect>",
                LEFT + CELL * c as f64,
                0.05 + 0.95 * shade,
                esc(name),
                esc(columns.get(c).map_or("", String::as_str))
            );
        }
        let total: f64 = row.iter().sum();
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{total}</text>",
            LEFT + CELL * columns.len() as f64 + 6.0,
            y + CELL - 3.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_draws_every_finite_point_and_names_its_series() {
        let series = [Series {
            name: "a<b".into(),
            colour: PALETTE[0],
            points: vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.9)],
            dashed: false,
        }];
        let band = [Band {
            name: "spread".into(),
            colour: PALETTE[1],
            opacity: 0.2,
            points: vec![(1.0, 0.4, 0.6), (3.0, 0.8, 1.0)],
        }];
        let svg = line_chart("accuracy", "round", "accuracy", &series, &band);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.contains("<polygon"), "{svg}");
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_ticks((1.0, 10.0), 7), (vec![2.0, 4.0, 6.0, 8.0, 10.0], 0));
        assert_eq!(nice_ticks((0.0, 3.3), 5), (vec![0.0, 1.0, 2.0, 3.0], 0));
        let (ticks, decimals) = nice_ticks((0.35, 0.92), 5);
        assert_eq!(decimals, 1);
        assert_eq!(ticks.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>(), ["0.4", "0.6", "0.8"]);
        assert_eq!(nice_ticks((5.0, 5.0), 5), (vec![5.0], 0));
    }

    #[test]
    fn a_heatmap_has_a_cell_per_value_and_row_totals() {
        let rows = ["c1".to_owned(), "c2".to_owned()];
        let columns = ["0".to_owned(), "1".to_owned()];
        let svg = heatmap("labels", &rows, &columns, &[vec![3.0, 1.0], vec![0.0, 4.0]]);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">4</text>") && svg.contains("c2 / 1: 4"), "{svg}");
    }
}
