//! The data set a simulation deals out: a built-in public data set, a CSV file, or synthetic rows. It is loaded
//! once; clients get their rows by index ([`crate::partition`]).

use cohort_core::config::Schema;
use cohort_core::data::{self, DataError, Dataset};
use cohort_core::model::TaskKind;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The largest class count a CSV label may imply before it is read as a regression target.
const MAX_INFERRED_CLASSES: usize = 100;

/// Where a simulation's rows come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// One of the public data sets shipped with Cohort.
    Builtin {
        /// Which.
        name: Builtin,
    },
    /// A CSV file with a header; the label is `label`, or the last column.
    Csv {
        /// The file.
        path: PathBuf,
        /// The label column (default: the last column).
        label: Option<String>,
    },
    /// Gaussian features labelled by a random linear teacher: `rows_per_client` rows for every client.
    Synthetic {
        /// Rows per client.
        rows_per_client: usize,
        /// Features.
        features: usize,
        /// Classes (≥ 2), or 0 for a regression target.
        classes: usize,
    },
}

/// The public data sets (scikit-learn's copies of UCI data), shipped in `examples/data/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Breast Cancer Wisconsin (Diagnostic): 569 × 30, binary.
    BreastCancer,
    /// Optical recognition of handwritten digits: 1797 × 64, ten classes.
    Digits,
    /// Diabetes progression: 442 × 10, regression.
    Diabetes,
}

impl Builtin {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::BreastCancer => "breast_cancer",
            Self::Digits => "digits",
            Self::Diabetes => "diabetes",
        }
    }

    fn csv(self) -> &'static str {
        match self {
            Self::BreastCancer => include_str!("../../examples/data/breast_cancer.csv"),
            Self::Digits => include_str!("../../examples/data/digits.csv"),
            Self::Diabetes => include_str!("../../examples/data/diabetes.csv"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::BreastCancer => "malignant",
            Self::Digits => "digit",
            Self::Diabetes => "progression",
        }
    }
}

/// A `--dataset` or `--synthetic` argument that cannot be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(String);

impl FromStr for Source {
    type Err = SourceError;

    /// `breast_cancer`, `digits`, `diabetes`, or a path ending in `.csv`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for name in [Builtin::BreastCancer, Builtin::Digits, Builtin::Diabetes] {
            if s == name.name() {
                return Ok(Self::Builtin { name });
            }
        }
        if s.ends_with(".csv") {
            return Ok(Self::Csv { path: PathBuf::from(s), label: None });
        }
        Err(SourceError(format!(
            "unknown data set {s:?}: expected breast_cancer, digits, diabetes or a path to a .csv file"
        )))
    }
}

impl Source {
    /// `ROWS_PER_CLIENT,FEATURES,CLASSES` (CLASSES 0 for regression), as `--synthetic` takes it.
    ///
    /// # Errors
    /// [`SourceError`] for anything else.
    pub fn synthetic(spec: &str) -> Result<Self, SourceError> {
        let bad = || {
            SourceError(format!(
                "--synthetic {spec:?}: expected ROWS_PER_CLIENT,FEATURES,CLASSES such as 1000,50,2 (CLASSES 0 for regression)"
            ))
        };
        let parts: Vec<usize> =
            spec.split(',').map(|p| p.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        match parts[..] {
            [rows_per_client, features, classes] if rows_per_client >= 2 && features >= 1 && classes != 1 => {
                Ok(Self::Synthetic { rows_per_client, features, classes })
            }
            _ => Err(bad()),
        }
    }

    /// A short name for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Builtin { name } => name.name().to_owned(),
            Self::Csv { path, .. } => path.display().to_string(),
            Self::Synthetic { rows_per_client, features, classes } => {
                format!("synthetic {rows_per_client} rows/client × {features} features, {classes} classes")
            }
        }
    }
}

/// A loaded data set: its schema (with the federation's declared feature bounds), its raw rows, and the values of
/// a partition column when one was asked for.
#[derive(Debug, Clone)]
pub struct Table {
    /// The schema every node and the coordinator use.
    pub schema: Schema,
    /// The rows, unscaled.
    pub data: Dataset,
    /// The partition column's value per row (it is not a feature).
    pub column: Option<Vec<f32>>,
}

impl Table {
    /// Loads `source` (synthetic rows for `clients` clients from `rng`), writing built-in data to `scratch` first.
    /// `column` names a partition column, kept out of the features.
    ///
    /// # Errors
    /// [`DataError`] naming the file, line and column of the first problem.
    pub fn load<R: Rng + ?Sized>(
        source: &Source,
        column: Option<&str>,
        clients: usize,
        scratch: &Path,
        rng: &mut R,
    ) -> Result<Self, DataError> {
        let (path, label) = match source {
            Source::Synthetic { rows_per_client, features, classes } => {
                return Ok(synthetic(rows_per_client * clients, *features, *classes, rng));
            }
            Source::Builtin { name } => {
                let path = scratch.join(format!("{}.csv", name.name()));
                std::fs::create_dir_all(scratch)
                    .and_then(|()| std::fs::write(&path, name.csv()))
                    .map_err(|e| DataError::Read { path: path.clone(), message: e.to_string() })?;
                (path, Some(name.label().to_owned()))
            }
            Source::Csv { path, label } => (path.clone(), label.clone()),
        };
        let header = read_header(&path)?;
        let label = label.or_else(|| header.last().cloned()).unwrap_or_default();
        let features: Vec<String> =
            header.iter().filter(|h| **h != label && Some(h.as_str()) != column).cloned().collect();
        // Read once as regression to see the targets, then with the task they imply.
        let mut schema = Schema {
            features,
            label: label.clone(),
            task: TaskKind::Regression,
            classes: None,
            bounds: None,
            label_bounds: None,
        };
        let raw = data::load_csv(&path, &schema)?;
        (schema.task, schema.classes) = infer_task(&raw.targets);
        let data = if schema.task == TaskKind::Regression { raw } else { data::load_csv(&path, &schema)? };
        let column = match column {
            Some(name) => {
                let only = Schema {
                    features: vec![name.to_owned()],
                    label,
                    task: TaskKind::Regression,
                    classes: None,
                    bounds: None,
                    label_bounds: None,
                };
                Some(data::load_csv(&path, &only)?.features)
            }
            None => None,
        };
        // The federation's declared ranges: the whole data set's, widened by 10% each side (the simulator owns
        // every row, as a data dictionary would describe them).
        schema.bounds = Some(data.widened_ranges(0.1));
        if schema.task == TaskKind::Regression {
            schema.label_bounds = Some(data.widened_target_range(0.1));
        }
        Ok(Self { schema, data, column })
    }

    /// One label per row for the partitioners: class ids, or quantile bins of a regression target.
    pub fn partition_labels(&self) -> Vec<usize> {
        match self.schema.task {
            TaskKind::Regression => crate::partition::quantile_bins(&self.data.targets),
            _ => self.data.class_ids(),
        }
    }
}

fn read_header(path: &Path) -> Result<Vec<String>, DataError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::Read { path: path.to_owned(), message: e.to_string() })?;
    let first = text.lines().next().unwrap_or_default();
    Ok(first.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect())
}

/// The task a label column implies: whole numbers `0..k` with `2 ≤ k ≤` [`MAX_INFERRED_CLASSES`] are classes
/// (binary for k = 2), anything else a regression target.
fn infer_task(targets: &[f32]) -> (TaskKind, Option<usize>) {
    let whole = targets.iter().all(|t| t.fract() == 0.0 && *t >= 0.0);
    let classes = targets.iter().fold(0.0f32, |m, &t| m.max(t)) as usize + 1;
    match (whole, classes) {
        (true, 2) => (TaskKind::Binary, None),
        (true, k) if (3..=MAX_INFERRED_CLASSES).contains(&k) => (TaskKind::Multiclass, Some(k)),
        _ => (TaskKind::Regression, None),
    }
}

/// `rows` rows of `features` standard normal features, labelled by a random linear teacher `W` (standard
/// normal): the class is `argmax(Wx + g)` with standard Gumbel noise `g` (a softmax model, so logistic regression
/// is well specified), or for regression `y = w·x / √features + N(0, 0.1²)`.
fn synthetic<R: Rng + ?Sized>(rows: usize, features: usize, classes: usize, rng: &mut R) -> Table {
    let outputs = classes.max(1);
    let teacher: Vec<f32> = (0..outputs * features).map(|_| StandardNormal.sample(rng)).collect();
    let mut data =
        Dataset { features: Vec::with_capacity(rows * features), targets: Vec::with_capacity(rows), dims: features };
    let scale = 1.0 / (features as f32).sqrt();
    for _ in 0..rows {
        let start = data.features.len();
        data.features.extend((0..features).map(|_| Distribution::<f32>::sample(&StandardNormal, &mut *rng)));
        let x = &data.features[start..];
        let score = |k: usize| teacher[k * features..(k + 1) * features].iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
        let target = if classes >= 2 {
            let gumbel = |rng: &mut R| -(-(rng.random::<f64>().max(f64::MIN_POSITIVE)).ln()).ln() as f32;
            (0..classes)
                .map(|k| (k, score(k) * 2.0 * scale + gumbel(rng)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(k, _)| k) as f32
        } else {
            score(0) * scale + 0.1 * Distribution::<f32>::sample(&StandardNormal, &mut *rng)
        };
        data.targets.push(target);
    }
    let (task, classes) = match classes {
        0 => (TaskKind::Regression, None),
        2 => (TaskKind::Binary, None),
        k => (TaskKind::Multiclass, Some(k)),
    };
    let schema = Schema {
        features: (0..features).map(|i| format!("x{i}")).collect(),
        label: "y".into(),
        task,
        classes,
        bounds: Some(data.widened_ranges(0.1)),
        label_bounds: (task == TaskKind::Regression).then(|| data.widened_target_range(0.1)),
    };
    Table { schema, data, column: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn builtins_load_with_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let cases = [
            ("breast_cancer", 569, 30, TaskKind::Binary),
            ("digits", 1797, 64, TaskKind::Multiclass),
            ("diabetes", 442, 10, TaskKind::Regression),
        ];
        for (name, rows, dims, task) in cases {
            let table = Table::load(&name.parse().unwrap(), None, 1, dir.path(), &mut rng).unwrap();
            assert_eq!((table.data.rows(), table.data.dims, table.schema.task), (rows, dims, task), "{name}");
            assert_eq!(table.schema.bounds.as_ref().map(Vec::len), Some(dims));
        }
        let digits = Table::load(&"digits".parse().unwrap(), None, 1, dir.path(), &mut rng).unwrap();
        assert_eq!(digits.schema.classes, Some(10));
    }

    #[test]
    fn a_csv_with_a_site_column_keeps_it_out_of_the_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sites.csv");
        std::fs::write(&path, "a,site,b,y\n1,1,2,0\n2,1,3,1\n3,2,4,0\n4,2,5,1\n").unwrap();
        let source = Source::Csv { path, label: None };
        let table = Table::load(&source, Some("site"), 1, dir.path(), &mut rand::rng()).unwrap();
        assert_eq!(table.schema.features, ["a", "b"]);
        assert_eq!(table.schema.task, TaskKind::Binary);
        assert_eq!(table.column, Some(vec![1.0, 1.0, 2.0, 2.0]));
    }

    #[test]
    fn synthetic_rows_are_learnable_and_balanced() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let table = synthetic(4000, 20, 2, &mut rng);
        assert_eq!((table.data.rows(), table.data.dims), (4000, 20));
        let ones = table.data.targets.iter().filter(|&&t| t == 1.0).count();
        assert!((1000..3000).contains(&ones), "{ones}");
        let regression = synthetic(100, 5, 0, &mut rng);
        assert_eq!(regression.schema.task, TaskKind::Regression);
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(
            Source::synthetic("1000,50,2").unwrap(),
            Source::Synthetic { rows_per_client: 1000, features: 50, classes: 2 }
        );
        for bad in ["1000,50", "1000,50,1", "x,1,2", "1,5,2"] {
            assert!(Source::synthetic(bad).is_err(), "{bad}");
        }
        assert!("mnist".parse::<Source>().unwrap_err().to_string().contains("breast_cancer, digits, diabetes"));
    }
}
