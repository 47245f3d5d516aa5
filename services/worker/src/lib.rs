//! herd-worker: reads turns from the Redis stream, records them in PostgreSQL, answers each
//! conversation's messages in order (one reply per message, never two turns of one conversation
//! in flight), sends through the platform's Send API, and records what happened.
//!
//! Order per conversation: a worker answers a conversation only while it holds the
//! conversation's lock; messages arriving meanwhile are recorded as `pending` by whichever worker
//! reads them, and the lock holder answers them one by one, oldest first, before releasing. After
//! releasing it checks once more, so a message recorded just before the release is not stranded.

mod deliver;
pub mod engine;
pub mod guard;
mod liveness;
pub mod policy;
mod reply;
mod turn;

use herd_channels::send::SendClient;
use herd_core::Settings;
use herd_queue::{Delivery, Queue};
use herd_store::{Channel, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

pub use engine::EngineHandle;
pub use policy::{AllowAll, Decision, Output, PacksPolicy, PolicyHook, StorePolicy, TurnContext};

/// Why handling an entry failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Worth another try later: leave the entry pending (it is reclaimed or redelivered).
    #[error("transient: {0}")]
    Transient(String),
    /// The conversation is being answered by another worker, which answers this message too:
    /// leave the entry pending; it is acknowledged when it comes back answered.
    #[error("busy: {0}")]
    Busy(String),
    /// Will never work: move the entry to the dead-letter stream with this reason.
    #[error("dead letter: {0}")]
    DeadLetter(String),
    /// Must not go on: the sender's data was erased while the turn was in flight. Acknowledged;
    /// nothing more is written or sent.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl From<herd_store::Error> for WorkerError {
    fn from(e: herd_store::Error) -> Self {
        match e {
            // Another worker took the conversation over; it answers this message too.
            herd_store::Error::Fenced { .. } => WorkerError::Busy(e.to_string()),
            herd_store::Error::Erased => WorkerError::Cancelled(e.to_string()),
            // A row the turn writes under (conversation, message) was deleted: an erasure.
            ref e if e.refers_to_deleted_rows() => {
                WorkerError::Cancelled(format!("the records this turn belongs to were deleted (user data erased): {e}"))
            }
            e => WorkerError::Transient(e.to_string()),
        }
    }
}

impl From<herd_queue::Error> for WorkerError {
    fn from(e: herd_queue::Error) -> Self {
        WorkerError::Transient(e.to_string())
    }
}

/// Everything one worker needs (cheap to clone into tasks).
#[derive(Clone)]
pub struct Worker {
    pub(crate) name: String,
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) queue: Queue,
    pub(crate) sender: SendClient,
    pub(crate) engine: EngineHandle,
    pub(crate) policy: Arc<dyn PolicyHook>,
    channels: Arc<RwLock<HashMap<i64, Arc<Channel>>>>,
    /// Ids of the entries this worker has taken and not yet settled (touched by the heartbeat).
    in_flight: Arc<Mutex<HashSet<(u32, String)>>>,
    /// Where it says whether it can read the turn stream (the process's `/readyz`).
    health: herd_core::Health,
}

impl Worker {
    /// A worker named `name` (its consumer name in the group; unique per process and loop).
    pub fn new(
        name: String,
        settings: Arc<Settings>,
        store: Store,
        queue: Queue,
        engine: EngineHandle,
        policy: Arc<dyn PolicyHook>,
    ) -> Self {
        let sender = SendClient::new(settings.platforms.clone());
        Self {
            name,
            settings,
            store,
            queue,
            sender,
            engine,
            policy,
            channels: Arc::default(),
            in_flight: Arc::default(),
            health: Default::default(),
        }
    }

    /// Reports to `health` (shared with the process's probes) as part `worker <name>`.
    pub fn with_health(mut self, health: herd_core::Health) -> Self {
        self.health = health;
        self
    }

    fn part(&self) -> String {
        format!("worker {}", self.name)
    }

    pub(crate) async fn channel(&self, id: i64) -> Result<Arc<Channel>, WorkerError> {
        if let Some(c) = self.channels.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(c.clone());
        }
        let all = self.store.channels().await?;
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        *map = all.into_iter().map(|c| (c.id, Arc::new(c))).collect();
        map.get(&id).cloned().ok_or_else(|| WorkerError::DeadLetter(format!("channel {id} no longer exists")))
    }

    /// Runs until `shutdown` turns true: stops reading, waits up to `shutdown_grace_ms` for the
    /// turns in flight; what is unfinished stays unacknowledged for another worker.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let cfg = &self.settings.worker;
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_claim = tokio::time::Instant::now() - Duration::from_secs(3600);
        let claim_every = Duration::from_millis((self.settings.queue.claim_idle_ms / 2).clamp(100, 30_000));
        let reader = match self.queue.with_reader().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "no Redis connection for reading; worker not started");
                self.health.failing(&self.part(), format!("no Redis connection for reading: {e}"));
                return;
            }
        };
        self.health.ok(&self.part());
        let heartbeat = liveness::start(&self);
        tracing::info!(worker = %self.name, "worker started");
        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let mut batch = Vec::new();
            if last_claim.elapsed() >= claim_every {
                last_claim = tokio::time::Instant::now();
                match self.queue.claim_stale(&self.name, free).await {
                    Ok(b) => batch = b,
                    Err(e) => tracing::warn!(error = %e, "reclaiming stale entries failed"),
                }
            }
            if batch.is_empty() {
                let read = reader.read(&self.name, free.min(cfg.read_batch), cfg.block_ms);
                tokio::select! {
                    r = read => match r {
                        Ok(b) => {
                            self.health.ok(&self.part());
                            batch = b;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the stream failed");
                            self.health.failing(&self.part(), format!("reading the turn stream failed: {e}"));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    },
                    _ = shutdown.changed() => break,
                }
            }
            self.took(&batch);
            // Record the whole batch in stream order first, then answer concurrently. Each entry's
            // work is one span, a child of the webhook's (its context rides in the entry).
            let mut recorded = Vec::with_capacity(batch.len());
            for d in batch {
                let span = tracing::info_span!("turn", worker = %self.name, entry = %d.id, trace_id = tracing::field::Empty);
                herd_core::telemetry::set_parent(&span, d.entry.traceparent.as_deref());
                if let Some(t) = herd_core::telemetry::trace_id_of(&span) {
                    span.record("trace_id", t);
                }
                if let Some(r) = self.record(&d).instrument(span.clone()).await {
                    recorded.push((d, r, span));
                }
            }
            for (d, r, span) in recorded {
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let w = self.clone();
                tasks.spawn(
                    async move {
                        let outcome = turn::process(&w, &d, r).await;
                        let label = match &outcome {
                            Ok(()) => "ok",
                            Err(WorkerError::Transient(_)) => "transient",
                            Err(WorkerError::Busy(_)) => "busy",
                            Err(WorkerError::DeadLetter(_)) => "dead_letter",
                            Err(WorkerError::Cancelled(_)) => "cancelled",
                        };
                        metrics::counter!("herd_turns_total", "outcome" => label).increment(1);
                        w.finish(&d, outcome).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        tracing::info!(worker = %self.name, in_flight = tasks.len(), "worker stopping");
        let grace = Duration::from_millis(self.settings.worker.shutdown_grace_ms);
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        // What is unfinished stays pending; with this worker known to be stopped, its locks are
        // taken over at once instead of waited out.
        drop(heartbeat);
        self.health.remove(&self.part());
        if let Err(e) = self.queue.stopped(&self.name).await {
            tracing::warn!(error = %e, "could not say this worker stopped; its locks expire in queue.heartbeat_ms × 3");
        }
    }

    /// Notes entries just taken as in flight (the heartbeat touches them until settled).
    fn took(&self, batch: &[Delivery]) {
        let mut set = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        set.extend(batch.iter().map(|d| (d.partition, d.id.clone())));
    }

    /// The entries in flight, for the heartbeat.
    pub(crate) fn in_flight(&self) -> Vec<(u32, String)> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Phase 1 of an entry (see [`turn::record`]); `None` when it was settled already (dead
    /// letter, or an error that leaves it pending).
    async fn record(&self, d: &Delivery) -> Option<turn::Recorded> {
        if d.deliveries > self.settings.queue.max_deliveries {
            let reason = format!("tried {} times (limit queue.max_deliveries = {})", d.deliveries, self.settings.queue.max_deliveries);
            // Recorded (as failed) even so: a message herd took is never lost from the records.
            if let herd_queue::Job::Message { channel_id, message, .. } = &d.entry.job {
                let recorded = match self.channel(*channel_id).await {
                    Ok(ch) => match self
                        .store
                        .record_inbound(&ch, message, herd_core::MessageStatus::Pending, &d.id, d.entry.received_at_ms)
                        .await
                    {
                        Err(herd_store::Error::Erased) => {
                            self.finish(d, Err(WorkerError::Cancelled("the sender's data was erased".into()))).await;
                            return None;
                        }
                        r => r.map(|_| ()),
                    },
                    Err(_) => Ok(()),
                };
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, id = %d.id, "recording a message to dead-letter failed; left pending for a retry");
                    return None;
                }
            }
            self.finish(d, Err(WorkerError::DeadLetter(reason))).await;
            return None;
        }
        match turn::record(self, d).await {
            Ok(r) => Some(r),
            Err(e) => {
                self.finish(d, Err(e)).await;
                None
            }
        }
    }

    /// Acknowledges, dead-letters or leaves an entry pending, by the outcome.
    async fn finish(&self, d: &Delivery, outcome: Result<(), WorkerError>) {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&(d.partition, d.id.clone()));
        match outcome {
            Ok(()) => {
                if let Err(e) = self.queue.ack(d).await {
                    tracing::error!(error = %e, id = %d.id, "ack failed");
                }
            }
            Err(WorkerError::DeadLetter(reason)) => {
                tracing::warn!(id = %d.id, %reason, "dead-lettered");
                if let herd_queue::Job::Message { channel_id, message, .. } = &d.entry.job {
                    // Its records are settled first: nothing stays `pending` or `sending`.
                    if let Err(e) = self.store.settle_dead_lettered(*channel_id, &message.platform_message_id, &reason).await {
                        tracing::error!(error = %e, id = %d.id, "settling a dead letter's records failed; left pending for a retry");
                        return;
                    }
                }
                if let Err(e) = self.queue.dead_letter(d, &reason).await {
                    tracing::error!(error = %e, id = %d.id, "dead-lettering failed");
                }
            }
            Err(WorkerError::Busy(reason)) => {
                // Waiting for another worker is not a try: the delivery count goes back.
                tracing::debug!(id = %d.id, %reason, "left pending");
                if let Err(e) = self.queue.keep_pending(&self.name, d, d.deliveries.saturating_sub(1)).await {
                    tracing::warn!(error = %e, id = %d.id, "could not give back the delivery count");
                }
            }
            Err(WorkerError::Cancelled(reason)) => {
                tracing::info!(id = %d.id, %reason, "cancelled");
                if let Err(e) = self.queue.ack(d).await {
                    tracing::error!(error = %e, id = %d.id, "ack failed");
                }
            }
            Err(WorkerError::Transient(reason)) => {
                tracing::warn!(id = %d.id, %reason, deliveries = d.deliveries, "left pending for a retry");
            }
        }
    }
}
