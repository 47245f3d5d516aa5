//! `herd serve` started as an operator would, with one thing wrong at a time: it must exit
//! non-zero within 5 s with one sentence naming the setting, before it accepts anything. Needs
//! the Redis and PostgreSQL of `make test` (REDIS_URL, DATABASE_URL).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `herd serve` with the demo settings, free ports and `env`; its exit code, stderr and how long
/// it ran (killed after 10 s).
fn serve(env: &[(&str, String)]) -> (Option<i32>, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    cmd.arg("serve")
        .current_dir(root())
        .env("HERD_CONFIG", "deploy/local/herd.toml")
        .env("HERD__GATEWAY__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HERD__ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HERD__QUEUE__KEY_PREFIX", format!("startup{}", std::process::id()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = cmd.spawn().expect("herd starts");
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (code, err, took)
}

fn assert_refused(what: &str, env: &[(&str, String)], names: &[&str]) {
    let (code, err, took) = serve(env);
    assert!(code.is_some_and(|c| c != 0), "{what}: exit {code:?} after {took:?}; stderr:\n{err}");
    assert!(took < Duration::from_secs(5), "{what}: exited after {took:?}");
    let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    for n in names {
        assert!(last.contains(n), "{what}: the error names {n}: {last:?}\n{err}");
    }
    assert!(!err.contains("gateway listening"), "{what}: nothing is accepted before start-up completes:\n{err}");
}

#[test]
fn a_model_path_that_does_not_exist_stops_start_up() {
    assert_refused("bad model", &[("HERD__WORKER__MODEL", "/nonexistent/model".into())], &["worker.model", "/nonexistent/model"]);
}

#[test]
fn a_port_in_use_stops_start_up() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_refused("busy port", &[("HERD__GATEWAY__LISTEN", addr.clone())], &["gateway.listen", &addr]);
}

#[test]
fn unreachable_redis_or_postgresql_stops_start_up() {
    let dead = free_port();
    assert_refused("no Redis", &[("HERD__REDIS_URL", format!("redis://127.0.0.1:{dead}"))], &["redis_url"]);
    assert_refused("no PostgreSQL", &[("HERD__DATABASE_URL", format!("postgres://postgres@127.0.0.1:{dead}/herd"))], &["database_url"]);
}

#[test]
fn a_broken_policy_pack_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("herd-bad-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("broken.toml"), "[pack]\nname = \"broken\"\nversion = \"x\"\n").expect("write");
    assert_refused("bad pack", &[("HERD__POLICIES__PACKS_DIR", dir.display().to_string())], &["policies.packs_dir", "broken"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tenant_moderation_mode_without_its_guard_model_stops_start_up() {
    // The demo settings with the demo tenant asking for the guard model, which is not configured.
    let src = std::fs::read_to_string(root().join("deploy/local/herd.toml")).expect("demo settings");
    let at = src.find("[[tenants]]").expect("a tenant");
    let line_end = at + src[at..].find('\n').expect("line");
    let with = format!("{}\nmoderation = \"builtin_then_guard\"{}", &src[..line_end], &src[line_end..]);
    let file = std::env::temp_dir().join(format!("herd-moderation-{}.toml", std::process::id()));
    std::fs::write(&file, with).expect("write");
    assert_refused("guard mode without a guard", &[("HERD_CONFIG", file.display().to_string())], &["moderation", "policies.guard_model"]);
    let _ = std::fs::remove_file(&file);
}
