//! The SQLite schema and the queries the registry runs inside its transactions.

use crate::error::{RegistryError, Result};
use crate::timestamp::{now_unix_ms, rfc3339_utc};
use crate::types::{Details, NewVersion, Stage, Version, VersionRecord};
use cohort_core::Round;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

pub(crate) fn to_i64(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| RegistryError::Invalid(format!("{what} {v} is too large")))
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    round INTEGER NOT NULL,
    parent INTEGER,
    stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived')),
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, round)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_production_per_name ON model_versions (name) WHERE stage = 'production';
CREATE TABLE IF NOT EXISTS stage_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_events_by_version ON stage_events (name, version);
CREATE TABLE IF NOT EXISTS gate_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    compared_with INTEGER,
    promote INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    config TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    federation TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    strategy_state TEXT NOT NULL,
    model_name TEXT,
    model_version INTEGER,
    saved_unix_ms INTEGER NOT NULL
);
";

pub(crate) const VERSION_COLUMNS: &str =
    "name, version, round, parent, stage, sha256, size_bytes, created_unix_ms, details";

/// A version row before its JSON is parsed.
pub(crate) struct RawVersion {
    name: String,
    version: i64,
    round: i64,
    parent: Option<i64>,
    stage: String,
    sha256: String,
    size_bytes: i64,
    created_unix_ms: i64,
    details: String,
}

impl RawVersion {
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            version: row.get(1)?,
            round: row.get(2)?,
            parent: row.get(3)?,
            stage: row.get(4)?,
            sha256: row.get(5)?,
            size_bytes: row.get(6)?,
            created_unix_ms: row.get(7)?,
            details: row.get(8)?,
        })
    }

    pub(crate) fn parse(self) -> Result<VersionRecord> {
        let d: Details = serde_json::from_str(&self.details)?;
        Ok(VersionRecord {
            name: self.name,
            version: Version(to_u64(self.version)),
            stage: self.stage.parse()?,
            sha256: self.sha256,
            size_bytes: to_u64(self.size_bytes),
            parent: self.parent.map(|p| Version(to_u64(p))),
            round: Round(to_u64(self.round)),
            clients: d.clients,
            metrics: d.metrics,
            slices: d.slices,
            central: d.central,
            created_at: rfc3339_utc(self.created_unix_ms),
            created_unix_ms: self.created_unix_ms,
            strategy: d.strategy,
            hyperparameters: d.hyperparameters,
            config_hash: d.config_hash,
            data_fingerprints: d.data_fingerprints,
            privacy: d.privacy,
            secure_aggregation: d.secure_aggregation,
            preprocessing: d.preprocessing,
            schema: d.schema,
            model_spec: d.model_spec,
        })
    }
}

/// Inserts a version (or finds the existing one for its round). Returns the record and whether it is new.
pub(crate) fn insert_version(
    tx: &Transaction<'_>,
    new: &NewVersion,
    sha: &str,
    size: usize,
) -> Result<(VersionRecord, bool)> {
    let round = to_i64("round", new.round.0)?;
    let existing: Option<i64> = tx
        .query_row("SELECT version FROM model_versions WHERE name = ?1 AND round = ?2", params![new.name, round], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(v) = existing {
        let record = get_version(tx, &new.name, Version(to_u64(v)))?;
        if record.sha256 != sha {
            tracing::warn!(
                name = %new.name, round = new.round.0, existing = %record.sha256, offered = %sha,
                "round already registered with a different artifact; keeping the existing version"
            );
        }
        return Ok((record, false));
    }
    if let Some(parent) = new.parent {
        stage_of(tx, &new.name, parent)
            .map_err(|_| RegistryError::Invalid(format!("parent {} {parent} is not registered", new.name)))?;
    }
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?1",
        params![new.name],
        |r| r.get(0),
    )?;
    let mut clients = new.clients.clone();
    clients.sort();
    clients.dedup();
    let details = Details {
        clients,
        strategy: new.strategy.clone(),
        hyperparameters: new.hyperparameters.clone(),
        config_hash: new.config_hash.clone(),
        data_fingerprints: new.data_fingerprints.clone(),
        metrics: new.metrics.clone(),
        slices: new.slices.clone(),
        central: new.central.clone(),
        privacy: new.privacy.clone(),
        secure_aggregation: new.secure_aggregation.clone(),
        preprocessing: new.preprocessing.clone(),
        schema: new.schema.clone(),
        model_spec: new.model_spec.clone(),
    };
    let now = now_unix_ms();
    tx.execute(
        &format!("INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            new.name,
            next,
            round,
            new.parent.map(|p| to_i64("parent", p.0)).transpose()?,
            Stage::Candidate.as_str(),
            sha,
            to_i64("artifact size", size as u64)?,
            now,
            serde_json::to_string(&details)?,
        ],
    )?;
    let version = Version(to_u64(next));
    record_event(
        tx,
        &new.name,
        version,
        None,
        Stage::Candidate,
        "register",
        "coordinator",
        &format!("registered from round {}", new.round),
        now,
    )?;
    Ok((get_version(tx, &new.name, version)?, true))
}

pub(crate) fn write_checkpoint(
    tx: &Transaction<'_>,
    federation: &str,
    round: Round,
    sha: &str,
    strategy_state: &Value,
    version: Option<(&str, Version)>,
) -> Result<()> {
    let stored: Option<i64> = tx
        .query_row("SELECT round FROM checkpoints WHERE federation = ?1", params![federation], |r| r.get(0))
        .optional()?;
    let offered = to_i64("round", round.0)?;
    if let Some(stored) = stored
        && stored > offered
    {
        return Err(RegistryError::StaleCheckpoint {
            federation: federation.to_owned(),
            stored: Round(to_u64(stored)),
            offered: round,
        });
    }
    tx.execute(
        "INSERT INTO checkpoints (federation, round, sha256, strategy_state, model_name, model_version, saved_unix_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (federation) DO UPDATE SET round = excluded.round, sha256 = excluded.sha256,
             strategy_state = excluded.strategy_state, model_name = excluded.model_name,
             model_version = excluded.model_version, saved_unix_ms = excluded.saved_unix_ms",
        params![
            federation,
            offered,
            sha,
            serde_json::to_string(strategy_state)?,
            version.map(|(n, _)| n),
            version.map(|(_, v)| to_i64("version", v.0)).transpose()?,
            now_unix_ms(),
        ],
    )?;
    Ok(())
}

pub(crate) fn get_version(conn: &Connection, name: &str, version: Version) -> Result<VersionRecord> {
    let v = to_i64("version", version.0)?;
    let raw = conn
        .query_row(
            &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = ?1 AND version = ?2"),
            params![name, v],
            RawVersion::from_row,
        )
        .optional()?;
    raw.ok_or_else(|| RegistryError::NotFound { name: name.to_owned(), version: Some(version) })?.parse()
}

/// The stage of one version, without reading the rest of its record.
pub(crate) fn stage_of(conn: &Connection, name: &str, version: Version) -> Result<Stage> {
    let v = to_i64("version", version.0)?;
    let stage: Option<String> = conn
        .query_row("SELECT stage FROM model_versions WHERE name = ?1 AND version = ?2", params![name, v], |r| r.get(0))
        .optional()?;
    stage.ok_or_else(|| RegistryError::NotFound { name: name.to_owned(), version: Some(version) })?.parse()
}

/// The newest version number of `name`, if any, without reading its record.
pub(crate) fn latest_in(conn: &Connection, name: &str) -> Result<Option<Version>> {
    let v: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM model_versions WHERE name = ?1", params![name], |r| r.get(0))?;
    Ok(v.map(|v| Version(to_u64(v))))
}

pub(crate) fn production_in(conn: &Connection, name: &str) -> Result<Option<Version>> {
    let v: Option<i64> = conn
        .query_row("SELECT version FROM model_versions WHERE name = ?1 AND stage = 'production'", params![name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.map(|v| Version(to_u64(v))))
}

/// Production history as a stack, replayed from the stage events: promotions push, rollbacks pop.
pub(crate) fn production_stack(conn: &Connection, name: &str) -> Result<Vec<Version>> {
    let mut stmt = conn
        .prepare("SELECT version, action FROM stage_events WHERE name = ?1 AND to_stage = 'production' ORDER BY id")?;
    let rows = stmt
        .query_map(params![name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stack = Vec::new();
    for (v, action) in rows {
        let v = Version(to_u64(v));
        if action == "rollback" {
            stack.pop();
            if stack.last() != Some(&v) {
                stack.push(v);
            }
        } else {
            stack.push(v);
        }
    }
    Ok(stack)
}

pub(crate) fn promote_in(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    action: &str,
    actor: &str,
    reason: &str,
) -> Result<()> {
    let record = get_version(tx, name, version)?;
    if record.stage == Stage::Production {
        return Err(RegistryError::InvalidTransition {
            name: name.to_owned(),
            version,
            from: Stage::Production,
            to: Stage::Production,
        });
    }
    let now = now_unix_ms();
    if let Some(current) = production_in(tx, name)? {
        set_stage(tx, name, current, Stage::Production, Stage::Archived, action, actor, reason, now)?;
    }
    set_stage(tx, name, version, record.stage, Stage::Production, action, actor, reason, now)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn set_stage(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    from: Stage,
    to: Stage,
    action: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE model_versions SET stage = ?3 WHERE name = ?1 AND version = ?2",
        params![name, to_i64("version", version.0)?, to.as_str()],
    )?;
    record_event(tx, name, version, Some(from), to, action, actor, reason, now)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn record_event(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    from: Option<Stage>,
    to: Stage,
    action: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO stage_events (name, version, from_stage, to_stage, action, actor, reason, at_unix_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![name, to_i64("version", version.0)?, from.map(Stage::as_str), to.as_str(), action, actor, reason, now],
    )?;
    Ok(())
}
