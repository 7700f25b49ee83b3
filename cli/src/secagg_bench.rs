//! `cohort secagg-bench`: measures one in-memory secure-aggregation round (cohort-crypto) against
//! plaintext f32 FedAvg of the same size, in the same process, and reports JSON-ready figures.

use cohort_crypto::params::ParamsError;
use cohort_crypto::sim::{SimConfig, SimError, run_secure_round};
use cohort_crypto::{AnnouncementError, ParamsSummary, SecAggParams, collusion_policy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::hint::black_box;
use std::time::Instant;
use thiserror::Error;

/// Modelled per-client link speed for the upload-inclusive ratio, in bits per second.
pub(crate) const LINK_BITS_PER_SEC: f64 = 100e6;

/// Errors of the benchmark.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum SecAggBenchError {
    /// Invalid size or client count.
    #[error("invalid benchmark configuration: {0}")]
    Config(&'static str),
    /// The parameter set was rejected.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The secure round failed.
    #[error(transparent)]
    Round(#[from] SimError),
    /// No secure threshold exists for these clients and colluders.
    #[error(transparent)]
    Policy(#[from] AnnouncementError),
}

/// Figures of one secure round versus plaintext FedAvg, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SecAggBenchReport {
    /// Model parameters per client.
    pub(crate) params: usize,
    /// Clients (all of them are also key holders).
    pub(crate) clients: usize,
    /// Assumed colluders with the coordinator (c).
    pub(crate) max_colluders: usize,
    /// Decryption threshold t = ⌊(n + c)/2⌋ + 1 (`collusion_policy`).
    pub(crate) threshold: usize,
    /// Smallest decryptable participant set, c + 2 (`collusion_policy`).
    pub(crate) min_participants: usize,
    /// Secure upload bytes per model parameter (three 62-bit residues per three packed
    /// coordinates, + the weight coordinate).
    pub(crate) bytes_per_param: f64,
    /// log2 of the statistical distance between the round's partial decryptions and their
    /// simulation from the sum alone (noise flooding), for this model size.
    pub(crate) statistical_distance_log2: f64,
    /// Plaintext f32 upload bytes per parameter (4).
    pub(crate) plaintext_bytes_per_param: f64,
    /// Encryption throughput of one client on one core.
    pub(crate) encrypt_params_per_sec: f64,
    /// Aggregation throughput (clients × params summed per second).
    pub(crate) aggregate_params_per_sec: f64,
    /// Threshold decryption (t partial decryptions, sequential) + combine + decode, seconds.
    pub(crate) decrypt_seconds: f64,
    /// Key generation, Shamir sharing and signed envelopes for all clients, seconds.
    pub(crate) setup_seconds: f64,
    /// Plaintext f32 weighted FedAvg over the same updates, seconds.
    pub(crate) plaintext_fedavg_seconds: f64,
    /// Largest |decoded weighted mean − plaintext f32 weighted mean| over coordinates.
    pub(crate) max_abs_error: f64,
    /// Quantization step 2^-f of the encoding.
    pub(crate) quantization_step: f64,
    /// (one client's encryption + aggregation + decryption) / plaintext FedAvg. Clients encrypt
    /// in parallel on their own machines, so one client's time is counted.
    pub(crate) secure_to_plaintext_round_ratio: f64,
    /// The same with uploads modelled at 100 Mbit/s per client (parallel links): secure =
    /// encrypt + body upload + aggregate + decrypt + one partial upload (≈ 8 B/param);
    /// plaintext = f32 upload (4 B/param) + FedAvg.
    pub(crate) secure_to_plaintext_round_ratio_with_upload: f64,
    /// The parameter set used, for the record.
    pub(crate) parameters: ParamsSummary,
}

/// Runs one secure round of `clients` random updates of `params` coordinates (default
/// production parameters; t and min_participants from `collusion_policy(clients,
/// max_colluders)`) and a plaintext f32 FedAvg of the same updates.
///
/// # Errors
/// [`SecAggBenchError::Config`] for `params == 0` or `clients == 0`;
/// [`SecAggBenchError::Policy`] if no secure threshold exists for `clients` and `max_colluders`;
/// parameter or round errors (e.g. more clients than the parameters' headroom allows).
pub(crate) fn run_with_colluders(
    params: usize,
    clients: usize,
    max_colluders: usize,
) -> Result<SecAggBenchReport, SecAggBenchError> {
    if params == 0 || clients == 0 {
        return Err(SecAggBenchError::Config("params and clients must be positive"));
    }
    let ctx = SecAggParams::default().build()?;
    if clients > ctx.params().max_clients as usize {
        return Err(SecAggBenchError::Config("more clients than the parameters' max_clients"));
    }
    let mut rng = ChaCha20Rng::from_os_rng();
    let updates: Vec<Vec<f32>> =
        (0..clients).map(|_| (0..params).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let weights: Vec<f64> = (0..clients).map(|i| 1.0 + (i % 16) as f64 * 0.9).collect();

    // Plaintext f32 weighted FedAvg.
    let t0 = Instant::now();
    let mut acc = vec![0f32; params];
    let mut total = 0f32;
    for (u, &w) in updates.iter().zip(&weights) {
        let w = w as f32;
        total += w;
        for (a, &x) in acc.iter_mut().zip(u) {
            *a += w * x;
        }
    }
    let inv = 1.0 / total;
    acc.iter_mut().for_each(|a| *a *= inv);
    let plain = black_box(acc);
    let plaintext_fedavg_seconds = t0.elapsed().as_secs_f64();

    let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
    let (threshold, min_participants) = collusion_policy(clients, max_colluders)?;
    let config = SimConfig::new(clients, max_colluders)?;
    let out = run_secure_round(&ctx, &refs, &weights, &config, &mut rng)?;
    let t = out.timings;

    let max_abs_error = out.mean.iter().zip(&plain).map(|(m, &p)| (m - f64::from(p)).abs()).fold(0.0, f64::max);
    let encrypt_one = t.encrypt.as_secs_f64() / clients as f64;
    let secure = encrypt_one + t.aggregate.as_secs_f64() + t.decrypt.as_secs_f64();
    let bytes_per_param = out.upload_bytes_per_client as f64 / params as f64;
    let link = |bytes: f64| bytes * 8.0 / LINK_BITS_PER_SEC;
    let secure_bytes = out.upload_bytes_per_client as f64;
    let secure_upload = secure + link(secure_bytes) + link(secure_bytes);
    let plain_upload = plaintext_fedavg_seconds + link(4.0 * params as f64);
    Ok(SecAggBenchReport {
        params,
        clients,
        max_colluders,
        threshold,
        min_participants,
        bytes_per_param,
        statistical_distance_log2: ctx.statistical_distance_log2(params + 1),
        plaintext_bytes_per_param: 4.0,
        encrypt_params_per_sec: params as f64 / encrypt_one,
        aggregate_params_per_sec: (params * clients) as f64 / t.aggregate.as_secs_f64(),
        decrypt_seconds: t.decrypt.as_secs_f64(),
        setup_seconds: t.setup.as_secs_f64(),
        plaintext_fedavg_seconds,
        max_abs_error,
        quantization_step: ctx.quantization_step(),
        secure_to_plaintext_round_ratio: secure / plaintext_fedavg_seconds,
        secure_to_plaintext_round_ratio_with_upload: secure_upload / plain_upload,
        parameters: ctx.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_is_exact_to_the_quantization_step() {
        let r = run_with_colluders(10_000, 4, 1).unwrap();
        assert_eq!((r.max_colluders, r.threshold, r.min_participants), (1, 3, 3));
        assert!(r.max_abs_error <= r.quantization_step, "{} > {}", r.max_abs_error, r.quantization_step);
        // 10 001 coordinates in 3 334 coefficients of three 8-byte residues.
        assert!((r.bytes_per_param - 3334.0 * 24.0 / 10_000.0).abs() < 1e-9);
        assert!(r.statistical_distance_log2 <= -40.0);
        assert!(run_with_colluders(0, 3, 1).is_err());
        assert!(run_with_colluders(10, 1000, 1).is_err());
        assert!(matches!(run_with_colluders(10, 3, 2), Err(SecAggBenchError::Policy(_))));
    }
}
