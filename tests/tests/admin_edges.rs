//! The admin API's edges found from outside: input that cannot be stored, invalid keys used to
//! dodge the rate limit, and the dashboard's security headers.

use herd_e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_query_path_or_body_is_422_naming_where() {
    let herd = Herd::start(0).await;
    let base = herd.start_admin(600).await;
    let (_, key) = herd.admin_key("admin").await;
    let (s, v) = admin_call(&herd.http, &base, "GET", "/admin/v1/audit?target_type=user&target_id=%00", Some(&key), None).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "target_id", "{v}");
    let (s, v) = admin_call(&herd.http, &base, "GET", "/admin/v1/packs/x%00y/versions/1", Some(&key), None).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "path", "{v}");
    let body = json!({"name": "nultest\u{0}corp"});
    let (s, v) = admin_call(&herd.http, &base, "POST", "/admin/v1/tenants", Some(&key), Some(body)).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "name", "{v}");
    let nested = json!({"name": "nultest", "overrides": {"US": "a\u{0}"}});
    let (s, v) = admin_call(&herd.http, &base, "POST", "/admin/v1/tenants", Some(&key), Some(nested)).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("overrides.US")), "{v}");
    assert_eq!(herd.count("SELECT count(*) FROM tenants WHERE name LIKE 'nultest%'").await, 0);
    // the same query without the NUL works
    let (s, _) = admin_call(&herd.http, &base, "GET", "/admin/v1/audit?target_type=user&target_id=42", Some(&key), None).await;
    assert_eq!(s, 200);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_invalid_key_per_request_is_rate_limited_by_client_address() {
    let herd = Herd::start(0).await;
    let base = herd.start_admin(10).await;
    let mut statuses = vec![];
    for i in 0..15 {
        statuses.push(admin_call(&herd.http, &base, "GET", "/admin/v1/whoami", Some(&format!("herd_invalid{i}")), None).await.0);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // a valid key has its own budget
    let (_, key) = herd.admin_key("analyst").await;
    assert_eq!(admin_call(&herd.http, &base, "GET", "/admin/v1/whoami", Some(&key), None).await.0, 200);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_with_security_headers() {
    let herd = Herd::start(0).await;
    let base = herd.start_admin(600).await;
    for path in ["/admin/", "/admin/app.js", "/admin/style.css", "/admin/v1/openapi.json"] {
        let resp = reqwest::get(format!("{base}{path}")).await.expect("answers");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert_eq!(h.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]), "{path}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{path}");
        assert!(h.get("referrer-policy").is_some(), "{path}");
    }
    herd.stop().await;
}
