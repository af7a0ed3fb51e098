//! What the benchmarks share: private processes on loopback (redis-server, a Redis Cluster,
//! the release gatehouse binary, nginx), `wrk` runs and their parsing, tokens, and a blocking
//! set-up client.

#![allow(dead_code)]

#[path = "../../tests/common/cluster.rs"]
pub mod cluster;
#[path = "../../tests/common/nginx.rs"]
pub mod nginx;
#[path = "../../tests/common/processes.rs"]
pub mod processes;
#[path = "../../tests/common/sentinel.rs"]
pub mod sentinel;
#[path = "../../tests/common/skip.rs"]
pub mod skip;

pub use processes::{RedisServer, free_port};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::auth::{JwtSettings, TokenIssuer, TokenRequest};

/// The secret the benchmark's gatehouse verifies with.
pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An integer from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `ready` for up to 20 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < until, "{what} not ready within 20s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The release gatehouse binary on a free port with `env`; returns it and its base URL.
pub fn start_gatehouse(binary: &str, spool_dir: &Path, env: &[(&str, &str)]) -> (Killed, String) {
    let port = free_port();
    let child = Command::new(binary)
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_JWT_SECRET", SECRET)
        .env("GATEHOUSE_LOG", "error")
        .env("GATEHOUSE_AUDIT_SPOOL", spool_dir.join("audit.spool"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("the gatehouse binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = Client::new(&base);
    wait_until("gatehouse", || {
        http.get("/readyz").is_some_and(|(s, _)| s == 200)
    });
    (Killed(child), base)
}

/// Debian's nginx serving `sites` (`server` blocks) from `dir`, ready once `port` accepts;
/// `None` when nginx is not installed.
pub fn start_nginx(dir: &Path, sites: &str, port: u16) -> Option<Killed> {
    let binary = nginx::binary()?;
    let nginx = Killed(nginx::spawn(&binary, dir, sites));
    wait_until("nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(nginx)
}

/// The load every HTTP benchmark applies: `BENCH_SECONDS` (8) per run, `BENCH_CONNECTIONS`
/// (32), `BENCH_ROUNDS` (3).
pub struct Load {
    pub seconds: u64,
    pub connections: u64,
    pub rounds: u64,
}

impl Load {
    /// From the environment (wrk installed when missing, since every user runs it).
    pub fn from_env() -> Self {
        ensure_wrk();
        Self {
            seconds: env_or("BENCH_SECONDS", 8),
            connections: env_or("BENCH_CONNECTIONS", 32),
            rounds: env_or("BENCH_ROUNDS", 3).max(1),
        }
    }
}

impl Load {
    /// Warms each case up with a 1 s run, then runs every case once per round, interleaved,
    /// so that a noisy moment of the shared machine hits every case alike. Returns each
    /// case's runs, in case order.
    pub fn interleaved<N>(&self, cases: &[(N, String, Vec<String>)]) -> Vec<Vec<Run>> {
        self.interleaved_with(cases, || ()).0
    }

    /// [`Self::interleaved`], with `reference` (a measure that is not a wrk run, such as
    /// `redis-benchmark`) run once per round after the cases, so that it shares their noisy
    /// moments too. Returns the cases' runs and the reference's results.
    pub fn interleaved_with<N, T>(
        &self,
        cases: &[(N, String, Vec<String>)],
        mut reference: impl FnMut() -> T,
    ) -> (Vec<Vec<Run>>, Vec<T>) {
        for (_, url, args) in cases {
            wrk(url, args, 1, self.connections);
        }
        let mut runs: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
        let mut references = Vec::new();
        for _ in 0..self.rounds {
            for ((_, url, args), case) in cases.iter().zip(runs.iter_mut()) {
                case.push(wrk(url, args, self.seconds, self.connections));
            }
            references.push(reference());
        }
        (runs, references)
    }
}

/// A private Redis and one release gatehouse on it, stopped on drop.
pub struct Stack {
    /// The gatehouse's base URL.
    pub base: String,
    /// The Redis it uses.
    pub redis_url: String,
    /// Its spool directory (also free for the benchmark's own files).
    pub dir: tempfile::TempDir,
    _gatehouse: Killed,
    _redis: RedisServer,
}

/// Starts a [`Stack`] with `binary`.
pub fn start_stack(binary: &str) -> Stack {
    let dir = tempfile::tempdir().expect("temporary directory");
    let redis = RedisServer::start_volatile();
    let redis_url = redis.url();
    let (gatehouse, base) = start_gatehouse(binary, dir.path(), &[("REDIS_URL", &redis_url)]);
    Stack {
        base,
        redis_url,
        dir,
        _gatehouse: gatehouse,
        _redis: redis,
    }
}

/// A token for `sub` with `roles`, signed with [`SECRET`].
pub fn token(sub: &str, roles: &[&str]) -> String {
    TokenIssuer::new(SECRET.as_bytes(), &JwtSettings::default())
        .mint(&TokenRequest {
            sub: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: vec![],
            ttl: Duration::from_secs(3600),
        })
        .expect("mint")
}

/// A token for `sub` with one `scope`, signed with [`SECRET`].
pub fn token_with_scope(sub: &str, scope: &str) -> String {
    TokenIssuer::new(SECRET.as_bytes(), &JwtSettings::default())
        .mint(&TokenRequest {
            sub: sub.into(),
            roles: vec![],
            scopes: vec![scope.into()],
            ttl: Duration::from_secs(3600),
        })
        .expect("mint")
}

/// Installs wrk with apt when it is missing.
pub fn ensure_wrk() {
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

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th percentile latency, ms.
    pub p99: f64,
    /// Requests completed.
    pub requests: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors (no response at all).
    pub socket_errors: u64,
}

/// One `wrk -t2 -c{connections} -d{seconds}s --latency` run with extra `args` (headers, `-s`).
pub fn wrk(url: &str, args: &[String], seconds: u64, connections: u64) -> Run {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    let need = |prefix: &str| {
        find(prefix).unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
    };
    let millis = |v: String| -> f64 {
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (number, unit) = v.split_at(split);
        let n: f64 = number.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    Run {
        rps: need("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50: millis(need("50%")),
        p99: millis(need("99%")),
        requests: text
            .lines()
            .find_map(|l| {
                l.trim()
                    .split_once(" requests in ")
                    .map(|(n, _)| n.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0),
        non_2xx: find("Non-2xx or 3xx responses:")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        // "Socket errors: connect 0, read 0, write 0, timeout 0" (absent when all are 0).
        socket_errors: find("Socket errors:")
            .map(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0),
    }
}

/// The median of each measure over several runs of the same thing.
pub fn median(runs: &[Run]) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Run {
        rps: pick(|r| r.rps),
        p50: pick(|r| r.p50),
        p99: pick(|r| r.p99),
        requests: runs.iter().map(|r| r.requests).sum(),
        non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
        socket_errors: runs.iter().map(|r| r.socket_errors).sum(),
    }
}

/// `-H` arguments for wrk.
pub fn headers(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["-H".to_owned(), format!("{k}: {v}")])
        .collect()
}

/// A blocking HTTP client for set-up calls (wrk makes the load).
pub struct Client {
    base: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    /// A client of `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http: reqwest::Client::new(),
        }
    }

    /// GET `path`: (status, body), or `None` when unreachable.
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

    /// `method path` with a bearer token and a JSON body: (status, body).
    pub fn send(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        self.runtime.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
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

    /// The set-up every HTTP benchmark shares: the chat backend claims `session` for alice
    /// (`GATEHOUSE_CLAIM=service`), then an admin turns ENFORCED on.
    pub fn claim_for_alice_and_enforce(&self, session: &str) {
        let backend = token_with_scope("chat-backend", "gatehouse:claim");
        let claim = format!("/v1/sessions/{session}/claim");
        let (status, body) = self.send("POST", &claim, &backend, r#"{"user":"alice"}"#);
        assert_eq!(status, 201, "{body}");
        let enforce = r#"{"mode":"ENFORCED","reason":"benchmark"}"#;
        let admin = token("root", &["admin"]);
        assert_eq!(self.send("PUT", "/v1/enforcement", &admin, enforce).0, 200);
    }

    /// A counter of `/metrics`, by its full name and labels.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let (_, text) = self.get("/metrics")?;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
    }
}
