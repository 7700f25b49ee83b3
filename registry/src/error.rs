//! The registry's one error type, grouped by blame: storage, caller input, and the state of the registry.

use crate::types::{Stage, Version};
use cohort_core::Round;
use std::path::{Path, PathBuf};

/// Errors of the registry, grouped by blame: storage, caller input, and the state of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SQLite store failed.
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored or exported JSON document could not be (de)serialized.
    #[error("registry JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The store was written by a newer Cohort.
    #[error("registry schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Version this build supports.
        supported: i64,
    },
    /// No such model or version.
    #[error("model {name:?} {} not found", version.map_or_else(|| "(any version)".to_owned(), |v| v.to_string()))]
    NotFound {
        /// Model name.
        name: String,
        /// Version, if one was asked for.
        version: Option<Version>,
    },
    /// An artifact file that should exist does not.
    #[error("artifact {sha256} is missing from the artifact store")]
    MissingArtifact {
        /// Expected SHA-256.
        sha256: String,
    },
    /// An artifact whose content does not match its name: the file was altered or damaged.
    #[error("artifact {expected} is corrupt: its content hashes to {actual}")]
    CorruptArtifact {
        /// The SHA-256 the file is named by.
        expected: String,
        /// The SHA-256 of its content.
        actual: String,
    },
    /// A stage change that is not allowed (e.g. promoting the production version).
    #[error("model {name:?} {version} is {from}; it cannot become {to}")]
    InvalidTransition {
        /// Model name.
        name: String,
        /// Version.
        version: Version,
        /// Its current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
    },
    /// Rollback asked for a model with no production version.
    #[error("model {0:?} has no production version to roll back")]
    NoProduction(String),
    /// Rollback asked for a model whose production version has no predecessor.
    #[error("model {name:?} {current} is the first production version; there is nothing to roll back to")]
    NothingToRollBack {
        /// Model name.
        name: String,
        /// Its production version.
        current: Version,
    },
    /// A checkpoint older than the one stored.
    #[error("federation {federation:?} already has a checkpoint at round {stored}; refusing round {offered}")]
    StaleCheckpoint {
        /// Federation id.
        federation: String,
        /// Round of the stored checkpoint.
        stored: Round,
        /// Round offered.
        offered: Round,
    },
    /// Caller input that cannot be stored (bad fingerprint, non-finite metric, unknown parent, ...).
    #[error("invalid registry input: {0}")]
    Invalid(String),
}

pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::Io { action, path: path.to_owned(), source }
}
