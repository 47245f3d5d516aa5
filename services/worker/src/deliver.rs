//! Sending a reply: piece by piece, each piece once. Rate limits, 5xx and network errors are
//! retried for `worker.send_retry_window_ms` from the first try — waiting at least what the
//! platform's `Retry-After` asks, else an exponential backoff with jitter — before the reply
//! fails. The outbox row says where a reply stands, so a worker that takes over a stopped one's
//! conversation finishes it without sending anything twice:
//! - `sending`: a try may be in flight. Found so by a successor, the reply is `unknown` (it may
//!   have arrived) and never sent again.
//! - `retrying`: the last try was refused, nothing is in flight. A successor sends the pieces not
//!   yet accepted, within what is left of the window.

use crate::reply::{now_ms, observe_reply};
use crate::{Worker, WorkerError};
use herd_channels::send::{ChannelRef, SendAction};
use herd_core::settings::WorkerSettings;
use herd_core::{MessageStatus, OutboxState, split_message};
use herd_store::{Channel, Fence, InboundRow, OutboxRow, ReplyMetrics};
use std::time::{Duration, Instant};

/// A reply to send (or to finish sending).
pub(crate) struct Reply<'a> {
    pub inbound: &'a InboundRow,
    pub text: &'a str,
    /// Pieces the platform accepted already.
    pub first_part: usize,
    /// Tries made already.
    pub attempts: i32,
    /// How long ago the first try began (the window runs from then).
    pub age_ms: i64,
    pub received_at_ms: i64,
}

/// Finishes a reply a stopped worker started (see the module's states).
pub(crate) async fn resume(
    w: &Worker,
    ch: &Channel,
    to: &str,
    inbound: &InboundRow,
    o: OutboxRow,
    fence: Fence,
) -> Result<(), WorkerError> {
    let id = inbound.id;
    match o.state {
        OutboxState::Retrying => {
            tracing::info!(inbound = id, parts_sent = o.parts_sent, "finishing a reply a stopped worker was retrying");
            let reply = Reply {
                inbound,
                text: &o.reply,
                first_part: o.parts_sent.max(0) as usize,
                attempts: o.attempts,
                age_ms: o.age_ms,
                received_at_ms: now_ms(),
            };
            send(w, ch, to, reply, ReplyMetrics::default()).await
        }
        OutboxState::Sending => {
            tracing::warn!(inbound = id, "a stopped worker may have sent this reply; it is not sent again");
            let why = "a worker stopped while a try was in flight: the platform may or may not have it";
            w.store.outbox_finish(id, OutboxState::Unknown, o.attempts, Some(why), MessageStatus::Answered).await?;
            Ok(())
        }
        OutboxState::Sent | OutboxState::Unknown => Ok(w.store.set_status(id, MessageStatus::Answered, fence).await?),
        OutboxState::Failed | OutboxState::Expired => Ok(w.store.set_status(id, MessageStatus::Failed, fence).await?),
    }
}

/// Sends `reply` from its first piece not yet accepted, recording each accepted piece, and ends
/// its outbox row in a final state.
pub(crate) async fn send(w: &Worker, ch: &Channel, to: &str, reply: Reply<'_>, mut metrics: ReplyMetrics) -> Result<(), WorkerError> {
    let r = ChannelRef { platform: ch.platform, external_id: &ch.external_id, access_token: &ch.access_token };
    let id = reply.inbound.id;
    let window = Duration::from_millis(w.settings.worker.send_retry_window_ms);
    let first_try = Instant::now().checked_sub(Duration::from_millis(reply.age_ms.max(0) as u64)).unwrap_or_else(Instant::now);
    let send_started = Instant::now();
    let mut attempts = reply.attempts;
    let parts = split_message(reply.text, ch.platform.max_message_chars());
    for (i, part) in parts.iter().enumerate().skip(reply.first_part) {
        let mut tries = 0u32;
        let accepted = loop {
            attempts += 1;
            tries += 1;
            let span = tracing::info_span!("send", platform = ch.platform.as_str(), part = i, attempt = tries);
            let e = match tracing::Instrument::instrument(w.sender.send_text(&r, to, part), span).await {
                Ok(platform_id) => break platform_id,
                Err(e) => e,
            };
            let msg = e.to_string();
            if e.action() != SendAction::Retry {
                w.store.outbox_refusal(id, e.code, &e.message).await?;
            }
            match e.action() {
                SendAction::OutsideWindow => {
                    w.store.outbox_finish(id, OutboxState::Expired, attempts, Some(&msg), MessageStatus::Failed).await?;
                    return Ok(());
                }
                SendAction::Permanent => {
                    w.store.outbox_finish(id, OutboxState::Failed, attempts, Some(&msg), MessageStatus::Failed).await?;
                    return Err(WorkerError::DeadLetter(msg));
                }
                SendAction::Retry => {}
            }
            let wait = retry_delay(&w.settings.worker, tries, e.retry_after);
            if first_try.elapsed() + wait > window {
                w.store.outbox_refusal(id, e.code, &e.message).await?;
                let why = format!("{msg} (still failing when worker.send_retry_window_ms = {} ran out)", window.as_millis());
                w.store.outbox_finish(id, OutboxState::Failed, attempts, Some(&why), MessageStatus::Failed).await?;
                return Err(WorkerError::DeadLetter(why));
            }
            // A refused try leaves nothing in flight: a successor may finish the reply.
            let state = if e.in_doubt { OutboxState::Sending } else { OutboxState::Retrying };
            w.store.outbox_progress(id, state, attempts, Some(&msg)).await?;
            tracing::info!(error = %e, attempt = tries, wait_ms = wait.as_millis() as u64, "send retry");
            tokio::time::sleep(wait).await;
            w.store.outbox_progress(id, OutboxState::Sending, attempts, None).await?;
        };
        metrics.send_ms = send_started.elapsed().as_millis() as i32;
        metrics.end_to_end_ms = (now_ms() - reply.received_at_ms).max(0) as i32;
        w.store.record_outbound(reply.inbound, ch.id, i as i32, part, accepted.as_deref(), &metrics).await?;
        if i == 0 {
            observe_reply(&metrics);
            // Tokens routed per expert since the last reply (of every conversation in the batch;
            // the analytics show them per day).
            if let Err(e) = w.store.add_expert_usage(&w.engine.take_expert_counts()).await {
                tracing::warn!(error = %e, "recording expert usage failed");
            }
        }
    }
    w.store.outbox_finish(id, OutboxState::Sent, attempts, None, MessageStatus::Answered).await?;
    tracing::info!(inbound = id, parts = parts.len(), attempts, "answered");
    Ok(())
}

/// The wait before try `tries + 1`: the platform's `Retry-After` if it asked for longer, else
/// `retry_base_ms` doubled per try up to `retry_max_ms`, jittered down by up to a half (so many
/// workers refused at once do not come back at once).
fn retry_delay(cfg: &WorkerSettings, tries: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = cfg.retry_base_ms.saturating_mul(1 << (tries.saturating_sub(1)).min(20)).min(cfg.retry_max_ms);
    let jittered = backoff / 2 + random_below(backoff / 2 + 1);
    Duration::from_millis(jittered).max(retry_after.unwrap_or_default())
}

/// A random number below `n` (`n` > 0).
fn random_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now()) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() {
        let cfg = WorkerSettings { retry_base_ms: 200, retry_max_ms: 5_000, ..Default::default() };
        let ms = |tries, after: Option<u64>| retry_delay(&cfg, tries, after.map(Duration::from_millis)).as_millis() as u64;
        for _ in 0..50 {
            assert!((100..=200).contains(&ms(1, None)));
            assert!((200..=400).contains(&ms(2, None)));
            assert!((2_500..=5_000).contains(&ms(30, None)), "capped");
            assert_eq!(ms(1, Some(7_000)), 7_000, "Retry-After asks for longer");
            assert!((100..=200).contains(&ms(1, Some(10))), "a shorter Retry-After does not hurry the backoff");
        }
    }

    #[test]
    fn random_below_stays_below() {
        for n in [1, 2, 7, 1000] {
            assert!((0..200).all(|_| random_below(n) < n));
        }
        assert!((0..200).map(|_| random_below(1000)).collect::<std::collections::HashSet<_>>().len() > 50, "spread");
    }
}
