//! DP-SGD training steps per second against non-private SGD on the same network, both measured in the same
//! run, through the training loops a client runs.
//!
//! - `dp_sgd/{shape}`: `train_dp` for 100 steps: Poisson sampling at q = 0.01 of n = 100·B records (expected
//!   batch B), clipped per-example gradient sum (closed form for the one-layer 30-2 model, ghost clipping with
//!   one backward pass otherwise), Gaussian noise from the secure sampler, normalization by the expected batch
//!   size, update.
//! - `sgd/{shape}`: `train_sgd` for one epoch over the same n records in shuffled batches of B: 100 steps of
//!   the mean gradient (the same closed form for 30-2, burn's backward pass otherwise).
//! - `noise/fill`: the secure sampler alone ([`GaussianNoise::fill`], one thread, the block ziggurat), in noise
//!   values per second, for the 784-256-10 parameter count; `noise/standard` draws the same count one value at a
//!   time ([`GaussianNoise::standard`], four `rand_distr` ziggurat draws per value, the bulk path before the
//!   block ziggurat).
//!
//! Shapes: 30-2 with B = 32 (the demo's logistic regression), 30-64-64-2 with B = 64 (the breast-cancer MLP)
//! and 784-256-10 with B = 256 (MNIST-sized). After criterion's runs the bench prints, per shape, `DP-SGD / SGD`
//! twice (issue 15's target: at most 1.2× in both): from criterion's mean times (read back from its
//! `estimates.json`), and from interleaved runs of both loops, so that drift on a loaded machine affects both
//! alike. Both loops are measured in the same run, so the ratios are meaningful on a shared machine; the
//! absolute steps/s are not. `benches/peers/opacus_dp_sgd.py` runs Opacus on the same shapes.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use cohort_dp::clip::ClipNorm;
use cohort_dp::noise::{GaussianNoise, NoiseMultiplier};
use cohort_dp::sampling::SampleRate;
use cohort_dp::sgd::{DpRandomness, DpSgdConfig, TrainingLength, train_dp};
use cohort_model::layout::initial_parameters;
use cohort_model::train::{Network, SgdConfig, train_sgd};
use cohort_model::{Batch, Loss, parameter_count};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// (label, layer sizes, batch size).
const SHAPES: [(&str, &[usize], usize); 3] =
    [("30-2_b32", &[30, 2], 32), ("30-64-64-2_b64", &[30, 64, 64, 2], 64), ("784-256-10_b256", &[784, 256, 10], 256)];
/// Steps per measured training run.
const STEPS: u64 = 100;

struct Setup {
    sizes: &'static [usize],
    params: Vec<f32>,
    features: Vec<f32>,
    targets: Vec<f32>,
    dp: DpSgdConfig,
    sgd: SgdConfig,
}

impl Setup {
    fn new(sizes: &'static [usize], batch: usize) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (inputs, classes) = (sizes[0], sizes[sizes.len() - 1]);
        let records = batch * STEPS as usize;
        let params = initial_parameters(sizes, &mut rng).expect("valid sizes");
        let features = (0..records * inputs).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let targets = (0..records).map(|i| (i % classes) as f32).collect();
        let dp = DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).expect("valid"),
            noise_multiplier: NoiseMultiplier::new(1.0).expect("valid"),
            // q·n = B: the expected batch is the SGD batch.
            sample_rate: SampleRate::new(1.0 / STEPS as f64).expect("valid"),
            learning_rate: 0.01,
            length: TrainingLength::Steps(STEPS),
        };
        let sgd = SgdConfig { epochs: 1, batch_size: batch, learning_rate: 0.01 };
        Self { sizes, params, features, targets, dp, sgd }
    }

    fn net(&self) -> Network<'static> {
        Network::new(self.sizes, Loss::CrossEntropy { classes: self.sizes[self.sizes.len() - 1] })
            .expect("valid network")
    }

    fn data(&self) -> Batch<'_> {
        Batch::new(&self.features, &self.targets)
    }

    fn run_dp(&self, rng: &mut DpRandomness) {
        black_box(train_dp(self.net(), &self.params, self.data(), &self.dp, None, rng).expect("dp training"));
    }

    fn run_sgd(&self, rng: &mut rand_chacha::ChaCha8Rng) {
        let out = train_sgd(self.net(), &self.params, self.data(), &self.sgd, None, rng).expect("sgd training");
        assert_eq!(out.summary.steps, STEPS);
        black_box(out);
    }
}

fn loops(c: &mut Criterion) {
    for (label, sizes, batch) in SHAPES {
        let setup = Setup::new(sizes, batch);
        let mut g = c.benchmark_group("dp_sgd");
        g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(STEPS));
        let mut rng = DpRandomness::from_os();
        g.bench_function(BenchmarkId::from_parameter(label), |b| b.iter(|| setup.run_dp(&mut rng)));
        g.finish();
        let mut g = c.benchmark_group("sgd");
        g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(STEPS));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        g.bench_function(BenchmarkId::from_parameter(label), |b| b.iter(|| setup.run_sgd(&mut rng)));
        g.finish();
    }
}

/// The secure sampler alone, one thread, in noise values per second: in bulk, and one value at a time.
fn sampler(c: &mut Criterion) {
    let len = parameter_count(&[784, 256, 10]);
    let mut values = vec![0.0f32; len];
    let mut noise = GaussianNoise::from_os();
    let mut g = c.benchmark_group("noise");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(len as u64));
    g.bench_function("fill", |b| b.iter(|| noise.fill(black_box(&mut values), 1.0)));
    g.bench_function("standard", |b| {
        b.iter(|| {
            for v in values.iter_mut() {
                *v = noise.standard() as f32;
            }
            black_box(&mut values);
        })
    });
    g.finish();
}

/// Where criterion writes its results: as criterion itself decides (`CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`), else the workspace's `target/criterion`; set explicitly so that
/// [`criterion_mean`] reads the same place.
fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
            .join("criterion")
    })
}

/// Criterion's mean time per iteration (ns) of `group/id` in this run, from its `new/estimates.json`.
fn criterion_mean(group: &str, id: &str) -> Option<f64> {
    let path = criterion_dir().join(group).join(id).join("new").join("estimates.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Per shape: the ratio of criterion's means, then interleaved runs of both loops and their ratio.
fn ratio(_: &mut Criterion) {
    for (label, sizes, batch) in SHAPES {
        match (criterion_mean("dp_sgd", label), criterion_mean("sgd", label)) {
            (Some(dp), Some(sgd)) => eprintln!(
                "{label}: criterion DP-SGD {:.2} ms, SGD {:.2} ms per {STEPS} steps, DP-SGD / SGD = {:.2}x",
                dp / 1e6,
                sgd / 1e6,
                dp / sgd
            ),
            _ => eprintln!("{label}: no criterion estimates under {} (filtered out?)", criterion_dir().display()),
        }
        let setup = Setup::new(sizes, batch);
        let (mut dp_rng, mut sgd_rng) = (DpRandomness::from_os(), rand_chacha::ChaCha8Rng::seed_from_u64(5));
        let (mut dp_time, mut sgd_time) = (Duration::ZERO, Duration::ZERO);
        let runs = match batch {
            0..=32 => 400,
            33..=100 => 40,
            _ => 6,
        };
        for _ in 0..runs {
            let t = Instant::now();
            setup.run_dp(&mut dp_rng);
            dp_time += t.elapsed();
            let t = Instant::now();
            setup.run_sgd(&mut sgd_rng);
            sgd_time += t.elapsed();
        }
        let steps_per_sec = |d: Duration| (runs * STEPS as u32) as f64 / d.as_secs_f64();
        eprintln!(
            "{label}: interleaved DP-SGD {:.0} steps/s, SGD {:.0} steps/s, DP-SGD / SGD = {:.2}x ({runs} interleaved runs of {STEPS} steps each)",
            steps_per_sec(dp_time),
            steps_per_sec(sgd_time),
            dp_time.as_secs_f64() / sgd_time.as_secs_f64()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().output_directory(&criterion_dir());
    targets = sampler, loops, ratio
}
criterion_main!(benches);
