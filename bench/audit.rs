//! What audited denials cost: `/v1/validate` throughput in ENFORCED with every request denied
//! (each one an audit event) against every request allowed (no event), in one run.
//!
//! Starts a private `redis-server` (no persistence) and the release `gatehouse` binary on
//! loopback, claims one session for alice, sets ENFORCED, then loads `/v1/validate` with `wrk`
//! (installed when missing) alternating alice (allowed) and bob (denied, 403, audited) runs,
//! and prints requests/s, latency percentiles, the ratio, and the audit writer's counters
//! (dropped must be 0).
//!
//! Run: `cargo bench --bench audit` (`BENCH_SECONDS`, `BENCH_CONNECTIONS`, `BENCH_ROUNDS` to
//! tune; defaults 8 s, 32 connections, 3 rounds). Target (issue 4): denials cost under 20 %.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{Client, Load, Run, headers, median, token, wrk};

fn main() {
    let Load {
        seconds,
        connections,
        rounds,
    } = Load::from_env();
    let stack = support::start_stack(env!("CARGO_BIN_EXE_gatehouse"));
    let (base, dir) = (&stack.base, &stack.dir);
    let http = Client::new(base);
    let (alice, bob) = (token("alice", &[]), token("bob", &[]));
    http.claim_for_alice_and_enforce("bench-s");
    let check = r#"{"session_id":"bench-s"}"#;
    assert_eq!(http.send("POST", "/v1/validate", &bob, check).0, 403);

    let script = dir.path().join("validate.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"session_id\":\"bench-s\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let url = format!("{base}/v1/validate");
    let args = |token: &str| {
        let mut args = vec!["-s".to_owned(), script.display().to_string()];
        args.extend(headers(&[("Authorization", &format!("Bearer {token}"))]));
        args
    };
    wrk(&url, &args(&alice), 2, connections); // warm-up

    let (mut allowed, mut denied): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        allowed.push(wrk(&url, &args(&alice), seconds, connections));
        denied.push(wrk(&url, &args(&bob), seconds, connections));
    }
    // Let the writer catch up, then read its counters.
    std::thread::sleep(Duration::from_secs(2));
    let counter = |outcome: &str| {
        http.metric(&format!(
            "gatehouse_audit_events_total{{outcome=\"{outcome}\"}}"
        ))
        .unwrap_or(u64::MAX)
    };
    let mut conn = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let xlen: u64 = redis::cmd("XLEN")
        .arg("gatehouse:audit")
        .query(&mut conn)
        .unwrap();

    let (a, d) = (median(&allowed), median(&denied));
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
        "allowed (owner, not audited)", a.rps, a.p50, a.p99
    );
    println!(
        "{:<34} {:>10.0} {:>9.2} {:>9.2}",
        "denied (403, audited)", d.rps, d.p50, d.p99
    );
    println!(
        "denied / allowed throughput: {:.3}  (cost of auditing: {:.1} %; target < 20 %)",
        d.rps / a.rps,
        (1.0 - d.rps / a.rps) * 100.0
    );
    println!(
        "audit: {} denied requests, queued {}, written {}, spooled {}, dropped {}, stream length {xlen}",
        d.requests,
        counter("queued"),
        counter("written"),
        counter("spooled"),
        counter("dropped"),
    );
}
