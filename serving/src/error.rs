//! What can go wrong while serving, grouped by blame: the caller's request, the registry's content, or the
//! server itself.

use cohort_registry::Version;

/// A serving error. The HTTP layer maps each variant to one status code (see `crate::http`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or does not fit the model's schema (400). `field` names the JSON field or the
    /// feature at fault.
    #[error("{field}: {message}")]
    BadInput {
        /// The field or feature.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No such model, version or label (404).
    #[error("{0}")]
    NotFound(String),
    /// The request lacks the bearer token the server requires, or has another one (401).
    #[error("this server requires an `Authorization: Bearer` token, and the request has no valid one")]
    Unauthorized,
    /// The version exists in the registry but cannot be served (503 on its endpoints; listed in the metadata).
    #[error("{model} {version} cannot be served: {reason}")]
    Unservable {
        /// Model name.
        model: String,
        /// Version.
        version: Version,
        /// Why.
        reason: String,
    },
    /// The server failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// A [`ServeError::BadInput`].
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput { field: field.into(), message: message.into() }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory holds no registry.
    #[error("{} holds no model registry ({} is missing); serve the data directory of a coordinator or of `cohort demo`", .0.display(), cohort_registry::DB_FILE)]
    NoRegistry(std::path::PathBuf),
    /// The registry could not be opened or read.
    #[error(transparent)]
    Registry(#[from] cohort_registry::RegistryError),
    /// The inference log could not be opened.
    #[error("inference log {path}: {message}")]
    Log {
        /// The log's path.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving stopped on an I/O error.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}
