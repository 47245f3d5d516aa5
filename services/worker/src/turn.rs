//! Handling one stream entry: statuses, rate-limited messages, and answering a conversation.

use crate::engine::EngineError;
use crate::policy::{Decision, Output, TurnContext};
use crate::{Worker, WorkerError};
use herd_channels::send::{ChannelRef, SendAction, SendError};
use herd_core::{InboundMessage, MessageStatus, OutboxState, split_message};
use herd_engine::tokenizer::ChatMessage;
use herd_queue::{Delivery, Job};
use herd_store::{Channel, InboundRow, ReplyMetrics};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What recording an entry found.
pub(crate) enum Recorded {
    /// Nothing more to do (a status applied, a message ignored).
    Done,
    /// A rate-limited message, recorded.
    RateLimited(Arc<Channel>),
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
            let row = w.store.record_inbound(&ch, message, status, &d.id).await?;
            Ok(match (*rate_limited, row.status) {
                (true, _) => Recorded::RateLimited(ch),
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
        Recorded::RateLimited(ch) => slow_down(w, &ch, *tenant_id, message).await,
        Recorded::Answer(ch, row) => converse(w, &ch, message, &row, d.entry.received_at_ms).await,
    }
}

/// At most one "slow down" reply per sender per minute; nothing generated.
async fn slow_down(w: &Worker, ch: &Channel, tenant_id: i64, m: &InboundMessage) -> Result<(), WorkerError> {
    if w.queue.once_per(&format!("slowdown:{tenant_id}:{}:{}", m.platform.as_str(), m.sender), 60).await? {
        let r = ChannelRef { platform: ch.platform, external_id: &ch.external_id, access_token: &ch.access_token };
        if let Err(e) = w.sender.send_text(&r, &m.sender, &w.settings.limits.slow_down_text).await {
            tracing::warn!(error = %e, "slow-down reply failed");
        }
    }
    Ok(())
}

/// Answers the conversation's pending messages in order while holding its lock.
///
/// When another worker holds the lock, the entry stays unacknowledged: the holder answers this
/// message too (it answers every pending one), and the entry is acknowledged when it comes back
/// (reclaimed) and finds the message answered. Should the holder have died, the lock expires and
/// the reclaimed entry gets the message answered.
async fn converse(w: &Worker, ch: &Channel, m: &InboundMessage, row: &InboundRow, received_at_ms: i64) -> Result<(), WorkerError> {
    let conversation = row.conversation_id;
    loop {
        if !w.queue.lock(conversation, &w.name).await? {
            if w.store.status_of(row.id).await? == Some(MessageStatus::Pending) {
                return Err(WorkerError::Busy(format!("conversation {conversation} is being answered by another worker")));
            }
            return Ok(());
        }
        let result = answer_all(w, ch, m, conversation, received_at_ms).await;
        w.queue.unlock(conversation, &w.name).await?;
        result?;
        // A message recorded while we held the lock, whose worker saw the lock taken, is ours.
        if w.store.oldest_pending(conversation).await?.is_none() {
            return Ok(());
        }
    }
}

async fn answer_all(w: &Worker, ch: &Channel, m: &InboundMessage, conversation: i64, received_at_ms: i64) -> Result<(), WorkerError> {
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
        answer(w, ch, m, &inbound, received_at_ms).await?;
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

/// Runs a policy check, which may run a guard model for a while, without stalling the other
/// tasks of this runtime thread (on a multi-thread runtime).
/// Policy decisions by stage, action and mode, and enforced refusals by category (Prometheus).
fn count_decisions(records: &[herd_store::DecisionRecord]) {
    for r in records {
        let shadow = if r.shadow { "true" } else { "false" };
        metrics::counter!("herd_policy_decisions_total", "stage" => r.stage, "action" => r.action.clone(), "shadow" => shadow).increment(1);
        if r.action == "refuse" && !r.shadow {
            metrics::counter!("herd_refusals_total", "category" => r.category.clone().unwrap_or_else(|| "none".into())).increment(1);
        }
    }
}

/// Latencies and tokens of one sent reply (Prometheus).
fn observe_reply(m: &herd_store::ReplyMetrics) {
    let ms = |v: i32| f64::from(v.max(0)) / 1000.0;
    for (stage, v) in [
        ("queue_wait", m.queue_wait_ms),
        ("ttft", m.ttft_ms),
        ("generation", m.generation_ms),
        ("send", m.send_ms),
        ("end_to_end", m.end_to_end_ms),
    ] {
        metrics::histogram!("herd_latency_seconds", "stage" => stage).record(ms(v));
    }
    metrics::counter!("herd_replies_total", "mode" => m.prompt_mode.clone().unwrap_or_default()).increment(1);
    metrics::counter!("herd_tokens_in_total").increment(m.tokens_in.max(0) as u64);
    metrics::counter!("herd_tokens_out_total").increment(m.tokens_out.max(0) as u64);
    if m.generation_ms > 0 && m.tokens_out > 0 {
        metrics::histogram!("herd_generation_tokens_per_second").record(f64::from(m.tokens_out) * 1000.0 / f64::from(m.generation_ms));
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Aborts a task when dropped (also when the future holding it is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers one inbound message: generate, split, send (idempotently), record.
async fn answer(w: &Worker, ch: &Channel, m: &InboundMessage, inbound: &InboundRow, received_at_ms: i64) -> Result<(), WorkerError> {
    let started = Instant::now();
    let queue_wait_ms = (now_ms() - received_at_ms).max(0);
    if let Some(state) = w.store.outbox_state(inbound.id).await? {
        // A reply was started before (a worker died after starting to send): never send twice.
        tracing::warn!(inbound = inbound.id, %state, "reply already started; not sending again");
        if state == OutboxState::Sending {
            w.store
                .outbox_finish(inbound.id, OutboxState::Unknown, 1, Some("worker stopped while sending"), MessageStatus::Answered)
                .await?;
        } else {
            w.store.set_status(inbound.id, MessageStatus::Answered).await?;
        }
        return Ok(());
    }
    let r = ChannelRef { platform: ch.platform, external_id: &ch.external_id, access_token: &ch.access_token };
    if let Err(e) = w.sender.mark_read_and_typing(&r, &m.sender, &inbound.platform_message_id).await {
        tracing::debug!(error = %e, "mark read / typing failed");
    }
    let (new_user, mau) = match w.queue.count_active_user(ch.tenant_id, &format!("{}:{}", ch.platform.as_str(), m.sender)).await {
        Ok((n, c)) => (n, Some(c)),
        Err(e) => {
            tracing::warn!(error = %e, "counting monthly active users failed");
            (false, None)
        }
    };
    let ctx = TurnContext {
        tenant_id: ch.tenant_id,
        platform: ch.platform,
        sender: &m.sender,
        text: &inbound.body,
        has_image: inbound.kind == "image",
        monthly_active_users: mau,
        new_user,
    };
    let (decision, records) = tracing::info_span!("policy.input").in_scope(|| blocking(|| w.policy.check_input(&ctx)));
    count_decisions(&records);
    w.store.record_decisions(ch.tenant_id, inbound.id, inbound.conversation_id, &records).await?;
    // The user's country, for analytics by country: their WhatsApp number, or what the policy placed.
    let country = (ch.platform == herd_core::Platform::Whatsapp)
        .then(|| herd_policies::region::country_of_phone(&m.sender))
        .flatten()
        .or_else(|| records.iter().find_map(|r| r.country.clone()));
    if let Some(c) = country {
        w.store.set_conversation_country(inbound.conversation_id, &c).await?;
    }
    let policy_message = |text: String| (text, ReplyMetrics { prompt_mode: Some("policy_message".into()), ..Default::default() });
    let (reply, mut metrics) = match &decision {
        Decision::Block => {
            w.store.set_status(inbound.id, MessageStatus::Blocked).await?;
            return Ok(());
        }
        Decision::ReplaceOnce(text) => {
            // A blocked user hears why once per conversation; after that, nothing is sent.
            if !w.queue.once_per(&format!("policy-notice:{}", inbound.conversation_id), 30 * 24 * 3600).await? {
                w.store.set_status(inbound.id, MessageStatus::Blocked).await?;
                return Ok(());
            }
            policy_message(text.clone())
        }
        Decision::Replace(text) => policy_message(text.clone()),
        Decision::Allow | Decision::Guide { .. } => {
            let history = w.store.history(inbound.conversation_id, inbound.id, 64).await?;
            let guide = match &decision {
                Decision::Guide { system_prompt } => Some(system_prompt.clone()),
                _ => None,
            };
            let mut attempt = 0;
            let mut system = guide.clone();
            loop {
                let g = generate(w, inbound.id, &history, system.as_deref()).await?;
                let mode = match (&guide, attempt) {
                    (None, _) => "standard",
                    (Some(_), 0) => "balanced",
                    (Some(_), _) => "balanced_regenerated",
                };
                let metrics = ReplyMetrics {
                    tokens_in: g.tokens_in as i32,
                    tokens_out: g.tokens_out as i32,
                    ttft_ms: g.ttft_ms as i32,
                    generation_ms: g.generation_ms as i32,
                    prompt_mode: Some(mode.into()),
                    ..Default::default()
                };
                let (out, recs) = tracing::info_span!("policy.output", attempt)
                    .in_scope(|| blocking(|| w.policy.check_output(&ctx, &decision, &g.text, attempt)));
                count_decisions(&recs);
                w.store.record_decisions(ch.tenant_id, inbound.id, inbound.conversation_id, &recs).await?;
                match out {
                    Output::Send => break (g.text, metrics),
                    Output::Replace(text) => break (text, ReplyMetrics { prompt_mode: Some("policy_message".into()), ..metrics }),
                    Output::Regenerate { system_prompt } if attempt == 0 => {
                        attempt += 1;
                        system = Some(system_prompt);
                    }
                    Output::Regenerate { .. } => break (g.text, metrics),
                }
            }
        }
    };
    if reply.trim().is_empty() {
        w.store.set_status(inbound.id, MessageStatus::Skipped).await?;
        return Ok(());
    }
    if !w.store.outbox_begin(inbound.id, &reply).await? {
        w.store.set_status(inbound.id, MessageStatus::Answered).await?;
        return Ok(());
    }
    let parts = split_message(&reply, ch.platform.max_message_chars());
    let send_started = Instant::now();
    let mut attempts_total = 0;
    for (i, part) in parts.iter().enumerate() {
        let send_span = tracing::info_span!("send", platform = ch.platform.as_str(), part = i);
        let (result, attempts) = tracing::Instrument::instrument(send_with_retry(w, &r, &m.sender, part), send_span).await;
        attempts_total += attempts;
        match result {
            Ok(pmid) => {
                metrics.send_ms = send_started.elapsed().as_millis() as i32;
                metrics.queue_wait_ms = queue_wait_ms as i32;
                metrics.end_to_end_ms = (now_ms() - received_at_ms).max(0) as i32;
                w.store.record_outbound(inbound, ch.id, i as i32, part, pmid.as_deref(), &metrics).await?;
                if i == 0 {
                    observe_reply(&metrics);
                    // Tokens routed per expert since the last reply (of every conversation in the
                    // batch; the analytics show them per day).
                    if let Err(e) = w.store.add_expert_usage(&w.engine.take_expert_counts()).await {
                        tracing::warn!(error = %e, "recording expert usage failed");
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                return match e.action() {
                    SendAction::OutsideWindow => {
                        w.store.outbox_finish(inbound.id, OutboxState::Expired, attempts_total, Some(&msg), MessageStatus::Failed).await?;
                        Ok(())
                    }
                    _ => {
                        w.store.outbox_finish(inbound.id, OutboxState::Failed, attempts_total, Some(&msg), MessageStatus::Failed).await?;
                        Err(WorkerError::DeadLetter(msg))
                    }
                };
            }
        }
    }
    w.store.outbox_finish(inbound.id, OutboxState::Sent, attempts_total, None, MessageStatus::Answered).await?;
    tracing::info!(inbound = inbound.id, parts = parts.len(), ms = started.elapsed().as_millis() as u64, "answered");
    Ok(())
}

/// Generates a reply to the conversation so far (ending with message `inbound_id`), with an extra
/// system prompt when given.
async fn generate(
    w: &Worker,
    inbound_id: i64,
    history: &[herd_store::Turn],
    extra_system: Option<&str>,
) -> Result<crate::engine::Reply, WorkerError> {
    let cfg = &w.settings.worker;
    let system = match (cfg.system_prompt.trim(), extra_system) {
        ("", None) => None,
        (base, None) => Some(base.to_string()),
        ("", Some(x)) => Some(x.trim().to_string()),
        (base, Some(x)) => Some(format!("{base}\n\n{}", x.trim())),
    };
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", &s));
    }
    messages.extend(history.iter().map(|t| ChatMessage::new(if t.inbound { "user" } else { "assistant" }, &t.body)));
    let prompt = w.engine.prompt(messages, cfg.max_new_tokens).map_err(|e| WorkerError::DeadLetter(e.to_string()))?;
    if let Some(cut) = prompt.cut {
        tracing::info!(message = inbound_id, %cut, "the newest message was cut to fit the prompt");
        w.store.add_note(inbound_id, &format!("{cut} (what the model read)")).await?;
    }
    match w.engine.generate(prompt.ids, cfg.max_new_tokens, cfg.temperature).await {
        Ok(g) => Ok(g),
        Err(e @ (EngineError::Overloaded(_) | EngineError::Stopped)) => Err(WorkerError::Transient(e.to_string())),
        Err(e) => Err(WorkerError::DeadLetter(e.to_string())),
    }
}

/// Sends one piece, retrying rate limits, 5xx and network errors with exponential backoff.
async fn send_with_retry(w: &Worker, r: &ChannelRef<'_>, to: &str, text: &str) -> (Result<Option<String>, SendError>, i32) {
    let cfg = &w.settings.worker;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match w.sender.send_text(r, to, text).await {
            Ok(id) => return (Ok(id), attempt),
            Err(e) if e.action() == SendAction::Retry && attempt < cfg.send_attempts as i32 => {
                let delay = cfg.retry_base_ms.saturating_mul(1 << (attempt - 1).min(10));
                tracing::info!(error = %e, attempt, delay_ms = delay, "send retry");
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Err(e) => return (Err(e), attempt),
        }
    }
}
