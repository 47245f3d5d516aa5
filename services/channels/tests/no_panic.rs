//! The webhook parsers and the signature check never panic, whatever arrives.

use herd_channels::{parse_webhook, signature};
use herd_core::Platform;
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z_]{0,3}".prop_map(Value::String),
        prop_oneof![
            Just("whatsapp_business_account"),
            Just("page"),
            Just("instagram"),
            Just("messages"),
            Just("text"),
            Just("interactive"),
            Just("image"),
            Just("location"),
            Just("reaction"),
            Just("statuses"),
            Just("failed")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("object"),
            Just("entry"),
            Just("changes"),
            Just("value"),
            Just("field"),
            Just("metadata"),
            Just("phone_number_id"),
            Just("messages"),
            Just("statuses"),
            Just("contacts"),
            Just("from"),
            Just("id"),
            Just("type"),
            Just("text"),
            Just("body"),
            Just("interactive"),
            Just("button_reply"),
            Just("list_reply"),
            Just("location"),
            Just("latitude"),
            Just("errors"),
            Just("code"),
            Just("messaging"),
            Just("sender"),
            Just("recipient"),
            Just("message"),
            Just("mid"),
            Just("attachments"),
            Just("payload"),
            Just("postback"),
            Just("is_echo"),
            Just("quick_reply"),
            Just("timestamp"),
            Just("status"),
            Just("wa_id"),
            Just("user_id")
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_any_json_never_panics(v in json_value()) {
        for p in [Platform::Whatsapp, Platform::Messenger, Platform::Instagram] {
            let b = parse_webhook(p, &v);
            // whatever was parsed names a channel and a message id
            for m in &b.messages {
                prop_assert!(!m.platform_message_id.is_empty() && !m.sender.is_empty());
            }
        }
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly_and_signatures_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), header in ".{0,80}") {
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            let _ = parse_webhook(Platform::Whatsapp, &v);
        }
        let _ = signature::verify(b"secret", &body, Some(&header));
        let good = signature::sign(b"secret", &body);
        prop_assert!(signature::verify(b"secret", &body, Some(&good)).is_ok());
    }
}
