//! Domain types: what a platform sent us, parsed and validated once at the edge.

use serde::{Deserialize, Serialize};

/// A messaging platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Whatsapp,
    Messenger,
    Instagram,
}

impl Platform {
    /// The stable lowercase name (`whatsapp`, `messenger`, `instagram`) used in URLs and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Whatsapp => "whatsapp",
            Platform::Messenger => "messenger",
            Platform::Instagram => "instagram",
        }
    }

    /// Parses [`Platform::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "whatsapp" => Some(Platform::Whatsapp),
            "messenger" => Some(Platform::Messenger),
            "instagram" => Some(Platform::Instagram),
            _ => None,
        }
    }

    /// Longest text of one outgoing message, in characters.
    pub fn max_message_chars(self) -> usize {
        match self {
            Platform::Whatsapp => 4096,
            Platform::Messenger => 2000,
            Platform::Instagram => 1000,
        }
    }
}

/// What an inbound message carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
    },
    /// A tapped button or list row (WhatsApp interactive, Messenger quick reply).
    Choice {
        id: String,
        title: String,
    },
    Image {
        media_id: String,
        caption: Option<String>,
    },
    Audio {
        media_id: String,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
    Reaction {
        emoji: String,
        message_id: String,
    },
    /// A Messenger / Instagram postback button.
    Postback {
        payload: String,
        title: String,
    },
    /// Any other attachment (Messenger/Instagram `attachments[]`, WhatsApp types herd does not read).
    Other {
        kind: String,
    },
}

impl Content {
    /// The text the model reads for this message (empty when there is none).
    pub fn as_prompt_text(&self) -> String {
        match self {
            Content::Text { body } => body.clone(),
            Content::Choice { title, .. } => title.clone(),
            Content::Image { caption, .. } => caption.clone().map_or_else(|| "[image]".into(), |c| format!("[image] {c}")),
            Content::Audio { .. } => "[voice message]".into(),
            Content::Location { latitude, longitude, name } => match name {
                Some(n) => format!("[location: {n} ({latitude}, {longitude})]"),
                None => format!("[location: {latitude}, {longitude}]"),
            },
            Content::Reaction { emoji, .. } => format!("[reaction {emoji}]"),
            Content::Postback { title, .. } => title.clone(),
            Content::Other { kind } => format!("[{kind}]"),
        }
    }

    /// Short kind name for storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Choice { .. } => "choice",
            Content::Image { .. } => "image",
            Content::Audio { .. } => "audio",
            Content::Location { .. } => "location",
            Content::Reaction { .. } => "reaction",
            Content::Postback { .. } => "postback",
            Content::Other { .. } => "other",
        }
    }

    /// Whether herd answers this message (reactions are recorded, not answered).
    pub fn wants_reply(&self) -> bool {
        !matches!(self, Content::Reaction { .. })
    }
}

/// One message a user sent, as parsed from a webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub platform: Platform,
    /// The business side: WhatsApp `phone_number_id`, Page id or Instagram account id.
    pub channel_external_id: String,
    /// The user: WhatsApp `wa_id` / `from` (or business-scoped `user_id`), Messenger PSID, Instagram IGSID.
    pub sender: String,
    /// The platform's message id (`wamid…`, `mid…`); the dedup key.
    pub platform_message_id: String,
    /// Seconds since the epoch, as the platform stamped it.
    pub timestamp: i64,
    pub content: Content,
    /// Display name from the webhook, when given.
    pub sender_name: Option<String>,
    /// NUL characters removed from the platform's strings (PostgreSQL cannot store them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub removed_nul: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Removes NUL characters from `s`; returns how many.
fn strip_nul(s: &mut String) -> u32 {
    let n = s.matches('\0').count() as u32;
    if n > 0 {
        s.retain(|c| c != '\0');
    }
    n
}

impl InboundMessage {
    /// Removes the characters PostgreSQL cannot store (NUL) from every string, counting them in
    /// `removed_nul`: the message is recorded and answered without them.
    pub fn make_storable(&mut self) {
        let mut n = strip_nul(&mut self.channel_external_id) + strip_nul(&mut self.sender) + strip_nul(&mut self.platform_message_id);
        if let Some(name) = &mut self.sender_name {
            n += strip_nul(name);
        }
        n += match &mut self.content {
            Content::Text { body } => strip_nul(body),
            Content::Choice { id, title } => strip_nul(id) + strip_nul(title),
            Content::Image { media_id, caption } => strip_nul(media_id) + caption.as_mut().map_or(0, strip_nul),
            Content::Audio { media_id } => strip_nul(media_id),
            Content::Location { name, .. } => name.as_mut().map_or(0, strip_nul),
            Content::Reaction { emoji, message_id } => strip_nul(emoji) + strip_nul(message_id),
            Content::Postback { payload, title } => strip_nul(payload) + strip_nul(title),
            Content::Other { kind } => strip_nul(kind),
        };
        self.removed_nul += n;
    }
}

/// State of a message herd sent, as the platform reports it. States only move forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryState {
    /// Every state, in order of progress.
    pub const ALL: &'static [DeliveryState] =
        &[DeliveryState::Accepted, DeliveryState::Sent, DeliveryState::Delivered, DeliveryState::Read, DeliveryState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(DeliveryState::Accepted),
            "sent" => Some(DeliveryState::Sent),
            "delivered" => Some(DeliveryState::Delivered),
            "read" => Some(DeliveryState::Read),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }

    /// Order of progress: a state may replace another only if its rank is higher.
    pub fn rank(self) -> i16 {
        self as i16
    }
}

/// A status callback about a message herd sent (WhatsApp `statuses[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub platform: Platform,
    pub channel_external_id: String,
    pub platform_message_id: String,
    pub state: DeliveryState,
    pub timestamp: i64,
    pub recipient: Option<String>,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

impl StatusUpdate {
    /// Removes NUL characters (PostgreSQL cannot store them) from every string.
    pub fn make_storable(&mut self) {
        strip_nul(&mut self.channel_external_id);
        strip_nul(&mut self.platform_message_id);
        if let Some(r) = &mut self.recipient {
            strip_nul(r);
        }
        if let Some(t) = &mut self.error_title {
            strip_nul(t);
        }
    }
}

/// What one webhook delivery contained.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookBatch {
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
    /// Parts skipped on purpose (echoes, unknown fields or types), with why — logged, not errors.
    pub ignored: Vec<String>,
}

/// Splits a reply into pieces of at most `max_chars` characters, at a sentence end when one is
/// in the second half of the piece, else at a space, else hard. Pieces keep their order.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let chars: Vec<(usize, char)> = rest.char_indices().collect();
        if chars.len() <= max_chars {
            parts.push(rest.to_string());
            break;
        }
        // byte offset just past the max_chars-th character
        let limit = chars[max_chars].0;
        let window = &rest[..limit];
        let half = chars[max_chars / 2].0;
        let sentence = window
            .char_indices()
            .filter(|(i, c)| *i >= half && matches!(c, '.' | '!' | '?' | '\n'))
            .map(|(i, c)| i + c.len_utf8())
            .next_back();
        let cut = sentence.or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > 0)).unwrap_or(limit);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        if !head.is_empty() {
            parts.push(head.to_string());
        }
        rest = tail.trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_leave_every_string_of_a_message_and_are_counted() {
        let mut m = InboundMessage {
            platform: Platform::Whatsapp,
            channel_external_id: "1\0".into(),
            sender: "44\u{0}7".into(),
            platform_message_id: "wamid.\0X".into(),
            timestamp: 0,
            content: Content::Image { media_id: "m".into(), caption: Some("a\0b\0".into()) },
            sender_name: Some("\0Ana".into()),
            removed_nul: 0,
        };
        m.make_storable();
        assert_eq!((m.channel_external_id.as_str(), m.sender.as_str(), m.platform_message_id.as_str()), ("1", "447", "wamid.X"));
        assert_eq!(m.content, Content::Image { media_id: "m".into(), caption: Some("ab".into()) });
        assert_eq!((m.sender_name.as_deref(), m.removed_nul), (Some("Ana"), 6));
    }

    #[test]
    fn split_keeps_every_word_in_order_within_the_limit() {
        let text = "First sentence here. Second one is a bit longer! Third? ".repeat(300);
        let parts = split_message(&text, 200);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.chars().count() <= 200));
        let joined: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
        let want: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(joined, want);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.ends_with(['.', '!', '?'])), "sentence cuts");
    }

    #[test]
    fn split_counts_characters_not_bytes_and_cuts_words_only_when_it_must() {
        let emoji = "😀".repeat(25);
        let parts = split_message(&emoji, 10);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 10));
        assert_eq!(split_message("short", 10), vec!["short"]);
        assert_eq!(split_message("  ", 10), Vec::<String>::new());
    }

    #[test]
    fn delivery_states_rank_forward() {
        assert!(DeliveryState::Read.rank() > DeliveryState::Delivered.rank());
        assert!(DeliveryState::Delivered.rank() > DeliveryState::Sent.rank());
        assert_eq!(DeliveryState::parse("read"), Some(DeliveryState::Read));
    }
}
