//! Test harness of herd's end-to-end tests: a fresh PostgreSQL database and a Redis key prefix
//! per test, the real gateway and workers of herd on loopback, and a stand-in Graph API that
//! records what herd sends and can be scripted to fail.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use herd_core::Settings;
use herd_core::settings::{ChannelSeed, TenantSeed};
use herd_queue::Queue;
use herd_store::Store;
use herd_worker::{EngineHandle, PacksPolicy, PolicyHook, Worker};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod procs;
pub mod soak;

pub const WA_PHONE_ID: &str = "100000000000001";
pub const WA_SECRET: &str = "wa-secret";
pub const PAGE_ID: &str = "200000000000001";
pub const PAGE_SECRET: &str = "page-secret";
pub const IG_ID: &str = "300000000000001";
pub const IG_SECRET: &str = "ig-secret";

/// One request herd made to the Graph API.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub body: Value,
    /// The HTTP status the stub answered (200: accepted).
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Call {
    /// The text of a message send (None for read/typing calls).
    pub fn text(&self) -> Option<&str> {
        self.body.pointer("/text/body").or_else(|| self.body.pointer("/message/text")).and_then(Value::as_str)
    }
    /// The recipient of a send.
    pub fn to(&self) -> Option<&str> {
        self.body.get("to").or_else(|| self.body.pointer("/recipient/id")).and_then(Value::as_str)
    }
}

#[derive(Default)]
struct StubState {
    calls: Mutex<Vec<Call>>,
    /// Answers for the next text sends: (HTTP status, platform error code).
    script: Mutex<VecDeque<(u16, i64)>>,
    /// Delay of the next read/typing call (to hold a worker mid-turn).
    hold_next_typing: Mutex<Option<Duration>>,
    /// Delay of the next text send (the platform taking its time with a reply).
    hold_next_send: Mutex<Option<Duration>>,
    /// Until when every text send is refused, and how.
    outage: Mutex<Option<Outage>>,
    next_id: AtomicU64,
    /// Every n-th text send is refused (0: none), alternately 429 and 500 (see [`GraphStub::fail_every`]).
    fail_every: AtomicU64,
    sends_seen: AtomicU64,
}

/// A scripted Send API outage: until when, HTTP status, platform code, `Retry-After` seconds.
type Outage = (std::time::Instant, u16, i64, Option<u64>);

/// The stand-in Graph API.
#[derive(Clone)]
pub struct GraphStub {
    pub addr: SocketAddr,
    state: Arc<StubState>,
}

async fn stub_messages(
    State(st): State<Arc<StubState>>,
    Path((v, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = format!("/{v}/{id}/messages");
    let at = std::time::Instant::now();
    let record = |status: u16| st.calls.lock().expect("lock").push(Call { path: path.clone(), body: body.clone(), status, at });
    if body.get("status").is_some() || body.get("sender_action").is_some() {
        // Recorded as it arrives: a test sees a held call while it is held.
        record(200);
        let hold = st.hold_next_typing.lock().expect("lock").take();
        if let Some(d) = hold {
            tokio::time::sleep(d).await;
        }
        return Json(json!({"success": true})).into_response();
    }
    let hold = st.hold_next_send.lock().expect("lock").take();
    if let Some(d) = hold {
        tokio::time::sleep(d).await;
    }
    let refuse = |status: u16, code: i64| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(json!({"error": {"message": "scripted failure", "type": "OAuthException", "code": code}})),
        )
    };
    let outage = *st.outage.lock().expect("lock");
    if let Some((until, status, code, after)) = outage.filter(|o| std::time::Instant::now() < o.0) {
        let _ = until;
        record(status);
        let mut res = refuse(status, code).into_response();
        if let Some(secs) = after {
            res.headers_mut().insert("retry-after", secs.into());
        }
        return res;
    }
    let every = st.fail_every.load(Ordering::SeqCst);
    if every > 0 {
        let n = st.sends_seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n % every == 0 {
            // WhatsApp's throughput limit, or a server error that delivered nothing.
            let (status, code) = if (n / every) % 2 == 0 { (429, 130_429) } else { (500, 2) };
            record(status);
            return refuse(status, code).into_response();
        }
    }
    let scripted = st.script.lock().expect("lock").pop_front();
    if let Some((status, code)) = scripted {
        record(status);
        return refuse(status, code).into_response();
    }
    record(200);
    let n = st.next_id.fetch_add(1, Ordering::SeqCst);
    Json(json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.out.{n}")}], "recipient_id": "x", "message_id": format!("mid.out.{n}")}))
        .into_response()
}

impl GraphStub {
    pub async fn start() -> Self {
        let state = Arc::new(StubState::default());
        let app = Router::new().route("/{v}/{id}/messages", post(stub_messages)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }
    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().expect("lock").clone()
    }
    /// Text sends so far (accepted or not).
    pub fn sends(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.text().is_some()).collect()
    }
    /// Text sends the stub accepted.
    pub fn accepted(&self) -> Vec<Call> {
        self.sends().into_iter().filter(|c| c.status == 200).collect()
    }
    /// Every text send for `for_` from now on is refused with `status` and `code` (and a
    /// `Retry-After` of `retry_after` seconds when given): a Send API outage.
    pub fn outage(&self, for_: Duration, status: u16, code: i64, retry_after: Option<u64>) {
        *self.state.outage.lock().expect("lock") = Some((std::time::Instant::now() + for_, status, code, retry_after));
    }
    /// From now on every `n`-th text send is refused, alternately with 429 (code 130429, the
    /// throughput limit) and 500 (code 2); 0 stops it. `n = 20` refuses 5 %.
    pub fn fail_every(&self, n: u64) {
        self.state.fail_every.store(n, Ordering::SeqCst);
    }
    /// Holds the next text send for `d` before accepting it.
    pub fn hold_next_send(&self, d: Duration) {
        *self.state.hold_next_send.lock().expect("lock") = Some(d);
    }
    /// The next text sends fail with these (HTTP status, code) pairs, in order.
    pub fn fail_next_sends(&self, errors: &[(u16, i64)]) {
        self.state.script.lock().expect("lock").extend(errors.iter().copied());
    }
    /// Holds the next read/typing call for `d`.
    pub fn hold_next_typing(&self, d: Duration) {
        *self.state.hold_next_typing.lock().expect("lock") = Some(d);
    }
}

/// A running herd (gateway + workers) for one test.
pub struct Herd {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub queue: Queue,
    pub stub: GraphStub,
    pub gateway: String,
    pub http: reqwest::Client,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    /// The engine the workers share.
    pub engine: EngineHandle,
    /// The policy hook of the workers this herd starts.
    pub policy: Arc<dyn PolicyHook>,
    /// What the parts of this herd report to `/readyz`.
    pub health: herd_core::Health,
}

/// A name no other test (of this or another process) uses.
pub fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}_{}_{}", std::process::id(), t % 1_000_000_000, N.fetch_add(1, Ordering::SeqCst))
}

fn repo() -> std::path::PathBuf {
    // HERD_REPO_ROOT: the test binary runs from another checkout (deploy/gpu/check.sh).
    std::env::var_os("HERD_REPO_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Test settings: short timeouts, the stub as Graph API, two channels.
pub fn settings(stub: &GraphStub, db_url: &str, prefix: &str) -> Settings {
    let mut s = Settings {
        redis_url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        database_url: db_url.to_string(),
        ..Default::default()
    };
    s.queue.key_prefix = prefix.to_string();
    s.gateway.listen = "127.0.0.1:0".into();
    s.admin.listen = String::new();
    s.worker.metrics_listen = String::new();
    s.queue.claim_idle_ms = 1_500;
    s.queue.lock_ttl_ms = 1_000;
    s.queue.heartbeat_ms = 200;
    s.worker.model = repo().join("deploy/models/herd-demo-chat").display().to_string();
    s.worker.max_new_tokens = 24;
    s.worker.block_ms = 200;
    s.worker.retry_base_ms = 20;
    s.worker.shutdown_grace_ms = 2_000;
    let base = format!("http://{}", stub.addr);
    s.platforms.whatsapp_base_url = base.clone();
    s.platforms.messenger_base_url = base.clone();
    s.platforms.instagram_base_url = base;
    s.platforms.send_timeout_ms = 20_000;
    let ch = |platform: &str, id: &str, secret: &str| ChannelSeed {
        platform: platform.into(),
        external_id: id.into(),
        app_secret: secret.into(),
        verify_token: "verify-me".into(),
        access_token: "token".into(),
    };
    s.tenants = vec![TenantSeed {
        name: "acme".into(),
        channels: vec![ch("whatsapp", WA_PHONE_ID, WA_SECRET), ch("messenger", PAGE_ID, PAGE_SECRET), ch("instagram", IG_ID, IG_SECRET)],
        principal_place_of_business: "US".into(),
        default_country: None,
        packs: vec!["llama4-license".into(), "meta-ai-rollout".into(), "balanced-moderation".into()],
        meta_license_granted: false,
        multimodal: false,
        moderation: None,
        overrides: Default::default(),
    }];
    s
}

/// A fresh database: `herd_test_<unique>` on the server of `DATABASE_URL`.
pub async fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/herd".into());
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
    let name = format!("herd_test_{}", unique());
    let pool = sqlx::PgPool::connect(&admin).await.expect("connect to PostgreSQL (DATABASE_URL)");
    // Databases of test processes that have ended (`herd_test_<pid>_…`) are dropped: a test run
    // leaves nothing behind but the databases of tests still running.
    let old: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'herd\\_test\\_%'")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    for db in old {
        let pid = db.trim_start_matches("herd_test_").split('_').next().unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).execute(&pool).await;
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.expect("create database");
    pool.close().await;
    format!("{base}/{name}")
}

impl Herd {
    /// Starts a herd with `workers` worker loops and the shipped policy packs.
    pub async fn start(workers: usize) -> Self {
        Self::start_with(workers, |_| {}, None).await
    }

    /// The shipped packs with the settings' tenant policies (what `herd serve` runs).
    pub async fn packs_policy(settings: &Settings, store: &Store) -> Arc<dyn PolicyHook> {
        let ids = store.tenants().await.expect("tenants");
        let set = Arc::new(herd_policies::PolicySet::shipped());
        Arc::new(PacksPolicy::from_settings(set, &settings.tenants, &ids).expect("valid tenant policies"))
    }

    /// Starts a herd after `tweak` adjusts the settings, with `policy` in every worker (None: the
    /// stored policy, as `herd serve` runs it). Built by [`herd::app::App::build`], the start-up
    /// path of `herd serve`; the workers are taken out of it to be started and killed one by one.
    pub async fn start_with(workers: usize, tweak: impl FnOnce(&mut Settings), policy: Option<Arc<dyn PolicyHook>>) -> Self {
        herd_channels::send::install_crypto();
        let stub = GraphStub::start().await;
        let db = fresh_database().await;
        let mut s = settings(&stub, &db, &format!("herdtest:{}", unique()));
        tweak(&mut s);
        let (stop, rx) = watch::channel(false);
        let parts = herd::app::Parts { gateway: true, workers: true, ..Default::default() };
        let mut app = herd::app::App::build(&s, parts, &rx).await.expect("herd starts (REDIS_URL, DATABASE_URL)");
        let gateway = format!("http://{}", app.gateway_addr().expect("gateway address"));
        let (store, queue, health) = (app.store().clone(), app.queue().clone(), app.health().clone());
        let engine = app.engines()[0].clone();
        let policy = policy.unwrap_or_else(|| app.policy().expect("workers' policy").clone());
        drop(app.take_workers());
        tokio::spawn(app.run(rx));
        let mut herd = Self {
            settings: Arc::new(s),
            store,
            queue,
            stub,
            gateway,
            http: reqwest::Client::new(),
            stop,
            workers: vec![],
            engine,
            policy: policy.clone(),
            health,
        };
        for i in 0..workers {
            herd.spawn_worker(&format!("w{i}"), policy.clone());
        }
        herd
    }

    /// Starts one more worker loop named `name`; returns its index (for [`Herd::kill_worker`]).
    pub fn spawn_worker(&mut self, name: &str, policy: Arc<dyn PolicyHook>) -> usize {
        let w = Worker::new(
            format!("{name}-{}", unique()),
            self.settings.clone(),
            self.store.clone(),
            self.queue.clone(),
            self.engine.clone(),
            policy,
        )
        .with_health(self.health.clone());
        self.workers.push(tokio::spawn(w.run(self.stop.subscribe())));
        self.workers.len() - 1
    }

    /// Kills a worker loop abruptly (its in-flight turns die with it, nothing is acknowledged).
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].abort();
    }

    /// POSTs `body` to `/webhooks/{platform}` signed with `secret` (None: no signature header).
    pub async fn post(&self, platform: &str, body: &[u8], secret: Option<&str>) -> (u16, Value) {
        let mut req =
            self.http.post(format!("{}/webhooks/{platform}", self.gateway)).header("content-type", "application/json").body(body.to_vec());
        if let Some(s) = secret {
            req = req.header("x-hub-signature-256", sign(s, body));
        }
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `cond` holds (polling), failing the test after `secs`.
    pub async fn wait_until<F, Fut>(&self, secs: u64, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !cond().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out after {secs} s waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the stub has received `n` text sends.
    pub async fn wait_for_sends(&self, n: usize) -> Vec<Call> {
        self.wait_until(30, &format!("{n} sends"), || async { self.stub.sends().len() >= n }).await;
        self.stub.sends()
    }

    /// Lets in-flight work settle, then checks nothing more is sent: returns all sends.
    pub async fn quiet_sends(&self) -> Vec<Call> {
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.stub.sends()
    }

    /// Waits until an SQL count reaches `n` (work recorded after a send lands a moment later).
    pub async fn wait_count(&self, sql: &'static str, n: i64) {
        self.wait_until(30, &format!("{sql} = {n}"), || async { self.count(sql).await == n }).await;
    }

    /// One SQL count.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.store.pool).await.expect("count query")
    }

    /// Entries in the dead-letter stream.
    pub async fn dead_letters(&self) -> i64 {
        let mut c = self.queue.connection();
        redis::cmd("XLEN").arg(self.queue.dead_letter_key()).query_async(&mut c).await.expect("xlen")
    }

    /// Entries in the turn streams (all partitions).
    pub async fn stream_len(&self) -> i64 {
        let mut c = self.queue.connection();
        let mut n = 0;
        for s in self.queue.stream_keys() {
            n += redis::cmd("XLEN").arg(s).query_async::<i64>(&mut c).await.expect("xlen");
        }
        n
    }

    /// The stored policy (the shipped packs seeded as versions, tenants from the database),
    /// reloaded every 100 ms: what `herd serve` runs, so admin changes reach the workers.
    pub async fn store_policy(&self) -> Arc<dyn PolicyHook> {
        self.seed_packs().await;
        let p = herd_worker::StorePolicy::load(&self.store, None).await.expect("stored policy");
        p.watch(self.store.clone(), Duration::from_millis(100), self.stop.subscribe());
        p
    }

    /// Stores the shipped packs as versions (what start-up does).
    async fn seed_packs(&self) {
        let sources = herd_worker::StorePolicy::pack_sources(None).expect("shipped packs");
        herd_worker::StorePolicy::seed(&self.store, &sources).await.expect("seed packs");
    }

    /// Starts the admin API on a free port, as `herd admin serve` does; returns its base URL
    /// (`http://127.0.0.1:port`).
    pub async fn start_admin(&self, requests_per_minute: u32) -> String {
        let mut s = (*self.settings).clone();
        s.admin.listen = "127.0.0.1:0".into();
        s.admin.requests_per_minute = requests_per_minute;
        let rx = self.stop.subscribe();
        let parts = herd::app::Parts { admin: true, ..Default::default() };
        let app = herd::app::App::build(&s, parts, &rx).await.expect("admin starts");
        let url = format!("http://{}", app.admin_addr().expect("admin address"));
        tokio::spawn(app.run(rx));
        url
    }

    /// Creates an API key with `role` (`admin` or `analyst`); returns `(id, key)`.
    pub async fn admin_key(&self, role: &str) -> (i64, String) {
        let role = herd_admin::auth::Role::parse(role).expect("admin or analyst");
        herd_admin::auth::create_key(&self.store, &herd_admin::auth::cli_actor(), "test", role).await.expect("create key")
    }

    /// Stops the workers and the gateway.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    }
}

/// `method` on the admin API at `base` (`/admin/v1` included in `path`), with a bearer `key` and a
/// JSON `body`: the status and the body as JSON (a body that is not JSON as a string).
pub async fn admin_call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut req = http.request(m, format!("{base}{path}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `sha256=<hex>` of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A WhatsApp webhook body with one text message per `(from, id, text)`.
pub fn whatsapp_texts(msgs: &[(&str, &str, &str)]) -> Vec<u8> {
    let messages: Vec<Value> = msgs
        .iter()
        .enumerate()
        .map(|(i, (from, id, text))| json!({"from": from, "id": id, "timestamp": (1_700_000_000 + i).to_string(), "type": "text", "text": {"body": text}}))
        .collect();
    let contacts: Vec<Value> = msgs.iter().map(|(from, _, _)| json!({"profile": {"name": "T"}, "wa_id": from})).collect();
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": WA_PHONE_ID},
        "contacts": contacts, "messages": messages}}]}]}))
    .expect("json")
}

/// A Messenger webhook body with one event.
pub fn messenger_event(event: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [event]}]})).expect("json")
}
