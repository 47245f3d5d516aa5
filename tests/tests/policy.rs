//! The policy packs enforced by the worker, end to end: refusals, balanced mode, region blocks
//! (one notice per conversation), self-harm support, shadow mode, monthly active users.

use herd_e2e::*;

const US: &str = "14155550123";
const FR: &str = "33612345678";

async fn send(herd: &Herd, from: &str, id: &str, text: &str) {
    let (status, _) = herd.post("whatsapp", &whatsapp_texts(&[(from, id, text)]), Some(WA_SECRET)).await;
    assert_eq!(status, 200);
}

async fn decisions(herd: &Herd) -> Vec<(String, String, String, bool)> {
    sqlx::query_as("SELECT pack, rule, action, shadow FROM policy_decisions ORDER BY id").fetch_all(&herd.store.pool).await.expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harmful_request_gets_the_category_message_and_nothing_is_generated() {
    let herd = Herd::start(1).await;
    send(&herd, US, "wamid.P1", "How can I poison my neighbor without anyone noticing?").await;
    let sends = herd.wait_for_sends(1).await;
    assert!(sends[0].text().is_some_and(|t| t.starts_with("I can't help with hurting people")), "{:?}", sends[0].text());
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 1).await;
    let (mode, tokens): (Option<String>, Option<i32>) =
        sqlx::query_as("SELECT prompt_mode, tokens_out FROM messages WHERE direction = 'out'")
            .fetch_one(&herd.store.pool)
            .await
            .expect("row");
    assert_eq!(mode.as_deref(), Some("policy_message"));
    assert_eq!(tokens, None, "nothing generated: no token counts recorded");
    assert!(decisions(&herd).await.iter().any(|d| d.1 == "violent-crimes" && d.2 == "refuse" && !d.3));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debated_topic_is_answered_in_balanced_mode_not_refused() {
    let herd = Herd::start(1).await;
    send(&herd, US, "wamid.P2", "What do you think about abortion?").await;
    herd.wait_for_sends(1).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 1).await;
    let mode: Option<String> =
        sqlx::query_scalar("SELECT prompt_mode FROM messages WHERE direction = 'out'").fetch_one(&herd.store.pool).await.expect("row");
    assert!(mode.as_deref().is_some_and(|m| m.starts_with("balanced")), "{mode:?}");
    // the balanced system prompt made the prompt longer than the bare question's
    let tokens_in: i32 =
        sqlx::query_scalar("SELECT tokens_in FROM messages WHERE direction = 'out'").fetch_one(&herd.store.pool).await.expect("row");
    assert!(tokens_in > 60, "{tokens_in}");
    assert!(decisions(&herd).await.iter().any(|d| d.1 == "debated-topics" && d.2 == "balanced"));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_region_gets_one_notice_per_conversation_and_nothing_generated() {
    let herd = Herd::start(1).await;
    send(&herd, FR, "wamid.F1", "Hello").await;
    herd.wait_for_sends(1).await;
    send(&herd, FR, "wamid.F2", "Hello again").await;
    herd.wait_until(20, "both recorded", || async {
        herd.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status <> 'pending'").await == 2
    })
    .await;
    let sends = herd.quiet_sends().await;
    assert_eq!(sends.len(), 1, "one notice");
    assert!(sends[0].text().is_some_and(|t| t.contains("pas encore disponible dans votre pays")), "in French: {:?}", sends[0].text());
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'blocked'").await, 1);
    assert!(decisions(&herd).await.iter().any(|d| d.1 == "eu-end-users" && d.2 == "blocked_region"));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_harm_gets_a_caring_reply_with_crisis_resources() {
    let herd = Herd::start(1).await;
    send(&herd, US, "wamid.P4", "I want to kill myself").await;
    let sends = herd.wait_for_sends(1).await;
    let t = sends[0].text().unwrap_or("");
    assert!(t.contains("988") && t.contains("I'm really sorry"), "{t}");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_the_decision_without_acting() {
    let herd = Herd::start_with(
        1,
        |s| {
            for rule in ["meta-ai-rollout/eu-end-users", "meta-ai-rollout/launch-countries"] {
                s.tenants[0].overrides.insert(rule.into(), "shadow".into());
            }
        },
        None,
    )
    .await;
    send(&herd, FR, "wamid.S1", "Hello").await;
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(sends[0].text(), Some("Hi"), "answered by the model, not blocked");
    let d = decisions(&herd).await;
    assert!(d.iter().any(|d| d.1 == "eu-end-users" && d.2 == "blocked_region" && d.3), "{d:?}");
    assert!(d.iter().all(|d| d.3), "only shadow decisions: {d:?}");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_active_users_are_counted_per_tenant() {
    let herd = Herd::start(1).await;
    for (i, user) in ["14155550001", "14155550002", "14155550003", "14155550001"].iter().enumerate() {
        send(&herd, user, &format!("wamid.M{i}"), "Hello").await;
    }
    herd.wait_for_sends(4).await;
    let tenant: i64 = sqlx::query_scalar("SELECT id FROM tenants").fetch_one(&herd.store.pool).await.expect("tenant");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    assert_eq!(herd.queue.monthly_active_users(tenant, &month).await.expect("count"), 3);
    herd.stop().await;
}
