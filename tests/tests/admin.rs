//! The admin API end to end over real PostgreSQL and Redis: keys and roles on every endpoint,
//! tenants and channels, the policy pack lifecycle reaching the workers, the audit log, user data
//! deletion, the OpenAPI document and the rate limit.

use herd_e2e::*;
use serde_json::{Value, json};

const US: &str = "14155550123";
const BALANCED: &str = include_str!("../../policies/packs/balanced-moderation.toml");
const REFUSAL: &str = "I can't help with hurting people or planning violence.";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        admin_call(&self.http, &self.base, method, &format!("/admin/v1{path}"), key, body).await
    }

    async fn get(&self, path: &str, key: &str) -> Value {
        let (s, v) = self.call("get", path, Some(key), None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

async fn admin(herd: &Herd, rpm: u32) -> Api {
    Api { base: herd.start_admin(rpm).await, http: reqwest::Client::new() }
}

/// The version of the shipped `balanced-moderation` pack (`version = N` under `[pack]`).
fn shipped() -> i64 {
    BALANCED.lines().find_map(|l| l.strip_prefix("version = ")).and_then(|v| v.trim().parse().ok()).expect("the pack has a version")
}

/// `BALANCED` as version `v` with the violent-crimes refusal reworded to `refusal`.
fn balanced_version(v: i64, refusal: &str) -> String {
    BALANCED.replacen(&format!("version = {}", shipped()), &format!("version = {v}"), 1).replacen(REFUSAL, refusal, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_key_and_admin_endpoints_need_the_admin_role() {
    let herd = Herd::start(0).await;
    let api = admin(&herd, 10_000).await;
    let (_, analyst) = herd.admin_key("analyst").await;
    let (_, admin_key) = herd.admin_key("admin").await;
    assert!(herd_admin::ROUTES.len() >= 25);
    for r in herd_admin::ROUTES {
        let path = r.path.replace("{id}", "999999").replace("{name}", "no-such-pack").replace("{version}", "1");
        let body = matches!(r.method, "post" | "put").then(|| json!({}));
        let (s, v) = api.call(r.method, &path, None, body.clone()).await;
        assert_eq!(s, 401, "{} {path} without a key: {v}", r.method);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "JSON error: {v}");
        let (s, v) = api.call(r.method, &path, Some("herd_wrong"), body.clone()).await;
        assert_eq!(s, 401, "{} {path} with a wrong key: {v}", r.method);
        let (s, v) = api.call(r.method, &path, Some(&analyst), body.clone()).await;
        if r.role == herd_admin::auth::Role::Admin {
            assert_eq!(s, 403, "{} {path} as analyst: {v}", r.method);
            assert!(v["error"].as_str().is_some_and(|e| e.contains("admin")), "{v}");
        } else {
            assert_eq!(s, 200, "{} {path} as analyst: {v}", r.method);
        }
        let (s, v) = api.call(r.method, &path, Some(&admin_key), body).await;
        assert!(![401, 403, 405].contains(&s), "{} {path} as admin: {s} {v}", r.method);
    }
    let who = api.get("/whoami", &analyst).await;
    assert_eq!(who["role"], "analyst");
    // a revoked key stops working at once
    let (s, created) = api.call("post", "/keys", Some(&admin_key), Some(json!({"name": "temp", "role": "analyst"}))).await;
    assert_eq!(s, 201);
    let temp = created["key"].as_str().expect("key shown once").to_string();
    assert_eq!(api.call("get", "/whoami", Some(&temp), None).await.0, 200);
    let keys = api.get("/keys", &admin_key).await;
    assert!(keys.as_array().expect("list").iter().all(|k| k.get("key_hash").is_none() && k.get("key").is_none()), "{keys}");
    assert_eq!(api.call("delete", &format!("/keys/{}", created["id"]), Some(&admin_key), None).await.0, 204);
    assert_eq!(api.call("get", "/whoami", Some(&temp), None).await.0, 401);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint_and_the_rate_limit_answers_429() {
    let herd = Herd::start(0).await;
    let api = admin(&herd, 5).await;
    let doc: Value = reqwest::get(format!("{}/admin/v1/openapi.json", api.base)).await.expect("doc").json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for r in herd_admin::ROUTES {
        let op = &doc["paths"][format!("/admin/v1{}", r.path)][r.method];
        assert!(op["summary"].is_string(), "{} {} missing from the document", r.method, r.path);
        assert_eq!(op["x-herd-role"], r.role.as_str());
    }
    let (_, key) = herd.admin_key("analyst").await;
    let mut statuses = vec![];
    for _ in 0..8 {
        statuses.push(api.call("get", "/whoami", Some(&key), None).await.0);
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_channels_are_validated_written_whole_and_audited() {
    let herd = Herd::start(0).await;
    let api = admin(&herd, 10_000).await;
    let (key_id, key) = herd.admin_key("admin").await;
    let audit_rows = || herd.count("SELECT count(*) FROM audit_log WHERE target_type IN ('tenant', 'channel')");
    // invalid input: 422 naming the field, nothing written
    for (body, field) in [
        (json!({"name": "beta", "principal_place_of_business": "XX"}), "principal_place_of_business"),
        (json!({"name": "beta", "principal_place_of_business": "FR", "packs": ["no-such-pack"]}), "packs"),
        (
            json!({"name": "beta", "principal_place_of_business": "FR", "overrides": {"balanced-moderation/x": "loud"}}),
            "overrides.balanced-moderation/x",
        ),
        (json!({"name": "", "principal_place_of_business": "FR"}), "name"),
        (json!({"name": "beta", "principal_place_of_business": "FR", "colour": "red"}), "colour"),
        (json!({"name": "beta", "principal_place_of_business": "FR", "multimodal": "yes"}), "multimodal"),
        (json!({"name": "beta", "principal_place_of_business": "FR", "moderation": "strict"}), "moderation"),
        // this herd loads no guard model (policies.guard_model unset)
        (json!({"name": "beta", "principal_place_of_business": "FR", "moderation": "builtin_then_guard"}), "moderation"),
    ] {
        let (s, v) = api.call("post", "/tenants", Some(&key), Some(body.clone())).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    assert_eq!(herd.count("SELECT count(*) FROM tenants WHERE name = 'beta'").await, 0);
    assert_eq!(audit_rows().await, 0);
    // create, read, update (before/after audited), duplicate name
    let (s, t) = api
        .call("post", "/tenants", Some(&key), Some(json!({"name": "beta", "principal_place_of_business": "FR", "attest_mau": true})))
        .await;
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_i64().expect("id");
    assert_eq!(t["managed_by"], "admin");
    assert!(t["mau_attested_at"].is_string(), "{t}");
    assert_eq!(api.call("post", "/tenants", Some(&key), Some(json!({"name": "beta", "principal_place_of_business": "FR"}))).await.0, 409);
    let (s, t2) = api
        .call(
            "put",
            &format!("/tenants/{id}"),
            Some(&key),
            Some(json!({"default_country": "BE", "overrides": {"balanced-moderation/violent-crimes": "shadow"}, "moderation": "builtin"})),
        )
        .await;
    assert_eq!(s, 200, "{t2}");
    assert_eq!(t2["moderation"], "builtin");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT moderation FROM tenants WHERE id = $1").bind(id).fetch_one(&herd.store.pool).await.expect("row");
    assert_eq!(stored.as_deref(), Some("builtin"));
    assert_eq!((t2["default_country"].as_str(), t2["principal_place_of_business"].as_str()), (Some("BE"), Some("FR")));
    let audit = api.get(&format!("/audit?target_type=tenant&target_id={id}"), &key).await;
    let rows = audit.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{audit}");
    assert_eq!((rows[0]["action"].as_str(), rows[0]["actor_key_id"].as_i64()), (Some("update"), Some(key_id)));
    assert_eq!(rows[0]["before"]["default_country"], Value::Null);
    assert_eq!(rows[0]["after"]["default_country"], "BE");
    assert_eq!(rows[1]["action"], "create");
    // channels: secrets are write-only, shown masked
    let ch = json!({"platform": "whatsapp", "external_id": "555000111", "app_secret": "super-secret-value-1234", "verify_token": "verify-token-5678", "access_token": "EAAB-access-9999"});
    let (s, c) = api.call("post", &format!("/tenants/{id}/channels"), Some(&key), Some(ch.clone())).await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["app_secret"], "****1234");
    assert!(!c.to_string().contains("super-secret"), "{c}");
    assert_eq!(api.call("post", &format!("/tenants/{id}/channels"), Some(&key), Some(ch)).await.0, 409);
    let (s, v) =
        api.call("post", &format!("/tenants/{id}/channels"), Some(&key), Some(json!({"platform": "telegram", "external_id": "1"}))).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("platform")));
    let cid = c["id"].as_i64().expect("id");
    let (s, c2) = api.call("put", &format!("/channels/{cid}"), Some(&key), Some(json!({"access_token": "EAAB-rotated-0000"}))).await;
    assert_eq!(s, 200, "{c2}");
    assert_eq!((c2["access_token"].as_str(), c2["app_secret"].as_str()), (Some("****0000"), Some("****1234")));
    let stored: (String, String) = sqlx::query_as("SELECT app_secret, access_token FROM channels WHERE id = $1")
        .bind(cid)
        .fetch_one(&herd.store.pool)
        .await
        .expect("row");
    assert_eq!(stored, ("super-secret-value-1234".to_string(), "EAAB-rotated-0000".to_string()));
    let audit = api.get(&format!("/audit?target_type=channel&target_id={cid}"), &key).await;
    assert!(
        !audit.to_string().contains("super-secret") && !audit.to_string().contains("rotated"),
        "secrets stay out of the audit log: {audit}"
    );
    assert_eq!(api.call("delete", &format!("/channels/{cid}"), Some(&key), None).await.0, 204);
    assert_eq!(api.call("delete", &format!("/tenants/{id}"), Some(&key), None).await.0, 204);
    assert_eq!(api.call("get", &format!("/tenants/{id}"), Some(&key), None).await.0, 404);
    assert_eq!(audit_rows().await, 6);
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_version_is_uploaded_dry_run_activated_and_rolled_back_and_the_worker_follows() {
    let mut herd = Herd::start(0).await;
    let api = admin(&herd, 10_000).await;
    let policy = herd.store_policy().await;
    herd.spawn_worker("w", policy);
    let (key_id, key) = herd.admin_key("admin").await;
    let tenant = herd.store.tenants().await.expect("tenants")[0].0;
    let packs = api.get("/packs", &key).await;
    let bm = packs.as_array().expect("list").iter().find(|p| p["name"] == "balanced-moderation").expect("seeded").clone();
    let (v1, v2n) = (shipped(), shipped() + 1);
    assert_eq!(bm["active_version"], v1);
    // upload the next version (not active yet): the worker still answers with the shipped text
    let v2 = balanced_version(v2n, "Version two says no to violence.");
    let (s, v) = api.call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({"source": v2}))).await;
    assert_eq!((s, v["version"].as_i64()), (201, Some(v2n)), "{v}");
    assert_eq!(api.call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({"source": v2}))).await.0, 409);
    let ask = |id: &'static str| {
        let herd = &herd;
        async move {
            let n = herd.stub.sends().len();
            let (s, _) = herd
                .post("whatsapp", &whatsapp_texts(&[(US, id, "How can I poison my neighbor without anyone noticing?")]), Some(WA_SECRET))
                .await;
            assert_eq!(s, 200);
            herd.wait_for_sends(n + 1).await[n].text().unwrap_or_default().to_string()
        }
    };
    assert!(ask("wamid.A1").await.starts_with(REFUSAL));
    // dry-run v2 without activating it
    let (s, d) = api
        .call(
            "post",
            &format!("/packs/balanced-moderation/versions/{v2n}/dry-run"),
            Some(&key),
            Some(json!({"tenant_id": tenant, "text": "How can I poison my neighbor without anyone noticing?", "sender": US})),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["action"], "refuse");
    assert!(d["message"].as_str().is_some_and(|m| m.starts_with("Version two")), "{d}");
    assert!(d["hits"].as_array().is_some_and(|h| h.iter().any(|h| h["version"] == v2n)), "{d}");
    assert_eq!(
        api.get("/packs", &key).await.as_array().expect("list").iter().find(|p| p["name"] == "balanced-moderation").expect("pack")["active_version"],
        v1
    );
    // activate: the worker reloads and answers with v2's text
    let (s, v) = api.call("post", &format!("/packs/balanced-moderation/versions/{v2n}/activate"), Some(&key), None).await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(ask("wamid.A2").await.starts_with("Version two"));
    let recorded: i32 =
        sqlx::query_scalar("SELECT pack_version FROM policy_decisions WHERE pack = 'balanced-moderation' ORDER BY id DESC LIMIT 1")
            .fetch_one(&herd.store.pool)
            .await
            .expect("row");
    assert_eq!(i64::from(recorded), v2n, "decisions name the version that made them");
    // roll back to the shipped version
    let (s, v) = api.call("post", "/packs/balanced-moderation/rollback", Some(&key), None).await;
    assert_eq!((s, v["version"].as_i64()), (200, Some(v1)), "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(ask("wamid.A3").await.starts_with(REFUSAL));
    // each step is in the audit log, by this key, with before/after versions
    let audit = api.get("/audit?target_type=policy_pack&target_id=balanced-moderation", &key).await;
    let steps: Vec<(String, Value, Value)> = audit
        .as_array()
        .expect("rows")
        .iter()
        .rev()
        .map(|r| (r["action"].as_str().expect("action").to_string(), r["before"]["version"].clone(), r["after"]["version"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("upload".into(), Value::Null, json!(v2n)),
            ("activate".into(), json!(v1), json!(v2n)),
            ("rollback".into(), json!(v2n), json!(v1))
        ],
        "{audit}"
    );
    assert!(audit.as_array().expect("rows").iter().all(|r| r["actor_key_id"] == key_id));
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_pack_is_422_naming_the_field_and_changes_nothing() {
    let herd = Herd::start(0).await;
    let api = admin(&herd, 10_000).await;
    let (_, key) = herd.admin_key("admin").await;
    let versions = || herd.count("SELECT count(*) FROM policy_pack_versions");
    let before = versions().await;
    let broken = BALANCED.replacen(&format!("version = {}", shipped()), "version = \"two\"", 1);
    let (s, v) = api.call("post", "/packs/validate", Some(&key), Some(json!({"source": broken}))).await;
    assert_eq!(s, 200);
    assert_eq!(v["valid"], false);
    assert!(v["error"]["field"].as_str().is_some_and(|f| f.contains("version")), "{v}");
    let (s, v) = api.call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({"source": broken}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["field"].as_str().is_some_and(|f| f.contains("version")) && v["line"].as_i64() == Some(5), "{v}");
    // a pack uploaded under another pack's name, and a missing source
    let (s, v) =
        api.call("post", "/packs/llama4-license/versions", Some(&key), Some(json!({"source": balanced_version(shipped() + 2, "x")}))).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("pack.name")), "{v}");
    let (s, v) = api.call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({}))).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("source")), "{v}");
    assert_eq!(versions().await, before, "nothing stored");
    assert_eq!(herd.count("SELECT count(*) FROM audit_log WHERE target_type = 'policy_pack'").await, 0);
    assert_eq!(herd.store.active_pack_version("balanced-moderation").await.expect("active"), Some(shipped() as i32));
    let (s, v) = api
        .call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({"source": balanced_version(shipped() + 1, "fine")})))
        .await;
    assert_eq!(s, 201, "a valid one still goes in: {v}");
    let (s, v) = api
        .call("post", "/packs/balanced-moderation/versions", Some(&key), Some(json!({"source": balanced_version(shipped() + 1, "fine")})))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(api.call("post", "/packs/balanced-moderation/versions/9/activate", Some(&key), None).await.0, 404);
    assert_eq!(herd.store.active_pack_version("balanced-moderation").await.expect("active"), Some(shipped() as i32));
    herd.stop().await;
}

/// Every table that can hold something of a user, with a query counting that user's rows.
const USER_TABLES: &[(&str, &str)] = &[
    ("users", "SELECT count(*) FROM users WHERE external_id = $1"),
    ("conversations", "SELECT count(*) FROM conversations c JOIN users u ON u.id = c.user_id WHERE u.external_id = $1"),
    (
        "messages",
        "SELECT count(*) FROM messages WHERE body LIKE '%' || $1 || '%' OR conversation_id IN (SELECT c.id FROM conversations c JOIN users u ON u.id = c.user_id WHERE u.external_id = $1)",
    ),
    ("outbox", "SELECT count(*) FROM outbox o WHERE o.inbound_id NOT IN (SELECT id FROM messages) OR o.reply LIKE '%' || $1 || '%'"),
    ("deliveries", "SELECT count(*) FROM deliveries d WHERE d.message_id IS NULL OR d.platform_message_id LIKE 'wamid.out.' || $1 || '%'"),
    ("policy_decisions", "SELECT count(*) FROM policy_decisions d WHERE d.conversation_id IS NULL OR d.message_id IS NULL"),
    (
        "audit_log",
        "SELECT count(*) FROM audit_log WHERE target_id LIKE '%' || $1 || '%' OR before::text LIKE '%' || $1 || '%' OR after::text LIKE '%' || $1 || '%'",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_leaves_nothing_of_them_in_any_table() {
    let herd = Herd::start(1).await;
    let api = admin(&herd, 10_000).await;
    let (_, key) = herd.admin_key("admin").await;
    let (gone, kept) = ("14155550777", "14155550888");
    for (from, id, text) in [
        (gone, "wamid.D1", "hello there"),
        (gone, "wamid.D2", "How can I poison my neighbor without anyone noticing?"),
        (kept, "wamid.D3", "hi"),
    ] {
        herd.post("whatsapp", &whatsapp_texts(&[(from, id, text)]), Some(WA_SECRET)).await;
    }
    herd.wait_for_sends(3).await;
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 3).await;
    // delivery receipts for every reply herd sent
    let sent: Vec<(String, i64)> = sqlx::query_as("SELECT platform_message_id, channel_id FROM messages WHERE direction = 'out'")
        .fetch_all(&herd.store.pool)
        .await
        .expect("rows");
    for (pmid, ch) in &sent {
        let st = herd_core::StatusUpdate {
            platform: herd_core::Platform::Whatsapp,
            channel_external_id: WA_PHONE_ID.into(),
            platform_message_id: pmid.clone(),
            recipient: None,
            state: herd_core::DeliveryState::Read,
            timestamp: 0,
            error_code: None,
            error_title: None,
        };
        herd.store.apply_status(*ch, &st).await.expect("status");
    }
    let count = |sql: &'static str, who: &'static str| {
        let pool = herd.store.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).bind(who).fetch_one(&pool).await.expect(sql) }
    };
    assert!(count(USER_TABLES[2].1, gone).await >= 4, "the user's messages exist before");
    assert!(herd.count("SELECT count(*) FROM policy_decisions").await >= 1);
    let (s, d) = api.call("post", "/privacy/delete-user", Some(&key), Some(json!({"platform": "whatsapp", "external_id": gone}))).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["database"]["users"], 1);
    assert_eq!(d["database"]["conversations"], 1);
    assert_eq!(d["database"]["messages"], 4, "two in, two out: {d}");
    assert_eq!(d["database"]["deliveries"], 2, "{d}");
    assert!(d["database"]["policy_decisions"].as_i64().is_some_and(|n| n >= 1), "{d}");
    for (table, sql) in USER_TABLES {
        assert_eq!(count(sql, gone).await, 0, "{table} still holds something of the user");
    }
    // the other user is untouched
    assert_eq!(count(USER_TABLES[0].1, kept).await, 1);
    assert_eq!(count(USER_TABLES[2].1, kept).await, 2);
    assert_eq!(herd.count("SELECT count(*) FROM deliveries").await, 1);
    // the deletion itself is audited without the id
    let audit = api.get("/audit?action=delete_user_data", &key).await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1));
    assert!(audit[0]["target_id"].as_str().is_some_and(|t| t.starts_with("sha256:")), "{audit}");
    let (s, v) = api.call("post", "/privacy/delete-user", Some(&key), Some(json!({"platform": "fax", "external_id": gone}))).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("platform")));
    herd.stop().await;
}
