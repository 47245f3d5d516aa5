//! Routes: `GET /webhooks/{platform}` (verification), `POST /webhooks/{platform}` (events),
//! `GET /healthz`, and `POST /bare` (a do-nothing route, the baseline of the ingest benchmark).

use crate::channels::ChannelCache;
use crate::error::GatewayError;
use crate::limits::Limits;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use herd_channels::{parse_webhook, signature};
use herd_core::{Platform, Settings};
use herd_queue::{Entry, Job, Queue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Handles the gateway's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub queue: Queue,
    pub channels: Arc<ChannelCache>,
    pub limits: Arc<Limits>,
    pub settings: Arc<Settings>,
    /// The other parts of this process (its workers in `herd serve`), for `/readyz`.
    pub health: herd_core::Health,
    /// What an acknowledged webhook survives ([`Queue::durability`]).
    pub durability: Arc<str>,
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.gateway.max_body_bytes;
    Router::new()
        .route("/webhooks/{platform}", get(verify).post(receive))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], herd_core::telemetry::render_metrics()) }),
        )
        .route("/bare", post(|| async { "ok" }))
        // A declared Content-Length over the limit is 413 before any of the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The whole body, within the size limit and the read timeout.
async fn read_body(st: &AppState, body: Body) -> Result<Bytes, GatewayError> {
    let (limit, ms) = (st.settings.gateway.max_body_bytes, st.settings.gateway.body_timeout_ms);
    match tokio::time::timeout(std::time::Duration::from_millis(ms), axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(GatewayError::BodyTimeout(ms)),
        Ok(Ok(b)) => Ok(b),
        // A chunked body (no Content-Length) over the limit ends in the limiter's error.
        Ok(Err(e)) if e.to_string().contains("length limit") => Err(GatewayError::TooLarge(limit)),
        Ok(Err(e)) => Err(GatewayError::BodyRead(e.to_string())),
    }
}

fn platform_of(p: &str) -> Result<Platform, GatewayError> {
    Platform::parse(p).ok_or_else(|| GatewayError::UnknownPlatform(p.to_string()))
}

#[derive(Deserialize)]
struct VerifyQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// The subscription handshake: echo `hub.challenge` when the token is one of ours.
async fn verify(State(st): State<AppState>, Path(p): Path<String>, Query(q): Query<VerifyQuery>) -> Result<String, GatewayError> {
    let platform = platform_of(&p)?;
    match (q.mode.as_deref(), q.token.as_deref(), q.challenge) {
        (Some("subscribe"), Some(token), Some(challenge)) if st.channels.verify_token_matches(platform, token) => Ok(challenge),
        _ => Err(GatewayError::Forbidden),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// 200 when Redis answers (the gateway needs nothing else to accept webhooks), 503 otherwise.
/// 200 when Redis answers and every other part of the process can do its job.
async fn ready(State(st): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    let redis = st.queue.ping().await.is_ok();
    let (parts_ok, parts) = st.health.report();
    let status = if redis && parts_ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"redis": redis, "parts": parts, "durability": &*st.durability})))
}

/// Events: verify, parse, dedup, rate-limit, enqueue; 200 unless the request is bad or herd
/// cannot queue (then the platform retries). The request's span (child of an incoming
/// `traceparent`, if any) is the root of the message's trace; its context rides in the entries.
async fn receive(State(st): State<AppState>, Path(p): Path<String>, headers: HeaderMap, body: Body) -> Result<Json<Value>, GatewayError> {
    use tracing::Instrument;
    let span = tracing::info_span!("webhook", platform = %p, trace_id = tracing::field::Empty, accepted = tracing::field::Empty);
    herd_core::telemetry::set_parent(&span, headers.get("traceparent").and_then(|v| v.to_str().ok()));
    if let Some(t) = herd_core::telemetry::trace_id_of(&span) {
        span.record("trace_id", t);
    }
    let traceparent = herd_core::telemetry::traceparent_of(&span);
    let started = std::time::Instant::now();
    let result = match read_body(&st, body).await {
        Ok(body) => receive_in_span(st, &p, headers, body, traceparent).instrument(span.clone()).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    // The label is a known platform or `unknown`, never the raw path (unbounded series).
    let label = Platform::parse(&p).map_or("unknown", |pl| pl.as_str());
    metrics::counter!("herd_webhook_requests_total", "platform" => label, "outcome" => outcome).increment(1);
    metrics::histogram!("herd_webhook_seconds", "platform" => label).record(started.elapsed().as_secs_f64());
    result
}

async fn receive_in_span(
    st: AppState,
    p: &str,
    headers: HeaderMap,
    body: Bytes,
    traceparent: Option<String>,
) -> Result<Json<Value>, GatewayError> {
    let platform = platform_of(p)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| GatewayError::BadJson(e.to_string()))?;
    let batch = parse_webhook(platform, &value);

    // The channels the batch speaks for; each one's app secret must have signed the raw bytes.
    let mut channels = HashMap::new();
    let ids = batch.messages.iter().map(|m| &m.channel_external_id).chain(batch.statuses.iter().map(|s| &s.channel_external_id));
    for id in ids {
        if !channels.contains_key(id) {
            channels.insert(id.clone(), st.channels.get(platform, id).await);
        }
    }
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    let known: Vec<_> = channels.values().flatten().collect();
    if known.is_empty() {
        // Nothing of ours in it (unknown object, unknown channel, or no events): still check a
        // signature when one is there? No secret to check with — acknowledge and log.
        tracing::info!(platform = platform.as_str(), ignored = ?batch.ignored, unknown = ?channels.keys().collect::<Vec<_>>(), "webhook with nothing for herd");
        return Ok(Json(json!({"ok": true, "accepted": 0, "duplicates": 0, "ignored": batch.ignored.len()})));
    }
    for ch in &known {
        signature::verify(ch.app_secret.as_bytes(), &body, sig).map_err(|e| GatewayError::Unauthorized(e.to_string()))?;
    }
    let received_at_ms = now_ms();
    let unavailable = |e: herd_queue::Error| GatewayError::Unavailable(e.to_string());
    let (mut accepted, mut duplicates) = (0, 0u32);
    let duplicate = |duplicates: &mut u32| {
        *duplicates += 1;
        metrics::counter!("herd_dedup_hits_total", "platform" => platform.as_str()).increment(1);
    };
    for m in batch.messages {
        let Some(Some(ch)) = channels.get(&m.channel_external_id) else { continue };
        let pmid = m.platform_message_id.clone();
        // A redelivery spends no budget; over the tenant's limit the platform delivers again later
        // (what this webhook had before is deduplicated then); only a sender who really sends fast
        // is answered with the slow-down text.
        if st.queue.seen(platform.as_str(), &herd_queue::conversation_key(ch.id, &m.sender), &pmid).await.map_err(unavailable)? {
            duplicate(&mut duplicates);
            continue;
        }
        if !st.limits.tenant_allows(ch.tenant_id) {
            metrics::counter!("herd_tenant_rate_limited_total", "platform" => platform.as_str()).increment(1);
            return Err(GatewayError::TenantRateLimited(1));
        }
        let rate_limited = !st.limits.sender_allows(ch.tenant_id, &m.sender);
        if rate_limited {
            metrics::counter!("herd_rate_limited_total", "platform" => platform.as_str()).increment(1);
        }
        let job = Job::Message { channel_id: ch.id, tenant_id: ch.tenant_id, message: m, rate_limited };
        let entry = Entry { job, received_at_ms, traceparent: traceparent.clone() };
        // One atomic step: a failure leaves the id unseen, so the platform's retry is taken.
        if st.queue.enqueue_once(platform.as_str(), &pmid, &entry).await.map_err(unavailable)?.is_none() {
            duplicate(&mut duplicates);
            continue;
        }
        accepted += 1;
        metrics::counter!("herd_messages_accepted_total", "platform" => platform.as_str()).increment(1);
    }
    for s in batch.statuses {
        let Some(Some(ch)) = channels.get(&s.channel_external_id) else { continue };
        let entry = Entry { job: Job::Status { channel_id: ch.id, status: s }, received_at_ms, traceparent: traceparent.clone() };
        st.queue.enqueue(&entry).await.map_err(unavailable)?;
    }
    if !batch.ignored.is_empty() {
        tracing::info!(platform = platform.as_str(), ignored = ?batch.ignored, "webhook parts ignored");
    }
    Ok(Json(json!({"ok": true, "accepted": accepted, "duplicates": duplicates, "ignored": batch.ignored.len()})))
}
