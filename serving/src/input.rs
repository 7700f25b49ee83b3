//! Turning a request's tensors or instances into a [`Features`] matrix in the model's feature order, with a
//! 400 that names the field for every way a request can be wrong.

use crate::error::ServeError;
use crate::model::Features;
use crate::wire::{InferRequest, InputTensor, PredictRequest};
use serde_json::Value;

/// Decodes a V2 `infer` body: the request (for its id and wanted outputs) and its feature matrix.
///
/// # Errors
/// [`ServeError::BadInput`] naming `body` for bytes that are not such a request, else as [`from_tensors`].
pub fn decode_v2(features: &[String], body: &[u8], max_rows: usize) -> Result<(InferRequest, Features), ServeError> {
    let request: InferRequest = serde_json::from_slice(body).map_err(|e| ServeError::bad("body", e.to_string()))?;
    let matrix = from_tensors(features, &request.inputs, max_rows)?;
    Ok((request, matrix))
}

/// Decodes a V1 `:predict` body into its feature matrix.
///
/// # Errors
/// [`ServeError::BadInput`] naming `body` for bytes that are not such a request, else as [`from_instances`].
pub fn decode_v1(features: &[String], body: &[u8], max_rows: usize) -> Result<Features, ServeError> {
    let request: PredictRequest = serde_json::from_slice(body).map_err(|e| ServeError::bad("body", e.to_string()))?;
    from_instances(features, &request, max_rows)
}

/// The element types an input tensor may have. Integers are accepted for integer-valued features.
const NUMERIC: [&str; 10] = ["FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"];

/// The feature matrix of a V2 request: one `[rows, features]` tensor of any name, or one `[rows]` (or
/// `[rows, 1]`) tensor per feature, named after it.
///
/// # Errors
/// [`ServeError::BadInput`] naming `inputs`, `inputs[i].shape`, `inputs[i].datatype`, `inputs[i].data[j]` or a
/// feature, for a request that does not fit; more than `max_rows` rows is refused.
pub fn from_tensors(features: &[String], inputs: &[InputTensor], max_rows: usize) -> Result<Features, ServeError> {
    let dims = features.len();
    match inputs {
        [] => Err(ServeError::bad("inputs", "the request has no input tensor")),
        [one] if !(dims == 1 && features[0] == one.name) && one.shape.len() == 2 => {
            let rows = rows_of(one, 0, max_rows)?;
            if one.shape[1] != dims as i64 {
                return Err(ServeError::bad(
                    "inputs[0].shape",
                    format!(
                        "{:?} has {} columns; the model takes {dims} features ({})",
                        one.shape,
                        one.shape[1],
                        names(features)
                    ),
                ));
            }
            Ok(Features { rows, values: elements(one, 0, rows * dims)? })
        }
        many => {
            let mut columns: Vec<Option<Vec<f32>>> = vec![None; dims];
            let mut rows = None;
            for (i, tensor) in many.iter().enumerate() {
                let Some(column) = features.iter().position(|f| *f == tensor.name) else {
                    let hint = match many.len() {
                        1 => format!(
                            "send one FP32 tensor of shape [rows, {dims}], or one tensor per feature named after it"
                        ),
                        _ => format!("the model's features are {}", names(features)),
                    };
                    return Err(ServeError::bad(
                        format!("inputs[{i}].name"),
                        format!("{:?} is not a feature: {hint}", tensor.name),
                    ));
                };
                if columns[column].is_some() {
                    return Err(ServeError::bad(
                        format!("inputs[{i}].name"),
                        format!("feature {:?} is given twice", tensor.name),
                    ));
                }
                if !(tensor.shape.len() == 1 || tensor.shape.len() == 2 && tensor.shape[1] == 1) {
                    return Err(ServeError::bad(
                        format!("inputs[{i}].shape"),
                        format!("{:?} is not the shape of one feature's column ([rows] or [rows, 1])", tensor.shape),
                    ));
                }
                let n = rows_of(tensor, i, max_rows)?;
                if *rows.get_or_insert(n) != n {
                    return Err(ServeError::bad(
                        format!("inputs[{i}].shape"),
                        format!("{n} rows, where the other features have {}", rows.unwrap_or(n)),
                    ));
                }
                columns[column] = Some(elements(tensor, i, n)?);
            }
            let missing: Vec<&str> =
                features.iter().zip(&columns).filter(|(_, c)| c.is_none()).map(|(f, _)| f.as_str()).collect();
            if let Some(first) = missing.first() {
                return Err(ServeError::bad(*first, format!("missing feature(s): {}", missing.join(", "))));
            }
            let rows = rows.unwrap_or(0);
            let columns: Vec<Vec<f32>> = columns.into_iter().flatten().collect();
            let values = (0..rows).flat_map(|r| columns.iter().map(move |c| c[r])).collect();
            Ok(Features { rows, values })
        }
    }
}

/// The feature matrix of a V1 `:predict` request: `instances` as rows (arrays in feature order, or objects
/// keyed by feature), or `inputs` as columns (an object of arrays) or rows.
///
/// # Errors
/// [`ServeError::BadInput`] naming `instances[i]`, `instances[i].<feature>`, `inputs.<feature>` and so on.
pub fn from_instances(features: &[String], request: &PredictRequest, max_rows: usize) -> Result<Features, ServeError> {
    let (rows, field) = match (&request.instances, &request.inputs) {
        (Some(_), Some(_)) => return Err(ServeError::bad("instances", "give `instances` or `inputs`, not both")),
        (None, None) => return Err(ServeError::bad("instances", "the request has neither `instances` nor `inputs`")),
        (Some(rows), None) => (rows.as_slice(), "instances"),
        (None, Some(Value::Array(rows))) => (rows.as_slice(), "inputs"),
        (None, Some(Value::Object(columns))) => return from_columns(features, columns, max_rows),
        (None, Some(_)) => {
            return Err(ServeError::bad("inputs", "must be an object of feature columns or an array of rows"));
        }
    };
    if rows.len() > max_rows {
        return Err(ServeError::bad(
            field,
            format!("{} rows; this server takes at most {max_rows} per request", rows.len()),
        ));
    }
    let dims = features.len();
    let mut values = Vec::with_capacity(rows.len() * dims);
    for (r, row) in rows.iter().enumerate() {
        match row {
            Value::Array(cells) => {
                if cells.len() != dims {
                    return Err(ServeError::bad(
                        format!("{field}[{r}]"),
                        format!("{} values; the model takes {dims} features ({})", cells.len(), names(features)),
                    ));
                }
                for (c, cell) in cells.iter().enumerate() {
                    values.push(number(cell, || format!("{field}[{r}][{c}]"))?);
                }
            }
            Value::Object(cells) => {
                if let Some(extra) = cells.keys().find(|k| !features.contains(k)) {
                    return Err(ServeError::bad(format!("{field}[{r}].{extra}"), "not a feature of this model"));
                }
                for f in features {
                    let cell =
                        cells.get(f).ok_or_else(|| ServeError::bad(format!("{field}[{r}].{f}"), "missing feature"))?;
                    values.push(number(cell, || format!("{field}[{r}].{f}"))?);
                }
            }
            _ if dims == 1 => values.push(number(row, || format!("{field}[{r}]"))?),
            _ => {
                return Err(ServeError::bad(
                    format!("{field}[{r}]"),
                    "a row must be an array of values or an object of features",
                ));
            }
        }
    }
    Ok(Features { rows: rows.len(), values })
}

fn from_columns(
    features: &[String],
    columns: &serde_json::Map<String, Value>,
    max_rows: usize,
) -> Result<Features, ServeError> {
    if let Some(extra) = columns.keys().find(|k| !features.contains(k)) {
        return Err(ServeError::bad(format!("inputs.{extra}"), "not a feature of this model"));
    }
    let mut parsed = Vec::with_capacity(features.len());
    for f in features {
        let field = || format!("inputs.{f}");
        let column = columns.get(f).ok_or_else(|| ServeError::bad(field(), "missing feature"))?;
        let Value::Array(cells) = column else { return Err(ServeError::bad(field(), "must be an array of values")) };
        if cells.len() > max_rows {
            return Err(ServeError::bad(
                field(),
                format!("{} rows; this server takes at most {max_rows} per request", cells.len()),
            ));
        }
        if let Some(first) = parsed.first().map(Vec::len).filter(|n| *n != cells.len()) {
            return Err(ServeError::bad(field(), format!("{} rows, where the first feature has {first}", cells.len())));
        }
        parsed.push(
            cells
                .iter()
                .enumerate()
                .map(|(r, c)| number(c, || format!("inputs.{f}[{r}]")))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let rows = parsed.first().map_or(0, Vec::len);
    let values = (0..rows).flat_map(|r| parsed.iter().map(move |c| c[r])).collect();
    Ok(Features { rows, values })
}

/// The row count of tensor `i` (its first dimension), checked.
fn rows_of(tensor: &InputTensor, i: usize, max_rows: usize) -> Result<usize, ServeError> {
    if !NUMERIC.contains(&tensor.datatype.as_str()) {
        return Err(ServeError::bad(
            format!("inputs[{i}].datatype"),
            format!("{:?} is not a numeric type (send FP32)", tensor.datatype),
        ));
    }
    if tensor.shape.iter().any(|d| *d < 0) {
        return Err(ServeError::bad(
            format!("inputs[{i}].shape"),
            format!("{:?} has a negative dimension", tensor.shape),
        ));
    }
    let rows = usize::try_from(tensor.shape[0]).unwrap_or(usize::MAX);
    if rows > max_rows {
        return Err(ServeError::bad(
            format!("inputs[{i}].shape"),
            format!("{rows} rows; this server takes at most {max_rows} per request"),
        ));
    }
    Ok(rows)
}

/// The elements of tensor `i`, flattened row-major, exactly `count` of them.
fn elements(tensor: &InputTensor, i: usize, count: usize) -> Result<Vec<f32>, ServeError> {
    let mut out = Vec::with_capacity(count);
    flatten(&tensor.data, &mut out, i, count)?;
    if out.len() != count {
        return Err(ServeError::bad(
            format!("inputs[{i}].data"),
            format!("{} elements for shape {:?}, which needs {count}", out.len(), tensor.shape),
        ));
    }
    Ok(out)
}

fn flatten(data: &Value, out: &mut Vec<f32>, i: usize, count: usize) -> Result<(), ServeError> {
    match data {
        Value::Array(items) => {
            for item in items {
                if out.len() > count {
                    break;
                }
                flatten(item, out, i, count)?;
            }
            Ok(())
        }
        other => {
            let at = out.len();
            out.push(number(other, || format!("inputs[{i}].data[{at}]"))?);
            Ok(())
        }
    }
}

/// A JSON number as `f32`. JSON has no NaN or infinity; a number too large for `f32` is refused too.
fn number(value: &Value, field: impl Fn() -> String) -> Result<f32, ServeError> {
    let x = value.as_f64().ok_or_else(|| ServeError::bad(field(), format!("{value} is not a number")))?;
    let v = x as f32;
    if !v.is_finite() {
        return Err(ServeError::bad(field(), format!("{x} does not fit a 32-bit float")));
    }
    Ok(v)
}

fn names(features: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut shown: Vec<&str> = features.iter().take(SHOWN).map(String::as_str).collect();
    if features.len() > SHOWN {
        shown.push("...");
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn features() -> Vec<String> {
        vec!["age".into(), "bp".into()]
    }

    fn tensor(name: &str, shape: &[i64], datatype: &str, data: Value) -> InputTensor {
        InputTensor { name: name.into(), shape: shape.to_vec(), datatype: datatype.into(), data }
    }

    fn field(result: Result<Features, ServeError>) -> String {
        match result {
            Err(ServeError::BadInput { field, .. }) => field,
            other => panic!("expected a bad input, got {other:?}"),
        }
    }

    #[test]
    fn a_matrix_flat_or_nested_and_per_feature_columns_give_the_same_rows() {
        let expected = Features { rows: 2, values: vec![50.0, 120.0, 60.0, 130.0] };
        let flat = tensor("x", &[2, 2], "FP32", json!([50, 120, 60, 130]));
        let nested = tensor("anything", &[2, 2], "FP64", json!([[50, 120], [60, 130]]));
        let columns =
            [tensor("bp", &[2], "FP32", json!([120, 130])), tensor("age", &[2, 1], "INT64", json!([[50], [60]]))];
        assert_eq!(from_tensors(&features(), &[flat], 100).unwrap(), expected);
        assert_eq!(from_tensors(&features(), &[nested], 100).unwrap(), expected);
        assert_eq!(from_tensors(&features(), &columns, 100).unwrap(), expected);
    }

    #[test]
    fn every_malformed_tensor_is_refused_naming_its_field() {
        let f = features();
        assert_eq!(field(from_tensors(&f, &[], 100)), "inputs");
        assert_eq!(field(from_tensors(&f, &[tensor("x", &[2, 3], "FP32", json!(vec![0; 6]))], 100)), "inputs[0].shape");
        assert_eq!(
            field(from_tensors(&f, &[tensor("x", &[2, 2], "BYTES", json!(vec![0; 4]))], 100)),
            "inputs[0].datatype"
        );
        assert_eq!(
            field(from_tensors(&f, &[tensor("x", &[2, 2], "FP32", json!([0, 1, "a", 3]))], 100)),
            "inputs[0].data[2]"
        );
        assert_eq!(field(from_tensors(&f, &[tensor("x", &[2, 2], "FP32", json!([0, 1, 2]))], 100)), "inputs[0].data");
        assert_eq!(
            field(from_tensors(&f, &[tensor("x", &[2, 2], "FP32", json!([0, 1, 2, 3, 4]))], 100)),
            "inputs[0].data"
        );
        assert_eq!(field(from_tensors(&f, &[tensor("x", &[-1, 2], "FP32", json!([]))], 100)), "inputs[0].shape");
        assert_eq!(field(from_tensors(&f, &[tensor("x", &[200, 2], "FP32", json!([]))], 100)), "inputs[0].shape");
        assert_eq!(
            field(from_tensors(&f, &[tensor("x", &[2, 2], "FP64", json!([0, 1, 2, 1e300]))], 100)),
            "inputs[0].data[3]"
        );
        // Per feature: a missing feature, an extra one, a duplicate, mismatched rows.
        let age = tensor("age", &[1], "FP32", json!([50]));
        assert_eq!(field(from_tensors(&f, std::slice::from_ref(&age), 100)), "bp");
        assert_eq!(
            field(from_tensors(
                &f,
                &[age.clone(), tensor("bp", &[1], "FP32", json!([1])), tensor("chol", &[1], "FP32", json!([1]))],
                100
            )),
            "inputs[2].name"
        );
        assert_eq!(field(from_tensors(&f, &[age.clone(), age.clone()], 100)), "inputs[1].name");
        assert_eq!(
            field(from_tensors(&f, &[age.clone(), tensor("bp", &[2], "FP32", json!([1, 2]))], 100)),
            "inputs[1].shape"
        );
        let err = from_tensors(&f, &[age, tensor("weight", &[1], "FP32", json!([1]))], 100).unwrap_err();
        assert!(err.to_string().contains("not a feature"), "{err}");
    }

    proptest::proptest! {
        /// Any bytes, and any mutation of a valid body, decode to a matrix of exactly rows × features values or
        /// to a named 400; never a panic.
        #[test]
        fn any_body_decodes_to_a_whole_matrix_or_a_named_error(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let f = features();
            let valid = [
                br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#.to_vec(),
                br#"{"inputs":[{"name":"age","shape":[1],"datatype":"FP32","data":[1]},{"name":"bp","shape":[1,1],"datatype":"INT64","data":[2]}]}"#.to_vec(),
                br#"{"instances":[[1,2],{"age":3,"bp":4}]}"#.to_vec(),
                br#"{"inputs":{"age":[1,2],"bp":[3,4]}}"#.to_vec(),
            ];
            let mut bodies = vec![noise];
            for mut body in valid {
                let i = at % body.len();
                body[i] = byte;
                bodies.push(body);
            }
            for body in &bodies {
                for decoded in [decode_v2(&f, body, 100).map(|(_, m)| m), decode_v1(&f, body, 100)] {
                    match decoded {
                        Ok(m) => proptest::prop_assert_eq!(m.values.len(), m.rows * f.len()),
                        Err(ServeError::BadInput { field, .. }) => proptest::prop_assert!(!field.is_empty()),
                        Err(other) => proptest::prop_assert!(false, "{other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_missing_feature_column_is_named() {
        let three: Vec<String> = vec!["age".into(), "bp".into(), "chol".into()];
        let given = [tensor("age", &[1], "FP32", json!([50])), tensor("bp", &[1], "FP32", json!([1]))];
        assert_eq!(field(from_tensors(&three, &given, 100)), "chol");
    }

    #[test]
    fn v1_rows_objects_and_columns_give_the_same_rows_and_errors_name_the_cell() {
        let expected = Features { rows: 2, values: vec![50.0, 120.0, 60.0, 130.0] };
        let request = |v: Value| serde_json::from_value::<PredictRequest>(v).unwrap();
        let f = features();
        for body in [
            json!({"instances": [[50, 120], [60, 130]]}),
            json!({"instances": [{"age": 50, "bp": 120}, {"bp": 130, "age": 60}]}),
            json!({"inputs": {"age": [50, 60], "bp": [120, 130]}}),
            json!({"inputs": [[50, 120], [60, 130]]}),
        ] {
            assert_eq!(from_instances(&f, &request(body.clone()), 100).unwrap(), expected, "{body}");
        }
        let bad = |body: Value| field(from_instances(&f, &request(body), 100));
        assert_eq!(bad(json!({"instances": [[50, 120], [60]]})), "instances[1]");
        assert_eq!(bad(json!({"instances": [{"age": 50}]})), "instances[0].bp");
        assert_eq!(bad(json!({"instances": [{"age": 50, "bp": 1, "chol": 2}]})), "instances[0].chol");
        assert_eq!(bad(json!({"instances": [[50, null]]})), "instances[0][1]");
        assert_eq!(bad(json!({"inputs": {"age": [50, 60], "bp": [120]}})), "inputs.bp");
        assert_eq!(bad(json!({"inputs": {"age": [50]}})), "inputs.bp");
        assert_eq!(bad(json!({})), "instances");
        assert_eq!(bad(json!({"instances": [[1, 2]], "inputs": {}})), "instances");
        assert_eq!(bad(json!({"instances": vec![[1, 2]; 101]})), "instances");
    }
}
