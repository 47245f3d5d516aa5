//! herd-store: PostgreSQL access (sqlx) for tenants, channels, users, conversations, messages,
//! the reply outbox and deliveries. Migrations in `migrations/` are embedded and applied by
//! [`Store::migrate`].

pub mod admin;

use herd_core::settings::TenantSeed;
use herd_core::{DeliveryState, InboundMessage, MessageStatus, OutboxState, Platform, StatusUpdate};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The user's data was erased after this message was sent or accepted: it is not recorded.
    #[error("the sender's data was erased (privacy request) after this message arrived")]
    Erased,
    /// A newer worker took the conversation over (see [`Fence`]): this one must stop writing.
    #[error("conversation {conversation}: fencing token {token} is stale (another worker took it over)")]
    Fenced { conversation: i64, token: i64 },
    /// A stored state that herd does not know (a CHECK constraint should have refused it).
    #[error("{column} holds {value:?}, which is not a state herd knows")]
    State { column: &'static str, value: String },
}

impl Error {
    /// A write referred to a row that is gone (a foreign key violation): the conversation or
    /// message it belongs to was deleted meanwhile, e.g. by an erasure.
    pub fn refers_to_deleted_rows(&self) -> bool {
        matches!(self, Error::Db(sqlx::Error::Database(d)) if d.is_foreign_key_violation())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A channel as stored.
#[derive(Clone, Debug)]
pub struct Channel {
    pub id: i64,
    pub tenant_id: i64,
    pub platform: Platform,
    pub external_id: String,
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
}

/// An inbound message waiting for (or given) a reply.
#[derive(Clone, Debug)]
pub struct InboundRow {
    pub id: i64,
    pub conversation_id: i64,
    pub platform_message_id: String,
    pub body: String,
    pub kind: String,
    pub status: MessageStatus,
}

/// One turn of a conversation's history, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub inbound: bool,
    pub body: String,
}

/// Measurements recorded with an outbound message.
#[derive(Clone, Debug, Default)]
pub struct ReplyMetrics {
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub queue_wait_ms: i32,
    pub ttft_ms: i32,
    pub generation_ms: i32,
    pub send_ms: i32,
    pub end_to_end_ms: i32,
    /// How the reply was made (standard, balanced, balanced_regenerated, policy_message,
    /// slow_down).
    pub prompt_mode: Option<String>,
    /// The model generated for it: tokens, time to first token and generation time are stored
    /// (otherwise they are NULL and stay out of the model and latency analytics).
    pub generated: bool,
}

/// One policy rule that matched, for the audit trail.
#[derive(Clone, Debug)]
pub struct DecisionRecord {
    pub stage: &'static str,
    pub pack: String,
    pub pack_version: i32,
    pub rule: String,
    pub category: Option<String>,
    pub action: String,
    pub shadow: bool,
    pub country: Option<String>,
    pub classifier: String,
}

/// The right to write a conversation's replies: the token the lock holder took
/// ([`Store::take_fence`]). Writes under a token that is no longer the newest fail with
/// [`Error::Fenced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub conversation: i64,
    pub token: i64,
}

/// A reply in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub state: OutboxState,
    pub reply: String,
    pub attempts: i32,
    /// Milliseconds since its first try began (the retry window runs from then).
    pub age_ms: i64,
    /// Pieces of it the platform accepted (recorded as outbound messages).
    pub parts_sent: i64,
}

/// Handle to the database (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

impl Store {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(16).connect(url).await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Creates or updates the configured tenants and channels.
    pub async fn seed(&self, tenants: &[TenantSeed]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for t in tenants {
            // The settings file owns a tenant's policy settings until the admin API changes them.
            let tid: i64 = sqlx::query_scalar(
                "INSERT INTO tenants (name, principal_place_of_business, default_country, packs, overrides, meta_license_granted, multimodal, moderation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET
                   principal_place_of_business = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.principal_place_of_business ELSE tenants.principal_place_of_business END,
                   default_country = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.default_country ELSE tenants.default_country END,
                   packs = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.packs ELSE tenants.packs END,
                   overrides = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.overrides ELSE tenants.overrides END,
                   meta_license_granted = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.meta_license_granted ELSE tenants.meta_license_granted END,
                   multimodal = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.multimodal ELSE tenants.multimodal END,
                   moderation = CASE WHEN tenants.managed_by = 'settings' THEN EXCLUDED.moderation ELSE tenants.moderation END
                 RETURNING id",
            )
            .bind(&t.name)
            .bind(&t.principal_place_of_business)
            .bind(&t.default_country)
            .bind(serde_json::to_value(&t.packs).unwrap_or_default())
            .bind(serde_json::to_value(&t.overrides).unwrap_or_default())
            .bind(t.meta_license_granted)
            .bind(t.multimodal)
            .bind(&t.moderation)
            .fetch_one(&mut *tx)
            .await?;
            for c in &t.channels {
                sqlx::query(
                    "INSERT INTO channels (tenant_id, platform, external_id, app_secret, verify_token, access_token)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (platform, external_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,
                       app_secret = EXCLUDED.app_secret, verify_token = EXCLUDED.verify_token,
                       access_token = EXCLUDED.access_token",
                )
                .bind(tid)
                .bind(&c.platform)
                .bind(&c.external_id)
                .bind(&c.app_secret)
                .bind(&c.verify_token)
                .bind(&c.access_token)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        let rows = sqlx::query("SELECT id, tenant_id, platform, external_id, app_secret, verify_token, access_token FROM channels")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Channel {
                    id: r.get("id"),
                    tenant_id: r.get("tenant_id"),
                    platform: Platform::parse(r.get::<&str, _>("platform"))?,
                    external_id: r.get("external_id"),
                    app_secret: r.get("app_secret"),
                    verify_token: r.get("verify_token"),
                    access_token: r.get("access_token"),
                })
            })
            .collect())
    }

    /// Records an inbound message (creating its user and conversation) with `status` and its
    /// position in the turn stream (`ms-seq`); a message already recorded is left as it is.
    /// Returns the row — or [`Error::Erased`] when the sender's data was erased after the message
    /// was sent or accepted (`accepted_at_ms`): nothing of it is written.
    pub async fn record_inbound(
        &self,
        channel: &Channel,
        m: &InboundMessage,
        status: MessageStatus,
        stream_id: &str,
        accepted_at_ms: i64,
    ) -> Result<InboundRow> {
        let (stream_ms, stream_seq) =
            stream_id.split_once('-').and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?))).unwrap_or((i64::MAX, 0));
        let mut tx = self.pool.begin().await?;
        // Serialised with erasures of this user (`delete_user_data` takes the same lock).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || ':' || $2))")
            .bind(m.platform.as_str())
            .bind(&m.sender)
            .execute(&mut *tx)
            .await?;
        let erased: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM erasures WHERE platform = $1 AND user_hash = encode(sha256(convert_to($1 || ':' || $2, 'UTF8')), 'hex')
               AND (tenant_id IS NULL OR tenant_id = $3) AND erased_at >= LEAST(to_timestamp($4 / 1000.0), to_timestamp($5)))",
        )
        .bind(m.platform.as_str())
        .bind(&m.sender)
        .bind(channel.tenant_id)
        .bind(accepted_at_ms as f64)
        .bind(m.timestamp as f64)
        .fetch_one(&mut *tx)
        .await?;
        if erased {
            return Err(Error::Erased);
        }
        let user_id: i64 = sqlx::query_scalar(
            "INSERT INTO users (tenant_id, platform, external_id, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, platform, external_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, users.name)
             RETURNING id",
        )
        .bind(channel.tenant_id)
        .bind(m.platform.as_str())
        .bind(&m.sender)
        .bind(&m.sender_name)
        .fetch_one(&mut *tx)
        .await?;
        let conv_id: i64 = sqlx::query_scalar(
            "INSERT INTO conversations (channel_id, user_id) VALUES ($1, $2)
             ON CONFLICT (channel_id, user_id) DO UPDATE SET last_message_at = now() RETURNING id",
        )
        .bind(channel.id)
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let payload = serde_json::to_value(&m.content).unwrap_or(serde_json::Value::Null);
        let note = (m.removed_nul > 0).then(|| format!("removed {} NUL character(s), which cannot be stored", m.removed_nul));
        sqlx::query(
            "INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, payload, status, platform_ts,
               stream_ms, stream_seq, note)
             VALUES ($1, $2, 'in', $3, $4, $5, $6, $7, to_timestamp($8), $9, $10, $11)
             ON CONFLICT (channel_id, platform_message_id) WHERE direction = 'in' DO NOTHING",
        )
        .bind(conv_id)
        .bind(channel.id)
        .bind(&m.platform_message_id)
        .bind(m.content.kind())
        .bind(m.content.as_prompt_text())
        .bind(payload)
        .bind(status.as_str())
        .bind(m.timestamp as f64)
        .bind(stream_ms)
        .bind(stream_seq)
        .bind(note)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT id, conversation_id, platform_message_id, body, kind, status FROM messages
             WHERE channel_id = $1 AND platform_message_id = $2 AND direction = 'in'",
        )
        .bind(channel.id)
        .bind(&m.platform_message_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        inbound_row(&row)
    }

    /// The oldest inbound message of a conversation still waiting for its reply: by the
    /// platform's timestamp, then by arrival.
    pub async fn oldest_pending(&self, conversation_id: i64) -> Result<Option<InboundRow>> {
        let row = sqlx::query(
            "SELECT id, conversation_id, platform_message_id, body, kind, status FROM messages
             WHERE conversation_id = $1 AND direction = 'in' AND status = 'pending'
             ORDER BY platform_ts, stream_ms, stream_seq, id LIMIT 1",
        )
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(inbound_row).transpose()
    }

    /// Up to `limit` turns of a conversation before and including inbound message `upto`, oldest
    /// first: answered inbound messages and herd's replies (the pieces of a split reply joined).
    pub async fn history(&self, conversation_id: i64, upto: i64, limit: i64) -> Result<Vec<Turn>> {
        let rows = sqlx::query(
            "SELECT direction, body FROM (
               SELECT id, direction, body FROM messages
               WHERE conversation_id = $1 AND id <= $2 AND (
                 (direction = 'in' AND (status = 'answered' OR id = $2)) OR
                 (direction = 'out' AND reply_to IS NOT NULL))
               ORDER BY id DESC LIMIT $3) t ORDER BY id",
        )
        .bind(conversation_id)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut turns: Vec<Turn> = Vec::new();
        for r in rows {
            let inbound = r.get::<&str, _>("direction") == "in";
            let body: String = r.get("body");
            match turns.last_mut() {
                Some(last) if !inbound && !last.inbound => {
                    last.body.push(' ');
                    last.body.push_str(&body);
                }
                _ => turns.push(Turn { inbound, body }),
            }
        }
        Ok(turns)
    }

    /// Checks that PostgreSQL answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The connection pool (analytics queries of the admin service).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sets the country of a conversation's user (once known; for analytics by country).
    pub async fn set_conversation_country(&self, conversation_id: i64, country: &str) -> Result<()> {
        sqlx::query("UPDATE conversations SET country = $2 WHERE id = $1 AND country IS DISTINCT FROM $2")
            .bind(conversation_id)
            .bind(country)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tenants by id: `(id, name)`.
    pub async fn tenants(&self) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as("SELECT id, name FROM tenants").fetch_all(&self.pool).await?)
    }

    /// Records policy decisions about one message.
    pub async fn record_decisions(&self, tenant_id: i64, message_id: i64, conversation_id: i64, records: &[DecisionRecord]) -> Result<()> {
        for r in records {
            sqlx::query(
                "INSERT INTO policy_decisions (message_id, conversation_id, tenant_id, stage, pack, pack_version, rule, category, action, shadow, country, classifier)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(message_id)
            .bind(conversation_id)
            .bind(tenant_id)
            .bind(r.stage)
            .bind(&r.pack)
            .bind(r.pack_version)
            .bind(&r.rule)
            .bind(&r.category)
            .bind(&r.action)
            .bind(r.shadow)
            .bind(&r.country)
            .bind(&r.classifier)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// How many of these inbound platform message ids of a channel are recorded.
    pub async fn recorded_count(&self, channel_id: i64, ids: &[String]) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_id = $1 AND direction = 'in' AND platform_message_id = ANY($2)")
            .bind(channel_id)
            .bind(ids)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The status of a message.
    pub async fn status_of(&self, message_id: i64) -> Result<Option<MessageStatus>> {
        let s: Option<String> =
            sqlx::query_scalar("SELECT status FROM messages WHERE id = $1").bind(message_id).fetch_optional(&self.pool).await?;
        s.map(|s| message_status(&s)).transpose()
    }

    /// Adds `note` to what the record of message `id` says herd did to it.
    pub async fn add_note(&self, id: i64, note: &str) -> Result<()> {
        sqlx::query("UPDATE messages SET note = CASE WHEN note IS NULL THEN $2 ELSE note || '; ' || $2 END WHERE id = $1")
            .bind(id)
            .bind(note)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the next fencing token of a conversation (its lock was just taken).
    pub async fn take_fence(&self, conversation_id: i64) -> Result<Fence> {
        let token: Option<i64> = sqlx::query_scalar("UPDATE conversations SET fence = fence + 1 WHERE id = $1 RETURNING fence")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        let token = token.ok_or(Error::Erased)?;
        Ok(Fence { conversation: conversation_id, token })
    }

    /// Sets an inbound message's status, under `fence`.
    pub async fn set_status(&self, message_id: i64, status: MessageStatus, fence: Fence) -> Result<()> {
        let r = sqlx::query("UPDATE messages SET status = $2 WHERE id = $1 AND (SELECT fence FROM conversations WHERE id = $3) = $4")
            .bind(message_id)
            .bind(status.as_str())
            .bind(fence.conversation)
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        fenced(r.rows_affected(), fence)
    }

    /// The outbox row of an inbound message, if a reply was started.
    pub async fn outbox(&self, inbound_id: i64) -> Result<Option<OutboxRow>> {
        let row = sqlx::query(
            "SELECT state, reply, attempts, (extract(epoch FROM now() - created_at) * 1000)::BIGINT AS age_ms,
               (SELECT count(*) FROM messages WHERE reply_to = $1 AND direction = 'out') AS parts_sent
             FROM outbox WHERE inbound_id = $1",
        )
        .bind(inbound_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let state: String = r.get("state");
            Ok(OutboxRow {
                state: OutboxState::parse(&state).ok_or(Error::State { column: "outbox.state", value: state })?,
                reply: r.get("reply"),
                attempts: r.get("attempts"),
                age_ms: r.get("age_ms"),
                parts_sent: r.get("parts_sent"),
            })
        })
        .transpose()
    }

    /// Starts the reply of an inbound message, under `fence`; false when one was already started
    /// (never send twice).
    pub async fn outbox_begin(&self, inbound_id: i64, reply: &str, fence: Fence) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The row lock on the conversation holds the token still until the reply is in (and an
        // erasure waits for it, or wins and leaves no conversation).
        let current: Option<i64> = sqlx::query_scalar("SELECT fence FROM conversations WHERE id = $1 FOR SHARE")
            .bind(fence.conversation)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else { return Err(Error::Erased) };
        if current != fence.token {
            return Err(Error::Fenced { conversation: fence.conversation, token: fence.token });
        }
        let r = sqlx::query("INSERT INTO outbox (inbound_id, state, reply) VALUES ($1, 'sending', $2) ON CONFLICT DO NOTHING")
            .bind(inbound_id)
            .bind(reply)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Keeps what the platform said when it refused a reply (its code and message), for the
    /// delivery analytics.
    pub async fn outbox_refusal(&self, inbound_id: i64, code: Option<i64>, title: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET error_code = $2, error_title = $3 WHERE inbound_id = $1")
            .bind(inbound_id)
            .bind(code)
            .bind(title)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a started reply between `sending` (a try may be in flight) and `retrying` (the last
    /// try was refused), counting tries.
    pub async fn outbox_progress(&self, inbound_id: i64, state: OutboxState, attempts: i32, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = $2, attempts = $3, last_error = COALESCE($4, last_error), updated_at = now() WHERE inbound_id = $1",
        )
        .bind(inbound_id)
        .bind(state.as_str())
        .bind(attempts)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Settles the records of a message whose stream entry was dead-lettered: still `pending` →
    /// `failed` (noting why), a reply `retrying` → `failed`, `sending` → `unknown`. Nothing is
    /// left waiting for a worker that will never come.
    pub async fn settle_dead_lettered(&self, channel_id: i64, platform_message_id: &str, reason: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET status = 'failed',
               note = CASE WHEN note IS NULL THEN $3 ELSE note || '; ' || $3 END
             WHERE channel_id = $1 AND platform_message_id = $2 AND direction = 'in' AND status = 'pending' RETURNING id",
        )
        .bind(channel_id)
        .bind(platform_message_id)
        .bind(format!("dead-lettered: {reason}"))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            sqlx::query(
                "UPDATE outbox SET state = CASE state WHEN 'sending' THEN 'unknown' ELSE 'failed' END, updated_at = now()
                 WHERE inbound_id = $1 AND state IN ('sending', 'retrying')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends the reply of an inbound message with `state` (sent, failed, expired) and sets the
    /// inbound message's status.
    pub async fn outbox_finish(
        &self,
        inbound_id: i64,
        state: OutboxState,
        attempts: i32,
        error: Option<&str>,
        inbound_status: MessageStatus,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE outbox SET state = $2, attempts = $3, last_error = $4, updated_at = now() WHERE inbound_id = $1")
            .bind(inbound_id)
            .bind(state.as_str())
            .bind(attempts)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE messages SET status = $2 WHERE id = $1")
            .bind(inbound_id)
            .bind(inbound_status.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records one sent piece of a reply and its delivery.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_outbound(
        &self,
        inbound: &InboundRow,
        channel_id: i64,
        part: i32,
        body: &str,
        platform_message_id: Option<&str>,
        metrics: &ReplyMetrics,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, status, reply_to, part,
               tokens_in, tokens_out, queue_wait_ms, ttft_ms, generation_ms, send_ms, end_to_end_ms, prompt_mode)
             VALUES ($1, $2, 'out', $3, 'text', $4, 'sent', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(inbound.conversation_id)
        .bind(channel_id)
        .bind(platform_message_id)
        .bind(body)
        .bind(inbound.id)
        .bind(part)
        .bind(metrics.generated.then_some(metrics.tokens_in))
        .bind(metrics.generated.then_some(metrics.tokens_out))
        .bind(metrics.queue_wait_ms)
        .bind(metrics.generated.then_some(metrics.ttft_ms))
        .bind(metrics.generated.then_some(metrics.generation_ms))
        .bind(metrics.send_ms)
        .bind(metrics.end_to_end_ms)
        .bind(&metrics.prompt_mode)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(pmid) = platform_message_id {
            sqlx::query(
                "INSERT INTO deliveries (platform_message_id, channel_id, message_id, state, state_rank) VALUES ($1, $2, $3, 'accepted', $4)
                 ON CONFLICT (platform_message_id) DO UPDATE SET message_id = EXCLUDED.message_id",
            )
            .bind(pmid)
            .bind(channel_id)
            .bind(id)
            .bind(DeliveryState::Accepted.rank())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Applies a status callback; a state never moves backwards. Returns whether it changed.
    pub async fn apply_status(&self, channel_id: i64, s: &StatusUpdate) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO deliveries (platform_message_id, channel_id, state, state_rank, error_code, error_title, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (platform_message_id) DO UPDATE SET state = EXCLUDED.state, state_rank = EXCLUDED.state_rank,
               error_code = COALESCE(EXCLUDED.error_code, deliveries.error_code),
               error_title = COALESCE(EXCLUDED.error_title, deliveries.error_title), updated_at = now()
             WHERE deliveries.state_rank < EXCLUDED.state_rank",
        )
        .bind(&s.platform_message_id)
        .bind(channel_id)
        .bind(s.state.as_str())
        .bind(s.state.rank())
        .bind(s.error_code)
        .bind(&s.error_title)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            // A receipt for a message of a day whose rollups are final: that day is rolled up
            // again (the newest days are refreshed anyway).
            sqlx::query(
                "DELETE FROM rollup_days WHERE day < (now() AT TIME ZONE 'UTC')::date - 1 AND day = (SELECT (m.created_at AT TIME ZONE 'UTC')::date
                   FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.platform_message_id = $1)",
            )
            .bind(&s.platform_message_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(r.rows_affected() == 1)
    }
}

/// `Ok` when a fenced write changed its row, else [`Error::Fenced`].
fn fenced(rows: u64, fence: Fence) -> Result<()> {
    match rows {
        0 => Err(Error::Fenced { conversation: fence.conversation, token: fence.token }),
        _ => Ok(()),
    }
}

fn message_status(s: &str) -> Result<MessageStatus> {
    MessageStatus::parse(s).ok_or_else(|| Error::State { column: "messages.status", value: s.to_string() })
}

fn inbound_row(r: &sqlx::postgres::PgRow) -> Result<InboundRow> {
    Ok(InboundRow {
        id: r.get("id"),
        conversation_id: r.get("conversation_id"),
        platform_message_id: r.get("platform_message_id"),
        body: r.get("body"),
        kind: r.get("kind"),
        status: message_status(r.get("status"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the migrations allow by constraint `name` (`CONSTRAINT name CHECK (column IN (...))`).
    fn allowed(name: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let sql: String = std::fs::read_dir(&dir)
            .expect("migrations")
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("migration"))
            .collect();
        let at = sql.find(&format!("CONSTRAINT {name}")).unwrap_or_else(|| panic!("no constraint {name}"));
        let rest = &sql[at..];
        let list = &rest[rest.find(" IN (").expect("IN (") + 5..rest.find("))").expect("))")];
        list.split(',').map(|v| v.trim().trim_matches('\'').to_string()).collect()
    }

    #[test]
    fn the_check_constraints_allow_exactly_the_enums_states() {
        let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let status: Vec<&str> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
        let outbox: Vec<&str> = OutboxState::ALL.iter().map(|s| s.as_str()).collect();
        let delivery: Vec<&str> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(allowed("messages_status_check"), names(&status));
        assert_eq!(allowed("outbox_state_check"), names(&outbox));
        assert_eq!(allowed("deliveries_state_check"), names(&delivery));
    }
}
