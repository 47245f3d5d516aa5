//! Faults injected into herd running as separate processes, as an operator runs it: one
//! `herd gateway` and two `herd worker` processes over the Redis and PostgreSQL of `make test`,
//! a stand-in Graph API. A worker is killed (`kill -9`) or stopped with a short grace in the
//! middle of a burst; every message must still be answered exactly once — none lost, none sent
//! twice, none stuck, none dead-lettered.

use herd_core::Settings;
use herd_e2e::procs::{Proc, RedisServer, free_addr, scratch};
use herd_e2e::{GraphStub, WA_SECRET, fresh_database, settings, sign, unique, whatsapp_texts};
use herd_queue::Queue;
use herd_store::Store;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A gateway and workers as processes, and what the test looks at.
struct Cluster {
    stub: GraphStub,
    settings: Settings,
    store: Store,
    queue: Queue,
    gateway: Proc,
    workers: Vec<Proc>,
}

impl Cluster {
    async fn start(test: &str, workers: usize, tweak: impl FnOnce(&mut Settings)) -> Self {
        herd_channels::send::install_crypto();
        let stub = GraphStub::start().await;
        let db = fresh_database().await;
        let mut s = settings(&stub, &db, &format!("herdfault:{}", unique()));
        // The settings of the black-box run: a 3 s reclaim, 30 s locks, defaults otherwise.
        s.queue.claim_idle_ms = 3_000;
        s.queue.lock_ttl_ms = 30_000;
        s.queue.heartbeat_ms = 1_000;
        s.worker.concurrency = 4;
        s.worker.max_new_tokens = 12;
        s.gateway.listen = free_addr();
        s.admin.listen = String::new();
        s.worker.metrics_listen = String::new();
        tweak(&mut s);
        let dir = scratch(test);
        let bin = Path::new(env!("CARGO_BIN_EXE_herd"));
        let mut gateway = Proc::start(bin, &dir, "gateway", &["gateway"], &s);
        gateway.wait_for_log("gateway listening", 60).await;
        let mut procs = Vec::new();
        for i in 0..workers {
            procs.push(Proc::start(bin, &dir, &format!("worker{i}"), &["worker"], &s));
        }
        for p in &mut procs {
            p.wait_for_log("worker started", 120).await;
        }
        let store = Store::connect(&db).await.expect("store");
        let queue = Queue::connect(&s.redis_url, s.queue.clone()).await.expect("queue");
        Self { stub, settings: s, store, queue, gateway, workers: procs }
    }

    /// Posts one WhatsApp text from each of `senders` (message ids `wamid.<sender>`); every
    /// webhook must get 200.
    async fn post_one_each(&self, senders: &[String]) {
        for from in senders {
            assert_eq!(self.post_from(from).await, 200, "webhook from {from}");
        }
    }

    /// Posts `from`'s message (`wamid.<from>`); the HTTP status.
    async fn post_from(&self, from: &str) -> u16 {
        let body = whatsapp_texts(&[(from, &format!("wamid.{from}"), "Hello there")]);
        let r = reqwest::Client::new()
            .post(format!("http://{}/webhooks/whatsapp", self.settings.gateway.listen))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(WA_SECRET, &body))
            .body(body)
            .send()
            .await
            .expect("gateway answers");
        r.status().as_u16()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&self.store.pool).await.expect("count")
    }

    async fn dead_letters(&self) -> i64 {
        // The first command after a Redis restart may meet the old connection's broken pipe.
        for _ in 0..3 {
            let mut c = self.queue.connection();
            if let Ok(n) = redis::cmd("XLEN").arg(self.queue.dead_letter_key()).query_async(&mut c).await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no answer from Redis for XLEN of the dead letters")
    }

    /// Waits (up to `secs`) until no message is pending and no reply is in flight.
    async fn wait_settled(&self, n: i64, secs: u64) {
        let t = Instant::now();
        loop {
            let settled = self.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status <> 'pending'").await;
            let open = self.count("SELECT count(*) FROM outbox WHERE state IN ('sending', 'retrying')").await;
            if settled == n && open == 0 {
                return;
            }
            if t.elapsed() > Duration::from_secs(secs) {
                let logs: String = self.workers.iter().map(|w| format!("--- {}\n{}", w.name, w.logged())).collect();
                panic!("after {secs} s: {settled} of {n} messages settled, {open} replies in flight\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The outcome per sender: accepted sends, and the outbox state of their message.
    async fn outcome(&self, senders: &[String]) -> Outcome {
        let mut sends: HashMap<String, usize> = HashMap::new();
        for c in self.stub.accepted() {
            *sends.entry(c.to().unwrap_or_default().to_string()).or_default() += 1;
        }
        let states: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT u.external_id, o.state FROM messages m JOIN conversations c ON c.id = m.conversation_id
             JOIN users u ON u.id = c.user_id LEFT JOIN outbox o ON o.inbound_id = m.id WHERE m.direction = 'in'",
        )
        .fetch_all(&self.store.pool)
        .await
        .expect("states");
        let states: HashMap<String, Option<String>> = states.into_iter().collect();
        let mut o = Outcome::default();
        for s in senders {
            let n = sends.get(s).copied().unwrap_or(0);
            let Some(state) = states.get(s) else {
                o.lost.push(s.clone());
                continue;
            };
            match (n, state.as_deref()) {
                (n, _) if n > 1 => o.duplicated.push(s.clone()),
                (1, Some("sent" | "unknown")) => o.answered += 1,
                // A worker killed between starting a try and the platform getting it: herd cannot
                // know, so it never sends again (at most once) and records `unknown`.
                (0, Some("unknown")) => o.unknown_unsent += 1,
                (_, state) => o.wrong.push(format!("{s}: {n} sends, outbox {state:?}")),
            }
        }
        o
    }
}

#[derive(Debug, Default)]
struct Outcome {
    answered: usize,
    unknown_unsent: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
    wrong: Vec<String>,
}

fn senders(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("44770090{:04}", 5000 + i)).collect()
}

/// 24 one-message conversations; `stop` hits worker 0 once 4 replies are out; then everything
/// must settle, answered once each.
async fn burst_with_a_worker_stopped(test: &str, tweak: impl FnOnce(&mut Settings), graceful: bool) {
    let mut c = Cluster::start(test, 2, tweak).await;
    let who = senders(24);
    c.post_one_each(&who).await;
    let t = Instant::now();
    while c.stub.accepted().len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(120), "no replies:\n{}", c.workers[0].logged());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if graceful {
        let code = c.workers[0].terminate(10).await;
        assert_eq!(code, Some(0), "a SIGTERM is a clean stop:\n{}", c.workers[0].logged());
    } else {
        c.workers[0].kill9();
    }
    c.wait_settled(24, 120).await;
    // Anything still coming (a second send would show up now).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let o = c.outcome(&who).await;
    let took_over = c.workers[1].logged().matches("took over the conversation lock").count();
    eprintln!("{test}: {o:?}; worker 1 took over {took_over} locks");
    assert!(o.lost.is_empty() && o.duplicated.is_empty() && o.wrong.is_empty(), "{o:?}");
    assert_eq!(o.answered + o.unknown_unsent, 24, "{o:?}");
    // `unknown` (the third final state) only for tries in flight at the kill: at most
    // one per conversation slot of the stopped worker.
    assert!(o.unknown_unsent <= c.settings.worker.concurrency, "{o:?}");
    assert_eq!(c.dead_letters().await, 0, "nothing dead-lettered");
    assert_eq!(c.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status <> 'answered'").await, 0);
    assert_eq!(c.queue.pending_count().await.expect("pending"), 0, "every entry acknowledged");
    let _ = c.gateway.terminate(10).await;
    let _ = c.workers[1].terminate(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_mid_burst_loses_nothing_and_sends_nothing_twice() {
    burst_with_a_worker_stopped("kill9", |_| {}, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_short_grace_mid_burst_loses_nothing_and_sends_nothing_twice() {
    burst_with_a_worker_stopped("sigterm", |s| s.worker.shutdown_grace_ms = 300, true).await;
}

/// The status of `GET http://{addr}/readyz` (0: no answer).
async fn ready(addr: &str) -> u16 {
    let r = reqwest::Client::new().get(format!("http://{addr}/readyz")).timeout(Duration::from_secs(2)).send().await;
    r.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn wait_ready(addr: &str, want: u16, secs: u64, what: &str) {
    let t = Instant::now();
    while ready(addr).await != want {
        assert!(t.elapsed() < Duration::from_secs(secs), "{what}: /readyz of {addr} is not {want} after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_the_group_is_recreated_readiness_tells_the_truth_and_nothing_accepted_is_lost() {
    let dir = scratch("redis-loss");
    let mut redis = RedisServer::start(&dir, "redis", &[]).await;
    let probes = free_addr();
    let url = redis.url();
    let p = probes.clone();
    let c = Cluster::start("redis-loss", 1, move |s| {
        s.redis_url = url;
        s.worker.metrics_listen = p;
    })
    .await;
    let gateway = c.settings.gateway.listen.clone();
    let before = senders(3);
    c.post_one_each(&before).await;
    c.wait_settled(3, 60).await;
    wait_ready(&probes, 200, 10, "worker, all well").await;
    wait_ready(&gateway, 200, 10, "gateway, all well").await;

    redis.kill9();
    wait_ready(&probes, 503, 15, "worker, Redis gone").await;
    wait_ready(&gateway, 503, 15, "gateway, Redis gone").await;
    assert_ne!(c.post_from("447700906000").await, 200, "nothing is acknowledged while Redis is gone");

    redis.restart().await; // empty: no stream, no group, no dedup keys
    wait_ready(&probes, 200, 20, "worker, Redis back (group recreated)").await;
    let after: Vec<String> = (0..3).map(|i| format!("4477009061{i:02}")).collect();
    c.post_one_each(&after).await;
    // A platform redelivery of a message answered before the loss (its dedup key is gone).
    assert_eq!(c.post_from(&before[0]).await, 200);
    c.wait_settled(6, 60).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let all: Vec<String> = before.iter().chain(after.iter()).cloned().collect();
    let o = c.outcome(&all).await;
    assert!(o.lost.is_empty() && o.duplicated.is_empty() && o.wrong.is_empty() && o.answered == 6, "{o:?}");
    assert!(c.workers[0].logged().contains("recreating them"), "the worker says what happened");
    assert_eq!(c.dead_letters().await, 0);
}
