//! Partitioners: how a simulation deals the rows of one data set out to its clients, by index.
//!
//! Every partitioner returns, for each client, the indices of its rows (sorted, disjoint, covering every row
//! except where a scheme drops remainders, which it documents). The rows themselves are never copied here.
//! The schemes follow the federated-learning literature and flwr-datasets' partitioners:
//!
//! - [`Partition::Iid`]: a uniform shuffle dealt round-robin (sizes differ by at most one).
//! - [`Partition::Dirichlet`]: label skew (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data
//!   distribution"): for each class, the shares of its rows going to the clients are drawn from
//!   Dirichlet(α, …, α). Small α gives each client a few dominant classes; large α approaches IID.
//! - [`Partition::Shards`]: pathological non-IID (McMahan et al. 2017): rows sorted by label and cut into
//!   `clients × k` equal shards, each client taking `k` shards at random.
//! - [`Partition::Quantity`]: quantity skew: client `i` (1-based) gets a share proportional to `i^-power` of
//!   IID-shuffled rows (`power = 0` is IID).
//! - [`Partition::Column`]: a natural partition, one client per distinct value of a column (a site id).
//!
//! Regression targets are cut into [`REGRESSION_BINS`] quantile bins to act as labels for the label-based schemes.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Quantile bins that stand in for labels when a label-based scheme partitions a regression data set.
pub const REGRESSION_BINS: usize = 10;

/// The fewest rows any client may get: enough for a training row and a fair chance of held-out rows.
pub const MIN_ROWS_PER_CLIENT: usize = 2;

/// How many times [`Partition::Dirichlet`] redraws its proportions before it gives up on giving every client
/// [`MIN_ROWS_PER_CLIENT`] rows (flwr-datasets redraws the same way).
const DIRICHLET_ATTEMPTS: usize = 200;

/// A partitioning scheme, parsed from `iid`, `dirichlet:ALPHA`, `shards:K`, `quantity:POWER` or `column:NAME`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Partition {
    /// Uniform at random.
    Iid,
    /// Label skew with concentration `alpha` (> 0).
    Dirichlet {
        /// The concentration α.
        alpha: f64,
    },
    /// `per_client` label-sorted shards per client.
    Shards {
        /// Shards per client (≥ 1).
        per_client: usize,
    },
    /// Sizes proportional to `i^-power`.
    Quantity {
        /// The exponent (≥ 0).
        power: f64,
    },
    /// One client per distinct value of a column.
    Column {
        /// The column's name in the CSV header.
        name: String,
    },
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iid => f.write_str("iid"),
            Self::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            Self::Shards { per_client } => write!(f, "shards:{per_client}"),
            Self::Quantity { power } => write!(f, "quantity:{power}"),
            Self::Column { name } => write!(f, "column:{name}"),
        }
    }
}

/// A partition that cannot be parsed or made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The text is not one of the schemes.
    #[error(
        "unknown partition {0:?}: expected iid, dirichlet:ALPHA (α > 0), shards:K (K ≥ 1), quantity:POWER (≥ 0) or \
         column:NAME"
    )]
    Unknown(String),
    /// Fewer rows than the clients need.
    #[error("{rows} rows cannot give {clients} clients {min} rows each; use fewer clients or more rows")]
    TooFewRows {
        /// Rows in the data set.
        rows: usize,
        /// Clients asked for.
        clients: usize,
        /// Rows each client needs.
        min: usize,
    },
    /// Dirichlet draws kept leaving a client with too few rows.
    #[error(
        "dirichlet:{alpha} left some client with fewer than {min} rows in {attempts} draws over {clients} clients; \
         use a larger α or fewer clients"
    )]
    Degenerate {
        /// The concentration.
        alpha: f64,
        /// Clients.
        clients: usize,
        /// Rows each client needs.
        min: usize,
        /// Draws tried.
        attempts: usize,
    },
    /// `column:NAME` with a client count that is not the number of distinct values.
    #[error(
        "column {name:?} has {values} distinct values, so it makes {values} clients, not {clients}; leave the client \
         count out or set it to {values}"
    )]
    ColumnClients {
        /// The column.
        name: String,
        /// Its distinct values.
        values: usize,
        /// Clients asked for.
        clients: usize,
    },
    /// `column:NAME` without the column's values.
    #[error("partition column:{0} needs the values of column {0:?}")]
    NoColumn(String),
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || PartitionError::Unknown(s.to_owned());
        let (scheme, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
        let number = |arg: Option<&str>| arg.and_then(|a| a.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        match scheme.trim() {
            "iid" if arg.is_none() => Ok(Self::Iid),
            "dirichlet" => number(arg).filter(|&a| a > 0.0).map(|alpha| Self::Dirichlet { alpha }).ok_or_else(unknown),
            "shards" => arg
                .and_then(|a| a.trim().parse::<usize>().ok())
                .filter(|&k| k >= 1)
                .map(|per_client| Self::Shards { per_client })
                .ok_or_else(unknown),
            "quantity" => number(arg).filter(|&p| p >= 0.0).map(|power| Self::Quantity { power }).ok_or_else(unknown),
            "column" => arg
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|name| Self::Column { name: name.to_owned() })
                .ok_or_else(unknown),
            _ => Err(unknown()),
        }
    }
}

/// What a partitioner looks at: one label per row (class ids, or bins of a regression target) and, for
/// [`Partition::Column`], the column's value per row.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Label (class id or bin) of each row.
    pub labels: &'a [usize],
    /// The partition column's value of each row, when the scheme is [`Partition::Column`].
    pub column: Option<&'a [f32]>,
}

impl Partition {
    /// The number of clients this scheme makes from `rows` when `requested` clients are asked for: the request,
    /// except for [`Partition::Column`], which makes one per distinct value (`requested` must then match or be
    /// None).
    ///
    /// # Errors
    /// [`PartitionError::NoColumn`] or [`PartitionError::ColumnClients`].
    pub fn clients(&self, rows: Rows<'_>, requested: Option<usize>) -> Result<usize, PartitionError> {
        match self {
            Self::Column { name } => {
                let values = column_groups(rows.column.ok_or_else(|| PartitionError::NoColumn(name.clone()))?).len();
                match requested {
                    Some(clients) if clients != values => {
                        Err(PartitionError::ColumnClients { name: name.clone(), values, clients })
                    }
                    _ => Ok(values),
                }
            }
            _ => Ok(requested.unwrap_or(10)),
        }
    }

    /// Deals `rows` out to `clients` clients: for each client, its row indices in increasing order.
    ///
    /// # Errors
    /// [`PartitionError`] when the data cannot give every client [`MIN_ROWS_PER_CLIENT`] rows, or the column is
    /// missing.
    pub fn assign<R: Rng + ?Sized>(
        &self,
        rows: Rows<'_>,
        clients: usize,
        rng: &mut R,
    ) -> Result<Vec<Vec<usize>>, PartitionError> {
        let n = rows.labels.len();
        let min = MIN_ROWS_PER_CLIENT;
        if clients == 0 || n < clients * min {
            return Err(PartitionError::TooFewRows { rows: n, clients, min });
        }
        let mut parts = match self {
            Self::Iid => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(rng);
                deal(&order, clients)
            }
            Self::Dirichlet { alpha } => dirichlet(rows.labels, clients, *alpha, rng)?,
            Self::Shards { per_client } => shards(rows.labels, clients, *per_client, rng),
            Self::Quantity { power } => quantity(n, clients, *power, rng),
            Self::Column { name } => {
                let groups = column_groups(rows.column.ok_or_else(|| PartitionError::NoColumn(name.clone()))?);
                if groups.len() != clients {
                    return Err(PartitionError::ColumnClients { name: name.clone(), values: groups.len(), clients });
                }
                groups.into_values().collect()
            }
        };
        for part in &mut parts {
            part.sort_unstable();
        }
        Ok(parts)
    }
}

/// `order` dealt round-robin to `clients` clients.
fn deal(order: &[usize], clients: usize) -> Vec<Vec<usize>> {
    let mut parts = vec![Vec::with_capacity(order.len() / clients + 1); clients];
    for (i, &row) in order.iter().enumerate() {
        parts[i % clients].push(row);
    }
    parts
}

/// Rows grouped by class, each group shuffled.
fn by_class<R: Rng + ?Sized>(labels: &[usize], rng: &mut R) -> Vec<Vec<usize>> {
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut groups = vec![Vec::new(); classes];
    for (row, &label) in labels.iter().enumerate() {
        groups[label].push(row);
    }
    for group in &mut groups {
        group.shuffle(rng);
    }
    groups
}

/// One draw from the symmetric Dirichlet(α, …, α) on `k` outcomes, by normalized Gamma(α, 1) draws.
fn dirichlet_draw<R: Rng + ?Sized>(k: usize, alpha: f64, rng: &mut R) -> Vec<f64> {
    // α > 0 is checked at parsing; a Gamma that cannot be built falls back to uniform proportions.
    let Ok(gamma) = Gamma::new(alpha, 1.0) else { return vec![1.0 / k as f64; k] };
    let draws: Vec<f64> = (0..k).map(|_| gamma.sample(rng)).collect();
    let total: f64 = draws.iter().sum();
    if total > 0.0 && total.is_finite() {
        return draws.iter().map(|d| d / total).collect();
    }
    // Every draw underflowed (α of about 1e-3 or less): the Dirichlet's limit as α → 0, all mass on one
    // outcome chosen uniformly.
    let mut one_hot = vec![0.0; k];
    one_hot[rng.random_range(0..k)] = 1.0;
    one_hot
}

/// Cuts `rows` at the cumulative `proportions`, appending each piece to its client.
fn cut_by_proportions(rows: &[usize], proportions: &[f64], parts: &mut [Vec<usize>]) {
    let mut cumulative = 0.0;
    let mut start = 0;
    for (c, p) in proportions.iter().enumerate() {
        cumulative += p;
        let end = if c + 1 == proportions.len() {
            rows.len()
        } else {
            ((cumulative * rows.len() as f64).round() as usize).min(rows.len())
        };
        let end = end.max(start);
        parts[c].extend_from_slice(&rows[start..end]);
        start = end;
    }
}

fn dirichlet<R: Rng + ?Sized>(
    labels: &[usize],
    clients: usize,
    alpha: f64,
    rng: &mut R,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    let groups = by_class(labels, rng);
    for _ in 0..DIRICHLET_ATTEMPTS {
        let mut parts = vec![Vec::new(); clients];
        for group in &groups {
            cut_by_proportions(group, &dirichlet_draw(clients, alpha, rng), &mut parts);
        }
        if parts.iter().all(|p| p.len() >= MIN_ROWS_PER_CLIENT) {
            return Ok(parts);
        }
    }
    Err(PartitionError::Degenerate { alpha, clients, min: MIN_ROWS_PER_CLIENT, attempts: DIRICHLET_ATTEMPTS })
}

fn shards<R: Rng + ?Sized>(labels: &[usize], clients: usize, per_client: usize, rng: &mut R) -> Vec<Vec<usize>> {
    // Sorted by label, ties in random order; a remainder of fewer rows than a shard is dealt out at random.
    let mut sorted: Vec<usize> = by_class(labels, rng).concat();
    let count = clients * per_client;
    let size = (sorted.len() / count).max(1);
    let remainder = sorted.split_off((size * count).min(sorted.len()));
    let mut shard_ids: Vec<usize> = (0..count).collect();
    shard_ids.shuffle(rng);
    let mut parts: Vec<Vec<usize>> = shard_ids
        .chunks(per_client)
        .map(|ids| ids.iter().flat_map(|&s| sorted[s * size..(s + 1) * size].iter().copied()).collect())
        .collect();
    for (i, row) in remainder.into_iter().enumerate() {
        parts[i % clients].push(row);
    }
    parts
}

fn quantity<R: Rng + ?Sized>(n: usize, clients: usize, power: f64, rng: &mut R) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    // Every client first gets its minimum; the rest is cut by the power law.
    let spare = n - clients * MIN_ROWS_PER_CLIENT;
    let weights: Vec<f64> = (1..=clients).map(|i| (i as f64).powf(-power)).collect();
    let total: f64 = weights.iter().sum();
    let mut parts = Vec::with_capacity(clients);
    let (mut start, mut cumulative) = (0, 0.0);
    for (c, w) in weights.iter().enumerate() {
        cumulative += w / total;
        let extra_end = if c + 1 == clients { spare } else { (cumulative * spare as f64).round() as usize };
        let end = (c + 1) * MIN_ROWS_PER_CLIENT + extra_end.min(spare);
        let end = end.max(start + MIN_ROWS_PER_CLIENT).min(n);
        parts.push(order[start..end].to_vec());
        start = end;
    }
    parts
}

/// Rows grouped by the column's value, in increasing order of the value (NaN last).
fn column_groups(column: &[f32]) -> BTreeMap<OrderedValue, Vec<usize>> {
    let mut groups: BTreeMap<OrderedValue, Vec<usize>> = BTreeMap::new();
    for (row, &v) in column.iter().enumerate() {
        groups.entry(OrderedValue(v)).or_default().push(row);
    }
    groups
}

/// An `f32` ordered by [`f32::total_cmp`], as a map key.
#[derive(Debug, Clone, Copy)]
struct OrderedValue(f32);

impl PartialEq for OrderedValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for OrderedValue {}

impl PartialOrd for OrderedValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Regression targets as [`REGRESSION_BINS`] quantile bins (bin 0 holds the smallest tenth).
pub fn quantile_bins(targets: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[a].total_cmp(&targets[b]));
    let mut bins = vec![0; targets.len()];
    for (rank, &row) in order.iter().enumerate() {
        bins[row] = rank * REGRESSION_BINS / targets.len().max(1);
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn labels(n: usize, classes: usize) -> Vec<usize> {
        (0..n).map(|i| i % classes).collect()
    }

    fn rows(labels: &[usize]) -> Rows<'_> {
        Rows { labels, column: None }
    }

    /// Every row once, in no more than one client.
    fn assert_covers(parts: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(parts.iter().all(|p| p.len() >= MIN_ROWS_PER_CLIENT));
    }

    fn class_counts(part: &[usize], labels: &[usize], classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &r in part {
            counts[labels[r]] += 1;
        }
        counts
    }

    #[test]
    fn schemes_parse_and_print_back() {
        for text in ["iid", "dirichlet:0.5", "shards:2", "quantity:1.5", "column:site"] {
            let p: Partition = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        for bad in [
            "",
            "iid:3",
            "dirichlet",
            "dirichlet:0",
            "dirichlet:-1",
            "dirichlet:nan",
            "shards:0",
            "quantity:-1",
            "column:",
            "zipf",
        ] {
            assert!(matches!(bad.parse::<Partition>(), Err(PartitionError::Unknown(_))), "{bad:?}");
        }
    }

    /// IID: sizes differ by at most one and each client's label mix is close to the whole data set's.
    #[test]
    fn iid_sizes_are_even_and_label_mixes_match_the_data() {
        let labels = labels(10_000, 4);
        let parts = Partition::Iid.assign(rows(&labels), 10, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        assert_covers(&parts, labels.len());
        assert!(parts.iter().all(|p| p.len() == 1000));
        for part in &parts {
            for count in class_counts(part, &labels, 4) {
                // Binomial(1000, 1/4) has sd 13.7: 6 sd either side.
                assert!((168..=332).contains(&count), "{count}");
            }
        }
    }

    /// Dirichlet(α): a client's share of a class has mean 1/N and variance (1/N)(1 − 1/N)/(Nα + 1), the
    /// Dirichlet's own; measured over classes and draws, for a small and a large α.
    #[test]
    fn dirichlet_shares_have_the_dirichlet_variance() {
        let (clients, classes) = (10usize, 50usize);
        let labels = labels(classes * 2000, classes);
        for alpha in [0.5, 5.0] {
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            let mut shares = Vec::new();
            for _ in 0..4 {
                let parts = Partition::Dirichlet { alpha }.assign(rows(&labels), clients, &mut rng).unwrap();
                assert_covers(&parts, labels.len());
                for part in &parts {
                    shares.extend(class_counts(part, &labels, classes).iter().map(|&c| c as f64 / 2000.0));
                }
            }
            let mean = shares.iter().sum::<f64>() / shares.len() as f64;
            let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len() as f64;
            let n = clients as f64;
            let expected = (1.0 / n) * (1.0 - 1.0 / n) / (n * alpha + 1.0);
            assert!((mean - 0.1).abs() < 1e-9, "{mean}");
            assert!((var / expected - 1.0).abs() < 0.2, "α = {alpha}: variance {var:.5}, expected {expected:.5}");
        }
    }

    #[test]
    fn a_tiny_alpha_over_too_many_clients_is_refused_clearly() {
        let labels = labels(40, 2);
        let err = Partition::Dirichlet { alpha: 1e-4 }.assign(rows(&labels), 15, &mut ChaCha20Rng::seed_from_u64(3));
        assert!(matches!(err, Err(PartitionError::Degenerate { clients: 15, .. })), "{err:?}");
        let err = Partition::Iid.assign(rows(&labels), 30, &mut ChaCha20Rng::seed_from_u64(3)).unwrap_err();
        assert!(err.to_string().contains("40 rows cannot give 30 clients 2 rows each"), "{err}");
    }

    /// Shards: equal sizes, and with shards no larger than a class, at most `k` (+1 where a shard straddles two
    /// classes) classes per client.
    #[test]
    fn shards_give_each_client_few_classes() {
        let labels = labels(6000, 10);
        let parts =
            Partition::Shards { per_client: 2 }.assign(rows(&labels), 30, &mut ChaCha20Rng::seed_from_u64(4)).unwrap();
        assert_covers(&parts, labels.len());
        assert!(parts.iter().all(|p| p.len() == 200));
        for part in &parts {
            let present = class_counts(part, &labels, 10).iter().filter(|&&c| c > 0).count();
            assert!(present <= 4, "{present} classes");
        }
        let mean_classes: f64 =
            parts.iter().map(|p| class_counts(p, &labels, 10).iter().filter(|&&c| c > 0).count() as f64).sum::<f64>()
                / 30.0;
        assert!(mean_classes <= 2.5, "{mean_classes}");
    }

    /// Quantity: sizes follow i^-power beyond each client's minimum.
    #[test]
    fn quantity_sizes_follow_the_power_law() {
        let labels = labels(100_000, 2);
        let parts =
            Partition::Quantity { power: 1.0 }.assign(rows(&labels), 10, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
        assert_covers(&parts, labels.len());
        let h: f64 = (1..=10).map(|i| 1.0 / f64::from(i)).sum();
        for (i, part) in parts.iter().enumerate() {
            let expected = MIN_ROWS_PER_CLIENT as f64 + (100_000 - 20) as f64 / ((i + 1) as f64 * h);
            assert!((part.len() as f64 - expected).abs() <= 1.5, "client {i}: {} vs {expected:.1}", part.len());
        }
        let even =
            Partition::Quantity { power: 0.0 }.assign(rows(&labels), 10, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
        assert!(even.iter().all(|p| p.len() == 10_000));
    }

    #[test]
    fn a_column_makes_one_client_per_value() {
        let labels = labels(12, 2);
        let site = [3.0f32, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0];
        let by_site = Rows { labels: &labels, column: Some(&site) };
        let scheme = Partition::Column { name: "site".into() };
        assert_eq!(scheme.clients(by_site, None).unwrap(), 3);
        let parts = scheme.assign(by_site, 3, &mut ChaCha20Rng::seed_from_u64(6)).unwrap();
        assert_covers(&parts, 12);
        assert_eq!(parts[0], vec![1, 4, 7, 10]);
        for part in &parts {
            assert!(part.iter().all(|&r| site[r] == site[part[0]]));
        }
        let err = scheme.clients(by_site, Some(5)).unwrap_err().to_string();
        assert!(err.contains("3 distinct values") && err.contains("not 5"), "{err}");
        assert!(matches!(scheme.clients(rows(&labels), None), Err(PartitionError::NoColumn(_))));
    }

    #[test]
    fn the_same_seed_gives_the_same_partition() {
        let labels = labels(5000, 10);
        for scheme in ["iid", "dirichlet:0.3", "shards:2", "quantity:0.8"] {
            let p: Partition = scheme.parse().unwrap();
            let one = p.assign(rows(&labels), 50, &mut ChaCha20Rng::seed_from_u64(9)).unwrap();
            let two = p.assign(rows(&labels), 50, &mut ChaCha20Rng::seed_from_u64(9)).unwrap();
            assert_eq!(one, two, "{scheme}");
        }
    }

    #[test]
    fn regression_targets_bin_into_quantiles() {
        let targets: Vec<f32> = (0..1000).map(|i| ((i * 37) % 1000) as f32).collect();
        let bins = quantile_bins(&targets);
        for b in 0..REGRESSION_BINS {
            assert_eq!(bins.iter().filter(|&&x| x == b).count(), 100);
        }
        assert_eq!(bins[0], 0);
    }
}
