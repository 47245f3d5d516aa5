//! The analytics agree with the platform's own counts: every message herd sends is recorded
//! (slow-down replies and policy notices too), refused sends are in the delivery funnel with the
//! platform's codes, a message two blocking rules matched is one block, active users come from
//! one source, and a user who only reacted is placed by their number.

use herd_e2e::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const FAST: &str = "447700900951"; // GB, over the per-sender limit
const LATE: &str = "447700900952"; // outside the 24-hour window
const BAD: &str = "447700900953"; // refused for good (code 100)
const EU: &str = "33612345678"; // FR: two region rules block it
const REACTS: &str = "5511987654321"; // BR: only reacts

fn reaction(from: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": WA_PHONE_ID},
        "contacts": [{"profile": {"name": "R"}, "wa_id": from}],
        "messages": [{"from": from, "id": id, "timestamp": "1700000000", "type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}]}}]}]}))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_equal_what_the_platform_saw() {
    let herd = Herd::start_with(1, |s| s.limits.sender_per_minute = 2, None).await;
    let base = herd.start_admin(10_000).await;
    let (_, key) = herd.admin_key("analyst").await;
    let sent_to = |who: &'static str| herd.stub.accepted().iter().filter(|c| c.to() == Some(who)).count();

    // Four messages in a row: two answered, two over the limit, one slow-down reply.
    for i in 0..4 {
        assert_eq!(herd.post("whatsapp", &whatsapp_texts(&[(FAST, &format!("wamid.F{i}"), "Hello")]), Some(WA_SECRET)).await.0, 200);
    }
    herd.wait_until(30, "two replies and a slow-down", || async { sent_to(FAST) == 3 }).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 3).await;
    // Two refused replies, one at a time (the stub's script is not per recipient).
    herd.stub.fail_next_sends(&[(400, 131047)]);
    herd.post("whatsapp", &whatsapp_texts(&[(LATE, "wamid.L0", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'expired'", 1).await;
    herd.stub.fail_next_sends(&[(400, 100)]);
    herd.post("whatsapp", &whatsapp_texts(&[(BAD, "wamid.B0", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_count("SELECT count(*) FROM outbox WHERE state = 'failed'", 1).await;
    // Blocked (EU end users; not a launch country): the notice is sent once.
    herd.post("whatsapp", &whatsapp_texts(&[(EU, "wamid.E0", "Bonjour")]), Some(WA_SECRET)).await;
    herd.wait_until(30, "the policy notice", || async { sent_to(EU) == 1 }).await;
    herd.post("whatsapp", &reaction(REACTS, "wamid.R0"), Some(WA_SECRET)).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in'", 8).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 4).await;
    let accepted = herd.quiet_sends().await.into_iter().filter(|c| c.status == 200).count() as i64;

    // Fresh rollups of today (live days are refreshed every 30 s; make this one now).
    let today = chrono::Utc::now().date_naive();
    herd_admin::rollup::roll_up(&herd.store.pool, today, true).await.expect("roll up");
    let get = |path: &str| {
        let url = format!("{base}/admin/v1/analytics/{path}?from={today}&to={today}");
        let (http, key) = (herd.http.clone(), key.clone());
        async move { http.get(url).bearer_auth(key).send().await.expect("answer").json::<Value>().await.expect("json") }
    };

    let volume = get("volume").await;
    assert_eq!(volume["days"][0]["messages_out"], accepted, "every message the platform accepted is recorded: {volume}");
    assert_eq!(volume["days"][0]["messages_in"], 8);
    let users = 5;
    assert_eq!(volume["days"][0]["active_users"], users, "{volume}");
    for span in ["day", "week", "month"] {
        assert_eq!(volume["active_users"][span], users, "{span}: one source for every count: {volume}");
    }
    let countries: BTreeSet<String> =
        volume["by_country"].as_array().expect("rows").iter().map(|r| r["country"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(countries, BTreeSet::from(["BR".to_string(), "FR".into(), "GB".into()]), "the reacting user is placed: {volume}");
    let by_country_users: i64 =
        volume["by_country"].as_array().expect("rows").iter().map(|r| r["active_users"].as_i64().unwrap_or(0)).sum();
    assert_eq!(by_country_users, users);

    let delivery = get("delivery").await;
    assert_eq!(delivery["sent"], accepted, "{delivery}");
    assert_eq!(delivery["refused"], 2, "{delivery}");
    assert_eq!(delivery["failed"], 2, "{delivery}");
    let codes: BTreeSet<i64> = delivery["failures"].as_array().expect("rows").iter().filter_map(|r| r["code"].as_i64()).collect();
    assert_eq!(codes, BTreeSet::from([100, 131047]), "{delivery}");

    let policy = get("policy").await;
    assert_eq!(policy["days"][0]["blocks"], 1, "one blocked message: {policy}");
    assert_eq!(policy["blocks_by_country"][0]["country"], "FR");
    assert_eq!(policy["blocks_by_country"][0]["count"], 1);
    let rules: BTreeSet<String> =
        policy["blocks_by_rule"].as_array().expect("rows").iter().map(|r| r["rule"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(rules, BTreeSet::from(["eu-end-users".to_string(), "launch-countries".into()]), "{policy}");

    // The slow-down reply is a recorded reply to the first message over the limit.
    let modes: Vec<String> = sqlx::query_scalar("SELECT prompt_mode FROM messages WHERE direction = 'out' AND prompt_mode = 'slow_down'")
        .fetch_all(&herd.store.pool)
        .await
        .expect("rows");
    assert_eq!(modes.len(), 1);
    herd.stop().await;
}
