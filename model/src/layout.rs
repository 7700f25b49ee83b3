//! The flat parameter layout, a contract with the rest of Cohort, and the one initialization.
//!
//! A model is a stack of dense layers `[input, hidden..., output]`. Its parameters travel, are aggregated,
//! stored and served as one flat `f32` vector: for each layer `l` in order, with `in = sizes[l]` and
//! `out = sizes[l + 1]`,
//! 1. the weight matrix, row-major as `[in][out]`: element `i*out + j` maps input `i` to output `j`;
//! 2. then the bias, `[out]`.
//!
//! The total length is [`parameter_count`]. This is also the order in which burn visits a
//! [`DenseStack`](crate::DenseStack)'s parameters (`Vec<Linear>`, each `weight: [in, out]` then `bias: [out]`),
//! so a gradient flattened generically from the module lands in the same layout.
//!
//! # Example
//! ```
//! use cohort_model::layout::{check_parameters, initial_parameters, parameter_count};
//! use rand::SeedableRng;
//! let sizes = [30, 2];
//! assert_eq!(parameter_count(&sizes), 30 * 2 + 2);
//! let params = initial_parameters(&sizes, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1))?;
//! check_parameters(&sizes, &params)?;
//! assert!(params[60..].iter().all(|b| *b == 0.0)); // biases start at zero
//! # Ok::<(), cohort_model::ModelError>(())
//! ```

use crate::ModelError;
use rand::Rng;

/// Number of parameters of a stack with these layer sizes: `Σ_l (in_l·out_l + out_l)`. Zero for fewer than
/// two sizes; saturates at `usize::MAX` instead of overflowing.
pub fn parameter_count(sizes: &[usize]) -> usize {
    sizes.windows(2).fold(0usize, |acc, w| acc.saturating_add(w[0].saturating_mul(w[1]).saturating_add(w[1])))
}

/// Checks layer sizes: at least two, all non-zero, parameter count representable.
///
/// # Errors
/// [`ModelError::Sizes`] when they are not valid.
pub fn validate_sizes(sizes: &[usize]) -> Result<(), ModelError> {
    let overflow = sizes
        .windows(2)
        .try_fold(0usize, |acc, w| w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc))
        .is_none();
    if sizes.len() < 2 || sizes.contains(&0) || overflow {
        return Err(ModelError::Sizes(sizes.to_vec()));
    }
    Ok(())
}

/// Checks `params` against `sizes`: valid sizes, right length, finite values.
///
/// # Errors
/// [`ModelError::Sizes`], [`ModelError::ParameterCount`] or [`ModelError::NonFiniteParameter`].
pub fn check_parameters(sizes: &[usize], params: &[f32]) -> Result<(), ModelError> {
    validate_sizes(sizes)?;
    let expected = parameter_count(sizes);
    if params.len() != expected {
        return Err(ModelError::ParameterCount { expected, actual: params.len() });
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFiniteParameter(i));
    }
    Ok(())
}

/// Checks that every value is finite.
///
/// # Errors
/// [`ModelError::NonFiniteParameter`] naming the first bad index.
pub fn check_finite(params: &[f32]) -> Result<(), ModelError> {
    match params.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(ModelError::NonFiniteParameter(i)),
        None => Ok(()),
    }
}

/// The L2 norm of `values`, accumulated in f64 (infinite or NaN when a value is).
pub fn l2_norm(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

/// Scales `values` down so that its L2 norm is at most `bound` (a no-op within it); returns the norm before.
/// For a non-finite vector nothing is scaled and the non-finite norm is returned, for the caller to refuse.
pub fn clip_to_norm(values: &mut [f32], bound: f64) -> f64 {
    let norm = l2_norm(values);
    if norm.is_finite() && norm > bound {
        // A hair under the bound, so rounding each product to f32 cannot carry the norm over it.
        let scale = bound / norm * (1.0 - 1e-7);
        for v in values.iter_mut() {
            *v = (f64::from(*v) * scale) as f32;
        }
    }
    norm
}

/// Initial parameters for `sizes`, the one initialization of Cohort's models: Glorot-uniform weights, each
/// uniform in `±√(6 / (in + out))` (Glorot and Bengio 2010, "Understanding the difficulty of training deep
/// feedforward neural networks", eq. 16), and zero biases. The same `rng` state gives the same vector.
///
/// # Errors
/// [`ModelError::Sizes`] for invalid sizes.
pub fn initial_parameters<R: Rng + ?Sized>(sizes: &[usize], rng: &mut R) -> Result<Vec<f32>, ModelError> {
    validate_sizes(sizes)?;
    let mut params = Vec::with_capacity(parameter_count(sizes));
    for w in sizes.windows(2) {
        let (fan_in, fan_out) = (w[0], w[1]);
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        params.extend((0..fan_in * fan_out).map(|_| rng.random_range(-limit..=limit)));
        params.extend(std::iter::repeat_n(0.0f32, fan_out));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clipping_bounds_the_norm_and_keeps_the_direction() {
        let mut v = vec![3.0f32, 4.0];
        assert_eq!(clip_to_norm(&mut v, 10.0), 5.0);
        assert_eq!(v, [3.0, 4.0], "within the bound nothing changes");
        assert_eq!(clip_to_norm(&mut v, 1.0), 5.0);
        assert!(l2_norm(&v) <= 1.0);
        assert!((v[0] / v[1] - 0.75).abs() < 1e-6);
        let mut bad = vec![f32::NAN, 1.0];
        assert!(clip_to_norm(&mut bad, 1.0).is_nan());
    }

    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parameter_count_counts_weights_and_biases() {
        assert_eq!(parameter_count(&[30, 64, 64, 2]), 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2);
        assert_eq!(parameter_count(&[5]), 0);
        assert_eq!(parameter_count(&[usize::MAX, 3]), usize::MAX);
    }

    #[test]
    fn sizes_and_parameters_that_do_not_fit_are_refused() {
        assert!(matches!(validate_sizes(&[3]), Err(ModelError::Sizes(_))));
        assert!(matches!(validate_sizes(&[3, 0, 2]), Err(ModelError::Sizes(_))));
        assert!(matches!(validate_sizes(&[usize::MAX, 3]), Err(ModelError::Sizes(_))));
        assert!(matches!(
            check_parameters(&[2, 2], &[0.0; 5]),
            Err(ModelError::ParameterCount { expected: 6, actual: 5 })
        ));
        let mut p = vec![0.0; 6];
        p[4] = f32::NAN;
        assert!(matches!(check_parameters(&[2, 2], &p), Err(ModelError::NonFiniteParameter(4))));
        assert!(matches!(check_finite(&[0.0, f32::INFINITY]), Err(ModelError::NonFiniteParameter(1))));
    }

    #[test]
    fn the_initialization_is_seeded_glorot_uniform_with_zero_biases() {
        let sizes = [16, 8, 2];
        let draw = |seed| initial_parameters(&sizes, &mut rand_chacha::ChaCha20Rng::seed_from_u64(seed)).unwrap();
        let (a, b) = (draw(1), draw(1));
        assert_eq!(a, b);
        assert_ne!(a, draw(2));
        let limit = (6.0f32 / 24.0).sqrt();
        let first = &a[..16 * 8];
        assert!(first.iter().all(|w| w.abs() <= limit) && first.iter().any(|w| w.abs() > 0.8 * limit));
        assert!(a[16 * 8..16 * 8 + 8].iter().all(|b| *b == 0.0));
        assert!(a[a.len() - 2..].iter().all(|b| *b == 0.0));
    }
}
