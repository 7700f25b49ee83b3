//! Virtual time: the simulated federation's messages reach the coordinator in simulated-time order, on a clock
//! that the coordinator's deadlines are measured on.
//!
//! Every node runs its real code on the node threads. Each message it sends is stamped with the virtual time it
//! reaches the coordinator (the node's own clock, plus its compute and the link's latency and transfer time; see
//! [`crate::conditions`]). The [`Network`]'s driver hands the messages to the coordinator's core one at a time,
//! in stamp order (ties broken by node, then by the order the node sent them), after moving the virtual clock to
//! the stamp; when nothing is in flight it jumps the clock to the core's next deadline
//! ([`RoundMachine::next_deadline`](cohort_coordinator::round::RoundMachine::next_deadline)). A long poll (a
//! task or share request the core has no answer for yet) waits in the driver and is asked again whenever the
//! round changes, as the deployment's long poll is.
//!
//! The driver has no thread of its own: whichever thread sends a message (or ends a node) then delivers every
//! message that has become safe to deliver, one step at a time under the network's lock. So an answer usually
//! reaches a node on the thread that runs it, without waking another thread.
//!
//! This is conservative parallel discrete-event simulation (Chandy and Misra, "Distributed simulation: a case
//! study in design and verification of distributed programs", IEEE TSE 5(5), 1979) with a lookahead of two link
//! latencies: a message is delivered only when no node that is still computing could send an earlier one. So the
//! order of deliveries, and with it every result, is the same at any thread count and under any scheduling,
//! while the nodes still compute in parallel.

use cohort_coordinator::federation::Clock;
use cohort_coordinator::host::Host;
use cohort_coordinator::round::Event;
use cohort_core::Round;
use cohort_core::binding::UnixTime;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, oneshot};

/// The coordinator's clock in a simulation: a fixed origin plus the virtual time the [`Network`] has reached.
#[derive(Debug, Clone)]
pub(crate) struct VirtualClock {
    origin: Instant,
    nanos: Arc<AtomicU64>,
}

impl VirtualClock {
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now(), nanos: Arc::new(AtomicU64::new(0)) }
    }

    fn set(&self, at: Duration) {
        self.nanos.store(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The virtual time reached.
    pub(crate) fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn since_origin(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.origin)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn unix(&self) -> UnixTime {
        // Certificates are checked against the real time: a simulated federation lasts hours at most.
        UnixTime::now()
    }
}

/// What running a queued call did.
enum Step {
    Answered,
    Parked,
}

/// A call to the core, run by the driver.
type Call = Box<dyn FnMut(&Host, Duration) -> Step + Send>;

/// The order of deliveries: the virtual arrival time, then the node, then the node's own sequence number.
type Key = (Duration, usize, u64);

/// The node's side has gone: the driver stopped (the simulation is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the simulated network has shut down")]
pub(crate) struct Gone;

/// Why the driver could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Halt {
    /// Every node waits and the coordinator has no deadline left to reach.
    #[error(
        "the simulation stalled at {:.1} s of simulated time: {waiting} nodes wait for the coordinator, which \
         waits for a message and has no deadline to reach",
        at.as_secs_f64()
    )]
    Stalled {
        /// The virtual time reached.
        at: Duration,
        /// Long polls waiting for an answer.
        waiting: usize,
    },
    /// A node sent a message stamped before the virtual clock: the lookahead the driver relies on was broken, so
    /// the order of deliveries (and every result) could depend on thread scheduling. A bug in the simulator, which
    /// stops the run rather than letting it report a result that might not replay.
    #[error(
        "simulator bug: node {node} sent a message stamped {:.6} s, before the virtual clock's {:.6} s, so this \
         run might not replay",
        at.as_secs_f64(),
        now.as_secs_f64()
    )]
    OutOfOrder {
        /// The node.
        node: usize,
        /// The message's stamp.
        at: Duration,
        /// The virtual time already reached.
        now: Duration,
    },
}

/// A moment of the federation on the virtual clock, for the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mark {
    /// A round's model was aggregated.
    Aggregated(Round),
    /// The federation finished (or stopped).
    Finished,
    /// An attempt at a round failed.
    Failed {
        /// The round.
        round: Round,
        /// Updates it got.
        updates: usize,
        /// Updates it needed.
        required: usize,
    },
}

/// Whatever the driver is waiting for.
struct State {
    now: Duration,
    queue: BTreeMap<Key, Call>,
    /// Long polls without an answer, in the order they were sent.
    parked: BTreeMap<Key, Call>,
    /// Nodes computing after an answer, by the earliest time their next message could arrive.
    active: BTreeSet<(Duration, usize)>,
    bound: Vec<Option<Duration>>,
    sequence: Vec<u64>,
    /// Nodes still running.
    running: usize,
    /// What happened when, for the report.
    marks: Vec<(Duration, Mark)>,
    /// The core's events, which say when the round changed.
    events: broadcast::Receiver<Event>,
    /// How the run ended, once it has.
    outcome: Option<Result<Duration, Halt>>,
    /// The first message that came stamped before the virtual clock, if any.
    out_of_order: Option<Halt>,
}

impl State {
    fn new(nodes: usize, events: broadcast::Receiver<Event>) -> Self {
        Self {
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            parked: BTreeMap::new(),
            active: BTreeSet::new(),
            bound: vec![None; nodes],
            sequence: vec![0; nodes],
            running: nodes,
            marks: Vec::new(),
            events,
            outcome: None,
            out_of_order: None,
        }
    }

    fn deactivate(&mut self, node: usize) {
        if let Some(bound) = self.bound[node].take() {
            self.active.remove(&(bound, node));
        }
    }

    fn activate(&mut self, node: usize, bound: Duration) {
        self.deactivate(node);
        self.bound[node] = Some(bound);
        self.active.insert((bound, node));
    }
}

/// The virtual network between the simulated nodes and the coordinator's core. See the module docs.
pub(crate) struct Network {
    host: Arc<Host>,
    clock: VirtualClock,
    /// Each node's lookahead: no message of it can arrive sooner than this after it was last answered.
    lookahead: Vec<Duration>,
    state: Mutex<State>,
    /// Told when the run has ended.
    ended: Notify,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("nodes", &self.lookahead.len()).finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `event` can change a waiting node's answer: every event but those that only record a message.
fn reassigns(event: &Event) -> bool {
    !matches!(
        event,
        Event::Joined(_)
            | Event::UpdateAccepted { .. }
            | Event::Declined { .. }
            | Event::NodeAbsent { .. }
            | Event::NodeReturned(_)
    )
}

impl Network {
    /// A network to `host` (whose clock must be `clock`) for nodes whose one-way latencies are `latencies`,
    /// each node numbered by its index there.
    pub(crate) fn new(host: Arc<Host>, clock: VirtualClock, latencies: &[Duration]) -> Arc<Self> {
        let nodes = latencies.len();
        let mut state = State::new(nodes, host.subscribe());
        // Every node starts computing; its first message cannot arrive before one latency.
        for (node, latency) in latencies.iter().enumerate() {
            state.activate(node, *latency);
        }
        Arc::new(Self {
            host,
            clock,
            lookahead: latencies.iter().map(|l| *l * 2).collect(),
            state: Mutex::new(state),
            ended: Notify::new(),
        })
    }

    /// The round moments so far, in order, with their virtual times.
    pub(crate) fn marks(&self) -> Vec<(Duration, Mark)> {
        lock(&self.state).marks.clone()
    }

    /// Node `node`'s message, arriving at the coordinator at virtual time `at`: `call` answers it on the core
    /// when the driver reaches it, and again after every change of the round while it has no answer yet (None).
    /// Resolves with the answer and the virtual time it was given at.
    ///
    /// # Errors
    /// [`Gone`] when the driver stopped first.
    pub(crate) async fn send<T: Send + 'static>(
        &self,
        node: usize,
        at: Duration,
        mut call: impl FnMut(&Host) -> Option<T> + Send + 'static,
    ) -> Result<(T, Duration), Gone> {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let call: Call = Box::new(move |host, now| match call(host) {
            Some(answer) => {
                if let Some(tx) = tx.take() {
                    // A node that went away no longer needs its answer.
                    let _ = tx.send((answer, now));
                }
                Step::Answered
            }
            None => Step::Parked,
        });
        {
            let mut state = lock(&self.state);
            state.deactivate(node);
            state.sequence[node] += 1;
            if at < state.now {
                // Delivered at once, and the run reports the broken order when it ends.
                let halt = Halt::OutOfOrder { node, at, now: state.now };
                tracing::error!("{halt}");
                state.out_of_order.get_or_insert(halt);
            }
            let key = (at.max(state.now), node, state.sequence[node]);
            state.queue.insert(key, call);
        }
        self.pump();
        rx.await.map_err(|_| Gone)
    }

    /// Node `node` is done (finished or failed): the driver no longer waits for it.
    pub(crate) fn leave(&self, node: usize) {
        {
            let mut state = lock(&self.state);
            state.deactivate(node);
            state.running = state.running.saturating_sub(1);
        }
        self.pump();
    }

    /// Waits until every node has left; returns the virtual time reached.
    ///
    /// # Errors
    /// [`Halt::Stalled`] when every node waits and the coordinator has no deadline left to reach;
    /// [`Halt::OutOfOrder`] when a node broke the lookahead.
    pub(crate) async fn drive(&self) -> Result<Duration, Halt> {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            self.pump();
            if let Some(outcome) = lock(&self.state).outcome.clone() {
                return outcome;
            }
            ended.await;
        }
    }

    /// Delivers every message that is safe to deliver now, in virtual-time order, on the calling thread.
    fn pump(&self) {
        loop {
            let mut state = lock(&self.state);
            if state.outcome.is_some() {
                return;
            }
            let outcome = match self.step(&mut state) {
                Ok(Progress::Went) => continue,
                Ok(Progress::Blocked) => return,
                Ok(Progress::Done(at)) => Ok(at),
                Err(stall) => Err(stall),
            };
            state.outcome = Some(outcome);
            drop(state);
            self.ended.notify_waiters();
            return;
        }
    }

    /// One delivery, or one jump of the clock to a deadline, if either is safe now.
    fn step(&self, state: &mut State) -> Result<Progress, Halt> {
        if state.running == 0 {
            return match state.out_of_order.take() {
                Some(halt) => Err(halt),
                None => Ok(Progress::Done(state.now)),
            };
        }
        let head = state.queue.first_key_value().map(|(k, _)| *k);
        let deadline = self
            .host
            .with_federation(|f| f.machine().next_deadline())
            .map(|d| self.clock.since_origin(d))
            .filter(|d| *d > state.now);
        // A deadline goes before a message stamped at the same time.
        let next = match (head, deadline) {
            (Some(k), Some(d)) => k.0.min(d),
            (Some(k), None) => k.0,
            (None, Some(d)) => d,
            (None, None) if state.active.is_empty() => {
                return Err(Halt::Stalled { at: state.now, waiting: state.parked.len() });
            }
            (None, None) => return Ok(Progress::Blocked),
        };
        if state.active.first().is_some_and(|(bound, _)| next >= *bound) {
            return Ok(Progress::Blocked);
        }
        if next > state.now {
            state.now = next;
            self.clock.set(next);
            self.host.tick();
        }
        if let Some(key) = head.filter(|k| k.0 == next)
            && let Some(mut call) = state.queue.remove(&key)
        {
            let node = key.1;
            match call(&self.host, state.now) {
                Step::Answered => {
                    let bound = state.now + self.lookahead[node];
                    state.activate(node, bound);
                }
                Step::Parked => {
                    state.parked.insert(key, call);
                }
            }
        }
        self.wake_parked(state);
        Ok(Progress::Went)
    }

    /// Asks every parked poll again, for as long as the core's events say the round changed.
    fn wake_parked(&self, state: &mut State) {
        loop {
            let mut changed = false;
            loop {
                match state.events.try_recv() {
                    Ok(event) => {
                        changed |= reassigns(&event);
                        let mark = match event {
                            Event::Aggregated { round, .. } => Some(Mark::Aggregated(round)),
                            Event::Finished { .. } | Event::Stopped(_) => Some(Mark::Finished),
                            Event::RoundFailed { round, updates, required, .. } => {
                                Some(Mark::Failed { round, updates, required })
                            }
                            _ => None,
                        };
                        if let Some(mark) = mark {
                            state.marks.push((state.now, mark));
                        }
                    }
                    // Too many events to tell: assume the round changed.
                    Err(broadcast::error::TryRecvError::Lagged(_)) => changed = true,
                    Err(_) => break,
                }
            }
            if !changed || state.parked.is_empty() {
                return;
            }
            let now = state.now;
            let parked = std::mem::take(&mut state.parked);
            for (key, mut call) in parked {
                match call(&self.host, now) {
                    Step::Answered => state.activate(key.1, now + self.lookahead[key.1]),
                    Step::Parked => {
                        state.parked.insert(key, call);
                    }
                }
            }
        }
    }
}

enum Progress {
    Went,
    Blocked,
    Done(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_computing_holds_back_only_later_messages() {
        let mut state = State::new(3, broadcast::channel(1).1);
        state.activate(0, Duration::from_millis(80));
        state.activate(1, Duration::from_millis(50));
        assert_eq!(state.active.first(), Some(&(Duration::from_millis(50), 1)));
        state.activate(1, Duration::from_millis(120));
        assert_eq!(state.active.first(), Some(&(Duration::from_millis(80), 0)));
        state.deactivate(0);
        state.deactivate(2);
        assert_eq!(state.active.iter().collect::<Vec<_>>(), [&(Duration::from_millis(120), 1)]);
    }

    #[test]
    fn only_events_that_record_a_message_leave_waiting_nodes_waiting() {
        use cohort_core::{ModelVersion, NodeName, Round};
        let node = NodeName::from("a");
        assert!(!reassigns(&Event::Joined(node.clone())));
        assert!(!reassigns(&Event::UpdateAccepted { round: Round(1), node: node.clone() }));
        assert!(reassigns(&Event::RoundStarted { round: Round(1), selected: vec![node] }));
        assert!(reassigns(&Event::Finished { version: ModelVersion(3) }));
    }
}
