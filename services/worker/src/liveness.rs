//! A worker's heartbeat: every `queue.heartbeat_ms` it says it is alive and touches the stream
//! entries it works on. Others take over its conversation locks only once it has been silent for
//! 3 × `heartbeat_ms`, and its entries only once they are `queue.claim_idle_ms` old, so a long
//! reply (a slow generation, a Send API outage waited out) is never taken from a live worker.

use crate::Worker;
use std::time::Duration;

/// Stops the heartbeat when dropped.
pub(crate) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `w`'s heartbeat (the first beat is sent at once).
pub(crate) fn start(w: &Worker) -> Heartbeat {
    let w = w.clone();
    let every = Duration::from_millis(w.settings.queue.heartbeat_ms);
    Heartbeat(tokio::spawn(async move {
        loop {
            if let Err(e) = w.queue.heartbeat(&w.name, &w.in_flight()).await {
                tracing::warn!(error = %e, worker = %w.name, "heartbeat failed");
            }
            tokio::time::sleep(every).await;
        }
    }))
}
