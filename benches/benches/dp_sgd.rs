//! DP-SGD step cost against non-private SGD on the same burn MLP, both measured in the same run.
//!
//! - `dp_sgd_step/{shape}`: one DP-SGD step on a batch of B rows: ghost-clipped per-example gradient sum
//!   (one backward pass), Gaussian noise on every coordinate from the ChaCha20 sampler, normalization by the
//!   expected batch size, update.
//! - `sgd_step/{shape}`: one ordinary minibatch SGD step on the same B rows (burn backward pass, mean gradient,
//!   update).
//!
//! Shapes: 30-64-64-2 with B = 64 (the breast-cancer MLP) and 784-256-10 with B = 256 (MNIST-sized). After
//! criterion's runs, a paired measurement prints `DP-SGD / SGD` per shape: the target is at most 1.5×.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use cohort_dp::clip::ClipNorm;
use cohort_dp::dense::{Batch, Loss, random_parameters};
use cohort_dp::noise::{GaussianNoise, NoiseMultiplier};
use cohort_dp::sampling::SampleRate;
use cohort_dp::sgd::{DpSgdConfig, Network, TrainingLength, dp_step, sgd_step};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// (label, layer sizes, batch size).
const SHAPES: [(&str, &[usize], usize); 2] = [("30-64-64-2_b64", &[30, 64, 64, 2], 64), ("784-256-10_b256", &[784, 256, 10], 256)];

struct Setup {
    sizes: &'static [usize],
    params: Vec<f32>,
    features: Vec<f32>,
    targets: Vec<f32>,
    config: DpSgdConfig,
    records: usize,
}

impl Setup {
    fn new(sizes: &'static [usize], batch: usize) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (inputs, classes) = (sizes[0], sizes[sizes.len() - 1]);
        let params = random_parameters(sizes, &mut rng).expect("valid sizes");
        let features = (0..batch * inputs).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let targets = (0..batch).map(|i| (i % classes) as f32).collect();
        // q·n = B: the realized batch has exactly the expected size.
        let records = batch * 100;
        let config = DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).expect("valid"),
            noise_multiplier: NoiseMultiplier::new(1.0).expect("valid"),
            sample_rate: SampleRate::new(0.01).expect("valid"),
            learning_rate: 0.05,
            length: TrainingLength::Steps(1),
        };
        Self { sizes, params, features, targets, config, records }
    }

    fn net(&self) -> Network<'static> {
        Network::new(self.sizes, Loss::CrossEntropy { classes: self.sizes[self.sizes.len() - 1] }).expect("valid network")
    }

    fn dp(&self, params: &mut [f32], noise: &mut GaussianNoise) {
        let batch = Batch::new(&self.features, &self.targets);
        black_box(dp_step(self.net(), params, batch, &self.config, self.records, None, noise).expect("dp step"));
    }

    fn sgd(&self, params: &mut [f32]) {
        let batch = Batch::new(&self.features, &self.targets);
        black_box(sgd_step(self.net(), params, batch, self.config.learning_rate, None).expect("sgd step"));
    }
}

fn steps(c: &mut Criterion) {
    for (label, sizes, batch) in SHAPES {
        let setup = Setup::new(sizes, batch);
        let mut noise = GaussianNoise::from_os();
        let mut g = c.benchmark_group("dp_sgd_step");
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        let mut params = setup.params.clone();
        g.bench_function(BenchmarkId::from_parameter(label), |b| b.iter(|| setup.dp(&mut params, &mut noise)));
        g.finish();
        let mut g = c.benchmark_group("sgd_step");
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        let mut params = setup.params.clone();
        g.bench_function(BenchmarkId::from_parameter(label), |b| b.iter(|| setup.sgd(&mut params)));
        g.finish();
    }
}

/// Interleaved timing of both steps (so drift affects them alike) and the ratio, printed per shape.
fn ratio(_: &mut Criterion) {
    for (label, sizes, batch) in SHAPES {
        let setup = Setup::new(sizes, batch);
        let mut noise = GaussianNoise::from_os();
        let (mut dp_params, mut sgd_params) = (setup.params.clone(), setup.params.clone());
        let (mut dp_time, mut sgd_time) = (Duration::ZERO, Duration::ZERO);
        let rounds = if batch > 100 { 30 } else { 200 };
        for _ in 0..rounds {
            let t = Instant::now();
            setup.dp(&mut dp_params, &mut noise);
            dp_time += t.elapsed();
            let t = Instant::now();
            setup.sgd(&mut sgd_params);
            sgd_time += t.elapsed();
        }
        let per = |d: Duration| d.as_secs_f64() / f64::from(rounds);
        eprintln!(
            "{label}: DP-SGD {:.3} ms/step, SGD {:.3} ms/step, DP-SGD / SGD = {:.2}x ({rounds} interleaved steps each)",
            per(dp_time) * 1e3,
            per(sgd_time) * 1e3,
            dp_time.as_secs_f64() / sgd_time.as_secs_f64()
        );
    }
}

criterion_group!(benches, steps, ratio);
criterion_main!(benches);
