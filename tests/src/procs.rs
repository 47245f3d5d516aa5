//! herd as separate processes (`herd gateway`, `herd worker`, `herd serve`), started from a
//! settings file the way an operator starts them, and stopped the hard way when a test asks:
//! `kill -9`, or SIGTERM with whatever grace the settings give.

use herd_core::Settings;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One herd process; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// A folder for one test's settings files and logs.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herd-e2e-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A free TCP port on loopback (`127.0.0.1:port`).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

impl Proc {
    /// Starts `herd <args>` (the binary `bin`) with `settings` written to `dir/<name>.toml`.
    pub fn start(bin: &Path, dir: &Path, name: &str, args: &[&str], settings: &Settings) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml::to_string(settings).expect("settings as TOML")).expect("write settings");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("HERD_CONFIG")
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("herd starts");
        Self { name: name.to_string(), child, log }
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `text`, failing (with the log) after `secs`.
    pub async fn wait_for_log(&mut self, text: &str, secs: u64) {
        let t = Instant::now();
        while !self.logged().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before logging {text:?}:\n{}", self.name, self.logged());
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "{} did not log {text:?} within {secs} s:\n{}", self.name, self.logged());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: nothing of it runs on, nothing is cleaned up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `secs` for it to exit; its exit code.
    pub async fn terminate(&mut self, secs: u64) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if t.elapsed() > Duration::from_secs(secs) {
                self.kill9();
                panic!("{} did not exit within {secs} s of SIGTERM:\n{}", self.name, self.logged());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of a test's own (no persistence unless `args` ask), to stop and restart.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with `args` (e.g. `--replicaof 127.0.0.1 6390`).
    pub async fn start(dir: &Path, name: &str, args: &[&str]) -> Self {
        let port = free_addr().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let mut r = Self { port, args: args.iter().map(|a| a.to_string()).collect(), child: None, log: dir.join(format!("{name}.log")) };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: everything it held in memory is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again, empty unless persistence was asked for) and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill9();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .args(&self.args)
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (deploy/local/services.sh installs it)");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "redis-server on {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
