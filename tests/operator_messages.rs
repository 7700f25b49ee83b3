//! Messages a hospital's IT staff can act on, over a real coordinator: a plain-http coordinator URL, a wrong
//! `server_name`, and private keys readable by other users.

mod support;

use cohort_client::link::GrpcLink;
use cohort_client::node::ClientError;
use cohort_core::config::ClientConfig;
use std::time::Duration;
use support::Fixture;

#[test]
fn a_plain_http_coordinator_url_is_refused_when_the_config_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    let config = |url: &str| {
        format!(
            "name = \"hospital-a\"\nfederation_id = \"f\"\ndata_dir = \"data\"\n\
             [coordinator]\nurl = \"{url}\"\n\
             [tls]\nca_cert = \"ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[data]\npath = \"a.csv\"\n"
        )
    };
    std::fs::write(&path, config("http://coord.example.org:7443")).unwrap();
    let err = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("the coordinator URL must start with https:// (Cohort always uses mutual TLS)"), "{err}");
    assert!(err.contains("http://coord.example.org:7443"), "the message names the configured URL: {err}");
    std::fs::write(&path, config("https://coord.example.org:7443")).unwrap();
    ClientConfig::load(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_says_which_name_was_expected_and_which_the_certificate_has() {
    let fx = Fixture::new(&["hospital-a"], 1);
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let server = tokio::spawn(coordinator.run(std::future::pending()));

    let files = fx.issue("hospital-a");
    let mut config = fx.client("hospital-a", &files, 0, 1, addr);
    config.coordinator.server_name = Some("wrong.example".into());
    let err = GrpcLink::connect(&config, Duration::from_secs(10)).await.unwrap_err();
    let said = err.to_string();
    assert!(matches!(err, ClientError::TlsRefused(_)), "{said}");
    assert!(said.contains("not valid for the name \"wrong.example\""), "{said}");
    // The coordinator certificate of the fixture: its name, and the SANs it was issued with.
    assert!(said.contains("it is valid only for coordinator, localhost, 127.0.0.1"), "{said}");
    assert!(said.contains("coordinator.server_name"), "the message names the key to change: {said}");
    for noise in ["NotValidForNameContext", "DnsName(", "IpAddress(", "{", "docs.rs"] {
        assert!(!said.contains(noise), "{noise:?} in a message for operators: {said}");
    }

    // The right name connects.
    config.coordinator.server_name = Some("localhost".into());
    GrpcLink::connect(&config, Duration::from_secs(10)).await.unwrap();
    server.abort();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_readable_by_others_are_refused_naming_the_file_mode_and_fix() {
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let fx = Fixture::new(&["hospital-a"], 1);

    // The coordinator's TLS key.
    let key = fx.coordinator.tls.key.clone();
    set_mode(&key, 0o644);
    let Err(err) = cohort_coordinator::Coordinator::bind(&fx.coordinator).await else {
        panic!("the coordinator bound with a key readable by others");
    };
    let said = err.to_string();
    assert!(said.contains(&format!("{} has mode 0644", key.display())), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", key.display())), "{said}");
    assert!(!fx.coordinator.data_dir.exists(), "the refused coordinator touched its data directory");
    set_mode(&key, 0o600);
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let server = tokio::spawn(coordinator.run(std::future::pending()));

    // A hospital's TLS key, readable by its group.
    let files = fx.issue("hospital-a");
    let config = fx.client("hospital-a", &files, 0, 1, addr);
    set_mode(&files.key, 0o640);
    let said = GrpcLink::connect(&config, Duration::from_secs(10)).await.unwrap_err().to_string();
    assert!(said.contains(&format!("{} has mode 0640", files.key.display())), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", files.key.display())), "{said}");
    // 0400 is narrower than 0600, and fine.
    set_mode(&files.key, 0o400);
    GrpcLink::connect(&config, Duration::from_secs(10)).await.unwrap();
    server.abort();
}

/// Something other than the coordinator answers at the coordinator's address with a hospital's (CA-signed) client
/// certificate: the node refuses it and says that the server is not a coordinator, not that its own certificate
/// is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_presenting_a_client_certificate_is_refused_as_not_the_coordinator() {
    use cohort_core::pki::{self, IssueRequest, Role};
    let fx = Fixture::new(&["hospital-a"], 1);
    let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let impostor = pki::issue(
        &fx.ca_dir(),
        &IssueRequest::valid_for_days("mallory", Role::Client, &sans, 1),
        &fx.dir.path().join("mallory"),
    )
    .unwrap();
    let certs = cohort_core::tls::load_certs(&impostor.cert).unwrap();
    let key = cohort_core::tls::load_key(&impostor.key).unwrap();
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let files = fx.issue("hospital-a");
    let config = fx.client("hospital-a", &files, 0, 1, addr);
    let err = GrpcLink::connect(&config, Duration::from_secs(10)).await.unwrap_err();
    server.abort();
    let said = err.to_string();
    assert!(matches!(err, ClientError::TlsRefused(_)), "{said}");
    assert!(said.contains("not a coordinator certificate") && said.contains("coordinator.url"), "{said}");
    assert!(!said.contains("not a client certificate") && !said.contains("this node's certificate"), "{said}");
}
