//! Simulations in virtual time: dropouts that secure aggregation survives or retries and reports, a clear
//! stop past its threshold, stragglers refused as late, simulated time that follows the documented cost model, and results
//! (simulated time included) that do not depend on the thread count.

use cohort_sim::{Conditions, Partition, SimError, Simulation, SimulationReport, Source, Spread};

fn breast_cancer() -> Source {
    "breast_cancer".parse().expect("a built-in data set")
}

/// Conditions with no spread: every client has the same machine and link.
fn uniform(examples_per_second: f64, dropout_rate: f64) -> Conditions {
    Conditions {
        compute: Spread::new(examples_per_second, 0.0),
        bandwidth_mbps: Spread::new(100.0, 0.0),
        latency_ms: 20.0,
        dropout_rate,
    }
}

/// Plaintext rounds close at their deadline with the updates that arrived, as long as they reach
/// `min_clients`; the report counts the dropouts and each round's model comes from the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_rounds_survive_dropouts_above_their_quorum() {
    let report = Simulation::new(breast_cancer())
        .clients(12)
        .rounds(4)
        .no_dp()
        .min_clients(6)
        .round_deadline(30)
        .conditions(uniform(2000.0, 0.25))
        .insecure_seed(3)
        .run()
        .await
        .expect("a run that loses a quarter of its updates");
    assert_eq!(report.rounds.len(), 4);
    assert!(report.dropped() > 0, "no dropouts at rate 0.25: {:?}", report.rounds);
    for round in &report.rounds {
        assert!(round.contributors >= 6 && round.contributors + round.dropped <= 12, "{round:?}");
    }
    // A round that loses an update waits out its deadline: simulated time shows it.
    let simulated = report.simulated_seconds.expect("virtual time on the memory transport");
    let waited = report.rounds.iter().filter(|r| r.dropped > 0).count() as f64 * 30.0;
    assert!(simulated >= waited, "{simulated} s simulated, {waited} s of deadlines");
}

/// The secure run with dropouts that the two tests below share: seed 4 loses a key holder during decryption.
fn secure_with_dropouts() -> Simulation {
    Simulation::new(breast_cancer())
        .clients(8)
        .rounds(3)
        .no_dp()
        .secure_aggregation(true)
        .min_clients(5)
        .round_deadline(20)
        .conditions(Conditions { dropout_rate: 0.15, ..Conditions::default() })
        .insecure_seed(4)
}

/// Secure aggregation survives clients lost before their encrypted update, down to its quorum. A key holder lost
/// after it took the decryption request fails that attempt (the request names exactly t responders, so that a
/// round has one decryption): the round is retried without it, and the report lists the failed attempt with
/// what it lacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_rounds_survive_dropouts_or_retry_and_say_so() {
    let report = secure_with_dropouts().run().await.expect("a secure run with dropouts");
    assert_eq!(report.rounds.len(), 3);
    assert!(report.dropped() > 0, "no dropouts: {:?}", report.rounds);
    assert!(report.rounds.iter().all(|r| r.contributors >= 5), "{:?}", report.rounds);
    assert!(!report.failed_attempts.is_empty(), "this seed loses a key holder during decryption");
    for failed in &report.failed_attempts {
        assert!(failed.updates < failed.required && (1..=3).contains(&failed.round), "{failed:?}");
    }
}

/// The same seeded secure run with failed attempts replays bit for bit, failures included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_run_with_failed_attempts_replays_bit_for_bit() {
    let report = secure_with_dropouts().run().await.expect("a secure run with dropouts");
    let again = secure_with_dropouts().run().await.expect("the replay");
    assert_eq!(report.model_sha256, again.model_sha256);
    assert_eq!(report.rounds, again.rounds, "identical rounds, dropouts and simulated times");
    assert_eq!(report.failed_attempts, again.failed_attempts);
}

/// Past the threshold, rounds fail, are retried with a backoff, and the run stops with an error that names the
/// round and what it lacked, rather than hanging or reporting success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_past_the_threshold_stop_the_run_and_say_why() {
    let err = Simulation::new(breast_cancer())
        .clients(6)
        .rounds(3)
        .no_dp()
        .secure_aggregation(true)
        .min_clients(6)
        .round_deadline(10)
        .conditions(uniform(2000.0, 0.8))
        .insecure_seed(5)
        .run()
        .await
        .unwrap_err();
    let SimError::Stopped { completed, rounds, reason } = &err else { panic!("not a stop: {err}") };
    assert!(*completed < *rounds, "{err}");
    assert!(reason.contains("round"), "{err}");
}

/// Clients too slow for the deadline are refused as late and counted; the round closes with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_past_the_deadline_are_refused_as_late() {
    let slow = Conditions { compute: Spread::new(4.0, 1.5), ..uniform(4.0, 0.0) };
    let report = Simulation::new(breast_cancer())
        .clients(10)
        .rounds(2)
        .no_dp()
        .min_clients(3)
        .round_deadline(15)
        .conditions(slow)
        .insecure_seed(6)
        .run()
        .await
        .expect("a run with stragglers");
    let late = report.late();
    assert!(late > 0, "no stragglers at a median 4 examples/s: {:?}", report.rounds);
    assert!(report.rounds.iter().all(|r| r.contributors >= 3 && r.contributors < 10), "{:?}", report.rounds);
}

/// Halving every client's compute speed adds exactly the training and evaluation time of the cost model,
/// `epochs × rows / speed` and `held-out rows / (3 × speed)`: for a lone client, all of it; for several,
/// somewhere between the slowest client's own chain of rounds and the sum of each round's slowest training and
/// slowest evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_time_follows_the_cost_model() {
    const ROUNDS: f64 = 2.0;
    const EPOCHS: f64 = 2.0;
    let at = |clients: usize, speed: f64| {
        Simulation::new(breast_cancer())
            .clients(clients)
            .rounds(ROUNDS as u64)
            .no_dp()
            .local_training(EPOCHS as u32, 0.5, 16)
            .conditions(uniform(speed, 0.0))
            .insecure_seed(7)
            .run()
    };
    let added = |fast: &SimulationReport, slow: &SimulationReport| {
        assert_eq!(fast.model_sha256, slow.model_sha256, "time changes no result");
        slow.simulated_seconds.unwrap() - fast.simulated_seconds.unwrap()
    };
    // The work of one client's rounds at 1,000 examples per second, over the 500 of the slow run.
    let chain = |train: usize, holdout: usize| ROUNDS * (EPOCHS * train as f64 + holdout as f64 / 3.0) / 1000.0;

    let (fast, slow) = (at(1, 1000.0).await.expect("one fast client"), at(1, 500.0).await.expect("one slow"));
    let alone = chain(fast.partitions[0].train.len(), fast.partitions[0].holdout.len());
    assert!((added(&fast, &slow) - alone).abs() < 1e-6, "added {} s, the model says {alone} s", added(&fast, &slow));

    let (fast, slow) = (at(5, 1000.0).await.expect("five fast clients"), at(5, 500.0).await.expect("five slow"));
    let parts = &fast.partitions;
    let slowest = parts.iter().map(|p| chain(p.train.len(), p.holdout.len())).fold(0.0, f64::max);
    let (train, holdout) = (parts.iter().map(|p| p.train.len()).max(), parts.iter().map(|p| p.holdout.len()).max());
    let bound = chain(train.unwrap_or(0), holdout.unwrap_or(0));
    let added = added(&fast, &slow);
    assert!(slowest - 1e-6 <= added && added <= bound + 1e-6, "added {added} s, not in [{slowest}, {bound}] s");
}

/// The nodes' thread count changes nothing: not the model, not the figures, not the simulated time; two runs
/// with one seed agree to the nanosecond although ECDSA signatures differ in length from run to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_simulated_time_do_not_depend_on_the_threads() {
    let base = Simulation::new(breast_cancer())
        .clients(16)
        .rounds(3)
        .clients_per_round(8)
        .partition(Partition::Dirichlet { alpha: 0.5 })
        .secure_aggregation(true)
        .dp_epsilon(8.0)
        .conditions(Conditions { dropout_rate: 0.1, ..Conditions::default() })
        .insecure_seed(8);
    let one = base.clone().threads(1).run().await.expect("one thread");
    let two = base.clone().threads(2).run().await.expect("two threads");
    let four = base.threads(4).run().await.expect("four threads");
    for other in [&two, &four] {
        assert_eq!(one.model_sha256, other.model_sha256);
        assert_eq!(one.rounds, other.rounds);
        assert_eq!(one.client_rounds, other.client_rounds);
        assert_eq!(one.simulated_seconds, other.simulated_seconds);
        assert_eq!(one.failed_attempts, other.failed_attempts);
    }
}
