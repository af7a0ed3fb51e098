//! gatehouse against its limits, in one run: the HTTP floor (`/healthz`) and Redis itself
//! (`redis-benchmark` GET), with `/v1/validate` (owner cache warm and off), denials in ENFORCED
//! and forward-auth; a fixed-rate run; RSS under load; and the owner-invalidation bound.
//!
//! Starts a private redis-server and three release gatehouse binaries on it: A (owner cache
//! on), B (cache on, for the invalidation bound) and C (cache off), and for the fixed-rate
//! run a static nginx as the machine's own floor. Saturation runs use `wrk` (`-t2
//! -c{BENCH_CONNECTIONS}`), the fixed-rate run uses `oha -q` (skipped with a note when oha or
//! nginx is missing; `bench/run.sh` installs both).
//!
//! Run: `bash bench/run.sh` (or `cargo bench --bench service`). Knobs: `BENCH_SECONDS` (8),
//! `BENCH_CONNECTIONS` (32), `BENCH_RATE` (20000), `BENCH_ROUNDS` (3: every saturation case
//! runs once per round, interleaved, with `redis-benchmark` after each round, and reports its
//! median round).

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Client, Load, Run, env_or, headers, token};

/// Samples a process's resident memory every 50 ms; keeps the peak (kB).
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn watch(pid: u32) -> Self {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                    .unwrap_or(0);
                p.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { peak, stop }
    }

    fn mb(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `redis-benchmark GET` at `connections`: (requests/s, p50 ms).
fn redis_benchmark(port: &str, connections: u64) -> (f64, f64) {
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            port,
            "-c",
            &connections.to_string(),
            "-n",
            "400000",
            "-t",
            "get",
            "-q",
        ])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))
        .unwrap_or_default()
        .to_owned();
    let rps = line
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (rps, p50)
}

/// A fixed-rate run with oha: (achieved requests/s, p50 ms, p99 ms), or None without oha.
fn oha_fixed_rate(url: &str, args: &[String], rate: u64, seconds: u64) -> Option<(f64, f64, f64)> {
    let mut command = Command::new("oha");
    command.args([
        "-z",
        &format!("{seconds}s"),
        "-q",
        &rate.to_string(),
        "-c",
        "64",
        "--no-tui",
        "--output-format",
        "json",
    ]);
    // Translate wrk-style `-H` pairs and the validate body.
    command.args(args);
    let output = command.arg(url).output().ok()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let ms = |v: &serde_json::Value| v.as_f64().map_or(f64::NAN, |s| s * 1000.0);
    Some((
        json["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        ms(&json["latencyPercentiles"]["p50"]),
        ms(&json["latencyPercentiles"]["p99"]),
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn main() {
    let load = Load::from_env();
    let Load {
        seconds,
        connections,
        rounds: rounds_wanted,
    } = load;
    let rate = env_or("BENCH_RATE", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let redis = support::RedisServer::start_volatile();
    let redis_url = redis.url();
    let redis_port = redis_url.rsplit(':').next().unwrap().to_owned();
    let binary = env!("CARGO_BIN_EXE_gatehouse");
    let spools: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_proc, a) =
        support::start_gatehouse(binary, spools[0].path(), &[("REDIS_URL", &redis_url)]);
    let (_b_proc, b) =
        support::start_gatehouse(binary, spools[1].path(), &[("REDIS_URL", &redis_url)]);
    let (_c_proc, c) = support::start_gatehouse(
        binary,
        spools[2].path(),
        &[("REDIS_URL", &redis_url), ("GATEHOUSE_OWNER_CACHE", "off")],
    );
    let http = Client::new(&a);
    let (admin, alice, bob) = (
        token("root", &["admin"]),
        token("alice", &[]),
        token("bob", &[]),
    );
    http.claim_for_alice_and_enforce("s1");

    let script = dir.path().join("validate.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"session_id\":\"s1\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let validate = |token: &str| {
        let mut args = vec!["-s".to_owned(), script.display().to_string()];
        args.extend(headers(&[("Authorization", &format!("Bearer {token}"))]));
        args
    };
    let forward = headers(&[
        ("Authorization", &format!("Bearer {alice}")),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/api/chat/sessions/s1/messages"),
    ]);
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        ("GET /healthz (HTTP floor)", format!("{a}/healthz"), vec![]),
        (
            "validate allowed, cache warm",
            format!("{a}/v1/validate"),
            validate(&alice),
        ),
        (
            "validate allowed, cache off",
            format!("{c}/v1/validate"),
            validate(&alice),
        ),
        (
            "validate denied (403, audited)",
            format!("{a}/v1/validate"),
            validate(&bob),
        ),
        (
            "forward-auth allowed, cache warm",
            format!("{a}/v1/forward-auth"),
            forward.clone(),
        ),
    ];
    let rss = RssPeak::watch(a_proc.0.id());
    // The warm-up also warms the caches. Each case reports its median round (by throughput).
    // redis-benchmark runs once per round too, and reports its median round.
    let (runs, mut redis_runs) =
        load.interleaved_with(&cases, || redis_benchmark(&redis_port, connections));
    let results: Vec<Run> = runs
        .into_iter()
        .map(|mut runs| {
            runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            runs.swap_remove(runs.len() / 2)
        })
        .collect();
    redis_runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (redis_rps, redis_p50) = redis_runs[redis_runs.len() / 2];

    // Fixed rate against the warm cache.
    let oha_args: Vec<String> = vec![
        "-m".into(),
        "POST".into(),
        "-d".into(),
        r#"{"session_id":"s1"}"#.into(),
        "-H".into(),
        "content-type: application/json".into(),
        "-H".into(),
        format!("authorization: Bearer {alice}"),
    ];
    let fixed = oha_fixed_rate(&format!("{a}/v1/validate"), &oha_args, rate, seconds);
    let fixed_floor = oha_fixed_rate(&format!("{a}/healthz"), &[], rate, seconds);
    // The same rate against a static nginx: what this machine and load generator allow any
    // server, gatehouse or not.
    let static_port = support::free_port();
    let static_site = format!(
        "server {{ listen 127.0.0.1:{static_port}; location / {{ return 200 \"ok\\n\"; }} }}\n"
    );
    let nginx_dir = tempfile::tempdir().expect("temporary directory");
    let fixed_nginx =
        support::start_nginx(nginx_dir.path(), &static_site, static_port).and_then(|_nginx| {
            oha_fixed_rate(
                &format!("http://127.0.0.1:{static_port}/"),
                &[],
                rate,
                seconds,
            )
        });

    // The invalidation bound: transfers through A, until B answers the new owner.
    let service = support::token_with_scope("chat-backend", "gatehouse:validate");
    let client_b = Client::new(&b);
    let mut bounds = Vec::new();
    let mut owner = "alice".to_owned();
    for round in 0..100 {
        let ask = format!(r#"{{"session_id":"s1","user":"{owner}"}}"#);
        let (status, _) = client_b.send("POST", "/v1/validate", &service, &ask);
        assert_eq!(status, 200, "warm B");
        let next = format!("user-{round}");
        let body = format!(r#"{{"owner":"{next}"}}"#);
        let sent = Instant::now();
        assert_eq!(
            http.send("PUT", "/v1/sessions/s1/owner", &admin, &body).0,
            200
        );
        let ask = format!(r#"{{"session_id":"s1","user":"{next}"}}"#);
        loop {
            let (_, answer) = client_b.send("POST", "/v1/validate", &service, &ask);
            if answer.contains("\"reason\":\"owner\"") {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "B never saw the transfer"
            );
        }
        bounds.push(sent.elapsed());
        owner = next;
    }
    bounds.sort();
    let rss_mb = rss.mb();
    drop(rss);

    let floor = &results[0];
    println!();
    println!(
        "gatehouse vs its limits: wrk -t2 -c{connections} -d{seconds}s, median of {rounds_wanted} interleaved rounds, one private Redis, 2 cores shared by everything"
    );
    println!(
        "{:<36} {:>10} {:>9} {:>9} {:>12}",
        "target", "req/s", "p50 ms", "p99 ms", "vs /healthz"
    );
    for ((name, _, _), run) in cases.iter().zip(&results) {
        println!(
            "{name:<36} {:>10.0} {:>9.2} {:>9.2} {:>12.2}",
            run.rps,
            run.p50,
            run.p99,
            run.rps / floor.rps
        );
    }
    println!(
        "{:<36} {:>10.0} {:>9.2} {:>9} {:>12}",
        format!("redis-benchmark GET -c{connections}"),
        redis_rps,
        redis_p50,
        "-",
        "-"
    );
    println!();
    println!(
        "validate, cache warm / healthz throughput: {:.2}   (target >= 0.7)",
        results[1].rps / floor.rps
    );
    println!(
        "validate, cache off / redis-benchmark GET: {:.2}   (target >= 0.5)",
        results[2].rps / redis_rps
    );
    println!(
        "p99 at saturation: validate (warm) {:.2} ms beside /healthz {:.2} ms",
        results[1].p99, floor.p99
    );
    match (fixed, fixed_floor) {
        (Some((rps, p50, p99)), Some((_, _, floor_p99))) => println!(
            "fixed rate {rate}/s (oha -q, 64 connections): validate achieved {rps:.0}/s, p50 {p50:.3} ms, p99 {p99:.3} ms (target < 1 ms); /healthz p99 {floor_p99:.3} ms"
        ),
        _ => println!("fixed rate: oha not found (bash bench/run.sh installs it)"),
    }
    match fixed_nginx {
        Some((_, _, p99)) => println!(
            "fixed rate {rate}/s, same load generator, static nginx (no gatehouse): p99 {p99:.3} ms"
        ),
        None => println!("fixed rate, static nginx: nginx or oha not found"),
    }
    println!(
        "owner invalidation, transfer sent to A -> B answers the new owner: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} transfers (target p99 < 50 ms)",
        percentile(&bounds, 50.0),
        percentile(&bounds, 99.0),
        percentile(&bounds, 100.0),
        bounds.len()
    );
    println!("gatehouse (A) peak RSS under load: {rss_mb:.1} MB (target < 64 MB)");
}
