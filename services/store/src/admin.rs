//! What the admin API reads and changes: API keys, tenants' policy settings, channels, policy pack
//! versions and activations, the audit log, expert usage, and deleting one user's data.
//!
//! Every change goes through a transaction that also writes its audit row ([`Audit`]), so a change
//! is never stored without its audit entry (nor the other way round).

use crate::{Result, Store};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, Row, Transaction};

/// A query text built from constant pieces of this file (never from input).
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

/// Who made a change.
#[derive(Clone, Debug)]
pub struct Actor {
    pub key_id: Option<i64>,
    pub name: String,
}

/// A stored API key (its hash only).
#[derive(Clone, Debug, Serialize)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A tenant with its policy settings.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TenantRow {
    pub id: i64,
    pub name: String,
    pub principal_place_of_business: String,
    pub default_country: Option<String>,
    pub packs: Vec<String>,
    pub overrides: std::collections::BTreeMap<String, String>,
    pub meta_license_granted: bool,
    pub mau_attested_at: Option<chrono::DateTime<chrono::Utc>>,
    pub mau_attested_by: Option<String>,
    pub multimodal: bool,
    /// `builtin`, `guard` or `builtin_then_guard`; unset: the guard model when one is loaded.
    pub moderation: Option<String>,
    pub managed_by: String,
}

/// A tenant's settings as written (no id, no bookkeeping).
#[derive(Clone, Debug)]
pub struct TenantFields {
    pub name: String,
    pub principal_place_of_business: String,
    pub default_country: Option<String>,
    pub packs: Vec<String>,
    pub overrides: std::collections::BTreeMap<String, String>,
    pub meta_license_granted: bool,
    /// Attest now that the tenant is under the MAU threshold (or holds Meta's license).
    pub attest_mau: bool,
    pub multimodal: bool,
    pub moderation: Option<String>,
}

/// A channel with its secrets masked.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChannelView {
    pub id: i64,
    pub tenant_id: i64,
    pub platform: String,
    pub external_id: String,
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
}

/// Shows the last four characters of a secret at most.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 8 {
        return "****".into();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("****{tail}")
}

/// A channel's fields as written; `None` secrets keep their stored value on update.
#[derive(Clone, Debug, Default)]
pub struct ChannelFields {
    pub platform: String,
    pub external_id: String,
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
    pub access_token: Option<String>,
}

/// One version of a policy pack.
#[derive(Clone, Debug, Serialize)]
pub struct PackVersion {
    pub name: String,
    pub version: i32,
    pub created_by: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub active: bool,
}

/// One audit row.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_key_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Filters of the audit query.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_key_id: Option<i64>,
    pub action: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: i64,
}

/// Rows deleted for one user, per table.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Deleted {
    pub users: i64,
    pub conversations: i64,
    pub messages: i64,
    pub outbox: i64,
    pub deliveries: i64,
    pub policy_decisions: i64,
}

/// What an erasure found besides the rows it deleted: the names under which the user's data
/// lives in Redis (for [`herd_queue::Queue::forget_user`]-style clean-up).
#[derive(Clone, Debug, Default)]
pub struct Erased {
    pub deleted: Deleted,
    /// The user's conversations (lock and policy-notice keys are named by them).
    pub conversations: Vec<i64>,
    /// The platform ids of the user's messages (dedup keys are named by them).
    pub message_ids: Vec<String>,
    /// The tenants the user was erased from (slow-down keys are named by them).
    pub tenants: Vec<i64>,
}

/// Writes an audit row in `tx`.
pub async fn audit(
    tx: &mut Transaction<'_, Postgres>,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor_key_id, actor, action, target_type, target_id, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(actor.key_id)
    .bind(&actor.name)
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(before)
    .bind(after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const TENANT_COLS: &str = "id, name, principal_place_of_business, default_country, packs, overrides, meta_license_granted,
    mau_attested_at, mau_attested_by, multimodal, moderation, managed_by";

fn tenant_row(r: &sqlx::postgres::PgRow) -> TenantRow {
    let packs: Value = r.get("packs");
    let overrides: Value = r.get("overrides");
    TenantRow {
        id: r.get("id"),
        name: r.get("name"),
        principal_place_of_business: r.get("principal_place_of_business"),
        default_country: r.get("default_country"),
        packs: serde_json::from_value(packs).unwrap_or_default(),
        overrides: serde_json::from_value(overrides).unwrap_or_default(),
        meta_license_granted: r.get("meta_license_granted"),
        mau_attested_at: r.get("mau_attested_at"),
        mau_attested_by: r.get("mau_attested_by"),
        multimodal: r.get("multimodal"),
        moderation: r.get("moderation"),
        managed_by: r.get("managed_by"),
    }
}

fn channel_view(r: &sqlx::postgres::PgRow) -> ChannelView {
    ChannelView {
        id: r.get("id"),
        tenant_id: r.get("tenant_id"),
        platform: r.get("platform"),
        external_id: r.get("external_id"),
        app_secret: mask(r.get("app_secret")),
        verify_token: mask(r.get("verify_token")),
        access_token: mask(r.get("access_token")),
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds a tenant's fields in the order both the `INSERT` and the `UPDATE` number them (after
/// any leading parameters): name, place of business, country, packs, overrides, licence, attest
/// flag, attesting actor, multimodal, moderation.
fn bind_tenant<'q>(q: PgQuery<'q>, t: &'q TenantFields, actor: &'q Actor) -> PgQuery<'q> {
    q.bind(&t.name)
        .bind(&t.principal_place_of_business)
        .bind(&t.default_country)
        .bind(json(&t.packs))
        .bind(json(&t.overrides))
        .bind(t.meta_license_granted)
        .bind(t.attest_mau)
        .bind(&actor.name)
        .bind(t.multimodal)
        .bind(&t.moderation)
}

fn json<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

impl Store {
    // ---- API keys

    /// Stores a key's hash; returns its id.
    pub async fn insert_api_key(&self, actor: &Actor, name: &str, role: &str, prefix: &str, hash: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO api_keys (name, role, prefix, key_hash) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(role)
            .bind(prefix)
            .bind(hash)
            .fetch_one(&mut *tx)
            .await?;
        let after = serde_json::json!({ "id": id, "name": name, "role": role, "prefix": prefix });
        audit(&mut tx, actor, "create", "api_key", &id.to_string(), None, Some(after)).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The live key with this hash: `(id, name, role)`.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<(i64, String, String)>> {
        Ok(sqlx::query_as("SELECT id, name, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every key (hashes not included).
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows =
            sqlx::query("SELECT id, name, role, prefix, created_at, revoked_at FROM api_keys ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| ApiKey {
                id: r.get("id"),
                name: r.get("name"),
                role: r.get("role"),
                prefix: r.get("prefix"),
                created_at: r.get("created_at"),
                revoked_at: r.get("revoked_at"),
            })
            .collect())
    }

    /// Revokes a key; false when there is no such live key.
    pub async fn revoke_api_key(&self, actor: &Actor, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n =
            sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL").bind(id).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        audit(&mut tx, actor, "revoke", "api_key", &id.to_string(), None, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- tenants

    /// Every tenant with its policy settings.
    pub async fn tenant_rows(&self) -> Result<Vec<TenantRow>> {
        let rows = sqlx::query(sql!("SELECT {TENANT_COLS} FROM tenants ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(tenant_row).collect())
    }

    /// One tenant.
    pub async fn tenant_row(&self, id: i64) -> Result<Option<TenantRow>> {
        let row = sqlx::query(sql!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(tenant_row))
    }

    /// Creates a tenant (admin-managed); `Ok(None)` when the name is taken.
    pub async fn create_tenant(&self, actor: &Actor, t: &TenantFields) -> Result<Option<TenantRow>> {
        let mut tx = self.pool.begin().await?;
        let q = sqlx::query(sql!(
            "INSERT INTO tenants (name, principal_place_of_business, default_country, packs, overrides, meta_license_granted,
               mau_attested_at, mau_attested_by, multimodal, moderation, managed_by)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END, CASE WHEN $7 THEN $8 END, $9, $10, 'admin')
             ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLS}"
        ));
        let row = bind_tenant(q, t, actor).fetch_optional(&mut *tx).await?;
        let Some(row) = row.as_ref().map(tenant_row) else { return Ok(None) };
        audit(&mut tx, actor, "create", "tenant", &row.id.to_string(), None, json(&row)).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Replaces a tenant's settings; `Ok(None)` when there is no such tenant.
    pub async fn update_tenant(&self, actor: &Actor, id: i64, t: &TenantFields) -> Result<Option<TenantRow>> {
        let mut tx = self.pool.begin().await?;
        let before =
            sqlx::query(sql!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(&mut *tx).await?;
        let Some(before) = before.as_ref().map(tenant_row) else { return Ok(None) };
        let q = sqlx::query(sql!(
            "UPDATE tenants SET name = $2, principal_place_of_business = $3, default_country = $4, packs = $5, overrides = $6,
               meta_license_granted = $7,
               mau_attested_at = CASE WHEN $8 THEN now() ELSE mau_attested_at END,
               mau_attested_by = CASE WHEN $8 THEN $9 ELSE mau_attested_by END,
               multimodal = $10, moderation = $11, managed_by = 'admin', updated_at = now()
             WHERE id = $1 RETURNING {TENANT_COLS}"
        ))
        .bind(id);
        let row = bind_tenant(q, t, actor).fetch_one(&mut *tx).await?;
        let row = tenant_row(&row);
        audit(&mut tx, actor, "update", "tenant", &id.to_string(), json(&before), json(&row)).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Deletes a tenant and everything of it; false when there is no such tenant.
    pub async fn delete_tenant(&self, actor: &Actor, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let before =
            sqlx::query(sql!("DELETE FROM tenants WHERE id = $1 RETURNING {TENANT_COLS}")).bind(id).fetch_optional(&mut *tx).await?;
        let Some(before) = before.as_ref().map(tenant_row) else { return Ok(false) };
        // Its messages are gone from every day: roll them all up again.
        sqlx::query("DELETE FROM rollup_days").execute(&mut *tx).await?;
        audit(&mut tx, actor, "delete", "tenant", &id.to_string(), json(&before), None).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- channels

    /// Channels (secrets masked), of one tenant or all.
    pub async fn channel_views(&self, tenant_id: Option<i64>) -> Result<Vec<ChannelView>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, platform, external_id, app_secret, verify_token, access_token FROM channels
             WHERE $1::BIGINT IS NULL OR tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(channel_view).collect())
    }

    /// Creates a channel of a tenant (all secrets required); `Ok(None)` when the platform id is
    /// taken or the tenant does not exist.
    pub async fn create_channel(&self, actor: &Actor, tenant_id: i64, c: &ChannelFields) -> Result<Option<ChannelView>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO channels (tenant_id, platform, external_id, app_secret, verify_token, access_token)
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)
             ON CONFLICT (platform, external_id) DO NOTHING
             RETURNING id, tenant_id, platform, external_id, app_secret, verify_token, access_token",
        )
        .bind(tenant_id)
        .bind(&c.platform)
        .bind(&c.external_id)
        .bind(c.app_secret.as_deref().unwrap_or_default())
        .bind(c.verify_token.as_deref().unwrap_or_default())
        .bind(c.access_token.as_deref().unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(view) = row.as_ref().map(channel_view) else { return Ok(None) };
        audit(&mut tx, actor, "create", "channel", &view.id.to_string(), None, json(&view)).await?;
        tx.commit().await?;
        Ok(Some(view))
    }

    /// Updates a channel; secrets left `None` keep their value.
    pub async fn update_channel(&self, actor: &Actor, id: i64, c: &ChannelFields) -> Result<Option<ChannelView>> {
        let mut tx = self.pool.begin().await?;
        let cols = "id, tenant_id, platform, external_id, app_secret, verify_token, access_token";
        let before = sqlx::query(sql!("SELECT {cols} FROM channels WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(&mut *tx).await?;
        let Some(before) = before.as_ref().map(channel_view) else { return Ok(None) };
        let row = sqlx::query(sql!(
            "UPDATE channels SET platform = $2, external_id = $3, app_secret = COALESCE($4, app_secret),
               verify_token = COALESCE($5, verify_token), access_token = COALESCE($6, access_token)
             WHERE id = $1 RETURNING {cols}"
        ))
        .bind(id)
        .bind(&c.platform)
        .bind(&c.external_id)
        .bind(&c.app_secret)
        .bind(&c.verify_token)
        .bind(&c.access_token)
        .fetch_one(&mut *tx)
        .await?;
        let view = channel_view(&row);
        audit(&mut tx, actor, "update", "channel", &id.to_string(), json(&before), json(&view)).await?;
        tx.commit().await?;
        Ok(Some(view))
    }

    /// Deletes a channel and its conversations; false when there is no such channel.
    pub async fn delete_channel(&self, actor: &Actor, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "DELETE FROM channels WHERE id = $1 RETURNING id, tenant_id, platform, external_id, app_secret, verify_token, access_token",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = row.as_ref().map(channel_view) else { return Ok(false) };
        sqlx::query("DELETE FROM rollup_days").execute(&mut *tx).await?;
        audit(&mut tx, actor, "delete", "channel", &id.to_string(), json(&before), None).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- policy packs

    /// Every stored version, newest first per pack, with whether it is active.
    pub async fn pack_versions(&self, name: Option<&str>) -> Result<Vec<PackVersion>> {
        let rows = sqlx::query(
            "SELECT v.name, v.version, v.created_by, v.created_at,
                    v.version = (SELECT a.version FROM policy_pack_activations a WHERE a.name = v.name ORDER BY a.id DESC LIMIT 1) AS active
             FROM policy_pack_versions v WHERE $1::TEXT IS NULL OR v.name = $1 ORDER BY v.name, v.version DESC",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PackVersion {
                name: r.get("name"),
                version: r.get("version"),
                created_by: r.get("created_by"),
                created_at: r.get("created_at"),
                active: r.get::<Option<bool>, _>("active").unwrap_or(false),
            })
            .collect())
    }

    /// The TOML of one stored version.
    pub async fn pack_source(&self, name: &str, version: i32) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT source FROM policy_pack_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores a new version (validated by the caller); `Ok(false)` when that version exists.
    pub async fn insert_pack_version(&self, actor: &Actor, name: &str, version: i32, source: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "INSERT INTO policy_pack_versions (name, version, source, created_by) VALUES ($1, $2, $3, $4) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(name)
        .bind(version)
        .bind(source)
        .bind(actor.key_id)
        .execute(&mut *tx)
        .await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        let after = serde_json::json!({ "name": name, "version": version, "bytes": source.len() });
        audit(&mut tx, actor, "upload", "policy_pack", name, None, Some(after)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a pack version from the packs herd runs with (shipped or `policies.packs_dir`) if
    /// absent, without an audit row, and activates it unless an admin chose the active version.
    pub async fn seed_pack_version(&self, name: &str, version: i32, source: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herd-pack:' || $1))").bind(name).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO policy_pack_versions (name, version, source) VALUES ($1, $2, $3) ON CONFLICT (name, version) DO NOTHING")
            .bind(name)
            .bind(version)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        let latest: Option<(i32, Option<i64>)> =
            sqlx::query_as("SELECT version, activated_by FROM policy_pack_activations WHERE name = $1 ORDER BY id DESC LIMIT 1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let activate = match latest {
            None => true,
            Some((v, by)) => by.is_none() && v != version,
        };
        if activate {
            sqlx::query("INSERT INTO policy_pack_activations (name, version) VALUES ($1, $2)")
                .bind(name)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The active version of a pack.
    pub async fn active_pack_version(&self, name: &str) -> Result<Option<i32>> {
        Ok(sqlx::query_scalar("SELECT version FROM policy_pack_activations WHERE name = $1 ORDER BY id DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Makes `version` the active one; `action` is `activate` or `rollback` for the audit log.
    /// `Ok(false)` when the version is not stored.
    pub async fn activate_pack(&self, actor: &Actor, name: &str, version: i32, action: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // One activation at a time per pack.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herd-pack:' || $1))").bind(name).execute(&mut *tx).await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT version FROM policy_pack_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        let before: Option<i32> =
            sqlx::query_scalar("SELECT version FROM policy_pack_activations WHERE name = $1 ORDER BY id DESC LIMIT 1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("INSERT INTO policy_pack_activations (name, version, activated_by) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(version)
            .bind(actor.key_id)
            .execute(&mut *tx)
            .await?;
        let b = before.map(|v| serde_json::json!({ "name": name, "version": v }));
        let a = serde_json::json!({ "name": name, "version": version });
        audit(&mut tx, actor, action, "policy_pack", name, b, Some(a)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The version active before the current one (by activation history, skipping repeats of the
    /// current version).
    pub async fn previous_pack_version(&self, name: &str) -> Result<Option<i32>> {
        Ok(sqlx::query_scalar(
            "WITH cur AS (SELECT version FROM policy_pack_activations WHERE name = $1 ORDER BY id DESC LIMIT 1)
             SELECT a.version FROM policy_pack_activations a, cur WHERE a.name = $1 AND a.version <> cur.version
             ORDER BY a.id DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The active version's TOML of every pack with an activation: `(name, version, source)`.
    pub async fn active_pack_sources(&self) -> Result<Vec<(String, i32, String)>> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT ON (a.name) a.name, a.version, v.source FROM policy_pack_activations a
             JOIN policy_pack_versions v ON v.name = a.name AND v.version = a.version ORDER BY a.name, a.id DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Changes whenever an activation or a tenant's settings change (workers poll it to reload).
    pub async fn policy_generation(&self) -> Result<String> {
        let g: Option<String> = sqlx::query_scalar(
            "SELECT (SELECT COALESCE(max(id), 0) FROM policy_pack_activations)::TEXT || ':' ||
                    (SELECT COALESCE(max(extract(epoch FROM updated_at)), 0) FROM tenants)::TEXT || ':' ||
                    (SELECT count(*) FROM tenants)::TEXT",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(g.unwrap_or_default())
    }

    // ---- audit

    /// Audit rows, newest first.
    pub async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, actor_key_id, actor, action, target_type, target_id, before, after, created_at FROM audit_log
             WHERE ($1::TEXT IS NULL OR target_type = $1) AND ($2::TEXT IS NULL OR target_id = $2)
               AND ($3::BIGINT IS NULL OR actor_key_id = $3) AND ($4::TEXT IS NULL OR action = $4)
               AND ($5::TIMESTAMPTZ IS NULL OR created_at >= $5) AND ($6::TIMESTAMPTZ IS NULL OR created_at < $6)
             ORDER BY id DESC LIMIT $7",
        )
        .bind(&f.target_type)
        .bind(&f.target_id)
        .bind(f.actor_key_id)
        .bind(&f.action)
        .bind(f.since)
        .bind(f.until)
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get("id"),
                actor_key_id: r.get("actor_key_id"),
                actor: r.get("actor"),
                action: r.get("action"),
                target_type: r.get("target_type"),
                target_id: r.get("target_id"),
                before: r.get("before"),
                after: r.get("after"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    // ---- expert usage

    /// Adds tokens routed per `(layer, expert)` to today's counts.
    pub async fn add_expert_usage(&self, counts: &[(i32, i32, i64)]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let (layers, experts, tokens): (Vec<i32>, Vec<i32>, Vec<i64>) =
            counts.iter().fold((vec![], vec![], vec![]), |mut acc, (l, e, t)| {
                acc.0.push(*l);
                acc.1.push(*e);
                acc.2.push(*t);
                acc
            });
        sqlx::query(
            "INSERT INTO expert_usage (day, layer, expert, tokens)
             SELECT (now() AT TIME ZONE 'UTC')::date, l, e, t FROM UNNEST($1::INT[], $2::INT[], $3::BIGINT[]) AS u(l, e, t)
             ON CONFLICT (day, layer, expert) DO UPDATE SET tokens = expert_usage.tokens + EXCLUDED.tokens",
        )
        .bind(&layers)
        .bind(&experts)
        .bind(&tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- privacy

    /// Deletes everything stored about one platform user of a tenant (every tenant when `None`):
    /// the user, their conversations, messages (both directions), reply outbox, delivery
    /// receipts and policy decisions; and records the erasure, so that turns of theirs in flight
    /// never write again (see `erasures`). Returns what was deleted and where else to look.
    pub async fn delete_user_data(&self, actor: &Actor, tenant_id: Option<i64>, platform: &str, external_id: &str) -> Result<Erased> {
        let mut tx = self.pool.begin().await?;
        // One erasure or recording of this user at a time (see `record_inbound`).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || ':' || $2))").bind(platform).bind(external_id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO erasures (tenant_id, platform, user_hash) VALUES ($1, $2, encode(sha256(convert_to($2 || ':' || $3, 'UTF8')), 'hex'))",
        )
        .bind(tenant_id)
        .bind(platform)
        .bind(external_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM erasures WHERE erased_at < now() - interval '8 days'").execute(&mut *tx).await?;
        let tenants = sqlx::query_scalar(match tenant_id {
            Some(_) => "SELECT id FROM tenants WHERE id = $1",
            None => "SELECT id FROM tenants WHERE $1::BIGINT IS NULL",
        })
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut erased = Erased { tenants, ..Default::default() };
        let users: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM users WHERE platform = $1 AND external_id = $2 AND ($3::BIGINT IS NULL OR tenant_id = $3) FOR UPDATE",
        )
        .bind(platform)
        .bind(external_id)
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut d = Deleted { users: users.len() as i64, ..Default::default() };
        if !users.is_empty() {
            let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(&users);
            let convs = "SELECT id FROM conversations WHERE user_id = ANY($1)";
            let msgs = format!("SELECT id FROM messages WHERE conversation_id IN ({convs})");
            erased.conversations = sqlx::query_scalar(convs).bind(&users).fetch_all(&mut *tx).await?;
            erased.message_ids = sqlx::query_scalar(sql!(
                "SELECT platform_message_id FROM messages WHERE conversation_id IN ({convs}) AND direction = 'in' AND platform_message_id IS NOT NULL"
            ))
            .bind(&users)
            .fetch_all(&mut *tx)
            .await?;
            // The days this user appears in are rolled up again (their rollups count them).
            sqlx::query(sql!(
                "DELETE FROM rollup_days WHERE day IN (
                   SELECT (created_at AT TIME ZONE 'UTC')::date FROM messages WHERE conversation_id IN ({convs})
                   UNION SELECT (created_at AT TIME ZONE 'UTC')::date FROM policy_decisions WHERE conversation_id IN ({convs}))"
            ))
            .bind(&users)
            .execute(&mut *tx)
            .await?;
            d.conversations = count("SELECT count(*) FROM conversations WHERE user_id = ANY($1)").fetch_one(&mut *tx).await?;
            d.messages = sqlx::query_scalar(sql!("SELECT count(*) FROM ({msgs}) m")).bind(&users).fetch_one(&mut *tx).await?;
            d.outbox = sqlx::query_scalar(sql!("SELECT count(*) FROM outbox WHERE inbound_id IN ({msgs})"))
                .bind(&users)
                .fetch_one(&mut *tx)
                .await?;
            // Receipts point at herd's messages; delete them explicitly (not only by cascade) so
            // receipts that arrived before their message id was linked go too.
            d.deliveries = sqlx::query_scalar::<_, i64>(sql!(
                "WITH gone AS (DELETE FROM deliveries WHERE message_id IN ({msgs}) OR platform_message_id IN
                   (SELECT platform_message_id FROM messages WHERE conversation_id IN ({convs}) AND direction = 'out' AND platform_message_id IS NOT NULL)
                 RETURNING 1) SELECT count(*) FROM gone"
            ))
            .bind(&users)
            .fetch_one(&mut *tx)
            .await?;
            d.policy_decisions = sqlx::query_scalar::<_, i64>(sql!(
                "WITH gone AS (DELETE FROM policy_decisions WHERE conversation_id IN ({convs}) OR message_id IN ({msgs}) RETURNING 1)
                 SELECT count(*) FROM gone"
            ))
            .bind(&users)
            .fetch_one(&mut *tx)
            .await?;
            // Conversations, messages and the outbox go with the user (ON DELETE CASCADE).
            sqlx::query("DELETE FROM users WHERE id = ANY($1)").bind(&users).execute(&mut *tx).await?;
        }
        // The audit row must not keep the id it erased: it names the user by a hash.
        let target: String = sqlx::query_scalar("SELECT 'sha256:' || encode(sha256(convert_to($1 || ':' || $2, 'UTF8')), 'hex')")
            .bind(platform)
            .bind(external_id)
            .fetch_one(&mut *tx)
            .await?;
        audit(&mut tx, actor, "delete_user_data", "user", &target, None, json(&d)).await?;
        tx.commit().await?;
        erased.deleted = d;
        Ok(erased)
    }
}
