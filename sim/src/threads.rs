//! The simulated nodes' threads: one per core, each a current-thread tokio runtime that runs its share of the
//! node loops as tasks.
//!
//! A node loop's computation (training, evaluation, privacy accounting) then runs inline on its core's thread:
//! at most one node per core computes at a time, and no computation gets a thread of its own. (On a
//! multi-threaded runtime the node loop hands a computing worker's other tasks to a fresh thread, which costs more
//! than a small model's training step, and lets thousands of nodes oversubscribe the machine and its memory.)

use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, watch};

/// One node's whole life, as a future.
pub(crate) type NodeJob<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The running node threads. Dropping them stops every node that has not finished (a failed simulation
/// returns at once, and its other nodes must not keep polling).
#[derive(Debug)]
pub(crate) struct NodeThreads {
    stop: watch::Sender<bool>,
}

impl Drop for NodeThreads {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Why the node threads could not run a node.
pub(crate) type ThreadFailure = String;

/// Runs `jobs` on `threads` threads (None: one per core), dealt round-robin; each result (or why a node's task
/// died) arrives on the returned channel as that node finishes.
pub(crate) fn spawn<T: Send + 'static>(
    jobs: Vec<NodeJob<T>>,
    threads: Option<usize>,
) -> (NodeThreads, mpsc::UnboundedReceiver<Result<T, ThreadFailure>>) {
    let cores =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)).max(1);
    let (stop, stopped) = watch::channel(false);
    let (results, received) = mpsc::unbounded_channel();
    let mut shares: Vec<Vec<NodeJob<T>>> = (0..cores).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % cores].push(job);
    }
    for (core, share) in shares.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let (to_caller, stopped) = (results.clone(), stopped.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("sim-nodes-{core}"))
            .spawn(move || run_share(share, stopped, to_caller));
        if let Err(e) = spawned {
            let _ = results.send(Err(format!("cannot start a node thread: {e}")));
        }
    }
    (NodeThreads { stop }, received)
}

fn run_share<T: Send + 'static>(
    share: Vec<NodeJob<T>>,
    stopped: watch::Receiver<bool>,
    results: mpsc::UnboundedSender<Result<T, ThreadFailure>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = results.send(Err(format!("cannot start a node runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for job in share {
            let mut stopped = stopped.clone();
            tasks.spawn(async move {
                tokio::select! {
                    out = job => Some(out),
                    _ = stopped.wait_for(|stop| *stop) => None,
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            let sent = match done {
                Ok(Some(out)) => results.send(Ok(out)),
                Ok(None) => return,
                Err(e) => results.send(Err(format!("a node task died: {e}"))),
            };
            if sent.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_job_reports_and_dropping_the_threads_stops_the_rest() {
        let jobs: Vec<NodeJob<usize>> = (0..5usize).map(|i| Box::pin(async move { i }) as NodeJob<usize>).collect();
        let (_threads, mut results) = spawn(jobs, Some(3));
        let mut seen: Vec<usize> = Vec::new();
        for _ in 0..5 {
            seen.push(results.recv().await.unwrap().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);

        let forever: Vec<NodeJob<()>> = vec![Box::pin(std::future::pending())];
        let (threads, mut results) = spawn(forever, None);
        drop(threads);
        assert!(results.recv().await.is_none(), "a stopped node reports nothing and its thread ends");
    }
}
