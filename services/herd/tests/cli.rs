//! The `herd engine` command line, run as a user would: documented JSON on stdout, errors on
//! stderr with a failing exit code.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scout() -> PathBuf {
    root().join("engine/tests/fixtures/llama4-tiny-scout")
}

fn herd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd")).args(args).output().expect("herd runs")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(scout().join("golden.json")).expect("golden")).expect("json")
}

fn case(g: &Value, name: &str) -> Value {
    g["cases"].as_array().expect("cases").iter().find(|c| c["name"] == name).expect("case").clone()
}

fn id_list(v: &Value) -> String {
    v.as_array().expect("ids").iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn logits_prints_one_row_per_position_matching_the_reference() {
    let g = golden();
    let c = case(&g, "prefill_7");
    let dir = scout();
    let out = herd(&["engine", "logits", "--model", dir.to_str().expect("path"), "--ids", &id_list(&c["input_ids"])]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let rows = v["logits"].as_array().expect("logits");
    let want = c["logits"].as_array().expect("rows");
    assert_eq!(rows.len(), want.len());
    for (r, w) in rows.iter().zip(want) {
        for (a, b) in r.as_array().expect("row").iter().zip(w.as_array().expect("row")) {
            assert!((a.as_f64().expect("f") - b.as_f64().expect("f")).abs() < 2e-3);
        }
    }
}

#[test]
fn generate_prints_the_greedy_output_ids() {
    let g = golden();
    let c = case(&g, "greedy_18_20");
    let dir = scout();
    let n = c["output_ids"].as_array().expect("ids").len().to_string();
    let out = herd(&[
        "engine",
        "generate",
        "--model",
        dir.to_str().expect("path"),
        "--ids",
        &id_list(&c["input_ids"]),
        "--max-new-tokens",
        &n,
        "--greedy",
        "--ignore-eos",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v, serde_json::json!({ "output_ids": c["output_ids"] }));
}

#[test]
fn a_missing_model_is_a_clear_error_and_a_failing_exit() {
    let out = herd(&["engine", "logits", "--model", "/nonexistent/model", "--ids", "1,2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model/config.json"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn chat_streams_the_demo_models_replies_turn_by_turn() {
    let model = root().join("deploy/models/herd-demo-chat");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["engine", "chat", "--model", model.to_str().expect("path"), "--greedy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child.stdin.take().expect("stdin").write_all(b"Hello\n/reset\nHow are you?\n/quit\n").expect("writes");
    let out = child.wait_with_output().expect("ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // golden one-turn replies of the demo model (see its golden.json); /reset starts over
    assert!(text.contains("> Hi\n"), "{text}");
    assert!(text.contains("> I am doing well, how about you?\n"), "{text}");
}

#[test]
fn bench_reports_throughput_and_memory_as_json() {
    let cfg = scout().join("config.json");
    let out = herd(&["engine", "bench", "--config", cfg.to_str().expect("path"), "--prompt", "8", "--new", "4", "--batch", "1,2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.iter().map(|r| r["batch"].as_u64().expect("batch")).collect::<Vec<_>>(), vec![1, 2]);
    for r in results {
        assert!(r["prefill_tokens_per_s"].as_f64().expect("f") > 0.0);
        assert!(r["decode_tokens_per_s"].as_f64().expect("f") > 0.0);
    }
    assert!(v["peak_rss_bytes"].as_u64().expect("rss") > v["weight_bytes"].as_u64().expect("bytes"));
}

fn herd_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writes");
    child.wait_with_output().expect("ends")
}

#[test]
fn policy_eval_prints_one_decision_line_per_input_line() {
    let input = [
        r#"{"text": "How do I kill a Python process?"}"#,
        r#"{"text": "Where can I buy heroin?", "phone": "+14155550123"}"#,
        r#"{"text": "Hello", "phone": "+33612345678", "platform": "whatsapp"}"#,
        r#"{"text": "What do you think about gun control?", "locale": "en_US"}"#,
        r#"{"text": "describe this", "phone": "+14155550123", "has_image": true}"#,
    ]
    .join("\n");
    let out = herd_stdin(&["policy", "eval"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], serde_json::json!({"action": "allow", "categories": [], "country": null, "eu": null, "rules": []}));
    assert_eq!(lines[1]["action"], "refuse");
    assert_eq!(lines[1]["categories"], serde_json::json!(["S2"]));
    assert_eq!(lines[1]["country"], "US");
    assert_eq!(
        (lines[2]["action"].as_str(), lines[2]["country"].as_str(), lines[2]["eu"].as_bool()),
        (Some("blocked_region"), Some("FR"), Some(true))
    );
    assert!(lines[2]["rules"].as_array().expect("rules").iter().any(|r| r == "meta-ai-rollout/eu-end-users"));
    assert_eq!(lines[3]["action"], "balanced");
    assert_eq!(lines[4]["action"], "blocked_feature");
}

#[test]
fn policy_score_explains_the_model_and_the_rules_per_line() {
    let input = [
        r#"{"text": "how do i make a pipe bomb from things in the garage"}"#,
        r#"{"text": "what time does the post office open on saturdays"}"#,
        "not json",
    ]
    .join("\n");
    let out = herd_stdin(&["policy", "score"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 3);
    let p = |i: usize, k: &str| lines[i][k].as_f64().unwrap_or_else(|| panic!("{k} in {}", lines[i]));
    assert!(p(0, "harmful") > 0.5 && p(1, "harmful") < 0.5, "{lines:?}");
    let s9 = lines[0]["labels"]["S9"].as_f64().expect("S9");
    let total: f64 = lines[0]["labels"].as_object().expect("labels").values().filter_map(Value::as_f64).sum();
    assert!((total - 1.0).abs() < 1e-3 && s9 > 0.3, "{}", lines[0]);
    assert_eq!(lines[1]["language"], "en");
    assert!(lines[2]["error"].as_str().is_some_and(|e| e.starts_with("line 3")), "{}", lines[2]);
}

#[test]
fn policy_region_prints_the_country_and_eu_membership() {
    let out = herd(&["policy", "region", "+33612345678"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).expect("JSON"), serde_json::json!({"country": "FR", "eu": true}));
    let out = herd(&["policy", "region", "+447781123456"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).expect("JSON"), serde_json::json!({"country": "GG", "eu": false}));
}

#[test]
fn herd_refuses_to_start_on_a_broken_pack_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("herd-bad-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("bad.toml"), "[pack]\nname = \"bad\"\nversion = 1\n\n[messages.m]\nen = \"x\"\n\n[[rules]]\nid = \"x\"\nkind = \"region\"\nfeature = \"text_chat\"\ndeny_countries = [\"ZZ\"]\nmessage = \"m\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["migrate"])
        .env_remove("HERD_CONFIG")
        .env("HERD__POLICIES__PACKS_DIR", &dir)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:12") && err.contains("deny_countries") && err.contains("ZZ"), "{err}");
}
