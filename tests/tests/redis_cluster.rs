//! herd on a Redis Cluster of the test's own (3 masters, each with a replica): the turn
//! streams' partitions spread over the shards, and a burst of webhooks — each delivered twice —
//! is answered exactly once per message although one shard fails over (`CLUSTER FAILOVER` on
//! its replica) in the middle of it.

use herd_e2e::procs::{RedisCluster, scratch};
use herd_e2e::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SENDERS: usize = 60;

/// Posts `from`'s one message until the gateway takes it (200), as the platform redelivers a
/// webhook that did not get one; the statuses it got before.
async fn post_until_taken(herd: &Herd, from: &str) -> Vec<u16> {
    let body = whatsapp_texts(&[(from, &format!("wamid.{from}"), "Hello there")]);
    let mut refused = Vec::new();
    for _ in 0..100 {
        match herd.post("whatsapp", &body, Some(WA_SECRET)).await.0 {
            200 => return refused,
            s => refused.push(s),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway refused {from}'s webhook 100 times: {refused:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_queue_on_a_cluster_answers_each_message_once_through_a_failover() {
    let dir = scratch("redis-cluster");
    let cluster = RedisCluster::start(&dir).await;
    let url = cluster.url();
    let herd = Arc::new(
        Herd::start_with(
            2,
            |s| {
                s.redis_url = url.clone();
                s.queue.partitions = 8;
            },
            None,
        )
        .await,
    );
    assert!(herd.queue.connection().is_cluster());
    let ready = herd.http.get(format!("{}/readyz", herd.gateway)).send().await.expect("readyz");
    let ready: (u16, serde_json::Value) = (ready.status().as_u16(), ready.json().await.unwrap_or_default());
    assert_eq!(ready.0, 200, "ready on a cluster: {:?}", ready.1);
    // The gateway counts the cluster's replicas (3) in what it says an acknowledged webhook survives.
    assert!(ready.1["durability"].as_str().is_some_and(|d| d.contains("3 replica(s)")), "{:?}", ready.1);

    // The partitions' streams live on more than one shard.
    let shards: HashSet<u16> = herd
        .queue
        .stream_keys()
        .iter()
        .map(|k| {
            let slot = RedisCluster::cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", k]).trim().to_string();
            cluster.masters().into_iter().find(|p| RedisCluster::owns(*p, &slot)).expect("a master serves each stream")
        })
        .collect();
    assert!(shards.len() >= 2, "8 partitions on {} shard(s)", shards.len());

    // The burst, posted 6 at a time; the shard of the first sender's partition fails over
    // once a third of it is taken, while workers read and answer.
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("1555000{i:04}")).collect();
    let channels = herd.store.channels().await.expect("channels");
    let wa = channels.iter().find(|c| c.external_id == WA_PHONE_ID).expect("the WhatsApp channel");
    let first = herd_queue::conversation_key(wa.id, &senders[0]);
    let stream = herd.queue.stream_keys()[herd.queue.partition_of(&first) as usize].clone();
    let taken = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (herd, senders, taken) = (herd.clone(), senders.clone(), taken.clone());
        tokio::spawn(async move {
            let mut refused = Vec::new();
            for chunk in senders.chunks(6) {
                let posts = chunk.iter().map(|s| {
                    let (herd, s) = (herd.clone(), s.clone());
                    tokio::spawn(async move { post_until_taken(&herd, &s).await })
                });
                for p in posts.collect::<Vec<_>>() {
                    refused.extend(p.await.expect("post task"));
                    taken.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            refused
        })
    };
    herd.wait_until(60, "a third of the burst taken", || async { taken.load(Ordering::SeqCst) >= SENDERS / 3 }).await;
    let new_master = cluster.failover_of(&stream).await;
    let taken_at_failover = taken.load(Ordering::SeqCst);
    let refused = burst.await.expect("burst");
    assert!(taken_at_failover < SENDERS, "the failover came after the burst ({taken_at_failover} taken)");
    assert!(cluster.masters().contains(&new_master));
    cluster.wait_ok(30).await;

    // Every webhook again (the platform's redelivery): all duplicates now.
    for s in &senders {
        let refused_again = post_until_taken(&herd, s).await;
        assert!(refused_again.iter().all(|c| *c == 503), "{refused_again:?}");
    }
    herd.wait_until(120, "a reply to every sender", || async {
        herd.stub.accepted().iter().filter_map(|c| c.to().map(str::to_string)).collect::<HashSet<_>>().len() == SENDERS
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_sender: HashMap<String, usize> = HashMap::new();
    for c in herd.stub.accepted() {
        *per_sender.entry(c.to().unwrap_or_default().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = per_sender.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    assert_eq!(per_sender.len(), SENDERS);
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", SENDERS as i64).await;
    assert_eq!(herd.dead_letters().await, 0);
    assert_eq!(herd.queue.pending_count().await.expect("pending"), 0);
    // The failover cost at most some 503s (redelivered), never a 500.
    assert!(refused.iter().all(|c| *c == 503), "the gateway answered {refused:?} during the failover");
    eprintln!("failover after {taken_at_failover} of {SENDERS} webhooks: {} refused with 503 and delivered again", refused.len());
}
