//! Rate limits never drop what got 200: a platform never redelivers what it got 200 for.
//! Redeliveries of one message cost its sender nothing; over a tenant's limit the webhook is
//! answered 429 (with Retry-After) so the platform delivers it again later.

use herd_e2e::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_of_one_message_do_not_spend_the_senders_budget() {
    let herd = Herd::start_with(1, |s| s.limits.sender_per_minute = 2, None).await;
    let user = "447700900061";
    // Two messages, each delivered three times: within a budget of two per minute.
    for id in ["wamid.RD1", "wamid.RD2"] {
        for _ in 0..3 {
            let (status, _) = herd.post("whatsapp", &whatsapp_texts(&[(user, id, "Hello")]), Some(WA_SECRET)).await;
            assert_eq!(status, 200);
        }
    }
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 2).await;
    let sends = herd.quiet_sends().await;
    let slow = herd.settings.limits.slow_down_text.as_str();
    assert!(sends.iter().all(|c| c.text() != Some(slow)), "nobody was fast: {:?}", sends.iter().map(|c| c.text()).collect::<Vec<_>>());
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE status = 'rate_limited'").await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_tenant_limit_webhooks_get_429_and_every_message_is_answered_once_redelivered() {
    let herd = Herd::start_with(2, |s| s.limits.tenant_per_second = 3, None).await;
    // Twelve users, one message each, all at once: the platform gets 429 for what is over the
    // limit and delivers it again after Retry-After, as it does.
    let bodies: Vec<Vec<u8>> =
        (0..12).map(|i| whatsapp_texts(&[(&format!("4477009002{i:02}"), &format!("wamid.TL{i}"), "Hello")])).collect();
    let mut pending: Vec<usize> = (0..12).collect();
    let mut refused = 0;
    for _ in 0..30 {
        let mut still = vec![];
        for &i in &pending {
            let (status, v) = herd.post("whatsapp", &bodies[i], Some(WA_SECRET)).await;
            match status {
                200 => {}
                429 => {
                    assert_eq!(v["error"]["code"], "tenant_rate_limited", "{v}");
                    refused += 1;
                    still.push(i);
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(pending.is_empty(), "{pending:?} never accepted");
    assert!(refused > 0, "the limit was meant to refuse some");
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 12).await;
    assert_eq!(herd.count("SELECT count(*) FROM messages WHERE status = 'rate_limited'").await, 0);
    let sends = herd.quiet_sends().await;
    assert_eq!(sends.len(), 12, "one reply each, no slow-down text");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_after_of_a_tenant_refusal_is_a_whole_number_of_seconds() {
    let herd = Herd::start_with(0, |s| s.limits.tenant_per_second = 1, None).await;
    let mut saw = None;
    for i in 0..5 {
        let body = whatsapp_texts(&[("447700900300", &format!("wamid.RA{i}"), "Hello")]);
        let resp = reqwest::Client::new()
            .post(format!("{}/webhooks/whatsapp", herd.gateway))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(WA_SECRET, &body))
            .body(body)
            .send()
            .await
            .expect("answers");
        if resp.status() == 429 {
            saw = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            break;
        }
    }
    let ra = saw.expect("a 429");
    assert!(ra.parse::<u64>().is_ok_and(|s| s >= 1), "{ra}");
    herd.stop().await;
}
