//! A stack of dense (linear) layers as a burn [`Module`], addressed through the flat parameter vector of
//! [`crate::layout`].
//!
//! # Architecture
//! Layer sizes are `[input, h1, ..., output]`. Every layer computes `z = a·W + b`; hidden layers apply ReLU,
//! the last layer applies nothing (its outputs are logits for [`Loss::CrossEntropy`] or the value for
//! [`Loss::SquaredError`]). Logistic (softmax) regression is the stack with no hidden layer, e.g. `[d, 2]`.
//!
//! # Training forward with probes
//! [`DenseStack::forward_probed`] adds to every layer's pre-activation a zero "probe" tensor that requires grad
//! and records every layer's input activation `A_l` (`B×in`). One backward pass of the summed per-example loss
//! then gives every layer's per-example output gradient `G_l` (`B×out`) as the probe's gradient, which is what
//! ghost clipping needs (Li et al. 2022; Bu et al. 2023; see `cohort_dp::clip`). The model's own parameters
//! need not require grad for this, so the backward pass computes only input gradients.
//!
//! # Example
//! ```
//! use cohort_model::{inference_device, parameter_count, DenseStack};
//! let sizes = [3, 4, 2];
//! let params: Vec<f32> = (0..parameter_count(&sizes)).map(|i| i as f32 * 0.01).collect();
//! let model = DenseStack::from_flat(&sizes, &params, &inference_device()).unwrap();
//! assert_eq!(model.to_flat().unwrap(), params);
//! ```

use crate::layout::{check_parameters, initial_parameters, parameter_count};
use crate::{Batch, Loss, ModelError};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData, activation};
use rand::Rng;

/// The device for training: burn's pure-Rust `flex` CPU backend with autodiff.
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// The device for inference and for the ghost-clipping forward pass: `flex` without autodiff.
pub fn inference_device() -> Device {
    Device::flex()
}

/// Reads a tensor back as `f32` values, row-major.
///
/// # Errors
/// [`ModelError::Readback`] when the device cannot return the data.
pub fn tensor_values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    t.try_into_data()
        .map_err(|e| ModelError::Readback(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Readback(format!("{e:?}")))
}

/// A features matrix as a tensor on `device`.
///
/// # Errors
/// [`ModelError::Features`] when `features` is not `rows × dims`.
pub fn features_tensor(features: &[f32], rows: usize, dims: usize, device: &Device) -> Result<Tensor<2>, ModelError> {
    if Some(features.len()) != rows.checked_mul(dims) {
        return Err(ModelError::Features { values: features.len(), rows, dims });
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
    /// A stack initialized from `rng` by [`initial_parameters`], the one initialization.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] for invalid sizes.
    pub fn new_random<R: Rng + ?Sized>(sizes: &[usize], rng: &mut R, device: &Device) -> Result<Self, ModelError> {
        Self::from_flat(sizes, &initial_parameters(sizes, rng)?, device)
    }

    /// A stack whose parameters are `params` in the flat layout.
    ///
    /// On an autodiff device (e.g. [`training_device`]) the parameters require grad; on a plain device they
    /// are constants.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] for invalid sizes, [`ModelError::ParameterCount`] for a vector of the wrong
    /// length, [`ModelError::NonFiniteParameter`] for NaN or infinite values.
    pub fn from_flat(sizes: &[usize], params: &[f32], device: &Device) -> Result<Self, ModelError> {
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
    /// [`ModelError::Readback`] when a tensor cannot be read.
    pub fn to_flat(&self) -> Result<Vec<f32>, ModelError> {
        let mut flat = Vec::with_capacity(self.parameter_count());
        for layer in &self.layers {
            flat.extend(tensor_values(layer.weight.val())?);
            match &layer.bias {
                Some(b) => flat.extend(tensor_values(b.val())?),
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
    /// [`ModelError::Features`] when `features` is not a whole number of rows, or a readback failure.
    pub fn predict(&self, features: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.predict_with(features, |t| t)
    }

    /// Class probabilities (softmax of the logits) for [`Loss::CrossEntropy`], or regression values for
    /// [`Loss::SquaredError`]; `rows × output`, row-major.
    ///
    /// # Errors
    /// [`ModelError::LossShape`] when the loss does not fit the model, [`ModelError::Features`] for a bad
    /// features length.
    pub fn predict_for(&self, loss: Loss, features: &[f32]) -> Result<Vec<f32>, ModelError> {
        loss.check_outputs(self.outputs())?;
        match loss {
            Loss::CrossEntropy { .. } => self.predict_with(features, |t| activation::softmax(t, 1)),
            Loss::SquaredError => self.predict(features),
        }
    }

    fn predict_with(&self, features: &[f32], post: impl Fn(Tensor<2>) -> Tensor<2>) -> Result<Vec<f32>, ModelError> {
        const CHUNK: usize = 4096;
        let dims = self.inputs();
        if dims == 0 || !features.len().is_multiple_of(dims) {
            return Err(ModelError::Features { values: features.len(), rows: features.len() / dims.max(1), dims });
        }
        let device = self.device().inner();
        let model = self.valid();
        let mut out = Vec::with_capacity(features.len() / dims * self.outputs());
        for chunk in features.chunks(CHUNK * dims) {
            let x = features_tensor(chunk, chunk.len() / dims, dims, &device)?;
            out.extend(tensor_values(post(model.forward(x)))?);
        }
        Ok(out)
    }

    /// The ordinary (unclipped) gradient of the summed loss over `batch`, from burn's backward pass, in the
    /// flat layout, with the summed loss. Works on a model on any device (it runs on an autodiff copy of the
    /// model, [`Module::train`]).
    ///
    /// # Errors
    /// [`ModelError`] for a loss or batch that does not fit, or a failed readback.
    pub fn summed_gradient(&self, loss: Loss, batch: Batch<'_>) -> Result<(Vec<f32>, f64), ModelError> {
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
            return Err(ModelError::Readback("the loss is not tracked by autodiff".into()));
        }
        let value = tensor_values(total.clone().inner())?.first().copied().map_or(f64::NAN, f64::from);
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
        Ok((tensor_values(Tensor::cat(parts, 0))?, value))
    }
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
    fn a_random_stack_holds_the_one_initialization() {
        let sizes = [16, 8, 2];
        let seeded = || rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let model = DenseStack::new_random(&sizes, &mut seeded(), &inference_device()).unwrap();
        assert_eq!(model.to_flat().unwrap(), initial_parameters(&sizes, &mut seeded()).unwrap());
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
        let g = tensor_values(probed.probes[0].grad(&grads).unwrap()).unwrap();
        let p = model.predict_for(Loss::CrossEntropy { classes: 2 }, &features).unwrap();
        for i in 0..3 {
            for c in 0..2 {
                let want = p[i * 2 + c] - if targets[i] as usize == c { 1.0 } else { 0.0 };
                assert!((g[i * 2 + c] - want).abs() < 1e-6);
            }
        }
        assert_eq!(tensor_values(probed.activations[0].clone()).unwrap(), features);
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let device = training_device();
        assert!(matches!(DenseStack::from_flat(&[2], &[], &device), Err(ModelError::Sizes(_))));
        assert!(matches!(DenseStack::from_flat(&[2, 0], &[], &device), Err(ModelError::Sizes(_))));
        assert!(matches!(DenseStack::from_flat(&[usize::MAX, 3], &[], &device), Err(ModelError::Sizes(_))));
        assert!(matches!(
            DenseStack::from_flat(&[2, 2], &[0.0; 5], &device),
            Err(ModelError::ParameterCount { expected: 6, actual: 5 })
        ));
        assert!(matches!(
            DenseStack::from_flat(&[1, 1], &[0.0, f32::NAN], &device),
            Err(ModelError::NonFiniteParameter(1))
        ));
        let model = DenseStack::from_flat(&[2, 2], &[0.0; 6], &device).unwrap();
        let ce = Loss::CrossEntropy { classes: 2 };
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 2], &[5.0])), Err(ModelError::Target { .. })));
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 2], &[0.5])), Err(ModelError::Target { .. })));
        assert!(matches!(model.summed_gradient(ce, Batch::new(&[0.0; 3], &[0.0])), Err(ModelError::Features { .. })));
        assert!(matches!(
            model.summed_gradient(ce, Batch::new(&[0.0, f32::INFINITY], &[0.0])),
            Err(ModelError::NonFiniteFeature(1))
        ));
        assert!(matches!(
            model.summed_gradient(Loss::SquaredError, Batch::new(&[0.0; 2], &[0.0])),
            Err(ModelError::LossShape { .. })
        ));
        assert!(matches!(model.predict(&[0.0; 3]), Err(ModelError::Features { .. })));
        // A model on a plain device gives the same gradient as one on the training device.
        let params = [0.3, -0.2, 0.1, 0.4, 0.05, -0.1];
        let batch = Batch::new(&[1.0, -2.0, 0.5, 0.5], &[1.0, 0.0]);
        let plain =
            DenseStack::from_flat(&[2, 2], &params, &inference_device()).unwrap().summed_gradient(ce, batch).unwrap();
        let tracked = DenseStack::from_flat(&[2, 2], &params, &device).unwrap().summed_gradient(ce, batch).unwrap();
        assert_eq!(plain, tracked);
    }
}
