//! herd-channels: the messaging platforms — webhook signature checks, parsing of inbound
//! webhooks into domain types, and the Send API clients.

pub mod messenger;
pub mod send;
pub mod signature;
pub mod whatsapp;

use herd_core::{Platform, WebhookBatch};
use serde_json::Value;

/// Parses a webhook body already known to be JSON, for the platform of its URL. Unknown
/// `object`s and fields are skipped (listed in `ignored`); nothing here panics on any input.
pub fn parse_webhook(platform: Platform, body: &Value) -> WebhookBatch {
    match platform {
        Platform::Whatsapp => whatsapp::parse(body),
        Platform::Messenger | Platform::Instagram => messenger::parse(platform, body),
    }
}

/// A string field, also accepting numbers (ids and timestamps come as either).
pub(crate) fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn arr(v: &Value, key: &str) -> Vec<Value> {
    v.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}
