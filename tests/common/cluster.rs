//! A Redis Cluster on loopback: `redis-server --cluster-enabled yes` nodes joined by
//! `redis-cli --cluster create`, every slot covered.

use std::process::Command;
use std::time::{Duration, Instant};

use super::processes::RedisServer;

/// The nodes of a cluster; killed on drop.
pub struct RedisCluster {
    /// Primaries first, then replicas, in `redis-cli --cluster create` order.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, the cluster's state `ok` on every
    /// node; `None` to skip where `redis-server` cannot start.
    pub fn start(primaries: usize, replicas: usize) -> Option<Self> {
        Self::start_nodes(primaries, replicas, RedisServer::start_with)
    }

    /// The cluster of this test binary (3 primaries with a replica each), started by the first
    /// test that asks, on a thread of its own that lives as long as the process (its nodes die
    /// with that thread: statics are never dropped). Tests share it with key prefixes of their
    /// own ([`Self::isolated_env`]).
    pub fn shared() -> Option<&'static Self> {
        static SHARED: std::sync::OnceLock<Option<RedisCluster>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let (started, cluster) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let cluster = Self::start_nodes(3, 1, RedisServer::start_tied_to_thread);
                    let _ = started.send(cluster);
                    loop {
                        std::thread::park();
                    }
                });
                cluster.recv().ok().flatten()
            })
            .as_ref()
    }

    /// The settings of an instance on this cluster with key names no other test uses.
    pub fn isolated_env(&self) -> Vec<(String, String)> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seeds: Vec<String> = self.nodes[..3].iter().map(RedisServer::addr).collect();
        vec![
            ("REDIS_URL".into(), "redis://cluster".into()),
            ("GATEHOUSE_REDIS_CLUSTER".into(), seeds.join(",")),
            ("GATEHOUSE_KEY_PREFIX".into(), format!("t{n}:gatehouse:")),
            (
                "GATEHOUSE_OWNER_KEY_PREFIX".into(),
                format!("t{n}:chat_session_owner:"),
            ),
            (
                "GATEHOUSE_USER_SESSIONS_KEY_PREFIX".into(),
                format!("t{n}:user_chat_sessions:"),
            ),
        ]
    }

    fn start_nodes(
        primaries: usize,
        replicas: usize,
        start: fn(Vec<String>) -> Option<RedisServer>,
    ) -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(start(vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                "{dir}/nodes.conf".into(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ])?);
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let until = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.client())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < until, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Each primary's replicas in sync (a claim's `WAIT` counts only those).
        for primary in &nodes[..primaries] {
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut primary.client())
                    .unwrap_or_default();
                if info.matches("state=online").count() >= replicas {
                    break;
                }
                assert!(Instant::now() < until, "the replicas did not sync");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Self { nodes })
    }

    /// The node that serves `key`'s slot (`CLUSTER KEYSLOT`, then `CLUSTER SLOTS`), as
    /// `127.0.0.1:port`.
    pub fn node_of(&self, key: &str) -> String {
        let mut conn = self.nodes[0].client();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("CLUSTER SLOTS: not an array")
                };
                let (start, end): (u16, u16) = (
                    redis::from_redis_value(parts[0].clone()).unwrap(),
                    redis::from_redis_value(parts[1].clone()).unwrap(),
                );
                let redis::Value::Array(primary) = &parts[2] else {
                    panic!("CLUSTER SLOTS: no primary")
                };
                let host: String = redis::from_redis_value(primary[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect();
        let (_, _, (host, port)) = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is covered");
        format!("{host}:{port}")
    }
}
