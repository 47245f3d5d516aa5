//! A worker whose model runs on the CUDA backend answers a WhatsApp webhook end to end, over real
//! Redis and PostgreSQL: on the CPU emulation of the CUDA backend here, on GPU 0 with `--ignored`
//! (deploy/gpu/check.sh).

use herd_e2e::*;

async fn a_webhook_is_answered_with_the_model_on(device: &str) {
    let herd = Herd::start_with(
        1,
        |s| {
            s.worker.device = device.into();
            s.worker.dtype = "bf16".into();
        },
        None,
    )
    .await;
    let body = whatsapp_texts(&[("447700900081", "wamid.GPU1", "Hello")]);
    let (status, v) = herd.post("whatsapp", &body, Some(WA_SECRET)).await;
    assert_eq!((status, v["accepted"].as_i64()), (200, Some(1)));
    let sends = herd.wait_for_sends(1).await;
    assert_eq!(sends[0].to(), Some("447700900081"));
    assert_eq!(sends[0].text(), Some("Hi"), "the demo model's golden reply to Hello, in bf16 on {device}");
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'", 1).await;
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_by_a_worker_on_the_emulated_cuda_backend() {
    a_webhook_is_answered_with_the_model_on("cuda-emulated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA GPU, Redis and PostgreSQL: run with --ignored where they are (deploy/gpu/check.sh)"]
async fn a_webhook_is_answered_by_a_worker_on_the_gpu() {
    a_webhook_is_answered_with_the_model_on("cuda").await;
}
