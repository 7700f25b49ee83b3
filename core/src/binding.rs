//! Keys bound to certificates: a node signs its secure-aggregation and ledger public keys with the private key of
//! its federation certificate, and every peer checks that signature against the certificate, and the certificate
//! against the federation CA, before it uses the keys.
//!
//! The coordinator relays bindings (it stores each node's certificate from the TLS handshake and the signature
//! from its join request) but cannot mint them: only the federation CA issues certificates, and only the
//! certificate's owner holds its private key. A coordinator that announces keys of its own for a participant
//! ("key substitution") is caught by [`FederationTrust::verify_binding`].
//!
//! The signed statement is the domain-separated, length-prefixed encoding of
//! `(federation, node name, role, X25519 key, share-signing Ed25519 key, ledger Ed25519 key)`
//! ([`binding_message`]), signed with ECDSA P-256 / SHA-256 (the key type `cohort pki issue` makes; FIPS 186-5),
//! through rustls' ring signer. Verification uses rustls-webpki: the chain up to the CA, the validity period at
//! the given time and the client-authentication usage, then the signature under the certificate's public key.

use crate::pki::Role;
use crate::tls::summarize;
use rustls::SignatureScheme;
/// The time at which certificates are checked (rustls' type, re-exported for callers).
pub use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::sign::SigningKey;
use std::path::Path;
use std::sync::Arc;

/// A key binding that cannot be made or that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// A PEM file could not be read.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The private key cannot sign with ECDSA P-256 / SHA-256.
    #[error("the certificate key cannot sign key bindings: {0}")]
    UnsupportedKey(String),
    /// Signing failed.
    #[error("signing the key binding failed: {0}")]
    Signing(String),
    /// The certificate does not chain to the federation CA, is outside its validity period, or is not for
    /// client authentication.
    #[error("the certificate of {node} is not a valid federation certificate: {reason}")]
    Certificate {
        /// The node the binding claims to be.
        node: String,
        /// webpki's reason.
        reason: String,
    },
    /// The certificate names another node.
    #[error("the certificate presented for {expected} belongs to {actual:?}")]
    WrongName {
        /// The participant name.
        expected: String,
        /// The certificate's common name.
        actual: Option<String>,
    },
    /// The certificate has another role.
    #[error("the certificate of {node} has role {actual:?}, expected {expected}")]
    WrongRole {
        /// The node.
        node: String,
        /// The role required.
        expected: &'static str,
        /// The certificate's role (organizational unit).
        actual: Option<String>,
    },
    /// The signature does not verify under the certificate's key: the keys were not bound by this node.
    #[error("the key binding of {0} is not signed by its certificate key (substituted keys?)")]
    BadSignature(String),
}

/// The public keys a node binds to its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoundKeys {
    /// X25519 key to which secure-aggregation key shares are encrypted.
    pub x25519: [u8; 32],
    /// Ed25519 key that signs share envelopes and round consents.
    pub share_ed25519: [u8; 32],
    /// Ed25519 key that signs the node's privacy ledger (None for a node that keeps no ledger: DP off).
    pub ledger_ed25519: Option<[u8; 32]>,
}

/// A node's certificate and its signature over its [`BoundKeys`]: what the coordinator relays to peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedBinding {
    /// The node name (certificate common name).
    pub node: String,
    /// The node's leaf certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The bound keys.
    pub keys: BoundKeys,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) over [`binding_message`].
    pub signature: Vec<u8>,
}

const DOMAIN: &[u8] = b"cohort/key-binding/v1";

/// The exact bytes a node signs: a domain tag, then length-prefixed federation, name and role, then the keys (the
/// ledger key behind a presence byte).
pub fn binding_message(federation: &str, node: &str, role: Role, keys: &BoundKeys) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + federation.len() + node.len() + 140);
    out.extend_from_slice(DOMAIN);
    for field in [federation.as_bytes(), node.as_bytes(), role.as_str().as_bytes()] {
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&keys.x25519);
    out.extend_from_slice(&keys.share_ed25519);
    match &keys.ledger_ed25519 {
        Some(key) => {
            out.push(1);
            out.extend_from_slice(key);
        }
        None => out.push(0),
    }
    out
}

/// Signs key bindings with a node's certificate key.
#[derive(Debug)]
pub struct CertSigner {
    key: Arc<dyn SigningKey>,
}

impl CertSigner {
    /// Loads the node's private key (PEM, PKCS#8 as `cohort pki issue` writes it).
    ///
    /// # Errors
    /// [`BindingError::Pem`] or [`BindingError::UnsupportedKey`].
    pub fn load(path: &Path) -> Result<Self, BindingError> {
        let der = PrivateKeyDer::from_pem_file(path).map_err(|e| BindingError::Pem {
            what: "private key",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| BindingError::UnsupportedKey(e.to_string()))?;
        Ok(Self { key })
    }

    /// Signs `node`'s keys for `federation` in `role`.
    ///
    /// # Errors
    /// [`BindingError::UnsupportedKey`] for a key that is not P-256, [`BindingError::Signing`].
    pub fn sign(&self, federation: &str, node: &str, role: Role, keys: &BoundKeys) -> Result<Vec<u8>, BindingError> {
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or_else(|| BindingError::UnsupportedKey("not an ECDSA P-256 key".into()))?;
        signer.sign(&binding_message(federation, node, role, keys)).map_err(|e| BindingError::Signing(e.to_string()))
    }
}

/// The federation CA as a trust anchor for key bindings.
#[derive(Debug, Clone)]
pub struct FederationTrust {
    anchors: Vec<TrustAnchor<'static>>,
}

impl FederationTrust {
    /// Loads the federation CA certificate(s) from a PEM file.
    ///
    /// # Errors
    /// [`BindingError::Pem`].
    pub fn load(ca_path: &Path) -> Result<Self, BindingError> {
        let pem_err =
            |reason: String| BindingError::Pem { what: "CA certificate", path: ca_path.display().to_string(), reason };
        let certs = CertificateDer::pem_file_iter(ca_path)
            .map_err(|e| pem_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
        let anchors = certs
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(format!("{e:?}")))?;
        if anchors.is_empty() {
            return Err(pem_err("no certificate found".into()));
        }
        Ok(Self { anchors })
    }

    /// Checks `binding` for participant `expected_node` in `federation`: the certificate chains to the CA, is
    /// valid at `now` and for client authentication, names `expected_node` with role `role`, and its key
    /// signed exactly these keys.
    ///
    /// # Errors
    /// [`BindingError::Certificate`], [`BindingError::WrongName`], [`BindingError::WrongRole`],
    /// [`BindingError::BadSignature`].
    pub fn verify_binding(
        &self,
        binding: &SignedBinding,
        federation: &str,
        expected_node: &str,
        role: Role,
        now: UnixTime,
    ) -> Result<(), BindingError> {
        let cert_err = |reason: String| BindingError::Certificate { node: expected_node.to_owned(), reason };
        let der = CertificateDer::from(binding.certificate_der.as_slice());
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| cert_err(e.to_string()))?;
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| cert_err(e.to_string()))?;
        let summary = summarize(&binding.certificate_der).ok_or_else(|| cert_err("unparsable certificate".into()))?;
        if binding.node != expected_node || summary.subject_cn.as_deref() != Some(expected_node) {
            return Err(BindingError::WrongName { expected: expected_node.to_owned(), actual: summary.subject_cn });
        }
        if summary.subject_ou.as_deref() != Some(role.as_str()) {
            return Err(BindingError::WrongRole {
                node: expected_node.to_owned(),
                expected: role.as_str(),
                actual: summary.subject_ou,
            });
        }
        let message = binding_message(federation, expected_node, role, &binding.keys);
        cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, &message, &binding.signature)
            .map_err(|_| BindingError::BadSignature(expected_node.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{IssueRequest, NodeFiles, init_ca, issue};

    fn keys(byte: u8) -> BoundKeys {
        BoundKeys { x25519: [byte; 32], share_ed25519: [byte ^ 1; 32], ledger_ed25519: Some([byte ^ 2; 32]) }
    }

    fn node(dir: &Path, ca: &Path, name: &str, role: Role) -> (NodeFiles, SignedBinding) {
        let files = issue(ca, &IssueRequest::valid_for_days(name, role, &[], 30), &dir.join(name)).unwrap();
        let signer = CertSigner::load(&files.key).unwrap();
        let k = keys(7);
        let signature = signer.sign("fed", name, role, &k).unwrap();
        let certificate_der = CertificateDer::from_pem_file(&files.cert).unwrap().to_vec();
        (files.clone(), SignedBinding { node: name.into(), certificate_der, keys: k, signature })
    }

    #[test]
    fn a_binding_verifies_and_every_substitution_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "fed").unwrap();
        let trust = FederationTrust::load(&ca.join(crate::pki::CA_CERT_FILE)).unwrap();
        let now = UnixTime::now();
        let (_, good) = node(dir.path(), &ca, "hospital-a", Role::Client);
        trust.verify_binding(&good, "fed", "hospital-a", Role::Client, now).unwrap();

        // Substituted keys, with the original signature.
        let substituted = SignedBinding { keys: keys(9), ..good.clone() };
        assert_eq!(
            trust.verify_binding(&substituted, "fed", "hospital-a", Role::Client, now),
            Err(BindingError::BadSignature("hospital-a".into()))
        );
        // A dropped ledger key.
        let no_ledger = SignedBinding { keys: BoundKeys { ledger_ed25519: None, ..good.keys }, ..good.clone() };
        assert!(matches!(
            trust.verify_binding(&no_ledger, "fed", "hospital-a", Role::Client, now),
            Err(BindingError::BadSignature(_))
        ));
        // Another federation's statement.
        assert!(matches!(
            trust.verify_binding(&good, "other", "hospital-a", Role::Client, now),
            Err(BindingError::BadSignature(_))
        ));
        // The certificate of another participant.
        assert!(matches!(
            trust.verify_binding(&good, "fed", "hospital-b", Role::Client, now),
            Err(BindingError::WrongName { .. })
        ));
        // A coordinator certificate cannot stand in for a client.
        let (_, coord) = node(dir.path(), &ca, "coordinator", Role::Coordinator);
        assert!(matches!(
            trust.verify_binding(&coord, "fed", "coordinator", Role::Client, now),
            Err(BindingError::WrongRole { .. } | BindingError::Certificate { .. })
        ));
        // A certificate from another CA.
        let other_ca = dir.path().join("other-ca");
        init_ca(&other_ca, "fed").unwrap();
        let (_, foreign) = node(&dir.path().join("x"), &other_ca, "hospital-a", Role::Client);
        assert!(matches!(
            trust.verify_binding(&foreign, "fed", "hospital-a", Role::Client, now),
            Err(BindingError::Certificate { .. })
        ));
        // Expired at the time of verification.
        let far = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + 400 * 86_400));
        assert!(matches!(
            trust.verify_binding(&good, "fed", "hospital-a", Role::Client, far),
            Err(BindingError::Certificate { .. })
        ));
        // Garbage certificate bytes.
        let garbage = SignedBinding { certificate_der: vec![0x30, 0x03, 1, 2, 3], ..good };
        assert!(matches!(
            trust.verify_binding(&garbage, "fed", "hospital-a", Role::Client, now),
            Err(BindingError::Certificate { .. })
        ));
    }
}
