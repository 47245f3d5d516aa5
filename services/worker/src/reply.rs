//! Answering one message: the input policy, generation (regenerated once when the output
//! policy asks), the output policy, then the reply handed to [`deliver`].

use crate::deliver;
use crate::engine::EngineError;
use crate::policy::{Decision, Output, TurnContext};
use crate::{Worker, WorkerError};
use herd_channels::send::ChannelRef;
use herd_core::{InboundMessage, MessageStatus};
use herd_engine::tokenizer::ChatMessage;
use herd_store::{Channel, Fence, InboundRow, ReplyMetrics};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Answers one inbound message under `fence`: decide, generate, then send (once) and record.
pub(crate) async fn answer(
    w: &Worker,
    ch: &Channel,
    m: &InboundMessage,
    inbound: &InboundRow,
    fence: Fence,
    received_at_ms: i64,
) -> Result<(), WorkerError> {
    if let Some(o) = w.store.outbox(inbound.id).await? {
        // A reply was started before, by a worker that stopped: finish it, never send twice.
        return deliver::resume(w, ch, &m.sender, inbound, o, fence).await;
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
            w.store.set_status(inbound.id, MessageStatus::Blocked, fence).await?;
            return Ok(());
        }
        Decision::ReplaceOnce(text) => {
            // A blocked user hears why once per conversation; after that, nothing is sent.
            if !w.queue.once_per(&format!("policy-notice:{}", inbound.conversation_id), 30 * 24 * 3600).await? {
                w.store.set_status(inbound.id, MessageStatus::Blocked, fence).await?;
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
                    generated: true,
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
        w.store.set_status(inbound.id, MessageStatus::Skipped, fence).await?;
        return Ok(());
    }
    if !w.store.outbox_begin(inbound.id, &reply, fence).await? {
        w.store.set_status(inbound.id, MessageStatus::Answered, fence).await?;
        return Ok(());
    }
    metrics.queue_wait_ms = (now_ms() - received_at_ms).max(0) as i32;
    let sent = deliver::Reply { inbound, text: &reply, first_part: 0, attempts: 0, age_ms: 0, received_at_ms };
    deliver::send(w, ch, &m.sender, sent, metrics).await
}
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
pub(crate) fn observe_reply(m: &herd_store::ReplyMetrics) {
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

/// Runs a policy check, which may run a guard model for a while, without stalling the other
/// tasks of this runtime thread (on a multi-thread runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
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
