//! herd-channels: the messaging platforms — webhook signature checks, parsing of inbound
//! webhooks into domain types, and the Send API clients.

pub mod messenger;
pub mod send;
pub mod signature;
pub mod whatsapp;

use herd_core::{InboundMessage, Platform, StatusUpdate, WebhookBatch};
use serde_json::Value;

/// Parses a webhook body already known to be JSON, for the platform of its URL. Unknown
/// `object`s and fields are skipped (listed in `ignored`); nothing here panics on any input.
pub fn parse_webhook(platform: Platform, body: &Value) -> WebhookBatch {
    let mut batch = match platform {
        Platform::Whatsapp => whatsapp::parse(body),
        Platform::Messenger | Platform::Instagram => messenger::parse(platform, body),
    };
    // What PostgreSQL cannot store leaves here, counted on the message (and noted in its record).
    batch.messages.iter_mut().for_each(InboundMessage::make_storable);
    batch.statuses.iter_mut().for_each(StatusUpdate::make_storable);
    batch
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
