//! The Kubernetes manifests (deploy/k8s/) rendered and validated offline against the Kubernetes
//! schemas, the KEDA and Prometheus Operator CRD models, and herd's own settings (through this
//! build's `herd config`); the compose file against the Compose Specification and the same
//! settings; the Dockerfile linted. `make test` installs what they need
//! (deploy/local/deploy-deps.sh).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs one of the validators (with this build's `herd`) in the deployment venv; its stdout.
fn validate(script: &str, extra: &[&str]) -> String {
    let python = root().join("target/deploy-venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash deploy/local/deploy-deps.sh` (make test does)", python.display());
    let out = Command::new(&python)
        .arg(root().join(script))
        .args(["--herd", env!("CARGO_BIN_EXE_herd")])
        .args(extra)
        .output()
        .expect("runs the validator");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn every_kubernetes_overlay_renders_and_validates() {
    let stdout = validate("deploy/k8s/validate.py", &[]);
    for overlay in ["cpu-demo", "production"] {
        assert!(stdout.contains(&format!("deploy/k8s/overlays/{overlay}:")), "{overlay} not checked: {stdout}");
    }
    assert!(stdout.contains("ScaledObject") && stdout.contains("ServiceMonitor") && stdout.contains("NetworkPolicy"), "{stdout}");
    // herd's rules catch a trigger on a stream herd does not write, and partitions no trigger watches.
    assert!(validate("deploy/k8s/validate.py", &["--self-test"]).contains("self-test: ok"));
}

#[test]
fn herd_config_prints_the_settings_without_secrets_and_names_a_bad_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("config")
        .env_remove("HERD_CONFIG")
        .env("HERD__DATABASE_URL", "postgres://herd:s3cret@db:5432/herd")
        .env("HERD__WORKER__MAX_NEW_TOKENS", "77")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("max_new_tokens = 77") && stdout.contains("postgres://herd:***@db:5432/herd"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("config")
        .env_remove("HERD_CONFIG")
        .env("HERD__WORKER__THREADZ", "4")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("threadz"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_as_a_non_root_user_with_a_health_check() {
    let hadolint = root().join("target/deploy-venv/bin/hadolint");
    assert!(hadolint.exists(), "{} is missing: run `bash deploy/local/deploy-deps.sh` (make test does)", hadolint.display());
    let out = Command::new(&hadolint).arg("Dockerfile").current_dir(root()).output().expect("runs hadolint");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // hadolint does fail a bad Dockerfile (so the check above can fail).
    let bad = std::env::temp_dir().join(format!("herd-bad-dockerfile-{}", std::process::id()));
    std::fs::write(&bad, "FROM debian\nRUN cd /tmp && apt-get install curl\n").expect("write");
    let out = Command::new(&hadolint).arg(&bad).output().expect("runs hadolint");
    assert!(!out.status.success(), "hadolint accepted a Dockerfile with an untagged base and `cd`");
    let _ = std::fs::remove_file(&bad);
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let user = text.lines().rfind(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0") && !user.contains(" 0:"), "{user}");
    assert!(text.lines().any(|l| l.starts_with("HEALTHCHECK ")), "no HEALTHCHECK");
    assert!(text.matches("\nFROM ").count() >= 2, "not multi-stage");
}

#[test]
fn the_compose_file_follows_the_specification_and_herds_settings() {
    let stdout = validate("deploy/compose/validate.py", &[]);
    for service in ["migrate", "gateway-1", "gateway-2", "lb", "worker-1", "worker-2", "admin", "prometheus", "grafana"] {
        assert!(stdout.contains(service), "{service} missing: {stdout}");
    }
}

#[test]
fn the_compose_stack_answers_signed_webhooks_once_each_through_nginx_two_gateways_and_two_workers() {
    // Builds the images with podman from this build's binary (deploy/container/build.sh), starts the
    // stack (deploy/compose/compose.yaml), sends 40 signed webhooks through nginx, then the same 40
    // again, and counts the replies at a stand-in Graph API: 40, one per sender.
    let out = Command::new("bash")
        .arg(root().join("deploy/compose/e2e.sh"))
        .arg("40")
        .current_dir(root())
        .env("HERD_BINARY", env!("CARGO_BIN_EXE_herd"))
        .output()
        .expect("runs deploy/compose/e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("40 replies, 40 after redelivery, 40 recipients"), "{stdout}");
}

#[test]
fn the_gpu_image_holds_cuda_13_and_compiles_herds_kernels_without_a_gpu() {
    // deploy/container/build.sh --gpu builds the Dockerfile's `gpu` target from this build's binary;
    // inside it `herd engine cuda-libs` opens NVRTC and cuBLAS and compiles every kernel for sm_90.
    let out = Command::new("bash")
        .arg(root().join("deploy/container/build.sh"))
        .arg("--gpu")
        .current_dir(root())
        .env("HERD_BINARY", env!("CARGO_BIN_EXE_herd"))
        .output()
        .expect("runs deploy/container/build.sh");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let run = |image: &str| {
        Command::new("podman")
            .args(["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", image, "engine", "cuda-libs"])
            .env("CONTAINERS_CONF", root().join("deploy/container/containers.conf"))
            .output()
            .expect("runs podman")
    };
    let gpu = run("localhost/herd-gpu:local");
    let text = String::from_utf8_lossy(&gpu.stdout);
    assert!(gpu.status.success(), "{text}{}", String::from_utf8_lossy(&gpu.stderr));
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["nvrtc"]["value"], "13.0", "{v}");
    assert_eq!(v["cublas"], true, "{v}");
    assert!(v["kernels"]["value"].as_str().is_some_and(|s| s.ends_with("bytes of cubin for sm_90")), "{v}");
    // The CPU image has none of it, and says so.
    let cpu = run("localhost/herd:local");
    assert!(!cpu.status.success(), "the CPU image claims CUDA libraries");
    assert!(String::from_utf8_lossy(&cpu.stderr).contains("CUDA libraries are incomplete"));
}
