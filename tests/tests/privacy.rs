//! A privacy deletion is final: a reply in flight when the user's data is erased writes nothing
//! back, and nothing in Redis — keys or stream entries — names the user afterwards. A message
//! the user sends after the erasure is answered as from a new user.

use herd_e2e::*;
use serde_json::json;
use std::time::Duration;

const GONE: &str = "447700900901";
const KEPT: &str = "447700900902";

/// Rows anywhere in PostgreSQL that belong to `user`.
async fn rows_of(herd: &Herd, user: &str) -> i64 {
    let q = "SELECT (SELECT count(*) FROM users WHERE external_id = $1)
              + (SELECT count(*) FROM conversations c JOIN users u ON u.id = c.user_id WHERE u.external_id = $1)
              + (SELECT count(*) FROM messages WHERE body LIKE '%' || $1 || '%' OR platform_message_id LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = c.user_id WHERE u.external_id = $1)
              + (SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.inbound_id JOIN conversations c ON c.id = m.conversation_id
                   JOIN users u ON u.id = c.user_id WHERE u.external_id = $1)";
    sqlx::query_scalar::<_, i64>(q).bind(user).fetch_one(&herd.store.pool).await.expect("count")
}

/// Every Redis key under the herd's prefix and every stream entry, as text.
async fn redis_text(herd: &Herd) -> String {
    let mut c = herd.queue.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg(herd.queue.key("*")).query_async(&mut c).await.expect("keys");
    let mut text = keys.join("\n");
    for stream in herd.queue.stream_keys().iter().map(String::as_str).chain([herd.queue.dead_letter_key()]) {
        let v: redis::Value = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut c).await.expect("xrange");
        text.push_str(&format!("\n{v:?}"));
    }
    text
}

/// `POST /admin/v1/privacy/delete-user` for the user `GONE`: the answer.
async fn erase(herd: &Herd, base: &str, key: &str) -> serde_json::Value {
    let body = json!({"platform": "whatsapp", "external_id": GONE});
    admin_call(&herd.http, base, "POST", "/admin/v1/privacy/delete-user", Some(key), Some(body)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_flight_at_the_erasure_writes_nothing_back_and_redis_keeps_nothing_of_the_user() {
    let herd = Herd::start(1).await;
    let base = herd.start_admin(10_000).await;
    let (_, key) = herd.admin_key("admin").await;
    for (i, text) in ["Hello", "How are you?"].iter().enumerate() {
        herd.post("whatsapp", &whatsapp_texts(&[(GONE, &format!("wamid.GONE{i}"), text)]), Some(WA_SECRET)).await;
        herd.wait_for_sends(i + 1).await;
    }
    herd.post("whatsapp", &whatsapp_texts(&[(KEPT, "wamid.KEPT0", "Hi")]), Some(WA_SECRET)).await;
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'sent'", 3).await;
    // The third reply is held by the platform while the user's data is erased.
    herd.stub.hold_next_send(Duration::from_secs(3));
    herd.post("whatsapp", &whatsapp_texts(&[(GONE, "wamid.GONE2", "Tell me a story")]), Some(WA_SECRET)).await;
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'sending'", 1).await;
    assert!(rows_of(&herd, GONE).await > 0);

    let d = erase(&herd, &base, &key).await;
    assert_eq!(d["database"]["users"], 1, "{d}");
    assert_eq!(d["database"]["messages"], 5, "three in, two out: {d}");
    assert!(d["redis_keys"].as_u64().is_some_and(|n| n >= 4), "dedup keys of 3 messages, the lock: {d}");
    assert_eq!(rows_of(&herd, GONE).await, 0);

    // The held reply completes; whatever the worker does then must not bring anything back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(herd.stub.accepted().iter().filter(|c| c.to() == Some(GONE)).count(), 3, "the held reply did go out");
    assert_eq!(rows_of(&herd, GONE).await, 0, "nothing written back after the erasure");
    let redis = redis_text(&herd).await;
    assert!(!redis.contains(GONE) && !redis.contains("wamid.GONE"), "Redis still names the user:\n{redis}");
    assert_eq!(herd.dead_letters().await, 0);
    // A second call finds nothing left, and says so truly.
    let again = erase(&herd, &base, &key).await;
    assert_eq!(
        (again["database"]["users"].as_i64(), again["redis_keys"].as_u64(), again["stream_entries"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{again}"
    );
    // The other user is untouched.
    assert_eq!(rows_of(&herd, KEPT).await, 5, "user, conversation, message twice, outbox");

    // A platform redelivery of an erased message is dropped; a new message is answered.
    herd.post("whatsapp", &whatsapp_texts(&[(GONE, "wamid.GONE1", "How are you?")]), Some(WA_SECRET)).await;
    let fresh = whatsapp_texts(&[(GONE, "wamid.GONE3", "I am back")]);
    let fresh = String::from_utf8(fresh)
        .expect("utf8")
        .replace("\"timestamp\":\"1700000000\"", &format!("\"timestamp\":\"{}\"", chrono::Utc::now().timestamp() + 1));
    herd.post("whatsapp", fresh.as_bytes(), Some(WA_SECRET)).await;
    herd.wait_until(30, "the new message to be answered", || async {
        herd.stub.accepted().iter().filter(|c| c.to() == Some(GONE)).count() == 4
    })
    .await;
    herd.quiet_sends().await;
    let bodies: Vec<String> = sqlx::query_scalar(
        "SELECT m.body FROM messages m JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = c.user_id
         WHERE u.external_id = $1 AND m.direction = 'in'",
    )
    .bind(GONE)
    .fetch_all(&herd.store.pool)
    .await
    .expect("rows");
    assert_eq!(bodies, ["I am back"], "only the message sent after the erasure");
    herd.stop().await;
}
