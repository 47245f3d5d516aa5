//! Daily rollups behind the analytics: every query reads rollup rows, a few thousand for a month,
//! never the messages themselves. Each `*_facts` query groups the raw rows of `[$1, $2)` by day
//! and the finest filter the endpoints offer; it fills the rollup tables one day at a time.
//!
//! - A day without rollups is rolled up when a query first needs it (the request waits).
//! - The [`LIVE_DAYS`] newest days (today and yesterday: new messages, receipts) are rolled up
//!   again in the background when their rollups are older than [`REFRESH_SECS`]: their numbers
//!   are at most that old. A rollup made while its day was live is redone (the request waits)
//!   the first time the day is queried after it closed.
//! - Older days are final; a late change to one (a delivery receipt, a user's data deleted)
//!   deletes its `rollup_days` row, cascading to its rollups, and the next query rolls it up again
//!   (see `herd_store`).

use sqlx::PgPool;

/// Days (today included) whose rollups are refreshed while they may still change.
pub const LIVE_DAYS: u64 = 2;

/// Age after which a live day's rollups are refreshed (in the background).
pub const REFRESH_SECS: i64 = 30;

const DAY: &str = "(m.created_at AT TIME ZONE 'UTC')::date";

/// Messages, conversations and active users per day, tenant, channel and country.
pub fn volume_facts() -> String {
    format!(
        "SELECT {DAY} AS day, ch.tenant_id, m.channel_id, COALESCE(c.country, 'unknown') AS country,
                count(*) FILTER (WHERE m.direction = 'in') AS messages_in,
                count(*) FILTER (WHERE m.direction = 'out') AS messages_out,
                count(DISTINCT m.conversation_id) AS conversations,
                count(DISTINCT c.user_id) FILTER (WHERE m.direction = 'in') AS active_users
         FROM messages m JOIN channels ch ON ch.id = m.channel_id JOIN conversations c ON c.id = m.conversation_id
         WHERE m.created_at >= $1 AND m.created_at < $2 GROUP BY 1, 2, 3, 4"
    )
}

/// The latency metrics of replies (first pieces).
pub const METRICS: [&str; 5] = ["queue_wait_ms", "ttft_ms", "generation_ms", "send_ms", "end_to_end_ms"];

/// Histograms (value buckets, `herd_bucket`) of each latency metric per day, tenant and channel.
pub fn latency_facts() -> String {
    let values = METRICS.iter().map(|m| format!("('{m}', m.{m})")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {DAY} AS day, ch.tenant_id, m.channel_id, x.metric, herd_bucket(x.v) AS bucket, count(*) AS n
         FROM messages m JOIN channels ch ON ch.id = m.channel_id, LATERAL (VALUES {values}) AS x(metric, v)
         WHERE m.created_at >= $1 AND m.created_at < $2 AND m.direction = 'out' AND COALESCE(m.part, 0) = 0 AND x.v IS NOT NULL
         GROUP BY 1, 2, 3, 4, 5"
    )
}

/// Replies, balanced-mode replies and tokens per day, tenant and channel.
pub fn replies_facts() -> String {
    format!(
        "SELECT {DAY} AS day, ch.tenant_id, m.channel_id, count(*) AS replies,
                count(*) FILTER (WHERE m.prompt_mode IN ('balanced', 'balanced_regenerated')) AS balanced,
                COALESCE(sum(m.tokens_in) FILTER (WHERE m.tokens_out IS NOT NULL), 0)::BIGINT AS tokens_in,
                COALESCE(sum(m.tokens_out), 0)::BIGINT AS tokens_out,
                COALESCE(sum(m.generation_ms) FILTER (WHERE m.tokens_out IS NOT NULL), 0)::BIGINT AS generation_ms,
                count(*) FILTER (WHERE m.tokens_out IS NOT NULL) AS measured
         FROM messages m JOIN channels ch ON ch.id = m.channel_id
         WHERE m.created_at >= $1 AND m.created_at < $2 AND m.direction = 'out' AND COALESCE(m.part, 0) = 0 GROUP BY 1, 2, 3"
    )
}

/// Policy decisions per day, tenant, channel, country, rule and outcome.
pub fn policy_facts() -> String {
    "SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day, d.tenant_id, c.channel_id, COALESCE(d.country, 'unknown') AS country,
            d.pack, d.rule, COALESCE(d.category, 'none') AS category, d.action, d.shadow, count(*) AS n
     FROM policy_decisions d LEFT JOIN conversations c ON c.id = d.conversation_id
     WHERE d.created_at >= $1 AND d.created_at < $2 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
        .to_string()
}

/// Delivery states of herd's messages per day sent, tenant, channel and failure; replies the Send
/// API refused (no message id, so no receipts) count as `refused` on the day their reply began.
pub fn delivery_facts() -> String {
    format!(
        "SELECT {DAY} AS day, ch.tenant_id, m.channel_id, d.state, d.error_code, COALESCE(d.error_title, '') AS error_title, count(*) AS n
         FROM deliveries d JOIN messages m ON m.id = d.message_id JOIN channels ch ON ch.id = m.channel_id
         WHERE m.created_at >= $1 AND m.created_at < $2 GROUP BY 1, 2, 3, 4, 5, 6
         UNION ALL
         SELECT (o.created_at AT TIME ZONE 'UTC')::date, ch.tenant_id, m.channel_id, 'refused', o.error_code, COALESCE(o.error_title, ''), count(*)
         FROM outbox o JOIN messages m ON m.id = o.inbound_id JOIN channels ch ON ch.id = m.channel_id
         WHERE o.created_at >= $1 AND o.created_at < $2 AND o.state IN ('failed', 'expired') GROUP BY 1, 2, 3, 4, 5, 6"
    )
}

/// Blocked messages per day, tenant, channel, country and action: a message matched by several
/// blocking rules counts once (under the first of their actions).
pub fn blocks_facts() -> String {
    "SELECT day, tenant_id, channel_id, country, action, count(*) AS messages FROM (
       SELECT DISTINCT ON (d.message_id) (d.created_at AT TIME ZONE 'UTC')::date AS day, d.tenant_id, c.channel_id,
              COALESCE(d.country, 'unknown') AS country, d.action
       FROM policy_decisions d LEFT JOIN conversations c ON c.id = d.conversation_id
       WHERE d.created_at >= $1 AND d.created_at < $2 AND NOT d.shadow AND d.action IN ('blocked_region', 'blocked_feature', 'blocked_license')
       ORDER BY d.message_id, d.action) b
     GROUP BY 1, 2, 3, 4, 5"
        .to_string()
}

/// Who was active (sent a message) each day, per tenant, channel and country: the one source of
/// every active-user count.
pub fn active_facts() -> String {
    format!(
        "SELECT DISTINCT {DAY} AS day, ch.tenant_id, m.channel_id, COALESCE(c.country, 'unknown') AS country, c.user_id
         FROM messages m JOIN channels ch ON ch.id = m.channel_id JOIN conversations c ON c.id = m.conversation_id
         WHERE m.created_at >= $1 AND m.created_at < $2 AND m.direction = 'in'"
    )
}

/// `(rollup table, facts query)` of every rollup.
fn rollups() -> [(&'static str, String); 7] {
    [
        ("rollup_volume", volume_facts()),
        ("rollup_latency", latency_facts()),
        ("rollup_replies", replies_facts()),
        ("rollup_policy", policy_facts()),
        ("rollup_delivery", delivery_facts()),
        ("rollup_blocks", blocks_facts()),
        ("rollup_active", active_facts()),
    ]
}

/// The first day computed live.
pub fn live_from() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() - chrono::Days::new(LIVE_DAYS - 1)
}

fn start_of(day: chrono::NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// Rolls up `day` (again): its old rollups go, new ones come from the raw rows, in one
/// transaction. Returns false when another caller is rolling it up right now.
pub async fn roll_up(pool: &PgPool, day: chrono::NaiveDate, wait: bool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if wait {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herd-rollup:' || $1::text))").bind(day).execute(&mut *tx).await?;
    } else {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('herd-rollup:' || $1::text))")
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
        if !got {
            return Ok(false);
        }
    }
    sqlx::query("DELETE FROM rollup_days WHERE day = $1").bind(day).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO rollup_days (day) VALUES ($1)").bind(day).execute(&mut *tx).await?;
    for (table, facts) in rollups() {
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} {facts}")))
            .bind(start_of(day))
            .bind(start_of(day + chrono::Days::new(1)))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Makes sure every day of `[from, to]` has rollups: missing days are rolled up now, stale live
/// days are refreshed in the background. Returns how many days it rolled up now.
pub async fn ensure(pool: &PgPool, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<usize, sqlx::Error> {
    let today = chrono::Utc::now().date_naive();
    let last = to.min(today);
    if last < from {
        return Ok(0);
    }
    // A rollup made before its day was closed (day + LIVE_DAYS) is provisional: refreshed in the
    // background while the day is live, redone now once the day is closed (its last refresh may
    // have missed the end of the day).
    let rows: Vec<(chrono::NaiveDate, bool)> = sqlx::query_as(
        "WITH days AS (
           SELECT d::date AS day, r.day IS NULL AS missing,
                  r.computed_at < ((d::date + $3::int)::timestamp AT TIME ZONE 'UTC') AS provisional,
                  r.computed_at < now() - make_interval(secs => $4) AS old
           FROM generate_series($1::date, $2::date, interval '1 day') AS d LEFT JOIN rollup_days r ON r.day = d::date)
         SELECT day, missing OR (provisional AND day < $5) FROM days
         WHERE missing OR (provisional AND (day < $5 OR old)) ORDER BY 1",
    )
    .bind(from)
    .bind(last)
    .bind(LIVE_DAYS as i32)
    .bind(REFRESH_SECS as f64)
    .bind(live_from())
    .fetch_all(pool)
    .await?;
    let mut now = 0;
    for (day, now_needed) in rows {
        if now_needed {
            roll_up(pool, day, true).await?;
            now += 1;
        } else {
            let pool = pool.clone();
            tokio::spawn(async move {
                if let Err(e) = roll_up(&pool, day, false).await {
                    tracing::warn!(error = %e, %day, "refreshing the analytics rollups failed");
                }
            });
        }
    }
    Ok(now)
}

/// The rollup rows of `table` for `[$1, $2]` (dates).
pub fn facts(table: &str, cols: &str) -> String {
    format!("(SELECT {cols} FROM {table} WHERE day >= $1::date AND day <= $2::date)")
}
