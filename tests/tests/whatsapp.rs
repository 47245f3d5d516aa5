//! WhatsApp end to end: signed webhooks in, replies out through the stand-in Graph API, over real
//! Redis and PostgreSQL.

use herd_e2e::*;
use serde_json::json;

type Rt = ();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_text_gets_exactly_one_reply_to_the_right_number_and_recipient() -> Rt {
    let herd = Herd::start(1).await;
    let body = whatsapp_texts(&[("447700900001", "wamid.A1", "Hello")]);
    let (status, v) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(herd.quiet_sends().await.len(), 1);
    assert_eq!(sends[0].path, format!("/v21.0/{WA_PHONE_ID}/messages"));
    assert_eq!(sends[0].to(), Some("447700900001"));
    assert_eq!(sends[0].text(), Some("Hi"), "the demo model's golden reply to Hello");
    // read receipt + typing before the reply
    assert!(herd.stub.calls().iter().any(|c| c.body["status"] == "read" && c.body["message_id"] == "wamid.A1"));
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 1).await;
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'out' AND end_to_end_ms IS NOT NULL").await, 1);
    assert_eq!(herd.count("SELECT count(*) FROM deliveries WHERE state = 'accepted'").await, 1);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_three_times_is_answered_once() -> Rt {
    let herd = Herd::start(2).await;
    let body = whatsapp_texts(&[("447700900002", "wamid.DUP", "Hello")]);
    let mut dups = 0;
    for _ in 0..3 {
        let (status, v) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
        assert_eq!(status, 200);
        dups += v["duplicates"].as_i64().unwrap_or(0);
    }
    assert_eq!(dups, 2);
    herd.wait_for_sends(1).await;
    assert_eq!(herd.quiet_sends().await.len(), 1);
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in'").await, 1);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_signature_is_401_and_nothing_is_queued_or_stored() -> Rt {
    let herd = Herd::start(1).await;
    let body = whatsapp_texts(&[("447700900003", "wamid.BAD", "Hello")]);
    let (status, v) = herd.post("whatsapp", &body, Some("not-the-secret")).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("bad_signature")));
    let (status, _) = herd.post("whatsapp", &body, None).await;
    assert_eq!(status, 401);
    // a signature over other bytes (the body re-serialised) fails too
    let mut other = body.clone();
    other.push(b' ');
    let resp = herd
        .http
        .post(format!("{}/webhooks/whatsapp", herd.gateway))
        .header("x-hub-signature-256", sign(WA_SECRET, &body))
        .body(other)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(herd.stream_len().await, 0);
    assert_eq!(herd.quiet_sends().await.len(), 0);
    assert_eq!(herd.count("SELECT count(*) FROM messages").await, 0);
    // the rejected message was not marked seen: a correct delivery still goes through
    let (status, v) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_and_non_ascii_text_signed_over_the_raw_bytes_is_accepted() -> Rt {
    let herd = Herd::start(1).await;
    // Hand-written JSON with escapes and raw UTF-8 mixed: the signature covers these exact bytes.
    let raw = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{WA_PHONE_ID}"}},"contacts":[{{"wa_id":"4915100000001","profile":{{"name":"Jürgen"}}}}],"messages":[{{"from":"4915100000001","id":"wamid.UTF","timestamp":"1","type":"text","text":{{"body":"Grüße 😀 \u00e9t\u00e9 — ok?"}}}}]}}}}]}}]}}"#
    );
    let (status, v) = herd.post("whatsapp", raw.as_bytes(), Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    herd.wait_for_sends(1).await;
    let body: String =
        sqlx::query_scalar("SELECT body FROM messages WHERE direction = 'in'").fetch_one(&herd.store.pool).await.expect("row");
    assert_eq!(body, "Grüße 😀 été — ok?");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_five_messages_from_two_users_gets_five_replies_each_users_in_order() -> Rt {
    let herd = Herd::start(2).await;
    let (a, b) = ("447700900010", "447700900020");
    let body = whatsapp_texts(&[
        (a, "wamid.B1", "Hello"),
        (b, "wamid.B2", "How are you?"),
        (a, "wamid.B3", "Tell me a joke"),
        (b, "wamid.B4", "What is AI?"),
        (a, "wamid.B5", "Who wrote Hamlet?"),
    ]);
    let (status, v) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(5)));
    herd.wait_for_sends(5).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 5).await;
    assert_eq!(herd.quiet_sends().await.len(), 5);
    // Each reply answers its message, and each user's replies follow the order of their messages.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.platform_message_id, u.external_id FROM messages o JOIN messages i ON i.id = o.reply_to
         JOIN conversations c ON c.id = i.conversation_id JOIN users u ON u.id = c.user_id
         WHERE o.direction = 'out' ORDER BY o.id",
    )
    .fetch_all(&herd.store.pool)
    .await
    .expect("rows");
    let order = |user: &str| rows.iter().filter(|(_, u)| u == user).map(|(m, _)| m.clone()).collect::<Vec<_>>();
    assert_eq!(order(a), vec!["wamid.B1", "wamid.B3", "wamid.B5"]);
    assert_eq!(order(b), vec!["wamid.B2", "wamid.B4"]);
    let sent_to: Vec<_> = herd.stub.sends().iter().map(|c| c.to().map(str::to_string)).collect();
    assert_eq!(sent_to.iter().filter(|t| t.as_deref() == Some(a)).count(), 3);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_turn_is_taken_over_and_the_message_answered_once() -> Rt {
    let mut herd = Herd::start(0).await;
    let policy = herd.policy.clone();
    // The first worker takes the message and hangs in its turn (the read/typing call is held).
    herd.stub.hold_next_typing(std::time::Duration::from_secs(30));
    let first = herd.spawn_worker("doomed", policy.clone());
    let (status, _) = herd.post("whatsapp", &whatsapp_texts(&[("447700900030", "wamid.K1", "Hello")]), Some(WA_SECRET)).await;
    assert_eq!(status, 200);
    herd.wait_until(10, "the first worker to start the turn", || async { herd.stub.calls().iter().any(|c| c.body["status"] == "read") })
        .await;
    herd.kill_worker(first);
    // Another worker reclaims the entry once it has been idle past claim_idle_ms.
    herd.spawn_worker("rescuer", policy);
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(herd.quiet_sends().await.len(), 1);
    assert_eq!(sends[0].to(), Some("447700900030"));
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'sent'", 1).await;
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_send_is_retried_and_delivered_once() -> Rt {
    let herd = Herd::start(1).await;
    herd.stub.fail_next_sends(&[(400, 130429)]);
    herd.post("whatsapp", &whatsapp_texts(&[("447700900040", "wamid.R1", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(20, "the reply to be sent", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'sent'").await == 1 })
        .await;
    let calls = herd.quiet_sends().await;
    assert_eq!(calls.len(), 2, "one failed try, one success");
    assert_eq!(herd.count("SELECT attempts::bigint FROM outbox").await, 2);
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'out'").await, 1);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_24_hour_window_the_send_is_recorded_and_not_retried() -> Rt {
    let herd = Herd::start(1).await;
    herd.stub.fail_next_sends(&[(400, 131047)]);
    herd.post("whatsapp", &whatsapp_texts(&[("447700900050", "wamid.W1", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(20, "the outbox to record it", || async {
        herd.count("SELECT count(*) FROM outbox WHERE state = 'expired'").await == 1
    })
    .await;
    assert_eq!(herd.quiet_sends().await.len(), 1, "no retry");
    let err: String = sqlx::query_scalar("SELECT last_error FROM outbox").fetch_one(&herd.store.pool).await.expect("row");
    assert!(err.contains("131047"), "{err}");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'failed'").await, 1);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_errors_go_to_the_dead_letter_stream_with_the_reason() -> Rt {
    let herd = Herd::start(1).await;
    herd.stub.fail_next_sends(&[(400, 100)]);
    herd.post("whatsapp", &whatsapp_texts(&[("447700900060", "wamid.D1", "Hello")]), Some(WA_SECRET)).await;
    let key = herd.queue.dead_letter_key().to_string();
    herd.wait_until(20, "a dead letter", || async {
        let mut c = herd.queue.connection();
        redis::cmd("XLEN").arg(&key).query_async::<i64>(&mut c).await.unwrap_or(0) == 1
    })
    .await;
    let mut c = herd.queue.connection();
    let v: redis::Value = redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut c).await.expect("xrange");
    assert!(format!("{v:?}").contains("code Some(100)"), "{v:?}");
    assert_eq!(herd.queue.pending_count().await.expect("pending"), 0, "acknowledged");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_move_a_delivery_forward_only() -> Rt {
    let herd = Herd::start(1).await;
    herd.post("whatsapp", &whatsapp_texts(&[("447700900070", "wamid.S1", "Hello")]), Some(WA_SECRET)).await;
    let sends = herd.wait_for_sends(1).await;
    assert!(!sends.is_empty());
    herd.wait_count("SELECT count(*) FROM deliveries", 1).await;
    let out_id: String = sqlx::query_scalar("SELECT platform_message_id FROM deliveries").fetch_one(&herd.store.pool).await.expect("row");
    let status = |s: &str, ts: i64| {
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": WA_PHONE_ID}, "statuses": [{"id": out_id, "status": s, "timestamp": ts.to_string(), "recipient_id": "447700900070"}]}}]}]}))
        .expect("json")
    };
    let state =
        || async { sqlx::query_scalar::<_, String>("SELECT state FROM deliveries").fetch_one(&herd.store.pool).await.expect("row") };
    herd.post("whatsapp", &status("delivered", 2), Some(WA_SECRET)).await;
    herd.wait_until(10, "delivered", || async { state().await == "delivered" }).await;
    // a late "sent" does not move it back
    herd.post("whatsapp", &status("sent", 1), Some(WA_SECRET)).await;
    herd.post("whatsapp", &status("read", 3), Some(WA_SECRET)).await;
    herd.wait_until(10, "read", || async { state().await == "read" }).await;
    herd.post("whatsapp", &status("delivered", 4), Some(WA_SECRET)).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(state().await, "read");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_finishes_the_turn_in_flight_and_acknowledges_it() -> Rt {
    let herd = Herd::start(1).await;
    // Hold the worker mid-turn for a moment, then ask it to stop while it is there.
    herd.stub.hold_next_typing(std::time::Duration::from_millis(800));
    herd.post("whatsapp", &whatsapp_texts(&[("447700900080", "wamid.G1", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(10, "the turn to start", || async { herd.stub.calls().iter().any(|c| c.body["status"] == "read") }).await;
    let (store, queue, stub) = (herd.store.clone(), herd.queue.clone(), herd.stub.clone());
    herd.stop().await; // waits for the worker, which has shutdown_grace_ms = 2 s
    assert_eq!(stub.sends().len(), 1, "the reply in flight was finished");
    assert_eq!(queue.pending_count().await.expect("pending"), 0, "and acknowledged");
    let answered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'answered'").fetch_one(&store.pool).await.expect("count");
    assert_eq!(answered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conversations_are_decoded_together_by_one_engine() -> Rt {
    let herd = Herd::start(1).await;
    let users: Vec<String> = (0..8).map(|i| format!("4477009002{i:02}")).collect();
    let msgs: Vec<(&str, String, &str)> =
        users.iter().enumerate().map(|(i, u)| (u.as_str(), format!("wamid.C{i}"), "Tell me a joke")).collect();
    let refs: Vec<(&str, &str, &str)> = msgs.iter().map(|(u, id, t)| (*u, id.as_str(), *t)).collect();
    let (status, _) = herd.post("whatsapp", &whatsapp_texts(&refs), Some(WA_SECRET)).await;
    assert_eq!(status, 200);
    let sends = herd.wait_for_sends(8).await;
    // every user got the demo model's (greedy, deterministic) joke
    let texts: std::collections::HashSet<_> = sends.iter().filter_map(|c| c.text()).collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let peak = herd.engine.stats().peak_running.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak > 1, "conversations were batched together (peak {peak} in one step)");
    herd.stop().await;
}
