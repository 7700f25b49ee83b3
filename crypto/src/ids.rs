//! Identifier newtypes shared by every module.

use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// A participant of a round (client and key holder). Its value is also its Shamir
/// x-coordinate, so it is nonzero by construction (an x-coordinate of 0 would reveal the secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ParticipantId(pub NonZeroU32);

impl ParticipantId {
    /// Builds an id from a raw value; `None` for 0.
    pub fn new(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).map(Self)
    }

    /// The raw value, which is the Shamir x-coordinate of this participant.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "participant {}", self.0)
    }
}

/// A federated round number. Round keys, masks and decryption permissions are all per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoundId(pub u64);

impl std::fmt::Display for RoundId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "round {}", self.0)
    }
}
