//! herd-queue: the Redis side of herd — the turn stream (consumer group, at-least-once with
//! `XACK`, reclaim of a dead worker's entries with `XAUTOCLAIM`, dead letters), dedup of platform
//! message ids, conversation locks and small once-per-window flags.
//!
//! The turn stream is `queue.partitions` streams; a conversation's messages all go to one of
//! them (by a hash of the conversation), so its order holds, and a Redis Cluster spreads the
//! streams over its shards (see [`keys`] for the hash tags that keep each script on one slot).

pub mod conn;
pub mod keys;

pub use conn::Connection;
pub use keys::{conversation_key, partition_of};

use herd_core::settings::QueueSettings;
use herd_core::{InboundMessage, StatusUpdate};
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamMaxlen, StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Longest block of one read in a Redis Cluster, where each partition is read on its own (a
/// read over several streams needs them on one slot): a read returns once every partition has
/// answered, so an entry waits at most this long behind an idle partition.
const CLUSTER_BLOCK_MS: u64 = 100;

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stream entry {id}: {message}")]
    BadEntry { id: String, message: String },
    /// The entry is on the primary, but not yet on `queue.wait_replicas` replicas.
    #[error("{got} of {wanted} replicas (queue.wait_replicas) had the entry within queue.wait_timeout_ms")]
    NotDurable { wanted: u32, got: u32 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a stream entry asks the worker to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// A user's message to record and (unless rate-limited) answer.
    Message { channel_id: i64, tenant_id: i64, message: InboundMessage, rate_limited: bool },
    /// A delivery status to apply.
    Status { channel_id: i64, status: StatusUpdate },
}

/// One stream entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub job: Job,
    /// When the gateway accepted it (ms since the epoch), for queue-wait latency.
    pub received_at_ms: i64,
    /// W3C trace context of the webhook request, carried to the worker.
    pub traceparent: Option<String>,
}

impl Entry {
    /// The conversation an entry belongs to: `channel_id:sender` (empty for statuses).
    pub fn conversation_key(&self) -> String {
        match &self.job {
            Job::Message { channel_id, message, .. } => conversation_key(*channel_id, &message.sender),
            Job::Status { .. } => String::new(),
        }
    }

    /// The partition (of `partitions`) the entry goes to: its conversation's; a status goes by
    /// its recipient's conversation.
    pub fn partition(&self, partitions: u32) -> u32 {
        let key = match &self.job {
            Job::Message { .. } => self.conversation_key(),
            Job::Status { channel_id, status } => conversation_key(*channel_id, status.recipient.as_deref().unwrap_or_default()),
        };
        partition_of(&key, partitions)
    }
}

/// What [`Queue::forget_user`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// Keys deleted.
    pub keys: u64,
    /// Entries deleted from the turn and dead-letter streams.
    pub stream_entries: u64,
}

/// The outcome of taking a conversation lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lock {
    /// Ours now.
    Taken,
    /// Held by the named worker.
    HeldBy(String),
}

/// An entry handed to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its id in its partition's stream (`ms-seq`).
    pub id: String,
    /// The partition whose stream holds it.
    pub partition: u32,
    pub entry: Entry,
    /// How many times this entry has been delivered (1 the first time).
    pub deliveries: u64,
}

/// Handle to the queue (cheap to clone).
#[derive(Clone)]
pub struct Queue {
    url: String,
    conn: Connection,
    /// Blocking reads get connections of their own: on a shared one, `XREADGROUP BLOCK` would
    /// hold up every other command behind it. One for all partitions on a single server (one
    /// read covers every stream); one per partition in a cluster.
    readers: Vec<Connection>,
    cfg: QueueSettings,
    /// The turn stream of each partition.
    streams: Vec<String>,
    dead: String,
    /// The partition the next [`Queue::claim_stale`] starts at (each call starts one further, so
    /// no partition's stale entries wait behind another's).
    claim_from: Arc<AtomicU32>,
}

impl Queue {
    /// Connects (to one server, or to a cluster: see [`conn`]), makes sure each partition's
    /// consumer group exists, and moves what the unpartitioned stream of earlier versions still
    /// holds into the partitions.
    pub async fn connect(url: &str, cfg: QueueSettings) -> Result<Self> {
        // redis' default of 500 ms fails commands of a busy but healthy Redis (or host).
        let conn = conn::open(url, Some(Duration::from_millis(cfg.response_timeout_ms.max(1)))).await?;
        let streams = (0..cfg.partitions.max(1)).map(|p| keys::stream(&cfg.key_prefix, p)).collect();
        let dead = format!("{}:turns:dead", cfg.key_prefix);
        let q = Self { url: url.to_string(), conn, readers: Vec::new(), cfg, streams, dead, claim_from: Arc::default() };
        for p in 0..q.partitions() {
            q.ensure_group(p).await?;
        }
        q.adopt_legacy_stream().await?;
        Ok(q)
    }

    /// A clone with its own connections for blocking reads (one per consuming loop).
    pub async fn with_reader(&self) -> Result<Self> {
        let n = if self.conn.is_cluster() { self.streams.len() } else { 1 };
        let mut readers = Vec::with_capacity(n);
        for _ in 0..n {
            readers.push(conn::open(&self.url, None).await?);
        }
        Ok(Self { readers, ..self.clone() })
    }

    /// How many partitions the turn stream has.
    pub fn partitions(&self) -> u32 {
        self.streams.len() as u32
    }

    /// The partition of a conversation (see [`conversation_key`]).
    pub fn partition_of(&self, conversation: &str) -> u32 {
        partition_of(conversation, self.partitions())
    }

    /// The settings in use.
    pub fn settings(&self) -> &QueueSettings {
        &self.cfg
    }

    /// Keys of the turn streams, by partition.
    pub fn stream_keys(&self) -> &[String] {
        &self.streams
    }

    fn stream(&self, p: u32) -> &str {
        &self.streams[p as usize % self.streams.len()]
    }

    /// Key of the dead-letter stream.
    pub fn dead_letter_key(&self) -> &str {
        &self.dead
    }

    /// A key under the configured prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cfg.key_prefix)
    }

    /// A clone of the connection for ad-hoc commands (metrics, tests).
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Recreates the consumer groups after Redis lost them (restarted without its data): from
    /// the start of whatever the streams hold now, so what the gateway accepted since is read.
    async fn recreate_groups(&self) -> Result<()> {
        tracing::warn!(group = %self.cfg.group, "a consumer group is gone (Redis lost its data?); recreating them");
        for p in 0..self.partitions() {
            self.ensure_group(p).await?;
        }
        Ok(())
    }

    async fn ensure_group(&self, p: u32) -> Result<()> {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(self.stream(p)).arg(&self.cfg.group).arg("0").arg("MKSTREAM").query_async(&mut c).await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Moves the entries of the unpartitioned stream of earlier versions (`<prefix>:turns`), if
    /// any, into their partitions, so an upgrade loses nothing accepted. One process takes the
    /// stream (by renaming it); entries another worker had read are delivered again, which a
    /// worker handles as any redelivery.
    async fn adopt_legacy_stream(&self) -> Result<()> {
        let legacy = keys::legacy_stream(&self.cfg.key_prefix);
        let mut c = self.conn.clone();
        let kind: String = redis::cmd("TYPE").arg(&legacy).query_async(&mut c).await?;
        if kind != "stream" {
            return Ok(());
        }
        // The same slot as `legacy` (its hash tag is the whole old name), so RENAME works in a cluster.
        let taken = format!("{{{legacy}}}:adopting:{}:{}", std::process::id(), chrono::Utc::now().timestamp_millis());
        if let Err(e) = redis::cmd("RENAME").arg(&legacy).arg(&taken).query_async::<()>(&mut c).await {
            tracing::debug!(error = %e, "another process took the old turn stream");
            return Ok(());
        }
        let mut from = "-".to_string();
        let mut moved = 0u64;
        loop {
            let page: redis::streams::StreamRangeReply =
                redis::cmd("XRANGE").arg(&taken).arg(&from).arg("+").arg("COUNT").arg(500).query_async(&mut c).await?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            for e in &page.ids {
                let fields: Vec<(String, String)> =
                    e.map.iter().filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value::<String>(v.clone()).ok()?))).collect();
                let p = fields
                    .iter()
                    .find(|(k, _)| k == "data")
                    .and_then(|(_, d)| serde_json::from_str::<Entry>(d).ok())
                    .map_or(0, |entry| entry.partition(self.partitions()));
                let _: String = c.xadd(self.stream(p), "*", &fields).await?;
                moved += 1;
            }
        }
        let _: i64 = redis::cmd("DEL").arg(&taken).query_async(&mut c).await?;
        tracing::info!(moved, partitions = self.partitions(), "moved the entries of the unpartitioned turn stream of an earlier version");
        Ok(())
    }

    /// Dedup and enqueue in one atomic step (one round trip): marks the platform message id seen
    /// for the dedup window and appends the entry, unless the id was seen before. Returns the
    /// entry id, or `None` for a duplicate.
    pub async fn enqueue_once(&self, platform: &str, message_id: &str, entry: &Entry) -> Result<Option<String>> {
        let p = entry.partition(self.partitions());
        let seen_key = keys::seen(&self.cfg.key_prefix, p, platform, message_id);
        let script = redis::Script::new(
            "if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
               return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3], 'conv', ARGV[4], 'mid', ARGV[5])
             end
             return false",
        );
        let data = serde_json::to_string(entry).map_err(|e| Error::BadEntry { id: "-".into(), message: e.to_string() })?;
        let mut c = self.conn.clone();
        let id: Option<String> = script
            .key(&seen_key)
            .key(self.stream(p))
            .arg(self.cfg.dedup_ttl_secs)
            .arg(self.cfg.maxlen)
            .arg(data)
            .arg(entry.conversation_key())
            .arg(message_id)
            .invoke_async(&mut c)
            .await?;
        if id.is_some() && self.cfg.wait_replicas > 0 {
            let got: u32 = redis::cmd("WAIT").arg(self.cfg.wait_replicas).arg(self.cfg.wait_timeout_ms).query_async(&mut c).await?;
            if got < self.cfg.wait_replicas {
                // Not durable as asked: the platform will deliver the webhook again, and then it
                // must be enqueued again rather than taken for a duplicate.
                let _: i64 = redis::cmd("DEL").arg(&seen_key).query_async(&mut c).await?;
                return Err(Error::NotDurable { wanted: self.cfg.wait_replicas, got });
            }
        }
        Ok(id)
    }

    /// What a webhook acknowledged with 200 survives, in one sentence (for start-up logs and
    /// `/readyz`): the server's persistence as far as it tells (`CONFIG GET` may be disabled) and
    /// `queue.wait_replicas`. The second value is false when a Redis restart can lose entries.
    pub async fn durability(&self) -> (String, bool) {
        let mut c = self.conn.clone();
        let get = |name: &'static str| {
            let mut c = c.clone();
            async move {
                let v: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await;
                v.ok().and_then(|v| v.get(1).cloned())
            }
        };
        let (aof, fsync) = (get("appendonly").await, get("appendfsync").await);
        let replicas = if self.conn.is_cluster() {
            // Every node's view of the whole cluster: one line per node, its flags third.
            let nodes: redis::RedisResult<String> = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await;
            nodes.ok().map(|n| n.lines().filter(|l| l.split_whitespace().nth(2).is_some_and(|f| f.contains("slave"))).count() as u32)
        } else {
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.unwrap_or_default();
            info.lines().find_map(|l| l.strip_prefix("connected_slaves:")).and_then(|v| v.trim().parse::<u32>().ok())
        };
        let n = self.cfg.wait_replicas;
        match (n, aof.as_deref(), fsync.as_deref()) {
            (n, _, _) if n > 0 => (format!("a webhook is acknowledged once {n} replica(s) have its entry (queue.wait_replicas)"), true),
            (_, Some("yes"), Some("always")) => ("each entry is fsynced to Redis's append-only file before its webhook is acknowledged".into(), true),
            (_, Some("yes"), _) => (
                "entries reach Redis's append-only file within about a second: a Redis crash can lose the last second of acknowledged webhooks (appendfsync always, or queue.wait_replicas, closes that)".into(),
                false,
            ),
            (_, Some(_), _) => (
                format!(
                    "entries live in Redis's memory only ({} replica(s), not waited for): a Redis restart loses acknowledged webhooks not yet answered (appendonly yes + appendfsync always, or queue.wait_replicas, closes that)",
                    replicas.unwrap_or(0)
                ),
                false,
            ),
            (_, None, _) => ("Redis does not say how it persists (CONFIG GET is disabled); set queue.wait_replicas to be sure".into(), false),
        }
    }

    /// Whether platform message `message_id` of `conversation` (see [`conversation_key`]) was
    /// enqueued already (within the dedup window).
    pub async fn seen(&self, platform: &str, conversation: &str, message_id: &str) -> Result<bool> {
        let key = keys::seen(&self.cfg.key_prefix, self.partition_of(conversation), platform, message_id);
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS").arg(key).query_async(&mut c).await?;
        Ok(n > 0)
    }

    /// Platform message ids of the entries of conversation `conv` (see [`Entry::conversation_key`])
    /// that are delivered to some worker but not yet acknowledged (one server-side script).
    pub async fn pending_of_conversation(&self, conv: &str) -> Result<Vec<String>> {
        let script = redis::Script::new(
            "local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000)
             local out = {}
             for _, e in ipairs(p) do
               local r = redis.call('XRANGE', KEYS[1], e[1], e[1])
               if r[1] then
                 local f, conv, mid = r[1][2], nil, nil
                 for i = 1, #f, 2 do
                   if f[i] == 'conv' then conv = f[i + 1] elseif f[i] == 'mid' then mid = f[i + 1] end
                 end
                 if conv == ARGV[2] and mid then table.insert(out, mid) end
               end
             end
             return out",
        );
        let mut c = self.conn.clone();
        let p = self.partition_of(conv);
        Ok(script.key(self.stream(p)).arg(&self.cfg.group).arg(conv).invoke_async(&mut c).await?)
    }

    /// Appends an entry to its partition (`MAXLEN ~` trimmed); returns its id.
    pub async fn enqueue(&self, entry: &Entry) -> Result<String> {
        let mut c = self.conn.clone();
        let data = serde_json::to_string(entry).map_err(|e| Error::BadEntry { id: "-".into(), message: e.to_string() })?;
        let stream = self.stream(entry.partition(self.partitions()));
        let id: String = c.xadd_maxlen(stream, StreamMaxlen::Approx(self.cfg.maxlen), "*", &[("data", data)]).await?;
        Ok(id)
    }

    /// Reads up to `count` new entries for `consumer` (about `count` from each partition that
    /// has some), blocking up to `block_ms`. Call it on a [`Queue::with_reader`] clone.
    pub async fn read(&self, consumer: &str, count: usize, block_ms: u64) -> Result<Vec<Delivery>> {
        let per_stream = count.div_ceil(self.streams.len()).max(1);
        let replies = if self.conn.is_cluster() && self.readers.len() == self.streams.len() {
            // One read per partition (each on its own connection, all at once): streams on
            // different slots cannot share a read in a cluster.
            let block = block_ms.min(CLUSTER_BLOCK_MS);
            let mut reads = tokio::task::JoinSet::new();
            for (r, s) in self.readers.iter().zip(&self.streams) {
                let (mut c, s) = (r.clone(), s.clone());
                let opts = StreamReadOptions::default().group(&self.cfg.group, consumer).count(per_stream).block(block as usize);
                reads.spawn(async move { c.xread_options::<_, _, Option<StreamReadReply>>(&[s], &[">"], &opts).await });
            }
            let mut replies = Vec::with_capacity(self.streams.len());
            while let Some(r) = reads.join_next().await {
                replies
                    .push(r.map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "a partition's read task failed", e.to_string())))?);
            }
            replies
        } else {
            let mut c = self.readers.first().cloned().unwrap_or_else(|| self.conn.clone());
            let opts = StreamReadOptions::default().group(&self.cfg.group, consumer).count(per_stream).block(block_ms as usize);
            let ids = vec![">"; self.streams.len()];
            vec![c.xread_options(&self.streams, &ids, &opts).await]
        };
        let mut out = Vec::new();
        let (mut failed, mut group_lost) = (None, false);
        for r in replies {
            match r {
                // Once for all partitions, however many of them reported it.
                Err(e) if e.code() == Some("NOGROUP") => group_lost = true,
                // What other partitions returned is theirs already: handed on, not dropped.
                Err(e) => failed = Some(e),
                Ok(reply) => {
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        let p = self.streams.iter().position(|s| *s == key.key).unwrap_or(0) as u32;
                        for id in key.ids {
                            out.push(self.decode(p, id, 1).await?);
                        }
                    }
                }
            }
        }
        if group_lost {
            self.recreate_groups().await?;
        }
        match failed {
            Some(e) if out.is_empty() => Err(e.into()),
            _ => Ok(out),
        }
    }

    /// Takes over up to `count` entries pending longer than `claim_idle_ms` (their worker is
    /// presumed dead), from the partitions in turn.
    pub async fn claim_stale(&self, consumer: &str, count: usize) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let first = self.claim_from.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.partitions() {
            if out.len() >= count {
                break;
            }
            let p = (first + k) % self.partitions();
            let mut c = self.conn.clone();
            let opts = StreamAutoClaimOptions::default().count(count - out.len());
            let reply: StreamAutoClaimReply =
                match c.xautoclaim_options(self.stream(p), &self.cfg.group, consumer, self.cfg.claim_idle_ms, "0-0", opts).await {
                    Err(e) if e.code() == Some("NOGROUP") => {
                        self.recreate_groups().await?;
                        continue;
                    }
                    r => r?,
                };
            for id in reply.claimed {
                let n = self.delivery_count(p, &id.id).await?;
                out.push(self.decode(p, id, n).await?);
            }
        }
        Ok(out)
    }

    async fn delivery_count(&self, p: u32, id: &str) -> Result<u64> {
        let mut c = self.conn.clone();
        let r: StreamPendingCountReply = c.xpending_count(self.stream(p), &self.cfg.group, id, id, 1).await?;
        Ok(r.ids.first().map_or(1, |r| r.times_delivered as u64))
    }

    async fn decode(&self, partition: u32, id: redis::streams::StreamId, deliveries: u64) -> Result<Delivery> {
        let data: Option<String> = id.get("data");
        let entry = data
            .as_deref()
            .ok_or_else(|| "no data field".to_string())
            .and_then(|d| serde_json::from_str::<Entry>(d).map_err(|e| e.to_string()));
        match entry {
            Ok(entry) => Ok(Delivery { id: id.id, partition, entry, deliveries }),
            Err(message) => {
                // An entry no worker can read is dead-lettered at once rather than retried forever.
                self.dead_letter_raw(partition, &id.id, data.as_deref().unwrap_or(""), &message).await?;
                Err(Error::BadEntry { id: id.id, message })
            }
        }
    }

    /// Acknowledges an entry: it is done, and deleted from the stream (the user's words do not
    /// linger in Redis once PostgreSQL has them).
    pub async fn ack(&self, d: &Delivery) -> Result<()> {
        self.ack_id(d.partition, &d.id).await
    }

    async fn ack_id(&self, p: u32, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(self.stream(p))
            .arg(&self.cfg.group)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(self.stream(p))
            .arg(id)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Moves an entry to the dead-letter stream with the reason, and acknowledges it.
    pub async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        let data = serde_json::to_string(&d.entry).unwrap_or_default();
        self.dead_letter_raw(d.partition, &d.id, &data, reason).await
    }

    async fn dead_letter_raw(&self, p: u32, id: &str, data: &str, reason: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: String = c
            .xadd_maxlen(&self.dead, StreamMaxlen::Approx(self.cfg.maxlen), "*", &[("data", data), ("reason", reason), ("source_id", id)])
            .await?;
        self.ack_id(p, id).await
    }

    /// Takes the lock of a conversation for `owner` for `lock_ttl_ms`, or names who holds it.
    pub async fn lock(&self, conversation: i64, owner: &str) -> Result<Lock> {
        let script = redis::Script::new(
            "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
             return redis.call('GET', KEYS[1])",
        );
        let mut c = self.conn.clone();
        let holder: Option<String> =
            script.key(self.key(&format!("lock:conv:{conversation}"))).arg(owner).arg(self.cfg.lock_ttl_ms).invoke_async(&mut c).await?;
        Ok(match holder {
            None => Lock::Taken,
            // Also when `h` is `owner`: another task of this worker answers the conversation.
            Some(h) => Lock::HeldBy(h),
        })
    }

    /// Takes over the lock of a conversation from `dead` (a stopped worker: see
    /// [`Queue::is_alive`]); false when someone else got it first.
    pub async fn take_over(&self, conversation: i64, owner: &str, dead: &str) -> Result<bool> {
        let script = redis::Script::new(
            "local cur = redis.call('GET', KEYS[1])
             if cur and cur ~= ARGV[3] then return 0 end
             redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
             return 1",
        );
        let mut c = self.conn.clone();
        let r: i64 = script
            .key(self.key(&format!("lock:conv:{conversation}")))
            .arg(owner)
            .arg(self.cfg.lock_ttl_ms)
            .arg(dead)
            .invoke_async(&mut c)
            .await?;
        Ok(r == 1)
    }

    /// Says that worker `owner` is alive for the next 3 × `heartbeat_ms`, and touches the
    /// entries it works on, so that no other worker takes them over (their delivery counts stay).
    /// `entries` are (partition, id) pairs.
    pub async fn heartbeat(&self, owner: &str, entries: &[(u32, String)]) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("alive:{owner}")))
            .arg(1)
            .arg("PX")
            .arg(3 * self.cfg.heartbeat_ms)
            .query_async(&mut c)
            .await?;
        for p in 0..self.partitions() {
            let ids: Vec<&str> = entries.iter().filter(|(q, _)| *q == p).map(|(_, id)| id.as_str()).collect();
            if !ids.is_empty() {
                let _: redis::Value = redis::cmd("XCLAIM")
                    .arg(self.stream(p))
                    .arg(&self.cfg.group)
                    .arg(owner)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID")
                    .query_async(&mut c)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether worker `owner` said it was alive within the last 3 × `heartbeat_ms`.
    pub async fn is_alive(&self, owner: &str) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS").arg(self.key(&format!("alive:{owner}"))).query_async(&mut c).await?;
        Ok(n == 1)
    }

    /// Says that worker `owner` has stopped: its locks may be taken over at once.
    pub async fn stopped(&self, owner: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("DEL").arg(self.key(&format!("alive:{owner}"))).query_async(&mut c).await?;
        Ok(())
    }

    /// Leaves entry `id` pending with `consumer`, with its delivery count set back to `tries`
    /// (waiting for another worker's conversation lock is not a try); it comes back after
    /// `claim_idle_ms`.
    pub async fn keep_pending(&self, consumer: &str, d: &Delivery, tries: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(self.stream(d.partition))
            .arg(&self.cfg.group)
            .arg(consumer)
            .arg(0)
            .arg(&d.id)
            .arg("RETRYCOUNT")
            .arg(tries)
            .arg("JUSTID")
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Extends a lock `owner` holds; false when it is no longer theirs.
    pub async fn refresh_lock(&self, conversation: i64, owner: &str) -> Result<bool> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        );
        let mut c = self.conn.clone();
        let r: i64 =
            script.key(self.key(&format!("lock:conv:{conversation}"))).arg(owner).arg(self.cfg.lock_ttl_ms).invoke_async(&mut c).await?;
        Ok(r == 1)
    }

    /// Releases a lock if `owner` still holds it.
    pub async fn unlock(&self, conversation: i64, owner: &str) -> Result<()> {
        let script =
            redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end");
        let mut c = self.conn.clone();
        let _: i64 = script.key(self.key(&format!("lock:conv:{conversation}"))).arg(owner).invoke_async(&mut c).await?;
        Ok(())
    }

    /// True at most once per `ttl_secs` for `name` (e.g. one "slow down" reply per sender).
    pub async fn once_per(&self, name: &str, ttl_secs: u64) -> Result<bool> {
        let mut c = self.conn.clone();
        let r: Option<String> =
            redis::cmd("SET").arg(self.key(&format!("once:{name}"))).arg(1).arg("NX").arg("EX").arg(ttl_secs).query_async(&mut c).await?;
        Ok(r.is_some())
    }

    /// Counts a user as active today and this month for a tenant (HyperLogLog, one key per tenant
    /// per day and per month, kept 40 days). Returns whether the user was new this month (as far
    /// as the sketch can tell) and the tenant's monthly active users.
    pub async fn count_active_user(&self, tenant_id: i64, user: &str) -> Result<(bool, u64)> {
        let now = chrono::Utc::now();
        let key = keys::active(&self.cfg.key_prefix, "mau", tenant_id, &now.format("%Y-%m").to_string());
        let day = keys::active(&self.cfg.key_prefix, "dau", tenant_id, &now.format("%Y-%m-%d").to_string());
        let mut c = self.conn.clone();
        let (added, count): (i64, u64) = redis::pipe()
            .cmd("PFADD")
            .arg(&key)
            .arg(user)
            .cmd("PFCOUNT")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(40 * 24 * 3600)
            .ignore()
            .cmd("PFADD")
            .arg(&day)
            .arg(user)
            .ignore()
            .cmd("EXPIRE")
            .arg(&day)
            .arg(40 * 24 * 3600)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok((added == 1, count))
    }

    /// Distinct active users of `tenants` over the days `days` (`YYYY-MM-DD`), from the daily
    /// sketches (their union).
    pub async fn active_users(&self, tenants: &[i64], days: &[String]) -> Result<u64> {
        let keys: Vec<String> =
            tenants.iter().flat_map(|t| days.iter().map(move |d| keys::active(&self.cfg.key_prefix, "dau", *t, d))).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        Ok(redis::cmd("PFCOUNT").arg(&keys).query_async(&mut c).await?)
    }

    /// Monthly active users of `tenants` in `month` (`YYYY-MM`, the union of their sketches).
    pub async fn monthly_active_users_of(&self, tenants: &[i64], month: &str) -> Result<u64> {
        let keys: Vec<String> = tenants.iter().map(|t| keys::active(&self.cfg.key_prefix, "mau", *t, month)).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        Ok(redis::cmd("PFCOUNT").arg(&keys).query_async(&mut c).await?)
    }

    /// Removes what Redis holds about one platform user: the entries of the turn and dead-letter
    /// streams that carry their messages or receipts, and the keys named after them — dedup keys
    /// of their messages (`message_ids`, plus those of the entries found), locks and policy-notice
    /// flags of their `conversations`, slow-down flags in `tenants`. The active-user sketches keep
    /// no identifier and are left alone.
    pub async fn forget_user(
        &self,
        platform: &str,
        user: &str,
        conversations: &[i64],
        message_ids: &[String],
        tenants: &[i64],
    ) -> Result<Forgotten> {
        let mut c = self.conn.clone();
        let mut forgotten = Forgotten::default();
        let mut mids: Vec<String> = message_ids.to_vec();
        let streams = self.streams.iter().map(|s| (s.clone(), true)).chain([(self.dead.clone(), false)]);
        for (stream, acked) in streams {
            let mut from = "-".to_string();
            loop {
                let page: redis::streams::StreamRangeReply =
                    redis::cmd("XRANGE").arg(&stream).arg(&from).arg("+").arg("COUNT").arg(1000).query_async(&mut c).await?;
                let Some(last) = page.ids.last() else { break };
                from = format!("({}", last.id);
                let mut gone = Vec::new();
                for e in &page.ids {
                    let data: Option<String> = e.get("data");
                    let Some(entry) = data.and_then(|d| serde_json::from_str::<Entry>(&d).ok()) else { continue };
                    match &entry.job {
                        Job::Message { message, .. } if message.platform.as_str() == platform && message.sender == user => {
                            mids.push(message.platform_message_id.clone());
                            gone.push(e.id.clone());
                        }
                        Job::Status { status, .. } if status.platform.as_str() == platform && status.recipient.as_deref() == Some(user) => {
                            gone.push(e.id.clone());
                        }
                        _ => {}
                    }
                }
                if !gone.is_empty() {
                    if acked {
                        let _: i64 = redis::cmd("XACK").arg(&stream).arg(&self.cfg.group).arg(&gone).query_async(&mut c).await?;
                    }
                    forgotten.stream_entries += redis::cmd("XDEL").arg(&stream).arg(&gone).query_async::<u64>(&mut c).await?;
                }
            }
        }
        // A message's dedup key is in its conversation's partition, which its id alone does not
        // tell: each partition's is removed (DEL of a missing key is harmless).
        let mut keys: Vec<String> =
            mids.iter().flat_map(|m| (0..self.partitions()).map(move |p| keys::seen(&self.cfg.key_prefix, p, platform, m))).collect();
        for conv in conversations {
            keys.push(self.key(&format!("lock:conv:{conv}")));
            keys.push(self.key(&format!("once:policy-notice:{conv}")));
        }
        keys.extend(tenants.iter().map(|t| self.key(&format!("once:slowdown:{t}:{platform}:{user}"))));
        keys.sort();
        keys.dedup();
        for chunk in keys.chunks(500) {
            forgotten.keys += redis::cmd("DEL").arg(chunk).query_async::<u64>(&mut c).await?;
        }
        Ok(forgotten)
    }

    /// The tenant's monthly active users of `month` (`YYYY-MM`).
    pub async fn monthly_active_users(&self, tenant_id: i64, month: &str) -> Result<u64> {
        self.monthly_active_users_of(&[tenant_id], month).await
    }

    /// The turn streams' length, their entries read but not acknowledged, and the consumer
    /// groups' lag (entries not yet read; `None` when Redis cannot tell), over all partitions.
    pub async fn stream_stats(&self) -> Result<(u64, u64, Option<u64>)> {
        let (mut len, mut pending, mut lag) = (0, 0, Some(0));
        for p in 0..self.partitions() {
            let (l, n, g) = self.partition_stats(p).await?;
            len += l;
            pending += n;
            lag = lag.zip(g).map(|(a, b)| a + b);
        }
        Ok((len, pending, lag))
    }

    async fn partition_stats(&self, p: u32) -> Result<(u64, u64, Option<u64>)> {
        let mut c = self.conn.clone();
        let len: u64 = redis::cmd("XLEN").arg(self.stream(p)).query_async(&mut c).await?;
        let pending = self.pending_in(p).await?;
        let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg(self.stream(p)).query_async(&mut c).await?;
        let mut lag = None;
        if let redis::Value::Array(groups) = groups {
            for g in groups {
                let fields: Vec<(String, redis::Value)> = match g {
                    redis::Value::Array(kv) => kv
                        .chunks(2)
                        .filter_map(|p| Some((redis::from_redis_value::<String>(p.first()?.clone()).ok()?, p.get(1)?.clone())))
                        .collect(),
                    redis::Value::Map(kv) => {
                        kv.into_iter().filter_map(|(k, v)| Some((redis::from_redis_value::<String>(k).ok()?, v))).collect()
                    }
                    _ => continue,
                };
                let name = fields.iter().find(|(k, _)| k == "name").and_then(|(_, v)| redis::from_redis_value::<String>(v.clone()).ok());
                if name.as_deref() == Some(self.cfg.group.as_str()) {
                    lag = fields.iter().find(|(k, _)| k == "lag").and_then(|(_, v)| redis::from_redis_value::<u64>(v.clone()).ok());
                }
            }
        }
        Ok((len, pending, lag))
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Entries read but not yet acknowledged, over all partitions.
    pub async fn pending_count(&self) -> Result<u64> {
        let mut n = 0;
        for p in 0..self.partitions() {
            n += self.pending_in(p).await?;
        }
        Ok(n)
    }

    async fn pending_in(&self, p: u32) -> Result<u64> {
        let mut c = self.conn.clone();
        let v: redis::Value = redis::cmd("XPENDING").arg(self.stream(p)).arg(&self.cfg.group).query_async(&mut c).await?;
        Ok(match v {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        })
    }
}
