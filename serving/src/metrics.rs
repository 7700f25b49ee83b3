//! `GET /metrics`: request counts, rows and latency histograms per model version and endpoint, the versions
//! served, and a per-feature input-drift score, in the Prometheus text exposition format (version 0.0.4,
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! The drift score of a feature is the mean of its scaled value `(x - center) / scale` over the rows a version
//! has served: the declared training range maps onto [-1, 1], so 0 is its centre and a mean near ±1 says the
//! inputs crowd one end of what the federation declared.

use crate::catalog::Catalog;
use crate::log::LogRecord;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// The model label of requests that resolved no servable version (unknown models, versions and labels).
pub const UNRESOLVED: &str = "_unresolved";

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Debug, Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    rows: u64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    seconds: f64,
}

/// Counters of the requests served, by model, version and endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, &'static str), Series>>,
}

impl Metrics {
    /// Counts one request (the same record the inference log gets). Requests that named no servable version
    /// are counted under model [`UNRESOLVED`], so that made-up names cannot grow the series without bound.
    pub fn observe(&self, record: &LogRecord) {
        let (model, version) = match record.version {
            Some(v) => (record.model.clone(), v.to_string()),
            None => (UNRESOLVED.to_owned(), "none".to_owned()),
        };
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = series.entry((model, version, record.endpoint)).or_default();
        *s.by_status.entry(record.status).or_default() += 1;
        s.rows += record.rows as u64;
        let seconds = record.latency_us as f64 / 1e6;
        for (bucket, le) in s.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *bucket += 1;
            }
        }
        s.count += 1;
        s.seconds += seconds;
    }

    /// The exposition text: these counters, plus the versions and drift scores of `catalog`.
    pub fn render(&self, catalog: &Catalog) -> String {
        let mut out = String::new();
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(&mut out, "cohort_inference_requests_total", "counter", "Inference requests, by outcome status.");
        for ((model, version, endpoint), s) in series.iter() {
            for (status, n) in &s.by_status {
                let labels = labels(&[("model", model), ("version", version), ("endpoint", endpoint)]);
                let _ = writeln!(out, "cohort_inference_requests_total{{{labels},status=\"{status}\"}} {n}");
            }
        }
        head(&mut out, "cohort_inference_rows_total", "counter", "Rows predicted.");
        for ((model, version, endpoint), s) in series.iter() {
            let labels = labels(&[("model", model), ("version", version), ("endpoint", endpoint)]);
            let _ = writeln!(out, "cohort_inference_rows_total{{{labels}}} {}", s.rows);
        }
        head(&mut out, "cohort_inference_latency_seconds", "histogram", "Time from request to answer.");
        for ((model, version, endpoint), s) in series.iter() {
            let labels = labels(&[("model", model), ("version", version), ("endpoint", endpoint)]);
            for (n, le) in s.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(out, "cohort_inference_latency_seconds_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "cohort_inference_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "cohort_inference_latency_seconds_sum{{{labels}}} {}", s.seconds);
            let _ = writeln!(out, "cohort_inference_latency_seconds_count{{{labels}}} {}", s.count);
        }
        drop(series);
        head(&mut out, "cohort_model_version_info", "gauge", "Versions in the registry: 1 when servable, 0 when not.");
        for name in catalog.names() {
            for (version, entry) in catalog.versions(name) {
                let labels =
                    labels(&[("model", name), ("version", &version.0.to_string()), ("stage", entry.stage.as_str())]);
                let _ = writeln!(out, "cohort_model_version_info{{{labels}}} {}", u8::from(entry.model.is_ok()));
            }
        }
        head(
            &mut out,
            "cohort_input_drift",
            "gauge",
            "Mean scaled input per feature: 0 at the centre of the declared training range, -1 and 1 at its bounds.",
        );
        for name in catalog.names() {
            for (version, entry) in catalog.versions(name) {
                let Ok(model) = &entry.model else { continue };
                let Some(means) = model.drift() else { continue };
                for (feature, mean) in model.features().iter().zip(means) {
                    let labels = labels(&[("model", name), ("version", &version.0.to_string()), ("feature", feature)]);
                    let _ = writeln!(out, "cohort_input_drift{{{labels}}} {mean}");
                }
            }
        }
        out
    }
}

/// `k="v",...` with the values escaped as the exposition format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Selector;
    use crate::model::Features;
    use crate::test_support::registry_with_versions;

    fn record(status: u16, latency_us: u64) -> LogRecord {
        LogRecord {
            unix_ms: 0,
            endpoint: "v2-infer",
            model: "dosing".into(),
            version: Some(1),
            rows: 3,
            latency_us,
            status,
            outcome: "ok".into(),
            input_sha256: String::new(),
        }
    }

    #[test]
    fn counters_histograms_versions_and_drift_are_exposed() {
        let (_dir, registry) = registry_with_versions(2, Some(1));
        let catalog = Catalog::load(&registry, &Catalog::default()).unwrap();
        // Doses 10 and 5 on [0, 10]: scaled 1 and 0, mean 0.5.
        let model = catalog.model("dosing", Selector::Default).unwrap();
        model.predict(&Features { rows: 2, values: vec![10.0, 5.0] }).unwrap();
        let metrics = Metrics::default();
        metrics.observe(&record(200, 80));
        metrics.observe(&record(200, 3_000));
        metrics.observe(&record(400, 50));
        for made_up in ["a", "b", "c"] {
            metrics.observe(&LogRecord { model: made_up.into(), version: None, status: 404, ..record(404, 10) });
        }
        let text = metrics.render(&catalog);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        let base = r#"model="dosing",version="1",endpoint="v2-infer""#;
        has(&format!("cohort_inference_requests_total{{{base},status=\"200\"}} 2"));
        has(&format!("cohort_inference_requests_total{{{base},status=\"400\"}} 1"));
        has(&format!("cohort_inference_rows_total{{{base}}} 9"));
        has(&format!("cohort_inference_latency_seconds_bucket{{{base},le=\"0.0001\"}} 2"));
        has(&format!("cohort_inference_latency_seconds_bucket{{{base},le=\"0.0025\"}} 2"));
        has(&format!("cohort_inference_latency_seconds_bucket{{{base},le=\"0.005\"}} 3"));
        has(&format!("cohort_inference_latency_seconds_bucket{{{base},le=\"+Inf\"}} 3"));
        has(&format!("cohort_inference_latency_seconds_count{{{base}}} 3"));
        has(
            r#"cohort_inference_requests_total{model="_unresolved",version="none",endpoint="v2-infer",status="404"} 3"#,
        );
        has(r#"cohort_model_version_info{model="dosing",version="1",stage="production"} 1"#);
        has(r#"cohort_model_version_info{model="dosing",version="2",stage="candidate"} 1"#);
        has(r#"cohort_input_drift{model="dosing",version="1",feature="dose"} 0.5"#);
        assert!(!text.contains(r#"cohort_input_drift{model="dosing",version="2""#), "no rows served by v2 yet");
        assert_eq!(labels(&[("m", "a\"b\\c\nd")]), r#"m="a\"b\\c\nd""#);
    }
}
