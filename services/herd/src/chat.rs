//! `herd chat`: a terminal chat as a WhatsApp user. It plays both ends herd talks to: it sends
//! correctly signed webhooks to the running gateway, and it serves a small stand-in of the Graph
//! API at `platforms.whatsapp_base_url`, where herd's replies arrive and are printed.

use anyhow::{Context, Result, bail};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use herd_core::Settings;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Something herd sent to the stand-in Graph API.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    Typing,
}

#[derive(Clone)]
struct Stub {
    tx: mpsc::UnboundedSender<Outgoing>,
    next_id: Arc<AtomicU64>,
}

async fn graph_messages(State(st): State<Stub>, Path((_version, _phone)): Path<(String, String)>, Json(body): Json<Value>) -> Json<Value> {
    if body.get("status").and_then(Value::as_str) == Some("read") || body.get("sender_action").is_some() {
        let _ = st.tx.send(Outgoing::Typing);
        return Json(json!({"success": true}));
    }
    let text = body.pointer("/text/body").or_else(|| body.pointer("/message/text")).and_then(Value::as_str).unwrap_or("").to_string();
    let _ = st.tx.send(Outgoing::Text(text));
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    Json(json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.stub.{id}")}], "message_id": format!("mid.stub.{id}")}))
}

/// Runs the terminal chat against a herd using `s`.
pub async fn run(s: &Settings, from: &str) -> Result<()> {
    let ch = s
        .tenants
        .iter()
        .flat_map(|t| &t.channels)
        .find(|c| c.platform == "whatsapp")
        .context("the settings have no WhatsApp channel under [[tenants.channels]]")?
        .clone();
    let base = s.platforms.whatsapp_base_url.trim_end_matches('/');
    let addr = base
        .strip_prefix("http://")
        .context("herd chat serves the Graph API stand-in: platforms.whatsapp_base_url must be http://HOST:PORT")?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr} (is another herd chat running?)"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = Router::new().route("/{version}/{phone}/messages", post(graph_messages)).with_state(Stub { tx, next_id: Arc::default() });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gateway = format!("http://{}/webhooks/whatsapp", s.gateway.listen);
    let http = reqwest::Client::new();
    eprintln!("herd chat — you are WhatsApp user +{from} writing to {}; /quit ends.", ch.external_id);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    loop {
        print!("you> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next_line().await? else { break };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        n += 1;
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": ch.external_id, "phone_number_id": ch.external_id},
            "contacts": [{"profile": {"name": "You"}, "wa_id": from}],
            "messages": [{"from": from, "id": format!("wamid.chat.{}.{ts}.{n}", std::process::id()), "timestamp": ts.to_string(),
                          "type": "text", "text": {"body": line}}]}}]}]});
        let raw = serde_json::to_vec(&body)?;
        let sig = herd_channels::signature::sign(ch.app_secret.as_bytes(), &raw);
        let resp = http
            .post(&gateway)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(raw)
            .send()
            .await
            .with_context(|| format!("sending the webhook to {gateway} (is `herd serve` running?)"))?;
        if !resp.status().is_success() {
            bail!("the gateway answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        // Print what herd sends until the reply text arrives (or 120 s pass).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Outgoing::Typing)) => eprintln!("herd is typing…"),
                Ok(Some(Outgoing::Text(t))) => {
                    println!("herd> {t}");
                    // Split replies come as several messages in a row: take what follows quickly.
                    while let Ok(Some(Outgoing::Text(t))) = tokio::time::timeout(std::time::Duration::from_millis(300), rx.recv()).await {
                        println!("herd> {t}");
                    }
                    break;
                }
                Ok(None) => bail!("the Graph API stand-in stopped"),
                Err(_) => {
                    eprintln!("(no reply within 120 s — is a worker running? see herd serve's log)");
                    break;
                }
            }
        }
    }
    Ok(())
}
