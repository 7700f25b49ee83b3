//! The REST adapter: KServe V2 and TF Serving V1 routes over the [`Shelf`], with bearer-token checks and the
//! inference log. Each error is a JSON `{"error": "..."}` with the status of its [`ServeError`] variant.

use crate::catalog::{Selector, Served, Shelf};
use crate::error::ServeError;
use crate::input;
use crate::log::{InferenceLog, LogRecord};
use crate::metrics::Metrics;
use crate::wire::{self, InferResponse};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cohort_registry::{Stage, Version};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Requests with more rows than this are run off the async workers.
const INLINE_ROWS: usize = 256;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) shelf: Arc<Shelf>,
    pub(crate) log: InferenceLog,
    pub(crate) metrics: Arc<Metrics>,
    /// SHA-256 of the bearer token the server requires, if it requires one.
    pub(crate) token: Option<[u8; 32]>,
    pub(crate) max_rows: usize,
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadInput { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unservable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The router. Health endpoints answer without a token (for probes); everything else needs it when one is set.
pub(crate) fn router(app: App, max_body_bytes: usize) -> Router {
    let models = "/v2/models/{model}";
    let version = "/v2/models/{model}/versions/{version}";
    let guarded = Router::new()
        .route("/v2", get(server_metadata))
        .route(models, get(model_metadata))
        .route(version, get(version_metadata))
        .route(&format!("{models}/ready"), get(model_ready))
        .route(&format!("{version}/ready"), get(version_ready))
        .route(&format!("{models}/infer"), post(model_infer))
        .route(&format!("{version}/infer"), post(version_infer))
        .route(&format!("{version}/lineage"), get(version_lineage))
        .route("/v1/models/{*path}", post(v1_predict))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route("/v2/health/live", get(|| async { axum::Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { axum::Json(json!({"ready": true})) }))
        .merge(guarded)
        .fallback(|| async { ServeError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(app)
}

async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(expected) = &app.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        // Compares digests, so the time taken says nothing about the token.
        let same = presented.is_some_and(|p| p.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        if !same {
            return ServeError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render(&app.shelf.get());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "cohort",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["lineage"],
    }))
}

fn parse_version(text: &str) -> Result<Selector, ServeError> {
    text.parse::<Version>().map(Selector::Version).map_err(|e| ServeError::bad("version", e.to_string()))
}

fn metadata(app: &App, name: &str, selector: Selector) -> Result<axum::Json<Value>, ServeError> {
    let catalog = app.shelf.get();
    let model = catalog.model(name, selector)?;
    let versions: Vec<(String, String)> =
        catalog.versions(name).map(|(v, e)| (v.0.to_string(), e.stage.to_string())).collect();
    let lineage = format!("/v2/models/{name}/versions/{}/lineage", model.version().0);
    Ok(axum::Json(wire::model_metadata(&model, &versions, &lineage)))
}

async fn model_metadata(State(app): State<App>, Path(name): Path<String>) -> Result<axum::Json<Value>, ServeError> {
    metadata(&app, &name, Selector::Default)
}

async fn version_metadata(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ServeError> {
    metadata(&app, &name, parse_version(&version)?)
}

fn ready(app: &App, name: &str, selector: Selector) -> Result<axum::Json<Value>, ServeError> {
    let model = app.shelf.get().model(name, selector)?;
    Ok(axum::Json(json!({"name": name, "version": model.version().0.to_string(), "ready": true})))
}

async fn model_ready(State(app): State<App>, Path(name): Path<String>) -> Result<axum::Json<Value>, ServeError> {
    ready(&app, &name, Selector::Default)
}

async fn version_ready(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ServeError> {
    ready(&app, &name, parse_version(&version)?)
}

async fn version_lineage(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ServeError> {
    let model = app.shelf.get().model(&name, parse_version(&version)?)?;
    Ok(axum::Json(model.lineage().clone()))
}

async fn model_infer(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> Response {
    infer(app, "v2-infer", name, Ok(Selector::Default), body, v2_answer).await
}

async fn version_infer(State(app): State<App>, Path((name, version)): Path<(String, String)>, body: Bytes) -> Response {
    infer(app, "v2-infer", name, parse_version(&version), body, v2_answer).await
}

/// `POST /v1/models/{name}[/versions/{v}|/labels/{stage}]:predict`.
async fn v1_predict(State(app): State<App>, Path(path): Path<String>, body: Bytes) -> Response {
    let Some(target) = path.strip_suffix(":predict") else {
        return ServeError::NotFound(format!("no such endpoint /v1/models/{path} (TF Serving's API here is :predict)"))
            .into_response();
    };
    let (name, selector) = match target.split('/').collect::<Vec<_>>()[..] {
        [name] => (name, Ok(Selector::Default)),
        [name, "versions", v] => (name, parse_version(v)),
        [name, "labels", label] => (
            name,
            label
                .parse::<Stage>()
                .ok()
                .filter(|s| *s != Stage::Archived)
                .map(Selector::Label)
                .ok_or_else(|| ServeError::NotFound(format!("no label {label:?} (labels: production, candidate)"))),
        ),
        _ => return ServeError::NotFound(format!("no such endpoint /v1/models/{path}")).into_response(),
    };
    infer(app, "v1-predict", name.to_owned(), selector, body, v1_answer).await
}

type Answer = fn(&Served, &[u8], usize) -> Result<(usize, Value), ServeError>;

fn v2_answer(model: &Served, body: &[u8], max_rows: usize) -> Result<(usize, Value), ServeError> {
    let (request, features) = input::decode_v2(model.features(), body, max_rows)?;
    let prediction = model.predict(&features)?;
    let response = InferResponse::new(model, request.id, &prediction, request.outputs.as_deref())?;
    Ok((features.rows, serde_json::to_value(response).map_err(|e| ServeError::Internal(e.to_string()))?))
}

fn v1_answer(model: &Served, body: &[u8], max_rows: usize) -> Result<(usize, Value), ServeError> {
    let features = input::decode_v1(model.features(), body, max_rows)?;
    let prediction = model.predict(&features)?;
    Ok((features.rows, wire::predictions(&prediction)))
}

/// Resolves the model, runs `answer` on it (off the async workers for big requests), and logs the request.
async fn infer(
    app: App,
    endpoint: &'static str,
    name: String,
    selector: Result<Selector, ServeError>,
    body: Bytes,
    answer: Answer,
) -> Response {
    let started = Instant::now();
    let unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let model = selector.and_then(|s| app.shelf.get().model(&name, s));
    let version = model.as_ref().ok().map(|m| m.version().0);
    let result = match model {
        Err(e) => Err(e),
        // A cheap upper bound on the rows: big bodies go to the blocking pool.
        Ok(model) if body.len() / 8 > INLINE_ROWS * model.features().len().max(1) => {
            let (body, max_rows) = (body.clone(), app.max_rows);
            tokio::task::spawn_blocking(move || answer(&model, &body, max_rows))
                .await
                .unwrap_or_else(|e| Err(ServeError::Internal(format!("the inference task failed: {e}"))))
        }
        Ok(model) => answer(&model, &body, app.max_rows),
    };
    let (rows, outcome, response) = match result {
        Ok((rows, value)) => (rows, "ok".to_owned(), axum::Json(value).into_response()),
        Err(e) => {
            let outcome = match &e {
                ServeError::BadInput { field, .. } => format!("bad-input:{field}"),
                ServeError::NotFound(_) => "not-found".into(),
                ServeError::Unauthorized => "unauthorized".into(),
                ServeError::Unservable { .. } => "unservable".into(),
                ServeError::Internal(_) => "internal".into(),
            };
            (0, outcome, e.into_response())
        }
    };
    let record = LogRecord {
        unix_ms,
        endpoint,
        model: name,
        version,
        rows,
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        status: response.status().as_u16(),
        outcome,
        input_sha256: hex::encode(Sha256::digest(&body)),
    };
    app.metrics.observe(&record);
    app.log.record(record);
    response
}
