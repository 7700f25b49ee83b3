//! Content-addressed model artifacts on disk: `<dir>/<sha256-hex>`, written atomically and checked on read.

use crate::error::{RegistryError, Result, io};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Content-addressed artifact files: `<dir>/<sha256-hex>`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    /// Opens (creating if needed) the store at `dir`.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| io("creating", &dir, source))?;
        Ok(Self { dir })
    }

    /// The file an artifact lives in.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when `sha256` is not 64 lowercase hex digits (so no path can escape the store).
    pub fn path(&self, sha256: &str) -> Result<PathBuf> {
        if !is_sha256_hex(sha256) {
            return Err(RegistryError::Invalid(format!("{sha256:?} is not a lowercase hex SHA-256")));
        }
        Ok(self.dir.join(sha256))
    }

    /// Stores `bytes` and returns their SHA-256. Writes to a temporary file, syncs it, renames it into place and
    /// syncs the directory, so the named file is complete or absent. An existing intact file is kept; a corrupt
    /// one is replaced.
    ///
    /// # Errors
    /// [`RegistryError::Io`].
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        use std::io::Write;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);

        let sha = sha256_hex(bytes);
        let path = self.path(&sha)?;
        if let Ok(existing) = std::fs::read(&path)
            && sha256_hex(&existing) == sha
        {
            return Ok(sha);
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp-{sha}-{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            io("writing artifact", &path, source)
        })?;
        Ok(sha)
    }

    /// Reads an artifact and checks that it hashes to its name.
    ///
    /// # Errors
    /// [`RegistryError::MissingArtifact`], [`RegistryError::CorruptArtifact`], [`RegistryError::Io`].
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::MissingArtifact { sha256: sha256.to_owned() });
            }
            Err(source) => return Err(io("reading artifact", &path, source)),
        };
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(RegistryError::CorruptArtifact { expected: sha256.to_owned(), actual });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{new_version, weights};
    use crate::{ARTIFACTS_DIR, Registry, RegistryError};
    use serde_json::json;

    #[test]
    fn corrupt_and_missing_artifacts_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let v = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &json!({})).unwrap();
        let path = dir.path().join(ARTIFACTS_DIR).join(&v.sha256);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            matches!(reg.artifact("heart", v.version), Err(RegistryError::CorruptArtifact { expected, .. }) if expected == v.sha256)
        );
        assert!(matches!(reg.load_checkpoint("fed"), Err(RegistryError::CorruptArtifact { .. })));
        assert!(matches!(
            reg.export("heart", v.version, &dir.path().join("x.json")),
            Err(RegistryError::CorruptArtifact { .. })
        ));
        // Storing the same content again repairs the file.
        reg.artifacts().put(&weights(1.0)).unwrap();
        assert_eq!(reg.artifact("heart", v.version).unwrap(), weights(1.0));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(reg.artifact("heart", v.version), Err(RegistryError::MissingArtifact { .. })));
        // Names that are not hashes cannot address files.
        assert!(matches!(reg.artifacts().get("../registry.sqlite3"), Err(RegistryError::Invalid(_))));
        // No temporary files are left behind.
        let leftovers = std::fs::read_dir(dir.path().join(ARTIFACTS_DIR))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }
}
