//! The versioned model registry: lineage, stages, gate decisions, round checkpoints and export.
//!
//! Layout of a data directory:
//! - `<data_dir>/registry.sqlite3` — the embedded SQLite store (WAL journal, `synchronous = FULL`), schema version
//!   [`SCHEMA_VERSION`] in `PRAGMA user_version`;
//! - `<data_dir>/artifacts/<sha256-hex>` — content-addressed model artifacts (the little-endian `f32` parameter
//!   bytes of [`cohort_core::model::parameters_to_bytes`]), written to a temporary file and renamed, and checked
//!   against their name on every read.
//!
//! Guarantees:
//! - version numbers increase monotonically per model name (allocated inside a write transaction; versions are
//!   never deleted);
//! - registering the same `(name, round)` twice returns the first registration and adds nothing (a restarted
//!   coordinator may safely re-register its last round);
//! - [`Registry::register_round`] writes the version and the federation's checkpoint in one transaction, and the
//!   artifact file exists before that transaction commits, so a crash (even SIGKILL) leaves either both or
//!   neither, and never a version whose artifact is missing (an orphan artifact file is harmless);
//! - every stage change is a row of `stage_events` with who, when and why; every gate decision is a row of
//!   `gate_decisions` with its reasons and the gate config.
//!
//! Stages: a new version is a `candidate`. [`Registry::promote`] makes it `production` and archives the previous
//! production version. [`Registry::rollback`] archives the production version and restores the one that was in
//! production before it (production history is a stack: promotions push, rollbacks pop).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod artifacts;
mod error;
mod export;
pub mod gate;
mod lineage;
mod sql;
mod store;
mod timestamp;
mod types;

#[cfg(test)]
mod test_support;

pub use artifacts::{ArtifactStore, sha256_hex};
pub use error::RegistryError;
pub use export::{EXPORT_FORMAT, EXPORT_FORMAT_VERSION, ExportDocument, ExportMetadata, ExportedWeights};
pub use lineage::{MetricDelta, ValueChange, VersionDiff, diff_records};
pub use store::{ARTIFACTS_DIR, DB_FILE, Registry, SCHEMA_VERSION};
pub use timestamp::rfc3339_utc;
pub use types::{
    Checkpoint, GateRecord, NewVersion, PrivacySpend, Stage, StageEvent, Version, VersionDetails, VersionRecord,
};
