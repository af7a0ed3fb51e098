//! A Sentinel deployment on loopback: a master (AOF on), replicas of it, and Sentinels
//! watching it under the name [`MASTER`], with a fast failover (`down-after-milliseconds`
//! 1000). Sentinels are Debian's `redis-sentinel` (or `redis-server --sentinel` where that
//! link is missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::processes::{RedisServer, free_port};

/// The master's name.
pub const MASTER: &str = "gatehouse";

/// A master, its replicas and its Sentinels; everything is killed on drop.
pub struct SentinelSet {
    /// The servers: the first is the master at start.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Child>,
    sentinel_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn sentinel_command() -> Command {
    if Command::new("redis-sentinel")
        .arg("--version")
        .output()
        .is_ok()
    {
        Command::new("redis-sentinel")
    } else {
        let mut command = Command::new("redis-server");
        command.arg("--sentinel");
        command
    }
}

fn until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `INFO replication` of the server at `port`, or empty.
fn replication(port: u16) -> String {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
        .and_then(|mut c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
        })
        .unwrap_or_default()
}

impl SentinelSet {
    /// A master with `replicas` replicas and `sentinels` Sentinels (quorum: a majority), ready
    /// (each replica in sync, each Sentinel seeing every replica and every other Sentinel);
    /// `None` to skip where `redis-server` cannot start.
    pub fn start(replicas: usize, sentinels: usize) -> Option<Self> {
        let master = RedisServer::start()?;
        let master_port = master.port();
        let mut servers = vec![master];
        for _ in 0..replicas {
            servers.push(RedisServer::start_with(vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ])?);
        }
        for replica in &servers[1..] {
            let port = replica.port();
            until(Duration::from_secs(10), "a replica in sync", || {
                replication(port).contains("master_link_status:up")
            });
        }
        let dir = tempfile::tempdir().expect("a directory for the Sentinels");
        let quorum = sentinels / 2 + 1;
        let mut set = Self {
            servers,
            sentinels: Vec::new(),
            sentinel_ports: Vec::new(),
            _dir: dir,
        };
        for i in 0..sentinels {
            let port = free_port();
            let conf = set._dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} {quorum}\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 4000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = set._dir.path().display()
                ),
            )
            .expect("write a Sentinel configuration");
            let child = sentinel_command()
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel starts (apt-get install redis-sentinel)");
            set.sentinels.push(child);
            set.sentinel_ports.push(port);
        }
        for &port in &set.sentinel_ports {
            until(
                Duration::from_secs(20),
                "every Sentinel to see the set",
                || {
                    let ask = |what: &str| -> Option<usize> {
                        redis::Client::open(format!("redis://127.0.0.1:{port}"))
                            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                            .and_then(|mut c| {
                                redis::cmd("SENTINEL")
                                    .arg(what)
                                    .arg(MASTER)
                                    .query::<Vec<redis::Value>>(&mut c)
                            })
                            .ok()
                            .map(|v| v.len())
                    };
                    ask("replicas") == Some(replicas) && ask("sentinels") == Some(sentinels - 1)
                },
            );
        }
        Some(set)
    }

    /// The settings that make gatehouse find the master through the Sentinels.
    pub fn env(&self) -> Vec<(String, String)> {
        let sentinels: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        vec![
            ("REDIS_URL".into(), format!("redis://{MASTER}")),
            ("GATEHOUSE_REDIS_SENTINELS".into(), sentinels.join(",")),
            ("GATEHOUSE_REDIS_SENTINEL_MASTER".into(), MASTER.into()),
        ]
    }

    /// The `host:port` the first Sentinel that answers names as master.
    pub fn master_addr(&self) -> Option<String> {
        self.sentinel_ports.iter().find_map(|port| {
            redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(MASTER)
                        .query::<(String, u16)>(&mut c)
                })
                .ok()
                .map(|(host, port)| format!("{host}:{port}"))
        })
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
