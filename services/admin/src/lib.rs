//! herd-admin: the admin API under `/admin/v1` (tenants, channels, policy packs, audit log, API
//! keys, user data deletion), conversation analytics, the dashboard at `/admin/`, and the
//! OpenAPI document at `/admin/v1/openapi.json`.
//!
//! Every endpoint is one row of [`ROUTES`]: the router, the role each endpoint needs, and the
//! OpenAPI document are all built from that table, so they cannot drift apart.

pub mod analytics;
pub mod auth;
pub mod bench;
mod body;
mod config;
pub mod error;
mod openapi;
pub mod rollup;

use auth::{Caller, Role};
use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub store: herd_store::Store,
    pub queue: herd_queue::Queue,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// The other parts of this process (gateway, workers in `herd serve`), for `/readyz`.
    pub health: herd_core::Health,
    /// Whether the workers load a guard model (`policies.guard_model`): tenants may then choose
    /// the moderation modes that use it.
    pub guard_model: bool,
}

impl AppState {
    /// `requests_per_minute` per API key (or per anonymous caller).
    pub fn new(store: herd_store::Store, queue: herd_queue::Queue, requests_per_minute: u32) -> Self {
        let per_min = NonZeroU32::new(requests_per_minute.max(1)).expect("at least 1");
        Self {
            store,
            queue,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_min))),
            health: Default::default(),
            guard_model: false,
        }
    }
}

/// One endpoint: method, path (axum syntax, under `/admin/v1`), who may call it, what it does,
/// its query parameters and request body (for the OpenAPI document), and its handler.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub role: Role,
    pub summary: &'static str,
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<&'static str>,
    handler: fn() -> MethodRouter<AppState>,
}

const RANGE: &[(&str, &str)] = &[
    ("from", "first day, YYYY-MM-DD (UTC; default 6 days before `to`)"),
    ("to", "last day, YYYY-MM-DD (included; default today)"),
    ("tenant_id", "only this tenant"),
    ("channel_id", "only this channel"),
    ("format", "json (default) or csv"),
    ("table", "with format=csv: which table of the JSON answer (default the per-day one)"),
];

macro_rules! route {
    ($m:ident, $path:literal, $role:ident, $summary:literal, $query:expr, $body:expr, $h:path) => {
        Route { method: stringify!($m), path: $path, role: Role::$role, summary: $summary, query: $query, body: $body, handler: || $m($h) }
    };
}

/// Every admin endpoint.
pub const ROUTES: &[Route] = &[
    route!(get, "/whoami", Analyst, "The calling key: id, name and role", &[], None, whoami),
    route!(get, "/tenants", Admin, "List tenants with their policy settings", &[], None, config::list_tenants),
    route!(post, "/tenants", Admin, "Create a tenant", &[], Some("tenant"), config::create_tenant),
    route!(get, "/tenants/{id}", Admin, "One tenant", &[], None, config::get_tenant),
    route!(
        put,
        "/tenants/{id}",
        Admin,
        "Change a tenant's settings (fields left out keep their value)",
        &[],
        Some("tenant"),
        config::update_tenant
    ),
    route!(delete, "/tenants/{id}", Admin, "Delete a tenant and everything stored for it", &[], None, config::delete_tenant),
    route!(get, "/tenants/{id}/channels", Admin, "A tenant's channels (secrets masked)", &[], None, config::list_channels),
    route!(
        post,
        "/tenants/{id}/channels",
        Admin,
        "Add a channel to a tenant (secrets are write-only)",
        &[],
        Some("channel"),
        config::create_channel
    ),
    route!(
        put,
        "/channels/{id}",
        Admin,
        "Change a channel (secrets left out keep their value)",
        &[],
        Some("channel"),
        config::update_channel
    ),
    route!(delete, "/channels/{id}", Admin, "Delete a channel", &[], None, config::delete_channel),
    route!(get, "/packs", Admin, "Policy packs: stored versions and the active one", &[], None, config::list_packs),
    route!(
        post,
        "/packs/validate",
        Admin,
        "Validate a pack's TOML against the active packs, storing nothing",
        &[],
        Some("pack_source"),
        config::validate_pack
    ),
    route!(
        post,
        "/packs/{name}/versions",
        Admin,
        "Upload a new version of a pack (not activated)",
        &[],
        Some("pack_source"),
        config::upload_pack
    ),
    route!(get, "/packs/{name}/versions/{version}", Admin, "One version's TOML", &[], None, config::get_pack_version),
    route!(
        post,
        "/packs/{name}/versions/{version}/dry-run",
        Admin,
        "Decide a message with this version in place, activating nothing",
        &[],
        Some("dry_run"),
        config::dry_run
    ),
    route!(
        post,
        "/packs/{name}/versions/{version}/activate",
        Admin,
        "Make this version the active one (workers reload within seconds)",
        &[],
        None,
        config::activate_pack
    ),
    route!(
        post,
        "/packs/{name}/rollback",
        Admin,
        "Re-activate the version active before the current one",
        &[],
        None,
        config::rollback_pack
    ),
    route!(
        get,
        "/audit",
        Admin,
        "The audit log, newest first",
        &[
            ("target_type", "tenant, channel, policy_pack, api_key, user"),
            ("target_id", "id or name of the target"),
            ("actor_key_id", "the key that made the change"),
            ("action", "create, update, delete, upload, activate, rollback, revoke, delete_user_data"),
            ("since", "RFC 3339 time or day"),
            ("until", "RFC 3339 time or day"),
            ("limit", "rows, 1-1000 (default 100)")
        ],
        None,
        config::audit
    ),
    route!(get, "/keys", Admin, "API keys (hashes are never shown)", &[], None, config::list_keys),
    route!(post, "/keys", Admin, "Create an API key; the key is in this answer only", &[], Some("key"), config::create_key),
    route!(delete, "/keys/{id}", Admin, "Revoke an API key", &[], None, config::revoke_key),
    route!(
        post,
        "/privacy/delete-user",
        Admin,
        "Delete everything stored about one platform user; returns what was deleted",
        &[],
        Some("delete_user"),
        config::delete_user
    ),
    route!(
        get,
        "/analytics/volume",
        Analyst,
        "Messages in/out, conversations and active users per day, by channel and by country",
        RANGE,
        None,
        analytics::volume
    ),
    route!(
        get,
        "/analytics/latency",
        Analyst,
        "p50/p95/p99 of queue wait, time to first token, generation, send and end to end",
        RANGE,
        None,
        analytics::latency
    ),
    route!(
        get,
        "/analytics/policy",
        Analyst,
        "Refusals by category, balanced-mode share, blocks by country, shadow decisions",
        RANGE,
        None,
        analytics::policy
    ),
    route!(
        get,
        "/analytics/model",
        Analyst,
        "Tokens in/out, tokens per second, expert utilization per MoE layer",
        RANGE,
        None,
        analytics::model
    ),
    route!(
        get,
        "/analytics/delivery",
        Analyst,
        "Delivery funnel (sent, delivered, read, failed) and failure codes",
        RANGE,
        None,
        analytics::delivery
    ),
];

async fn whoami(Extension(c): Extension<Caller>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "key_id": c.key_id, "name": c.name, "role": c.role.as_str() }))
}

/// 403 unless the caller's role reaches `role` (a layer on each route, from [`ROUTES`]).
async fn require(role: Role, req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>().map(|c| c.require(role)) {
        Some(Ok(())) => next.run(req).await,
        Some(Err(e)) => e.into_response(),
        None => error::ApiError::new(StatusCode::UNAUTHORIZED, "missing API key").into_response(),
    }
}

/// The admin router: `/admin/v1/...` (authenticated), `/admin/v1/openapi.json`, the dashboard
/// at `/admin/`, and `/healthz`.
pub fn router(state: AppState) -> Router {
    let mut api: Router<AppState> = Router::new();
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.dedup();
    for path in paths {
        let mut mr: MethodRouter<AppState> = MethodRouter::new();
        for r in ROUTES.iter().filter(|r| r.path == path) {
            let role = r.role;
            mr = mr.merge((r.handler)().route_layer(middleware::from_fn(move |req: Request, next: Next| require(role, req, next))));
        }
        api = api.route(path, mr);
    }
    let api = api
        .route_layer(middleware::from_fn(auth::refuse_nul))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .fallback(|| async { error::ApiError::not_found("no such admin endpoint") });
    Router::new()
        .nest("/admin/v1", api)
        .route("/admin", get(|| async { axum::response::Redirect::permanent("/admin/") }))
        .route("/admin/", get(|| asset("text/html; charset=utf-8", include_str!("../assets/index.html"))))
        .route("/admin/app.js", get(|| asset("text/javascript; charset=utf-8", include_str!("../assets/app.js"))))
        .route("/admin/style.css", get(|| asset("text/css; charset=utf-8", include_str!("../assets/style.css"))))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], herd_core::telemetry::render_metrics()) }),
        )
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Every admin response: scripts, styles and requests from the admin origin only, never framed,
/// no content-type sniffing, no referrer.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(csp));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    res
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// 200 when PostgreSQL and Redis answer, 503 naming what does not.
async fn ready(State(st): State<AppState>) -> Response {
    let pg = st.store.ping().await.is_ok();
    let redis = st.queue.ping().await.is_ok();
    let (parts_ok, parts) = st.health.report();
    let body = serde_json::json!({ "postgres": pg, "redis": redis, "parts": parts });
    let status = if pg && redis && parts_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// Serves the admin router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
