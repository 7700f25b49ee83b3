//! `cohort serve` and `cohort predict` through the binary, on a real demo run: KServe V2 and TF Serving V1
//! answer the same predictions as `cohort predict`, bad requests get a 400 naming the field, unknown models and
//! versions a 404, every request lands in the inference log without its features, and a promotion is picked up
//! under load without a failed request.

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::{cohort, demo_dir, text};

/// A copy of the demo's registry (and data) that a test may change.
fn copy_of_demo(to: &Path) -> PathBuf {
    let dir = to.join("copy");
    std::fs::create_dir_all(dir.join("artifacts")).unwrap();
    for file in ["registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"] {
        let from = demo_dir().join(file);
        if from.exists() {
            std::fs::copy(from, dir.join(file)).unwrap();
        }
    }
    for entry in std::fs::read_dir(demo_dir().join("artifacts")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("artifacts").join(entry.file_name())).unwrap();
    }
    dir
}

/// A running `cohort serve`, stopped with SIGINT (as Ctrl-C) on drop.
struct Serving {
    child: Child,
    addr: String,
}

impl Serving {
    fn start(data_dir: &Path) -> Self {
        let mut child = cohort()
            .args(["serve", "--listen", "127.0.0.1:0", "--poll-ms", "50", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("http://").unwrap_or_else(|| panic!("no address in {line:?}")).to_owned();
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One HTTP/1.1 request; the status and the JSON body.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, payload) = self.raw(method, path, body);
        (status, serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}: {payload:?}")))
    }

    /// One HTTP/1.1 request; the status and the body.
    fn raw(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, payload.to_owned())
    }

    /// Stops the server as Ctrl-C does, and waits for it (so the inference log is written).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cohort serve exited with {status}");
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's central test rows: (header, rows of cells).
fn test_rows() -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(demo_dir().join("data").join("central-test.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(str::to_owned).collect();
    (header, lines.map(|l| l.split(',').map(str::to_owned).collect()).collect())
}

fn features(server: &Serving) -> Vec<String> {
    let (status, metadata) = server.call("GET", "/v2/models/breast-cancer", None);
    assert_eq!(status, 200, "{metadata}");
    serde_json::from_value(metadata["parameters"]["features"].clone()).unwrap()
}

/// The test rows as a `[rows, features]` matrix in the model's order.
fn matrix(features: &[String]) -> (usize, Vec<f64>) {
    let (header, rows) = test_rows();
    let columns: Vec<usize> = features.iter().map(|f| header.iter().position(|h| h == f).unwrap()).collect();
    let values = rows.iter().flat_map(|r| columns.iter().map(|&c| r[c].parse::<f64>().unwrap())).collect();
    (rows.len(), values)
}

fn infer_body(rows: usize, dims: usize, data: &[f64]) -> String {
    json!({"inputs": [{"name": "x", "shape": [rows, dims], "datatype": "FP32", "data": data}]}).to_string()
}

#[test]
fn v2_v1_and_cohort_predict_agree_and_bad_requests_are_named() {
    let server = Serving::start(demo_dir());
    assert_eq!(server.call("GET", "/v2/health/live", None), (200, json!({"live": true})));
    assert_eq!(server.call("GET", "/v2/health/ready", None), (200, json!({"ready": true})));
    assert_eq!(server.call("GET", "/v2", None).1["name"], "cohort");
    let (status, metadata) = server.call("GET", "/v2/models/breast-cancer", None);
    assert_eq!(status, 200);
    assert_eq!(metadata["parameters"]["stage"], "production");
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1, 30]));
    assert_eq!(metadata["versions"].as_array().unwrap().len(), 3, "{metadata}");
    let version = metadata["parameters"]["version"].as_str().unwrap().to_owned();
    let (status, lineage) = server.call("GET", metadata["parameters"]["lineage"].as_str().unwrap(), None);
    assert_eq!(status, 200);
    assert!(lineage["privacy"]["hospital-a"]["epsilon"].as_f64().unwrap() > 0.0, "{lineage}");

    // V2 with one matrix, V1 with instances, and `cohort predict` give the same answers.
    let names = features(&server);
    let (rows, data) = matrix(&names);
    let (status, v2) = server.call("POST", "/v2/models/breast-cancer/infer", Some(&infer_body(rows, 30, &data)));
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["model_version"], version.as_str());
    let classes = v2["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "class").unwrap()["data"].clone();
    let probabilities = v2["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(probabilities["shape"], json!([rows, 2]));
    let instances: Vec<&[f64]> = data.chunks(30).collect();
    let body = json!({ "instances": instances }).to_string();
    let (status, v1) =
        server.call("POST", &format!("/v1/models/breast-cancer/versions/{version}:predict"), Some(&body));
    assert_eq!(status, 200, "{v1}");
    let v1_classes: Vec<Value> = v1["predictions"].as_array().unwrap().iter().map(|p| p["class"].clone()).collect();
    assert_eq!(Value::from(v1_classes), classes);
    let (status, labelled) = server.call("POST", "/v1/models/breast-cancer/labels/production:predict", Some(&body));
    assert_eq!((status, &labelled), (200, &v1));

    let csv = demo_dir().join("data").join("central-test.csv");
    let out = cohort()
        .args(["predict", "--json", "--server", &server.url(), "--model", "breast-cancer", "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), rows);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!((&line["row"], &line["class"]), (&json!(i), &classes[i]), "{line}");
        let p = line["probabilities"].as_array().unwrap();
        let sum: f64 = p.iter().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{line}");
    }
    let correct = test_rows()
        .1
        .iter()
        .zip(&lines)
        .filter(|(r, l)| r.last().unwrap().parse::<f64>().unwrap() == l["class"].as_f64().unwrap())
        .count();
    // The coordinator's central evaluation of this version ran on the same rows: serving reproduces the
    // training preprocessing exactly when it gets the same accuracy.
    let central = lineage["central"]["values"]["accuracy"].as_f64().unwrap();
    assert_eq!(lineage["central"]["examples"], json!(rows));
    assert_eq!(correct, (central * rows as f64).round() as usize, "served {correct}/{rows}, central {central}");
    let plain = cohort()
        .args(["predict", "--server", &server.url(), "--model", &format!("breast-cancer:{version}"), "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(plain.status.success(), "{}", text(&plain));
    assert!(String::from_utf8_lossy(&plain.stdout).starts_with("row 0: class "), "{}", text(&plain));

    // The 400s name the field; the 404s say what exists.
    let one = &data[..30];
    let bad = |body: String| -> String {
        let (status, error) = server.call("POST", "/v2/models/breast-cancer/infer", Some(&body));
        assert_eq!(status, 400, "{error}");
        error["error"].as_str().unwrap().to_owned()
    };
    let per_feature: Vec<Value> = names[1..]
        .iter()
        .zip(&one[1..])
        .map(|(n, v)| json!({"name": n, "shape": [1], "datatype": "FP32", "data": [v]}))
        .collect();
    assert!(bad(json!({ "inputs": per_feature }).to_string()).starts_with(&format!("{}: missing feature", names[0])));
    assert!(bad(infer_body(1, 29, &one[..29])).starts_with("inputs[0].shape:"));
    let text_value = json!({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "BYTES", "data": one}]});
    assert!(bad(text_value.to_string()).starts_with("inputs[0].datatype:"));
    let mut nan = json!({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": one}]});
    nan["inputs"][0]["data"][4] = json!("NaN");
    assert!(bad(nan.to_string()).starts_with("inputs[0].data[4]:"));
    let mut huge = one.to_vec();
    huge[2] = 1e9;
    assert!(bad(infer_body(1, 30, &huge)).starts_with(&format!("{}: row 0:", names[2])));
    assert!(bad("{\"inputs\": 3}".into()).starts_with("body:"));
    let (status, error) = server.call("POST", "/v2/models/heart/infer", Some(&infer_body(1, 30, one)));
    assert_eq!(status, 404);
    assert!(error["error"].as_str().unwrap().contains("breast-cancer"), "{error}");
    assert_eq!(server.call("POST", "/v2/models/breast-cancer/versions/99/infer", Some(&infer_body(1, 30, one))).0, 404);
    assert_eq!(server.call("GET", "/v2/models/breast-cancer/versions/99/ready", None).0, 404);
    assert_eq!(server.call("POST", "/v1/models/breast-cancer/labels/beta:predict", Some(&body)).0, 404);

    // The Prometheus metrics count the same requests, per version and endpoint.
    let (status, metrics) = server.raw("GET", "/metrics", None);
    assert_eq!(status, 200);
    let v2 = format!("model=\"breast-cancer\",version=\"{version}\",endpoint=\"v2-infer\"");
    for line in [
        format!("cohort_inference_requests_total{{{v2},status=\"200\"}} 3"),
        format!("cohort_inference_requests_total{{{v2},status=\"400\"}} 6"),
        format!("cohort_inference_rows_total{{{v2}}} {}", 3 * rows),
        format!("cohort_model_version_info{{model=\"breast-cancer\",version=\"{version}\",stage=\"production\"}} 1"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert_eq!(metrics.lines().filter(|l| l.starts_with("cohort_input_drift{")).count(), 30, "{metrics}");
    server.stop();

    // Every inference request is in the log, with a hash of its body and never the features.
    let log = cohort_serving::log::read(demo_dir()).unwrap();
    // 3 V2 and V1 predictions, 2 runs of `cohort predict`, 6 bad requests and 3 to unknown models, versions, labels.
    assert_eq!(log.len(), 14, "{log:?}");
    let first = &log[0];
    assert_eq!((first.status, first.outcome.as_str(), first.rows), (200, "ok", rows));
    assert_eq!(first.input_sha256, hex::encode(Sha256::digest(infer_body(rows, 30, &data).as_bytes())));
    assert!(log.iter().any(|r| r.status == 400 && r.outcome == format!("bad-input:{}", names[2])));
    assert!(log.iter().any(|r| r.status == 404 && r.version.is_none()));
    let raw = std::fs::read(demo_dir().join(cohort_serving::log::LOG_FILE)).unwrap();
    let needle = format!("{}", one[0]);
    assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "a feature value is in the log");
}

#[test]
fn a_promotion_under_load_switches_versions_without_a_failed_request() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = copy_of_demo(scratch.path());
    let server = Serving::start(&dir);
    let names = features(&server);
    let (_, data) = matrix(&names);
    let body = infer_body(1, 30, &data[..30]);
    let (_, metadata) = server.call("GET", "/v2/models/breast-cancer", None);
    let before = metadata["parameters"]["version"].as_str().unwrap().to_owned();
    let other = if before == "1" { "2" } else { "1" };
    let mut versions = Vec::new();
    let mut promoted = false;
    for i in 0..400 {
        let (status, answer) = server.call("POST", "/v2/models/breast-cancer/infer", Some(&body));
        assert_eq!(status, 200, "request {i}: {answer}");
        versions.push(answer["model_version"].as_str().unwrap().to_owned());
        if i == 50 {
            let out = cohort()
                .args([
                    "models",
                    "promote",
                    "--version",
                    other,
                    "--actor",
                    "ops",
                    "--reason",
                    "swap test",
                    "--data-dir",
                ])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            promoted = true;
        }
        if promoted
            && versions.last().map(String::as_str) == Some(other)
            && versions.iter().filter(|v| *v == other).count() > 20
        {
            break;
        }
    }
    assert_eq!(versions[0], before);
    let switched = versions.iter().position(|v| v == other).expect("the promoted version answered");
    assert!(switched > 50, "switched at request {switched}");
    assert!(versions[switched..].iter().all(|v| v == other), "no flapping back: {versions:?}");
    server.stop();
}

#[test]
fn the_serving_benchmark_reports_latency_and_throughput_against_in_process_predictions() {
    let out =
        cohort().args(["bench", "serving", "--concurrency", "2", "--requests", "300", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let number = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("no {k} in {report}"));
    assert_eq!((report["failed"].as_u64(), report["requests"].as_u64()), (Some(0), Some(300)));
    assert!(number("throughput_rps") > 0.0 && number("p99_ms") >= number("p50_ms"), "{report}");
    let ratio = number("p50_ms") * 1e3 / number("direct_p50_us");
    assert!((ratio - number("http_over_direct_p50")).abs() < 1e-6 * ratio, "{report}");
    assert!(number("http_over_direct_p50") > 1.0, "HTTP cannot beat an in-process call: {report}");
}
