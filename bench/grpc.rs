//! gRPC `Authorization/Check` decisions per second and p99 beside HTTP `/v1/forward-auth`,
//! in the same run, against the same release gatehouse on one private Redis.
//!
//! Starts a private `redis-server` and the release `gatehouse` binary with both listeners
//! (`GATEHOUSE_LISTEN` and `GATEHOUSE_GRPC_LISTEN`, ENFORCED, one session owned by alice), then
//! loads each transport with the same closed loop from this process: `BENCH_CONNECTIONS`
//! concurrent workers, each sending its next check when the last is answered, for
//! `BENCH_SECONDS`; every round runs both, interleaved, and the medians of `BENCH_ROUNDS`
//! rounds are printed.
//!
//! - gRPC: a tonic client built from the envoy-types protos (ghz is not installable here),
//!   the workers sharing `BENCH_GRPC_CONNECTIONS` HTTP/2 connections (default 2: Envoy opens
//!   one per worker thread), each call a `CheckRequest` shaped like Envoy's;
//! - HTTP: reqwest (hyper), one keep-alive connection per worker, the `envoy` style request
//!   Envoy's HTTP ext_authz makes (`/v1/forward-auth` + the path); and, for reference, `wrk`
//!   on the same URL (a C client: what the HTTP path gives when the client costs little).
//!
//! Every answer is checked (OK / 200 with `x-gatehouse-decision: allow`); a wrong one fails
//! the run. Loopback only; bounded by `BENCH_SECONDS` x rounds.
//!
//! Run: `cargo bench --bench grpc` (`BENCH_SECONDS` 5, `BENCH_CONNECTIONS` 32, `BENCH_ROUNDS`
//! 3, `BENCH_GRPC_CONNECTIONS` 2).

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use support::{Client, RedisServer, env_or, free_port, headers, median, start_gatehouse, token};

const PATH: &str = "/api/chat/sessions/s1/messages";

/// What one closed-loop run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rps: f64,
    p50: f64,
    p99: f64,
    answers: u64,
    wrong: u64,
}

/// Runs `workers` loops of `call` for `seconds`; each call returns whether its answer was the
/// expected one. Latencies in ms.
async fn closed_loop<F, Fut>(workers: usize, seconds: u64, call: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (call, stop, wrong) = (call.clone(), stop.clone(), wrong.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if !call(worker).await {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a worker"));
    }
    let took = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Measured {
        rps: all.len() as f64 / took,
        p50: at(0.50),
        p99: at(0.99),
        answers: all.len() as u64,
        wrong: wrong.load(Ordering::Relaxed),
    }
}

/// The `CheckRequest` Envoy sends for alice's `GET PATH`.
fn check_request(bearer: &str) -> CheckRequest {
    let headers = [
        (":authority", "chat.example"),
        (":method", "GET"),
        (":path", PATH),
        (":scheme", "http"),
        ("authorization", bearer),
        ("x-forwarded-for", "203.0.113.5"),
        ("x-request-id", "bench"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: PATH.into(),
                    host: "chat.example".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn main() {
    let seconds = env_or("BENCH_SECONDS", 5);
    let workers = env_or("BENCH_CONNECTIONS", 32) as usize;
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let channels = env_or("BENCH_GRPC_CONNECTIONS", 2).max(1) as usize;
    support::ensure_wrk();

    let dir = tempfile::tempdir().expect("temporary directory");
    let redis = RedisServer::start_volatile();
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let (_gatehouse, base) = start_gatehouse(
        env!("CARGO_BIN_EXE_gatehouse"),
        dir.path(),
        &[
            ("REDIS_URL", &redis.url()),
            ("GATEHOUSE_GRPC_LISTEN", &grpc_addr),
            ("GATEHOUSE_FORWARD_AUTH_STYLE", "envoy"),
        ],
    );
    Client::new(&base).claim_for_alice_and_enforce("s1");
    let bearer = format!("Bearer {}", token("alice", &[]));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let grpc_clients: Vec<AuthorizationClient<tonic::transport::Channel>> =
        runtime.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..channels {
                // One Channel is one HTTP/2 connection (connected eagerly).
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
                        .expect("an endpoint")
                        .connect()
                        .await
                        .expect("gRPC connects");
                clients.push(AuthorizationClient::new(channel));
            }
            clients
        });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .expect("an HTTP client");
    let url = format!("{base}/v1/forward-auth{PATH}");

    let grpc_run = |seconds: u64| {
        let clients = grpc_clients.clone();
        let request = check_request(&bearer);
        runtime.block_on(closed_loop(workers, seconds, move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            let request = request.clone();
            async move {
                let Ok(answer) = client.check(request).await else {
                    return false;
                };
                let answer = answer.into_inner();
                let ok = answer.status.is_some_and(|s| s.code == 0);
                let allowed = match answer.http_response {
                    Some(HttpResponse::OkResponse(ok)) => ok.headers.iter().any(|h| {
                        h.header
                            .as_ref()
                            .is_some_and(|h| h.key == "x-gatehouse-decision" && h.value == "allow")
                    }),
                    _ => false,
                };
                ok && allowed
            }
        }))
    };
    let http_run = |seconds: u64| {
        let (http, url, bearer) = (http.clone(), url.clone(), bearer.clone());
        runtime.block_on(closed_loop(workers, seconds, move |_| {
            let request = http
                .get(&url)
                .header("authorization", &bearer)
                .header("x-forwarded-for", "203.0.113.5");
            async move {
                let Ok(response) = request.send().await else {
                    return false;
                };
                let allowed = response.status() == 200
                    && response
                        .headers()
                        .get("x-gatehouse-decision")
                        .is_some_and(|v| v == "allow");
                let _ = response.bytes().await;
                allowed
            }
        }))
    };
    let wrk_args = headers(&[
        ("Authorization", &bearer),
        ("X-Forwarded-For", "203.0.113.5"),
    ]);

    // Warm-up: connections, the owner cache, the allocator.
    grpc_run(1);
    http_run(1);
    support::wrk(&url, &wrk_args, 1, workers as u64);
    let (mut grpc, mut rest, mut wrk) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        grpc.push(grpc_run(seconds));
        rest.push(http_run(seconds));
        wrk.push(support::wrk(&url, &wrk_args, seconds, workers as u64));
    }
    let middle = |runs: &[Measured]| {
        let pick = |f: fn(&Measured) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Measured {
            rps: pick(|m| m.rps),
            p50: pick(|m| m.p50),
            p99: pick(|m| m.p99),
            answers: runs.iter().map(|m| m.answers).sum(),
            wrong: runs.iter().map(|m| m.wrong).sum(),
        }
    };
    let (grpc, rest, wrk) = (middle(&grpc), middle(&rest), median(&wrk));

    println!();
    println!(
        "forward-auth decisions, ENFORCED, allowed (alice's session), Redis store, owner cache on; \
         {workers} concurrent workers, {rounds} x {seconds}s each (medians), client and server on the same 2 cores"
    );
    println!(
        "{:<52} {:>12} {:>8} {:>8} {:>10} {:>6}",
        "transport", "decisions/s", "p50 ms", "p99 ms", "answers", "wrong"
    );
    let row = |name: &str, m: &Measured| {
        println!(
            "{name:<52} {:>12.0} {:>8.2} {:>8.2} {:>10} {:>6}",
            m.rps, m.p50, m.p99, m.answers, m.wrong
        );
    };
    row(
        &format!("gRPC Check (tonic client, {channels} HTTP/2 connections)"),
        &grpc,
    );
    row("HTTP /v1/forward-auth (reqwest, keep-alive)", &rest);
    println!(
        "{:<52} {:>12.0} {:>8.2} {:>8.2} {:>10} {:>6}",
        "HTTP /v1/forward-auth (wrk -t2, for reference)",
        wrk.rps,
        wrk.p50,
        wrk.p99,
        wrk.requests,
        wrk.non_2xx + wrk.socket_errors
    );
    println!(
        "gRPC / HTTP (same client harness) throughput: {:.3}; p99 {:.2} ms vs {:.2} ms",
        grpc.rps / rest.rps,
        grpc.p99,
        rest.p99
    );
    assert_eq!(grpc.wrong, 0, "wrong or failed gRPC answers");
    assert_eq!(rest.wrong, 0, "wrong or failed HTTP answers");
    assert_eq!(wrk.non_2xx + wrk.socket_errors, 0, "wrk saw refusals");
    drop(redis);
}
