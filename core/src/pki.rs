//! The federation's public-key infrastructure: a federation CA and the node certificates it issues.
//!
//! Certificates are X.509 v3 made with rcgen, with ECDSA P-256 keys. A node's name is the common name (CN) of its
//! certificate; its role (`coordinator` or `client`) is the organizational unit (OU); the federation name is the
//! organization (O). Private keys are written with mode 0600.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate inside a CA or node directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// File name of a node certificate inside a node directory.
pub const NODE_CERT_FILE: &str = "cert.pem";
/// File name of a node private key inside a node directory.
pub const NODE_KEY_FILE: &str = "key.pem";

/// What a node does in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs rounds; acts as a TLS server.
    Coordinator,
    /// A data owner; acts as a TLS client.
    Client,
}

impl Role {
    /// The role's name as written in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Client => "client",
        }
    }
}

/// A PKI operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// rcgen could not build or parse a certificate or key.
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A name that cannot be a node name (see [`crate::names::check_node_name`]).
    #[error(
        "invalid node name \"{}\": {reason}. Use lowercase letters, digits, '.', '_' and '-', starting with a letter or \
         a digit, at most 63 characters (for example hospital-a)",
        crate::untrusted::Untrusted(name)
    )]
    BadName {
        /// The refused name (printed escaped and truncated).
        name: String,
        /// The rule it breaks.
        reason: crate::names::NameError,
    },
    /// A validity period that ends before it starts.
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// `init` would replace an existing federation CA (operator error: the wrong directory, or a CA that is in
    /// use).
    #[error(
        "{} already exists: a new federation CA would make every certificate the existing one issued stop \
         working (every node would be refused). Keep it, give --out another directory, or pass --force to replace \
         it and then re-issue every node's certificate",
        path.display()
    )]
    CaExists {
        /// The existing file.
        path: PathBuf,
    },
    /// `issue` would replace an existing node certificate or key (operator error).
    #[error(
        "{} already exists: issuing again would replace this node's certificate and private key, and the node \
         would need the new files. Give --out another directory, or pass --force to replace them",
        path.display()
    )]
    NodeExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A private key file that others may read (operator error: fix the file's mode).
    #[error(transparent)]
    KeyPermissions(#[from] KeyPermissionError),
}

/// Whether an operation may replace existing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse when a file to be written exists (the default of [`init_ca`] and [`issue`]).
    Refuse,
    /// Replace existing files.
    Replace,
}

/// A private key file readable by its group or by other users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} has mode {mode:04o}: a private key must be readable only by its owner. Fix it with: chmod 600 {}",
    path.display(),
    path.display()
)]
pub struct KeyPermissionError {
    /// The key file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

/// Checks that a private key file is not readable or writable by its group or by others (mode 0600 or
/// narrower). Always passes on non-unix systems, and for a file that does not exist (reading it then reports
/// that).
///
/// # Errors
/// [`KeyPermissionError`] naming the file, its mode and the fix.
pub fn check_key_permissions(path: &Path) -> Result<(), KeyPermissionError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyPermissionError { path: path.to_owned(), mode });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn refuse_existing(paths: &[PathBuf], existing: impl Fn(PathBuf) -> PkiError) -> Result<(), PkiError> {
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(existing(path.clone())),
        None => Ok(()),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

/// Paths of a node's certificate material.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeFiles {
    /// The federation CA certificate.
    pub ca_cert: PathBuf,
    /// The node certificate.
    pub cert: PathBuf,
    /// The node private key.
    pub key: PathBuf,
}

impl NodeFiles {
    /// The standard file names inside a node directory made by [`issue`].
    pub fn in_dir(dir: &Path) -> Self {
        Self { ca_cert: dir.join(CA_CERT_FILE), cert: dir.join(NODE_CERT_FILE), key: dir.join(NODE_KEY_FILE) }
    }
}

/// Checks a node or federation name with the one validator, [`crate::names::check_node_name`]
/// (`[a-z0-9][a-z0-9._-]{0,62}`).
///
/// # Errors
/// [`PkiError::BadName`].
pub fn check_name(name: &str) -> Result<(), PkiError> {
    crate::names::check_node_name(name).map_err(|reason| PkiError::BadName { name: name.to_owned(), reason })
}

/// Creates a federation CA in `out`: `ca.pem` and `ca-key.pem` (mode 0600). Refuses to replace an existing CA.
///
/// # Errors
/// [`PkiError::CaExists`] when `out` already holds a CA, else as [`init_ca_with`].
pub fn init_ca(out: &Path, federation: &str) -> Result<(), PkiError> {
    init_ca_with(out, federation, Overwrite::Refuse)
}

/// Creates a federation CA in `out`, replacing an existing one only with [`Overwrite::Replace`].
///
/// # Errors
/// [`PkiError`] on an existing CA (with [`Overwrite::Refuse`]), a bad name, a key or certificate failure, or an
/// I/O failure.
pub fn init_ca_with(out: &Path, federation: &str, overwrite: Overwrite) -> Result<(), PkiError> {
    check_name(federation)?;
    if overwrite == Overwrite::Refuse {
        refuse_existing(&[out.join(CA_CERT_FILE), out.join(CA_KEY_FILE)], |path| PkiError::CaExists { path })?;
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("{federation} federation CA"));
    params.distinguished_name.push(DnType::OrganizationName, federation);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key)?;
    fs::create_dir_all(out).map_err(io_err(out))?;
    write_public(&out.join(CA_CERT_FILE), cert.pem().as_bytes())?;
    write_private(&out.join(CA_KEY_FILE), key.serialize_pem().as_bytes())?;
    Ok(())
}

/// What to put in a node certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The node name (certificate CN).
    pub name: &'a str,
    /// The node role.
    pub role: Role,
    /// Extra subject alternative names (DNS names or IP addresses). The name itself is always included.
    pub sans: &'a [String],
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl<'a> IssueRequest<'a> {
    /// A request valid from an hour ago for `days` days.
    pub fn valid_for_days(name: &'a str, role: Role, sans: &'a [String], days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self { name, role, sans, not_before: now - Duration::hours(1), not_after: now + Duration::days(days) }
    }
}

/// Issues a node certificate signed by the CA in `ca_dir`, writing `cert.pem`, `key.pem` (0600) and a copy of
/// `ca.pem` to `out`. Refuses to replace an existing node certificate or key.
///
/// # Errors
/// [`PkiError::NodeExists`] when `out` already holds a certificate or key, else as [`issue_with`].
pub fn issue(ca_dir: &Path, request: &IssueRequest<'_>, out: &Path) -> Result<NodeFiles, PkiError> {
    issue_with(ca_dir, request, out, Overwrite::Refuse)
}

/// How long the certificates of [`local_federation`] and [`local_client`] are valid.
const LOCAL_DAYS: i64 = 30;

/// A throwaway PKI for a federation that lives on one machine (the demo, simulations): a new CA for
/// `federation` in `dir/ca`, and a coordinator certificate for `localhost` and `127.0.0.1` in
/// `dir/coordinator`, both replacing whatever an earlier run left there. Never for a real federation, whose CA
/// must not be replaced silently (see [`init_ca`]).
///
/// # Errors
/// As [`init_ca_with`] and [`issue_with`].
pub fn local_federation(dir: &Path, federation: &str) -> Result<NodeFiles, PkiError> {
    init_ca_with(&dir.join("ca"), federation, Overwrite::Replace)?;
    let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let request = IssueRequest::valid_for_days("coordinator", Role::Coordinator, &sans, LOCAL_DAYS);
    issue_with(&dir.join("ca"), &request, &dir.join("coordinator"), Overwrite::Replace)
}

/// A client certificate for `name` from the CA of [`local_federation`] in `dir`, into `dir/name` (replaced if
/// present).
///
/// # Errors
/// As [`issue_with`].
pub fn local_client(dir: &Path, name: &str) -> Result<NodeFiles, PkiError> {
    let request = IssueRequest::valid_for_days(name, Role::Client, &[], LOCAL_DAYS);
    issue_with(&dir.join("ca"), &request, &dir.join(name), Overwrite::Replace)
}

/// Issues a node certificate like [`issue`], replacing existing files only with [`Overwrite::Replace`].
///
/// # Errors
/// [`PkiError`] on existing files (with [`Overwrite::Refuse`]), a bad name or validity, an unreadable CA, a CA
/// key readable by others, or an I/O failure.
pub fn issue_with(
    ca_dir: &Path,
    request: &IssueRequest<'_>,
    out: &Path,
    overwrite: Overwrite,
) -> Result<NodeFiles, PkiError> {
    check_name(request.name)?;
    if request.not_after <= request.not_before {
        return Err(PkiError::BadValidity(format!(
            "not_after {} is not after not_before {}",
            request.not_after, request.not_before
        )));
    }
    let files = NodeFiles::in_dir(out);
    if overwrite == Overwrite::Refuse {
        refuse_existing(&[files.cert.clone(), files.key.clone()], |path| PkiError::NodeExists { path })?;
    }
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    check_key_permissions(&ca_key_path)?;
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
    let federation = organization_of(&ca_pem).unwrap_or_default();

    let mut sans: Vec<String> = vec![request.name.to_owned()];
    sans.extend(request.sans.iter().cloned());
    sans.dedup();
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, request.name);
    params.distinguished_name.push(DnType::OrganizationalUnitName, request.role.as_str());
    if !federation.is_empty() {
        params.distinguished_name.push(DnType::OrganizationName, federation);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match request.role {
        Role::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    fs::create_dir_all(out).map_err(io_err(out))?;
    write_public(&files.cert, cert.pem().as_bytes())?;
    write_private(&files.key, key.serialize_pem().as_bytes())?;
    write_public(&files.ca_cert, ca_pem.as_bytes())?;
    Ok(files)
}

fn organization_of(pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let org = cert.subject().iter_organization().next()?.as_str().ok()?.to_owned();
    Some(org)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    fs::write(path, bytes).map_err(io_err(path))
}

/// Writes a private key with mode 0600 (created with that mode, so it is never readable by others).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    }
    file.write_all(bytes).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_certificate_chain_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "demo").unwrap();
        let node = dir.path().join("node");
        let files = issue(&ca, &IssueRequest::valid_for_days("hospital-a", Role::Client, &[], 30), &node).unwrap();
        let pem = fs::read_to_string(&files.cert).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = parsed.parse_x509().unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "hospital-a");
        assert_eq!(cert.issuer().iter_organization().next().unwrap().as_str().unwrap(), "demo");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [ca.join(CA_KEY_FILE), files.key] {
                assert_eq!(fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn bad_names_and_validity_are_refused() {
        assert!(matches!(check_name("a b"), Err(PkiError::BadName { .. })));
        assert!(matches!(check_name(""), Err(PkiError::BadName { .. })));
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "demo").unwrap();
        let now = OffsetDateTime::now_utc();
        let req = IssueRequest {
            name: "x",
            role: Role::Client,
            sans: &[],
            not_before: now,
            not_after: now - Duration::days(1),
        };
        assert!(matches!(issue(dir.path(), &req, &dir.path().join("x")), Err(PkiError::BadValidity(_))));
    }

    #[test]
    fn missing_ca_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), &IssueRequest::valid_for_days("x", Role::Client, &[], 1), dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn an_existing_ca_is_not_replaced_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "demo").unwrap();
        let before = fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = init_ca(dir.path(), "demo").unwrap_err();
        assert!(matches!(&err, PkiError::CaExists { path } if path.ends_with(CA_CERT_FILE)), "{err}");
        let text = err.to_string();
        assert!(text.contains("ca.pem already exists") && text.contains("stop working"), "{text}");
        assert!(text.contains("--force"), "{text}");
        assert_eq!(fs::read(dir.path().join(CA_CERT_FILE)).unwrap(), before, "the CA was rewritten");
        // The key alone is enough to refuse (a half-copied CA directory).
        fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = init_ca(dir.path(), "demo").unwrap_err();
        assert!(matches!(&err, PkiError::CaExists { path } if path.ends_with(CA_KEY_FILE)), "{err}");
        init_ca_with(dir.path(), "demo", Overwrite::Replace).unwrap();
        assert_ne!(fs::read(dir.path().join(CA_CERT_FILE)).unwrap(), before);
    }

    #[test]
    fn an_existing_node_certificate_is_not_replaced_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "demo").unwrap();
        let node = dir.path().join("node");
        let req = IssueRequest::valid_for_days("hospital-a", Role::Client, &[], 30);
        let files = issue(&ca, &req, &node).unwrap();
        let key = fs::read(&files.key).unwrap();
        let err = issue(&ca, &req, &node).unwrap_err();
        assert!(matches!(&err, PkiError::NodeExists { path } if *path == files.cert), "{err}");
        assert!(err.to_string().contains("cert.pem already exists") && err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(&files.key).unwrap(), key, "the key was rewritten");
        fs::remove_file(&files.cert).unwrap();
        let err = issue(&ca, &req, &node).unwrap_err();
        assert!(matches!(&err, PkiError::NodeExists { path } if *path == files.key), "{err}");
        issue_with(&ca, &req, &node, Overwrite::Replace).unwrap();
        assert_ne!(fs::read(&files.key).unwrap(), key);
    }

    #[cfg(unix)]
    #[test]
    fn a_ca_key_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "demo").unwrap();
        let key = ca.join(CA_KEY_FILE);
        let req = IssueRequest::valid_for_days("hospital-a", Role::Client, &[], 30);
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            let err = issue(&ca, &req, &dir.path().join("node")).unwrap_err();
            assert!(matches!(&err, PkiError::KeyPermissions(e) if e.mode == mode), "{err}");
            let text = err.to_string();
            assert!(text.contains(&format!("{} has mode {mode:04o}", key.display())), "{text}");
            assert!(text.contains(&format!("chmod 600 {}", key.display())), "{text}");
        }
        assert!(!dir.path().join("node").exists(), "nothing is issued with an exposed CA key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
        issue(&ca, &req, &dir.path().join("node")).unwrap();
    }
}
