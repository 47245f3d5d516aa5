//! herd's settings: one TOML file (`--config` or `HERD_CONFIG`), every key overridable by an
//! environment variable `HERD__SECTION__KEY` (e.g. `HERD__WORKER__CONCURRENCY=4`); `REDIS_URL`
//! and `DATABASE_URL` are honoured too. Unknown keys are errors naming the key.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// All settings, with their defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Redis (queue, dedup, locks, counters): `redis://…` for one server, or
    /// `redis+cluster://[user:password@]host:port,host:port,…` for a Redis Cluster.
    pub redis_url: String,
    /// PostgreSQL (tenants, channels, conversations, messages, deliveries).
    pub database_url: String,
    pub gateway: GatewaySettings,
    pub admin: AdminSettings,
    pub queue: QueueSettings,
    pub worker: WorkerSettings,
    pub limits: LimitSettings,
    pub platforms: PlatformSettings,
    pub policies: PolicySettings,
    /// Tenants and channels seeded into PostgreSQL at start (the demo's, or a small deployment's).
    pub tenants: Vec<TenantSeed>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Address the webhook gateway listens on.
    pub listen: String,
    /// Largest webhook body accepted (larger → 413, at once when `Content-Length` says so).
    pub max_body_bytes: usize,
    /// Longest a webhook body may take to arrive (slower → 408).
    pub body_timeout_ms: u64,
}

/// The admin API and dashboard.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address the admin API listens on (`herd admin serve`, and `herd serve`); empty turns it
    /// off in `herd serve`.
    pub listen: String,
    /// Requests one API key (or one client without a valid key) may make per minute.
    pub requests_per_minute: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8081".into(), requests_per_minute: 600 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Prefix of every Redis key herd writes.
    pub key_prefix: String,
    /// Consumer group of the workers.
    pub group: String,
    /// Approximate length the turn stream is trimmed to (`MAXLEN ~`).
    pub maxlen: usize,
    /// How long a platform message id is remembered for dedup (Meta retries for up to 7 days).
    pub dedup_ttl_secs: u64,
    /// An entry nobody touched for this long is taken over: a live worker touches the entries it
    /// works on every `heartbeat_ms`, so only a stopped worker's entries (and entries left for a
    /// conversation another worker answers) get this old. At least 3 × `heartbeat_ms`.
    pub claim_idle_ms: u64,
    /// Tries of one entry (waiting for another worker's conversation lock is not a try) before it
    /// goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// Lifetime of a conversation lock; refreshed every third of it while a reply is made.
    pub lock_ttl_ms: u64,
    /// How often a worker says it is alive and touches its entries; a worker silent for
    /// 3 × this is stopped, and its conversation locks are taken over at once.
    pub heartbeat_ms: u64,
    /// Replicas that must have a webhook's entry before the gateway answers 200 (Redis `WAIT`);
    /// 0 answers once the primary has it. Fewer within `wait_timeout_ms` → 503, and the
    /// platform delivers the webhook again.
    pub wait_replicas: u32,
    /// How long the gateway waits for `wait_replicas`.
    pub wait_timeout_ms: u64,
    /// Longest wait for Redis's answer to one command before it counts as failed (a webhook then
    /// gets 503 and is delivered again); blocking reads are exempt.
    pub response_timeout_ms: u64,
    /// Turn streams the conversations are spread over (by a hash of the conversation; one
    /// conversation's messages stay in one stream, in order). More than one lets a Redis Cluster
    /// spread the queue over its shards. Change it only with the streams drained.
    pub partitions: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Worker loops `herd serve` runs (each with its own engine; with several, each engine's CPU
    /// kernels get an equal share of the kernel threads in a pool of their own).
    pub count: usize,
    /// Where `herd worker` serves `/metrics`, `/healthz` and `/readyz` (empty: nowhere; in
    /// `herd serve` the gateway serves them for the whole process).
    pub metrics_listen: String,
    /// Conversations one worker handles at once.
    pub concurrency: usize,
    /// Model folder.
    pub model: String,
    /// Dtype the weights are held in: f32, bf16 or f16 (f16 on the CPU only).
    pub dtype: String,
    /// Where the model runs: `cpu`, `cuda` (device 0), `cuda:N`, or `auto` (the first GPU when the
    /// CUDA driver reports one, else the CPU). The Llama Guard model runs there too.
    pub device: String,
    pub max_new_tokens: usize,
    /// Prompt budget: older turns are dropped to fit.
    pub context_tokens: usize,
    /// System prompt of every conversation.
    pub system_prompt: String,
    /// How long a reply keeps being retried on rate limits, 5xx and network errors (from its
    /// first try; a `Retry-After` is honoured within it) before it fails.
    pub send_retry_window_ms: u64,
    /// First retry delay; doubles each retry (with jitter), up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest delay between two tries (unless the platform's `Retry-After` asks for more).
    pub retry_max_ms: u64,
    /// How long a stopping worker waits for in-flight turns.
    pub shutdown_grace_ms: u64,
    /// Stream entries read per call.
    pub read_batch: usize,
    /// Longest blocking read, milliseconds.
    pub block_ms: u64,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Sequences one engine decodes together at most (continuous batching).
    pub max_batch_size: usize,
    /// Tokens in one forward step at most (prefill chunks + decodes).
    pub max_batch_tokens: usize,
    /// KV cache bytes all sequences of one engine may reserve together.
    pub kv_cache_bytes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Messages one sender may send per minute before "slow down".
    pub sender_per_minute: u32,
    /// Messages one tenant may receive per second.
    pub tenant_per_second: u32,
    /// The reply sent (once per window) to a rate-limited sender.
    pub slow_down_text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformSettings {
    /// Graph API version in Send API paths.
    pub graph_api_version: String,
    /// Base URL of the WhatsApp Cloud API (tests and the demo point it at a local server).
    pub whatsapp_base_url: String,
    /// Base URL of the Messenger Send API.
    pub messenger_base_url: String,
    /// Base URL of the Instagram messaging API.
    pub instagram_base_url: String,
    /// Timeout of one Send API call, milliseconds.
    pub send_timeout_ms: u64,
}

/// A tenant and its channels, seeded at start, with its policy settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSeed {
    pub name: String,
    #[serde(default)]
    pub channels: Vec<ChannelSeed>,
    /// ISO country of the licensee's principal place of business.
    #[serde(default = "default_place")]
    pub principal_place_of_business: String,
    /// Country assumed for users herd cannot place (Messenger/Instagram without a locale).
    #[serde(default)]
    pub default_country: Option<String>,
    /// Policy packs that apply, by name.
    #[serde(default = "default_packs")]
    pub packs: Vec<String>,
    /// Meta granted the license needed above 700M monthly active users.
    #[serde(default)]
    pub meta_license_granted: bool,
    /// The tenant serves a multimodal Llama 4 model.
    #[serde(default)]
    pub multimodal: bool,
    /// Which classifier decides: `builtin`, `guard` or `builtin_then_guard` (unset: the guard
    /// model when `policies.guard_model` is set, else the built-in classifier).
    #[serde(default)]
    pub moderation: Option<String>,
    /// `"pack/rule-id" = "enforce" | "shadow" | "off"`.
    #[serde(default)]
    pub overrides: std::collections::BTreeMap<String, String>,
}

fn default_place() -> String {
    "US".into()
}

fn default_packs() -> Vec<String> {
    vec!["llama4-license".into(), "meta-ai-rollout".into(), "balanced-moderation".into()]
}

/// Where policy packs come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Folder of `*.toml` packs; empty means the packs shipped in the binary.
    pub packs_dir: String,
    /// A Llama Guard checkpoint folder: when set, it classifies messages instead of the built-in
    /// rules (through herd's engine, on the worker's CPU or GPU).
    pub guard_model: String,
    /// How often workers check the database for a changed policy (activations, tenants), ms.
    pub reload_ms: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self { packs_dir: String::new(), guard_model: String::new(), reload_ms: 2_000 }
    }
}

/// A channel: one WhatsApp number, Facebook Page or Instagram account.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSeed {
    /// `whatsapp`, `messenger` or `instagram`.
    pub platform: String,
    /// WhatsApp `phone_number_id`, Page id or Instagram account id.
    pub external_id: String,
    /// App secret: webhooks are signed with it.
    pub app_secret: String,
    /// Token echoed in the webhook verification handshake.
    pub verify_token: String,
    /// Token for the Send API.
    pub access_token: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            database_url: "postgres://postgres:postgres@127.0.0.1:5432/herd".into(),
            gateway: GatewaySettings::default(),
            admin: AdminSettings::default(),
            queue: QueueSettings::default(),
            worker: WorkerSettings::default(),
            limits: LimitSettings::default(),
            platforms: PlatformSettings::default(),
            policies: PolicySettings::default(),
            tenants: Vec::new(),
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), max_body_bytes: 3 * 1024 * 1024, body_timeout_ms: 10_000 }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            key_prefix: "herd".into(),
            group: "workers".into(),
            maxlen: 1_000_000,
            dedup_ttl_secs: 7 * 24 * 3600,
            claim_idle_ms: 10_000,
            max_deliveries: 5,
            lock_ttl_ms: 30_000,
            heartbeat_ms: 1_000,
            wait_replicas: 0,
            wait_timeout_ms: 1_000,
            response_timeout_ms: 2_000,
            partitions: 1,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            count: 1,
            metrics_listen: "127.0.0.1:9464".into(),
            concurrency: 8,
            model: "deploy/models/herd-demo-chat".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            max_new_tokens: 256,
            context_tokens: 2048,
            system_prompt: String::new(),
            send_retry_window_ms: 600_000,
            retry_base_ms: 200,
            retry_max_ms: 30_000,
            shutdown_grace_ms: 10_000,
            read_batch: 16,
            block_ms: 2_000,
            temperature: 0.0,
            max_batch_size: 32,
            max_batch_tokens: 512,
            kv_cache_bytes: 1 << 30,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            sender_per_minute: 30,
            tenant_per_second: 200,
            slow_down_text: "You are sending messages very fast; please slow down a little.".into(),
        }
    }
}

impl Default for PlatformSettings {
    fn default() -> Self {
        Self {
            graph_api_version: "v21.0".into(),
            whatsapp_base_url: "https://graph.facebook.com".into(),
            messenger_base_url: "https://graph.facebook.com".into(),
            instagram_base_url: "https://graph.instagram.com".into(),
            send_timeout_ms: 10_000,
        }
    }
}

/// `scheme://user:secret@host/...` → `scheme://user:***@host/...`; anything else unchanged.
fn redact_url_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else { return url.to_string() };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}***{}", &url[..colon + 1], &url[at..]),
        None => url.to_string(),
    }
}

impl Settings {
    /// Reads `path` (or `HERD_CONFIG`, or only defaults), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let from_env = std::env::var("HERD_CONFIG").ok().map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|error| SettingsError::Io { path: p.clone(), error })?,
            None => String::new(),
        };
        let name = path.as_ref().map_or_else(|| "settings".to_string(), |p| p.display().to_string());
        Self::from_toml(&text, &name, &env)
    }

    /// Parses TOML text (`name` names it in errors) with the given environment applied.
    pub fn from_toml(text: &str, name: &str, env: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| SettingsError::Invalid { path: name.into(), message: e.to_string() })?;
        for (k, v) in env {
            let key = match k.as_str() {
                "REDIS_URL" if !env.iter().any(|(k, _)| k == "HERD__REDIS_URL") => "redis_url".to_string(),
                "DATABASE_URL" if !env.iter().any(|(k, _)| k == "HERD__DATABASE_URL") => "database_url".to_string(),
                _ => match k.strip_prefix("HERD__") {
                    Some(rest) => rest.to_lowercase().replace("__", "."),
                    None => continue,
                },
            };
            set_path(&mut table, &key, v).map_err(|message| SettingsError::Invalid { path: format!("environment {k}"), message })?;
        }
        let s: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::Invalid { path: name.into(), message: e.to_string() })?;
        s.validate().map_err(|message| SettingsError::Invalid { path: name.into(), message })?;
        Ok(s)
    }

    /// The settings as TOML with every secret replaced by `***` (URL passwords, channel secrets
    /// and tokens): what `herd config` prints.
    pub fn to_redacted_toml(&self) -> String {
        let mut s = self.clone();
        s.redis_url = redact_url_password(&s.redis_url);
        s.database_url = redact_url_password(&s.database_url);
        for c in s.tenants.iter_mut().flat_map(|t| t.channels.iter_mut()) {
            for secret in [&mut c.app_secret, &mut c.verify_token, &mut c.access_token] {
                *secret = "***".into();
            }
        }
        toml::to_string(&s).unwrap_or_else(|e| format!("# the settings do not serialise: {e}\n"))
    }

    /// Refuses values that cannot work, and combinations that cannot work together, naming the keys.
    pub fn validate(&self) -> Result<(), String> {
        let (q, w) = (&self.queue, &self.worker);
        if w.concurrency == 0 || w.read_batch == 0 || w.count == 0 {
            return Err("`worker.concurrency`, `worker.read_batch` and `worker.count` must be >= 1".into());
        }
        if q.heartbeat_ms < 50 {
            return Err(format!("`queue.heartbeat_ms` must be >= 50, got {}", q.heartbeat_ms));
        }
        if q.claim_idle_ms < 3 * q.heartbeat_ms {
            return Err(format!(
                "`queue.claim_idle_ms` ({}) must be at least 3 × `queue.heartbeat_ms` ({}): live workers' entries would be taken over",
                q.claim_idle_ms, q.heartbeat_ms
            ));
        }
        if !(1..=256).contains(&q.partitions) {
            return Err(format!("`queue.partitions` must be 1 to 256 (got {})", q.partitions));
        }
        if q.wait_replicas > 0 && q.wait_timeout_ms == 0 {
            return Err("`queue.wait_timeout_ms` must be >= 1 when `queue.wait_replicas` is set (0 would wait forever)".into());
        }
        if q.lock_ttl_ms < 150 {
            return Err(format!("`queue.lock_ttl_ms` must be >= 150, got {}", q.lock_ttl_ms));
        }
        if w.max_new_tokens == 0 || w.max_new_tokens >= w.context_tokens {
            return Err(format!(
                "`worker.max_new_tokens` ({}) must be >= 1 and below `worker.context_tokens` ({}): the prompt needs room",
                w.max_new_tokens, w.context_tokens
            ));
        }
        if w.retry_base_ms == 0 || w.retry_max_ms < w.retry_base_ms {
            return Err(format!(
                "`worker.retry_base_ms` ({}) must be >= 1 and at most `worker.retry_max_ms` ({})",
                w.retry_base_ms, w.retry_max_ms
            ));
        }
        if self.queue.max_deliveries == 0 {
            return Err("`queue.max_deliveries` must be >= 1, got 0".into());
        }
        if self.admin.requests_per_minute == 0 {
            return Err("`admin.requests_per_minute` must be at least 1".into());
        }
        if self.limits.sender_per_minute == 0 || self.limits.tenant_per_second == 0 {
            return Err("`limits.*` must be >= 1".into());
        }
        for (ti, t) in self.tenants.iter().enumerate() {
            for (ci, c) in t.channels.iter().enumerate() {
                if crate::Platform::parse(&c.platform).is_none() {
                    return Err(format!(
                        "`tenants[{ti}].channels[{ci}].platform` must be whatsapp, messenger or instagram, got {:?}",
                        c.platform
                    ));
                }
                if c.external_id.is_empty() || c.app_secret.is_empty() {
                    return Err(format!("`tenants[{ti}].channels[{ci}]`: external_id and app_secret must not be empty"));
                }
            }
        }
        Ok(())
    }
}

/// Sets `a.b.c = value` in a TOML table; the value is read as TOML when it parses (numbers,
/// booleans), else as a string.
fn set_path(table: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut t = table;
    for p in parts {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    t.insert(last.to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn printed_settings_hide_secrets_and_read_back() {
        let text = "database_url = \"postgres://herd:s3cret@db:5432/herd\"\n[[tenants]]\nname = \"t\"\n[[tenants.channels]]\nplatform = \"whatsapp\"\nexternal_id = \"1\"\napp_secret = \"app-s3cret\"\nverify_token = \"v-s3cret\"\naccess_token = \"a-s3cret\"\n";
        let s = Settings::from_toml(text, "t.toml", &env(&[("HERD__REDIS_URL", "redis://:r3dis@cache:6379/0")])).expect("valid");
        let printed = s.to_redacted_toml();
        assert!(!printed.contains("s3cret") && !printed.contains("r3dis"), "{printed}");
        assert!(printed.contains("postgres://herd:***@db:5432/herd") && printed.contains("redis://:***@cache:6379/0"), "{printed}");
        let back = Settings::from_toml(&printed, "printed", &[]).expect("the printed settings read back");
        assert_eq!(back.tenants[0].channels[0].external_id, "1");
        assert_eq!(redact_url_password("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn defaults_apply_and_the_environment_overrides_the_file() {
        let text = "[worker]\nconcurrency = 3\nmodel = \"m\"\n";
        let s =
            Settings::from_toml(text, "t.toml", &env(&[("HERD__WORKER__CONCURRENCY", "5"), ("REDIS_URL", "redis://x:1")])).expect("valid");
        assert_eq!(s.worker.concurrency, 5);
        assert_eq!(s.worker.model, "m");
        assert_eq!(s.redis_url, "redis://x:1");
        assert_eq!(s.gateway.max_body_bytes, 3 * 1024 * 1024);
        let s = Settings::from_toml("", "t", &env(&[("HERD__WORKER__SYSTEM_PROMPT", "Be kind.")])).expect("valid");
        assert_eq!(s.worker.system_prompt, "Be kind.");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Settings::from_toml("[worker]\nconcurency = 3\n", "t.toml", &[]).expect_err("typo");
        assert!(e.to_string().contains("concurency") && e.to_string().contains("t.toml"), "{e}");
        let e = Settings::from_toml("", "t", &env(&[("HERD__WORKER__CONCURRENCY", "0")])).expect_err("zero");
        assert!(e.to_string().contains("worker.concurrency"), "{e}");
        let bad = "[[tenants]]\nname = \"a\"\n[[tenants.channels]]\nplatform = \"telegram\"\nexternal_id = \"1\"\napp_secret = \"s\"\nverify_token = \"v\"\naccess_token = \"t\"\n";
        let e = Settings::from_toml(bad, "t", &[]).expect_err("platform");
        assert!(e.to_string().contains("tenants[0].channels[0].platform"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_together_are_refused_naming_both() {
        let refused = |pairs: &[(&str, &str)], names: &[&str]| {
            let e = Settings::from_toml("", "t", &env(pairs)).expect_err("refused").to_string();
            for n in names {
                assert!(e.contains(n), "{pairs:?}: {e}");
            }
        };
        refused(
            &[("HERD__QUEUE__CLAIM_IDLE_MS", "2000"), ("HERD__QUEUE__HEARTBEAT_MS", "1000")],
            &["queue.claim_idle_ms", "queue.heartbeat_ms"],
        );
        refused(&[("HERD__QUEUE__HEARTBEAT_MS", "10")], &["queue.heartbeat_ms"]);
        refused(
            &[("HERD__WORKER__MAX_NEW_TOKENS", "2048"), ("HERD__WORKER__CONTEXT_TOKENS", "1024")],
            &["worker.max_new_tokens", "worker.context_tokens"],
        );
        refused(&[("HERD__WORKER__RETRY_MAX_MS", "10")], &["worker.retry_base_ms", "worker.retry_max_ms"]);
        // What the black-box run used (claim 3 s, lock 30 s) works together now: a dead worker's
        // lock is taken over by liveness, not waited out.
        Settings::from_toml("", "t", &env(&[("HERD__QUEUE__CLAIM_IDLE_MS", "3000"), ("HERD__QUEUE__LOCK_TTL_MS", "30000")]))
            .expect("valid");
    }
}
