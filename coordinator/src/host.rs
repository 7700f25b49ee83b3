//! The host of the protocol core: the [`Federation`] behind a lock, the effects it queues carried out in order
//! outside that lock, notifications for observers, and the long polls of nodes waiting for a task or their key
//! shares. Every transport (the gRPC service, the in-memory link) serves the federation through a [`Host`].

use crate::federation::{Effect, Federation, Peer, Refusal};
use crate::recorder::{Recorded, Recorder};
use crate::round::Event;
use cohort_core::protocol::{Assignment, RoundRef, ShareBundle, TaskHeader};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How long a task or share poll waits for something to happen before answering that there is nothing yet.
pub const LONG_POLL: Duration = Duration::from_secs(10);

/// The core, shared by the transports, the deadline ticker and the run loop, with what carries out its effects.
pub struct Host {
    federation: Mutex<Federation>,
    federation_id: String,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    persistence: Mutex<Persistence>,
}

/// The effects' side: the recorder (registry, ledger copies, bindings) and what it registered.
struct Persistence {
    recorder: Option<Recorder>,
    recorded: Vec<Recorded>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("federation_id", &self.federation_id).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Host {
    /// Wraps a core; `recorder` (if any) persists what it produces.
    pub fn new(federation: Federation, recorder: Option<Recorder>) -> std::sync::Arc<Self> {
        let (changed, _) = watch::channel(0);
        let (events, _) = broadcast::channel(1024);
        std::sync::Arc::new(Self {
            federation_id: federation.plan().federation_id.clone(),
            federation: Mutex::new(federation),
            changed,
            events,
            persistence: Mutex::new(Persistence { recorder, recorded: Vec::new() }),
        })
    }

    /// The versions registered so far, with their gate decisions.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.persistence).recorded.clone()
    }

    /// Subscribes to round events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A receiver that changes whenever the core produces events.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Runs `f` on the core, then carries out the effects it queued. The effects are applied in the core's
    /// order (the persistence lock is taken before the core's is released) but outside the core's lock, so slow
    /// work (registry writes, central evaluation, fsyncs) never holds up other calls into the core.
    pub fn with_federation<T>(&self, f: impl FnOnce(&mut Federation) -> T) -> T {
        let mut federation = lock(&self.federation);
        let out = f(&mut federation);
        let effects = federation.drain_effects();
        if effects.is_empty() {
            return out;
        }
        let mut persistence = lock(&self.persistence);
        drop(federation);
        let mut notified = false;
        for effect in effects {
            notified |= matches!(effect, Effect::Notify(_));
            self.apply(&mut persistence, effect);
        }
        if notified {
            self.changed.send_modify(|v| *v += 1);
        }
        out
    }

    fn apply(&self, p: &mut Persistence, effect: Effect) {
        match effect {
            Effect::Notify(event) => {
                // A send error only means nobody is listening.
                let _ = self.events.send(event);
            }
            Effect::KeepBinding(binding) => {
                if let Some(Err(e)) = p.recorder.as_ref().map(|r| r.store_binding(&self.federation_id, &binding)) {
                    tracing::warn!(node = %cohort_core::untrusted::Untrusted(&binding.node), "cannot keep the key binding for auditors: {}", cohort_core::untrusted::UntrustedUpTo(&e.to_string(), 1000));
                }
            }
            Effect::AppendLedger { node, records } => {
                if let Some(Err(e)) = p.recorder.as_ref().map(|r| r.append_ledger(&node, &records)) {
                    // The node resends its whole ledger on its next session; the copy catches up then.
                    tracing::error!(node = %node, "cannot write the copy of the node's ledger: {e}");
                }
            }
            Effect::Register(registration) => {
                let Some(recorder) = p.recorder.as_mut() else { return };
                let round = registration.summary.round;
                match recorder.record(&registration) {
                    Ok(recorded) => {
                        tracing::info!(
                            version = %recorded.record.version,
                            stage = %recorded.record.stage,
                            "registered round {round}: {}",
                            recorded.decision.summary()
                        );
                        p.recorded.push(recorded);
                    }
                    Err(err) => tracing::error!(round = round.0, "cannot record the round in the registry: {err}"),
                }
            }
        }
    }

    /// Advances deadlines; call periodically.
    pub fn tick(&self) {
        self.with_federation(Federation::tick);
    }

    /// The next task for `peer`, waiting up to [`LONG_POLL`] for one while there is nothing to do (then the
    /// answer is [`Assignment::Wait`]).
    ///
    /// # Errors
    /// [`Refusal`] from the core.
    pub async fn next_task(
        &self,
        peer: &Peer,
        last_seen: Option<&RoundRef>,
    ) -> Result<(TaskHeader, Vec<f32>), Refusal> {
        self.long_poll(|f| {
            let (header, model) = f.task(peer, last_seen)?;
            let ready = header.assignment != Assignment::Wait;
            Ok(((header, model), ready))
        })
        .await
    }

    /// The key shares addressed to `peer`, waiting up to [`LONG_POLL`] while distribution is open (then the
    /// bundle is not [`ShareBundle::ready`]).
    ///
    /// # Errors
    /// [`Refusal`] from the core.
    pub async fn shares(&self, peer: &Peer, round: &RoundRef) -> Result<ShareBundle, Refusal> {
        self.long_poll(|f| {
            let bundle = f.shares_for(peer, round)?;
            let ready = bundle.ready;
            Ok((bundle, ready))
        })
        .await
    }

    /// Asks the core with `ask` (which answers and says whether the answer is final) until the answer is final,
    /// asking again after each change, for up to [`LONG_POLL`]; then the last answer, final or not.
    ///
    /// # Errors
    /// The first [`Refusal`] `ask` returns.
    pub async fn long_poll<T>(
        &self,
        mut ask: impl FnMut(&mut Federation) -> Result<(T, bool), Refusal>,
    ) -> Result<T, Refusal> {
        let mut watch = self.watch();
        let give_up = tokio::time::Instant::now() + LONG_POLL;
        loop {
            let (answer, ready) = self.with_federation(&mut ask)?;
            if ready {
                return Ok(answer);
            }
            match tokio::time::timeout_at(give_up, watch.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(answer),
            }
        }
    }
}
