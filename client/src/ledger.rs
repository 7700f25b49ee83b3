//! The node's privacy ledger store: its signed, hash-chained records ([`cohort_core::ledger`]) kept append-only in
//! one SQLite file of its data directory ([`LEDGER_DB_FILE`]), with the signing key beside it
//! ([`SIGNING_KEY_FILE`]).
//!
//! # Example
//! ```
//! use cohort_client::ledger::Ledger;
//! use cohort_core::ledger::{verify_chain, Mechanism, NodeSigningKey, RecordBody};
//! let dir = tempfile::tempdir().unwrap();
//! let key = NodeSigningKey::load_or_create(&dir.path().join("ledger-signing.key")).unwrap();
//! let mut ledger = Ledger::open_with_key(&dir.path().join("ledger.sqlite"), key).unwrap();
//! let draft = RecordBody { sample_rate: 0.01, noise_multiplier: 1.0, steps: 100, cumulative_epsilon: 0.5,
//!     ..RecordBody::new("hospital-a", &"ab".repeat(32), Mechanism::DpSgd) };
//! let record = ledger.append(draft).unwrap();
//! assert_eq!(record.body.seq, 0);
//! let mut jsonl = Vec::new();
//! ledger.export_jsonl(&mut jsonl).unwrap();
//! let back = cohort_core::ledger::read_jsonl(jsonl.as_slice()).unwrap();
//! verify_chain(&back, Some(&[ledger.public_key()])).unwrap();
//! ```

pub use cohort_core::ledger::{LEDGER_DB_FILE, LEDGER_FILE, SIGNING_KEY_FILE};

use cohort_core::ledger::{
    GENESIS, LedgerError, LedgerRecord, NodeSigningKey, RecordBody, read_jsonl, verify_chain, write_jsonl,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_records (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT    NOT NULL UNIQUE,
    record_json TEXT    NOT NULL,
    UNIQUE (node, seq)
);
CREATE TRIGGER IF NOT EXISTS ledger_records_no_update BEFORE UPDATE ON ledger_records
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_records_no_delete BEFORE DELETE ON ledger_records
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
";

/// A node's append-only ledger in one SQLite file, signed with the node's key.
///
/// Every append is one `IMMEDIATE` transaction with `synchronous = FULL`: the new record's seq and prev_hash
/// are read from the database inside the transaction, so a crash leaves either the whole record or none, and
/// another process appending to the same file cannot fork the chain. Triggers refuse `UPDATE` and `DELETE`.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    key: NodeSigningKey,
    records: Vec<LedgerRecord>,
}

impl Ledger {
    /// Opens (or creates) the ledger of the node whose data directory is `data_dir`: the key is
    /// [`SIGNING_KEY_FILE`] (created if absent, see [`NodeSigningKey::load_or_create`]) and the store is
    /// [`LEDGER_DB_FILE`]. A JSON Lines ledger ([`LEDGER_FILE`]) left by an earlier version is imported, after
    /// verification, into a new empty store; the JSONL file is left in place.
    ///
    /// # Errors
    /// As [`Ledger::open_with_key`], plus key and import problems.
    pub fn open(data_dir: &Path) -> Result<Self, LedgerError> {
        let key = NodeSigningKey::load_or_create(&data_dir.join(SIGNING_KEY_FILE))?;
        let mut ledger = Self::open_with_key(&data_dir.join(LEDGER_DB_FILE), key)?;
        let legacy = data_dir.join(LEDGER_FILE);
        if ledger.records.is_empty() && legacy.exists() {
            let file = fs::File::open(&legacy).map_err(|source| LedgerError::Io { path: legacy.clone(), source })?;
            let records = read_jsonl(io::BufReader::new(file))?;
            verify_chain(&records, Some(&[ledger.public_key()]))?;
            ledger.import(&records)?;
        }
        Ok(ledger)
    }

    /// Opens (or creates) the SQLite ledger at `path`, signing new records with `key`. The stored chain is
    /// verified, and every stored record must be signed by `key`.
    ///
    /// # Errors
    /// [`LedgerError::Database`] if the store cannot be opened, [`LedgerError::Malformed`] for a stored row that
    /// is not a record (naming its 1-based row), [`LedgerError::Chain`] for a broken chain or a foreign signer.
    pub fn open_with_key(path: &Path, key: NodeSigningKey) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| LedgerError::Io { path: dir.to_owned(), source })?;
        }
        let mut ledger = Self { path: path.to_owned(), key, records: Vec::new() };
        let conn = ledger.connect()?;
        ledger.records = ledger.load(&conn)?;
        Ok(ledger)
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
        |source| LedgerError::Database { path: self.path.clone(), source: Box::new(source) }
    }

    fn connect(&self) -> Result<Connection, LedgerError> {
        let conn = Connection::open(&self.path).map_err(self.db_err())?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(self.db_err())?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(self.db_err())?;
        conn.execute_batch(SCHEMA).map_err(self.db_err())?;
        Ok(conn)
    }

    fn load(&self, conn: &Connection) -> Result<Vec<LedgerRecord>, LedgerError> {
        let mut stmt = conn.prepare("SELECT record_json FROM ledger_records ORDER BY id").map_err(self.db_err())?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(self.db_err())?;
        let mut records = Vec::new();
        for (i, row) in rows.enumerate() {
            let json = row.map_err(self.db_err())?;
            records.push(
                serde_json::from_str(&json)
                    .map_err(|e| LedgerError::Malformed { line: i + 1, message: e.to_string() })?,
            );
        }
        verify_chain(&records, Some(&[self.public_key()]))?;
        Ok(records)
    }

    fn import(&mut self, records: &[LedgerRecord]) -> Result<(), LedgerError> {
        let mut conn = self.connect()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.db_err())?;
        for r in records {
            insert(&tx, r).map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())?;
        self.records = records.to_vec();
        Ok(())
    }

    /// The records, oldest first (as of the last open or append of this handle).
    pub fn records(&self) -> &[LedgerRecord] {
        &self.records
    }

    /// The newest record, if any.
    pub fn head(&self) -> Option<&LedgerRecord> {
        self.records.last()
    }

    /// The newest record of `node`, if any.
    pub fn head_of(&self, node: &str) -> Option<&LedgerRecord> {
        self.records.iter().rev().find(|r| r.body.node == node)
    }

    /// The node's public key, hex.
    pub fn public_key(&self) -> String {
        self.key.public_key_hex()
    }

    /// The node's public key bytes.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.public_key_bytes()
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record: validates the draft, then in one transaction reads the node's head, sets `seq`,
    /// `prev_hash` and `timestamp_ms` (now), hashes, signs and inserts it, and commits durably. The draft's own
    /// seq, prev_hash and timestamp are ignored. Records other processes appended to the same file are picked
    /// up first.
    ///
    /// # Errors
    /// [`LedgerError::Invalid`] for a bad draft, [`LedgerError::Database`] when the store cannot be written (the
    /// record is then not stored and this handle is unchanged), or a chain error if the store was corrupted.
    pub fn append(&mut self, mut body: RecordBody) -> Result<LedgerRecord, LedgerError> {
        body.validate()?;
        let mut conn = self.connect()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.db_err())?;
        let stored: i64 =
            tx.query_row("SELECT COUNT(*) FROM ledger_records", [], |r| r.get(0)).map_err(self.db_err())?;
        let mut records = None;
        if usize::try_from(stored).ok() != Some(self.records.len()) {
            records = Some(self.load(&tx)?);
        }
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM ledger_records WHERE node = ?1 ORDER BY seq DESC LIMIT 1",
                params![body.node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        (body.seq, body.prev_hash) = match head {
            Some((seq, hash)) => (u64::try_from(seq).unwrap_or(0).saturating_add(1), hash),
            None => (0, GENESIS.to_owned()),
        };
        body.timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let record = self.key.sign_body(body);
        insert(&tx, &record).map_err(self.db_err())?;
        tx.commit().map_err(self.db_err())?;
        if let Some(records) = records {
            self.records = records;
        }
        self.records.push(record.clone());
        Ok(record)
    }

    /// Writes every stored record (read afresh from the database) as JSON Lines and returns how many.
    ///
    /// # Errors
    /// [`LedgerError::Database`] / [`LedgerError::Malformed`] / [`LedgerError::Chain`] reading the store, and
    /// [`LedgerError::Io`] writing.
    pub fn export_jsonl(&self, writer: impl Write) -> Result<usize, LedgerError> {
        let records = self.load(&self.connect()?)?;
        write_jsonl(&records, writer).map_err(|source| LedgerError::Io { path: PathBuf::from("<export>"), source })
    }
}

fn insert(conn: &Connection, r: &LedgerRecord) -> rusqlite::Result<()> {
    let seq = i64::try_from(r.body.seq).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT INTO ledger_records (node, seq, hash, record_json) VALUES (?1, ?2, ?3, ?4)",
        params![r.body.node, seq, r.hash, r.to_json_line()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::ledger::{Mechanism, PrivacyEvent, body_hash, chain_heads};

    fn draft(node: &str, eps: f64) -> RecordBody {
        RecordBody {
            round: Some(1),
            sample_rate: 0.01,
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            steps: 100,
            delta: 1e-5,
            accountant: "rdp".into(),
            accountant_version: "1".into(),
            cumulative_epsilon: eps,
            epsilon_budget: 3.0,
            ..RecordBody::new(node, &"f".repeat(64), Mechanism::DpSgd)
        }
    }

    fn ledger_with(n: usize) -> (tempfile::TempDir, Vec<LedgerRecord>) {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        for i in 0..n {
            l.append(draft("a", i as f64 * 0.1)).unwrap();
        }
        let records = l.records().to_vec();
        (dir, records)
    }

    fn jsonl(records: &[LedgerRecord]) -> Vec<String> {
        records.iter().map(LedgerRecord::to_json_line).collect()
    }

    /// Verifies text lines as an auditor would: parse, then check the chain. Returns the failing line.
    fn failing_line(lines: &[String]) -> Option<usize> {
        match read_jsonl(lines.join("\n").as_bytes()) {
            Err(LedgerError::Malformed { line, .. }) => Some(line),
            Err(e) => panic!("{e}"),
            Ok(records) => verify_chain(&records, None).err().map(|e| e.line),
        }
    }

    /// A different value of the same JSON type that still parses as a record where possible.
    fn mutate(key: &str, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) if key == "mechanism" => Value::from(if s == "decline" { "dp-sgd" } else { "decline" }),
            Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()) => {
                let first = if s.starts_with('0') { '1' } else { '0' };
                Value::from(format!("{first}{}", &s[1..]))
            }
            Value::String(s) => Value::from(format!("{s}x")),
            Value::Number(n) if n.is_u64() => Value::from(n.as_u64().unwrap() + 1),
            Value::Number(n) => Value::from(n.as_f64().unwrap() * 2.0 + 0.5),
            Value::Null => Value::from(7u64),
            other => panic!("unexpected field {key}: {other}"),
        }
    }

    #[test]
    fn appended_records_verify_and_survive_reopening() {
        let (dir, records) = ledger_with(4);
        verify_chain(&records, None).unwrap();
        assert_eq!(records[0].body.prev_hash, GENESIS);
        assert!(records.windows(2).all(|w| w[1].body.prev_hash == w[0].hash && w[1].body.seq == w[0].body.seq + 1));
        let mut reopened = Ledger::open(dir.path()).unwrap();
        assert_eq!(reopened.records(), records.as_slice());
        assert_eq!(reopened.head(), records.last());
        let next = reopened.append(draft("a", 0.9)).unwrap();
        assert_eq!(next.body.seq, 4);
        assert_eq!(next.body.prev_hash, records[3].hash);
        drop(reopened);
        let again = Ledger::open(dir.path()).unwrap();
        assert_eq!(again.records().len(), 5);
        let mut out = Vec::new();
        assert_eq!(again.export_jsonl(&mut out).unwrap(), 5);
        let back = read_jsonl(out.as_slice()).unwrap();
        assert_eq!(back, again.records());
        verify_chain(&back, Some(&[again.public_key()])).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(dir.path().join(SIGNING_KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn two_handles_on_one_store_do_not_fork_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Ledger::open(dir.path()).unwrap();
        let mut second = Ledger::open(dir.path()).unwrap();
        first.append(draft("a", 0.1)).unwrap();
        let r = second.append(draft("a", 0.2)).unwrap();
        assert_eq!(r.body.seq, 1);
        assert_eq!(second.records().len(), 2);
        verify_chain(second.records(), None).unwrap();
    }

    #[test]
    fn the_store_is_append_only_and_checked_on_open() {
        let (dir, _records) = ledger_with(3);
        let conn = Connection::open(dir.path().join(LEDGER_DB_FILE)).unwrap();
        assert!(conn.execute("DELETE FROM ledger_records WHERE seq = 1", []).is_err());
        assert!(conn.execute("UPDATE ledger_records SET node = 'b'", []).is_err());
        // Someone who drops the triggers and edits a row is caught when the ledger is opened.
        conn.execute_batch("DROP TRIGGER ledger_records_no_update").unwrap();
        conn.execute("UPDATE ledger_records SET record_json = replace(record_json, '\"steps\":100', '\"steps\":1') WHERE seq = 2", [])
            .unwrap();
        drop(conn);
        match Ledger::open(dir.path()).unwrap_err() {
            LedgerError::Chain(e) => assert_eq!((e.line, e.seq), (3, 2)),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_foreign_key_cannot_extend_the_store() {
        let (dir, _records) = ledger_with(2);
        let other = NodeSigningKey::generate().unwrap();
        let err = Ledger::open_with_key(&dir.path().join(LEDGER_DB_FILE), other).unwrap_err();
        assert!(err.to_string().contains("not a trusted key"), "{err}");
    }

    #[test]
    fn editing_any_field_of_any_record_is_caught_and_named() {
        let (_dir, records) = ledger_with(4);
        let lines = jsonl(&records);
        assert_eq!(failing_line(&lines), None);
        for (i, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object().unwrap();
            for key in object.keys() {
                let mut edited = object.clone();
                edited.insert(key.clone(), mutate(key, &object[key]));
                let mut tampered = lines.clone();
                tampered[i] = serde_json::Value::Object(edited).to_string();
                assert_eq!(failing_line(&tampered), Some(i + 1), "editing {key} of line {}", i + 1);
            }
        }
    }

    #[test]
    fn removed_swapped_inserted_and_forged_records_are_named() {
        let (_dir, records) = ledger_with(5);
        let err = |r: &[LedgerRecord]| verify_chain(r, None).unwrap_err();
        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(err(&deleted).line, 2);
        assert!(err(&deleted).reason.contains("sequence number"));
        let mut swapped = records.clone();
        swapped.swap(2, 3);
        assert_eq!(err(&swapped).line, 3);
        // A copy of a valid record inserted again.
        let mut inserted = records.clone();
        inserted.insert(3, records[1].clone());
        assert_eq!(err(&inserted).line, 4);
        // A record signed by another key, correctly chained, inserted in the middle.
        let intruder = NodeSigningKey::generate().unwrap();
        let mut body = records[2].body.clone();
        body.seq = 3;
        body.prev_hash = records[2].hash.clone();
        let mut spliced = records[..3].to_vec();
        spliced.push(intruder.sign_body(body));
        assert_eq!(err(&spliced).line, 4);
        assert!(err(&spliced).reason.contains("different key"));
        // A forged signature.
        let mut forged = records.clone();
        forged[4].signature = "00".repeat(64);
        assert_eq!(err(&forged).line, 5);
        assert!(err(&forged).reason.contains("signature"));
        // A changed ε, re-hashed but not re-signable: the signature fails.
        let mut rehashed = records.clone();
        rehashed[1].body.cumulative_epsilon = 0.01;
        assert!(err(&rehashed).reason.contains("hash does not match"));
        rehashed[1].hash = body_hash(&rehashed[1].body);
        assert_eq!(err(&rehashed).line, 2);
        assert!(err(&rehashed).reason.contains("signature"));
        // A whole chain re-signed by another key passes alone but not against the trusted key.
        let resigned: Vec<LedgerRecord> = {
            let mut prev = GENESIS.to_owned();
            records
                .iter()
                .map(|r| {
                    let mut b = r.body.clone();
                    b.prev_hash = prev.clone();
                    let s = intruder.sign_body(b);
                    prev = s.hash.clone();
                    s
                })
                .collect()
        };
        verify_chain(&resigned, None).unwrap();
        assert!(verify_chain(&resigned, Some(&[records[0].signer.clone()])).unwrap_err().reason.contains("trusted"));
    }

    #[test]
    fn chains_are_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Ledger::open(&dir.path().join("a")).unwrap();
        let mut b = Ledger::open(&dir.path().join("b")).unwrap();
        let mut mixed = Vec::new();
        for i in 0..3 {
            mixed.push(a.append(draft("a", f64::from(i))).unwrap());
            mixed.push(b.append(draft("b", f64::from(i))).unwrap());
        }
        verify_chain(&mixed, Some(&[a.public_key(), b.public_key()])).unwrap();
        assert_eq!(chain_heads(&mixed)["b"], (2, mixed[5].hash.clone()));
        mixed.remove(3); // b's seq 1
        let e = verify_chain(&mixed, None).unwrap_err();
        assert_eq!((e.line, e.node.as_str(), e.seq), (5, "b", 2));
    }

    #[test]
    fn bad_drafts_and_malformed_lines_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert!(
            matches!(l.append(draft("a", f64::INFINITY)), Err(LedgerError::Invalid(m)) if m.contains("cumulative_epsilon"))
        );
        assert!(matches!(l.append(draft("", 0.0)), Err(LedgerError::Invalid(_))));
        let pure = RecordBody::new("a", "00", Mechanism::OpenDpCount);
        assert!(matches!(l.append(pure.clone()), Err(LedgerError::Invalid(m)) if m.contains("epsilon_spent")));
        let ok = l.append(RecordBody { epsilon_spent: Some(0.5), cumulative_epsilon: 0.5, ..pure }).unwrap();
        assert_eq!(ok.privacy_event(), Some(PrivacyEvent::PureEpsilon(0.5)));
        assert!(l.records().len() == 1);
        let text = format!("{}\n\n{{not json\n", ok.to_json_line());
        assert!(matches!(read_jsonl(text.as_bytes()), Err(LedgerError::Malformed { line: 3, .. })));
    }

    #[test]
    fn a_legacy_jsonl_ledger_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let mut body = draft("a", 0.3);
        body.prev_hash = GENESIS.into();
        let first = key.sign_body(body);
        fs::write(dir.path().join(LEDGER_FILE), format!("{}\n", first.to_json_line())).unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.records(), std::slice::from_ref(&first));
        assert_eq!(l.append(draft("a", 0.4)).unwrap().body.prev_hash, first.hash);
        assert_eq!(Ledger::open(dir.path()).unwrap().records().len(), 2);
    }
}
