//! Fuzzing in CI: the kept corpus (`fuzz/corpus/`) and the seed scripts replay through the same harnesses the
//! cargo-fuzz targets use (`cohort_sim::fuzzing`), and a bounded number of structured mutations of the seeds
//! runs on every test run. None may panic, break the core's invariants, or change the model.
//!
//! Longer runs: `COHORT_FUZZ_SECS=300 cargo test --release --test fuzz_regression -- --ignored --nocapture`, or
//! `cargo +nightly fuzz run core` in `fuzz/` (see `fuzz/README.md`).

use cohort_sim::fuzzing::{CoreHarness, Op, decode_messages, push_op, seed_scripts};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

fn harness() -> &'static CoreHarness {
    static HARNESS: OnceLock<(tempfile::TempDir, CoreHarness)> = OnceLock::new();
    &HARNESS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let harness = CoreHarness::new(dir.path()).expect("the harness CA");
            (dir, harness)
        })
        .1
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the corpus directory")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a corpus file");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_kept_corpus_replays_without_a_panic() {
    let core = files(&corpus("core"));
    let decode = files(&corpus("decode"));
    assert!(core.len() >= seed_scripts().len(), "the core corpus holds at least the seeds");
    assert!(!decode.is_empty(), "the decode corpus is not empty");
    for (_, script) in &core {
        harness().run(script);
    }
    for (_, bytes) in &decode {
        decode_messages(bytes);
    }
    // Every seed is kept on disk, so cargo-fuzz starts from them.
    for (name, script) in seed_scripts() {
        let kept = std::fs::read(corpus("core").join(name)).unwrap_or_default();
        assert_eq!(kept, script, "fuzz/corpus/core/{name} differs from the seed: run `write_the_seed_corpus`");
    }
}

/// The seeds reach every phase: three honest rounds produce three versions; each attack is refused and leaves
/// the model at version 0.
#[test]
fn the_seeds_reach_training_and_every_attack_is_refused() {
    for (name, script) in seed_scripts() {
        let trace = harness().run(&script);
        match name {
            "honest-three-rounds" => assert_eq!((trace.version, trace.refused), (3, 0), "{name}: {trace:?}"),
            // A decline is the node's right; a deadline passing is not an attack. Neither changes the model.
            "ticks" | "forged-decline" => assert_eq!(trace.version, 0, "{name}: {trace:?}"),
            "fake-report" => assert!(trace.refused >= 1 && trace.version == 1, "{name}: {trace:?}"),
            _ => assert!(trace.refused >= 1 && trace.version == 0, "{name}: {trace:?}"),
        }
    }
}

/// Rewrites the on-disk seed corpus from [`seed_scripts`] and a few messages for the decode target.
#[test]
#[ignore = "writes fuzz/corpus; run by hand after changing the seeds"]
fn write_the_seed_corpus() {
    for (name, script) in seed_scripts() {
        std::fs::write(corpus("core").join(name), &script).expect("written");
        // Each op's payload is also a message for the decode target.
        let mut rest = script.as_slice();
        let mut i = 0;
        while rest.len() >= 4 {
            let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
            let end = (4 + len).min(rest.len());
            if end > 4 {
                std::fs::write(corpus("decode").join(format!("{name}-{i}")), &rest[4..end]).expect("written");
            }
            rest = &rest[end..];
            i += 1;
        }
    }
}

/// A structured mutation of a seed: flip bytes, cut, splice random ops in.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seed_scripts().into_iter().map(|(_, s)| s).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        proptest::option::of(any::<prop::sample::Index>()),
        proptest::collection::vec((0u8..10, 0usize..4, proptest::collection::vec(any::<u8>(), 0..64)), 0..4),
    )
        .prop_map(|(mut script, flips, cut, extra)| {
            for (at, byte) in flips {
                if !script.is_empty() {
                    let i = at.index(script.len());
                    script[i] ^= byte;
                }
            }
            if let Some(at) = cut {
                let len = at.index(script.len() + 1);
                script.truncate(len);
            }
            for (kind, peer, payload) in extra {
                push_op(&mut script, op_of(kind), peer, &payload);
            }
            script
        })
}

fn op_of(kind: u8) -> Op {
    [
        Op::Join,
        Op::Task,
        Op::Upload,
        Op::Decline,
        Op::Report,
        Op::Shares,
        Op::FetchShares,
        Op::Partial,
        Op::Tick,
        Op::Honest,
    ][usize::from(kind) % 10]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_scripts_never_panic_or_break_the_core(script in mutated()) {
        harness().run(&script);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_messages(&bytes);
    }
}

/// The long run: mutations for `COHORT_FUZZ_SECS` seconds (default 60), reporting the executions.
#[test]
#[ignore = "minutes long: COHORT_FUZZ_SECS=300 cargo test --release --test fuzz_regression -- --ignored --nocapture"]
fn fuzz_for_minutes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let secs = std::env::var("COHORT_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut runner = TestRunner::default();
    let strategy = mutated();
    let (mut executions, mut accepted, mut refused) = (0u64, 0usize, 0usize);
    while Instant::now() < until {
        let script = strategy.new_tree(&mut runner).expect("a script").current();
        let trace = harness().run(&script);
        decode_messages(&script);
        executions += 1;
        accepted += trace.accepted;
        refused += trace.refused;
    }
    eprintln!("fuzzed {executions} scripts in {secs} s: {accepted} ops accepted, {refused} refused, no panic");
}
