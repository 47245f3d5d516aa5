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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A Redis Cluster of a test's own: 3 masters, each with a replica (`redis-server` processes
/// on free ports, made a cluster with `redis-cli --cluster create`).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the six servers, joins them and waits until every slot is served.
    pub async fn start(dir: &Path) -> Self {
        let mut nodes = Vec::new();
        for i in 0..6 {
            let conf = dir.join(format!("cluster-nodes-{i}.conf"));
            let _ = std::fs::remove_file(&conf);
            // The bus port is chosen too: port + 10000 may be past 65535 or taken.
            let bus = free_addr().rsplit(':').next().unwrap_or_default().to_string();
            let args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--cluster-port", &bus];
            let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            args.extend(["--cluster-config-file".to_string(), conf.display().to_string()]);
            // A folder of its own: a `dump.rdb` another server left in the shared one would be
            // loaded, and a node holding keys cannot join a new cluster.
            let data = dir.join(format!("cluster-data-{i}"));
            let _ = std::fs::remove_dir_all(&data);
            std::fs::create_dir_all(&data).expect("node folder");
            args.extend(["--dir".to_string(), data.display().to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(RedisServer::start(dir, &format!("cluster-{i}"), &args).await);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (deploy/local/services.sh installs it)");
        assert!(out.status.success(), "redis-cli --cluster create failed:\n{}", String::from_utf8_lossy(&out.stdout));
        let c = Self { nodes };
        c.wait_ok(30).await;
        // Every node knows every replica (gossip takes a moment after `cluster_state:ok`).
        let t = Instant::now();
        while !c.nodes.iter().all(|n| {
            Self::cli(n.port, &["CLUSTER", "NODES"])
                .lines()
                .filter(|l| l.split_whitespace().nth(2).is_some_and(|f| f.contains("slave")))
                .count()
                == 3
        }) {
            assert!(t.elapsed() < Duration::from_secs(30), "the nodes do not all see 3 replicas after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    /// `redis+cluster://` with the masters the cluster started with.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().take(3).map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// `redis-cli -p port args…`: its output.
    pub fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until every node says `cluster_state:ok`.
    pub async fn wait_ok(&self, secs: u64) {
        let t = Instant::now();
        while !self.nodes.iter().all(|n| Self::cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            assert!(t.elapsed() < Duration::from_secs(secs), "the cluster is not ok after {secs} s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| Self::cli(n.port, &["ROLE"]).starts_with("master")).map(|n| n.port).collect()
    }

    /// `CLUSTER FAILOVER` on a replica (of the master serving `key`): it becomes that slot's
    /// master, its old master a replica. Returns once the replica says it is master.
    pub async fn failover_of(&self, key: &str) -> u16 {
        let slot = Self::cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key]).trim().to_string();
        let master = self.masters().into_iter().find(|p| Self::owns(*p, &slot)).expect("a master serves the slot");
        let replica = self
            .nodes
            .iter()
            .map(|n| n.port)
            .find(|p| {
                let role = Self::cli(*p, &["ROLE"]);
                role.starts_with("slave") && role.lines().nth(2).is_some_and(|l| l.trim() == master.to_string())
            })
            .expect("the master has a replica");
        let ok = Self::cli(replica, &["CLUSTER", "FAILOVER"]);
        assert!(ok.contains("OK"), "CLUSTER FAILOVER on {replica}: {ok}");
        let t = Instant::now();
        while !Self::cli(replica, &["ROLE"]).starts_with("master") {
            assert!(t.elapsed() < Duration::from_secs(20), "replica {replica} did not take over from {master}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    /// Whether the node on `port` serves `slot` (as its master).
    pub fn owns(port: u16, slot: &str) -> bool {
        let slot: u32 = slot.parse().unwrap_or(u32::MAX);
        let me = Self::cli(port, &["CLUSTER", "MYID"]).trim().to_string();
        Self::cli(port, &["CLUSTER", "NODES"]).lines().any(|l| {
            l.starts_with(&me)
                && l.split_whitespace().skip(8).any(|r| match r.split_once('-') {
                    Some((a, b)) => a.parse::<u32>().is_ok_and(|a| a <= slot) && b.parse::<u32>().is_ok_and(|b| slot <= b),
                    None => r.parse::<u32>() == Ok(slot),
                })
        })
    }
}

/// A CPU quota for some processes: a cgroup of their own (v1 `cpu` controller, or v2 `cpu.max`),
/// removed when dropped. The soak holds each worker to one, as if each had a machine of its own.
pub struct CpuQuota {
    dir: PathBuf,
}

impl CpuQuota {
    /// A cgroup `name` allowing `cpus` CPUs (e.g. 0.5) to the processes added to it.
    pub fn new(name: &str, cpus: f64) -> Result<Self, String> {
        let period = 100_000u64;
        let quota = ((cpus * period as f64) as u64).max(1_000);
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, file, value) = if v1.join("cpu.cfs_quota_us").exists() {
            (v1.join(name), "cpu.cfs_quota_us", quota.to_string())
        } else if std::fs::read_to_string(v2.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu")) {
            std::fs::write(v2.join("cgroup.subtree_control"), "+cpu").map_err(|e| format!("enabling the cgroup v2 cpu controller: {e}"))?;
            (v2.join(name), "cpu.max", format!("{quota} {period}"))
        } else {
            return Err("no cgroup cpu controller at /sys/fs/cgroup (v1 cpu or v2 with cpu): CPU quotas need one".into());
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating cgroup {}: {e} (CPU quotas need root)", dir.display()))?;
        std::fs::write(dir.join(file), value).map_err(|e| format!("writing {}/{file}: {e}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).map_err(|e| format!("adding {pid} to {}: {e}", self.dir.display()))
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
