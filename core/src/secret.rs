//! The node secret: 32 random bytes that never leave the node, kept in its data directory (mode 0600).
//!
//! It keys two functions of the node's data with HMAC-SHA256 (RFC 2104), so that what they produce reveals
//! nothing that could be checked against a guess of the data:
//! - the **train/held-out split**: each row goes to the held-out split when the keyed hash of its content falls
//!   below the held-out fraction ([`NodeSecret::holds_out`]), independently of every other row, so adding or
//!   removing one record moves no other record between the splits (neighbouring data sets give neighbouring
//!   training sets, as DP-SGD's add/remove guarantee assumes);
//! - the **data fingerprint** recorded in the ledger ([`NodeSecret::fingerprint`]): it identifies the data set
//!   to the node's own auditors but, being salted, cannot be brute-forced for the row count.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// File name of the node secret inside the node's data directory.
pub const NODE_SECRET_FILE: &str = "node-secret.key";

/// Creates `path` with `bytes`, readable and writable by its owner only (mode 0600 on unix, set at creation so
/// the file is never readable by others), and syncs it. Fails with [`io::ErrorKind::AlreadyExists`] if the file
/// exists: a key is written once, never overwritten.
///
/// # Errors
/// The I/O error.
pub fn create_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes).and_then(|()| file.sync_all())
}

/// The node secret (zeroized on drop).
pub struct NodeSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

/// The node secret file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("node secret {path}: {message}")]
pub struct SecretError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl NodeSecret {
    /// A secret from raw bytes (tests and simulations; a deployment uses [`NodeSecret::load_or_create`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Loads the secret of the node whose data directory is `data_dir`, creating it from the OS CSPRNG (mode
    /// 0600, written once with `create_new`) when absent.
    ///
    /// # Errors
    /// [`SecretError`] for an unreadable, unwritable or malformed file.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        let path = data_dir.join(NODE_SECRET_FILE);
        let err = |message: String| SecretError { path: path.display().to_string(), message };
        match std::fs::read(&path).map(Zeroizing::new) {
            Ok(bytes) => {
                let bytes: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| err(format!("{} bytes, expected 32", bytes.len())))?;
                Ok(Self::from_bytes(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut())
                    .map_err(|e| err(e.to_string()))?;
                match create_private_file(&path, bytes.as_ref()) {
                    Ok(()) => Ok(Self(bytes)),
                    // Another process created it first: use that one.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load_or_create(data_dir),
                    Err(e) => Err(err(e.to_string())),
                }
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// INSECURE: writes a secret derived from `seed` into `data_dir` unless the node already has one, and
    /// returns the node's secret. For reproducible simulations only (`cohort demo --insecure-seed`): anyone who
    /// knows the seed knows the secret, so the held-out split and the fingerprints protect nothing.
    ///
    /// # Errors
    /// As [`NodeSecret::load_or_create`].
    pub fn create_insecure_seeded(data_dir: &Path, seed: u64) -> Result<Self, SecretError> {
        let path = data_dir.join(NODE_SECRET_FILE);
        let err = |message: String| SecretError { path: path.display().to_string(), message };
        std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
        let mut digest = <Sha256 as Digest>::new();
        digest.update(b"cohort/insecure-node-secret/v1");
        digest.update(seed.to_le_bytes());
        let bytes = Zeroizing::new(<[u8; 32]>::from(digest.finalize()));
        match create_private_file(&path, bytes.as_ref()) {
            Ok(()) => Ok(Self(bytes)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load_or_create(data_dir),
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn mac(&self, domain: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).unwrap_or_else(|_| unreachable!());
        mac.update(domain);
        mac
    }

    /// Whether the row `(features, target)` belongs to the held-out split for `holdout_fraction`, under the
    /// split id `split` (the config's `split_seed`): HMAC-SHA256(secret, domain ‖ split ‖ row) read as a
    /// uniform number in [0, 1), compared with the fraction.
    pub fn holds_out(&self, split: u64, features: &[f32], target: f32, holdout_fraction: f64) -> bool {
        let mut mac = self.mac(b"cohort/split/v1");
        mac.update(&split.to_le_bytes());
        for v in features {
            mac.update(&v.to_le_bytes());
        }
        mac.update(&target.to_le_bytes());
        let tag = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        // 53 uniform bits as an f64 in [0, 1).
        ((u64::from_le_bytes(first) >> 11) as f64) * (-53f64).exp2() < holdout_fraction
    }

    /// The salted fingerprint of a data set: HMAC-SHA256(secret, domain ‖ `what`), hex.
    pub fn fingerprint(&self, what: &[u8]) -> String {
        let mut mac = self.mac(b"cohort/fingerprint/v1");
        mac.update(what);
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeSecret::load_or_create(dir.path()).unwrap();
        let b = NodeSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(b"x"), b.fingerprint(b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(NODE_SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(NODE_SECRET_FILE), [1, 2, 3]).unwrap();
        assert!(NodeSecret::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn fingerprints_depend_on_the_secret() {
        let (a, b) = (NodeSecret::from_bytes([1; 32]), NodeSecret::from_bytes([2; 32]));
        assert_ne!(a.fingerprint(b"schema 569 rows"), b.fingerprint(b"schema 569 rows"));
        assert_ne!(a.fingerprint(b"schema 569 rows"), a.fingerprint(b"schema 570 rows"));
    }

    #[test]
    fn the_split_is_per_row_and_close_to_the_fraction() {
        let secret = NodeSecret::from_bytes([9; 32]);
        let held = (0..10_000).filter(|i| secret.holds_out(0, &[*i as f32, 1.0], 0.0, 0.2)).count();
        // Binomial(10 000, 0.2): mean 2000, standard deviation 40; 5σ either side.
        assert!((1800..=2200).contains(&held), "{held}");
        assert!(!(0..100).any(|i| secret.holds_out(0, &[i as f32], 1.0, 0.0)), "fraction 0 holds nothing out");
        // Another split id gives another split.
        let moved = (0..1000)
            .filter(|i| secret.holds_out(0, &[*i as f32], 0.0, 0.5) != secret.holds_out(1, &[*i as f32], 0.0, 0.5))
            .count();
        assert!(moved > 300, "{moved}");
    }
}
