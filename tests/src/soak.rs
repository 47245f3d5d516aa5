//! The soak: herd as separate processes — 2 gateways and N workers — on a Redis of its own (AOF,
//! fsync always) and a fresh PostgreSQL database, a stand-in Graph API refusing 5 % of sends
//! (429 and 500 in turn), many users whose webhooks are each delivered 1 to 3 times, and faults
//! while it runs: `kill -9` of a worker every `kill_every` (started again a second later, as an
//! orchestrator would), one Redis restart, one drop of every PostgreSQL connection. It counts
//! what came back: replies, duplicates, losses, end-to-end latency, throughput.
//!
//! Run by `deploy/local/soak.sh` (the full size) and by a short test (`services/herd/tests/soak.rs`).

use crate::procs::{CpuQuota, Proc, RedisServer, free_addr};
use crate::{GraphStub, WA_SECRET, fresh_database, settings, sign, unique, whatsapp_texts};
use herd_core::Settings;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What a soak run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `herd` binary.
    pub herd: PathBuf,
    /// A folder for settings files and logs.
    pub dir: PathBuf,
    pub messages: usize,
    pub users: usize,
    pub gateways: usize,
    pub workers: usize,
    /// Messages per second offered (each message's first delivery; redeliveries come on top).
    pub rate: f64,
    /// Most deliveries of one webhook (each gets 1 to this many).
    pub max_deliveries: u64,
    /// Inject the faults (worker kills, a Redis restart, a PostgreSQL connection drop).
    pub faults: bool,
    pub kill_every: Duration,
    /// Every n-th send is refused by the stand-in Graph API (0: none).
    pub fail_every: u64,
    /// Longest wait for the last replies after the last webhook is taken.
    pub settle: Duration,
    pub seed: u64,
    /// CPUs each worker process may use (a cgroup quota each, as if each worker had a machine
    /// of its own); `None`: no limit.
    pub worker_cpus: Option<f64>,
    /// `worker.context_tokens`: the history a reply reads. Kept short by default so that a turn
    /// costs about the same late in a conversation as early (every turn reads its history
    /// again), and a rate offered below capacity stays below it for the whole run.
    pub context_tokens: usize,
}

/// What a soak run found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub messages: usize,
    pub users: usize,
    pub workers: usize,
    /// The CPU quota of each worker, if any.
    pub worker_cpus: Option<f64>,
    /// Webhook deliveries the gateways took (200), redeliveries included.
    pub webhooks: u64,
    /// Answers other than 200 (the client delivered those webhooks again).
    pub refused: u64,
    /// Inbound messages recorded in PostgreSQL.
    pub recorded: i64,
    /// Messages with exactly one accepted reply at the stand-in Graph API.
    pub answered_once: usize,
    /// Accepted replies beyond one per message.
    pub duplicates: usize,
    /// Messages without an accepted reply whose outcome herd does not state as `unknown`.
    pub lost: usize,
    /// Replies recorded `unknown` (a worker died while the send was in flight).
    pub unknown: i64,
    /// Messages recorded `failed`, and entries dead-lettered.
    pub failed: i64,
    pub dead_letters: i64,
    /// Sends the stand-in Graph API refused (retried by herd).
    pub sends_refused: usize,
    pub worker_kills: u32,
    pub redis_restarts: u32,
    pub postgres_drops: u32,
    /// From a message's first delivery to its reply at the Graph API.
    pub p50_ms: u64,
    pub p99_ms: u64,
    /// From the first delivery to the last reply.
    pub seconds: f64,
    /// Messages answered per second over `seconds`.
    pub throughput: f64,
}

/// The running processes and what the soak looks at.
struct Stack {
    stub: GraphStub,
    settings: Settings,
    db: String,
    pool: sqlx::PgPool,
    redis: RedisServer,
    gateways: Vec<(Proc, String)>,
    workers: Vec<Proc>,
    /// Dropped after the workers (declared after them).
    quotas: Vec<CpuQuota>,
    generation: u32,
    cfg: Config,
}

impl Stack {
    async fn start(cfg: &Config) -> Self {
        herd_channels::send::install_crypto();
        std::fs::create_dir_all(&cfg.dir).expect("soak folder");
        let stub = GraphStub::start().await;
        stub.fail_every(cfg.fail_every);
        let data = cfg.dir.join("redis-data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("redis folder");
        let data = data.display().to_string();
        let redis = RedisServer::start(&cfg.dir, "redis", &["--appendonly", "yes", "--appendfsync", "always", "--dir", &data]).await;
        let db = fresh_database().await;
        let mut s = settings(&stub, &db, &format!("herdsoak:{}", unique()));
        s.redis_url = redis.url();
        // The settings of the processes test (services/herd/tests/faults.rs): a 3 s reclaim,
        // 30 s locks; the limits are lifted, as the soak measures herd, not its rate limits.
        s.queue.claim_idle_ms = 3_000;
        s.queue.lock_ttl_ms = 30_000;
        s.queue.heartbeat_ms = 1_000;
        s.queue.max_deliveries = 50;
        s.worker.concurrency = 8;
        s.worker.max_new_tokens = 8;
        s.worker.context_tokens = cfg.context_tokens;
        s.worker.send_retry_window_ms = 120_000;
        s.limits.sender_per_minute = 100_000;
        s.limits.tenant_per_second = 1_000_000;
        s.admin.listen = String::new();
        s.worker.metrics_listen = String::new();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db).await.expect("soak database");
        let mut quotas = Vec::new();
        for i in 0..cfg.workers {
            if let Some(cpus) = cfg.worker_cpus {
                let q = CpuQuota::new(&format!("herd-soak-{}-w{i}", std::process::id()), cpus).unwrap_or_else(|e| panic!("{e}"));
                quotas.push(q);
            }
        }
        let mut stack =
            Self { stub, settings: s, db, pool, redis, gateways: Vec::new(), workers: Vec::new(), quotas, generation: 0, cfg: cfg.clone() };
        for i in 0..cfg.gateways {
            let mut s = stack.settings.clone();
            s.gateway.listen = free_addr();
            let mut p = Proc::start(&cfg.herd, &cfg.dir, &format!("gateway-{i}"), &["gateway"], &s);
            p.wait_for_log("gateway listening", 120).await;
            stack.gateways.push((p, s.gateway.listen.clone()));
        }
        for i in 0..cfg.workers {
            let w = stack.start_worker(i);
            stack.workers.push(w);
        }
        for w in &mut stack.workers {
            w.wait_for_log("worker started", 180).await;
        }
        stack
    }

    fn start_worker(&mut self, i: usize) -> Proc {
        self.generation += 1;
        let p = Proc::start(&self.cfg.herd, &self.cfg.dir, &format!("worker-{i}-{}", self.generation), &["worker"], &self.settings);
        if let Some(q) = self.quotas.get(i) {
            q.add(p.pid()).unwrap_or_else(|e| panic!("{e}"));
        }
        p
    }

    /// Every PostgreSQL connection to the soak's database is dropped (as a failover or a
    /// restart of the server would), the soak's own included.
    async fn drop_postgres_connections(&self) -> i64 {
        let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/herd".into());
        let name = self.db.rsplit('/').next().unwrap_or_default().to_string();
        let pool = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL");
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .expect("terminate");
        pool.close().await;
        n
    }

    async fn count(&self, sql: &'static str) -> i64 {
        // Tried again: the soak's own connections are dropped too.
        for _ in 0..20 {
            if let Ok(n) = sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool).await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("PostgreSQL does not answer: {sql}")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.workers.iter().chain(self.gateways.iter().map(|(p, _)| p)) {
            let log = p.logged();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- {}\n{}\n", p.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        out
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One message of the run: who sends it, its id, when its deliveries happen (after the start).
struct Planned {
    user: usize,
    mid: String,
    deliveries: Vec<Duration>,
}

fn plan(cfg: &Config, run: &str) -> Vec<Planned> {
    let mut rng = Rng(cfg.seed | 1);
    (0..cfg.messages)
        .map(|i| {
            let first = Duration::from_secs_f64(i as f64 / cfg.rate.max(0.001));
            let n = 1 + rng.next() % cfg.max_deliveries.max(1);
            // Redeliveries come 0.5 to 5 s after the first, as a platform retrying would.
            let deliveries = (0..n).map(|k| if k == 0 { first } else { first + Duration::from_millis(500 + rng.next() % 4_500) }).collect();
            Planned { user: i % cfg.users, mid: format!("wamid.soak.{run}.{i}"), deliveries }
        })
        .collect()
}

fn user_id(u: usize) -> String {
    format!("1555{u:07}")
}

const TEXTS: [&str; 4] = ["Hello there", "What are your opening hours?", "Thanks, that helps", "Can you tell me more?"];

/// Posts one delivery until a gateway takes it (the platform redelivers otherwise); the refusals.
async fn deliver(http: &reqwest::Client, gateways: &[String], first: usize, body: &[u8]) -> u64 {
    let sig = sign(WA_SECRET, body);
    let mut refused = 0;
    for attempt in 0usize.. {
        let gw = &gateways[(first + attempt) % gateways.len()];
        let r = http
            .post(format!("http://{gw}/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &sig)
            .body(body.to_vec())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status().as_u16() == 200) {
            return refused;
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis((100 * (attempt as u64 + 1)).min(1_000))).await;
    }
    refused
}

/// Runs the soak; panics with the processes' logs when the replies do not settle in time.
pub async fn run(cfg: Config) -> Report {
    let mut stack = Stack::start(&cfg).await;
    let run = unique();
    let planned = Arc::new(plan(&cfg, &run));
    let gateways: Arc<Vec<String>> = Arc::new(stack.gateways.iter().map(|(_, a)| a.clone()).collect());
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("http client");
    let slots = Arc::new(Semaphore::new(64));
    let refused = Arc::new(AtomicU64::new(0));
    let webhooks = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for (i, m) in planned.iter().enumerate() {
        for (k, at) in m.deliveries.iter().enumerate() {
            let (http, gateways, slots, refused, webhooks, planned) =
                (http.clone(), gateways.clone(), slots.clone(), refused.clone(), webhooks.clone(), planned.clone());
            let at = *at;
            posts.spawn(async move {
                tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
                let _permit = slots.acquire().await.expect("semaphore");
                let m = &planned[i];
                let body = whatsapp_texts(&[(&user_id(m.user), &m.mid, TEXTS[i % TEXTS.len()])]);
                refused.fetch_add(deliver(&http, &gateways, i + k, &body).await, Ordering::SeqCst);
                webhooks.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    // The faults, while the webhooks come in.
    let span = planned.last().and_then(|m| m.deliveries.first().copied()).unwrap_or_default();
    let (mut kills, mut redis_restarts, mut pg_drops) = (0u32, 0u32, 0u32);
    let mut next_kill = cfg.kill_every;
    while !posts.is_empty() {
        while posts.try_join_next().is_some() {}
        let t = start.elapsed();
        if cfg.faults && t < span {
            if t >= next_kill && !stack.workers.is_empty() {
                let i = kills as usize % stack.workers.len();
                stack.workers[i].kill9();
                kills += 1;
                next_kill += cfg.kill_every;
                tokio::time::sleep(Duration::from_secs(1)).await;
                stack.workers[i] = stack.start_worker(i);
            }
            if redis_restarts == 0 && t >= span / 3 {
                stack.redis.restart().await;
                redis_restarts += 1;
            }
            if pg_drops == 0 && t >= span * 2 / 3 {
                stack.drop_postgres_connections().await;
                pg_drops += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every webhook is taken: wait for the replies to settle.
    let settled_by = Instant::now() + cfg.settle;
    loop {
        let recorded = stack.count("SELECT count(*) FROM messages WHERE direction = 'in'").await;
        let open = stack.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'pending'").await
            + stack.count("SELECT count(*) FROM outbox WHERE state IN ('sending', 'retrying')").await;
        if recorded as usize >= cfg.messages && open == 0 {
            break;
        }
        if Instant::now() > settled_by {
            panic!("after {:?}: {recorded} of {} messages recorded, {open} still open\n{}", cfg.settle, cfg.messages, stack.logs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    report(
        &cfg,
        &stack,
        &planned,
        start,
        webhooks.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
        (kills, redis_restarts, pg_drops),
    )
    .await
}

async fn report(
    cfg: &Config,
    stack: &Stack,
    planned: &[Planned],
    start: Instant,
    webhooks: u64,
    refused: u64,
    (worker_kills, redis_restarts, postgres_drops): (u32, u32, u32),
) -> Report {
    let calls = stack.stub.sends();
    let sends_refused = calls.iter().filter(|c| c.status != 200).count();
    // Replies per user, in order (a conversation's replies go out in its messages' order).
    let mut replies: HashMap<String, Vec<Instant>> = HashMap::new();
    for c in calls.iter().filter(|c| c.status == 200) {
        replies.entry(c.to().unwrap_or_default().to_string()).or_default().push(c.at);
    }
    let mut sent: HashMap<String, Vec<Duration>> = HashMap::new();
    for m in planned {
        sent.entry(user_id(m.user)).or_default().push(m.deliveries[0]);
    }
    let mut unknown_of: HashMap<String, usize> = HashMap::new();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT u.external_id FROM outbox o JOIN messages m ON m.id = o.inbound_id JOIN conversations c ON c.id = m.conversation_id
         JOIN users u ON u.id = c.user_id WHERE o.state = 'unknown'",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("unknown replies");
    for u in rows {
        *unknown_of.entry(u).or_default() += 1;
    }
    let (mut answered_once, mut duplicates, mut lost) = (0, 0, 0);
    let mut latencies = Vec::new();
    let mut last = start;
    for (user, firsts) in &sent {
        let got = replies.get(user).map(Vec::as_slice).unwrap_or_default();
        duplicates += got.len().saturating_sub(firsts.len());
        // A missing reply herd recorded as `unknown` is a stated outcome, not a loss.
        lost += firsts.len().saturating_sub(got.len()).saturating_sub(unknown_of.get(user).copied().unwrap_or(0));
        answered_once += firsts.len().min(got.len());
        for (first, at) in firsts.iter().zip(got) {
            latencies.push(at.duration_since(start).saturating_sub(*first));
            last = last.max(*at);
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).map_or(0, |d| d.as_millis() as u64)
    };
    let unknown = stack.count("SELECT count(*) FROM outbox WHERE state = 'unknown'").await;
    let seconds = last.duration_since(start).as_secs_f64();
    let mut c = redis::Client::open(stack.redis.url()).expect("url").get_multiplexed_async_connection().await.expect("redis");
    let dead_letters: i64 =
        redis::cmd("XLEN").arg(format!("{}:turns:dead", stack.settings.queue.key_prefix)).query_async(&mut c).await.unwrap_or(0);
    Report {
        messages: cfg.messages,
        users: cfg.users,
        workers: cfg.workers,
        worker_cpus: cfg.worker_cpus,
        webhooks,
        refused,
        recorded: stack.count("SELECT count(*) FROM messages WHERE direction = 'in'").await,
        answered_once,
        duplicates,
        lost,
        unknown,
        failed: stack.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'failed'").await,
        dead_letters,
        sends_refused,
        worker_kills,
        redis_restarts,
        postgres_drops,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        seconds,
        throughput: if seconds > 0.0 { answered_once as f64 / seconds } else { 0.0 },
    }
}

/// A config for `messages` from `users` with the defaults of the full soak.
pub fn config(herd: &Path, dir: &Path, messages: usize, users: usize) -> Config {
    Config {
        herd: herd.to_path_buf(),
        dir: dir.to_path_buf(),
        messages,
        users,
        gateways: 2,
        workers: 3,
        rate: 20.0,
        max_deliveries: 3,
        faults: true,
        kill_every: Duration::from_secs(20),
        fail_every: 20,
        settle: Duration::from_secs(300),
        seed: 7,
        worker_cpus: None,
        context_tokens: 256,
    }
}
