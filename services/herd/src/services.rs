//! `herd serve`, `herd gateway`, `herd worker`, `herd migrate`.

use anyhow::{Context, Result};
use herd_core::Settings;
use herd_queue::Queue;
use herd_store::Store;
use herd_worker::{EngineHandle, PolicyHook, StorePolicy};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Loads the settings file (or `HERD_CONFIG`, or defaults) with the environment applied.
pub fn settings(path: Option<&Path>) -> Result<Settings> {
    Settings::load(path).context("reading the settings")
}

/// Connects to PostgreSQL, applies migrations and seeds the configured tenants.
pub async fn store(s: &Settings) -> Result<Store> {
    let store =
        Store::connect(&s.database_url).await.with_context(|| format!("connecting to PostgreSQL at {}", redact(&s.database_url)))?;
    store.migrate().await.context("applying migrations")?;
    store.seed(&s.tenants).await.context("seeding tenants and channels")?;
    Ok(store)
}

pub async fn queue(s: &Settings) -> Result<Queue> {
    Queue::connect(&s.redis_url, s.queue.clone()).await.with_context(|| format!("connecting to Redis at {}", redact(&s.redis_url)))
}

/// The URL of database `name` on the server of `url`, created when absent. `name` must differ
/// from `url`'s own database.
pub async fn database_on_same_server(url: &str, name: &str) -> Result<String> {
    let (base, current) = url.rsplit_once('/').ok_or_else(|| anyhow::anyhow!("database_url has no database name"))?;
    if current.split('?').next() == Some(name) || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        anyhow::bail!("--database must be a plain name other than herd's own database, got {name:?}");
    }
    let store = Store::connect(url).await.with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)").bind(name).fetch_one(store.pool()).await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(store.pool()).await?;
    }
    Ok(format!("{base}/{name}"))
}

pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &url[..a + 3], &url[b..]),
        _ => url.to_string(),
    }
}

/// A watch that turns true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

pub(crate) async fn wait(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// The packs of `dir`, or the shipped ones.
pub fn pack_set(dir: Option<&Path>) -> Result<herd_policies::PolicySet> {
    match dir {
        Some(d) => herd_policies::PolicySet::load_dir(d).map_err(|e| anyhow::anyhow!("policy packs: {e}")),
        None => Ok(herd_policies::PolicySet::shipped()),
    }
}

/// Stores the packs herd runs with (shipped or `policies.packs_dir`) as pack versions, active
/// unless an admin chose another version.
pub async fn seed_packs(s: &Settings, store: &Store) -> Result<()> {
    let dir = (!s.policies.packs_dir.is_empty()).then(|| Path::new(&s.policies.packs_dir));
    // Which packs, for every error: the setting and its value, or the shipped ones.
    let which = match dir {
        Some(d) => format!("policy packs in {} (policies.packs_dir)", d.display()),
        None => "the shipped policy packs".to_string(),
    };
    let fail = |e: String| anyhow::anyhow!("{which}: {e}");
    let sources = StorePolicy::pack_sources(dir).map_err(|e| fail(e.to_string()))?;
    // Checks the packs as a set (groups, references) before storing any of them.
    herd_policies::PolicySet::from_sources(sources.iter().map(|(n, _, src)| (n.as_str(), src.as_str())))
        .map_err(|e| fail(e.to_string()))?;
    StorePolicy::seed(store, &sources).await.map_err(|e| fail(e.to_string()))
}

/// The policy as stored (the packs herd runs with seeded as versions first), reloaded every
/// `policies.reload_ms` while `shutdown` is false; a broken pack or tenant stops start-up.
/// Built once per process and shared by its workers.
pub async fn policy(s: &Settings, store: &Store, shutdown: Option<watch::Receiver<bool>>) -> Result<Arc<dyn PolicyHook>> {
    seed_packs(s, store).await?;
    let classifier: Option<Arc<dyn herd_policies::Classifier>> = if s.policies.guard_model.is_empty() {
        None
    } else {
        let guard = herd_worker::guard::LlamaGuard::load(Path::new(&s.policies.guard_model), &s.worker.dtype, &s.worker.device)
            .with_context(|| format!("loading the guard model {}", s.policies.guard_model))?;
        Some(Arc::new(guard))
    };
    let policy = StorePolicy::load(store, classifier).await.map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    if let Some(stop) = shutdown {
        policy.watch(store.clone(), std::time::Duration::from_millis(s.policies.reload_ms.max(50)), stop);
    }
    Ok(policy)
}

/// Every 2 s while `shutdown` is false: whether PostgreSQL answers, as part `postgres` of `health`.
pub(crate) fn watch_postgres(store: Store, health: herd_core::Health, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let ping = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await;
            match ping {
                Ok(Ok(())) => health.ok("postgres"),
                Ok(Err(e)) => health.failing("postgres", format!("PostgreSQL does not answer: {e}")),
                Err(_) => health.failing("postgres", "PostgreSQL did not answer within 2 s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Every 5 s: the turn stream's depth, pending entries and consumer lag, and each engine's
/// batch, KV blocks and steady decode speed, as Prometheus gauges.
pub(crate) fn spawn_gauges(queue: Queue, engines: Vec<EngineHandle>, mut shutdown: watch::Receiver<bool>) {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::spawn(async move {
        let mut last: Vec<(usize, u64)> = vec![(0, 0); engines.len()];
        loop {
            match queue.stream_stats().await {
                Ok((len, pending, lag)) => {
                    metrics::gauge!("herd_queue_depth").set(len as f64);
                    metrics::gauge!("herd_queue_pending").set(pending as f64);
                    if let Some(l) = lag {
                        metrics::gauge!("herd_queue_lag").set(l as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "queue stats"),
            }
            for (i, e) in engines.iter().enumerate() {
                let st = e.stats();
                let engine = i.to_string();
                metrics::gauge!("herd_engine_running", "engine" => engine.clone()).set(st.running.load(Relaxed) as f64);
                metrics::gauge!("herd_engine_waiting", "engine" => engine.clone()).set(st.waiting.load(Relaxed) as f64);
                metrics::gauge!("herd_engine_kv_blocks_used", "engine" => engine.clone()).set(st.kv_blocks_used.load(Relaxed) as f64);
                metrics::gauge!("herd_engine_kv_blocks_total", "engine" => engine.clone()).set(st.kv_blocks_total.load(Relaxed) as f64);
                metrics::gauge!("herd_engine_preemptions", "engine" => engine.clone()).set(st.preemptions.load(Relaxed) as f64);
                let (tokens, nanos) = (st.decode_tokens.load(Relaxed), st.decode_nanos.load(Relaxed));
                let (t0, n0) = last[i];
                if nanos > n0 {
                    metrics::gauge!("herd_engine_decode_tokens_per_second", "engine" => engine)
                        .set((tokens - t0) as f64 * 1e9 / (nanos - n0) as f64);
                }
                last[i] = (tokens, nanos);
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// `/metrics`, `/healthz` and `/readyz` of a worker-only process, on `listener`
/// (`worker.metrics_listen`).
pub(crate) async fn serve_worker_probes(
    listener: tokio::net::TcpListener,
    store: Store,
    queue: Queue,
    health: herd_core::Health,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    use axum::routing::get;
    let ready = move || {
        let (store, queue, health) = (store.clone(), queue.clone(), health.clone());
        async move {
            let pg = store.ping().await.is_ok();
            let redis = queue.ping().await.is_ok();
            // The model is loaded before the workers start; each worker reports whether it can
            // read the turn stream.
            let (parts_ok, parts) = health.report();
            let ok = pg && redis && parts_ok;
            let status = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(serde_json::json!({"postgres": pg, "redis": redis, "model": true, "parts": parts})))
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], herd_core::telemetry::render_metrics()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready));
    tracing::info!(listen = ?listener.local_addr().ok(), "worker metrics and probes");
    axum::serve(listener, app).with_graceful_shutdown(wait(shutdown)).await.context("serving worker probes")
}
