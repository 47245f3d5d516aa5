//! A short soak (the full one is `deploy/local/soak.sh`): 2 gateways and 3 workers as processes,
//! webhooks delivered 1–3 times, a Graph API refusing 5 % of sends, workers killed (`kill -9`)
//! every 6 s, Redis restarted once and every PostgreSQL connection dropped once — and every
//! message answered exactly once.

use herd_e2e::procs::scratch;
use herd_e2e::soak;
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_faults_every_message_is_answered_exactly_once() {
    let mut cfg = soak::config(Path::new(env!("CARGO_BIN_EXE_herd")), &scratch("soak"), 300, 100);
    cfg.rate = 12.0;
    cfg.kill_every = Duration::from_secs(6);
    let r = soak::run(cfg).await;
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    assert_eq!(r.recorded, 300, "every message recorded");
    assert_eq!((r.lost, r.duplicates), (0, 0), "none lost, none answered twice");
    assert_eq!(r.answered_once as i64 + r.unknown, 300);
    assert_eq!((r.failed, r.dead_letters), (0, 0));
    assert!(r.worker_kills >= 3, "{} kills", r.worker_kills);
    assert_eq!((r.redis_restarts, r.postgres_drops), (1, 1));
    assert!(r.webhooks > 300, "redeliveries happened ({} webhooks)", r.webhooks);
    assert!(r.sends_refused > 0, "the Graph API refused some sends");
}
