//! The JSON bodies of the Open Inference Protocol (KServe V2 REST) and of TF Serving's V1 `:predict`: the one
//! place that knows their field names.
//!
//! References: KServe, "Open Inference Protocol (V2 Inference Protocol)", REST section
//! (<https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/>); TensorFlow Serving,
//! "RESTful API", Predict API.

use crate::catalog::Served;
use crate::error::ServeError;
use crate::model::{Prediction, ServedModel};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `POST .../infer` request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The input tensors.
    pub inputs: Vec<InputTensor>,
    /// The outputs wanted (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InputTensor {
    /// Any name for a `[rows, features]` matrix; a feature's name for a per-feature `[rows]` tensor.
    pub name: String,
    /// The shape.
    pub shape: Vec<i64>,
    /// The element type, e.g. `FP32`.
    pub datatype: String,
    /// The elements, row-major, flat or nested.
    pub data: Value,
}

/// One requested output of an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RequestedOutput {
    /// `probabilities`, `class` or `value`.
    pub name: String,
}

/// One output tensor of an [`InferResponse`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OutputTensor {
    /// `probabilities` (FP32 `[rows, classes]`), `class` (INT64 `[rows]`) or `value` (FP32 `[rows, 1]`).
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The element type.
    pub datatype: String,
    /// The elements, row-major.
    pub data: Vec<Value>,
}

/// `POST .../infer` response.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The version's stage and weights hash.
    pub parameters: Value,
    /// The outputs.
    pub outputs: Vec<OutputTensor>,
}

/// The names of the outputs a model of this kind gives.
pub fn output_names(prediction: &Prediction) -> &'static [&'static str] {
    match prediction {
        Prediction::Classes { .. } => &["probabilities", "class"],
        Prediction::Values(_) => &["value"],
    }
}

impl InferResponse {
    /// The response for `prediction`, with the outputs `wanted` (all when `None`).
    ///
    /// # Errors
    /// [`ServeError::BadInput`] naming `outputs[i].name` for an output the model does not give.
    pub fn new(
        served: &Served,
        id: Option<String>,
        prediction: &Prediction,
        wanted: Option<&[RequestedOutput]>,
    ) -> Result<Self, ServeError> {
        let names = output_names(prediction);
        let wanted: Vec<&str> = match wanted {
            Some(list) => {
                for (i, o) in list.iter().enumerate() {
                    if !names.contains(&o.name.as_str()) {
                        return Err(ServeError::bad(
                            format!("outputs[{i}].name"),
                            format!("{:?} is not an output of this model (it has: {})", o.name, names.join(", ")),
                        ));
                    }
                }
                list.iter().map(|o| o.name.as_str()).collect()
            }
            None => names.to_vec(),
        };
        let rows = prediction.rows();
        let outputs = wanted
            .into_iter()
            .map(|name| match (name, prediction) {
                ("class", Prediction::Classes { classes, .. }) => OutputTensor {
                    name: name.into(),
                    shape: vec![rows],
                    datatype: "INT64".into(),
                    data: classes.iter().map(|c| json!(c)).collect(),
                },
                (_, Prediction::Classes { probabilities, width, .. }) => OutputTensor {
                    name: name.into(),
                    shape: vec![rows, *width],
                    datatype: "FP32".into(),
                    data: probabilities.iter().map(|p| json!(p)).collect(),
                },
                (_, Prediction::Values(values)) => OutputTensor {
                    name: name.into(),
                    shape: vec![rows, 1],
                    datatype: "FP32".into(),
                    data: values.iter().map(|v| json!(v)).collect(),
                },
            })
            .collect();
        Ok(Self {
            model_name: served.name().to_owned(),
            model_version: served.version().0.to_string(),
            id,
            parameters: json!({"stage": served.stage, "weights_sha256": served.sha256()}),
            outputs,
        })
    }
}

/// TF Serving's `:predict` request: `instances` (row format) or `inputs` (columnar format).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PredictRequest {
    /// Rows: each an array of the features in order, or an object keyed by feature name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<Value>>,
    /// Columns: an object keyed by feature name (one array per feature), or an array of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
}

/// TF Serving's `:predict` response: one object per row, `{"class", "probabilities"}` or `{"value"}`.
pub fn predictions(prediction: &Prediction) -> Value {
    let rows: Vec<Value> = match prediction {
        Prediction::Classes { classes, probabilities, width } => classes
            .iter()
            .zip(probabilities.chunks_exact(*width))
            .map(|(c, p)| json!({"class": c, "probabilities": p}))
            .collect(),
        Prediction::Values(values) => values.iter().map(|v| json!({"value": v})).collect(),
    };
    json!({ "predictions": rows })
}

/// `GET /v2/models/{m}[/versions/{v}]`: the inputs (as one matrix, with the feature names, declared bounds and
/// preprocessing in `parameters`), the outputs, every version with its stage, and the lineage link.
pub fn model_metadata(served: &Served, versions: &[(String, String)], lineage: &str) -> Value {
    let model: &ServedModel = served;
    let dims = model.features().len();
    let outputs = match model.task() {
        cohort_model::TaskKind::Regression => json!([{"name": "value", "datatype": "FP32", "shape": [-1, 1]}]),
        _ => json!([
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.outputs()]},
            {"name": "class", "datatype": "INT64", "shape": [-1]},
        ]),
    };
    json!({
        "name": model.name(),
        "versions": versions.iter().map(|(v, _)| v).collect::<Vec<_>>(),
        "platform": "cohort-dense-stack",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, dims]}],
        "outputs": outputs,
        "parameters": {
            "version": model.version().0.to_string(),
            "stage": served.stage,
            "stages": versions.iter().map(|(v, s)| json!({"version": v, "stage": s})).collect::<Vec<_>>(),
            "features": model.features(),
            "bounds": model.bounds(),
            "label": model.label(),
            "task": model.task(),
            "layers": model.layers(),
            "weights_sha256": model.sha256(),
            "round": model.round(),
            "created_at": model.created_at(),
            "lineage": lineage,
            "input_forms": "one FP32 tensor [rows, features] of any name, or one tensor [rows] per feature named \
                            after it; values in the features' own units (the server applies the training scaling)",
        },
    })
}
