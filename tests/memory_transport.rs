//! The federation without sockets: the same protocol core, node loop, DP and secure aggregation as a deployment,
//! over the in-memory link; and the coordinator core driven through a whole secure round with no async runtime.

mod support;

use cohort_client::journal::SqliteJournal;
use cohort_client::node::{NodeReport, run_session};
use cohort_client::privacy::PrivateWork;
use cohort_client::secure::{ClientRound, Verifier};
use cohort_coordinator::federation::{Clock, Effect, Federation, Peer};
use cohort_coordinator::round::{RoundMachine, RoundSettings};
use cohort_coordinator::secure::SecureSettings;
use cohort_coordinator::server::{self, Hosted, plan_of};
use cohort_coordinator::strategy::FedAvg;
use cohort_core::binding::{BoundKeys, CertSigner, FederationTrust, UnixTime};
use cohort_core::config::{ClientSecureAggregation, PrivacySection, SecureAggregationMode, SecureAggregationSection};
use cohort_core::ledger::{LedgerRecord, read_jsonl, verify_chain};
use cohort_core::pki::Role;
use cohort_core::protocol::codec::u64s_to_le;
use cohort_core::protocol::{
    Assignment, BodyEncoding, EvaluationReport, JoinKeys, JoinRequest, PartialHeader, ShareSubmission, UpdateHeader,
};
use cohort_core::tls::load_certs;
use cohort_core::{ModelVersion, NodeName, Round};
use cohort_crypto::{NodeIdentity, SecAggParams};
use cohort_sim::MemoryLink;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Fixture;

const NAMES: [&str; 3] = ["hospital-a", "hospital-b", "hospital-c"];

fn secure() -> SecureAggregationSection {
    SecureAggregationSection {
        mode: SecureAggregationMode::ThresholdRlwe,
        max_colluders: 1,
        threshold: None,
        min_participants: Some(3),
    }
}

fn certificate(path: &std::path::Path) -> Vec<u8> {
    load_certs(path).expect("the certificate loads")[0].to_vec()
}

/// Three hospitals with DP-SGD and threshold-RLWE secure aggregation, two rounds, all in one process: no listener
/// and no TLS connection exist. Every round aggregates all three encrypted updates, registers a version, and
/// leaves each hospital's ledger copy verifiable at the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secure_dp_federation_runs_over_the_in_memory_link() {
    let mut fx = Fixture::new(&NAMES, 2);
    fx.declare_bounds();
    fx.coordinator.training.min_clients = 3;
    fx.coordinator.secure_aggregation = secure();
    let Hosted { host, .. } =
        server::host(&fx.coordinator, Some(rand_chacha::ChaCha20Rng::seed_from_u64(7))).expect("the core is hosted");
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let mut clients = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let files = fx.issue(name);
        let mut config = fx.client(name, &files, i, NAMES.len(), unused);
        config.privacy = PrivacySection {
            enabled: true,
            epsilon_budget: 50.0,
            target_epsilon: Some(8.0),
            ..PrivacySection::default()
        };
        let mut link = MemoryLink::new(host.clone(), name, Some(certificate(&files.cert)));
        clients.push(tokio::spawn(async move {
            let mut work = PrivateWork::new(&config.name, config.data_dir.clone(), config.privacy.clone());
            let mut report = NodeReport::default();
            run_session(&mut link, &config, &mut work, &mut None, &mut report).await.map(|()| report)
        }));
    }
    let run = async {
        server::run_until_finished(&host, std::future::pending()).await;
        server::run_report(&host, Round(0))
    };
    let report = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the federation finishes");
    assert_eq!(report.history.len(), 2);
    for summary in &report.history {
        assert_eq!(summary.contributors.len(), 3, "round {}: {:?}", summary.round, summary.contributors);
        assert!(summary.secure.is_some(), "round {} ran in plaintext", summary.round);
    }
    assert_eq!(report.recorded.len(), 2, "both versions are in the registry");
    for client in clients {
        let node = client.await.expect("the node task").expect("the node finishes");
        assert_eq!(node.rounds_trained, [Round(1), Round(2)]);
        assert_eq!(node.final_model, report.global);
    }
    for name in NAMES {
        let copy = fx.coordinator.data_dir.join("ledgers").join(format!("{name}.jsonl"));
        let records: Vec<LedgerRecord> =
            read_jsonl(std::io::BufReader::new(std::fs::File::open(&copy).expect("a ledger copy"))).expect("it reads");
        verify_chain(&records, None).expect("the copy verifies");
        assert!(records.iter().filter(|r| r.body.round.is_some()).count() >= 2, "{name}: {} records", records.len());
    }
}

/// A FedAvg machine for `plan` over the three hospitals, at version 0 with an all-zero model.
fn fresh_machine(plan: &cohort_core::config::FederationPlan) -> RoundMachine {
    RoundMachine::new(
        "e2e",
        NAMES.iter().map(|n| NodeName::from(*n)),
        RoundSettings::from_plan(plan),
        Box::new(FedAvg),
        vec![0.0; plan.model.parameter_count()],
        Round(0),
        ModelVersion(0),
    )
}

/// A virtual clock a test moves by hand.
#[derive(Clone)]
struct ManualClock {
    start: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().expect("the clock")
    }

    fn unix(&self) -> UnixTime {
        UnixTime::now()
    }
}

/// One hospital's side of a secure round, driven by hand.
struct Hospital {
    peer: Peer,
    identity: NodeIdentity,
    journal: SqliteJournal,
    round: Option<ClientRound>,
}

/// The coordinator core through one whole secure round, driven synchronously: joins, the announcement, sealed
/// shares with consents, three encrypted uploads, the decryption request and the partials, the aggregate and the
/// evaluation reports. No async runtime exists in this test and no socket is opened.
#[test]
fn the_coordinator_core_runs_a_whole_secure_round_without_a_runtime() {
    let mut fx = Fixture::new(&NAMES, 1);
    fx.coordinator.training.min_clients = 3;
    fx.coordinator.secure_aggregation = secure();
    let plan = plan_of(&fx.coordinator).expect("a plan");
    let trust = FederationTrust::load(&fx.coordinator.tls.ca_cert).expect("the CA");
    let settings = SecureSettings::new(&SecAggParams::default(), 1, None, Some(3)).expect("settings");
    let machine =
        fresh_machine(&plan).with_secure_aggregation(settings).with_rng(rand_chacha::ChaCha20Rng::seed_from_u64(3));
    let clock = ManualClock { start: Instant::now(), offset: Arc::default() };
    let ca = FederationTrust::load(&fx.coordinator.tls.ca_cert).expect("the CA");
    let mut core = Federation::new(machine, plan.clone(), trust, Box::new(clock), BTreeMap::new());

    let mut hospitals = Vec::new();
    for name in NAMES {
        let files = fx.issue(name);
        let identity = NodeIdentity::generate();
        let bound = BoundKeys {
            x25519: identity.public_keys().x25519,
            share_ed25519: identity.public_keys().ed25519,
            ledger_ed25519: None,
        };
        let signature = CertSigner::load(&files.key).and_then(|s| s.sign("e2e", name, Role::Client, &bound)).unwrap();
        let peer = Peer { name: NodeName::from(name), certificate_der: Some(certificate(&files.cert)) };
        let keys = JoinKeys {
            ledger: Vec::new(),
            encryption: bound.x25519.to_vec(),
            share_signing: bound.share_ed25519.to_vec(),
            binding_signature: signature,
        };
        let data = cohort_core::protocol::DataReport {
            fingerprint: String::new(),
            examples: 100.0,
            label_histogram: Vec::new(),
        };
        core.join(&peer, JoinRequest { federation_id: "e2e".into(), keys, data: Some(data) }).expect("joins");
        let journal = SqliteJournal::open(&fx.dir.path().join(name), "e2e").expect("a journal");
        hospitals.push(Hospital { peer, identity, journal, round: None });
    }
    let policy = ClientSecureAggregation::default();

    // Every hospital gets the announcement, checks it, seals its shares and consents.
    let mut model = Vec::new();
    for h in &mut hospitals {
        let (header, global) = core.task(&h.peer, None).expect("a task");
        let Assignment::Train(settings) = header.assignment else { panic!("expected training, got {header:?}") };
        let secure = settings.secure.expect("a secure round");
        let verifier =
            Verifier { federation: "e2e", me: &h.peer.name.0, policy: &policy, trust: &ca, now: UnixTime::now() };
        let mut round =
            ClientRound::new(secure.announcement, &secure.bindings, &verifier, &h.identity, &global, &h.journal)
                .expect("the announcement verifies");
        let envelopes = round.seal_shares(&h.identity).expect("sealed");
        let consent = round.consent(&h.identity).signature.to_vec();
        let shares = ShareSubmission {
            round: header.round.clone(),
            envelopes: envelopes.into_iter().map(|(to, e)| (NodeName(to), e)).collect(),
            consent,
        };
        core.submit_shares(&h.peer, shares).expect("shares accepted");
        h.round = Some(round);
        model = global;
    }
    // Shares are relayed; each hospital encrypts its delta (all ones) and uploads it.
    for h in &mut hospitals {
        let rref = cohort_core::protocol::RoundRef::new("e2e", Round(1), ModelVersion(0));
        let bundle = core.shares_for(&h.peer, &rref).expect("shares");
        assert!(bundle.ready, "distribution closed once all three shared");
        let holders: Vec<String> = bundle.key_holders.iter().map(|n| n.0.clone()).collect();
        let envelopes: Vec<(String, Vec<u8>)> = bundle.envelopes.into_iter().map(|(n, e)| (n.0, e)).collect();
        let round = h.round.as_mut().expect("the round");
        round.receive_shares(&h.identity, &holders, &envelopes).expect("shares open");
        let bodies = round.encrypt(&vec![1.0; model.len()], 100).expect("encrypted");
        let header = UpdateHeader {
            round: rref,
            value_count: bodies.len() as u64,
            encoding: BodyEncoding::RlweBodies,
            train_loss: None,
        };
        let bytes = core.check_upload(&h.peer, &header).expect("the upload is expected");
        assert_eq!(bytes, bodies.len() * 8);
        core.upload(&h.peer, &header, &u64s_to_le(&bodies)).expect("the upload is accepted");
    }
    // The decryption request goes to the responders (fixed once enough key holders poll); each answers with its
    // partial, and the sum decodes when the last one is in.
    let mut answered = 0;
    for _ in 0..3 {
        for h in &mut hospitals {
            let (header, _) = core.task(&h.peer, None).expect("a task");
            let Assignment::Decrypt(request) = header.assignment else { continue };
            let round = h.round.as_mut().expect("the round");
            let partial = round.answer(&request, &mut h.journal).expect("a partial");
            let ph = PartialHeader { round: header.round.clone(), value_count: partial.values.len() as u64 };
            core.check_partial(&h.peer, &ph).expect("the partial is expected");
            core.partial(&h.peer, &ph, &u64s_to_le(&partial.values)).expect("the partial is accepted");
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "the threshold (3 of 3) answered, each once");
    // The mean of three all-ones deltas, decrypted from the sum alone.
    let global = core.machine().global().to_vec();
    assert_eq!(core.machine().version(), ModelVersion(1));
    assert!(global.iter().all(|w| (w - 1.0).abs() < 1e-3), "{:?}", &global[..4]);
    // Evaluation reports close the round; the core asks for it to be registered.
    for h in &hospitals {
        let (header, _) = core.task(&h.peer, None).expect("a task");
        assert_eq!(header.assignment, Assignment::Evaluate);
        let report = EvaluationReport {
            round: header.round,
            metrics: [("accuracy".to_owned(), 0.5)].into(),
            ledger: Vec::new(),
        };
        core.report(&h.peer, report).expect("the report is accepted");
    }
    let effects = core.drain_effects();
    let registered: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Register(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].summary.contributors.len(), 3);
    assert_eq!(registered[0].model, global);
    assert!(effects.iter().filter(|e| matches!(e, Effect::KeepBinding(_))).count() == 3);
    assert!(core.machine().is_finished());
}

/// Liveness through the core, in virtual time: nodes that miss the training deadline are marked absent, the failed
/// round backs off instead of retrying at once, and while the federation waits for a quorum the operator's
/// waiting line names the absent nodes and since when.
#[test]
fn absent_nodes_are_named_while_the_core_waits_for_a_quorum() {
    let mut fx = Fixture::new(&NAMES, 2);
    fx.coordinator.training.min_clients = 2;
    fx.coordinator.training.round_deadline_secs = 30;
    fx.coordinator.secure_aggregation.mode = SecureAggregationMode::None;
    let plan = plan_of(&fx.coordinator).expect("a plan");
    let trust = FederationTrust::load(&fx.coordinator.tls.ca_cert).expect("the CA");
    let machine = fresh_machine(&plan);
    let clock = ManualClock { start: Instant::now(), offset: Arc::default() };
    let mut core = Federation::new(machine, plan.clone(), trust, Box::new(clock.clone()), BTreeMap::new());
    let peers: Vec<Peer> = NAMES
        .iter()
        .map(|name| Peer { name: NodeName::from(*name), certificate_der: Some(certificate(&fx.issue(name).cert)) })
        .collect();
    for peer in &peers {
        let keys = JoinKeys {
            ledger: Vec::new(),
            encryption: Vec::new(),
            share_signing: Vec::new(),
            binding_signature: Vec::new(),
        };
        let data = cohort_core::protocol::DataReport {
            fingerprint: String::new(),
            examples: 100.0,
            label_histogram: Vec::new(),
        };
        core.join(peer, JoinRequest { federation_id: "e2e".into(), keys, data: Some(data) }).expect("joins");
    }
    // Only hospital-a trains; the other two go silent.
    let (header, global) = core.task(&peers[0], None).expect("a task");
    assert!(matches!(header.assignment, Assignment::Train(_)), "{header:?}");
    let update = UpdateHeader {
        round: header.round.clone(),
        value_count: global.len() as u64,
        encoding: BodyEncoding::F32Delta,
        train_loss: None,
    };
    core.check_upload(&peers[0], &update).expect("the upload is expected");
    core.upload(&peers[0], &update, &cohort_core::protocol::codec::f32s_to_le(&vec![0.5; global.len()]))
        .expect("the upload is accepted");
    let line = core.waiting_line().expect("the core waits");
    assert!(line.starts_with("round 1 training: waiting for hospital-b, hospital-c, 30 s left"), "{line}");

    // The deadline passes: b and c are absent, the round fails and backs off (no retry in the same instant).
    *clock.offset.lock().expect("the clock") = Duration::from_secs(31);
    core.tick();
    assert_eq!(core.machine().phase_name(), "backoff");
    assert_eq!(core.machine().absent().len(), 2);
    assert!(core.waiting_line().is_none(), "nothing is awaited while backing off");
    // After the backoff only hospital-a is present: below the quorum of two, the core waits and says for whom.
    *clock.offset.lock().expect("the clock") = Duration::from_secs(33);
    core.tick();
    let line = core.waiting_line().expect("the core waits for a quorum");
    assert!(line.starts_with("round 1 joining: waiting for hospital-b (absent since "), "{line}");
    assert!(line.contains("hospital-c (absent since "), "{line}");
    assert!(line.ends_with(" s left"), "{line}");
    // hospital-b comes back: the round is retried with a and b, not c.
    let (header, _) = core.task(&peers[1], None).expect("a task");
    assert!(matches!(header.assignment, Assignment::Train(_)), "{header:?}");
    let line = core.waiting_line().expect("the core waits");
    assert!(line.starts_with("round 1 training: waiting for hospital-a, hospital-b,"), "{line}");
}
