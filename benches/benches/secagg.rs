//! Secure aggregation (cohort-crypto) throughput, each next to plaintext f32 FedAvg of the same
//! size measured in the same run:
//!
//! - `secagg_encrypt/{P}`: one client encrypting a P-parameter weighted update (one core),
//!   against `secagg_encrypt_baseline/{P}` (the plaintext client's work: weighting P floats).
//! - `secagg_aggregate/10x{P}`: the coordinator summing 10 clients' bodies, against
//!   `plain_fedavg/10x{P}` (f32 weighted FedAvg of the same 10 updates).
//! - `secagg_decrypt/{n}x{P}_t{t}`: t partial decryptions (with flooding) + combine + decode, for
//!   n = 10 clients with max_colluders = 1 (t = 6) and n = 5 with max_colluders = 0 (t = 3).
//!
//! Bytes per parameter (≈ 8: three 62-bit residues per three packed coordinates) and the flooding
//! statistical distance are printed once per size. Sizes: 10^5 and 10^6 by default; set
//! `COHORT_SECAGG_BENCH_MAX=10000000` to add 10^7.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use cohort_crypto::keyholder::{DecryptionRequest, KeyHolder, combine};
use cohort_crypto::shamir::share_round_key;
use cohort_crypto::sim::{SimConfig, announce};
use cohort_crypto::{
    Aggregator, MemoryJournal, NodeIdentity, RoundSecretKey, SecAggContext, SecAggParams, Weight,
    allocate_and_encrypt_update, encrypt_update, sign_consent,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::Rng;
use std::hint::black_box;
use std::time::Duration;

const CLIENTS: usize = 10;

fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("COHORT_SECAGG_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    [100_000, 1_000_000, 10_000_000].into_iter().filter(|&p| p <= max).collect()
}

/// Threshold decryption of the sum of `updates` for `n` clients with `c` colluders.
fn bench_decrypt(c: &mut Criterion, ctx: &SecAggContext, updates: &[Vec<f32>], colluders: usize) {
    let mut rng = rand::rng();
    let n = updates.len();
    let p = updates[0].len();
    let cfg = SimConfig::new(n, colluders).unwrap();
    let identities: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate_with(&mut rng)).collect();
    let a = announce(ctx, &identities, p, &cfg, &mut rng).unwrap();
    let hash = a.hash();
    let ids = a.participant_ids();
    let keys: Vec<RoundSecretKey> = (0..n).map(|_| RoundSecretKey::generate_with(ctx, &mut rng)).collect();
    let shares: Vec<_> = keys.iter().map(|k| share_round_key(ctx, k, cfg.threshold, &ids, &mut rng).unwrap()).collect();
    let mut agg = Aggregator::new(ctx, p + 1);
    for (i, u) in updates.iter().enumerate() {
        let body = allocate_and_encrypt_update(ctx, a.round, &a.seed, &keys[i], u, Weight::one(), &mut rng).unwrap();
        agg.add_client(ids[i], &body).unwrap();
    }
    let aggregate = agg.finish().unwrap();
    let t = cfg.threshold;
    let request = DecryptionRequest {
        round: a.round,
        announcement: hash,
        participants: ids.clone(),
        consents: identities.iter().zip(&ids).map(|(k, &id)| sign_consent(k, id, &hash)).collect(),
        responders: ids[..t].to_vec(),
        len: p + 1,
    };
    let mut g = c.benchmark_group("secagg_decrypt");
    g.sample_size(10).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(p as u64));
    g.bench_function(BenchmarkId::from_parameter(format!("{n}x{p}_t{t}")), |b| {
        b.iter_batched(
            || {
                // Fresh holders and journals per iteration (each answers once per round).
                (0..t)
                    .map(|k| {
                        let mut h = KeyHolder::new(ctx, &a, ids[k]).unwrap();
                        for (i, s) in shares.iter().enumerate() {
                            h.receive_share(ids[i], s[k].1.clone()).unwrap();
                        }
                        (h, MemoryJournal::new())
                    })
                    .collect::<Vec<_>>()
            },
            |mut holders| {
                let partials: Vec<_> =
                    holders.iter_mut().map(|(h, j)| h.partial_decrypt(&request, j).unwrap()).collect();
                black_box(combine(ctx, &request, t, &aggregate, &partials).unwrap())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn secagg(c: &mut Criterion) {
    let ctx = SecAggParams::default().build().unwrap();
    let mut rng = rand::rng();
    let mut a_rng = rand::rng();
    let identities: Vec<NodeIdentity> = (0..CLIENTS).map(|_| NodeIdentity::generate_with(&mut rng)).collect();
    for p in sizes() {
        let updates: Vec<Vec<f32>> =
            (0..CLIENTS).map(|_| (0..p).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
        let weights: Vec<f32> = (0..CLIENTS).map(|i| 1.0 + i as f32).collect();
        let keys: Vec<RoundSecretKey> = (0..CLIENTS).map(|_| RoundSecretKey::generate_with(&ctx, &mut rng)).collect();
        let a = announce(&ctx, &identities, p, &SimConfig::new(CLIENTS, 1).unwrap(), &mut a_rng).unwrap();
        let ids = a.participant_ids();
        eprintln!(
            "secagg {p} params: upload {:.4} bytes/param (plaintext f32: 4); flooding statistical distance 2^{:.2}",
            (ctx.body_len(p) * 8) as f64 / p as f64,
            ctx.statistical_distance_log2(p + 1)
        );

        let mut g = c.benchmark_group("secagg_encrypt");
        g.sample_size(10).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(p as u64));
        let mut out = vec![0u64; ctx.body_len(p)];
        g.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter(|| {
                encrypt_update(&mut out, &ctx, a.round, &a.seed, &keys[0], &updates[0], Weight::one(), &mut rng)
                    .unwrap();
                black_box(&out);
            })
        });
        g.finish();
        let mut g = c.benchmark_group("secagg_encrypt_baseline");
        g.sample_size(10).measurement_time(Duration::from_secs(2)).throughput(Throughput::Elements(p as u64));
        g.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter(|| black_box(updates[0].iter().map(|x| x * weights[0]).collect::<Vec<f32>>()))
        });
        g.finish();

        let bodies: Vec<Vec<u64>> = (0..CLIENTS)
            .map(|i| {
                let w = Weight::new(&ctx, f64::from(weights[i])).unwrap();
                allocate_and_encrypt_update(&ctx, a.round, &a.seed, &keys[i], &updates[i], w, &mut rng).unwrap()
            })
            .collect();
        let label = format!("{CLIENTS}x{p}");
        let mut g = c.benchmark_group("secagg_aggregate");
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements((p * CLIENTS) as u64));
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter(|| {
                let mut agg = Aggregator::new(&ctx, p + 1);
                for (i, body) in bodies.iter().enumerate() {
                    agg.add_client(ids[i], body).unwrap();
                }
                black_box(agg.finish().unwrap())
            })
        });
        g.finish();
        let mut g = c.benchmark_group("plain_fedavg");
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements((p * CLIENTS) as u64));
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter(|| {
                let mut acc = vec![0f32; p];
                let mut total = 0f32;
                for (u, &w) in updates.iter().zip(&weights) {
                    total += w;
                    acc.iter_mut().zip(u).for_each(|(a, &x)| *a += w * x);
                }
                acc.iter_mut().for_each(|a| *a /= total);
                black_box(acc)
            })
        });
        g.finish();

        bench_decrypt(c, &ctx, &updates, 1);
        bench_decrypt(c, &ctx, &updates[..5], 0);
    }
}

criterion_group!(benches, secagg);
criterion_main!(benches);
