//! One trace from the webhook to the send, exported over OTLP/HTTP to a receiver in this test.
//! (Its own test binary: the tracer provider is global to the process.)

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use herd_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An OTLP/HTTP (JSON) trace receiver: every span it was sent, as JSON.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for sp in ss["spans"].as_array().into_iter().flatten() {
                            sink.lock().expect("lock").push(sp.clone());
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_webhook_to_the_send_and_reaches_the_otlp_receiver() {
    let (receiver, spans) = otlp_receiver().await;
    herd_core::telemetry::init_with(Some(&receiver), "herd-e2e");
    let herd = Herd::start(1).await;
    // the platform's own trace context is honoured: the webhook span continues it
    let platform_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = whatsapp_texts(&[("14155550123", "wamid.T1", "hello")]);
    let resp = herd
        .http
        .post(format!("{}/webhooks/whatsapp", herd.gateway))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(WA_SECRET, &body))
        .header("traceparent", format!("00-{platform_trace}-00f067aa0ba902b7-01"))
        .body(body)
        .send()
        .await
        .expect("gateway");
    assert_eq!(resp.status().as_u16(), 200);
    herd.wait_for_sends(1).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 1).await;
    let wanted = ["webhook", "turn", "policy.input", "engine.prefill", "engine.decode", "policy.output", "send"];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        herd_core::telemetry::flush();
        let got: Vec<String> = spans.lock().expect("lock").iter().filter_map(|s| s["name"].as_str().map(String::from)).collect();
        if wanted.iter().all(|w| got.iter().any(|g| g == w)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "spans received: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let spans = spans.lock().expect("lock").clone();
    let by_name: HashMap<&str, &Value> = spans.iter().filter_map(|s| Some((s["name"].as_str()?, s))).collect();
    for name in wanted {
        assert_eq!(by_name[name]["traceId"].as_str(), Some(platform_trace), "{name} is in the message's trace: {}", by_name[name]);
    }
    // the parent chain: webhook → turn (through the Redis entry) → engine and send spans
    assert_eq!(by_name["turn"]["parentSpanId"], by_name["webhook"]["spanId"]);
    for child in ["policy.input", "engine.prefill", "engine.decode", "send"] {
        assert_eq!(by_name[child]["parentSpanId"], by_name["turn"]["spanId"], "{child}");
    }
    herd.stop().await;
}
