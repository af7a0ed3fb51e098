//! What audited denials cost: `/v1/validate` throughput in ENFORCED with every request denied
//! (each one an audit event) against every request allowed (no event), in one run.
//!
//! Starts a private `redis-server` (no persistence) and the release `gatehouse` binary on
//! loopback, claims one session for alice, sets ENFORCED, then loads `/v1/validate` with `wrk`
//! (installed when missing: `apt-get install wrk`) alternating alice (allowed) and bob
//! (denied, 403, audited) runs, and prints requests/s, latency percentiles, the ratio, and
//! the audit writer's counters (dropped must be 0).
//!
//! Run: `cargo bench --bench audit` (`BENCH_SECONDS`, `BENCH_CONNECTIONS`, `BENCH_ROUNDS` to
//! tune; defaults 8 s, 32 connections, 3 rounds). Target (issue 4): denials cost under 20 %.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::auth::{JwtSettings, TokenIssuer, TokenRequest};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < until, "{what} not ready within 20s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ensure_wrk() {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    eprintln!("wrk is missing: apt-get install -y wrk");
    let status = Command::new("apt-get")
        .args(["install", "-y", "wrk"])
        .status()
        .expect("apt-get runs");
    assert!(status.success(), "cannot install wrk");
}

/// One wrk run: (requests/s, p50 ms, p99 ms, requests).
fn wrk(
    url: &str,
    token: &str,
    script: &std::path::Path,
    seconds: u64,
    connections: u64,
) -> (f64, f64, f64, u64) {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(script)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
    };
    let millis = |v: String| -> f64 {
        let (number, unit) =
            v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = number.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let rps: f64 = find("Requests/sec:").parse().unwrap();
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    (rps, millis(find("50%")), millis(find("99%")), requests)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    ensure_wrk();
    let seconds = env_or("BENCH_SECONDS", 8);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().expect("temporary directory");

    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    wait_until("redis", || {
        redis::Client::open(redis_url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .is_ok()
    });

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _gatehouse = Killed(
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .env("REDIS_URL", &redis_url)
            .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_JWT_SECRET", SECRET)
            .env("GATEHOUSE_LOG", "error")
            .env("GATEHOUSE_AUDIT_SPOOL", dir.path().join("audit.spool"))
            .stdout(Stdio::null())
            .spawn()
            .expect("the gatehouse binary starts"),
    );
    let http = setup::http::Client::new(&base);
    wait_until("gatehouse", || {
        http.get("/readyz").is_some_and(|(s, _)| s == 200)
    });

    let issuer = TokenIssuer::new(SECRET.as_bytes(), &JwtSettings::default());
    let token = |sub: &str, roles: &[&str]| {
        issuer
            .mint(&TokenRequest {
                sub: sub.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                scopes: vec![],
                ttl: Duration::from_secs(3600),
            })
            .unwrap()
    };
    let (admin, alice, bob) = (
        token("root", &["admin"]),
        token("alice", &[]),
        token("bob", &[]),
    );
    let (status, _) = http.send("POST", "/v1/sessions/bench-s/claim", &alice, "");
    assert_eq!(status, 201);
    let (status, _) = http.send(
        "PUT",
        "/v1/enforcement",
        &admin,
        r#"{"mode":"ENFORCED","reason":"benchmark"}"#,
    );
    assert_eq!(status, 200);
    let (status, body) = http.send("POST", "/v1/validate", &bob, r#"{"session_id":"bench-s"}"#);
    assert_eq!(status, 403, "bob is denied: {body}");

    let script = dir.path().join("validate.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"session_id\":\"bench-s\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let url = format!("{base}/v1/validate");
    wrk(&url, &alice, &script, 2, connections); // warm-up

    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    let mut denied_requests = 0;
    for _ in 0..rounds {
        allowed.push(wrk(&url, &alice, &script, seconds, connections));
        let run = wrk(&url, &bob, &script, seconds, connections);
        denied_requests += run.3;
        denied.push(run);
    }
    // Let the writer catch up, then read its counters.
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = http.get("/metrics").expect("metrics");
    let counter = |outcome: &str| -> u64 {
        let prefix = format!("gatehouse_audit_events_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let mut conn = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let xlen: u64 = redis::cmd("XLEN")
        .arg("gatehouse:audit")
        .query(&mut conn)
        .unwrap();

    let summarize = |runs: &[(f64, f64, f64, u64)]| {
        (
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
        )
    };
    let (a_rps, a_p50, a_p99) = summarize(&allowed);
    let (d_rps, d_p50, d_p99) = summarize(&denied);
    println!();
    println!(
        "POST /v1/validate, ENFORCED, Redis store, wrk -t2 -c{connections}, {rounds} x {seconds}s each (medians)"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9}",
        "run", "req/s", "p50 ms", "p99 ms"
    );
    println!(
        "{:<34} {:>10.0} {:>9.2} {:>9.2}",
        "allowed (owner, not audited)", a_rps, a_p50, a_p99
    );
    println!(
        "{:<34} {:>10.0} {:>9.2} {:>9.2}",
        "denied (403, audited)", d_rps, d_p50, d_p99
    );
    println!(
        "denied / allowed throughput: {:.3}  (cost of auditing: {:.1} %; target < 20 %)",
        d_rps / a_rps,
        (1.0 - d_rps / a_rps) * 100.0
    );
    println!(
        "audit: {denied_requests} denied requests, queued {}, written {}, spooled {}, dropped {}, stream length {xlen}",
        counter("queued"),
        counter("written"),
        counter("spooled"),
        counter("dropped"),
    );
}

/// A small blocking helper over reqwest's async client, for the set-up calls (wrk makes the
/// load).
mod setup {
    pub mod http {
        pub struct Client {
            base: String,
            runtime: tokio::runtime::Runtime,
            http: reqwest::Client,
        }

        impl Client {
            pub fn new(base: &str) -> Self {
                Self {
                    base: base.to_owned(),
                    runtime: tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap(),
                    http: reqwest::Client::new(),
                }
            }

            pub fn get(&self, path: &str) -> Option<(u16, String)> {
                self.runtime.block_on(async {
                    let r = self
                        .http
                        .get(format!("{}{path}", self.base))
                        .send()
                        .await
                        .ok()?;
                    let status = r.status().as_u16();
                    Some((status, r.text().await.ok()?))
                })
            }

            pub fn send(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
                self.runtime.block_on(async {
                    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                    let r = self
                        .http
                        .request(method, format!("{}{path}", self.base))
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body.to_owned())
                        .send()
                        .await
                        .expect("request sent");
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                })
            }
        }
    }
}
