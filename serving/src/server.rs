//! The server: binds, loads the registry's models, keeps them in step with the registry, and serves until told
//! to stop.

use crate::catalog::{Catalog, Shelf};
use crate::error::StartError;
use crate::http::{self, App};
use crate::log::{InferenceLog, LOG_FILE, LogWriter};
use cohort_registry::{DB_FILE, Registry};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory whose registry is served (and where the inference log goes).
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// How often the registry is re-read for new versions and stage changes.
    pub poll: Duration,
    /// A bearer token every request but the health checks must carry.
    pub token: Option<String>,
    /// The most rows one request may carry.
    pub max_rows: usize,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
}

impl ServeConfig {
    /// Defaults: `127.0.0.1:8080`, a 1 s poll, no token, 65,536 rows and 64 MiB per request.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            poll: Duration::from_secs(1),
            token: None,
            max_rows: 65_536,
            max_body_bytes: 64 << 20,
        }
    }
}

/// A bound server, with its models loaded.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    app: App,
    writer: LogWriter,
    registry: Registry,
    config: ServeConfig,
}

impl Server {
    /// Opens the registry, loads every version, opens the inference log and binds.
    ///
    /// # Errors
    /// [`StartError::NoRegistry`] when the data directory holds no registry, and the registry, log and bind
    /// errors.
    pub async fn bind(config: ServeConfig) -> Result<Self, StartError> {
        if !config.data_dir.join(DB_FILE).is_file() {
            return Err(StartError::NoRegistry(config.data_dir.clone()));
        }
        let registry = Registry::open(&config.data_dir)?;
        let shelf = Arc::new(Shelf::new(Catalog::load(&registry, &Catalog::default())?));
        let (log, writer) = InferenceLog::open(&config.data_dir)
            .map_err(|e| StartError::Log { path: config.data_dir.join(LOG_FILE), message: e.to_string() })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let token = config.token.as_ref().map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        let app = App { shelf, log, metrics: Arc::default(), token, max_rows: config.max_rows };
        Ok(Self { listener, app, writer, registry, config })
    }

    /// The address it listens on (useful with port 0).
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The models it serves now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.app.shelf.get()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight and writes out the inference log.
    ///
    /// # Errors
    /// [`StartError::Serve`] when the listener fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let Self { listener, app, writer, registry, config } = self;
        let (stop, stopped) = mpsc::channel::<()>();
        let shelf = app.shelf.clone();
        let poll = config.poll;
        let reloader = std::thread::Builder::new()
            .name("registry-poll".into())
            .spawn(move || {
                // Until `stop` is dropped: a promotion, a rollback or a new version shows within one poll.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(poll) {
                    if let Err(e) = shelf.refresh(&registry) {
                        tracing::warn!("could not re-read the registry (still serving the last versions read): {e}");
                    }
                }
            })
            .map_err(StartError::Serve)?;
        let router = http::router(app, config.max_body_bytes);
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
        drop(stop);
        if reloader.join().is_err() {
            tracing::error!("the registry poll thread panicked");
        }
        writer.close();
        served.map_err(StartError::Serve)
    }
}
