//! The gateway's one error type and its one mapping to HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("unknown platform {0:?}")]
    UnknownPlatform(String),
    #[error("signature check failed: {0}")]
    Unauthorized(String),
    #[error("verification token mismatch")]
    Forbidden,
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    /// Over the tenant's limit: the platform is asked to deliver the webhook again later (what
    /// was accepted before in it is deduplicated then).
    #[error("the tenant is over its message limit; try again in {0} s")]
    TenantRateLimited(u64),
}

impl GatewayError {
    /// The stable code of this error (in responses and metrics).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            GatewayError::UnknownPlatform(_) => (StatusCode::NOT_FOUND, "unknown_platform"),
            GatewayError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            GatewayError::Forbidden => (StatusCode::FORBIDDEN, "bad_verify_token"),
            GatewayError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            GatewayError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            GatewayError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            GatewayError::BodyRead(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            GatewayError::TenantRateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "tenant_rate_limited"),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "webhook failed");
        } else {
            tracing::warn!(error = %self, "webhook refused");
        }
        // The cause of a server error stays in the log; clients get the stable code.
        let message = if status.is_server_error() { "try again later".to_string() } else { self.to_string() };
        let mut res = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
        if let GatewayError::TenantRateLimited(secs) = self {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}
