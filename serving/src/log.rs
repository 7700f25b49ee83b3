//! The inference log: one SQLite row per inference request in `<data_dir>/serving.sqlite3`, with the time,
//! model version, latency, outcome and the SHA-256 of the request body. Never the features, the predictions or
//! an error's text (which can quote a value): the outcome is the HTTP status and the field at fault.
//!
//! Requests hand their record to a writer thread, which commits them in batches, so a slow disk does not slow
//! requests down; [`InferenceLog::close`] waits until every record is on disk.

use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// File name of the inference log inside the data directory.
pub const LOG_FILE: &str = "serving.sqlite3";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS inference_log (
    id INTEGER PRIMARY KEY,
    unix_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER,
    rows INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    input_sha256 TEXT NOT NULL
);";

/// One inference request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the request arrived (milliseconds since the Unix epoch).
    pub unix_ms: i64,
    /// `v2-infer` or `v1-predict`.
    pub endpoint: &'static str,
    /// The model named in the path.
    pub model: String,
    /// The version that answered (None when none was resolved).
    pub version: Option<u64>,
    /// Rows predicted (0 on failure).
    pub rows: usize,
    /// Time from the request to the answer.
    pub latency_us: u64,
    /// The HTTP status.
    pub status: u16,
    /// `ok`, or the kind of error and the field at fault (never its message).
    pub outcome: String,
    /// SHA-256 (hex) of the request body.
    pub input_sha256: String,
}

/// The log's writer: cheap to clone; records are written in the order they are sent.
#[derive(Debug, Clone)]
pub struct InferenceLog {
    tx: mpsc::Sender<LogRecord>,
}

/// The writer thread, joined by [`InferenceLog::close`].
#[derive(Debug)]
pub struct LogWriter {
    thread: JoinHandle<()>,
    path: PathBuf,
}

impl InferenceLog {
    /// Opens (creating) the log in `data_dir` and starts its writer.
    ///
    /// # Errors
    /// [`rusqlite::Error`] when the file cannot be opened or its table created.
    pub fn open(data_dir: &Path) -> Result<(Self, LogWriter), rusqlite::Error> {
        let path = data_dir.join(LOG_FILE);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("inference-log".into())
            .spawn(move || write_all(conn, &rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok((Self { tx }, LogWriter { thread, path }))
    }

    /// Queues a record.
    pub fn record(&self, record: LogRecord) {
        if self.tx.send(record).is_err() {
            tracing::error!("the inference log's writer has stopped; a record was not written");
        }
    }
}

impl LogWriter {
    /// Waits until every record queued by every (now dropped) [`InferenceLog`] is written.
    pub fn close(self) {
        if self.thread.join().is_err() {
            tracing::error!(path = %self.path.display(), "the inference log's writer panicked");
        }
    }
}

/// Writes records in batches of whatever has queued up, until every sender is gone.
fn write_all(mut conn: Connection, rx: &mpsc::Receiver<LogRecord>) {
    const BATCH: usize = 1024;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(BATCH - 1));
        if let Err(e) = write_batch(&mut conn, &batch) {
            tracing::error!(records = batch.len(), "could not write to the inference log: {e}");
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[LogRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO inference_log (unix_ms, endpoint, model, version, rows, latency_us, status, outcome, \
             input_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in batch {
            insert.execute(params![
                r.unix_ms,
                r.endpoint,
                r.model,
                r.version.and_then(|v| i64::try_from(v).ok()),
                i64::try_from(r.rows).unwrap_or(i64::MAX),
                i64::try_from(r.latency_us).unwrap_or(i64::MAX),
                r.status,
                r.outcome,
                r.input_sha256,
            ])?;
        }
    }
    tx.commit()
}

/// Reads the whole log, oldest first (for `cohort` and tests).
///
/// # Errors
/// [`rusqlite::Error`] when the file cannot be read.
pub fn read(data_dir: &Path) -> Result<Vec<LogRecord>, rusqlite::Error> {
    let conn = Connection::open_with_flags(data_dir.join(LOG_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT unix_ms, endpoint, model, version, rows, latency_us, status, outcome, input_sha256 \
         FROM inference_log ORDER BY id",
    )?;
    let rows = stmt.query_map([], |row| {
        let endpoint: String = row.get(1)?;
        Ok(LogRecord {
            unix_ms: row.get(0)?,
            endpoint: if endpoint == "v1-predict" { "v1-predict" } else { "v2-infer" },
            model: row.get(2)?,
            version: row.get::<_, Option<i64>>(3)?.and_then(|v| u64::try_from(v).ok()),
            rows: usize::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            latency_us: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
            status: row.get(6)?,
            outcome: row.get(7)?,
            input_sha256: row.get(8)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            unix_ms: 1_700_000_000_000 + i as i64,
            endpoint: if i.is_multiple_of(2) { "v2-infer" } else { "v1-predict" },
            model: "dosing".into(),
            version: (!i.is_multiple_of(3)).then_some(2),
            rows: i,
            latency_us: 40,
            status: 200,
            outcome: "ok".into(),
            input_sha256: format!("{i:064x}"),
        }
    }

    #[test]
    fn every_record_is_on_disk_in_order_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = InferenceLog::open(dir.path()).unwrap();
        let senders: Vec<_> = (0..4).map(|_| log.clone()).collect();
        for i in 0..2500 {
            senders[i % 4].record(record(i));
        }
        drop((log, senders));
        writer.close();
        let got = read(dir.path()).unwrap();
        assert_eq!(got, (0..2500).map(record).collect::<Vec<_>>());
    }
}
