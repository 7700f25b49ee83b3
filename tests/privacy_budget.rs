//! End-to-end: a hospital whose privacy budget runs out declines the next round itself, the federation goes on
//! with the others, the decline is in the hospital's ledger and in the coordinator's copy, and the budget still
//! holds after the node restarts.

mod support;

use cohort_client::ledger::Ledger;
use cohort_client::node::{LocalWork, Participation, TrainSettings};
use cohort_client::privacy::{DpSchedule, PrivateWork, cumulative_epsilon};
use cohort_core::Round;
use cohort_core::config::PrivacySection;
use cohort_core::ledger::Mechanism;
use cohort_core::secret::NodeSecret;
use cohort_dp::accountant::{PrivacyAccount, SampledGaussian};
use support::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_budget_declines_and_the_round_completes_with_the_others() {
    let names = ["hospital-a", "hospital-b", "hospital-c"];
    let rounds = 4;
    let mut fx = Fixture::new(&names, rounds);
    fx.coordinator.training.min_clients = 2;
    fx.declare_bounds();
    let plan = cohort_coordinator::server::plan_of(&fx.coordinator).unwrap();
    let coordinator = cohort_coordinator::Coordinator::bind(&fx.coordinator).await.unwrap();
    let addr = coordinator.local_addr().unwrap();

    // Every hospital runs DP-SGD with a fixed σ. Hospital C's budget covers its two releases and one round of
    // DP-SGD, but not two: it must train round 1 and decline rounds 2 to 4.
    // Each DP evaluation costs a tiny ε here, so the budget arithmetic below is about the DP-SGD rounds.
    let fixed = PrivacySection {
        noise_multiplier: Some(1.0),
        sample_rate: Some(0.05),
        evaluation_epsilon: Some(1e-4),
        ..PrivacySection::default()
    };
    let mut configs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        configs.push(fx.client(name, &fx.issue(name), i, names.len(), addr));
    }
    let c_rows = cohort_client::data::prepare(
        &configs[2].data.path,
        &plan.schema,
        0.2,
        configs[2].data.split_seed,
        &NodeSecret::load_or_create(&configs[2].data_dir).unwrap(),
    )
    .unwrap()
    .train
    .rows();
    let schedule = DpSchedule::plan(&fixed, &plan, c_rows).unwrap();
    let round =
        SampledGaussian { q: schedule.sample_rate, sigma: schedule.noise_multiplier, steps: schedule.steps_per_round };
    // The composition rule the node enforces: its two join releases and one or two rounds, in one account.
    let spent_after = |rounds: usize| {
        let mut account = PrivacyAccount::new();
        account.add_pure(fixed.release_epsilon).unwrap().add_pure(fixed.release_epsilon).unwrap();
        for _ in 0..rounds {
            account.add_sampled_gaussian(&round).unwrap();
        }
        account.epsilon(fixed.delta).unwrap()
    };
    let (one, two) = (spent_after(1), spent_after(2));
    assert!(one < two);
    let c_budget = (one + two) / 2.0;
    for (i, config) in configs.iter_mut().enumerate() {
        config.privacy = PrivacySection { epsilon_budget: if i == 2 { c_budget } else { 100.0 }, ..fixed.clone() };
    }

    let mut clients = Vec::new();
    for config in configs.clone() {
        clients.push(tokio::spawn(async move {
            let mut work = PrivateWork::new(&config.name, config.data_dir.clone(), config.privacy.clone());
            cohort_client::node::run(&config, &mut work).await
        }));
    }
    let report = coordinator.run(std::future::pending()).await.unwrap();
    let mut nodes = Vec::new();
    for c in clients {
        nodes.push(c.await.unwrap().unwrap());
    }

    // The federation completed every round; from round 2 on without hospital C.
    assert_eq!(report.history.len() as u64, rounds);
    assert_eq!(report.history[0].contributors.len(), 3);
    for summary in &report.history[1..] {
        assert_eq!(summary.contributors.len(), 2, "round {}", summary.round);
        assert!(summary.contributors.iter().all(|n| n.0 != "hospital-c"));
        let (who, why) = summary.declined.first().expect("a recorded decline");
        assert_eq!(who.0, "hospital-c");
        assert!(why.contains("budget"), "{why}");
    }
    assert_eq!(nodes[2].rounds_trained, vec![Round(1)]);
    assert_eq!(nodes[2].rounds_declined.len(), 3);
    assert_eq!(nodes[0].rounds_trained.len() as u64, rounds);

    // Hospital C's own ledger: two releases, one DP-SGD round, three declines; ε within the budget.
    let ledger = Ledger::open(&configs[2].data_dir).unwrap();
    let kinds: Vec<Mechanism> =
        ledger.records().iter().map(|r| r.body.mechanism).filter(|m| *m != Mechanism::OpenDpEvaluation).collect();
    assert_eq!(
        kinds,
        [
            Mechanism::OpenDpCount,
            Mechanism::OpenDpHistogram,
            Mechanism::DpSgd,
            Mechanism::Decline,
            Mechanism::Decline,
            Mechanism::Decline
        ]
    );
    // It evaluated every version once, each a recorded DP release.
    let evaluations = ledger.records().iter().filter(|r| r.body.mechanism == Mechanism::OpenDpEvaluation).count();
    assert_eq!(evaluations as u64, rounds);
    let spent = cumulative_epsilon(ledger.records(), None, fixed.delta).unwrap();
    assert!(spent >= one && spent < two && spent <= c_budget, "spent {spent}, one round {one}, budget {c_budget}");
    assert!(ledger.records().iter().all(|r| r.body.cumulative_epsilon <= c_budget));

    // The coordinator's copy of C's ledger carries the declines too, and verifies.
    let copy_path =
        fx.coordinator.data_dir.join(cohort_coordinator::recorder::LEDGER_COPIES_DIR).join("hospital-c.jsonl");
    let copy =
        cohort_core::ledger::read_jsonl(std::io::BufReader::new(std::fs::File::open(&copy_path).unwrap())).unwrap();
    assert_eq!(copy.iter().filter(|r| r.body.mechanism == Mechanism::Decline).count(), 3);
    assert!(cohort_coordinator::audit::verify_records(&copy).is_ok());

    // The budget survives a restart: a fresh worker on the same data directory declines at once.
    let local = cohort_client::data::prepare(
        &configs[2].data.path,
        &plan.schema,
        0.2,
        configs[2].data.split_seed,
        &NodeSecret::load_or_create(&configs[2].data_dir).unwrap(),
    )
    .unwrap();
    let mut restarted = PrivateWork::new("hospital-c", configs[2].data_dir.clone(), configs[2].privacy.clone());
    restarted.prepare(&plan, &local).unwrap();
    // Rejoining recalls the earlier join releases (nothing is spent again) and plans the schedule from them.
    restarted.join_releases(&local).unwrap();
    let settings =
        TrainSettings { local_epochs: 1, learning_rate: 0.1, batch_size: 16, proximal_mu: None, secure: None };
    assert!(matches!(restarted.participate(Round(5), &settings).unwrap(), Participation::Decline { .. }));
}
