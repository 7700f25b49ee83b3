//! Measures one in-memory secure round with the production parameters and prints JSON figures:
//! upload bytes per parameter, single-thread encryption and aggregation throughput, threshold
//! decryption + decoding time, the largest error against plaintext f64 FedAvg, and the flooding
//! statistical distance.
//!
//! `cargo run --release -p cohort-crypto --example secagg_figures -- [params] [clients] [max_colluders]`
//! (defaults 1000000, 10, 1).

use cohort_crypto::sim::{SimConfig, run_secure_round};
use cohort_crypto::{SecAggParams, collusion_policy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let params = args.first().copied().unwrap_or(1_000_000);
    let clients = args.get(1).copied().unwrap_or(10);
    let c = args.get(2).copied().unwrap_or(1);
    let ctx = SecAggParams::default().build()?;
    let (t, min) = collusion_policy(clients, c)?;
    let mut rng = ChaCha20Rng::from_os_rng();
    let updates: Vec<Vec<f32>> =
        (0..clients).map(|_| (0..params).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let weights: Vec<f64> = (0..clients).map(|i| 1.0 + (i % 16) as f64 * 0.9).collect();
    let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
    let mut cfg = SimConfig::new(clients, c)?;
    cfg.envelopes = true;
    let out = run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng)?;
    let total: f64 = weights.iter().sum();
    let max_abs_error = (0..params)
        .map(|k| {
            let exact = updates.iter().zip(&weights).map(|(u, w)| f64::from(u[k]) * w).sum::<f64>() / total;
            (out.mean[k] - exact).abs()
        })
        .fold(0.0, f64::max);
    let tm = out.timings;
    println!(
        "{{\"params\": {params}, \"clients\": {clients}, \"max_colluders\": {c}, \"threshold\": {t}, \
         \"min_participants\": {min}, \"bytes_per_param\": {:.4}, \"encrypt_params_per_sec\": {:.0}, \
         \"aggregate_params_per_sec\": {:.0}, \"decrypt_seconds\": {:.4}, \"setup_seconds\": {:.4}, \
         \"max_abs_error\": {max_abs_error:.3e}, \"quantization_step\": {:.3e}, \
         \"statistical_distance_log2\": {:.2}}}",
        out.upload_bytes_per_client as f64 / params as f64,
        params as f64 * clients as f64 / tm.encrypt.as_secs_f64(),
        (params * clients) as f64 / tm.aggregate.as_secs_f64(),
        tm.decrypt.as_secs_f64(),
        tm.setup.as_secs_f64(),
        ctx.quantization_step(),
        ctx.statistical_distance_log2(params + 1),
    );
    Ok(())
}
