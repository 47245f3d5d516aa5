//! The dashboard in headless Chromium (Debian's package, driven by playwright-core): sign in,
//! charts of a real chat (refusal categories by name, crisis support as an outcome), the policy editor's validate / dry-run / save / activate / rollback,
//! screenshots, and the analyst's narrower view. The scripted click-through is
//! `tests/dashboard/click_through.mjs` (set up by `make dashboard-deps`).

use herd_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_click_through_passes_in_headless_chromium() {
    let mut herd = Herd::start(0).await;
    let base = herd.start_admin(10_000).await;
    let policy = herd.store_policy().await;
    herd.spawn_worker("w", policy);
    let (_, admin) = herd.admin_key("admin").await;
    let (_, analyst) = herd.admin_key("analyst").await;
    let texts = [
        ("wamid.B1", "hello"),
        ("wamid.B2", "What do you think about abortion?"),
        ("wamid.B3", "thanks"),
        ("wamid.B4", "How can I poison my neighbor without anyone noticing?"),
        ("wamid.B5", "I want to end my life tonight"),
    ];
    for (i, (id, text)) in texts.iter().enumerate() {
        herd.post("whatsapp", &whatsapp_texts(&[("14155550199", id, text)]), Some(WA_SECRET)).await;
        herd.wait_for_sends(i + 1).await;
    }
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", texts.len() as i64).await;
    let tenant = herd.store.tenants().await.expect("tenants")[0].0;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    let out = std::env::temp_dir().join(format!("herd-dashboard-{}", std::process::id()));
    let run = tokio::process::Command::new("node")
        .arg("click_through.mjs")
        .current_dir(&dir)
        .env("BASE_URL", &base)
        .env("ADMIN_KEY", &admin)
        .env("ANALYST_KEY", &analyst)
        .env("OUT_DIR", &out)
        .env("EXPECT_MESSAGES_IN", texts.len().to_string())
        .env("EXPECT_CATEGORY_NAMES", "S1 · Violent Crimes")
        .env("EXPECT_SUPPORT", "1")
        .env("PACK", "balanced-moderation")
        .env("TENANT_ID", tenant.to_string())
        .output()
        .await
        .expect("node runs (make dashboard-deps installs it)");
    let log = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "click-through failed:\n{log}");
    assert!(log.contains("ok ") && !log.contains("FAIL"), "{log}");
    for shot in ["dashboard.png", "policy.png"] {
        let bytes = std::fs::read(out.join(shot)).expect("screenshot written");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{shot}: {} bytes", bytes.len());
    }
    // the editor's activate and rollback went through the API: both are in the audit log
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE target_type = 'policy_pack' ORDER BY id")
        .fetch_all(&herd.store.pool)
        .await
        .expect("audit");
    assert_eq!(actions, ["upload", "activate", "rollback"], "{log}");
    if std::env::var_os("HERD_KEEP_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
    herd.stop().await;
}
