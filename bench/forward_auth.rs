//! Forward-auth decisions per second, against the HTTP floor of the same server (`/healthz`),
//! and through nginx (the shipped recipe) against nginx without the subrequest.
//!
//! Starts a private `redis-server`, the release `gatehouse` binary (ENFORCED, one session owned
//! by alice), a small upstream (axum, in this process) and Debian's nginx with two servers: the
//! recipe of `examples/proxies/nginx.conf` (every request asks gatehouse first) and a plain
//! proxy to the same upstream. Loads each with `wrk` and prints requests/s, p50/p99 and the
//! ratios; every measured request is an allowed one (alice on her session).
//!
//! Run: `cargo bench --bench forward_auth` (`BENCH_SECONDS`, `BENCH_CONNECTIONS`,
//! `BENCH_ROUNDS`; defaults 8 s, 32 connections, 3 rounds). Needs nginx (`apt-get install
//! nginx`) and wrk (installed when missing).

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;

use support::{Client, Killed, Load, Run, free_port, headers, median, token};

fn start_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(|| async { "chat messages" });
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// nginx with the recipe on one port and a plain proxy on another: (process, recipe base,
/// plain base).
fn start_nginx(
    dir: &std::path::Path,
    gatehouse: &str,
    upstream: SocketAddr,
) -> (Killed, String, String) {
    let (with, without) = (free_port(), free_port());
    let recipe = support::nginx::recipe_site(gatehouse, upstream, with);
    let plain = format!(
        "server {{\n  listen 127.0.0.1:{without};\n  location / {{\n    proxy_http_version 1.1;\n    \
         proxy_set_header Connection \"\";\n    proxy_pass http://chat_backend;\n  }}\n}}\n"
    );
    let nginx = support::start_nginx(dir, &format!("{recipe}\n{plain}"), with)
        .expect("nginx is installed (apt-get install nginx)");
    (
        nginx,
        format!("http://127.0.0.1:{with}"),
        format!("http://127.0.0.1:{without}"),
    )
}

fn main() {
    let load = Load::from_env();
    let Load {
        seconds,
        connections,
        rounds,
    } = load;
    let stack = support::start_stack(env!("CARGO_BIN_EXE_gatehouse"));
    let (base, dir) = (&stack.base, &stack.dir);
    let http = Client::new(base);
    let alice = token("alice", &[]);
    http.claim_for_alice_and_enforce("s1");

    let upstream = start_upstream();
    let (_nginx, with_auth, without_auth) = start_nginx(dir.path(), base, upstream);

    let bearer = format!("Bearer {alice}");
    let direct = headers(&[
        ("Authorization", &bearer),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/api/chat/sessions/s1/messages"),
    ]);
    let through = headers(&[("Authorization", &bearer)]);
    let chat_path = "/api/chat/sessions/s1/messages";
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        ("gatehouse GET /healthz", format!("{base}/healthz"), vec![]),
        (
            "gatehouse /v1/forward-auth (allow)",
            format!("{base}/v1/forward-auth"),
            direct,
        ),
        (
            "nginx, no subrequest",
            format!("{without_auth}{chat_path}"),
            through.clone(),
        ),
        (
            "nginx + auth_request (recipe)",
            format!("{with_auth}{chat_path}"),
            through,
        ),
    ];
    let results: Vec<Run> = load.interleaved(&cases).iter().map(|r| median(r)).collect();
    println!();
    println!(
        "forward-auth, ENFORCED, Redis store, wrk -t2 -c{connections}, {rounds} x {seconds}s each (medians)"
    );
    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>8}",
        "target", "req/s", "p50 ms", "p99 ms", "non-2xx"
    );
    for ((name, _, _), run) in cases.iter().zip(&results) {
        println!(
            "{name:<38} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            run.rps, run.p50, run.p99, run.non_2xx
        );
    }
    println!(
        "forward-auth / healthz throughput: {:.3}; p99 {:.2} ms vs {:.2} ms",
        results[1].rps / results[0].rps,
        results[1].p99,
        results[0].p99
    );
    println!(
        "nginx with / without the subrequest throughput: {:.3}; p99 {:.2} ms vs {:.2} ms",
        results[3].rps / results[2].rps,
        results[3].p99,
        results[2].p99
    );
}
