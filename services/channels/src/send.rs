//! Send API clients: WhatsApp Cloud API (`/{version}/{phone_number_id}/messages`) and the
//! Messenger / Instagram Send API (`/{version}/{page_or_account_id}/messages`), with errors
//! classified by the platform's `code`.

use herd_core::Platform;
use herd_core::settings::PlatformSettings;
use serde_json::{Value, json};
use std::time::Duration;

/// What to do about a failed send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendAction {
    /// Rate limits, 5xx and network errors: try again with backoff.
    Retry,
    /// Outside the 24-hour customer-service window: record, do not retry.
    OutsideWindow,
    /// Any other client error: dead-letter with the reason.
    Permanent,
}

/// A failed Send API call.
#[derive(Clone, Debug, thiserror::Error)]
#[error("send API: HTTP {status}, code {code:?}: {message}")]
pub struct SendError {
    /// HTTP status; 0 for a network error.
    pub status: u16,
    pub code: Option<i64>,
    pub message: String,
    /// How long the platform asked us to wait (`Retry-After`), if it did.
    pub retry_after: Option<Duration>,
    /// The platform may have accepted the message anyway: the request may have reached it and
    /// no clear refusal came back (a timeout, a reset, a 5xx other than 503).
    pub in_doubt: bool,
}

/// WhatsApp rate-limit codes (4: app, 80007: account, 130429: throughput, 131048: spam rate,
/// 131056: pair rate) and Messenger's 613.
pub const RATE_LIMIT_CODES: [i64; 6] = [4, 80007, 130429, 131048, 131056, 613];
/// Outside the 24-hour window: WhatsApp 131047, Messenger 1545041 (with subcode) / 10.
pub const OUTSIDE_WINDOW_CODES: [i64; 2] = [131047, 1545041];

impl SendError {
    /// Classifies the error by the platform's code, then by HTTP status.
    pub fn action(&self) -> SendAction {
        match self.code {
            Some(c) if RATE_LIMIT_CODES.contains(&c) => SendAction::Retry,
            Some(c) if OUTSIDE_WINDOW_CODES.contains(&c) => SendAction::OutsideWindow,
            _ if self.status == 0 || self.status >= 500 || self.status == 429 => SendAction::Retry,
            _ => SendAction::Permanent,
        }
    }
}

/// The Send API client of every platform (cheap to clone).
#[derive(Clone)]
pub struct SendClient {
    http: reqwest::Client,
    cfg: PlatformSettings,
}

/// Where and how to send for one channel.
#[derive(Clone, Debug)]
pub struct ChannelRef<'a> {
    pub platform: Platform,
    pub external_id: &'a str,
    pub access_token: &'a str,
}

/// Makes `ring` the process's TLS crypto provider if none is set yet (HTTPS to the Graph API).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl SendClient {
    /// A client for the configured base URLs.
    pub fn new(cfg: PlatformSettings) -> Self {
        install_crypto();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.send_timeout_ms))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, cfg }
    }

    fn url(&self, ch: &ChannelRef<'_>) -> String {
        let base = match ch.platform {
            Platform::Whatsapp => &self.cfg.whatsapp_base_url,
            Platform::Messenger => &self.cfg.messenger_base_url,
            Platform::Instagram => &self.cfg.instagram_base_url,
        };
        format!("{}/{}/{}/messages", base.trim_end_matches('/'), self.cfg.graph_api_version, ch.external_id)
    }

    async fn post(&self, ch: &ChannelRef<'_>, body: Value) -> Result<Value, SendError> {
        let resp = self.http.post(self.url(ch)).bearer_auth(ch.access_token).json(&body).send().await.map_err(|e| SendError {
            status: 0,
            code: None,
            message: e.to_string(),
            retry_after: None,
            // A connection that was never made carried nothing.
            in_doubt: !e.is_connect(),
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let err = v.get("error");
        Err(SendError {
            status,
            code: err.and_then(|e| e.get("code")).and_then(Value::as_i64),
            message: err.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("no error message").to_string(),
            retry_after,
            in_doubt: status >= 500 && status != 503,
        })
    }

    /// Sends a text; returns the platform's id of the sent message.
    pub async fn send_text(&self, ch: &ChannelRef<'_>, to: &str, text: &str) -> Result<Option<String>, SendError> {
        let body = match ch.platform {
            Platform::Whatsapp => json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                "type": "text", "text": {"preview_url": false, "body": text}
            }),
            Platform::Messenger | Platform::Instagram => json!({
                "recipient": {"id": to}, "messaging_type": "RESPONSE", "message": {"text": text}
            }),
        };
        let v = self.post(ch, body).await?;
        Ok(v.pointer("/messages/0/id").or_else(|| v.get("message_id")).and_then(Value::as_str).map(str::to_string))
    }

    /// Marks the user's message read and shows "typing…" while herd writes the reply.
    pub async fn mark_read_and_typing(&self, ch: &ChannelRef<'_>, to: &str, message_id: &str) -> Result<(), SendError> {
        match ch.platform {
            Platform::Whatsapp => {
                self.post(
                    ch,
                    json!({"messaging_product": "whatsapp", "status": "read", "message_id": message_id,
                                     "typing_indicator": {"type": "text"}}),
                )
                .await?;
            }
            Platform::Messenger | Platform::Instagram => {
                self.post(ch, json!({"recipient": {"id": to}, "sender_action": "mark_seen"})).await?;
                self.post(ch, json!({"recipient": {"id": to}, "sender_action": "typing_on"})).await?;
            }
        }
        Ok(())
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (a date in the past is no wait).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
    Some(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(status: u16, code: Option<i64>) -> SendError {
        SendError { status, code, message: String::new(), retry_after: None, in_doubt: false }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "in the past");
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&soon).expect("date");
        assert!(d > Duration::from_secs(85) && d <= Duration::from_secs(90), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
    }

    #[test]
    fn errors_are_classified_by_code_then_status() {
        for c in RATE_LIMIT_CODES {
            assert_eq!(e(400, Some(c)).action(), SendAction::Retry, "{c}");
        }
        assert_eq!(e(400, Some(131047)).action(), SendAction::OutsideWindow);
        assert_eq!(e(400, Some(1545041)).action(), SendAction::OutsideWindow);
        assert_eq!(e(400, Some(100)).action(), SendAction::Permanent);
        assert_eq!(e(503, None).action(), SendAction::Retry);
        assert_eq!(e(0, None).action(), SendAction::Retry);
    }
}
