//! Conversation analytics against numbers computed here, independently, from seeded
//! conversations: volume, latency percentiles, policy outcomes, model tokens and expert
//! utilization, the delivery funnel; CSV equals JSON; filters narrow; bad filters are 422.

use herd_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Deterministic pseudo-random numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One seeded reply (first piece) with its measurements.
#[derive(Clone, Debug)]
struct Reply {
    day: String,
    channel: i64,
    metrics: [i32; 5],
    tokens_in: i32,
    tokens_out: i32,
    mode: &'static str,
    delivery: &'static str,
}

/// Nearest-rank percentile (`pc` in percent): the smallest value with at least that share of the
/// values at or below it.
fn percentile(sorted: &[i32], pc: usize) -> i32 {
    let rank = (pc * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// A latency as the histograms keep it: exact below 64, else its 6 highest bits.
fn bucket(v: i32) -> i32 {
    if v < 64 {
        return v;
    }
    let shift = (32 - v.leading_zeros()) - 6;
    (v >> shift) << shift
}

struct Seeded {
    days: Vec<String>,
    /// (day, channel, user, direction)
    messages: Vec<(String, i64, i64, &'static str)>,
    replies: Vec<Reply>,
    /// (day, action, category, country, shadow)
    decisions: Vec<(String, &'static str, Option<&'static str>, &'static str, bool)>,
}

async fn seed(herd: &Herd) -> Seeded {
    let pool = &herd.store.pool;
    let tenant = herd.store.tenants().await.expect("tenants")[0].0;
    let channels: Vec<i64> = sqlx::query_scalar("SELECT id FROM channels ORDER BY id").fetch_all(pool).await.expect("channels");
    let days: Vec<String> = ["2026-11-20", "2026-11-21", "2026-11-22"].map(String::from).to_vec();
    let mut rng = Lcg(7);
    let mut s = Seeded { days: days.clone(), messages: vec![], replies: vec![], decisions: vec![] };
    let countries = ["US", "FR", "BR"];
    for u in 0..12i64 {
        let ch = channels[(u % channels.len() as i64) as usize];
        let country = countries[(u % 3) as usize];
        let user: i64 = sqlx::query_scalar("INSERT INTO users (tenant_id, platform, external_id) VALUES ($1, 'whatsapp', $2) RETURNING id")
            .bind(tenant)
            .bind(format!("u{u}"))
            .fetch_one(pool)
            .await
            .expect("user");
        let conv: i64 = sqlx::query_scalar("INSERT INTO conversations (channel_id, user_id, country) VALUES ($1, $2, $3) RETURNING id")
            .bind(ch)
            .bind(user)
            .bind(country)
            .fetch_one(pool)
            .await
            .expect("conversation");
        for k in 0..(2 + rng.next(4)) {
            let day = days[rng.next(3) as usize].clone();
            let at = format!("{day}T{:02}:{:02}:00Z", 1 + rng.next(20), rng.next(60));
            let inbound: i64 = sqlx::query_scalar(
                "INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, status, created_at)
                 VALUES ($1, $2, 'in', $3, 'text', 'hi', 'answered', $4::timestamptz) RETURNING id",
            )
            .bind(conv)
            .bind(ch)
            .bind(format!("in.{u}.{k}"))
            .bind(&at)
            .fetch_one(pool)
            .await
            .expect("inbound");
            s.messages.push((day.clone(), ch, user, "in"));
            if rng.next(5) == 0 {
                // unanswered (blocked): a decision, no reply
                // refuse, crisis support and blocks in turn; some of them shadow decisions
                let (action, cat) = [("refuse", Some("S1")), ("support", Some("S11")), ("blocked_region", None)][s.decisions.len() % 3];
                let shadow = rng.next(4) == 0;
                sqlx::query(
                    "INSERT INTO policy_decisions (message_id, conversation_id, tenant_id, stage, pack, pack_version, rule, category, action, shadow, country, classifier, created_at)
                     VALUES ($1, $2, $3, 'input', 'p', 1, 'r', $4, $5, $6, $7, 'rules', $8::timestamptz)",
                )
                .bind(inbound)
                .bind(conv)
                .bind(tenant)
                .bind(cat)
                .bind(action)
                .bind(shadow)
                .bind(country)
                .bind(&at)
                .execute(pool)
                .await
                .expect("decision");
                s.decisions.push((day.clone(), action, cat, country, shadow));
                continue;
            }
            let metrics = [0, 1, 2, 3, 4].map(|i| 10 * (i + 1) + rng.next(900) as i32);
            let (tokens_in, tokens_out) = (20 + rng.next(50) as i32, 1 + rng.next(40) as i32);
            let mode = if rng.next(3) == 0 { "balanced" } else { "standard" };
            let delivery = ["sent", "delivered", "read", "failed"][rng.next(4) as usize];
            let parts = 1 + rng.next(2);
            for part in 0..parts {
                let pmid = format!("out.{u}.{k}.{part}");
                let out: i64 = sqlx::query_scalar(
                    "INSERT INTO messages (conversation_id, channel_id, direction, platform_message_id, kind, body, status, reply_to, part,
                       tokens_in, tokens_out, queue_wait_ms, ttft_ms, generation_ms, send_ms, end_to_end_ms, prompt_mode, created_at)
                     VALUES ($1, $2, 'out', $3, 'text', 'yo', 'sent', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::timestamptz) RETURNING id",
                )
                .bind(conv)
                .bind(ch)
                .bind(&pmid)
                .bind(inbound)
                .bind(part as i32)
                .bind(tokens_in)
                .bind(tokens_out)
                .bind(metrics[0])
                .bind(metrics[1])
                .bind(metrics[2])
                .bind(metrics[3])
                .bind(metrics[4])
                .bind(mode)
                .bind(&at)
                .fetch_one(pool)
                .await
                .expect("outbound");
                s.messages.push((day.clone(), ch, user, "out"));
                if part == 0 {
                    let (code, rank) = match delivery {
                        "sent" => (None, 1i16),
                        "delivered" => (None, 2),
                        "read" => (None, 3),
                        _ => (Some(131047i64), 4),
                    };
                    sqlx::query("INSERT INTO deliveries (platform_message_id, channel_id, message_id, state, state_rank, error_code, error_title) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(&pmid)
                        .bind(ch)
                        .bind(out)
                        .bind(delivery)
                        .bind(rank)
                        .bind(code)
                        .bind(code.map(|_| "Re-engagement message"))
                        .execute(pool)
                        .await
                        .expect("delivery");
                }
            }
            s.replies.push(Reply { day: day.clone(), channel: ch, metrics, tokens_in, tokens_out, mode, delivery });
        }
    }
    s
}

const RANGE: &str = "from=2026-11-20&to=2026-11-22";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_equal_counts_computed_independently_and_csv_equals_json() {
    let herd = Herd::start(0).await;
    let base = herd.start_admin(10_000).await;
    let (_, key) = herd.admin_key("analyst").await;
    let s = seed(&herd).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, key, base) = (http.clone(), key.clone(), base.clone());
        async move {
            let resp = http.get(format!("{base}/admin/v1/analytics/{path}")).bearer_auth(&key).send().await.expect("answer");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            assert_eq!(status, 200, "{path}: {text}");
            text
        }
    };
    let json = |path: String| {
        let get = &get;
        async move { serde_json::from_str::<Value>(&get(path).await).expect("json") }
    };

    // volume per day
    let v = json(format!("volume?{RANGE}")).await;
    for (i, day) in s.days.iter().enumerate() {
        let of_day: Vec<_> = s.messages.iter().filter(|m| &m.0 == day).collect();
        let row = &v["days"][i];
        assert_eq!(row["day"], day.as_str());
        assert_eq!(row["messages_in"], of_day.iter().filter(|m| m.3 == "in").count() as i64, "{day}");
        assert_eq!(row["messages_out"], of_day.iter().filter(|m| m.3 == "out").count() as i64, "{day}");
        let users: BTreeSet<i64> = of_day.iter().filter(|m| m.3 == "in").map(|m| m.2).collect();
        assert_eq!(row["active_users"], users.len() as i64, "{day}");
        let convs: BTreeSet<i64> = of_day.iter().map(|m| m.2).collect();
        assert_eq!(row["conversations"], convs.len() as i64, "{day} (one conversation per user here)");
    }
    let total_in = s.messages.iter().filter(|m| m.3 == "in").count() as i64;
    let by_country: i64 = v["by_country"].as_array().expect("rows").iter().map(|r| r["messages_in"].as_i64().expect("n")).sum();
    assert_eq!(by_country, total_in);
    let ch0 = s.messages[0].1;
    let by_channel = v["by_channel"].as_array().expect("rows").iter().find(|r| r["channel_id"] == ch0).expect("channel row").clone();
    assert_eq!(by_channel["messages_in"], s.messages.iter().filter(|m| m.1 == ch0 && m.3 == "in").count() as i64);
    // the channel filter narrows
    let vc = json(format!("volume?{RANGE}&channel_id={ch0}")).await;
    let filtered: i64 = vc["days"].as_array().expect("rows").iter().map(|r| r["messages_in"].as_i64().expect("n")).sum();
    assert_eq!(filtered, by_channel["messages_in"].as_i64().expect("n"));
    // CSV of the same table equals the JSON
    let csv = get(format!("volume?{RANGE}&format=csv")).await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("active_users,conversations,day,messages_in,messages_out"));
    for (line, row) in lines.zip(v["days"].as_array().expect("rows")) {
        let want = format!(
            "{},{},{},{},{}",
            row["active_users"],
            row["conversations"],
            row["day"].as_str().expect("day"),
            row["messages_in"],
            row["messages_out"]
        );
        assert_eq!(line, want);
    }
    let csv = get(format!("volume?{RANGE}&format=csv&table=by_country")).await;
    assert_eq!(csv.lines().count(), v["by_country"].as_array().expect("rows").len() + 1);

    // latency percentiles (nearest rank) per metric
    let l = json(format!("latency?{RANGE}")).await;
    let names = ["queue_wait_ms", "ttft_ms", "generation_ms", "send_ms", "end_to_end_ms"];
    for (i, name) in names.iter().enumerate() {
        let mut vals: Vec<i32> = s.replies.iter().map(|r| bucket(r.metrics[i])).collect();
        vals.sort();
        let row = l["metrics"].as_array().expect("rows").iter().find(|r| r["metric"] == *name).expect("metric row").clone();
        assert_eq!(row["count"], vals.len() as i64, "{name}");
        for (p, k) in [(50, "p50"), (95, "p95"), (99, "p99")] {
            assert_eq!(row[k], percentile(&vals, p), "{name} {k}");
        }
    }
    let csv = get(format!("latency?{RANGE}&format=csv")).await;
    for (line, row) in csv.lines().skip(1).zip(l["metrics"].as_array().expect("rows")) {
        assert_eq!(line, format!("{},{},{},{},{}", row["count"], row["metric"].as_str().expect("m"), row["p50"], row["p95"], row["p99"]));
    }

    // policy outcomes
    let p = json(format!("policy?{RANGE}")).await;
    let refusals = s.decisions.iter().filter(|d| d.1 == "refuse" && !d.4).count() as i64;
    let got: i64 = p["refusals_by_category"].as_array().expect("rows").iter().map(|r| r["count"].as_i64().expect("n")).sum();
    assert_eq!(got, refusals);
    assert!(p["refusals_by_category"].as_array().expect("rows").iter().all(|r| r["name"] == "Violent Crimes"), "{p}");
    let support = s.decisions.iter().filter(|d| d.1 == "support" && !d.4).count() as i64;
    assert!(support > 0, "the seeded data has crisis support");
    assert_eq!(p["support"], support);
    assert_eq!(p["days"].as_array().expect("days").iter().map(|d| d["support"].as_i64().unwrap_or(0)).sum::<i64>(), support);
    let mut blocks: BTreeMap<&str, i64> = BTreeMap::new();
    for d in s.decisions.iter().filter(|d| d.1 == "blocked_region" && !d.4) {
        *blocks.entry(d.3).or_default() += 1;
    }
    for r in p["blocks_by_country"].as_array().expect("rows") {
        assert_eq!(Some(&r["count"].as_i64().expect("n")), blocks.get(r["country"].as_str().expect("c")), "{r}");
    }
    assert_eq!(p["blocks_by_country"].as_array().expect("rows").len(), blocks.len());
    let shadow = s.decisions.iter().filter(|d| d.4).count() as i64;
    assert_eq!(p["shadow"].as_array().expect("rows").iter().map(|r| r["count"].as_i64().expect("n")).sum::<i64>(), shadow);
    let balanced = s.replies.iter().filter(|r| r.mode == "balanced").count();
    assert_eq!(p["replies"], s.replies.len() as i64);
    assert!((p["balanced_share"].as_f64().expect("share") - balanced as f64 / s.replies.len() as f64).abs() < 1e-9);

    // model: tokens and tokens per second; expert utilization as recorded
    herd.store.add_expert_usage(&[(0, 0, 30), (0, 3, 10), (1, 1, 5)]).await.expect("experts");
    herd.store.add_expert_usage(&[(0, 0, 2)]).await.expect("experts");
    let today = chrono::Utc::now().date_naive().to_string();
    let m = json(format!("model?{RANGE}")).await;
    let tin: i64 = s.replies.iter().map(|r| r.tokens_in as i64).sum();
    let tout: i64 = s.replies.iter().map(|r| r.tokens_out as i64).sum();
    let gen_ms: i64 = s.replies.iter().map(|r| r.metrics[2] as i64).sum();
    assert_eq!((m["tokens_in"].as_i64(), m["tokens_out"].as_i64()), (Some(tin), Some(tout)));
    assert!((m["tokens_per_s"].as_f64().expect("tps") - tout as f64 * 1000.0 / gen_ms as f64).abs() < 1e-6);
    let e = json(format!("model?from={today}&to={today}")).await;
    assert_eq!(e["experts"][0]["counts"], serde_json::json!([32, 0, 0, 10]));
    assert_eq!(e["experts"][1]["counts"], serde_json::json!([0, 5]));
    assert!((e["experts"][0]["imbalance"].as_f64().expect("x") - 32.0 * 4.0 / 42.0).abs() < 1e-9);

    // delivery funnel
    let d = json(format!("delivery?{RANGE}")).await;
    let count = |f: &dyn Fn(&Reply) -> bool| s.replies.iter().filter(|r| f(r)).count() as i64;
    assert_eq!(d["sent"], s.replies.len() as i64);
    assert_eq!(d["delivered"], count(&|r| r.delivery == "delivered" || r.delivery == "read"));
    assert_eq!(d["read"], count(&|r| r.delivery == "read"));
    assert_eq!(d["failed"], count(&|r| r.delivery == "failed"));
    if count(&|r| r.delivery == "failed") > 0 {
        assert_eq!(d["failures"][0]["code"], 131047);
    }
    let by_day: i64 = d["days"].as_array().expect("rows").iter().map(|r| r["sent"].as_i64().expect("n")).sum();
    assert_eq!(by_day, s.replies.len() as i64);
    let ch_replies = s.replies.iter().filter(|r| r.channel == ch0).count() as i64;
    assert_eq!(json(format!("delivery?{RANGE}&channel_id={ch0}")).await["sent"], ch_replies);
    let per_day = s.replies.iter().filter(|r| r.day == s.days[0]).count() as i64;
    assert_eq!(json(format!("delivery?from={0}&to={0}", s.days[0])).await["sent"], per_day);

    // the closed days were rolled up; a late receipt for one of them is counted all the same
    assert_eq!(herd.count("SELECT count(*) FROM rollup_days WHERE day BETWEEN '2026-11-20' AND '2026-11-22'").await, 3);
    let late: Option<(String, i64)> =
        sqlx::query_as("SELECT d.platform_message_id, d.channel_id FROM deliveries d WHERE d.state = 'sent' ORDER BY d.message_id LIMIT 1")
            .fetch_optional(&herd.store.pool)
            .await
            .expect("row");
    if let Some((pmid, ch)) = late {
        let read_before = d["read"].as_i64().expect("n");
        let st = herd_core::StatusUpdate {
            platform: herd_core::Platform::Whatsapp,
            channel_external_id: WA_PHONE_ID.into(),
            platform_message_id: pmid,
            recipient: None,
            state: herd_core::DeliveryState::Read,
            timestamp: 0,
            error_code: None,
            error_title: None,
        };
        assert!(herd.store.apply_status(ch, &st).await.expect("status"));
        assert_eq!(
            herd.count("SELECT count(*) FROM rollup_days WHERE day BETWEEN '2026-11-20' AND '2026-11-22'").await,
            2,
            "that day's rollup was dropped"
        );
        assert_eq!(json(format!("delivery?{RANGE}")).await["read"], read_before + 1);
        assert_eq!(
            herd.count("SELECT count(*) FROM rollup_days WHERE day BETWEEN '2026-11-20' AND '2026-11-22'").await,
            3,
            "and rolled up again"
        );
    }

    // a rollup made while its day was still live is redone once the day has closed
    let day0 = s.days[0].clone();
    sqlx::query("UPDATE rollup_days SET computed_at = $1::date::timestamptz + interval '1 hour' WHERE day = $1::date")
        .bind(&day0)
        .execute(&herd.store.pool)
        .await
        .expect("age");
    sqlx::query("UPDATE rollup_volume SET messages_in = messages_in + 1000 WHERE day = $1::date")
        .bind(&day0)
        .execute(&herd.store.pool)
        .await
        .expect("skew");
    let redone = json(format!("volume?{RANGE}")).await;
    assert_eq!(redone["days"][0]["messages_in"], v["days"][0]["messages_in"], "the provisional rollup was redone");

    // deleting a user's data takes them out of the rolled-up days too
    let (u0,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE external_id = 'u0'").fetch_one(&herd.store.pool).await.expect("u0");
    let theirs = s.messages.iter().filter(|m| m.2 == u0 && m.3 == "in").count() as i64;
    assert!(theirs > 0);
    let actor = herd_store::admin::Actor { key_id: None, name: "test".into() };
    let gone = herd.store.delete_user_data(&actor, None, "whatsapp", "u0").await.expect("delete");
    assert_eq!(gone.deleted.users, 1);
    let after = json(format!("volume?{RANGE}")).await;
    let total_after: i64 = after["days"].as_array().expect("rows").iter().map(|r| r["messages_in"].as_i64().expect("n")).sum();
    assert_eq!(total_after, total_in - theirs);

    // bad filters name the field
    for (q, field) in
        [("from=2026-11-31", "from"), ("tenant_id=abc", "tenant_id"), ("format=xml", "format"), ("format=csv&table=nope", "table")]
    {
        let resp = http.get(format!("{base}/admin/v1/analytics/volume?{q}")).bearer_auth(&key).send().await.expect("answer");
        assert_eq!(resp.status().as_u16(), 422, "{q}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["field"], field, "{q}: {v}");
    }
    herd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_through_the_worker_shows_up_in_the_analytics() {
    let herd = Herd::start(1).await;
    let base = herd.start_admin(10_000).await;
    let (_, key) = herd.admin_key("analyst").await;
    for (id, text) in [("wamid.N1", "hello"), ("wamid.N2", "tell me a joke")] {
        herd.post("whatsapp", &whatsapp_texts(&[("14155550101", id, text)]), Some(WA_SECRET)).await;
        herd.wait_for_sends(if id.ends_with('1') { 1 } else { 2 }).await;
    }
    herd.wait_count("SELECT count(*) FROM messages WHERE direction = 'out'", 2).await;
    let today = chrono::Utc::now().date_naive().to_string();
    let http = reqwest::Client::new();
    let get = |what: &str| {
        let url = format!("{base}/admin/v1/analytics/{what}?from={today}&to={today}");
        let (http, key) = (http.clone(), key.clone());
        async move { http.get(url).bearer_auth(&key).send().await.expect("answer").json::<Value>().await.expect("json") }
    };
    let v = get("volume").await;
    assert_eq!(v["days"][0]["messages_in"], 2);
    assert_eq!(v["days"][0]["active_users"], 1);
    assert_eq!(v["by_country"][0]["country"], "US", "the worker placed the user by their number: {v}");
    assert_eq!(v["active_users"]["day"], 1, "the HyperLogLog counters saw the user: {v}");
    assert_eq!(v["active_users"]["month"], 1);
    let m = get("model").await;
    assert!(m["tokens_out"].as_i64().is_some_and(|t| t > 0), "{m}");
    let routed: i64 = m["experts"].as_array().expect("layers").iter().map(|l| l["tokens"].as_i64().expect("n")).sum();
    assert!(routed > 0, "the engine's expert counts reached the analytics: {m}");
    let layers = m["experts"].as_array().expect("layers");
    assert!(layers.iter().all(|l| l["counts"].as_array().is_some_and(|c| c.len() <= 8)), "8 experts in the demo model: {m}");
    let l = get("latency").await;
    assert!(l["metrics"].as_array().is_some_and(|r| r.iter().any(|r| r["metric"] == "end_to_end_ms" && r["count"] == 2)), "{l}");
    herd.stop().await;
}
