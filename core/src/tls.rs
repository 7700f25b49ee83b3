//! Mutual-TLS configuration for both sides, and the diagnosis of refused handshakes.
//!
//! The coordinator is a rustls server that requires a client certificate chaining to the federation CA and
//! admitted by the [`Admission`] policy (valid name, client role, not revoked, in the roster) before the handshake
//! completes ([`server_config`]). Every refused client certificate is logged once with the precise reason and the
//! certificate's subject and issuer (escaped), so the operator sees *who* was refused and *why*. Clients use tonic's rustls client
//! ([`client_tls`]); when a call fails during the handshake, [`diagnose_client_failure`] turns the TLS alert into a
//! sentence a hospital IT person can act on.

use crate::admission::{Admission, AdmissionRefusal, certificate_fingerprint};
use crate::ids::NodeName;
use crate::pki::{NodeFiles, Role};
use crate::untrusted::Untrusted;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What was expected ("certificate", "private key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The peer certificate has no usable common name.
    #[error("peer certificate has no common name")]
    NoCommonName,
    /// This node's private key is readable by other users (operator error: fix the file's mode).
    #[error(transparent)]
    KeyPermissions(#[from] crate::pki::KeyPermissionError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// [`TlsError::Pem`] when the file is unreadable or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem { what: "certificate", path: path.to_owned(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate found".into()));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file, refusing one that its group or other users may read.
///
/// # Errors
/// [`TlsError::KeyPermissions`] for a mode wider than 0600, [`TlsError::Pem`] when the file is unreadable or
/// holds no key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    crate::pki::check_key_permissions(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The trust store holding only the federation CA.
fn federation_roots(files: &NodeFiles) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&files.ca_cert)? {
        roots.add(ca).map_err(|e| TlsError::Config(format!("federation CA {}: {e}", files.ca_cert.display())))?;
    }
    Ok(roots)
}

/// Builds the coordinator's rustls server configuration: its own certificate, ALPN `h2`, and a mandatory client
/// certificate chaining to the federation CA (checked for validity period, signature and client-auth usage by
/// webpki) and then admitted by `admission`. A refused certificate fails the handshake, so its peer never
/// reaches the gRPC layer. Refusals are logged by [`LoggingClientVerifier`].
///
/// # Errors
/// [`TlsError`] when a file cannot be read or rustls rejects the material.
pub fn server_config(files: &NodeFiles, admission: Arc<Admission>) -> Result<rustls::ServerConfig, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(federation_roots(files)?), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(LoggingClientVerifier { inner, admission });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Builds tonic's client TLS settings: trust only the federation CA, present this node's certificate.
///
/// # Errors
/// [`TlsError::Pem`] when a file cannot be read, [`TlsError::KeyPermissions`] when the key is readable by others.
pub fn client_tls(files: &NodeFiles, server_name: &str) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    crate::pki::check_key_permissions(&files.key)?;
    let read = |path: &Path, what: &'static str| {
        std::fs::read(path).map_err(|e| TlsError::Pem { what, path: path.to_owned(), reason: e.to_string() })
    };
    let ca = read(&files.ca_cert, "certificate")?;
    let cert = read(&files.cert, "certificate")?;
    let key = read(&files.key, "private key")?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .domain_name(server_name.to_owned()))
}

/// The subject and issuer of a certificate, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject common name.
    pub subject_cn: Option<String>,
    /// Subject organizational unit (the Cohort role).
    pub subject_ou: Option<String>,
    /// Issuer, as an RFC 4514 string.
    pub issuer: String,
    /// End of validity, RFC 2822 style.
    pub not_after: String,
    /// Whether the certificate is outside its validity period now.
    pub expired: bool,
}

impl fmt::Display for CertSummary {
    /// `CN=<name> issued by "<issuer>"`, both escaped and truncated ([`Untrusted`]): a certificate's fields are the
    /// peer's text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CN={} issued by \"{}\"",
            Untrusted(self.subject_cn.as_deref().unwrap_or("?")),
            Untrusted(&self.issuer)
        )
    }
}

/// Parses the fields of a DER certificate used in messages. Returns `None` for unparsable input.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    Some(CertSummary {
        subject_cn: first(&mut cert.subject().iter_common_name()),
        subject_ou: first(&mut cert.subject().iter_organizational_unit()),
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.to_string(),
        expired: !cert.validity().is_valid(),
    })
}

/// Reads the summary of the first certificate in a PEM file.
pub fn summarize_pem_file(path: &Path) -> Option<CertSummary> {
    load_certs(path).ok()?.first().and_then(|c| summarize(c))
}

/// Takes a node's identity from its verified certificate chain: the common name and the role.
///
/// # Errors
/// [`TlsError::NoCommonName`] when the leaf certificate has no CN.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Result<(NodeName, Option<Role>), TlsError> {
    let leaf = chain.first().ok_or(TlsError::NoCommonName)?;
    let summary = summarize(leaf).ok_or(TlsError::NoCommonName)?;
    let name = summary.subject_cn.ok_or(TlsError::NoCommonName)?;
    let role = match summary.subject_ou.as_deref() {
        Some("coordinator") => Some(Role::Coordinator),
        Some("client") => Some(Role::Client),
        _ => None,
    };
    Ok((NodeName(name), role))
}

/// Wraps webpki's client verifier, then applies the [`Admission`] policy to the certificates webpki accepts, and
/// logs every refusal once with the certificate's subject, issuer and the precise reason. The log event is
/// emitted inside the caller's span (the coordinator's accept loop names the peer address there).
#[derive(Debug)]
pub struct LoggingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    admission: Arc<Admission>,
}

impl ClientCertVerifier for LoggingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let who = || summarize(end_entity).map_or_else(|| "an unparsable certificate".to_owned(), |s| s.to_string());
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|err| {
            tracing::warn!(certificate = %who(), "refused client certificate: {}", describe_cert_error(err));
        })?;
        match self.admission.admit(end_entity) {
            Ok(_) => Ok(verified),
            Err(refusal) => {
                tracing::warn!(
                    certificate = %who(),
                    fingerprint = %certificate_fingerprint(end_entity),
                    "refused client certificate: {refusal}"
                );
                Err(rustls::Error::InvalidCertificate(refusal.certificate_error()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Explains a rustls certificate error in plain words.
pub fn describe_cert_error(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "it is not signed by the federation CA".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "it has expired".into()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "it is not valid yet".into(),
        rustls::Error::NoCertificatesPresented => "no client certificate was presented".into(),
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<AdmissionRefusal>() {
                Some(refusal) => refusal.to_string(),
                None => escape_text(&other.to_string()),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
            "its name is not in the federation roster".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => "it is revoked".into(),
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => "it is not a client certificate".into(),
        other => escape_text(&other.to_string()),
    }
}

fn escape_text(text: &str) -> String {
    crate::untrusted::escape(text)
}

/// Explains a refused server-side handshake (for the coordinator's log), escaped.
pub fn describe_server_handshake_failure(err: &std::io::Error) -> String {
    match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(e) => describe_cert_error(e),
        None => escape_text(&err.to_string()),
    }
}

/// Whether a refused server-side handshake failed on the client's certificate, which [`LoggingClientVerifier`]
/// has already logged with its cause (so the accept loop need not log it again).
pub fn is_logged_certificate_refusal(err: &std::io::Error) -> bool {
    matches!(err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()), Some(rustls::Error::InvalidCertificate(_)))
}

/// Finds the TLS alert or certificate error behind a failed client call, walking the error's source chain
/// (tonic status → transport error → hyper → I/O error → rustls error).
fn find_rustls_error(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        if let Some(r) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}

/// Turns a failed call to the coordinator into an actionable sentence, if the failure was a TLS refusal.
///
/// `own_cert` is this node's certificate file, read to say which issuer or expiry date was refused, and `ca` the
/// federation CA file this node trusts.
pub fn diagnose_client_failure(err: &(dyn std::error::Error + 'static), own_cert: &Path, ca: &Path) -> Option<String> {
    let rustls_err = find_rustls_error(err).or_else(|| alert_from_text(&error_chain_text(err)))?;
    let own = summarize_pem_file(own_cert);
    let issuer = own.as_ref().map_or_else(|| "unknown".to_owned(), |s| s.issuer.clone());
    let msg = match rustls_err {
        rustls::Error::AlertReceived(AlertDescription::UnknownCA | AlertDescription::BadCertificate) => format!(
            "the coordinator rejected this node's certificate: issuer \"{issuer}\" is not the federation CA. \
             Ask the federation operator for a certificate issued by the federation CA ({})",
            own_cert.display()
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => format!(
            "the coordinator rejected this node's certificate: it expired on {}. Ask the federation operator for a \
             new certificate ({})",
            own.map_or_else(|| "an unknown date".to_owned(), |s| s.not_after),
            own_cert.display()
        ),
        rustls::Error::AlertReceived(AlertDescription::AccessDenied) => format!(
            "the coordinator refused this node's certificate: the name \"{}\" is not in the federation roster. Ask \
             the federation operator to add it to the coordinator's roster, or check [tls] cert ({})",
            own_name(own.as_ref()),
            own_cert.display()
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked) => format!(
            "the coordinator refused this node's certificate: it has been revoked by the federation operator. Ask \
             for a new certificate ({})",
            own_cert.display()
        ),
        rustls::Error::AlertReceived(AlertDescription::UnsupportedCertificate) => format!(
            "the coordinator refused this node's certificate: it is not a client certificate (its role is {}). Ask \
             the federation operator for one issued with --role client ({})",
            own.as_ref()
                .and_then(|s| s.subject_ou.as_deref())
                .map_or_else(|| "missing".to_owned(), |r| format!("\"{}\"", Untrusted(r))),
            own_cert.display()
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateUnknown) => {
            match own.as_ref().and_then(|s| s.subject_cn.as_deref()).map(crate::names::check_node_name) {
                Some(Err(reason)) => format!(
                    "the coordinator refused this node's certificate: its name \"{}\" is not a valid node name ({reason}). \
                 Ask the federation operator for a certificate with a valid name ({})",
                    own_name(own.as_ref()),
                    own_cert.display()
                ),
                _ => format!("the coordinator refused this node's certificate ({})", own_cert.display()),
            }
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the coordinator requires a client certificate and none was presented: set [tls] cert and key in the \
             client config"
                .to_owned()
        }
        rustls::Error::AlertReceived(alert) => format!("the coordinator refused the TLS handshake: {alert:?}"),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }) => {
            wrong_server_name(expected.to_str().as_ref(), &presented)
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
            "the coordinator's certificate is not valid for the configured coordinator.server_name: set it to a name \
             in the coordinator's certificate, or ask the federation operator for one that includes it"
                .to_owned()
        }
        // A federation certificate without the server purpose: a hospital's client certificate, most likely, so
        // something other than the coordinator answers at coordinator.url.
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => "this node refused the server at coordinator.url: it presented a federation certificate that is not a \
              coordinator certificate (a hospital's client certificate, or one issued without --role coordinator), \
              so it is not this federation's coordinator. Check coordinator.url, and ask the federation operator \
              which address the coordinator listens on"
            .to_owned(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "this node refused the coordinator's certificate: it is not signed by the federation CA in {}. Check that \
             coordinator.url points at this federation's coordinator and that [tls] ca_cert is this federation's CA",
            ca.display()
        ),
        rustls::Error::InvalidCertificate(e) => format!(
            "this node refused the coordinator's certificate: {}. The federation CA is {}",
            describe_cert_error(&rustls::Error::InvalidCertificate(e)),
            ca.display()
        ),
        other => format!("TLS failure talking to the coordinator: {other}"),
    };
    Some(msg)
}

/// This node's certificate name, escaped, for messages.
fn own_name(own: Option<&CertSummary>) -> String {
    own.and_then(|s| s.subject_cn.as_deref()).map_or_else(|| "?".to_owned(), crate::untrusted::escape)
}

/// The message for a coordinator certificate that is not valid for the configured server name: the name that was
/// expected and the names the certificate holds (webpki reports them as `DnsName("x")` and `IpAddress(x)`).
fn wrong_server_name(expected: &str, presented: &[String]) -> String {
    let names: Vec<String> = presented.iter().map(|p| plain_name(p)).collect();
    let has = match names.as_slice() {
        [] => "it names no DNS name or IP address (subjectAltName)".to_owned(),
        names => format!("it is valid only for {}", names.join(", ")),
    };
    format!(
        "the coordinator's certificate is not valid for the name \"{expected}\" that this node expects \
         (coordinator.server_name, or the host of coordinator.url): {has}. Set coordinator.server_name to one of \
         those names, or ask the federation operator for a coordinator certificate that includes \"{expected}\""
    )
}

/// `DnsName("coord.example")` → `coord.example`, `IpAddress(127.0.0.1)` → `127.0.0.1`; anything else as is.
fn plain_name(presented: &str) -> String {
    let inner = |prefix: &str| presented.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(')'));
    if let Some(dns) = inner("DnsName(") {
        return dns.trim_matches('"').to_owned();
    }
    if let Some(ip) = inner("IpAddress(") {
        return ip.to_owned();
    }
    presented.to_owned()
}

/// An error and all its sources, joined by ": ".
pub fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

fn alert_from_text(text: &str) -> Option<rustls::Error> {
    let alerts = [
        ("UnknownCA", AlertDescription::UnknownCA),
        ("BadCertificate", AlertDescription::BadCertificate),
        ("CertificateExpired", AlertDescription::CertificateExpired),
        ("CertificateRequired", AlertDescription::CertificateRequired),
        ("AccessDenied", AlertDescription::AccessDenied),
        ("CertificateRevoked", AlertDescription::CertificateRevoked),
        ("UnsupportedCertificate", AlertDescription::UnsupportedCertificate),
        ("CertificateUnknown", AlertDescription::CertificateUnknown),
    ];
    alerts
        .into_iter()
        .find(|(name, _)| text.contains(&format!("received fatal alert: {name}")))
        .map(|(_, alert)| rustls::Error::AlertReceived(alert))
}

/// Builds a rustls client configuration equivalent to [`client_tls`]: trust only the federation CA and present
/// this node's certificate.
///
/// # Errors
/// [`TlsError`] when a file cannot be read or rustls rejects the material.
pub fn client_config(files: &NodeFiles) -> Result<rustls::ClientConfig, TlsError> {
    let roots = federation_roots(files)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The outcome of a [`preflight`] handshake.
#[derive(Debug)]
pub enum Preflight {
    /// The coordinator accepted this node's certificate.
    Accepted,
    /// Nothing listens at the address yet (worth retrying).
    Unreachable(std::io::Error),
    /// The handshake was refused; the error carries the TLS alert or certificate error.
    Refused(std::io::Error),
}

/// Performs one mutual-TLS handshake with the coordinator and waits for its first bytes, so that a refusal of
/// this node's certificate (which TLS 1.3 reports only after the client's side of the handshake is done) is seen
/// with its alert instead of as a dropped connection later.
///
/// # Errors
/// [`TlsError`] when the TLS material cannot be loaded or `server_name` is invalid.
pub async fn preflight(addr: &str, server_name: &str, files: &NodeFiles) -> Result<Preflight, TlsError> {
    use tokio::io::AsyncReadExt;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(files)?));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| TlsError::Config(format!("invalid server name {server_name:?}: {e}")))?;
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) => return Ok(Preflight::Unreachable(e)),
    };
    let mut tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return Ok(Preflight::Refused(e)),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => Ok(Preflight::Accepted),
        Ok(Ok(_)) => Ok(Preflight::Refused(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the coordinator closed the connection",
        ))),
        Ok(Err(e)) => Ok(Preflight::Refused(e)),
        // A silent server still completed the handshake.
        Err(_) => Ok(Preflight::Accepted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{IssueRequest, init_ca, issue};

    #[test]
    fn a_wrong_server_name_is_explained_without_debug_text() {
        let dir = tempfile::tempdir().unwrap();
        let err = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("wrong.example").unwrap().to_owned(),
                presented: vec!["DnsName(\"coord.example.org\")".into(), "IpAddress(10.0.0.7)".into()],
            }),
        );
        let msg = diagnose_client_failure(&err, &dir.path().join("cert.pem"), &dir.path().join("ca.pem")).unwrap();
        assert!(msg.contains("not valid for the name \"wrong.example\""), "{msg}");
        assert!(msg.contains("it is valid only for coord.example.org, 10.0.0.7"), "{msg}");
        assert!(!msg.contains("NotValidForNameContext") && !msg.contains("DnsName") && !msg.contains('{'), "{msg}");
        assert_eq!(plain_name("URI(\"x\")"), "URI(\"x\")");
        assert!(wrong_server_name("a", &[]).contains("names no DNS name or IP address"));
    }

    #[cfg(unix)]
    #[test]
    fn node_keys_readable_by_others_are_refused_on_both_sides() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "f").unwrap();
        let sans = vec!["localhost".to_owned()];
        let coord =
            issue(&ca, &IssueRequest::valid_for_days("c", Role::Coordinator, &sans, 1), &dir.path().join("c")).unwrap();
        let node = issue(&ca, &IssueRequest::valid_for_days("n", Role::Client, &[], 1), &dir.path().join("n")).unwrap();
        let admission = || Arc::new(Admission::new(["n".to_owned()], None).unwrap());
        server_config(&coord, admission()).unwrap();
        client_tls(&node, "localhost").unwrap();
        client_config(&node).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&coord.key, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = server_config(&coord, admission()).unwrap_err();
            assert!(matches!(&err, TlsError::KeyPermissions(e) if e.mode == mode), "{err}");
            let text = err.to_string();
            assert!(text.contains(&format!("{} has mode {mode:04o}", coord.key.display())), "{text}");
            assert!(text.contains(&format!("chmod 600 {}", coord.key.display())), "{text}");
            std::fs::set_permissions(&node.key, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = client_tls(&node, "localhost").unwrap_err().to_string();
            assert!(err.contains(&format!("chmod 600 {}", node.key.display())), "{err}");
            assert!(client_config(&node).is_err());
        }
        std::fs::set_permissions(&node.key, std::fs::Permissions::from_mode(0o400)).unwrap();
        client_tls(&node, "localhost").unwrap();
    }
}
