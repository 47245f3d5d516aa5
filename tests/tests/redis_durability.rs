//! What an acknowledged webhook survives: stated by the gateway (`/readyz`, start-up log), and
//! with `queue.wait_replicas` a 200 only once a replica has the entry — otherwise 503, and the
//! platform's redelivery is enqueued again (not taken for a duplicate) and answered once.

use herd_e2e::procs::{RedisServer, scratch};
use herd_e2e::*;
use std::time::{Duration, Instant};

async fn readyz(herd: &Herd) -> serde_json::Value {
    herd.http.get(format!("{}/readyz", herd.gateway)).send().await.expect("readyz").json().await.expect("json")
}

/// Waits until `primary` has `n` replicas in sync.
async fn wait_replicas(primary: &RedisServer, n: usize) {
    let client = redis::Client::open(primary.url()).expect("url");
    let t = Instant::now();
    loop {
        let mut c = client.get_multiplexed_async_connection().await.expect("connect");
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.expect("info");
        let online = info.lines().filter(|l| l.starts_with("slave") && l.contains("state=online")).count();
        if online == n {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{n} replicas not in sync:\n{info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_states_that_a_memory_only_redis_loses_acknowledged_webhooks_and_covers_its_workers() {
    let herd = Herd::start(1).await;
    herd.wait_until(10, "the worker to report", || async {
        readyz(&herd).await["parts"].as_object().is_some_and(|p| p.keys().any(|k| k.starts_with("worker ")))
    })
    .await;
    let v = readyz(&herd).await;
    let parts = v["parts"].as_object().cloned().unwrap_or_default();
    // One worker reports, and the process running it reports PostgreSQL; all of them healthy.
    assert!(parts.iter().all(|(_, state)| state == "ok"), "{v}");
    assert_eq!(parts.keys().filter(|k| k.starts_with("worker ")).count(), 1, "{v}");
    assert!(parts.contains_key("postgres"), "{v}");
    let d = v["durability"].as_str().unwrap_or_default();
    // make test's Redis runs without persistence (deploy/local/services.sh).
    assert!(d.contains("memory only") && d.contains("queue.wait_replicas"), "{v}");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_webhook_is_acknowledged_only_once_a_replica_has_it() {
    let dir = scratch("wait-replicas");
    let primary = RedisServer::start(&dir, "primary", &[]).await;
    let port = primary.port.to_string();
    let mut replica = RedisServer::start(&dir, "replica", &["--replicaof", "127.0.0.1", &port]).await;
    wait_replicas(&primary, 1).await;
    let url = primary.url();
    let herd = Herd::start_with(
        1,
        move |s| {
            s.redis_url = url;
            s.queue.wait_replicas = 1;
            s.queue.wait_timeout_ms = 300;
        },
        None,
    )
    .await;
    assert!(readyz(&herd).await["durability"].as_str().unwrap_or_default().contains("1 replica(s)"));
    let first = whatsapp_texts(&[("447700900801", "wamid.WAIT1", "Hello")]);
    assert_eq!(herd.post("whatsapp", &first, Some(WA_SECRET)).await.0, 200);
    herd.wait_for_sends(1).await;

    replica.kill9();
    let second = whatsapp_texts(&[("447700900802", "wamid.WAIT2", "Hello")]);
    let (status, v) = herd.post("whatsapp", &second, Some(WA_SECRET)).await;
    assert_eq!(status, 503, "no replica has it: {v}");

    replica.restart().await;
    wait_replicas(&primary, 1).await;
    // The platform delivers it again: enqueued again, answered once.
    assert_eq!(herd.post("whatsapp", &second, Some(WA_SECRET)).await.0, 200);
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'sent'", 2).await;
    let sends = herd.quiet_sends().await;
    assert_eq!(sends.iter().filter(|c| c.to() == Some("447700900802")).count(), 1, "answered once");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in'").await, 2);
    herd.stop().await;
}
