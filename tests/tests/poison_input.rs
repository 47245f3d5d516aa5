//! Input PostgreSQL cannot store, and input larger than the prompt budget: recorded (with a note
//! saying what herd did to it) and answered, never retried into the dead-letter stream.

use herd_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_with_nul_characters_is_recorded_without_them_and_answered() {
    let herd = Herd::start(1).await;
    let body = whatsapp_texts(&[("447700900401", "wamid.NUL1", "Hel\u{0}lo\u{0}")]);
    let (status, _) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!(status, 200);
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 1).await;
    let (text, note): (String, Option<String>) =
        sqlx::query_as("SELECT body, note FROM messages WHERE direction = 'in'").fetch_one(&herd.store.pool).await.expect("row");
    assert_eq!(text, "Hello");
    assert!(note.as_deref().is_some_and(|n| n.contains("2 NUL")), "{note:?}");
    assert_eq!(herd.wait_for_sends(1).await[0].text(), Some("Hi"), "answered as Hello");
    assert_eq!(herd.dead_letters().await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_the_prompt_budget_is_cut_to_fit_noted_and_answered() {
    let herd = Herd::start_with(1, |s| s.worker.context_tokens = 256, None).await;
    let long = "Tell me about the weather. ".repeat(3000); // ~81 kB, thousands of tokens
    let body = whatsapp_texts(&[("447700900402", "wamid.LONG1", &long)]);
    let (status, _) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!(status, 200);
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 1).await;
    let note: Option<String> =
        sqlx::query_scalar("SELECT note FROM messages WHERE direction = 'in'").fetch_one(&herd.store.pool).await.expect("row");
    let note = note.expect("a note says the message was cut");
    assert!(note.contains("cut") && note.contains("tokens"), "{note}");
    let tokens_in: i32 = sqlx::query_scalar("SELECT tokens_in FROM messages WHERE direction = 'out' ORDER BY id LIMIT 1")
        .fetch_one(&herd.store.pool)
        .await
        .expect("reply");
    assert!(tokens_in > 0 && tokens_in as usize <= 256, "the prompt fits the budget: {tokens_in} tokens");
    assert_eq!(herd.dead_letters().await, 0);
    herd.stop().await;
}
