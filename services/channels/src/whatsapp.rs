//! WhatsApp Cloud API webhooks: `object: whatsapp_business_account`, `entry[].changes[].value`
//! with `metadata.phone_number_id`, `contacts[]`, `messages[]` and `statuses[]`.

use crate::{arr, str_of};
use herd_core::{Content, DeliveryState, InboundMessage, Platform, StatusUpdate, WebhookBatch};
use serde_json::Value;

/// Parses a WhatsApp webhook body.
pub fn parse(body: &Value) -> WebhookBatch {
    let mut out = WebhookBatch::default();
    match body.get("object").and_then(Value::as_str) {
        Some("whatsapp_business_account") => {}
        other => {
            out.ignored.push(format!("object {other:?} is not whatsapp_business_account"));
            return out;
        }
    }
    for entry in arr(body, "entry") {
        for change in arr(&entry, "changes") {
            if change.get("field").and_then(Value::as_str).is_some_and(|f| f != "messages") {
                out.ignored.push(format!("change field {:?}", change.get("field")));
                continue;
            }
            let Some(value) = change.get("value") else { continue };
            let Some(phone_id) = value.pointer("/metadata/phone_number_id").and_then(str_of) else {
                out.ignored.push("change without metadata.phone_number_id".into());
                continue;
            };
            let contacts = arr(value, "contacts");
            for m in arr(value, "messages") {
                match message(&m, &phone_id, &contacts) {
                    Ok(msg) => out.messages.push(msg),
                    Err(why) => out.ignored.push(why),
                }
            }
            for s in arr(value, "statuses") {
                match status(&s, &phone_id) {
                    Ok(st) => out.statuses.push(st),
                    Err(why) => out.ignored.push(why),
                }
            }
        }
    }
    out
}

fn message(m: &Value, phone_id: &str, contacts: &[Value]) -> Result<InboundMessage, String> {
    let id = m.get("id").and_then(str_of).filter(|s| !s.is_empty()).ok_or("message without id")?;
    // The sender: `from` (phone), else the contact's wa_id, else the business-scoped user id.
    let contact_user = |key: &str| contacts.iter().find_map(|c| c.get(key).and_then(str_of));
    let sender = m
        .get("from")
        .and_then(str_of)
        .or_else(|| contact_user("wa_id"))
        .or_else(|| m.get("from_user_id").and_then(str_of))
        .or_else(|| m.get("user_id").and_then(str_of))
        .or_else(|| contact_user("user_id"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("message {id} without a sender"))?;
    let timestamp = m.get("timestamp").and_then(str_of).and_then(|t| t.parse().ok()).unwrap_or(0);
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
    let s = |p: &str| m.pointer(p).and_then(str_of);
    let content = match kind {
        "text" => Content::Text { body: s("/text/body").ok_or_else(|| format!("text message {id} without text.body"))? },
        "interactive" => {
            let it = m.get("interactive").cloned().unwrap_or(Value::Null);
            let reply = it
                .get("button_reply")
                .or_else(|| it.get("list_reply"))
                .ok_or_else(|| format!("interactive message {id} of an unknown kind"))?;
            Content::Choice {
                id: reply.get("id").and_then(str_of).unwrap_or_default(),
                title: reply.get("title").and_then(str_of).unwrap_or_default(),
            }
        }
        "button" => Content::Choice { id: s("/button/payload").unwrap_or_default(), title: s("/button/text").unwrap_or_default() },
        "image" => Content::Image { media_id: s("/image/id").unwrap_or_default(), caption: s("/image/caption") },
        "audio" | "voice" => Content::Audio { media_id: s(&format!("/{kind}/id")).unwrap_or_default() },
        "location" => Content::Location {
            latitude: m.pointer("/location/latitude").and_then(Value::as_f64).ok_or_else(|| format!("location {id} without latitude"))?,
            longitude: m
                .pointer("/location/longitude")
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("location {id} without longitude"))?,
            name: s("/location/name"),
        },
        "reaction" => {
            Content::Reaction { emoji: s("/reaction/emoji").unwrap_or_default(), message_id: s("/reaction/message_id").unwrap_or_default() }
        }
        other => Content::Other { kind: if other.is_empty() { "unknown".into() } else { other.to_string() } },
    };
    let sender_name = contacts
        .iter()
        .find(|c| c.get("wa_id").and_then(str_of).as_deref() == Some(sender.as_str()))
        .or(contacts.first())
        .and_then(|c| c.pointer("/profile/name"))
        .and_then(str_of);
    Ok(InboundMessage {
        platform: Platform::Whatsapp,
        channel_external_id: phone_id.to_string(),
        sender,
        platform_message_id: id,
        timestamp,
        content,
        sender_name,
        removed_nul: 0,
    })
}

fn status(s: &Value, phone_id: &str) -> Result<StatusUpdate, String> {
    let id = s.get("id").and_then(str_of).filter(|s| !s.is_empty()).ok_or("status without id")?;
    let state = match s.get("status").and_then(Value::as_str) {
        Some("sent") => DeliveryState::Sent,
        Some("delivered") => DeliveryState::Delivered,
        Some("read") => DeliveryState::Read,
        Some("failed") => DeliveryState::Failed,
        other => return Err(format!("status {id}: unknown state {other:?}")),
    };
    let err = s.get("errors").and_then(Value::as_array).and_then(|e| e.first()).cloned();
    Ok(StatusUpdate {
        platform: Platform::Whatsapp,
        channel_external_id: phone_id.to_string(),
        platform_message_id: id,
        state,
        timestamp: s.get("timestamp").and_then(str_of).and_then(|t| t.parse().ok()).unwrap_or(0),
        recipient: s.get("recipient_id").and_then(str_of),
        error_code: err.as_ref().and_then(|e| e.get("code")).and_then(Value::as_i64),
        error_title: err.as_ref().and_then(|e| e.get("title").or_else(|| e.get("message"))).and_then(str_of),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wrap(value: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
    }

    #[test]
    fn every_message_type_of_a_batch_is_parsed() {
        let body = wrap(json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN1"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "447700900001"}],
            "messages": [
                {"from": "447700900001", "id": "w1", "timestamp": "1700000000", "type": "text", "text": {"body": "hola"}},
                {"from": "447700900001", "id": "w2", "timestamp": "1700000001", "type": "interactive",
                 "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}},
                {"from": "447700900001", "id": "w3", "timestamp": "1", "type": "interactive",
                 "interactive": {"type": "list_reply", "list_reply": {"id": "r2", "title": "Row 2", "description": "d"}}},
                {"from": "447700900001", "id": "w4", "timestamp": "1", "type": "image", "image": {"id": "MEDIA", "caption": "look"}},
                {"from": "447700900001", "id": "w5", "timestamp": "1", "type": "audio", "audio": {"id": "AUD"}},
                {"from": "447700900001", "id": "w6", "timestamp": "1", "type": "location", "location": {"latitude": 1.5, "longitude": -2.0, "name": "Home"}},
                {"from": "447700900001", "id": "w7", "timestamp": "1", "type": "reaction", "reaction": {"message_id": "w1", "emoji": "👍"}},
                {"id": "w8", "timestamp": "1", "type": "text", "text": {"body": "no from"}}
            ]
        }));
        let b = parse(&body);
        assert_eq!(b.messages.len(), 8, "{:?}", b.ignored);
        assert_eq!(b.messages[0].content, Content::Text { body: "hola".into() });
        assert_eq!(b.messages[0].channel_external_id, "PN1");
        assert_eq!(b.messages[0].sender_name.as_deref(), Some("Ana"));
        assert_eq!(b.messages[1].content, Content::Choice { id: "yes".into(), title: "Yes".into() });
        assert_eq!(b.messages[2].content, Content::Choice { id: "r2".into(), title: "Row 2".into() });
        assert_eq!(b.messages[3].content, Content::Image { media_id: "MEDIA".into(), caption: Some("look".into()) });
        assert_eq!(b.messages[4].content, Content::Audio { media_id: "AUD".into() });
        assert!(matches!(b.messages[5].content, Content::Location { latitude, .. } if latitude == 1.5));
        assert_eq!(b.messages[6].content, Content::Reaction { emoji: "👍".into(), message_id: "w1".into() });
        assert_eq!(b.messages[7].sender, "447700900001", "sender from contacts[].wa_id");
    }

    #[test]
    fn the_business_scoped_user_id_is_the_sender_when_phone_ids_are_absent() {
        let body = wrap(json!({
            "metadata": {"phone_number_id": "PN1"},
            "contacts": [{"profile": {"name": "B"}, "user_id": "US.13491208655302741918"}],
            "messages": [{"id": "w1", "timestamp": "1", "type": "text", "text": {"body": "hi"}}]
        }));
        assert_eq!(parse(&body).messages[0].sender, "US.13491208655302741918");
    }

    #[test]
    fn statuses_are_parsed_with_their_errors() {
        let body = wrap(json!({
            "metadata": {"phone_number_id": "PN1"},
            "statuses": [
                {"id": "o1", "status": "delivered", "timestamp": "5", "recipient_id": "4477"},
                {"id": "o2", "status": "failed", "timestamp": "6", "recipient_id": "4477",
                 "errors": [{"code": 131047, "title": "Re-engagement message"}]}
            ]
        }));
        let b = parse(&body);
        assert_eq!(b.statuses.len(), 2);
        assert_eq!(b.statuses[0].state, DeliveryState::Delivered);
        assert_eq!(b.statuses[1].error_code, Some(131047));
    }

    #[test]
    fn other_objects_and_shapes_are_ignored_not_errors() {
        assert!(parse(&json!({"object": "page"})).messages.is_empty());
        assert!(!parse(&json!({"object": "page"})).ignored.is_empty());
        assert!(parse(&json!([1, 2])).messages.is_empty());
        assert!(parse(&json!({"object": "whatsapp_business_account", "entry": "x"})).messages.is_empty());
    }
}
