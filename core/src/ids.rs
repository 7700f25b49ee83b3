//! Newtypes for identifiers and counters that must never be swapped.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A training round number. Round 1 is the first round; round 0 means "before any round".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Round(pub u64);

/// A global model version. Version 0 is the initial model; version `r` is the result of round `r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ModelVersion(pub u64);

/// The name of a node, taken from the common name of its certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeName(pub String);

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for NodeName {
    /// The name, escaped and bounded like any untrusted text ([`crate::untrusted::Untrusted`]): a valid node name
    /// shows as itself, and a name that was never validated cannot break a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::untrusted::Untrusted(&self.0).fmt(f)
    }
}

impl NodeName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
