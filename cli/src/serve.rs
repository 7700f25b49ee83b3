//! `cohort serve` and `cohort predict`: the model server, and its client for CSV files.

use crate::args::{PredictArgs, ServeArgs};
use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Rows per request of `cohort predict`.
const CHUNK_ROWS: usize = 1024;

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = cohort_serving::ServeConfig::new(&args.data_dir);
    config.listen = args.listen;
    config.poll = Duration::from_millis(args.poll_ms);
    config.max_rows = usize::try_from(args.max_rows).unwrap_or(usize::MAX);
    config.token = args.token_file.as_deref().map(read_token).transpose()?;
    let server = cohort_serving::Server::bind(config).await?;
    let addr = server.local_addr().context("reading the bound address")?;
    let catalog = server.catalog();
    for name in catalog.names() {
        let versions: Vec<String> = catalog
            .versions(name)
            .map(|(v, e)| match &e.model {
                Ok(_) => format!("{} ({})", v.0, e.stage),
                Err(_) => format!("{} ({}, not servable)", v.0, e.stage),
            })
            .collect();
        eprintln!("serving {name}: versions {}", versions.join(", "));
    }
    if catalog.names().next().is_none() {
        eprintln!("the registry has no models yet; new versions are picked up as they are registered");
    }
    eprintln!("listening on http://{addr} (KServe V2: /v2/models/NAME/infer; TF Serving V1: /v1/models/NAME:predict)");
    // The smoke tests and scripts read the address from this line.
    println!("http://{addr}");
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    eprintln!("stopped; the inference log is in {}", args.data_dir.join(cohort_serving::log::LOG_FILE).display());
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// A JSON-over-HTTP/1.1 client of one server.
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Http {
    fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            bail!("`cohort predict` speaks plain HTTP for now; reach an HTTPS server through a local proxy");
        }
        if !base.starts_with("http://") {
            bail!("--server {server:?} is not an http:// URL");
        }
        Ok(Self { client: Client::builder(TokioExecutor::new()).build_http(), base, token })
    }

    /// Sends a request; returns the JSON answer, or fails with the server's own error message.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url).header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request.body(Full::new(Bytes::from(body))).with_context(|| format!("bad URL {url}"))?;
        let response = self.client.request(request).await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = serde_json::from_slice(&bytes.to_bytes())
            .with_context(|| format!("{url} answered {status} with a body that is not JSON"))?;
        if status != StatusCode::OK {
            let message = value.get("error").and_then(Value::as_str).unwrap_or("no error message");
            bail!("{url} answered {status}: {message}");
        }
        Ok(value)
    }
}

/// The rows of `path` restricted to `features`, in that order; the names of the other columns.
fn read_rows(path: &Path, features: &[String]) -> anyhow::Result<(Vec<f32>, usize, Vec<String>)> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("reading the header of {}", path.display()))?.clone();
    let mut columns = Vec::with_capacity(features.len());
    let missing: Vec<&str> = features.iter().filter(|f| !headers.iter().any(|h| h == *f)).map(String::as_str).collect();
    if !missing.is_empty() {
        bail!("{} lacks the model's feature column(s): {}", path.display(), missing.join(", "));
    }
    for f in features {
        columns.push(headers.iter().position(|h| h == f).unwrap_or_default());
    }
    let ignored = headers.iter().filter(|h| !features.iter().any(|f| f == h)).map(str::to_owned).collect();
    let mut values = Vec::new();
    let mut rows = 0;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{} line {line}", path.display()))?;
        for (&c, f) in columns.iter().zip(features) {
            let cell = record.get(c).unwrap_or("").trim();
            let v: f32 = cell
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .with_context(|| format!("{} line {line}, column {f}: {cell:?} is not a number", path.display()))?;
            values.push(v);
        }
        rows += 1;
    }
    Ok((values, rows, ignored))
}

pub(crate) async fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    let http = Http::new(&args.server, token)?;
    let (name, version) = match args.model.split_once(':') {
        Some((name, v)) => (name, Some(v.trim_start_matches('v').to_owned())),
        None => (args.model.as_str(), None),
    };
    let model_path = match &version {
        Some(v) => format!("/v2/models/{name}/versions/{v}"),
        None => format!("/v2/models/{name}"),
    };
    let metadata = http.call(Method::GET, &model_path, None).await?;
    let parameters = &metadata["parameters"];
    let features: Vec<String> = serde_json::from_value(parameters["features"].clone())
        .context("the server's model metadata lists no feature names")?;
    let served = parameters["version"].as_str().unwrap_or("?").to_owned();
    // Ask for that exact version, so a promotion during a long file does not mix versions.
    let infer_path = format!("/v2/models/{name}/versions/{served}/infer");
    let (values, rows, ignored) = read_rows(&args.input, &features)?;
    if !ignored.is_empty() {
        eprintln!("ignoring column(s) that are not features of {name}: {}", ignored.join(", "));
    }
    eprintln!("{rows} rows to {name} version {served} ({})", parameters["stage"].as_str().unwrap_or("?"));
    let dims = features.len();
    let mut row = 0;
    for chunk in values.chunks((CHUNK_ROWS * dims).max(1)) {
        let n = chunk.len() / dims.max(1);
        let request = json!({
            "inputs": [{"name": "features", "shape": [n, dims], "datatype": "FP32", "data": chunk}],
        });
        let answer = http.call(Method::POST, &infer_path, Some(&request)).await?;
        print_rows(&answer, row, n, args.json, name, &served)?;
        row += n;
    }
    Ok(())
}

fn print_rows(answer: &Value, first: usize, n: usize, json: bool, name: &str, version: &str) -> anyhow::Result<()> {
    let output = |wanted: &str| -> Option<Vec<f64>> {
        let outputs = answer["outputs"].as_array()?;
        let tensor = outputs.iter().find(|o| o["name"] == wanted)?;
        tensor["data"].as_array()?.iter().map(Value::as_f64).collect()
    };
    match (output("class"), output("probabilities"), output("value")) {
        (Some(classes), Some(probabilities), _) if classes.len() == n && probabilities.len() % n.max(1) == 0 => {
            let width = probabilities.len() / n.max(1);
            for (i, (class, p)) in classes.iter().zip(probabilities.chunks(width.max(1))).enumerate() {
                let (row, class) = (first + i, *class as u64);
                if json {
                    println!(
                        "{}",
                        json!({"row": row, "class": class, "probabilities": p, "model": name, "version": version})
                    );
                } else {
                    let shown: Vec<String> = p.iter().map(|x| format!("{x:.4}")).collect();
                    println!("row {row}: class {class} (probabilities {})", shown.join(", "));
                }
            }
        }
        (_, _, Some(values)) if values.len() == n => {
            for (i, value) in values.iter().enumerate() {
                let row = first + i;
                if json {
                    println!("{}", json!({"row": row, "value": value, "model": name, "version": version}));
                } else {
                    println!("row {row}: {value:.4}");
                }
            }
        }
        _ => bail!("the server's answer has no usable class/probabilities or value output for {n} rows"),
    }
    Ok(())
}

/// What `cohort bench serving` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ServingBench {
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) rows_per_request: usize,
    pub(crate) failed: usize,
    pub(crate) throughput_rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The same predictions through `ServedModel::predict`, in process, one at a time: the baseline.
    pub(crate) direct_p50_us: f64,
    pub(crate) http_over_direct_p50: f64,
}

/// A registry in `dir` with one production version of a 30-feature logistic model, `bench`.
fn bench_registry(dir: &Path) -> anyhow::Result<()> {
    use cohort_coordinator::registry::{NewVersion, Registry};
    use rand::{Rng, SeedableRng};
    let features: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let weights: Vec<f32> = (0..30 * 2 + 2).map(|_| rng.random_range(-1.0..1.0)).collect();
    let new = NewVersion {
        name: "bench".into(),
        round: cohort_core::Round(1),
        strategy: "fedavg".into(),
        hyperparameters: json!({}),
        secure_aggregation: json!(null),
        preprocessing: json!({"kind": "declared-range", "center": vec![0.5; 30], "scale": vec![0.5; 30]}),
        schema: json!({"features": features, "label": "y", "task": "binary", "classes": 2,
                       "bounds": vec![[0.0, 1.0]; 30]}),
        model_spec: json!({"layers": [30, 2], "task": "binary"}),
        ..Default::default()
    };
    let mut registry = Registry::open(dir)?;
    let record = registry.register(&new, &cohort_core::model::parameters_to_bytes(&weights))?;
    registry.promote("bench", record.version, "cohort bench", "benchmark model")?;
    Ok(())
}

/// Serves a benchmark model on loopback and loads it with `concurrency` keep-alive connections.
pub(crate) async fn bench(concurrency: usize, requests: usize, rows: usize) -> anyhow::Result<ServingBench> {
    use rand::{Rng, SeedableRng};
    let scratch = tempfile::tempdir()?;
    bench_registry(scratch.path())?;
    let mut config = cohort_serving::ServeConfig::new(scratch.path());
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = cohort_serving::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr()?);
    let model = server.catalog().model("bench", cohort_serving::Selector::Default)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let data: Vec<f32> = (0..rows * 30).map(|_| rng.random_range(0.0..1.0)).collect();
    let body = json!({"inputs": [{"name": "x", "shape": [rows, 30], "datatype": "FP32", "data": data}]});
    let features = cohort_serving::Features { rows, values: data };

    // The baseline: the same predictions in process.
    let mut direct = Vec::with_capacity(requests.min(5_000));
    for _ in 0..requests.min(5_000) {
        let started = std::time::Instant::now();
        model.predict(&features)?;
        direct.push(started.elapsed().as_secs_f64());
    }
    direct.sort_by(f64::total_cmp);

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, body, http) = (next.clone(), body.clone(), Http::new(&url, None)?);
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0usize);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let t = std::time::Instant::now();
                match http.call(Method::POST, "/v2/models/bench/infer", Some(&body)).await {
                    Ok(_) => latencies.push(t.elapsed().as_secs_f64()),
                    Err(_) => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let (mut latencies, mut failed) = (Vec::with_capacity(requests), 0);
    for worker in workers {
        let (l, f) = worker.await?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.await??;
    latencies.sort_by(f64::total_cmp);
    let (p50, direct_p50) = (crate::simulate::quantile(&latencies, 0.5), crate::simulate::quantile(&direct, 0.5));
    Ok(ServingBench {
        concurrency,
        requests,
        rows_per_request: rows,
        failed,
        throughput_rps: latencies.len() as f64 / elapsed,
        p50_ms: p50 * 1e3,
        p99_ms: crate::simulate::quantile(&latencies, 0.99) * 1e3,
        direct_p50_us: direct_p50 * 1e6,
        http_over_direct_p50: p50 / direct_p50,
    })
}
