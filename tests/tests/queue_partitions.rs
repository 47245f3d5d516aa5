//! The partitioned turn stream on one Redis server: a conversation's messages stay in one
//! partition in order, one read covers every partition, a redelivered message id is a duplicate
//! whichever gateway sees it, and the one stream of earlier versions is adopted at start-up.

use herd_core::settings::QueueSettings;
use herd_core::{Content, InboundMessage, Platform};
use herd_queue::{Entry, Job, Queue};
use std::collections::{HashMap, HashSet};

fn cfg(partitions: u32) -> QueueSettings {
    QueueSettings { key_prefix: format!("herdpart:{}", herd_e2e::unique()), partitions, ..Default::default() }
}

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn entry(sender: &str, mid: &str) -> Entry {
    let message = InboundMessage {
        platform: Platform::Whatsapp,
        channel_external_id: "PHONE".into(),
        sender: sender.into(),
        platform_message_id: mid.into(),
        timestamp: 1_700_000_000,
        content: Content::Text { body: "hello".into() },
        sender_name: None,
        removed_nul: 0,
    };
    Entry { job: Job::Message { channel_id: 1, tenant_id: 1, message, rate_limited: false }, received_at_ms: 0, traceparent: None }
}

#[tokio::test]
async fn conversations_keep_their_order_within_a_partition_and_one_read_covers_all() {
    let q = Queue::connect(&url(), cfg(4)).await.expect("connect");
    let senders: Vec<String> = (0..40).map(|i| format!("1555{i:04}")).collect();
    for round in 0..3 {
        for s in &senders {
            let id = q.enqueue_once("whatsapp", &format!("{s}.{round}"), &entry(s, &format!("{s}.{round}"))).await.expect("enqueue");
            assert!(id.is_some(), "a new message is enqueued");
        }
    }
    // A redelivery is a duplicate, and `seen` says so, in whichever partition it went to.
    for s in &senders {
        assert_eq!(q.enqueue_once("whatsapp", &format!("{s}.1"), &entry(s, &format!("{s}.1"))).await.expect("enqueue"), None);
        assert!(q.seen("whatsapp", &herd_queue::conversation_key(1, s), &format!("{s}.1")).await.expect("seen"));
    }
    let reader = q.with_reader().await.expect("reader");
    let mut got = Vec::new();
    while got.len() < 120 {
        let batch = reader.read("c1", 50, 200).await.expect("read");
        assert!(!batch.is_empty(), "entries left unread after {}", got.len());
        got.extend(batch);
    }
    let partitions: HashSet<u32> = got.iter().map(|d| d.partition).collect();
    assert_eq!(partitions.len(), 4, "40 conversations use every partition");
    // Per conversation: one partition, messages in the order they came.
    let mut seen: HashMap<String, (u32, Vec<String>)> = HashMap::new();
    for d in &got {
        let Job::Message { message, .. } = &d.entry.job else { panic!("a message") };
        let e = seen.entry(message.sender.clone()).or_insert((d.partition, Vec::new()));
        assert_eq!(e.0, d.partition, "{} in two partitions", message.sender);
        e.1.push(message.platform_message_id.clone());
    }
    for (s, (_, mids)) in &seen {
        assert_eq!(mids, &vec![format!("{s}.0"), format!("{s}.1"), format!("{s}.2")]);
    }
    assert_eq!(q.pending_count().await.expect("pending"), 120);
    for d in &got {
        q.ack(d).await.expect("ack");
    }
    let (len, pending, lag) = q.stream_stats().await.expect("stats");
    assert_eq!((len, pending, lag), (0, 0, Some(0)));
}

#[tokio::test]
async fn the_unpartitioned_stream_of_an_earlier_version_is_adopted() {
    let c = cfg(4);
    let client = redis::Client::open(url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let legacy = format!("{}:turns", c.key_prefix);
    for s in ["15550001", "15550002", "15550003"] {
        let data = serde_json::to_string(&entry(s, &format!("{s}.old"))).expect("json");
        let _: String = redis::cmd("XADD").arg(&legacy).arg("*").arg("data").arg(data).query_async(&mut conn).await.expect("xadd");
    }
    let q = Queue::connect(&url(), c).await.expect("connect");
    let kind: String = redis::cmd("TYPE").arg(&legacy).query_async(&mut conn).await.expect("type");
    assert_eq!(kind, "none", "the old stream is gone once adopted");
    let reader = q.with_reader().await.expect("reader");
    let got = reader.read("c1", 10, 200).await.expect("read");
    let mut senders: Vec<String> = got
        .iter()
        .map(|d| match &d.entry.job {
            Job::Message { message, .. } => {
                assert_eq!(d.partition, d.entry.partition(4));
                message.sender.clone()
            }
            _ => panic!("a message"),
        })
        .collect();
    senders.sort();
    assert_eq!(senders, ["15550001", "15550002", "15550003"]);
}
