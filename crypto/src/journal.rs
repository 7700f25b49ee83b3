//! The durable "answered" journal of a key holder (sans-I/O: the crate defines the trait, the
//! client implements it on its database).
//!
//! A key holder that answered a decryption request and then restarts must not answer another
//! request of the same round: two answers let a malicious coordinator obtain two different sums
//! (a split) and subtract them. [`crate::KeyHolder::partial_decrypt`] therefore calls
//! [`AnswerJournal::record_answer`] after every check and **before** computing or releasing the
//! partial; if recording fails, nothing is released. The journal is keyed by round id alone, so
//! a second announcement reusing a round id is refused too.

use crate::announce::AnnouncementHash;
use crate::ids::RoundId;
use std::collections::BTreeMap;
use thiserror::Error;

/// Errors of the answer journal.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalError {
    /// An answer for this round (under any announcement) was recorded before.
    #[error("an answer for this round was already recorded")]
    AlreadyAnswered,
    /// The durable store failed; the holder must not answer.
    #[error("journal storage failed: {0}")]
    Storage(String),
}

/// Durable record of the rounds a key holder has answered.
///
/// Implementations must make [`record_answer`](Self::record_answer) atomic and durable (for
/// instance an `INSERT` into a table with `round` as primary key, committed with `fsync`) before
/// returning `Ok`, and must survive restarts.
pub trait AnswerJournal {
    /// Durably records that this holder answers `round` under `announcement`, BEFORE the partial
    /// is released.
    ///
    /// # Errors
    /// [`JournalError::AlreadyAnswered`] if any answer for `round` (under any announcement) was
    /// recorded before; [`JournalError::Storage`] if it cannot be recorded durably.
    fn record_answer(&mut self, round: RoundId, announcement: &AnnouncementHash) -> Result<(), JournalError>;
}

/// An in-memory [`AnswerJournal`] for tests and simulations. **Not durable**: a real client must
/// persist its journal.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal {
    answered: BTreeMap<RoundId, AnnouncementHash>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The announcement under which `round` was answered, if it was.
    pub fn answered(&self, round: RoundId) -> Option<AnnouncementHash> {
        self.answered.get(&round).copied()
    }
}

impl AnswerJournal for MemoryJournal {
    fn record_answer(&mut self, round: RoundId, announcement: &AnnouncementHash) -> Result<(), JournalError> {
        if self.answered.contains_key(&round) {
            return Err(JournalError::AlreadyAnswered);
        }
        self.answered.insert(round, *announcement);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_round_under_any_announcement() {
        let mut j = MemoryJournal::new();
        let (a, b) = (AnnouncementHash([1; 32]), AnnouncementHash([2; 32]));
        assert_eq!(j.record_answer(RoundId(1), &a), Ok(()));
        assert_eq!(j.record_answer(RoundId(1), &a), Err(JournalError::AlreadyAnswered));
        assert_eq!(j.record_answer(RoundId(1), &b), Err(JournalError::AlreadyAnswered));
        assert_eq!(j.record_answer(RoundId(2), &b), Ok(()));
        assert_eq!(j.answered(RoundId(1)), Some(a));
        assert_eq!(j.answered(RoundId(3)), None);
    }
}
