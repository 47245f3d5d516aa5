//! One start-up path for the service commands (`serve`, `gateway`, `worker`, `admin serve`):
//! [`App::build`] checks and prepares everything the command runs — PostgreSQL reached and
//! migrated, tenants seeded, Redis reached, policy packs valid, every listener bound, every model
//! loaded — before anything is accepted, and fails with one sentence naming the setting at
//! fault; [`App::run`] then serves until shutdown, and the first part that fails stops the rest.

use crate::services;
use anyhow::{Context, Result};
use herd_core::Settings;
use herd_queue::Queue;
use herd_store::Store;
use herd_worker::{EngineHandle, PolicyHook, Worker};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long reaching PostgreSQL or Redis may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a command runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts {
    pub gateway: bool,
    /// The admin API and dashboard (when `admin.listen` is set).
    pub admin: bool,
    pub workers: bool,
    /// `/metrics`, `/healthz`, `/readyz` of a worker-only process (when `worker.metrics_listen` is set).
    pub worker_probes: bool,
}

/// A command's parts, ready to run.
pub struct App {
    settings: Settings,
    store: Store,
    queue: Queue,
    health: herd_core::Health,
    policy: Option<Arc<dyn PolicyHook>>,
    gateway: Option<(TcpListener, herd_gateway::AppState)>,
    admin: Option<(TcpListener, herd_admin::AppState)>,
    probes: Option<TcpListener>,
    workers: Vec<Worker>,
    engines: Vec<EngineHandle>,
}

/// Binds `addr` for the setting `key`.
async fn bind(key: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("listening on {addr} ({key})"))
}

/// `fut`, or a timeout error after [`CONNECT_TIMEOUT`].
async fn within<T>(what: String, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r.with_context(|| what.clone()),
        Err(_) => Err(anyhow::anyhow!("{what}: no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The configured tenants' policy settings, before anything is stored: each field readable, and a
/// moderation mode that uses the guard model only when one is configured.
fn check_tenants(s: &Settings) -> Result<()> {
    for t in &s.tenants {
        let tenant = herd_worker::policy::tenant_policy(t).map_err(|e| anyhow::anyhow!("[[tenants]] {e}"))?;
        if let Some(m) = tenant.moderation.filter(|m| m.needs_guard() && s.policies.guard_model.is_empty()) {
            anyhow::bail!("[[tenants]] {}: moderation = {:?} needs a guard model, and policies.guard_model is not set", t.name, m.as_str());
        }
    }
    Ok(())
}

impl App {
    /// Prepares `parts` of `settings`; `stop` ends the policy's reload loop with the process.
    pub async fn build(settings: &Settings, parts: Parts, stop: &watch::Receiver<bool>) -> Result<Self> {
        let s = settings;
        // Settings from a file were checked when read; settings made in code are checked here.
        s.validate().map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        check_tenants(s)?;
        let health = herd_core::Health::default();
        let pg = format!("connecting to PostgreSQL at {} (database_url)", services::redact(&s.database_url));
        let store = within(pg, async { Ok(Store::connect(&s.database_url).await?) }).await?;
        store.migrate().await.context("applying migrations (database_url)")?;
        store.seed(&s.tenants).await.context("seeding tenants and channels ([[tenants]])")?;
        let redis = format!("connecting to Redis at {} (redis_url)", services::redact(&s.redis_url));
        let queue = within(redis, async { Ok(Queue::connect(&s.redis_url, s.queue.clone()).await?) }).await?;

        let policy: Option<Arc<dyn PolicyHook>> = if parts.workers {
            Some(services::policy(s, &store, Some(stop.clone())).await?)
        } else {
            if parts.admin {
                services::seed_packs(s, &store).await?;
            }
            None
        };

        let gateway = match parts.gateway {
            true => {
                let listener = bind("gateway.listen", &s.gateway.listen).await?;
                let mut state = herd_gateway::state(s, store.clone(), queue.clone()).await.context("loading channels")?;
                state.health = health.clone();
                Some((listener, state))
            }
            false => None,
        };
        let admin = match parts.admin && !s.admin.listen.is_empty() {
            true => {
                let listener = bind("admin.listen", &s.admin.listen).await?;
                let mut state = herd_admin::AppState::new(store.clone(), queue.clone(), s.admin.requests_per_minute);
                state.health = health.clone();
                state.guard_model = !s.policies.guard_model.is_empty();
                Some((listener, state))
            }
            false => None,
        };
        let probes = match parts.worker_probes && !s.worker.metrics_listen.is_empty() {
            true => Some(bind("worker.metrics_listen", &s.worker.metrics_listen).await?),
            false => None,
        };

        let (mut workers, mut engines) = (vec![], vec![]);
        if let Some(policy) = policy.clone() {
            let shared = Arc::new(s.clone());
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "herd".into());
            let cfg = &s.worker;
            let kernel_threads = engine_kernel_threads(cfg.count, herd_kernels::pool::process_threads());
            for i in 0..cfg.count.max(1) {
                let limits = herd_worker::engine::EngineLimits {
                    max_batch_size: cfg.max_batch_size,
                    max_batch_tokens: cfg.max_batch_tokens,
                    kv_cache_bytes: cfg.kv_cache_bytes,
                    queue: cfg.concurrency * 4,
                    kernel_threads,
                };
                let engine = EngineHandle::start_with(Path::new(&cfg.model), &cfg.dtype, &cfg.device, cfg.context_tokens, &limits)
                    .with_context(|| {
                        format!(
                            "loading the model {} (worker.model) as {} (worker.dtype) onto {} (worker.device)",
                            cfg.model, cfg.dtype, cfg.device
                        )
                    })?;
                let name = format!("{host}-{}-{i}", std::process::id());
                let worker = Worker::new(name, shared.clone(), store.clone(), queue.clone(), engine.clone(), policy.clone());
                workers.push(worker.with_health(health.clone()));
                engines.push(engine);
            }
        }
        Ok(Self { settings: s.clone(), store, queue, health, policy, gateway, admin, probes, workers, engines })
    }

    /// Where the gateway listens (when it runs).
    pub fn gateway_addr(&self) -> Option<std::net::SocketAddr> {
        self.gateway.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where the admin API listens (when it runs).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// What every part of this process reports to its `/readyz`.
    pub fn health(&self) -> &herd_core::Health {
        &self.health
    }

    /// The policy the workers run (when they run).
    pub fn policy(&self) -> Option<&Arc<dyn PolicyHook>> {
        self.policy.as_ref()
    }

    /// The workers' engines, one per worker.
    pub fn engines(&self) -> &[EngineHandle] {
        &self.engines
    }

    /// Takes the workers out, to run them some other way ([`App::run`] then runs the rest): the
    /// tests start, stop and kill workers one by one.
    pub fn take_workers(&mut self) -> Vec<Worker> {
        std::mem::take(&mut self.workers)
    }

    /// Serves every part until `stop` turns true; the first part to fail stops the others and
    /// its error is the result.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let Self { settings, store, queue, health, gateway, admin, probes, workers, engines, .. } = self;
        let gw = async {
            let Some((listener, state)) = gateway else { return Ok(()) };
            tracing::info!(listen = %settings.gateway.listen, "gateway listening");
            herd_gateway::serve(listener, state, services::wait(stop.clone())).await.context("serving the gateway")
        };
        let adm = async {
            let Some((listener, state)) = admin else { return Ok(()) };
            tracing::info!(listen = %settings.admin.listen, "admin API and dashboard at /admin/");
            herd_admin::serve(listener, state, services::wait(stop.clone())).await.context("serving the admin API")
        };
        let prb = async {
            let Some(listener) = probes else { return Ok(()) };
            services::serve_worker_probes(listener, store.clone(), queue.clone(), health.clone(), stop.clone()).await
        };
        let wk = async {
            if !engines.is_empty() {
                services::spawn_gauges(queue.clone(), engines, stop.clone());
                // Workers write every turn to PostgreSQL: the process is not ready without it.
                services::watch_postgres(store.clone(), health.clone(), stop.clone());
            }
            let mut set = tokio::task::JoinSet::new();
            for w in workers {
                set.spawn(w.run(stop.clone()));
            }
            while set.join_next().await.is_some() {}
            Ok(())
        };
        tokio::try_join!(gw, adm, prb, wk).map(|_| ())
    }
}

/// CPU kernel threads each engine gets when a process runs `count` of them on `total` threads:
/// an equal share in a pool of its own (one engine keeps the process-wide pool).
fn engine_kernel_threads(count: usize, total: usize) -> Option<usize> {
    (count > 1).then(|| (total / count).max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn several_engines_share_the_kernel_threads_out() {
        assert_eq!(super::engine_kernel_threads(1, 16), None);
        assert_eq!(super::engine_kernel_threads(2, 16), Some(8));
        assert_eq!(super::engine_kernel_threads(3, 16), Some(5));
        assert_eq!(super::engine_kernel_threads(4, 2), Some(1));
    }
}
