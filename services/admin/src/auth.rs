//! API keys and roles. A key is `herd_` + 40 hex characters from the OS's random source; only its
//! SHA-256 is stored. `admin` keys may do everything, `analyst` keys read analytics only.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::SocketAddr;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Analyst,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
        }
    }
}

/// The caller of a request (put into the request's extensions by [`authenticate`]).
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: i64,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Fails with 403 unless the caller has `role` (or more).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, format!("this needs an {} key; yours is {}", role.as_str(), self.role.as_str())))
        }
    }

    pub fn actor(&self) -> herd_store::admin::Actor {
        herd_store::admin::Actor { key_id: Some(self.key_id), name: format!("key:{}:{}", self.key_id, self.name) }
    }
}

/// SHA-256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key.
pub fn new_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("herd_{}", hex::encode(bytes)))
}

/// Creates a key on behalf of `actor`: stores its hash, returns `(id, key)`. The key is shown
/// once, never stored.
pub async fn create_key(
    store: &herd_store::Store,
    actor: &herd_store::admin::Actor,
    name: &str,
    role: Role,
) -> Result<(i64, String), String> {
    let key = new_key().map_err(|e| format!("reading random bytes: {e}"))?;
    let id = store.insert_api_key(actor, name, role.as_str(), &key[..9], &hash_key(&key)).await.map_err(|e| e.to_string())?;
    Ok((id, key))
}

/// The actor of changes made from the command line.
pub fn cli_actor() -> herd_store::admin::Actor {
    herd_store::admin::Actor { key_id: None, name: "cli".into() }
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The client's address, as the listener saw it (`unknown` when the router is served without
/// connection info).
fn client(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

/// Middleware: a valid key gets its own rate limit; a caller without one (no key, or a key that
/// is unknown or revoked, however many it makes up) is limited per client address, then 401.
/// Otherwise the [`Caller`] goes into the request's extensions.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let slow_down = || ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many admin requests; slow down").into_response();
    let found = match bearer(&req).map(hash_key) {
        None => None,
        Some(hash) => match st.store.api_key_by_hash(&hash).await {
            Ok(found) => found.map(|k| (hash, k)),
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let Some((hash, (key_id, name, role))) = found else {
        if st.limiter.check_key(&format!("client:{}", client(&req))).is_err() {
            return slow_down();
        }
        let why = if bearer(&req).is_some() { "unknown or revoked API key" } else { "missing API key: send `Authorization: Bearer <key>`" };
        return ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
    };
    if st.limiter.check_key(&format!("key:{hash}")).is_err() {
        return slow_down();
    }
    let role = Role::parse(&role).unwrap_or(Role::Analyst);
    req.extensions_mut().insert(Caller { key_id, name, role });
    next.run(req).await
}

/// Middleware: a NUL character in the path or a query parameter (`%00`; PostgreSQL cannot store
/// or compare it in text) is a 422 naming the parameter (or `path`).
pub async fn refuse_nul(req: Request, next: Next) -> Response {
    const NUL: &str = "must not contain a NUL character (U+0000)";
    let uri = req.uri();
    if uri.path().to_ascii_lowercase().contains("%00") {
        return ApiError::invalid("path", NUL).into_response();
    }
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            if pair.to_ascii_lowercase().contains("%00") {
                let name = pair.split('=').next().unwrap_or(pair);
                let name = if name.to_ascii_lowercase().contains("%00") { "query" } else { name };
                return ApiError::invalid(name, NUL).into_response();
            }
        }
    }
    next.run(req).await
}
