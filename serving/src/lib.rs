//! Serving the registry's models over the Open Inference Protocol (KServe V2 REST) and TF Serving's V1
//! `:predict` API.
//!
//! - [`model`]: one version as a predictor ([`ServedModel`]) that applies exactly the training preprocessing
//!   (the federation's declared scaling) and checks inputs against the schema.
//! - [`catalog`]: every registered version by name and stage ([`Catalog`]), swapped whole when the registry
//!   changes ([`Shelf`]), so a promotion is served without a restart while requests in flight finish on the
//!   version they started on.
//! - [`input`] and [`wire`]: the request and response bodies, with a 400 that names the field at fault.
//! - [`log`]: the inference log in the data directory (time, version, latency, outcome and a hash of the
//!   request; never the features).
//! - [`metrics`]: the Prometheus `/metrics` text: requests, rows and latency per version, and input drift.
//! - [`server`]: binding and running ([`Server`]).
//!
//! # Endpoints
//! | Method and path | Answer |
//! |---|---|
//! | `GET /v2/health/live`, `GET /v2/health/ready` | 200 (no token needed) |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata: inputs, outputs, versions and stages, lineage link |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | 200, 404 (unknown) or 503 (not servable) |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | V2 inference |
//! | `GET /v2/models/{m}/versions/{v}/lineage` | the version's lineage, metrics and privacy spend |
//! | `POST /v1/models/{m}[/versions/{v}\|/labels/{stage}]:predict` | TF Serving V1 prediction |
//! | `GET /metrics` | Prometheus metrics |
//!
//! Without a version, the production version answers.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), cohort_serving::StartError> {
//! let server = cohort_serving::Server::bind(cohort_serving::ServeConfig::new("demo-data")).await?;
//! println!("listening on {}", server.local_addr().map_err(cohort_serving::StartError::Serve)?);
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
mod error;
mod http;
pub mod input;
pub mod log;
pub mod metrics;
pub mod model;
pub mod server;
pub mod wire;

#[cfg(test)]
mod test_support;

pub use catalog::{Catalog, Selector, Served, Shelf};
pub use error::{ServeError, StartError};
pub use model::{Features, Prediction, ServedModel};
pub use server::{ServeConfig, Server};
