//! What the server serves: every version in the registry, by name, with its current stage, and the hot swap
//! that keeps that in step with the registry without a restart.

use crate::error::ServeError;
use crate::model::ServedModel;
use cohort_registry::{Registry, RegistryError, Stage, Version};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// How a request names a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The production version.
    Default,
    /// That version.
    Version(Version),
    /// The version at that stage: production, or the newest candidate.
    Label(Stage),
}

/// One registered version.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its current stage in the registry.
    pub stage: Stage,
    /// SHA-256 of its weights.
    pub sha256: String,
    /// The predictor, or why the version cannot be served.
    pub model: Result<Arc<ServedModel>, String>,
}

/// A servable version as a request resolved it: the predictor, and the stage the registry gave the version in
/// this snapshot (a predictor is reused across snapshots while its weights are unchanged; its stage is not).
#[derive(Debug, Clone)]
pub struct Served {
    /// The predictor.
    pub model: Arc<ServedModel>,
    /// The version's stage.
    pub stage: Stage,
}

impl std::ops::Deref for Served {
    type Target = ServedModel;

    fn deref(&self) -> &ServedModel {
        &self.model
    }
}

/// A snapshot of the registry's models. Immutable: a request resolves its model against one snapshot and keeps
/// the `Arc` it got, so it finishes on that version even when a newer snapshot replaces this one.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: BTreeMap<String, BTreeMap<Version, Entry>>,
}

impl Catalog {
    /// Reads every version from `registry`, reusing the predictors of `previous` whose weights have not
    /// changed (so a poll that finds nothing new loads nothing).
    ///
    /// A version that cannot be served (see [`ServedModel::from_export`]) is listed with its reason rather than
    /// failing the whole catalog.
    ///
    /// # Errors
    /// [`RegistryError`] when the registry cannot be read.
    pub fn load(registry: &Registry, previous: &Catalog) -> Result<Self, RegistryError> {
        let mut models: BTreeMap<String, BTreeMap<Version, Entry>> = BTreeMap::new();
        for record in registry.list(None)? {
            let known = previous.entry(&record.name, record.version).filter(|e| e.sha256 == record.sha256);
            let model = match known {
                Some(entry) => entry.model.clone(),
                None => registry
                    .export_document(&record.name, record.version)
                    .map_err(|e| e.to_string())
                    .and_then(|doc| ServedModel::from_export(&doc).map(Arc::new).map_err(|e| e.to_string())),
            };
            if let (None, Err(reason)) = (known, &model) {
                tracing::warn!(model = %record.name, version = %record.version, "not servable: {reason}");
            }
            let entry = Entry { stage: record.stage, sha256: record.sha256, model };
            models.entry(record.name).or_default().insert(record.version, entry);
        }
        Ok(Self { models })
    }

    /// The model names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = (Version, &Entry)> {
        self.models.get(name).into_iter().flatten().map(|(v, e)| (*v, e))
    }

    fn entry(&self, name: &str, version: Version) -> Option<&Entry> {
        self.models.get(name)?.get(&version)
    }

    /// The version a selector names.
    ///
    /// # Errors
    /// [`ServeError::NotFound`] for an unknown model, version or label, saying what exists.
    pub fn resolve(&self, name: &str, selector: Selector) -> Result<(Version, &Entry), ServeError> {
        let versions = self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            ServeError::NotFound(format!("no model {name:?} (this server has: {})", list(&known)))
        })?;
        let found = match selector {
            Selector::Version(v) => versions.get_key_value(&v),
            Selector::Default | Selector::Label(Stage::Production) => {
                versions.iter().find(|(_, e)| e.stage == Stage::Production)
            }
            Selector::Label(stage) => versions.iter().rev().find(|(_, e)| e.stage == stage),
        };
        found.map(|(v, e)| (*v, e)).ok_or_else(|| {
            let known: Vec<String> = versions.iter().map(|(v, e)| format!("{} ({})", v.0, e.stage)).collect();
            let what = match selector {
                Selector::Version(v) => format!("no version {} of {name:?}", v.0),
                Selector::Default => format!("{name:?} has no production version; name one"),
                Selector::Label(stage) => format!("{name:?} has no {stage} version"),
            };
            ServeError::NotFound(format!("{what} (versions: {})", list(&known)))
        })
    }

    /// The servable model a selector names.
    ///
    /// # Errors
    /// As [`Catalog::resolve`], and [`ServeError::Unservable`] for a version that cannot be served.
    pub fn model(&self, name: &str, selector: Selector) -> Result<Served, ServeError> {
        let (version, entry) = self.resolve(name, selector)?;
        let model =
            entry.model.clone().map_err(|reason| ServeError::Unservable { model: name.to_owned(), version, reason })?;
        Ok(Served { model, stage: entry.stage })
    }

    /// Whether two catalogs serve the same versions at the same stages.
    pub fn same_as(&self, other: &Catalog) -> bool {
        let key = |c: &Catalog| -> Vec<(String, Version, Stage, String)> {
            c.models
                .iter()
                .flat_map(|(n, vs)| vs.iter().map(move |(v, e)| (n.clone(), *v, e.stage, e.sha256.clone())))
                .collect()
        };
        key(self) == key(other)
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    match items {
        [] => "none".to_owned(),
        _ => items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// The current [`Catalog`], swapped whole when the registry changes.
#[derive(Debug, Default)]
pub struct Shelf {
    current: RwLock<Arc<Catalog>>,
}

impl Shelf {
    /// A shelf holding `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self { current: RwLock::new(Arc::new(catalog)) }
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<Catalog> {
        self.current.read().map_or_else(|poisoned| poisoned.into_inner().clone(), |c| c.clone())
    }

    /// Re-reads the registry; replaces the snapshot when something changed. Returns whether it did.
    ///
    /// # Errors
    /// [`RegistryError`] when the registry cannot be read (the current snapshot stays).
    pub fn refresh(&self, registry: &Registry) -> Result<bool, RegistryError> {
        let current = self.get();
        let next = Catalog::load(registry, &current)?;
        if next.same_as(&current) {
            return Ok(false);
        }
        for name in next.names() {
            if let Ok((version, _)) = next.resolve(name, Selector::Default) {
                tracing::info!(model = name, %version, "serving; production version");
            }
        }
        let mut slot = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Arc::new(next);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::registry_with_versions;

    #[test]
    fn selectors_resolve_production_versions_and_labels_and_say_what_exists() {
        let (_dir, registry) = registry_with_versions(3, Some(2));
        let catalog = Catalog::load(&registry, &Catalog::default()).unwrap();
        let version = |s| catalog.resolve("dosing", s).map(|(v, _)| v.0);
        assert_eq!(version(Selector::Default), Ok(2));
        assert_eq!(version(Selector::Label(Stage::Production)), Ok(2));
        assert_eq!(version(Selector::Label(Stage::Candidate)), Ok(3));
        assert_eq!(version(Selector::Version(Version(1))), Ok(1));
        let err = catalog.resolve("dosing", Selector::Version(Version(9))).unwrap_err();
        assert_eq!(
            err,
            ServeError::NotFound(
                "no version 9 of \"dosing\" (versions: 1 (candidate), 2 (production), 3 (candidate))".into()
            )
        );
        let err = catalog.resolve("heart", Selector::Default).unwrap_err();
        assert_eq!(err, ServeError::NotFound("no model \"heart\" (this server has: dosing)".into()));
    }

    #[test]
    fn a_promotion_swaps_the_snapshot_and_requests_keep_the_version_they_resolved() {
        let (_dir, mut registry) = registry_with_versions(2, Some(1));
        let shelf = Shelf::new(Catalog::load(&registry, &Catalog::default()).unwrap());
        let in_flight = shelf.get().model("dosing", Selector::Default).unwrap();
        assert!(!shelf.refresh(&registry).unwrap(), "nothing changed");
        registry.promote("dosing", Version(2), "test", "better").unwrap();
        assert!(shelf.refresh(&registry).unwrap());
        assert_eq!(shelf.get().model("dosing", Selector::Default).unwrap().version(), Version(2));
        assert_eq!(in_flight.version(), Version(1), "the old snapshot's model is untouched");
        // The unchanged version's predictor was reused, not reloaded.
        let before = Arc::as_ptr(&in_flight.model);
        let after = Arc::as_ptr(&shelf.get().model("dosing", Selector::Version(Version(1))).unwrap().model);
        assert_eq!(before, after);
    }
}
