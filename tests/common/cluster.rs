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
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(RedisServer::start_with(vec![
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
