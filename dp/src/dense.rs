//! A stack of dense (linear) layers as a burn [`Module`], addressed through one flat parameter vector.
//!
//! # Architecture
//! Layer sizes are `[input, h1, ..., output]`. Every layer computes `z = a·W + b`; hidden layers apply ReLU,
//! the last layer applies nothing (its outputs are logits for [`Loss::CrossEntropy`] or the value for
//! [`Loss::SquaredError`]). Logistic (softmax) regression is the stack with no hidden layer, e.g. `[d, 2]`.
//!
//! # Flat parameter layout (a contract with the rest of Cohort)
//! For each layer `l` in order, with `in = sizes[l]` and `out = sizes[l + 1]`:
//! 1. the weight matrix, row-major as `[in][out]`: element `i*out + j` maps input `i` to output `j`;
//! 2. then the bias, `[out]`.
//!
//! The total length is [`parameter_count`]. This is also the order and layout in which burn visits the
//! module's parameters (`Vec<Linear>`, each `weight: [in, out]` then `bias: [out]`), so a gradient flattened
//! generically from the module ([`crate::clip::flatten_gradients`]) lands in the same layout.
//!
//! # Training forward with probes
//! [`DenseStack::forward_probed`] adds to every layer's pre-activation a zero "probe" tensor that requires grad
//! and records every layer's input activation `A_l` (`B×in`). One backward pass of the summed per-example loss
//! then gives every layer's per-example output gradient `G_l` (`B×out`) as the probe's gradient, which is what
//! ghost clipping needs (Li et al. 2022; Bu et al. 2023; see [`crate::clip`]). The model's own parameters need
//! not require grad for this, so the backward pass computes only input gradients.
//!
//! # Example
//! ```
//! use cohort_dp::dense::{inference_device, parameter_count, DenseStack};
//! let sizes = [3, 4, 2];
//! let params: Vec<f32> = (0..parameter_count(&sizes)).map(|i| i as f32 * 0.01).collect();
//! let model = DenseStack::from_flat(&sizes, &params, &inference_device()).unwrap();
//! assert_eq!(model.to_flat().unwrap(), params);
//! ```

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData, activation};
use rand::Rng;

/// A model, data or loss shape that does not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DenseError {
    /// Fewer than two layer sizes, or a zero size, or a parameter count that overflows.
    #[error("invalid layer sizes {0:?}: need at least [input, output], all non-zero")]
    Sizes(Vec<usize>),
    /// A flat parameter (or global-model) vector of the wrong length.
    #[error("the network has {expected} parameters but {actual} were given")]
    ParameterCount {
        /// Length the layer sizes imply.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A parameter that is NaN or infinite.
    #[error("parameter {0} is not finite")]
    NonFiniteParameter(usize),
    /// The loss does not fit the output layer (cross-entropy needs `classes` ≥ 2 outputs, squared error 1).
    #[error("loss {loss:?} does not fit an output layer of width {outputs}")]
    LossShape {
        /// The loss.
        loss: Loss,
        /// Output width of the network.
        outputs: usize,
    },
    /// Feature values that do not form `rows × input` (row-major).
    #[error("{values} feature values do not form {rows} rows of {dims} features")]
    Features {
        /// Number of feature values given.
        values: usize,
        /// Number of rows (targets) given.
        rows: usize,
        /// Input width of the network.
        dims: usize,
    },
    /// A feature value that is NaN or infinite.
    #[error("feature value {0} (row-major index) is not finite")]
    NonFiniteFeature(usize),
    /// A target that is not valid for the loss (not a class id in `0..classes`, or not finite).
    #[error("target {index} = {value} is not valid for {loss:?}")]
    Target {
        /// Row of the target.
        index: usize,
        /// The target.
        value: f32,
        /// The loss.
        loss: Loss,
    },
    /// A tensor could not be read back from the device.
    #[error("tensor readback failed: {0}")]
    Readback(String),
}

/// The per-example loss. Losses over a batch are always **summed** (not averaged), so the gradient of the
/// batch loss is the sum of each example's own gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy `−log softmax(z)_y` over `classes` outputs; targets are class ids `0..classes`
    /// stored as `f32` (binary classification uses `classes = 2`).
    CrossEntropy {
        /// Number of classes, which must equal the output width.
        classes: usize,
    },
    /// Squared error `(z − y)²` of a single output (no factor ½); targets are real values.
    SquaredError,
}

impl Loss {
    /// Checks that this loss fits a network whose last layer has `outputs` units.
    ///
    /// # Errors
    /// [`DenseError::LossShape`] when it does not.
    pub fn check_outputs(self, outputs: usize) -> Result<(), DenseError> {
        let ok = match self {
            Loss::CrossEntropy { classes } => classes >= 2 && classes == outputs,
            Loss::SquaredError => outputs == 1,
        };
        if ok { Ok(()) } else { Err(DenseError::LossShape { loss: self, outputs }) }
    }

    /// Checks one target value.
    fn check_target(self, index: usize, value: f32) -> Result<(), DenseError> {
        let ok = match self {
            Loss::CrossEntropy { classes } => value >= 0.0 && value.fract() == 0.0 && (value as usize) < classes,
            Loss::SquaredError => value.is_finite(),
        };
        if ok { Ok(()) } else { Err(DenseError::Target { index, value, loss: self }) }
    }

    /// The summed per-example loss of `output` (`rows × outputs`) against `targets`, as a one-element tensor
    /// on `output`'s device (tracked when `output` is).
    ///
    /// # Errors
    /// [`DenseError`] for a target invalid for the loss or a row count that does not match.
    pub fn summed(self, output: Tensor<2>, targets: &[f32]) -> Result<Tensor<1>, DenseError> {
        let [rows, outputs] = output.dims();
        self.check_outputs(outputs)?;
        if rows != targets.len() {
            return Err(DenseError::Features { values: rows * outputs, rows: targets.len(), dims: outputs });
        }
        let device = output.device();
        match self {
            Loss::SquaredError => {
                for (i, t) in targets.iter().enumerate() {
                    self.check_target(i, *t)?;
                }
                let y = Tensor::<2>::from_data(TensorData::new(targets.to_vec(), [rows, 1]), &device);
                let diff = output - y;
                Ok((diff.clone() * diff).sum())
            }
            Loss::CrossEntropy { classes } => {
                let mut onehot = vec![0.0f32; rows * classes];
                for (i, t) in targets.iter().enumerate() {
                    self.check_target(i, *t)?;
                    onehot[i * classes + *t as usize] = 1.0;
                }
                let y = Tensor::<2>::from_data(TensorData::new(onehot, [rows, classes]), &device);
                Ok((activation::log_softmax(output, 1) * y).sum().neg())
            }
        }
    }
}

/// A batch (or a whole data set) of examples, borrowed: row-major features `rows × dims` and one target per
/// row. The number of rows is the number of targets.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Row-major features, `rows × dims`.
    pub features: &'a [f32],
    /// One target per row: a class id as `f32` for [`Loss::CrossEntropy`], a value for [`Loss::SquaredError`].
    pub targets: &'a [f32],
}

impl<'a> Batch<'a> {
    /// A batch of `features` (row-major) and `targets`.
    pub fn new(features: &'a [f32], targets: &'a [f32]) -> Self {
        Self { features, targets }
    }

    /// Number of rows (= number of targets).
    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    /// Checks that the batch has `dims` features per row, finite features, and targets valid for `loss`.
    ///
    /// # Errors
    /// [`DenseError::Features`], [`DenseError::NonFiniteFeature`] or [`DenseError::Target`].
    pub fn validate(&self, dims: usize, loss: Loss) -> Result<(), DenseError> {
        if Some(self.features.len()) != self.rows().checked_mul(dims) {
            return Err(DenseError::Features { values: self.features.len(), rows: self.rows(), dims });
        }
        if let Some(i) = self.features.iter().position(|v| !v.is_finite()) {
            return Err(DenseError::NonFiniteFeature(i));
        }
        for (i, t) in self.targets.iter().enumerate() {
            loss.check_target(i, *t)?;
        }
        Ok(())
    }

    /// The rows `indices` of this batch, copied into `features` and `targets` buffers (cleared first).
    /// Indices out of range are skipped.
    pub fn gather(&self, dims: usize, indices: &[usize], features: &mut Vec<f32>, targets: &mut Vec<f32>) {
        features.clear();
        targets.clear();
        for &r in indices {
            if let (Some(row), Some(t)) = (self.features.get(r * dims..(r + 1) * dims), self.targets.get(r)) {
                features.extend_from_slice(row);
                targets.push(*t);
            }
        }
    }
}

/// The device for training: burn's pure-Rust `flex` CPU backend with autodiff.
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// The device for inference and for the ghost-clipping forward pass: `flex` without autodiff.
pub fn inference_device() -> Device {
    Device::flex()
}

/// Number of parameters of a stack with these layer sizes: `Σ_l (in_l·out_l + out_l)`. Zero for fewer than
/// two sizes; saturates at `usize::MAX` instead of overflowing.
pub fn parameter_count(sizes: &[usize]) -> usize {
    sizes.windows(2).fold(0usize, |acc, w| acc.saturating_add(w[0].saturating_mul(w[1]).saturating_add(w[1])))
}

/// Checks layer sizes: at least two, all non-zero, parameter count representable.
///
/// # Errors
/// [`DenseError::Sizes`] when they are not valid.
pub fn validate_sizes(sizes: &[usize]) -> Result<(), DenseError> {
    let overflow = sizes
        .windows(2)
        .try_fold(0usize, |acc, w| w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc))
        .is_none();
    if sizes.len() < 2 || sizes.contains(&0) || overflow {
        return Err(DenseError::Sizes(sizes.to_vec()));
    }
    Ok(())
}

/// Reads a tensor back as `f32` values.
pub(crate) fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, DenseError> {
    t.try_into_data()
        .map_err(|e| DenseError::Readback(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| DenseError::Readback(format!("{e:?}")))
}

/// A features matrix as a tensor on `device`.
///
/// # Errors
/// [`DenseError::Features`] when `features` is not `rows × dims`.
pub fn features_tensor(features: &[f32], rows: usize, dims: usize, device: &Device) -> Result<Tensor<2>, DenseError> {
    if Some(features.len()) != rows.checked_mul(dims) {
        return Err(DenseError::Features { values: features.len(), rows, dims });
    }
    Ok(Tensor::<2>::from_data(TensorData::new(features.to_vec(), [rows, dims]), device))
}

/// What [`DenseStack::forward_probed`] recorded.
#[derive(Debug, Clone)]
pub struct ProbedForward {
    /// The network output (`rows × output`), tracked through the probes.
    pub output: Tensor<2>,
    /// Each layer's input activation `A_l` (`rows × in_l`), without autodiff.
    pub activations: Vec<Tensor<2>>,
    /// Each layer's zero probe (`rows × out_l`), added to its pre-activation and requiring grad. After
    /// `loss.backward()`, `probes[l].grad(&grads)` is `G_l`: row `i` is ∂loss_i/∂z_{l,i}.
    pub probes: Vec<Tensor<2>>,
}

/// A stack of dense layers with ReLU between them (see the [module docs](self) for the flat layout).
#[derive(Module, Debug)]
pub struct DenseStack {
    /// The layers, input first.
    layers: Vec<Linear>,
}

impl DenseStack {
    /// A stack with random weights drawn from `rng`: each weight uniform in `±1/√in` (the bound of PyTorch's
    /// and burn's default `Linear` initialization), biases zero.
    ///
    /// # Errors
    /// [`DenseError::Sizes`] for invalid sizes.
    pub fn new_random<R: Rng + ?Sized>(sizes: &[usize], rng: &mut R, device: &Device) -> Result<Self, DenseError> {
        Self::from_flat(sizes, &random_parameters(sizes, rng)?, device)
    }

    /// A stack whose parameters are `params` in the flat layout.
    ///
    /// On an autodiff device (e.g. [`training_device`]) the parameters require grad; on a plain device they
    /// are constants.
    ///
    /// # Errors
    /// [`DenseError::Sizes`] for invalid sizes, [`DenseError::ParameterCount`] for a vector of the wrong
    /// length, [`DenseError::NonFiniteParameter`] for NaN or infinite values.
    pub fn from_flat(sizes: &[usize], params: &[f32], device: &Device) -> Result<Self, DenseError> {
        check_parameters(sizes, params)?;
        let mut layers = Vec::with_capacity(sizes.len() - 1);
        let mut at = 0;
        for w in sizes.windows(2) {
            let (i, o) = (w[0], w[1]);
            let weight = Tensor::<2>::from_data(TensorData::new(params[at..at + i * o].to_vec(), [i, o]), device);
            at += i * o;
            let bias = Tensor::<1>::from_data(TensorData::new(params[at..at + o].to_vec(), [o]), device);
            at += o;
            layers.push(Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(bias)) });
        }
        Ok(Self { layers })
    }

    /// The parameters in the flat layout; `from_flat(sizes, to_flat())` round-trips exactly.
    ///
    /// # Errors
    /// [`DenseError::Readback`] when a tensor cannot be read.
    pub fn to_flat(&self) -> Result<Vec<f32>, DenseError> {
        let mut flat = Vec::with_capacity(self.parameter_count());
        for layer in &self.layers {
            flat.extend(read(layer.weight.val())?);
            match &layer.bias {
                Some(b) => flat.extend(read(b.val())?),
                None => flat.extend(std::iter::repeat_n(0.0, layer.weight.shape().dims::<2>()[1])),
            }
        }
        Ok(flat)
    }

    /// Layer sizes `[input, hidden..., output]`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = Vec::with_capacity(self.layers.len() + 1);
        for (l, layer) in self.layers.iter().enumerate() {
            let [i, o] = layer.weight.shape().dims::<2>();
            if l == 0 {
                sizes.push(i);
            }
            sizes.push(o);
        }
        sizes
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.sizes().first().copied().unwrap_or(0)
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.sizes().last().copied().unwrap_or(0)
    }

    /// Number of parameters (the flat vector's length).
    pub fn parameter_count(&self) -> usize {
        parameter_count(&self.sizes())
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.layers.first().map(|l| l.weight.val().device()).unwrap_or_else(inference_device)
    }

    /// The layers (burn's [`Linear`], weight `[in, out]`, bias `[out]`).
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    fn affine(layer: &Linear, h: Tensor<2>) -> Tensor<2> {
        let z = h.matmul(layer.weight.val());
        match &layer.bias {
            Some(b) => z + b.val().unsqueeze::<2>(),
            None => z,
        }
    }

    /// Forward pass: outputs `rows × output` (logits or regression values). Shapes are the caller's
    /// responsibility (burn panics on an input width mismatch); use [`DenseStack::predict`] for checked input.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        let mut h = x;
        for (l, layer) in self.layers.iter().enumerate() {
            h = Self::affine(layer, h);
            if l < last {
                h = activation::relu(h);
            }
        }
        h
    }

    /// Training forward pass for ghost clipping: records each layer's input activation and adds a zero probe
    /// requiring grad to each pre-activation (see [`ProbedForward`]). Works whether or not the model and `x`
    /// are on an autodiff device; the probes always are, and the parameters act as constants unless they
    /// require grad themselves.
    pub fn forward_probed(&self, x: Tensor<2>) -> ProbedForward {
        let rows = x.dims()[0];
        let device = x.device();
        let last = self.layers.len().saturating_sub(1);
        let mut activations = Vec::with_capacity(self.layers.len());
        let mut probes = Vec::with_capacity(self.layers.len());
        let mut h = x;
        for (l, layer) in self.layers.iter().enumerate() {
            activations.push(h.clone().inner());
            let out = layer.weight.shape().dims::<2>()[1];
            let probe = Tensor::<2>::zeros([rows, out], &device).autodiff().require_grad();
            let z = Self::affine(layer, h) + probe.clone();
            probes.push(probe);
            h = if l < last { activation::relu(z) } else { z };
        }
        ProbedForward { output: h, activations, probes }
    }

    /// Raw outputs (logits or regression values) for row-major `features`, `rows × output`, row-major.
    /// Evaluates in chunks of 4096 rows to bound memory.
    ///
    /// # Errors
    /// [`DenseError::Features`] when `features` is not a whole number of rows, or a readback failure.
    pub fn predict(&self, features: &[f32]) -> Result<Vec<f32>, DenseError> {
        self.predict_with(features, |t| t)
    }

    /// Class probabilities (softmax of the logits) for [`Loss::CrossEntropy`], or regression values for
    /// [`Loss::SquaredError`]; `rows × output`, row-major.
    ///
    /// # Errors
    /// [`DenseError::LossShape`] when the loss does not fit the model, [`DenseError::Features`] for a bad
    /// features length.
    pub fn predict_for(&self, loss: Loss, features: &[f32]) -> Result<Vec<f32>, DenseError> {
        loss.check_outputs(self.outputs())?;
        match loss {
            Loss::CrossEntropy { .. } => self.predict_with(features, |t| activation::softmax(t, 1)),
            Loss::SquaredError => self.predict(features),
        }
    }

    fn predict_with(&self, features: &[f32], post: impl Fn(Tensor<2>) -> Tensor<2>) -> Result<Vec<f32>, DenseError> {
        const CHUNK: usize = 4096;
        let dims = self.inputs();
        if dims == 0 || !features.len().is_multiple_of(dims) {
            return Err(DenseError::Features { values: features.len(), rows: features.len() / dims.max(1), dims });
        }
        let device = self.device().inner();
        let model = self.valid();
        let mut out = Vec::with_capacity(features.len() / dims * self.outputs());
        for chunk in features.chunks(CHUNK * dims) {
            let x = features_tensor(chunk, chunk.len() / dims, dims, &device)?;
            out.extend(read(post(model.forward(x)))?);
        }
        Ok(out)
    }

    /// The ordinary (unclipped) gradient of the summed loss over `batch`, from burn's backward pass, in the
    /// flat layout, with the summed loss. Works on a model on any device (it runs on an autodiff copy of the
    /// model, [`Module::train`]).
    ///
    /// # Errors
    /// [`DenseError`] for a loss or batch that does not fit, or a failed readback.
    pub fn summed_gradient(&self, loss: Loss, batch: Batch<'_>) -> Result<(Vec<f32>, f64), DenseError> {
        loss.check_outputs(self.outputs())?;
        batch.validate(self.inputs(), loss)?;
        if batch.rows() == 0 {
            return Ok((vec![0.0; self.parameter_count()], 0.0));
        }
        let model = self.clone().train();
        let device = model.device();
        let x = features_tensor(batch.features, batch.rows(), self.inputs(), &device)?;
        let total = loss.summed(model.forward(x), batch.targets)?;
        if !total.is_tracked() {
            return Err(DenseError::Readback("the loss is not tracked by autodiff".into()));
        }
        let value = read(total.clone().inner())?.first().copied().map_or(f64::NAN, f64::from);
        let grads = total.backward();
        let plain = device.inner();
        let mut parts = Vec::with_capacity(2 * model.layers.len());
        for layer in &model.layers {
            let w = layer.weight.val();
            let gw = w.grad(&grads).unwrap_or_else(|| Tensor::zeros(w.shape(), &plain));
            parts.push(gw.reshape([-1]));
            if let Some(b) = &layer.bias {
                let b = b.val();
                parts.push(b.grad(&grads).unwrap_or_else(|| Tensor::zeros(b.shape(), &plain)));
            }
        }
        Ok((read(Tensor::cat(parts, 0))?, value))
    }
}

/// Checks `params` against `sizes`: valid sizes, right length, finite values.
///
/// # Errors
/// [`DenseError::Sizes`], [`DenseError::ParameterCount`] or [`DenseError::NonFiniteParameter`].
pub fn check_parameters(sizes: &[usize], params: &[f32]) -> Result<(), DenseError> {
    validate_sizes(sizes)?;
    let expected = parameter_count(sizes);
    if params.len() != expected {
        return Err(DenseError::ParameterCount { expected, actual: params.len() });
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(DenseError::NonFiniteParameter(i));
    }
    Ok(())
}

/// A random flat parameter vector for `sizes`, initialized as [`DenseStack::new_random`] does.
///
/// # Errors
/// [`DenseError::Sizes`] for invalid sizes.
pub fn random_parameters<R: Rng + ?Sized>(sizes: &[usize], rng: &mut R) -> Result<Vec<f32>, DenseError> {
    validate_sizes(sizes)?;
    let mut params = Vec::with_capacity(parameter_count(sizes));
    for w in sizes.windows(2) {
        let bound = 1.0 / (w[0] as f32).sqrt();
        params.extend((0..w[0] * w[1]).map(|_| rng.random_range(-bound..=bound)));
        params.extend(std::iter::repeat_n(0.0f32, w[1]));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn wavy(n: usize, a: f32, b: f32, s: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * a + b).sin() * s).collect()
    }

    #[test]
    fn flat_round_trip_and_layout() {
        let sizes = [3, 4, 2];
        assert_eq!(parameter_count(&sizes), 3 * 4 + 4 + 4 * 2 + 2);
        let params: Vec<f32> = (0..parameter_count(&sizes)).map(|i| i as f32).collect();
        for device in [inference_device(), training_device()] {
            let model = DenseStack::from_flat(&sizes, &params, &device).unwrap();
            assert_eq!(model.sizes(), sizes);
            assert_eq!(model.to_flat().unwrap(), params);
        }
        // Layout: weight[i*out + j] maps input i to output j. A one-layer stack with input e_1 outputs row 1
        // of the weight matrix plus the bias.
        let model = DenseStack::from_flat(&[3, 2], &[1., 2., 3., 4., 5., 6., 10., 20.], &inference_device()).unwrap();
        assert_eq!(model.predict(&[0., 1., 0.]).unwrap(), vec![13., 24.]);
    }

    #[test]
    fn random_init_is_seeded_and_bounded() {
        let sizes = [16, 8, 2];
        let mut a = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut b = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let pa = DenseStack::new_random(&sizes, &mut a, &inference_device()).unwrap().to_flat().unwrap();
        let pb = DenseStack::new_random(&sizes, &mut b, &inference_device()).unwrap().to_flat().unwrap();
        assert_eq!(pa, pb);
        assert!(pa[..16 * 8].iter().all(|w| w.abs() <= 0.25) && pa[..16 * 8].iter().any(|w| w.abs() > 0.1));
        assert!(pa[16 * 8..16 * 8 + 8].iter().all(|b| *b == 0.0));
    }

    #[test]
    fn forward_is_relu_mlp() {
        // [1, 2, 1]: hidden = relu(x·[1, −1] + [0, 0]), out = hidden·[2, 3] + 1.
        let model = DenseStack::from_flat(&[1, 2, 1], &[1., -1., 0., 0., 2., 3., 1.], &inference_device()).unwrap();
        assert_eq!(model.predict(&[2.0, -1.0]).unwrap(), vec![5.0, 4.0]);
        let probs = DenseStack::from_flat(&[1, 2], &[0., 0., 0., (3.0f32).ln()], &inference_device())
            .unwrap()
            .predict_for(Loss::CrossEntropy { classes: 2 }, &[7.0])
            .unwrap();
        assert!((probs[0] - 0.25).abs() < 1e-6 && (probs[1] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for (sizes, loss) in [(vec![2, 3, 2], Loss::CrossEntropy { classes: 2 }), (vec![3, 4, 1], Loss::SquaredError)] {
            let params = wavy(parameter_count(&sizes), 0.7, 0.3, 0.5);
            let features = wavy(8 * sizes[0], 1.3, 0.1, 1.5);
            let targets: Vec<f32> =
                (0..8).map(|i| if loss == Loss::SquaredError { i as f32 * 0.3 } else { (i % 2) as f32 }).collect();
            let batch = Batch::new(&features, &targets);
            let device = training_device();
            let (grad, _) =
                DenseStack::from_flat(&sizes, &params, &device).unwrap().summed_gradient(loss, batch).unwrap();
            for j in [0, 4, 9, params.len() - 1] {
                let h = 1e-3;
                let at = |delta: f32| {
                    let mut p = params.clone();
                    p[j] += delta;
                    DenseStack::from_flat(&sizes, &p, &device).unwrap().summed_gradient(loss, batch).unwrap().1
                };
                let fd = (at(h) - at(-h)) / (2.0 * f64::from(h));
                assert!(
                    (fd - f64::from(grad[j])).abs() < 2e-2 * (1.0 + fd.abs()),
                    "{sizes:?} param {j}: fd {fd} vs {}",
                    grad[j]
                );
            }
        }
    }

    #[test]
    fn probes_give_per_example_output_gradients() {
        // Logistic regression: G = softmax(z) − onehot(y), exactly.
        let sizes = [2, 2];
        let params = [0.5, -0.3, 0.2, 0.1, 0.05, -0.05];
        let features = [1.0, 2.0, -1.0, 0.5, 0.0, 3.0];
        let targets = [0.0, 1.0, 1.0];
        let model = DenseStack::from_flat(&sizes, &params, &inference_device()).unwrap();
        let x = features_tensor(&features, 3, 2, &inference_device()).unwrap();
        let probed = model.forward_probed(x);
        let loss = Loss::CrossEntropy { classes: 2 }.summed(probed.output, &targets).unwrap();
        let grads = loss.backward();
        let g = read(probed.probes[0].grad(&grads).unwrap()).unwrap();
        let p = model.predict_for(Loss::CrossEntropy { classes: 2 }, &features).unwrap();
        for i in 0..3 {
            for c in 0..2 {
                let want = p[i * 2 + c] - if targets[i] as usize == c { 1.0 } else { 0.0 };
                assert!((g[i * 2 + c] - want).abs() < 1e-6);
            }
        }
        assert_eq!(read(probed.activations[0].clone()).unwrap(), features);
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let device = training_device();
        assert!(matches!(DenseStack::from_flat(&[2], &[], &device), Err(DenseError::Sizes(_))));
        assert!(matches!(DenseStack::from_flat(&[2, 0], &[], &device), Err(DenseError::Sizes(_))));
        assert!(matches!(DenseStack::from_flat(&[usize::MAX, 3], &[], &device), Err(DenseError::Sizes(_))));
        assert!(matches!(
            DenseStack::from_flat(&[2, 2], &[0.0; 5], &device),
            Err(DenseError::ParameterCount { expected: 6, actual: 5 })
        ));
        assert!(matches!(
            DenseStack::from_flat(&[1, 1], &[0.0, f32::NAN], &device),
            Err(DenseError::NonFiniteParameter(1))
        ));
        let model = DenseStack::from_flat(&[2, 2], &[0.0; 6], &device).unwrap();
        let ce = Loss::CrossEntropy { classes: 2 };
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 2], &[5.0])), Err(DenseError::Target { .. })));
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 2], &[0.5])), Err(DenseError::Target { .. })));
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 3], &[0.0])), Err(DenseError::Features { .. })));
        assert!(matches!(
            model.summed_gradient(ce, Batch::new(&[0.0, f32::INFINITY], &[0.0])),
            Err(DenseError::NonFiniteFeature(1))
        ));
        assert!(matches!(
            model.summed_gradient(Loss::SquaredError, Batch::new(&[0.0; 2], &[0.0])),
            Err(DenseError::LossShape { .. })
        ));
        assert!(matches!(model.predict(&[0.0; 3]), Err(DenseError::Features { .. })));
        // A model on a plain device gives the same gradient as one on the training device.
        let params = [0.3, -0.2, 0.1, 0.4, 0.05, -0.1];
        let batch = Batch::new(&[1.0, -2.0, 0.5, 0.5], &[1.0, 0.0]);
        let plain =
            DenseStack::from_flat(&[2, 2], &params, &inference_device()).unwrap().summed_gradient(ce, batch).unwrap();
        let tracked = DenseStack::from_flat(&[2, 2], &params, &device).unwrap().summed_gradient(ce, batch).unwrap();
        assert_eq!(plain, tracked);
    }
}
