//! Messenger end to end, the gateway's answers to bad input, verification, rate limits and long
//! replies.

use herd_e2e::*;
use herd_store::DecisionRecord;
use herd_worker::{Decision, Output, PolicyHook, TurnContext};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messenger_text_is_answered_through_the_page_send_api_as_a_response() {
    let herd = Herd::start(1).await;
    let body = messenger_event(json!({"sender": {"id": "PSID1"}, "recipient": {"id": PAGE_ID}, "timestamp": 1700000000000u64,
                                      "message": {"mid": "m.1", "text": "Hello"}}));
    let (status, v) = herd.post("messenger", &body, Some(PAGE_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(sends[0].path, format!("/v21.0/{PAGE_ID}/messages"));
    assert_eq!(sends[0].body["messaging_type"], "RESPONSE");
    assert_eq!(sends[0].to(), Some("PSID1"));
    assert_eq!(sends[0].text(), Some("Hi"));
    assert!(herd.stub.calls().iter().any(|c| c.body["sender_action"] == "typing_on"));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instagram_text_is_answered_through_the_accounts_send_api() {
    let herd = Herd::start(1).await;
    let body = serde_json::to_vec(&json!({"object": "instagram", "entry": [{"id": IG_ID, "time": 1, "messaging": [
        {"sender": {"id": "IGSID1"}, "recipient": {"id": IG_ID}, "timestamp": 1700000000000u64, "message": {"mid": "ig.1", "text": "Hello"}}]}]}))
    .expect("json");
    let (status, v) = herd.post("instagram", &body, Some(IG_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(sends[0].path, format!("/v21.0/{IG_ID}/messages"));
    assert_eq!((sends[0].to(), sends[0].text()), (Some("IGSID1"), Some("Hi")));
    // the Page's secret does not sign for the Instagram account
    let (status, _) = herd.post("instagram", &body, Some(PAGE_SECRET)).await;
    assert_eq!(status, 401);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messenger_echo_gets_no_reply() {
    let herd = Herd::start(1).await;
    let body = messenger_event(json!({"sender": {"id": PAGE_ID}, "recipient": {"id": "PSID1"}, "timestamp": 1,
                                      "message": {"mid": "m.echo", "text": "our own words", "is_echo": true}}));
    let (status, v) = herd.post("messenger", &body, Some(PAGE_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(0)));
    assert_eq!(herd.quiet_sends().await.len(), 0);
    assert_eq!(herd.stream_len().await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_400_unknown_objects_are_200_and_bodies_over_the_limit_413() {
    // A small limit keeps the whole body in one write, so the client reads the 413 instead of
    // racing the server's close (input_limits.rs covers huge and endless bodies on raw sockets).
    let herd = Herd::start_with(0, |s| s.gateway.max_body_bytes = 1000, None).await;
    let (status, v) = herd.post("whatsapp", b"{not json", Some(WA_SECRET)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_json")));
    let (status, v) = herd.post("whatsapp", br#"{"object":"user","entry":[]}"#, Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(0)));
    let (status, _) = herd.post("telegram", b"{}", Some(WA_SECRET)).await;
    assert_eq!(status, 404);
    let big = vec![b' '; 1001];
    let (status, _) = herd.post("whatsapp", &big, Some(WA_SECRET)).await;
    assert_eq!(status, 413);
    assert_eq!(herd.stream_len().await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_handshake_echoes_the_challenge_only_for_our_token() {
    let herd = Herd::start(0).await;
    let get = |token: &str| {
        let url = format!("{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444", herd.gateway);
        let http = herd.http.clone();
        async move {
            let r = http.get(url).send().await.expect("answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("verify-me").await, (200, "1158201444".to_string()));
    assert_eq!(get("wrong").await.0, 403);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_the_limit_is_recorded_and_told_to_slow_down_once() {
    let herd = Herd::start_with(1, |s| s.limits.sender_per_minute = 2, None).await;
    let user = "447700900099";
    for i in 0..5 {
        let body = whatsapp_texts(&[(user, &format!("wamid.RL{i}"), "Hello")]);
        let (status, _) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
        assert_eq!(status, 200, "the platform always gets 200");
    }
    herd.wait_until(20, "5 recorded", || async { herd.count("SELECT count(*) FROM messages WHERE direction = 'in'").await == 5 }).await;
    herd.wait_for_sends(3).await;
    let sends = herd.quiet_sends().await;
    let slow = sends.iter().filter(|c| c.text() == Some(herd.settings.limits.slow_down_text.as_str())).count();
    assert_eq!(slow, 1, "one slow-down reply for three limited messages");
    assert_eq!(sends.len(), 3, "two answers and one slow-down");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE status = 'rate_limited'").await, 3);
    herd.stop().await;
}

/// Replaces every reply with a long text (the model is small; the policy hook makes it long).
struct LongReply(String);

impl PolicyHook for LongReply {
    fn check_input(&self, _: &TurnContext<'_>) -> (Decision, Vec<DecisionRecord>) {
        (Decision::Allow, vec![])
    }
    fn check_output(&self, _: &TurnContext<'_>, _: &Decision, _: &str, _: u32) -> (Output, Vec<DecisionRecord>) {
        (Output::Replace(self.0.clone()), vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_character_reply_arrives_as_several_messages_within_the_limit_in_order() {
    let text: String = (0..400).map(|i| format!("Sentence number {i} is here. ")).collect::<String>()[..10_000].to_string();
    let herd = Herd::start_with(1, |_| {}, Some(Arc::new(LongReply(text.clone())))).await;
    herd.post("whatsapp", &whatsapp_texts(&[("447700900111", "wamid.LONG", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(20, "the outbox to finish", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'sent'").await == 1 })
        .await;
    let sends = herd.stub.sends();
    assert!(sends.len() >= 3, "{} parts", sends.len());
    assert!(sends.iter().all(|c| c.text().is_some_and(|t| t.chars().count() <= 4096)));
    let words: Vec<String> =
        sends.iter().flat_map(|c| c.text().unwrap_or("").split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
    let want: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    assert_eq!(words, want, "every word, in order");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'out'").await, sends.len() as i64);
    herd.stop().await;
}
