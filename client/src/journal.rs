//! The key holder's durable memory of the secure rounds it answered, in SQLite in the node's data directory.
//!
//! A key holder answers at most one decryption request per secure round. An in-memory flag would forget that
//! across a restart, and a coordinator could then ask again and obtain a second, different decryption of the
//! same round. So the holder writes `(federation, round id, announcement hash)` here, synchronously and before
//! the partial decryption leaves the node ([`cohort_crypto::AnswerJournal`]), and refuses any round id it finds
//! here, under any announcement, from then on.

use cohort_crypto::{AnnouncementHash, AnswerJournal, JournalError, RoundId};
use rusqlite::{Connection, ErrorCode, params};
use std::path::{Path, PathBuf};

/// File name of the journal inside the node's data directory.
pub const JOURNAL_FILE: &str = "secagg-journal.sqlite3";

/// The durable journal of answered secure rounds of one federation. Each call opens its own connection (a
/// few per round), so the journal is `Send + Sync` and shares nothing across threads.
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    path: PathBuf,
    federation: String,
}

impl SqliteJournal {
    /// Opens (or creates) the journal in `data_dir` for `federation`.
    ///
    /// # Errors
    /// [`JournalError::Storage`] when the file cannot be opened or initialized.
    pub fn open(data_dir: &Path, federation: &str) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|e| JournalError::Storage(e.to_string()))?;
        let journal = Self { path: data_dir.join(JOURNAL_FILE), federation: federation.to_owned() };
        journal.connect()?;
        Ok(journal)
    }

    /// The journal in `data_dir` for `federation`, not opened yet: its file is created, and its storage checked,
    /// on first use (a plaintext federation never uses it).
    pub fn unopened(data_dir: &Path, federation: &str) -> Self {
        Self { path: data_dir.join(JOURNAL_FILE), federation: federation.to_owned() }
    }

    /// A connection with full synchronous writes, the schema in place.
    fn connect(&self) -> Result<Connection, JournalError> {
        let storage = |e: rusqlite::Error| JournalError::Storage(format!("{}: {e}", self.path.display()));
        let conn = Connection::open(&self.path).map_err(storage)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS answered (
                 federation TEXT NOT NULL,
                 round_id BLOB NOT NULL,
                 announcement BLOB NOT NULL,
                 answered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 PRIMARY KEY (federation, round_id)
             );",
        )
        .map_err(storage)?;
        Ok(conn)
    }

    /// Whether an answer for `round` was recorded, under any announcement.
    ///
    /// # Errors
    /// [`JournalError::Storage`].
    pub fn has_answered(&self, round: RoundId) -> Result<bool, JournalError> {
        self.connect()?
            .query_row(
                "SELECT COUNT(*) FROM answered WHERE federation = ?1 AND round_id = ?2",
                params![self.federation, round.0.to_be_bytes().as_slice()],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| JournalError::Storage(e.to_string()))
    }
}

impl AnswerJournal for SqliteJournal {
    fn record_answer(&mut self, round: RoundId, announcement: &AnnouncementHash) -> Result<(), JournalError> {
        match self.connect()?.execute(
            "INSERT INTO answered (federation, round_id, announcement) VALUES (?1, ?2, ?3)",
            params![self.federation, round.0.to_be_bytes().as_slice(), announcement.0.as_slice()],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                Err(JournalError::AlreadyAnswered)
            }
            Err(e) => Err(JournalError::Storage(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_survives_a_restart_and_a_round_is_answered_once_under_any_announcement() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (AnnouncementHash([1; 32]), AnnouncementHash([2; 32]));
        {
            let mut journal = SqliteJournal::open(dir.path(), "fed").unwrap();
            assert!(!journal.has_answered(RoundId(7)).unwrap());
            journal.record_answer(RoundId(7), &a).unwrap();
            assert_eq!(journal.record_answer(RoundId(7), &a), Err(JournalError::AlreadyAnswered));
        }
        // A restarted holder (a new process) reopens the file.
        let mut journal = SqliteJournal::open(dir.path(), "fed").unwrap();
        assert!(journal.has_answered(RoundId(7)).unwrap());
        assert_eq!(journal.record_answer(RoundId(7), &b), Err(JournalError::AlreadyAnswered));
        journal.record_answer(RoundId(8), &b).unwrap();
        // Round ids are per federation.
        let mut other = SqliteJournal::open(dir.path(), "other").unwrap();
        other.record_answer(RoundId(7), &a).unwrap();
    }
}
