//! Conversation analytics over PostgreSQL: volume, latency percentiles, policy outcomes, model
//! use (tokens and expert utilization) and the delivery funnel. Every endpoint takes `from` and
//! `to` (days, UTC, `to` included; default the last 7 days), `tenant_id` and `channel_id`, buckets
//! by day, and answers JSON or, with `format=csv`, CSV of one of its tables (`table=`, default the
//! per-day one).
//!
//! Queries read daily rollups (see [`crate::rollup`]: today's and yesterday's are at most
//! 30 s old). Percentiles are nearest-rank over latency histograms whose buckets keep
//! a value's 6 highest bits (exact below 64 ms, at most 1/32 low above). Latencies and tokens count
//! each reply once (its first piece; the pieces of a split reply carry the same measurements).
//! Active users (per day, per country, and the last day / 7 days / month of the range) are distinct
//! users who sent a message, all counted from the same rows.

use crate::error::{ApiError, ApiResult};
use crate::{AppState, rollup};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use serde_json::{Map, Value, json};
use sqlx::Row;
use std::collections::HashMap;

/// Parses a `YYYY-MM-DD` day; `field` names it in the error.
pub fn day(v: &str, field: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| ApiError::invalid(field, format!("must be a day YYYY-MM-DD, got {v:?}")))
}

/// The filters of one analytics request.
#[derive(Clone, Debug)]
pub struct Filter {
    pub from: NaiveDate,
    /// Inclusive.
    pub to: NaiveDate,
    pub tenant_id: Option<i64>,
    pub channel_id: Option<i64>,
    csv: Option<String>,
}

impl Filter {
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<Self> {
        let today = chrono::Utc::now().date_naive();
        let to = q.get("to").map(|v| day(v, "to")).transpose()?.unwrap_or(today);
        let from = q.get("from").map(|v| day(v, "from")).transpose()?.unwrap_or(to - chrono::Days::new(6));
        if from > to {
            return Err(ApiError::invalid("from", "must not be after `to`"));
        }
        if (to - from).num_days() > 366 {
            return Err(ApiError::invalid("to", "the range may span 366 days at most"));
        }
        let id = |k: &str| -> ApiResult<Option<i64>> {
            q.get(k).map(|v| v.parse().map_err(|_| ApiError::invalid(k, format!("must be an integer, got {v:?}")))).transpose()
        };
        let csv = match q.get("format").map(String::as_str) {
            None | Some("json") => None,
            Some("csv") => Some(q.get("table").cloned().unwrap_or_default()),
            Some(other) => return Err(ApiError::invalid("format", format!("must be json or csv, got {other:?}"))),
        };
        Ok(Self { from, to, tenant_id: id("tenant_id")?, channel_id: id("channel_id")?, csv })
    }

    #[cfg(test)]
    fn start(&self) -> chrono::DateTime<chrono::Utc> {
        self.from.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
    }

    #[cfg(test)]
    fn end(&self) -> chrono::DateTime<chrono::Utc> {
        (self.to + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc()
    }

    fn days(&self) -> Vec<String> {
        self.from.iter_days().take_while(|d| *d <= self.to).map(|d| d.to_string()).collect()
    }
}

/// JSON, or CSV of table `f.csv` (the first table when empty).
fn respond(f: &Filter, v: Value, default_table: &str) -> ApiResult<Response> {
    let Some(table) = &f.csv else { return Ok(axum::Json(v).into_response()) };
    let name = if table.is_empty() { default_table } else { table.as_str() };
    let rows = match v.get(name) {
        Some(Value::Array(rows)) => rows,
        _ => {
            let tables: Vec<&str> =
                v.as_object().map(|o| o.iter().filter(|(_, x)| x.is_array()).map(|(k, _)| k.as_str()).collect()).unwrap_or_default();
            return Err(ApiError::invalid("table", format!("no table {name:?}; this endpoint has: {}", tables.join(", "))));
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], to_csv(rows)).into_response())
}

/// Rows of objects as CSV: the first row's keys are the header; lists are joined with `;`.
pub fn to_csv(rows: &[Value]) -> String {
    let Some(Value::Object(first)) = rows.first() else { return String::new() };
    let cols: Vec<&String> = first.keys().collect();
    let cell = |v: Option<&Value>| -> String {
        let s = match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(";"),
            Some(x) => x.to_string(),
        };
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
    };
    let mut out = cols.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in rows {
        let o = r.as_object();
        out.push_str(&cols.iter().map(|c| cell(o.and_then(|o| o.get(c.as_str())))).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// The rollup filter: tenant and channel on the facts `f`.
const SCOPE: &str = "($3::BIGINT IS NULL OR f.tenant_id = $3) AND ($4::BIGINT IS NULL OR f.channel_id = $4)";

macro_rules! q {
    ($($t:tt)*) => {
        sqlx::query(sqlx::AssertSqlSafe(format!($($t)*)))
    };
}

type Q<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the range (days) and the tenant and channel filters.
fn bind<'q>(q: Q<'q>, f: &Filter) -> Q<'q> {
    q.bind(f.from).bind(f.to).bind(f.tenant_id).bind(f.channel_id)
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
}

fn int(r: &sqlx::postgres::PgRow, col: &str) -> Value {
    json!(r.get::<Option<i64>, _>(col).unwrap_or(0))
}

pub async fn volume(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let f = Filter::parse(&q)?;
    let pool = st.store.pool();
    // The summary's week and month reach before `from`.
    let month_start = f.to.with_day(1).unwrap_or(f.to);
    let week_start = f.to - chrono::Days::new(6);
    rollup::ensure(pool, f.from.min(month_start).min(week_start), f.to).await?;
    let facts = rollup::facts("rollup_volume", "day, tenant_id, channel_id, country, messages_in, messages_out, conversations");
    let active = rollup::facts("rollup_active", "day, tenant_id, channel_id, country, user_id");
    let sums = "sum(f.messages_in)::BIGINT AS messages_in, sum(f.messages_out)::BIGINT AS messages_out, sum(f.conversations)::BIGINT AS conversations";
    let rows = bind(q!("SELECT f.day::text AS day, {sums} FROM {facts} f WHERE {SCOPE} GROUP BY 1 ORDER BY 1"), &f).fetch_all(pool).await?;
    let users: HashMap<String, i64> =
        bind(q!("SELECT f.day::text AS day, count(DISTINCT f.user_id) AS n FROM {active} f WHERE {SCOPE} GROUP BY 1"), &f)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| (r.get::<String, _>("day"), r.get::<i64, _>("n")))
            .collect();
    // Every day of the range, days without messages as zeros (charts need the gaps).
    let mut found: HashMap<String, &sqlx::postgres::PgRow> = rows.iter().map(|r| (r.get::<String, _>("day"), r)).collect();
    let cols = ["messages_in", "messages_out", "conversations"];
    let days: Vec<Value> = f
        .days()
        .into_iter()
        .map(|d| {
            let r = found.remove(&d);
            let mut o = vec![("day", json!(d))];
            o.extend(cols.iter().map(|c| (*c, r.map_or(json!(0), |r| int(r, c)))));
            o.push(("active_users", json!(users.get(&d).copied().unwrap_or(0))));
            obj(o)
        })
        .collect();
    let by_channel: Vec<Value> = bind(q!("SELECT f.channel_id, ch.platform, {sums} FROM {facts} f JOIN channels ch ON ch.id = f.channel_id WHERE {SCOPE} GROUP BY 1, 2 ORDER BY 1"), &f)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            obj(vec![
                ("channel_id", json!(r.get::<i64, _>("channel_id"))),
                ("platform", json!(r.get::<String, _>("platform"))),
                ("messages_in", int(r, "messages_in")),
                ("messages_out", int(r, "messages_out")),
                ("conversations", int(r, "conversations")),
            ])
        })
        .collect();
    let by_country: Vec<Value> = bind(
        q!("SELECT v.country, v.messages_in, COALESCE(a.users, 0) AS active_users FROM
              (SELECT f.country, sum(f.messages_in)::BIGINT AS messages_in FROM {facts} f WHERE {SCOPE} GROUP BY 1) v
              LEFT JOIN (SELECT f.country, count(DISTINCT f.user_id) AS users FROM {active} f WHERE {SCOPE} GROUP BY 1) a ON a.country = v.country
            ORDER BY 2 DESC, 1"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        obj(vec![
            ("country", json!(r.get::<String, _>("country"))),
            ("messages_in", int(r, "messages_in")),
            ("active_users", int(r, "active_users")),
        ])
    })
    .collect();
    // Active users of the last day of the range, its last 7 days, and its month (to that day):
    // distinct users who sent a message, from the same rows as the days above.
    let distinct = |from: NaiveDate| {
        let f = Filter { from, ..f.clone() };
        let active = &active;
        async move {
            let r = bind(q!("SELECT count(DISTINCT f.user_id) AS n FROM {active} f WHERE {SCOPE}"), &f).fetch_one(pool).await?;
            Ok::<i64, sqlx::Error>(r.get("n"))
        }
    };
    let summary = json!({
        "day": distinct(f.to).await?,
        "week": distinct(week_start).await?,
        "month": distinct(month_start).await?,
        "source": "messages",
    });
    let v = json!({ "from": f.from.to_string(), "to": f.to.to_string(), "days": days, "by_channel": by_channel, "by_country": by_country, "active_users": summary });
    respond(&f, v, "days")
}

/// Nearest-rank percentiles from histogram rows `h(group.., bucket, n)` partitioned by `part`.
fn percentiles(h: &str, part: &str) -> String {
    format!(
        "SELECT {part}, max(total)::BIGINT AS count,
                min(bucket) FILTER (WHERE cum >= ceil(0.50 * total)) AS p50,
                min(bucket) FILTER (WHERE cum >= ceil(0.95 * total)) AS p95,
                min(bucket) FILTER (WHERE cum >= ceil(0.99 * total)) AS p99
         FROM (SELECT {part}, bucket, sum(n) OVER (PARTITION BY {part} ORDER BY bucket) AS cum, sum(n) OVER (PARTITION BY {part}) AS total FROM ({h}) h) c
         GROUP BY {part} ORDER BY {part}"
    )
}

pub async fn latency(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let f = Filter::parse(&q)?;
    let pool = st.store.pool();
    rollup::ensure(pool, f.from, f.to).await?;
    let facts = rollup::facts("rollup_latency", "day, tenant_id, channel_id, metric, bucket, n");
    let row = |r: &sqlx::postgres::PgRow, with_day: bool| {
        let mut o = vec![];
        if with_day {
            o.push(("day", json!(r.get::<String, _>("day"))));
        }
        o.extend([
            ("metric", json!(r.get::<String, _>("metric"))),
            ("count", json!(r.get::<i64, _>("count"))),
            ("p50", json!(r.get::<Option<i32>, _>("p50"))),
            ("p95", json!(r.get::<Option<i32>, _>("p95"))),
            ("p99", json!(r.get::<Option<i32>, _>("p99"))),
        ]);
        obj(o)
    };
    let overall = percentiles(&format!("SELECT f.metric, f.bucket, sum(f.n) AS n FROM {facts} f WHERE {SCOPE} GROUP BY 1, 2"), "metric");
    let metrics: Vec<Value> = bind(q!("{overall}"), &f).fetch_all(pool).await?.iter().map(|r| row(r, false)).collect();
    let daily = percentiles(
        &format!("SELECT f.day::text AS day, f.metric, f.bucket, sum(f.n) AS n FROM {facts} f WHERE {SCOPE} GROUP BY 1, 2, 3"),
        "day, metric",
    );
    let days: Vec<Value> = bind(q!("{daily}"), &f).fetch_all(pool).await?.iter().map(|r| row(r, true)).collect();
    let v = json!({
        "from": f.from.to_string(), "to": f.to.to_string(), "metrics": metrics, "days": days,
        "precision": "values above 63 ms are kept with 6 significant bits (at most 1/32 low); percentiles are nearest-rank",
    });
    respond(&f, v, "metrics")
}

/// A `pack, rule, action, count` row as JSON.
fn rule_count(r: &sqlx::postgres::PgRow) -> Value {
    obj(vec![
        ("pack", json!(r.get::<String, _>("pack"))),
        ("rule", json!(r.get::<String, _>("rule"))),
        ("action", json!(r.get::<String, _>("action"))),
        ("count", int(r, "count")),
    ])
}

pub async fn policy(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let f = Filter::parse(&q)?;
    let pool = st.store.pool();
    rollup::ensure(pool, f.from, f.to).await?;
    let facts = rollup::facts("rollup_policy", "day, tenant_id, channel_id, country, pack, rule, category, action, shadow, n");
    let refusals: Vec<Value> = bind(q!("SELECT f.category, sum(f.n)::BIGINT AS count FROM {facts} f WHERE {SCOPE} AND NOT f.shadow AND f.action = 'refuse' GROUP BY 1 ORDER BY 2 DESC, 1"), &f)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            let category = r.get::<String, _>("category");
            let name = herd_policies::pack::hazard_name(&category);
            obj(vec![("category", json!(category)), ("name", json!(name)), ("count", int(r, "count"))])
        })
        .collect();
    // Crisis support: the caring reply with crisis lines sent instead of generating.
    let support: i64 =
        bind(q!("SELECT COALESCE(sum(f.n), 0)::BIGINT AS n FROM {facts} f WHERE {SCOPE} AND NOT f.shadow AND f.action = 'support'"), &f)
            .fetch_one(pool)
            .await?
            .get("n");
    // Blocks count messages (a message two blocking rules matched is one block); the rules that
    // matched are counted apart (`blocks_by_rule`).
    let blocked = rollup::facts("rollup_blocks", "day, tenant_id, channel_id, country, action, messages");
    let blocks: Vec<Value> = bind(
        q!("SELECT f.country, f.action, sum(f.messages)::BIGINT AS count FROM {blocked} f WHERE {SCOPE} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        obj(vec![
            ("country", json!(r.get::<String, _>("country"))),
            ("action", json!(r.get::<String, _>("action"))),
            ("count", int(r, "count")),
        ])
    })
    .collect();
    let blocks_by_rule: Vec<Value> = bind(
        q!("SELECT f.pack, f.rule, f.action, sum(f.n)::BIGINT AS count FROM {facts} f WHERE {SCOPE} AND NOT f.shadow
            AND f.action IN ('blocked_region', 'blocked_feature', 'blocked_license') GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(rule_count)
    .collect();
    let shadow: Vec<Value> = bind(q!("SELECT f.pack, f.rule, f.action, sum(f.n)::BIGINT AS count FROM {facts} f WHERE {SCOPE} AND f.shadow GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"), &f)
        .fetch_all(pool)
        .await?
        .iter()
        .map(rule_count)
        .collect();
    // Balanced share: replies generated in balanced mode among all replies (first pieces).
    let replies =
        rollup::facts("rollup_replies", "day, tenant_id, channel_id, replies, balanced, tokens_in, tokens_out, generation_ms, measured");
    let r = bind(q!("SELECT sum(f.replies)::BIGINT AS replies, sum(f.balanced)::BIGINT AS balanced FROM {replies} f WHERE {SCOPE}"), &f)
        .fetch_one(pool)
        .await?;
    let (replies, balanced) = (r.get::<Option<i64>, _>("replies").unwrap_or(0), r.get::<Option<i64>, _>("balanced").unwrap_or(0));
    let days: Vec<Value> = bind(
        q!("SELECT p.day, p.refusals, p.support, p.balanced, COALESCE(b.blocks, 0) AS blocks, p.shadow FROM
              (SELECT f.day::text AS day,
                      sum(f.n) FILTER (WHERE NOT f.shadow AND f.action = 'refuse')::BIGINT AS refusals,
                      sum(f.n) FILTER (WHERE NOT f.shadow AND f.action = 'support')::BIGINT AS support,
                      sum(f.n) FILTER (WHERE NOT f.shadow AND f.action = 'balanced')::BIGINT AS balanced,
                      sum(f.n) FILTER (WHERE f.shadow)::BIGINT AS shadow
               FROM {facts} f WHERE {SCOPE} GROUP BY 1) p
              LEFT JOIN (SELECT f.day::text AS day, sum(f.messages)::BIGINT AS blocks FROM {blocked} f WHERE {SCOPE} GROUP BY 1) b ON b.day = p.day
            ORDER BY 1"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        obj(vec![
            ("day", json!(r.get::<String, _>("day"))),
            ("refusals", int(r, "refusals")),
            ("support", int(r, "support")),
            ("balanced", int(r, "balanced")),
            ("blocks", int(r, "blocks")),
            ("shadow", int(r, "shadow")),
        ])
    })
    .collect();
    let share = if replies > 0 { balanced as f64 / replies as f64 } else { 0.0 };
    let v = json!({
        "from": f.from.to_string(), "to": f.to.to_string(), "days": days, "refusals_by_category": refusals, "support": support,
        "replies": replies, "balanced_replies": balanced, "balanced_share": share, "blocks_by_country": blocks,
        "blocks_by_rule": blocks_by_rule, "shadow": shadow,
    });
    respond(&f, v, "days")
}

pub async fn model(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let f = Filter::parse(&q)?;
    let pool = st.store.pool();
    rollup::ensure(pool, f.from, f.to).await?;
    let per_s = |out: i64, ms: i64| if ms > 0 { out as f64 * 1000.0 / ms as f64 } else { 0.0 };
    let facts =
        rollup::facts("rollup_replies", "day, tenant_id, channel_id, replies, balanced, tokens_in, tokens_out, generation_ms, measured");
    let days: Vec<Value> = bind(
        q!("SELECT f.day::text AS day, sum(f.measured)::BIGINT AS replies, sum(f.tokens_in)::BIGINT AS tokens_in, sum(f.tokens_out)::BIGINT AS tokens_out,
                   sum(f.generation_ms)::BIGINT AS generation_ms
            FROM {facts} f WHERE {SCOPE} GROUP BY 1 HAVING sum(f.measured) > 0 ORDER BY 1"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let (o, ms) = (r.get::<Option<i64>, _>("tokens_out").unwrap_or(0), r.get::<Option<i64>, _>("generation_ms").unwrap_or(0));
        obj(vec![
            ("day", json!(r.get::<String, _>("day"))),
            ("replies", int(r, "replies")),
            ("tokens_in", int(r, "tokens_in")),
            ("tokens_out", json!(o)),
            ("generation_ms", json!(ms)),
            ("tokens_per_s", json!(per_s(o, ms))),
        ])
    })
    .collect();
    let sum = |k: &str| days.iter().map(|d| d[k].as_i64().unwrap_or(0)).sum::<i64>();
    let (tin, tout, ms) = (sum("tokens_in"), sum("tokens_out"), sum("generation_ms"));
    // Expert utilization: per day for the model as a whole (a batch mixes tenants and channels,
    // so the tenant and channel filters do not apply here).
    let rows = sqlx::query(
        "SELECT layer, expert, sum(tokens)::BIGINT AS tokens FROM expert_usage
         WHERE day >= $1 AND day <= $2 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(f.from)
    .bind(f.to)
    .fetch_all(pool)
    .await?;
    let mut layers: Vec<(i32, Vec<i64>)> = vec![];
    let mut flat = vec![];
    for r in &rows {
        let (l, e, t): (i32, i32, i64) = (r.get("layer"), r.get("expert"), r.get("tokens"));
        if layers.last().is_none_or(|x| x.0 != l) {
            layers.push((l, vec![]));
        }
        let counts = &mut layers.last_mut().expect("pushed").1;
        if counts.len() <= e as usize {
            counts.resize(e as usize + 1, 0);
        }
        counts[e as usize] = t;
        flat.push(obj(vec![("layer", json!(l)), ("expert", json!(e)), ("tokens", json!(t))]));
    }
    let experts: Vec<Value> = layers
        .iter()
        .map(|(l, c)| {
            let total: i64 = c.iter().sum();
            let max = c.iter().copied().max().unwrap_or(0);
            // Load imbalance: the busiest expert's share over an even share (1.0 = balanced).
            let imbalance = if total > 0 { max as f64 * c.len() as f64 / total as f64 } else { 0.0 };
            json!({ "layer": l, "counts": c, "tokens": total, "imbalance": imbalance })
        })
        .collect();
    let v = json!({
        "from": f.from.to_string(), "to": f.to.to_string(), "tokens_in": tin, "tokens_out": tout, "generation_ms": ms,
        "tokens_per_s": per_s(tout, ms), "days": days, "experts": experts, "expert_tokens": flat,
    });
    respond(&f, v, "days")
}

pub async fn delivery(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let f = Filter::parse(&q)?;
    let pool = st.store.pool();
    rollup::ensure(pool, f.from, f.to).await?;
    // Deliveries of herd's messages sent in the range; the funnel counts each message at every
    // stage it passed (read implies delivered). Replies the Send API refused never got a message
    // id: they are `refused`, and among the `failed` with the platform's code.
    let facts = rollup::facts("rollup_delivery", "day, tenant_id, channel_id, state, error_code, error_title, n");
    let counts = "sum(f.n) FILTER (WHERE f.state <> 'refused')::BIGINT AS sent,
                  sum(f.n) FILTER (WHERE f.state IN ('delivered', 'read'))::BIGINT AS delivered,
                  sum(f.n) FILTER (WHERE f.state = 'read')::BIGINT AS read,
                  sum(f.n) FILTER (WHERE f.state IN ('failed', 'refused'))::BIGINT AS failed,
                  sum(f.n) FILTER (WHERE f.state = 'refused')::BIGINT AS refused,
                  sum(f.n) FILTER (WHERE f.state IN ('accepted', 'sent'))::BIGINT AS pending";
    let r = bind(q!("SELECT {counts} FROM {facts} f WHERE {SCOPE}"), &f).fetch_one(pool).await?;
    let failures: Vec<Value> = bind(
        q!("SELECT f.error_code, f.error_title AS title, sum(f.n)::BIGINT AS count FROM {facts} f WHERE {SCOPE} AND f.state IN ('failed', 'refused') GROUP BY 1, 2 ORDER BY 3 DESC, 1"),
        &f,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| obj(vec![("code", json!(r.get::<Option<i64>, _>("error_code"))), ("title", json!(r.get::<String, _>("title"))), ("count", int(r, "count"))]))
    .collect();
    let days: Vec<Value> = bind(q!("SELECT f.day::text AS day, {counts} FROM {facts} f WHERE {SCOPE} GROUP BY 1 ORDER BY 1"), &f)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            obj(vec![
                ("day", json!(r.get::<String, _>("day"))),
                ("sent", int(r, "sent")),
                ("delivered", int(r, "delivered")),
                ("read", int(r, "read")),
                ("failed", int(r, "failed")),
                ("refused", int(r, "refused")),
            ])
        })
        .collect();
    let v = json!({
        "from": f.from.to_string(), "to": f.to.to_string(), "sent": int(&r, "sent"), "delivered": int(&r, "delivered"), "read": int(&r, "read"),
        "failed": int(&r, "failed"), "refused": int(&r, "refused"), "pending": int(&r, "pending"), "failures": failures, "days": days,
    });
    respond(&f, v, "days")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_joins_lists() {
        let rows = vec![json!({"a": 1, "b": "x,y", "c": [1, 2]}), json!({"a": 2, "b": "say \"hi\"", "c": null})];
        assert_eq!(to_csv(&rows), "a,b,c\n1,\"x,y\",1;2\n2,\"say \"\"hi\"\"\",\n");
    }

    #[test]
    fn filters_name_the_bad_field() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        assert_eq!(Filter::parse(&q(&[("from", "2026-13-01")])).err().and_then(|e| e.field).as_deref(), Some("from"));
        assert_eq!(Filter::parse(&q(&[("tenant_id", "x")])).err().and_then(|e| e.field).as_deref(), Some("tenant_id"));
        assert_eq!(Filter::parse(&q(&[("from", "2026-12-02"), ("to", "2026-12-01")])).err().and_then(|e| e.field).as_deref(), Some("from"));
        let f = Filter::parse(&q(&[("from", "2026-12-01"), ("to", "2026-12-03")])).expect("valid");
        assert_eq!(f.days(), ["2026-12-01", "2026-12-02", "2026-12-03"]);
        assert_eq!((f.end() - f.start()).num_hours(), 72);
    }
}
