//! Who may connect to the coordinator: the admission policy applied to a client certificate once webpki has
//! checked that it chains to the federation CA.
//!
//! A certificate is admitted only when its common name is a valid node name ([`crate::names`]), its role (the
//! OU) is `client`, it is not revoked, and its name is in the roster. The policy runs inside the TLS handshake
//! ([`crate::tls::server_config`]), so a refused peer never completes a handshake and never reaches the gRPC
//! layer, its buffers or the data directory.
//!
//! Revocation is a deny list kept in a file the coordinator config names (`[admission] revocation_list`): one
//! entry a line, either a node name (every certificate with that CN is refused) or `sha256:<64 hex digits>`, the
//! SHA-256 fingerprint of one certificate's DER (that certificate is refused; a re-issued one with the same name is
//! not). `#` starts a comment. The file is re-read whenever its modification time or length changes, checked on
//! every handshake, so a revocation takes effect for the next connection without a restart. A file that becomes
//! unreadable or malformed keeps the last good list in force (a revocation is never undone by a typo) and is
//! reported in the log.

use crate::NodeName;
use crate::names::{NameError, check_node_name};
use crate::pki::Role;
use crate::untrusted::Untrusted;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Why a CA-signed certificate is not admitted. The display says which rule refused it, with the certificate's
/// name escaped ([`Untrusted`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionRefusal {
    /// The certificate cannot be parsed as X.509.
    #[error("the certificate cannot be parsed")]
    Unparsable,
    /// The certificate has no common name, or more than one.
    #[error("the certificate does not have exactly one common name")]
    NoName,
    /// The common name is not a valid node name.
    #[error("its name \"{}\" is not a valid node name: {reason}", Untrusted(name))]
    BadName {
        /// The common name as presented.
        name: String,
        /// The rule it breaks.
        reason: NameError,
    },
    /// The certificate's role is not `client` (a coordinator certificate, or no role).
    #[error("{name} presented a certificate with role {} where only client certificates are admitted", role.as_deref().map_or_else(|| "(none)".to_owned(), |r| format!("\"{}\"", Untrusted(r))))]
    WrongRole {
        /// The certificate's name.
        name: NodeName,
        /// The role (OU) it holds, if any.
        role: Option<String>,
    },
    /// The certificate is on the revocation list.
    #[error("the certificate of {name} is revoked (revocation list entry {entry})")]
    Revoked {
        /// The certificate's name.
        name: NodeName,
        /// The list entry that matched (`name` or `sha256:…`).
        entry: String,
    },
    /// The name is not in the federation roster.
    #[error("{name} is not in the federation roster")]
    NotInRoster {
        /// The certificate's name.
        name: NodeName,
    },
}

impl AdmissionRefusal {
    /// The rustls error the handshake fails with, chosen so that each cause sends its own TLS alert and the
    /// client can say which it was ([`crate::tls::diagnose_client_failure`]): not in the roster →
    /// `access_denied`, wrong role → `unsupported_certificate`, revoked → `certificate_revoked`, anything else →
    /// `certificate_unknown`.
    pub fn certificate_error(&self) -> rustls::CertificateError {
        use rustls::CertificateError as E;
        match self {
            Self::NotInRoster { .. } => E::ApplicationVerificationFailure,
            Self::WrongRole { .. } => E::InvalidPurpose,
            Self::Revoked { .. } => E::Revoked,
            Self::Unparsable | Self::NoName | Self::BadName { .. } => {
                E::Other(rustls::OtherError(Arc::new(self.clone())))
            }
        }
    }
}

/// A revocation list that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The file cannot be read (operator error).
    #[error("cannot read the revocation list {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is neither a node name nor a `sha256:` fingerprint (operator error).
    #[error(
        "revocation list {} line {line}: \"{}\" is neither a node name nor sha256:<64 hex digits> ({reason})",
        path.display(),
        Untrusted(text)
    )]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Revoked names and certificate fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    names: BTreeSet<String>,
    fingerprints: BTreeSet<[u8; 32]>,
}

const FINGERPRINT_PREFIX: &str = "sha256:";

impl RevocationList {
    /// Parses a revocation list's text (see the module documentation for the format).
    ///
    /// # Errors
    /// [`RevocationError::BadEntry`] naming the first bad line (`path` is only used in the message).
    pub fn parse(text: &str, path: &Path) -> Result<Self, RevocationError> {
        let mut list = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let entry = raw.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |reason: String| RevocationError::BadEntry {
                path: path.to_owned(),
                line: i + 1,
                text: entry.to_owned(),
                reason,
            };
            if let Some(hex_digits) = entry.strip_prefix(FINGERPRINT_PREFIX) {
                let mut fingerprint = [0u8; 32];
                hex::decode_to_slice(hex_digits, &mut fingerprint).map_err(|e| bad(format!("bad fingerprint: {e}")))?;
                list.fingerprints.insert(fingerprint);
            } else {
                check_node_name(entry).map_err(|e| bad(e.to_string()))?;
                list.names.insert(entry.to_owned());
            }
        }
        Ok(list)
    }

    /// Reads and parses a revocation list file.
    ///
    /// # Errors
    /// [`RevocationError`] for an unreadable file or a bad line.
    pub fn load(path: &Path) -> Result<Self, RevocationError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RevocationError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// The entry that revokes a certificate with this name and DER, if any.
    pub fn revokes(&self, name: &str, der: &[u8]) -> Option<String> {
        if self.names.contains(name) {
            return Some(name.to_owned());
        }
        let fingerprint: [u8; 32] = Sha256::digest(der).into();
        self.fingerprints.contains(&fingerprint).then(|| certificate_fingerprint(der))
    }

    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.names.len() + self.fingerprints.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A certificate's fingerprint as written in a revocation list: `sha256:` and the lowercase hex SHA-256 of its DER.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    format!("{FINGERPRINT_PREFIX}{}", hex::encode(Sha256::digest(der)))
}

/// What identifies a revocation list file's version: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp_of(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Some((meta.modified()?, meta.len())))
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    list: Arc<RevocationList>,
}

/// The admission policy: the roster, and the revocation list re-read from its file when the file changes. Shared
/// by every handshake (`Arc<Admission>`); safe to call from many threads.
#[derive(Debug)]
pub struct Admission {
    roster: BTreeSet<String>,
    source: Option<PathBuf>,
    revocations: Mutex<Loaded>,
}

impl Admission {
    /// A policy admitting client certificates named in `roster`, refusing those that the file `revocation_list`
    /// (if any) lists. The file must be readable and well formed now.
    ///
    /// # Errors
    /// [`RevocationError`] for an unreadable or malformed revocation list.
    pub fn new(
        roster: impl IntoIterator<Item = String>,
        revocation_list: Option<&Path>,
    ) -> Result<Self, RevocationError> {
        let (stamp, list) = match revocation_list {
            Some(path) => {
                let stamp = stamp_of(path).map_err(|source| RevocationError::Io { path: path.to_owned(), source })?;
                (stamp, RevocationList::load(path)?)
            }
            None => (None, RevocationList::default()),
        };
        Ok(Self {
            roster: roster.into_iter().collect(),
            source: revocation_list.map(Path::to_owned),
            revocations: Mutex::new(Loaded { stamp, list: Arc::new(list) }),
        })
    }

    /// The revocation list in force, re-read first if its file changed since the last read. A file that cannot be
    /// read or parsed leaves the previous list in force, and is logged once per change of the file.
    pub fn revocations(&self) -> Arc<RevocationList> {
        let mut loaded = self.revocations.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = &self.source else { return loaded.list.clone() };
        let stamp = stamp_of(path).unwrap_or(None);
        if stamp != loaded.stamp {
            loaded.stamp = stamp;
            match RevocationList::load(path) {
                Ok(list) => {
                    tracing::info!(entries = list.len(), path = %path.display(), "revocation list reloaded");
                    loaded.list = Arc::new(list);
                }
                Err(e) => tracing::error!("{e}; the previous revocation list stays in force"),
            }
        }
        loaded.list.clone()
    }

    /// Decides on a leaf certificate (DER) that already chains to the federation CA: its name when admitted.
    ///
    /// # Errors
    /// [`AdmissionRefusal`] saying which rule refused it, checked in this order: parsable, one common name, a
    /// valid name, role `client`, not revoked, in the roster.
    pub fn admit(&self, der: &[u8]) -> Result<NodeName, AdmissionRefusal> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| AdmissionRefusal::Unparsable)?;
        let mut names = cert.subject().iter_common_name();
        let name = match (names.next(), names.next()) {
            (Some(cn), None) => cn.as_str().map_err(|_| AdmissionRefusal::NoName)?.to_owned(),
            _ => return Err(AdmissionRefusal::NoName),
        };
        if let Err(reason) = check_node_name(&name) {
            return Err(AdmissionRefusal::BadName { name, reason });
        }
        let name = NodeName(name);
        let mut roles = cert.subject().iter_organizational_unit();
        let role = match (roles.next(), roles.next()) {
            (Some(ou), None) => ou.as_str().ok().map(str::to_owned),
            (None, _) => None,
            (Some(_), Some(_)) => Some("(several)".to_owned()),
        };
        if role.as_deref() != Some(Role::Client.as_str()) {
            return Err(AdmissionRefusal::WrongRole { name, role });
        }
        if let Some(entry) = self.revocations().revokes(name.as_str(), der) {
            return Err(AdmissionRefusal::Revoked { name, entry });
        }
        if !self.roster.contains(name.as_str()) {
            return Err(AdmissionRefusal::NotInRoster { name });
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cn: &str, ou: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            params.distinguished_name.push(DnType::OrganizationalUnitName, ou);
        }
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    fn policy(revoked: Option<&Path>) -> Admission {
        Admission::new(["hospital-a".to_owned(), "hospital-b".to_owned()], revoked).unwrap()
    }

    #[test]
    fn each_rule_refuses_with_its_own_cause() {
        let p = policy(None);
        assert_eq!(p.admit(&cert("hospital-a", Some("client"))), Ok(NodeName::from("hospital-a")));
        assert!(matches!(p.admit(&cert("intruder", Some("client"))), Err(AdmissionRefusal::NotInRoster { .. })));
        let err = p.admit(&cert("hospital-a", Some("coordinator"))).unwrap_err();
        assert!(matches!(&err, AdmissionRefusal::WrongRole { role: Some(r), .. } if r == "coordinator"), "{err}");
        assert!(matches!(p.admit(&cert("hospital-a", None)), Err(AdmissionRefusal::WrongRole { role: None, .. })));
        let err = p.admit(&cert("../../../pwned", Some("client"))).unwrap_err();
        assert!(matches!(err, AdmissionRefusal::BadName { .. }), "{err}");
        let err = p.admit(&cert("a\nINFO forged", Some("client"))).unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("a\\nINFO forged"), "{err}");
        assert_eq!(p.admit(b"not a certificate"), Err(AdmissionRefusal::Unparsable));
    }

    #[test]
    fn a_revocation_takes_effect_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "# none yet\n").unwrap();
        let p = policy(Some(&path));
        let a = cert("hospital-a", Some("client"));
        let b = cert("hospital-b", Some("client"));
        assert!(p.admit(&a).is_ok() && p.admit(&b).is_ok());
        std::fs::write(&path, format!("hospital-a  # lost laptop\n{}\n", certificate_fingerprint(&b))).unwrap();
        assert!(matches!(p.admit(&a), Err(AdmissionRefusal::Revoked { entry, .. }) if entry == "hospital-a"));
        assert!(matches!(p.admit(&b), Err(AdmissionRefusal::Revoked { entry, .. }) if entry.starts_with("sha256:")));
        // A re-issued certificate of hospital-b is not the revoked one.
        assert!(p.admit(&cert("hospital-b", Some("client"))).is_ok());
        // A malformed edit keeps the previous list.
        std::fs::write(&path, "Not A Name\n").unwrap();
        assert!(matches!(p.admit(&a), Err(AdmissionRefusal::Revoked { .. })));
        std::fs::write(&path, "").unwrap();
        assert!(p.admit(&a).is_ok());
    }

    #[test]
    fn a_malformed_list_is_refused_at_start_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "hospital-a\nsha256:zz\n").unwrap();
        let err = Admission::new(Vec::new(), Some(&path)).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("sha256:zz"), "{err}");
        let err = Admission::new(Vec::new(), Some(&dir.path().join("missing"))).unwrap_err().to_string();
        assert!(err.contains("cannot read the revocation list"), "{err}");
    }
}
