//! The admin API's error: a status and a JSON body `{"error": "...", "field": "...", "line": N}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A refused or failed admin request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field the error is about (422).
    pub field: Option<String>,
    /// The line of a policy pack the error is about.
    pub line: Option<usize>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None, line: None }
    }

    /// 422 naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, message: message.into(), field: Some(field.into()), line: None }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub fn conflict(what: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, what)
    }
}

impl From<herd_store::Error> for ApiError {
    fn from(e: herd_store::Error) -> Self {
        tracing::error!(error = %e, "admin request failed in the database");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "database error; see the server log")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        herd_store::Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        if let Some(l) = self.line {
            body["line"] = l.into();
        }
        (self.status, Json(body)).into_response()
    }
}
