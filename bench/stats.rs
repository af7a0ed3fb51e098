//! What the decision time series costs: `/v1/validate` throughput with the counters on
//! (`GATEHOUSE_STATS=on`, the default) and off, in one run.
//!
//! Starts a private `redis-server` and release `gatehouse` instances on it, alike but for
//! `GATEHOUSE_STATS`; claims one session for alice and sets ENFORCED (through another
//! instance); then loads each
//! instance's `/v1/validate` (alice, allowed: the common case) with `wrk`, the two runs
//! interleaved round by round so that a noisy moment of the shared machine hits both alike,
//! and prints requests/s, latency percentiles and the ratio. A third instance, counting like
//! the first, is loaded in the same rounds: the ratio of the two alike instances is the
//! noise floor of the run (what the shared machine alone moves). Then it checks the counters: the
//! decisions the series holds for the counting instance, against the answers wrk received
//! (a few more may be counted: requests in flight when wrk stops are decided but not
//! received).
//!
//! Run: `cargo bench --bench stats` (`BENCH_SECONDS`, `BENCH_CONNECTIONS`, `BENCH_ROUNDS`;
//! defaults 8 s, 32 connections, 3 rounds). Target (issue 19): within 5 % of throughput.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{Client, Load, RedisServer, headers, median, start_gatehouse, token};

fn main() {
    let load = Load::from_env();
    let dir = tempfile::tempdir().expect("temporary directory");
    let redis = RedisServer::start_volatile();
    let redis_url = redis.url();
    let binary = env!("CARGO_BIN_EXE_gatehouse");
    let start = |name: &str, stats: &str| {
        let spool = dir.path().join(name);
        std::fs::create_dir_all(&spool).unwrap();
        start_gatehouse(
            binary,
            &spool,
            &[
                ("REDIS_URL", &redis_url),
                ("GATEHOUSE_INSTANCE", name),
                ("GATEHOUSE_STATS", stats),
            ],
        )
    };
    let (_on, on_base) = start("stats-on", "on");
    let (_off, off_base) = start("stats-off", "off");
    let (_control, control_base) = start("stats-on-2", "on");
    // The set-up goes through a fourth instance, so that the three measured ones are alike but
    // for the setting (an instance that made the claim itself ran about 10 % slower after it,
    // in every run, whatever its setting).
    let (_setup, setup_base) = start("stats-setup", "off");
    Client::new(&setup_base).claim_for_alice_and_enforce("bench-s");
    let alice = token("alice", &[]);
    let check = r#"{"session_id":"bench-s"}"#;
    // Both instances have the settings (pub/sub) before the load.
    for base in [&on_base, &off_base, &control_base] {
        let client = Client::new(base);
        support::wait_until("ENFORCED everywhere", || {
            client
                .send("POST", "/v1/validate", &alice, check)
                .1
                .contains("ENFORCED")
        });
    }

    let script = dir.path().join("validate.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"session_id\":\"bench-s\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let mut args = vec!["-s".to_owned(), script.display().to_string()];
    args.extend(headers(&[("Authorization", &format!("Bearer {alice}"))]));
    let cases = [
        (
            "counters on",
            format!("{on_base}/v1/validate"),
            args.clone(),
        ),
        (
            "counters off",
            format!("{off_base}/v1/validate"),
            args.clone(),
        ),
        (
            "counters on, control",
            format!("{control_base}/v1/validate"),
            args,
        ),
    ];
    let runs = load.interleaved(&cases);
    let (with, without, control) = (median(&runs[0]), median(&runs[1]), median(&runs[2]));

    // What the counting instance counted: the flusher sends within a second.
    std::thread::sleep(Duration::from_secs(2));
    let admin = token("root", &["admin"]);
    // A new client: the first one's connection sat idle through the runs, past the server's
    // idle timeout, and may be closed as it is reused.
    let on = Client::new(&on_base);
    let (status, body) = on.send("GET", "/v1/stats/decisions?since=1h&step=1h", &admin, "");
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let counted = series["totals"]["allow"].as_u64().unwrap_or(0);
    // Both counting instances add to the one series.
    let answered: u64 = runs[0].iter().chain(&runs[2]).map(|r| r.requests).sum();
    let dropped = on
        .metric("gatehouse_decision_stats_dropped_total")
        .unwrap_or(u64::MAX);

    let Load {
        seconds,
        connections,
        rounds,
    } = load;
    println!();
    println!(
        "POST /v1/validate (owner, allowed), ENFORCED, Redis store, wrk -t2 -c{connections}, {rounds} x {seconds}s each, interleaved (medians)"
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9}",
        "run", "req/s", "p50 ms", "p99 ms"
    );
    for (name, run) in [
        ("time-series counters on", with),
        ("time-series counters off", without),
        ("counters on (2nd instance)", control),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>9.2} {:>9.2}",
            run.rps, run.p50, run.p99
        );
    }
    println!(
        "on / off throughput: {:.3}  (cost of the counters: {:.1} %; target within 5 %)",
        with.rps / without.rps,
        (1.0 - with.rps / without.rps) * 100.0
    );
    let mut ratios: Vec<f64> = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(on, off)| on.rps / off.rps)
        .collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "on / off by round: {} (median {:.3})",
        shown.join(", "),
        ratios[ratios.len() / 2]
    );
    println!(
        "noise floor: the two counting instances differ by {:.1} % (2nd / 1st: {:.3})",
        (control.rps / with.rps - 1.0).abs() * 100.0,
        control.rps / with.rps
    );
    println!(
        "counted: {counted} allowed decisions in the series, for {answered} answers wrk received from the two counting instances in the measured runs (plus the 1 s warm-ups and the set-up checks); dropped {dropped}"
    );
    assert!(
        counted >= answered,
        "every answered check is counted ({counted} < {answered})"
    );
    assert_eq!(dropped, 0, "no count dropped");
}
