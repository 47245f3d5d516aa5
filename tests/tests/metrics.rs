//! Prometheus text at `/metrics` with the counters of one chat, and the health and readiness
//! probes. (Its own test binary: the metrics registry is global to the process.)

use herd_e2e::*;
use serde_json::Value;
use std::collections::HashMap;

/// Checks every line is Prometheus text exposition format; returns the samples by name.
fn parse_prometheus(text: &str) -> HashMap<String, Vec<(String, f64)>> {
    let mut samples: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(matches!(words.first(), Some(&"HELP") | Some(&"TYPE")), "comment line: {line}");
            if words[0] == "TYPE" {
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&words[2]), "type: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "labels: {line}");
                (n, l.trim_end_matches('}').to_string())
            }
            None => (series, String::new()),
        };
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "metric name: {line}");
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "label name: {line}");
            let _ = v;
        }
        samples.entry(name.to_string()).or_default().push((labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_the_probes_answer() {
    herd_core::telemetry::init_with(None, "herd-e2e");
    let herd = Herd::start(1).await;
    let admin = herd.start_admin(1000).await;
    let body = whatsapp_texts(&[("14155550123", "wamid.M1", "hello")]);
    for _ in 0..2 {
        let (s, _) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
        assert_eq!(s, 200);
    }
    herd.wait_for_sends(1).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 1).await;
    let metrics = |base: String| async move {
        let resp = reqwest::get(format!("{base}/metrics")).await.expect("metrics");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/plain")));
        resp.text().await.expect("text")
    };
    let mut m = parse_prometheus(&metrics(herd.gateway.clone()).await);
    // the turn's counters land just after the send: poll briefly
    for _ in 0..50 {
        if m.contains_key("herd_turns_total") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        m = parse_prometheus(&metrics(herd.gateway.clone()).await);
    }
    let total = |name: &str| m.get(name).map_or(0.0, |v| v.iter().map(|s| s.1).sum::<f64>());
    assert_eq!(total("herd_webhook_requests_total"), 2.0);
    assert_eq!(total("herd_messages_accepted_total"), 1.0);
    assert_eq!(total("herd_dedup_hits_total"), 1.0);
    assert!(total("herd_turns_total") >= 1.0, "{:?}", m.keys().collect::<Vec<_>>());
    assert!(total("herd_tokens_out_total") > 0.0);
    let e2e = &m["herd_latency_seconds_count"];
    assert!(e2e.iter().any(|(l, v)| l.contains("stage=\"end_to_end\"") && *v == 1.0), "{e2e:?}");
    assert!(m.contains_key("herd_latency_seconds_bucket") && m.contains_key("herd_webhook_seconds_bucket"));
    // the admin service serves the same registry
    parse_prometheus(&metrics(admin.clone()).await);
    for base in [&herd.gateway, &admin] {
        assert_eq!(reqwest::get(format!("{base}/healthz")).await.expect("healthz").status().as_u16(), 200);
        let r = reqwest::get(format!("{base}/readyz")).await.expect("readyz");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["redis"], true, "{v}");
    }
    herd.stop().await;
}
