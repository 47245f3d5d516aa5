//! API keys and roles. A key is `herd_` + 40 hex characters from the OS's random source; only its
//! SHA-256 is stored. `admin` keys may do everything, `analyst` keys read analytics only.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Read;

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

/// Middleware: rate limit per presented key (or per client without one), then 401 without a
/// valid key; otherwise the [`Caller`] goes into the request's extensions.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = bearer(&req).map(str::to_string);
    let hash = token.as_deref().map(hash_key);
    let limit_key = hash.clone().unwrap_or_else(|| "anonymous".into());
    if st.limiter.check_key(&limit_key).is_err() {
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many admin requests; slow down").into_response();
    }
    let Some(hash) = hash else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing API key: send `Authorization: Bearer <key>`").into_response();
    };
    match st.store.api_key_by_hash(&hash).await {
        Ok(Some((key_id, name, role))) => {
            let role = Role::parse(&role).unwrap_or(Role::Analyst);
            req.extensions_mut().insert(Caller { key_id, name, role });
            next.run(req).await
        }
        Ok(None) => ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked API key").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
