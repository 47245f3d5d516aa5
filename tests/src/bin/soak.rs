//! `soak`: the soak of `herd_e2e::soak` from the command line, printing its report as JSON.
//!
//!   soak --herd target/release/herd [--messages 10000] [--users 500] [--workers 3] [--rate 20]
//!        [--no-faults] [--deliveries 3] [--fail-every 20] [--kill-every 20] [--settle 600]
//!        [--worker-cpus 0.5] [--context-tokens 256]
//!
//! `--worker-cpus` holds each worker process to that many CPUs (a cgroup quota; needs root), as
//! if each worker had a machine of its own: how throughput scales with workers is measurable on a
//! machine with fewer cores than workers.
//! `--no-faults --deliveries 1 --fail-every 0 --rate 100000` measures throughput alone.

use std::path::PathBuf;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(cfg) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("tokio runtime");
            let report = rt.block_on(herd_e2e::soak::run(cfg));
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn parse(args: &[String]) -> Result<herd_e2e::soak::Config, String> {
    let dir = std::env::temp_dir().join(format!("herd-soak-{}", std::process::id()));
    let mut cfg = herd_e2e::soak::config(&PathBuf::from("target/release/herd"), &dir, 10_000, 500);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--no-faults" {
            cfg.faults = false;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--herd" => cfg.herd = PathBuf::from(value),
            "--messages" => cfg.messages = num(value)? as usize,
            "--users" => cfg.users = (num(value)? as usize).max(1),
            "--workers" => cfg.workers = num(value)? as usize,
            "--gateways" => cfg.gateways = (num(value)? as usize).max(1),
            "--rate" => cfg.rate = num(value)?,
            "--deliveries" => cfg.max_deliveries = (num(value)? as u64).max(1),
            "--fail-every" => cfg.fail_every = num(value)? as u64,
            "--kill-every" => cfg.kill_every = Duration::from_secs_f64(num(value)?.max(1.0)),
            "--settle" => cfg.settle = Duration::from_secs_f64(num(value)?),
            "--seed" => cfg.seed = num(value)? as u64,
            "--context-tokens" => cfg.context_tokens = (num(value)? as usize).max(64),
            "--worker-cpus" => cfg.worker_cpus = Some(num(value)?).filter(|c| *c > 0.0),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !cfg.herd.is_file() {
        return Err(format!("--herd {}: no such binary (cargo build --release -p herd)", cfg.herd.display()));
    }
    Ok(cfg)
}
