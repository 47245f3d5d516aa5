//! Messenger (`object: page`) and Instagram (`object: instagram`) webhooks:
//! `entry[].messaging[]` with `sender.id`, `recipient.id`, `timestamp` (ms), `message`
//! (`mid`, `text`, `attachments`, `quick_reply`, `is_echo`) or `postback`.

use crate::{arr, str_of};
use herd_core::{Content, InboundMessage, Platform, WebhookBatch};
use serde_json::Value;

/// Parses a Messenger or Instagram webhook body.
pub fn parse(platform: Platform, body: &Value) -> WebhookBatch {
    let mut out = WebhookBatch::default();
    let want = if platform == Platform::Instagram { "instagram" } else { "page" };
    if body.get("object").and_then(Value::as_str) != Some(want) {
        out.ignored.push(format!("object {:?} is not {want}", body.get("object")));
        return out;
    }
    for entry in arr(body, "entry") {
        let entry_id = entry.get("id").and_then(str_of);
        for ev in arr(&entry, "messaging") {
            match event(platform, &ev, entry_id.as_deref()) {
                Ok(Some(m)) => out.messages.push(m),
                Ok(None) => out.ignored.push("echo of herd's own message".into()),
                Err(why) => out.ignored.push(why),
            }
        }
    }
    out
}

fn event(platform: Platform, ev: &Value, entry_id: Option<&str>) -> Result<Option<InboundMessage>, String> {
    let sender = ev.pointer("/sender/id").and_then(str_of).filter(|s| !s.is_empty()).ok_or("event without sender.id")?;
    let recipient = ev.pointer("/recipient/id").and_then(str_of).or(entry_id.map(str::to_string)).ok_or("event without recipient.id")?;
    let ts_ms = ev.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    let (id, content) = if let Some(msg) = ev.get("message") {
        if msg.get("is_echo").and_then(Value::as_bool) == Some(true) {
            return Ok(None);
        }
        let mid = msg.get("mid").and_then(str_of).filter(|s| !s.is_empty()).ok_or("message without mid")?;
        let content = if let Some(qr) = msg.get("quick_reply") {
            Content::Choice {
                id: qr.get("payload").and_then(str_of).unwrap_or_default(),
                title: msg.get("text").and_then(str_of).unwrap_or_default(),
            }
        } else if let Some(text) = msg.get("text").and_then(str_of) {
            Content::Text { body: text }
        } else if let Some(a) = msg.get("attachments").and_then(Value::as_array).and_then(|a| a.first()) {
            let kind = a.get("type").and_then(str_of).unwrap_or_else(|| "attachment".into());
            let url = a.pointer("/payload/url").and_then(str_of).unwrap_or_default();
            match kind.as_str() {
                "image" => Content::Image { media_id: url, caption: None },
                "audio" => Content::Audio { media_id: url },
                "location" => Content::Location {
                    latitude: a.pointer("/payload/coordinates/lat").and_then(Value::as_f64).unwrap_or(0.0),
                    longitude: a.pointer("/payload/coordinates/long").and_then(Value::as_f64).unwrap_or(0.0),
                    name: a.get("title").and_then(str_of),
                },
                _ => Content::Other { kind },
            }
        } else {
            return Err(format!("message {mid} without text or attachments"));
        };
        (mid, content)
    } else if let Some(pb) = ev.get("postback") {
        let payload = pb.get("payload").and_then(str_of).unwrap_or_default();
        // Postbacks carry a mid on newer API versions; else sender + timestamp is unique.
        let id = pb.get("mid").and_then(str_of).unwrap_or_else(|| format!("postback:{sender}:{ts_ms}"));
        (id, Content::Postback { payload, title: pb.get("title").and_then(str_of).unwrap_or_default() })
    } else {
        return Err("event without message or postback (delivery/read/referral events are not handled)".into());
    };
    Ok(Some(InboundMessage {
        platform,
        channel_external_id: recipient,
        sender,
        platform_message_id: id,
        timestamp: ts_ms / 1000,
        content,
        sender_name: None,
        removed_nul: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts_quick_replies_attachments_and_postbacks_are_parsed_and_echoes_skipped() {
        let body = json!({"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [
            {"sender": {"id": "U1"}, "recipient": {"id": "PAGE"}, "timestamp": 1700000000123u64, "message": {"mid": "m1", "text": "hi"}},
            {"sender": {"id": "U1"}, "recipient": {"id": "PAGE"}, "timestamp": 2, "message": {"mid": "m2", "text": "Red", "quick_reply": {"payload": "RED"}}},
            {"sender": {"id": "U1"}, "recipient": {"id": "PAGE"}, "timestamp": 3, "message": {"mid": "m3", "attachments": [{"type": "image", "payload": {"url": "https://x/y.png"}}]}},
            {"sender": {"id": "U1"}, "recipient": {"id": "PAGE"}, "timestamp": 4, "postback": {"title": "Start", "payload": "GET_STARTED"}},
            {"sender": {"id": "PAGE"}, "recipient": {"id": "U1"}, "timestamp": 5, "message": {"mid": "m5", "text": "echo", "is_echo": true}}
        ]}]});
        let b = parse(Platform::Messenger, &body);
        assert_eq!(b.messages.len(), 4, "{:?}", b.ignored);
        assert_eq!(b.messages[0].content, Content::Text { body: "hi".into() });
        assert_eq!(b.messages[0].timestamp, 1700000000);
        assert_eq!(b.messages[0].channel_external_id, "PAGE");
        assert_eq!(b.messages[1].content, Content::Choice { id: "RED".into(), title: "Red".into() });
        assert!(matches!(b.messages[2].content, Content::Image { .. }));
        assert_eq!(b.messages[3].content, Content::Postback { payload: "GET_STARTED".into(), title: "Start".into() });
        assert_eq!(b.ignored.len(), 1, "the echo");
    }

    #[test]
    fn instagram_uses_its_own_object() {
        let body = json!({"object": "instagram", "entry": [{"id": "IG", "messaging": [
            {"sender": {"id": "U"}, "recipient": {"id": "IG"}, "timestamp": 1, "message": {"mid": "i1", "text": "yo"}}]}]});
        assert_eq!(parse(Platform::Instagram, &body).messages.len(), 1);
        assert!(parse(Platform::Messenger, &body).messages.is_empty());
    }
}
