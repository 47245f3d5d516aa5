//! Handling one stream entry: statuses, rate-limited messages, and answering a conversation
//! while holding its lock.

use crate::{Worker, WorkerError, reply};
use herd_channels::send::ChannelRef;
use herd_core::{InboundMessage, MessageStatus};
use herd_queue::{Delivery, Job, Lock};
use herd_store::{Channel, Fence, InboundRow};
use std::sync::Arc;
use std::time::Duration;

/// What recording an entry found.
pub(crate) enum Recorded {
    /// Nothing more to do (a status applied, a message ignored).
    Done,
    /// A rate-limited message, recorded.
    RateLimited(Arc<Channel>, InboundRow),
    /// A message to answer.
    Answer(Arc<Channel>, InboundRow),
}

/// Phase 1, in stream order for a whole batch: record the entry, so a conversation's messages
/// are in PostgreSQL in arrival order before any of them is answered.
pub(crate) async fn record(w: &Worker, d: &Delivery) -> Result<Recorded, WorkerError> {
    match &d.entry.job {
        Job::Status { channel_id, status } => {
            w.store.apply_status(*channel_id, status).await?;
            Ok(Recorded::Done)
        }
        Job::Message { channel_id, message, rate_limited, .. } => {
            let ch = w.channel(*channel_id).await?;
            let status = if *rate_limited {
                MessageStatus::RateLimited
            } else if !message.content.wants_reply() {
                MessageStatus::Ignored
            } else {
                MessageStatus::Pending
            };
            let row = w.store.record_inbound(&ch, message, status, &d.id, d.entry.received_at_ms).await?;
            // Every user is placed once known, answered or not (a reaction, a rate-limited text).
            if ch.platform == herd_core::Platform::Whatsapp
                && let Some(country) = herd_policies::region::country_of_phone(&message.sender)
            {
                w.store.set_conversation_country(row.conversation_id, &country).await?;
            }
            Ok(match (*rate_limited, row.status) {
                (true, _) => Recorded::RateLimited(ch, row),
                (false, MessageStatus::Pending) => Recorded::Answer(ch, row),
                _ => Recorded::Done,
            })
        }
    }
}

/// Phase 2, concurrently: answer (or send the slow-down reply).
pub(crate) async fn process(w: &Worker, d: &Delivery, r: Recorded) -> Result<(), WorkerError> {
    let Job::Message { tenant_id, message, .. } = &d.entry.job else { return Ok(()) };
    match r {
        Recorded::Done => Ok(()),
        Recorded::RateLimited(ch, row) => slow_down(w, &ch, *tenant_id, message, &row, d.entry.received_at_ms).await,
        Recorded::Answer(ch, row) => converse(w, &ch, message, &row, d.entry.received_at_ms).await,
    }
}

/// At most one "slow down" reply per sender per minute; nothing generated. Recorded like every
/// message herd sends (a reply to the rate-limited message, `prompt_mode` slow_down).
async fn slow_down(
    w: &Worker,
    ch: &Channel,
    tenant_id: i64,
    m: &InboundMessage,
    row: &InboundRow,
    received_at_ms: i64,
) -> Result<(), WorkerError> {
    if !w.queue.once_per(&format!("slowdown:{tenant_id}:{}:{}", m.platform.as_str(), m.sender), 60).await? {
        return Ok(());
    }
    let r = ChannelRef { platform: ch.platform, external_id: &ch.external_id, access_token: &ch.access_token };
    let text = &w.settings.limits.slow_down_text;
    let started = std::time::Instant::now();
    let queue_wait_ms = (reply::now_ms() - received_at_ms).max(0) as i32;
    match w.sender.send_text(&r, &m.sender, text).await {
        Ok(platform_id) => {
            let metrics = herd_store::ReplyMetrics {
                queue_wait_ms,
                send_ms: started.elapsed().as_millis() as i32,
                end_to_end_ms: (reply::now_ms() - received_at_ms).max(0) as i32,
                prompt_mode: Some("slow_down".into()),
                ..Default::default()
            };
            w.store.record_outbound(row, ch.id, 0, text, platform_id.as_deref(), &metrics).await?;
        }
        Err(e) => tracing::warn!(error = %e, "slow-down reply failed"),
    }
    Ok(())
}

/// Answers the conversation's pending messages in order while holding its lock.
///
/// When another live worker holds the lock, the entry stays unacknowledged (without spending a
/// try): the holder answers this message too (it answers every pending one), and the entry is
/// acknowledged when it comes back (after `queue.claim_idle_ms`) and finds the message answered.
/// A lock whose holder stopped (no heartbeat) is taken over at once.
async fn converse(w: &Worker, ch: &Channel, m: &InboundMessage, row: &InboundRow, received_at_ms: i64) -> Result<(), WorkerError> {
    let conversation = row.conversation_id;
    loop {
        let Some(fence) = take_lock(w, conversation).await? else {
            if w.store.status_of(row.id).await? == Some(MessageStatus::Pending) {
                return Err(WorkerError::Busy(format!("conversation {conversation} is being answered by another worker")));
            }
            return Ok(());
        };
        let result = answer_all(w, ch, m, fence, received_at_ms).await;
        w.queue.unlock(conversation, &w.name).await?;
        result?;
        // A message recorded while we held the lock, whose worker saw the lock taken, is ours.
        if w.store.oldest_pending(conversation).await?.is_none() {
            return Ok(());
        }
    }
}

/// Takes the conversation's lock — from a stopped holder too — and the fencing token that goes
/// with it; `None` while a live worker holds it.
async fn take_lock(w: &Worker, conversation: i64) -> Result<Option<Fence>, WorkerError> {
    if let Lock::HeldBy(holder) = w.queue.lock(conversation, &w.name).await? {
        if holder == w.name || w.queue.is_alive(&holder).await? || !w.queue.take_over(conversation, &w.name, &holder).await? {
            return Ok(None);
        }
        tracing::warn!(conversation, stopped = %holder, "took over the conversation lock of a stopped worker");
    }
    Ok(Some(w.store.take_fence(conversation).await?))
}

async fn answer_all(w: &Worker, ch: &Channel, m: &InboundMessage, fence: Fence, received_at_ms: i64) -> Result<(), WorkerError> {
    let conversation = fence.conversation;
    // Keep the lock alive while replies are generated and sent; the guard stops it with us.
    let _keep = AbortOnDrop({
        let (q, name) = (w.queue.clone(), w.name.clone());
        let every = Duration::from_millis((w.settings.queue.lock_ttl_ms / 3).max(50));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !q.refresh_lock(conversation, &name).await.unwrap_or(false) {
                    break;
                }
            }
        })
    });
    let conv = format!("{}:{}", ch.id, m.sender);
    loop {
        wait_for_peers(w, ch.id, &conv).await?;
        let Some(inbound) = w.store.oldest_pending(conversation).await? else { break };
        reply::answer(w, ch, m, &inbound, fence, received_at_ms).await?;
    }
    Ok(())
}

/// Waits (briefly) until every message of this conversation that another worker has taken from
/// the stream is recorded, so "oldest pending" sees them all and answers them in order. A peer
/// that died before recording is waited for at most one second.
async fn wait_for_peers(w: &Worker, channel_id: i64, conv: &str) -> Result<(), WorkerError> {
    for _ in 0..100 {
        let ids = w.queue.pending_of_conversation(conv).await?;
        if ids.is_empty() || w.store.recorded_count(channel_id, &ids).await? >= ids.len() as i64 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Aborts a task when dropped (also when the future holding it is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
