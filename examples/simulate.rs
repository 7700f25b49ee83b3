//! A simulated federation from Rust: 20 clients on the digits data set with label skew, DP-SGD at ε = 8 per
//! client, compared with the same federation without DP.
//!
//! Run it with `cargo run --release --example simulate`.

use cohort_sim::{Partition, Simulation};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = Simulation::new("digits".parse()?).clients(20).rounds(10).partition(Partition::Dirichlet { alpha: 1.0 });
    for (name, simulation) in [("no DP", base.clone().no_dp()), ("DP, ε = 8", base.dp_epsilon(8.0))] {
        let report = simulation.run().await?;
        println!(
            "{name:>10}: accuracy {:.3} after {} rounds, largest ε spent {}, {:.1} s",
            report.final_score().unwrap_or(f64::NAN),
            report.rounds.len(),
            report.max_epsilon().map_or_else(|| "-".to_owned(), |e| format!("{e:.2}")),
            report.wall_seconds
        );
    }
    Ok(())
}
