//! Loading a node's local CSV against the federation schema, the train/held-out split, and feature scaling
//! (the federation's declared scaling when the schema declares bounds, else local standardization).
//!
//! Every problem is reported with the column and the 1-based line of the file where it was found, before any
//! training starts.

use crate::config::Schema;
use crate::model::TaskKind;
use crate::secret::NodeSecret;
use std::path::{Path, PathBuf};

/// Local data that does not fit the schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A schema column is missing from the header.
    #[error("{path}: column {column:?} required by the federation schema is missing from the header (line 1)")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
    },
    /// A value that is not a number, or a label outside the task's range.
    #[error("{path}: line {line}, column {column:?}: {problem}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line number (line 1 is the header).
        line: u64,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// A row with more or fewer fields than the header.
    #[error("{path}: line {line}: the row has {fields} fields but the header has {header}")]
    RowWidth {
        /// The file.
        path: PathBuf,
        /// 1-based line number (line 1 is the header).
        line: u64,
        /// Fields in the row.
        fields: usize,
        /// Fields in the header.
        header: usize,
    },
    /// No data rows.
    #[error("{path}: no data rows")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// `[lo, hi]` widened by `widen` of its width on each side; an empty or one-point range becomes one unit wide.
fn widened([lo, hi]: [f64; 2], widen: f64) -> [f64; 2] {
    match hi > lo {
        true => [lo - widen * (hi - lo), hi + widen * (hi - lo)],
        // A constant column (a border pixel that is always blank) still needs a valid range.
        false if lo.is_finite() => [lo - 0.5, lo + 0.5],
        false => [-0.5, 0.5],
    }
}

/// A feature matrix with its targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major features, `rows × dims`.
    pub features: Vec<f32>,
    /// Targets: class ids as `f32` for classification, values for regression.
    pub targets: Vec<f32>,
    /// Number of feature columns.
    pub dims: usize,
}

impl Dataset {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    /// Class ids (classification).
    pub fn class_ids(&self) -> Vec<usize> {
        self.targets.iter().map(|t| *t as usize).collect()
    }

    /// Each feature's observed range widened by `widen` of its width on both sides: a starting point for a
    /// federation's declared `schema.bounds` from a public or synthetic data set (a real federation takes them
    /// from its data dictionary; computing them from private rows would itself be a release). A constant column
    /// gets the range of width 1 centred on its value.
    pub fn widened_ranges(&self, widen: f64) -> Vec<[f64; 2]> {
        let mut ranges = vec![[f64::INFINITY, f64::NEG_INFINITY]; self.dims];
        for row in self.features.chunks_exact(self.dims.max(1)) {
            for (range, &v) in ranges.iter_mut().zip(row) {
                range[0] = range[0].min(f64::from(v));
                range[1] = range[1].max(f64::from(v));
            }
        }
        ranges.into_iter().map(|range| widened(range, widen)).collect()
    }

    /// The targets' range, widened like [`Dataset::widened_ranges`]: a declared `label_bounds` for a data set
    /// whose owner knows every row (the simulator, the demo).
    pub fn widened_target_range(&self, widen: f64) -> [f64; 2] {
        let range = self
            .targets
            .iter()
            .fold([f64::INFINITY, f64::NEG_INFINITY], |[lo, hi], &t| [lo.min(f64::from(t)), hi.max(f64::from(t))]);
        widened(range, widen)
    }

    /// The rows `rows` of this data set, in that order.
    ///
    /// # Panics
    /// When a row index is out of range (callers select among indices below [`Dataset::rows`]).
    pub fn select(&self, rows: &[usize]) -> Self {
        let mut features = Vec::with_capacity(rows.len() * self.dims);
        for &r in rows {
            features.extend_from_slice(&self.features[r * self.dims..(r + 1) * self.dims]);
        }
        Self { features, targets: rows.iter().map(|&r| self.targets[r]).collect(), dims: self.dims }
    }
}

/// Per-feature centering and scaling: `(x - mean) / std`. Either the federation's declared scaling
/// ([`Schema::declared_scaling`], identical at every node and at serving) or, without declared bounds, this
/// node's own means and standard deviations.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    /// Means.
    pub mean: Vec<f32>,
    /// Standard deviations (1 for constant columns).
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Computes statistics from `data` (the node's own training split).
    pub fn fit(data: &Dataset) -> Self {
        let (n, d) = (data.rows().max(1) as f64, data.dims);
        let mut mean = vec![0.0f64; d];
        for row in data.features.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; d];
        for row in data.features.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(*v) - m).powi(2);
            }
        }
        let std = var.iter().map(|s| (s / n).sqrt()).map(|s| if s > 1e-12 { s as f32 } else { 1.0 }).collect();
        Self { mean: mean.into_iter().map(|m| m as f32).collect(), std }
    }

    /// The scaling a data set gets under `schema`: the federation's declared scaling when the schema declares
    /// bounds (identical everywhere), else the statistics of `data` itself.
    pub fn for_schema(schema: &Schema, data: &Dataset) -> Self {
        match schema.declared_scaling() {
            Some((mean, std)) => Self { mean, std },
            None => Self::fit(data),
        }
    }

    /// Standardizes `data` in place.
    pub fn apply(&self, data: &mut Dataset) {
        let d = data.dims;
        for row in data.features.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }
}

/// A node's data after loading: the standardized training and held-out splits.
#[derive(Debug, Clone)]
pub struct LocalData {
    /// Training rows, standardized.
    pub train: Dataset,
    /// Held-out rows, standardized with the training statistics.
    pub holdout: Dataset,
    /// The statistics used.
    pub standardizer: Standardizer,
    /// The node-salted fingerprint of the schema and row count ([`NodeSecret::fingerprint`]; never of the
    /// data, and not checkable against a guessed row count without the node secret).
    pub fingerprint: String,
}

/// Reads `path` against `schema`.
///
/// # Errors
/// [`DataError`] naming the file, line and column of the first problem.
pub fn load_csv(path: &Path, schema: &Schema) -> Result<Dataset, DataError> {
    let read_err = |e: &dyn std::fmt::Display| DataError::Read { path: path.to_owned(), message: e.to_string() };
    // Read whole, so that every problem is reported at its physical line: the csv crate skips blank lines without
    // counting them, and counts records rather than lines.
    let bytes = std::fs::read(path).map_err(|e| read_err(&e))?;
    let mut lines = LineCounter::new(&bytes);
    // Flexible, so that a row of the wrong width is reported here with its line, not as a csv error.
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes.as_slice());
    let headers = reader.headers().map_err(|e| read_err(&e))?.clone();
    let index_of = |column: &str| {
        headers
            .iter()
            .position(|h| h.trim() == column)
            .ok_or_else(|| DataError::MissingColumn { path: path.to_owned(), column: column.to_owned() })
    };
    let feature_idx = schema.features.iter().map(|f| index_of(f)).collect::<Result<Vec<_>, _>>()?;
    let label_idx = index_of(&schema.label)?;
    let classes = schema.outputs();
    let mut data = Dataset { features: Vec::new(), targets: Vec::new(), dims: feature_idx.len() };
    for record in reader.records() {
        let record = record.map_err(|e| read_err(&e))?;
        let line = record.position().map_or(0, |p| lines.line_of_record_at(p.byte()));
        if record.len() != headers.len() {
            return Err(DataError::RowWidth {
                path: path.to_owned(),
                line,
                fields: record.len(),
                header: headers.len(),
            });
        }
        let parse = |idx: usize, column: &str| -> Result<f64, DataError> {
            let bad = |problem: String| DataError::BadValue {
                path: path.to_owned(),
                line,
                column: column.to_owned(),
                problem,
            };
            let raw = record.get(idx).ok_or_else(|| bad("missing value".into()))?.trim();
            let v: f64 = raw.parse().map_err(|_| bad(format!("{raw:?} is not a number")))?;
            if v.is_finite() { Ok(v) } else { Err(bad(format!("{raw:?} is not finite"))) }
        };
        for (idx, name) in feature_idx.iter().zip(&schema.features) {
            data.features.push(parse(*idx, name)? as f32);
        }
        let label = parse(label_idx, &schema.label)?;
        if schema.task != TaskKind::Regression && (label.fract() != 0.0 || label < 0.0 || label >= classes as f64) {
            return Err(DataError::BadValue {
                path: path.to_owned(),
                line,
                column: schema.label.clone(),
                problem: format!("label {label} is not a class id in 0..{classes}"),
            });
        }
        data.targets.push(label as f32);
    }
    if data.rows() == 0 {
        return Err(DataError::Empty { path: path.to_owned() });
    }
    Ok(data)
}

/// The 1-based line of byte offsets in a file, for offsets that only grow (one pass over the file in all).
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0, line: 1 }
    }

    /// The line where the record that the csv crate places at `byte` starts: csv gives the end of the previous
    /// record, so the blank lines in between are skipped first.
    fn line_of_record_at(&mut self, byte: u64) -> u64 {
        let mut target = usize::try_from(byte).unwrap_or(usize::MAX).min(self.bytes.len());
        while matches!(self.bytes.get(target), Some(b'\n' | b'\r')) {
            target += 1;
        }
        if target > self.offset {
            self.line += self.bytes[self.offset..target].iter().filter(|&&b| b == b'\n').count() as u64;
            self.offset = target;
        }
        self.line
    }
}

/// Fingerprint of a node's data: the node-salted hash ([`NodeSecret::fingerprint`]) of the schema (as JSON)
/// and the row count. Never over the data.
pub fn fingerprint(secret: &NodeSecret, schema: &Schema, rows: usize) -> String {
    let mut what = serde_json::to_vec(schema).unwrap_or_default();
    what.extend_from_slice(&(rows as u64).to_le_bytes());
    secret.fingerprint(&what)
}

/// Loads, splits and standardizes a node's data. Each row goes to the held-out split on its own, by the keyed
/// hash of its content ([`NodeSecret::holds_out`] under split id `split_seed`): the split is stable, and adding
/// a row moves no other row.
///
/// # Errors
/// [`DataError`] from [`load_csv`], or [`DataError::Empty`] when the training split would be empty.
pub fn prepare(
    path: &Path,
    schema: &Schema,
    holdout_fraction: f64,
    split_seed: u64,
    secret: &NodeSecret,
) -> Result<LocalData, DataError> {
    let all = load_csv(path, schema)?;
    let split = Split::of(&all, holdout_fraction, split_seed, secret);
    prepare_rows(&all, &split, path, schema, secret)
}

/// Which rows of a data set a node trains on and which it holds out, as row indices in increasing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Held-out rows.
    pub holdout: Vec<usize>,
}

impl Split {
    /// The split [`prepare`] makes of `all`: each row is held out on its own, by the keyed hash of its content
    /// ([`NodeSecret::holds_out`] under split id `split_seed`).
    pub fn of(all: &Dataset, holdout_fraction: f64, split_seed: u64, secret: &NodeSecret) -> Self {
        let d = all.dims;
        let (holdout, train) = (0..all.rows()).partition(|&r| {
            secret.holds_out(split_seed, &all.features[r * d..(r + 1) * d], all.targets[r], holdout_fraction)
        });
        Self { train, holdout }
    }
}

/// [`prepare`] for rows already loaded (`all`, read from `origin`, which error messages name) and split
/// ([`Split::of`]): standardizes them under `schema`. A simulation gives each node its partition this way.
///
/// # Errors
/// [`DataError::Empty`] when the training split is empty.
pub fn prepare_rows(
    all: &Dataset,
    split: &Split,
    origin: &Path,
    schema: &Schema,
    secret: &NodeSecret,
) -> Result<LocalData, DataError> {
    let mut train = all.select(&split.train);
    let mut holdout = all.select(&split.holdout);
    if train.rows() == 0 {
        return Err(DataError::Empty { path: origin.to_owned() });
    }
    let standardizer = Standardizer::for_schema(schema, &train);
    standardizer.apply(&mut train);
    standardizer.apply(&mut holdout);
    Ok(LocalData { fingerprint: fingerprint(secret, schema, all.rows()), train, holdout, standardizer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            features: vec!["a".into(), "b".into()],
            label: "y".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: None,
            label_bounds: None,
        }
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn loads_columns_by_name_in_schema_order() {
        let (_d, p) = write("b,y,a\n2,1,1\n4,0,3\n");
        let data = load_csv(&p, &schema()).unwrap();
        assert_eq!(data.features, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(data.targets, vec![1.0, 0.0]);
    }

    #[test]
    fn names_the_line_and_column_of_the_first_problem() {
        let (_d, p) = write("a,b,y\n1,2,0\n1,x,1\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("\"b\"") && err.contains("not a number"), "{err}");
        let (_d, p) = write("a,b,y\n1,2,2\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("\"y\""), "{err}");
        let (_d, p) = write("a,y\n1,0\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("column \"b\"") && err.contains("missing"), "{err}");
    }

    #[test]
    fn a_row_with_too_few_fields_is_reported_at_its_own_line() {
        for (text, line) in [
            ("a,b,y\n1,2\n", 2),
            ("a,b,y\n1,2,0\n1,2\n", 3),
            ("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7\n", 5),
            // Blank lines count as lines of the file.
            ("a,b,y\n1,2,0\n\n1,2\n", 4),
        ] {
            let (_d, p) = write(text);
            let err = load_csv(&p, &schema()).unwrap_err();
            let said = err.to_string();
            assert!(matches!(&err, DataError::RowWidth { line: l, header: 3, .. } if *l == line), "{text:?}: {said}");
            assert!(said.contains(&format!("line {line}: the row has")) && said.contains("header has 3"), "{said}");
        }
        let (_d, p) = write("a,b,y\n1,2,0\n1,2,0,9\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("line 3: the row has 4 fields but the header has 3"), "{err}");
        // Windows line ends.
        let (_d, p) = write("a,b,y\r\n1,2,0\r\n\r\n1,2\r\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("line 4: the row has 2 fields"), "{err}");
        // Values after a blank line are reported at their own line too.
        let (_d, p) = write("a,b,y\n1,2,0\n\n1,x,1\n");
        let err = load_csv(&p, &schema()).unwrap_err().to_string();
        assert!(err.contains("line 4,") && err.contains("\"b\""), "{err}");
    }

    #[test]
    fn split_is_stable_and_standardized_on_train_statistics() {
        let mut text = String::from("a,b,y\n");
        for i in 0..50 {
            text.push_str(&format!("{},{},{}\n", i, 100 - i, i % 2));
        }
        let (_d, p) = write(&text);
        let secret = NodeSecret::from_bytes([3; 32]);
        let one = prepare(&p, &schema(), 0.2, 7, &secret).unwrap();
        let two = prepare(&p, &schema(), 0.2, 7, &secret).unwrap();
        assert_eq!(one.holdout, two.holdout);
        assert_eq!(one.train.rows() + one.holdout.rows(), 50);
        assert!((3..=18).contains(&one.holdout.rows()), "{}", one.holdout.rows());
        let n = one.train.rows() as f32;
        let mean_a: f32 = one.train.features.chunks(2).map(|r| r[0]).sum::<f32>() / n;
        assert!(mean_a.abs() < 1e-5);
        assert_ne!(
            one.fingerprint,
            prepare(&p, &schema(), 0.2, 7, &NodeSecret::from_bytes([4; 32])).unwrap().fingerprint
        );
    }

    /// Adding one row to a data set moves no other row between the splits (a seeded shuffle moved about a
    /// third of them).
    #[test]
    fn adding_a_row_moves_no_other_row_between_the_splits() {
        let rows: Vec<String> = (0..200).map(|i| format!("{},{},{}", i, (i * 7) % 13, i % 2)).collect();
        let (_d, small) = write(&format!("a,b,y\n{}\n", rows.join("\n")));
        let (_e, large) = write(&format!("a,b,y\n{}\n500,5,1\n", rows.join("\n")));
        let secret = NodeSecret::from_bytes([5; 32]);
        let schema = Schema { bounds: Some(vec![[0.0, 1000.0], [0.0, 20.0]]), ..schema() };
        let (a, b) =
            (prepare(&small, &schema, 0.2, 0, &secret).unwrap(), prepare(&large, &schema, 0.2, 0, &secret).unwrap());
        let rows_of = |d: &Dataset| d.features.chunks(2).map(|r| (r[0].to_bits(), r[1].to_bits())).collect::<Vec<_>>();
        let (train_a, train_b) = (rows_of(&a.train), rows_of(&b.train));
        let (hold_a, hold_b) = (rows_of(&a.holdout), rows_of(&b.holdout));
        assert!(train_a.iter().all(|r| train_b.contains(r)), "a training row moved");
        assert!(hold_a.iter().all(|r| hold_b.contains(r)), "a held-out row moved");
        assert_eq!(train_a.len() + hold_a.len() + 1, train_b.len() + hold_b.len());
    }
}
