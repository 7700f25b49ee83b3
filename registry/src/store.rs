//! [`Registry`]: the model registry of one data directory, over the SQLite store and the artifact files.

use crate::artifacts::ArtifactStore;
use crate::error::{RegistryError, Result, io};
use crate::export::{EXPORT_FORMAT, EXPORT_FORMAT_VERSION, ExportDocument, ExportMetadata, ExportedWeights};
use crate::gate::{GateConfig, GateDecision};
use crate::lineage::{VersionDiff, ancestors, diff_records};
use crate::sql::*;
use crate::timestamp::{now_unix_ms, rfc3339_utc};
use crate::types::*;
use cohort_core::Round;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The registry's SQLite schema version, stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// File name of the SQLite store inside the data directory.
pub const DB_FILE: &str = "registry.sqlite3";

/// Directory of the content-addressed artifacts inside the data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// The model registry of one data directory. Mutating methods take `&mut self` and run in one SQLite
/// transaction each; several processes may open the same directory (SQLite serializes writers; readers wait up
/// to 5 s for a lock).
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    artifacts: ArtifactStore,
    data_dir: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry in `data_dir`, creating or checking the schema.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the directory cannot be created, [`RegistryError::Sqlite`] when the store
    /// cannot be opened, [`RegistryError::SchemaTooNew`] for a store written by a newer version.
    ///
    /// # Example
    /// ```
    /// use cohort_registry::{NewVersion, Registry, Stage};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut registry = Registry::open(dir.path()).unwrap();
    /// let new = NewVersion { name: "heart".into(), round: cohort_core::Round(1), ..Default::default() };
    /// let v = registry.register(&new, &[0u8; 8]).unwrap();
    /// assert_eq!((v.version.0, v.stage), (1, Stage::Candidate));
    /// assert_eq!(registry.artifact("heart", v.version).unwrap(), vec![0u8; 8]);
    /// ```
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data_dir = data_dir.as_ref().to_owned();
        std::fs::create_dir_all(&data_dir).map_err(|source| io("creating", &data_dir, source))?;
        let artifacts = ArtifactStore::open(data_dir.join(ARTIFACTS_DIR))?;
        let mut conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(RegistryError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(Self { conn, artifacts, data_dir })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// [`RegistryError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Registers a new version as a `candidate`, storing `artifact` (the model bytes) content-addressed.
    ///
    /// The version number is one more than the largest for `new.name`. If `(new.name, new.round)` is already
    /// registered, that version is returned unchanged and nothing is written (a restarted coordinator that
    /// re-registers a round does not duplicate it; a warning is logged if the artifact differs).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an empty name, a malformed data fingerprint, a non-finite metric or
    /// privacy value, or an unregistered parent; storage errors.
    pub fn register(&mut self, new: &NewVersion, artifact: &[u8]) -> Result<VersionRecord> {
        validate(new)?;
        let sha = self.artifacts.put(artifact)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (record, _) = insert_version(&tx, new, &sha, artifact.len())?;
        tx.commit()?;
        Ok(record)
    }

    /// Registers the version of a completed round and saves the federation's checkpoint, atomically (one
    /// transaction): after a crash either both exist or neither does. If the round was already registered, the
    /// existing version is returned and the checkpoint is left as it is (it was written with that version).
    ///
    /// # Errors
    /// As [`Registry::register`], plus [`RegistryError::StaleCheckpoint`] when the federation's checkpoint is
    /// at a later round (then nothing is written).
    pub fn register_round(
        &mut self,
        federation: &str,
        new: &NewVersion,
        model_bytes: &[u8],
        strategy_state: &Value,
    ) -> Result<VersionRecord> {
        validate(new)?;
        let sha = self.artifacts.put(model_bytes)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (record, created) = insert_version(&tx, new, &sha, model_bytes.len())?;
        if created {
            write_checkpoint(&tx, federation, new.round, &sha, strategy_state, Some((&record.name, record.version)))?;
        }
        tx.commit()?;
        Ok(record)
    }

    /// Saves a federation's checkpoint (last completed round, model, strategy state), replacing the previous
    /// one. Saving the same round again overwrites it.
    ///
    /// # Errors
    /// [`RegistryError::StaleCheckpoint`] for a round before the stored one; storage errors.
    pub fn save_checkpoint(
        &mut self,
        federation: &str,
        round: Round,
        model_bytes: &[u8],
        strategy_state: &Value,
    ) -> Result<()> {
        let sha = self.artifacts.put(model_bytes)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        write_checkpoint(&tx, federation, round, &sha, strategy_state, None)?;
        tx.commit()?;
        Ok(())
    }

    /// Loads a federation's checkpoint, with its model bytes verified against their hash.
    ///
    /// # Errors
    /// [`RegistryError::MissingArtifact`] / [`RegistryError::CorruptArtifact`] when the model file is gone or
    /// altered; storage errors.
    pub fn load_checkpoint(&self, federation: &str) -> Result<Option<Checkpoint>> {
        let row = self
            .conn
            .query_row(
                "SELECT round, sha256, strategy_state, model_name, model_version, saved_unix_ms
                 FROM checkpoints WHERE federation = ?1",
                params![federation],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((round, sha256, state, model_name, model_version, saved)) = row else {
            return Ok(None);
        };
        let model_bytes = self.artifacts.get(&sha256)?;
        Ok(Some(Checkpoint {
            federation: federation.to_owned(),
            round: Round(to_u64(round)),
            sha256,
            model_bytes,
            strategy_state: serde_json::from_str(&state)?,
            version: model_name.zip(model_version.map(|v| Version(to_u64(v)))),
            saved_at: rfc3339_utc(saved),
        }))
    }

    /// Deletes a federation's checkpoint (to start it afresh). Returns whether one existed.
    ///
    /// # Errors
    /// Storage errors.
    pub fn clear_checkpoint(&mut self, federation: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM checkpoints WHERE federation = ?1", params![federation])? > 0)
    }

    /// Makes `version` the production version of `name`, archiving the current production version. Recorded
    /// with `actor` and `reason`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; [`RegistryError::InvalidTransition`] if it is already production.
    pub fn promote(&mut self, name: &str, version: Version, actor: &str, reason: &str) -> Result<VersionRecord> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        promote_in(&tx, name, version, "promote", actor, reason)?;
        let record = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(record)
    }

    /// Restores the version that was in production before the current one, and archives the current one.
    /// Returns the restored version. Recorded with `actor` and `reason`.
    ///
    /// # Errors
    /// [`RegistryError::NoProduction`] or [`RegistryError::NothingToRollBack`].
    pub fn rollback(&mut self, name: &str, actor: &str, reason: &str) -> Result<VersionRecord> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = production_in(&tx, name)?.ok_or_else(|| RegistryError::NoProduction(name.to_owned()))?;
        let mut stack = production_stack(&tx, name)?;
        if stack.last() == Some(&current) {
            stack.pop();
        }
        let previous = stack
            .into_iter()
            .rev()
            .find(|&v| v != current)
            .ok_or_else(|| RegistryError::NothingToRollBack { name: name.to_owned(), current })?;
        let now = now_unix_ms();
        set_stage(&tx, name, current, Stage::Production, Stage::Archived, "rollback", actor, reason, now)?;
        let from = get_version(&tx, name, previous)?.stage;
        set_stage(&tx, name, previous, from, Stage::Production, "rollback", actor, reason, now)?;
        let record = get_version(&tx, name, previous)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records a gate decision on a candidate with the config that produced it. If the decision promotes, the
    /// version is promoted in the same transaction (actor `gate`, reason = the decision's reasons), unless it is
    /// already production. Returns the version's stage afterwards.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn record_gate_decision(
        &mut self,
        name: &str,
        version: Version,
        config: &GateConfig,
        decision: &GateDecision,
    ) -> Result<Stage> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let stage = stage_of(&tx, name, version)?;
        let compared_with = production_in(&tx, name)?;
        tx.execute(
            "INSERT INTO gate_decisions (name, version, compared_with, promote, reasons, config, at_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                to_i64("version", version.0)?,
                compared_with.map(|v| to_i64("version", v.0)).transpose()?,
                decision.promote,
                serde_json::to_string(&decision.reasons)?,
                serde_json::to_string(config)?,
                now_unix_ms(),
            ],
        )?;
        let stage = if decision.promote && stage != Stage::Production {
            promote_in(&tx, name, version, "gate", "gate", &decision.summary())?;
            Stage::Production
        } else {
            stage
        };
        tx.commit()?;
        Ok(stage)
    }

    /// All versions, of one model or of every model, ordered by name then version.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<VersionRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version"
        ))?;
        let raws = stmt.query_map(params![name], RawVersion::from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(RawVersion::parse).collect()
    }

    /// One version.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn get(&self, name: &str, version: Version) -> Result<VersionRecord> {
        get_version(&self.conn, name, version)
    }

    /// The newest version of `name`, if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn latest(&self, name: &str) -> Result<Option<VersionRecord>> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1"),
                params![name],
                RawVersion::from_row,
            )
            .optional()?;
        raw.map(RawVersion::parse).transpose()
    }

    /// The number of the newest version of `name`, if any (cheaper than [`Registry::latest`]).
    ///
    /// # Errors
    /// Storage errors.
    pub fn latest_version(&self, name: &str) -> Result<Option<Version>> {
        latest_in(&self.conn, name)
    }

    /// The current production version of `name`, if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn production(&self, name: &str) -> Result<Option<VersionRecord>> {
        production_in(&self.conn, name)?.map(|v| get_version(&self.conn, name, v)).transpose()
    }

    /// A version with its stage history and gate decisions.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn show(&self, name: &str, version: Version) -> Result<VersionDetails> {
        let record = self.get(name, version)?;
        Ok(VersionDetails {
            stage_events: self.stage_events(name, Some(version))?,
            gate_decisions: self.gate_decisions(name, Some(version))?,
            record,
        })
    }

    /// Stage changes of a model (or of one version), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stage_events(&self, name: &str, version: Option<Version>) -> Result<Vec<StageEvent>> {
        let v = version.map(|v| to_i64("version", v.0)).transpose()?;
        let mut stmt = self.conn.prepare(
            "SELECT id, version, from_stage, to_stage, action, actor, reason, at_unix_ms FROM stage_events
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![name, v], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, version, from, to, action, actor, reason, at)| {
                Ok(StageEvent {
                    id,
                    name: name.to_owned(),
                    version: Version(to_u64(version)),
                    from: from.map(|s| s.parse()).transpose()?,
                    to: to.parse()?,
                    action,
                    actor,
                    reason,
                    at: rfc3339_utc(at),
                })
            })
            .collect()
    }

    /// Gate decisions of a model (or of one version), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn gate_decisions(&self, name: &str, version: Option<Version>) -> Result<Vec<GateRecord>> {
        let v = version.map(|v| to_i64("version", v.0)).transpose()?;
        let mut stmt = self.conn.prepare(
            "SELECT id, version, compared_with, promote, reasons, config, at_unix_ms FROM gate_decisions
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![name, v], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, version, compared, promote, reasons, config, at)| {
                Ok(GateRecord {
                    id,
                    name: name.to_owned(),
                    version: Version(to_u64(version)),
                    compared_with: compared.map(|c| Version(to_u64(c))),
                    decision: GateDecision { promote, reasons: serde_json::from_str(&reasons)? },
                    config: serde_json::from_str(&config)?,
                    at: rfc3339_utc(at),
                })
            })
            .collect()
    }

    /// Differences between two versions of `name`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn diff(&self, name: &str, a: Version, b: Version) -> Result<VersionDiff> {
        Ok(diff_records(&self.get(name, a)?, &self.get(name, b)?))
    }

    /// The artifact (model bytes) of a version, verified against its hash.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::MissingArtifact`], [`RegistryError::CorruptArtifact`].
    pub fn artifact(&self, name: &str, version: Version) -> Result<Vec<u8>> {
        let record = self.get(name, version)?;
        self.artifacts.get(&record.sha256)
    }

    /// Builds the export document of a version (see [`ExportDocument`]) without writing it.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], artifact errors, [`RegistryError::Invalid`] when the artifact is not a
    /// whole number of finite `f32` values.
    pub fn export_document(&self, name: &str, version: Version) -> Result<ExportDocument> {
        let r = self.get(name, version)?;
        let bytes = self.artifacts.get(&r.sha256)?;
        let values = cohort_core::model::parameters_from_bytes(&bytes)
            .map_err(|e| RegistryError::Invalid(format!("artifact of {name} {version}: {e}")))?;
        cohort_model::layout::check_finite(&values)
            .map_err(|e| RegistryError::Invalid(format!("artifact of {name} {version}: {e}")))?;
        let ancestors = ancestors(self, name, version, r.parent)?;
        Ok(ExportDocument {
            format: EXPORT_FORMAT.to_owned(),
            format_version: EXPORT_FORMAT_VERSION,
            name: r.name.clone(),
            version: r.version,
            stage: r.stage,
            weights: ExportedWeights {
                encoding: "f32-array".into(),
                layout: "dense stack [input, hidden..., output], ReLU between layers, softmax on classification \
                         outputs; for each layer in order: weights [in][out] row-major, then bias [out]"
                    .into(),
                count: values.len(),
                sha256: r.sha256.clone(),
                values,
            },
            model_spec: r.model_spec.clone(),
            schema: r.schema.clone(),
            preprocessing: r.preprocessing.clone(),
            metadata: ExportMetadata {
                round: r.round,
                parent: r.parent,
                ancestors,
                created_at: r.created_at.clone(),
                clients: r.clients.clone(),
                strategy: r.strategy.clone(),
                hyperparameters: r.hyperparameters.clone(),
                config_hash: r.config_hash.clone(),
                data_fingerprints: r.data_fingerprints.clone(),
                metrics: r.metrics.clone(),
                slices: r.slices.clone(),
                central: r.central.clone(),
                privacy: r.privacy.clone(),
                secure_aggregation: r.secure_aggregation.clone(),
                stage_events: self.stage_events(name, Some(version))?,
            },
        })
    }

    /// Writes the export document of a version to `out_path` (pretty JSON, written to a temporary file and
    /// renamed) and returns it.
    ///
    /// # Errors
    /// As [`Registry::export_document`], plus [`RegistryError::Io`].
    pub fn export(&self, name: &str, version: Version, out_path: &Path) -> Result<ExportDocument> {
        let doc = self.export_document(name, version)?;
        let text = serde_json::to_string_pretty(&doc)?;
        let file_name = out_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = out_path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, text.as_bytes())?;
            std::fs::rename(&tmp, out_path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            io("writing export", out_path, source)
        })?;
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{new_version, weights};
    use serde_json::json;

    #[test]
    fn versions_increase_monotonically_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        for r in 1..=3 {
            let v = reg.register(&new_version("heart", r, (r > 1).then(|| r - 1), 0.8), &weights(r as f32)).unwrap();
            assert_eq!(v.version, Version(r));
            assert_eq!(v.stage, Stage::Candidate);
            assert_eq!(v.clients, ["hospital-a", "hospital-b"]);
        }
        let other = reg.register(&new_version("diabetes", 7, None, 0.7), &weights(9.0)).unwrap();
        assert_eq!(other.version, Version(1));
        assert_eq!(reg.list(Some("heart")).unwrap().len(), 3);
        assert_eq!(reg.list(None).unwrap().len(), 4);
        assert_eq!(reg.latest("heart").unwrap().unwrap().version, Version(3));
        assert_eq!(reg.latest_version("heart").unwrap(), Some(Version(3)));
        assert_eq!(reg.latest_version("diabetes").unwrap(), Some(Version(1)));
        assert_eq!(reg.latest_version("unknown").unwrap(), None);
        // Unknown parent is refused.
        assert!(matches!(
            reg.register(&new_version("heart", 9, Some(42), 0.8), &weights(1.0)),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn re_registering_a_round_returns_the_existing_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let first = reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        let again = reg.register(&new_version("heart", 1, None, 0.9), &weights(2.0)).unwrap();
        assert_eq!(again, first);
        assert_eq!(reg.list(None).unwrap().len(), 1);
        assert_eq!(reg.stage_events("heart", None).unwrap().len(), 1);
        let next = reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(3.0)).unwrap();
        assert_eq!(next.version, Version(2));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let mut bad = new_version("heart", 1, None, 0.8);
        bad.data_fingerprints.insert("hospital-c".into(), "not-a-hash".into());
        assert!(
            matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(m)) if m.contains("hospital-c"))
        );
        let mut bad = new_version("heart", 1, None, 0.8);
        bad.privacy.insert("x".into(), PrivacySpend { epsilon: f64::NAN, delta: 1e-5 });
        assert!(matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(_))));
        let mut bad = new_version("", 1, None, 0.8);
        bad.name = " ".into();
        assert!(matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(_))));
        assert!(reg.list(None).unwrap().is_empty());
        assert!(matches!(reg.get("heart", Version(1)), Err(RegistryError::NotFound { .. })));
    }

    #[test]
    fn promote_and_rollback_restore_the_previous_production_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        for r in 1..=3 {
            reg.register(&new_version("heart", r, None, 0.8), &weights(r as f32)).unwrap();
        }
        assert!(matches!(reg.rollback("heart", "alice", "x"), Err(RegistryError::NoProduction(_))));
        reg.promote("heart", Version(1), "alice", "first release").unwrap();
        assert!(matches!(reg.rollback("heart", "alice", "x"), Err(RegistryError::NothingToRollBack { .. })));
        reg.promote("heart", Version(2), "bob", "better").unwrap();
        assert_eq!(reg.get("heart", Version(1)).unwrap().stage, Stage::Archived);
        reg.promote("heart", Version(3), "bob", "even better").unwrap();
        assert!(matches!(
            reg.promote("heart", Version(3), "bob", "again"),
            Err(RegistryError::InvalidTransition { from: Stage::Production, .. })
        ));
        assert!(matches!(reg.promote("heart", Version(9), "bob", "?"), Err(RegistryError::NotFound { .. })));

        let restored = reg.rollback("heart", "carol", "v3 misbehaves at hospital-b").unwrap();
        assert_eq!(restored.version, Version(2));
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(2));
        assert_eq!(reg.get("heart", Version(3)).unwrap().stage, Stage::Archived);
        // A second rollback goes further back, not back to v3.
        assert_eq!(reg.rollback("heart", "carol", "also bad").unwrap().version, Version(1));
        assert!(matches!(reg.rollback("heart", "carol", "x"), Err(RegistryError::NothingToRollBack { .. })));

        let events = reg.stage_events("heart", Some(Version(3))).unwrap();
        let last = events.last().unwrap();
        assert_eq!((last.from, last.to), (Some(Stage::Production), Stage::Archived));
        assert_eq!((last.action.as_str(), last.actor.as_str()), ("rollback", "carol"));
        assert_eq!(last.reason, "v3 misbehaves at hospital-b");
        assert!(last.at.ends_with('Z'));
        // At most one production version at any time.
        let prod = reg.list(Some("heart")).unwrap().into_iter().filter(|v| v.stage == Stage::Production).count();
        assert_eq!(prod, 1);
    }

    #[test]
    fn gate_decisions_are_recorded_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let gate = GateConfig { min_slice: Some(0.5), ..GateConfig::default() };
        let v1 = reg.register(&new_version("heart", 1, None, 0.90), &weights(1.0)).unwrap();
        let d1 = gate.decide(&v1.evaluation().unwrap(), None);
        assert_eq!(reg.record_gate_decision("heart", v1.version, &gate, &d1).unwrap(), Stage::Production);

        // A worse candidate is not promoted, and the reason says why.
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.85), &weights(2.0)).unwrap();
        let prod = reg.production("heart").unwrap().unwrap().evaluation().unwrap();
        let d2 = gate.decide(&v2.evaluation().unwrap(), Some(&prod));
        assert!(!d2.promote);
        assert_eq!(reg.record_gate_decision("heart", v2.version, &gate, &d2).unwrap(), Stage::Candidate);
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(1));

        let shown = reg.show("heart", Version(2)).unwrap();
        assert_eq!(shown.gate_decisions.len(), 1);
        let g = &shown.gate_decisions[0];
        assert_eq!(g.compared_with, Some(Version(1)));
        assert_eq!(g.config, gate);
        assert!(!g.decision.promote);
        // The gate judges the coordinator's central test set (0.88, 0.83 here) over the pooled federated
        // figures (0.90, 0.85) when it has one.
        assert_eq!(g.decision.reasons, ["accuracy 0.8300 is 0.0500 worse than production 0.8800 (tolerance 0.0000)"]);
        let v1_events = reg.stage_events("heart", Some(Version(1))).unwrap();
        assert_eq!(v1_events.last().unwrap().actor, "gate");
        assert_eq!(v1_events.last().unwrap().action, "gate");
        assert!(v1_events.last().unwrap().reason.contains("no production version"));
    }

    #[test]
    fn checkpoint_round_trip_and_atomic_round_registration() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.load_checkpoint("fed").unwrap(), None);
        let state = json!({"m": [0.1, 0.2], "v": [0.01, 0.02], "t": 2});
        let rec = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &state).unwrap();
        let cp = reg.load_checkpoint("fed").unwrap().unwrap();
        assert_eq!(cp.round, Round(1));
        assert_eq!(cp.model_bytes, weights(1.0));
        assert_eq!(cp.sha256, rec.sha256);
        assert_eq!(cp.strategy_state, state);
        assert_eq!(cp.version, Some(("heart".to_owned(), Version(1))));

        reg.save_checkpoint("fed", Round(3), &weights(3.0), &json!(null)).unwrap();
        // A round-2 registration cannot move the checkpoint backwards: the whole transaction is refused, so no
        // version without checkpoint is left behind.
        let err = reg.register_round("fed", &new_version("heart", 2, Some(1), 0.8), &weights(2.0), &state);
        assert!(matches!(err, Err(RegistryError::StaleCheckpoint { stored: Round(3), offered: Round(2), .. })));
        assert_eq!(reg.list(Some("heart")).unwrap().len(), 1);
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().round, Round(3));
        // Re-registering round 1 returns the existing version and leaves the checkpoint alone.
        let again = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(7.0), &state).unwrap();
        assert_eq!(again.version, Version(1));
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().round, Round(3));
        assert!(reg.clear_checkpoint("fed").unwrap());
        assert_eq!(reg.load_checkpoint("fed").unwrap(), None);
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut reg = Registry::open(dir.path()).unwrap();
            reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &json!({"t": 1})).unwrap();
            reg.promote("heart", Version(1), "alice", "ok").unwrap();
        }
        let mut reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(1));
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().strategy_state, json!({"t": 1}));
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(2.0)).unwrap();
        assert_eq!(v2.version, Version(2));
        drop(reg);
        // A store from a newer schema is refused.
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Registry::open(dir.path()), Err(RegistryError::SchemaTooNew { .. })));
    }

    #[test]
    fn list_json_has_the_required_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(2.0)).unwrap();
        let json = serde_json::to_value(reg.list(None).unwrap()).unwrap();
        let item = &json[1];
        for key in ["name", "version", "stage", "sha256", "parent", "metrics", "clients"] {
            assert!(item.get(key).is_some(), "missing {key}");
        }
        assert_eq!(item["version"], 2);
        assert_eq!(item["parent"], 1);
        assert_eq!(item["stage"], "candidate");
        assert_eq!(item["metrics"]["values"]["accuracy"], 0.8);
        let back: Vec<VersionRecord> = serde_json::from_value(json).unwrap();
        assert_eq!(back, reg.list(None).unwrap());
    }
}
