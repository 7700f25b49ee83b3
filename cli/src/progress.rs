//! Progress display of a federation: an indicatif bar over rounds and one line of metrics per round.

use cohort_coordinator::round::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast;

/// Prints a line above the bar, or plainly when the bar is not drawn (stderr is not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Follows round events until the federation finishes, drawing to stderr. Returns when the channel closes or
/// the federation is finished.
pub(crate) async fn follow(mut events: broadcast::Receiver<Event>, rounds: u64, quiet: bool) {
    if quiet {
        return drain(events).await;
    }
    let bar = ProgressBar::with_draw_target(Some(rounds), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    loop {
        match events.recv().await {
            Ok(Event::RoundStarted { round, selected }) => {
                bar.set_message(format!("round {round}: training on {} nodes", selected.len()));
            }
            Ok(Event::Declined { round, node, reason }) => {
                say(&bar, format!("round {:>3}: {node} declined: {reason}", round.0));
            }
            Ok(Event::RoundFailed { round, updates, required, retry_in }) => {
                say(
                    &bar,
                    format!(
                        "round {:>3}: only {updates} of {required} required updates; retrying in {} s",
                        round.0,
                        retry_in.as_secs()
                    ),
                );
            }
            Ok(Event::NodeAbsent { node, phase }) => {
                say(
                    &bar,
                    format!("{node} missed the {phase} deadline: marked absent, not waited for until it returns"),
                );
            }
            Ok(Event::NodeReturned(node)) => say(&bar, format!("{node} is back")),
            Ok(Event::Stopped(stopped)) => {
                bar.abandon_with_message(format!("stopped: {stopped}"));
                return;
            }
            Ok(Event::Aggregated { round, contributors, .. }) => {
                bar.set_message(format!("round {round}: aggregated {} updates, evaluating", contributors.len()));
            }
            Ok(Event::Evaluated(summary)) => {
                let m = summary.metrics.as_ref();
                let metric =
                    |name: &str| m.and_then(|m| m.get(name)).map_or_else(|| "   -  ".to_owned(), |v| format!("{v:.4}"));
                // The hospitals' pooled evaluation: under DP their noisy releases. Under DP the training loss and the
                // evaluation loss stay on the nodes (neither is a private release).
                let train_loss = if summary.train_loss.is_finite() {
                    format!("{:.4}", summary.train_loss)
                } else {
                    "   -  ".to_owned()
                };
                say(
                    &bar,
                    format!(
                        "round {:>3}: {}  federated accuracy {}  eval loss {}  train loss {}  updates {}  declined {}",
                        summary.round.0,
                        summary.version,
                        metric("accuracy"),
                        metric("loss"),
                        train_loss,
                        summary.contributors.len(),
                        summary.declined.len()
                    ),
                );
                bar.set_position(summary.round.0);
            }
            Ok(Event::Finished { version }) => {
                bar.finish_with_message(format!("finished: global model {version}"));
                return;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                bar.abandon();
                return;
            }
        }
    }
}

/// Consumes events without displaying them, until the federation finishes.
async fn drain(mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::Finished { .. } | Event::Stopped(_)) | Err(broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    }
}
