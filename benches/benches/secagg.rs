//! Secure aggregation (cohort-crypto) throughput, each next to plaintext f32 FedAvg of the same
//! size measured in the same run:
//!
//! - `secagg_encrypt/{P}`: one client encrypting a P-parameter weighted update (one core),
//!   against `secagg_encrypt_baseline/{P}` (the plaintext client's work: weighting P floats).
//! - `secagg_aggregate/10x{P}`: the coordinator summing 10 clients' bodies, against
//!   `plain_fedavg/10x{P}` (f32 weighted FedAvg of the same 10 updates).
//! - `secagg_decrypt/10x{P}`: t = 6 partial decryptions + combine + decode.
//!
//! Bytes per parameter are printed once per size (8 secure vs 4 plaintext). Sizes: 10^5 and 10^6
//! by default; set `COHORT_SECAGG_BENCH_MAX=10000000` to add 10^7.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use cohort_crypto::keyholder::{DecryptionRequest, KeyHolder, combine};
use cohort_crypto::shamir::share_round_key;
use cohort_crypto::{
    Aggregator, MaskSeed, ParticipantId, RoundId, RoundSecretKey, SecAggParams, Weight, allocate_and_encrypt_update,
    encrypt_update,
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

fn secagg(c: &mut Criterion) {
    let ctx = SecAggParams::default().build().unwrap();
    let mut rng = rand::rng();
    let round = RoundId(1);
    let seed = MaskSeed([5; 32]);
    let threshold = CLIENTS / 2 + 1;
    let ids: Vec<ParticipantId> = (1..=CLIENTS as u32).map(|i| ParticipantId::new(i).unwrap()).collect();
    for p in sizes() {
        let updates: Vec<Vec<f32>> = (0..CLIENTS).map(|_| (0..p).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
        let weights: Vec<f32> = (0..CLIENTS).map(|i| 1.0 + i as f32).collect();
        let keys: Vec<RoundSecretKey> = (0..CLIENTS).map(|_| RoundSecretKey::generate_with(&ctx, &mut rng)).collect();
        eprintln!("secagg {p} params: upload {:.4} bytes/param (plaintext f32: 4)", ((p + 1) * 8) as f64 / p as f64);

        let mut g = c.benchmark_group("secagg_encrypt");
        g.sample_size(10).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(p as u64));
        let mut out = vec![0u64; p + 1];
        g.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter(|| {
                encrypt_update(&mut out, &ctx, round, &seed, &keys[0], &updates[0], Weight::one(), &mut rng).unwrap();
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
                allocate_and_encrypt_update(&ctx, round, &seed, &keys[i], &updates[i], w, &mut rng).unwrap()
            })
            .collect();
        let label = format!("{CLIENTS}x{p}");
        let mut g = c.benchmark_group("secagg_aggregate");
        g.sample_size(10).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements((p * CLIENTS) as u64));
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
        g.sample_size(10).measurement_time(Duration::from_secs(2)).throughput(Throughput::Elements((p * CLIENTS) as u64));
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

        // Decryption: fresh holders per iteration (each answers once per round).
        let shares: Vec<_> = keys.iter().map(|k| share_round_key(ctx.modulus(), k, threshold, &ids, &mut rng).unwrap()).collect();
        let mut agg = Aggregator::new(&ctx, p + 1);
        for (i, body) in bodies.iter().enumerate() {
            agg.add_client(ids[i], body).unwrap();
        }
        let aggregate = agg.finish().unwrap();
        let request = DecryptionRequest { round, participants: ids.clone(), responders: ids[..threshold].to_vec(), len: p + 1 };
        let mut g = c.benchmark_group("secagg_decrypt");
        g.sample_size(10).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(p as u64));
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter_batched(
                || {
                    (0..threshold)
                        .map(|k| {
                            let mut h = KeyHolder::new(&ctx, round, seed, ids[k], threshold, 3, p + 1).unwrap();
                            for (i, s) in shares.iter().enumerate() {
                                h.receive_share(ids[i], s[k].1.clone()).unwrap();
                            }
                            h
                        })
                        .collect::<Vec<_>>()
                },
                |mut holders| {
                    let partials: Vec<_> = holders.iter_mut().map(|h| h.partial_decrypt(&request).unwrap()).collect();
                    black_box(combine(&ctx, &request, threshold, &aggregate, &partials).unwrap())
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, secagg);
criterion_main!(benches);
