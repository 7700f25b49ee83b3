//! Simulations through the real protocol: reproducible with a seed over both transports, DP and secure
//! aggregation on, and failures that fail the run and say why.

use cohort_sim::{Partition, SimError, Simulation, Source, Transport};

fn breast_cancer() -> Source {
    "breast_cancer".parse().expect("a built-in data set")
}

/// The same seed gives the same model bit for bit and the same per-round figures, in memory and over loopback
/// mutual TLS; a different seed gives a different model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_simulation_replays_bit_for_bit_over_both_transports() {
    let base = Simulation::new(breast_cancer())
        .clients(8)
        .rounds(3)
        .partition(Partition::Dirichlet { alpha: 1.0 })
        .no_dp()
        .local_training(1, 0.5, 16);
    let one = base.clone().insecure_seed(11).run().await.expect("the first run");
    let two = base.clone().insecure_seed(11).run().await.expect("the second run");
    let tls = base.clone().insecure_seed(11).transport(Transport::Mtls).run().await.expect("the run over mTLS");
    let other = base.insecure_seed(12).run().await.expect("another seed");
    assert_eq!(one.model_sha256, two.model_sha256);
    assert_eq!(one.rounds, two.rounds, "identical per-round figures");
    assert_eq!(one.client_rounds, two.client_rounds);
    assert_eq!(one.model_sha256, tls.model_sha256, "the transport changes nothing");
    assert_ne!(one.model_sha256, other.model_sha256);
    assert!(one.insecure_seed);
    assert_eq!(one.rounds.len(), 3);
    assert!(one.rounds.iter().all(|r| r.contributors == 8));
    let accuracy = one.final_score().expect("an accuracy");
    assert!(accuracy > 0.85, "accuracy {accuracy}");
    // Every client's rows are dealt out once, and the per-client rows cover the evaluating clients.
    let rows: usize = one.partitions.iter().map(|p| p.train.len() + p.holdout.len()).sum();
    assert_eq!(rows, 569);
    assert!(one.client_rounds.len() >= 3 * 7, "{} client rows", one.client_rounds.len());
}

/// DP-SGD and threshold-RLWE secure aggregation through the same node loop as a deployment: every round sums
/// every client's encrypted update, each client's ε grows round by round within its budget, and the seeded run
/// replays exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_secure_simulation_spends_within_the_budget() {
    let simulation =
        Simulation::new(breast_cancer()).clients(4).rounds(2).dp_epsilon(8.0).secure_aggregation(true).insecure_seed(5);
    let report = simulation.clone().run().await.expect("the run");
    let again = simulation.run().await.expect("the replay");
    assert_eq!(report.model_sha256, again.model_sha256, "seeded DP noise and exact secure sums replay bit for bit");
    assert_eq!(report.rounds.len(), 2);
    assert!(report.rounds.iter().all(|r| r.contributors == 4), "{:?}", report.rounds);
    let first = report.rounds[0].max_epsilon.expect("ε after round 1");
    let last = report.rounds[1].max_epsilon.expect("ε after round 2");
    assert!(0.0 < first && first < last && last <= 8.0, "{first} then {last}");
    assert_eq!(report.max_epsilon(), Some(last));
    assert!(report.epsilon.iter().all(|e| e.is_some_and(|e| e <= 8.0)));
}

/// A client that cannot take part fails the whole run with its name and reason, at once rather than after the
/// round deadlines; a partition the rows cannot fill is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fail_the_run_and_say_why() {
    let started = std::time::Instant::now();
    let err = Simulation::new(breast_cancer()).clients(3).rounds(2).dp_epsilon(0.01).run().await.unwrap_err();
    assert!(matches!(err, SimError::Client { .. }), "{err}");
    assert!(err.to_string().contains("client-1"), "{err}");
    assert!(started.elapsed().as_secs() < 60, "the failure took {:?}", started.elapsed());
    let err = Simulation::new(breast_cancer()).clients(400).run().await.unwrap_err();
    assert!(err.to_string().contains("569 rows cannot give 400 clients"), "{err}");
}
