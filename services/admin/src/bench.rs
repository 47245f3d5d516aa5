//! The analytics benchmark: seeds synthetic conversations (SQL generators) and times every
//! analytics endpoint over HTTP against an in-process admin service. The first request of the
//! run may roll up the closed days of the range (reported as `first_ms`, and rollup time at the
//! top); the percentiles cover all requests.

use crate::AppState;
use serde_json::{Value, json};
use std::time::Instant;

const SEED_TENANT: &str = include_str!("bench_seed.sql");
const SEED_MESSAGES: &str = include_str!("bench_seed_messages.sql");
const SEED_REST: &str = include_str!("bench_seed_rest.sql");

/// Runs one SQL file statement by statement, binding `$1` (and `$2`) where a statement uses them.
async fn run_sql(pool: &sqlx::PgPool, sql: &'static str, n: i64, day: chrono::NaiveDate) -> Result<(), String> {
    for stmt in sql.split(";\n").map(str::trim).filter(|s| s.lines().any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))) {
        let q = sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()));
        let q = match (stmt.contains("$1"), stmt.contains("$2")) {
            (true, true) => q.bind(n).bind(day),
            (true, false) if stmt.contains("$1::date") => q.bind(day),
            (true, false) => q.bind(n),
            _ => q,
        };
        q.execute(pool).await.map_err(|e| format!("{e}\nin: {}", &stmt[..stmt.len().min(200)]))?;
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seeds `messages` synthetic messages (unless the database holds that many bench messages
/// already) ending at `day`, then requests every analytics endpoint `requests` times for the 30
/// days before `day` (all tenants, and the bench tenant only). Returns the report.
pub async fn run(state: AppState, messages: i64, requests: usize, day: chrono::NaiveDate) -> Result<Value, String> {
    let pool = state.store.pool().clone();
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE platform_message_id LIKE 'bench-%'")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let mut seed_s = 0.0;
    if have < messages {
        let t0 = Instant::now();
        run_sql(&pool, SEED_TENANT, messages, day).await?;
        run_sql(&pool, SEED_MESSAGES, messages, day).await?;
        run_sql(&pool, SEED_REST, messages, day).await?;
        seed_s = t0.elapsed().as_secs_f64();
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&pool).await.map_err(|e| e.to_string())?;
    let tenant: i64 =
        sqlx::query_scalar("SELECT max(id) FROM tenants WHERE name LIKE 'bench-%'").fetch_one(&pool).await.map_err(|e| e.to_string())?;
    let (_, key) = crate::auth::create_key(&state.store, &crate::auth::cli_actor(), "bench", crate::auth::Role::Analyst).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let server = tokio::spawn(crate::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let from = day - chrono::Days::new(29);
    // Cold start: drop the rollups so the report shows what rolling up a month costs.
    sqlx::query("DELETE FROM rollup_days").execute(&pool).await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let rolled = crate::rollup::ensure(&pool, from, day).await.map_err(|e| e.to_string())?;
    let rollup_s = t0.elapsed().as_secs_f64();
    let mut rows = vec![];
    for endpoint in ["volume", "latency", "policy", "model", "delivery"] {
        for (scope, filter) in [("all tenants", String::new()), ("one tenant", format!("&tenant_id={tenant}"))] {
            let url = format!("{base}/admin/v1/analytics/{endpoint}?from={from}&to={day}{filter}");
            let mut ms = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t0 = Instant::now();
                let resp = http.get(&url).bearer_auth(&key).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{url}: {status} {}", String::from_utf8_lossy(&body)));
                }
                ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let first = ms.first().copied().unwrap_or(0.0);
            ms.sort_by(f64::total_cmp);
            rows.push(json!({
                "endpoint": endpoint, "scope": scope, "requests": requests, "first_ms": first,
                "p50_ms": pct(&ms, 0.5), "p95_ms": pct(&ms, 0.95), "max_ms": ms.last().copied().unwrap_or(0.0),
            }));
        }
    }
    server.abort();
    Ok(json!({
        "messages_stored": stored, "seeded_now_s": seed_s, "range": format!("{from}..{day}"),
        "days_rolled_up": rolled, "rollup_s": rollup_s, "endpoints": rows,
    }))
}
