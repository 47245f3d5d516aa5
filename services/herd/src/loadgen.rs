//! `herd loadgen`: a webhook load generator for the ingest benchmark. Every request is a
//! correctly signed WhatsApp text webhook with a unique message id (so none is a duplicate);
//! `--bare` sends the same bodies to the gateway's do-nothing `/bare` route instead.

use anyhow::{Context, Result};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Options {
    pub url: String,
    pub requests: u64,
    pub concurrency: usize,
    pub secret: String,
    pub phone_id: String,
    pub bare: bool,
    pub run_id: String,
}

fn body(o: &Options, n: u64) -> Vec<u8> {
    let from = format!("4470090{:05}", n % 50);
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": o.phone_id},
        "contacts": [{"profile": {"name": "Load"}, "wa_id": from}],
        "messages": [{"from": from, "id": format!("wamid.load.{}.{n}", o.run_id), "timestamp": "1700000000", "type": "text",
                      "text": {"body": "Hello there, how are you today?"}}]}}]}]}))
    .unwrap_or_default()
}

/// Sends the requests and prints a JSON summary.
pub async fn run(o: Options) -> Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency).build().context("HTTP client")?;
    let target =
        if o.bare { format!("{}/bare", o.url.trim_end_matches('/')) } else { format!("{}/webhooks/whatsapp", o.url.trim_end_matches('/')) };
    let o = Arc::new(o);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..o.concurrency {
        let (o, next, errors, http, target) = (o.clone(), next.clone(), errors.clone(), http.clone(), target.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= o.requests {
                    break;
                }
                let b = body(&o, n);
                let sig = herd_channels::signature::sign(o.secret.as_bytes(), &b);
                let t = Instant::now();
                let r =
                    http.post(&target).header("content-type", "application/json").header("x-hub-signature-256", sig).body(b).send().await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        });
    }
    let mut lat: Vec<Duration> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.unwrap_or_default());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{}",
        json!({
            "target": target, "requests": o.requests, "concurrency": o.concurrency, "ok": lat.len(),
            "errors": errors.load(Ordering::Relaxed), "seconds": secs, "requests_per_s": lat.len() as f64 / secs,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            "run_id": o.run_id,
        })
    );
    Ok(())
}
