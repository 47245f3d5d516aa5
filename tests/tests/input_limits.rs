//! Input the gateway must refuse at once, whatever the client claims or how slowly it sends.

use herd_e2e::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` then `body` on a raw connection and returns the status line and how long it took.
async fn raw(gateway: &str, head: &str, body: &[u8], wait: Duration) -> (String, Duration) {
    let addr = gateway.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let t = Instant::now();
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.map(|r| r.unwrap_or(0)).unwrap_or(0);
    (String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_is_413_at_once_whatever_follows() {
    let herd = Herd::start(0).await;
    let head = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 999999999\r\n\r\n";
    let (status, took) = raw(&herd.gateway, head, b"{\"a\": 1}  ", Duration::from_secs(5)).await;
    assert!(status.contains(" 413 "), "got {status:?}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    assert_eq!(herd.stream_len().await, 0);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_within_the_read_timeout() {
    let herd = Herd::start_with(0, |s| s.gateway.body_timeout_ms = 500, None).await;
    let head = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let (status, took) = raw(&herd.gateway, head, b"{\"object\": ", Duration::from_secs(5)).await;
    assert!(status.contains(" 408 "), "got {status:?}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_413() {
    let herd = Herd::start_with(0, |s| s.gateway.max_body_bytes = 1000, None).await;
    let head = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", 1500, "x".repeat(1500));
    let (status, _) = raw(&herd.gateway, head, chunk.as_bytes(), Duration::from_secs(5)).await;
    assert!(status.contains(" 413 "), "got {status:?}");
    assert_eq!(herd.stream_len().await, 0);
    herd.stop().await;
}
