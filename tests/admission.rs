//! Admission before allocation, over a real loopback coordinator: a CA-signed certificate that is not in the
//! roster, that has the coordinator role, that is revoked or whose name is not a valid node name fails at the TLS
//! handshake, so it never reaches the gRPC layer; an admitted node's connections and streams are capped; and text
//! a peer chose cannot forge a log line or be echoed at length.

mod support;

use cohort_core::config::CoordinatorConfig;
use cohort_core::pki::{self, IssueRequest, NodeFiles, Role};
use cohort_core::protocol::proto::{self, federation_client::FederationClient};
use cohort_core::tls::{Preflight, diagnose_client_failure, preflight};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::Fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything every test's coordinator logged (one global subscriber: the coordinators log from worker threads).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Starts the fixture's coordinator; returns its address.
async fn start(config: &CoordinatorConfig) -> std::net::SocketAddr {
    logs();
    let coordinator = cohort_coordinator::Coordinator::bind(config).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    tokio::spawn(coordinator.run(std::future::pending()));
    addr
}

/// One handshake with `files`; the client's diagnosis when it is refused.
async fn handshake(addr: std::net::SocketAddr, files: &NodeFiles) -> Result<(), String> {
    match preflight(&addr.to_string(), "localhost", files).await.unwrap() {
        Preflight::Accepted => Ok(()),
        Preflight::Refused(err) => Err(diagnose_client_failure(&err, &files.cert, &files.ca_cert)
            .unwrap_or_else(|| format!("refused without a TLS alert: {err}"))),
        Preflight::Unreachable(err) => panic!("coordinator unreachable: {err}"),
    }
}

/// A certificate signed by the fixture's CA with any common name and role, bypassing `pki::issue`'s checks (as a
/// careless or compromised CA operator could).
fn forge(fx: &Fixture, cn: &str, ou: &str, dir: &str) -> NodeFiles {
    let ca = fx.ca_dir();
    let ca_pem = std::fs::read_to_string(ca.join(pki::CA_CERT_FILE)).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.join(pki::CA_KEY_FILE)).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, ou);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let out = fx.dir.path().join(dir);
    std::fs::create_dir_all(&out).unwrap();
    let files = NodeFiles::in_dir(&out);
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.ca_cert, ca_pem).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    files
}

/// Waits for a log line containing `needle` (the coordinator logs from its own tasks).
async fn await_log(needle: &str) -> String {
    for _ in 0..100 {
        let text = log_text();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line contains {needle:?}:\n{}", log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_with_a_ca_certificate_is_refused_at_the_handshake() {
    let fx = Fixture::new(&["hospital-a"], 1);
    let addr = start(&fx.coordinator).await;
    let outsider = fx.issue("outsider-1");
    let said = handshake(addr, &outsider).await.unwrap_err();
    assert!(said.contains("the name \"outsider-1\" is not in the federation roster"), "{said}");

    // The whole client says so too, as a TLS refusal (the handler, which would answer PERMISSION_DENIED, is
    // never reached).
    let err = cohort_client::node::run(
        &fx.client("outsider-1", &outsider, 0, 1, addr),
        &mut cohort_client::work::TrainingWork::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, cohort_client::node::ClientError::TlsRefused(_)), "{err}");
    assert!(err.to_string().contains("not in the federation roster"), "{err}");

    let logs = await_log("outsider-1 is not in the federation roster").await;
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("CN=outsider-1")).collect();
    assert!(!refusals.is_empty(), "{logs}");
    assert!(
        refusals.iter().all(|l| l.contains("refused client certificate") && l.contains("handshake{peer=")),
        "{logs}"
    );
    // Logged once per handshake: by the verifier, not again by the accept loop.
    assert!(!logs.lines().any(|l| l.contains("refused TLS connection") && l.contains("roster")), "{logs}");
    assert!(
        !logs.lines().any(|l| l.contains("cohort_coordinator::service") && l.contains("node=outsider-1")),
        "an outsider reached the gRPC handler:\n{logs}"
    );
    // The roster member is still admitted.
    handshake(addr, &fx.issue("hospital-a")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_certificate_cannot_join_as_a_client() {
    let fx = Fixture::new(&["hospital-a", "coordinator"], 1);
    let addr = start(&fx.coordinator).await;
    // A coordinator-role certificate whose name is in the roster.
    let files = pki::issue(
        &fx.ca_dir(),
        &IssueRequest::valid_for_days("hospital-a", Role::Coordinator, &["localhost".to_owned()], 1),
        &fx.dir.path().join("coord-as-client"),
    )
    .unwrap();
    let said = handshake(addr, &files).await.unwrap_err();
    assert!(said.contains("it is not a client certificate (its role is \"coordinator\")"), "{said}");
    assert!(said.contains("--role client"), "{said}");
    // The coordinator's own certificate, too.
    let own = fx.coordinator.tls.files();
    let said = handshake(addr, &own).await.unwrap_err();
    assert!(said.contains("not a client certificate"), "{said}");
    await_log("where only client certificates are admitted").await;
    handshake(addr, &fx.issue("hospital-a")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_after_a_reload_without_restart() {
    let mut fx = Fixture::new(&["hospital-a", "hospital-b"], 1);
    let list = fx.dir.path().join("revoked.txt");
    std::fs::write(&list, "# revoked certificates\n").unwrap();
    fx.coordinator.admission.revocation_list = Some(list.clone());
    let addr = start(&fx.coordinator).await;
    let a = fx.issue("hospital-a");
    let b = fx.issue("hospital-b");
    handshake(addr, &a).await.unwrap();
    handshake(addr, &b).await.unwrap();

    // Revoke hospital-a by name and hospital-b's certificate by its fingerprint, with the coordinator running.
    let b_der = cohort_core::tls::load_certs(&b.cert).unwrap().remove(0);
    let fingerprint = cohort_core::admission::certificate_fingerprint(&b_der);
    std::fs::write(&list, format!("hospital-a  # laptop stolen\n{fingerprint}\n")).unwrap();
    let said = handshake(addr, &a).await.unwrap_err();
    assert!(said.contains("revoked"), "{said}");
    let said = handshake(addr, &b).await.unwrap_err();
    assert!(said.contains("revoked"), "{said}");
    await_log("the certificate of hospital-a is revoked (revocation list entry hospital-a)").await;
    await_log(&format!("the certificate of hospital-b is revoked (revocation list entry {fingerprint})")).await;
    // A new certificate for hospital-b is not the revoked one.
    let b2 = pki::issue(
        &fx.ca_dir(),
        &IssueRequest::valid_for_days("hospital-b", Role::Client, &[], 1),
        &fx.dir.path().join("hospital-b-2"),
    )
    .unwrap();
    handshake(addr, &b2).await.unwrap();
    // Lifting the revocation also needs no restart.
    std::fs::write(&list, "").unwrap();
    handshake(addr, &a).await.unwrap();
}

/// A channel to the coordinator at `addr` with `files`' certificate (one TLS connection, reused by every call).
async fn channel(addr: std::net::SocketAddr, files: &NodeFiles) -> tonic::transport::Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&files.ca_cert).unwrap()))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&files.key).unwrap(),
        ))
        .domain_name("localhost");
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// "Open connections survive revocation": a node revoked while its connection is open is refused from its next
/// call on that same connection, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_while_connected_is_refused_on_its_open_connection() {
    let mut fx = Fixture::new(&["hospital-a"], 1);
    let list = fx.dir.path().join("revoked.txt");
    std::fs::write(&list, "").unwrap();
    fx.coordinator.admission.revocation_list = Some(list.clone());
    let addr = start(&fx.coordinator).await;
    let mut raw = FederationClient::new(channel(addr, &fx.issue("hospital-a")).await);
    let join = || proto::JoinRequest { federation_id: support::FEDERATION.into(), ..Default::default() };
    raw.join(join()).await.unwrap();

    std::fs::write(&list, "hospital-a  # revoked mid-session\n").unwrap();
    let err = raw.join(join()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked (revocation list entry hospital-a)"), "{}", err.message());
    let err = raw.fetch_task(proto::TaskRequest { last_seen: None }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    await_log("refused a call on an open connection").await;

    // Lifting the revocation lets the same connection work again.
    std::fs::write(&list, "").unwrap();
    raw.join(join()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_path_separators_is_refused_at_issue_and_at_admission() {
    let fx = Fixture::new(&["hospital-a"], 1);
    // At issue time.
    let err = pki::issue(
        &fx.ca_dir(),
        &IssueRequest::valid_for_days("../../../pwned", Role::Client, &[], 1),
        &fx.dir.path().join("pwned"),
    )
    .unwrap_err();
    assert!(matches!(err, pki::PkiError::BadName { .. }), "{err}");
    // In the roster.
    let mut bad = fx.coordinator.clone();
    bad.roster.push("../../../pwned".into());
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("roster") && err.contains("../../../pwned"), "{err}");

    // At admission, for a certificate the CA signed anyway: refused in the handshake, nothing written.
    let addr = start(&fx.coordinator).await;
    for (i, cn) in ["../../../pwned", "a/../../pwned", "hospital-a\nINFO forged"].into_iter().enumerate() {
        let files = forge(&fx, cn, "client", &format!("forged-{i}"));
        let said = handshake(addr, &files).await.unwrap_err();
        assert!(said.contains("is not a valid node name"), "{cn:?}: {said}");
        assert!(!said.contains('\n'), "{said}");
    }
    let logs = await_log("\"../../../pwned\" is not a valid node name").await;
    assert!(logs.contains("hospital-a\\nINFO forged"), "{logs}");
    assert!(!logs.lines().any(|l| l.starts_with("INFO forged")), "{logs}");
    for escaped in
        [fx.dir.path().join("pwned"), fx.dir.path().join("pwned.jsonl"), fx.coordinator.data_dir.join("pwned.jsonl")]
    {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    let ledgers = fx.coordinator.data_dir.join(cohort_coordinator::recorder::LEDGER_COPIES_DIR);
    let written: Vec<_> =
        std::fs::read_dir(&ledgers).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(written.is_empty(), "ledger files for refused peers: {written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_reason_with_a_newline_cannot_forge_a_log_line() {
    let fx = Fixture::new(&["hospital-a"], 1);
    let addr = start(&fx.coordinator).await;
    let mut raw =
        FederationClient::new(channel(addr, &fx.issue("hospital-a")).await).max_decoding_message_size(8 << 20);

    // A 3.9 MB federation id is not echoed back.
    let huge = "x".repeat(3_900_000);
    let err = raw.join(proto::JoinRequest { federation_id: huge, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().len() < 4096, "the error echoes {} bytes", err.message().len());
    assert!(err.message().contains("more bytes)"), "{}", err.message());

    // A join with a data report (the first join without one only fetches the plan).
    let data = Some(proto::DataReport { reported_examples: 100.0, ..Default::default() });
    raw.join(proto::JoinRequest { federation_id: support::FEDERATION.into(), data, ..Default::default() })
        .await
        .unwrap();
    let header = loop {
        let mut stream = raw.fetch_task(proto::TaskRequest { last_seen: None }).await.unwrap().into_inner();
        let Some(proto::task_chunk::Body::Header(h)) = stream.message().await.unwrap().unwrap().body else {
            panic!("no header")
        };
        if matches!(h.task, Some(proto::task_header::Task::Train(_))) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let forged = "2030-01-01T00:00:00.000000Z  INFO cohort_coordinator::federation: FORGED federation finished";
    raw.decline(proto::DeclineRequest {
        round: header.round,
        reason: format!("busy\n{forged}\r\u{1b}[2K"),
        ledger_record: None,
    })
    .await
    .unwrap();
    let logs = await_log("node declined: busy\\n2030-01-01").await;
    assert!(!logs.lines().any(|l| l.starts_with("2030-01-01")), "a forged line:\n{logs}");
    assert!(logs.contains("FORGED federation finished\\r\\u{1b}[2K"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs}");
}

/// An HTTP/2 frame header.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields without indexing (no Huffman coding).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        out.push(u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
        out.push(u8::try_from(value.len()).unwrap());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unfinished_streams_are_bounded() {
    const STREAMS: u32 = 64;
    let fx = Fixture::new(&["hospital-a"], 1);
    let addr = start(&fx.coordinator).await;
    let limit = fx.coordinator.admission.max_streams_per_connection;
    let files = fx.issue("hospital-a");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cohort_core::tls::client_config(&files).unwrap()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();

    // The preface and empty settings, then a flood of calls whose 4 MiB messages never finish.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/cohort.v2.Federation/Join"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let mut grpc_prefix = vec![0u8];
    grpc_prefix.extend_from_slice(&((4u32 << 20) - 16).to_be_bytes());
    grpc_prefix.extend_from_slice(&[0u8; 8 << 10]);
    for i in 0..STREAMS {
        out.extend(frame(0x1, 0x4, 2 * i + 1, &block)); // HEADERS, END_HEADERS, no END_STREAM
    }
    // The start of a message that never ends, on as many streams as the server may accept (data on refused
    // streams would be a protocol error of this peer, and the server would close the connection for it).
    for i in 0..limit {
        out.extend(frame(0x0, 0, 2 * i + 1, &grpc_prefix));
    }
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();

    // Read what the coordinator answers for a while.
    let mut max_streams = None;
    let mut refused = std::collections::BTreeSet::new();
    let mut goaway = false;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut chunk = [0u8; 16 << 10];
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x4 if flags & 1 == 0 => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                            max_streams = Some(u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
                        }
                    }
                    // The server may already have closed the flooded connection (GOAWAY); the ACK is moot then.
                    let _ = tls.write_all(&frame(0x4, 1, 0, &[])).await;
                }
                0x3 if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == 0x7 => {
                    refused.insert(stream);
                }
                0x7 => goaway = true,
                _ => {}
            }
        }
    }
    assert_eq!(max_streams, Some(limit), "the server does not announce its stream limit");
    // Every stream beyond the limit is refused before the server buffers anything for it.
    let served = STREAMS as usize - refused.len();
    assert!(goaway || served <= limit as usize, "{served} concurrent unfinished streams were accepted (limit {limit})");
    assert!(refused.len() >= (STREAMS - limit) as usize || goaway, "refused {} of {STREAMS}", refused.len());
    // The node's second connection is still admitted (the flood holds one of its two).
    handshake(addr, &files).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_cannot_hold_more_than_its_connections() {
    let mut fx = Fixture::new(&["hospital-a"], 1);
    fx.coordinator.admission.max_connections_per_node = 1;
    let addr = start(&fx.coordinator).await;
    let files = fx.issue("hospital-a");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cohort_core::tls::client_config(&files).unwrap()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut first = connector.connect(name, tokio::net::TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(first.read(&mut byte).await.unwrap(), 1, "the first connection is served");
    // A second process with the same certificate is refused while the first holds its connection.
    assert!(handshake(addr, &files).await.is_err(), "a second connection of the same node was served");
    await_log("refused connection of node hospital-a: it already holds 1 connections").await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    handshake(addr, &files).await.unwrap();
}
