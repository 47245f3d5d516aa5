//! A Send API outage: replies wait it out (honouring `Retry-After`) for
//! `worker.send_retry_window_ms`, are sent once when it ends, fail clearly when it outlasts the
//! window, and a reply waiting when its worker stops is finished by another worker, once.

use herd_e2e::*;
use std::time::Duration;

fn quick_retries(s: &mut herd_core::Settings) {
    s.worker.retry_base_ms = 20;
    s.worker.retry_max_ms = 200;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_old_retries_is_waited_out_honouring_retry_after_and_sent_once() {
    let herd = Herd::start_with(
        1,
        |s| {
            quick_retries(s);
            s.worker.send_retry_window_ms = 30_000;
        },
        None,
    )
    .await;
    // 5 s of 503s asking for 1 s between tries (the old policy gave up after ~3 s).
    herd.stub.outage(Duration::from_secs(5), 503, 2, Some(1));
    herd.post("whatsapp", &whatsapp_texts(&[("447700900701", "wamid.OUT1", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(30, "the reply to be sent", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'sent'").await == 1 })
        .await;
    let sends = herd.quiet_sends().await;
    let refused: Vec<_> = sends.iter().filter(|c| c.status != 200).collect();
    assert_eq!(herd.stub.accepted().len(), 1, "sent once");
    assert!((2..=7).contains(&refused.len()), "{} refused tries", refused.len());
    for pair in sends.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950), "Retry-After: 1 honoured, got {gap:?} between tries");
    }
    let attempts = herd.count("SELECT attempts::bigint FROM outbox").await;
    assert_eq!(attempts, sends.len() as i64, "every try counted");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'").await, 1);
    assert_eq!(herd.dead_letters().await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_still_refused_when_the_window_closes_fails_with_the_reason_recorded() {
    let herd = Herd::start_with(
        1,
        |s| {
            quick_retries(s);
            s.worker.send_retry_window_ms = 1_500;
        },
        None,
    )
    .await;
    herd.stub.outage(Duration::from_secs(30), 429, 130429, None);
    herd.post("whatsapp", &whatsapp_texts(&[("447700900702", "wamid.OUT2", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(20, "the reply to fail", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'failed'").await == 1 })
        .await;
    let err: String = sqlx::query_scalar("SELECT last_error FROM outbox").fetch_one(&herd.store.pool).await.expect("row");
    assert!(err.contains("130429") && err.contains("send_retry_window_ms"), "{err}");
    let tries = herd.stub.sends().len();
    assert!(tries >= 4, "kept trying within the window: {tries} tries");
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'failed'", 1).await;
    assert_eq!(herd.stub.accepted().len(), 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_waiting_when_its_worker_dies_is_finished_by_another_worker_once() {
    let mut herd = Herd::start_with(
        0,
        |s| {
            quick_retries(s);
            s.worker.send_retry_window_ms = 60_000;
        },
        None,
    )
    .await;
    herd.stub.outage(Duration::from_secs(4), 503, 2, Some(1));
    let policy = herd.policy.clone();
    let first = herd.spawn_worker("waiting", policy.clone());
    herd.post("whatsapp", &whatsapp_texts(&[("447700900703", "wamid.OUT3", "Hello")]), Some(WA_SECRET)).await;
    herd.wait_until(30, "a refused try", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'retrying'").await == 1 }).await;
    herd.kill_worker(first);
    herd.spawn_worker("successor", policy);
    herd.wait_until(30, "the reply to be sent", || async { herd.count("SELECT count(*) FROM outbox WHERE state = 'sent'").await == 1 })
        .await;
    herd.quiet_sends().await;
    assert_eq!(herd.stub.accepted().len(), 1, "sent once, by the successor");
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'out'").await, 1);
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'").await, 1);
    assert_eq!(herd.dead_letters().await, 0);
    herd.stop().await;
}
