//! How fast a settings change reaches the other instances.
//!
//! Starts a private `redis-server` (no persistence) on a free loopback port and three gatehouse
//! instances on it, in this process, each on its own loopback socket with its own Redis
//! connections and subscription. Then:
//!
//! 1. 100 changes through instance A's REST API (`PUT /v1/enforcement`, alternating modes);
//!    for each, the time from sending the request until B and C have the new version in force
//!    (read from their in-memory settings by a watcher thread polling every 50 µs).
//! 2. 20 kill-switch trials: a client keeps asking B `POST /v1/validate` for a session bob does
//!    not own (ENFORCED: 403); the time from sending `POST /v1/enforcement/kill-switch` to A
//!    until B's first answer `enforcement_disabled`.
//!
//! Run: `cargo bench --bench propagation` (prints a table; asserts nothing).
//! Target (issue 3): change-to-applied p99 under 50 ms.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse::config::Config;
use gatehouse::enforcement::Enforcement;
use gatehouse::server::Gatehouse;
use serde_json::{Value, json};
use support::{RedisServer, SECRET, token, token_with_scope};
use tokio_util::sync::CancellationToken;

const CHANGES: usize = 100;
const KILL_TRIALS: usize = 20;

struct Instance {
    base: String,
    enforcement: Enforcement,
    /// Holds its audit spool (each instance needs its own).
    _spool_dir: tempfile::TempDir,
}

async fn start_instance(redis_url: &str, shutdown: &CancellationToken) -> Instance {
    let spool_dir = tempfile::tempdir().expect("temporary directory");
    let spool = spool_dir.path().join("audit.spool");
    let vars = [
        ("REDIS_URL", redis_url.to_owned()),
        (
            "GATEHOUSE_AUDIT_SPOOL",
            spool.to_string_lossy().into_owned(),
        ),
        ("GATEHOUSE_JWT_SECRET", SECRET.to_owned()),
        ("GATEHOUSE_LOG", "error".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let config = Config::from_vars(vars).expect("valid configuration");
    let gatehouse = Gatehouse::build(&config).expect("builds");
    let enforcement = gatehouse.state().enforcement.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gatehouse.serve(listener, shutdown.clone()));
    Instance {
        base,
        enforcement,
        _spool_dir: spool_dir,
    }
}

/// Records, on its own thread, when an instance's settings version changes.
struct Watcher {
    seen: Arc<AtomicU64>,
    at_nanos: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn spawn(enforcement: Enforcement, epoch: Instant) -> Self {
        let seen = Arc::new(AtomicU64::new(enforcement.current().version));
        let at_nanos = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, a, st) = (seen.clone(), at_nanos.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let version = enforcement.current().version;
                if version != s.load(Ordering::Relaxed) {
                    a.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    s.store(version, Ordering::Release);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        Self {
            seen,
            at_nanos,
            stop,
        }
    }

    /// Waits (up to 5 s) for `version` and returns when it was first seen.
    async fn wait_for(&self, version: u64) -> Option<Duration> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.seen.load(Ordering::Acquire) >= version {
                return Some(Duration::from_nanos(self.at_nanos.load(Ordering::Relaxed)));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        None
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    );
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> Value {
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success() || status == 403, "{status}: {body}");
    body
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start_volatile();
    let shutdown = CancellationToken::new();
    let a = start_instance(&redis.url(), &shutdown).await;
    let b = start_instance(&redis.url(), &shutdown).await;
    let c = start_instance(&redis.url(), &shutdown).await;
    let (admin, bob) = (token("root", &["admin"]), token("bob", &[]));
    let http = reqwest::Client::new();
    // Every instance subscribed before measuring.
    for instance in [&a, &b, &c] {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let ready: Value = http
                .get(format!("{}/readyz", instance.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if ready["settings_stale"] == false && ready["status"] == "ready" {
                break;
            }
            assert!(Instant::now() < until, "instance not ready: {ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let backend = token_with_scope("chat-backend", "gatehouse:claim");
    let claim = http
        .post(format!("{}/v1/sessions/bench-s1/claim", a.base))
        .bearer_auth(&backend)
        .json(&serde_json::json!({ "user": "alice" }))
        .send()
        .await
        .unwrap();
    assert!(claim.status().is_success());

    let epoch = Instant::now();
    let (wb, wc) = (
        Watcher::spawn(b.enforcement.clone(), epoch),
        Watcher::spawn(c.enforcement.clone(), epoch),
    );
    let (mut to_b, mut to_c, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let mode = if i % 2 == 0 { "ENFORCED" } else { "LOG_ONLY" };
        let sent = epoch.elapsed();
        let settings = send(
            &http,
            reqwest::Method::PUT,
            format!("{}/v1/enforcement", a.base),
            &admin,
            json!({ "mode": mode, "reason": format!("bench change {i}") }),
        )
        .await;
        rest.push(epoch.elapsed() - sent);
        let version = settings["version"].as_u64().expect("a version");
        to_b.push(wb.wait_for(version).await.expect("B applies it") - sent);
        to_c.push(wc.wait_for(version).await.expect("C applies it") - sent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Kill switch end to end: ENFORCED, bob is denied on B until the switch reaches it.
    send(
        &http,
        reqwest::Method::PUT,
        format!("{}/v1/enforcement", a.base),
        &admin,
        json!({ "mode": "ENFORCED", "reason": "bench kill switch" }),
    )
    .await;
    let mut kill = Vec::new();
    for _ in 0..KILL_TRIALS {
        let settled = a.enforcement.current().version;
        wb.wait_for(settled).await.expect("B in sync");
        let checker = {
            let (http, url, bob) = (http.clone(), format!("{}/v1/validate", b.base), bob.clone());
            tokio::spawn(async move {
                let mut denied = 0_u32;
                loop {
                    let body = send(
                        &http,
                        reqwest::Method::POST,
                        url.clone(),
                        &bob,
                        json!({ "session_id": "bench-s1" }),
                    )
                    .await;
                    if body["reason"] == "enforcement_disabled" {
                        return (Instant::now(), denied);
                    }
                    denied += 1;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let sent = Instant::now();
        send(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/enforcement/kill-switch", a.base),
            &admin,
            json!({ "reason": "bench" }),
        )
        .await;
        let (allowed_at, denied_before) = checker.await.unwrap();
        assert!(
            denied_before > 0,
            "the checker saw ENFORCED before the switch"
        );
        kill.push(allowed_at - sent);
        send(
            &http,
            reqwest::Method::DELETE,
            format!("{}/v1/enforcement/kill-switch", a.base),
            &admin,
            json!({ "reason": "bench" }),
        )
        .await;
    }

    println!();
    println!("settings propagation, 3 instances on one local Redis (times in ms)");
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "measure", "n", "p50", "p90", "p99", "max"
    );
    row("PUT /v1/enforcement on A (REST round trip)", rest);
    row("change sent to A -> applied on B", to_b);
    row("change sent to A -> applied on C", to_c);
    row("kill switch sent to A -> first unchecked on B", kill);
    drop((wb, wc));
    shutdown.cancel();
    drop(redis);
}
